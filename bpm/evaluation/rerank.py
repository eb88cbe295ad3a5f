"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) without dense (query+gallery)^2 work matrices.

The published algorithm, on the combined matrix D = [[q_q, q_g], [q_g^T, g_g]] of N = q + g
images (the one it is usually shipped as, which squares the given distances):

1. T = (D^2 / column max of D^2)^T, in float32;
2. initial ranking of every row of T (neighbour lists);
3. R(i, k1): the k1-reciprocal neighbours of i (j in the first k1+1 of i and i in the first
   k1+1 of j); expanded by R(c, round(k1/2)) of each member c whose set overlaps R(i, k1) by
   more than 2/3 of its size;
4. V[i, j] = exp(-T[i, j]) normalised over the expanded set, zero elsewhere;
5. query expansion: V[i] = mean of V over the first k2 neighbours of i;
6. Jaccard distance 1 - S / (2 - S), S[i, m] = sum_k min(V[i, k], V[m, k]);
7. result = (1 - lambda) * Jaccard + lambda * T, query rows x gallery columns.

Why this implementation is cheap: only the first max(k1+1, k2) neighbours of each row are
needed (found block by block with ``argpartition``, exact ties by index), V has at most a few
hundred non-zeros per row (kept sparse), and S is only needed for query x gallery pairs that
share a non-zero column, so it is computed by joining the sparse rows on their columns. Nothing
of size N x N is ever allocated; the inputs are read in blocks.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bpm.errors import BpmError

_BLOCK_ELEMENTS = 1 << 23
_PAIRS_PER_STEP = 1 << 23


