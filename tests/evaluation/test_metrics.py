"""evaluate() against an obvious per-query loop, hand-computed cases and bad input."""
import numpy as np
import pytest

from bpm.errors import BpmError
from bpm.evaluation import evaluate
from bpm.evaluation.metrics import CUHK03_DRAWS, _match_structure, single_shot_draws


def brute_force(dist, qp, gp, qc, gc, max_rank, ap):
    """Per query: stable argsort, drop same-id-same-cam and junk, walk the list."""
    cmc_hits, aps, inps, firsts = [], [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        order = [j for j in order if not (gp[j] == qp[i] and gc[j] == qc[i]) and gp[j] != -1]
        good = [gp[j] == qp[i] for j in order]
        if not any(good):
            aps.append(np.nan)
            firsts.append(-1)
            continue
        positions = [r + 1 for r, g in enumerate(good) if g]
        n = len(positions)
        total = 0.0
        for hit, pos in enumerate(positions, start=1):
            prec = hit / pos
            if ap == "market_matlab":
                old = 1.0 if pos == 1 else (hit - 1) / (pos - 1)
                prec = (old + prec) / 2
            total += prec
        aps.append(total / n)
        inps.append(n / positions[-1])
        firsts.append(positions[0])
        cmc_hits.append([positions[0] <= k for k in range(1, max_rank + 1)])
    return {
        "cmc": np.mean(cmc_hits, axis=0),
        "mAP": np.nanmean(aps),
        "mINP": np.mean(inps),
        "ap": np.array(aps),
        "first_match_rank": np.array(firsts),
        "num_valid_queries": len(inps),
        "num_invalid_queries": dist.shape[0] - len(inps),
    }


def assert_same(got, want):
    np.testing.assert_allclose(got["cmc"], want["cmc"], atol=1e-12)
    np.testing.assert_allclose(got["ap"], want["ap"], atol=1e-12)
    np.testing.assert_array_equal(got["first_match_rank"], want["first_match_rank"])
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-12)
    assert got["mINP"] == pytest.approx(want["mINP"], abs=1e-12)
    assert got["num_valid_queries"] == want["num_valid_queries"]
    assert got["num_invalid_queries"] == want["num_invalid_queries"]


HAND_DIST = np.array([[0.1, 0.2, 0.05, 0.3, 0.4, 0.35]])
HAND_G_PIDS = [1, 2, 1, 3, 1, 0]
HAND_G_CAMS = [2, 1, 1, 2, 3, 1]


def test_hand_checked_sklearn_ap():
    # Query id 1 cam 1. Gallery 2 (id 1, cam 1) is dropped. Valid order by distance:
    # g0 (hit, 0.1), g1 (0.2), g3 (0.3), g5 (distractor, 0.35), g4 (hit, 0.4).
    # Hits at ranks 1 and 5: AP = (1/1 + 2/5) / 2 = 0.7; mINP = 2 / 5 = 0.4.
    r = evaluate(HAND_DIST, [1], HAND_G_PIDS, [1], HAND_G_CAMS, max_rank=8)
    assert r["mAP"] == pytest.approx(0.7)
    assert r["mINP"] == pytest.approx(0.4)
    # 5 valid gallery entries < max_rank 8: cmc keeps length 8, padded with its last value.
    np.testing.assert_allclose(r["cmc"], np.ones(8))
    assert r["first_match_rank"].tolist() == [1]
    assert (r["num_valid_queries"], r["num_invalid_queries"]) == (1, 0)


def test_hand_checked_matlab_ap():
    # Same ranking. Hit 1 at rank 1: (1 + 1/1) / 2 = 1. Hit 2 at rank 5: precision before it
    # 1/4, at it 2/5 -> (0.25 + 0.4) / 2 = 0.325. AP = (1 + 0.325) / 2 = 0.6625.
    r = evaluate(HAND_DIST, [1], HAND_G_PIDS, [1], HAND_G_CAMS, ap="market_matlab")
    assert r["mAP"] == pytest.approx(0.6625)


def test_ties_broken_by_gallery_index():
    # All distances equal: the order is gallery order. Query id 1 cam 1.
    # Gallery (2, c1), (1, c2), (2, c1): hit at rank 2 -> AP 0.5, cmc@1 = 0.
    r = evaluate(np.full((1, 3), 0.5), [1], [2, 1, 2], [1], [1, 2, 1], max_rank=3)
    assert r["mAP"] == pytest.approx(0.5)
    np.testing.assert_allclose(r["cmc"], [0.0, 1.0, 1.0])
    r = evaluate(np.full((1, 2), 0.5, dtype=np.float32), [1], [1, 2], [1], [2, 1], max_rank=1)
    assert r["mAP"] == pytest.approx(1.0)


