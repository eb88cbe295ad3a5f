"""``bpm.FeatureExtractor``: embeddings for images in one call, from PyTorch weights, an ONNX file or an
OpenVINO IR. The model comes from :func:`bpm.load_model`, the one loader, with its input spec; the
runtime that runs it is a registered extraction backend (:data:`bpm.models.backends.EXTRACTION_BACKENDS`).

Deployment code should not need to know about datasets, loaders or precision policies: give it
paths, PIL images or arrays, get an ``(N, D)`` float32 array back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from bpm.data.images import ImageLike
from bpm.errors import BpmError
from bpm.evaluation.features import embed_images
from bpm.export.verify import warn_if_unverified
from bpm.models.backends import EXTRACTION_BACKENDS, backend_for_file
from bpm.models.input_spec import check_input_size
from bpm.models.loading import load_graph, load_model
from bpm.precision import PrecisionPolicy
from bpm.threads import torch_threads


class FeatureExtractor:
    """Embeds images with a re-ID model.

    ``weights``: any file :func:`bpm.load_model` reads (checkpoint, weights, safetensors) for the
    torch backend, an exported ``.onnx`` file (its metadata is its input spec) for the onnx backend,
    or an OpenVINO IR ``.xml`` (its rt_info is its input spec) for the openvino backend
    (``pip install 'bpm[openvino]'``); ``backend=None`` picks by the file's suffix. The model's
    :class:`~bpm.models.input_spec.InputSpec` (:attr:`input_spec`) decides input size, pixel
    normalisation and whether features are L2-normalised: ``normalize=None`` (the default) takes
    the model's own test-time normalisation, the one ``bpm test`` evaluates with (on for a BNNeck
    model); ``True``/``False`` overrides it. ``net``, ``resize_h_w`` and ``last_conv_stride`` default
    to what the file records (256x128 and stride 1 for older files); a given value that differs is
    used, with a one-line warning. ``opt_level`` applies to the torch backend (O2/O3 run
    half-precision weights). ``flip`` averages each image's features with its mirror image's.
    ``streams`` (openvino backend) splits each batch into that many parts run at once, each on its
    share of ``threads``: on a CPU with few cores that serves large batches faster. Both
    backends run :func:`bpm.evaluation.features.embed_images`, the extraction ``bpm test`` uses.

    Images: paths, PIL images, ``HxWx3`` arrays, or a torch tensor batch ``(N, 3, H, W)`` (or one
    ``(3, H, W)`` image) of RGB pixels, uint8 0..255 or float 0..1, *not* normalised: every input
    goes through the same resize and normalisation as the files the model was evaluated on.

    >>> extractor = FeatureExtractor("mobilenet_v2_256x128_fp32.onnx")
    >>> features = extractor(["a.jpg", "b.jpg"])          # (2, 1280) float32
    """

    def __init__(
        self,
        weights: str | Path,
        net: str | None = None,
        device: str | torch.device = "cpu",
        resize_h_w: tuple[int, int] | None = None,
        opt_level: str = "O0",
        backend: str | None = None,
        batch_size: int = 32,
        normalize: bool | None = None,
        last_conv_stride: int | None = None,
        amp_dtype: str | None = None,
        keep_batchnorm_fp32: bool = True,
        threads: int = 0,
        flip: bool = False,
        streams: int = 1,
    ) -> None:
        # The command line's checks, with its wording, before anything is loaded.
        if resize_h_w is not None:
            check_input_size(resize_h_w)
        device = check_device(device)
        by_file = backend_for_file(weights)
        entry = EXTRACTION_BACKENDS.get(backend) if backend is not None else by_file
        if batch_size < 1:
            raise BpmError(f"--batch_size: expected at least 1, got {batch_size}")
        if entry is not by_file:
            if entry.suffixes:
                raise BpmError(f"{weights}: the {entry.name} backend needs {entry.needs}")
            raise BpmError(f"{weights}: a {Path(weights).suffix} file runs on the {by_file.name} backend "
                           f"(--backend {by_file.name})")
        if streams < 1:
            raise BpmError(f"--streams: expected at least 1, got {streams}")
        if streams > 1 and not entry.streams:
            raise BpmError(f"--streams applies to the openvino backend; the {entry.name} backend runs a batch whole")
        if entry.runner is not None and opt_level != "O0":
            raise BpmError(f"--opt-level applies to the torch backend; a {entry.name} file has its precision built in")
        self.backend = entry.name
        self.batch_size = batch_size
        self.flip = flip
        self.threads = threads  # held around each call (bpm.threads), not set for the process
        if entry.runner is None:
            model, self.input_spec = load_model(weights, net=net, last_conv_stride=last_conv_stride,
                                                resize_h_w=resize_h_w, threads=threads)
        else:
            runner = entry.runner(Path(weights), threads, streams=streams) if entry.streams else entry.runner(
                Path(weights), threads)
            model, self.input_spec = load_graph(runner, net=net, resize_h_w=resize_h_w)
        self.normalize = self.input_spec.normalize_features if normalize is None else bool(normalize)
        self.net = self.input_spec.net or "unknown"
        self.resize_h_w = self.input_spec.resize_h_w
        self._feature_dim = model.feature_dim
        if entry.runner is not None:
            self.runner = model.runner
            warn_if_unverified(weights, self.runner.metadata)
            self.policy = PrecisionPolicy.create("O0")  # the graph's precision is built in; inputs are FP32 CPU
            self.model = model
        else:
            self.policy = PrecisionPolicy.create(opt_level, device, amp_dtype, keep_batchnorm_fp32)
            self.model = self.policy.prepare_model(model).eval()

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """``(N, D)`` float32 features; a single image gives ``(1, D)``."""
        if isinstance(images, torch.Tensor):
            images = tensor_images(images)
        if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim == 3) \
                or not isinstance(images, (Sequence, np.ndarray)):
            images = [images]
        with torch_threads(self.threads):
            return embed_images(self.model, images, self.policy, self.input_spec, self.batch_size, self.flip,
                                self.normalize)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device, refused in one line (the ``-d`` switch's wording) when this
    machine does not have it."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BpmError(f"device {device!r}: not a device name ({exc}); use 'cpu' or 'cuda:N'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BpmError(f"device {str(device)!r}: CUDA is not available on this machine; use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BpmError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} GPU(s) "
                           f"(ids 0..{torch.cuda.device_count() - 1})")
    return device


def tensor_images(batch: torch.Tensor) -> list[np.ndarray]:
    """A ``(N, 3, H, W)`` or ``(3, H, W)`` RGB tensor (uint8 0..255 or float 0..1) as ``HxWx3`` arrays,
    so that tensors take exactly the path of files and arrays (resize, then normalisation)."""
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise BpmError(f"image tensor: expected (N, 3, H, W) RGB, got shape {tuple(batch.shape)}")
    if batch.dtype != torch.uint8 and not batch.is_floating_point():
        raise BpmError(f"image tensor: expected uint8 0..255 or float 0..1, got {batch.dtype}")
    array = batch.detach().cpu()
    array = (array if array.dtype == torch.uint8 else array.float()).permute(0, 2, 3, 1).numpy()
    return list(array)
