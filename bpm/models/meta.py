"""Where a weights file records its :class:`~bpm.models.input_spec.InputSpec` (network, size, last stride,
normalisation, pooling, neck, test-time L2 normalisation) and the recipe it was trained with.

A model trained at 64x32 and evaluated at 256x128 gives a silently different number, so every
checkpoint and released weights file carries its spec and :func:`bpm.load_model` uses it unless
told otherwise (:func:`bpm.models.input_spec.resolve_input_spec`). Files written before this
(the original's, older ones) have none, and the backbone's defaults apply.

Where it is stored: a checkpoint's top-level ``input`` key; a plain ``base.*`` state_dict
(``.pt``, the original's release layout) in its ``_metadata[""]["bpm"]`` entry, which
``torch.save``/``torch.load(weights_only=True)`` keep and ``load_state_dict`` ignores, so the
file stays a plain state_dict for both projects; a ``.safetensors`` file in its ``bpm.input``
metadata string (JSON).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

from bpm import __version__


META_KEY = "input"             # checkpoint top-level key
STATE_META_KEY = "bpm"         # entry of a state_dict's _metadata[""]
SAFETENSORS_META_KEY = "bpm.input"


def file_meta(spec, recipe: str = "") -> dict[str, Any]:
    """What a file records: the model's :class:`~bpm.models.input_spec.InputSpec` as plain JSON-able
    values, the training recipe and the writing bpm's version."""
    return {**spec.to_meta(), "recipe": recipe or "", "bpm_version": __version__}


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