def test_skipped_queries_are_counted_and_nan():
    dist = np.array([[0.1, 0.2], [0.3, 0.1]])
    # Query 1 (id 3) has no gallery image at all.
    r = evaluate(dist, [1, 3], [1, 2], [1, 1], [2, 2], max_rank=2)
    assert (r["num_valid_queries"], r["num_invalid_queries"]) == (1, 1)
    assert np.isnan(r["ap"][1]) and r["first_match_rank"][1] == -1


def _random_case(rng, num_q, num_g, ids, cams, levels, dtype):
    qp = rng.integers(1, ids + 1, num_q)
    qc = rng.integers(0, cams, num_q)
    gp = rng.integers(-1, ids + 1, num_g)  # -1 junk, 0 distractor
    gc = rng.integers(0, cams, num_g)
    dist = rng.random((num_q, num_g))
    if levels:
        dist = np.round(dist * levels) / levels  # force many ties
    return dist.astype(dtype), qp, gp, qc, gc


@pytest.mark.parametrize("ap", ["sklearn", "market_matlab"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "seed,num_q,num_g,ids,cams,levels",
    [(0, 40, 60, 8, 3, 0), (1, 30, 80, 10, 2, 5), (2, 25, 50, 6, 1, 0), (3, 50, 120, 15, 4, 20), (4, 3, 9, 3, 2, 1)],
)
def test_random_cases_match_brute_force(seed, num_q, num_g, ids, cams, levels, dtype, ap):
    rng = np.random.default_rng(seed)
    dist, qp, gp, qc, gc = _random_case(rng, num_q, num_g, ids, cams, levels, dtype)
    if cams == 1:
        qc = qc + 1  # single-camera gallery; queries come from another camera
    if not any(((gp == p) & (gc != c)).any() for p, c in zip(qp, qc)):
        pytest.skip("case has no valid query")
    got = evaluate(dist, qp, gp, qc, gc, max_rank=20, ap=ap)
    assert_same(got, brute_force(dist, qp, gp, qc, gc, 20, ap))


def test_chunked_path_matches_brute_force(monkeypatch):
    monkeypatch.setattr("bpm.evaluation.metrics._CHUNK_ELEMENTS", 64)
    rng = np.random.default_rng(7)
    dist, qp, gp, qc, gc = _random_case(rng, 40, 30, 5, 3, 4, np.float32)
    dist[::3] = -dist[::3]  # negative distances (e.g. rounding of cosine) must still order right
    got = evaluate(dist, qp, gp, qc, gc, max_rank=10)
    assert_same(got, brute_force(dist, qp, gp, qc, gc, 10, "sklearn"))


def test_negative_zero_ties_with_zero():
    dist = np.array([[0.0, -0.0, 0.0]], dtype=np.float32)
    r = evaluate(dist, [1], [2, 2, 1], [1], [1, 1, 2], max_rank=3)
    np.testing.assert_allclose(r["cmc"], [0.0, 0.0, 1.0])


def _cuhk03_reference(dist, qp, gp, qc, gc, max_rank, ap, seed):
    """Rank the chosen true match in each draw's sub-gallery with the brute-force loop."""
    pos_r, pos_c, _, _ = _match_structure(*(np.asarray(a, dtype=np.int64) for a in (qp, gp, qc, gc)))
    cmcs, ap_sum = [], np.zeros(len(qp))
    for kept, rows, cols in single_shot_draws(np.asarray(gp), pos_r, pos_c, np.random.default_rng(seed)):
        for r, c in zip(rows, cols):
            sub = sorted([j for j in kept if gp[j] != gp[c]] + [c])
            one = brute_force(dist[[r]][:, sub], [qp[r]], np.asarray(gp)[sub], [qc[r]], np.asarray(gc)[sub], max_rank, ap)
            cmcs.append(one["cmc"])
            ap_sum[r] += one["mAP"]
    return np.mean(cmcs, axis=0), ap_sum / CUHK03_DRAWS


def test_single_shot_draws_pick_one_image_per_identity():
    rng = np.random.default_rng(8)
    _, qp, gp, qc, gc = _random_case(rng, 20, 80, 6, 3, 0, np.float64)
    pos_r, pos_c, _, _ = _match_structure(qp, gp, qc, gc)
    draws = list(single_shot_draws(gp, pos_r, pos_c, np.random.default_rng(0)))
    assert len(draws) == CUHK03_DRAWS
    for kept, rows, cols in draws:
        assert sorted(gp[kept].tolist()) == sorted(set(gp[gp != -1].tolist()))
        assert np.array_equal(rows, np.unique(pos_r))
        assert np.all(gp[cols] == qp[rows]) and np.all(gc[cols] != qc[rows])
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(draws, draws[1:]))


