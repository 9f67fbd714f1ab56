"""Tests for the sparse depth samplers and noise models (depthkit.data.sparse)."""

import math
import warnings

import numpy as np
import pytest

from depthkit.data.sparse import (
    SAMPLERS,
    add_noise,
    lidar_rows,
    make_sparse,
    sample_holes,
    sample_lidar,
    sample_random_points,
    sample_stereo,
    seen_by_right_camera,
)
from depthkit.geometry import Intrinsics

K = Intrinsics(fx=50.0, fy=50.0, cx=40.0, cy=30.0)  # an 81-column image has its centre column at u = 40


def _ramp(h=61, w=81):
    """Distinct depths per pixel (1..~6 m), so a copied value identifies its pixel."""
    return (1.0 + np.arange(h * w, dtype=np.float32).reshape(h, w) / 1000.0).astype(np.float32)


# ------------------------------------------------------------------------------------------- random points


def test_random_points_exact_count_and_exact_values():
    depth = _ramp()
    depth[:10] = 0  # no surface there
    out = sample_random_points(depth, 500, seed=0)
    assert out.dtype == np.float32 and out.shape == depth.shape
    m = out > 0
    assert m.sum() == 500
    np.testing.assert_array_equal(out[m], depth[m])  # copied bit-exactly
    assert not m[:10].any()


def test_random_points_determinism_and_generator_seed():
    depth = _ramp()
    a, b = sample_random_points(depth, 100, 3), sample_random_points(depth, 100, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample_random_points(depth, 100, 4))
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(sample_random_points(depth, 100, g1), sample_random_points(depth, 100, g2))


def test_random_points_respects_valid_and_takes_all_when_short():
    depth = _ramp(20, 30)
    depth[0, 0] = np.nan
    depth[0, 1] = -2.0
    depth[0, 2] = np.inf
    valid = np.zeros(depth.shape, bool)
    valid[0, :10] = True  # 7 usable pixels: 3 of the 10 are nan/negative/inf
    out = sample_random_points(depth, 500, 0, valid=valid)
    assert (out > 0).sum() == 7 and np.isfinite(out).all()
    np.testing.assert_array_equal(out[0, 3:10], depth[0, 3:10])
    assert (sample_random_points(depth, 0, 0) == 0).all()


@pytest.mark.parametrize("kwargs", [{"n": -1}, {"n": 2.5}, {"n": True}, {"seed": -3}, {"seed": "a"},
                                    {"seed": None}, {"valid": np.ones((2, 2), bool)}])
