"""Depth metrics and depth-boundary-error (DBE) metrics, plus the preservation error of sparse measurements.

Inputs are numpy arrays or torch tensors (torch is never imported here; a tensor is recognised by its type's module
and moved to CPU float64), HxW or NxHxW, depth in metres with 0 = missing. Everything is computed in float64.

* :func:`depth_metrics` -- MAE, RMSE, AbsRel, SqRel, RMSE-log, log10, delta1-3, iRMSE, SILog. Per image over its valid
  mask, then averaged over images (the Marigold convention), not pooled over all pixels.
* :func:`depth_edges` -- Canny edges of a min-max normalised depth map (iBims-1: sigma = sqrt(2), hysteresis 0.15/0.3
  relative to the strongest gradient, as MATLAB's ``edge(I, 'canny', [0.15 0.3], sqrt(2))``), written with scipy.
* :func:`dbe_metrics` -- iBims-1 DBE accuracy / completeness in pixels, truncated at ``max_dist`` = 10 px.
* :func:`sharpdepth_dbe` -- the variant SharpDepth's evaluation code uses (edges of depth OR disparity, scikit-image
  style absolute thresholds 0.1/0.2, untruncated directed completeness).
* :func:`preservation_error` -- max |pred - sparse| over measured pixels, in metres.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

from depthkit.canny import canny

__all__ = [
    "DEPTH_METRIC_KEYS",
    "depth_metrics",
    "depth_edges",
    "dbe_metrics",
    "DBE_CANNY",
    "DBE_REGION",
    "sharpdepth_dbe",
    "preservation_error",
]

DEPTH_METRIC_KEYS = (
    "mae", "rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "delta1", "delta2", "delta3", "i_rmse", "silog",
)

_CONVENTIONS = ("matlab", "skimage")
DBE_CANNY = _CONVENTIONS
"""The edges :func:`dbe_metrics` can find (its ``canny``; ``depthkit eval --dbe-canny``), the default first."""
DBE_REGION = ("valid", "image")
"""Where :func:`dbe_metrics` scores edges (its ``region``; ``depthkit eval --dbe-region``), the default first."""
_MISSING = ("nearest", "nan")


# ----------------------------------------------------------------------------------------------------------- inputs
def _to_numpy(x, name: str, boolean: bool = False) -> np.ndarray:
    """numpy array (float64, or bool) from an array-like or a torch tensor, without importing torch."""
    if type(x).__module__.split(".")[0] == "torch":
        x = x.detach().cpu()
        # .double() first: numpy cannot hold bfloat16
        return (x.bool() if boolean else x.double()).numpy()
    try:
        return np.asarray(x, dtype=bool if boolean else np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor of numbers; received {type(x).__name__}."
        ) from exc


def _as_batch(pred, gt, valid, pred_name: str = "pred", gt_name: str = "gt"):
    """Validate shapes and return ``(pred, gt, valid_or_None, was_2d)`` as NxHxW arrays."""
    p = _to_numpy(pred, pred_name)
    g = _to_numpy(gt, gt_name)
    if p.shape != g.shape:
        raise ValueError(
            f"{pred_name} and {gt_name} must have the same shape; received {pred_name} {tuple(p.shape)} and "
            f"{gt_name} {tuple(g.shape)}. Resize the prediction to the ground-truth resolution first."
        )
    if p.ndim not in (2, 3):
        raise ValueError(
            f"{pred_name} and {gt_name} must be HxW or NxHxW; received shape {tuple(p.shape)}. "
            "Squeeze channel dimensions (e.g. Nx1xHxW -> NxHxW)."
        )
    v = None
    if valid is not None:
        v = _to_numpy(valid, "valid", boolean=True)
        if v.shape != g.shape:
            raise ValueError(
                f"valid must have the shape of {gt_name}; received valid {tuple(v.shape)} and "
                f"{gt_name} {tuple(g.shape)}."
            )
    was_2d = p.ndim == 2
    if was_2d:
        p, g = p[None], g[None]
        v = None if v is None else v[None]
    return p, g, v, was_2d


def _gt_mask(g: np.ndarray, v: np.ndarray | None) -> np.ndarray:
    """Pixels where ground truth exists: finite and > 0, and inside ``valid`` when given."""
    with np.errstate(invalid="ignore"):
        m = np.isfinite(g) & (g > 0)
    return m if v is None else (m & v)


# ---------------------------------------------------------------------------------------------------- depth metrics
def depth_metrics(pred, gt, valid=None, pred_floor: float = 1e-6) -> dict[str, float]:
    """Standard depth metrics of ``pred`` against ``gt`` (both metres, HxW or NxHxW, numpy or torch).

    The evaluation mask is ``valid & (gt > 0) & isfinite(gt)`` (``valid`` optional). With NxHxW inputs every image is
    scored over its own mask and the scores are averaged over images (Marigold convention); images without a single
    valid pixel are skipped. Definitions, with p = pred and g = gt on the mask:

    * ``mae`` = mean|p - g| (m), ``rmse`` = sqrt(mean (p - g)^2) (m)
    * ``abs_rel`` = mean(|p - g| / g), ``sq_rel`` = mean((p - g)^2 / g) (m)
    * ``rmse_log`` = sqrt(mean (ln p - ln g)^2), ``log10`` = mean|log10 p - log10 g|
    * ``delta{k}`` = fraction with max(p/g, g/p) < 1.25**k, k = 1, 2, 3, in [0, 1]
    * ``i_rmse`` = RMSE of inverse depth in 1/km (KITTI convention: 1000 / depth in metres)
    * ``silog`` = 100 * sqrt(mean(d^2) - mean(d)^2), d = ln p - ln g (KITTI's scale-invariant log error)

    Predictions <= 0 are legal input and never produce NaN/inf: the log, ratio and inverse metrics (rmse_log, log10,
    delta, i_rmse, silog) use ``max(p, pred_floor)`` (default 1e-6 m), so such pixels count as very large errors;
    mae, rmse, abs_rel and sq_rel use p as given. A NaN/inf prediction inside the mask is an error (ValueError).

    Returns a dict with exactly the keys of :data:`DEPTH_METRIC_KEYS`, as Python floats.
    """
    if not pred_floor > 0:
        raise ValueError(f"pred_floor must be > 0 metres; received {pred_floor}.")
    p, g, v, _ = _as_batch(pred, gt, valid)
    mask = _gt_mask(g, v)
    bad = mask & ~np.isfinite(p)
    if bad.any():
        raise ValueError(
            f"pred has {int(bad.sum())} NaN/inf values inside the evaluation mask; the metrics would be undefined. "
            "Fix the prediction, or exclude those pixels with `valid`."
        )
    per_image = [_image_metrics(pi[mi], gi[mi], pred_floor) for pi, gi, mi in zip(p, g, mask) if mi.any()]
    if not per_image:
        raise ValueError(
            f"no valid ground-truth pixel in any of the {len(g)} image(s): the mask valid & (gt > 0) & isfinite(gt) "
            "is empty. Check the depth units/scale of gt and the valid mask."
        )
    return {k: float(np.mean([m[k] for m in per_image])) for k in DEPTH_METRIC_KEYS}


def _image_metrics(p: np.ndarray, g: np.ndarray, floor: float) -> dict[str, float]:
    """Metrics of one image from its masked 1-D pixel vectors (g > 0 and finite, p finite)."""
    err = p - g
    pc = np.maximum(p, floor)
    d = np.log(pc) - np.log(g)
    ratio = np.maximum(pc / g, g / pc)
    inv_err = 1000.0 / pc - 1000.0 / g
    out = {
        "mae": np.mean(np.abs(err)),
        "rmse": np.sqrt(np.mean(err**2)),
        "abs_rel": np.mean(np.abs(err) / g),
        "sq_rel": np.mean(err**2 / g),
        "rmse_log": np.sqrt(np.mean(d**2)),
        "log10": np.mean(np.abs(d)) / math.log(10.0),
        "i_rmse": np.sqrt(np.mean(inv_err**2)),
        # variance can come out a hair below 0 in floating point when d is constant
        "silog": 100.0 * np.sqrt(max(np.mean(d**2) - np.mean(d) ** 2, 0.0)),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = np.mean(ratio < 1.25**k)
    return out


# ----------------------------------------------------------------------------------------------------------- edges
def depth_edges(depth, low: float = 0.15, high: float = 0.3, sigma: float = math.sqrt(2), valid=None,
                convention: str = "matlab", missing: str = "nearest") -> np.ndarray:
    """Canny edges of a depth (or disparity) map, HxW bool, as iBims-1 uses them for the depth-boundary error.

    The map is min-max normalised to [0, 1] over its valid pixels (``isfinite & > 0``, and ``valid`` when given);
    invalid pixels never carry an edge themselves, and ``missing`` says what they are to the filters: ``"nearest"``
    (default) the value of their nearest valid pixel, so that holes create no edges; ``"nan"`` (only with
    ``convention="skimage"``) NaN, as iBims-1's public script hands scikit-image a prediction's missing values, so
    that no edge is found within the smoothing's reach of a hole. Then: Gaussian smoothing (``sigma`` pixels),
    gradients, non-maximum suppression with linear interpolation along the gradient direction, and hysteresis with
    8-connectivity (weak pixels ``> low`` are kept when connected to a strong pixel ``> high``; ``>=`` both for
    ``"skimage"``). The outermost 1-px border never carries an edge (as in MATLAB).

    ``convention``:

    * ``"matlab"`` (default, iBims-1): gradients are derivative-of-Gaussian filters and ``low``/``high`` are fractions
      of the image's largest gradient magnitude, as MATLAB's ``edge(I, 'canny', [low high], sigma)``.
    * ``"skimage"`` (SharpDepth's evaluation, iBims-1's public script): ``skimage.feature.canny`` with its defaults,
      step for step (Gaussian smoothing renormalised at the border, Sobel, ``low``/``high`` absolute magnitudes of
      that response on the [0, 1]-normalised map; see :func:`_canny_skimage`), on the map cast to float32 and
      normalised in float32 as both scripts hand it to scikit-image: on a map with every pixel valid the edges are
      scikit-image's pixel for pixel (tests/test_metrics_skimage.py runs scikit-image itself). Both pixels of an exact
      tie stay, so a symmetric step can carry edge pixels on both of its sides.

    Known differences of ``"matlab"`` from MATLAB: kernels are scipy's odd, centred Gaussians (truncated at 4 sigma)
    instead of MATLAB's even-length ones, so edges may sit up to half a pixel apart; and where MATLAB keeps both
    pixels of an exact tie in non-maximum suppression and then thins, a tie here goes to the pixel with the lower
    coordinate along the dominant gradient axis. A step between columns c and c+1 thus gives edges exactly on column
    c, whichever side is nearer and whether depth or disparity is given.
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}; received {convention!r}.")
    if not (0 <= low < high):
        raise ValueError(f"Canny thresholds must satisfy 0 <= low < high; received low={low}, high={high}.")
    if convention == "matlab" and high >= 1:
        raise ValueError(f"with convention='matlab' thresholds are fractions of the max gradient, so high must be < 1; "
                         f"received high={high}.")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 pixels; received {sigma}.")
    if missing not in _MISSING:
        raise ValueError(f"missing must be one of {_MISSING}; received {missing!r}.")
    if missing == "nan" and convention != "skimage":
        raise ValueError("missing='nan' is how iBims-1's public script hands scikit-image a prediction; it needs "
                         f"convention='skimage' (received convention={convention!r}).")
    d = _to_numpy(depth, "depth")
    if d.ndim != 2:
        raise ValueError(f"depth must be an HxW map; received shape {tuple(d.shape)}. Loop over a batch yourself.")
    if convention == "skimage":  # iBims-1's and SharpDepth's scripts hand scikit-image float32 maps
        d = d.astype(np.float32)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d > 0)
    if valid is not None:
        v = _to_numpy(valid, "valid", boolean=True)
        if v.shape != d.shape:
            raise ValueError(f"valid must have the shape of depth; received valid {tuple(v.shape)} and depth "
                             f"{tuple(d.shape)}.")
        ok &= v
    edges = np.zeros(d.shape, dtype=bool)
    if min(d.shape) < 3 or ok.sum() < 2:
        return edges
    lo, hi = d[ok].min(), d[ok].max()
    if not hi > lo:
        return edges
    img = np.where(ok, (np.where(ok, d, lo) - lo) / (hi - lo), np.nan if missing == "nan" else 0.0)
    img = img.astype(d.dtype, copy=False)
    if missing == "nearest" and not ok.all():
        rows, cols = ndimage.distance_transform_edt(~ok, return_distances=False, return_indices=True)
        img = img[rows, cols]
    return canny(img, sigma, low, high, convention) & ok


