"""Tests for depthkit.metrics: hand-computed depth metrics, Canny depth edges, DBE (iBims-1 and SharpDepth), and the
preservation error. All maps are tiny and built here."""

import math

import numpy as np
import pytest
import torch

from depthkit.metrics import (
    DEPTH_METRIC_KEYS,
    dbe_metrics,
    depth_edges,
    depth_metrics,
    preservation_error,
    sharpdepth_dbe,
)

LN2 = math.log(2.0)


def step_map(h=48, w=64, col=32, near=1.0, far=3.0):
    """Depth ``near`` left of column ``col`` and ``far`` from it on: one vertical step between col-1 and col."""
    d = np.full((h, w), near)
    d[:, col:] = far
    return d


# ---------------------------------------------------------------------------------------------------- depth metrics
def test_keys_exact():
    m = depth_metrics(np.ones((4, 4)), np.ones((4, 4)))
    assert tuple(m) == DEPTH_METRIC_KEYS
    assert set(m) == {"mae", "rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "delta1", "delta2", "delta3",
                      "i_rmse", "silog"}
    assert all(isinstance(v, float) for v in m.values())


def test_perfect_prediction():
    gt = np.linspace(0.5, 10, 48).reshape(6, 8)
    m = depth_metrics(gt.copy(), gt)
    for k in ("mae", "rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "i_rmse", "silog"):
        assert m[k] == pytest.approx(0.0, abs=1e-12), k
    assert m["delta1"] == m["delta2"] == m["delta3"] == 1.0


def test_pred_twice_gt():
    gt = np.array([[1.0, 2.0], [4.0, 8.0]])
    m = depth_metrics(2 * gt, gt)
    assert m["abs_rel"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(gt.mean())  # |2g - g| = g
    assert m["rmse"] == pytest.approx(math.sqrt((gt**2).mean()))
    assert m["sq_rel"] == pytest.approx(gt.mean())  # g^2 / g
    assert m["rmse_log"] == pytest.approx(LN2)
    assert m["log10"] == pytest.approx(math.log10(2.0))
    assert m["silog"] == pytest.approx(0.0, abs=1e-9)  # a global scale is invisible to SILog
    # ratio 2 fails 1.25, 1.5625 and 1.953125
    assert (m["delta1"], m["delta2"], m["delta3"]) == (0.0, 0.0, 0.0)
    # inverse depth error 1000/g - 1000/(2g) = 500/g  (1/km)
    assert m["i_rmse"] == pytest.approx(math.sqrt(((500 / gt) ** 2).mean()))


def test_delta_thresholds():
    gt = np.ones((1, 4))
    pred = np.array([[1.2, 1.5, 1.9, 2.5]])  # ratios just inside 1.25, 1.5625, 1.953125, and outside all
    m = depth_metrics(pred, gt)
    assert m["delta1"] == pytest.approx(0.25)
    assert m["delta2"] == pytest.approx(0.5)
    assert m["delta3"] == pytest.approx(0.75)
    # max(p/g, g/p): under-prediction by the same factor counts the same
    assert depth_metrics(1 / pred, gt)["delta1"] == pytest.approx(0.25)


def test_two_pixel_hand_computed():
    gt = np.array([[1.0, 2.0]])
    pred = np.array([[2.0, 2.0]])
    m = depth_metrics(pred, gt)
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    assert m["abs_rel"] == pytest.approx(0.5)
    assert m["sq_rel"] == pytest.approx(0.5)
    assert m["rmse_log"] == pytest.approx(LN2 / math.sqrt(2))
    assert m["log10"] == pytest.approx(math.log10(2) / 2)
    assert m["delta1"] == pytest.approx(0.5)
    assert m["i_rmse"] == pytest.approx(1000 * 0.5 / math.sqrt(2))  # inverse errors (500, 0) per km
    # d = (ln2, 0): mean d^2 - mean(d)^2 = ln2^2/2 - ln2^2/4
    assert m["silog"] == pytest.approx(100 * LN2 / 2)


def test_batch_is_mean_of_per_image_not_pooled():
    gt = np.ones((2, 2, 2))
    pred = np.ones((2, 2, 2))
    valid = np.zeros((2, 2, 2), bool)
    valid[0, 0, 0] = True  # image 0: one valid pixel, error 1 m
    pred[0, 0, 0] = 2.0
    valid[1, :, :] = True  # image 1: four valid pixels, error 0
    valid[1, 1, 1] = False
    m = depth_metrics(pred, gt, valid)
    assert m["mae"] == pytest.approx(0.5)  # (1 + 0) / 2; pooling would give 1/4
    assert m["rmse"] == pytest.approx(0.5)
    assert m["delta1"] == pytest.approx(0.5)
    # the same number as averaging two single-image calls
    single = [depth_metrics(pred[i], gt[i], valid[i]) for i in range(2)]
    for k in DEPTH_METRIC_KEYS:
        assert m[k] == pytest.approx((single[0][k] + single[1][k]) / 2), k


def test_batch_skips_images_without_valid_pixels():
    gt = np.ones((3, 4, 4))
    gt[1] = 0.0  # no ground truth at all
    pred = np.full((3, 4, 4), 1.5)
    pred[2] = 1.0
    m = depth_metrics(pred, gt)
    assert m["mae"] == pytest.approx(0.25)  # mean of images 0 (0.5) and 2 (0.0)


def test_no_valid_pixel_raises():
    with pytest.raises(ValueError, match="no valid ground-truth pixel"):
        depth_metrics(np.ones((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no valid"):
        depth_metrics(np.ones((3, 3)), np.ones((3, 3)), valid=np.zeros((3, 3), bool))


def test_mask_excludes_invalid_gt_and_masked_pixels():
    gt = np.array([[1.0, 0.0, np.nan, np.inf, 1.0]])
    pred = np.array([[1.0, 50.0, 50.0, 50.0, 3.0]])
    assert depth_metrics(pred, gt)["mae"] == pytest.approx(1.0)  # only columns 0 and 4 count
    valid = np.array([[True, True, True, True, False]])
    assert depth_metrics(pred, gt, valid)["mae"] == pytest.approx(0.0)


def test_nonpositive_pred_is_finite():
    gt = np.array([[1.0, 2.0, 3.0]])
    pred = np.array([[0.0, -1.0, 3.0]])
    m = depth_metrics(pred, gt)
    assert all(math.isfinite(v) for v in m.values()), m
    assert m["abs_rel"] == pytest.approx((1 + 1.5 + 0) / 3)  # p used as given
    assert m["mae"] == pytest.approx((1 + 3 + 0) / 3)
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["rmse_log"] > 5  # clamped to 1e-6 m: ln(1e6) ~ 13.8, a huge but finite error


def test_nan_prediction_inside_mask_raises_but_outside_is_ignored():
    gt = np.array([[1.0, 2.0]])
    with pytest.raises(ValueError, match="NaN/inf"):
        depth_metrics(np.array([[np.nan, 2.0]]), gt)
    m = depth_metrics(np.array([[np.nan, 2.0]]), gt, valid=np.array([[False, True]]))
    assert m["mae"] == 0.0


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        depth_metrics(np.ones((4, 5)), np.ones((4, 6)))
    with pytest.raises(ValueError, match="HxW or NxHxW"):
        depth_metrics(np.ones((1, 1, 4, 4)), np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="valid"):
        depth_metrics(np.ones((4, 4)), np.ones((4, 4)), valid=np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="pred_floor"):
        depth_metrics(np.ones((4, 4)), np.ones((4, 4)), pred_floor=0)


def test_torch_equals_numpy():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 10, (2, 12, 16))
    gt[0, :3] = 0
    pred = gt * rng.uniform(0.7, 1.4, gt.shape)
    valid = rng.random(gt.shape) > 0.2
    ref = depth_metrics(pred, gt, valid)
    got = depth_metrics(torch.from_numpy(pred).float().requires_grad_(), torch.from_numpy(gt).float(),
                        torch.from_numpy(valid))
    for k in DEPTH_METRIC_KEYS:
        assert got[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k
    # bfloat16 tensors go through too
    bf = depth_metrics(torch.from_numpy(pred).bfloat16(), torch.from_numpy(gt).bfloat16())
    assert math.isfinite(bf["rmse"])


# ----------------------------------------------------------------------------------------------------------- edges
def test_step_edge_exactly_on_step():
    for near, far in ((1.0, 3.0), (3.0, 1.0)):  # rising or falling step: same pixels
        e = depth_edges(step_map(near=near, far=far))
        expected = np.zeros_like(e)
        expected[1:-1, 31] = True  # lower-index pixel of the step; the 1-px border never carries edges
        np.testing.assert_array_equal(e, expected)
    horizontal = depth_edges(step_map().T)
    assert set(np.argwhere(horizontal)[:, 0]) == {31}


def test_depth_and_disparity_edges_coincide():
    d = step_map()
    np.testing.assert_array_equal(depth_edges(d), depth_edges(1.0 / d))


def test_box_edges_follow_boundary():
    d = np.full((60, 80), 4.0)
    d[20:40, 25:55] = 2.0
    e = depth_edges(d)
    boundary = np.zeros_like(e)
    boundary[19, 25:55] = boundary[39, 25:55] = True  # top / bottom (row before each step)
    boundary[20:40, 24] = boundary[20:40, 54] = True  # left / right (column before each step)
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(~boundary)
    assert e.sum() > 80
    assert dist[e].max() <= 1.5  # every edge pixel hugs the box outline (corners round off slightly)
    assert e[19, 32:48].all() and e[39, 32:48].all() and e[27:33, 24].all() and e[27:33, 54].all()


def test_weak_step_below_relative_threshold_is_ignored():
    d = step_map(near=1.0, far=3.0)
    d[:, 48:] = 3.1  # a step 1/20 of the strong one: below 0.15 of the max gradient
    assert set(np.argwhere(depth_edges(d))[:, 1]) == {31}


def test_holes_and_constant_maps_give_no_edges():
    d = np.full((40, 50), 2.0)
    d[10:20, 10:25] = 0.0  # missing measurements
    d[25:30, 30:40] = np.nan
    assert not depth_edges(d).any()
    assert not depth_edges(np.ones((3, 3))).any()
    assert not depth_edges(np.zeros((2, 2))).any()


def test_edges_never_on_invalid_pixels():
    d = step_map()
    valid = np.ones(d.shape, bool)
    valid[:, 31] = False
    e = depth_edges(d, valid=valid)
    assert not e[:, 31].any()


def test_depth_edges_argument_errors():
    with pytest.raises(ValueError, match="low < high"):
        depth_edges(step_map(), low=0.3, high=0.15)
    with pytest.raises(ValueError, match="convention"):
        depth_edges(step_map(), convention="opencv")
    with pytest.raises(ValueError, match="HxW"):
        depth_edges(np.ones((2, 8, 8)))


# ------------------------------------------------------------------------------------------------------------- DBE
def _sharpdepth_edges(d):
    """SharpDepth's edge set: scikit-image-convention edges of depth or of disparity (0.1 / 0.2)."""
    return (depth_edges(d, low=0.1, high=0.2, convention="skimage")
            | depth_edges(1 / d, low=0.1, high=0.2, convention="skimage"))


@pytest.mark.parametrize("k", [0, 1, 3, 7])
def test_shifted_edge_gives_dbe_k(k):
    gt = step_map(col=30)
    pred = step_map(col=30 + k)
    m = dbe_metrics(pred, gt)
    assert m["dbe_acc"] == pytest.approx(k)
    assert m["dbe_comp"] == pytest.approx(k)
    # scikit-image's Canny (SharpDepth's) keeps both pixels of an exact tie, and SharpDepth joins the edges of depth
    # and of disparity: a symmetric step's edge is two columns wide (c - 1 and c), so a k-px shift leaves the two
    # edge columns k - 1 and k from the nearest other one
    step = _sharpdepth_edges(step_map(col=30))
    assert step[1:-1, 29].all() and step[1:-1, 30].all() and step.sum() == 2 * 46
    s = sharpdepth_dbe(pred, gt)
    assert s["dbe_acc"] == pytest.approx(max(k - 0.5, 0.0))
    assert s["dbe_comp"] == pytest.approx(max(k - 0.5, 0.0))


def test_dbe_truncation():
    gt = step_map(col=20)  # GT edge on column 19
    pred = np.ones((48, 64))
    pred[:, 22:] = 2.0  # predicted edge on column 21: 2 px from GT
    pred[:, 40:] = 3.0  # and on column 39: 20 px from GT, beyond tau = 10
    m = dbe_metrics(pred, gt)
    assert m["dbe_acc"] == pytest.approx(2.0)  # the far edge is left out of accuracy
    # completeness (official iBims code): (n * 2 + n * min(20, 10) + n * 2) / (3 n)
    assert m["dbe_comp"] == pytest.approx(14 / 3)
    # nothing within tau: both errors saturate at tau
    far = dbe_metrics(step_map(col=45), gt)
    assert far == {"dbe_acc": 10.0, "dbe_comp": 10.0}
    assert dbe_metrics(step_map(col=45), gt, max_dist=30.0)["dbe_acc"] == pytest.approx(25.0)


def test_dbe_missing_pred_edges_and_missing_gt_edges():
    gt = step_map()
    assert dbe_metrics(np.full(gt.shape, 2.0), gt) == {"dbe_acc": 10.0, "dbe_comp": 10.0}
    flat = dbe_metrics(gt, np.full(gt.shape, 2.0))
    assert math.isnan(flat["dbe_acc"]) and math.isnan(flat["dbe_comp"])


def test_dbe_affine_invariant_and_given_edges():
    gt = step_map(col=30)
    pred = step_map(col=33)
    assert dbe_metrics(5.0 * pred + 2.0, gt) == dbe_metrics(pred, gt)
    edges = np.zeros(gt.shape, bool)
    edges[1:-1, 25] = True  # annotated GT edges, 7 px from the predicted edge on column 32
    assert dbe_metrics(pred, gt, gt_edges=edges)["dbe_acc"] == pytest.approx(7.0)


def test_dbe_batch_averages_images_with_gt_edges():
    gt = np.stack([step_map(col=30), step_map(col=30), np.full((48, 64), 2.0)])
    pred = np.stack([step_map(col=31), step_map(col=33), step_map(col=40)])
    m = dbe_metrics(pred, gt)
    assert m["dbe_acc"] == pytest.approx(2.0)  # (1 + 3) / 2; the third image has no GT edge
    t = dbe_metrics(torch.from_numpy(pred), torch.from_numpy(gt))
    assert t == m


def test_dbe_valid_mask_drops_edges():
    gt = step_map(col=30)
    pred = step_map(col=30)
    pred[:, 50:] = 9.0  # a spurious predicted edge on column 49 (20 px away: no effect on accuracy)
    gt_holes = gt.copy()
    gt_holes[:, 45:] = 0.0  # GT missing there: the spurious edge is not judged at all
    with_spur = dbe_metrics(pred, gt)
    masked = dbe_metrics(pred, gt_holes)
    assert with_spur["dbe_acc"] == 0.0 and with_spur["dbe_comp"] > 0.0
    assert masked == {"dbe_acc": 0.0, "dbe_comp": 0.0}


def test_sharpdepth_completeness_is_untruncated_and_directed():
    gt = np.ones((48, 64))
    gt[:, 22:] = 2.0
    gt[:, 50:] = 3.0  # GT edges on columns 21 and 49
    pred = step_map(col=22, near=1.0, far=2.0)  # only the first edge
    s = sharpdepth_dbe(pred, gt)
    assert s["dbe_acc"] < 0.1  # on the first edge (float32 ties, as scikit-image breaks them, move a few pixels)
    from scipy import ndimage

    gt_e, pred_e = _sharpdepth_edges(gt), _sharpdepth_edges(pred)
    far = gt_e[:, 40:].sum()  # the GT edge the prediction misses, 27-28 px from its edge pixels
    assert far > 40 and not pred_e[:, 30:].any()
    expected = ndimage.distance_transform_edt(~pred_e)[gt_e].mean()  # every GT edge pixel, none truncated at 10 px
    assert s["dbe_comp"] == pytest.approx(expected)
    assert 27 * far / gt_e.sum() <= s["dbe_comp"] <= 28 * far / gt_e.sum() + 1e-9
    m = dbe_metrics(pred, gt)
    assert m["dbe_comp"] == pytest.approx(10 / 3)  # iBims: (n*0 + n*0 + n*min(28, 10)) / 3n


def test_sharpdepth_alignment():
    gt = step_map(col=30, near=2.0, far=6.0)
    pred = 0.1 * step_map(col=32, near=2.0, far=6.0) + 0.3  # wrong scale and shift, edge 2 px off
    for align in (None, "depth", "disparity"):
        assert sharpdepth_dbe(pred, gt, align=align)["dbe_acc"] == pytest.approx(1.5)  # two-wide edges (above)
    with pytest.raises(ValueError, match="align"):
        sharpdepth_dbe(pred, gt, align="median")


# ---------------------------------------------------------------------------------------------------- preservation
def test_preservation_error():
    sparse = np.zeros((4, 5))
    sparse[1, 2] = 3.0
    sparse[3, 4] = 5.0
    pred = np.full((4, 5), 100.0)  # far off at unmeasured pixels: irrelevant
    pred[1, 2] = 3.0
    pred[3, 4] = 5.25
    assert preservation_error(pred, sparse) == pytest.approx(0.25)
    assert preservation_error(torch.from_numpy(pred), torch.from_numpy(sparse)) == pytest.approx(0.25)
    assert preservation_error(pred, np.zeros((4, 5))) == 0.0
    pred[1, 2] = np.nan
    assert preservation_error(pred, sparse) == math.inf
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        preservation_error(pred, sparse.T)


def test_confidence_auroc_hand_cases():
    """AUROC of (1 - confidence) for errors above their median, over unmeasured valid pixels: computed by hand."""
    from depthkit.metrics import auroc, confidence_auroc

    gt = np.ones((1, 6), np.float32)
    pred = gt + np.array([[0.0, 0.1, 0.2, 0.3, 0.4, 5.0]], np.float32)  # the last pixel is measured (excluded)
    sparse = np.array([[0, 0, 0, 0, 0, 1.0]], np.float32)
    valid = np.ones_like(gt, bool)
    tracking = np.array([[1.0, 0.9, 0.8, 0.7, 0.6, 0.0]])  # confident where right: a perfect ranking
    assert confidence_auroc(tracking, pred, gt, valid, sparse) == pytest.approx(1.0)
    assert confidence_auroc(1.0 - tracking, pred, gt, valid, sparse) == pytest.approx(0.0)
    assert confidence_auroc(np.full((1, 6), 0.5), pred, gt, valid, sparse) == pytest.approx(0.5)
    # errors 0, .1, .2, .3, .4 -> median .2 -> positives {.3, .4}; scores 1 - c = [.3, .1, .8, .2, .6]:
    # pairs (pos, neg) won: .2 vs {.3, .1, .8} -> 1, .6 vs {.3, .1, .8} -> 2; 3 of 6
    mixed = np.array([[0.7, 0.9, 0.2, 0.8, 0.4, 0.0]])
    assert confidence_auroc(mixed, pred, gt, valid, sparse) == pytest.approx(3 / 6)
    assert np.isnan(auroc([0.1, 0.2], [True, True]))
