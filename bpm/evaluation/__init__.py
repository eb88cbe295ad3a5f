"""Evaluation: distances, ranking metrics, k-reciprocal re-ranking, multi-query pooling, and the
features they are computed on.

What this top level exports is pure numerical code on feature arrays and identity/camera ids. The
package also holds the one extraction path that runs a model over images (:mod:`.features`), the
features files every command reads and writes (:mod:`.features_file`) and the extraction of a whole
image folder (:mod:`.folder_features`).
"""
from bpm.evaluation.distance import compute_distances
from bpm.evaluation.metrics import evaluate
from bpm.evaluation.multi_query import pool_multi_query
from bpm.evaluation.rerank import re_ranking

__all__ = ["compute_distances", "evaluate", "pool_multi_query", "re_ranking"]