def re_ranking(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Return the re-ranked (q, g) float32 distance matrix.

    Pass plain (not squared) distances, as the original callers did: they are squared here.
    The q_q and g_g matrices need not be symmetric; columns are used as the algorithm says.

    Args:
        q_g_dist: query-gallery distances, ``(q, g)``.
        q_q_dist: query-query distances, ``(q, q)``.
        g_g_dist: gallery-gallery distances, ``(g, g)``.
        k1: the k of the k-reciprocal neighbour sets.
        k2: neighbours averaged in the local query expansion.
        lambda_value: weight of the original distance against the Jaccard distance.

    Returns:
        The re-ranked ``(q, g)`` float32 distances.
    """
    qg, qq, gg = _check(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)
    combined = _Combined(qg, qq, gg)
    num = combined.num
    k_top = min(max(k1 + 1, k2), num)
    neighbours = np.empty((num, k_top), dtype=np.int64)
    block_rows = max(1, _BLOCK_ELEMENTS // num)
    for s in range(0, num, block_rows):
        stop = min(num, s + block_rows)
        neighbours[s:stop] = _smallest_k(combined.t_rows(s, stop), k_top)

    members = _expanded_sets(neighbours, k1)
    v_rows, v_cols, v_vals = _weights(combined, members)
    if k2 != 1:
        v_rows, v_cols, v_vals = _query_expansion(v_rows, v_cols, v_vals, neighbours[:, :k2], num)
    out = _min_overlap(v_rows, v_cols, v_vals, combined.num_q, num)
    step = max(1, _BLOCK_ELEMENTS // max(1, combined.num_g))
    for s in range(0, combined.num_q, step):
        overlap = out[s : s + step]
        jaccard = 1.0 - overlap / (2.0 - overlap)
        out[s : s + step] = jaccard * (1.0 - lambda_value) + combined.t_query_gallery(s, s + step) * lambda_value
    return out


def _check(qg, qq, gg, k1, k2, lambda_value):
    """Shapes, finiteness and parameter ranges; a wrong call must fail, not re-rank garbage."""
    arrays = []
    for name, value in (("q_g_dist", qg), ("q_q_dist", qq), ("g_g_dist", gg)):
        arr = np.asarray(value)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise BpmError(f"re-ranking: {name} must be a 2-D numeric matrix, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise BpmError(f"re-ranking: {name} contains NaN or infinite values")
        arrays.append(arr)
    qg, qq, gg = arrays
    nq, ng = qg.shape
    if nq == 0 or ng == 0 or qq.shape != (nq, nq) or gg.shape != (ng, ng):
        raise BpmError(
            f"re-ranking: shapes do not fit: q_g {qg.shape}, q_q {qq.shape} (want ({nq}, {nq})), "
            f"g_g {gg.shape} (want ({ng}, {ng})), none may be empty"
        )
    if int(k1) < 1 or int(k2) < 1 or not 0.0 <= float(lambda_value) <= 1.0:
        raise BpmError(f"re-ranking: need k1 >= 1, k2 >= 1, 0 <= lambda <= 1; got {k1}, {k2}, {lambda_value}")
    return qg, qq, gg


class _Combined:
    """Read-only view of T = (D^2 / colmax)^T for D = [[qq, qg], [qg^T, gg]], never materialised."""

    def __init__(self, qg: np.ndarray, qq: np.ndarray, gg: np.ndarray) -> None:
        self.qg, self.qq, self.gg = qg, qq, gg
        self.num_q, self.num_g = qg.shape
        self.num = self.num_q + self.num_g
        abs_max = np.concatenate(
            [
                np.maximum(_col_abs_max(qq), _col_abs_max(qg.T)),
                np.maximum(_col_abs_max(qg), _col_abs_max(gg)),
            ]
        )
        # A column of zeros (all features identical, e.g. a collapsed model) would give 0/0 = NaN;
        # dividing by 1 instead keeps the zeros, matching the limit of the normalisation.
        colmax = _square(abs_max)
        self.colmax = np.where(colmax > 0, colmax, 1).astype(colmax.dtype)

    def t_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 of T (= columns of D), float32."""
        q = self.num_q
        out = np.empty((stop - start, self.num), dtype=np.float32)
        q0, q1 = min(start, q), min(stop, q)
        g0, g1 = max(start, q) - q, max(stop, q) - q
        nq = q1 - q0
        if nq:
            out[:nq, :q] = _square(self.qq[:, q0:q1].T)
            out[:nq, q:] = _square(self.qg[q0:q1])
        if g1 > g0:
            out[nq:, :q] = _square(self.qg[:, g0:g1].T)
            out[nq:, q:] = _square(self.gg[:, g0:g1].T)
        out /= self.colmax[start:stop, None]
        return out

    def t_pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """T[rows, cols] for arbitrary index pairs (T[i, j] = D[j, i]^2 / colmax[i])."""
        q = self.num_q
        d = np.empty(rows.size, dtype=np.float32)
        for col_q in (True, False):
            for row_q in (True, False):
                sel = ((cols < q) == col_q) & ((rows < q) == row_q)
                j, i = cols[sel], rows[sel]
                if col_q and row_q:
                    d[sel] = _square(self.qq[j, i])
                elif col_q:
                    d[sel] = _square(self.qg[j, i - q])
                elif row_q:
                    d[sel] = _square(self.qg[i, j - q])
                else:
                    d[sel] = _square(self.gg[j - q, i - q])
        return d / self.colmax[rows]

    def t_query_gallery(self, start: int, stop: int) -> np.ndarray:
        """T[start:stop, q:] for query rows: qg^2 / colmax of each query's column."""
        stop = min(stop, self.num_q)
        return _square(self.qg[start:stop]) / self.colmax[start:stop, None]


def _square(values: np.ndarray) -> np.ndarray:
    """Square in the input precision, then float32: the arithmetic the published code does."""
    return np.square(values).astype(np.float32, copy=False)


def _col_abs_max(matrix: np.ndarray) -> np.ndarray:
    """max |x| per column, in row blocks (no full-size temporary)."""
    out = np.zeros(matrix.shape[1], dtype=matrix.dtype)
    step = max(1, _BLOCK_ELEMENTS // max(1, matrix.shape[1]))
    for s in range(0, matrix.shape[0], step):
        block = matrix[s : s + step]
        out = np.maximum(out, np.maximum(block.max(axis=0), -block.min(axis=0)))
    return out


def _smallest_k(block: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest entries of each row, ordered by (value, index), exactly.

    ``argpartition`` picks arbitrarily among values tied at the k-th place, so rows with such a
    tie fall back to a stable full sort (rare on real distances).
    """
    n = block.shape[1]
    if k >= n:
        return np.argsort(block, axis=1, kind="stable")[:, :k]
    part = np.argpartition(block, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(block, part, axis=1)
    order = np.lexsort((part, vals), axis=1)
    part = np.take_along_axis(part, order, axis=1)
    kth = np.take_along_axis(block, part[:, -1:], axis=1)
    tied = np.flatnonzero(np.count_nonzero(block <= kth, axis=1) > k)
    for r in tied:
        part[r] = np.argsort(block[r], kind="stable")[:k]
    return part


def _reciprocal(neighbours: np.ndarray, k: int) -> np.ndarray:
    """R(i, k) as an (N, k+1) array in rank order, -1 where j is not k-reciprocal."""
    forward = neighbours[:, : k + 1]
    me = np.arange(neighbours.shape[0])[:, None]
    keep = np.empty(forward.shape, dtype=bool)
    step = max(1, _BLOCK_ELEMENTS // (forward.shape[1] ** 2))
    for s in range(0, forward.shape[0], step):
        back = neighbours[forward[s : s + step], : k + 1]
        keep[s : s + step] = (back == me[s : s + step, :, None]).any(axis=2)
    return np.where(keep, forward, -1)


def _expanded_sets(neighbours: np.ndarray, k1: int) -> np.ndarray:
    """Expanded k-reciprocal sets as a padded (N, width) array of sorted unique indices, -1 pad."""
    full = _reciprocal(neighbours, k1)
    half = _reciprocal(neighbours, int(np.around(k1 / 2.0)))
    num, width = full.shape
    out = []
    step = max(1, _BLOCK_ELEMENTS // (width * width * half.shape[1]))
    for s in range(0, num, step):
        f = full[s : s + step]
        cand = np.where(f[:, :, None] >= 0, half[np.maximum(f, 0)], -1)
        inside = ((cand[:, :, :, None] == f[:, None, None, :]) & (cand[:, :, :, None] >= 0)).any(axis=3)
        size = (cand >= 0).sum(axis=2)
        accept = inside.sum(axis=2) > 2.0 / 3.0 * size
        cand = np.where(accept[:, :, None], cand, -1).reshape(f.shape[0], -1)
        merged = np.sort(np.concatenate([f, cand], axis=1), axis=1)
        merged[:, 1:][merged[:, 1:] == merged[:, :-1]] = -1
        out.append(merged)
    return np.concatenate(out)


def _weights(combined: _Combined, members: np.ndarray):
    """Sparse V: exp(-T) over each expanded set, normalised per row (COO sorted by row, col)."""
    rows, slots = np.nonzero(members >= 0)
    cols = members[rows, slots]
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    w = np.exp(-combined.t_pairs(rows, cols))
    total = np.bincount(rows, weights=w, minlength=combined.num).astype(np.float32)
    return rows, cols, (w / total[rows]).astype(np.float32)


def _query_expansion(rows, cols, vals, first_k2: np.ndarray, num: int):
    """V_qe[i] = mean of the sparse rows V[first_k2[i]]; returns COO sorted by row, col."""
    counts = np.bincount(rows, minlength=num)
    starts = np.cumsum(counts) - counts
    src = first_k2.reshape(-1)
    owner = np.repeat(np.arange(num), first_k2.shape[1])
    take = counts[src]
    owner = np.repeat(owner, take)
    pos = np.repeat(starts[src], take) + (np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take))
    keys = owner * num + cols[pos]
    uniq, inverse = np.unique(keys, return_inverse=True)
    summed = np.bincount(inverse, weights=vals[pos], minlength=uniq.size)
    return uniq // num, uniq % num, (summed / first_k2.shape[1]).astype(np.float32)


def _min_overlap(rows, cols, vals, num_q: int, num: int) -> np.ndarray:
    """S[i, m] = sum_k min(V[i, k], V[m, k]) for query rows i and gallery rows m, dense (q, g).

    Joins the query entries with the gallery entries sharing their column k, in steps of at
    most ``_PAIRS_PER_STEP`` pairs so memory stays bounded.
    """
    num_g = num - num_q
    is_q = rows < num_q
    q_rows, q_cols, q_vals = rows[is_q], cols[is_q], vals[is_q]
    g_order = np.argsort(cols[~is_q], kind="stable")
    g_rows, g_cols, g_vals = rows[~is_q][g_order] - num_q, cols[~is_q][g_order], vals[~is_q][g_order]
    col_counts = np.bincount(g_cols, minlength=num)
    col_starts = np.cumsum(col_counts) - col_counts
    partners = col_counts[q_cols]
    out = np.zeros((num_q, num_g), dtype=np.float32)
    row_pairs = np.bincount(q_rows, weights=partners, minlength=num_q)
    row_entry_start = np.searchsorted(q_rows, np.arange(num_q + 1))
    r0 = 0
    while r0 < num_q:
        r1 = r0 + 1
        budget = row_pairs[r0]
        while r1 < num_q and budget + row_pairs[r1] <= _PAIRS_PER_STEP:
            budget += row_pairs[r1]
            r1 += 1
        e0, e1 = row_entry_start[r0], row_entry_start[r1]
        take = partners[e0:e1]
        entry = np.repeat(np.arange(e0, e1), take)
        pos = np.repeat(col_starts[q_cols[e0:e1]], take) + (
            np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        )
        mins = np.minimum(q_vals[entry], g_vals[pos])
        flat = (q_rows[entry] - r0) * num_g + g_rows[pos]
        out[r0:r1] = np.bincount(flat, weights=mins, minlength=(r1 - r0) * num_g).reshape(r1 - r0, num_g)
        r0 = r1
    return out
