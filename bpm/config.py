"""The original's command-line switches in one place.

``script/experiment/train.py`` and ``bpm train``/``bpm test`` build their parsers here, so a
command line written for the 2019 code base means the same thing in both. Values keep the
original's syntax (``str2bool`` words, Python-tuple text such as ``'(256, 128)'``) but are
parsed without ``eval``. The resolved settings are saved to ``exp_dir/config.json``.
"""
from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any

_TRUE = {"true", "yes", "y", "t", "1", "on"}
_FALSE = {"false", "no", "n", "f", "0", "off"}

def str2bool(text: str | bool) -> bool:
    """The original's boolean words: true/false, yes/no, 1/0 (any case)."""
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, yes/no, 1/0), got {text!r}")


def parse_tuple(text: str | tuple) -> tuple:
    """Parse Python-tuple text like ``'(0,)'``, ``'()'`` or ``'(256, 128)'`` into a tuple of numbers.

    ``ast.literal_eval`` only builds literals (it cannot call anything), and we further insist on
    a flat tuple/list of ints or floats, so user text can never run code.
    """
    if isinstance(text, tuple):
        return text
    stripped = str(text).strip()
    try:
        value = ast.literal_eval(stripped) if stripped else ()
    except (ValueError, SyntaxError) as exc:
        raise argparse.ArgumentTypeError(f"expected tuple text such as '(0,)' or '(256, 128)', got {text!r}") from exc
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise argparse.ArgumentTypeError(f"expected a tuple of numbers such as '(0,)' or '(256, 128)', got {text!r}")
    return tuple(value)


def int_tuple(length: int | None = None):
    def parse(text: str | tuple) -> tuple[int, ...]:
        value = parse_tuple(text)
        if not all(float(v).is_integer() for v in value):
            raise argparse.ArgumentTypeError(f"expected whole numbers, got {text!r}")
        if length is not None and len(value) != length:
            raise argparse.ArgumentTypeError(f"expected {length} numbers, got {text!r}")
        return tuple(int(v) for v in value)

    return parse


class _UnsetTuple(tuple):
    """A default the user did not type (see :func:`unset`)."""


class _UnsetInt(int):
    """A default the user did not type (see :func:`unset`)."""


class _UnsetStr(str):
    """A default the user did not type (see :func:`unset`)."""


def unset(value: tuple | int | str) -> tuple | int | str:
    """``value`` marked as "not given on the command line": it behaves exactly like ``value``, but
    :func:`is_unset` tells it apart, so a setting stored in a weights file can replace it while a
    typed value wins (:mod:`bpm.models.meta`)."""
    if isinstance(value, str):
        return _UnsetStr(value)
    return _UnsetTuple(value) if isinstance(value, tuple) else _UnsetInt(value)


def is_unset(value: object) -> bool:
    return isinstance(value, (_UnsetTuple, _UnsetInt, _UnsetStr))


def device_ids(text: str | tuple) -> tuple[int, ...]:
    """``-d``: tuple text as in the original, or ``auto``: GPU 0 when CUDA is available, else the CPU.

    ``auto`` is resolved here, once, and said in one line, so every later step sees the
    original's tuple (a CPU-only machine no longer fails on the default).
    """
    if isinstance(text, str) and text.strip().lower() == "auto":
        import torch

        if torch.cuda.is_available():
            print(f"device: cuda:0 (auto: CUDA available, {torch.cuda.get_device_name(0)})")
            return (0,)
        print("device: cpu (auto: CUDA not available)")
        return ()
    return int_tuple()(text)


