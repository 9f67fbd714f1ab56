"""Camera intrinsics, least-squares scale/shift alignment and back-projection.

All depth is float32 metres with 0 = missing. Alignment solves ``min_{s,t} sum_mask (s * pred + t - target)^2`` in
closed form, either on depth or on disparity (1/depth, the space affine-invariant models such as Lotus predict in).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depthkit.float32_metres import unmasked


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels: focal lengths ``fx, fy`` and principal point ``cx, cy``."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self):
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(
                f"intrinsics must be finite with fx, fy > 0; received fx={self.fx}, fy={self.fy}, "
                f"cx={self.cx}, cy={self.cy}. Give them in pixels as fx,fy,cx,cy."
            )

    def scaled(self, sx: float, sy: float) -> Intrinsics:
        """Intrinsics after resizing the image by ``sx`` horizontally and ``sy`` vertically (pixel-centre model)."""
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5)

    def matrix(self) -> np.ndarray:
        """3x3 camera matrix K (float64)."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def fits(self, shape: tuple[int, int]) -> bool:
        """False when the principal point lies far outside an image of ``shape`` (H, W): more than half the image
        beyond an edge, as with intrinsics of another resolution or given in another order."""
        h, w = shape[:2]
        return -0.5 * w <= self.cx <= 1.5 * w and -0.5 * h <= self.cy <= 1.5 * h


def fit_scale_shift(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Closed-form least squares ``(s, t) = argmin sum_mask (s * pred + t - target)^2``.

    Falls back to a pure shift when ``pred`` is constant on the mask; raises when fewer than 2 pixels are usable.
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    m = np.isfinite(pred) & np.isfinite(target)
    if mask is not None:
        m &= np.asarray(mask, dtype=bool)
    n = int(m.sum())
    if n < 2:
        raise ValueError(f"scale/shift alignment needs at least 2 valid pixels; the mask has {n}.")
    p, y = pred[m], target[m]
    pm, ym = p.mean(), y.mean()
    var = ((p - pm) ** 2).sum()
    if var < 1e-12 * max(1.0, pm * pm) * n:
        return 1.0, float(ym - pm)
    s = float(((p - pm) * (y - ym)).sum() / var)
    return s, float(ym - s * pm)


def align_depth(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Affinely align ``pred`` to metric ``target`` in depth space over ``mask`` (default: target > 0)."""
    target = np.asarray(target, dtype=np.float64)
    mask = (target > 0) if mask is None else (np.asarray(mask, bool) & (target > 0))
    s, t = fit_scale_shift(pred, target, mask)
    return (s * np.asarray(pred, np.float64) + t).astype(np.float32)


def align_disparity(pred_disp: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                    min_depth: float = 1e-3) -> np.ndarray:
    """Align an affine-invariant disparity ``pred_disp`` to metric depth ``target`` in disparity space.

    Fits ``s * pred_disp + t ≈ 1 / target`` over ``mask & target > 0`` and returns metric depth
    ``1 / clip(s * pred_disp + t, 1 / 1e4, 1 / min_depth)`` (metres).
    """
    target = np.asarray(target, dtype=np.float64)
    mask = (target > 0) if mask is None else (np.asarray(mask, bool) & (target > 0))
    inv = np.zeros_like(target)
    inv[target > 0] = 1.0 / target[target > 0]
    s, t = fit_scale_shift(pred_disp, inv, mask)
    disp = np.clip(s * np.asarray(pred_disp, np.float64) + t, 1e-4, 1.0 / min_depth)
    return (1.0 / disp).astype(np.float32)


def backproject(depth: np.ndarray, intrinsics: Intrinsics, mask: np.ndarray | None = None) -> np.ndarray:
    """Back-project planar depth (HxW metres) to camera-frame points, Nx3 float32 (x right, y down, z forward).

    Only pixels with a finite depth > 0 (and ``mask``, HxW bool) are returned, in row-major order; a numpy masked
    array's masked pixels are missing.
    """
    depth = np.asarray(unmasked(depth), dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"backproject: depth must be HxW metres; received shape {depth.shape}.")
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    m = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != depth.shape:
            raise ValueError(f"backproject: mask has shape {mask.shape}, the depth {depth.shape}; give an HxW mask "
                             "of the depth's size.")
        m &= mask
    z = depth[m]
    x = (u[m] - intrinsics.cx) / intrinsics.fx * z
    y = (v[m] - intrinsics.cy) / intrinsics.fy * z
    return np.stack([x, y, z], axis=1).astype(np.float32)


def distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance in pixels from every pixel's centre to the nearest True pixel of the HxW bool ``mask``
    (0 on it), float32 HxW. A mask with no True pixel gives very large distances; callers check ``mask.any()``."""
    import cv2

    return cv2.distanceTransform((~np.asarray(mask, bool)).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """HxW bool: the pixels whose centres lie in the convex hull of the True pixels' centres of the HxW bool
    ``mask``, its edge included (exactly, by the hull's half-planes; a rasterised polygon fill would add pixels the
    edge only touches). A single pixel, or a line of them, is its own hull; a mask with no True pixel gives all
    False."""
    import cv2

    mask = np.asarray(mask, bool)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return np.zeros(mask.shape, bool)
    # counter-clockwise with y up (OpenCV's convention), so in image (x, y) the inside is on every edge's left
    corners = cv2.convexHull(np.stack([cols, rows], axis=1).astype(np.int32), clockwise=False)[:, 0].astype(np.int64)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = np.ones(yy.shape, bool)
    if len(corners) >= 3:
        for (ax, ay), (bx, by) in zip(corners, np.roll(corners, -1, axis=0)):
            inside &= (bx - ax) * (yy - ay) - (by - ay) * (xx - ax) >= 0
    elif len(corners) == 2:  # a segment: the pixels on it
        (ax, ay), (bx, by) = corners
        inside = ((bx - ax) * (yy - ay) - (by - ay) * (xx - ax)) == 0
    out = np.zeros(mask.shape, bool)
    out[y0:y1, x0:x1] = inside
    return out
