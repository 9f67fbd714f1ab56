"""Sparse depth scattered to another resolution point by point (:func:`depthkit.io.resize_sparse` checks the map and
says what happened; ``depthkit run --resize-sparse`` and the complete stage's working size use it).

Each measured point goes to the pixel holding its scaled centre, so it stays one pixel: image interpolation would
smear it into a block when upsampling and average it with the missing zeros around it when downsampling.
Downsampling can put several points on one pixel; the nearest depth is kept (a nearer surface hides what is behind
it), and :func:`scatter_points` counts the points merged so.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["map_to_resized", "scatter_points", "target_size"]


def _pixel_indices(values, what: str) -> np.ndarray:
    """``values`` as int64 pixel indices; floats are accepted only when whole (never truncated silently)."""
    a = np.asarray(values)
    if not np.issubdtype(a.dtype, np.integer):
        whole = np.isfinite(a) & (a == np.floor(a)) if np.issubdtype(a.dtype, np.floating) else np.zeros(a.shape, bool)
        if not whole.all():
            bad = a[~whole].ravel()[0]
            bad = bad.item() if isinstance(bad, np.generic) else bad
            raise ValueError(f"{what} must be whole pixel indices; received {a.dtype} values such as {bad!r}. Pass "
                             "integer row and column indices.")
    return a.astype(np.int64)


def map_to_resized(rows, cols, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resized-image pixel that contains the centre of each input pixel.

    Pixel (r, c) of an HxW image has its centre at (r + 0.5, c + 0.5); scaled to H'xW' it falls in pixel
    ``floor((r + 0.5) * H'/H)``, likewise for columns, computed exactly in integers as ``(2r + 1) H' // 2H`` (in
    floating point a centre landing exactly on a pixel border can round to the pixel before it). When H' >= H and
    W' >= W this map is injective (distinct input pixels never share a target). ``rows`` and ``cols`` are integer
    pixel indices; returns int64 arrays (rows', cols').
    """
    (h, w), (h2, w2) = (int(v) for v in src_hw), (int(v) for v in dst_hw)
    r = (2 * _pixel_indices(rows, "rows") + 1) * h2 // (2 * h)
    c = (2 * _pixel_indices(cols, "cols") + 1) * w2 // (2 * w)
    return np.clip(r, 0, h2 - 1), np.clip(c, 0, w2 - 1)


def scatter_points(sparse: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """``sparse`` (HxW metres, 0 = missing; checked by the caller) scattered to ``shape`` = (H', W'): pixel (r, c)
    lands on the pixel holding its scaled centre (:func:`map_to_resized`). Returns the H'xW' float32 metres and how many
    measured points fell on a pixel shared with another point (each such pixel keeps its nearest depth)."""
    h, w = sparse.shape
    oh, ow = int(shape[0]), int(shape[1])
    ys, xs = np.nonzero(sparse > 0)
    ty, tx = map_to_resized(ys, xs, (h, w), (oh, ow))
    vals, target = sparse[ys, xs], ty * ow + tx
    order = np.lexsort((vals, target))  # by target pixel, nearest first within each
    vals, target = vals[order], target[order]
    first = np.ones(target.size, bool)
    first[1:] = target[1:] != target[:-1]  # the nearest point of each target pixel
    out = np.zeros((oh, ow), np.float32)
    out.flat[target[first]] = vals[first]  # one value per pixel: numpy leaves a repeated index's order open
    per_pixel = np.diff(np.append(np.flatnonzero(first), target.size))
    return out, int(per_pixel[per_pixel > 1].sum())


def target_size(shape, what: str) -> tuple[int, int]:
    """:func:`depthkit.io.resize_sparse`'s ``shape`` as (H', W') pixels: a pair of whole numbers >= 1, or an image's
    (H', W', C) shape; anything else (a string, one number, 0, a fraction) is a ``ValueError`` saying what was
    received."""
    ok = isinstance(shape, (tuple, list, np.ndarray)) and np.ndim(shape) == 1 and len(shape) in (2, 3)
    size = tuple(shape[:2]) if ok else ()
    ok = ok and all(isinstance(v, (int, np.integer, float, np.floating)) and not isinstance(v, (bool, np.bool_))
                    and math.isfinite(v) and v == int(v) and v >= 1 for v in size)
    if not ok:
        raise ValueError(f"the size to scatter {what} to must be (height, width) in whole pixels >= 1 (or an image's "
                         f"shape), e.g. image.shape[:2]; received {shape!r}.")
    return int(size[0]), int(size[1])
