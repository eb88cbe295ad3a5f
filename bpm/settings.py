"""The groups a run's settings are composed of (device, data, model, precision, features, evaluation,
output, start): frozen records the library takes as they are.

Why a module of its own: library code (:mod:`bpm.export`, the commands) passes these groups around,
and must not import the command-line layer (:mod:`bpm.cli.switches`), which makes them from parsed switches
and turns them back into switches (``config.json``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


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




@dataclass(frozen=True)
class DeviceSettings:
    """Where a run computes: ``-d`` (GPU ids, ``()`` the CPU) and how long ranks wait for each other."""

    devices: tuple[int, ...] = ()
    dist_timeout: float = 1800.0

@dataclass(frozen=True)
class DataSettings:
    """Which dataset to index and how (:func:`bpm.data.datasets.build_dataset`'s arguments)."""

    dataset: str
    data_root: str | None = None
    cuhk03_type: str = "detected"
    trainset_part: str = "trainval"
    skip_bad_images: bool = False
    seed: int = 1  # draws the validation identities of --trainset_part train

    def build(self, require_train: bool = True, may_write: bool = True):
        """Index the dataset (:func:`bpm.data.datasets.build_dataset`)."""
        from bpm.data.datasets import build_dataset

        return build_dataset(self.dataset, self.data_root or None, cuhk03_type=self.cuhk03_type,
                             trainset_part=self.trainset_part, skip_bad_images=self.skip_bad_images, seed=self.seed,
                             require_train=require_train, may_write=may_write)


@dataclass(frozen=True)
class ModelSettings:
    """The network and its input; values the user did not type stay :func:`unset`-marked, so a weights
    file's stored settings can replace them (:mod:`bpm.models.meta`). The one home of the input size."""

    net: str = unset("mobilenet_v2")
    last_conv_stride: int = unset(1)
    resize_h_w: tuple[int, int] = unset((256, 128))

    def overrides(self) -> dict[str, Any]:
        """What the user typed, for :func:`bpm.load_model`: an untyped default is ``None`` (the
        marker types never go below the command boundary)."""
        return {name: None if is_unset(value) else value for name, value in
                (("net", self.net), ("last_conv_stride", self.last_conv_stride), ("resize_h_w", self.resize_h_w))}


@dataclass(frozen=True)
class PrecisionSettings:
    """``--opt-level`` and what refines it; :meth:`policy` makes the :class:`~bpm.precision.PrecisionPolicy`."""

    opt_level: str = "O0"
    keep_batchnorm_fp32: bool = True
    amp_dtype: str | None = None
    loss_scale: float | str | None = None

    def policy(self, device):
        from bpm.precision import PrecisionPolicy

        return PrecisionPolicy.create(self.opt_level, device, self.amp_dtype, self.keep_batchnorm_fp32,
                                      self.loss_scale)


@dataclass(frozen=True)
class FeatureSettings:
    """How features of a dataset's images are extracted (the feature switch group)."""

    normalize: bool | None = False  # None: as the model does at test time (bpm extract)
    workers: int = 2
    batch_size: int = 64
    flip: bool = False

@dataclass(frozen=True)
class EvaluationSettings:
    """How a test set is evaluated (``bpm train`` after training, ``bpm test``), and which weights."""

    test_normalize: bool | None = None  # None: the model's own test-time normalisation
    mq_pooling: str = "average"
    rerank: bool = True
    save_features: str = ""
    model_weight_file: str = ""  # bpm test: the weights to evaluate ("": the run folder's ckpt.pth)

@dataclass(frozen=True)
class OutputSettings:
    """Where a run writes: ``--exp_dir`` (``None``: named after the settings), ``--run``, ``--log_to_file``."""

    exp_dir: Path | None = None
    run: int = 1
    log_to_file: bool = True

@dataclass(frozen=True)
class StartSettings:
    """How a training run starts: a new model (its pooling and neck, its initial backbone weights), or
    ``--resume``; and whether the untrained network is evaluated first."""

    resume: bool = False
    net_pretrained_path: str = "imagenet"
    pooling: str = "avg"
    neck: str = "none"
    eval_untrained: bool = False

    @property
    def architecture(self) -> dict[str, str]:
        """Pooling and neck of the new model (:func:`bpm.models.reid.build_model`'s keywords)."""
        return {"pooling": self.pooling, "neck": self.neck}
