"""A real stereo matcher on rendered pairs: the right view's geometry, the matcher, and the dataset's ``stereo_sgbm``."""

import numpy as np
import pytest

from depthkit.data.datasets.synthetic import STEREO_RIGS, SyntheticDataset
from depthkit.data.stereo_match import disparity_to_depth, search_range, sgbm_disparity
from depthkit.data.synthetic import render_scene

SIZE = (120, 160)


def _pair(seed: int, kind: str, baseline: float, **kw):
    left = render_scene(seed, *SIZE, kind, **kw)
    right = render_scene(seed, *SIZE, kind, shift_right_m=baseline, **kw)
    return left, right


def _landing(left, baseline: float):
    """Where each left pixel's surface point lands in the right view, computed from the left GT alone: a camera moved
    ``baseline`` metres along its x axis sees the point at the same planar depth, ``fx·baseline / depth`` pixels to
    the left. Returns (rows, cols in the right view, depth) of the points that land inside it within 0.2 px of a
    pixel centre."""
    z = left.depth
    v, u = np.nonzero(z > 0)
    x = u - left.intrinsics.fx * baseline / z[v, u]
    col = np.rint(x).astype(int)
    inside = (col >= 0) & (col < z.shape[1]) & (np.abs(x - col) < 0.2)  # near a pixel centre
    return v[inside], col[inside], z[v[inside], u[inside]]


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_the_right_view_sees_each_point_at_its_disparity_and_depth(kind):
    baseline = STEREO_RIGS[kind][0]
    left, right = _pair(3, kind, baseline)
    v, col, z = _landing(left, baseline)
    got = right.depth[v, col]
    agree = np.abs(got - z) <= 0.01 * z  # the rest: points the right camera sees behind something nearer
    assert len(z) > 500 and agree.mean() > 0.8
    assert np.array_equal(left.image, render_scene(3, *SIZE, kind).image)  # the left view is the scene's own
    assert not np.array_equal(left.image, right.image)


def test_a_shift_to_the_left_is_not_the_right_view():
    """Moved the other way, the points do not land where the left GT says a right camera sees them."""
    left = render_scene(3, *SIZE, "indoor")
    v, col, z = _landing(left, 0.12)
    other = render_scene(3, *SIZE, "indoor", shift_right_m=-0.12)
    assert (np.abs(other.depth[v, col] - z) <= 0.01 * z).mean() < 0.6


def test_the_right_views_pixel_noise_is_its_own():
    clean_l, clean_r = _pair(4, "outdoor", 0.54)
    noisy_l, noisy_r = _pair(4, "outdoor", 0.54, image_noise=4.0)
    noise_l = noisy_l.image.astype(int) - clean_l.image
    noise_r = noisy_r.image.astype(int) - clean_r.image
    assert noise_l.std() > 2 and noise_r.std() > 2
    assert abs(np.corrcoef(noise_l.ravel(), noise_r.ravel())[0, 1]) < 0.05


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_sgbm_recovers_the_pairs_disparity(kind):
    baseline, nearest = STEREO_RIGS[kind]
    left, right = _pair(5, kind, baseline)
    fxb = left.intrinsics.fx * baseline
    disp = sgbm_disparity(left.image, right.image, 0, search_range(fxb, nearest))
    truth = np.where(left.depth > 0, fxb / np.where(left.depth > 0, left.depth, 1.0), 0.0)
    both = (disp > 0) & (truth > 0)
    assert both.mean() > 0.4
    assert np.median(np.abs(disp[both] - truth[both])) < 0.5
    assert np.all(disp >= 0) and disp.dtype == np.float32
    swapped = sgbm_disparity(right.image, left.image, 0, search_range(fxb, nearest))
    sw = (swapped > 0) & (truth > 0)
    assert not (sw.mean() > 0.4 and np.median(np.abs(swapped[sw] - truth[sw])) < 0.5)


