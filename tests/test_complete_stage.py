"""The learned complete stage: query plan, fusion, dense fill, confidence map, checkpoint → Pipeline → CLI."""

import numpy as np
import pytest

from depthkit.complete.query_plan import confidence_map, fill_dense, fill_residual, fuse_answers, plan_queries

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _scene(h=48, w=64, density=0.05, seed=0):
    rng = np.random.default_rng(seed)
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    sparse = rng.uniform(0.5, 10.0, (h, w)).astype(np.float32)
    sparse[rng.random((h, w)) > density] = 0.0
    return image, sparse


# ---- query plan --------------------------------------------------------------------------------------------------


def test_plan_grid_skips_measured_pixels():
    sparse = np.zeros((5, 7), np.float32)
    sparse[1, 1] = 2.0  # on the stride-2 grid (offset 1): skipped
    sparse[0, 0] = 3.0  # off the grid
    plan = plan_queries(sparse, stride=2)
    assert plan["stride"] == 2
    pairs = set(zip(plan["rows"].tolist(), plan["cols"].tolist()))
    assert pairs == {(r, c) for r in (1, 3) for c in (1, 3, 5)} - {(1, 1)}
    every = plan_queries(sparse)  # no stride, no budget: every missing pixel, as the paper
    assert every["rows"].size == 35 - 2 and every["stride"] == 1


def test_plan_budget_picks_the_smallest_stride_that_fits():
    sparse = np.zeros((40, 40), np.float32)
    sparse[0, 0] = 1.0
    plan = plan_queries(sparse, budget=100)
    assert plan["rows"].size <= 100 and plan["stride"] == 4  # 10 x 10 = 100 fits, stride 3 gives 14 x 14
    assert plan_queries(sparse, stride=2, budget=100)["stride"] == 4  # a given stride is raised to fit
    assert plan_queries(sparse, stride=8, budget=100)["stride"] == 8  # ...but never lowered
    one = plan_queries(sparse, budget=1)
    assert one["rows"].size == 1
    assert plan_queries(sparse, budget=0)["rows"].size == 0
    assert plan_queries(np.ones((4, 4), np.float32), stride=1)["rows"].size == 0  # all measured
    with pytest.raises(ValueError, match="stride"):
        plan_queries(sparse, stride=0)
    with pytest.raises(ValueError, match="budget"):
        plan_queries(sparse, budget=-1)



def test_plan_a_stride_beyond_int64_is_the_one_pixel_grid():
    """query_stride 1e30 (a whole number >= 1: accepted by the option check) asks the last row and column's pixel, as
    every stride of twice the image's side does, not an IndexError from numpy (indices beyond int64)."""
    sparse = np.zeros((20, 30), np.float32)
    sparse[0, 0] = 1.0
    for stride in (60, 1000, 2**63, 10**30, int(1e30)):
        plan = plan_queries(sparse, stride=stride)
        assert plan["rows"].tolist() == [19] and plan["cols"].tolist() == [29] and plan["stride"] == stride
    assert plan_queries(sparse, stride=10**30, budget=1)["rows"].tolist() == [19]

# ---- fusion, fill, confidence --------------------------------------------------------------------------------------


def test_fusion_modes_hand_values():
    values = np.array([2.0, 4.0, 6.0])
    conf = np.array([0.9, 0.2, 0.5])
    ok = np.array([True, True, False])
    classical = np.array([1.0, 1.0, 1.0])
    none = fuse_answers(values, conf, ok, None, "none")
    assert none[:2].tolist() == [2.0, 4.0] and np.isnan(none[2])
    fallback = fuse_answers(values, conf, ok, classical, "fallback", threshold=0.5)
    assert fallback[:2].tolist() == [2.0, 1.0] and np.isnan(fallback[2])  # unreadable stays out: filled from neighbours
    blend = fuse_answers(values, conf, ok, classical, "blend")
    assert blend[:2] == pytest.approx([0.9 * 2 + 0.1 * 1, 0.2 * 4 + 0.8 * 1])
    with pytest.raises(ValueError, match="needs the classical"):
        fuse_answers(values, conf, ok, None, "fallback")
    with pytest.raises(ValueError, match="fusion"):
        fuse_answers(values, conf, ok, classical, "vote")