@pytest.mark.parametrize("ap", ["sklearn", "market_matlab"])
def test_cuhk03_protocol_matches_per_draw_brute_force(ap):
    rng = np.random.default_rng(9)
    dist, qp, gp, qc, gc = _random_case(rng, 15, 60, 5, 2, 6, np.float64)
    got = evaluate(dist, qp, gp, qc, gc, max_rank=10, protocol="cuhk03", ap=ap, seed=3)
    cmc, per_q_ap = _cuhk03_reference(dist, qp, gp, qc, gc, 10, ap, 3)
    np.testing.assert_allclose(got["cmc"], cmc, atol=1e-12)
    valid = ~np.isnan(got["ap"])
    np.testing.assert_allclose(got["ap"][valid], per_q_ap[valid], atol=1e-12)
    again = evaluate(dist, qp, gp, qc, gc, max_rank=10, protocol="cuhk03", ap=ap, seed=3)
    np.testing.assert_array_equal(got["cmc"], again["cmc"])


def test_cuhk03_equals_market_when_each_identity_has_one_image():
    # One gallery image per id, queries from another camera: every draw is the full gallery.
    rng = np.random.default_rng(10)
    gp = np.arange(1, 21)
    gc = np.zeros(20, dtype=int)
    qp = rng.integers(1, 21, 12)
    dist = rng.random((12, 20))
    market = evaluate(dist, qp, gp, np.ones(12, int), gc, max_rank=5)
    cuhk = evaluate(dist, qp, gp, np.ones(12, int), gc, max_rank=5, protocol="cuhk03")
    np.testing.assert_allclose(cuhk["cmc"], market["cmc"])
    assert cuhk["mAP"] == pytest.approx(market["mAP"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"distmat": np.ones((2, 3)), "q_pids": [1]}, "q_pids has 1 entries"),
        ({"g_camids": [1, 1]}, "g_camids has 2 entries"),
        ({"distmat": np.array([[0.1, np.nan, 0.3], [0.1, 0.2, 0.3]])}, "NaN or infinite"),
        ({"distmat": np.array([[0.1, 0.2, np.inf], [0.1, 0.2, 0.3]])}, "NaN or infinite"),
        ({"distmat": np.ones((2, 0)), "g_pids": [], "g_camids": []}, "gallery is empty"),
        ({"distmat": np.ones(3)}, "must be 2-D"),
        ({"q_pids": [7, 8]}, "none of the 2 queries"),
        ({"protocol": "viper"}, "protocol"),
        ({"ap": "voc"}, "AP definition"),
        ({"max_rank": 0}, "max_rank"),
    ],
)
def test_bad_input_raises_clear_error(kwargs, match):
    args = {
        "distmat": np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]),
        "q_pids": [1, 2],
        "g_pids": [1, 2, 3],
        "q_camids": [0, 0],
        "g_camids": [1, 1, 1],
    }
    args.update(kwargs)
    with pytest.raises(BpmError, match=match):
        evaluate(**args)


# --- Weak-model data: true matches spread over the whole ranking, most of the gallery kept. ---


def _weak_case(rng, num_q, num_g, ids, cams, dtype, levels=0, junk=True):
    """Distances U(0, 1) for the same id, U(0, 1) + 0.5 otherwise (a barely trained model)."""
    qp = rng.integers(1, ids + 1, num_q)
    qc = rng.integers(0, cams, num_q)
    gp = rng.integers(-1 if junk else 0, ids + 1, num_g)
    gc = rng.integers(0, cams, num_g)
    dist = rng.random((num_q, num_g))
    if levels:
        dist = np.round(dist * levels) / levels
    dist = dist + 0.5 * (qp[:, None] != gp[None, :])
    return dist.astype(dtype), qp, gp, qc, gc


