""":func:`load_model`: the one way a model gets from a file (or a backbone name) into memory.

Why one loader: two loaders with different rules meant ``bpm export`` and ``bpm test`` could
build different networks from the same file. Every command, :class:`bpm.FeatureExtractor`, the
export pipeline, the benches and the tests call this; it returns the model *and* its
:class:`~bpm.models.input_spec.InputSpec`, resolved once (explicit keyword > the file's record >
the backbone's default), which the caller then passes on instead of deciding sizes and
normalisation itself.

What it reads: our checkpoints and weights files (``.pth``/``.pt``/``.safetensors``, which record
their network and spec, :mod:`bpm.models.meta`), the original's checkpoints and released weights
and ImageNet files (no record: the network is recognised by its first layer's key, the pooling
and neck by the keys of :func:`bpm.models.reid.architecture_of`), and exported ``.onnx`` graphs
and OpenVINO ``.xml`` IRs (their metadata), which run through ONNX Runtime or OpenVINO behind a
module interface.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping

from torch import nn

from bpm.errors import BpmError
from bpm.models.input_spec import InputSpec, resolve_input_spec
from bpm.models.meta import stored_meta
from bpm.models.backends import backend_for_file
from bpm.models.onnx_graph import GraphModule
from bpm.models.registry import BackboneSpec, backbone_choices, get_backbone
from bpm.models.reid import ReidModel, architecture_of, inference_state
from bpm.models.weights import (
    backbone_of_state, extract_model_state, imagenet_trunk_state, load_model_weights_from_state, load_trunk_state,
    read_weights_file, refuse_other_backbone,
)

ONNX_SUFFIX = ".onnx"


def load_model(path_or_name: str | Path, *, net: str | None = None, last_conv_stride: int | None = None,
               resize_h_w: tuple[int, int] | None = None, normalize_features: bool | None = None,
               mean: tuple[float, float, float] | None = None, std: tuple[float, float, float] | None = None,
               pooling: str | None = None, neck: str | None = None, threads: int = 0) -> tuple[nn.Module, InputSpec]:
    """``(model, input spec)`` of a checkpoint, weights file, ImageNet file or ``.onnx`` graph, or of a
    registered backbone name (``"mobilenet_v2"``: random weights).

    The model is FP32, in eval mode, on the CPU, without the training-only ID head. Every keyword
    left at ``None`` is taken from the file, else from the backbone's defaults; a given value that
    differs from the file's record is used, with a one-line warning. ``pooling``/``neck`` apply to a
    backbone name only (a file says what it holds); ``threads`` to ONNX Runtime. The model also carries
    ``source_kind`` (what the file was, for log lines) and ``source_meta`` (its raw record, ``{}`` if none).

    Args:
        path_or_name: a ``.pth``/``.pt``/``.safetensors``/``.onnx`` file, or a registered backbone name.
        net: the backbone, when the file's record (or its keys) should not decide it.
        last_conv_stride: 1 or 2, where the backbone has the switch.
        resize_h_w: the input ``(height, width)``; an ONNX graph's is fixed and can only be confirmed.
        normalize_features: L2-normalise features at test time (default: on exactly with a BNNeck).
        mean: per-channel input mean (RGB, 0..1 pixels).
        std: per-channel input standard deviation.
        pooling: the global pooling of a fresh backbone.
        neck: the neck of a fresh backbone (``none`` or ``bnneck``).
        threads: ONNX Runtime intra-op threads (0: its default).

    Returns:
        ``(model, spec)``: the model and the :class:`~bpm.models.input_spec.InputSpec` to feed it with.

    Raises:
        BpmError: a missing or unreadable file, a file of another network, a refused override (one line).
    """
    source = str(path_or_name)
    path = Path(source)
    if not path.exists() and source in _names():
        return _fresh_model(source, last_conv_stride, resize_h_w, normalize_features, mean, std, pooling, neck)
    if pooling is not None or neck is not None:
        raise BpmError(f"{path}: pooling and neck are read from the file; give them only with a backbone name")
    backend = backend_for_file(path)
    if backend.runner is not None:  # an exported graph (ONNX, OpenVINO IR): its own runtime runs it
        return load_graph(backend.runner(path, threads), net=net, resize_h_w=resize_h_w,
                          normalize_features=normalize_features)
    overrides = {"last_conv_stride": last_conv_stride, "resize_h_w": resize_h_w,
                 "normalize_features": normalize_features, "mean": mean, "std": std}
    return _torch_model(path, net, overrides)


def _names() -> set[str]:
    return set(backbone_choices())


def _fresh_model(name: str, last_conv_stride, resize_h_w, normalize_features, mean, std, pooling,
                 neck) -> tuple[nn.Module, InputSpec]:
    backbone = get_backbone(name)
    architecture = {"pooling": pooling or "avg", "neck": neck or "none"}
    overrides = {"last_conv_stride": last_conv_stride, "resize_h_w": resize_h_w,
                 "normalize_features": normalize_features, "mean": mean, "std": std}
    spec = resolve_input_spec(backbone, {}, overrides, name, architecture)
    model = ReidModel(backbone.name, spec.last_conv_stride, spec.pooling, spec.neck)
    model.source_kind, model.source_meta = "random weights", {}
    return model.float().eval(), spec


def _recorded_net(raw: object, meta: Mapping) -> str | None:
    """The network a file records: its spec's, else (older checkpoints of ours) the checkpoint's ``net`` key."""
    if isinstance(meta.get("net"), str) and meta["net"]:
        return meta["net"]
    if isinstance(raw, Mapping) and isinstance(raw.get("net"), str) and raw["net"]:
        return raw["net"]
    return None


def _choose_backbone(net: str | None, recorded: str | None, state: Mapping, path: Path) -> tuple[BackboneSpec, str]:
    """(backbone, level of the state) by ``--net`` > the file's record > the first layer's key (meta-less files)."""
    if net is not None:
        backbone = get_backbone(net)
        # The weights are checked first: a file holding another network is one error, not a warning
        # saying "using X" followed by an error saying X does not fit.
        refuse_other_backbone(state, backbone, path)
        if recorded is not None and get_backbone(recorded) is not backbone:
            print(f"warning: --net {backbone.name} differs from the {get_backbone(recorded).name} that {path} was "
                  f"trained with; using {backbone.name}", file=sys.stderr)
    elif recorded is not None:
        backbone = get_backbone(recorded)
        refuse_other_backbone(state, backbone, path)
    else:
        return backbone_of_state(state, path)
    return backbone, backbone.level_of(state) or "model"


def _torch_model(path: Path, net: str | None, overrides: dict) -> tuple[nn.Module, InputSpec]:
    raw = read_weights_file(path)
    meta = stored_meta(raw, path)
    state = extract_model_state(raw, path)
    backbone, level = _choose_backbone(net, _recorded_net(raw, meta), state, path)
    if level in ("imagenet", "trunk"):
        # An ImageNet file or a bare trunk: the backbone only, average pooling, no neck.
        architecture = {"pooling": "avg", "neck": "none"}
        spec = resolve_input_spec(backbone, meta, overrides, path, architecture)
        model = ReidModel(backbone.name, spec.last_conv_stride, spec.pooling, spec.neck)
        _layout, trunk = imagenet_trunk_state(model, state, path)
        load_trunk_state(model, trunk, path)
        has_classifier = any(k.startswith(backbone.classifier_prefix) for k in state)
        kind = "ImageNet classifier weights (backbone only)" if has_classifier else "backbone weights"
    else:
        # Pooling and neck from the file's record; a meta-less file (the original's) shows them in its keys.
        architecture = {k: v for k, v in architecture_of(state).items() if k not in meta}
        spec = resolve_input_spec(backbone, meta, overrides, path, architecture)
        model = ReidModel(backbone.name, spec.last_conv_stride, spec.pooling, spec.neck)
        load_model_weights_from_state(model, inference_state(state), path)  # the training-only head left out
        kind = "training checkpoint" if isinstance(raw, Mapping) and "state_dicts" in raw else "re-ID weights"
    model.source_kind, model.source_meta = kind, dict(meta)
    return model.float().eval(), spec


def load_graph(runner, *, net: str | None = None, resize_h_w: tuple[int, int] | None = None,
               normalize_features: bool | None = None) -> tuple[nn.Module, InputSpec]:
    """An exported graph's runner (:class:`bpm.models.onnx_graph.OnnxModel`, :class:`bpm.models.openvino_graph.OpenVinoModel`)
    behind a module interface; its metadata is its spec (size and pixels are built in)."""
    path = runner.path
    if runner.spec is None:
        raise BpmError(f"{path}: expected an image input [N, 3, H, W] with fixed H and W, or a bpm export")
    spec = runner.spec.input_spec
    if net is not None and spec.net and get_backbone(net).name != _canonical_or_same(spec.net):
        raise BpmError(f"{path}: holds {spec.net}, but --net is {net}")
    if resize_h_w is not None and tuple(resize_h_w) != spec.resize_h_w:
        raise BpmError(f"{path}: the graph takes {spec.resize_h_w[0]}x{spec.resize_h_w[1]} input (built in at "
                       f"export); --resize_h_w {tuple(resize_h_w)} cannot change it")
    if normalize_features is not None:
        spec = spec.with_(normalize_features=bool(normalize_features))
    module = GraphModule(runner)
    module.source_kind, module.source_meta = f"{runner.kind} ({runner.precision})", {}
    return module, spec


def _canonical_or_same(name: str) -> str:
    return get_backbone(name).name if name in _names() else name


