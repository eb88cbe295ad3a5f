"""``bpm export``: weights (.pt FP32/FP16, .safetensors) and ONNX (FP32/FP16/INT8), each verified.

Example::

    bpm export --weights expt_res/mobilenet/ckpt.pth --out exports/ \\
        --formats pt,pt16,safetensors,onnx,onnx16,onnx_int8 --dataset market1501 --data_root ~/Dataset/market1501
"""
from __future__ import annotations

import argparse

from bpm.cli.switches import (add_data_switches, add_model_switches, add_precision_switches, add_threads_switch,
                        data_settings, model_settings, precision_settings, str2bool)
from bpm.errors import BpmError
from bpm.export.formats import EXPORT_FORMATS, default_formats
from bpm.export.pipeline import ExportOptions, parse_formats, run_export
from bpm.export.quantize import CALIBRATION_METHODS, MAX_FP32_LAYERS, QUANT_FORMATS


def _formats(text: str) -> tuple[str, ...]:
    try:
        return parse_formats(text)
    except BpmError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--formats: ")) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="checkpoint (ckpt.pth), weights file (ours or the original's), ImageNet file or .safetensors")
    parser.add_argument("--out", required=True, help="output folder (file names say the format)")
    parser.add_argument("--formats", type=_formats, default=default_formats(),
                        help=f"files to write: a comma list from {', '.join(EXPORT_FORMATS.names())} "
                             f"(default: {','.join(default_formats())})")
    add_model_switches(parser)
    add_precision_switches(parser, autocast=False, level_help="precision of the 'pt' weights file: O0/O1 FP32, O2/O3 FP16")
    add_data_switches(parser, optional=True, dataset_help="dataset for calibration images and the accuracy check")
    parser.add_argument("--calib_images", default=None,
                        help="folder of images for calibration and verification when no --dataset is given")
    parser.add_argument("--calib_count", type=int, default=200, help="calibration images for INT8")
    parser.add_argument("--verify_count", type=int, default=64, help="images for the cosine-similarity check")
    parser.add_argument("--evaluate", type=str2bool, default=True,
                        help="with --dataset: mAP/rank-1 of every ONNX format on the test set")
    parser.add_argument("--max_map_drop", type=float, default=1.0, help="mAP points a format may lose vs PyTorch FP32")
    parser.add_argument("--bake_normalization", type=str2bool, default=False,
                        help="ONNX takes 0..255 RGB and normalises inside the graph")
    parser.add_argument("--input_name", default="images", help="name of the ONNX graph's input")
    parser.add_argument("--output_name", default="features", help="name of the ONNX graph's output")
    parser.add_argument("--legacy_names", type=str2bool, default=False,
                        help="the original's names: input actual_input_1, output output1")
    parser.add_argument("--quant_format", default="qdq", choices=QUANT_FORMATS,
                        help="INT8 graph style: qdq (QuantizeLinear/DequantizeLinear pairs; as fast as qoperator on an "
                             "idle AVX-512 VNNI CPU, more accurate with layers kept FP32, and readable by OpenVINO) or "
                             "qoperator (QLinearConv etc.)")
    parser.add_argument("--calib_method", default="mse", choices=CALIBRATION_METHODS,
                        help="activation ranges: mse = least-error clipping per tensor; the others are ONNX Runtime's")
    parser.add_argument("--int8_equalize", type=str2bool, default=True,
                        help="rescale channels between layers (same function) so 8-bit activation ranges fit every "
                             "channel; see bpm/export/equalize.py")
    parser.add_argument("--int8_sensitivity", type=int, default=0,
                        help="report the N activations whose 8-bit rounding alone costs the most (0: off)")
    parser.add_argument("--int8_weight_bits", type=int, default=8, choices=(8, 7),
                        help="7: weights in [-64, 64], so CPUs without VNNI (AVX2 only) run the file with ONNX Runtime's "
                             "fast u8 x s8 kernels without saturating (8 needs its slower exact kernels there)")
    parser.add_argument("--max_fp32_layers", type=int, default=MAX_FP32_LAYERS,
                        help="should INT8 miss the cosine threshold on held-out calibration-pool images, keep up to N "
                             "layers whose weights alone cost the most in FP32, worst first, until it passes (0: never)")
    parser.add_argument("--qat_epochs", type=int, default=None,
                        help="fine-tune N epochs on the training images with 8-bit rounding simulated, learning the "
                             "FP32 model's embedding, and keep it if it beats post-training INT8 on held-out images "
                             "(0: post-training only; default: fine-tune 4 epochs only if post-training INT8 misses "
                             "its held-out check)")
    parser.add_argument("--qat_lr", type=float, default=1e-4, help="learning rate of --qat_epochs (Adam, cosine)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.add_argument("--name", default="", help="file name stem (default <net>_<h>x<w>)")
    add_threads_switch(parser)


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    """The command boundary: the model, precision and data groups (untyped model values: the weights
    file decides), and the export's own switches."""
    return ExportOptions(
        weights=args.weights, out_dir=args.out, formats=args.formats, model=model_settings(args),
        precision=precision_settings(args), data=data_settings(args) if args.dataset else None,
        calib_images=args.calib_images, calib_count=args.calib_count, verify_count=args.verify_count,
        evaluate=args.evaluate, max_map_drop=args.max_map_drop, bake_normalization=args.bake_normalization,
        input_name=args.input_name, output_name=args.output_name, legacy_names=args.legacy_names,
        quant_format=args.quant_format, calib_method=args.calib_method, int8_equalize=args.int8_equalize,
        int8_sensitivity=args.int8_sensitivity, max_fp32_layers=args.max_fp32_layers,
        int8_weight_bits=args.int8_weight_bits, qat_epochs=args.qat_epochs, qat_lr=args.qat_lr,
        opset=args.opset, name=args.name,
        threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    run_export(options_from_args(args))
    return 0
