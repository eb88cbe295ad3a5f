"""pool_multi_query groups by (pid, camid) in the queries' order."""
import numpy as np
import pytest

from bpm.errors import BpmError
from bpm.evaluation import pool_multi_query

FEATS = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, -4.0], [0.0, 1.0]])
PIDS = [1, 1, 2, 1]
CAMS = [1, 1, 1, 2]


def test_average_and_max_pool_per_query_key():
    avg = pool_multi_query(FEATS, PIDS, CAMS, [2, 1, 1], [1, 1, 2], method="average")
    np.testing.assert_allclose(avg, [[5.0, -4.0], [2.0, 1.0], [0.0, 1.0]])
    mx = pool_multi_query(FEATS, PIDS, CAMS, [1], [1], method="max")
    np.testing.assert_allclose(mx, [[3.0, 2.0]])


def test_missing_key_and_bad_method_raise():
    with pytest.raises(BpmError, match=r"\(3, 1\)"):
        pool_multi_query(FEATS, PIDS, CAMS, [3], [1])
    with pytest.raises(BpmError, match="pooling"):
        pool_multi_query(FEATS, PIDS, CAMS, [1], [1], method="median")
