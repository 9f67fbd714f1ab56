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


def test_backproject_skips_missing_and_refuses_a_mask_of_another_size():
    """Infinite depth and a masked array's masked pixels are missing (no [-inf, -inf, inf] point, no point from the
    value under a mask); a mask of another shape is refused rather than broadcast over every row."""
    intr = Intrinsics(100.0, 50.0, 2.0, 1.0)
    depth = np.zeros((3, 5), np.float32)
    depth[0, 4], depth[2, 0], depth[1, 1] = 2.0, 4.0, np.inf
    np.testing.assert_array_equal(backproject(depth, intr), backproject(np.where(np.isinf(depth), 0, depth), intr))
    masked = np.ma.masked_array(np.where(depth > 0, depth, 7.0), mask=depth == 0)
    np.testing.assert_array_equal(backproject(masked, intr), backproject(depth, intr))  # not the 7s under the mask
    with pytest.raises(ValueError, match=r"mask has shape \(5,\), the depth \(3, 5\)"):
        backproject(depth, intr, mask=np.ones(5, bool))


def test_intrinsics_fit_an_image_unless_the_principal_point_is_far_outside():
    """More than half the image beyond an edge does not fit (another resolution or order); a little outside does."""
    k = Intrinsics(500, 500, 325, 253)  # a 640x480 camera
    assert k.fits((480, 640)) and k.fits((240, 320)) and not k.fits((120, 160))
    assert Intrinsics(500, 500, -50, 10).fits((100, 200)) and not Intrinsics(500, 500, 10, 200).fits((100, 200))


def test_intrinsics_validation_and_scaling():
    with pytest.raises(ValueError, match="fx, fy > 0"):
        Intrinsics(0, 1, 0, 0)
    k = Intrinsics(100, 100, 49.5, 49.5).scaled(2, 2)
    assert (k.fx, k.cx) == (200, 99.5)  # the centre of a 100 px image stays the centre of the 200 px one


def _hull_by_hand(points):
    """Andrew's monotone chain over (x, y) integer points: the hull's corners, counter-clockwise."""
    pts = sorted(set(map(tuple, points)))
    if len(pts) < 3:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def test_convex_hull_mask_is_the_pixels_inside_the_measured_pixels_hull():
    """Pixel centres inside or on the hull of the True pixels' centres, the hull by Andrew's monotone chain and the
    inside test by cross products (on every edge's left). By hand: a right triangle's lattice points are those with
    row + col <= 10; rows of points (a LiDAR's beams) make the band between the first and last row; one pixel is its
    own hull; no True pixel gives none. Fails if the hull is the bounding box, if the fill leaves the edge out or if
    rows and columns are swapped."""
    from depthkit.geometry import convex_hull_mask

    tri = np.zeros((16, 14), bool)
    tri[0, 0] = tri[10, 0] = tri[0, 10] = True
    rr, cc = np.mgrid[:16, :14]
    np.testing.assert_array_equal(convex_hull_mask(tri), rr + cc <= 10)
    beams = np.zeros((40, 30), bool)
    beams[12:31:6, ::2] = True  # rows 12, 18, 24, 30, every other column (0 ... 28)
    rows, cols = np.mgrid[:40, :30]
    want = (rows >= 12) & (rows <= 30) & (cols <= 28)
    np.testing.assert_array_equal(convex_hull_mask(beams), want)
    one = np.zeros((5, 6), bool)
    one[2, 4] = True
    np.testing.assert_array_equal(convex_hull_mask(one), one)
    assert not convex_hull_mask(np.zeros((5, 6), bool)).any()
    diagonal = np.zeros((9, 9), bool)
    diagonal[[1, 3, 5, 7], [1, 3, 5, 7]] = True  # collinear points: the segment's pixels, not its bounding box
    want = np.eye(9, dtype=bool)
    want[0, 0] = want[8, 8] = False
    np.testing.assert_array_equal(convex_hull_mask(diagonal), want)
    rng = np.random.default_rng(0)
    for n in (3, 7, 40):
        mask = np.zeros((37, 53), bool)
        mask[rng.integers(0, 37, n), rng.integers(0, 53, n)] = True
        ys, xs = np.nonzero(mask)
        corners = _hull_by_hand(np.stack([xs, ys], 1))
        yy, xx = np.mgrid[:37, :53]
        inside = np.ones((37, 53), bool)
        for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
            inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
        np.testing.assert_array_equal(convex_hull_mask(mask), inside)
        assert convex_hull_mask(mask)[mask].all() and convex_hull_mask(mask).sum() > mask.sum()
