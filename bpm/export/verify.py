"""Checks that an exported file computes what the PyTorch FP32 model computes.

Two measures, per format: cosine similarity of each image's embedding with the PyTorch FP32
embedding (mean and worst image), and, when a dataset is given, mAP / rank-1 on its test set
compared with the PyTorch FP32 model. Re-ID ranks by distances between embeddings, so direction
(cosine) is what must survive quantisation; retrieval scores show whether it did.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bpm.data.records import TestSet, id_arrays
from bpm.evaluation import compute_distances, evaluate
from bpm.evaluation.features import l2_normalize
from bpm.files import write_text

# Minimum mean cosine similarity with the PyTorch FP32 embeddings, by numeric precision. bf16 (OpenVINO's
# default on CPUs with AMX) keeps 8 mantissa bits to fp16's 11, hence the looser bound; mAP is checked too.
COSINE_THRESHOLDS = {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.995, "int8": 0.98}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows; a zero row against a zero row counts as identical, a zero
    row against any other as 0 (an export that outputs zeros must not pass a cosine check)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    norms = norm_a * norm_b
    dots = (a * b).sum(axis=1)
    both_zero = (norm_a == 0) & (norm_b == 0)
    cos = np.where(both_zero, 1.0, np.where(norms == 0, 0.0, dots / np.where(norms == 0, 1.0, norms)))
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
    #: "verified" (moved to its final name) or "refused" (kept as ``*.refused.<ext>``), once settled.
    status: str = "unchecked"

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
        q_feat, g_feat = l2_normalize(q_feat), l2_normalize(g_feat)
    q_pids, q_cams = id_arrays(test_set.query)
    g_pids, g_cams = id_arrays(test_set.gallery)
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

    # Columns as wide as their longest entry (openvino_int8, efficientnet_lite2_256x128_fp16.onnx) plus two spaces.
    fw = max([len("torch fp32"), *(len(c.format) for c in checks)]) + 2
    nw = max([len("(reference)"), *(len(c.file) for c in checks)]) + 2
    lines = [f"{'format':<{fw}}{'file':<{nw}}{'MB':>6}{'cos mean':>10}{'cos min':>10}{'min req':>9}"
             f"{'mAP%':>8}{'R1%':>8}  status"]
    if reference is not None:
        lines.append(f"{'torch fp32':<{fw}}{'(reference)':<{nw}}{'':>6}{1:>10.5f}{1:>10.5f}{'':>9}"
                     f"{pct(reference[0]):>8}{pct(reference[1]):>8}  reference")
    for c in checks:
        status = "ok" if c.passed else "FAIL: " + "; ".join(c.failures)
        lines.append(f"{c.format:<{fw}}{c.file:<{nw}}{c.bytes / 1e6:>6.2f}{c.cosine_mean:>10.5f}{c.cosine_min:>10.5f}"
                     f"{c.threshold:>9}{pct(c.mAP):>8}{pct(c.rank1):>8}  {status}")
    return "\n".join(lines)


def describe_check(check: FormatCheck) -> str:
    """How a file was checked, in one line (its ONNX metadata and the report say the same)."""
    line = (f"mean cosine {check.cosine_mean:.6f} (min {check.cosine_min:.6f}, required {check.threshold}) "
            "against PyTorch FP32 features of the same images")
    if check.mAP is not None:
        line += f"; mAP {100 * check.mAP:.2f}% ({check.mAP_drop_points:+.2f} points below PyTorch FP32)"
    return line + ("" if check.passed else "; failed: " + "; ".join(check.failures))


# ONNX metadata keys saying whether ``bpm export`` verified a file (read by bpm.FeatureExtractor).
VERIFICATION_KEY = "bpm.verification"
VERIFICATION_DETAIL_KEY = "bpm.verification_detail"


def stamp_verification(path: str | Path, status: str, detail: str) -> None:
    """Record in an ONNX file's metadata whether it was verified (``verified``, ``refused``,
    ``unverified``) and how, so the file itself tells a consumer what it is worth."""
    import onnx

    proto = onnx.load(str(path))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in (VERIFICATION_KEY, VERIFICATION_DETAIL_KEY)]
    del proto.metadata_props[:]
    for key, value in kept + [(VERIFICATION_KEY, status), (VERIFICATION_DETAIL_KEY, detail)]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def warn_if_unverified(path: str | Path, metadata: dict[str, str]) -> None:
    """One warning when an ONNX file says ``bpm export`` refused it or never verified it.

    Files without the key (written elsewhere, or by an older bpm) are not judged.
    """
    status = metadata.get(VERIFICATION_KEY)
    if status == "refused":
        warnings.warn(f"{path}: this file was refused by bpm export ({metadata.get(VERIFICATION_DETAIL_KEY, '?')}); "
                      "its features may be wrong", UserWarning, stacklevel=3)
    elif status is not None and status != "verified":
        warnings.warn(f"{path}: this file was not verified by bpm export ({status}); its features are unchecked",
                      UserWarning, stacklevel=3)


def report_rows(checks: list[FormatCheck]) -> list[dict]:
    return [{**asdict(c), "passed": c.passed} for c in checks]


def earlier_rows(path: Path, rewritten: set[str]) -> list[dict]:
    """Rows of an earlier ``export_report.json`` in the same folder for files this export did not
    rewrite and that are still there (with the source each came from), so the report describes
    every file in the folder, not only this run's."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict):
        return []
    rows = [{**row, "source": old.get("source")} for row in old.get("formats", []) if isinstance(row, dict)]
    rows += [row for row in old.get("earlier_files", []) if isinstance(row, dict)]
    return [row for row in rows if row.get("file") not in rewritten and (path.parent / str(row.get("file"))).is_file()]


def write_report(path: Path, checks: list[FormatCheck], context: dict) -> None:
    """``export_report.json``, written atomically, keeping the earlier report's rows of files not rewritten."""
    rewritten = {c.file for c in checks}
    report = {**context, "passed": all(c.passed for c in checks), "formats": report_rows(checks),
              "earlier_files": earlier_rows(path, rewritten)}
    write_text(path, json.dumps(report, indent=2) + "\n", "the export report")
