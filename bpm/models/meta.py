"""What a weights file knows about its input: size, last stride, normalisation, network, recipe, neck.

A model trained at 64x32 and evaluated at 256x128 gives a silently different number, so every
checkpoint and released weights file carries these settings and every reader uses them when
the user typed nothing (see :func:`bpm.config.unset`); a typed value that differs wins with a
one-line warning. Files written before this (the original's, older ones) have none, and
today's defaults apply.

Where it is stored: a checkpoint's top-level ``input`` key; a plain ``base.*`` state_dict
(``.pt``, the original's release layout) in its ``_metadata[""]["bpm"]`` entry, which
``torch.save``/``torch.load(weights_only=True)`` keep and ``load_state_dict`` ignores, so the
file stays a plain state_dict for both projects; a ``.safetensors`` file in its ``bpm.input``
metadata string (JSON).
"""
from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

from bpm.config import is_unset

META_KEY = "input"             # checkpoint top-level key
STATE_META_KEY = "bpm"         # entry of a state_dict's _metadata[""]
SAFETENSORS_META_KEY = "bpm.input"

# The settings a reader may take from the file when the user did not give them.
DEFAULTS: dict[str, Any] = {"resize_h_w": (256, 128), "last_conv_stride": 1, "net": "mobilenetV2"}


def model_meta(model, resize_h_w: tuple[int, int], recipe: str = "") -> dict[str, Any]:
    """The input settings of ``model`` (a :class:`bpm.models.reid.ReidModel`) as plain JSON-able values.

    A model the trainer accepts that is not a ReidModel (tests' tiny networks, a user's own module)
    records what it has; missing attributes become ``None``.
    """
    from bpm import __version__
    from bpm.data.transforms import MEAN, STD

    architecture = getattr(model, "architecture", {}) or {}
    return {
        "net": getattr(model, "net", None),
        "resize_h_w": [int(v) for v in resize_h_w],
        "last_conv_stride": int(getattr(model, "last_conv_stride", 1)),
        "mean": [float(v) for v in MEAN],
        "std": [float(v) for v in STD],
        "pooling": architecture.get("pooling", "avg"),
        "neck": architecture.get("neck", "none"),
        "feature_dim": int(model.feature_dim) if hasattr(model, "feature_dim") else None,
        "recipe": recipe or "",
        "bpm_version": __version__,
    }


def attach_to_state(state: Mapping, meta: Mapping[str, Any]) -> OrderedDict:
    """``state`` as an OrderedDict carrying ``meta`` in ``_metadata`` (still a plain state_dict)."""
    out = OrderedDict(state)
    existing = getattr(state, "_metadata", None)
    out._metadata = OrderedDict(existing) if existing else OrderedDict()  # type: ignore[attr-defined]
    out._metadata[""] = {**out._metadata.get("", {}), STATE_META_KEY: dict(meta)}  # type: ignore[attr-defined]
    return out


def safetensors_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    return {SAFETENSORS_META_KEY: json.dumps(dict(meta), sort_keys=True)}


def stored_meta(raw: object, path: str | Path | None = None) -> dict[str, Any]:
    """The input settings stored in a loaded weights object (checkpoint or state_dict), or in a
    ``.safetensors`` file's header; ``{}`` for files that have none."""
    found: object = None
    if isinstance(raw, Mapping) and isinstance(raw.get(META_KEY), Mapping):
        found = raw[META_KEY]
    elif isinstance(raw, Mapping) and "state_dicts" in raw:
        state_dicts = raw["state_dicts"]  # malformed ones are refused, in one line, by the weights reader
        first = state_dicts[0] if isinstance(state_dicts, (list, tuple)) and state_dicts else None
        found = ((getattr(first, "_metadata", None) or {}).get("", {}) or {}).get(STATE_META_KEY)
    elif isinstance(raw, Mapping):
        found = ((getattr(raw, "_metadata", None) or {}).get("", {}) or {}).get(STATE_META_KEY)
    if found is None and path is not None and str(path).endswith(".safetensors"):
        found = _safetensors_meta(path)
    return dict(found) if isinstance(found, Mapping) else {}


def _safetensors_meta(path: str | Path) -> dict | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(SAFETENSORS_META_KEY)
        return json.loads(text) if text else None
    except (OSError, ValueError, json.JSONDecodeError):
        return None


def _as_setting(name: str, value: Any) -> Any:
    if name == "resize_h_w":
        return (int(value[0]), int(value[1]))
    if name == "last_conv_stride":
        return int(value)
    return str(value)


def choose(name: str, given: Any, meta: Mapping[str, Any], source: str | Path, switch: str | None = None) -> Any:
    """The value to use for setting ``name``: the typed one (warning when it differs from the file's),
    else the file's, else the given default.

    ``given`` is a value marked with :func:`bpm.config.unset` when the user did not type it, or
    ``None`` (the Python API's "not given").
    """
    typed = given is not None and not is_unset(given)
    if name not in meta or meta[name] is None:
        return _as_setting(name, given) if given is not None else DEFAULTS.get(name)
    stored = _as_setting(name, meta[name])
    if not typed:
        return stored
    value = _as_setting(name, given)
    if value != stored:
        flag = switch or f"--{name}"
        print(f"warning: {flag} {_show(value)} differs from the {_show(stored)} that {source} was trained with; "
              f"using {_show(value)}", file=sys.stderr)
    return value


def _show(value: Any) -> str:
    return f"({value[0]}, {value[1]})" if isinstance(value, tuple) and len(value) == 2 else str(value)