def test_fill_keeps_measured_and_answers_exact_and_skips_unreadable():
    image, sparse = _scene()
    rows, cols = np.array([10, 20, 30]), np.array([5, 40, 60])
    sparse[rows, cols] = 0.0
    values = np.array([1.2345, 7.5, np.nan])
    dense = fill_dense(image, sparse, rows, cols, values)
    measured = sparse > 0
    assert np.array_equal(dense[measured], sparse[measured])
    assert dense[10, 5] == np.float32(1.2345) and dense[20, 40] == np.float32(7.5)
    assert dense[30, 60] > 0 and np.isfinite(dense).all()  # the unreadable pixel is filled from neighbours
    lo, hi = min(sparse[measured].min(), 1.2345), max(sparse[measured].max(), 7.5)
    assert dense.min() >= lo and dense.max() <= hi
    with pytest.raises(ValueError, match="nothing to fill"):
        fill_dense(image, np.zeros_like(sparse), rows, cols, np.full(3, np.nan))


def test_fill_copies_anchors_itself(monkeypatch):
    """fill_dense guarantees the anchors, not the interpolator: with one that copies nothing (a constant map)
    measured pixels and answers must still come out exactly."""
    import depthkit.data.baselines as baselines

    monkeypatch.setattr(baselines, "guided", lambda image, sparse: np.full(sparse.shape, 123.0, np.float32))
    image, sparse = _scene()
    rows, cols = np.array([10, 20]), np.array([5, 40])
    sparse[rows, cols] = 0.0
    dense = fill_dense(image, sparse, rows, cols, np.array([1.2345, 7.5]))
    measured = sparse > 0
    assert np.array_equal(dense[measured], sparse[measured])
    assert dense[10, 5] == np.float32(1.2345) and dense[20, 40] == np.float32(7.5)
    assert (dense[~measured] == 123.0).sum() == (~measured).sum() - 2


def test_residual_fill_gives_back_the_classical_map_and_moves_it_by_the_answers():
    """fill="residual": answers equal to the classical map change nothing (unlike the anchors fill, which
    re-interpolates); an answer k times the classical value scales its neighbourhood by at most k, reaches k at its
    own pixel, and measured pixels stay exact."""
    from depthkit.data.baselines import guided

    image, sparse = _scene()
    classical = guided(image, sparse)
    rows, cols = np.array([10, 20, 30, 40]), np.array([5, 40, 60, 12])
    sparse[rows, cols] = 0.0
    classical = guided(image, sparse)
    same = fill_residual(image, sparse, rows, cols, classical[rows, cols].astype(np.float64), classical)
    np.testing.assert_allclose(same, classical, rtol=1e-6)
    assert not np.allclose(fill_dense(image, sparse, rows, cols, classical[rows, cols]), classical, rtol=1e-6)
    values = classical[rows, cols].astype(np.float64)
    values[1] *= 2.0
    values[3] = np.nan  # unreadable: no correction there
    moved = fill_residual(image, sparse, rows, cols, values, classical)
    measured = sparse > 0
    assert np.array_equal(moved[measured], sparse[measured])
    assert moved[20, 40] == pytest.approx(values[1], rel=1e-5)
    ratio = moved / classical
    assert ratio.min() >= 1.0 - 1e-6 and ratio.max() <= 2.0 + 1e-5 and (ratio[~measured] > 1.01).sum() >= 1
    assert (ratio[~measured] > 1.01).mean() < 0.1  # measured pixels hold the correction at 0: it stays local
    assert ratio[10, 5] == pytest.approx(1.0, abs=1e-6) and ratio[30, 60] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="nothing to fill"):
        fill_residual(image, np.zeros_like(sparse), rows, cols, np.full(4, np.nan), classical)


