"""Every command-line switch, defined once, in groups; and the typed settings each group becomes.

Each group (device, data, model, precision, features, test, output, training) is one
``add_*_switches`` function; a command composes its parser from the groups it needs, so a switch
means the same thing (name, type, default, choices, help) wherever it appears, and the original's
``script/experiment/*.py`` command lines keep working. Choices come from the registries (datasets,
backbones, opt-levels). Values keep the original's syntax (``str2bool`` words, Python-tuple text
such as ``'(256, 128)'``) but are parsed without ``eval``.

The commands turn the parsed namespace into typed settings right here (:func:`data_settings`,
:func:`model_settings`, :func:`precision_settings`, :func:`train_config`, ...): below the command
boundary no function takes an ``argparse.Namespace``.
"""
from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from dataclasses import fields, replace
from typing import Any, Mapping

from bpm.errors import BpmError
from bpm.files import write_text
from bpm.settings import (DataSettings, DeviceSettings, EvaluationSettings, FeatureSettings, ModelSettings,
                          OutputSettings, PrecisionSettings, StartSettings, unset)

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
    """``--loss-scale``: a positive number (static scaling) or ``dynamic`` (checked by the precision policy's rule)."""
    from bpm.precision import check_loss_scale

    if text is None or str(text).lower() in ("none", ""):
        return None
    value = "dynamic" if str(text).lower() == "dynamic" else text
    try:
        return check_loss_scale(value)
    except BpmError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--loss-scale: ")) from exc


def opt_level_value(text: str) -> str:
    """``--opt-level``: O0..O3 in any case (``o2`` is ``O2``)."""
    return str(text).strip().upper()


# --------------------------------------------------------------------------- switch groups


def add_device_switches(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--sys_device_ids", type=device_ids, default="auto",
                        help="'auto' (GPU 0 when CUDA is available, else the CPU; default), GPU ids as tuple "
                             "text such as '(0,)', or '()' for the CPU")


def add_data_switches(parser: argparse.ArgumentParser, *, optional: bool = False, training_split: bool = False,
                      dataset_help: str = "dataset layout to read") -> None:
    """``--dataset``, ``--data_root``, ``--cuhk03_type``; ``optional``: no dataset unless given (``bpm export``);
    ``training_split``: also ``--trainset_part`` (where the training images are read)."""
    from bpm.data.datasets import READERS

    parser.add_argument("--dataset", default=None if optional else "market1501", choices=sorted(READERS),
                        help=dataset_help)
    parser.add_argument("--data_root", default="", help="dataset folder; overrides $BPM_DATA/<dataset>")
    parser.add_argument("--cuhk03_type", default="detected", choices=["detected", "labeled"],
                        help="which CUHK03 crops: the detector's or the hand-labelled boxes")
    if training_split:
        parser.add_argument("--trainset_part", default="trainval", choices=["trainval", "train"],
                            help="train on trainval, or on train with 100 identities held out for validation")


def add_image_check_switch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip_bad_images", type=str2bool, default=False,
                        help="warn about unreadable images and leave them out instead of stopping")


def add_model_switches(parser: argparse.ArgumentParser, *, read_from_weights: bool = True) -> None:
    """``--net``, ``--last_conv_stride``, ``--resize_h_w``. With ``read_from_weights`` (every command that
    loads a weights file), a value left out is taken from the file (:mod:`bpm.models.meta`)."""
    from bpm.models.registry import backbone_choices, canonical_name, get_backbone, list_backbones

    nets = ", ".join(list_backbones())
    aliases = ", ".join(f"{a} = {canonical_name(a)}" for a in backbone_choices() if a not in list_backbones())
    parser.add_argument("--net", default=unset("mobilenet_v2"), choices=backbone_choices(),
                        help=f"{nets}{f' ({aliases})' if aliases else ''} "
                             "(default: the weights file's, else mobilenet_v2)")
    with_switch = ", ".join(n for n in list_backbones() if 2 in get_backbone(n).last_conv_strides)
    parser.add_argument("--last_conv_stride", type=int, default=unset(1), choices=[1, 2],
                        help=f"stride of the last stage, for networks that have the switch ({with_switch}); "
                             "others refuse 2 (default: the weights file's, else 1)")
    parser.add_argument("--resize_h_w", type=int_tuple(2), default=unset((256, 128)),
                        help="input size as '(h, w)' (default: the weights file's, else (256, 128))")


