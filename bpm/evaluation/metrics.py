"""CMC, mAP and mINP from a query x gallery distance matrix, exact and fast.

Why not the classic loop: it argsorts every full gallery row and walks it in Python, which costs
seconds at Market-1501 scale and grows with the gallery. Every metric here only needs the rank
of each true match among the *valid* gallery entries, so per chunk of queries we

1. take the distance ``t`` of the worst true match of each query,
2. keep only valid entries with distance <= ``t`` (everything that can outrank a true match),
3. rank the true matches among the kept entries, by one of two strategies chosen per chunk
   from the number of kept entries (their cost crosses at about ``_ROW_SORT_MIN_KEPT`` per row):

   - *few kept* (a strong model: true matches near the top): encode each kept entry as one
     sortable 64-bit key ``(row, distance, gallery index)``, sort the keys of the whole chunk
     at once and read each true match's rank as its key's position minus the start of its row.
     The key holds the gallery index, so distance ties are broken by gallery index exactly;
   - *many kept* (a weak model: early training, cross-domain testing; the worst true match
     lies deep in the ranking and about half the gallery is kept): building and sorting keys
     would dominate, so sort each row's kept *distances* in place (NumPy's SIMD sort) and
     count the kept entries strictly below each true match by binary search. A true match
     whose distance another kept entry shares (rare with real distances) is then corrected
     by counting the tied entries with a smaller gallery index.

Chunks are independent and run on the cores this process may use (at most ``_MAX_THREADS``);
memory stays bounded by the chunk size times the threads.
(``bench/eval_speed.py`` measures both kinds of data against the classic loop.)

Ranking rules (Market-1501 protocol): gallery entries with the query's id *and* camera are
dropped, as are junk entries (pid ``-1``); distractors (pid ``0``) are ordinary non-matches;
queries without any remaining true match are skipped and counted.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bpm.data.records import JUNK_PID
from bpm.errors import BpmError

PROTOCOLS = ("market1501", "cuhk03")
AP_DEFINITIONS = ("sklearn", "market_matlab")
CUHK03_DRAWS = 10
_CHUNK_ELEMENTS = 1 << 22
_MAX_THREADS = 4
_ROW_SORT_MIN_KEPT = 96


def evaluate(
    distmat: np.ndarray,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    protocol: str = "market1501",
    ap: str = "sklearn",
    seed: int = 0,
) -> dict[str, Any]:
    """Score a ranking; smaller distance = more similar.

    ``ap="sklearn"``: mean of the precision at each true match (scikit-learn >= 0.19).
    ``ap="market_matlab"``: the official Market-1501 MATLAB code, which averages the precision
    before and at each true match (about one point lower).
    ``protocol="cuhk03"``: single-gallery-shot; ``CUHK03_DRAWS`` seeded draws of one valid
    gallery image per identity for each query, CMC/AP/mINP averaged over the draws (with one
    true match per draw AP is a function of its rank only).

    Args:
        distmat: ``(q, g)`` distances.
        q_pids: query identity labels, ``(q,)``.
        g_pids: gallery identity labels, ``(g,)`` (``JUNK_PID`` entries are ignored).
        q_camids: query camera ids; same-identity same-camera gallery entries are skipped.
        g_camids: gallery camera ids.
        max_rank: the length of the CMC curve.
        protocol: ``market1501`` or ``cuhk03``.
        ap: ``sklearn`` or ``market_matlab``.
        seed: the seed of the ``cuhk03`` draws.

    Returns:
        A dict with ``cmc`` (float64 array of length ``max_rank``, fractions; when the gallery is shorter
            than ``max_rank`` the tail is padded with the last value, since every valid query has its first
            match within the gallery), ``mAP``, ``mINP`` (fractions), ``num_valid_queries``,
            ``num_invalid_queries`` (skipped: no true match left), ``ap`` (per query, NaN when skipped) and
            ``first_match_rank`` (per query, 1-based rank of the first true match among the valid gallery
            entries of the full gallery, -1 when skipped).
    """
    dist, qp, gp, qc, gc = _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids)
    if protocol not in PROTOCOLS:
        raise BpmError(f"evaluation protocol {protocol!r} is unknown; expected one of {PROTOCOLS}")
    if ap not in AP_DEFINITIONS:
        raise BpmError(f"AP definition {ap!r} is unknown; expected one of {AP_DEFINITIONS}")
    if int(max_rank) < 1:
        raise BpmError(f"max_rank must be >= 1, got {max_rank}")
    max_rank = int(max_rank)

    pos_r, pos_c, inv_r, inv_c = _match_structure(qp, gp, qc, gc)
    junk_cols = np.flatnonzero(gp == JUNK_PID)
    ranks = _positive_ranks(dist, pos_r, pos_c, inv_r, inv_c, junk_cols)
    num_q = dist.shape[0]
    valid = np.bincount(pos_r, minlength=num_q) > 0
    if not valid.any():
        raise BpmError(
            f"evaluation: none of the {num_q} queries has a true match in the gallery "
            "(same id, different camera); check the query/gallery ids and cameras"
        )
    best = np.full(num_q, np.iinfo(np.int64).max)
    np.minimum.at(best, pos_r, ranks)
    first_match = np.where(valid, best + 1, -1)

    if protocol == "market1501":
        per_q_ap, per_q_inp = _ap_and_inp(pos_r, ranks, num_q, ap)
        cmc = _cmc(first_match[valid], max_rank)
    else:
        cmc, per_q_ap, per_q_inp = _cuhk03_draws(dist, gp, pos_r, pos_c, num_q, max_rank, ap, seed)
    return {
        "cmc": cmc,
        "mAP": float(np.mean(per_q_ap[valid])),
        "mINP": float(np.mean(per_q_inp[valid])),
        "num_valid_queries": int(valid.sum()),
        "num_invalid_queries": int(num_q - valid.sum()),
        "ap": np.where(valid, per_q_ap, np.nan),
        "first_match_rank": first_match,
    }


def _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids):
    """Validate shapes and values up front so a bad call fails loudly, never with a number."""
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise BpmError(f"distance matrix must be 2-D (queries x gallery), got shape {dist.shape}")
    if not (np.issubdtype(dist.dtype, np.floating) or np.issubdtype(dist.dtype, np.integer)):
        raise BpmError(f"distance matrix must be numeric, got dtype {dist.dtype}")
    if dist.dtype not in (np.float32, np.float64):
        dist = dist.astype(np.float64)
    arrays = {}
    for name, values in (("q_pids", q_pids), ("g_pids", g_pids), ("q_camids", q_camids), ("g_camids", g_camids)):
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise BpmError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise BpmError(f"{name} must hold integers, got dtype {arr.dtype}")
        arrays[name] = arr.astype(np.int64)
    num_q, num_g = dist.shape
    if num_g == 0 or len(arrays["g_pids"]) == 0:
        raise BpmError("evaluation: the gallery is empty; nothing to rank against")
    if num_q == 0 or len(arrays["q_pids"]) == 0:
        raise BpmError("evaluation: there are no queries")
    for name, expected in (("q_pids", num_q), ("q_camids", num_q), ("g_pids", num_g), ("g_camids", num_g)):
        if len(arrays[name]) != expected:
            raise BpmError(
                f"evaluation: {name} has {len(arrays[name])} entries but the distance matrix "
                f"has shape {dist.shape} (queries x gallery)"
            )
    return dist, arrays["q_pids"], arrays["g_pids"], arrays["q_camids"], arrays["g_camids"]


def _match_structure(qp, gp, qc, gc):
    """Flat (query row, gallery column) pairs of true matches and of same-id same-camera entries.

    Groups the gallery by id once, so the cost is the number of same-id pairs, not Q x G.
    Pairs come out sorted by row, then by column.
    """
    order = np.argsort(gp, kind="stable")
    sorted_pids = gp[order]
    start = np.searchsorted(sorted_pids, qp, side="left")
    count = np.searchsorted(sorted_pids, qp, side="right") - start
    count[qp == JUNK_PID] = 0
    rows = np.repeat(np.arange(len(qp)), count)
    offsets = np.arange(rows.size) - np.repeat(np.cumsum(count) - count, count)
    cols = order[np.repeat(start, count) + offsets]
    same_cam = gc[cols] == qc[rows]
    return rows[~same_cam], cols[~same_cam], rows[same_cam], cols[same_cam]


def _positive_ranks(dist, pos_r, pos_c, inv_r, inv_c, junk_cols) -> np.ndarray:
    """0-based rank of every true match among the valid gallery entries of its query.

    Returns an array aligned with ``pos_r``/``pos_c``. Chunks of query rows are independent and
    run on up to ``_MAX_THREADS`` threads (NumPy releases the GIL in the heavy steps); results
    and errors are collected in chunk order, so the outcome does not depend on the threads.
    """
    num_q, num_g = dist.shape
    col_bits = max(1, int(num_g - 1).bit_length())
    rows_per_chunk = max(1, min(num_q, _CHUNK_ELEMENTS // num_g))
    ranks = np.empty(pos_r.size, dtype=np.int64)
    starts = list(range(0, num_q, rows_per_chunk))
    pos_bounds = np.searchsorted(pos_r, np.arange(0, num_q + rows_per_chunk, rows_per_chunk))
    inv_bounds = np.searchsorted(inv_r, np.arange(0, num_q + rows_per_chunk, rows_per_chunk))

    def one_chunk(k: int) -> None:
        s = starts[k]
        block = dist[s : s + rows_per_chunk]
        if not (np.isfinite(block.min()) and np.isfinite(block.max())):  # NaN propagates
            bad = s + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise BpmError(f"distance matrix has NaN or infinite values (first in query row {bad})")
        p0, p1 = pos_bounds[k], pos_bounds[k + 1]
        if p0 == p1:
            return
        i0, i1 = inv_bounds[k], inv_bounds[k + 1]
        ranks[p0:p1] = _chunk_ranks(
            block, pos_r[p0:p1] - s, pos_c[p0:p1], inv_r[i0:i1] - s, inv_c[i0:i1], junk_cols, col_bits
        )

    workers = min(_worker_count(), len(starts))
    if workers <= 1:
        for k in range(len(starts)):
            one_chunk(k)
        return ranks
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one_chunk, k) for k in range(len(starts))]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()
    return ranks


def _worker_count() -> int:
    """Threads for the chunk loop: the cores this process may use, at most ``_MAX_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, cores))


