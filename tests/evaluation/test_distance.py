"""compute_distances against direct NumPy formulas."""
import numpy as np
import pytest

from bpm.errors import BpmError
from bpm.evaluation import compute_distances


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return rng.normal(size=(7, 16)), rng.normal(size=(11, 16))


@pytest.mark.parametrize("chunk_size", [1, 3, 4096])
def test_euclidean_matches_numpy_in_any_chunking(feats, chunk_size):
    q, g = feats
    want = np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
    got = compute_distances(q, g, chunk_size=chunk_size, device="cpu")
    assert got.dtype == np.float32 and got.shape == (7, 11)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compute_distances(q, g, squared=True), want**2, rtol=1e-4, atol=1e-4)


def test_self_distance_is_clamped_not_nan(feats):
    q, _ = feats
    # FP32 cancellation makes ||q||^2 + ||q||^2 - 2 q.q slightly negative for some rows.
    d = compute_distances(q * 1000, q * 1000)
    assert np.isfinite(d).all() and (d >= 0).all()
    assert np.diag(d).max() < 0.01 * np.median(d)


def test_cosine_matches_numpy(feats):
    q, g = feats
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(compute_distances(q, g, metric="cosine"), 1 - qn @ gn.T, atol=1e-6)


def test_bad_input(feats):
    q, g = feats
    with pytest.raises(BpmError, match="same width"):
        compute_distances(q, g[:, :3])
    with pytest.raises(BpmError, match="metric"):
        compute_distances(q, g, metric="manhattan")
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(BpmError, match="NaN"):
        compute_distances(bad, g)


def test_euclidean_distances_survive_a_large_common_offset():
    """||q||^2 + ||g||^2 - 2 q.g cancels catastrophically in FP32 when every feature shares a large
    component; centring first keeps the ranking a float64 brute force gives."""
    from bpm.evaluation import evaluate

    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(1, 21), 3)
    centres = rng.normal(size=(21, 16))
    feats = centres[ids] + 0.05 * rng.normal(size=(len(ids), 16)) + 100.0
    q, g = feats[0::3], np.concatenate([feats[1::3], feats[2::3]])
    q_ids, g_ids = ids[0::3], np.concatenate([ids[1::3], ids[2::3]])
    exact = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    got = compute_distances(q.astype(np.float32), g.astype(np.float32), device="cpu")
    np.testing.assert_allclose(got, exact, atol=1e-4)
    cams_q, cams_g = np.zeros(len(q_ids), int), np.ones(len(g_ids), int)
    assert evaluate(got, q_ids, g_ids, cams_q, cams_g)["mAP"] == pytest.approx(
        evaluate(exact, q_ids, g_ids, cams_q, cams_g)["mAP"]) == pytest.approx(1.0)