def add_precision_switches(parser: argparse.ArgumentParser, *, default: str = "O0", autocast: bool = True,
                           training: bool = False,
                           level_help: str = "O0 (FP32), O1 (mixed), O2 (half with FP32 master weights), "
                                             "O3 (half everywhere)") -> None:
    """``--opt-level`` and what refines it: ``--amp_dtype`` where a model runs (``autocast``; a weights file
    writer has none), ``--loss-scale`` only where there is a loss (``training``)."""
    from bpm.precision import OPT_LEVELS

    parser.add_argument("--opt-level", dest="opt_level", type=opt_level_value, default=default,
                        choices=list(OPT_LEVELS), help=level_help)
    parser.add_argument("--keep-batchnorm-fp32", dest="keep_batchnorm_fp32", type=str2bool, default=True,
                        help="O2/O3: keep BatchNorm in FP32 (like the original's O2 releases)")
    if autocast:
        parser.add_argument("--amp_dtype", default=None, choices=["float16", "bfloat16"],
                            help="half type for O1-O3 (default float16 on CUDA, bfloat16 on CPU)")
    if training:
        parser.add_argument("--loss-scale", dest="loss_scale", type=loss_scale_value, default=None,
                            help="positive number or 'dynamic' (default: dynamic where float16 needs it)")


def add_normalize_switch(parser: argparse.ArgumentParser, *, model_default: bool = False) -> None:
    """``model_default``: left out, the model's own test-time normalisation applies (its InputSpec;
    ``bpm extract``, ``bpm evaluate``), rather than off."""
    if model_default:
        parser.add_argument("--normalize_feature", type=str2bool, default=None,
                            help="L2-normalise the features (default: as the model does at test time: "
                                 "yes with a BNNeck, as bpm test)")
    else:
        parser.add_argument("--normalize_feature", type=str2bool, default=False, help="L2-normalise the features")


def add_threads_switch(parser: argparse.ArgumentParser) -> None:
    """``--threads``: one meaning wherever a command runs a network on the CPU (``bpm extract``, ``bpm export``, ``bpm stream``)."""
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads a network runs with: PyTorch's intra-op threads for a PyTorch model, "
                             "ONNX Runtime's for an ONNX graph (0: each library's default)")


def add_rerank_switch(parser: argparse.ArgumentParser, *, default: bool,
                      help: str = "also print k-reciprocal re-ranked results") -> None:
    parser.add_argument("--rerank", type=str2bool, default=default, help=help)


def add_exp_dir_switch(parser: argparse.ArgumentParser,
                       help: str = "output folder (default derived from the settings)") -> None:
    parser.add_argument("--exp_dir", default="", help=help)


def add_feature_switches(parser: argparse.ArgumentParser, *, folder: bool = False) -> None:
    """How features of images are extracted (:class:`FeatureSettings`): a dataset's (``bpm train``,
    ``bpm test``), or with ``folder`` a folder's (``bpm extract``: no loader workers, 32 images a batch,
    ``--batch_size`` also spelled as before, normalisation by default as the model does at test time)."""
    add_normalize_switch(parser, model_default=folder)
    if not folder:
        parser.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    parser.add_argument("--batch_size_test", *(["--batch_size"] if folder else []), dest="batch_size_test", type=int,
                        default=32 if folder else 64, help="images per batch for feature extraction")
    parser.add_argument("--test_flip", type=str2bool, default=False,
                        help="average features of each image and its mirror")


def add_test_switches(parser: argparse.ArgumentParser) -> None:
    """Evaluation of a test set (``bpm train``, ``bpm test``)."""
    parser.add_argument("--test_normalize", type=str2bool, default=None,
                        help="L2-normalise features at test (default: yes for a model with a BNNeck, "
                             "else --normalize_feature)")
    parser.add_argument("--mq_pooling", default="average", choices=["average", "max"],
                        help="how Market's multi-query (gt_bbox) features are pooled per query")
    add_rerank_switch(parser, default=True)
    parser.add_argument("--save_features", default="",
                        help="also save test features, names, pids, camids to this .h5 file")
    parser.add_argument("--dist_timeout", type=float, default=1800.0,
                        help="multi-process: seconds a rank waits for the others before stopping with an error")


def add_weights_switches(parser: argparse.ArgumentParser, *, checkpoint: bool = False) -> None:
    """The weights an evaluation reads: ``--model_weight_file``, and (``checkpoint``) ``--ckpt_file``."""
    if checkpoint:
        parser.add_argument("--ckpt_file", default="", help="training checkpoint to read the model from "
                            "(default: <exp_dir>/ckpt.pth when no --model_weight_file)")
    parser.add_argument("--model_weight_file", default="",
                        help="weights file to evaluate (default: the run folder's ckpt.pth)")