def loss_scale_value(text: str | None) -> float | str | None:
    """``--loss-scale``: a positive number (static scaling) or ``dynamic``."""
    if text is None or str(text).lower() in ("none", ""):
        return None
    if str(text).lower() == "dynamic":
        return "dynamic"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number or 'dynamic', got {text!r}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Switches every script of the original shared: device, data, network, precision."""
    parser.add_argument("-d", "--sys_device_ids", type=device_ids, default="auto",
                        help="'auto' (GPU 0 when CUDA is available, else the CPU; default), GPU ids as tuple "
                             "text such as '(0,)', or '()' for the CPU")
    parser.add_argument("--dataset", default="market1501",
                        help="market1501, cuhk03, duke, msmt17, combined, folder, synthetic")
    parser.add_argument("--data_root", default="", help="dataset folder; overrides $BPM_DATA/<dataset>")
    parser.add_argument("--cuhk03_type", default="detected", choices=["detected", "labeled"])
    parser.add_argument("--skip_bad_images", type=str2bool, default=False,
                        help="warn about unreadable images and leave them out instead of stopping")
    parser.add_argument("--resize_h_w", type=int_tuple(2), default=unset((256, 128)),
                        help="input size as '(h, w)' (default: the weights file's, else (256, 128))")
    parser.add_argument("--last_conv_stride", type=int, default=unset(1), choices=[1, 2],
                        help="stride of the last stage (default: the weights file's, else 1)")
    parser.add_argument("--normalize_feature", type=str2bool, default=False)
    parser.add_argument("--net", default=unset("mobilenetV2"),
                        help="resnet50 or mobilenetV2 (default: the weights file's, else mobilenetV2)")
    parser.add_argument("--opt-level", dest="opt_level", default="O0", help="O0 (FP32), O1, O2, O3")
    parser.add_argument("--keep-batchnorm-fp32", dest="keep_batchnorm_fp32", type=str2bool, default=True)
    parser.add_argument("--loss-scale", dest="loss_scale", type=loss_scale_value, default=None,
                        help="positive number or 'dynamic' (default: dynamic where float16 needs it)")
    parser.add_argument("--amp_dtype", default=None, choices=["float16", "bfloat16"],
                        help="half type for O1-O3 (default float16 on CUDA, bfloat16 on CPU)")
    parser.add_argument("--log_to_file", type=str2bool, default=True)
    parser.add_argument("--exp_dir", default="", help="output folder (default derived from the settings)")
    parser.add_argument("--model_weight_file", default="", help="weights to evaluate with --only_test")
    parser.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    parser.add_argument("--batch_size_test", type=int, default=64, help="images per batch for feature extraction")
    parser.add_argument("--mq_pooling", default="average", choices=["average", "max"],
                        help="how Market's multi-query (gt_bbox) features are pooled per query")
    parser.add_argument("--test_flip", type=str2bool, default=False, help="average features of each image and its mirror")
    parser.add_argument("--save_features", default="", help="also save test features, names, pids, camids to this .h5 file")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every switch of the original ``train.py`` (seed-facts), plus the new ones.

    Switches that make a recipe default to None and take their value from ``--recipe``
    (:mod:`bpm.recipes`) unless given; call :func:`bpm.recipes.apply_recipe` after parsing.
    """
    from bpm.recipes import RECIPES

    add_common_arguments(parser)
    parser.add_argument("--recipe", default="bot", choices=list(RECIPES),
                        help="training preset: bot (strong baseline: BNNeck, ID + triplet loss, warm-up, erasing; "
                             "the default of bpm train) or original (the 2019 triplet-only recipe; the default of "
                             "script/experiment/train.py); every switch it sets can still be given")
    parser.add_argument("--sampler_epoch", default=None, choices=["ids", "images"],
                        help="what an epoch is: one pass over the identities (the original's) or over the training "
                             "images (torchreid's, fast-reid's) (default: from --recipe)")
    parser.add_argument("--neck", default=None, choices=["none", "bnneck"], help="after pooling (default: from --recipe)")
    parser.add_argument("--pooling", default=None, choices=["avg", "gem"], help="global pooling (default: from --recipe)")
    parser.add_argument("--id_loss_weight", type=float, default=None,
                        help="weight of the ID (softmax) loss on a training-only classifier, 0 = off (default: from --recipe)")
    parser.add_argument("--label_smoothing", type=float, default=0.1, help="ID loss label smoothing epsilon")
    parser.add_argument("--triplet_weight", type=float, default=None,
                        help="weight of the batch-hard triplet loss, 0 = off (softmax-only training needs "
                             "--id_loss_weight > 0) (default: from --recipe)")
    parser.add_argument("--center_loss_weight", type=float, default=None, help="centre loss weight, 0 = off (default: from --recipe)")
    parser.add_argument("--test_normalize", type=str2bool, default=None,
                        help="L2-normalise features at test (default: yes for a model with a BNNeck, "
                             "else --normalize_feature)")
    parser.add_argument("-r", "--run", type=int, default=1)
    parser.add_argument("--set_seed", type=str2bool, default=False)
    parser.add_argument("--seed", type=int, default=1, help="seed used when --set_seed true")
    parser.add_argument("--trainset_part", default="trainval", choices=["trainval", "train"])
    parser.add_argument("--crop_prob", type=float, default=None, help="random crop probability (default: from --recipe)")
    parser.add_argument("--crop_ratio", type=float, default=1.0)
    parser.add_argument("--mirror", type=str2bool, default=True)
    parser.add_argument("--pad_crop", type=int, default=None,
                        help="zero-pad by this many pixels and crop back at a random place (default: from --recipe)")
    parser.add_argument("--erase", type=str2bool, default=None, help="random erasing (default: from --recipe)")
    parser.add_argument("--erase_prob", type=float, default=None, help="random erasing probability (default: from --recipe)")
    parser.add_argument("--ids_per_batch", type=int, default=32)
    parser.add_argument("--ims_per_id", type=int, default=4)
    parser.add_argument("--steps_per_log", type=int, default=20)
    parser.add_argument("--epochs_per_val", type=float, default=1e10)
    parser.add_argument("--margin", type=float, default=0.3)
    parser.add_argument("--soft_margin", type=str2bool, default=False, help="softplus(d_ap - d_an) instead of a margin")
    parser.add_argument("--only_test", type=str2bool, default=False)
    parser.add_argument("--resume", type=str2bool, default=False)
    parser.add_argument("--base_lr", "--lr", type=float, default=None, help="learning rate (default: from --recipe)")
    parser.add_argument("--lr_decay_type", default=None, choices=["exp", "staircase", "cosine"], help="schedule (default: from --recipe)")
    parser.add_argument("--warmup_epochs", type=int, default=None,
                        help="linear warm-up from 0.1x the rate over this many epochs (default: from --recipe)")
    parser.add_argument("--exp_decay_at_epoch", type=int, default=151)
    parser.add_argument("--staircase_decay_at_epochs", type=int_tuple(), default=(101, 201))
    parser.add_argument("--staircase_decay_multiply_factor", type=float, default=0.1)
    parser.add_argument("--optimizer", default=None, choices=["adam", "sgd"],
                        help="adam (the original's) or sgd (Nesterov, uses --momentum) (default: from --recipe)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight_decay", type=float, default=None, help="default: from --recipe")
    parser.add_argument("--total_epochs", type=int, default=300)
    parser.add_argument("--net_pretrained_path", default="imagenet",
                        help="initial backbone weights: 'imagenet' (torchvision's ImageNet weights, downloaded once "
                             "into $TORCH_HOME/hub/checkpoints/), 'none' (random), or a local weights file "
                             "(torchvision or the original's mobilenet_v2.pth.tar layout, or a re-ID checkpoint)")
    parser.add_argument("--ckpt_every_steps", type=int, default=0,
                        help="also checkpoint every N steps within an epoch (0: only at epoch ends)")
    parser.add_argument("--max_nonfinite_steps", type=int, default=50,
                        help="stop after this many consecutive non-finite (skipped) steps")
    parser.add_argument("--sync_bn", type=str2bool, default=False,
                        help="multi-GPU: BatchNorm statistics over the global batch (SyncBatchNorm; CUDA only)")
    parser.add_argument("--gather_for_mining", type=str2bool, default=False,
                        help="multi-process: mine hard triplets over the features of all ranks, not per rank")
    parser.add_argument("--dist_timeout", type=float, default=1800.0,
                        help="multi-process: seconds a rank waits for the others before stopping with an error")
    parser.add_argument("--rerank", type=str2bool, default=True, help="also print k-reciprocal re-ranked results")
    parser.add_argument("--eval_untrained", type=str2bool, default=False,
                        help="evaluate the network before training too (the demo prints both)")


def default_exp_dir(args: argparse.Namespace) -> Path:
    """The original derived a folder name from the settings; we do the same under ``expt_res/``."""
    name = f"{args.dataset}_{args.net}_{args.opt_level}_stride{args.last_conv_stride}_run{args.run}"
    return Path("expt_res") / name


def save_config(args: argparse.Namespace, path: Path, records: dict[str, Any] | None = None) -> None:
    """Write the resolved settings as JSON, so every result can be traced to its command line and
    re-run with ``--config`` (:mod:`bpm.runconfig`); ``records`` (e.g. ``versions``) are added as is."""
    values: dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    values.update(records or {})
    from bpm.engine.outputs import write_text

    # Atomic, and any OSError (EPERM on an immutable file, a full disk) is one line keeping the old file.
    write_text(path, json.dumps(values, indent=2, sort_keys=True, default=str), "the run's settings")
