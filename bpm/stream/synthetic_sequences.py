"""Generated multi-camera footage with known answers: people of the synthetic world walking across cameras.

Each camera has its own scene and optics (:mod:`bpm.data.synthetic`'s camera model: colour cast,
haze, blur, noise), so the same person looks different from camera to camera, as in the re-ID
world the demo model is trained on. Every person walks across one or more cameras (left to right
or back), one after the other with gaps, some return to a camera they left, and people walking in
opposite directions cross. Written in MOTChallenge layout, one folder per camera::

    OUT/<camera>/img1/000001.jpg ...   the frames (an image-sequence source)
    OUT/<camera>/gt/gt.txt             boxes with GLOBAL person ids (same person, same id everywhere)
    OUT/<camera>/det/det.txt           the same boxes as detections (id -1, score 1): ``--detections OUT``

The identities come from their own seed, so they are not the people of a training world.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bpm.data.synthetic import apply_camera, draw_person, make_camera, make_identity
from bpm.errors import BpmError
from bpm.files import write_text

IDENTITY_SEED_OFFSET = 7919  # keeps sequence people apart from a world drawn with the same seed


@dataclass(frozen=True)
class SequenceConfig:
    num_cameras: int = 2
    num_people: int = 6
    frames: int = 150            # per camera
    width: int = 320
    height: int = 240
    fps: float = 10.0
    visits: int = 2              # camera visits per person (consecutive visits go to other cameras, except re-entries)
    nuisance: float = 0.35
    seed: int = 0


@dataclass(frozen=True)
class Walk:
    person: int       # global id, 1-based
    camera: int       # 0-based
    start: int        # first frame (1-based)
    duration: int     # frames to cross
    direction: int    # +1 left to right, -1 right to left
    foot: float       # foot line, fraction of the frame height
    height: float     # person height, fraction of the frame height
    turn: float = 1.0  # fraction of the crossing after which the walker turns back (1: never)


def plan_walks(config: SequenceConfig, rng: np.random.Generator) -> list[Walk]:
    """Each person's visits: successive cameras, separated by gaps, within the sequence's frames."""
    walks = []
    slot = config.frames / max(1, config.visits)
    for person in range(1, config.num_people + 1):
        camera = int(rng.integers(config.num_cameras))
        for visit in range(config.visits):
            duration = int(rng.uniform(0.45, 0.8) * slot)
            start = 1 + int(visit * slot + rng.uniform(0, max(1.0, slot - duration)))
            walks.append(Walk(person, camera, start, duration, int(rng.choice((-1, 1))),
                              float(rng.uniform(0.8, 0.95)), float(rng.uniform(0.5, 0.62))))
            if config.num_cameras > 1 and rng.random() < 0.8:  # mostly move on; sometimes re-enter the same camera
                camera = (camera + int(rng.integers(1, config.num_cameras))) % config.num_cameras
    return walks


def _render_person(img: np.ndarray, identity, walk: Walk, frame: int, width: int, height: int) -> tuple | None:
    """Draw one walker at ``frame``; its visible box (x1, y1, x2, y2) or None when off screen."""
    t = (frame - walk.start) / walk.duration
    if not 0.0 <= t <= 1.0:
        return None
    turned = t > walk.turn
    if turned:  # walking back the way they came
        t = 2 * walk.turn - t
    ph = walk.height * height * identity.height
    pw = ph * 0.3 * identity.build
    margin = 0.8 * pw
    cx = -margin + t * (width + 2 * margin)
    if walk.direction < 0:  # enters from the right
        cx = width - cx
    top = walk.foot * height - ph
    phase = frame * 0.9
    gap, swing = abs(np.sin(phase)) * 0.12 * ph, np.sin(phase) * 0.08 * ph
    if (walk.direction < 0) != turned:  # facing left; the renderer draws side views facing right: draw mirrored
        canvas = np.ascontiguousarray(img[:, ::-1])
        draw_person(canvas, identity, "side", top, ph, width - cx, gap, swing)
        img[:] = canvas[:, ::-1]
    else:
        draw_person(img, identity, "side", top, ph, cx, gap, swing)
    x1, x2 = max(0.0, cx - 0.6 * pw), min(float(width), cx + 0.6 * pw)
    y1, y2 = max(0.0, top - 0.02 * ph), min(float(height), top + ph)
    if x2 - x1 < 0.5 * 1.2 * pw:  # mostly outside the frame: not annotated
        return None
    return x1, y1, x2, y2


def generate_sequences(out: str | Path, config: SequenceConfig = SequenceConfig(),
                       walks: list[Walk] | None = None) -> list[Path]:
    """Write the cameras' folders (see the module docstring); the camera folders' paths.

    ``walks`` replaces the random plan with given ones (a scene with a known difficulty, e.g. two
    people who meet and turn back, which motion alone reads as passing each other).
    """
    if config.num_cameras < 1 or config.num_people < 1 or config.frames < 2:
        raise BpmError("synthetic sequences: need at least 1 camera, 1 person and 2 frames")
    out = Path(out)
    rng = np.random.default_rng([config.seed, 11])
    people = [make_identity(np.random.default_rng([config.seed + IDENTITY_SEED_OFFSET, p]))
              for p in range(config.num_people)]
    cameras = [make_camera(np.random.default_rng([config.seed, 13, c]), config.height // 2, config.width // 4,
                            config.nuisance) for c in range(config.num_cameras)]
    walks = plan_walks(config, rng) if walks is None else walks
    folders = []
    for c, camera in enumerate(cameras):
        folder = out / f"cam{c + 1}"
        (folder / "img1").mkdir(parents=True, exist_ok=True)
        mine = sorted((w for w in walks if w.camera == c), key=lambda w: w.foot)  # far (higher foot line) first
        rows = []
        for frame in range(1, config.frames + 1):
            img = camera.background[:config.height, :config.width].copy()
            for walk in mine:
                box = _render_person(img, people[walk.person - 1], walk, frame, config.width, config.height)
                if box is not None:
                    rows.append((frame, walk.person, *box))
            pixels = apply_camera(img, camera, np.random.default_rng([config.seed, 17, c, frame]))
            cv2.imwrite(str(folder / "img1" / f"{frame:06d}.jpg"), pixels[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        gt = "".join(f"{f},{p},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},1,1,1\n" for f, p, x1, y1, x2, y2 in rows)
        det = "".join(f"{f},-1,{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},1,-1,-1,-1\n" for f, p, x1, y1, x2, y2 in rows)
        for sub in ("gt", "det"):
            (folder / sub).mkdir(exist_ok=True)
        write_text(folder / "gt" / "gt.txt", gt, "ground-truth file")
        write_text(folder / "det" / "det.txt", det, "detections file")
        write_text(folder / "seqinfo.ini", f"[Sequence]\nname=cam{c + 1}\nimDir=img1\nframeRate={config.fps:g}\n"
                          f"seqLength={config.frames}\nimWidth={config.width}\nimHeight={config.height}\nimExt=.jpg\n", "sequence info")
        folders.append(folder)
    return folders