def test_disparity_to_depth_and_search_range_by_hand():
    disp = np.array([[10.0, 0.5, 0.0], [np.nan, 1.0, 150.0]], np.float32)
    depth = disparity_to_depth(disp, 150.0)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[15.0, 0.0, 0.0], [0.0, 150.0, 1.0]])
    assert disparity_to_depth(disp, 150.0, min_disparity_px=20)[1, 2] == np.float32(1.0)
    assert disparity_to_depth(disp, 150.0, min_disparity_px=20)[0, 0] == 0
    assert search_range(150.0, 2.0) == 80  # disparities 0..75 needed
    assert search_range(150.0, 150.0 / 63) == 64  # 0..63: the last one a 64-wide search reaches
    assert search_range(150.0, 150.0 / 64) == 80  # 0..64
    assert search_range(10.0, 5.0) == 16


def _textured_pair(shift: int, size=(40, 96)):
    rng = np.random.default_rng(0)
    h, w = size
    tex = (rng.random((h, w + shift)) * 255).astype(np.uint8)
    left = np.repeat(tex[:, :w, None], 3, 2)  # left pixel u shows what the right camera sees at u - shift
    right = np.repeat(tex[:, shift:, None], 3, 2)
    return left, right


def test_sgbm_is_opencvs_matcher_with_the_samples_settings():
    """Against OpenCV called directly with the literal settings (5x5 blocks, P1 8·C·25, P2 32·C·25, left-right 1 px,
    uniqueness 10, speckle 100 / 2), in colour and in grey, with the range shifted by min_disparity."""
    import cv2

    left, right = _textured_pair(12)
    left[:, 40:60] = right[:, 40:60] = 128  # a textureless patch: what the filters reject
    near = left[8:30, 60:80].copy()  # a nearer square (disparity 20): occlusions beside it,
    left[8:30, 60:80], right[8:30, 40:60] = near, near    # what the left-right check removes
    for lo, ch in ((0, 3), (4, 3), (0, 1)):
        a, b = (left, right) if ch == 3 else (left[..., 0], right[..., 0])
        direct = cv2.StereoSGBM_create(minDisparity=lo, numDisparities=32, blockSize=5, P1=8 * ch * 25,
                                       P2=32 * ch * 25, disp12MaxDiff=1, uniquenessRatio=10, speckleWindowSize=100,
                                       speckleRange=2).compute(a, b).astype(np.float32) / 16.0
        expected = np.where(direct >= lo, direct, 0.0)
        got = sgbm_disparity(a, b, lo, 32)
        np.testing.assert_array_equal(got, expected)
        assert np.median(got[got > 0]) == 12.0 and (got == 0).any()


_G = np.zeros((8, 32), np.uint8)


@pytest.mark.parametrize("call", [
    lambda: sgbm_disparity(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8), 0, 16),
    lambda: sgbm_disparity(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32), 0, 16),
    lambda: sgbm_disparity(_G, _G.astype(np.float32), 0, 16),
    lambda: sgbm_disparity(_G, _G, 0, 24),
    lambda: sgbm_disparity(_G, _G, 0, float("nan")),
    lambda: sgbm_disparity(_G, _G, 0.5, 16),
    lambda: sgbm_disparity(_G, _G, None, 16),
    lambda: sgbm_disparity(_G, _G, 0, 16, block=4),
    lambda: sgbm_disparity(_G[:, :18], _G[:, :18], 0, 16),  # 16 disparities + half a block: 19 px wide at least
    lambda: sgbm_disparity(_G[:4], _G[:4], 0, 16),  # lower than a block
    lambda: disparity_to_depth(np.ones((2, 2)), 0.0),
    lambda: disparity_to_depth(np.ones((2, 2)), True),
    lambda: disparity_to_depth(np.ones((2, 2)), float("inf")),
    lambda: disparity_to_depth(np.ones((2, 2)), 1.0, min_disparity_px=float("inf")),
    lambda: disparity_to_depth(np.ones((2, 2, 3)), 1.0),  # a disparity PNG read as 3 channels: came back HxWx3
    lambda: disparity_to_depth(np.ones(4), 1.0),
    lambda: disparity_to_depth(np.array([["1", "2"]]), 1.0),
    lambda: disparity_to_depth(np.ones((2, 2)), 1e38, min_disparity_px=1e-3),  # a 1e-3 px disparity came back inf m
    lambda: search_range(10.0, 0.0),
    lambda: search_range(10.0, 1e-300),
    lambda: search_range(10.0, float("inf")),
    lambda: render_scene(0, 8, 8, shift_right_m=float("nan")),
    lambda: render_scene(0, 8, 8, shift_right_m=True),
])
def test_bad_matcher_arguments_say_what_is_allowed(call):
    with pytest.raises(ValueError, match="received"):
        call()


