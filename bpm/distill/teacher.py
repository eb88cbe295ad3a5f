"""A teacher behind one interface, whatever file it came in: bpm weights, ONNX, or OpenVINO IR.

Every teacher embeds a batch of RGB images given either as PIL images (the cache's un-augmented
views, resized by PIL as at test time) or as a ``[N, 3, H, W]`` tensor in 0..1 of any size (the
student's augmented batch, for ``--teacher_per_step``). Loading runs one image through the
teacher, so a wrong input spec, a damaged file or a missing runtime is a one-line error before
training starts, and the embedding size is known before the criterion is built.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bpm.distill.input_spec import TeacherInput, parse_teacher_input
from bpm.errors import BpmError, one_line
from bpm.inference import FeatureExtractor
from bpm.models.onnx_graph import session_options


def file_sha256(paths: Sequence[Path]) -> str:
    """sha256 over the files' bytes, in order (an OpenVINO IR is its ``.xml`` and ``.bin``)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Teacher:
    """Embeds images; ``dim`` is the embedding size, ``key`` names the teacher for the cache."""

    def __init__(self, path: Path, kind: str, sha256: str, spec_text: str, dim: int) -> None:
        self.path, self.kind, self.sha256, self.spec_text, self.dim = path, kind, sha256, spec_text, dim

    def describe(self) -> str:
        return f"{self.path.name} ({self.kind}, {self.dim}-d, input {self.spec_text}, sha256 {self.sha256[:12]})"

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``[N, dim]`` float32 embeddings (not normalised) of RGB PIL images."""
        raise NotImplementedError

    def embed_unit(self, images: torch.Tensor) -> np.ndarray:
        """``[N, dim]`` float32 embeddings of a ``[N, 3, H, W]`` RGB batch in 0..1 (any size)."""
        raise NotImplementedError


class GraphTeacher(Teacher):
    """A foreign graph (ONNX Runtime or OpenVINO) with an explicit :class:`TeacherInput`."""

    def __init__(self, path: Path, kind: str, sha256: str, spec: TeacherInput,
                 run: Callable[[np.ndarray], np.ndarray], max_batch: int | None) -> None:
        self.spec, self._run, self.max_batch = spec, run, max_batch
        try:
            probe = self._call(spec.from_unit(np.full((1, 3, *spec.size), 0.5, dtype=np.float32)))
        except Exception as exc:  # the runtimes raise their own exception types
            raise BpmError(f"{path}: the teacher does not run on --teacher_input {spec.text} "
                           f"({one_line(exc)})") from exc
        super().__init__(path, kind, sha256, spec.text, int(probe.shape[1]))

    def _call(self, batch: np.ndarray) -> np.ndarray:
        step = self.max_batch or len(batch) or 1
        outputs = [np.asarray(self._run(batch[i:i + step]), dtype=np.float32).reshape(len(batch[i:i + step]), -1)
                   for i in range(0, len(batch), step)]
        return np.concatenate(outputs) if outputs else np.zeros((0, getattr(self, "dim", 0)), np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        h, w = self.spec.size
        unit = np.stack([np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32)
                         .transpose(2, 0, 1) / 255.0 for im in images])
        return self._call(self.spec.from_unit(unit))

    def embed_unit(self, images: torch.Tensor) -> np.ndarray:
        x = images.detach().float().cpu()
        if tuple(x.shape[-2:]) != self.spec.size:
            x = F.interpolate(x, size=self.spec.size, mode="bilinear", align_corners=False, antialias=True)
        return self._call(self.spec.from_unit(x.clamp(0, 1).numpy()))


class BpmTeacher(Teacher):
    """A bpm checkpoint, weights file or bpm-exported ONNX file: :class:`bpm.FeatureExtractor` runs it
    with the input settings the file stores."""

    def __init__(self, path: Path, sha256: str, device: str | torch.device) -> None:
        graph = str(path).endswith((".onnx", ".xml"))  # exported graphs run on the CPU
        self.extractor = FeatureExtractor(path, device="cpu" if graph else device)
        h, w = self.extractor.resize_h_w
        kind = {"onnx": "bpm ONNX", "openvino": "bpm OpenVINO IR"}.get(self.extractor.backend,
                                                                       f"bpm {self.extractor.net}")
        super().__init__(path, kind, sha256, f"{h}x{w},bpm", self.extractor.feature_dim)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.extractor(list(images))

    def embed_unit(self, images: torch.Tensor) -> np.ndarray:
        return self.extractor(images.detach().float().cpu().clamp(0, 1))


def _onnx_teacher(path: Path, spec: TeacherInput | None, device: str | torch.device) -> Teacher:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), session_options(), providers=providers)
    except Exception as exc:  # ORT raises Fail, InvalidGraph, InvalidProtobuf, ...
        raise BpmError(f"{path}: ONNX Runtime cannot load the teacher ({one_line(exc)})") from exc
    if "bpm.net" in session.get_modelmeta().custom_metadata_map:
        if spec is not None:
            raise BpmError(f"--teacher_input: {path} is a bpm export, which carries its input spec; drop --teacher_input")
        return BpmTeacher(path, file_sha256([path]), device)
    graph_input = session.get_inputs()[0]
    shape = list(graph_input.shape)
    if len(shape) != 4:
        raise BpmError(f"{path}: expected a teacher with one image input [N, 3, H, W], found {graph_input.name} {shape}")
    fixed = tuple(v for v in shape[2:] if isinstance(v, int))
    if spec is None:
        hint = f" (its input is {shape[2]}x{shape[3]})" if len(fixed) == 2 else ""
        raise BpmError(f"--teacher_input: {path} does not say how it wants its pixels{hint}; give "
                       "--teacher_input HxW,rgb|bgr,imagenet|tf|unit|raw (e.g. 256x128,rgb,imagenet)")
    if len(fixed) == 2 and fixed != spec.size:
        raise BpmError(f"--teacher_input {spec.text}: {path} takes {fixed[0]}x{fixed[1]} images")
    name = graph_input.name
    max_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return GraphTeacher(path, "ONNX", file_sha256([path]), spec,
                        lambda batch: session.run(None, {name: batch})[0], max_batch)


def _openvino_teacher(path: Path, spec: TeacherInput | None) -> Teacher:
    """An IR through the one OpenVINO runner (:class:`bpm.export.openvino.OpenVinoModel`); a bpm
    export carries its input spec in its rt_info and runs as :class:`BpmTeacher`."""
    from bpm.models.openvino_graph import OpenVinoModel

    try:
        runner = OpenVinoModel(path)
    except BpmError as exc:
        raise BpmError(f"--teacher {exc}") from None
    sha256 = file_sha256([path, path.with_suffix(".bin")])
    if "bpm.net" in runner.metadata:
        if spec is not None:
            raise BpmError(f"--teacher_input: {path} is a bpm export, which carries its input spec; drop --teacher_input")
        return BpmTeacher(path, sha256, "cpu")
    if spec is None:
        raise BpmError(f"--teacher_input: {path} (OpenVINO IR) needs --teacher_input HxW,rgb|bgr,imagenet|tf|unit|raw")
    return GraphTeacher(path, "OpenVINO IR", sha256, spec, runner, None)


def open_teacher(path: str | Path, input_text: str = "", device: str | torch.device = "cpu") -> Teacher:
    """The teacher in ``path``: ``.onnx`` (ONNX Runtime), ``.xml`` (OpenVINO IR), else a bpm weights file.

    ``input_text`` (``--teacher_input``) is needed where the file does not carry its input spec.
    """
    path = Path(path)
    if not path.is_file():
        raise BpmError(f"--teacher: {path} not found")
    spec = parse_teacher_input(input_text) if input_text else None
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_teacher(path, spec, device)
    if suffix == ".xml":
        return _openvino_teacher(path, spec)
    if spec is not None:
        raise BpmError(f"--teacher_input: {path} is a bpm weights file, which carries its input spec; "
                       "drop --teacher_input")
    try:
        return BpmTeacher(path, file_sha256([path]), device)
    except BpmError as exc:
        raise BpmError(f"--teacher: {exc}") from exc
