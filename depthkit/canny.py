"""Canny edge detection on a normalised depth map, in the two conventions the depth-boundary error is published
with: MATLAB's ``edge(I, 'canny', ...)`` as the iBims-1 paper used it, and ``skimage.feature.canny`` step for step as
iBims-1's public script and SharpDepth's evaluation call it. The array algorithms only;
:func:`depthkit.metrics.depth_edges` checks and normalises the map and is the public entry.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["canny"]


def canny(img: np.ndarray, sigma: float, low: float, high: float, convention: str) -> np.ndarray:
    """Canny edges (HxW bool) of ``img``, a map already min-max normalised to [0, 1] (NaN where missing, with
    ``"skimage"``): ``"matlab"`` (thresholds relative to the strongest gradient) or ``"skimage"``
    (:func:`_canny_skimage`); :func:`depthkit.metrics.depth_edges` prepares the map and documents both."""
    if convention == "skimage":
        return _canny_skimage(img, sigma, low, high)
    gx = ndimage.gaussian_filter(img, sigma, order=(0, 1), mode="nearest")
    gy = ndimage.gaussian_filter(img, sigma, order=(1, 0), mode="nearest")
    mag = np.hypot(gx, gy)
    peak = float(mag.max())
    if peak <= 0:
        return np.zeros(img.shape, dtype=bool)
    mag = mag / peak
    # far above float64 noise of the filters, far below any real difference between neighbouring magnitudes
    tol = 1e-9 * float(mag.max())
    cand = _local_maxima(mag, gx, gy, tol) & (mag > low)
    return _hysteresis(cand, cand & (mag > high))


def _hysteresis(cand: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """The candidate pixels 8-connected (through candidates) to a strong one."""
    labels, n = ndimage.label(cand, structure=np.ones((3, 3), dtype=bool))
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(labels[strong])] = True
    keep[0] = False
    return keep[labels]


def _canny_skimage(img: np.ndarray, sigma: float, low: float, high: float) -> np.ndarray:
    """``skimage.feature.canny(img, sigma, low, high)`` (no mask, its defaults) computed step for step, in ``img``'s
    precision as scikit-image computes it (float32 for a float32 map), so that the edge maps agree bit for bit:
    Gaussian smoothing with zero padding divided by the smoothed image of ones (plus the dtype's epsilon), Sobel
    gradients (scipy's default reflecting border), magnitude sqrt(gi^2 + gj^2), non-maximum suppression by linear
    interpolation between two neighbours (a pixel stays when neither interpolated neighbour exceeds it, so both pixels
    of an exact tie stay; the interpolation mixes precisions as its compiled loop does), ``low`` compared after
    rounding to float32 (the loop takes it as a C float), ``high`` in the map's precision (``>=`` both), hysteresis
    with 8-connectivity, and the outermost 1-px border never an edge. Checked against scikit-image 0.24-0.26 by
    tests/test_metrics_skimage.py."""
    ft = img.dtype.type
    bleed = ndimage.gaussian_filter(np.ones_like(img), sigma, mode="constant", cval=0.0) + np.finfo(ft).eps
    smooth = ndimage.gaussian_filter(img, sigma, mode="constant", cval=0.0) / bleed
    gj = ndimage.sobel(smooth, axis=1)
    gi = ndimage.sobel(smooth, axis=0)
    mag = np.sqrt(gi * gi + gj * gj)
    ai, aj = np.abs(gi), np.abs(gj)
    same_sign = (gi > 0) == (gj > 0)  # zero counts as negative, as there
    steep = np.where(same_sign, ai > aj, ai >= aj)  # the step is mainly along the rows (axis 0)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 (no gradient): NaN, and NaN compares False
        w = np.where(steep, aj / ai, ai / aj)
    # neighbour 1 = the axis neighbour (+di0, +dj0) mixed with the diagonal one (+di1, +dj1); neighbour 2 mirrored
    di0 = np.where(steep, np.where(same_sign, 1, -1), 0)
    dj0 = np.where(steep, 0, 1)
    di1 = np.where(same_sign, 1, -1)
    dj1 = np.ones_like(di1)
    padded = np.pad(mag, 1)
    r = np.arange(mag.shape[0])[:, None] + 1
    c = np.arange(mag.shape[1])[None, :] + 1
    w64 = w.astype(np.float64)  # the loop's "1.0 - w" is a C double; "diagonal * w" stays in the map's precision
    n1 = (padded[r + di1, c + dj1] * w).astype(np.float64) + padded[r + di0, c + dj0] * (1.0 - w64)
    n2 = (padded[r - di1, c - dj1] * w).astype(np.float64) + padded[r - di0, c - dj0] * (1.0 - w64)
    inner = np.zeros(mag.shape, dtype=bool)
    inner[1:-1, 1:-1] = True
    low32 = np.float32(low) or np.float32(1e-14)  # its loop's stand-in for 0: "m >= 0" is everywhere
    cand = inner & (mag >= low32) & (n1 <= mag) & (n2 <= mag)
    return _hysteresis(cand, cand & (mag >= ft(high)))


def _local_maxima(mag: np.ndarray, gx: np.ndarray, gy: np.ndarray, tol: float) -> np.ndarray:
    """Non-maximum suppression: mag is compared with its two neighbours along the gradient, interpolated linearly."""
    h, w = mag.shape
    ax, ay = np.abs(gx), np.abs(gy)
    horiz = ax >= ay
    # Orient every step so its dominant component is +1: "forward" is then always toward larger row/column, which
    # makes the tie-break below independent of the gradient's sign (depth vs disparity give the same edge pixels).
    dom_sign = np.where(horiz, np.sign(gx), np.sign(gy))
    dom_sign[dom_sign == 0] = 1
    sx = (np.sign(gx) * dom_sign).astype(np.intp)
    sy = (np.sign(gy) * dom_sign).astype(np.intp)
    with np.errstate(divide="ignore", invalid="ignore"):
        wgt = np.where(horiz, ay / ax, ax / ay)
    wgt = np.nan_to_num(wgt, nan=0.0)
    pr = np.where(horiz, 0, 1)  # step along the dominant axis: (0, 1) horizontal gradient, (1, 0) vertical
    pc = 1 - pr
    padded = np.pad(mag, 1)
    r = np.arange(h)[:, None] + 1
    c = np.arange(w)[None, :] + 1
    fwd = (1 - wgt) * padded[r + pr, c + pc] + wgt * padded[r + sy, c + sx]
    bwd = (1 - wgt) * padded[r - pr, c - pc] + wgt * padded[r - sy, c - sx]
    local = (mag >= fwd - tol) & (mag > bwd + tol)
    local[0, :] = local[-1, :] = local[:, 0] = local[:, -1] = False
    return local
