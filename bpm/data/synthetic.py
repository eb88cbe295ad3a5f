"""The demo world: a seeded generator of synthetic pedestrians in the exact Market-1501 layout.

No real dataset can be downloaded at run time, so the default dataset is one we draw. The world
has to behave like a re-ID benchmark, not like a toy:

* identities are built from SHARED small palettes (clothing colours, patterns, bags, hair,
  height/build), so many identities agree on most attributes and no single colour separates them;
* every camera has its own nuisance (illumination gain and colour cast, haze, desaturation,
  resolution/blur, noise, background scene and clutter, preferred viewpoints, occlusion rate),
  so features that look at global colour statistics, as a randomly initialised CNN does, match
  images by camera rather than by person;
* per image the pose, viewpoint (what is visible: a backpack from behind, a logo from the front),
  crop and brightness jitter.

Everything is drawn with vectorised numpy into an HxWx3 array and saved as JPEG with PIL. Each
image has its own random generator derived from ``(seed, image serial)``, so the output is
byte-identical for a given config and independent of drawing order. The world is written into a
temporary sibling folder and renamed into place, so an interrupted run never leaves a folder that
looks complete; ``world.json`` (config + counts) is what :func:`ensure_world` compares to reuse it.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from bpm.data.records import JUNK_PID
from bpm.errors import BpmError

GENERATOR_VERSION = 1
"""Bumped whenever the renderer changes, so cached worlds drawn by an older renderer are redrawn."""

SPLITS = ("bounding_box_train", "bounding_box_test", "query", "gt_bbox")
WORLD_FILE = "world.json"
DISTRACTOR_PID = 0

# Shared palettes. Dark and neutral clothes dominate, as on real streets, which is what makes
# many identities look alike at a glance.
_CLOTH = np.array([
    (20, 20, 22), (45, 45, 50), (110, 110, 115), (200, 200, 200), (235, 235, 230), (30, 40, 90),
    (50, 90, 170), (120, 160, 210), (150, 30, 35), (200, 60, 50), (40, 100, 50), (110, 120, 60),
    (210, 180, 60), (220, 140, 170), (100, 65, 40), (190, 165, 125), (90, 50, 120), (220, 120, 40),
], dtype=np.float32)
_CLOTH_P = np.array([14, 12, 9, 6, 6, 9, 7, 4, 4, 3, 3, 3, 2, 2, 4, 4, 2, 2], dtype=np.float64)
_CLOTH_P /= _CLOTH_P.sum()
_SKIN = np.array([(240, 205, 180), (215, 170, 135), (180, 130, 95), (135, 90, 60), (95, 65, 45)], np.float32)
_HAIR = np.array([(15, 12, 10), (60, 40, 25), (110, 80, 45), (190, 160, 100), (130, 130, 130)], np.float32)
_HAIR_P = np.array([0.45, 0.25, 0.12, 0.1, 0.08])
_SHOES = np.array([(15, 15, 15), (235, 235, 235), (90, 60, 40), (60, 60, 70)], np.float32)

_PATTERNS = ("plain", "stripes", "checks", "logo")
_LOWER_TYPES = ("trousers", "shorts", "skirt")
_BAGS = ("none", "backpack", "shoulder", "handbag")
_VIEWS = ("front", "back", "side")


@dataclass(frozen=True)
class WorldConfig:
    """Size and difficulty of the demo world; the defaults are sized for the CPU demo.

    Every test identity appears in at least ``min_cameras_per_id`` cameras with at least
    ``min_images_per_id_camera`` images per camera, so each query has a cross-camera match.
    ``nuisance`` scales every camera-dependent effect (0 = all cameras identical and clean).
    """

    num_train_ids: int = 250
    num_test_ids: int = 120
    num_cameras: int = 6
    min_cameras_per_id: int = 2
    max_cameras_per_id: int = 5
    min_images_per_id_camera: int = 2
    max_images_per_id_camera: int = 5
    queries_per_id_camera: int = 1
    multi_query_per_id_camera: int = 3
    num_distractors: int = 300
    num_junk: int = 100
    image_height: int = 128
    image_width: int = 64
    nuisance: float = 0.35
    jpeg_quality: int = 90
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, flag: str, what: str) -> None:
            if not ok:
                raise BpmError(f"--{flag}: expected {what}")

        need(self.num_train_ids >= 1, "num_train_ids", "at least 1")
        need(self.num_test_ids >= 1, "num_test_ids", "at least 1")
        need(self.num_train_ids + self.num_test_ids <= 9999, "num_test_ids", "train + test ids <= 9999 (4-digit names)")
        need(2 <= self.num_cameras <= 9, "num_cameras", "2..9 (one digit in c<cam>)")
        need(2 <= self.min_cameras_per_id <= self.num_cameras, "min_cameras_per_id", "2..num_cameras")
        need(self.min_cameras_per_id <= self.max_cameras_per_id <= self.num_cameras,
             "max_cameras_per_id", "min_cameras_per_id..num_cameras")
        need(self.queries_per_id_camera >= 1, "queries_per_id_camera", "at least 1")
        need(self.min_images_per_id_camera > self.queries_per_id_camera, "min_images_per_id_camera",
             "more than queries_per_id_camera, so every camera keeps gallery images")
        need(self.max_images_per_id_camera >= self.min_images_per_id_camera, "max_images_per_id_camera",
             ">= min_images_per_id_camera")
        need(self.multi_query_per_id_camera >= 0, "multi_query_per_id_camera", ">= 0")
        need(self.num_distractors >= 0, "num_distractors", ">= 0")
        need(self.num_junk >= 0, "num_junk", ">= 0")
        need(self.image_height >= 32 and self.image_width >= 16, "image_height", "an image of at least 32x16")
        need(self.nuisance >= 0, "nuisance", ">= 0")
        need(1 <= self.jpeg_quality <= 100, "jpeg_quality", "1..100")


# --------------------------------------------------------------------------------------------
# Identities, cameras and shots


@dataclass(frozen=True)
class PersonLook:
    """What one person looks like (clothes, bag, hair, height, build): the identity, not one picture of it.

    Public, with :func:`make_identity`, :func:`make_camera`, :func:`draw_person` and
    :func:`apply_camera`, so other generators (the stream's multi-camera sequences) draw the same
    people through the same cameras as the re-ID world without copying the renderer.
    """

    skin: np.ndarray
    hair: np.ndarray
    long_hair: bool
    hat: np.ndarray | None
    upper: np.ndarray
    pattern: str
    pattern_colour: np.ndarray
    pattern_period: float
    short_sleeves: bool
    lower: np.ndarray
    lower_type: str
    shoes: np.ndarray
    bag: str
    bag_colour: np.ndarray
    bag_side: int
    height: float
    build: float


def _cloth(rng: np.random.Generator) -> np.ndarray:
    """A palette colour with a small per-identity shift: shared families, distinct people."""
    base = _CLOTH[rng.choice(len(_CLOTH), p=_CLOTH_P)]
    return np.clip(base + rng.normal(0, 8, 3), 0, 255).astype(np.float32)


def make_identity(rng: np.random.Generator) -> PersonLook:
    """A person drawn from the shared palettes; the same generator state gives the same person."""
    upper = _cloth(rng)
    pattern_colour = _cloth(rng)
    return PersonLook(
        skin=_SKIN[rng.integers(len(_SKIN))],
        hair=_HAIR[rng.choice(len(_HAIR), p=_HAIR_P)],
        long_hair=bool(rng.random() < 0.3),
        hat=_cloth(rng) if rng.random() < 0.12 else None,
        upper=upper,
        pattern=_PATTERNS[rng.choice(4, p=[0.5, 0.2, 0.12, 0.18])],
        pattern_colour=pattern_colour,
        pattern_period=float(rng.uniform(0.035, 0.07)),
        short_sleeves=bool(rng.random() < 0.35),
        lower=_cloth(rng),
        lower_type=_LOWER_TYPES[rng.choice(3, p=[0.7, 0.18, 0.12])],
        shoes=_SHOES[rng.integers(len(_SHOES))],
        bag=_BAGS[rng.choice(4, p=[0.45, 0.25, 0.18, 0.12])],
        bag_colour=_cloth(rng),
        bag_side=int(rng.choice((-1, 1))),
        height=float(rng.uniform(0.78, 0.94)),
        build=float(rng.uniform(0.85, 1.2)),
    )


@dataclass(frozen=True)
class CameraModel:
    """One camera: its scene (``background``, ``clutter`` colours) and optics (see :func:`apply_camera`)."""

    gain: np.ndarray
    offset: np.ndarray
    desaturate: float
    shading: np.ndarray
    background: np.ndarray
    clutter: np.ndarray
    downscale: float
    blur: float
    noise: float
    view_p: np.ndarray
    occlusion_p: float


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    coarse = rng.random((cells, max(2, cells * w // h))).astype(np.float32)
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A scene colour: a random hue pulled halfway to a random grey."""
    grey = rng.uniform(60, 200)
    return (0.5 * rng.uniform(20, 235, 3) + 0.5 * grey).astype(np.float32)


def make_camera(rng: np.random.Generator, h: int, w: int, nuisance: float) -> CameraModel:
    """A camera for crops of ``h`` x ``w``: its scene (a ``2h`` x ``4w`` background, cut per image) and optics.

    ``nuisance`` scales how far the optics stray from neutral (0: a clean camera).
    """
    bh, bw = 2 * h, 4 * w
    # muted scenes (pavement, walls): colourful enough to differ per camera, not to dominate people
    wall, floor, accent, *clutter = (_muted(rng) for _ in range(7))
    horizon = int(bh * rng.uniform(0.45, 0.75))
    bg = np.empty((bh, bw, 3), np.float32)
    bg[:horizon] = wall
    bg[horizon:] = floor
    texture = rng.integers(3)
    yy, xx = np.mgrid[0:bh, 0:bw]
    if texture == 0:
        period = int(rng.integers(8, 20))
        bg[(yy % period < 2) | (xx % period < 2)] *= 0.7
    elif texture == 1:
        period = int(rng.integers(10, 30))
        mask = (xx % period < period // 2) & (yy < horizon)
        bg[mask] = 0.5 * bg[mask] + 0.5 * accent
    bg *= (0.75 + 0.5 * _smooth_noise(rng, bh, bw, int(rng.integers(3, 8))))[..., None]
    for _ in range(int(rng.integers(3, 8))):
        y0, x0 = int(rng.integers(0, bh - 8)), int(rng.integers(0, bw - 8))
        bg[y0:y0 + int(rng.integers(6, bh // 2)), x0:x0 + int(rng.integers(6, bw // 3))] = _muted(rng)
    cast = 1.0 + nuisance * rng.uniform(-0.2, 0.2, 3)
    brightness = 1.0 + nuisance * rng.uniform(-0.3, 0.2)
    direction = rng.normal(size=2)
    return CameraModel(
        gain=(cast * brightness).astype(np.float32),
        offset=(nuisance * rng.uniform(0, 30) * (1 + 0.3 * rng.uniform(-1, 1, 3))).astype(np.float32),
        desaturate=float(nuisance * rng.uniform(0, 0.35)),
        shading=(nuisance * 0.35 * direction / np.linalg.norm(direction)).astype(np.float32),
        background=np.clip(bg, 0, 255),
        clutter=np.stack(clutter),
        downscale=float(1.0 + nuisance * rng.uniform(0, 1.2)),
        blur=float(nuisance * rng.uniform(0, 0.9)),
        noise=float(2 + nuisance * rng.uniform(0, 8)),
        view_p=rng.dirichlet((1.5, 1.5, 1.5)),
        occlusion_p=float(min(0.9, nuisance * rng.uniform(0.03, 0.15))),
    )


@dataclass(frozen=True)
class _Shot:
    """One image to draw: where it goes, whom it shows, and how."""

    split: str
    name: str
    pid: int
    identity: int  # index into the identity table; -1 = nobody (a background-only distractor)
    cam: int
    serial: int
    view: int  # track's dominant viewpoint index
    crop: str  # "normal", "tight" (hand-drawn gt box), "bad" (junk / distractor detection)


# --------------------------------------------------------------------------------------------
# Drawing


def _rect(img: np.ndarray, y0: float, y1: float, x0: float, x1: float, colour: np.ndarray) -> None:
    h, w = img.shape[:2]
    a, b = max(0, int(round(y0))), min(h, int(round(y1)))
    c, d = max(0, int(round(x0))), min(w, int(round(x1)))
    if a < b and c < d:
        img[a:b, c:d] = colour


def _ellipse(img: np.ndarray, cy: float, cx: float, ry: float, rx: float, colour: np.ndarray,
             keep: str = "all") -> None:
    """Fill an ellipse; ``keep`` = 'left'/'right'/'top' restricts it to that half (hair, faces)."""
    h, w = img.shape[:2]
    a, b = max(0, int(cy - ry)), min(h, int(cy + ry) + 1)
    c, d = max(0, int(cx - rx)), min(w, int(cx + rx) + 1)
    if a >= b or c >= d:
        return
    yy = (np.arange(a, b, dtype=np.float32)[:, None] - cy) / max(ry, 0.5)
    xx = (np.arange(c, d, dtype=np.float32)[None, :] - cx) / max(rx, 0.5)
    mask = yy * yy + xx * xx <= 1.0
    if keep == "left":
        mask &= xx <= 0
    elif keep == "right":
        mask &= xx >= 0
    elif keep == "top":
        mask &= yy <= -0.1
    img[a:b, c:d][mask] = colour


def _torso_pattern(img: np.ndarray, ident: PersonLook, view: str, box: tuple[float, float, float, float], ph: float) -> None:
    """Stripes/checks show from every side; a logo only from the front."""
    y0, y1, x0, x1 = (int(round(v)) for v in box)
    h, w = img.shape[:2]
    y0, y1, x0, x1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
    if y0 >= y1 or x0 >= x1 or ident.pattern == "plain":
        return
    period = max(2.0, ident.pattern_period * ph)
    ys = (np.arange(y0, y1)[:, None] // (period / 2)).astype(np.int64)
    xs = (np.arange(x0, x1)[None, :] // (period / 2)).astype(np.int64)
    region = img[y0:y1, x0:x1]
    if ident.pattern == "stripes":
        region[np.broadcast_to(ys % 2 == 1, region.shape[:2])] = ident.pattern_colour
    elif ident.pattern == "checks":
        region[(ys + xs) % 2 == 1] = ident.pattern_colour
    elif view == "front":
        cy, cx = (y0 + y1) / 2 - 0.2 * (y1 - y0), (x0 + x1) / 2
        _rect(img, cy - 0.06 * ph, cy + 0.05 * ph, cx - 0.3 * (x1 - x0), cx + 0.3 * (x1 - x0), ident.pattern_colour)


def draw_person(img: np.ndarray, ident: PersonLook, view: str, top: float, ph: float, cx: float,
                 gap: float, swing: float) -> None:
    """Draw a pedestrian in place on float ``img`` facing the camera (front), away (back) or sideways (side,
    facing right): head at row ``top``, ``ph`` pixels tall, centred on column ``cx``; ``gap`` spreads the
    legs and ``swing`` moves the forearms (the walking pose). Parts outside the image are clipped."""
    pw = ph * 0.3 * ident.build

    def u(v: float) -> float:
        return top + v * ph

    side = view == "side"
    tw = 0.62 * pw if side else pw
    # bag side in image coordinates: the person's right hand is on the image left when facing us
    bag_x = -ident.bag_side if view == "front" else ident.bag_side
    if side and ident.bag == "backpack":
        _rect(img, u(0.18), u(0.46), cx - tw / 2 - 0.32 * pw, cx - tw / 2 + 2, ident.bag_colour)
    if ident.long_hair and view != "front":
        _rect(img, u(0.08), u(0.25), cx - 0.22 * pw, cx + 0.22 * pw, ident.hair)
    # legs and lower clothing
    legs_colour = ident.lower if ident.lower_type == "trousers" else ident.skin
    lw = 0.36 * pw
    offsets = (-gap / 2 - lw / 2, gap / 2 + lw / 2) if not side else (-gap, gap)
    for dx in offsets:
        _rect(img, u(0.52), u(0.95), cx + dx - lw / 2, cx + dx + lw / 2, legs_colour)
        _rect(img, u(0.95), u(1.0), cx + dx - lw / 2 - 1, cx + dx + lw / 2 + 2 * side, ident.shoes)
        if ident.lower_type == "shorts":
            _rect(img, u(0.52), u(0.7), cx + dx - lw / 2 - 1, cx + dx + lw / 2 + 1, ident.lower)
    if ident.lower_type == "skirt":
        _rect(img, u(0.5), u(0.72), cx - 0.58 * tw, cx + 0.58 * tw, ident.lower)
    else:
        _rect(img, u(0.5), u(0.58), cx - tw / 2, cx + tw / 2, ident.lower)
    # torso and arms
    _rect(img, u(0.16), u(0.52), cx - tw / 2, cx + tw / 2, ident.upper)
    _torso_pattern(img, ident, view, (u(0.16), u(0.52), cx - tw / 2, cx + tw / 2), ph)
    aw = 0.2 * pw
    sleeve_end = 0.3 if ident.short_sleeves else 0.47
    arms = (cx - tw / 2 - aw, cx + tw / 2) if not side else (cx - aw / 2,)
    for ax in arms:
        _rect(img, u(0.17), u(0.32), ax, ax + aw, ident.upper)
        fx = ax + swing
        _rect(img, u(0.32), u(0.47), fx, fx + aw, ident.upper if sleeve_end > 0.32 else ident.skin)
        _rect(img, u(0.47), u(0.51), fx, fx + aw, ident.skin)
    # bags
    if ident.bag == "backpack" and view == "back":
        _rect(img, u(0.18), u(0.45), cx - 0.36 * pw, cx + 0.36 * pw, ident.bag_colour)
    elif ident.bag == "backpack" and view == "front":
        for sx in (-1, 1):
            _rect(img, u(0.16), u(0.36), cx + sx * 0.3 * pw - 0.05 * pw, cx + sx * 0.3 * pw + 0.05 * pw, ident.bag_colour)
    elif ident.bag == "shoulder":
        bx = cx + bag_x * (tw / 2 + 0.08 * pw) if not side else cx - 0.1 * pw
        _rect(img, u(0.42), u(0.58), bx - 0.2 * pw, bx + 0.2 * pw, ident.bag_colour)
        if not side:
            for k in range(5):
                t = k / 4
                sy, sx = u(0.17 + 0.25 * t), cx - bag_x * (0.35 - 0.7 * t) * tw
                _rect(img, sy, sy + 0.06 * ph, sx - 0.05 * pw, sx + 0.05 * pw, ident.bag_colour)
    elif ident.bag == "handbag":
        hx = (arms[0] if bag_x < 0 or side else arms[-1]) + swing + aw / 2
        _rect(img, u(0.49), u(0.62), hx - 0.17 * pw, hx + 0.17 * pw, ident.bag_colour)
    # head: hair behind, face where visible, hat on top
    cy, ry, rx = u(0.085), 0.075 * ph, 0.21 * pw
    if view == "back":
        _ellipse(img, cy, cx, ry, rx, ident.hair)
    else:
        _ellipse(img, cy, cx, ry, rx, ident.skin)
        _ellipse(img, cy, cx, ry * 1.05, rx * 1.05, ident.hair, keep="top")
        if side:
            _ellipse(img, cy, cx, ry, rx, ident.hair, keep="left")
    if ident.hat is not None:
        _rect(img, cy - ry * 1.1, cy - ry * 0.35, cx - rx * 1.15, cx + rx * 1.15, ident.hat)


def _render(shot: _Shot, cfg: WorldConfig, identities: Sequence[PersonLook], cams: Sequence[CameraModel],
            strangers_seed: int) -> np.ndarray:
    """Draw one image: scene crop, clutter, maybe a bystander, the person, occluder, then optics."""
    h, w = cfg.image_height, cfg.image_width
    rng = np.random.default_rng([cfg.seed, 3, shot.serial])
    cam = cams[shot.cam - 1]
    bh, bw = cam.background.shape[:2]
    oy, ox = int(rng.integers(0, bh - h + 1)), int(rng.integers(0, bw - w + 1))
    img = cam.background[oy:oy + h, ox:ox + w].copy()
    for _ in range(int(rng.integers(0, 3))):
        y0, x0 = rng.uniform(-0.2 * h, h), rng.uniform(-0.3 * w, w)
        _rect(img, y0, y0 + rng.uniform(0.1, 0.35) * h, x0, x0 + rng.uniform(0.1, 0.35) * w,
              cam.clutter[rng.integers(len(cam.clutter))] * rng.uniform(0.7, 1.2))
    if rng.random() < 0.1:
        stranger = make_identity(np.random.default_rng([strangers_seed, shot.serial]))
        side = rng.choice((-1, 1))
        draw_person(img, stranger, _VIEWS[rng.integers(3)], rng.uniform(-0.05, 0.15) * h, 0.85 * h,
                     w / 2 + side * rng.uniform(0.55, 0.8) * w, rng.uniform(0, 0.15) * h, 0.0)
    view = shot.view if rng.random() < 0.75 else int(rng.choice(3, p=cam.view_p))
    if shot.identity >= 0:
        ident = identities[shot.identity]
        jitter = {"normal": 1.0, "tight": 0.3, "bad": 3.0}[shot.crop]
        scale = float(np.clip(1.0 + rng.normal(0, 0.05 * jitter), 0.6, 1.3))
        ph = ident.height * h * scale
        top = (h - ph) / 2 + rng.normal(0, 0.03 * jitter) * h
        cx = w / 2 + rng.normal(0, 0.06 * jitter) * w
        draw_person(img, ident, _VIEWS[view], top, ph, cx, rng.uniform(0, 0.12) * ph,
                     rng.uniform(-0.08, 0.08) * ph)
        if _VIEWS[view] == "side" and rng.random() < 0.5:
            img = img[:, ::-1]
    if rng.random() < cam.occlusion_p:
        occ_h, occ_w = rng.uniform(0.15, 0.45) * h, rng.uniform(0.4, 1.0) * w
        y0 = h - occ_h if rng.random() < 0.7 else rng.uniform(0, h - occ_h)
        x0 = rng.uniform(-0.3 * w, w - occ_w * 0.5)
        _rect(img, y0, y0 + occ_h, x0, x0 + occ_w, cam.clutter[rng.integers(len(cam.clutter))])
    return apply_camera(img, cam, rng)


def apply_camera(img: np.ndarray, cam: CameraModel, rng: np.random.Generator) -> np.ndarray:
    """The camera's look on a drawn float image: illumination (gain, cast, shading, haze, desaturation),
    resolution, blur and noise; ``rng`` draws the per-image jitter. Returns uint8 RGB."""
    h, w = img.shape[:2]
    grey = img.mean(axis=2, keepdims=True)
    img = img + cam.desaturate * (grey - img)
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    shade = 1.0 + cam.shading[0] * yy + cam.shading[1] * xx
    gain = cam.gain * np.float32(rng.uniform(0.85, 1.15))
    img = img * (shade[..., None] * gain) + cam.offset
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    factor = cam.downscale * rng.uniform(0.9, 1.1)
    if factor > 1.05:
        small = (max(8, int(w / factor)), max(16, int(h / factor)))
        out = out.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)
    sigma = cam.blur * rng.uniform(0.5, 1.5)
    if sigma > 0.3:
        out = out.filter(ImageFilter.GaussianBlur(sigma))
    arr = np.asarray(out, dtype=np.float32) + rng.normal(0, cam.noise, (h, w, 1)).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _write_jpeg(path: Path, pixels: np.ndarray, quality: int) -> None:
    Image.fromarray(pixels).save(path, format="JPEG", quality=quality)


# --------------------------------------------------------------------------------------------
# The plan: which images exist and what they are called


class _Namer:
    """Market names: unique frames per (camera, sequence); one track = consecutive frames."""

    def __init__(self, rng: np.random.Generator, num_cameras: int) -> None:
        self.rng = rng
        self.next_frame = {(c, s): int(rng.integers(1, 200)) for c in range(1, num_cameras + 1) for s in range(1, 7)}

    def track(self, pid: int, cam: int, count: int) -> list[str]:
        seq = int(self.rng.integers(1, 7))
        names = []
        for _ in range(count):
            frame = self.next_frame[cam, seq]
            self.next_frame[cam, seq] = frame + int(self.rng.integers(5, 30))
            names.append(f"{pid:04d}_c{cam}s{seq}_{frame:06d}_{int(self.rng.integers(1, 9)):02d}.jpg")
        return names


def _plan(cfg: WorldConfig) -> tuple[list[_Shot], int]:
    """Every image of the world, in a fixed order; returns the shots and the identity count."""
    rng = np.random.default_rng([cfg.seed, 0])
    namer = _Namer(rng, cfg.num_cameras)
    num_ids = cfg.num_train_ids + cfg.num_test_ids
    pids = np.sort(rng.choice(np.arange(1, min(9999, 2 * num_ids) + 1), num_ids, replace=False))
    test_mask = np.zeros(num_ids, bool)
    test_mask[rng.choice(num_ids, cfg.num_test_ids, replace=False)] = True
    shots: list[_Shot] = []

    def add(split: str, name: str, pid: int, identity: int, cam: int, view: int, crop: str) -> None:
        shots.append(_Shot(split, name, pid, identity, cam, len(shots), view, crop))

    for identity, pid in enumerate(pids.tolist()):
        n_cams = int(rng.integers(cfg.min_cameras_per_id, cfg.max_cameras_per_id + 1))
        for cam in sorted((rng.choice(cfg.num_cameras, n_cams, replace=False) + 1).tolist()):
            count = int(rng.integers(cfg.min_images_per_id_camera, cfg.max_images_per_id_camera + 1))
            view = int(rng.integers(3))
            names = namer.track(pid, cam, count)
            if not test_mask[identity]:
                for name in names:
                    add("bounding_box_train", name, pid, identity, cam, view, "normal")
                continue
            queries = set(rng.choice(count, cfg.queries_per_id_camera, replace=False).tolist())
            for k, name in enumerate(names):
                add("query" if k in queries else "bounding_box_test", name, pid, identity, cam, view, "normal")
            for name in namer.track(pid, cam, cfg.multi_query_per_id_camera):
                add("gt_bbox", name[:-6] + "00.jpg", pid, identity, cam, view, "tight")
    test_identities = np.flatnonzero(test_mask)
    for _ in range(cfg.num_distractors):
        # a bad detection: background only, or a stranger (an identity outside the dataset)
        cam = int(rng.integers(1, cfg.num_cameras + 1))
        identity = -1 if rng.random() < 0.4 else num_ids + len(shots)
        add("bounding_box_test", namer.track(DISTRACTOR_PID, cam, 1)[0], DISTRACTOR_PID, identity, cam,
            int(rng.integers(3)), "bad")
    for _ in range(cfg.num_junk):
        cam = int(rng.integers(1, cfg.num_cameras + 1))
        name = namer.track(0, cam, 1)[0].replace("0000_", "-1_", 1)
        add("bounding_box_test", name, JUNK_PID, int(rng.choice(test_identities)), cam, int(rng.integers(3)), "bad")
    return shots, num_ids


class _Identities:
    """Dataset identities by index; indices beyond the dataset are strangers drawn on demand."""

    def __init__(self, seed: int, count: int) -> None:
        self.seed = seed
        self.table = [make_identity(np.random.default_rng([seed, 1, i])) for i in range(count)]

    def __getitem__(self, index: int) -> PersonLook:
        if index < len(self.table):
            return self.table[index]
        return make_identity(np.random.default_rng([self.seed, 1, index]))


# --------------------------------------------------------------------------------------------
# Writing, reuse and the command line


def _describe(cfg: WorldConfig, shots: Sequence[_Shot]) -> dict:
    counts = {split: sum(s.split == split for s in shots) for split in SPLITS}
    ids = {split: len({s.pid for s in shots if s.split == split and s.pid > 0}) for split in SPLITS}
    return {
        "generator": "bpm.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "config": dataclasses.asdict(cfg),
        "images": counts,
        "identities": ids,
        "distractors": cfg.num_distractors,
        "junk": cfg.num_junk,
    }


def generate_world(root: str | Path, config: WorldConfig = WorldConfig(), progress: bool = False) -> Path:
    """Draw the world into ``root`` (replacing a previous world there) and return ``root``.

    Written into ``<root>.tmp-XXXX`` and renamed into place at the end, so an interrupted run
    leaves either the old world or nothing, never a half world with a ``world.json``.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not (root / WORLD_FILE).is_file())):
        raise BpmError(f"{root}: exists and is not a synthetic world (no {WORLD_FILE}); refusing to overwrite it")
    foreign = _foreign_file(root) if root.is_dir() and (root / WORLD_FILE).is_file() else None
    if foreign is not None:
        raise BpmError(f"{root}: holds files the world did not write (e.g. {foreign}); refusing to replace it - "
                       "move them out first")
    root.parent.mkdir(parents=True, exist_ok=True)
    shots, num_ids = _plan(config)
    identities = _Identities(config.seed, num_ids)
    cams = [make_camera(np.random.default_rng([config.seed, 2, c]), config.image_height, config.image_width,
                         config.nuisance) for c in range(config.num_cameras)]
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    try:
        for split in SPLITS:
            (tmp / split).mkdir()
        for i, shot in enumerate(shots):
            pixels = _render(shot, config, identities, cams, strangers_seed=config.seed + 7919)
            _write_jpeg(tmp / shot.split / shot.name, pixels, config.jpeg_quality)
            if progress and (i + 1) % 1000 == 0:
                print(f"synth: {i + 1}/{len(shots)} images", file=sys.stderr, flush=True)
        description = _describe(config, shots)
        (tmp / WORLD_FILE).write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=root.name + ".old-", dir=root.parent))
            root.rename(old / "world")
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        print(f"synth: wrote {len(shots)} images to {root} ({description['images']})", file=sys.stderr, flush=True)
    return root


def _foreign_file(root: Path) -> Path | None:
    """A file in a world folder that the generator did not write (a user's notes, extra images), if any:
    replacing the world would delete it. The generator writes ``world.json`` and, per split, exactly the
    number of JPEGs ``world.json`` records."""
    try:
        counts = json.loads((root / WORLD_FILE).read_text()).get("images", {})
    except (OSError, ValueError):
        counts = {}
    for entry in sorted(root.iterdir()):
        if entry.name == WORLD_FILE:
            continue
        if entry.name not in SPLITS or not entry.is_dir():
            return entry
        files = sorted(entry.iterdir())
        odd = [f for f in files if f.suffix != ".jpg" or not f.is_file()]
        if odd:
            return odd[0]
        if isinstance(counts, dict) and counts.get(entry.name) is not None and len(files) != counts[entry.name]:
            return entry
    return None


def world_matches(root: str | Path, config: WorldConfig) -> bool:
    """True when ``root`` holds a complete world drawn by this renderer with exactly ``config``."""
    path = Path(root) / WORLD_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (saved.get("generator_version") == GENERATOR_VERSION
            and saved.get("config") == dataclasses.asdict(config)
            and all((Path(root) / split).is_dir() for split in SPLITS))


def drawn_by_us(root: str | Path) -> bool:
    """True when ``root`` holds a complete world drawn by this renderer, whatever its settings."""
    try:
        saved = json.loads((Path(root) / WORLD_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(saved, dict) and saved.get("generator_version") == GENERATOR_VERSION
            and isinstance(saved.get("config"), dict) and all((Path(root) / split).is_dir() for split in SPLITS))


def ensure_world(root: str | Path, config: WorldConfig = WorldConfig(), progress: bool = False) -> Path:
    """Reuse the world at ``root`` if it was drawn with ``config``; otherwise (re)draw it."""
    if world_matches(root, config):
        return Path(root)
    return generate_world(root, config, progress=progress)


def open_world(root: str | Path, config: WorldConfig = WorldConfig(), may_create: bool = True) -> Path:
    """The world at ``root`` for ``--dataset synthetic``: reused when it matches ``config``, drawn only
    when ``root`` is missing or empty (so this call creates it), and an error otherwise.

    Why not redraw a mismatching world as ``ensure_world`` does: the folder may be a custom world
    (``bpm synth`` with other flags) that other runs read, or hold the user's own files; replacing
    it silently loses data. ``may_create=False`` (``bpm data check``) never writes at all.
    """
    root = Path(root)
    if world_matches(root, config) or drawn_by_us(root):
        return root  # a world `bpm synth` drew with other flags is read as it was drawn
    fresh = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    regenerate = f"bpm synth --out {root} --force"
    if fresh and may_create:
        return generate_world(root, config)
    if fresh:
        raise BpmError(f"{root}: no synthetic world there (a check writes nothing); draw it with `bpm synth --out {root}`")
    if (root / WORLD_FILE).is_file():
        raise BpmError(f"{root}: holds a synthetic world of another bpm version or an incomplete one "
                       f"(nothing was changed); read it as it is with --dataset market1501 --data_root {root}, or "
                       f"replace it by the default world with `{regenerate}`")
    raise BpmError(f"{root}: is not a synthetic world (no {WORLD_FILE}); nothing was changed - point --data_root at an "
                   "empty or missing folder to draw the demo world there")

