"""``occlusion_fill: auto`` (:func:`depthkit.complete.occlusion.occlusion_evidence`): the reference side read from a
frame's own holes. Rendered stereo maps (widths set by the rig) must give their side and exactly their occluded strips;
a ToF frame's two-sided shadows, one blob across one edge, runs that follow the law on both sides and a sparse frame
must give none; the runs against a loop; the stage option on a tiny checkpoint."""

import numpy as np
import pytest

from depthkit.complete.occlusion import edge_runs, fill_occlusions, occlusion_evidence
from depthkit.data.sparse import sample_holes, sample_stereo
from depthkit.geometry import Intrinsics

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

WALL = 8.0
BOXES = ((1.5, 8, 28, 40, 70), (2.5, 34, 56, 110, 140), (4.0, 62, 76, 180, 215))
"""(depth m, rows y0:y1, columns x0:x1) of three boxes in front of the wall."""
RIG = Intrinsics(100.0, 100.0, 120.0, 40.0)
BASELINE = 0.3  # fx * baseline = 30 px m: the strips are 30 (1/near - 1/8) px wide: 16.3, 8.3 and 3.8 px


def _scene() -> np.ndarray:
    depth = np.full((80, 240), WALL, np.float32)
    for d, y0, y1, x0, x1 in BOXES:
        depth[y0:y1, x0:x1] = d
    return depth


def _stereo(depth: np.ndarray) -> np.ndarray:
    return sample_stereo(depth, RIG, seed=0, baseline=BASELINE, disparity_sigma_px=0.0, fatten_px=0, n_blobs=0)


def _strips(depth: np.ndarray, sparse: np.ndarray) -> np.ndarray:
    """The wall pixels the right camera misses beside each box (computed from the scene, not by the code under
    test): unmeasured wall pixels with a measured pixel somewhere to their left in the row."""
    seen_left = np.maximum.accumulate(sparse > 0, axis=1)
    return (sparse == 0) & (depth == WALL) & seen_left


