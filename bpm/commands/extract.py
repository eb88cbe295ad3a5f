"""``bpm extract``: features of every image in a folder, saved with the image names.

HDF5 (``.h5``/``.hdf5``) holds ``features``, ``names``, ``paths`` and, when every name follows
the Market/Duke pattern (``0002_c1s1_...``), ``pids`` and ``camids``. ``.mat`` keeps the
original's ``features`` variable and adds ``names`` (which the original forgot).
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np

from bpm.config import int_tuple, device_ids, str2bool
from bpm.data.datasets.common import list_image_names
from bpm.errors import BpmError

_MARKET_NAME = re.compile(r"^(-?[0-9]+)_c([0-9]+)")  # ASCII digits only, as the dataset readers
OUTPUT_SUFFIXES = (".h5", ".hdf5", ".mat")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="checkpoint, weights file, .safetensors or exported .onnx")
    parser.add_argument("--images", required=True, help="folder of images (jpg, png, bmp)")
    parser.add_argument("--out", required=True, help="feats.h5 (HDF5) or feats.mat (MATLAB)")
    parser.add_argument("--net", default=None, help="resnet50 or mobilenetV2 (default: read from the file)")
    parser.add_argument("--backend", default=None, choices=["torch", "onnx"], help="default: onnx for .onnx files")
    parser.add_argument("-d", "--sys_device_ids", type=device_ids, default="auto",
                        help="torch backend: 'auto' (GPU 0 when CUDA is available, else the CPU; default), "
                             "'()' CPU, '(0,)' GPU 0")
    parser.add_argument("--opt-level", dest="opt_level", default="O0", choices=["O0", "O1", "O2", "O3"])
    parser.add_argument("--keep-batchnorm-fp32", dest="keep_batchnorm_fp32", type=str2bool, default=True)
    parser.add_argument("--amp_dtype", default=None, choices=["float16", "bfloat16"])
    parser.add_argument("--resize_h_w", type=int_tuple(2), default=None,
                        help="input size for the torch backend (default: the weights file's, else (256, 128); "
                             "an ONNX file carries its own)")
    parser.add_argument("--last_conv_stride", type=int, default=None, choices=[1, 2],
                        help="default: the weights file's, else 1")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--normalize_feature", type=str2bool, default=False, help="L2-normalise the features")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: library default)")


def market_ids(names: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(pids, camids)`` when every name is Market/Duke style, else ``None``."""
    matches = [_MARKET_NAME.match(n) for n in names]
    if not names or not all(matches):
        return None
    return (np.array([int(m.group(1)) for m in matches], dtype=np.int64),
            np.array([int(m.group(2)) for m in matches], dtype=np.int64))


def save_folder_features(out: Path, features: np.ndarray, names: list[str], folder: Path,
                         attrs: dict | None = None) -> None:
    """Write features and names (and ids when the names carry them) as HDF5 or .mat by ``out``'s suffix.

    The file is written whole beside ``out`` and renamed over it (:func:`bpm.engine.outputs.atomic_write`):
    never a half file, never a merge with an older one. ``attrs`` (weights, network, time) become HDF5
    attributes (``.mat``: a ``source`` variable).
    """
    from bpm.engine.outputs import atomic_write

    ids = market_ids(names)
    out.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "images": str(folder.resolve()), **(attrs or {})}

    def write_mat(tmp: Path) -> None:
        from scipy.io import savemat

        data = {"features": features, "names": np.array(names, dtype=object).reshape(-1, 1),  # N x 1 cell
                "source": {k: str(v) for k, v in attrs.items()}}
        if ids is not None:
            data["pids"], data["camids"] = ids
        with open(tmp, "wb") as handle:
            savemat(handle, data)

    def write_h5(tmp: Path) -> None:
        import h5py

        with h5py.File(tmp, "w") as handle:
            for key, value in attrs.items():
                handle.attrs[key] = str(value)
            handle.create_dataset("features", data=features)
            handle.create_dataset("names", data=np.array(names, dtype=h5py.string_dtype()))
            handle.create_dataset("paths", data=np.array([str(folder / n) for n in names], dtype=h5py.string_dtype()))
            if ids is not None:
                handle.create_dataset("pids", data=ids[0])
                handle.create_dataset("camids", data=ids[1])

    atomic_write(out, write_mat if out.suffix == ".mat" else write_h5, "features file")


def extract_folder(extractor, folder: str | Path, out: str | Path,
                   attrs: dict | None = None) -> tuple[np.ndarray, list[str]]:
    """Embed every image of ``folder`` (sorted names) with ``extractor`` and save to ``out``."""
    folder, out = Path(folder), Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise BpmError(f"--out {out}: expected a file ending in .h5, .hdf5 or .mat")
    if not folder.is_dir():
        raise BpmError(f"--images {folder}: not a folder")
    names = list_image_names(folder)
    if not names:
        raise BpmError(f"--images {folder}: no images (.jpg, .jpeg, .png, .bmp) found")
    features = extractor([str(folder / n) for n in names])
    save_folder_features(out, features, names, folder, attrs)
    return features, names


def run(args: argparse.Namespace) -> int:
    from bpm.inference import FeatureExtractor
    from bpm.precision import resolve_device

    # Inputs first: a typo in --images or --out must not wait for the model to load.
    if Path(args.out).suffix not in OUTPUT_SUFFIXES:
        raise BpmError(f"--out {args.out}: expected a file ending in .h5, .hdf5 or .mat")
    if not Path(args.images).is_dir():
        raise BpmError(f"--images {args.images}: not a folder")
    if not Path(args.weights).exists():
        raise BpmError(f"{args.weights}: weights file not found")
    if not Path(args.weights).is_file():
        raise BpmError(f"{args.weights}: not a regular file (a folder, FIFO or device); expected a weights file")
    from bpm.engine.outputs import check_output_file
    from bpm.switches import check_common

    check_common(args)  # --resize_h_w, --batch_size
    check_output_file(args.out, "--out", hdf5=Path(args.out).suffix != ".mat")
    device = resolve_device(tuple(args.sys_device_ids))
    extractor = FeatureExtractor(
        args.weights, net=args.net, device=device, resize_h_w=args.resize_h_w, opt_level=args.opt_level,
        backend=args.backend, batch_size=args.batch_size, normalize=args.normalize_feature,
        last_conv_stride=args.last_conv_stride, amp_dtype=args.amp_dtype,
        keep_batchnorm_fp32=args.keep_batchnorm_fp32, threads=args.threads,
    )
    start = time.perf_counter()
    attrs = {"weights": str(Path(args.weights).resolve()), "net": extractor.net, "backend": extractor.backend,
             "opt_level": args.opt_level, "command": "bpm extract"}
    features, names = extract_folder(extractor, args.images, args.out, attrs)
    seconds = time.perf_counter() - start
    print(f"{len(names)} images -> {args.out}: features {features.shape[0]}x{features.shape[1]} "
          f"({extractor.backend}, {extractor.net}, {len(names) / max(seconds, 1e-9):.1f} img/s)")
    return 0