def test_residual_fill_does_not_spread_an_extreme_measurement():
    """Bad returns at 1 µm among 0.5-10 m: the classical map is ~1 µm around them, and answers live in the
    prompts' range (at least 1 mm), so an answer repeating the clipped prior is no correction (without the clip its
    neighbours got a factor-1,000 correction); an answer that does disagree there (0.5 m) cannot push any pixel
    outside the range of the classical map and the answers. Where that range does not bind, the fill is the
    classical map times exp(the guided interpolation of the log corrections), computed here from the field."""
    from depthkit.complete.prompts import MAX_DEPTH, MIN_DEPTH
    from depthkit.data.baselines import guided, guided_field

    image, sparse = _scene()
    rows, cols = np.array([10, 20, 30, 40]), np.array([5, 40, 60, 12])
    sparse[rows, cols] = 0.0
    sparse[8:13, 3:8] = 1e-6  # a patch of bad returns around the first query
    sparse[10, 5] = 0.0
    measured = sparse > 0
    classical = guided(image, sparse)
    classical[8:13, 3:8] = 1e-6  # inside it, as an interpolator that trusts them gives it
    assert classical[10, 5] < 1e-3 and classical[~measured].max() > 1.0
    repeat = np.clip(classical[rows, cols].astype(np.float64), MIN_DEPTH, MAX_DEPTH)
    np.testing.assert_allclose(fill_residual(image, sparse, rows, cols, repeat, classical), classical, rtol=1e-6)
    values = classical[rows, cols].astype(np.float64)
    values[0] = 0.5
    out = fill_residual(image, sparse, rows, cols, values, classical)
    low, high = min(classical.min(), values.min()), max(classical.max(), values.max())
    assert out.min() >= np.float32(low) and out.max() <= np.float32(high)
    known = measured.copy()
    known[rows, cols] = True
    field = np.zeros(sparse.shape, np.float32)
    field[10, 5] = np.log(0.5 / MIN_DEPTH)
    free = classical * np.exp(guided_field(image, field, known))
    assert (free > high).any()  # the bound binds on those pixels ...
    inside = (free <= high) & ~measured
    np.testing.assert_allclose(out[inside], free[inside], rtol=1e-5)  # ... and nowhere else
    assert np.array_equal(out[measured], sparse[measured]) and (out[free > high] == np.float32(high)).all()
    farther = classical[rows, cols].astype(np.float64)
    farther[2] = 1.5 * classical.max()  # an answer beyond the classical map's range is in the range itself
    assert fill_residual(image, sparse, rows, cols, farther, classical)[30, 60] == pytest.approx(farther[2], rel=1e-5)


def test_confidence_map_hand_case():
    sparse = np.zeros((1, 6), np.float32)
    sparse[0, 0] = 2.0
    conf = confidence_map(sparse, np.array([0, 0]), np.array([4, 2]), np.array([0.25, 0.9]), np.array([True, False]),
                          decay_px=2.0)
    # measured 1; query at 4 -> 0.25; unreadable query at 2 -> 0; others: the nearest anchor's confidence times
    # exp(-distance / 2)
    e = np.exp(-0.5)
    assert conf[0] == pytest.approx([1.0, e, 0.0, 0.25 * e, 0.25, 0.25 * e])
    # default decay = the anchors' mean spacing sqrt(6 / 2); far pixels fade toward 0
    auto = confidence_map(sparse, np.array([0]), np.array([4]), np.array([1.0]), np.array([True]))
    assert auto[0, 1] == pytest.approx(np.exp(-1 / np.sqrt(3.0)))
    wide = np.zeros((1, 200), np.float32)
    wide[0, 0] = 1.0
    far = confidence_map(wide, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool), 10.0)
    assert far[0, 0] == 1 and far[0, 199] < 1e-8 and (np.diff(far[0]) < 0).all()
    # with the completed map: confidence drops where the depth changes within the anchor spacing (an edge)
    grid = np.zeros((20, 40), np.float32)
    grid[::5, ::5] = 2.0
    dense = np.where(np.arange(40) < 20, 2.0, 6.0)[None].repeat(20, 0)
    edge = confidence_map(grid, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool), 1e9,
                          dense=dense)
    assert edge[2, 2] == pytest.approx(1.0) and edge[2, 19] == pytest.approx(np.exp(-np.log(3.0) / 0.1))
    assert (edge[grid > 0] == 1).all()  # measured pixels stay exact


