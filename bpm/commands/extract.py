"""``bpm extract``: features of every image in a folder, saved with the image names.

HDF5 (``.h5``/``.hdf5``) is the features file every command reads (:mod:`bpm.evaluation.features_file`):
a folder with ``query/`` and ``gallery/`` gives ``<folder>/query`` and ``<folder>/gallery`` (evaluable
by ``bpm evaluate``), any other folder ``<folder>/images``, with ``pids`` and ``camids`` when every
name follows the Market/Duke pattern (``0002_c1s1_...``). ``.mat`` keeps the original's
``features`` variable and adds ``names`` (which the original forgot).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bpm.config import (FeatureSettings, add_device_switches, add_feature_switches, add_image_check_switch,
                        add_model_switches, add_precision_switches, add_threads_switch, from_switches, model_settings,
                        precision_settings)
from bpm.data.datasets.common import list_image_names
from bpm.data.datasets.market1501 import parse_market_name
from bpm.errors import BpmError
from bpm.evaluation.features_file import FOLDER_SPLIT, FeatureSplit, normalization_attrs, write_features_file

OUTPUT_SUFFIXES = (".h5", ".hdf5", ".mat")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="checkpoint, weights file, .safetensors or exported .onnx")
    parser.add_argument("--images", required=True, help="folder of images (jpg, png, bmp)")
    parser.add_argument("--out", required=True, help="feats.h5 (HDF5) or feats.mat (MATLAB)")
    parser.add_argument("--backend", default=None, choices=["torch", "onnx"], help="default: onnx for .onnx files")
    add_device_switches(parser)
    add_model_switches(parser)  # an ONNX file carries its own network and input size
    add_precision_switches(parser)
    add_feature_switches(parser, folder=True)  # the feature group of bpm test (--batch_size: its old spelling)
    add_image_check_switch(parser)
    add_threads_switch(parser)


def market_ids(names: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(pids, camids)`` when every name is Market/Duke style (the dataset reader's rule), else ``None``."""
    try:
        ids = [parse_market_name(n) for n in names]
    except BpmError:
        return None
    if not ids:
        return None
    return np.array([i[0] for i in ids], dtype=np.int64), np.array([i[1] for i in ids], dtype=np.int64)


def is_test_folder(folder: Path) -> bool:
    """The test-only layout ``--dataset folder`` reads: ``query/`` and ``gallery/`` subfolders."""
    return (folder / "query").is_dir() and (folder / "gallery").is_dir()


def _image_names(folder: Path) -> list[str]:
    names = list_image_names(folder)
    if not names:
        raise BpmError(f"--images {folder}: no images (.jpg, .jpeg, .png, .bmp) found")
    return names


def readable(paths: list[str], skip_bad_images: bool) -> list[str]:
    """``paths`` that decode; every image is decoded once before any features are computed, so a bad
    file stops the command at once (naming it), not after minutes of work, or is left out with
    ``--skip_bad_images true``."""
    from bpm.data.images import find_unreadable

    bad = dict(find_unreadable(paths))
    if not bad:
        return paths
    first = next(iter(bad))
    if not skip_bad_images:
        raise BpmError(f"{first}: cannot decode image ({bad[first]}); {len(bad)} unreadable image(s) under --images "
                       "(leave them out with --skip_bad_images true)")
    print(f"warning: skipped {len(bad)} unreadable image(s) (--skip_bad_images), e.g. {first}: {bad[first]}")
    return [p for p in paths if p not in bad]


def folder_splits(extractor, folder: Path, skip_bad_images: bool = False) -> dict[str, FeatureSplit]:
    """The features-file splits of ``folder``: ``<folder name>/query`` and ``/gallery`` for a test-only
    folder (read as ``--dataset folder`` reads it: Market names, junk boxes left out), so that
    ``bpm evaluate`` and ``bpm visualize`` take the file; otherwise ``<folder name>/images``."""
    name = folder.resolve().name or FOLDER_SPLIT
    if is_test_folder(folder):
        from bpm.data.datasets.market1501 import read_split

        splits = {}
        for side in ("query", "gallery"):
            records = read_split(folder / side)[0]
            kept = set(readable([r.path for r in records], skip_bad_images))
            records = [r for r in records if r.path in kept]
            if not records:
                raise BpmError(f"--images {folder / side}: no images (.jpg, .jpeg, .png, .bmp) found")
            splits[f"{name}/{side}"] = FeatureSplit.from_records(extractor([r.path for r in records]), records)
        return splits
    kept = set(readable([str(folder / n) for n in _image_names(folder)], skip_bad_images))
    names = [n for n in _image_names(folder) if str(folder / n) in kept]
    paths = [str(folder / n) for n in names]
    pids, camids = market_ids(names) or (None, None)
    return {f"{name}/{FOLDER_SPLIT}": FeatureSplit(extractor(paths), names, paths, pids, camids)}


