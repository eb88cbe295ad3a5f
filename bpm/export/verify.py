"""Checks that an exported file computes what the PyTorch FP32 model computes.

Two measures, per format: cosine similarity of each image's embedding with the PyTorch FP32
embedding (mean and worst image), and, when a dataset is given, mAP / rank-1 on its test set
compared with the PyTorch FP32 model. Re-ID ranks by distances between embeddings, so direction
(cosine) is what must survive quantisation; retrieval scores show whether it did.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bpm.data.records import ImageRecord, TestSet
from bpm.evaluation import compute_distances, evaluate

# Minimum mean cosine similarity with the PyTorch FP32 embeddings, by numeric precision.
COSINE_THRESHOLDS = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows; a zero row against a zero row counts as identical."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both_zero = norms == 0
    cos = np.where(both_zero, 1.0, dots / np.where(both_zero, 1.0, norms))
    return np.where(np.isfinite(cos), cos, -1.0)


@dataclass
class FormatCheck:
    """One line of the verification table."""

    format: str
    file: str
    precision: str
    bytes: int
    cosine_mean: float
    cosine_min: float
    threshold: float
    mAP: float | None = None
    rank1: float | None = None
    mAP_drop_points: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def check_cosine(name: str, file: Path, precision: str, features: np.ndarray, reference: np.ndarray) -> FormatCheck:
    cos = cosine_rows(features, reference)
    threshold = COSINE_THRESHOLDS[precision]
    check = FormatCheck(name, file.name, precision, file.stat().st_size, float(cos.mean()), float(cos.min()), threshold)
    if not check.cosine_mean >= threshold:
        check.failures.append(f"mean cosine {check.cosine_mean:.5f} < {threshold}")
    return check


def retrieval_scores(q_feat: np.ndarray, g_feat: np.ndarray, test_set: TestSet,
                     normalize: bool = False) -> tuple[float, float]:
    """Single-query mAP and rank-1 (fractions) of features on a test set.

    ``normalize``: L2-normalise first, as ``bpm test`` does for BNNeck features, so an export is
    scored the way the model is used.
    """
    if normalize:
        q_feat, g_feat = (f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12) for f in (q_feat, g_feat))
    def ids(records: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
        return np.array([r.pid for r in records]), np.array([r.camid for r in records])

    q_pids, q_cams = ids(test_set.query)
    g_pids, g_cams = ids(test_set.gallery)
    result = evaluate(compute_distances(q_feat, g_feat), q_pids, g_pids, q_cams, g_cams, max_rank=10)
    return float(result["mAP"]), float(result["cmc"][0])


def add_retrieval(check: FormatCheck, scores: tuple[float, float], reference: tuple[float, float],
                  max_map_drop: float) -> None:
    """Record mAP / rank-1 and fail the format if it loses more than ``max_map_drop`` mAP points."""
    check.mAP, check.rank1 = scores
    check.mAP_drop_points = 100.0 * (reference[0] - scores[0])
    if check.mAP_drop_points > max_map_drop:
        check.failures.append(f"mAP {100 * scores[0]:.2f}% is {check.mAP_drop_points:.2f} points below "
                              f"PyTorch FP32 ({100 * reference[0]:.2f}%), allowed {max_map_drop}")


def format_table(checks: list[FormatCheck], reference: tuple[float, float] | None) -> str:
    def pct(value: float | None) -> str:
        return "    -" if value is None else f"{100 * value:6.2f}"

    lines = [f"{'format':<12}{'file':<34}{'MB':>8}{'cos mean':>10}{'cos min':>10}{'min req':>9}"
             f"{'mAP%':>8}{'R1%':>8}  status"]
    if reference is not None:
        lines.append(f"{'torch fp32':<12}{'(reference)':<34}{'':>8}{1:>10.5f}{1:>10.5f}{'':>9}"
                     f"{pct(reference[0]):>8}{pct(reference[1]):>8}  reference")
    for c in checks:
        status = "ok" if c.passed else "FAIL: " + "; ".join(c.failures)
        lines.append(f"{c.format:<12}{c.file:<34}{c.bytes / 1e6:>8.2f}{c.cosine_mean:>10.5f}{c.cosine_min:>10.5f}"
                     f"{c.threshold:>9}{pct(c.mAP):>8}{pct(c.rank1):>8}  {status}")
    return "\n".join(lines)


def write_report(path: Path, checks: list[FormatCheck], context: dict) -> None:
    report = {**context, "passed": all(c.passed for c in checks),
              "formats": [{**asdict(c), "passed": c.passed} for c in checks]}
    path.write_text(json.dumps(report, indent=2) + "\n")