def add_output_switches(parser: argparse.ArgumentParser, *, run_number: bool = True) -> None:
    """Where a run writes."""
    add_exp_dir_switch(parser)
    if run_number:
        parser.add_argument("-r", "--run", type=int, default=1, help="run number in the name of the output folder derived from the settings")
    parser.add_argument("--log_to_file", type=str2bool, default=True,
                        help="mirror the console into the output folder (and TensorBoard when training)")


def add_train_switches(parser: argparse.ArgumentParser) -> None:
    """The original ``train.py``'s training switches (seed-facts), plus the new ones.

    Switches that make a recipe default to None and take their value from ``--recipe``
    (:mod:`bpm.recipes`) unless given; :func:`apply_recipe` fills them after parsing.
    """
    from bpm.engine.lr_schedule import SCHEDULES
    from bpm.engine.optimizers import OPTIMIZERS
    from bpm.models.necks import NECKS
    from bpm.models.pooling import POOLINGS
    from bpm.recipes import DEFAULT_RECIPE, RECIPES

    parser.add_argument("--recipe", default=DEFAULT_RECIPE, choices=list(RECIPES),
                        help="training preset: softmax (BNNeck, ID loss only, warm-up, cosine, no erasing: the measured "
                             "best at the CPU budget; the default of bpm train), bot (Bag of Tricks as published: "
                             "softmax plus triplet loss and random erasing), original (the 2019 triplet-only recipe; "
                             "the default of script/experiment/train.py) or distill (softmax plus distillation from "
                             "--teacher); every switch it sets can still be given")
    parser.add_argument("--sampler_epoch", default=None, choices=["ids", "images"],
                        help="what an epoch is: one pass over the identities (the original's) or over the training "
                             "images (torchreid's, fast-reid's) (default: from --recipe)")
    parser.add_argument("--neck", default=None, choices=NECKS.choices(),
                        help="after pooling: none, or bnneck (BatchNorm; retrieval uses its output) (default: from --recipe)")
    parser.add_argument("--pooling", default=None, choices=POOLINGS.choices(), help="global pooling (default: from --recipe)")
    parser.add_argument("--id_loss_weight", type=float, default=None,
                        help="weight of the ID (softmax) loss on a training-only classifier, 0 = off (default: from --recipe)")
    parser.add_argument("--label_smoothing", type=float, default=0.1, help="ID loss label smoothing epsilon")
    parser.add_argument("--triplet_weight", type=float, default=None,
                        help="weight of the batch-hard triplet loss, 0 = off (softmax-only training needs "
                             "--id_loss_weight > 0) (default: from --recipe)")
    parser.add_argument("--center_loss_weight", type=float, default=None, help="centre loss weight, 0 = off (default: from --recipe)")
    add_loss_term_switches(parser)
    parser.add_argument("--set_seed", type=str2bool, default=False,
                        help="seed every random generator with --seed: a CPU run, resumed or not, repeats bitwise")
    add_distill_switches(parser)
    parser.add_argument("--seed", type=int, default=1, help="seed used when --set_seed true")
    parser.add_argument("--crop_prob", type=float, default=None, help="random crop probability (default: from --recipe)")
    parser.add_argument("--crop_ratio", type=float, default=1.0,
                        help="random crop: each side is a U(ratio, 1) fraction of the image; 1 = no crop")
    parser.add_argument("--mirror", type=str2bool, default=True, help="flip training images left-right at random")
    parser.add_argument("--pad_crop", type=int, default=None,
                        help="zero-pad by this many pixels and crop back at a random place (default: from --recipe)")
    parser.add_argument("--erase", type=str2bool, default=None, help="random erasing (default: from --recipe)")
    parser.add_argument("--erase_prob", type=float, default=None, help="random erasing probability (default: from --recipe)")
    parser.add_argument("--ids_per_batch", type=int, default=32,
                        help="P: identities per batch (the global batch when several processes train)")
    parser.add_argument("--ims_per_id", type=int, default=4, help="K: images of each identity per batch")
    parser.add_argument("--steps_per_log", type=int, default=20, help="print a progress line every N steps (0: only per epoch)")
    parser.add_argument("--epochs_per_val", type=float, default=1e10,
                        help="with --trainset_part train: validate every N epochs (default: never)")
    parser.add_argument("--margin", type=float, default=0.3, help="triplet loss margin")
    parser.add_argument("--soft_margin", type=str2bool, default=False, help="softplus(d_ap - d_an) instead of a margin")
    parser.add_argument("--only_test", type=str2bool, default=False,
                        help="evaluate the weights (--model_weight_file, else the run folder's ckpt.pth) instead of training")
    parser.add_argument("--resume", type=str2bool, default=False,
                        help="continue from <exp_dir>/ckpt.pth exactly where it stopped")
    parser.add_argument("--base_lr", "--lr", type=float, default=None, help="learning rate (default: from --recipe)")
    parser.add_argument("--lr_decay_type", default=None, choices=SCHEDULES.choices(), help="schedule (default: from --recipe)")
    parser.add_argument("--warmup_epochs", type=int, default=None,
                        help="linear warm-up from 0.1x the rate over this many epochs (default: from --recipe)")
    parser.add_argument("--exp_decay_at_epoch", type=int, default=151,
                        help="--lr_decay_type exp: first epoch of the exponential decay (to 0.001x at the end)")
    parser.add_argument("--staircase_decay_at_epochs", type=int_tuple(), default=(101, 201),
                        help="--lr_decay_type staircase: epochs where the rate is multiplied, as tuple text")
    parser.add_argument("--staircase_decay_multiply_factor", type=float, default=0.1,
                        help="--lr_decay_type staircase: factor applied at each of those epochs")
    parser.add_argument("--optimizer", default=None, choices=OPTIMIZERS.choices(),
                        help="adam (the original's) or sgd (Nesterov, uses --momentum) (default: from --recipe)")
    parser.add_argument("--momentum", type=float, default=0.9, help="--optimizer sgd: Nesterov momentum")
    parser.add_argument("--weight_decay", type=float, default=None, help="L2 weight decay (default: from --recipe)")
    parser.add_argument("--total_epochs", type=int, default=300, help="epochs to train (see --sampler_epoch)")
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
    parser.add_argument("--eval_untrained", type=str2bool, default=False,
                        help="evaluate the network before training too (the demo prints both)")


