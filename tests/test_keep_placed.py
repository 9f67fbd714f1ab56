"""The sharpen stage's ``keep_placed``: the pixels the complete stage's rules placed (its ``extras["placed"]``) keep
their depth through the sharpener in a Pipeline, everything else is the sharpener's; off, the sharpener may move
them. On a tiny two-stage checkpoint with random weights, which moves every pixel it may."""

import numpy as np
import pytest

from depthkit.cli import main
from depthkit.data.sparse import sample_stereo
from depthkit.geometry import Intrinsics
from depthkit.pipeline import Pipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_ck(tmp_path_factory):
    ck = tmp_path_factory.mktemp("ck") / "tiny"
    assert main(["init-checkpoint", "--tiny", str(ck), "--seed", "5"]) == 0
    return ck


def _stereo_frame():
    """A wall at 8 m with two boxes, seen by a 30 px m rig (left reference): strips the right camera misses."""
    depth = np.full((48, 128), 8.0, np.float32)
    depth[6:40, 30:60] = 1.5
    depth[10:44, 85:110] = 3.0
    sparse = sample_stereo(depth, Intrinsics(100.0, 100.0, 64.0, 24.0), seed=0, baseline=0.3,
                           disparity_sigma_px=0.0, fatten_px=0, n_blobs=0)
    sparse[12:20, 56:68] = 0.0  # a failed match across the near box's right outline (far side right)
    image = np.full((48, 128, 3), 128, np.uint8)  # a grey wall, red boxes: colours the hole fill can split
    image[depth < 8.0] = (200, 30, 30)
    image[:, 70:85] = np.random.default_rng(0).integers(0, 255, (48, 15, 3))  # but not the textured wall left of box 2
    return image, sparse


def _run(ck, keep: bool | None, fill="auto", hole_fill=None):
    pipe = Pipeline(stages=("complete", "sharpen"), checkpoint=ck,
                    stage_options={"complete": {"occlusion_fill": fill, "hole_fill": hole_fill, "query_budget": 4},
                                   "sharpen": {"keep_placed": keep}})
    image, sparse = _stereo_frame()
    return pipe(image, sparse), pipe, sparse


def test_placed_pixels_keep_the_completions_depth_and_the_rest_is_the_sharpeners(tiny_ck):
    kept, pipe, sparse = _run(tiny_ck, True)
    free, _, _ = _run(tiny_ck, False)
    complete = kept.stages["complete"]
    placed = complete.extras["placed"] > 0
    assert placed.sum() == pipe.stages[0].last_stats["occlusion_filled"] > 50  # the strips left of both boxes
    assert pipe.stages[0].last_stats["occlusion_side"] == "left"
    np.testing.assert_array_equal(free.stages["complete"].depth, complete.depth)  # same completion either way
    np.testing.assert_array_equal(kept.depth[placed], complete.depth[placed])
    np.testing.assert_array_equal(kept.depth[~placed], free.depth[~placed])
    assert np.abs(free.depth[placed] - complete.depth[placed]).max() > 0.1  # off, the sharpener moves them
    measured = sparse > 0
    assert np.array_equal(kept.depth[measured], sparse[measured]) and not (placed & measured).any()
    assert pipe.stages[1].keep_placed and "keep_placed=True" in repr(pipe.stages[1])


def test_every_fills_pixels_are_placed(tiny_ck):
    """The stereo rule (found or told) sets the strips left of both boxes and not the failed match right of the near
    box; the colour-split hole fill sets the near box's strip and the failed match's wall part, not the strip beside
    the textured wall. With both on, ``placed`` is the union; every placed pixel is kept."""
    placed = {}
    for fill, hole_fill in (("auto", None), ("left", None), (None, "colour"), ("auto", "colour")):
        kept, pipe, _ = _run(tiny_ck, True, fill=fill, hole_fill=hole_fill)
        complete = kept.stages["complete"]
        placed[fill, hole_fill] = complete.extras["placed"] > 0
        np.testing.assert_array_equal(kept.depth[placed[fill, hole_fill]], complete.depth[placed[fill, hole_fill]])
    stereo, colour = placed["auto", None], placed[None, "colour"]
    np.testing.assert_array_equal(placed["left", None], stereo)
    assert (stereo & ~colour).sum() > 50 and (colour & ~stereo).sum() > 10  # each sets pixels the other does not
    np.testing.assert_array_equal(placed["auto", "colour"], stereo | colour)


def test_without_a_fill_nothing_is_placed_and_the_switch_changes_nothing(tiny_ck):
    kept, _, _ = _run(tiny_ck, True, fill=None)
    free, _, _ = _run(tiny_ck, None, fill=None)  # null: unset, off
    assert "placed" not in kept.stages["complete"].extras
    np.testing.assert_array_equal(kept.depth, free.depth)


def test_bad_keep_placed_values_are_refused(tiny_ck):
    for bad in ("yes", 1, 0.5):
        with pytest.raises(ValueError, match="keep_placed must be true or false"):
            Pipeline(stages=("complete", "sharpen"), checkpoint=tiny_ck, stage_options={"sharpen": {"keep_placed": bad}})
    with pytest.raises(ValueError, match="processing_resolution, keep_placed and config"):
        Pipeline(stages=("complete", "sharpen"), checkpoint=tiny_ck, stage_options={"sharpen": {"keep": True}})


