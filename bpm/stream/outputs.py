"""What ``bpm stream`` leaves in ``--out``: per-camera MOT tracks, global identities, crops, summary.

Everything is written at the end of a run and on Ctrl-C, each file atomically, so an interrupted
run keeps what it had processed and a failing write never leaves half a file.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

import cv2

from bpm.stream.association import TrackState
from bpm.files import write_text
from bpm.stream.motfiles import format_rows

TRACKS_DIR = "tracks"
CROPS_DIR = "crops"
CSV_FIELDS = ("identity", "name", "camera", "track", "frame", "time", "x1", "y1", "x2", "y2", "score")


def write_tracks(out: Path, cameras: Iterable[str], tracks: Iterable[TrackState]) -> dict[str, Path]:
    """``out/tracks/<camera>.txt`` in MOTChallenge format; the id column is the global identity."""
    rows: dict[str, list] = {camera: [] for camera in cameras}
    for track in tracks:
        ident = track.identity.id if track.identity is not None else -1
        rows.setdefault(track.camera, []).extend((r[0], ident, *r[2:]) for r in track.rows)
    paths = {}
    for camera, items in rows.items():
        paths[camera] = out / TRACKS_DIR / f"{camera}.txt"
        paths[camera].parent.mkdir(parents=True, exist_ok=True)
        write_text(paths[camera], format_rows(items), "MOT tracks file")
    return paths


def write_crops(out: Path, tracks: Iterable[TrackState]) -> dict[tuple[str, int], str]:
    """Each track's best crop (by quality) as ``crops/<identity>_<camera>_<track>.jpg``; relative paths."""
    paths = {}
    (out / CROPS_DIR).mkdir(parents=True, exist_ok=True)
    for track in tracks:
        if track.best_crop is None or track.identity is None or track.best_crop.size == 0:
            continue
        relative = f"{CROPS_DIR}/{track.identity.id:04d}_{track.camera}_{track.track_id}.jpg"
        ok, data = cv2.imencode(".jpg", track.best_crop)
        if ok:
            (out / relative).write_bytes(data.tobytes())
            paths[(track.camera, track.track_id)] = relative
    return paths


def identity_records(tracks: Iterable[TrackState], crops: dict[tuple[str, int], str]) -> list[dict[str, Any]]:
    """One record per identity: name, cameras, and per camera its tracks with every appearance."""
    records: dict[int, dict[str, Any]] = {}
    for track in sorted(tracks, key=lambda t: (t.camera, t.first_frame, t.track_id)):
        if track.identity is None:
            continue
        record = records.setdefault(track.identity.id, {"id": track.identity.id, "name": track.identity.name,
                                                         "enrolled": track.identity.enrolled, "cameras": {}})
        record["cameras"].setdefault(track.camera, []).append({
            "track": track.track_id,
            "first_frame": track.first_frame, "last_frame": track.last_frame,
            "first_time": round(track.rows[0][1], 3) if track.rows else None,
            "last_time": round(track.rows[-1][1], 3) if track.rows else None,
            "match_distance": None if track.distance != track.distance else round(track.distance, 4),
            "crop": crops.get((track.camera, track.track_id)),
            "appearances": [[f, round(t, 3), *(round(v, 1) for v in box), round(s, 4)] for f, t, *box, s in
                            ((r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in track.rows)],
        })
    return [records[k] for k in sorted(records)]


def write_identities(out: Path, records: list[dict[str, Any]]) -> None:
    """``identities.json`` (appearances as ``[frame, time, x1, y1, x2, y2, score]``) and ``identities.csv``."""
    write_text(out / "identities.json", json.dumps(
        {"appearance_fields": ["frame", "time", "x1", "y1", "x2", "y2", "score"], "identities": records}, indent=1) + "\n",
        "identities file")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for record in records:
        for camera, tracks in record["cameras"].items():
            for track in tracks:
                for frame, time, x1, y1, x2, y2, score in track["appearances"]:
                    writer.writerow((record["id"], record["name"], camera, track["track"], frame, time, x1, y1, x2, y2, score))
    write_text(out / "identities.csv", buffer.getvalue(), "identities table")


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n", "run summary")