def add_loss_term_switches(parser: argparse.ArgumentParser) -> None:
    """The weight switch of every registered loss term that is not one of the built-in ones above
    (:mod:`bpm.losses.term`): ``--<name>_weight``, or the name the term declares; 0 (off) by default."""
    from bpm.losses.combine import field_switches
    from bpm.losses.term import LOSS_TERMS

    for name in LOSS_TERMS.names():
        term = LOSS_TERMS.get(name)
        if term.weight_switch not in field_switches():
            parser.add_argument(f"--{term.weight_switch}", type=float, default=0.0,
                                help=term.weight_help or f"weight of the {name} loss term, 0 = off")


def add_distill_switches(parser: argparse.ArgumentParser) -> None:
    """Distillation from a ready-made teacher (:mod:`bpm.distill`, docs/guide/distillation.md)."""
    parser.add_argument("--teacher", default="",
                        help="model to learn from: a bpm checkpoint/weights file, an ONNX file (ONNX Runtime) or an "
                             "OpenVINO IR .xml (needs the openvino package); only for training")
    parser.add_argument("--teacher_input", default="",
                        help="the teacher's input where its file does not say: HxW[,rgb|bgr][,imagenet|tf|unit|raw], "
                             "e.g. 256x128,rgb,imagenet (imagenet: (x/255-mean)/std; tf: x/127.5-1; unit: x/255; "
                             "raw: 0..255)")
    parser.add_argument("--teacher_cache", default="",
                        help="folder of the teacher's cached embeddings (default: <exp_dir>/teacher_cache); point "
                             "several runs at one folder to compute them once")
    parser.add_argument("--teacher_per_step", type=str2bool, default=False,
                        help="run the teacher on every augmented batch instead of using its cached embeddings of "
                             "the un-augmented images (slower)")
    parser.add_argument("--distill_weight", type=float, default=None,
                        help="weight of embedding distillation (student, projected to the teacher's size, towards "
                             "the teacher's embedding), 0 = off (default: from --recipe)")
    parser.add_argument("--relational_weight", type=float, default=None,
                        help="weight of relational distillation (the batch's pairwise cosine similarities towards "
                             "the teacher's), 0 = off (default: from --recipe)")
    parser.add_argument("--distill_metric", default="cosine", choices=["cosine", "l2"],
                        help="embedding distillation: 1 - cosine, or squared distance to the unit-length target")
    parser.add_argument("--distill_extra", default="",
                        help="folder of person crops without identity labels, seen only by the distillation terms")
    parser.add_argument("--distill_extra_per_batch", type=int, default=0,
                        help="unlabelled crops added to each batch (0: half the labelled batch)")


