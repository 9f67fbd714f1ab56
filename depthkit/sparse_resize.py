"""Sparse depth scattered to another resolution point by point (:func:`depthkit.io.resize_sparse` checks the map and
says what happened; ``depthkit run --resize-sparse`` and the complete stage's working size use it).

Each measured point goes to the pixel holding its scaled centre, so it stays one pixel: image interpolation would
smear it into a block when upsampling and average it with the missing zeros around it when downsampling.
Downsampling can put several points on one pixel; the nearest depth is kept (a nearer surface hides what is behind
it), and :func:`scatter_points` counts the points merged so.
"""

from __future__ import annotations

import numpy as np

__all__ = ["scatter_points"]


def scatter_points(sparse: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """``sparse`` (HxW metres, 0 = missing; checked by the caller) scattered to ``shape`` = (H', W'): pixel (r, c)
    lands on ``(floor((r + 0.5) * H'/H), floor((c + 0.5) * W'/W))``. Returns the H'xW' float32 metres and how many
    measured points fell on a pixel shared with another point (each such pixel keeps its nearest depth)."""
    h, w = sparse.shape
    oh, ow = int(shape[0]), int(shape[1])
    ys, xs = np.nonzero(sparse > 0)
    ty = np.clip(np.floor((ys + 0.5) * oh / h), 0, oh - 1).astype(np.int64)
    tx = np.clip(np.floor((xs + 0.5) * ow / w), 0, ow - 1).astype(np.int64)
    vals, target = sparse[ys, xs], ty * ow + tx
    order = np.lexsort((vals, target))  # by target pixel, nearest first within each
    vals, target = vals[order], target[order]
    first = np.ones(target.size, bool)
    first[1:] = target[1:] != target[:-1]  # the nearest point of each target pixel
    out = np.zeros((oh, ow), np.float32)
    out.flat[target[first]] = vals[first]  # one value per pixel: numpy leaves a repeated index's order open
    per_pixel = np.diff(np.append(np.flatnonzero(first), target.size))
    return out, int(per_pixel[per_pixel > 1].sum())
