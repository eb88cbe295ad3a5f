"""One-off check: bpm's EfficientNet-Lite (torch) against an independent NumPy forward pass, on the real files.

    python bench/check_efficientnet_lite.py                        # ../shared/weights, ../shared/data/cuhk03_detected
    python bench/check_efficientnet_lite.py WEIGHTS_DIR --crops DIR --images 4

For every ``efficientnet-lite{0,1,2}-*.pth`` in the folder: ImageNet logits of a few images at the
variant's published resolution (224 / 240 / 260), from :class:`EfficientNetLiteClassifier` (FP32)
and from tests/efficientnet_numpy.py (float64, reads the published keys directly). Printed per
image: max |logit difference| relative to the largest logit, whether top-1 and the top-5 set agree,
and the top-5 ImageNet classes (so that a wrong-but-consistent conversion would show as nonsense).
When torchvision's MobileNet-V2 file (``mobilenet_v2-b0353104.pth``) is in the same folder, an
independently trained network gives a second opinion: how many of Lite's top-5 classes are in
MobileNet-V2's top-5, for RGB input as published and for the channels swapped (BGR), a control
that a conversion reading the input wrongly would fail.
Images: one natural photo (matplotlib's sample ``grace_hopper.jpg``, a portrait in navy uniform:
ImageNet's "military uniform"), smooth generated patterns, renders of the synthetic person world,
and real pedestrian crops from ``--crops`` when that folder exists. Medians per variant at the end.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the NumPy reference is a test helper

import efficientnet_numpy as reference  # noqa: E402
from bpm.data.synthetic import WorldConfig, generate_world  # noqa: E402
from bpm.machine import print_machine  # noqa: E402
from bpm.models.backbones.efficientnet_lite import IMAGENET_FILES, EfficientNetLiteClassifier  # noqa: E402

RESOLUTION = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names torchvision ships in its weights' metadata (no download)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def natural_photo() -> list[tuple[str, Image.Image]]:
    """matplotlib's sample portrait, centre-cropped to a square (empty when matplotlib lacks it)."""
    from matplotlib import cbook

    try:
        image = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    except (OSError, ValueError):
        return []
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return [("photo grace_hopper.jpg", image.crop((left, top, left + side, top + side)))]


def generated_images(count: int) -> list[tuple[str, Image.Image]]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256] / 256
    out = []
    for i in range(count):
        img = 127 + 110 * np.sin(rng.uniform(3, 12) * yy[..., None] + rng.uniform(3, 12) * xx[..., None]
                                 + rng.uniform(0, 6, size=3))
        out.append((f"pattern {i}", Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))))
    return out


def synthetic_people(count: int, folder: Path) -> list[tuple[str, Image.Image]]:
    world = generate_world(folder / "world", WorldConfig(
        num_train_ids=count, num_test_ids=2, num_distractors=0, num_junk=0, image_height=256, image_width=128, seed=3))
    files = sorted((world / "bounding_box_train").glob("*.jpg"))[::4][:count]
    return [(f"synthetic {f.name}", Image.open(f).convert("RGB")) for f in files]


