"""re_ranking against a dense, step-by-step transcription of Zhong et al. (CVPR 2017)."""
import numpy as np
import pytest

from bpm.errors import BpmError
from bpm.evaluation import re_ranking


def dense_reference(q_g, q_q, g_g, k1=20, k2=6, lam=0.3):
    """The published algorithm with full matrices and plain loops (obviously right, slow)."""
    nq = q_g.shape[0]
    d = np.block([[q_q, q_g], [q_g.T, g_g]])
    d = np.square(d).astype(np.float32)
    t = (d / d.max(axis=0)).T
    n = t.shape[0]
    rank = np.argsort(t, axis=1, kind="stable")

    def reciprocal(i, k):
        forward = rank[i, : k + 1]
        return [j for j in forward if i in rank[j, : k + 1]]

    v = np.zeros((n, n), dtype=np.float32)
    half = int(np.around(k1 / 2.0))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for c in r:
            rc = reciprocal(c, half)
            if len(set(rc) & set(r)) > 2.0 / 3.0 * len(rc):
                expanded |= set(rc)
        idx = np.array(sorted(expanded))
        w = np.exp(-t[i, idx])
        v[i, idx] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.zeros((nq, n), dtype=np.float32)
    for i in range(nq):
        overlap = np.minimum(v[i][None, :], v).sum(axis=1)
        jaccard[i] = 1.0 - overlap / (2.0 - overlap)
    final = jaccard * (1 - lam) + t[:nq] * lam
    return final[:, nq:]


def _features_case(rng, nq, ng, dim=8, ids=6):
    labels_q = rng.integers(0, ids, nq)
    labels_g = rng.integers(0, ids, ng)
    centres = rng.normal(size=(ids, dim)) * 2
    fq = centres[labels_q] + rng.normal(size=(nq, dim))
    fg = centres[labels_g] + rng.normal(size=(ng, dim))

    def dist(a, b):
        return np.sqrt(np.maximum(((a[:, None] - b[None]) ** 2).sum(-1), 0)).astype(np.float32)

    return dist(fq, fg), dist(fq, fq), dist(fg, fg)


@pytest.mark.parametrize("seed,nq,ng,k1,k2,lam", [(0, 7, 30, 20, 6, 0.3), (1, 12, 40, 5, 3, 0.5), (2, 5, 25, 7, 1, 0.0)])
def test_symmetric_inputs_match_dense_reference(seed, nq, ng, k1, k2, lam):
    rng = np.random.default_rng(seed)
    qg, qq, gg = _features_case(rng, nq, ng)
    got = re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    want = dense_reference(qg, qq, gg, k1, k2, lam)
    assert got.shape == (nq, ng) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", [3, 4])
def test_asymmetric_inputs_match_dense_reference(seed):
    rng = np.random.default_rng(seed)
    qg = rng.random((9, 31)).astype(np.float32) + 0.1
    qq = rng.random((9, 9)).astype(np.float32)
    gg = rng.random((31, 31)).astype(np.float32)
    np.fill_diagonal(qq, 0)
    np.fill_diagonal(gg, 0)
    got = re_ranking(qg, qq, gg, k1=6, k2=3)
    np.testing.assert_allclose(got, dense_reference(qg, qq, gg, 6, 3, 0.3), atol=1e-5, rtol=0)


def test_float64_and_tied_inputs_match_dense_reference():
    rng = np.random.default_rng(5)
    qg, qq, gg = (np.round(m * 4) / 4 for m in _features_case(rng, 6, 20))
    qg, qq, gg = qg.astype(np.float64), qq.astype(np.float64), gg.astype(np.float64)
    got = re_ranking(qg, qq, gg, k1=5, k2=3)
    np.testing.assert_allclose(got, dense_reference(qg, qq, gg, 5, 3, 0.3), atol=1e-5, rtol=0)


def test_lambda_one_returns_normalised_squared_distances():
    rng = np.random.default_rng(6)
    qg, qq, gg = _features_case(rng, 4, 10)
    got = re_ranking(qg, qq, gg, lambda_value=1.0)
    colmax = np.maximum((qq**2).max(axis=0), (qg**2).max(axis=1))
    np.testing.assert_allclose(got, qg**2 / colmax[:, None], rtol=1e-6)


def test_rejects_bad_input():
    qg, qq, gg = np.ones((2, 3)), np.zeros((2, 2)), np.zeros((3, 3))
    with pytest.raises(BpmError, match="shapes do not fit"):
        re_ranking(qg, qq, np.zeros((2, 2)))
    bad = qg.copy()
    bad[0, 1] = np.nan
    with pytest.raises(BpmError, match="NaN"):
        re_ranking(bad, qq, gg)
    with pytest.raises(BpmError, match="k1"):
        re_ranking(qg, qq, gg, k1=0)