# ------------------------------------------------------------------------------------------- depth-boundary error
def _dbe_image(pred_edges: np.ndarray, gt_edges: np.ndarray, max_dist: float, completeness: str):
    """(accuracy, completeness) in pixels for one image; NaN, NaN without GT edges."""
    if not gt_edges.any():
        return math.nan, math.nan
    dist_to_gt = ndimage.distance_transform_edt(~gt_edges)
    near = pred_edges & (dist_to_gt < max_dist)
    if not near.any():  # no predicted edge anywhere near a GT edge: both errors take the worst value
        return max_dist, max_dist
    acc = float(dist_to_gt[near].mean())
    dist_to_pred = ndimage.distance_transform_edt(~pred_edges)
    if completeness == "ibims":
        total = np.minimum(dist_to_gt[pred_edges], max_dist).sum() + np.minimum(dist_to_pred[gt_edges], max_dist).sum()
        comp = float(total / (pred_edges.sum() + gt_edges.sum()))
    else:
        comp = float(dist_to_pred[gt_edges].mean())
    return acc, comp


def _mean_over_images(pairs) -> dict[str, float]:
    acc = np.array([a for a, _ in pairs], dtype=np.float64)
    comp = np.array([c for _, c in pairs], dtype=np.float64)
    with warnings.catch_warnings():  # all-NaN (no GT edge in any image) is a legitimate NaN result
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"dbe_acc": float(np.nanmean(acc)), "dbe_comp": float(np.nanmean(comp))}