# ---- the stage on a tiny checkpoint ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_text_checkpoint(tmp_path_factory):
    from depthkit.complete.checkpoint import write_tiny

    root = tmp_path_factory.mktemp("ck_text")
    write_tiny(root / "complete", readout="text", prompt_prior="none")
    return root


@pytest.fixture(scope="module")
def tiny_head_checkpoint(tmp_path_factory):
    from depthkit.complete.checkpoint import write_tiny

    root = tmp_path_factory.mktemp("ck_head")
    write_tiny(root / "complete")  # residual head, guided prior: the untrained head returns the prior exactly
    return root


def test_untrained_head_with_residual_fill_returns_the_guided_map(tiny_head_checkpoint):
    """The untrained residual head answers the prior exactly; with fill="residual" the stage must then return the
    classical guided map itself (computed here by the baseline, not by the stage), measured pixels exact."""
    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.data.baselines import guided

    image, sparse = _scene()
    stage = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_budget=40, fill="residual")
    out = stage.run(image, sparse)
    np.testing.assert_allclose(out.depth, guided(image, sparse), rtol=1e-5)
    assert np.array_equal(out.depth[sparse > 0], sparse[sparse > 0]) and stage.last_stats["fill"] == "residual"
    with pytest.raises(ValueError, match="fill="):
        CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", fill="mean")


def test_a_query_stride_the_budget_raises_is_said_once(tiny_head_checkpoint):
    """query_stride is the finest grid step: the default budget raises it on a frame with more missing pixels than it
    allows. That was silent (stride 2 asked, 18 used on 480x640); a warning now says it once per stage, naming both
    strides and the way out (query_budget null), and with no cap the stride asked is the stride used."""
    import warnings

    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.io import DepthkitWarning

    image, sparse = _scene()
    stage = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_stride=2, query_budget=40)
    with pytest.warns(DepthkitWarning, match=r"query_stride=2 was raised to \d+ px for a 64x48 frame so that its "
                                             r"queries fit query_budget=40.*set query_budget to null"):
        stage.run(image, sparse)
    assert stage.last_stats["stride"] > 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stage.run(image, sparse)  # said once
        free = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_stride=4, query_budget=None)
        free.run(image, sparse)
    assert free.last_stats["stride"] == 4


@pytest.mark.parametrize("option, value", [("query_budget", "abc"), ("query_budget", True), ("query_stride", 0),
                                           ("batch_size", 2.5), ("memory_budget_mb", "lots"),
                                           ("fusion_threshold", 1.5), ("confidence_decay_px", float("nan")),
                                           ("max_working_side", None),
                                           pytest.param("query_budget", 10**400, id="query_budget-huge")])
def test_numeric_options_are_checked_before_the_model_loads(tiny_head_checkpoint, monkeypatch, option, value):
    """A wrongly typed or out-of-range numeric option is refused by name when the stage is built (the model is not
    loaded), not per image later with a bare conversion error; good values of each kind pass."""
    import depthkit.complete.checkpoint as ck
    from depthkit.complete.stage import CompleteVLMStage, check_numeric_options

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    with monkeypatch.context() as m:
        m.setattr(ck, "load_complete", no_load)
        with pytest.raises(ValueError, match=f"complete stage option {option}=.*expected"):
            CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", **{option: value})
    check_numeric_options({"query_budget": 0, "query_stride": None, "batch_size": 4, "memory_budget_mb": 0.5,
                           "fusion_threshold": 0, "confidence_decay_px": None, "max_working_side": 64})


