"""The shipped default checkpoint (``checkpoints/default/``): what a plain ``Pipeline()`` and ``depthkit run`` load.

It must load through the same code as any checkpoint, run both stages, keep every measured value, be small and
self-contained (safetensors, tokenizer and processor included), and carry the quality figures that ``depthkit ls``
prints — the very numbers of ``benchmarks/results/accuracy.json``.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from depthkit.checkpoints import CheckpointRef, default_checkpoint, load_manifest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "checkpoints" / "default"


def test_the_default_is_the_shipped_folder_and_self_contained():
    assert default_checkpoint() == DEFAULT, "checkpoints/default/ must exist and be the embedded default"
    files = [p for p in DEFAULT.rglob("*") if p.is_file()]
    total_mb = sum(p.stat().st_size for p in files) / 2**20
    assert total_mb < 50, f"the default checkpoint is {total_mb:.1f} MB; it must stay tens of MB at most"
    suffixes = {p.suffix for p in files}
    assert not suffixes & {".bin", ".pt", ".pth", ".pkl", ".ckpt"}, suffixes
    names = {p.relative_to(DEFAULT).as_posix() for p in files}
    for needed in ("complete/model.safetensors", "complete/tokenizer.json", "complete/preprocessor_config.json",
                   "complete/complete.json", "complete/residual_head.safetensors", "complete/refiner.safetensors",
                   "recipes/refine.yaml", "sharpen/lotus.json",
                   "recipes/complete.yaml", "recipes/sharpen.yaml"):
        assert needed in names, f"{needed} missing from checkpoints/default"


@pytest.mark.parametrize("method", [None, "sdim"])
def test_pipeline_without_checkpoint_runs_both_stages_and_keeps_measurements(method):
    """The default's own completion method (what the manifest says) and the shipped learned completer (``sdim``),
    each followed by the shipped sharpener, on the bundled example."""
    from depthkit import Pipeline
    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.io import read_depth, read_image
    from depthkit.sharpen.stage import SharpenStage

    manifest = load_manifest(DEFAULT)
    pipe = Pipeline(stages=("complete", "sharpen"), method=method)
    assert pipe.checkpoint.root == CheckpointRef.default().root == DEFAULT
    learned = (method or manifest["stages"]["complete"].get("method", "sdim")) == "sdim"
    assert isinstance(pipe.stages[0], CompleteVLMStage) == learned
    assert isinstance(pipe.stages[1], SharpenStage)
    image = read_image(ROOT / "examples" / "room_rgb.png")
    sparse = read_depth(ROOT / "examples" / "room_sparse.npy")
    out = pipe(image, sparse)
    if learned:  # the shipped completer's dense refiner runs after its fill
        assert pipe.stages[0].refiner is not None and pipe.stages[0].last_stats["refined"]
    measured = sparse > 0
    for depth in (out.depth, out.stages["complete"].depth):
        assert depth.shape == sparse.shape and np.isfinite(depth).all() and (depth > 0).all()
        assert np.array_equal(depth[measured], sparse[measured])
    gt = np.load(ROOT / "examples" / "room_depth_gt.npy")
    assert np.abs(out.stages["complete"].depth - gt)[gt > 0].mean() < 0.2, "the default's completion is far off"


def test_recorded_quality_matches_the_accuracy_benchmark_and_ls_prints_it(capsys):
    from depthkit.cli import main

    quality = load_manifest(DEFAULT).get("quality")
    assert isinstance(quality, dict), "run checkpoints/assemble_default.py --accuracy ... to record the quality"
    report = json.loads((ROOT / "benchmarks" / "results" / "accuracy.json").read_text())
    sections = {s.get("pattern"): s for s in report["datasets"] if s.get("pattern")}
    for pattern, q in quality["complete"].items():
        rows = {m["method"]: m["mean"] for m in sections[pattern]["methods"]}
        assert rows["default: complete"]["mae"] == pytest.approx(q["mae"], rel=1e-9)
        assert rows["guided"]["mae"] == pytest.approx(q["guided_mae"], rel=1e-9)
    assert set(quality["complete"]) >= {"random100", "random500", "random2000", "lidar64", "holes", "noisy"}
    # the on-by-default rule of checkpoints/assemble_default.py, recomputed here: the learned completer only when it is
    # no worse than guided on every pattern; the sharpener passes only with better DBE and MAE within 2 % of its input
    # on every pattern
    learned_ok = all(q["mae"] <= q["guided_mae"] for q in quality["complete"].values())
    method = load_manifest(DEFAULT)["stages"]["complete"].get("method", "sdim")
    assert (method == "sdim") == learned_ok and quality["completer_passes"] == learned_ok
    assert set(quality["sharpen"]) == set(quality["complete"])
    sharpen_ok = all(q["dbe_acc"] < q["input_dbe_acc"] and q["mae"] <= 1.02 * q["input_mae"]
                     for q in quality["sharpen"].values())
    assert quality["sharpen_passes"] == sharpen_ok
    # a run without --stages sharpens only when the sharpener lost to its input on no pattern (DBE no worse, MAE
    # within 2 %): both stages then, the completion alone otherwise
    loses = any(q["dbe_acc"] > q["input_dbe_acc"] or q["mae"] > 1.02 * q["input_mae"]
                for q in quality["sharpen"].values())
    default = load_manifest(DEFAULT).get("default_stages")
    assert default == (["complete"] if loses else ["complete", "sharpen"])
    assert main(["ls"]) == 0
    text = capsys.readouterr().out
    assert "the default (no --checkpoint)" in text and "random500" in text and "vs guided" in text
    assert ("run by default: depthkit run without --stages runs both stages" in text) == ("sharpen" in default)
    gate = load_manifest(DEFAULT)["stages"]["sharpen"].get("config", {}).get("keep_scanline_frames")
    assert ("LiDAR frames (scan lines) come back as completed" in text) == bool(gate and "sharpen" in default)
    assert ("(keep_placed;" in text) == bool(load_manifest(DEFAULT)["stages"]["sharpen"].get("keep_placed"))
    auto = load_manifest(DEFAULT)["stages"]["complete"].get("occlusion_fill") == "auto"
    assert ("(occlusion_fill=auto;" in text) == auto and ("add --option complete.occlusion_fill=left" in text) != auto
    assert ("--option complete.hole_fill=null turns it off" in text) == bool(
        load_manifest(DEFAULT)["stages"]["complete"].get("hole_fill"))


def _room():
    """The bundled room: (RGB uint8, GT metres, Intrinsics)."""
    from depthkit.geometry import Intrinsics
    from depthkit.io import read_image

    k = json.loads((ROOT / "examples" / "room_intrinsics.json").read_text())
    return (read_image(ROOT / "examples" / "room_rgb.png"), np.load(ROOT / "examples" / "room_depth_gt.npy"),
            Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"]))


def _default_and_option_off(image, sparse, gt, option):
    """The default's complete stage (answers off, for speed) on ``sparse``, and the same with ``option`` set to null:
    ``({"default" | None: pipeline}, {"default" | None: MAE in m over the unmeasured pixels with GT})``; both keep the
    measured values (checked here)."""
    from depthkit import Pipeline

    runs, errors, holes = {}, {}, (sparse == 0) & (gt > 0)
    for which in ("default", None):
        opts = {"query_budget": 0} | ({} if which == "default" else {option: None})
        pipe = Pipeline(stages=("complete",), stage_options={"complete": opts})
        depth = pipe(image, sparse).depth
        assert np.array_equal(depth[sparse > 0], sparse[sparse > 0])
        runs[which], errors[which] = pipe, float(np.abs(depth - gt)[holes].mean())
    return runs, errors


def test_the_default_splits_a_dense_sensors_holes_and_leaves_scattered_points_alone():
    """The manifest turns the colour-split hole fill on: on the bundled room with ToF-like holes (sample_holes on its
    GT) it sets pixels and lowers the hole error against the same checkpoint with it off; on the bundled sparse
    points (under 30 % measured) it sets none. Measured values kept either way."""
    from depthkit.data.sparse import sample_holes
    from depthkit.io import read_depth

    assert load_manifest(DEFAULT)["stages"]["complete"].get("hole_fill") == "colour"
    image, gt, _ = _room()
    tof = sample_holes(gt, 0, image=image)
    runs, errors = _default_and_option_off(image, tof, gt, "hole_fill")
    assert runs["default"].stages[0].last_stats["hole_filled"] > 100
    assert runs[None].stages[0].last_stats.get("hole_filled") is None
    sparse = read_depth(ROOT / "examples" / "room_sparse.npy")
    assert np.array_equal(runs["default"](image, sparse).depth[sparse > 0], sparse[sparse > 0])
    assert runs["default"].stages[0].last_stats["hole_filled"] == 0
    assert errors["default"] < 0.95 * errors[None], errors


def test_the_default_reads_a_stereo_maps_side_and_leaves_tof_holes_to_the_hole_fill():
    """The manifest sets occlusion_fill=auto: on a stereo map of the bundled room (sample_stereo on its GT, a 12 cm
    rig) it finds the left camera as the reference, sets pixels and lowers the error in the occluded strips against
    the same checkpoint with it off; on a ToF-holes map of the room it finds no side and sets nothing. Measured values
    kept either way."""
    from depthkit import Pipeline
    from depthkit.data.sparse import sample_holes, sample_stereo

    assert load_manifest(DEFAULT)["stages"]["complete"].get("occlusion_fill") == "auto"
    image, gt, intrinsics = _room()
    stereo = sample_stereo(gt, intrinsics, seed=1, baseline=0.12)
    runs, errors = _default_and_option_off(image, stereo, gt, "occlusion_fill")
    stats = runs["default"].stages[0].last_stats
    assert stats["occlusion_side"] == "left" and stats["occlusion_filled"] > 100
    assert "occlusion_side" not in runs[None].stages[0].last_stats
    tof = sample_holes(gt, 0, image=image)
    assert np.array_equal(runs["default"](image, tof).depth[tof > 0], tof[tof > 0])
    assert runs["default"].stages[0].last_stats["occlusion_side"] is None
    assert runs["default"].stages[0].last_stats["occlusion_filled"] == 0
    assert errors["default"] < 0.95 * errors[None], errors
    # the shipped sharpener leaves what the fills placed (keep_placed), and sharpens the rest
    assert load_manifest(DEFAULT)["stages"]["sharpen"].get("keep_placed") is True
    out = Pipeline(stages=("complete", "sharpen"), stage_options={"complete": {"query_budget": 0}})(image, stereo)
    placed = out.stages["complete"].extras["placed"] > 0
    assert placed.sum() > 100
    np.testing.assert_array_equal(out.depth[placed], out.stages["complete"].depth[placed])
    assert not np.array_equal(out.depth, out.stages["complete"].depth)


def test_the_sharpeners_bar_by_cases():
    """checkpoints/assemble_default.py's bar for the sharpener (also benchmarks/sharpen_switches.py's "goal met"):
    DBE accuracy strictly better than its input's and MAE at most 2 % above; decide() needs it on every pattern."""
    from repo_scripts import load_script

    assemble = load_script("checkpoints/assemble_default.py")
    row = {"input_mae": 1.0, "mae": 1.019, "input_dbe_acc": 2.0, "dbe_acc": 1.9}
    assert assemble.sharpener_meets_bar(row)
    assert not assemble.sharpener_meets_bar({**row, "mae": 1.021})  # MAE more than 2 % worse
    assert not assemble.sharpener_meets_bar({**row, "dbe_acc": 2.0})  # DBE not better
    complete = {"random500": {"change": -0.1}}
    assert assemble.decide({"complete": complete, "sharpen": {"a": row, "b": row}}) == ("sdim", True)
    assert assemble.decide({"complete": complete, "sharpen": {"a": row, "b": {**row, "dbe_acc": 2.1}}})[1] is False
    assert assemble.decide({"complete": complete, "sharpen": {}})[1] is False  # nothing measured: not on


