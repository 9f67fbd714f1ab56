"""SharpDepth's edge and DBE conventions checked against scikit-image itself, the library its evaluation code calls.

``depth_edges(convention="skimage")`` re-implements ``skimage.feature.canny`` on a map prepared as both scripts prepare
it (float32; depthkit does not depend on scikit-image at run time); here both run on the same maps and must agree
pixel for pixel, and ``sharpdepth_dbe`` is
recomputed from scikit-image's edges and scipy's distance transform, written out from its definition.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

try:
    from skimage import feature
except ImportError as exc:  # not skipped: these tests are what shows the two conventions are the public codes'
    raise ImportError("tests/test_metrics_skimage.py runs scikit-image itself; install the test extra: "
                      "pip install -e '.[test]'") from exc

from depthkit.data.synthetic import render_scene
from depthkit.metrics import depth_edges, sharpdepth_dbe


def _normalised(d: np.ndarray) -> np.ndarray:
    """As both public scripts prepare a map for scikit-image: float32, minus its minimum, over the new maximum."""
    x = np.asarray(d, dtype=np.float32)
    x = x - np.nanmin(x)
    return x / np.nanmax(x)


def _maps():
    """Depth maps with every pixel valid: rendered rooms at two sizes (planes, boxes, spheres; slopes steep enough
    at 96x128 that near-ties of the gradient magnitude on planes decide edges) and smoothed noise (every gradient
    direction), each also as disparity."""
    for seed, size in ((30000000, (96, 128)), (30000018, (96, 128)), (30000036, (96, 128)), (20000001, (120, 160))):
        d = render_scene(seed, *size, kind="indoor").depth.astype(np.float64)
        yield f"room {seed} {size}", d
        yield f"room {seed} {size} disparity", 1.0 / d
    noise = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(64, 80)), 2.0)
    yield "smoothed noise", noise - noise.min() + 1.0


@pytest.mark.parametrize("sigma,low,high", [(math.sqrt(2), 0.1, 0.2), (math.sqrt(2), 0.15, 0.3), (1.0, 0.05, 0.1)])
def test_skimage_convention_is_scikit_images_canny(sigma, low, high):
    n_edges = 0
    for name, d in _maps():
        ours = depth_edges(d, low=low, high=high, sigma=sigma, convention="skimage")
        theirs = feature.canny(_normalised(d), sigma=sigma, low_threshold=low, high_threshold=high)
        differ = np.argwhere(ours != theirs)
        assert len(differ) == 0, f"{name}: {len(differ)} pixels differ, e.g. {differ[:5].tolist()}"
        n_edges += int(theirs.sum())
    assert n_edges > 2000  # the maps have edges to compare


def _sharpdepth_dbe_by_hand(pred: np.ndarray, gt: np.ndarray, tau: float = 10.0) -> tuple[float, float]:
    """SharpDepth's DBE from its definition: edges = Canny (scikit-image, sigma sqrt(2), 0.1 / 0.2) of the min-max
    normalised depth or of the min-max normalised disparity; accuracy = mean distance from the predicted edge pixels
    closer than tau to a GT edge to the nearest GT edge (tau when there is none); completeness = mean distance from
    every GT edge pixel to the nearest predicted edge, untruncated."""
    def edges(d):
        return (feature.canny(_normalised(d), sigma=math.sqrt(2), low_threshold=0.1, high_threshold=0.2)
                | feature.canny(_normalised(1.0 / d), sigma=math.sqrt(2), low_threshold=0.1, high_threshold=0.2))

    pe, ge = edges(pred), edges(gt)
    to_gt = ndimage.distance_transform_edt(~ge)
    near = pe & (to_gt < tau)
    acc = float(to_gt[near].mean()) if near.any() else tau
    comp = float(ndimage.distance_transform_edt(~pe)[ge].mean()) if near.any() else tau
    return acc, comp


def test_sharpdepth_dbe_equals_its_definition_on_scikit_images_edges():
    checked = []
    for seed in (20000001, 20000003, 20000005):
        gt = render_scene(seed, 120, 160, kind="indoor").depth.astype(np.float64)
        for pred in (ndimage.gaussian_filter(gt, 2.0),                      # blurred: edges move and vanish
                     np.roll(gt, 3, axis=1) * 1.1,                          # shifted 3 px, scaled
                     gt + 0.05 * np.random.default_rng(seed).random(gt.shape)):  # noisy: spurious edges
            acc, comp = _sharpdepth_dbe_by_hand(pred, gt)
            got = sharpdepth_dbe(pred, gt)
            assert got["dbe_acc"] == pytest.approx(acc, rel=1e-12, abs=1e-12)
            assert got["dbe_comp"] == pytest.approx(comp, rel=1e-12, abs=1e-12)
            checked.append(acc)
    assert len(set(np.round(checked, 6))) > 5 and max(checked) > 0.5  # not all equal, not all zero


def _transition(edges_at, a: float, b: float) -> tuple[float, float]:
    """Adjacent float64 thresholds (a', b') in [a, b] at which ``edges_at`` (threshold -> edge map) changes."""
    ea, eb = edges_at(a), edges_at(b)
    assert (ea != eb).any()
    while np.nextafter(a, b) != b:
        mid = a + (b - a) / 2
        if mid in (a, b):
            mid = float(np.nextafter(a, b))
        if (edges_at(mid) != ea).any():
            b = mid
        else:
            a = mid
    return a, b


@pytest.mark.parametrize("which", ["low", "high"])
def test_thresholds_decide_exactly_where_scikit_images_do(which):
    """At the exact thresholds where scikit-image's output changes (found by bisection over float64 values) ours
    changes too: ``high`` is compared with ``>=``, and ``low`` after rounding to float32, as scikit-image's compiled
    loop takes it."""
    d = next(m for name, m in _maps() if name == "smoothed noise")
    img = _normalised(d)
    brackets = [(0.15, 0.25), (0.25, 0.35), (0.4, 0.5)] if which == "low" else [(0.1, 0.2), (0.2, 0.3), (0.3, 0.5)]
    for a, b in brackets:
        def theirs(t):
            low, high = (t, 0.6) if which == "low" else (0.01, t)
            return feature.canny(img, sigma=1.0, low_threshold=low, high_threshold=high)

        def ours(t):
            low, high = (t, 0.6) if which == "low" else (0.01, t)
            return depth_edges(d, low=low, high=high, sigma=1.0, convention="skimage")

        for t in _transition(theirs, a, b):
            np.testing.assert_array_equal(ours(t), theirs(t), err_msg=f"{which} threshold {t!r}")


def _ibims_script_dbe(pred: np.ndarray, gt_edges: np.ndarray, tau: float = 10.0) -> tuple[float, float]:
    """iBims-1's public evaluation script's DBE, from its definition: predicted edges = scikit-image Canny (sigma
    sqrt(2), absolute 0.15 / 0.3) of the min-max normalised prediction; accuracy = mean distance to the nearest GT
    edge over the predicted edges closer than tau; completeness = (sum over predicted edges of min(distance to GT
    edges, tau) + sum over GT edges of min(distance to predicted edges, tau)) / (both counts)."""
    pe = feature.canny(_normalised(pred), sigma=math.sqrt(2), low_threshold=0.15, high_threshold=0.3)
    to_gt = ndimage.distance_transform_edt(~gt_edges)
    near = pe & (to_gt < tau)
    if not near.any():
        return tau, tau
    to_pred = ndimage.distance_transform_edt(~pe)
    total = np.minimum(to_gt[pe], tau).sum() + np.minimum(to_pred[gt_edges], tau).sum()
    return float(to_gt[near].mean()), float(total / (pe.sum() + gt_edges.sum()))


def test_dbe_canny_switch_follows_ibims_public_script():
    from depthkit.metrics import dbe_metrics

    differs = 0
    for seed in (20000001, 20000003, 20000005):
        gt = render_scene(seed, 120, 160, kind="indoor").depth.astype(np.float64)
        annotated = feature.canny(_normalised(gt), sigma=math.sqrt(2), low_threshold=0.15, high_threshold=0.3)
        for pred in (ndimage.gaussian_filter(gt, 1.5), np.roll(gt, 2, axis=0) * 0.9):
            acc, comp = _ibims_script_dbe(pred, annotated)
            got = dbe_metrics(pred, gt, gt_edges=annotated, canny="skimage")
            assert got["dbe_acc"] == pytest.approx(acc, rel=1e-12, abs=1e-12)
            assert got["dbe_comp"] == pytest.approx(comp, rel=1e-12, abs=1e-12)
            assert dbe_metrics(pred, gt, canny="skimage") == got  # without annotations: the same Canny of the GT
            differs += dbe_metrics(pred, gt, gt_edges=annotated) != got  # the paper's edges are another set
    assert differs == 6
    with pytest.raises(ValueError, match="canny must be one of"):
        dbe_metrics(gt, gt, canny="opencv")


def _holed(d: np.ndarray, seed: int) -> np.ndarray:
    """``d`` with missing values as a prediction or a sensor leaves them: a block and scattered pixels at 0, a NaN
    corner."""
    d = d.copy()
    d[20:30, 40:60] = 0
    d[np.random.default_rng(seed).random(d.shape) < 0.005] = 0
    d[:5, :10] = np.nan
    return d


def _script_normalised(d: np.ndarray) -> np.ndarray:
    """As iBims-1's public script prepares a prediction: float32, zeros to NaN, then _normalised's min-max."""
    x = np.asarray(d, dtype=np.float32).copy()
    x[x == 0] = np.nan
    return _normalised(x)


@pytest.mark.parametrize("low,high", [(0.15, 0.3), (0.05, 0.1)])
def test_missing_nan_is_scikit_images_canny_of_the_scripts_nan_holes(low, high):
    n_edges = changed = 0
    for i, seed in enumerate((30000000, 30000018, 20000001)):
        d = _holed(render_scene(seed, 96, 128, kind="indoor").depth.astype(np.float64), i)
        for name, m in (("depth", d), ("disparity", np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0))):
            theirs = feature.canny(_script_normalised(m), sigma=math.sqrt(2), low_threshold=low, high_threshold=high)
            ours = depth_edges(m, low=low, high=high, convention="skimage", missing="nan")
            differ = np.argwhere(ours != theirs)
            assert len(differ) == 0, f"{seed} {name}: {len(differ)} pixels differ, e.g. {differ[:5].tolist()}"
            n_edges += int(theirs.sum())
            changed += int((depth_edges(m, low=low, high=high, convention="skimage") != theirs).sum())
    assert n_edges > 100 and changed > 100  # edges to compare, and the nearest-value fill would not give them
    with pytest.raises(ValueError, match="missing='nan' .* needs convention='skimage'"):
        depth_edges(d, missing="nan")


def test_dbe_region_image_is_ibims_public_scripts_dbe_with_masked_gt_and_holes():
    from depthkit.metrics import dbe_metrics

    differs = 0
    for i, seed in enumerate((20000001, 20000003)):
        gt = render_scene(seed, 120, 160, kind="indoor").depth.astype(np.float64)
        annotated = feature.canny(_normalised(gt), sigma=math.sqrt(2), low_threshold=0.15, high_threshold=0.3)
        valid = np.ones(gt.shape, bool)
        valid[:, :50] = False  # e.g. a window masked as invalid: the script scores its edges all the same
        for pred in (ndimage.gaussian_filter(gt, 1.5), _holed(np.roll(gt, 2, axis=0) * 0.9, i)):
            theirs = feature.canny(_script_normalised(pred), sigma=math.sqrt(2), low_threshold=0.15,
                                   high_threshold=0.3)
            to_gt = ndimage.distance_transform_edt(~annotated)
            near = theirs & (to_gt < 10)
            to_pred = ndimage.distance_transform_edt(~theirs)
            acc = to_gt[near].mean()
            comp = (np.minimum(to_gt[theirs], 10).sum() + np.minimum(to_pred[annotated], 10).sum()) / (
                theirs.sum() + annotated.sum())
            got = dbe_metrics(pred, gt, gt_edges=annotated, valid=valid, canny="skimage", region="image")
            assert got["dbe_acc"] == pytest.approx(acc, rel=1e-12, abs=1e-12)
            assert got["dbe_comp"] == pytest.approx(comp, rel=1e-12, abs=1e-12)
            differs += dbe_metrics(pred, gt, gt_edges=annotated, valid=valid, canny="skimage") != got
    assert differs == 4  # the default scores only where the GT is valid
    with pytest.raises(ValueError, match=r"region must be one of \('valid', 'image'\)"):
        dbe_metrics(gt, gt, region="all")
    with pytest.raises(ValueError, match=r"region='image' scores .* against a dataset's annotated edge map "
                                         r"\(gt_edges.*none was given"):
        dbe_metrics(gt, gt, valid=valid, region="image")  # GT edges from a partly valid map would meet any
