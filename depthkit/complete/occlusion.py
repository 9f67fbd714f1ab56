"""Stereo occlusion fill (a depthkit option of the learned ``complete`` stage, ``occlusion_fill``; off by default).

A rectified stereo matcher measures a pixel of its reference image only where the other camera sees it too. Beside
every nearer surface a strip of the farther one is seen by the reference camera alone: with the left image as the
reference it lies to the *left* of the nearer surface (the right camera, shifted right, looks past the surface's left
edge), and its pixels are missing from the map (the matcher's left-right check removes them). So in a row of a
left-reference map, an unmeasured run whose left bound (the nearest measured pixel to its left) is farther than its
right bound is, most likely, background hidden from the other camera: its depth is the left bound's.
:func:`fill_occlusions` gives every such run that depth; other unmeasured pixels keep the completion's.

Why an option and not the default: the rule knows the sensor. A ToF or structured-light frame's holes are not
one-sided (shadows on either side, absorbing patches across edges): on the synthetic val split the same rule made the
ToF-holes pattern 11.9 % worse, while on the stereo pattern it gained 9.8 % and on a real stereo matcher's map (OpenCV's
semi-global matcher on the Middlebury Aloe pair, ``benchmarks/real_frame.py --patterns stereo_sgbm``) 17.6 %
(checkpoints/README.md, session 16). No per-frame statistic measured on val tells the two apart, so the user says it:
``--option complete.occlusion_fill=left`` for a left-reference disparity or depth map (the usual one), ``right`` for
a right-reference one. The embedded default runs :mod:`depthkit.complete.hole_fill` instead, which needs no sensor
knowledge (it splits each hole where the image's colours change) but leaves runs alone where the colours cannot
tell, as on Aloe's textured leaves; with both on, this fill acts first.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OCCLUSION_FILLS", "OCCLUSION_JUMP", "fill_occlusions", "row_bound_index", "row_bounds"]

OCCLUSION_FILLS = (None, "left", "right")
"""Values of the ``occlusion_fill`` option: off, or the side of the stereo pair's reference camera."""
OCCLUSION_JUMP = 0.1
"""A run is an occlusion when its reference-side bound is farther than the other bound by more than this fraction
(10 %: a depth edge, not a slope; on the val stereo scenes 5-50 % gave the same within 0.2 %)."""


def row_bound_index(measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of ``measured`` (HxW bool), the column of the nearest measured pixel at or left of it and at or
    right of it in its row: ``(left, right)``, HxW int each; -1 (left) or W (right) where the row has none on that
    side."""
    h, w = measured.shape
    cols = np.broadcast_to(np.arange(w), (h, w))
    left = np.maximum.accumulate(np.where(measured, cols, -1), axis=1)
    right = np.minimum.accumulate(np.where(measured, cols, w)[:, ::-1], axis=1)[:, ::-1]
    return left, right


def row_bounds(sparse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel, the depth (metres) of the nearest measured pixel to its left and to its right in its row,
    itself included (so a measured pixel is its own bound): ``(left, right)``, HxW float32 each, 0 where the row has
    none on that side. ``sparse``: HxW metres, measured where finite and > 0."""
    sparse = np.asarray(sparse, dtype=np.float32)
    measured = np.isfinite(sparse) & (sparse > 0)
    h, w = sparse.shape
    left_idx, right_idx = row_bound_index(measured)
    rows = np.arange(h)[:, None]
    values = np.where(measured, sparse, 0.0).astype(np.float32)
    left = np.where(left_idx >= 0, values[rows, np.clip(left_idx, 0, w - 1)], 0.0)
    right = np.where(right_idx < w, values[rows, np.clip(right_idx, 0, w - 1)], 0.0)
    return left.astype(np.float32), right.astype(np.float32)


def fill_occlusions(depth: np.ndarray, sparse: np.ndarray, side: str = "left",
                    jump: float = OCCLUSION_JUMP) -> tuple[np.ndarray, np.ndarray]:
    """``depth`` (HxW metres, a completion of ``sparse``) with every unmeasured pixel whose ``side`` bound in its
    row (:func:`row_bounds`) is farther than its other bound by more than ``jump`` (a fraction) set to that bound's
    depth: ``(filled HxW float32, mask HxW bool of the pixels set)``. Measured pixels and pixels bounded on one side
    only are unchanged. ``side``: the stereo pair's reference camera, ``"left"`` or ``"right"``."""
    if side not in ("left", "right"):
        raise ValueError(f"occlusion fill side must be 'left' or 'right' (the stereo pair's reference camera); "
                         f"received {side!r}.")
    if not (isinstance(jump, (int, float)) and jump >= 0):
        raise ValueError(f"occlusion fill jump must be a number >= 0 (a fraction); received {jump!r}.")
    left, right = row_bounds(sparse)
    reference, other = (left, right) if side == "left" else (right, left)
    mask = (other > 0) & (reference > (1.0 + jump) * other)  # a measured pixel is both its bounds: never set
    return np.where(mask, reference, depth).astype(np.float32), mask
