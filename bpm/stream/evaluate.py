"""Scoring a run against ground truth with ``motmetrics``, and picking the match threshold from it.

Ground truth is MOTChallenge ``gt.txt`` per camera whose ids are *global* (the same person has the
same id in every camera), as :mod:`bpm.stream.synthetic_sequences` writes it. Reported:

* per camera and over all cameras: IDF1, MOTA, ID switches, precision, recall (IoU >= 0.5);
* **cross-camera IDF1**: IDF1 of all cameras concatenated into one sequence, so an identity
  must keep its id from one camera to the next (the multi-camera IDF1 of DukeMTMC);
* **cross-camera identity accuracy**: over every (person, camera a, camera b) with the person
  seen in both, the share where the person's majority predicted identity is the same in both
  cameras and that identity belongs to this person (no merge with another).
"""
from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bpm.errors import BpmError
from bpm.evaluation.features import l2_normalize
from bpm.stream.motfiles import find_camera_file, read_mot
from bpm.stream.sources import Source

METRICS = ("idf1", "mota", "num_switches", "precision", "recall", "num_frames")
IOU_MATCH = 0.5


def _iou_distances(gt_xywh: np.ndarray, hyp_xywh: np.ndarray, sv) -> np.ndarray:
    """1 - IoU, NaN (no match allowed) under ``IOU_MATCH``: what motmetrics' ``iou_matrix`` gives, which
    calls ``np.asfarray`` (gone in NumPy 2), so supervision's ``box_iou_batch`` computes the IoU."""
    if len(gt_xywh) == 0 or len(hyp_xywh) == 0:
        return np.empty((len(gt_xywh), len(hyp_xywh)))
    to_xyxy = lambda b: np.concatenate([b[:, :2], b[:, :2] + b[:, 2:4]], axis=1)  # noqa: E731
    distances = 1.0 - sv.box_iou_batch(to_xyxy(gt_xywh), to_xyxy(hyp_xywh))
    distances[distances > 1.0 - IOU_MATCH] = np.nan
    return distances


def _accumulate(acc: Any, gt: np.ndarray, hyp: np.ndarray, offset: int) -> int:
    """Add one camera's frames to ``acc`` (frame ids shifted by ``offset``); the largest frame id used."""
    import supervision as sv

    frames = sorted(set(gt[:, 0].astype(int)) | set(hyp[:, 0].astype(int)))
    for frame in frames:
        g, h = gt[gt[:, 0] == frame], hyp[hyp[:, 0] == frame]
        distances = _iou_distances(g[:, 2:6], h[:, 2:6], sv)
        acc.update(g[:, 1].astype(int).tolist(), h[:, 1].astype(int).tolist(), distances, frameid=offset + frame)
    return max(frames, default=0)


def cross_camera_accuracy(matches: Sequence[tuple[str, int, int]]) -> tuple[float, int]:
    """From ``(camera, gt_id, predicted_id)`` matches: the accuracy defined in the module docstring and the pair count."""
    per_camera: dict[tuple[int, str], Counter] = defaultdict(Counter)
    per_prediction: dict[int, Counter] = defaultdict(Counter)
    for camera, gt_id, pred in matches:
        per_camera[(gt_id, camera)][pred] += 1
        per_prediction[pred][gt_id] += 1
    owner = {pred: counts.most_common(1)[0][0] for pred, counts in per_prediction.items()}
    majority: dict[int, dict[str, int]] = defaultdict(dict)
    for (gt_id, camera), counts in per_camera.items():
        majority[gt_id][camera] = counts.most_common(1)[0][0]
    correct = total = 0
    for gt_id, cameras in majority.items():
        for a, b in itertools.combinations(sorted(cameras), 2):
            total += 1
            correct += int(cameras[a] == cameras[b] and owner[cameras[a]] == gt_id)
    return (correct / total if total else float("nan")), total


