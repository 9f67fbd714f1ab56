"""Which pixels the completer asks about, and how their answers become a dense map.

1. **Query plan** (:func:`plan_queries`). Measured pixels are never queried — they are copied exactly. Missing
   pixels are queried on a regular grid: every ``stride``-th row and column, the grid centred in its cells (offset
   ``stride // 2``); grid points that are measured are skipped (they are anchors already). With a query budget the
   grid holds at most ``budget`` missing pixels, so the number of model calls is bounded for any image size: the
   stride starts at the one an even spread of missing pixels would need, steps down while the next smaller stride
   still fits and up until the grid fits. Where missing pixels are spread evenly that is the smallest stride that
   fits; where measured pixels line up with the grid (a LiDAR's rows) the count is not monotonic in the stride and a
   smaller stride further down may fit too (not searched for: it need not ask more — in a review's probe a 64-beam
   frame's stride 17 asked 993 pixels and the smaller 14 that also fit 808, more of its points on measured rows),
   and on a dense frame a tiny budget (1–3) can leave the grid with no missing pixel. ``budget=0`` asks nothing
   (the result is the classical fill).
2. **Fusion** (:func:`fuse_answers`, a switch). ``"none"``: answers are used as given. ``"fallback"``: an answer
   whose confidence is below ``threshold`` falls back to the classical interpolation at that pixel. ``"blend"``:
   ``c * answer + (1 - c) * classical`` with ``c`` the answer's confidence. Unreadable answers are never anchors:
   they are counted and their pixels filled from their neighbours.
   The classical interpolation is :func:`prior_map` — the same function the trainer uses for prompt priors.
3. **Dense fill** (a switch, :data:`DENSE_FILLS`). ``"anchors"`` (:func:`fill_dense`): the measured points and the
   (fused) answers together are the sparse input of the RGB-guided, edge-aware interpolation
   :func:`depthkit.data.baselines.guided` (joint x, y, RGB k-NN with a joint-bilateral local-plane fit), which copies
   every anchor exactly. ``"residual"`` (:func:`fill_residual`): the answers' log-ratios to the classical
   interpolation are interpolated the same way (0 at measured pixels) and applied to it, so answers equal to the
   classical values change nothing. Either way measured pixels keep their values bit for bit, and between anchors
   the fill follows colour edges instead of blurring across them.
4. **Confidence map** (:func:`confidence_map`): 1 at measured pixels, each answer's confidence at its pixel (0 for
   unreadable ones), and elsewhere the confidence of the nearest anchor (measured or answered) decaying with the
   distance to it (``exp(-d / decay)``, decay = the anchors' mean spacing by default), times ``exp(-r / tolerance)``
   with ``r`` the local range of the completed log-depth (low near edges, where interpolation errs). Measured on
   held-out synthetic scenes: ``benchmarks/results/complete_confidence.json``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ANSWER_FUSIONS", "DENSE_FILLS", "plan_queries", "prior_map", "fuse_answers", "fill_dense",
           "fill_residual", "confidence_map"]

ANSWER_FUSIONS = ("none", "fallback", "blend")
"""How answers are combined with the classical interpolation by their confidence (the stage's ``fusion`` option)."""

DENSE_FILLS = ("anchors", "residual")
"""How the (fused) answers become a dense map (the stage's ``fill`` option): :func:`fill_dense` (answers are extra
anchors of the guided interpolation) or :func:`fill_residual` (answers correct the classical interpolation)."""


def _missing(sparse: np.ndarray) -> np.ndarray:
    sparse = np.asarray(sparse)
    if sparse.ndim != 2:
        raise ValueError(f"sparse must be an HxW depth map in metres (0 = missing); got shape {sparse.shape}.")
    return ~(np.isfinite(sparse) & (sparse > 0))


def _grid(missing: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int64 of the missing pixels on the grid of ``stride`` px (offset ``stride // 2``, at most the last
    row / column). Every stride of at least twice the longest side gives the same one-pixel grid, the last row and
    column: it is computed with that stride, since numpy makes no integer index of a stride beyond int64 (a legal
    ``query_stride`` of 1e30)."""
    h, w = missing.shape
    stride = min(int(stride), 2 * max(h, w))
    off = stride // 2
    ys = np.arange(min(off, h - 1), h, stride)
    xs = np.arange(min(off, w - 1), w, stride)
    sub = missing[np.ix_(ys, xs)]
    r, c = np.nonzero(sub)
    return ys[r].astype(np.int64), xs[c].astype(np.int64)


def plan_queries(sparse: np.ndarray, stride: int | None = None, budget: int | None = None) -> dict:
    """Grid of missing pixels to query (see the module docstring).

    Args:
        sparse: HxW metres, 0 (or NaN) = missing.
        stride: grid step in pixels (>= 1). None: chosen from ``budget``.
        budget: most queries (>= 0); the stride is searched from an even spread's estimate (the module
            docstring). With ``stride`` too, the stride is raised until the grid fits.
            Both None: stride 1 (every missing pixel, as the paper).

    Returns:
        ``{"rows": int64 N, "cols": int64 N, "stride": the stride used}`` (raster order).
    """
    missing = _missing(sparse)
    if stride is not None and (int(stride) != stride or stride < 1):
        raise ValueError(f"query stride must be an integer >= 1 pixel; got {stride!r}.")
    if budget is not None and (int(budget) != budget or budget < 0):
        raise ValueError(f"query budget must be an integer >= 0; got {budget!r}.")
    empty = np.zeros(0, np.int64)
    if budget == 0 or not missing.any():
        return {"rows": empty, "cols": empty, "stride": int(stride or 1)}
    given = stride is not None
    if stride is None:
        if budget is None:
            stride = 1
        else:  # start near the stride that fits on average, then step up until the grid fits
            stride = max(1, int(math.floor(math.sqrt(missing.sum() / budget))))
    stride = int(stride)
    rows, cols = _grid(missing, stride)
    if budget is not None:
        # a smaller stride may fit too (the estimate assumed an even spread): step down while it still fits
        while not given and stride > 1:
            r2, c2 = _grid(missing, stride - 1)
            if r2.size > budget:
                break
            stride, rows, cols = stride - 1, r2, c2
        while rows.size > budget:
            stride += 1
            rows, cols = _grid(missing, stride)
    return {"rows": rows, "cols": cols, "stride": stride}


def fuse_answers(values: np.ndarray, confidence: np.ndarray, ok: np.ndarray, classical: np.ndarray | None,
                 mode: str = "none", threshold: float = 0.5) -> np.ndarray:
    """Answers after confidence-weighted fusion (N metres; NaN where ``ok`` is False).

    ``classical`` holds the classical interpolation at the queried pixels (N metres; needed unless mode is none).
    """
    if mode not in ANSWER_FUSIONS:
        raise ValueError(f"fusion={mode!r} is not one of {ANSWER_FUSIONS}.")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"fusion threshold must be in [0, 1]; got {threshold}.")
    values = np.asarray(values, dtype=np.float64)
    ok = np.asarray(ok, dtype=bool)
    out = np.where(ok, values, np.nan)
    if mode == "none":
        return out
    if classical is None:
        raise ValueError(f"fusion={mode!r} needs the classical interpolation at the queried pixels.")
    conf = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    classical = np.asarray(classical, dtype=np.float64)
    if mode == "fallback":
        return np.where(ok & (conf < threshold), classical, out)
    return np.where(ok, conf * values + (1.0 - conf) * classical, np.nan)


def prior_map(image: np.ndarray, sparse: np.ndarray, method: str) -> np.ndarray:
    """The classical interpolation behind a prompt prior: dense HxW float32 metres from ``sparse`` (HxW metres,
    0 = missing) by ``method`` (one of :data:`PRIOR_METHODS`, the function of that name in
    :mod:`depthkit.data.baselines`). The trainer states its value at held-out pixels, the stage at queried pixels
    (and fuses answers with it)."""
    from depthkit.complete.prompts import PRIOR_METHODS
    from depthkit.data.baselines import CLASSICAL_METHODS

    if method not in PRIOR_METHODS:
        raise ValueError(f"prior method {method!r}; allowed: {', '.join(PRIOR_METHODS)}.")
    sparse = np.asarray(sparse, dtype=np.float32)
    valid = sparse > 0
    if not valid.any():
        raise ValueError(f"a {method!r} prior needs at least one measured pixel; the sparse map "
                         f"({sparse.shape[0]}x{sparse.shape[1]}) has none.")
    # inputs come checked (Pipeline, dataset readers): the table's trusted implementation, not the public checker
    return np.asarray(CLASSICAL_METHODS[method].fn(image, sparse, valid), dtype=np.float32)


def fill_dense(image: np.ndarray, sparse: np.ndarray, rows: np.ndarray, cols: np.ndarray,
               values: np.ndarray) -> np.ndarray:
    """Dense HxW float32 metres from measured points plus answers at (rows, cols) (NaN answers are skipped).

    Every anchor (measured point or finite answer > 0) is copied exactly (here, not left to the interpolator); the
    rest is :func:`depthkit.data.baselines.guided` over those anchors. Measured pixels are never overwritten by answers.
    """
    from depthkit.data.baselines import guided

    sparse = np.asarray(sparse, dtype=np.float32)
    measured = ~_missing(sparse)
    anchors = np.where(measured, sparse, np.float32(0)).astype(np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    use = np.isfinite(values) & (values > 0) & ~measured[rows, cols]
    anchors[rows[use], cols[use]] = values[use].astype(np.float32)
    if not (anchors > 0).any():
        raise ValueError("nothing to fill from: the sparse map has no measured pixel and no query gave a readable "
                         "answer; give at least one measured point (metres > 0).")
    dense = guided(np.asarray(image), anchors)
    has = anchors > 0
    dense[has] = anchors[has]  # every anchor exactly, whatever the interpolator does: measured pixels bit for bit
    return dense


def fill_residual(image: np.ndarray, sparse: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                  classical: np.ndarray) -> np.ndarray:
    """Dense HxW float32 metres: the classical interpolation moved by the answers.

    Each readable answer ``v`` at a queried pixel becomes a log-depth correction ``log(v / classical)`` there; measured
    pixels carry correction 0; the corrections are interpolated over the image with the same RGB guidance
    (:func:`depthkit.data.baselines.guided_field`) and applied: ``classical * exp(correction)``. So answers that
    agree with the classical interpolation give it back unchanged (a completer that has learned nothing cannot make
    it worse), while the anchors fill (:func:`fill_dense`) re-interpolates from the grid of answers and loses detail
    between them (measured: answers equal to ``guided`` at 1,024 grid pixels raise its MAE by 5 % with the anchors fill,
    0 % with this one: ``benchmarks/complete_fill.py``). Measured pixels keep their values exactly; NaN answers and
    answers at measured pixels are skipped.

    Two guards keep one extreme measurement from spreading: answers live in the prompts' range [``MIN_DEPTH``,
    ``MAX_DEPTH``] (1 mm to 300 m), so each is compared with the classical value clipped to that range (an answer
    that repeats a clipped prior corrects nothing; a 1 µm return would otherwise give its neighbours a factor-1,000
    correction); and the filled pixels stay within the range of the values they are interpolated from (the classical
    map's and the answers'), as every classical interpolation does.

    Args:
        classical: HxW metres, the interpolation the answers correct (:func:`prior_map` of the same sparse map).
    """
    from depthkit.complete.prompts import MAX_DEPTH, MIN_DEPTH
    from depthkit.data.baselines import guided_field

    sparse = np.asarray(sparse, dtype=np.float32)
    classical = np.asarray(classical, dtype=np.float32)
    measured = ~_missing(sparse)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    base = classical[rows, cols].astype(np.float64)
    use = np.isfinite(values) & (values > 0) & (base > 0) & ~measured[rows, cols]
    known = measured.copy()
    known[rows[use], cols[use]] = True
    if not known.any():
        raise ValueError("nothing to fill from: the sparse map has no measured pixel and no query gave a readable "
                         "answer; give at least one measured point (metres > 0).")
    field = np.zeros(sparse.shape, np.float32)
    field[rows[use], cols[use]] = np.log(values[use] / np.clip(base[use], MIN_DEPTH, MAX_DEPTH)).astype(np.float32)
    with np.errstate(over="ignore"):  # an overflow is clipped just below
        dense = (classical * np.exp(guided_field(image, field, known))).astype(np.float32)
    ok = classical > 0
    if ok.any():
        low = np.float32(min(float(classical[ok].min()), float(values[use].min(initial=np.inf))))
        high = np.float32(max(float(classical[ok].max()), float(values[use].max(initial=-np.inf))))
        dense[ok] = np.clip(dense[ok], low, high)
    dense[measured] = sparse[measured]
    return dense


def confidence_map(sparse: np.ndarray, rows: np.ndarray, cols: np.ndarray, confidence: np.ndarray,
                   ok: np.ndarray, decay_px: float | None = None, dense: np.ndarray | None = None,
                   tolerance: float = 0.1) -> np.ndarray:
    """HxW float32 in [0, 1], an estimate of where the dense map is wrong.

    1 at measured pixels; each query's confidence at its pixel (0 if unreadable); elsewhere the confidence of the
    nearest anchor (measured pixel or readable answer) times ``exp(-d / decay_px)``, ``d`` the distance to that
    anchor in pixels (the fill is an interpolation, less sure the farther it reaches). With ``dense`` (the completed
    HxW metres) every unmeasured pixel is further multiplied by ``exp(-r / tolerance)``, ``r`` the range of
    ``log(dense)`` over a window of the anchor spacing around it: where the depth changes between anchors (edges),
    the interpolation's relative error is of that order. ``decay_px`` (> 0) and the window default to the anchors'
    mean spacing ``sqrt(H * W / anchors)``.
    """
    import cv2
    from scipy import ndimage

    measured = ~_missing(sparse)
    conf = np.zeros(measured.shape, np.float32)
    conf[measured] = 1.0
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    ok = np.asarray(ok, dtype=bool)
    c = np.clip(np.nan_to_num(np.asarray(confidence, dtype=np.float32)), 0.0, 1.0)
    conf[rows, cols] = np.where(ok, c, 0.0)
    anchors = measured.copy()
    anchors[rows[ok], cols[ok]] = True
    if not anchors.any():
        return conf
    spacing = math.sqrt(anchors.size / anchors.sum())
    if decay_px is None:
        decay_px = spacing
    if not decay_px > 0 or not tolerance > 0:
        raise ValueError(f"confidence decay length and tolerance must be > 0; got {decay_px} px, {tolerance}.")
    dist, (iy, ix) = ndimage.distance_transform_edt(~anchors, return_indices=True)
    out = conf[iy, ix] * np.exp(-dist / decay_px)
    if dense is not None:
        dense = np.asarray(dense, dtype=np.float64)
        if dense.shape != measured.shape:
            raise ValueError(f"dense is {dense.shape} but the sparse map is {measured.shape}; give the completed map.")
        size = max(3, int(round(spacing)) | 1)
        log_d = np.log(np.clip(np.nan_to_num(dense, nan=1.0), 1e-3, None))
        # max - min over the size x size window inside the image (OpenCV's morphology: ~2x scipy's filters here)
        window = np.ones((size, size), np.uint8)
        spread = cv2.dilate(log_d, window) - cv2.erode(log_d, window)
        out = out * np.exp(-spread / tolerance)
    out[measured] = 1.0
    out[rows[~ok], cols[~ok]] = 0.0
    return out.astype(np.float32)
