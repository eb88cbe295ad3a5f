"""Claim: distances + evaluation scale far beyond Market-1501: a 100,000-image gallery with
2,000 queries is evaluated in chunks, never holding a float64 (or any second) copy of the matrix.

Run: .venv/bin/python bench/large_gallery.py [--gallery 100000 --queries 2000]

Prints wall time of compute_distances and evaluate and the process's peak RSS growth; the
float32 distance matrix itself (queries x gallery x 4 bytes, 800 MB by default) is the floor.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from bpm.evaluation import compute_distances, evaluate
from bpm.machine import print_machine


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--ids", type=int, default=5_000)
    args = parser.parse_args()
    print_machine()
    rng = np.random.default_rng(0)
    dim, cams = 128, 8
    centres = rng.normal(size=(args.ids + 1, dim)).astype(np.float32)
    q_pids = rng.integers(1, args.ids + 1, args.queries)
    g_pids = rng.integers(0, args.ids + 1, args.gallery)  # pid 0 = distractors
    q_cams, g_cams = rng.integers(0, cams, args.queries), rng.integers(0, cams, args.gallery)
    q_feats = centres[q_pids] + rng.normal(size=(args.queries, dim)).astype(np.float32) * 1.6
    g_feats = centres[g_pids] + rng.normal(size=(args.gallery, dim)).astype(np.float32) * 1.6
    base = peak_mb()

    start = time.perf_counter()
    dist = compute_distances(q_feats, g_feats, chunk_size=256, device="cpu")
    t_dist = time.perf_counter() - start
    after_dist = peak_mb()
    start = time.perf_counter()
    result = evaluate(dist, q_pids, g_pids, q_cams, g_cams)
    t_eval = time.perf_counter() - start
    after_eval = peak_mb()

    print(f"{args.queries} queries x {args.gallery} gallery, {dim}-d features, {args.ids} ids")
    print(f"distance matrix float32: {dist.nbytes / 2**20:.0f} MB")
    print(f"compute_distances {t_dist:6.2f} s   peak RSS growth {after_dist - base:7.0f} MB")
    print(f"evaluate          {t_eval:6.2f} s   extra peak RSS beyond that {after_eval - after_dist:7.0f} MB")
    print(f"rank-1 {result['cmc'][0]:.4f}  mAP {result['mAP']:.4f}  mINP {result['mINP']:.4f}  "
          f"valid queries {result['num_valid_queries']}")


if __name__ == "__main__":
    main()
