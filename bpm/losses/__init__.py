"""Training losses, one file per criterion; each registers its loss term (:mod:`bpm.losses.term`) and
:mod:`bpm.losses.combine` sums the terms a run gives a weight.

Importing this package registers every term: the built-in ones first, in the original's order of
summation (triplet, ID, centre, distillation), then any other module of the package, by file name,
so adding a loss term is adding one module here (and its test).
"""
import importlib
import pkgutil

from bpm.losses import triplet, cross_entropy, center, distill  # noqa: F401  (registration order = sum order)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

from bpm.losses.center import CenterLoss  # noqa: E402
from bpm.losses.combine import LossConfig, ReidCriterion  # noqa: E402
from bpm.losses.cross_entropy import CrossEntropyLabelSmooth  # noqa: E402
from bpm.losses.triplet import BatchHardTripletLoss, euclidean_dist, hard_example_mining  # noqa: E402

__all__ = ["BatchHardTripletLoss", "CenterLoss", "CrossEntropyLabelSmooth", "LossConfig", "ReidCriterion",
           "euclidean_dist", "hard_example_mining"]
