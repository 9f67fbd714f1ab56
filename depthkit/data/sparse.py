"""Sparse depth samplers and sensor noise models, for training and for benchmark protocols.

Every function takes and returns HxW float32 depth in metres with 0 = missing. The samplers
(:func:`sample_random_points`, :func:`sample_lidar`, :func:`sample_holes`) only choose *which* pixels are measured:
each measured value is copied bit-exactly from the dense map. Only :func:`add_noise` and :func:`sample_stereo` (a
stereo matcher's errors: disparity noise, fattened foreground edges) change values, and they never produce negative
or NaN depths. Pixels of the dense map that are 0, negative or not finite count as "no surface" and are never
measured.

``seed`` is an ``int`` (>= 0) or a ``numpy.random.Generator`` everywhere; the same seed gives the same output.
:data:`SAMPLERS` maps a pattern name to a sampler with one calling convention, and :func:`make_sparse` dispatches by
name (used by configs and the CLI).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from depthkit.data._stereo_visibility import covered
from depthkit.data.scene_options import check_int
from depthkit.float32_metres import unmasked
from depthkit.geometry import Intrinsics

NYU_NUM_POINTS = 500  # sparse points per image in the NYUv2 depth-completion protocol
HDL64_VERTICAL_FOV_DEG = (-24.8, 2.0)  # elevation range of a Velodyne HDL-64E (KITTI's LiDAR), degrees


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0 or a numpy.random.Generator; received {seed!r}. "
                         "Pass a fixed int for reproducible samples.")
    return np.random.default_rng(int(seed))


def _as_depth(depth, name: str = "depth") -> np.ndarray:
    arr = np.asarray(unmasked(depth))  # masked pixels are missing, as everywhere
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric HxW array (metres, 0 = missing); received shape {arr.shape} "
                         f"and dtype {arr.dtype}. Squeeze channel axes first.")
    return arr.astype(np.float32, copy=False)


def _measurable(depth: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > 0)


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1]; received {value!r}.")
    return float(value)


def _check_positive(name: str, value, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < float(value) < np.inf:
        raise ValueError(f"{name} must be a finite number > 0{' or None' if allow_none else ''}; received {value!r}.")
    return float(value)


def _check_non_negative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= float(value) < np.inf:
        raise ValueError(f"{name} must be a finite number >= 0; received {value!r}.")
    return float(value)


def _check_intrinsics(intrinsics, shape: tuple[int, int] | None = None) -> None:
    """An :class:`Intrinsics`; with ``shape`` (H, W), one whose principal point fits a map of that size (the
    samplers that use it: LiDAR; stereo needs only fx)."""
    if not isinstance(intrinsics, Intrinsics):
        raise ValueError(f"intrinsics must be a depthkit.geometry.Intrinsics; received {type(intrinsics).__name__}. "
                         "Build one with Intrinsics(fx, fy, cx, cy) in pixels.")
    if shape is not None and not intrinsics.fits(shape):
        h, w = shape
        raise ValueError(f"the principal point ({intrinsics.cx:g}, {intrinsics.cy:g}) lies far outside the {w}x{h} "
                         "depth map: intrinsics of another resolution (scale them with Intrinsics.scaled(sx, sy)) or "
                         "given in another order (Intrinsics(fx, fy, cx, cy), pixels of this map).")


def _pair(value) -> tuple[float, float]:
    """Two floats from a (lo, hi) pair; NaNs when ``value`` is not one, so the caller's range check reports it."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        return math.nan, math.nan
    return lo, hi