def test_random_points_invalid_args(kwargs):
    args = {"depth": _ramp(10, 10), "n": 5, "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        sample_random_points(**args)


def test_non_2d_depth_is_rejected():
    with pytest.raises(ValueError, match="HxW"):
        sample_random_points(np.ones((4, 4, 1)), 3, 0)


# ------------------------------------------------------------------------------------------- lidar


def test_lidar_scanline_rows_match_projected_elevations():
    depth = np.full((61, 81), 5.0, np.float32)
    out = sample_lidar(depth, K, n_beams=5, vertical_fov_deg=(-20.0, 20.0), drop_ratio=0.0)
    elevs = np.linspace(-20, 20, 5)
    # centre column: v = cy - fy * tan(e)
    expected = sorted(int(round(30 - 50 * math.tan(math.radians(e)))) for e in elevs)
    assert np.flatnonzero(out[:, 40]).tolist() == expected  # rows 12, 21, 30, 39, 48
    # every column carries one return per beam that lands in the image, all on the predicted curves
    for u in (0, 17, 80):
        rows = sorted(int(round(r)) for e in elevs for r in lidar_rows(K, 81, e, [u]) if 0 <= round(r) < 61)
        assert np.flatnonzero(out[:, u]).tolist() == rows
    # the curves bend away from the principal point at the image sides
    assert lidar_rows(K, 81, 20.0, [0])[0] < lidar_rows(K, 81, 20.0, [40])[0]
    assert set(np.unique(out)) == {0.0, 5.0}


def test_samplers_read_masked_pixels_as_missing_and_refuse_intrinsics_of_another_size():
    """A masked array's masked pixels are no surface (as in the Pipeline): only the 2 unmasked pixels can be
    drawn, never the 9 m under the mask. Intrinsics whose principal point lies far outside the map (those of a
    640x480 camera on a 160x120 map) are refused: the scan would have half its points and bent scanlines."""
    depth = np.ma.masked_array(np.full((20, 30), 9.0, np.float32), mask=True)
    depth.mask[3, 4] = depth.mask[10, 20] = False
    depth.data[3, 4], depth.data[10, 20] = 1.0, 2.0
    out = sample_random_points(depth, 10, seed=0)
    assert sorted(out[out > 0].tolist()) == [1.0, 2.0]
    big = Intrinsics(fx=518.9, fy=519.5, cx=324.6, cy=252.7)
    gt = np.full((120, 160), 3.0, np.float32)
    with pytest.raises(ValueError, match=r"principal point \(324.6, 252.7\) lies far outside the 160x120 depth"):
        sample_lidar(gt, big, seed=0)
    assert (sample_lidar(gt, big.scaled(0.25, 0.25), seed=0) > 0).any()


def test_lidar_copies_values_step_drops_and_sky():
    depth = _ramp()
    depth[:20] = 0  # sky in the upper rows
    full = sample_lidar(depth, K, n_beams=32, vertical_fov_deg=40.0, horizontal_step_px=3, drop_ratio=0.0)
    m = full > 0
    np.testing.assert_array_equal(full[m], depth[m])
    assert not m[:20].any()
    assert set(np.flatnonzero(m.any(axis=0)) % 3) == {0}  # only every third column
    assert (m.sum(axis=0) <= 32).all()
    dropped = sample_lidar(depth, K, n_beams=32, vertical_fov_deg=40.0, horizontal_step_px=3, drop_ratio=0.25,
                           seed=1)
    md = dropped > 0
    assert not (md & ~m).any()  # drops only remove
    assert md.sum() == m.sum() - round(0.25 * m.sum())
    np.testing.assert_array_equal(dropped, sample_lidar(depth, K, n_beams=32, vertical_fov_deg=40.0,
                                                        horizontal_step_px=3, drop_ratio=0.25, seed=1))
    assert not np.array_equal(dropped, sample_lidar(depth, K, n_beams=32, vertical_fov_deg=40.0,
                                                    horizontal_step_px=3, drop_ratio=0.25, seed=2))


def test_lidar_max_range_uses_euclidean_range():
    depth = np.full((61, 81), 10.0, np.float32)
    out = sample_lidar(depth, K, n_beams=9, vertical_fov_deg=40.0, drop_ratio=0.0, max_range=10.5)
    v, u = np.nonzero(out)
    ray = np.sqrt(1 + ((u - 40) / 50.0) ** 2 + ((v - 30) / 50.0) ** 2)
    assert (10.0 * ray <= 10.5).all() and len(v) > 0
    everything = sample_lidar(depth, K, n_beams=9, vertical_fov_deg=40.0, drop_ratio=0.0)
    assert (everything > 0).sum() > len(v)  # the image corners are farther than 10.5 m along the ray


@pytest.mark.parametrize("kwargs", [{"n_beams": 0}, {"vertical_fov_deg": (5.0, -5.0)}, {"vertical_fov_deg": 200.0},
                                    {"vertical_fov_deg": "wide"}, {"horizontal_step_px": 0}, {"drop_ratio": 1.5},
                                    {"max_range": -1.0}, {"intrinsics": (50, 50, 40, 30)}])
def test_lidar_invalid_args(kwargs):
    args = {"depth": np.ones((61, 81), np.float32), "intrinsics": K, **kwargs}
    with pytest.raises(ValueError):
        sample_lidar(**args)


# ------------------------------------------------------------------------------------------- holes


def test_holes_is_a_subset_with_blobs_and_is_deterministic():
    depth = _ramp()
    out = sample_holes(depth, 0, n_blobs=5, edge_threshold=None)
    m = out > 0
    np.testing.assert_array_equal(out[m], depth[m])
    assert 0.02 < 1 - m.mean() < 0.9
    np.testing.assert_array_equal(out, sample_holes(depth, 0, n_blobs=5, edge_threshold=None))
    assert not np.array_equal(out, sample_holes(depth, 1, n_blobs=5, edge_threshold=None))
    assert (sample_holes(depth, 0, n_blobs=0, edge_threshold=None) == depth).all()


def test_holes_drop_the_far_side_of_depth_edges():
    depth = np.full((20, 30), 4.0, np.float32)
    depth[:, :15] = 2.0  # near surface on the left, a jump at column 15
    out = sample_holes(depth, 0, n_blobs=0, edge_threshold=0.1, edge_width_px=2)
    removed = np.flatnonzero((out == 0).all(axis=0)).tolist()
    assert removed == [15, 16]  # far side only, two pixels wide
    assert (out[:, :15] == 2.0).all() and (out[:, 17:] == 4.0).all()
    # a gentle slope is not an edge
    slope = np.tile(np.linspace(2, 3, 30, dtype=np.float32), (20, 1))
    assert (sample_holes(slope, 0, n_blobs=0, edge_threshold=0.1) > 0).all()


def test_holes_range_dark_and_dropout():
    depth = np.full((20, 30), 2.0, np.float32)
    depth[:, 20:] = 6.0
    image = np.full((20, 30, 3), 200, np.uint8)
    image[:5] = 5  # dark rows
    out = sample_holes(depth, 0, n_blobs=0, edge_threshold=None, max_range=4.5, image=image)
    assert (out[:, 20:] == 0).all() and (out[:5] == 0).all()
    assert (out[5:, :20] == 2.0).all()
    thin = sample_holes(depth, 3, n_blobs=0, edge_threshold=None, dropout=0.3)
    assert (thin > 0).sum() == 600 - round(0.3 * 600)
    as_floats = sample_holes(depth, 0, n_blobs=0, edge_threshold=None, max_range=4.5, image=image / 255.0)
    np.testing.assert_array_equal(as_floats, out)  # floats in [0, 1] are the same image


@pytest.mark.parametrize("image", [np.full((20, 30, 3), 5.0), np.full((20, 30), np.nan), np.full((20, 30), -0.1)])
def test_holes_refuse_a_float_image_outside_0_1(image):
    """A float image in 8-bit levels (5.0 = dark) would otherwise count as bright: nothing dark would be removed."""
    with pytest.raises(ValueError, match=r"image must be uint8 \(0-255\) or floats in \[0, 1\]; received float64"):
        sample_holes(np.ones((20, 30), np.float32), 0, n_blobs=0, edge_threshold=None, image=image)


@pytest.mark.parametrize("kwargs", [{"n_blobs": -1}, {"blob_radius_frac": (0.2, 0.1)}, {"edge_threshold": 0.0},
                                    {"dropout": 2.0}, {"image": np.zeros((3, 3), np.uint8)}, {"seed": 1.5}])
def test_holes_invalid_args(kwargs):
    args = {"depth": np.ones((20, 30), np.float32), "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        sample_holes(**args)


# ------------------------------------------------------------------------------------------- noise


def test_gaussian_noise_relative_and_absolute_sigma():
    sparse = np.zeros((400, 500), np.float32)
    sparse[::2] = 4.0  # 100k measurements, 100k missing
    rel = add_noise(sparse, 0, sigma=0.05, relative=True)
    m = sparse > 0
    assert ((rel > 0) == m).all()  # missing stays missing, measured stays measured
    err = rel[m] / 4.0 - 1
    assert abs(err.std() - 0.05) < 0.002 and abs(err.mean()) < 0.002
    ab = add_noise(sparse, 0, sigma=0.1, relative=False)
    assert abs((ab[m] - 4.0).std() - 0.1) < 0.004
    np.testing.assert_array_equal(rel, add_noise(sparse, 0, sigma=0.05))
    assert not np.array_equal(rel, add_noise(sparse, 1, sigma=0.05))


def test_outliers_exact_ratio_and_range():
    sparse = np.zeros((100, 100), np.float32)
    sparse[::2, ::2] = 3.0  # 2500 points
    out = add_noise(sparse, 0, outlier_ratio=0.1, outlier_range=(10.0, 20.0))
    changed = (out != sparse) & (sparse > 0)
    assert changed.sum() == 250
    assert ((out[changed] >= 10.0) & (out[changed] <= 20.0)).all()


def test_see_through_returns_are_farther():
    sparse = np.zeros((100, 100), np.float32)
    sparse[::2, ::2] = 3.0
    out = add_noise(sparse, 0, see_through_ratio=0.2)
    changed = out != sparse
    assert changed.sum() == 500
    assert ((out[changed] >= 3.0 * 1.2 - 1e-5) & (out[changed] <= 3.0 * 2.0 + 1e-5)).all()
    # with the dense map, the return comes from the farthest surface in the window (a wall at 7 m behind glass)
    dense = np.full((100, 100), 3.0, np.float32)
    dense[:, 60:] = 7.0
    sp = np.zeros_like(dense)
    sp[50, 57] = 3.0  # 3 px from the far surface: inside a 7 px window
    out = add_noise(sp, 0, see_through_ratio=1.0, dense=dense, window_px=7)
    assert out[50, 57] == 7.0


def test_noise_never_negative_or_nan():
    sparse = np.zeros((50, 50), np.float32)
    sparse[::3, ::3] = 0.5
    sparse[0, 1] = np.nan
    out = add_noise(sparse, 0, sigma=5.0, relative=False, outlier_ratio=0.2, see_through_ratio=0.2)
    assert np.isfinite(out).all() and (out >= 0).all()
    assert out[0, 1] == 0
    assert ((out > 0) == (sparse > 0)).all()  # clamped at min_depth instead of becoming missing


@pytest.mark.parametrize("kwargs", [{"sigma": -0.1}, {"outlier_ratio": 1.2}, {"see_through_ratio": -0.1},
                                    {"outlier_ratio": 0.6, "see_through_ratio": 0.6},
                                    {"see_through_scale": (0.5, 2.0)}, {"outlier_range": (5.0, 1.0)},
                                    {"min_depth": 0.0}, {"relative": "no"}, {"relative": 0.02}])
def test_noise_invalid_args(kwargs):
    with pytest.raises(ValueError):
        add_noise(np.ones((5, 5), np.float32), 0, **kwargs)


# ------------------------------------------------------------------------------------------- registry


def test_make_sparse_dispatches_and_reports_unknown_names():
    depth = _ramp()
    assert set(SAMPLERS) == {"random", "lidar", "holes", "noisy", "stereo"}
    r = make_sparse(depth, "random", 5)
    assert (r > 0).sum() == 500  # NYUv2 protocol default
    np.testing.assert_array_equal(make_sparse(depth, "random", 5, n=20), sample_random_points(depth, 20, 5))
    np.testing.assert_array_equal(make_sparse(depth, "lidar", 2, intrinsics=K, n_beams=8),
                                  sample_lidar(depth, K, n_beams=8, seed=2))
    np.testing.assert_array_equal(make_sparse(depth, "holes", 2, n_blobs=3), sample_holes(depth, 2, n_blobs=3))
    # a noisy ToF sensor: the holes, then add_noise on the same generator (step by step here)
    rng = np.random.default_rng(4)
    expected = add_noise(sample_holes(depth, rng, dropout=0.2), rng, sigma=0.01, outlier_ratio=0.05)
    tof = make_sparse(depth, "holes", 4, dropout=0.2, sigma=0.01, outlier_ratio=0.05)
    np.testing.assert_array_equal(tof, expected)
    clean = make_sparse(depth, "holes", 4, dropout=0.2)
    assert np.array_equal(tof > 0, clean > 0) and not np.array_equal(tof, clean)
    # noisy = the random draw, then add_noise on the same generator (computed here step by step)
    rng = np.random.default_rng(7)
    expected = add_noise(sample_random_points(depth, 50, rng), rng, sigma=0.02, outlier_ratio=0.1)
    noisy = make_sparse(depth, "noisy", 7, n=50, outlier_ratio=0.1)
    np.testing.assert_array_equal(noisy, expected)
    assert (noisy > 0).sum() == 50 and not np.array_equal(noisy, make_sparse(depth, "random", 7, n=50))
    np.testing.assert_array_equal(make_sparse(depth, "stereo", 3, intrinsics=K, fatten_px=1),
                                  sample_stereo(depth, K, seed=3, fatten_px=1))
    with pytest.raises(ValueError, match="intrinsics"):
        make_sparse(depth, "stereo", 0)
    with pytest.raises(ValueError, match="holes, lidar, noisy, random, stereo"):
        make_sparse(depth, "grid", 0)
    with pytest.raises(ValueError, match="intrinsics"):
        make_sparse(depth, "lidar", 0)


# ------------------------------------------------------------------------------------------------------ stereo
STEREO_EXACT = dict(disparity_sigma_px=0.0, fatten_px=0, n_blobs=0, min_disparity_px=1e-6)


def _box_scene(u0, u1, h=6, w=60, near=2.0, far=10.0):
    """A wall at ``far`` metres with a box at ``near`` metres over columns [u0, u1) (every row)."""
    depth = np.full((h, w), far, np.float32)
    depth[:, u0:u1] = near
    return depth


def _linked(disp_row, surface_row, a):
    """Whether pixels a and a + 1 of a row are one surface (both surface, disparities within 1 px)."""
    b = a + 1
    return 0 <= a and b < len(disp_row) and bool(surface_row[a] and surface_row[b]) and abs(
        disp_row[a] - disp_row[b]) <= 1.0


def _seen_by_brute_force(disp, surface, tol=0.5):
    """Per pixel, by loops: seen unless it lands left of the right image, or a span between same-surface neighbours
    (disparities within 1 px) passing over where it lands, or a pixel in no span landing within half a pixel of it,
    is nearer there by more than ``tol`` px of disparity."""
    h, w = disp.shape
    seen = np.zeros((h, w), bool)
    for v in range(h):
        x = [u - disp[v, u] for u in range(w)]
        for u in range(w):
            if not surface[v, u] or x[u] < -0.5:
                continue
            hidden = False
            for o in range(w):
                if o == u or not surface[v, o]:
                    continue
                alone = not _linked(disp[v], surface[v], o - 1) and not _linked(disp[v], surface[v], o)
                if alone and abs(x[o] - x[u]) <= 0.5 and disp[v, o] > disp[v, u] + tol:
                    hidden = True
                if _linked(disp[v], surface[v], o):
                    lo, hi = sorted((x[o], x[o + 1]))
                    if lo <= x[u] <= hi:
                        t = 0.0 if x[o + 1] == x[o] else (x[u] - x[o]) / (x[o + 1] - x[o])
                        if disp[v, o] + t * (disp[v, o + 1] - disp[v, o]) > disp[v, u] + tol:
                            hidden = True
            seen[v, u] = not hidden
    return seen


def test_stereo_loses_exactly_what_the_right_camera_cannot_see():
    k = Intrinsics(fx=100.0, fy=100.0, cx=30.0, cy=3.0)  # baseline 0.5 m: the wall's disparity 5 px, the box's 25
    wide = sample_stereo(_box_scene(30, 55), k, baseline=0.5, **STEREO_EXACT) > 0
    # a wide box hides the 20 wall columns left of it (25 - 5 px); the left 5 columns land outside the right image
    expected = np.ones_like(wide)
    expected[:, :5] = False
    expected[:, 10:30] = False
    np.testing.assert_array_equal(wide, expected)
    # a box narrower than the disparities' difference hides wall columns that do not touch it: those that land
    # under it in the right view (10 columns, shifted 20 to its left), while the wall just left of it stays seen
    narrow = sample_stereo(_box_scene(30, 40), k, baseline=0.5, **STEREO_EXACT) > 0
    assert not narrow[:, 10:20].any() and narrow[:, 20:30].all() and narrow[:, 30:40].all()
    rng = np.random.default_rng(0)
    for _ in range(3):  # random rows of flat and slanted pieces, with sky, against the loops
        disp = np.concatenate([rng.uniform(1, 12) + rng.choice([0.0, 0.3, 0.6, -0.7]) * np.arange(n)
                               for n in rng.integers(2, 9, size=12)])[None, :60].repeat(2, 0)
        disp[:, 25:27] = 0.0  # sky: no surface, hides nothing
        disp = np.maximum(disp, 0.0)
        depth = np.where(disp > 0, 30.0 / np.where(disp > 0, disp, 1.0), 0.0).astype(np.float32)
        got = sample_stereo(depth, Intrinsics(fx=100.0, fy=100.0, cx=30.0, cy=1.0), baseline=0.3, **STEREO_EXACT) > 0
        exact = np.where(depth > 0, 30.0 / np.where(depth > 0, depth.astype(np.float64), 1.0), 0.0)
        np.testing.assert_array_equal(got, _seen_by_brute_force(exact, depth > 0))


def test_stereo_visibility_cases_worked_by_hand():
    sky = np.zeros((1, 20))

    def seen(disp):
        return seen_by_right_camera(np.asarray(disp, float), np.asarray(disp) > 0)

    # lone pixels: the right one, 1.1 px nearer (not one surface), lands 0.1 px from the left one and hides it
    pair = sky.copy()
    pair[0, 10], pair[0, 11] = 5.4, 6.5  # land at 4.6 and 4.5
    assert not seen(pair)[0, 10] and seen(pair)[0, 11]
    pair[0, 11] = 5.8  # one surface (0.4 px apart), landing 0.6 px apart: both seen
    assert seen(pair)[0, 10] and seen(pair)[0, 11]
    # a span 2 px nearer passing over where a pixel lands hides it (and one 0.5 px nearer would not: tolerance)
    cover = sky.copy()
    cover[0, 10], cover[0, 12], cover[0, 13] = 5.0, 7.0, 7.2  # land at 5.0; the span from 5.0 to 5.8
    assert not seen(cover)[0, 10] and seen(cover)[0, 12:14].all()
    assert seen_by_right_camera(cover, cover > 0, tolerance_px=2.5)[0, 10]
    # a steep slanted surface (disparity rising 0.6 px a column) does not hide itself
    slope = np.arange(20, dtype=float)[None] * 0.6 + 1.0  # lands at 0.4 u - 1: columns 0 and 1 left of the image
    assert seen(slope)[0, 2:].all() and not seen(slope)[0, :2].any()
    # a stretched nearer surface (disparity falling 0.5 px a column: its pixels land 1.5 px apart) hides the wall
    # pixels landing between its pixels, which a per-pixel z-buffer would let through
    row = np.full((1, 40), 2.0)  # a wall: pixel u lands at u - 2
    row[0, 20:30] = 12.0 - 0.5 * np.arange(10)  # lands at 8.0, 9.5, ..., 21.5
    got = seen(row)[0]
    assert not got[10:20].any()  # the wall left of it lands at 8..17, behind it (wall 11 lands at 9: between two)
    assert got[20:].all() and got[2:10].all() and not got[:2].any()  # the wall left of column 2 lands off the image


def test_stereo_visibility_buckets_equal_the_scan(monkeypatch):
    """The bucketed search gives the scan's answer bit for bit: slanted, stepped, quarter-pixel (ties at every
    threshold), edge-on (crowded buckets) and spoiled (NaN, +-inf, negative) rows, three tolerances."""
    import depthkit.data._stereo_visibility as sv

    rng = np.random.default_rng(5)
    u = np.arange(90.0)
    for case in range(24):
        rows = [np.concatenate([rng.uniform(0, 40) + rng.choice([0.0, 0.5, -0.7, 0.99, 1.0, 1.5]) * np.arange(n)
                                for n in rng.integers(3, 30, size=10)])[:90] for _ in range(6)]
        disp = np.stack(rows + [u * 1.0, u * 1.003, u * 1.5 + 2 * (u % 2)])
        if case % 3 == 1:
            disp = np.round(disp * 4) / 4
        if case % 3 == 2:
            disp.flat[rng.integers(0, disp.size, 40)] = rng.choice([np.nan, np.inf, -np.inf, -3.0], 40)
        surface = rng.random(disp.shape) < 0.9
        tol = (0.0, 0.5, 2.0)[case % 3]
        got = {}
        # always the buckets (whole, and in blocks of a few rows and batches of 50 pairs), the default, the scan
        for cost, block in ((0.0, 1 << 18), (0.0, 50), (5.0, 1 << 18), (np.inf, 1 << 18)):
            monkeypatch.setattr(sv, "_PAIR_COST", cost)
            monkeypatch.setattr(sv, "_BLOCK_PIXELS", block)
            with np.errstate(invalid="ignore"):  # inf - inf in the spoiled rows
                got[cost, block] = seen_by_right_camera(disp, surface, tol)
        for key, value in got.items():
            np.testing.assert_array_equal(value, got[np.inf, 1 << 18], err_msg=str(key))
    # a mask of another dtype is a mask; a map without a finite disparity hides nothing
    disp = np.tile(np.linspace(5.0, 25.0, 40), (6, 1))
    np.testing.assert_array_equal(seen_by_right_camera(disp, np.ones((6, 40), np.uint8)),
                                  seen_by_right_camera(disp, np.ones((6, 40), bool)))
    for bad in (-np.inf, np.nan):
        with np.errstate(invalid="ignore"):
            out = seen_by_right_camera(np.full((2, 5), bad), np.ones((2, 5), bool))
        assert out.shape == (2, 5) and out.dtype == bool


def test_stereo_fattening_threshold_and_range_by_hand():
    k = Intrinsics(fx=100.0, fy=100.0, cx=30.0, cy=3.0)
    opts = {**STEREO_EXACT, "fatten_px": 2}
    for ratio, fattened in ((1.04, False), (1.06, True)):  # fatten_jump 0.05: a box 4 % nearer is not fattened
        depth = _box_scene(30, 55, near=10.0 / ratio)
        out = sample_stereo(depth, k, baseline=0.5, **opts)
        assert np.allclose(out[:, 55:57], 10.0 / ratio if fattened else 10.0, rtol=1e-5)
    # fx * B = 50: 40 m is 1.25 px of disparity (kept at min_disparity_px 1), 60 m is 0.83 px (lost)
    depth = np.full((3, 40), 40.0, np.float32)
    depth[:, 20:] = 60.0
    out = sample_stereo(depth, k, baseline=0.5, **{**STEREO_EXACT, "min_disparity_px": 1.0})
    assert (out[:, 2:20] == 40.0).all() and not out[:, 20:].any()
    with warnings.catch_warnings():  # a depth that is an infinite disparity is unseen, without numpy warnings
        warnings.simplefilter("error")
        tiny = sample_stereo(np.full((3, 10), 1e-320), k, **STEREO_EXACT)
    assert not tiny.any()


def test_stereo_values_fattening_noise_and_range():
    k = Intrinsics(fx=100.0, fy=100.0, cx=30.0, cy=3.0)
    depth = _box_scene(30, 55)
    exact = sample_stereo(depth, k, baseline=0.5, **STEREO_EXACT)
    np.testing.assert_array_equal(exact[exact > 0], depth[exact > 0])  # no noise: the depth (through fx*B/d) exactly
    # fattening: the 2 wall columns right of the box take the box's depth (the wrong one, as a window matcher gives)
    fat = sample_stereo(depth, k, baseline=0.5, **{**STEREO_EXACT, "fatten_px": 2})
    np.testing.assert_allclose(fat[:, 55:57], 2.0, rtol=1e-6)
    np.testing.assert_allclose(fat[:, 57:], 10.0, rtol=1e-6)
    np.testing.assert_array_equal(fat[:, 30:55], exact[:, 30:55])
    # Gaussian noise of sigma px in disparity: depth error ~ depth^2 * sigma / (fx B), reproducible from the seed
    flat = np.full((200, 200), 4.0, np.float32)
    kk = Intrinsics(fx=100.0, fy=100.0, cx=100.0, cy=100.0)
    noisy = sample_stereo(flat, kk, seed=1, baseline=0.5, **{**STEREO_EXACT, "disparity_sigma_px": 0.2})
    vals = noisy[noisy > 0]
    disp = 100.0 * 0.5 / vals
    assert abs(disp.mean() - 12.5) < 0.01 and abs(disp.std() - 0.2) < 0.01
    np.testing.assert_array_equal(noisy, sample_stereo(flat, kk, seed=1, baseline=0.5,
                                                       **{**STEREO_EXACT, "disparity_sigma_px": 0.2}))
    # beyond the rig's range (disparity below min_disparity_px) nothing is measured
    far = sample_stereo(np.full((5, 40), 60.0, np.float32), kk, baseline=0.5,
                        **{**STEREO_EXACT, "min_disparity_px": 1.0})
    assert not far.any()
    assert (sample_stereo(flat, kk, seed=2, n_blobs=3, fatten_px=0, disparity_sigma_px=0.0) == 0).sum() > (
        sample_stereo(flat, kk, seed=2, n_blobs=0, fatten_px=0, disparity_sigma_px=0.0) == 0).sum()


@pytest.mark.parametrize("kwargs", [{"baseline": 0}, {"disparity_sigma_px": -1}, {"min_disparity_px": 0},
                                    {"fatten_px": -1}, {"fatten_jump": float("nan")}, {"disparity_sigma_px": True}])
def test_stereo_invalid_args(kwargs):
    with pytest.raises(ValueError):
        sample_stereo(_ramp(), K, **kwargs)
    with pytest.raises(ValueError, match="Intrinsics"):
        sample_stereo(_ramp(), (50, 50, 40, 30))


def test_stereo_visibility_benchmark_times_both_and_restores_the_cost(tmp_path, capsys):
    """``benchmarks/stereo_visibility.py`` runs the search and the scan on one scene, writes its table, and leaves
    the module's pair cost as it found it (a later call still takes the buckets)."""
    import importlib.util
    import json
    from pathlib import Path

    import depthkit.data._stereo_visibility as sv

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "stereo_visibility.py"
    spec = importlib.util.spec_from_file_location("stereo_visibility_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cost = sv._PAIR_COST
    assert bench.main(["--sizes", "24x32", "--repeats", "1", "--out", str(tmp_path)]) == 0
    assert sv._PAIR_COST == cost
    row = json.loads((tmp_path / "stereo_visibility.json").read_text())["rows"][0]
    assert row["size"] == [24, 32] and row["equal"] and row["scan_s"] > 0 and row["search_s"] > 0
    assert "| 24x32 |" in (tmp_path / "stereo_visibility.md").read_text()
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "24by32", "--out", str(tmp_path)])
    assert "a size is HxW" in capsys.readouterr().err
