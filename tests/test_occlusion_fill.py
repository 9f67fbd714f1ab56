"""The stereo occlusion fill (:mod:`depthkit.complete.occlusion`, the learned complete stage's ``occlusion_fill``):
row bounds against a loop, hand rows, a rendered stereo map whose occluded strip must get the wall's depth, and the
stage option on a tiny checkpoint."""

import numpy as np
import pytest

from depthkit.complete.occlusion import fill_occlusions, row_bounds
from depthkit.data.sparse import sample_stereo
from depthkit.geometry import Intrinsics

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_row_bounds_match_a_loop():
    rng = np.random.default_rng(0)
    sparse = np.where(rng.random((12, 30)) < 0.2, rng.uniform(0.5, 9.0, (12, 30)), 0.0).astype(np.float32)
    sparse[3] = 0.0  # a row without measurements
    sparse[5, 4] = np.nan  # not a measurement
    left, right = row_bounds(sparse)
    for y in range(12):
        for x in range(30):
            ok = [v for v in sparse[y, :x + 1] if np.isfinite(v) and v > 0]
            assert left[y, x] == (ok[-1] if ok else 0.0)
            ok = [v for v in sparse[y, x:] if np.isfinite(v) and v > 0]
            assert right[y, x] == (ok[0] if ok else 0.0)


def test_fill_by_hand_rows():
    """Wall 5 m left of a 2 m box: the run between them is the wall's (left reference) and the box's own run is
    untouched; mirrored for a right reference; a 7.5 % step is a slope, not an edge; one-sided runs stay."""
    sparse = np.array([[5.0, 0, 0, 2.0, 0, 2.0, 0],
                       [2.0, 0, 0, 5.0, 0, 0, 0],
                       [2.15, 0, 0, 2.0, 0, 0, 0]], np.float32)
    depth = np.full(sparse.shape, 3.0, np.float32)
    depth[sparse > 0] = sparse[sparse > 0]
    filled, mask = fill_occlusions(depth, sparse, "left")
    np.testing.assert_array_equal(filled[0], [5, 5, 5, 2, 3, 2, 3])
    np.testing.assert_array_equal(filled[1:], depth[1:])
    assert mask.sum() == 2
    filled, mask = fill_occlusions(depth, sparse, "right")
    np.testing.assert_array_equal(filled[1], [2, 5, 5, 5, 3, 3, 3])
    np.testing.assert_array_equal(filled[[0, 2]], depth[[0, 2]])
    filled, _ = fill_occlusions(depth, sparse, "left", jump=0.05)
    np.testing.assert_array_equal(filled[2], np.float32([2.15, 2.15, 2.15, 2.0, 3, 3, 3]))
    for bad in ({"side": "up"}, {"jump": -0.1}, {"jump": "0.1"}, {"jump": True}):
        with pytest.raises(ValueError, match="occlusion fill"):
            fill_occlusions(depth, sparse, **{"side": "left", **bad})


def test_the_occluded_strip_of_a_rendered_stereo_map_gets_the_walls_depth():
    """A 6 m wall and a 2 m box seen by a rig with fx * baseline = 40 px m (disparities 6.67 and 20 px): the right
    camera misses the wall for 13.3 px left of the box. The left-reference fill gives that strip 6 m exactly; a
    right-reference fill leaves it, and nothing else changes."""
    depth = np.full((40, 120), 6.0, np.float32)
    depth[10:30, 60:90] = 2.0
    sparse = sample_stereo(depth, Intrinsics(200.0, 200.0, 60.0, 20.0), seed=0, baseline=0.2, disparity_sigma_px=0.0,
                           fatten_px=0, n_blobs=0)
    strip = (sparse == 0) & (depth == 6.0)
    strip[:, :10] = False  # the band left of the right camera's view: no left bound
    assert 12 * 20 <= strip.sum() <= 14 * 20 and (np.nonzero(strip)[1] >= 45).all()
    guess = np.where(sparse > 0, sparse, 2.0).astype(np.float32)  # a completion that bled the box into the strip
    filled, mask = fill_occlusions(guess, sparse, "left")
    np.testing.assert_allclose(filled[strip], 6.0, rtol=1e-6)
    assert np.array_equal(mask, strip)
    assert not fill_occlusions(guess, sparse, "right")[1].any()


def test_the_stage_option_fills_occlusions_and_keeps_measurements(fill_option_runs):
    from depthkit import Pipeline

    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (40, 120, 3), dtype=np.uint8)
    depth = np.full((40, 120), 6.0, np.float32)
    depth[10:30, 60:90] = 2.0
    sparse = sample_stereo(depth, Intrinsics(200.0, 200.0, 60.0, 20.0), seed=0, baseline=0.2,
                           disparity_sigma_px=0.0, fatten_px=0, n_blobs=0)
    strip = (sparse == 0) & (depth == 6.0)
    strip[:, :10] = False
    runs = fill_option_runs(image, sparse, "occlusion_fill", "left", "occlusion_filled", strip)
    np.testing.assert_allclose(runs["left"][strip], 6.0, rtol=1e-6)
    assert np.abs(runs[None][strip] - 6.0).max() > 0.5  # without it the box bleeds into the strip
    with pytest.raises(ValueError, match="occlusion_fill='up'; allowed: null"):
        Pipeline(checkpoint=fill_option_runs.checkpoint, stage_options={"complete": {"occlusion_fill": "up"}})