def real_crops(folder: Path, count: int) -> list[tuple[str, Image.Image]]:
    files = sorted(folder.glob("**/*.jpg"))
    step = max(1, len(files) // max(count, 1))
    return [(f"real {f.name}", Image.open(f).convert("RGB")) for f in files[::step][:count]]


def mobilenet_top5(weights_dir: Path, images: list[tuple[str, Image.Image]]) -> list[set[int]] | None:
    """torchvision MobileNet-V2's top-5 ImageNet classes per image (its own normalisation, 224x224)."""
    path = weights_dir / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        return None
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    out = []
    for _label, image in images:
        x = torch.from_numpy(np.asarray(image.resize((224, 224), Image.BILINEAR)).copy()).permute(2, 0, 1) / 255.0
        out.append(set(model(((x - mean) / std)[None])[0].topk(5).indices.tolist()))
    return out


def check(variant: str, path: Path, images: list[tuple[str, Image.Image]], names: list[str],
          second_opinion: list[set[int]] | None) -> dict[str, list]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLiteClassifier(variant).eval()
    model.load_imagenet(state)
    ref = {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    size = RESOLUTION[variant]
    stats: dict[str, list] = {"rel": [], "top1": [], "top5": [], "torch_ms": [], "numpy_ms": [], "mnv2": [], "mnv2_bgr": []}
    print(f"\n{variant} ({path.name}, {sum(v.numel() for v in model.parameters()) / 1e6:.2f} M parameters, {size}x{size})")
    for index, (label, image) in enumerate(images):
        x = reference.normalise(np.asarray(image.resize((size, size), Image.BILINEAR)))
        start = time.perf_counter()
        want = reference.logits(ref, x)
        numpy_ms = 1000 * (time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            got = model(torch.from_numpy(x[None]).float())[0].double().numpy()
        torch_ms = 1000 * (time.perf_counter() - start)
        rel = float(np.abs(got - want).max() / np.abs(want).max())
        top_want, top_got = np.argsort(-want)[:5], np.argsort(-got)[:5]
        same1, same5 = bool(top_want[0] == top_got[0]), set(top_want) == set(top_got)
        prob = np.exp(got - got.max())
        prob /= prob.sum()
        classes = ", ".join(f"{names[c]} {prob[c]:.2f}" for c in top_got)
        print(f"  {label:34s} rel.diff {rel:.1e}  top-1 {'=' if same1 else 'DIFFERS'}  "
              f"top-5 {'=' if same5 else 'DIFFERS'}  | {classes}")
        if second_opinion is not None:
            with torch.no_grad():
                bgr = model(torch.from_numpy(x[None, ::-1].copy()).float())[0]
            stats["mnv2"].append(len(set(top_got.tolist()) & second_opinion[index]))
            stats["mnv2_bgr"].append(len(set(bgr.topk(5).indices.tolist()) & second_opinion[index]))
        for key, value in (("rel", rel), ("top1", same1), ("top5", same5), ("torch_ms", torch_ms), ("numpy_ms", numpy_ms)):
            stats[key].append(value)
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights_dir", nargs="?", default="../shared/weights", help="folder holding the efficientnet-lite*.pth files (default: ../shared/weights)")
    parser.add_argument("--crops", default="../shared/data/cuhk03_detected",
                        help="folder of real pedestrian crops (*.jpg, searched recursively); skipped when missing")
    parser.add_argument("--images", type=int, default=4, help="images of each kind")
    args = parser.parse_args()
    print_machine()
    torch.set_grad_enabled(False)
    names = imagenet_categories()
    with tempfile.TemporaryDirectory() as tmp:
        images = natural_photo() + generated_images(args.images) + synthetic_people(args.images, Path(tmp))
    crops = Path(args.crops)
    if crops.is_dir():
        images += real_crops(crops, args.images)
    else:
        print(f"(no real crops: {crops} is not a folder)")
    second_opinion = mobilenet_top5(Path(args.weights_dir), images)
    found = 0
    for variant, file_name in IMAGENET_FILES.items():
        path = Path(args.weights_dir) / file_name
        if not path.is_file():
            print(f"\n{variant}: {path} not found, skipped")
            continue
        found += 1
        s = check(variant, path, images, names, second_opinion)
        print(f"  {variant}: top-1 agree {sum(s['top1'])}/{len(s['top1'])}, top-5 sets agree {sum(s['top5'])}/{len(s['top5'])}, "
              f"median rel. logit diff {statistics.median(s['rel']):.1e} (max {max(s['rel']):.1e}); "
              f"median ms/image torch FP32 {statistics.median(s['torch_ms']):.0f}, NumPy float64 "
              f"{statistics.median(s['numpy_ms']):.0f} (ratio {statistics.median(s['numpy_ms']) / statistics.median(s['torch_ms']):.1f}x)")
        if s["mnv2"]:
            print(f"  {variant}: top-5 classes shared with torchvision MobileNet-V2, mean over images: "
                  f"{statistics.mean(s['mnv2']):.2f} of 5 (RGB, as published), "
                  f"{statistics.mean(s['mnv2_bgr']):.2f} of 5 (BGR control)")
    return 0 if found else 1


if __name__ == "__main__":
    raise SystemExit(main())
