"""The original's ``infer_images_example.py``: features of every image in a folder -> ``.mat``.

Same flags as the original; the ``.mat`` file holds ``features`` (one row per image) and, new,
``names`` (the original forgot them), plus ``pids``/``camids`` for Market-style names. A path
without a suffix gets ``.mat`` appended, as scipy did for the original. ``bpm extract`` does the
same with HDF5 output and an ONNX backend.

    python script/experiment/infer_images_example.py -d '()' --ckpt_file expt_res/mobilenet/ckpt.pth \\
        --saved_feature_mat_file ./features --image_dir ./my_images --net mobilenetV2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bpm.cli.switches import (add_device_switches, add_model_switches, add_precision_switches,  # noqa: E402
                        add_weights_switches, model_settings, precision_settings)
from bpm.errors import BpmError  # noqa: E402
from bpm.cli.helpformat import make_parser  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(description="features of every image in a folder -> .mat")
    add_device_switches(parser)
    add_model_switches(parser)
    add_precision_switches(parser)
    add_weights_switches(parser, checkpoint=True)
    parser.add_argument("--saved_feature_mat_file", required=True, help="output .mat file")
    parser.add_argument("--image_dir", required=True, help="folder of images")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from bpm.evaluation.folder_features import extract_folder
        from bpm.inference import FeatureExtractor
        from bpm.precision import resolve_device

        weights = args.ckpt_file or args.model_weight_file
        if not weights:
            raise BpmError("give --ckpt_file or --model_weight_file")
        out = Path(args.saved_feature_mat_file)
        if out.suffix != ".mat":
            out = out.with_name(out.name + ".mat")
        typed, precision = model_settings(args).overrides(), precision_settings(args)
        extractor = FeatureExtractor(weights, net=typed["net"],
                                     device=resolve_device(tuple(args.sys_device_ids)), resize_h_w=typed["resize_h_w"],
                                     opt_level=precision.opt_level, backend="torch",
                                     last_conv_stride=typed["last_conv_stride"], amp_dtype=precision.amp_dtype,
                                     keep_batchnorm_fp32=precision.keep_batchnorm_fp32)
        features, names = extract_folder(extractor, args.image_dir, out)
    except BpmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Saved features of {len(names)} images ({features.shape[1]}-d) and their names to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