def test_a_working_side_under_one_vision_token_is_refused_by_the_cli(tiny_head_checkpoint, tmp_path, capsys):
    """max_working_side below 28 px (one Qwen2.5-VL vision token) is refused before the model loads, saying the value,
    the bound, why and what to pass; 28 itself completes at that size and still asks queries (at 2 px a 48x64 frame
    was completed as 2x2 pixels with no query: a flat map)."""
    import cv2

    from depthkit.checkpoints import write_manifest
    from depthkit.cli import main
    from depthkit.complete.stage import MIN_WORKING_SIDE, CompleteVLMStage

    write_manifest(tiny_head_checkpoint, {"complete": {"method": "sdim"}})
    image, sparse = _scene(48, 64, seed=4)
    cv2.imwrite(str(tmp_path / "rgb.png"), image[:, :, ::-1])
    np.save(tmp_path / "sparse.npy", sparse)
    args = ["run", "--image", str(tmp_path / "rgb.png"), "--sparse", str(tmp_path / "sparse.npy"), "--checkpoint",
            str(tiny_head_checkpoint), "--stages", "complete", "--option", "complete.query_budget=16"]
    for side in (2, MIN_WORKING_SIDE - 1):
        assert main([*args, "--option", f"complete.max_working_side={side}", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert (f"complete stage option max_working_side={side}: expected a whole number >= 28 (28 px is one vision "
                "token" in err and "e.g. --option complete.max_working_side=2048." in err), err
    assert not (tmp_path / "o" / "rgb_depth.npy").exists()
    assert main([*args, "--option", "complete.max_working_side=28", "--out", str(tmp_path / "o28")]) == 0
    assert np.load(tmp_path / "o28" / "rgb_depth.npy").shape == (48, 64)
    stage = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_budget=16, max_working_side=28)
    stage.run(image, sparse)
    assert stage.last_stats["working_size"] == (21, 28) and stage.last_stats["n_queries"] > 0


def test_an_image_too_elongated_for_the_vision_encoder_is_refused_clearly(tiny_head_checkpoint):
    """Qwen2.5-VL's processor refuses an aspect ratio over 200 (at the size it is given); the stage says so with
    what to do. Without queries the processor is never called, and the same image completes."""
    from depthkit.complete.stage import CompleteVLMStage

    stage = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_budget=4)
    image, sparse = _scene(h=2, w=402, density=0.2)  # ratio 201
    with pytest.raises(ValueError, match=r"refuses this 2x402 image \(.*aspect ratio.*\).*--method guided"):
        stage.run(image, sparse)
    image, sparse = _scene(h=2, w=400, density=0.2)  # 200: the processor takes it
    assert stage.run(image, sparse).depth.shape == (2, 400)
    no_queries = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_budget=0)
    assert no_queries.run(*_scene(h=2, w=402, density=0.2)).depth.shape == (2, 402)


def test_grid_token_head_with_prior_input_runs_through_the_stage(tmp_path):
    """A one-token checkpoint whose head reads log(prior): untrained, it returns the guided map exactly through the
    stage (the engine passes each query's prior to the head); a head given weights moves it."""
    import torch

    from depthkit.complete.checkpoint import load_complete, save_complete, write_tiny
    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.data.baselines import guided

    write_tiny(tmp_path / "complete", pixel_reference="grid_token", mask_text="none", head_prior_input=True)
    image, sparse = _scene()
    stage = CompleteVLMStage.from_checkpoint(tmp_path / "complete", query_budget=40, fill="residual")
    out = stage.run(image, sparse)
    np.testing.assert_allclose(out.depth, guided(image, sparse), rtol=1e-5)
    loaded = load_complete(tmp_path / "complete")
    assert loaded.residual_head.prior_input
    with torch.no_grad():  # only the log(prior) input's weight: the correction then depends on the prior alone
        loaded.residual_head.net[1].weight.zero_()
        loaded.residual_head.net[1].weight[:, -1] = 1.0
        loaded.residual_head.net[-1].weight.fill_(0.01)
    settings = {"prompt_prior": "guided", "pixel_reference": "grid_token", "mask_text": "none",
                "readout": "residual_head"}
    save_complete(tmp_path / "moved", loaded.model, loaded.processor, settings, residual_head=loaded.residual_head)
    moved = CompleteVLMStage.from_checkpoint(tmp_path / "moved", query_budget=40, fill="residual").run(image, sparse)
    assert not np.allclose(moved.depth, out.depth)
    assert np.array_equal(moved.depth[sparse > 0], sparse[sparse > 0])


