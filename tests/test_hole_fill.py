"""The colour-split hole fill (depthkit.complete.hole_fill): against a brute-force loop over every split of every run,
a rendered scene's holes by hand (occlusion strip, a blob across an outline, a hole inside one surface), each
condition on its own, the dense-frame gate, and the stage option on a tiny checkpoint."""

import numpy as np
import pytest

from depthkit.complete.hole_fill import HOLE_CONTRAST, HOLE_FIT, HOLE_JUMP, fill_edge_holes

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _loop_fill(depth, sparse, image, jump=HOLE_JUMP, contrast=HOLE_CONTRAST, fit=HOLE_FIT, k=3, min_measured=0.3):
    """Reference: every run enumerated, every split's cost summed directly, the first least cost taken."""
    out = depth.astype(np.float32).copy()
    mask = np.zeros(sparse.shape, bool)
    measured = sparse > 0
    if measured.mean() < min_measured:
        return out, mask
    rgb = image.astype(np.float64) / 255.0
    h, w = sparse.shape
    for y in range(h):
        x = 0
        while x < w:
            if measured[y, x]:
                x += 1
                continue
            x0 = x
            while x < w and not measured[y, x]:
                x += 1
            x1 = x - 1
            if x0 == 0 or x1 == w - 1:
                continue
            a, b = float(sparse[y, x0 - 1]), float(sparse[y, x1 + 1])
            if not max(a, b) > (1 + jump) * min(a, b):
                continue
            win_l = [rgb[y, i] for i in range(max(0, x0 - k), x0) if measured[y, i]]
            win_r = [rgb[y, i] for i in range(x1 + 1, min(w, x1 + 1 + k)) if measured[y, i]]
            cl, cr = np.mean(win_l, axis=0), np.mean(win_r, axis=0)
            con = float(((cl - cr) ** 2).sum())
            costs = []
            for n in range(x1 - x0 + 2):  # n pixels take the left colour
                cost = sum(((rgb[y, i] - cl) ** 2).sum() for i in range(x0, x0 + n))
                cost += sum(((rgb[y, i] - cr) ** 2).sum() for i in range(x0 + n, x1 + 1))
                costs.append(cost)
            n = int(np.argmin(costs))
            far = range(x0, x0 + n) if a > b else range(x0 + n, x1 + 1)
            seg = [((rgb[y, i] - (cl if a > b else cr)) ** 2).sum() for i in far]
            if con < contrast ** 2 or (seg and np.mean(seg) > fit * con):
                continue
            for i in far:
                out[y, i] = a if a > b else b
                mask[y, i] = True
    return out, mask