def _chunk_ranks(block, pr, pc, ir, ic, junk_cols, col_bits) -> np.ndarray:
    """Ranks of the true matches ``(pr, pc)`` of one chunk of query rows (see module doc)."""
    rows, num_g = block.shape
    pos_d = block[pr, pc]
    worst = np.full(rows, -np.inf, dtype=block.dtype)
    np.maximum.at(worst, pr, pos_d)
    keep = block <= worst[:, None]
    keep[ir, ic] = False
    if junk_cols.size:
        keep[:, junk_cols] = False
    flat = np.flatnonzero(keep)
    vals = block.reshape(-1).take(flat)
    if flat.size < _ROW_SORT_MIN_KEPT * rows:
        return _key_sort_ranks(flat, vals, num_g, rows, pr, pc, pos_d, col_bits)
    return _row_sort_ranks(block, keep, flat, vals, pr, pc, pos_d)


def _key_sort_ranks(flat, vals, num_g, rows, pr, pc, pos_d, col_bits) -> np.ndarray:
    """Few kept entries: one sort of ``(row, distance, gallery index)`` keys for the chunk."""
    kr, kc = np.divmod(flat, num_g)
    if vals.dtype == np.float32:
        value_keys, pos_value_keys, value_bits = _float32_keys(vals), _float32_keys(pos_d), 32
    else:
        uniq = np.unique(vals)
        value_keys = np.searchsorted(uniq, vals).astype(np.uint64)
        pos_value_keys = np.searchsorted(uniq, pos_d).astype(np.uint64)
        value_bits = max(1, int(uniq.size).bit_length())
    if (rows - 1).bit_length() + value_bits + col_bits > 64:
        raise AssertionError("chunk too large for 64-bit rank keys")
    shift_r = np.uint64(value_bits + col_bits)
    shift_v = np.uint64(col_bits)
    keys = (kr.astype(np.uint64) << shift_r) | (value_keys << shift_v) | kc.astype(np.uint64)
    keys.sort()
    pos_keys = (pr.astype(np.uint64) << shift_r) | (pos_value_keys << shift_v) | pc.astype(np.uint64)
    row_start = np.concatenate(([0], np.cumsum(np.bincount(kr, minlength=rows))))
    return np.searchsorted(keys, pos_keys) - row_start[pr]


