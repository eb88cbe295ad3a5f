"""Every weights format we read and write.

Read: our checkpoints and the original's (``{'state_dicts': [model, optimizer], 'ep', 'scores'}``),
plain state_dicts (ours, the original's released ``base.base.*``/``base.features.*`` files, FP16
or FP32), DataParallel/DDP ``module.`` prefixes, torchvision ImageNet files, the original's
``mobilenet_v2.pth.tar`` layout, and ``.safetensors``. Every pickle is opened with
``torch.load(weights_only=True)``, which refuses anything that would execute code.

What is network-specific (each backbone's first-layer and classifier keys, how ImageNet keys map
onto the trunk) is declared in :mod:`bpm.models.registry`; a model from a file is
:func:`bpm.load_model` (:mod:`bpm.models.loading`); ``--net_pretrained_path imagenet`` is
:mod:`bpm.models.imagenet`.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from bpm.errors import BpmError, one_line
from bpm.files import HDF5_SIGNATURE
from bpm.models.registry import (
    MODEL_TRUNK_PREFIX, BackboneSpec, StateDict, backbones_in, get_backbone, split_model_state,
)


def read_weights_file(path: str | Path) -> object:
    """Load a ``.pt/.pth/.tar`` pickle safely, or a ``.safetensors`` file; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise BpmError(f"{path}: weights file not found")
    if not path.is_file():
        # A folder, FIFO or device (a symlink to /dev/zero would be read forever): never a weights file.
        raise BpmError(f"{path}: not a regular file (a folder, FIFO or device); expected a weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BpmError(f"{path}: not a readable safetensors file ({exc})") from exc
    with open(path, "rb") as handle:
        if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            # torch.load would call it a pickle that "needs more than plain tensors", which sends users
            # looking for unsafe content in what is a features file or another framework's weights.
            raise BpmError(f"{path}: an HDF5 file (a bpm features file, or another framework's weights), not a "
                           "PyTorch weights file; expected a .pth/.pt checkpoint or weights file, or .safetensors")
    _verify_zip_checksums(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BpmError(
            f"{path}: refused: the file needs more than plain tensors to load "
            f"(weights_only=True: {one_line(exc, 'unsafe content')})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # an empty file gives a bare EOFError
        raise BpmError(f"{path}: truncated or corrupt weights file ({reason})") from exc


def _verify_zip_checksums(path: Path) -> None:
    """Check the CRC-32 of every record of a zip-format ``torch.save`` file.

    ``torch.load`` does not verify them, so a flipped bit in tensor data would load silently as
    a wrong weight. Legacy (pre-zip) pickles carry no checksum and pass unchecked.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError, UnicodeDecodeError) as exc:
        raise BpmError(f"{path}: truncated or corrupt weights file ({exc})") from exc
    if bad is not None:
        raise BpmError(f"{path}: corrupt weights file (checksum mismatch in record {bad})")


def extract_model_state(obj: object, path: str | Path = "<weights>") -> StateDict:
    """Find the model's state_dict inside whatever structure a weights file holds."""
    if isinstance(obj, Mapping) and "state_dicts" in obj:
        obj = checkpoint_model_state(obj, path)
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BpmError(f"{path}: expected a state_dict of tensors or a checkpoint holding one")
    check_weight_dtypes(obj, path)
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}


def checkpoint_model_state(ckpt: Mapping, path: str | Path = "<checkpoint>") -> Mapping:
    """``ckpt["state_dicts"][0]``, or one line naming the file when ``state_dicts`` is not the
    original's ``[model, optimizer]`` list (empty, a dict, a list of something else)."""
    state_dicts = ckpt["state_dicts"]
    if not isinstance(state_dicts, (list, tuple)) or not state_dicts or not isinstance(state_dicts[0], Mapping):
        raise BpmError(f"{path}: 'state_dicts' must be a list [model state_dict, optimizer state_dict], got "
                       f"{type(state_dicts).__name__}" + (f" of {len(state_dicts)}" if isinstance(state_dicts, (list, tuple)) else ""))
    return state_dicts[0]


# Integer buffers a state_dict legitimately holds (BatchNorm's step counter).
_INTEGER_KEYS = ("num_batches_tracked",)


def check_weight_dtypes(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights that are not floating point: loading casts int8/bool tensors to float silently,
    which gives a network of 0/1 weights (or of a quantised file's raw codes) that runs and means nothing."""
    for key, value in state.items():
        if value.is_floating_point() or key.endswith(_INTEGER_KEYS):
            continue
        raise BpmError(f"{path}: tensor {key} is {str(value.dtype).replace('torch.', '')}; expected floating-point "
                       "weights (a quantised or corrupted file?)")


def backbone_of_state(state: Mapping[str, torch.Tensor], path: str | Path = "<weights>") -> tuple[BackboneSpec, str]:
    """(backbone, level) of a state_dict whose file does not record its network: the one registered
    backbone whose first convolution it holds (:meth:`BackboneSpec.level_of`). None found, or several
    sharing a first layer, is a one-line error asking for ``--net``."""
    found = backbones_in(state)
    if len(found) == 1:
        return found[0]
    names = " or ".join(f"--net {spec.name}" for spec, _ in found) or "--net <network>"
    what = "several networks share its first layer" if found else "it holds no registered network's first layer"
    raise BpmError(f"{path}: records no network and {what}; pass {names}")


def refuse_other_backbone(state: Mapping[str, torch.Tensor], spec: BackboneSpec, path: str | Path) -> None:
    """A one-line error when ``state`` holds another backbone's first layer but not ``spec``'s."""
    if spec.level_of(state) is not None:
        return
    others = [other for other, _level in backbones_in(state) if other is not spec]
    if others:
        raise BpmError(f"{path}: holds {others[0].name} weights, but --net is {spec.name}")


def _describe_mismatch(missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return ", ".join(parts)


def _load_strict(module: nn.Module, state: StateDict, path: str | Path, what: str) -> None:
    """Copy ``state`` into ``module`` (casting dtypes), refusing any key or shape mismatch with one line."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise BpmError(f"{path}: does not match {what}: {_describe_mismatch(missing, unexpected)}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise BpmError(
                f"{path}: does not match {what}: {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))


def load_model_weights(model: nn.Module, path: str | Path) -> None:
    """Load a training checkpoint or a released weights file into a :class:`ReidModel`.

    FP16 files (the original's mixed-precision releases) are cast to the model's dtypes.
    """
    load_model_weights_from_state(model, extract_model_state(read_weights_file(path), path), path)


def load_model_weights_from_state(model: nn.Module, state: StateDict, path: str | Path = "<weights>") -> None:
    """:func:`load_model_weights` for a state_dict already in memory (e.g. from a checkpoint)."""
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    check_weight_dtypes(state, path)
    net = getattr(model, "net", None)
    spec = get_backbone(net) if net is not None else None
    if spec is not None:
        refuse_other_backbone(state, spec, path)
    if not any(k.startswith(MODEL_TRUNK_PREFIX) for k in state):  # a bare trunk file
        state = {f"{MODEL_TRUNK_PREFIX}{k}": v for k, v in state.items()}
    if spec is not None:
        trunk, rest = split_model_state(state)
        state = {**{f"{MODEL_TRUNK_PREFIX}{k}": v for k, v in spec.normalize_trunk(trunk).items()}, **rest}
    _load_strict(model, state, path, f"--net {net}")


def load_imagenet_weights(model: nn.Module, path: str | Path) -> str:
    """Initialise the backbone from a local file; returns what the file was (for a log line).

    Read: an ImageNet classification file (torchvision's layout, or the original's
    ``mobilenet_v2.pth.tar`` layout; the classifier ``fc.*`` / ``classifier.*`` is dropped: re-ID
    uses the pooled trunk only), a re-ID checkpoint or weights file (its backbone only), or a
    bare trunk state_dict.
    """
    state = extract_model_state(read_weights_file(path), path)
    layout, trunk_state = imagenet_trunk_state(model, state, path)
    load_trunk_state(model, trunk_state, path)
    return layout


def load_trunk_state(model: nn.Module, trunk_state: StateDict, path: str | Path = "<weights>") -> None:
    """Copy a trunk-level state_dict into ``model.base``, refusing any mismatch in one line."""
    _load_strict(model.base, trunk_state, path, f"the {model.net} backbone")


def imagenet_trunk_state(model: nn.Module, state: Mapping[str, torch.Tensor],
                         path: str | Path = "<weights>") -> tuple[str, StateDict]:
    """(layout name, trunk-level state) of a state_dict meant to initialise ``model``'s backbone.

    The layout is whichever reading of the keys (ImageNet file, re-ID model, bare trunk) matches
    the trunk's keys best; a file of another network is refused in one line.
    """
    spec = get_backbone(model.net)
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    check_weight_dtypes(state, path)
    refuse_other_backbone(state, spec, path)
    readings = [(spec.describe_imagenet_layout(state), spec.imagenet_to_trunk(state))]
    model_trunk, _rest = split_model_state(state)
    if model_trunk:
        readings.append(("re-ID weights, backbone only", spec.normalize_trunk(model_trunk)))
    readings.append(("trunk weights", spec.normalize_trunk(state)))
    own = {k for k in model.base.state_dict() if not k.endswith("num_batches_tracked")}

    def mismatches(candidate: Mapping[str, torch.Tensor]) -> int:
        keys = {k for k in candidate if not k.endswith("num_batches_tracked")}
        return len(own ^ keys)

    return min(readings, key=lambda reading: mismatches(reading[1]))  # first of equals: the ImageNet reading
