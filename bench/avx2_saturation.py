"""INT8 on an AVX2-only CPU, argued on this one: VPMADDUBSW pair saturation of a QDQ graph, per layer and end to end.

    python bench/avx2_saturation.py --model RUN/mobilenet_v2_128x64_int8.onnx --data_root ../shared/data/cuhk03_detected
    python bench/avx2_saturation.py --model INT8.onnx --data_root DIR --images 0 --fp32 RUN/ckpt.pth   # + mAP, vs FP32

ONNX Runtime's u8 x s8 kernels add adjacent products in saturating int16 on CPUs without VNNI (see
bpm/export/saturation.py); with VNNI (and wherever no pair sum leaves int16) they compute the same
integers. Per quantised group-1 Conv/Gemm: pair sums counted over at most ``--max_rows`` sampled output
positions, how many saturate, the relative error that leaves in the accumulators, and ``check``: the
exact accumulators rescaled against ORT's float layer (~1e-7 when the emulation reads the layer right).
End to end: embeddings of the graph with every such layer's saturation injected, against the exact
INT8 arithmetic (both run unfused by ORT, so only the saturation differs), the graph as ORT runs it here
(also with ``session.x64quantprecision=1``, ORT's remedy: u8 weights and U8U8 kernels, which cannot
saturate) and with ``--fp32`` (a checkpoint or FP32 graph) the FP32 model. ``--images 0`` takes every query and
gallery image of the ``folder``-layout ``--data_root`` and adds mAP / rank-1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bpm.data.datasets import build_dataset  # noqa: E402
from bpm.data.transforms import image_batch  # noqa: E402
from bpm.export.pipeline import _evenly  # noqa: E402
from bpm.export.saturation import emulate_avx2, saturation_report, unfused_session  # noqa: E402
from bpm.export.verify import cosine_rows, retrieval_scores  # noqa: E402
from bpm.machine import print_machine  # noqa: E402
from bpm.models.onnx_graph import read_spec, session_options  # noqa: E402


def features(run, images: np.ndarray, batch: int) -> np.ndarray:
    """``run`` over ``images`` in batches, float64 [N, D]."""
    return np.concatenate([np.asarray(run(images[i:i + batch]), np.float64).reshape(len(images[i:i + batch]), -1)
                           for i in range(0, len(images), batch)])


def graph_features(session, images: np.ndarray, batch: int) -> np.ndarray:
    name = session.get_inputs()[0].name
    return features(lambda x: session.run(None, {name: x})[0], images, batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, required=True, help="INT8 QDQ graph (bpm export --formats onnx_int8)")
    parser.add_argument("--data_root", type=Path, required=True, help="folder layout data set: query/ and gallery/")
    parser.add_argument("--images", type=int, default=256, help="query+gallery images, evenly spread (0: all, + mAP)")
    parser.add_argument("--max_rows", type=int, default=20000, help="sampled output positions per layer")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--fp32", default=None, help="the FP32 model (checkpoint or ONNX) for cosines to FP32")
    args = parser.parse_args(argv)
    print_machine()
    import onnx
    import onnxruntime as ort
    import torch

    spec = read_spec(args.model).input_spec
    test_set = build_dataset("folder", str(args.data_root)).test_sets[0]
    records = test_set.query + test_set.gallery
    chosen = records if args.images <= 0 else _evenly(records, args.images)
    images = image_batch([r.path for r in chosen], spec)
    print(f"model {args.model} | {len(images)} of {len(records)} query+gallery images of {args.data_root} | "
          f"at most {args.max_rows} output positions per layer", flush=True)

    report = saturation_report(args.model, images, max_rows=args.max_rows, batch_size=args.batch)
    width = max(len(r.name) for r in report)
    print(f"{'layer':{width}}      K    pair sums  saturated  fraction  acc. rel. error    check")
    for r in report:
        print(f"{r.name:{width}}  {r.k:5d}  {r.pairs:11d}  {r.saturated:9d}  {r.fraction:8.2e}  "
              f"{r.relative_error:15.2e}  {r.check_error:7.1e}")
    pairs, saturated = sum(r.pairs for r in report), sum(r.saturated for r in report)
    worst = max(report, key=lambda r: r.relative_error)
    print(f"total: {saturated} of {pairs} pair sums saturate ({saturated / pairs:.2e}), in "
          f"{sum(r.saturated > 0 for r in report)} of {len(report)} layers; worst layer {worst.name}: "
          f"accumulator relative error {worst.relative_error:.2e} (fraction {worst.fraction:.2e}); "
          f"largest check {max(r.check_error for r in report):.1e}", flush=True)

    proto = onnx.load(str(args.model))
    # ORT's remedy, on by default where int8_saturates(): s8 weights made u8, U8U8 kernels (no VPMADDUBSW).
    precise = session_options(precise_int8=True)
    sessions = {
        "INT8 exact integers (unfused)": unfused_session(proto),
        "INT8 AVX2-only, emulated (unfused)": unfused_session(emulate_avx2(proto)),
        "INT8, ORT default session (this CPU)": ort.InferenceSession(str(args.model), session_options(precise_int8=False),
                                                                providers=["CPUExecutionProvider"]),
        "same, session.x64quantprecision=1": ort.InferenceSession(str(args.model), precise,
                                                                  providers=["CPUExecutionProvider"]),
    }
    variants = {name: graph_features(session, images, args.batch) for name, session in sessions.items()}
    if args.fp32:
        from bpm.models.loading import load_model

        fp32, _ = load_model(args.fp32)
        with torch.no_grad():
            variants["FP32"] = features(lambda x: fp32(torch.from_numpy(x)).numpy(), images, args.batch)
    references = {"INT8 exact": variants["INT8 exact integers (unfused)"]}
    if args.fp32:
        references["FP32"] = variants["FP32"]
    print(f"{'embeddings (cosine mean / min)':36}" + "".join(f"{'to ' + r:>20}" for r in references)
          + (f"{'mAP%':>8}{'R1%':>8}" if args.images <= 0 else ""))
    for name, feats in variants.items():
        cosines = [cosine_rows(feats, reference) for reference in references.values()]
        line = f"{name:36}" + "".join(f"{f'{c.mean():.5f} / {c.min():.5f}':>20}" for c in cosines)
        if args.images <= 0:
            nq = len(test_set.query)
            m_ap, rank1 = retrieval_scores(feats[:nq], feats[nq:], test_set, spec.normalize_features)
            line += f"{100 * m_ap:8.2f}{100 * rank1:8.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
