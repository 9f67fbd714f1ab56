"""Documented contracts at their edges, where a plausible one-character bug would otherwise pass the suite (found by
hand mutation testing in session 31): boundaries of thresholds, clipping of stated values, and measured pixels
never overwritten."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


def test_the_query_stride_is_the_smallest_whose_grid_fits_the_budget():
    """Where the grid's count of missing pixels falls with the stride (one measured pixel), the search finds the
    smallest stride that fits (query_plan's docstring says where it need not)."""
    from depthkit.complete.query_plan import plan_queries

    sparse = np.zeros((40, 40), np.float32)
    sparse[0, 0] = 2.0
    sizes = {s: plan_queries(sparse, stride=s)["rows"].size for s in range(1, 41)}
    for budget in (1, 4, 9, 30):
        want = min(s for s, n in sizes.items() if n <= budget)  # from the grids themselves, not the budget logic
        assert plan_queries(sparse, budget=budget)["stride"] == want, budget


def test_fallback_keeps_an_answer_whose_confidence_is_the_threshold():
    """fuse_answers' fallback replaces answers whose confidence is *below* the threshold."""
    from depthkit.complete.query_plan import fuse_answers

    out = fuse_answers(np.array([3.0, 3.0]), np.array([0.5, 0.49]), np.array([True, True]), np.array([1.0, 1.0]),
                       mode="fallback", threshold=0.5)
    assert out.tolist() == [3.0, 1.0]


def test_fill_dense_never_lets_an_answer_overwrite_a_measurement():
    from depthkit.complete.query_plan import fill_dense

    image = np.zeros((8, 8, 3), np.uint8)
    sparse = np.zeros((8, 8), np.float32)
    sparse[2, 3], sparse[6, 6] = 1.5, 4.0
    dense = fill_dense(image, sparse, np.array([2, 5]), np.array([3, 5]), np.array([9.0, 2.0]))
    assert dense[2, 3] == np.float32(1.5) and dense[6, 6] == np.float32(4.0) and dense[5, 5] == np.float32(2.0)


def test_prompt_numbers_are_clipped_to_the_stated_range_and_nan_is_refused():
    """Depths in the text are clipped to [0.001, 300] m with three decimals (prompts.MAX_DEPTH); a NaN measurement or
    prior is an error, not "nan meters"; an answer too long to be a float is unparseable, not inf."""
    from depthkit.complete import prompts

    guided = prompts.PromptConfig("guided")
    assert "300.000" in prompts.query_text(0, (3, 4), prior=500.0, config=guided)
    assert "0.001" in prompts.query_text(0, (3, 4), prior=1e-4, config=guided)
    assert "300.000" in prompts.mask_text(1, 500.0)
    for call in (lambda: prompts.query_text(0, (3, 4), prior=math.nan, config=guided),
                 lambda: prompts.mask_text(1, math.nan)):
        with pytest.raises(ValueError):
            call()
    assert prompts.parse_answer("9" * 400) is None


def test_delta_and_dbe_thresholds_are_strict():
    """delta_k counts max(pred/gt, gt/pred) < 1.25^k (gt 4, pred 5 is exactly 1.25: not inside); a predicted edge
    exactly max_dist px from the GT edge is beyond the truncation (iBims-1: distances < tau)."""
    from depthkit.metrics import dbe_metrics, depth_metrics

    m = depth_metrics(np.full((4, 4), 5.0), np.full((4, 4), 4.0))
    assert m["delta1"] == 0.0 and m["delta2"] == 1.0
    gt = np.ones((40, 60), np.float32)
    gt[:, 20:] = 5.0
    pred = np.ones((40, 60), np.float32)
    pred[:, 22:30] = 5.0  # a bar: its edges 2 px and exactly 10 px from the GT's step
    assert dbe_metrics(pred, gt, max_dist=10.0)["dbe_acc"] == pytest.approx(2.0)  # the 10-px edge is not counted


def test_a_depth_reaching_65_535_m_keeps_millimetres():
    from depthkit.png_scale import choose_png_scale

    assert choose_png_scale(np.array([[65.535, 1.0]])) == 1000
    assert choose_png_scale(np.array([[65.536, 1.0]])) == 256


def test_pixels_without_metric_depth_do_not_set_the_discrepancy_peak():
    """e is |pred - norm(d)| over the per-image maximum *of the valid pixels*; a hole with a larger error must not
    shrink e elsewhere (it gets e = 1 itself)."""
    from depthkit.sharpen.gating import discrepancy

    pred = torch.tensor([0.0, 0.5, 1.0, 1.0]).view(1, 1, 1, 4)
    target = torch.tensor([0.0, 0.0, 0.0, -1.0]).view(1, 1, 1, 4)
    valid = torch.tensor([True, True, True, False]).view(1, 1, 1, 4)
    e = discrepancy(pred, target, valid_mask=valid)
    assert e.flatten().tolist() == [0.0, 0.5, 1.0, 1.0]


def test_sds_timesteps_reach_their_upper_bound():
    from depthkit.sharpen.config import SharpDepthConfig
    from depthkit.sharpen.losses import sample_sds_timesteps

    t = sample_sds_timesteps(50, SharpDepthConfig(sds_timestep="sampled", sds_t_min=500, sds_t_max=500),
                             generator=torch.Generator().manual_seed(0))
    assert t.tolist() == [500] * 50


def test_resize_depth_needs_half_the_weight_on_known_depth():
    """A processing pixel is valid when at least half of its interpolation weight fell on known depth: one known
    pixel of four in each 2x2 cell is not enough."""
    from depthkit.sharpen.limits import resize_depth

    depth = torch.zeros(1, 1, 4, 4)
    depth[0, 0, ::2, ::2] = 2.0
    _, valid = resize_depth(depth, (2, 2))
    assert not valid.any()
    _, valid = resize_depth(torch.full((1, 1, 4, 4), 2.0), (2, 2))
    assert valid.all()


def test_denormalised_depth_stays_within_its_metres():
    """An extrapolated map below -1 must not give metres <= 0 (denormalize_depth clamps to [1e-3, 1e4] m)."""
    from depthkit.sharpen.normalize import NormParams, denormalize_depth

    params = NormParams(lo=torch.tensor([1.0]), hi=torch.tensor([3.0]), space="depth")
    out = denormalize_depth(torch.tensor([-5.0, 1.0, 1e6]).view(1, 1, 1, 3), params)
    assert out.flatten().tolist() == pytest.approx([1e-3, 3.0, 1e4])


@pytest.mark.parametrize("spacing,radius", [(4, 2), (6, 3)])
def test_the_confidence_maps_edge_window_is_centred_and_as_wide_as_the_anchor_spacing(spacing, radius):
    """The depth range behind the edge term is taken over an odd window centred on the pixel, the anchor spacing
    rounded up to odd: spacing 4 -> 5 px, 6 -> 7 px. Expected values from the step's position alone."""
    from depthkit.complete.query_plan import confidence_map

    h, w, step = spacing, 6 * spacing, 3 * spacing  # one anchor per spacing x spacing cell: spacing exactly
    sparse = np.zeros((h, w), np.float32)
    sparse[0, ::spacing] = 2.0
    dense = np.where(np.arange(w) < step, 2.0, 6.0)[None].repeat(h, 0)
    none = np.zeros(0, np.int64)
    conf = confidence_map(sparse, none, none, np.zeros(0), np.zeros(0, bool), 1e9, dense=dense)
    near_step = (np.arange(w) >= step - radius) & (np.arange(w) < step + radius)  # windows reaching across
    want = np.where(near_step, np.exp(-np.log(3.0) / 0.1), 1.0)
    np.testing.assert_allclose(conf[h - 1], want, rtol=1e-5)


def _wall_and_box_frame(measured: int):
    """The hole-fill frame of tests/test_hole_fill.py (a grey wall at 4 m, a red box at 2 m in columns 20-29, 10x40)
    with one blob across the box's left outline (row 3, columns 16-24) and exactly ``measured`` pixels measured: row 3
    around the blob, then whole rows and the start of one more, all away from the blob's row."""
    depth = np.full((10, 40), 4.0, np.float32)
    depth[:, 20:30] = 2.0
    image = np.full((10, 40, 3), 128, np.uint8)
    image[:, 20:30] = (220, 30, 30)
    keep = np.zeros(depth.shape, bool)
    keep[3] = True
    keep[3, 16:25] = False
    rest = measured - int(keep.sum())
    others = np.flatnonzero(np.arange(10) != 3)
    flat = np.zeros((9, 40), bool).ravel()
    flat[:rest] = True
    keep[others] = flat.reshape(9, 40)
    assert keep.sum() == measured
    return np.where(keep, depth, 0).astype(np.float32), image


def test_hole_fill_runs_on_a_frame_with_exactly_its_minimum_measured_share():
    """``min_measured`` (30 %) is inclusive: 120 of 400 pixels measured is a dense frame, 119 is not."""
    from depthkit.complete.hole_fill import fill_edge_holes

    for measured, fills in ((120, True), (119, False)):
        sparse, image = _wall_and_box_frame(measured)
        assert (sparse > 0).mean() == (0.3 if fills else 119 / 400)
        completion = np.where(sparse > 0, sparse, 2.5).astype(np.float32)
        _, mask = fill_edge_holes(completion, sparse, image)
        assert mask[3, 16:20].all() == fills and mask.any() == fills, measured


def test_occlusion_evidence_reads_a_frame_with_exactly_its_minimum_measured_share():
    """``occlusion_evidence``'s dense-frame gate (30 %) is inclusive, as hole fill's: a stereo frame thinned to
    scan lines and topped up with flat wall pixels (runs that touch the border: no evidence either way) to exactly
    30 % gives its side; one pixel fewer gives none."""
    from depthkit.complete.occlusion import occlusion_evidence
    from depthkit.data.sparse import sample_stereo
    from depthkit.geometry import Intrinsics

    depth = np.full((240, 240), 8.0, np.float32)
    for d, y0, y1, x0, x1 in ((1.5, 24, 84, 40, 70), (2.5, 102, 168, 110, 140), (4.0, 186, 228, 180, 215)):
        depth[y0:y1, x0:x1] = d
    sparse = sample_stereo(depth, Intrinsics(100.0, 100.0, 120.0, 120.0), seed=0, baseline=0.3,
                           disparity_sigma_px=0.0, fatten_px=0, n_blobs=0)
    thinned = np.zeros_like(sparse)
    thinned[::4] = sparse[::4]
    need = int(0.3 * thinned.size) - int((thinned > 0).sum())
    rows = [r for r in range(240) if r % 4][: need // 30 + 1]
    assert need > 0 and len(rows) * 30 >= need
    top_up = np.zeros(thinned.shape, bool)
    top_up[rows, :30] = True  # the wall left of every box, from column 0
    top_up.ravel()[np.flatnonzero(top_up.ravel())[need:]] = False
    exact = np.where(top_up, 8.0, thinned).astype(np.float32)
    assert (exact > 0).mean() == 0.3
    assert occlusion_evidence(exact).side == "left"
    fewer = exact.copy()
    fewer[rows[0], 0] = 0.0
    assert occlusion_evidence(fewer).side is None


@pytest.mark.parametrize("zero_at_sparse", [True, False])
def test_pass_2_gate_sees_no_discrepancy_at_measured_processing_pixels(zero_at_sparse):
    """With ``zero_discrepancy_at_sparse`` (the default) the e that gates pass 2's input is 0 at every processing
    pixel holding a measurement and unchanged elsewhere; without it the measurements do not touch e. At a processing
    size equal to the input's, the measured processing pixels are the measured pixels."""
    from depthkit.sharpen.model import SharpDepth
    from depthkit.sharpen.tiny import build_tiny_lotus

    model = SharpDepth(build_tiny_lotus("generative", seed=0), {"zero_discrepancy_at_sparse": zero_at_sparse})
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, 3, 48, 64), dtype=np.float32) * 2 - 1)
    depth = torch.from_numpy(np.tile(np.linspace(1.0, 5.0, 64, dtype=np.float32), (48, 1)))[None, None]
    sparse = torch.zeros_like(depth)
    sparse[0, 0, [5, 24, 45], [7, 32, 60]] = torch.tensor([1.234, 2.5, 4.75])
    seen = []
    gate_latent = model.gate_latent

    def record(z_d, e, *args, **kwargs):
        seen.append(e.clone())
        return gate_latent(z_d, e, *args, **kwargs)

    model.gate_latent = record
    for given in (None, sparse):
        model.sharpen_tensors(image, depth, given, processing_resolution=64, generator=torch.Generator().manual_seed(1))
    without, with_sparse = seen
    assert with_sparse.shape[-2:] == (48, 64)
    measured = sparse > 0
    assert (without[measured] > 0).all()  # else the check below could not fail
    expected = torch.where(measured, torch.zeros_like(without), without) if zero_at_sparse else without
    assert torch.equal(with_sparse, expected)