def test_stage_text_readout_end_to_end(tiny_text_checkpoint):
    from depthkit.complete.stage import CompleteVLMStage

    stage = CompleteVLMStage.from_checkpoint(tiny_text_checkpoint / "complete", query_budget=40, batch_size=16,
                                             fusion="fallback")
    image, sparse = _scene()
    out = stage.run(image, sparse)
    measured = sparse > 0
    assert out.depth.shape == sparse.shape and out.depth.dtype == np.float32
    assert np.array_equal(out.depth[measured], sparse[measured])
    assert (out.depth > 0).all() and np.isfinite(out.depth).all()
    assert ((out.confidence >= 0) & (out.confidence <= 1)).all() and (out.confidence[measured] == 1).all()
    qmask = out.extras["query_mask"] > 0
    assert 0 < qmask.sum() <= 40 and not (qmask & measured).any()
    stats = stage.last_stats
    assert stats["n_queries"] == qmask.sum() and stats["n_batches"] == -(-stats["n_unique"] // 16) >= 2
    assert out.extras["query_confidence"][~qmask].max() == 0


def test_stage_free_decoding_counts_unreadable_answers(tiny_text_checkpoint):
    from depthkit.complete.stage import CompleteVLMStage

    # A random model does not write the template; free decoding exposes that: counted, filled, never raised.
    stage = CompleteVLMStage.from_checkpoint(tiny_text_checkpoint / "complete", query_budget=12, decode="free")
    stage.engine.max_new_tokens = 6
    image, sparse = _scene(seed=1)
    out = stage.run(image, sparse)
    bad = out.extras["unparseable_mask"] > 0
    assert stage.last_stats["n_unparseable"] == int(bad.sum()) > 0
    assert np.isfinite(out.depth).all() and (out.depth > 0).all() and (out.confidence[bad] == 0).all()


def test_stage_one_query_and_all_measured(tiny_head_checkpoint):
    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.data.baselines import guided

    stage = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_budget=64)
    image, _ = _scene(16, 20)
    full = np.random.default_rng(3).uniform(1.0, 4.0, (16, 20)).astype(np.float32)
    out = stage.run(image, full)  # nothing to query: the model is not even run
    assert np.array_equal(out.depth, full) and stage.last_stats["n_queries"] == 0
    one = full.copy()
    one[7, 9] = 0.0
    out = stage.run(image, one)
    assert stage.last_stats["n_queries"] == 1 and out.extras["query_mask"][7, 9] == 1
    # untrained head = the guided prior exactly; the answer is then an anchor at its own pixel
    assert out.depth[7, 9] == pytest.approx(float(guided(image, one)[7, 9]), rel=1e-5)
    assert np.array_equal(out.depth[one > 0], one[one > 0])


def test_decode_is_said_to_do_nothing_where_no_digits_are_decoded(tiny_head_checkpoint, tiny_text_checkpoint):
    """decode chooses how the text readout decodes digits; a residual-head checkpoint decodes none, so the option
    was accepted and ignored: now said (a warning), and silent where it acts."""
    import warnings

    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.io import DepthkitWarning

    with pytest.warns(DepthkitWarning, match=r"decode='free' has no effect: this checkpoint reads its answers with "
                                             r"readout='residual_head'"):
        CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", decode="free")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CompleteVLMStage.from_checkpoint(tiny_text_checkpoint / "complete", decode="free")
        CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete")
        # a value that is no decode mode is refused by name, not called ignored first (a warning and then an error)
        for checkpoint in (tiny_head_checkpoint, tiny_text_checkpoint):
            with pytest.raises(ValueError, match=r"decode='greedy'; allowed: constrained .* or free"):
                CompleteVLMStage.from_checkpoint(checkpoint / "complete", decode="greedy")


