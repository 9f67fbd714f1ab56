"""Documented contracts at their edges, where a plausible one-character bug would otherwise pass the suite (found by
hand mutation testing in session 31): boundaries of thresholds, clipping of stated values, and measured pixels
never overwritten."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


def test_the_query_stride_is_the_smallest_whose_grid_fits_the_budget():
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