def _write_mat(out: Path, features: np.ndarray, names: list[str], attrs: dict) -> None:
    """The original's ``features`` variable, plus ``names`` (which the original forgot), ids, ``source``."""
    from bpm.engine.outputs import atomic_write

    ids = market_ids(names)

    def write(tmp: Path) -> None:
        from scipy.io import savemat

        data = {"features": features, "names": np.array(names, dtype=object).reshape(-1, 1),  # N x 1 cell
                "source": {k: str(v) for k, v in attrs.items()}}
        if ids is not None:
            data["pids"], data["camids"] = ids
        with open(tmp, "wb") as handle:
            savemat(handle, data)

    atomic_write(out, write, "features file")


def extract_folder(extractor, folder: str | Path, out: str | Path, attrs: dict | None = None,
                   skip_bad_images: bool = False) -> tuple[np.ndarray, list[str]]:
    """Embed ``folder``'s images (sorted names) with ``extractor`` and write ``out`` whole (atomically).

    HDF5: a features file (:mod:`bpm.evaluation.features_file`); ``.mat``: the folder's own images.
    ``attrs`` (weights, network, ...) are recorded in the file. Returns every written row and its name.
    """
    folder, out = Path(folder), Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise BpmError(f"--out {out}: expected a file ending in .h5, .hdf5 or .mat")
    if not folder.is_dir():
        raise BpmError(f"--images {folder}: not a folder")
    attrs = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "images": str(folder.resolve()), **(attrs or {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".mat":
        names = [Path(p).name for p in readable([str(folder / n) for n in _image_names(folder)], skip_bad_images)]
        features = extractor([str(folder / n) for n in names])
        _write_mat(out, features, names, attrs)
        return features, names
    splits = folder_splits(extractor, folder, skip_bad_images)
    write_features_file(out, splits, attrs)
    return (np.concatenate([split.features for split in splits.values()]),
            [name for split in splits.values() for name in split.names])


def run(args: argparse.Namespace) -> int:
    from bpm.inference import FeatureExtractor
    from bpm.precision import resolve_device

    # Inputs first: a typo in --images or --out must not wait for the model to load.
    if Path(args.out).suffix not in OUTPUT_SUFFIXES:
        raise BpmError(f"--out {args.out}: expected a file ending in .h5, .hdf5 or .mat")
    if not Path(args.images).is_dir():
        raise BpmError(f"--images {args.images}: not a folder")
    if Path(args.out).suffix == ".mat" and is_test_folder(Path(args.images)):
        raise BpmError(f"--out {args.out}: a folder with query/ and gallery/ is written as a features file's two "
                       f"groups, which .mat cannot hold; use --out <name>.h5 (or --images {args.images}/query)")
    if not Path(args.weights).exists():
        raise BpmError(f"{args.weights}: weights file not found")
    if not Path(args.weights).is_file():
        raise BpmError(f"{args.weights}: not a regular file (a folder, FIFO or device); expected a weights file")
    from bpm.engine.outputs import check_output_file
    from bpm.switches import check_common

    check_common(vars(args))  # --resize_h_w, --batch_size
    check_output_file(args.out, "--out", hdf5=Path(args.out).suffix != ".mat")
    device = resolve_device(tuple(args.sys_device_ids))
    typed, precision = model_settings(args).overrides(), precision_settings(args)
    group = from_switches(FeatureSettings, args, FeatureSettings.SWITCHES, workers=0)  # decoded in this process
    extractor = FeatureExtractor(
        args.weights, net=typed["net"], device=device, resize_h_w=typed["resize_h_w"],
        opt_level=precision.opt_level, backend=args.backend, batch_size=group.batch_size,
        normalize=group.normalize, last_conv_stride=typed["last_conv_stride"], amp_dtype=precision.amp_dtype,
        keep_batchnorm_fp32=precision.keep_batchnorm_fp32, threads=args.threads, flip=group.flip,
    )
    start = time.perf_counter()
    attrs = {"weights": str(Path(args.weights).resolve()), "net": extractor.net, "backend": extractor.backend,
             "opt_level": args.opt_level, "command": "bpm extract", "flip": int(extractor.flip),
             "resize_h_w": str(tuple(extractor.resize_h_w)),
             **normalization_attrs(extractor.normalize, extractor.input_spec.normalize_features)}
    features, names = extract_folder(extractor, args.images, args.out, attrs, args.skip_bad_images)
    seconds = time.perf_counter() - start
    print(f"{len(names)} images -> {args.out}: features {features.shape[0]}x{features.shape[1]} "
          f"({extractor.backend}, {extractor.net}, {len(names) / max(seconds, 1e-9):.1f} img/s)")
    return 0