def test_stage_options_are_checked(tiny_head_checkpoint):
    from depthkit.complete.stage import CompleteVLMStage

    with pytest.raises(ValueError, match="unknown option"):
        CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_strid=4)
    with pytest.raises(ValueError, match="fusion"):
        CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", fusion="max")
    stage = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_budget=8)
    # the constructor's error lists only what the constructor takes (attn_implementation is a loading argument)
    with pytest.raises(ValueError, match="unknown option") as err:
        CompleteVLMStage(stage.engine.model, stage.engine.processor, stage.settings, stage.engine.residual_head,
                         attn_implementation="sdpa")
    allowed = str(err.value).split("allowed: ")[1].split("]")[0]
    assert "attn_implementation" not in allowed and "from_checkpoint" in str(err.value)


def test_stage_without_measured_points(tiny_head_checkpoint, tiny_text_checkpoint):
    """No measured pixel: a prompt prior cannot be computed -> one clear error at the entry point; fusion on a
    prior-free checkpoint falls back to the answers as given (no crash inside the interpolation)."""
    from depthkit.complete.stage import CompleteVLMStage

    image, _ = _scene(16, 20)
    empty = np.zeros((16, 20), np.float32)
    stage = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_budget=8)
    with pytest.raises(ValueError, match="no measured pixel.*prompt_prior='guided'"):
        stage.run(image, empty)
    for fusion in ("fallback", "blend"):
        text = CompleteVLMStage.from_checkpoint(tiny_text_checkpoint / "complete", query_budget=6, fusion=fusion)
        out = text.run(image, empty)
        assert text.last_stats["fusion"] == "none" and text.last_stats["n_queries"] == 6
        assert np.isfinite(out.depth).all() and (out.depth > 0).all()


def test_pipeline_and_cli_use_the_engine(tmp_path):
    from depthkit import Pipeline
    from depthkit.cli import main

    ck = tmp_path / "ck"
    assert main(["init-checkpoint", "--tiny", str(ck), "--stages", "complete"]) == 0
    image, sparse = _scene(32, 40)
    pipe = Pipeline.from_pretrained(ck, stages="complete", stage_options={"complete": {"query_budget": 30}})
    out = pipe(image, sparse)
    stage = pipe.stages[0]
    assert type(stage).__name__ == "CompleteVLMStage" and 0 < stage.last_stats["n_queries"] <= 30
    assert np.array_equal(out.depth[sparse > 0], sparse[sparse > 0])
    assert "query_mask" in out.stages["complete"].extras

    import cv2

    cv2.imwrite(str(tmp_path / "rgb.png"), image[..., ::-1])
    np.save(tmp_path / "sparse.npy", sparse)
    code = main(["run", "--checkpoint", str(ck), "--stages", "complete", "--image", str(tmp_path / "rgb.png"),
                 "--sparse", str(tmp_path / "sparse.npy"), "--out", str(tmp_path / "out")])
    assert code == 0
    depth = np.load(tmp_path / "out" / "rgb_depth.npy")
    assert depth.shape == sparse.shape and np.array_equal(depth[sparse > 0], sparse[sparse > 0])