def test_run_limits_gives_what_the_pipeline_gives(tiny_ck):
    """``SharpenStage.run_limits`` (benchmarks/sharpen_switches.py) with the complete stage's ``placed`` is the
    Pipeline's output; without it, the sharpener's own, which moves the placed pixels."""
    kept, pipe, sparse = _run(tiny_ck, True)
    image, _ = _stereo_frame()
    completion = kept.stages["complete"].depth
    placed = kept.stages["complete"].extras["placed"] > 0
    stage = pipe.stages[1]
    out = stage.run_limits(image, sparse, completion, {"as shipped": {}, "no band": {"change_band_px": 0}},
                           placed=placed)
    np.testing.assert_array_equal(out["as shipped"], kept.depth)
    np.testing.assert_array_equal(out["no band"][placed], completion[placed])
    own = stage.run_limits(image, sparse, completion, {"as shipped": {}})["as shipped"]
    np.testing.assert_array_equal(own[~placed], kept.depth[~placed])
    assert np.abs(own[placed] - completion[placed]).max() > 0.1
    free, off, _ = _run(tiny_ck, False)  # a stage without keep_placed ignores the mask, as the Pipeline does
    got = off.stages[1].run_limits(image, sparse, completion, {"as shipped": {}}, placed=placed)["as shipped"]
    np.testing.assert_array_equal(got, free.depth)
    for bad in (placed[:, 1:], placed.astype(np.float32)):
        with pytest.raises(ValueError, match="placed must be an HxW bool mask the size of depth"):
            stage.run_limits(image, sparse, completion, {"as shipped": {}}, placed=bad)


def test_the_metric_cache_keeps_the_placed_pixels_of_a_completion(tiny_ck, tmp_path):
    """The complete stage as a metric source reports its placed pixels; the cache stores them beside the depth and
    serves both; a source without rules (a plain function) has none."""
    from depthkit.sharpen.teachers import build_metric_source
    from depthkit.sharpen.train import MetricCache

    kept, _, sparse = _run(tiny_ck, True)
    image, _ = _stereo_frame()
    source = build_metric_source("complete:sdim", checkpoint=str(tiny_ck), occlusion_fill="auto", hole_fill=None,
                                 query_budget=4)
    cache = MetricCache(source, tmp_path)
    for _ in range(2):  # computed, then read back
        depth, placed = cache.with_placed(image, sparse, "frame")
        np.testing.assert_array_equal(depth, kept.stages["complete"].depth)
        np.testing.assert_array_equal(placed, kept.stages["complete"].extras["placed"] > 0)
        assert placed.dtype == bool and placed.sum() > 50
        np.testing.assert_array_equal(cache(image, sparse, "frame"), depth)
    assert len(list(tmp_path.glob("frame_*.placed.npz"))) == 1 and len(list(tmp_path.glob("frame_*.npy"))) == 1
    calls = []

    def plain(image, sparse, name):
        calls.append(name)
        return np.ones(image.shape[:2], np.float32)

    plain_cache = MetricCache(plain, tmp_path / "plain")
    for _ in range(2):  # computed once: its record says "no mask"
        depth, placed = plain_cache.with_placed(image, sparse, "frame")
        assert placed is None and depth.shape == image.shape[:2] and len(calls) == 1


def test_a_cached_depth_without_a_sound_placed_record_is_computed_again(tiny_ck, tmp_path):
    """A depth is served only with its placed record: a record that is missing, cut short, of another size or not a
    bool mask makes the entry a miss (computed again and rewritten), never a depth served without its mask."""
    from depthkit.sharpen.teachers import build_metric_source
    from depthkit.sharpen.train import MetricCache

    image, sparse = _stereo_frame()
    source = build_metric_source("complete:sdim", checkpoint=str(tiny_ck), occlusion_fill="auto", hole_fill=None,
                                 query_budget=4)
    runs = []
    source.predict_placed = (lambda f: lambda *a: (runs.append(1), f(*a))[1])(source.predict_placed)
    cache = MetricCache(source, tmp_path)
    _, placed = cache.with_placed(image, sparse, "frame")
    (record,) = tmp_path.glob("frame_*.placed.npz")
    damages = (lambda: record.unlink(), lambda: record.write_bytes(record.read_bytes()[:40]),
               lambda: np.savez(record, placed=np.ones((3, 3), bool), none=False),
               lambda: np.savez(record, placed=placed.astype(np.float32), none=False))
    for i, damage in enumerate(damages):
        damage()
        _, again = cache.with_placed(image, sparse, "frame")
        np.testing.assert_array_equal(again, placed)
        assert len(runs) == i + 2
    cache.with_placed(image, sparse, "frame")
    assert len(runs) == len(damages) + 1  # sound again: served


def test_a_source_reporting_a_mask_of_another_size_or_kind_is_refused():
    from depthkit.sharpen.teachers import MetricSource

    image, sparse = _stereo_frame()
    for bad in (np.ones((3, 3), bool), np.ones(image.shape[:2], np.float32)):
        class Source(MetricSource):
            name = "a source with rules"

            def predict_placed(self, image, sparse, name, bad=bad):
                return np.ones(image.shape[:2], np.float32), bad

        with pytest.raises(ValueError, match="must be an HxW bool mask the size of the image"):
            Source().with_placed(image, sparse, "frame")
