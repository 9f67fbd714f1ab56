"""The search behind :func:`depthkit.data.sparse.seen_by_right_camera`: which pixels something nearer covers.

Split from :mod:`depthkit.data.sparse`, whose function states the rule. Comparing every pixel with every pixel up
to the disparity range to its right (:func:`_covered_by_scan`) costs one pass over the image per pixel of that range.
Instead each row's covers are put in buckets by the whole pixel of the right image where they land, and a pixel is
compared only with the covers in its own bucket (spans, filed under every bucket they cross) or in the three around
it (lone pixels): a superset of those that can hide it, since a lone pixel within half a pixel of x lands within one
pixel of it and ``floor`` keeps order. Each comparison is the rule's own expression, operation for operation, so the
result is the same bit for bit; only the number of comparisons changes (a few per pixel on a natural scene). Where
buckets are crowded (a surface seen edge-on by the right camera lands whole rows on one pixel) the scan is cheaper,
and a block of rows uses it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["covered"]

_BLOCK_PIXELS = 1 << 18  # pixels per block of rows, and candidate pairs per batch: bounds the memory
_PAIR_COST = 5.0  # time of one candidate pair over that of one pixel in one scan pass (measured: 3.5-5.5)


def covered(x: np.ndarray, disp: np.ndarray, seen: np.ndarray, alone: np.ndarray, span: np.ndarray, reach: int,
            tolerance_px: float) -> np.ndarray:
    """HxW bool: the ``seen`` pixels that a lone pixel or a span to their right covers, by the rule of
    :func:`~depthkit.data.sparse.seen_by_right_camera` (``x`` where each pixel lands, ``alone`` the surface pixels in
    no span, ``span`` HxW-1 the pairs of row neighbours of one surface, ``reach`` the farthest column offset)."""
    h, w = x.shape
    hidden = np.zeros((h, w), bool)
    rows = max(1, _BLOCK_PIXELS // w)
    for r in range(0, h, rows):
        b = slice(r, r + rows)
        hidden[b] = _covered_block(x[b], disp[b], seen[b], alone[b], span[b], reach, tolerance_px)
    return hidden


def _covered_by_scan(x, disp, alone, span, reach, tolerance_px) -> np.ndarray:
    """The rule as a scan: pixel u against the lone pixel u + k and the span (u + k, u + k + 1), k up to ``reach``."""
    w = x.shape[1]
    hidden = np.zeros(x.shape, bool)
    for k in range(1, reach + 1):  # pixel u + k covering pixel u
        near = (np.abs(x[:, k:] - x[:, :w - k]) <= 0.5) & (disp[:, k:] > disp[:, :w - k] + tolerance_px)
        hidden[:, :w - k] |= alone[:, k:] & near
    for k in range(0, min(reach, w - 2) + 1):  # span (u + k, u + k + 1) covering pixel u
        xu, du = x[:, :w - 1 - k], disp[:, :w - 1 - k]
        xa, xb, da, db = x[:, k:w - 1], x[:, k + 1:], disp[:, k:w - 1], disp[:, k + 1:]
        inside = span[:, k:] & (np.minimum(xa, xb) <= xu) & (xu <= np.maximum(xa, xb))
        t = np.where(inside & (xb != xa), (xu - xa) / np.where(xb != xa, xb - xa, 1.0), 0.0)
        hidden[:, :w - 1 - k] |= inside & (da + t * (db - da) > du + tolerance_px)
    return hidden


def _bucket(x: np.ndarray, w: int) -> np.ndarray:
    """The bucket of each landing position: ``floor(x)`` clipped to [-2, w + 1], shifted to [1, w + 4] (so a bucket's
    neighbours stay in its row's ``w + 6``). Clipping keeps order and never separates neighbours; NaN (never a cover
    nor covered) goes to the lowest."""
    return (np.floor(np.clip(np.nan_to_num(x, nan=-2.0), -2.0, w + 1.0)) + 3).astype(np.intp)


def _index(keys: np.ndarray, n_keys: int):
    """Sort ``keys`` (ints in [0, n_keys)): the order, and ``start`` with ``start[k]:start[k + 1]`` the sorted
    positions holding key k."""
    order = np.argsort(keys, kind="stable")  # nearly sorted already (row-major, landing order): fast
    start = np.zeros(n_keys + 1, np.intp)
    np.cumsum(np.bincount(keys, minlength=n_keys), out=start[1:])
    return order, start


def _pairs(first: np.ndarray, count: np.ndarray):
    """Yield ``(i, j)``: every query ``i`` with every ``j`` in ``first[i]:first[i] + count[i]``, in batches of about
    ``_BLOCK_PIXELS`` pairs."""
    end = np.cumsum(count)
    i0 = 0
    while i0 < len(count):
        done = end[i0 - 1] if i0 else 0
        i1 = max(i0 + 1, int(np.searchsorted(end, done + _BLOCK_PIXELS, side="right")))
        n = count[i0:i1]
        before = end[i0:i1] - n - done  # pairs of the batch before query i's
        i = np.repeat(np.arange(i0, i1), n)
        yield i, np.arange(int(n.sum())) + np.repeat(first[i0:i1] - before, n)
        i0 = i1


def _covered_block(x2, disp2, seen, alone, span, reach, tolerance_px) -> np.ndarray:
    h, w = x2.shape
    n_b = w + 6  # buckets per row
    x, d = x2.ravel(), disp2.ravel()
    key = np.repeat(np.arange(h) * n_b, w) + _bucket(x, w)  # (row, bucket) as one int, in row order
    finite = np.isfinite(x)
    u = np.flatnonzero(seen.ravel() & finite)  # the pixels that can be covered (an infinite x never is)
    # lone pixels, by bucket; u meets those of its bucket and the two around it
    v = np.flatnonzero(alone.ravel() & finite)
    order, start = _index(key[v], h * n_b)
    v = v[order]
    v_first = start[key[u] - 1]
    v_count = start[key[u] + 2] - v_first
    # spans (a, a + 1), filed under every bucket from their left end's to their right end's (one to three for a
    # surface: its ends land at most ~2 px apart); u meets those filed under its bucket
    row, col = np.nonzero(span)
    a = row * w + col
    lo = _bucket(np.minimum(x[a], x[a + 1]), w)
    n = _bucket(np.maximum(x[a], x[a + 1]), w) - lo + 1
    filed = np.repeat(row * n_b + lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()))  # each bucket of each span
    order, start = _index(filed, h * n_b)
    a = np.repeat(a, n)[order]
    a_first = start[key[u]]
    a_count = start[key[u] + 1] - a_first
    if _PAIR_COST * (v_count.sum() + a_count.sum()) > 2 * h * w * (reach + 1):  # crowded: the scan is cheaper
        return _covered_by_scan(x2, disp2, alone, span, reach, tolerance_px) & seen

    hidden = np.zeros(h * w, bool)
    for i, j in _pairs(v_first, v_count):  # lone pixel v = u + k, 1 <= k <= reach
        ui, vj = u[i], v[j]
        keep = (vj > ui) & (vj - ui <= reach)
        ui, vj = ui[keep], vj[keep]
        near = (np.abs(x[vj] - x[ui]) <= 0.5) & (d[vj] > d[ui] + tolerance_px)
        hidden[ui[near]] = True
    for i, j in _pairs(a_first, a_count):  # span (a, a + 1), a = u + k, 0 <= k <= min(reach, w - 2)
        ui, aj = u[i], a[j]
        keep = (aj >= ui) & (aj - ui <= min(reach, w - 2))
        ui, aj = ui[keep], aj[keep]
        xu, du = x[ui], d[ui]
        xa, xb, da, db = x[aj], x[aj + 1], d[aj], d[aj + 1]
        inside = (np.minimum(xa, xb) <= xu) & (xu <= np.maximum(xa, xb))
        t = np.where(inside & (xb != xa), (xu - xa) / np.where(xb != xa, xb - xa, 1.0), 0.0)
        hidden[ui[inside & (da + t * (db - da) > du + tolerance_px)]] = True
    return hidden.reshape(h, w)