def test_stage_works_at_a_bounded_size_and_upsamples(tiny_head_checkpoint):
    """An input larger than max_working_side is completed at that size and upsampled: the work (and memory) of the
    fill no longer grows with the input beyond the cap; the Pipeline still returns every measured value exactly."""
    import warnings

    from depthkit import Pipeline
    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.io import DepthkitWarning, resize_sparse

    image, sparse = _scene(48, 64, seed=4)
    stage = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_budget=16,
                                             max_working_side=32)
    with warnings.catch_warnings():  # points merged at the working size on purpose: nothing said (restored after)
        warnings.simplefilter("error", DepthkitWarning)
        out = stage.run(image, sparse)
    assert np.count_nonzero(resize_sparse(sparse, (24, 32), working_size=True)) < np.count_nonzero(sparse)
    assert stage.last_stats["working_size"] == (24, 32) and stage.last_stats["n_queries"] <= 16
    assert out.depth.shape == sparse.shape and np.isfinite(out.depth).all() and (out.depth > 0).all()
    assert out.confidence.shape == sparse.shape and (out.confidence[sparse > 0] == 1).all()
    assert out.extras["query_mask"].shape == sparse.shape
    from depthkit.checkpoints import write_manifest

    write_manifest(tiny_head_checkpoint, {"complete": {"method": "sdim"}})
    pipe = Pipeline(checkpoint=tiny_head_checkpoint, stage_options={"complete": {"max_working_side": 32,
                                                                                 "query_budget": 16}})
    piped = pipe(image, sparse)
    assert np.array_equal(piped.depth[sparse > 0], sparse[sparse > 0])
    small = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_budget=16)
    small.run(image, sparse)
    assert "working_size" not in small.last_stats  # below the cap: native size



def test_working_size_masks_follow_the_measured_points_at_border_centres(tiny_head_checkpoint):
    """42 px -> 28 px: the centres of rows and columns 4, 16, 19, ... fall exactly on a working pixel's border. The
    points there go to the next working pixel (resize_sparse's exact map), and the masks upsampled must read the same
    one: OpenCV's INTER_NEAREST_EXACT read the pixel before, a queried one, so query_mask said 1 on measured pixels."""
    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.io import resize_sparse
    from depthkit.sparse_resize import map_to_resized

    image, _ = _scene(42, 42, seed=2)
    ties = np.array([4, 16, 19, 22, 25])
    sparse = np.zeros((42, 42), np.float32)
    sparse[np.ix_(ties, ties)] = np.linspace(1.0, 5.0, ties.size**2).reshape(ties.size, ties.size)
    stage = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_stride=1, query_budget=None,
                                             max_working_side=28)
    out = stage.run(image, sparse)
    assert stage.last_stats["working_size"] == (28, 28)
    rows, _ = map_to_resized(np.arange(42), np.zeros(42, np.int64), (42, 42), (28, 28))
    asked = resize_sparse(sparse, (28, 28), working_size=True) == 0  # every missing working pixel (stride 1)
    expected = asked[np.ix_(rows, rows)]
    assert np.array_equal(out.extras["query_mask"] > 0, expected)
    assert not (out.extras["query_mask"] > 0)[sparse > 0].any()

def test_placed_pixels_are_counted_at_the_input_size(tiny_head_checkpoint):
    """``last_stats["placed_pixels"]`` is the count of the result's ``extras["placed"]`` (input size), while the
    fill's own ``occlusion_filled`` counts at the working size: equal below the cap, about a quarter of it at half
    the size."""
    from depthkit.complete.stage import CompleteVLMStage

    image, _ = _scene(48, 64, seed=4)
    sparse = np.full((48, 64), 4.0, np.float32)  # a wall at 4 m, a box at 2 m, and the strip left of the box that
    sparse[10:40, 30:50] = 2.0  # only the left camera sees
    sparse[10:40, 24:30] = 0.0
    counts = {}
    for cap in (2048, 32, 40, 29):
        stage = CompleteVLMStage.from_checkpoint(tiny_head_checkpoint / "complete", query_budget=16,
                                                 max_working_side=cap, occlusion_fill="left")
        out = stage.run(image, sparse)
        counts[cap] = (stage.last_stats["placed_pixels"], stage.last_stats["occlusion_filled"])
        assert counts[cap][0] == int(np.count_nonzero(out.extras["placed"]))
        assert not out.extras["placed"][sparse > 0].any()  # a measured pixel is never placed
    assert counts[2048] == (30 * 6, 30 * 6)
    assert counts[32][0] == 30 * 6 and counts[32][1] == 15 * 3
    assert counts[40][0] == 30 * 6  # 30x40: the strip's pixels by their centres, none shifted onto the box
    assert 0 < counts[29][0] <= 30 * 6  # 22x29: the strip is 2.7 working pixels wide