def evaluate(tracks_dir: str | Path, gt_root: str | Path, cameras: Sequence[str]) -> dict[str, Any]:
    """Metrics of ``tracks_dir/<camera>.txt`` against ``gt_root``'s ground truth (see the module docstring)."""
    import motmetrics as mm

    tracks_dir = Path(tracks_dir)
    accumulators, combined = [], mm.MOTAccumulator(auto_id=False)
    offset, frame_camera = 0, []
    for camera in cameras:
        gt = read_mot(find_camera_file(gt_root, camera, "gt"))
        hyp_path = tracks_dir / f"{camera}.txt"
        if not hyp_path.is_file():
            raise BpmError(f"{hyp_path}: no tracks for camera {camera!r}")
        hyp = read_mot(hyp_path)
        acc = mm.MOTAccumulator(auto_id=False)
        _accumulate(acc, gt, hyp, 0)
        accumulators.append(acc)
        last = _accumulate(combined, gt, hyp, offset)
        frame_camera.append((offset, camera))
        offset += last + 1
    host = mm.metrics.create()
    table = host.compute_many(accumulators + [combined], metrics=list(METRICS), names=list(cameras) + ["__all__"])
    rows = {name: {k: (float(v) if k != "num_switches" and k != "num_frames" else int(v)) for k, v in table.loc[name].items()}
            for name in table.index}
    events = combined.mot_events
    matched = events[events["Type"] == "MATCH"]
    starts = np.array([o for o, _ in frame_camera])
    matches = []
    for (frame, _event), row in zip(matched.index, matched.itertuples()):
        camera = frame_camera[int(np.searchsorted(starts, frame, side="right")) - 1][1]
        matches.append((camera, int(row.OId), int(row.HId)))
    accuracy, pairs = cross_camera_accuracy(matches)
    per_camera = {c: rows[c] for c in cameras}
    return {
        "cameras": per_camera,
        "idf1": float(np.mean([r["idf1"] for r in per_camera.values()])),
        "mota": float(np.mean([r["mota"] for r in per_camera.values()])),
        "cross_camera_idf1": rows["__all__"]["idf1"],
        "cross_camera_accuracy": accuracy,
        "cross_camera_pairs": pairs,
        "iou_match": IOU_MATCH,
    }


def calibrate(sources: Sequence[Source], gt_root: str | Path, embedder: Callable[[list[np.ndarray]], np.ndarray],
              crops_per_track: int = 8) -> dict[str, Any]:
    """The cosine-distance threshold that best separates same-person from different-person tracks.

    Each (person, camera) ground-truth track is embedded from ``crops_per_track`` evenly spaced
    crops (mean of unit embeddings); distances of pairs of the same person in different cameras
    ("same") and of different people ("different") are collected, and the threshold maximising
    balanced accuracy ((TPR + TNR) / 2) is returned with both distributions' quartiles.
    """
    track_means: list[tuple[int, np.ndarray]] = []
    for source in sources:
        gt = read_mot(find_camera_file(gt_root, source.name, "gt"))
        wanted: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
        for gt_id in np.unique(gt[:, 1]).astype(int):
            rows = gt[gt[:, 1] == gt_id]
            for row in rows[np.unique(np.linspace(0, len(rows) - 1, crops_per_track).round().astype(int))]:
                wanted[int(row[0])].append((gt_id, row[2:6]))
        crops: dict[int, list[np.ndarray]] = defaultdict(list)
        for frame in source.frames():
            for gt_id, (x, y, w, h) in wanted.get(frame.index, ()):
                crop = frame.image[max(0, int(y)):int(y + h), max(0, int(x)):int(x + w)]
                if crop.size:
                    crops[gt_id].append(np.ascontiguousarray(crop[:, :, ::-1]))
        for gt_id, items in crops.items():
            features = embedder(items)
            features = l2_normalize(features)
            mean = features.mean(axis=0)
            track_means.append((gt_id, mean / max(np.linalg.norm(mean), 1e-12)))
    same, different = [], []
    for (id_a, a), (id_b, b) in itertools.combinations(track_means, 2):
        (same if id_a == id_b else different).append(float(1.0 - a @ b))
    if not same or not different:
        raise BpmError(f"--calibrate: {gt_root} needs people seen in two cameras and at least two people")
    same_arr, diff_arr = np.array(same), np.array(different)
    candidates = np.unique(np.concatenate([same_arr, diff_arr]))
    candidates = (candidates[:-1] + candidates[1:]) / 2 if len(candidates) > 1 else candidates
    balanced = [((same_arr < t).mean() + (diff_arr >= t).mean()) / 2 for t in candidates]
    best = int(np.argmax(balanced))
    quartiles = lambda v: [round(float(q), 4) for q in np.percentile(v, [25, 50, 75])]  # noqa: E731
    return {"threshold": round(float(candidates[best]), 4), "balanced_accuracy": round(float(balanced[best]), 4),
            "same_pairs": len(same), "different_pairs": len(different),
            "same_quartiles": quartiles(same_arr), "different_quartiles": quartiles(diff_arr)}