def dbe_metrics(pred, gt, gt_edges=None, valid=None, max_dist: float = 10.0,
                canny: str = "matlab", region: str = "valid") -> dict[str, float]:
    """iBims-1 depth-boundary error of ``pred`` (metres, HxW or NxHxW) in pixels: ``{"dbe_acc", "dbe_comp"}``.

    Predicted edges are :func:`depth_edges` of ``pred`` (Canny sigma = sqrt(2), thresholds 0.15/0.3, on the min-max
    normalised map); GT edges are ``gt_edges`` when given (e.g. iBims-1's annotated edges, HxW / NxHxW bool) or else
    :func:`depth_edges` of ``gt``. ``canny`` chooses how the thresholds are read, where iBims-1's paper and its public
    evaluation script differ:

    * ``"matlab"`` (default; the paper): fractions of the strongest gradient, as MATLAB's
      ``edge(I, 'canny', [0.15 0.3], sqrt(2))``, with which the paper's DBE figures were made.
    * ``"skimage"`` (the public Python script, v0.9, whose header warns that its Canny differs from the MATLAB one
      and its DBE does not match the paper): ``skimage.feature.canny(I, sigma=sqrt(2), low_threshold=0.15,
      high_threshold=0.3)`` on the map normalised in float32, as the script does -- absolute magnitudes, the edges
      behind the numbers papers that run that script publish. As there, a prediction's missing values (``<= 0`` or
      not finite) are NaN to the filters (:func:`depth_edges`' ``missing="nan"``): no edge within the smoothing's
      reach of one. (The script takes only zeros as missing; a negative or infinite prediction is no depth.)

    ``region`` says where edges are scored:

    * ``"valid"`` (default): only pixels in ``valid & (gt > 0) & isfinite(gt)`` take part; edges elsewhere are
      dropped from both sets, so that GT holes, masked windows or a protocol's crop never count.
    * ``"image"`` (iBims-1's public script, which scores the unmasked prediction against the annotated edge map):
      predicted edges over the whole image, and ``gt_edges`` as given, which it needs (a dataset's annotated edge
      map; GT edges found from a partly valid depth map would meet predicted edges where no GT can). With
      ``canny="skimage"`` this is the script's DBE.

    With tau = ``max_dist`` (10 px), following the official iBims-1 evaluation code:

    * ``dbe_acc`` -- mean distance from each predicted edge pixel that lies closer than tau to a GT edge to the
      nearest GT edge pixel (predicted edges farther away are ignored).
    * ``dbe_comp`` -- the symmetric truncated chamfer distance of the official code: the sum of min(dist, tau) over
      predicted edge pixels (to GT edges) and over GT edge pixels (to predicted edges), divided by the number of
      both. The paper words completeness as the GT-to-prediction direction only; published numbers use the code.
    * No predicted edge within tau of a GT edge: both are tau. No GT edge: both NaN (the image is skipped).

    NxHxW: the per-image values are averaged over the images that have GT edges (NaN if none has).
    Being built from min-max normalisation and relative thresholds, the result is invariant to an affine change
    ``a * pred + b`` (a > 0, pred staying > 0), so metric and affine-invariant predictions are scored alike.
    """
    if not max_dist > 0:
        raise ValueError(f"max_dist must be > 0 pixels; received {max_dist}.")
    if canny not in _CONVENTIONS:
        raise ValueError(f"canny must be one of {_CONVENTIONS} ('matlab': the iBims-1 paper's edges, 'skimage': its "
                         f"public Python script's); received {canny!r}.")
    if region not in DBE_REGION:
        raise ValueError(f"region must be one of {DBE_REGION} ('valid': edges where the GT is valid, 'image': the "
                         f"whole image, as iBims-1's public script scores them); received {region!r}.")
    if region == "image" and gt_edges is None:
        raise ValueError("region='image' scores predicted edges over the whole image against a dataset's annotated "
                         "edge map (gt_edges, e.g. iBims-1's), as iBims-1's public script does; none was given. Use "
                         "region='valid' (the default) for GT edges found from the depth.")
    p, g, v, was_2d = _as_batch(pred, gt, valid)
    region_mask = _gt_mask(g, v)
    ge = None
    if gt_edges is not None:
        ge = _to_numpy(gt_edges, "gt_edges", boolean=True)
        if ge.shape != (g.shape[1:] if was_2d else g.shape):
            raise ValueError(f"gt_edges must have the shape of gt; received gt_edges {tuple(ge.shape)} and gt "
                             f"{tuple(g.shape[1:] if was_2d else g.shape)}.")
        ge = ge[None] if was_2d else ge
    pairs = []
    scored = region_mask if region == "valid" else np.ones(g.shape, dtype=bool)
    missing = "nan" if canny == "skimage" else "nearest"
    for i in range(len(g)):
        pred_e = depth_edges(p[i], convention=canny, missing=missing) & scored[i]
        gt_e = ge[i] if ge is not None else depth_edges(g[i], valid=region_mask[i], convention=canny)
        pairs.append(_dbe_image(pred_e, gt_e & scored[i], max_dist, "ibims"))
    return _mean_over_images(pairs)