def _row_sort_ranks(block, keep, flat, vals, pr, pc, pos_d) -> np.ndarray:
    """Many kept entries: sort each row's kept *distances* in place (NumPy's SIMD sort; no keys
    to build) and count, by binary search, the kept entries strictly below each true match.
    Where another kept entry has exactly a true match's distance, the entries tied with it at
    a smaller gallery index are counted and added (ties broken by gallery index).
    """
    rows, num_g = block.shape
    seg = np.searchsorted(flat, np.arange(rows + 1) * num_g)
    pos_bounds = np.searchsorted(pr, np.arange(rows + 1))
    seg_list, pos_list = seg.tolist(), pos_bounds.tolist()
    ranks = np.empty(pr.size, dtype=np.int64)
    for r in np.flatnonzero(pos_bounds[1:] > pos_bounds[:-1]).tolist():
        a, b = pos_list[r], pos_list[r + 1]
        row_vals = vals[seg_list[r] : seg_list[r + 1]]
        row_vals.sort()
        ranks[a:b] = row_vals.searchsorted(pos_d[a:b], side="left")
    # The kept entries equal to a true match sit right after position ``rank`` of its sorted
    # row, the match itself among them; a second one means a tie.
    after = seg[pr] + ranks + 1
    tied = after < seg[pr + 1]
    tied[tied] = vals[after[tied]] == pos_d[tied]
    for r in np.unique(pr[tied]).tolist():
        sel = pos_list[r] + np.flatnonzero(tied[pos_list[r] : pos_list[r + 1]])
        row = block[r]
        equal = np.flatnonzero(keep[r] & np.isin(row, pos_d[sel]))  # ascending gallery index
        order = np.argsort(row[equal], kind="stable")  # by distance, then gallery index
        place = np.empty_like(order)
        place[order] = np.arange(order.size)
        first = np.searchsorted(row[equal][order], pos_d[sel], side="left")
        ranks[sel] += place[np.searchsorted(equal, pc[sel])] - first
    return ranks


