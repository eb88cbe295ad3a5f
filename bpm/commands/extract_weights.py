"""The original's ``extract_weights.py``: checkpoint -> weights file + ONNX, now verified.

Same flags as the original (``--check_point_file``, ``--model_file``, ``--onnx_file``, ``--net``,
``--resize_h_w``, ``--opt-level``). ``--opt-level O2``/``O3`` writes FP16 weights and an FP16 ONNX
graph like the original's releases; ``O0``/``O1`` write FP32. Unlike the original, the ONNX graph
has a dynamic batch axis and a flattened ``[N, D]`` output, and both files are reloaded and
compared with the PyTorch model before the script succeeds (see ``bpm export`` for all formats).

    python script/experiment/extract_weights.py --check_point_file expt_res/mobilenet/ckpt.pth \\
        --model_file expt_res/mobilenet/model_weight.pt --onnx_file expt_res/mobilenet/model.onnx
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bpm.cli.switches import (add_data_switches, add_model_switches, add_precision_switches, data_settings,
                        model_settings, precision_settings, str2bool)
from bpm.errors import BpmError
from bpm.cli.helpformat import make_parser


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(description="checkpoint -> weights file + ONNX, each verified")
    parser.add_argument("--check_point_file", required=True, help="training checkpoint (ckpt.pth) or weights file")
    parser.add_argument("--model_file", default="", help="weights file to write (.pt; .safetensors also works)")
    parser.add_argument("--onnx_file", default="", help="ONNX file to write")
    add_model_switches(parser)
    add_precision_switches(parser, default="O2", autocast=False,
                           level_help="O2/O3: FP16 weights and ONNX (the original's default); O0/O1: FP32")
    parser.add_argument("--legacy_names", type=str2bool, default=True,
                        help="ONNX input/output names actual_input_1/output1, as the original's file")
    add_data_switches(parser, optional=True, dataset_help="optional dataset for the accuracy check")
    return parser


def main(argv: list[str] | None = None) -> int:
    from bpm.export.pipeline import ExportOptions, run_export

    args = build_parser().parse_args(argv)
    if not args.model_file and not args.onnx_file:
        print("error: give --model_file and/or --onnx_file", file=sys.stderr)
        return 2
    half = args.opt_level in ("O2", "O3")
    onnx_format = "onnx16" if half else "onnx"
    formats, names = [], {}
    if args.model_file:
        fmt = "safetensors" if args.model_file.endswith(".safetensors") else "pt"
        formats.append(fmt)
        names[fmt] = str(Path(args.model_file).resolve())
    if args.onnx_file:
        formats.append(onnx_format)
        names[onnx_format] = str(Path(args.onnx_file).resolve())
    out_dir = Path(args.onnx_file or args.model_file).resolve().parent
    options = ExportOptions(
        weights=args.check_point_file, out_dir=str(out_dir), formats=tuple(formats), model=model_settings(args),
        precision=precision_settings(args), data=data_settings(args) if args.dataset else None,
        legacy_names=args.legacy_names, file_names=names,
    )
    try:
        run_export(options)
    except BpmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