@pytest.mark.parametrize("path", ["row_sort", "key_sort", "auto"])
@pytest.mark.parametrize("ap", ["sklearn", "market_matlab"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "seed,num_q,num_g,ids,cams,levels",
    [(20, 30, 700, 12, 3, 0), (21, 25, 400, 5, 2, 0), (22, 20, 600, 10, 4, 8), (23, 12, 300, 4, 2, 1)],
)
def test_weak_model_cases_match_brute_force(monkeypatch, seed, num_q, num_g, ids, cams, levels, dtype, ap, path):
    # "auto" keeps the real threshold: with hundreds of kept entries per row it takes the row
    # sort; the other two force one strategy for every chunk.
    if path != "auto":
        monkeypatch.setattr("bpm.evaluation.metrics._ROW_SORT_MIN_KEPT", 0 if path == "row_sort" else 10**9)
    rng = np.random.default_rng(seed)
    dist, qp, gp, qc, gc = _weak_case(rng, num_q, num_g, ids, cams, dtype, levels)
    got = evaluate(dist, qp, gp, qc, gc, max_rank=30, ap=ap)
    assert_same(got, brute_force(dist, qp, gp, qc, gc, 30, ap))
    assert got["num_valid_queries"] > 0


def test_weak_model_auto_path_is_row_sort(monkeypatch):
    # The case above really exercises the row sort when left to choose.
    from bpm.evaluation import metrics

    calls = []
    real = metrics._row_sort_ranks
    monkeypatch.setattr(metrics, "_row_sort_ranks", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(20)
    evaluate(*_weak_case(rng, 30, 700, 12, 3, np.float32))
    assert calls


@pytest.mark.parametrize("levels", [1, 3, 50])
def test_row_sort_ties_between_true_matches_and_others(monkeypatch, levels):
    # Few distinct distances: a true match ties with other true matches, distractors,
    # same-camera (dropped) entries and junk; order among equals is gallery order.
    monkeypatch.setattr("bpm.evaluation.metrics._ROW_SORT_MIN_KEPT", 0)
    rng = np.random.default_rng(30 + levels)
    dist, qp, gp, qc, gc = _random_case(rng, 40, 90, 5, 3, levels, np.float32)
    dist[::4] = -dist[::4]  # negative values and -0.0 == 0.0 ties
    got = evaluate(dist, qp, gp, qc, gc, max_rank=20)
    assert_same(got, brute_force(dist, qp, gp, qc, gc, 20, "sklearn"))


def test_row_sort_keeps_whole_gallery_when_worst_match_is_last(monkeypatch):
    # Every query's last true match is the farthest entry: all valid entries are kept.
    monkeypatch.setattr("bpm.evaluation.metrics._ROW_SORT_MIN_KEPT", 0)
    rng = np.random.default_rng(40)
    dist, qp, gp, qc, gc = _weak_case(rng, 15, 200, 6, 3, np.float64, junk=False)
    for i in range(15):
        cols = np.flatnonzero((gp == qp[i]) & (gc != qc[i]))
        if cols.size:
            dist[i, cols[-1]] = 5.0
    got = evaluate(dist, qp, gp, qc, gc, max_rank=10, ap="market_matlab")
    assert_same(got, brute_force(dist, qp, gp, qc, gc, 10, "market_matlab"))


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("row_sort_min", [0, 10**9])
def test_threaded_chunks_match_brute_force(monkeypatch, threads, row_sort_min):
    # Many small chunks on several threads give the serial result.
    monkeypatch.setattr("bpm.evaluation.metrics._CHUNK_ELEMENTS", 300)
    monkeypatch.setattr("bpm.evaluation.metrics._MAX_THREADS", threads)
    monkeypatch.setattr("bpm.evaluation.metrics._ROW_SORT_MIN_KEPT", row_sort_min)
    monkeypatch.setattr("bpm.evaluation.metrics._worker_count", lambda: threads)
    rng = np.random.default_rng(50)
    dist, qp, gp, qc, gc = _weak_case(rng, 60, 100, 8, 3, np.float32, levels=20)
    got = evaluate(dist, qp, gp, qc, gc, max_rank=15)
    assert_same(got, brute_force(dist, qp, gp, qc, gc, 15, "sklearn"))


def test_threaded_chunks_report_first_bad_row(monkeypatch):
    monkeypatch.setattr("bpm.evaluation.metrics._CHUNK_ELEMENTS", 200)
    monkeypatch.setattr("bpm.evaluation.metrics._worker_count", lambda: 2)
    rng = np.random.default_rng(51)
    dist, qp, gp, qc, gc = _weak_case(rng, 40, 100, 8, 3, np.float64)
    dist[33, 5] = np.inf
    dist[17, 50] = np.nan
    with pytest.raises(BpmError, match="first in query row 17"):
        evaluate(dist, qp, gp, qc, gc)


def test_worker_count_is_bounded():
    from bpm.evaluation import metrics

    assert 1 <= metrics._worker_count() <= metrics._MAX_THREADS
