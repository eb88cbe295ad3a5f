"""Every weights format we read and write.

Read: our checkpoints and the original's (``{'state_dicts': [model, optimizer], 'ep', 'scores'}``),
plain state_dicts (ours, the original's released ``base.base.*``/``base.features.*`` files, FP16
or FP32), DataParallel/DDP ``module.`` prefixes, torchvision ImageNet files, the original's
``mobilenet_v2.pth.tar`` layout, and ``.safetensors``. Every pickle is opened with
``torch.load(weights_only=True)``, which refuses anything that would execute code.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from bpm.errors import BpmError

StateDict = dict[str, torch.Tensor]


def read_weights_file(path: str | Path) -> object:
    """Load a ``.pt/.pth/.tar`` pickle safely, or a ``.safetensors`` file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise BpmError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BpmError(f"{path}: not a readable safetensors file ({exc})") from exc
    _verify_zip_checksums(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise BpmError(
            f"{path}: refused: the file needs more than plain tensors to load (weights_only=True: {first_line})"
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
        obj = obj["state_dicts"][0]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BpmError(f"{path}: expected a state_dict of tensors or a checkpoint holding one")
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}


def detect_net(state: Mapping[str, torch.Tensor]) -> str | None:
    """Which of our networks a state_dict belongs to, judged from its key names."""
    keys = list(state)
    if any(k.startswith(("base.base.layer4", "layer4.")) for k in keys):
        return "resnet50"
    if any(k.startswith(("base.features.", "features.")) for k in keys):
        return "mobilenetV2"
    return None


_TONYLINS_BLOCK = re.compile(r"^(.*features\.\d+\.conv\.)(\d+)\.(.+)$")


def convert_tonylins_mobilenet(state: StateDict) -> StateDict:
    """Rename keys of the original ``mobilenet_v2.pth.tar`` layout to torchvision's.

    The original MobileNet-V2 kept each inverted-residual block flat (conv, bn, relu, ...);
    torchvision nests the first two conv-bn-relu triples. Blocks with an expansion layer have
    indices up to 7, the first block (no expansion) up to 4.
    """
    if not any(k.endswith("conv.0.weight") for k in state) or any(".conv.0.0." in k for k in state):
        return dict(state)
    blocks: dict[str, int] = {}
    for key in state:
        match = _TONYLINS_BLOCK.match(key)
        if match:
            blocks[match.group(1)] = max(blocks.get(match.group(1), 0), int(match.group(2)))
    expand_map = {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}
    plain_map = {0: "0.0", 1: "0.1", 3: "1", 4: "2"}
    renamed: StateDict = {}
    for key, value in state.items():
        match = _TONYLINS_BLOCK.match(key)
        if match:
            index_map = expand_map if blocks[match.group(1)] == 7 else plain_map
            key = f"{match.group(1)}{index_map[int(match.group(2))]}.{match.group(3)}"
        renamed[key] = value
    return renamed


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
    found = detect_net(state)
    net = getattr(model, "net", None)
    if found is not None and net is not None and found != net:
        raise BpmError(f"{path}: holds {found} weights, but --net is {net}")
    if not any(k.startswith("base.") for k in state):
        state = {f"base.{k}": v for k, v in state.items()}
    if net == "mobilenetV2":
        state = convert_tonylins_mobilenet(state)
    _load_strict(model, state, path, f"--net {net}")


def load_imagenet_weights(model: nn.Module, path: str | Path) -> None:
    """Initialise the backbone from a local ImageNet file (torchvision layout or the original's MobileNet-V2 file).

    The classifier (``fc.*`` / ``classifier.*``) is dropped: re-ID uses the pooled trunk only.
    """
    state = extract_model_state(read_weights_file(path), path)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    found = detect_net(state)
    if found is not None and found != model.net:
        raise BpmError(f"{path}: holds {found} ImageNet weights, but --net is {model.net}")
    trunk = model.base
    if model.net == "mobilenetV2":
        state = convert_tonylins_mobilenet(state)
        _load_strict(trunk, state, path, "torchvision MobileNet-V2 (features.*)")
    else:
        _load_strict(trunk.base, state, path, "torchvision ResNet-50 (conv1.*, layer1-4.*)")