def test_a_rendered_stereo_map_gives_its_side_and_exactly_its_occluded_strips():
    depth = _scene()
    sparse = _stereo(depth)
    strips = _strips(depth, sparse)
    widths = [int(strips[(y0 + y1) // 2].sum()) for _, y0, y1, _, _ in BOXES]
    expected = [30.0 * (1 / d - 1 / WALL) for d, *_ in BOXES]
    assert all(abs(w - e) <= 1 for w, e in zip(widths, expected)), (widths, expected)

    evidence = occlusion_evidence(sparse)
    assert evidence.side == "left"
    assert evidence.share["left"] == 1.0 and evidence.share["right"] == 0.0
    guess = np.where(sparse > 0, sparse, 2.0).astype(np.float32)  # a completion that bled the boxes into the strips
    filled, mask = fill_occlusions(guess, sparse, "auto")
    assert np.array_equal(mask, strips)
    np.testing.assert_array_equal(filled[strips], WALL)
    np.testing.assert_array_equal(filled[~strips], guess[~strips])

    # the same rig with the right camera as the reference: the mirror image, found as such
    flipped = np.ascontiguousarray(sparse[:, ::-1])
    evidence = occlusion_evidence(flipped)
    assert evidence.side == "right"
    assert np.array_equal(fill_occlusions(guess[:, ::-1], flipped, "auto")[1], strips[:, ::-1])


def test_only_the_runs_that_follow_the_law_are_set():
    """A failed patch widens the runs left of the nearest box by 12 px in five rows: those runs no longer follow the
    rig's law (28 px against 16.3) and keep the completion; every other strip is set."""
    depth = _scene()
    sparse = _stereo(depth)
    strips = _strips(depth, sparse)
    _, y0, _, x0, _ = BOXES[0]
    widened = sparse.copy()
    widened[y0:y0 + 5, x0 - 29:x0] = 0.0
    guess = np.where(widened > 0, widened, 2.0).astype(np.float32)
    filled, mask = fill_occlusions(guess, widened, "auto")
    expected = strips.copy()
    expected[y0:y0 + 5] = False
    assert np.array_equal(mask, expected)
    np.testing.assert_array_equal(filled[~expected], guess[~expected])


def test_a_law_that_explains_too_few_of_the_holes_gives_no_side():
    """The strips of the two nearer boxes follow the law, but beside the third a 100 px run in each of its rows holds
    most of the frame's edge-hole pixels (share 0.26 < 0.3): too little of the frame is explained. Without the
    third box's runs the side is found."""
    depth = _scene()
    sparse = depth.copy()
    for d, y0, y1, x0, _ in BOXES[:2]:
        sparse[y0:y1, x0 - int(round(30.0 * (1 / d - 1 / WALL))):x0] = 0.0
    assert occlusion_evidence(sparse).side == "left"
    _, y0, y1, x0, _ = BOXES[2]
    sparse[y0:y1, x0 - 100:x0] = 0.0
    evidence = occlusion_evidence(sparse)
    assert 0.2 < evidence.share["left"] < 0.3 and evidence.span["left"] >= 1.5 and evidence.share["right"] == 0
    assert evidence.side is None


def test_a_whole_pixel_of_slack_for_thin_strips():
    """A matcher's strips are whole pixels: a box at 5.71 m leaves a 1.5 px strip, measured as 2 px (0.5 px off,
    beyond 30 % of 1.5): it still follows the law, within the 1 px slack, and is set."""
    depth = _scene()
    depth[62:76, 180:215] = 1 / (1 / WALL + 1.5 / 30.0)
    sparse = depth.copy()
    for d, y0, y1, x0, _ in BOXES[:2]:
        sparse[y0:y1, x0 - int(round(30.0 * (1 / d - 1 / WALL))):x0] = 0.0
    sparse[62:76, 178:180] = 0.0
    evidence = occlusion_evidence(sparse)
    assert evidence.side == "left"
    assert fill_occlusions(depth, sparse, "auto")[1][62:76, 178:180].all()


def test_two_sided_tof_shadows_give_no_side():
    """Shadows of one width (2 px) on both sides of every box: widths that do not follow the boxes' depths, on both
    sides. Nothing is set."""
    depth = _scene()
    tof = sample_holes(depth, 0, n_blobs=0, edge_width_px=2)
    evidence = occlusion_evidence(tof)
    assert evidence.side is None
    assert evidence.runs.width.size > 100 and not evidence.follows.any()
    depth_in = np.where(tof > 0, tof, 3.0).astype(np.float32)
    filled, mask = fill_occlusions(depth_in, tof, "auto")
    assert not mask.any() and np.array_equal(filled, depth_in)


def test_one_blob_across_one_edge_is_no_evidence():
    """A matcher's failed patch straddling the left outline of one box: every row's run has the same width between
    the same two surfaces, so a factor fits them all, but over no range of inverse-depth differences (span 1)."""
    depth = np.full((60, 160), WALL, np.float32)
    depth[5:55, 80:120] = 2.0
    sparse = depth.copy()
    sparse[10:50, 70:90] = 0.0
    evidence = occlusion_evidence(sparse)
    assert evidence.share["left"] == 1.0 and evidence.span["left"] == 1.0
    assert evidence.side is None


def test_runs_that_follow_the_law_on_both_sides_give_no_side():
    """Strips that follow the stereo law left of the boxes and as many right of them: no dominant side (occlusions
    are one-sided). With the right-hand ones removed the left side is found."""
    depth = _scene()
    sparse = depth.copy()
    both = sparse.copy()
    for d, y0, y1, x0, x1 in BOXES:
        w = int(round(30.0 * (1 / d - 1 / WALL)))
        sparse[y0:y1, x0 - w:x0] = 0.0
        both[y0:y1, x0 - w:x0] = 0.0
        both[y0:y1, x1:x1 + w] = 0.0
    evidence = occlusion_evidence(both)
    assert evidence.share["left"] == pytest.approx(0.5) and evidence.share["right"] == pytest.approx(0.5)
    assert evidence.side is None
    assert occlusion_evidence(sparse).side == "left"


def test_a_sparse_frame_is_never_read():
    """Under 30 % of the pixels measured (LiDAR beams, scattered points) the rule does not run, whatever the runs."""
    depth = np.repeat(_scene(), 3, axis=0)  # 240 rows, so a quarter of them still holds enough strips
    sparse = _stereo(depth)
    assert occlusion_evidence(sparse).side == "left"
    thinned = np.zeros_like(sparse)
    thinned[::4] = sparse[::4]  # every fourth row kept whole (scan lines): the same strips in fewer rows
    assert 0.2 < (thinned > 0).mean() < 0.3
    assert occlusion_evidence(thinned).side is None
    assert occlusion_evidence(thinned, min_measured=0.2).side == "left"


def test_a_few_speckles_beside_edges_are_no_evidence():
    """One-pixel gaps follow any law within the slack. Five beside the left outline of a box and four beside the
    right one of another: the side with four is too few to fit a law, and counts all its pixels against the other
    (not nothing); and a box scene with pixels dropped at random (2-30 %, 40 draws each) never shows a side."""
    depth = _scene()
    sparse = depth.copy()
    sparse[10:15, 39] = 0.0  # far bound left
    sparse[36:40, 140] = 0.0  # far bound right
    evidence = occlusion_evidence(sparse)
    assert evidence.side is None and evidence.share == {"left": 5 / 9, "right": 4 / 9}
    for rate in (0.02, 0.05, 0.1, 0.3):
        for seed in range(40):
            speckled = np.where(np.random.default_rng(seed).random(depth.shape) < rate, 0.0, depth)
            assert occlusion_evidence(speckled).side is None, (rate, seed)


def test_a_side_with_too_few_runs_for_a_law_counts_all_its_pixels():
    """Sixteen strips that follow the law left of two boxes (96 px) against three gaps right of the near box, 1, 20
    and 40 px wide between the same two surfaces (61 px): three runs are too few to fit a law to (a fit would keep
    only the 20 px one, 20 px, and the left side would dominate); counted whole, they do not let the left side
    dominate."""
    depth = _scene()
    sparse = depth.copy()
    for (_, y0, _, x0, _), w in zip(BOXES[1:], (8, 4)):
        sparse[y0:y0 + 8, x0 - w:x0] = 0.0
    _, y0, _, _, x1 = BOXES[0]
    for row, w in zip(range(y0, y0 + 3), (1, 20, 40)):
        sparse[row, x1:x1 + w] = 0.0
    evidence = occlusion_evidence(sparse)
    assert evidence.share == {"left": 96 / 157, "right": 61 / 157} and evidence.side is None
    sparse[y0:y0 + 3, x1:x1 + 40] = depth[y0:y0 + 3, x1:x1 + 40]
    assert occlusion_evidence(sparse).side == "left"


def test_bad_inputs_are_refused():
    sparse = _stereo(_scene())
    for bad in (-0.1, True, "0.1"):
        with pytest.raises(ValueError, match="jump must be a number >= 0"):
            edge_runs(sparse, jump=bad)
    with pytest.raises(ValueError, match="must be HxW"):
        occlusion_evidence(sparse[None])
    from depthkit.complete.occlusion import fill_found_runs

    with pytest.raises(ValueError, match="not the size of the sparse map"):
        fill_found_runs(np.zeros((10, 10), np.float32), occlusion_evidence(sparse))


def test_edge_runs_match_a_loop():
    rng = np.random.default_rng(3)
    for _ in range(5):
        sparse = np.where(rng.random((14, 40)) < 0.6, rng.uniform(0.5, 9.0, (14, 40)), 0.0).astype(np.float32)
        sparse[2, 7] = np.nan
        runs = edge_runs(sparse, jump=0.1)
        got = sorted(zip(runs.row.tolist(), runs.start.tolist(), runs.width.tolist(), runs.far_is_left.tolist()))
        want = []
        for y in range(14):
            ok = np.isfinite(sparse[y]) & (sparse[y] > 0)
            x = 0
            while x < 40:
                if ok[x]:
                    x += 1
                    continue
                x0 = x
                while x < 40 and not ok[x]:
                    x += 1
                if x0 > 0 and x < 40:
                    a, b = float(sparse[y, x0 - 1]), float(sparse[y, x])
                    if max(a, b) > 1.1 * min(a, b):
                        want.append((y, x0, x - x0, a > b))
        assert got == want and len(want) > 20


def test_the_stage_option_auto_on_a_tiny_checkpoint(tmp_path):
    from depthkit import Pipeline
    from depthkit.checkpoints import write_manifest
    from depthkit.complete.checkpoint import write_tiny

    write_tiny(tmp_path / "complete")
    write_manifest(tmp_path, {"complete": {}}, tiny=True)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (80, 240, 3), dtype=np.uint8)
    depth = _scene()
    stereo = _stereo(depth)
    strips = _strips(depth, stereo)
    tof = sample_holes(depth, 0, n_blobs=0, edge_width_px=2)
    for sparse, side in ((stereo, "left"), (tof, None)):
        out = {}
        for fill in (None, "auto"):
            pipe = Pipeline(checkpoint=tmp_path, stage_options={"complete": {"occlusion_fill": fill,
                                                                             "query_budget": 4}})
            out[fill] = pipe(image, sparse).depth
            assert np.array_equal(out[fill][sparse > 0], sparse[sparse > 0])
            stats = pipe.stages[0].last_stats
            assert stats.get("occlusion_side", "absent") == ("absent" if fill is None else side)
        if side is None:
            assert np.array_equal(out["auto"], out[None])
        else:
            assert stats["occlusion_filled"] == int(strips.sum())
            np.testing.assert_array_equal(out["auto"][strips], WALL)
            np.testing.assert_array_equal(out["auto"][~strips], out[None][~strips])
    with pytest.raises(ValueError, match="or auto"):
        Pipeline(checkpoint=tmp_path, stage_options={"complete": {"occlusion_fill": "both"}})
    off = Pipeline(checkpoint=tmp_path, stage_options={"complete": {"occlusion_fill": False, "hole_fill": False}})
    assert off.stages[0].options["occlusion_fill"] is None and off.stages[0].options["hole_fill"] is None  # YAML "off"