def test_the_datasets_matched_stereo_is_the_scenes_depth_with_a_matchers_failures():
    ds = SyntheticDataset(split="val", length=4, height=SIZE[0], width=SIZE[1], sparse_pattern="stereo_sgbm")
    for i in range(len(ds)):
        item = ds[i]
        sparse, gt = item["sparse"], item["depth"]
        measured = sparse > 0
        both = measured & (gt > 0)
        assert 0.3 < measured.mean() < 0.95
        ratio = sparse[both] / gt[both]
        # the rig's baseline both renders the pair and converts its disparity; the matcher's own bias (it reads the
        # slanted ground a fraction of a pixel too far) stays within 10 %
        assert abs(np.median(ratio) - 1) < 0.1
        assert np.median(np.abs(ratio - 1)) < 0.15
        assert not measured[:, :8].any()  # the band left of the search range has no match
        np.testing.assert_array_equal(ds[i]["sparse"], sparse)  # deterministic
    ds.set_epoch(3)
    np.testing.assert_array_equal(ds[3]["sparse"], sparse)


def test_the_datasets_matched_stereo_takes_a_rig_and_refuses_other_options():
    narrow = SyntheticDataset(split="val", length=1, height=SIZE[0], width=SIZE[1], kind="outdoor",
                              sparse_pattern="stereo_sgbm", sparse_kwargs={"baseline": 0.2, "nearest_m": 1.0})
    item = narrow[0]
    both = (item["sparse"] > 0) & (item["depth"] > 0)
    assert abs(np.median(item["sparse"][both] / item["depth"][both]) - 1) < 0.1
    # the matcher's band without a match is its search range: fx·B / nearest = 138.6·0.2 / 1.0 -> 32 px here,
    # 138.6·0.54 / 2.0 -> 48 px for the outdoor rig of STEREO_RIGS
    first = {}
    for name, ds in (("narrow", narrow), ("rig", SyntheticDataset(split="val", length=1, height=SIZE[0], width=SIZE[1],
                                                                  kind="outdoor", sparse_pattern="stereo_sgbm"))):
        first[name] = int(np.nonzero((ds[0]["sparse"] > 0).any(axis=0))[0].min())
    assert first == {"narrow": 32, "rig": 48}
    for bad in ({"n": 500}, {"baseline": -1.0}, {"nearest_m": "far"}, {"baseline": float("inf")}):
        with pytest.raises(ValueError, match="stereo_sgbm.*received"):
            SyntheticDataset(split="val", length=1, sparse_pattern="stereo_sgbm", sparse_kwargs=bad)
    rigs = [SyntheticDataset(split="val", length=1, height=SIZE[0], width=SIZE[1], kind="outdoor",
                             sparse_pattern="stereo_sgbm", sparse_kwargs={"baseline": b, "nearest_m": z})
            for b, z in ((0.25, 1.0), (np.float32(0.25), np.int64(1)))]  # numpy numbers are numbers too
    np.testing.assert_array_equal(rigs[0][0]["sparse"], rigs[1][0]["sparse"])


