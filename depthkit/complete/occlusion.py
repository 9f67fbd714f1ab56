"""Stereo occlusion fill (a depthkit option of the learned ``complete`` stage, ``occlusion_fill``; off in the stage,
``auto`` in the embedded default's manifest).

A rectified stereo matcher measures a pixel of its reference image only where the other camera sees it too. Beside
every nearer surface a strip of the farther one is seen by the reference camera alone: with the left image as the
reference it lies to the *left* of the nearer surface (the right camera, shifted right, looks past the surface's left
edge), and its pixels are missing from the map (the matcher's left-right check removes them). So in a row of a
left-reference map, an unmeasured run whose left bound (the nearest measured pixel to its left) is farther than its
right bound is, most likely, background hidden from the other camera: its depth is the left bound's.
:func:`fill_occlusions` with ``left`` (or ``right``, for a right-reference map) gives every such run that depth; other
unmeasured pixels keep the completion's.

Told the side, the rule knows the sensor. A ToF or structured-light frame's holes are not one-sided (shadows on either
side, absorbing patches across edges): on the synthetic val split ``left`` made the ToF-holes pattern 11.9 % worse,
while on the stereo pattern it gained 9.8 % and on a real stereo matcher's map (OpenCV's semi-global matcher on the
Middlebury Aloe pair, ``benchmarks/real_frame.py --patterns stereo_sgbm``) 17.6 % (checkpoints/README.md, session
16). The share of holes on either side does not tell the two apart; the widths do (below). The colour-split
:mod:`depthkit.complete.hole_fill` needs no sensor knowledge but leaves runs alone where the colours cannot tell, as
on Aloe's textured leaves; with both on, this fill acts first.

``auto`` finds the reference side from the frame itself (:func:`occlusion_evidence`, session 18). Stereo geometry fixes
an occlusion's width: background and foreground at depths ``far`` and ``near`` leave ``f B (1/near - 1/far)`` pixels
of background unseen, one focal length ``f`` and baseline ``B`` for the whole frame, always beside the foreground on
the reference camera's side. So on that side the widths of the edge-bounded runs follow the bounds' inverse-depth
differences with one factor, over a range of differences; a ToF camera's holes (blobs, two-sided shadows of a fixed
width) do not. A frame whose runs on one side follow that law (:data:`AUTO_MIN_SHARE` of the edge runs' pixels,
across inverse-depth differences spanning :data:`AUTO_MIN_SPAN`, :data:`AUTO_DOMINANCE` times the other side's share)
is taken for a stereo (or projector) map with that reference side, and only its runs that follow the law get the
background's depth (at least :data:`AUTO_MIN_EVIDENCE` of them 2 px or wider: speckles are no evidence). On the val
split it found 12 of 24 stereo frames and none of 72 ToF frames (plain, noisy, speckled), and took the real Aloe
stereo map from 0.8 % to 15.3 % better than ``guided`` (checkpoints/README.md, session 18).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AUTO_DOMINANCE", "AUTO_MIN_EVIDENCE", "AUTO_MIN_RUNS", "AUTO_MIN_SHARE", "AUTO_MIN_SPAN", "AUTO_SLACK_PX",
           "AUTO_TOLERANCE", "DENSE_MIN_MEASURED", "OCCLUSION_FILLS", "OCCLUSION_JUMP", "EdgeRuns", "OcclusionEvidence", "edge_runs",
           "fill_found_runs", "fill_occlusions", "occlusion_evidence", "row_bound_index", "row_bounds"]

OCCLUSION_FILLS = (None, "left", "right", "auto")
"""Values of the ``occlusion_fill`` option: off, the side of the stereo pair's reference camera, or ``auto`` (the side
read from the frame's own holes, :func:`occlusion_evidence`; nothing where they do not show one)."""
OCCLUSION_JUMP = 0.1
"""A run is an occlusion when its reference-side bound is farther than the other bound by more than this fraction
(10 %: a depth edge, not a slope; on the val stereo scenes 5-50 % gave the same within 0.2 %)."""
DENSE_MIN_MEASURED = 0.3
"""Least fraction of measured pixels for a frame to be treated as a dense sensor's (val: 64-beam LiDAR 0.22 and
scattered points <= 0.03 below it; ToF and stereo frames >= 0.40): between scattered points or LiDAR beams a row gap is
not a hole. The ``auto`` side and :mod:`depthkit.complete.hole_fill` act only above it."""
AUTO_TOLERANCE = 0.3
"""``auto``: a run follows the frame's stereo law when its width is within this fraction of the predicted one ..."""
AUTO_SLACK_PX = 1.0
"""... or within this many pixels of it (a matcher's edges are a pixel off either way)."""
AUTO_MIN_RUNS = 5
"""``auto``: fewer edge-bounded runs than this on a side say nothing about that side."""
AUTO_MIN_SHARE = 0.3
"""``auto``: least share of all edge-bounded runs' pixels in the side's runs that follow the law (val ToF frames:
at most 0.21; the stereo frames found: 0.33-1.00; the real Aloe stereo map 0.67)."""
AUTO_MIN_SPAN = 1.5
"""``auto``: the law must hold across inverse-depth differences spanning at least this factor (90th over 10th
percentile), so one blob across one straight edge (runs of one width between the same two surfaces) is no evidence."""
AUTO_DOMINANCE = 2.0
"""``auto``: the side's share must be at least this many times the other side's (occlusions are one-sided); a side
with too few runs to fit a law (under :data:`AUTO_MIN_RUNS`) counts all its runs' pixels."""
AUTO_MIN_EVIDENCE = 16
"""``auto``: a side needs at least this many runs that follow the law and are at least 2 px wide: a 1 px gap
follows any law within the slack (a speckle beside an edge, not evidence). The stereo frames found on the val and
test splits have 21 or more (the real Aloe map hundreds); a box scene with 30 % of its pixels dropped at random had
12 by chance."""


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
    only are unchanged. ``side``: the stereo pair's reference camera, ``"left"`` or ``"right"``; or ``"auto"``: the
    side :func:`occlusion_evidence` finds, and only its runs that follow the stereo law (nothing when none is found)."""
    if side not in ("left", "right", "auto"):
        raise ValueError(f"occlusion fill side must be 'left' or 'right' (the stereo pair's reference camera) or "
                         f"'auto' (read from the frame's holes); received {side!r}.")
    if isinstance(jump, bool) or not (isinstance(jump, (int, float)) and jump >= 0):
        raise ValueError(f"occlusion fill jump must be a number >= 0 (a fraction); received {jump!r}.")
    if side == "auto":
        return fill_found_runs(depth, occlusion_evidence(sparse, jump))
    left, right = row_bounds(sparse)
    reference, other = (left, right) if side == "left" else (right, left)
    mask = (other > 0) & (reference > (1.0 + jump) * other)  # a measured pixel is both its bounds: never set
    return np.where(mask, reference, depth).astype(np.float32), mask


def _sparse_map(sparse) -> np.ndarray:
    sparse = np.asarray(sparse, dtype=np.float32)
    if sparse.ndim != 2:
        raise ValueError(f"occlusion fill: the sparse map must be HxW (metres, 0 = missing); received shape "
                         f"{sparse.shape}.")
    return sparse


@dataclass(frozen=True)
class EdgeRuns:
    """The unmeasured row runs of a sparse map bounded on both sides by measured pixels that differ in depth by more
    than a jump: one entry per run (1-D arrays of one length). ``row``, ``start`` (first unmeasured column) and
    ``width`` (pixels) place it; ``near`` and ``far`` are its bounds' depths (metres); ``far_is_left`` says on which
    side the farther bound is."""

    row: np.ndarray
    start: np.ndarray
    width: np.ndarray
    near: np.ndarray
    far: np.ndarray
    far_is_left: np.ndarray


def edge_runs(sparse: np.ndarray, jump: float = OCCLUSION_JUMP) -> EdgeRuns:
    """The runs of ``sparse`` (HxW metres, measured where finite and > 0) bounded by a depth jump of more than ``jump``
    (a fraction): :class:`EdgeRuns`. Runs touching the image border (one bound only) are not included."""
    sparse = _sparse_map(sparse)
    if isinstance(jump, bool) or not (isinstance(jump, (int, float)) and jump >= 0):
        raise ValueError(f"edge runs: jump must be a number >= 0 (a fraction, e.g. 0.1); received {jump!r}.")
    measured = np.isfinite(sparse) & (sparse > 0)
    h, w = sparse.shape
    left, right = row_bound_index(measured)
    cols = np.arange(w)[None, :]
    ys, xs = np.nonzero(~measured & (left >= 0) & (right < w) & (left == cols - 1))  # each run's first pixel
    ends = right[ys, xs]
    depth_l, depth_r = sparse[ys, xs - 1], sparse[ys, ends]
    near, far = np.minimum(depth_l, depth_r), np.maximum(depth_l, depth_r)
    keep = far > (1.0 + jump) * near
    return EdgeRuns(ys[keep], xs[keep], (ends - xs)[keep], near[keep], far[keep], (depth_l > depth_r)[keep])


@dataclass(frozen=True)
class OcclusionEvidence:
    """What :func:`occlusion_evidence` read from a frame: ``side`` (``"left"`` / ``"right"``: the reference camera's
    side it found, or None), per side the share of the edge runs' pixels that follow the stereo law and the span of
    their inverse-depth differences (``share`` / ``span``: dicts keyed by side), and ``follows`` (bool per run of
    ``runs``: on the found side and following the law; all False when no side is found)."""

    side: str | None
    share: dict
    span: dict
    runs: EdgeRuns
    follows: np.ndarray


def occlusion_evidence(sparse: np.ndarray, jump: float = OCCLUSION_JUMP,
                       min_measured: float = DENSE_MIN_MEASURED) -> OcclusionEvidence:
    """Which side of its foreground surfaces a dense map's occlusions lie on, if its holes show one (the module
    docstring says why): for each side (runs whose farther bound is on the left or on the right, at least
    :data:`AUTO_MIN_RUNS`), the factor ``k`` = median of width / (1/near - 1/far) over its runs, the runs whose width is
    within :data:`AUTO_TOLERANCE` (or :data:`AUTO_SLACK_PX`) of ``k (1/near - 1/far)``, their share of all edge runs'
    pixels and the span of their inverse-depth differences (90th over 10th percentile; 1 when none follows).
    A side is found when its share is at least :data:`AUTO_MIN_SHARE`, its span at least :data:`AUTO_MIN_SPAN`, at
    least :data:`AUTO_MIN_EVIDENCE` of its following runs are 2 px or wider, and its share is :data:`AUTO_DOMINANCE`
    times the other's (a side with fewer than :data:`AUTO_MIN_RUNS` runs: the share of all its runs' pixels).
    ``sparse``: HxW metres, measured where finite and > 0. Frames with fewer than ``min_measured`` of their pixels
    measured are never read (no side, no runs)."""
    sparse = _sparse_map(sparse)
    measured = np.isfinite(sparse) & (sparse > 0)
    dense = sparse.size > 0 and measured.mean() >= min_measured
    runs = edge_runs(sparse if dense else np.zeros((0, 0), np.float32), jump)
    share, span = {"left": 0.0, "right": 0.0}, {"left": 1.0, "right": 1.0}
    follows = {"left": np.zeros(runs.width.size, bool), "right": np.zeros(runs.width.size, bool)}
    evidence = {"left": 0, "right": 0}
    total = float(runs.width.sum())
    if total > 0:
        width = runs.width.astype(np.float64)
        dinv = 1.0 / runs.near.astype(np.float64) - 1.0 / runs.far.astype(np.float64)
        for side, on_side in (("left", runs.far_is_left), ("right", ~runs.far_is_left)):
            if on_side.sum() < AUTO_MIN_RUNS:  # too few to fit a law: every pixel of them counts against the other
                share[side] = float(width[on_side].sum() / total)
                continue
            k = float(np.median(width[on_side] / dinv[on_side]))
            ok = on_side & (np.abs(width - k * dinv) <= np.maximum(AUTO_SLACK_PX, AUTO_TOLERANCE * k * dinv))
            follows[side] = ok
            share[side] = float(width[ok].sum() / total)
            evidence[side] = int((ok & (width >= 2)).sum())
            if ok.any():
                span[side] = float(np.percentile(dinv[ok], 90) / np.percentile(dinv[ok], 10))
    found = None
    for side, other in (("left", "right"), ("right", "left")):
        if (share[side] >= AUTO_MIN_SHARE and span[side] >= AUTO_MIN_SPAN and evidence[side] >= AUTO_MIN_EVIDENCE
                and share[side] >= AUTO_DOMINANCE * share[other]):
            found = side
    chosen = follows[found] if found else np.zeros(runs.width.size, bool)
    return OcclusionEvidence(found, share, span, runs, chosen)


def fill_found_runs(depth: np.ndarray, evidence: OcclusionEvidence) -> tuple[np.ndarray, np.ndarray]:
    """``depth`` (HxW metres) with the runs :func:`occlusion_evidence` marked (``evidence.follows``) set to their far
    bound's depth: ``(filled HxW float32, mask HxW bool of the pixels set)``; unchanged when it found no side."""
    out = np.array(depth, dtype=np.float32)
    mask = np.zeros(out.shape, bool)
    runs, which = evidence.runs, evidence.follows
    if which.any() and (out.ndim != 2 or runs.row.max() >= out.shape[0]
                        or (runs.start + runs.width).max() > out.shape[1]):
        raise ValueError(f"occlusion fill: the depth map ({out.shape}) is not the size of the sparse map the "
                         "evidence was read from; pass the completion of that map.")
    for y, x, n, far in zip(runs.row[which], runs.start[which], runs.width[which], runs.far[which]):
        out[y, x:x + n] = far
        mask[y, x:x + n] = True
    return out, mask
