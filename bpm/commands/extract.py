"""``bpm extract``: features of every image in a folder, saved with the image names.

Argument handling only; the work (folder layouts, file formats) is
:func:`bpm.evaluation.folder_features.extract_folder`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bpm.cli.switches import (add_device_switches, add_feature_switches, add_image_check_switch, add_model_switches,
                        add_precision_switches, add_threads_switch, feature_settings, model_settings,
                        precision_settings)
from bpm.errors import BpmError
from bpm.evaluation.features_file import normalization_attrs
from bpm.evaluation.folder_features import OUTPUT_SUFFIXES, extract_folder, is_test_folder
from bpm.models.backends import EXTRACTION_BACKENDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="checkpoint, weights file, .safetensors, exported .onnx or OpenVINO IR .xml")
    parser.add_argument("--images", required=True, help="folder of images (jpg, png, bmp)")
    parser.add_argument("--out", required=True, help="feats.h5 (HDF5) or feats.mat (MATLAB)")
    parser.add_argument("--backend", default=None, choices=EXTRACTION_BACKENDS.choices(),
                        help="runtime (default: by the file's suffix: onnx for .onnx, openvino for .xml, else torch)")
    add_device_switches(parser)
    add_model_switches(parser)  # an ONNX file carries its own network and input size
    add_precision_switches(parser)
    add_feature_switches(parser, folder=True)  # the feature group of bpm test (--batch_size: its old spelling)
    add_image_check_switch(parser)
    add_threads_switch(parser)
    parser.add_argument("--streams", type=int, default=1,
                        help="openvino backend: split each batch into N parts run at once, each on its share of "
                             "--threads (OpenVINO's throughput mode; faster for large batches on few cores)")


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
    from bpm.files import check_output_file
    from bpm.cli.checks import check_common

    check_common(vars(args))  # --resize_h_w, --batch_size
    check_output_file(args.out, "--out", hdf5=Path(args.out).suffix != ".mat")
    device = resolve_device(tuple(args.sys_device_ids))
    typed, precision = model_settings(args).overrides(), precision_settings(args)
    group = feature_settings(args, workers=0)  # decoded in this process
    extractor = FeatureExtractor(
        args.weights, net=typed["net"], device=device, resize_h_w=typed["resize_h_w"],
        opt_level=precision.opt_level, backend=args.backend, batch_size=group.batch_size,
        normalize=group.normalize, last_conv_stride=typed["last_conv_stride"], amp_dtype=precision.amp_dtype,
        keep_batchnorm_fp32=precision.keep_batchnorm_fp32, threads=args.threads, flip=group.flip,
        streams=args.streams,
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