def add_dataset_features_switches(parser: argparse.ArgumentParser, *, training: bool = False) -> None:
    """What running a model over a dataset's images needs: device, data, model, precision, feature extraction
    (``training``: also the training split and ``--loss-scale``)."""
    add_device_switches(parser)
    add_data_switches(parser, training_split=training)
    add_image_check_switch(parser)
    add_model_switches(parser)
    add_precision_switches(parser, training=training)
    add_feature_switches(parser)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every switch of the original ``train.py``: ``bpm train`` and ``script/experiment/train.py``."""
    add_dataset_features_switches(parser, training=True)
    add_test_switches(parser)
    add_output_switches(parser)
    add_weights_switches(parser)
    add_train_switches(parser)


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    """``bpm test``: what evaluating a weights file needs, and no training switch."""
    add_dataset_features_switches(parser)
    add_test_switches(parser)
    add_output_switches(parser)
    add_weights_switches(parser)


# --------------------------------------------------------------------------- typed settings


def from_switches(cls: type, args: argparse.Namespace, names: Mapping[str, str] | None = None, /,
                  **given: Any) -> Any:
    """A settings group made from parsed switches: each field from its switch (``names`` maps a field to
    a switch of another name), or from ``given`` where the command has no such switch.

    Why: a field filled "if present" used to be left at its default silently when a command lacked
    the switch; here a field that is neither a switch of the command nor given is an error.
    """
    values, names = vars(args), names or {}
    out: dict[str, Any] = {}
    for f in fields(cls):
        switch = names.get(f.name, f.name)
        if f.name in given:
            out[f.name] = given[f.name]
        elif switch in values:
            out[f.name] = values[switch]
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: the parsed switches have no --{switch} and no value was given")
    return cls(**out)


def as_switches(group: Any, names: Mapping[str, str] | None = None, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A settings group back as the switches it was made from (:func:`from_switches`' inverse)."""
    names = names or {}
    return {names.get(f.name, f.name): getattr(group, f.name) for f in fields(group) if f.name not in skip}


# Switch names of the group fields that differ from the field's name.
DEVICE_SWITCHES = {"devices": "sys_device_ids"}
FEATURE_SWITCHES = {"normalize": "normalize_feature", "batch_size": "batch_size_test", "flip": "test_flip"}
# Switches of bpm train only; bpm test uses the fields' defaults.
DATA_TRAINING_ONLY = ("trainset_part", "seed")
PRECISION_TRAINING_ONLY = ("loss_scale",)
# Data and precision switches that only some commands have; the others use these fields' defaults.
_OPTIONAL_SWITCHES = {DataSettings: ("trainset_part", "seed", "skip_bad_images"),
                      PrecisionSettings: ("amp_dtype", "loss_scale")}


def _defaults_for_absent(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(cls, name) for name in _OPTIONAL_SWITCHES[cls] if name not in vars(args)}


def _defaults(cls: type, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(cls, name) for name in names}


def device_settings(args: argparse.Namespace) -> DeviceSettings:
    return from_switches(DeviceSettings, args, DEVICE_SWITCHES, devices=tuple(args.sys_device_ids))


def device_switches(group: DeviceSettings) -> dict[str, Any]:
    return as_switches(group, DEVICE_SWITCHES)


def data_settings(args: argparse.Namespace, training: bool | None = None) -> DataSettings:
    """The data group of any command (``--trainset_part``/``--seed``: ``bpm train``'s only;
    ``training=False``: their defaults even where the parser has them)."""
    fixed = _defaults(DataSettings, DATA_TRAINING_ONLY) if training is False else {}
    return from_switches(DataSettings, args, data_root=args.data_root or None,
                         **{**_defaults_for_absent(DataSettings, args), **fixed})


def data_switches(group: DataSettings, training: bool = True) -> dict[str, Any]:
    values = as_switches(group, skip=() if training else DATA_TRAINING_ONLY)
    values["data_root"] = group.data_root or ""
    return values


def model_settings(args: argparse.Namespace) -> ModelSettings:
    return from_switches(ModelSettings, args)


def feature_settings(args: argparse.Namespace, **given: Any) -> FeatureSettings:
    return from_switches(FeatureSettings, args, FEATURE_SWITCHES, **given)


def feature_switches(group: FeatureSettings) -> dict[str, Any]:
    return as_switches(group, FEATURE_SWITCHES)


