"""Training losses, one file per criterion; :mod:`bpm.losses.combine` sums them for a recipe."""
from bpm.losses.center import CenterLoss
from bpm.losses.combine import LossConfig, ReidCriterion
from bpm.losses.cross_entropy import CrossEntropyLabelSmooth
from bpm.losses.triplet import BatchHardTripletLoss, euclidean_dist, hard_example_mining

__all__ = ["BatchHardTripletLoss", "CenterLoss", "CrossEntropyLabelSmooth", "LossConfig", "ReidCriterion",
           "euclidean_dist", "hard_example_mining"]
