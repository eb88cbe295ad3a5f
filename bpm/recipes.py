"""Training recipes: named presets of the switches that make a recipe; every switch stays settable.

``original``: the 2019 code base's triplet-only training (Adam 2e-4, exponential decay in the
second half, light crop, random erasing p=0.2, pooled trunk feature). It is what the original's
``script/experiment/train.py`` command lines keep getting.

``bot``: the strong baseline of Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
Re-ID" (CVPR-W 2019) as published: BNNeck, ID loss with label smoothing (0.1) plus the batch-hard
triplet loss at weight 1, random erasing (p 0.5), linear warm-up, pad-and-crop, last stride 1 (the
default of every recipe, where the backbone has one), epochs over all training images (torchreid's
and fast-reid's meaning of an epoch); BNNeck features are L2-normalised at test. Its learning rate
follows a cosine after the warm-up (fast-reid's choice; BoT used steps at 40 and 70 of 120 epochs,
which do not scale to short CPU budgets); the warm-up and pad scale with the epoch budget and input
size as BoT's 10 of 120 epochs and 10 px at 256x128 do.

``softmax``: ``bot`` without two of its tricks and with a higher learning rate, the default of ``bpm
train`` because it measured best at the CPU budget (CUHK03, MobileNet-V2, 128x64, 30 epochs: 41.8 % mAP
against 29.9 % for ``bot``, 35.3 % for ``bot`` without erasing): no random erasing and the ID loss
alone (triplet weight 0). Its Adam rate is 1e-3, not BoT's 3.5e-4 (BoT's rate for ResNet-50 at batch
64; ours is 128): a sweep on a GPU moved MobileNet-V2 from 40.8 to 46.2 % mAP and EfficientNet-Lite0
from 31.9 to 39.6 % (40.7 at 2e-3), and on the CPU MobileNet-V2 scored 47.7 +- 1.0 % over three
seeds against 42.3 +- 0.8 % at the former rate (docs/results/accuracy.md).
``--erase true --triplet_weight 1 --base_lr 3.5e-4`` turn it into ``bot``.

``distill``: ``softmax`` plus embedding distillation from ``--teacher`` (:mod:`bpm.distill`): weight
0.1, cosine to the teacher's normalised embedding, through a projection when the sizes differ, on
the pooled trunk feature. Relational distillation (``--relational_weight``) is off: on real data
(CUHK03-val, MobileNet-V2, 128x64, 30 epochs, the OSNet-x0.25 teacher, which itself scores 23.9 %
there) embedding distillation alone scored 48.1 +- 1.5 % mAP over three seeds (46.4, 49.0, 48.8), while adding the
relational term at weight 1, the former preset, cost 3.0 points on seed 1 (docs/guide/distillation.md).
What the teacher adds on other camera networks is not measured here.

Centre loss and GeM pooling are opt-in in every recipe (``--center_loss_weight 0.0005``,
``--pooling gem``). Measured figures: docs/results/accuracy.md.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

# A value, or a rule computing it from the other switches (the epoch budget, the input size).
Preset = dict[str, Any | Callable[[Mapping[str, Any]], Any]]

RECIPES: dict[str, Preset] = {
    "original": {
        "optimizer": "adam", "base_lr": 2e-4, "weight_decay": 5e-4, "lr_decay_type": "exp", "warmup_epochs": 0,
        "crop_prob": 0.1, "pad_crop": 0, "erase": True, "erase_prob": 0.2,
        "neck": "none", "pooling": "avg", "id_loss_weight": 0.0, "triplet_weight": 1.0, "center_loss_weight": 0.0,
        "sampler_epoch": "ids", "distill_weight": 0.0, "relational_weight": 0.0,
    },
    "bot": {
        "optimizer": "adam", "base_lr": 3.5e-4, "weight_decay": 5e-4, "lr_decay_type": "cosine",
        "warmup_epochs": lambda v: max(1, round(v["total_epochs"] / 12)),
        "crop_prob": 0.0, "pad_crop": lambda v: max(1, round(v["resize_h_w"][0] / 25.6)), "erase": True,
        "erase_prob": 0.5, "neck": "bnneck", "pooling": "avg", "id_loss_weight": 1.0, "triplet_weight": 1.0,
        "center_loss_weight": 0.0, "sampler_epoch": "images", "distill_weight": 0.0, "relational_weight": 0.0,
    },
}
# The measured best at the CPU budget: bot without random erasing and without the triplet term.
RECIPES["softmax"] = {**RECIPES["bot"], "erase": False, "triplet_weight": 0.0, "base_lr": 1e-3}
# The ID-only preset plus embedding distillation (needs --teacher); the relational term measured worse.
RECIPES["distill"] = {**RECIPES["softmax"], "distill_weight": 0.1, "relational_weight": 0.0}

#: The recipe of ``bpm train`` when ``--recipe`` is not given (``script/experiment/train.py``: ``original``).
DEFAULT_RECIPE = "softmax"

# Switches a recipe sets; their parser default is None, meaning "take the recipe's value".
RECIPE_SWITCHES = tuple(RECIPES["original"])


def recipe_values(recipe: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The values ``recipe`` gives the recipe switches missing from ``given`` (the switches the user set,
    plus the non-recipe ones the rules read: ``total_epochs``, ``resize_h_w``)."""
    preset = RECIPES[recipe]
    return {name: (preset[name](given) if callable(preset[name]) else preset[name])
            for name in RECIPE_SWITCHES if given.get(name) is None}
