"""Claim: bpm.evaluation.evaluate is >= 10x faster than the classic per-query argsort loop at
Market-1501 scale (3,368 x 15,913) for a strong model and >= 5x for a weak one, with identical
CMC / mAP / mINP.

Run: .venv/bin/python bench/eval_speed.py [--repeats 5] [--json out.json]

Two synthetic Market-shaped cases, both 3,368 queries x 15,913 gallery float32, 6 cameras:

- strong: 751 ids, 2,793 distractors (pid 0), Euclidean distances of 64-d features (identity
  centre + camera shift + noise): true matches near the top, as for a decent model;
- weak: 750 ids, 10 % distractors, distances U(0, 1) for the same id and U(0, 1) + 0.5
  otherwise: true matches spread over the first half of the ranking, as early in training or
  across domains.

The cost of ``evaluate`` depends on the *kept fraction*: the share of the query x gallery
entries that lie at or before each query's worst true match (everything that can outrank a
true match), printed per case. Timings are medians of round-robin runs (classic loop,
``evaluate``, ``evaluate`` on one thread), so a busy machine slows all three alike.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bpm.evaluation import compute_distances, evaluate
from bpm.evaluation import metrics
from bpm.machine import print_machine

NUM_Q, NUM_G, IDS, CAMS, DISTRACTORS, DIM = 3368, 15913, 751, 6, 2793, 64
WEAK_IDS, WEAK_DISTRACTOR_SHARE = 750, 0.10


def market_like(seed: int = 0):
    """Strong model: distance matrix plus ids/cameras with Market-1501's sizes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(IDS + 1, DIM)).astype(np.float32)
    cam_shift = rng.normal(size=(CAMS, DIM)).astype(np.float32) * 0.5
    q_pids = rng.integers(1, IDS + 1, NUM_Q)
    g_pids = np.concatenate([rng.integers(1, IDS + 1, NUM_G - DISTRACTORS), np.zeros(DISTRACTORS, dtype=np.int64)])
    q_cams, g_cams = rng.integers(0, CAMS, NUM_Q), rng.integers(0, CAMS, NUM_G)

    def feats(pids, cams):
        base = np.where(pids[:, None] > 0, centres[pids], rng.normal(size=(pids.size, DIM)).astype(np.float32))
        return base + cam_shift[cams] + rng.normal(size=(pids.size, DIM)).astype(np.float32) * 0.85

    dist = compute_distances(feats(q_pids, q_cams), feats(g_pids, g_cams), device="cpu")
    return dist, q_pids, g_pids, q_cams, g_cams


def weak_model(seed: int = 0):
    """Weak model: same sizes, 10 % distractors, U(0, 1) distances plus 0.5 for other ids."""
    rng = np.random.default_rng(seed)
    distractors = int(round(NUM_G * WEAK_DISTRACTOR_SHARE))
    q_pids = rng.integers(1, WEAK_IDS + 1, NUM_Q)
    g_pids = np.concatenate([rng.integers(1, WEAK_IDS + 1, NUM_G - distractors), np.zeros(distractors, dtype=np.int64)])
    q_cams, g_cams = rng.integers(0, CAMS, NUM_Q), rng.integers(0, CAMS, NUM_G)
    dist = rng.random((NUM_Q, NUM_G), dtype=np.float32)
    dist += np.float32(0.5) * (q_pids[:, None] != g_pids[None, :])
    return dist, q_pids, g_pids, q_cams, g_cams


def kept_fraction(distmat, q_pids, g_pids, q_camids, g_camids) -> float:
    """Share of query x gallery entries evaluate has to rank: valid entries at or below the
    distance of their query's worst true match."""
    pos_r, pos_c, inv_r, inv_c = metrics._match_structure(q_pids, g_pids, q_camids, g_camids)
    worst = np.full(distmat.shape[0], -np.inf, dtype=distmat.dtype)
    np.maximum.at(worst, pos_r, distmat[pos_r, pos_c])
    keep = distmat <= worst[:, None]
    keep[inv_r, inv_c] = False
    keep[:, g_pids == metrics.JUNK_PID] = False
    return float(np.count_nonzero(keep)) / keep.size


def classic(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The classic baseline: argsort each query row, walk it in a per-query Python loop."""
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i])
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        matches = (g_pids[order][keep] == q_pids[i]).astype(np.int32)
        if not matches.any():
            continue
        cum = matches.cumsum()
        last = np.flatnonzero(matches)[-1]
        all_inp.append(cum[last] / (last + 1.0))
        cmc = np.minimum(cum, 1)
        all_cmc.append(cmc[:max_rank])
        precision = cum / np.arange(1, cum.size + 1)
        all_ap.append((precision * matches).sum() / matches.sum())
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap)), float(np.mean(all_inp))


def evaluate_one_thread(*data):
    saved = metrics._MAX_THREADS
    metrics._MAX_THREADS = 1
    try:
        return evaluate(*data)
    finally:
        metrics._MAX_THREADS = saved


def round_robin(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median seconds of each function, run in turn ``repeats`` times, and its last result."""
    times = {name: [] for name in fns}
    results = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, results


def bench_case(name: str, data, repeats: int) -> dict:
    seconds, results = round_robin(
        {
            "classic": lambda: classic(*data),
            "evaluate": lambda: evaluate(*data),
            "evaluate_1_thread": lambda: evaluate_one_thread(*data),
        },
        repeats,
    )
    cmc, m_ap, m_inp = results["classic"]
    for key in ("evaluate", "evaluate_1_thread"):
        new = results[key]
        np.testing.assert_allclose(new["cmc"], cmc, atol=1e-6)
        assert abs(new["mAP"] - m_ap) < 1e-6 and abs(new["mINP"] - m_inp) < 1e-6
    new = results["evaluate"]
    kept = kept_fraction(*data)
    print(f"{name}: rank-1 {new['cmc'][0]:.4f}  mAP {new['mAP']:.4f}  mINP {new['mINP']:.4f} "
          f"(identical to baseline)  kept fraction {kept:.3f}")
    threads = metrics._worker_count()
    print(f"  {'classic loop':<24} median {seconds['classic']:.3f} s")
    for key, label in (("evaluate", f"evaluate ({threads} thread{'s' * (threads > 1)})"),
                       ("evaluate_1_thread", "evaluate (1 thread)")):
        print(f"  {label:<24} median {seconds[key]:.3f} s   speed-up {seconds['classic'] / seconds[key]:5.1f}x")
    return {
        "kept_fraction": kept,
        "seconds": seconds,
        "speedup": {k: seconds["classic"] / seconds[k] for k in ("evaluate", "evaluate_1_thread")},
        "threads": threads,
        "rank1": float(new["cmc"][0]),
        "mAP": new["mAP"],
        "mINP": new["mINP"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the machine and the figures here")
    args = parser.parse_args()
    machine = print_machine()
    print(f"data: {NUM_Q} x {NUM_G} float32, {CAMS} cams; medians of {args.repeats} round-robin runs")
    cases = {}
    for name, make in (("strong", market_like), ("weak", weak_model)):
        cases[name] = bench_case(name, make(), args.repeats)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "repeats": args.repeats, "cases": cases}, indent=2) + "\n")


if __name__ == "__main__":
    main()