def _drop_exact(keep: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Remove ``round(ratio * count)`` of the True pixels of ``keep``, chosen uniformly without replacement."""
    idx = np.flatnonzero(keep)
    n_drop = int(round(ratio * idx.size))
    if n_drop:
        keep = keep.copy()
        keep.flat[rng.choice(idx, size=n_drop, replace=False)] = False
    return keep


def _copy_where(depth: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.where(keep, depth, np.float32(0)).astype(np.float32)


def sample_random_points(depth, n: int, seed, valid=None) -> np.ndarray:
    """``n`` distinct pixels drawn uniformly from the measurable pixels of ``depth`` (HxW metres).

    ``valid`` (HxW bool, optional) further restricts where points may fall (e.g. an evaluation crop). If fewer than
    ``n`` pixels are available, all of them are returned — check ``(out > 0).sum()`` if the count matters.
    Returns HxW float32 with the chosen values copied exactly and 0 elsewhere.
    """
    depth = _as_depth(depth)
    n = check_int("n", n, 0)
    mask = _measurable(depth)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != depth.shape:
            raise ValueError(f"valid must have the depth's shape {depth.shape}; received {valid.shape}.")
        mask &= valid.astype(bool)
    idx = np.flatnonzero(mask)
    rng = _rng(seed)
    if n < idx.size:
        idx = rng.choice(idx, size=n, replace=False)
    out = np.zeros(depth.shape, dtype=np.float32)
    out.flat[idx] = depth.flat[idx]
    return out


def _elevation_range(vertical_fov_deg) -> tuple[float, float]:
    if isinstance(vertical_fov_deg, (int, float, np.number)) and not isinstance(vertical_fov_deg, bool):
        lo, hi = -float(vertical_fov_deg) / 2, float(vertical_fov_deg) / 2
    else:
        lo, hi = _pair(vertical_fov_deg)
    if not (-90 < lo < hi < 90):
        raise ValueError("vertical_fov_deg must be a total field of view in (0, 180) degrees or a (lowest, highest) "
                         f"elevation pair with -90 < lowest < highest < 90; received {vertical_fov_deg!r}.")
    return lo, hi


def lidar_rows(intrinsics: Intrinsics, width: int, elevation_deg: float, columns: np.ndarray | None = None):
    """Image rows (float pixels) where a beam at ``elevation_deg`` (above the optical axis) crosses each column.

    A beam sweeps a cone of constant elevation, which projects to a curve ``v = cy - fy * tan(e) / cos(azimuth)``
    with ``azimuth = atan((u - cx) / fx)``: scanlines bend away from the principal point towards the image sides.
    """
    u = np.arange(width, dtype=np.float64) if columns is None else np.asarray(columns, dtype=np.float64)
    azimuth = np.arctan((u - intrinsics.cx) / intrinsics.fx)
    return intrinsics.cy - intrinsics.fy * math.tan(math.radians(elevation_deg)) / np.cos(azimuth)


def sample_lidar(depth, intrinsics: Intrinsics, n_beams: int = 64,
                 vertical_fov_deg: float | tuple[float, float] = HDL64_VERTICAL_FOV_DEG,
                 horizontal_step_px: int = 1, seed=0, drop_ratio: float = 0.1,
                 max_range: float | None = None) -> np.ndarray:
    """LiDAR-like scanlines: ``n_beams`` beams at evenly spaced elevations, projected into the image.

    The LiDAR is modelled at the camera centre, aligned with the camera (elevation is measured from the optical axis,
    positive up). Each beam crosses every ``horizontal_step_px``-th column at the row given by :func:`lidar_rows`
    (rounded to the nearest pixel); beams outside the image are lost, and beams less than a pixel apart share rows
    (64 HDL-64E beams, 0.42 degrees apart, give 52 distinct scanlines at 96x128 with a 60-degree field of view: 4
    out of the image, 8 merged). Then returns from surfaces beyond ``max_range``
    (metres, Euclidean distance from the camera centre) and exactly ``round(drop_ratio * returns)`` random returns
    are dropped (absorbing or specular surfaces). Sky pixels (depth 0) give no return.

    Args:
        depth: HxW dense depth, metres. intrinsics: its pinhole intrinsics (pixels).
        n_beams: number of beams (>= 1). vertical_fov_deg: total FOV (symmetric about the axis) or a
            (lowest, highest) elevation pair in degrees; default: a Velodyne HDL-64E, (-24.8, 2.0).
        horizontal_step_px: column stride in pixels (>= 1); larger = sparser azimuth sampling.
        seed: int or Generator, for the dropped returns. drop_ratio: in [0, 1].
    """
    depth = _as_depth(depth)
    _check_intrinsics(intrinsics, depth.shape)
    n_beams = check_int("n_beams", n_beams, 1)
    step = check_int("horizontal_step_px", horizontal_step_px, 1)
    lo, hi = _elevation_range(vertical_fov_deg)
    drop_ratio = _check_fraction("drop_ratio", drop_ratio)
    max_range = _check_positive("max_range", max_range)
    rng = _rng(seed)

    h, w = depth.shape
    cols = np.arange(0, w, step)
    keep = np.zeros(depth.shape, dtype=bool)
    for elev in np.linspace(lo, hi, n_beams) if n_beams > 1 else [(lo + hi) / 2]:
        rows = np.rint(lidar_rows(intrinsics, w, float(elev), cols)).astype(np.int64)
        inside = (rows >= 0) & (rows < h)
        keep[rows[inside], cols[inside]] = True
    keep &= _measurable(depth)
    if max_range is not None:
        v, u = np.nonzero(keep)
        ray = np.sqrt(1 + ((u - intrinsics.cx) / intrinsics.fx) ** 2 + ((v - intrinsics.cy) / intrinsics.fy) ** 2)
        far = depth[v, u] * ray > max_range
        keep[v[far], u[far]] = False
    return _copy_where(depth, _drop_exact(keep, drop_ratio, rng))


def sample_holes(depth, seed, n_blobs: int = 6, blob_radius_frac: tuple[float, float] = (0.03, 0.12),
                 edge_threshold: float | None = 0.05, edge_width_px: int = 2, max_range: float | None = None,
                 image=None, dark_threshold: float = 0.08, dropout: float = 0.0) -> np.ndarray:
    """ToF / structured-light-like measurement: the dense map with holes where such sensors fail.

    Removed, in order:
    - ``n_blobs`` random elliptical blobs (specular, transparent or saturated patches) with semi-axes drawn from
      ``blob_radius_frac`` times ``min(H, W)``, random centres and orientations;
    - depth-edge dropouts: where neighbouring depths differ by more than ``edge_threshold`` (relative,
      ``|a - b| / min(a, b)``), the farther side is lost (projector/camera occlusion shadow), widened to
      ``edge_width_px`` pixels; ``None`` disables it;
    - surfaces beyond ``max_range`` metres (planar depth; e.g. 4.5 for a Kinect-class sensor);
    - dark surfaces, when ``image`` (HxW or HxWx3, uint8 or [0, 1] floats) is given: luminance below
      ``dark_threshold`` (in [0, 1]) returns too little light;
    - then exactly ``round(dropout * remaining)`` random pixels.
    Returns HxW float32: the kept values copied exactly, 0 elsewhere.
    """
    depth = _as_depth(depth)
    rng = _rng(seed)
    n_blobs = check_int("n_blobs", n_blobs, 0)
    r_lo, r_hi = _pair(blob_radius_frac)
    if not 0 < r_lo <= r_hi < np.inf:
        raise ValueError("blob_radius_frac must be a (min, max) pair with 0 < min <= max; "
                         f"received {blob_radius_frac!r}.")
    edge_threshold = _check_positive("edge_threshold", edge_threshold)
    edge_width_px = check_int("edge_width_px", edge_width_px, 1)
    max_range = _check_positive("max_range", max_range)
    dark_threshold = _check_fraction("dark_threshold", dark_threshold)
    dropout = _check_fraction("dropout", dropout)

    h, w = depth.shape
    keep = _measurable(depth)
    vv, uu = np.mgrid[0:h, 0:w]
    for _ in range(n_blobs):
        a, b = rng.uniform(r_lo, r_hi, size=2) * min(h, w)
        cy, cx, theta = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, np.pi)
        ext = int(math.ceil(max(a, b))) + 1
        y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 1)
        x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 1)
        dy, dx = vv[y0:y1, x0:x1] - cy, uu[y0:y1, x0:x1] - cx
        p = dx * math.cos(theta) + dy * math.sin(theta)
        q = -dx * math.sin(theta) + dy * math.cos(theta)
        keep[y0:y1, x0:x1] &= (p / a) ** 2 + (q / b) ** 2 > 1
    if edge_threshold is not None:
        keep &= ~_far_side_of_edges(depth, edge_threshold, edge_width_px)
    if max_range is not None:
        keep &= ~(depth > max_range)
    if image is not None:
        keep &= _luminance(image, depth.shape) >= dark_threshold
    return _copy_where(depth, _drop_exact(keep, dropout, rng))


def sample_stereo(depth, intrinsics: Intrinsics, seed=0, baseline: float = 0.54, disparity_sigma_px: float = 0.25,
                  min_disparity_px: float = 1.0, fatten_px: int = 2, fatten_jump: float = 0.05, n_blobs: int = 3,
                  blob_radius_frac: tuple[float, float] = (0.03, 0.1)) -> np.ndarray:
    """Dense depth as a rectified stereo pair measures it, the left image being the reference.

    With disparity ``d = fx * baseline / depth`` (pixels; ``baseline`` metres, 0.54 = KITTI's rig):
    - pixels the right camera does not see are lost (what a left-right consistency check removes):
      :func:`seen_by_right_camera`;
    - foreground fattening: a window matcher gives the background within ``fatten_px`` pixels (along the row) of a
      surface whose disparity is larger by more than a factor ``1 + fatten_jump`` that surface's disparity (the
      measured value is then the *wrong* depth, as with real block matching); 0 disables it;
    - Gaussian disparity noise of ``disparity_sigma_px`` pixels (depth noise grows as depth squared);
    - pixels whose noisy disparity is below ``min_disparity_px`` are lost (beyond the rig's range), and
      ``n_blobs`` random elliptical blobs of :func:`sample_holes` (textureless or specular patches where matching
      fails).
    Returns HxW float32 metres, 0 = missing.
    """
    depth = _as_depth(depth)
    _check_intrinsics(intrinsics)  # disparity needs fx alone
    baseline = _check_positive("baseline", baseline, allow_none=False)
    min_disparity_px = _check_positive("min_disparity_px", min_disparity_px, allow_none=False)
    disparity_sigma_px = _check_non_negative("disparity_sigma_px", disparity_sigma_px)
    fatten_px = check_int("fatten_px", fatten_px, 0)
    fatten_jump = _check_positive("fatten_jump", fatten_jump, allow_none=False)
    rng = _rng(seed)

    ok = _measurable(depth)
    with np.errstate(over="ignore", divide="ignore"):  # a depth of 1e-320 m is an infinite disparity: not seen
        disp = np.where(ok, intrinsics.fx * baseline / np.where(ok, depth, 1.0), 0.0)
    seen = seen_by_right_camera(disp, ok)
    if fatten_px:
        spread = ndimage.maximum_filter1d(disp, size=2 * fatten_px + 1, axis=1, mode="nearest")
        disp = np.where(ok & (spread > (1 + fatten_jump) * disp), spread, disp)
    disp = disp + disparity_sigma_px * rng.standard_normal(disp.shape)
    keep = seen & (disp >= min_disparity_px)  # (seen implies a surface)
    keep &= sample_holes(np.where(ok, depth, 1.0), rng, n_blobs=n_blobs, blob_radius_frac=blob_radius_frac,
                         edge_threshold=None) > 0
    return np.where(keep, intrinsics.fx * baseline / np.where(keep, disp, 1.0), 0.0).astype(np.float32)


def seen_by_right_camera(disp: np.ndarray, surface: np.ndarray, tolerance_px: float = 0.5) -> np.ndarray:
    """Which pixels of a rectified pair's left image the right camera sees: HxW bool.

    ``disp`` is the HxW disparity (pixels) of the ``surface`` pixels (HxW bool; others are sky and hide nothing).
    Pixel u of a row lands at ``x = u - disp[u]`` in the right image. It is unseen when it lands left of that image
    (``x < -0.5``) or when something nearer by more than ``tolerance_px`` of disparity covers x: the span between
    two row neighbours of one surface (disparities within 1 px of each other; the disparity interpolated along the
    span), or a pixel without such a neighbour landing within half a pixel of x. So a stretched, slanted surface
    hides what lands between its pixels, and a steep one does not hide itself. Cost: a few passes over the image
    plus, per pixel, one comparison with each cover landing within about a pixel of it (a few on a natural scene:
    about half a second at 1920x1080 whatever the disparity range); where covers crowd (a surface the right camera
    sees edge-on), at most about one pass per pixel of disparity range (:mod:`depthkit.data._stereo_visibility`).
    """
    h, w = disp.shape
    surface = np.asarray(surface, dtype=bool)
    x = np.where(surface, np.arange(w) - disp, np.nan)
    seen = surface & (x >= -0.5)
    if w < 2 or not seen.any():
        return seen
    span = surface[:, :-1] & surface[:, 1:] & (np.abs(disp[:, 1:] - disp[:, :-1]) <= 1.0)
    values = disp[surface & np.isfinite(disp)]
    if not values.size:  # no finite disparity: nothing lands anywhere it could cover
        return seen
    reach = min(w - 1, int(math.ceil(float(values.max() - values.min()))) + 2)  # how far right a cover can start
    alone = surface.copy()  # pixels in no span
    alone[:, :-1] &= ~span
    alone[:, 1:] &= ~span
    hidden = covered(x, disp, seen, alone, span, reach, tolerance_px)
    return seen & ~hidden


def _far_side_of_edges(depth: np.ndarray, threshold: float, width: int) -> np.ndarray:
    """Pixels within ``width`` px (Chebyshev) of a surface nearer by more than a factor ``1 + threshold``.

    That is the far side of every relative depth jump ``|a - b| / min(a, b) > threshold``; the near side is kept.
    """
    ok = _measurable(depth)
    d = np.where(ok, depth, np.inf).astype(np.float64)
    nearest = ndimage.minimum_filter(d, size=2 * width + 1, mode="nearest")
    return ok & (d > (1 + threshold) * nearest)


def _luminance(image, shape) -> np.ndarray:
    """HxW luminance in [0, 1] of ``image`` (HxW or HxWx3; uint8, or floats in [0, 1]); ValueError otherwise."""
    img = np.asarray(image)
    if img.shape[:2] != shape or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"image must be HxW or HxWx3 with the depth's size {shape}; received shape {img.shape}.")
    if img.dtype != np.uint8:
        if not np.issubdtype(img.dtype, np.number) or np.issubdtype(img.dtype, np.complexfloating):
            raise ValueError(f"image must be uint8 or floats in [0, 1]; received dtype {img.dtype}.")
        with np.errstate(invalid="ignore"):
            inside = img.size == 0 or bool(np.all((img >= 0) & (img <= 1)))
        if not inside:
            finite = img[np.isfinite(img)]
            found = f"values from {finite.min()} to {finite.max()}" if finite.size else "no finite value"
            raise ValueError(f"image must be uint8 (0-255) or floats in [0, 1]; received {img.dtype} with {found} "
                             f"(NaN or inf: {finite.size < img.size}). Pass 8-bit levels as uint8, or divide by 255.")
    img = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    return img if img.ndim == 2 else img @ np.array([0.299, 0.587, 0.114])


def add_noise(sparse, seed, sigma: float = 0.0, relative: bool = True, outlier_ratio: float = 0.0,
              see_through_ratio: float = 0.0, *, outlier_range: tuple[float, float] | None = None,
              see_through_scale: tuple[float, float] = (1.2, 2.0), dense=None, window_px: int = 7,
              min_depth: float = 1e-3) -> np.ndarray:
    """Sensor noise on the measured pixels (> 0) of ``sparse`` (HxW metres); missing pixels stay 0.

    1. Gaussian noise on every measurement: standard deviation ``sigma`` times the depth (``relative=True``) or
       ``sigma`` metres (``relative=False``).
    2. Exactly ``round(outlier_ratio * count)`` measurements become outliers, uniform in ``outlier_range`` metres
       (default: half the smallest to 1.5x the largest measured depth).
    3. Exactly ``round(see_through_ratio * count)`` other measurements become see-through returns (glass, mesh):
       the farthest depth of ``dense`` within a ``window_px`` square around the pixel when ``dense`` is given and
       that is at least ``see_through_scale[0]`` times farther; otherwise depth x U(see_through_scale).
    Outliers and see-through returns replace the (noisy) value. Results are clamped to at least ``min_depth`` so
    noise never makes a measurement negative or missing; non-finite inputs are treated as missing (0).
    """
    sp = _as_depth(sparse, "sparse")
    rng = _rng(seed)
    sigma = _check_non_negative("sigma", sigma)
    if not isinstance(relative, (bool, np.bool_)):
        raise ValueError(f"relative must be True (sigma is a fraction of the depth) or False (sigma in metres); "
                         f"received {relative!r}.")
    outlier_ratio = _check_fraction("outlier_ratio", outlier_ratio)
    see_through_ratio = _check_fraction("see_through_ratio", see_through_ratio)
    if outlier_ratio + see_through_ratio > 1:
        raise ValueError(f"outlier_ratio + see_through_ratio must be <= 1; received {outlier_ratio} + "
                         f"{see_through_ratio}.")
    s_lo, s_hi = _pair(see_through_scale)
    if not 1.0 <= s_lo <= s_hi < np.inf:
        raise ValueError(f"see_through_scale must be (lo, hi) with 1 <= lo <= hi; received {see_through_scale!r}.")
    if outlier_range is not None:
        o_lo, o_hi = _pair(outlier_range)
        if not 0 < o_lo <= o_hi < np.inf:
            raise ValueError(f"outlier_range must be (lo, hi) metres with 0 < lo <= hi; received {outlier_range!r}.")
    min_depth = _check_positive("min_depth", min_depth, allow_none=False)
    window_px = check_int("window_px", window_px, 1)

    ok = _measurable(sp)
    idx = np.flatnonzero(ok)
    out = np.zeros(sp.shape, dtype=np.float32)
    if idx.size == 0:
        return out
    d = sp.flat[idx].astype(np.float64)
    vals = d + float(sigma) * (d if relative else 1.0) * rng.standard_normal(d.size)

    order = rng.permutation(d.size)
    n_out, n_see = int(round(outlier_ratio * d.size)), int(round(see_through_ratio * d.size))
    out_i, see_i = order[:n_out], order[n_out:n_out + n_see]
    if n_out:
        lo, hi = (0.5 * d.min(), 1.5 * d.max()) if outlier_range is None else (o_lo, o_hi)
        vals[out_i] = rng.uniform(lo, hi, n_out)
    if n_see:
        behind = d[see_i] * rng.uniform(s_lo, s_hi, n_see)
        if dense is not None:
            dn = _as_depth(dense, "dense")
            if dn.shape != sp.shape:
                raise ValueError(f"dense must have the sparse map's shape {sp.shape}; received {dn.shape}.")
            farthest = ndimage.maximum_filter(np.where(_measurable(dn), dn, 0), size=window_px).flat[idx[see_i]]
            behind = np.where(farthest >= s_lo * d[see_i], farthest, behind)
        vals[see_i] = behind
    out.flat[idx] = np.maximum(vals, min_depth)
    return out


# --------------------------------------------------------------------------------------------------- registry


def _random(depth, seed, intrinsics=None, n: int = NYU_NUM_POINTS, valid=None):
    return sample_random_points(depth, n, seed, valid=valid)


def _needs_intrinsics(pattern: str, intrinsics, what: str) -> None:
    if intrinsics is None:
        raise ValueError(f"the '{pattern}' pattern needs intrinsics (depthkit.geometry.Intrinsics) {what}; "
                         "pass intrinsics=Intrinsics(fx, fy, cx, cy).")


def _lidar(depth, seed, intrinsics=None, **kwargs):
    _needs_intrinsics("lidar", intrinsics, "to place its beams")
    return sample_lidar(depth, intrinsics, seed=seed, **kwargs)


def _holes(depth, seed, intrinsics=None, sigma: float = 0.0, outlier_ratio: float = 0.0, **kwargs):
    rng = _rng(seed)  # one stream for the holes and the noise: reproducible from ``seed``
    sparse = sample_holes(depth, rng, **kwargs)
    return add_noise(sparse, rng, sigma=sigma, outlier_ratio=outlier_ratio) if sigma or outlier_ratio else sparse


def _noisy(depth, seed, intrinsics=None, n: int = NYU_NUM_POINTS, sigma: float = 0.02, outlier_ratio: float = 0.01,
           valid=None):
    rng = _rng(seed)  # one stream for the draw and the noise: reproducible from ``seed``
    return add_noise(sample_random_points(depth, n, rng, valid=valid), rng, sigma=sigma, outlier_ratio=outlier_ratio)


def _stereo(depth, seed, intrinsics=None, **kwargs):
    _needs_intrinsics("stereo", intrinsics, "for its disparities")
    return sample_stereo(depth, intrinsics, seed=seed, **kwargs)


SAMPLERS: dict[str, Callable[..., np.ndarray]] = {"random": _random, "lidar": _lidar, "holes": _holes,
                                                  "noisy": _noisy, "stereo": _stereo}
"""Pattern name -> ``sampler(depth, seed, intrinsics=None, **kwargs) -> HxW float32 sparse depth``.

``random`` takes ``n`` (default 500, the NYUv2 protocol) and ``valid``; ``noisy`` is ``random`` followed by
:func:`add_noise` (``sigma`` 0.02 relative, ``outlier_ratio`` 0.01 by default: a noisy sensor); ``lidar`` needs
``intrinsics`` and takes :func:`sample_lidar`'s options; ``holes`` takes :func:`sample_holes`'s options and, for a
noisy ToF sensor, ``sigma`` / ``outlier_ratio`` (0 by default), applied by :func:`add_noise` after the holes;
``stereo`` needs ``intrinsics`` and takes :func:`sample_stereo`'s options.
"""


_FORWARDED = {"lidar": sample_lidar, "holes": sample_holes, "stereo": sample_stereo}
"""The sampling function each pattern passes its other options on to."""


def sparse_options(pattern: str) -> tuple[str, ...]:
    """The option names (``sparse_kwargs``) the sampler of ``pattern`` takes: its own and those it passes on."""
    import inspect

    names = []
    for fn in (SAMPLERS[pattern], _FORWARDED.get(pattern)):
        if fn is not None:
            names += [p.name for p in inspect.signature(fn).parameters.values()
                      if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("depth", "seed", "intrinsics")]
    return tuple(dict.fromkeys(names))


def check_sparse_kwargs(pattern: str, kwargs: dict) -> None:
    """Refuse (``ValueError``) an unknown ``pattern`` or an option its sampler does not take, naming those it does
    (a misspelt ``sparse_kwargs`` key would otherwise fail at the first item, inside a DataLoader worker)."""
    if pattern not in SAMPLERS:
        raise ValueError(f"unknown sparse pattern {pattern!r}; allowed: {', '.join(sorted(SAMPLERS))}.")
    unknown = sorted(set(kwargs) - set(sparse_options(pattern)))
    if unknown:
        raise ValueError(f"sparse pattern {pattern!r} takes the options {', '.join(sparse_options(pattern))}; "
                         f"received {unknown}. Check the spelling of sparse_kwargs.")


def make_sparse(depth, pattern: str, seed, intrinsics: Intrinsics | None = None, **kwargs) -> np.ndarray:
    """Sparse depth from dense ``depth`` (HxW metres) with the sampler registered as ``pattern`` in :data:`SAMPLERS`."""
    check_sparse_kwargs(pattern, kwargs)
    return SAMPLERS[pattern](depth, seed, intrinsics=intrinsics, **kwargs)