def _depth_or_disparity_edges(depth: np.ndarray, valid: np.ndarray | None, low: float, high: float,
                              sigma: float) -> np.ndarray:
    """Union of skimage-convention Canny edges of depth and of disparity 1 / max(depth, 1e-6), as SharpDepth."""
    disp = np.zeros_like(depth)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(depth) & (depth > 0)
    disp[ok] = 1.0 / np.maximum(depth[ok], 1e-6)
    kw = dict(low=low, high=high, sigma=sigma, valid=valid, convention="skimage")
    return depth_edges(depth, **kw) | depth_edges(disp, **kw)


def sharpdepth_dbe(pred, gt, valid=None, max_dist: float = 10.0, low: float = 0.1, high: float = 0.2,
                   sigma: float = math.sqrt(2), align: str | None = None) -> dict[str, float]:
    """The DBE variant of SharpDepth's public evaluation code (``dbe_acc``/``dbe_compl`` there), in pixels.

    Differences from :func:`dbe_metrics` (iBims-1), all taken from that code:

    * Edges of both ``pred`` and ``gt`` are the union of Canny edges of the min-max normalised depth and of the
      min-max normalised disparity ``1 / max(depth, 1e-6)``, with scikit-image conventions (Gaussian then Sobel,
      absolute thresholds ``low`` = 0.1 / ``high`` = 0.2, sigma = sqrt(2)) -- see :func:`depth_edges`.
    * ``dbe_comp`` is the mean distance from every GT edge pixel to the nearest predicted edge pixel, not truncated.
    * ``dbe_acc`` and the "tau when no predicted edge is within tau" rule are as in iBims-1.

    SharpDepth scores its metric predictions as they are; ``align`` optionally first fits scale and shift to ``gt``
    over the valid pixels by least squares, in ``"depth"`` or in ``"disparity"`` (1/pred against 1/gt) space -- its
    evaluation script offers the same for affine-invariant models such as Lotus. Two differences from that code, both
    nil on maps with every pixel valid: it finds the GT's edges on the whole map (min-max over all pixels, holes as
    0) and masks them afterwards, so the rim of a GT hole is an edge, while here the GT is normalised over its valid
    pixels and its holes take their nearest valid value (``valid & (gt > 0) & isfinite(gt)`` masks both edge sets);
    and its disparity is its own helper's (``depth2disparity``), here ``1 / max(depth, 1e-6)`` (0 where depth is
    not > 0). Like that code, the maps reach Canny as float32 (:func:`depth_edges`).
    """
    if align not in (None, "depth", "disparity"):
        raise ValueError(f"align must be None, 'depth' or 'disparity'; received {align!r}.")
    if not max_dist > 0:
        raise ValueError(f"max_dist must be > 0 pixels; received {max_dist}.")
    p, g, v, _ = _as_batch(pred, gt, valid)
    region = _gt_mask(g, v)
    pairs = []
    for i in range(len(g)):
        pi = p[i]
        if align is not None and region[i].sum() >= 2:
            from depthkit.geometry import align_depth, align_disparity

            if align == "depth":
                pi = align_depth(pi, g[i], region[i]).astype(np.float64)
            else:
                pi = align_disparity(1.0 / np.clip(pi, 1e-6, None), g[i], region[i]).astype(np.float64)
        pred_e = _depth_or_disparity_edges(pi, None, low, high, sigma) & region[i]
        gt_e = _depth_or_disparity_edges(g[i], region[i], low, high, sigma) & region[i]
        pairs.append(_dbe_image(pred_e, gt_e, max_dist, "directed"))
    return _mean_over_images(pairs)


