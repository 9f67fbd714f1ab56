import numpy as np
import pytest

from depthkit.geometry import Intrinsics, align_depth, align_disparity, backproject, fit_scale_shift


def test_fit_scale_shift_recovers_affine_map():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 1, (20, 30))
    target = 3.5 * pred - 0.25
    s, t = fit_scale_shift(pred, target)
    assert s == pytest.approx(3.5) and t == pytest.approx(-0.25)


def test_fit_scale_shift_ignores_masked_outliers():
    pred = np.linspace(1, 2, 100).reshape(10, 10)
    target = 2 * pred + 1
    target[0, :5] = 1000.0
    mask = np.ones_like(pred, bool)
    mask[0, :5] = False
    s, t = fit_scale_shift(pred, target, mask)
    assert (s, t) == pytest.approx((2.0, 1.0))


def test_fit_scale_shift_needs_two_pixels():
    with pytest.raises(ValueError, match="at least 2"):
        fit_scale_shift(np.ones(3), np.ones(3), np.array([True, False, False]))


def test_align_depth_uses_valid_target_only():
    gt = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
    pred = np.array([[0.0, 0.5], [1.0, 99.0]], np.float32)  # gt = 2 * pred + 1 where gt > 0
    out = align_depth(pred, gt)
    np.testing.assert_allclose(out[gt > 0], gt[gt > 0], atol=1e-5)


def test_align_disparity_recovers_depth_from_affine_disparity():
    depth = np.linspace(1, 10, 50, dtype=np.float32).reshape(5, 10)
    rel_disp = 0.5 * (1 / depth) + 0.1  # an affine-invariant disparity prediction
    out = align_disparity(rel_disp, depth)
    np.testing.assert_allclose(out, depth, rtol=1e-4)


def test_backproject_matches_pinhole_model():
    intr = Intrinsics(100.0, 50.0, 2.0, 1.0)
    depth = np.zeros((3, 5), np.float32)
    depth[0, 4] = 2.0
    depth[2, 0] = 4.0
    pts = backproject(depth, intr)
    np.testing.assert_allclose(pts, [[(4 - 2) / 100 * 2, (0 - 1) / 50 * 2, 2.0], [(0 - 2) / 100 * 4, (2 - 1) / 50 * 4, 4.0]])


def test_intrinsics_validation_and_scaling():
    with pytest.raises(ValueError, match="fx, fy > 0"):
        Intrinsics(0, 1, 0, 0)
    k = Intrinsics(100, 100, 49.5, 49.5).scaled(2, 2)
    assert (k.fx, k.cx) == (200, 99.5)  # the centre of a 100 px image stays the centre of the 200 px one
