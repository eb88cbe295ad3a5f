"""Evaluation engine: distances, ranking metrics, k-reciprocal re-ranking, multi-query pooling.

Pure numerical code; it never sees models or images.
"""
from bpm.evaluation.distance import compute_distances
from bpm.evaluation.metrics import evaluate
from bpm.evaluation.multi_query import pool_multi_query
from bpm.evaluation.rerank import re_ranking

__all__ = ["compute_distances", "evaluate", "pool_multi_query", "re_ranking"]