def _scene(rng, h=24, w=40):
    """Blocky two-depth scene: colour and depth change together at a few columns per row, plus noise and holes."""
    depth = np.full((h, w), 5.0, np.float32)
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = rng.integers(40, 200, 3)
    for _ in range(4):
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 6)
        y1, x1 = y0 + rng.integers(3, 10), x0 + rng.integers(4, 16)
        depth[y0:y1, x0:x1] = rng.uniform(1.0, 4.0)
        image[y0:y1, x0:x1] = rng.integers(0, 255, 3)
    image = np.clip(image.astype(int) + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
    holes = rng.random((h, w)) < 0.15
    for _ in range(5):
        y, x = rng.integers(0, h), rng.integers(0, w - 8)
        holes[y:y + 3, x:x + rng.integers(2, 8)] = True
    sparse = np.where(holes, 0.0, depth).astype(np.float32)
    completion = np.where(holes, rng.uniform(1.0, 5.0, (h, w)), depth).astype(np.float32)
    return image, sparse, completion


def test_matches_a_brute_force_loop_on_random_scenes():
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(40):
        image, sparse, completion = _scene(rng)
        expected, expected_mask = _loop_fill(completion, sparse, image)
        filled, mask = fill_edge_holes(completion, sparse, image)
        np.testing.assert_array_equal(filled, expected)
        np.testing.assert_array_equal(mask, expected_mask)
        assert np.array_equal(filled[sparse > 0], sparse[sparse > 0])
        changed += int(mask.sum())
    assert changed > 200  # the scenes exercise the fill, not only its refusals


def test_a_runs_split_does_not_depend_on_the_other_rows():
    """Flat colours make exact ties between splits: the run B B A A B between an A-coloured 1 m bound and a B-coloured
    3 m one has prefix costs +c, +2c, +c, 0, +c, so no split beats n = 0 and its far side fails the colour fit. It is
    filled the same alone and below a long unrelated run (a float running sum over the frame turned the 0 into
    -1e-13 there, and set a pixel)."""
    a, b, c = [242, 117, 3], [181, 4, 84], [161, 195, 237]
    row_sparse, row_image = [1, 0, 0, 0, 0, 0, 3], [a, b, b, a, a, b, b]
    alone = fill_edge_holes(np.full((1, 7), 2, np.float32), np.array([row_sparse], np.float32),
                            np.array([row_image], np.uint8))
    sparse = np.array([[1] + [0] * 33 + [3], row_sparse + [3] * 28], np.float32)
    image = np.array([[a] + [c] * 33 + [b], row_image + [b] * 28], np.uint8)
    below = fill_edge_holes(np.full(sparse.shape, 2, np.float32), sparse, image)
    np.testing.assert_array_equal(alone[0][0], 2.0)
    np.testing.assert_array_equal(below[0][1, :7], alone[0][0])


def _wall_and_box():
    """A grey wall at 4 m and a red box at 2 m (columns 20-29) on a 10x40 frame, every pixel measured."""
    depth = np.full((10, 40), 4.0, np.float32)
    depth[:, 20:30] = 2.0
    image = np.full((10, 40, 3), 128, np.uint8)
    image[:, 20:30] = (220, 30, 30)
    return depth, image


def test_by_hand_occlusion_strip_blob_across_the_outline_and_a_hole_inside_one_surface():
    depth, image = _wall_and_box()
    sparse = depth.copy()
    sparse[1, 12:20] = 0  # the wall's strip left of the box (a stereo occlusion): all wall
    sparse[3, 16:25] = 0  # a blob across the box's left outline: 4 px wall, 5 px box
    sparse[5, 25:34] = 0  # across its right outline: 5 px box, 4 px wall
    sparse[7, 5:10] = 0  # inside the wall: both bounds the wall, no edge
    completion = np.where(sparse > 0, sparse, 2.5).astype(np.float32)  # a completion leaning to the box
    filled, mask = fill_edge_holes(completion, sparse, image, min_measured=0.0)
    np.testing.assert_array_equal(filled[1, 12:20], 4.0)
    np.testing.assert_array_equal(filled[3, 16:20], 4.0)
    np.testing.assert_array_equal(filled[3, 20:25], 2.5)  # the near side keeps the completion
    np.testing.assert_array_equal(filled[5, 30:34], 4.0)
    np.testing.assert_array_equal(filled[5, 25:30], 2.5)
    np.testing.assert_array_equal(filled[7, 5:10], 2.5)
    assert mask.sum() == 8 + 4 + 4
    assert np.array_equal(filled[sparse > 0], sparse[sparse > 0])


@pytest.mark.parametrize("case", ["no_contrast", "no_fit", "no_jump", "border", "sparse_frame"])
def test_each_condition_leaves_the_run_alone(case):
    depth, image = _wall_and_box()
    sparse = depth.copy()
    sparse[3, 16:25] = 0
    kwargs = {"min_measured": 0.0}
    if case == "no_contrast":  # the box painted like the wall: colours cannot tell
        image[:, 20:30] = (136, 128, 120)
    elif case == "no_fit":  # the wall's side of the run in another colour than the wall's bound
        image[3, 16:20] = (20, 20, 230)
    elif case == "no_jump":  # the box 5 % nearer than the wall: a slope, not an edge
        sparse[sparse == 2.0] = 3.81
    elif case == "border":  # the run reaches the image's left border: one bound only
        sparse[3, :25] = 0
    else:  # fewer than 30 % of the pixels measured
        kwargs = {}
        sparse[::2] = 0
        sparse[:, ::2] = 0
        sparse[:, 1::4] = 0
        sparse[3, 16:25] = 0
        assert (sparse > 0).mean() < 0.3
    completion = np.where(sparse > 0, sparse, 2.5).astype(np.float32)
    filled, mask = fill_edge_holes(completion, sparse, image, **kwargs)
    assert not mask.any()
    np.testing.assert_array_equal(filled, completion)
    if case == "sparse_frame":  # the same frame passes the gate when it is lowered
        assert fill_edge_holes(completion, sparse, image, min_measured=0.1)[1].any()


def test_bad_inputs_are_said():
    depth, image = _wall_and_box()
    with pytest.raises(ValueError, match="image must be HxWx3 with the sparse map's size 10x40; received shape"):
        fill_edge_holes(depth, depth, image[:5])
    with pytest.raises(ValueError, match="depth and sparse must be HxW maps of one size"):
        fill_edge_holes(depth[:5], depth, image)
    with pytest.raises(ValueError, match="reference_px must be a whole number >= 1; received 0"):
        fill_edge_holes(depth, depth, image, reference_px=0)
    with pytest.raises(ValueError, match="uint8 RGB or floats in \\[0, 1\\]; received float32 with values 30 to 220"):
        fill_edge_holes(depth, depth, image.astype(np.float32))
    with pytest.raises(ValueError, match="received uint16 \\(convert it to uint8"):
        fill_edge_holes(depth, depth, image.astype(np.uint16))
    sparse = depth.copy()
    sparse[3, 16:25] = 0
    as_floats = fill_edge_holes(depth, sparse, image.astype(np.float32) / 255, min_measured=0.0)
    np.testing.assert_array_equal(as_floats[1], fill_edge_holes(depth, sparse, image, min_measured=0.0)[1])


def test_the_stage_option_fills_holes_and_keeps_measurements(fill_option_runs):
    from depthkit import Pipeline

    depth = np.full((40, 120), 6.0, np.float32)
    depth[10:30, 60:90] = 2.0
    image = np.full((40, 120, 3), 100, np.uint8)
    image[10:30, 60:90] = (240, 200, 20)
    sparse = depth.copy()
    sparse[12:28, 52:66] = 0  # a patch across the box's left outline: 8 px of wall, 6 px of box per row
    wall = (sparse == 0) & (depth == 6.0)
    runs = fill_option_runs(image, sparse, "hole_fill", "colour", "hole_filled", wall)
    np.testing.assert_allclose(runs["colour"][wall], 6.0, rtol=1e-6)
    assert np.abs(runs[None][wall] - 6.0).max() > 0.5  # without it the box bleeds into the wall's part
    with pytest.raises(ValueError, match="hole_fill='color'; allowed: null"):
        Pipeline(checkpoint=fill_option_runs.checkpoint, stage_options={"complete": {"hole_fill": "color"}})