# ------------------------------------------------------------------------------------------------------ preservation
def auroc(score, positive) -> float:
    """Area under the ROC curve of ``score`` for the boolean labels ``positive`` (Mann-Whitney U, ties count half);
    NaN when one class is empty."""
    from scipy.stats import rankdata

    score = np.asarray(score, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confidence_auroc(confidence, pred, gt, valid, sparse) -> float:
    """How well a confidence map (HxW in [0, 1]) ranks the errors of ``pred`` (HxW metres): the AUROC of
    ``1 - confidence`` for "absolute error above its median", over the pixels in ``valid`` that were not measured
    (``sparse`` > 0 pixels are exact by construction). 0.5 = no better than chance; NaN when undefined."""
    valid = np.asarray(valid, dtype=bool) & ~(np.asarray(sparse) > 0)
    err = np.abs(np.asarray(pred, np.float64) - np.asarray(gt, np.float64))[valid]
    if err.size < 2:
        return float("nan")
    return auroc(1.0 - np.asarray(confidence, np.float64)[valid], err > np.median(err))


def preservation_error(pred, sparse) -> float:
    """Largest |pred - sparse| (metres) over measured pixels (``sparse > 0`` and finite); 0.0 when none is measured.

    Shapes must match (HxW or NxHxW). A NaN/inf prediction at a measured pixel gives ``inf``: it was not preserved.
    """
    p, s, _, _ = _as_batch(pred, sparse, None, pred_name="pred", gt_name="sparse")
    measured = _gt_mask(s, None)
    if not measured.any():
        return 0.0
    diff = np.abs(p[measured] - s[measured])
    return float(np.where(np.isfinite(diff), diff, np.inf).max())
