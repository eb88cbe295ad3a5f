"""GPU inference per opt-level: images/s and feature agreement with FP32, both networks, same run.

    python bench/gpu_infer_speed.py                  # 256x128, batches 32 and 256
    python bench/gpu_infer_speed.py --batches 1,64

Each level runs through the code path evaluation uses (``PrecisionPolicy.prepare_model`` and
``bpm.evaluation.features.embed_batch``): O0 is true FP32 (TF32 off), O1 autocast FP16, O2/O3
FP16 weights with FP32 BatchNorm, channels-last on CUDA. Times are CUDA-synchronised medians;
ratios are against O0 of the same network in the same run. The cosine column compares each
level's embeddings with O0's on the same images (BatchNorm statistics are first measured on
those images, so activations have realistic ranges).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bpm.evaluation.features import embed_batch  # noqa: E402
from bpm.machine import print_machine  # noqa: E402
from bpm.models.reid import build_model  # noqa: E402
from bpm.precision import PrecisionPolicy  # noqa: E402


def seeded_model(net: str, images: torch.Tensor) -> torch.nn.Module:
    """Random weights whose BatchNorm statistics come from ``images`` (so FP16 ranges are realistic)."""
    torch.manual_seed(0)
    model = build_model(net, 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def time_level(model: torch.nn.Module, images: torch.Tensor, policy: PrecisionPolicy, repeats: int) -> float:
    """Median seconds per batch, the host-to-device copy of the batch included (as in evaluation)."""
    for _ in range(3):
        embed_batch(model, images, policy)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embed_batch(model, images, policy)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", default="mobilenetV2,resnet50")
    parser.add_argument("--levels", default="O0,O1,O2,O3")
    parser.add_argument("--size", default="256x128", help="HxW")
    parser.add_argument("--batches", default="32,256")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    print_machine()
    if not torch.cuda.is_available():
        sys.exit("gpu_infer_speed: torch.cuda.is_available() is False; this benchmark needs a CUDA GPU")
    h, w = (int(v) for v in args.size.split("x"))
    levels = args.levels.split(",")
    torch.backends.cudnn.benchmark = True
    print(f"{'net':<12}{'batch':>6}  {'level':<6}{'img/s':>10}{'ms/batch':>10}{'vs O0':>8}{'min cos':>10}")
    for net in args.nets.split(","):
        generator = torch.Generator().manual_seed(1)
        probe = torch.randn(64, 3, h, w, generator=generator)
        reference = seeded_model(net, probe)
        reference_features = None
        for batch in (int(b) for b in args.batches.split(",")):
            images = torch.randn(batch, 3, h, w, generator=generator).pin_memory()
            rows = {}
            for level in levels:
                policy = PrecisionPolicy.create(level, "cuda")
                model = build_model(net, 1)
                model.load_state_dict(reference.state_dict())
                model = policy.prepare_model(model).eval()
                seconds = time_level(model, images, policy, args.repeats)
                features = F.normalize(embed_batch(model, probe, policy), dim=1)
                if level == "O0":
                    reference_features = features
                cosine = (features * reference_features).sum(1).min().item() if reference_features is not None else float("nan")
                rows[level] = (batch / seconds, 1000 * seconds, cosine)
                del model
                torch.cuda.empty_cache()
            base = rows.get("O0", next(iter(rows.values())))[0]
            for level, (ips, ms, cosine) in rows.items():
                print(f"{net:<12}{batch:>6}  {level:<6}{ips:>10.1f}{ms:>10.2f}{ips / base:>8.2f}{cosine:>10.5f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