def test_the_sharpeners_output_bounds_stay_finite_for_a_scene_at_float32s_far_end():
    """A disparity-space scene whose farthest depth is ~1e38 m: the far bound (farthest x 10) would overflow to inf,
    and an extrapolated disparity clamped to 1 / inf = 0 would come out as infinite depth."""
    from depthkit.sharpen.normalize import NormParams, denormalize_depth, output_depth_bounds

    params = NormParams(lo=torch.tensor([1e-38]), hi=torch.tensor([1.0]), space="disparity")
    near, far = output_depth_bounds(params)
    assert torch.isfinite(far).all() and (near > 0).all()
    out = denormalize_depth(torch.tensor([-1.2, 0.0, 1.0]).view(1, 1, 1, 3), params, near, far)
    assert torch.isfinite(out).all() and (out > 0).all()


def test_resize_sparse_takes_a_size_given_as_a_numpy_array():
    from depthkit.io import resize_sparse

    sparse = np.zeros((4, 6), np.float32)
    sparse[1, 2] = 2.5
    out = resize_sparse(sparse, np.array([8, 12]))
    assert out.shape == (8, 12) and out.max() == np.float32(2.5)
    with pytest.raises(ValueError, match="whole pixels"):
        resize_sparse(sparse, np.array([[8, 12]]))


def test_a_manifest_method_that_is_empty_is_refused_not_the_default(tmp_path):
    from depthkit import Pipeline
    from depthkit.checkpoints import write_manifest

    write_manifest(tmp_path, {"complete": {"method": ""}})
    with pytest.raises(ValueError, match="unknown completion method ''"):
        Pipeline.from_pretrained(tmp_path)


def test_scene_view_options_refuse_complex_numbers():
    from depthkit.data.scene_options import check_view_options

    with pytest.raises(ValueError, match="hfov_deg"):
        check_view_options(np.complex64(30), 0.0)
    with pytest.raises(ValueError, match="image_noise"):
        check_view_options(60.0, np.complex128(1))