def test_a_rig_whose_search_does_not_fit_the_image_is_refused_when_the_dataset_is_made():
    # 160 px wide at 60 degrees: fx 138.6; the indoor rig (0.12 m, from 0.5 m) searches 0..33 -> 48 + 3 px: fits;
    # at 15 degrees fx is 607.8 and the outdoor rig needs 176 + 3 px
    SyntheticDataset(split="val", length=1, height=SIZE[0], width=SIZE[1], sparse_pattern="stereo_sgbm")
    for kw in ({"hfov_deg": 15.0}, {"width": 16}, {"sparse_kwargs": {"baseline": 100.0}}):
        with pytest.raises(ValueError, match="needs an image at least .* px wide"):
            SyntheticDataset(split="val", length=1, **{"height": SIZE[0], "width": SIZE[1], **kw},
                             sparse_pattern="stereo_sgbm")
    with pytest.raises(ValueError, match=r"5x5-pixel blocks, so the image must be at least 5 px high; received "
                                         r"height 4"):  # every item would have failed in OpenCV's matcher
        SyntheticDataset(split="val", length=1, height=4, width=320, kind="outdoor", sparse_pattern="stereo_sgbm")
    with pytest.raises(ValueError, match="needs an image at least 179 px wide"):
        SyntheticDataset(split="val", length=1, height=SIZE[0], width=SIZE[1], kind="outdoor", hfov_deg=15.0,
                         sparse_pattern="stereo_sgbm")
    # 170 px at 15 degrees (fx 645.6): the indoor rig needs 163 px, the outdoor one 179; "random" may draw either
    SyntheticDataset(split="val", length=1, height=SIZE[0], width=170, kind="indoor", hfov_deg=15.0,
                     sparse_pattern="stereo_sgbm")
    with pytest.raises(ValueError, match="outdoor rig .* at least 179 px wide"):
        SyntheticDataset(split="val", length=1, height=SIZE[0], width=170, kind="random", hfov_deg=15.0,
                         sparse_pattern="stereo_sgbm")


def test_a_shift_out_of_the_room_is_refused():
    """KITTI's 0.54 m baseline moves the camera of this room (0.18 m from its back wall, turned) behind the wall:
    the right view would be the wall's back at a centimetre."""
    with pytest.raises(ValueError, match="out of its room or into an object"):
        render_scene(20000168, 12, 16, "indoor", shift_right_m=0.54)
    render_scene(20000168, 12, 16, "indoor", shift_right_m=0.12)


def test_matched_stereo_of_noisy_cluttered_narrow_field_scenes():
    """The right view takes the scene's noise, plants and field of view: the map still measures the GT."""
    ds = SyntheticDataset(split="val", length=2, height=SIZE[0], width=SIZE[1], hfov_deg=75.0, image_noise=2.0,
                          clutter=3, sparse_pattern="stereo_sgbm")
    for i in range(len(ds)):
        item = ds[i]
        both = (item["sparse"] > 0) & (item["depth"] > 0)
        assert both.mean() > 0.3
        assert abs(np.median(item["sparse"][both] / item["depth"][both]) - 1) < 0.1
        # and it is the matcher on this scene's own pair: the right camera's render with the same options
        seed, kw = ds.scene_seed(i), {"image_noise": 2.0, "clutter": 3}
        left = render_scene(seed, *SIZE, "random", 75.0, **kw)
        baseline, nearest = STEREO_RIGS[left.kind]
        right = render_scene(seed, *SIZE, "random", 75.0, shift_right_m=baseline, **kw)
        fxb = left.intrinsics.fx * baseline
        np.testing.assert_array_equal(
            item["sparse"], disparity_to_depth(sgbm_disparity(left.image, right.image, 0, search_range(fxb, nearest)),
                                               fxb))


def test_disparity_to_depth_adds_the_principal_points_offset():
    """Middlebury's convention, by hand: depth = fx·B / (d + doffs); the minimum applies to the measured disparity,
    before the offset; a missing or non-finite disparity stays missing; a bad offset is refused with what was given."""
    disp = np.array([[10.0, 0.0], [np.nan, 0.5]], np.float32)
    depth = disparity_to_depth(disp, 150.0, doffs_px=5.0)
    assert depth[0, 0] == np.float32(10.0) and depth[0, 1] == 0 and depth[1, 0] == 0 and depth[1, 1] == 0
    assert disparity_to_depth(disp, 150.0, min_disparity_px=0.5, doffs_px=5.0)[1, 1] == np.float32(150.0 / 5.5)
    assert np.array_equal(disparity_to_depth(disp, 150.0, doffs_px=0), disparity_to_depth(disp, 150.0))
    for bad in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match=r"doffs_px \(pixels: the principal points' x difference\) must be a "
                                             r"finite number >= 0; received"):
            disparity_to_depth(disp, 150.0, doffs_px=bad)