def precision_settings(args: argparse.Namespace, training: bool | None = None) -> PrecisionSettings:
    """The precision group of any command (``--amp_dtype`` where a model runs, ``--loss-scale`` in training)."""
    fixed = _defaults(PrecisionSettings, PRECISION_TRAINING_ONLY) if training is False else {}
    return from_switches(PrecisionSettings, args, **{**_defaults_for_absent(PrecisionSettings, args), **fixed})


def precision_switches(group: PrecisionSettings, training: bool = True) -> dict[str, Any]:
    return as_switches(group, skip=() if training else PRECISION_TRAINING_ONLY)


def evaluation_settings(args: argparse.Namespace) -> EvaluationSettings:
    return from_switches(EvaluationSettings, args)


def output_settings(args: argparse.Namespace) -> OutputSettings:
    return from_switches(OutputSettings, args, exp_dir=Path(args.exp_dir) if args.exp_dir else None)


def output_switches(group: OutputSettings) -> dict[str, Any]:
    return {**as_switches(group), "exp_dir": str(group.exp_dir) if group.exp_dir is not None else ""}


def start_settings(args: argparse.Namespace) -> StartSettings:
    return from_switches(StartSettings, args)


# Fields of the training settings that are no switch: their value is fixed here, by name.
_LOSS_FIXED = {"center_alpha": 0.5}
_TRAIN_FIXED = {"warmup_factor": 0.1}


def train_config(args: argparse.Namespace):
    """The training part of parsed ``bpm train`` switches (:func:`apply_recipe` already applied).

    Every field comes from its switch; one the switches lack is an error (:func:`from_switches`).
    The input size is not here: it is the model group's (:class:`ModelSettings`).
    """
    from bpm.engine.train_config import TrainConfig
    from bpm.losses.combine import LossConfig, field_switches
    from bpm.losses.term import LOSS_TERMS

    values = vars(args)
    terms = [LOSS_TERMS.get(name) for name in LOSS_TERMS.names()]
    weights = {t.name: float(values[t.weight_switch]) for t in terms  # the terms outside LossConfig's fields
               if t.weight_switch not in field_switches() and values.get(t.weight_switch)}
    loss = from_switches(LossConfig, args, weights=weights, **_LOSS_FIXED)
    config = from_switches(TrainConfig, args, loss=loss, seed=args.seed if args.set_seed else None, **_TRAIN_FIXED)
    return replace(config, staircase_decay_at_epochs=tuple(config.staircase_decay_at_epochs))


def train_switches(config) -> dict[str, Any]:
    """:func:`train_config`'s inverse: the training switches of a :class:`~bpm.engine.train_config.TrainConfig`
    (``--seed`` is the data group's; ``--set_seed`` says whether the trainer got it)."""
    from bpm.losses.combine import field_switches
    from bpm.losses.term import LOSS_TERMS

    values = as_switches(config, skip=("loss", "seed", *_TRAIN_FIXED))
    values.update(as_switches(config.loss, skip=("weights", *_LOSS_FIXED)))
    for term in (LOSS_TERMS.get(name) for name in LOSS_TERMS.names()):
        if term.weight_switch not in field_switches():
            values[term.weight_switch] = float(config.loss.weights.get(term.name, 0.0))
    values["set_seed"] = config.seed is not None
    return values


def apply_recipe(args: argparse.Namespace) -> None:
    """Fill every recipe switch the user left unset (None) from ``--recipe``'s preset, in place."""
    from bpm.recipes import recipe_values

    given = {name: value for name, value in vars(args).items() if value is not None}
    for name, value in recipe_values(args.recipe, given).items():
        setattr(args, name, value)


def default_exp_dir(dataset: str, net: str, opt_level: str, last_conv_stride: int, run: int = 1) -> Path:
    """The original derived a folder name from the settings; we do the same under ``expt_res/``."""
    return Path("expt_res") / f"{dataset}_{net}_{opt_level}_stride{last_conv_stride}_run{run}"


def save_config(values: Mapping[str, Any], path: Path, records: dict[str, Any] | None = None) -> None:
    """Write the resolved settings as JSON, so every result can be traced to its command line and
    re-run with ``--config`` (:mod:`bpm.cli.run_config`); ``records`` (e.g. ``versions``) are added as is."""
    data: dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
    data.update(records or {})
    # Atomic, and any OSError (EPERM on an immutable file, a full disk) is one line keeping the old file.
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str), "the run's settings")