def test_the_default_sharpens_a_frame_at_its_own_size_up_to_480_px():
    """The manifest's ``max_processing_resolution: 480`` (session 22): the test split's 240x320 frames and Aloe's
    276x320 run at 320 as before (their own size: the figures of accuracy.md stand), a 640x480 frame at 480, a
    741x500 or 1920x1080 frame at 480 and a 160x120 one at its own 160 — not at the run's 320 whatever the size."""
    from depthkit import Pipeline

    stage = Pipeline(stages=("complete", "sharpen")).stages[1]
    assert load_manifest(DEFAULT)["stages"]["sharpen"].get("processing_resolution") is None
    for shape, side in (((240, 320), 320), ((276, 320), 320), ((480, 640), 480), ((500, 741), 480),
                        ((1080, 1920), 480), ((120, 160), 160)):
        assert stage.processing_side(np.zeros((*shape, 3), np.uint8)) == side, shape



def test_a_plain_run_sharpens_and_leaves_lidar_frames_as_completed():
    """``Pipeline()`` (and ``depthkit run`` without --stages) runs the manifest's ``default_stages``: both stages since
    session 25, the sharpener with its scan-line gate on and pooled keys above 320 px (checkpoints/README.md). On the
    bundled room's scattered points the sharpener sharpens (the output differs from the completion); on a simulated
    64-beam LiDAR frame of the room it gives the completion back bit for bit without running its UNet (no
    discrepancy map). Measured values kept throughout."""
    from depthkit import Pipeline
    from depthkit.data.sparse import sample_lidar
    from depthkit.io import read_depth

    manifest = load_manifest(DEFAULT)
    assert manifest["default_stages"] == ["complete", "sharpen"]
    config = manifest["stages"]["sharpen"]["config"]
    assert config["keep_scanline_frames"] is True and config["self_attention_max_keys"] >= 60 * 80  # 320 px exact
    # the inference rules it was measured with, where SharpDepthConfig's defaults follow the public code since s39
    assert (config["norm_range"], config["resize_back"]) == ("input", "antialias")
    plain = Pipeline()
    assert plain.stage_names == ("complete", "sharpen")
    assert (plain.stages[1].model.config.norm_range, plain.stages[1].model.config.resize_back) == ("input", "antialias")
    pipe = Pipeline(stage_options={"complete": {"query_budget": 0}})
    image, gt, intrinsics = _room()
    for sparse, lidar in ((read_depth(ROOT / "examples" / "room_sparse.npy"), False),
                          (sample_lidar(gt, intrinsics, seed=0), True)):
        out = pipe(image, sparse)
        assert np.array_equal(out.depth[sparse > 0], sparse[sparse > 0])
        assert np.array_equal(out.depth, out.stages["complete"].depth) == lidar
        assert ("discrepancy" in out.stages["sharpen"].extras) != lidar