def _float32_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving unsigned integer image of float32 values (-0.0 folded onto +0.0)."""
    bits = (values + np.float32(0.0)).view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    keys = np.where(negative, ~bits, bits | np.uint32(0x80000000))
    return keys.astype(np.uint64)


def _ap_and_inp(pos_r, ranks, num_q, ap_definition):
    """Per-query AP and INP from the 0-based ranks of the true matches (any order)."""
    order = np.lexsort((ranks, pos_r))
    rows, position = pos_r[order], ranks[order].astype(np.float64) + 1.0
    n_good = np.bincount(rows, minlength=num_q)
    first_of_row = np.repeat(np.cumsum(n_good) - n_good, n_good)
    hit = np.arange(rows.size) - first_of_row + 1.0
    precision = hit / position
    if ap_definition == "market_matlab":
        previous = np.ones_like(precision)
        later = position > 1
        previous[later] = (hit[later] - 1.0) / (position[later] - 1.0)
        precision = (previous + precision) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_q_ap = np.bincount(rows, weights=precision, minlength=num_q) / n_good
        last = np.zeros(num_q)
        np.maximum.at(last, rows, position)
        per_q_inp = n_good / last
    return per_q_ap, per_q_inp


def _cmc(first_match_1based: np.ndarray, max_rank: int) -> np.ndarray:
    """Fraction of valid queries whose first true match is within the top k, k = 1..max_rank."""
    hist = np.bincount(first_match_1based[first_match_1based <= max_rank] - 1, minlength=max_rank)
    return np.cumsum(hist[:max_rank]) / float(first_match_1based.size)


def single_shot_draws(gp, pos_r, pos_c, rng):
    """Yield ``CUHK03_DRAWS`` draws ``(kept, rows, cols)`` of the single-gallery-shot protocol.

    A draw gives every gallery image a random priority. ``kept`` (sorted gallery indices) holds
    the lowest-priority image of every identity (junk excluded); for each valid query row in
    ``rows`` its own identity is instead represented by ``cols``, its lowest-priority *true
    match* (other camera), so every identity contributes exactly one image per query.
    """
    gallery = np.flatnonzero(gp != JUNK_PID)
    for _ in range(CUHK03_DRAWS):
        priority = rng.random(gp.size)
        by_id = gallery[np.lexsort((priority[gallery], gp[gallery]))]
        first = np.concatenate(([True], gp[by_id][1:] != gp[by_id][:-1]))
        pick = np.lexsort((priority[pos_c], pos_r))
        pick = pick[np.concatenate(([True], pos_r[pick][1:] != pos_r[pick][:-1]))]
        yield np.sort(by_id[first]), pos_r[pick], pos_c[pick]


def _cuhk03_draws(dist, gp, pos_r, pos_c, num_q, max_rank, ap_definition, seed):
    """Average CMC/AP/INP over the single-shot draws; the true match's rank in a draw is the
    number of kept images of other identities ahead of it (distance, then gallery index)."""
    valid = np.bincount(pos_r, minlength=num_q) > 0
    cmc = np.zeros(max_rank)
    ap_sum = np.zeros(num_q)
    inp_sum = np.zeros(num_q)
    for kept, rows, cols in single_shot_draws(gp, pos_r, pos_c, np.random.default_rng(seed)):
        ranks = np.empty(rows.size, dtype=np.int64)
        step = max(1, _CHUNK_ELEMENTS // max(1, kept.size))
        for s in range(0, rows.size, step):
            r, c = rows[s : s + step], cols[s : s + step]
            sub = dist[r[:, None], kept[None, :]]
            d = dist[r, c][:, None]
            ahead = (sub < d) | ((sub == d) & (kept[None, :] < c[:, None]))
            ahead &= gp[kept][None, :] != gp[c][:, None]
            ranks[s : s + step] = ahead.sum(axis=1)
        draw_ap, draw_inp = _ap_and_inp(rows, ranks, num_q, ap_definition)
        ap_sum[rows] += draw_ap[rows]
        inp_sum[rows] += draw_inp[rows]
        cmc += _cmc(ranks + 1, max_rank)
    per_q_ap = np.where(valid, ap_sum / CUHK03_DRAWS, np.nan)
    per_q_inp = np.where(valid, inp_sum / CUHK03_DRAWS, np.nan)
    return cmc / CUHK03_DRAWS, per_q_ap, per_q_inp
