"""What a run given no stage list runs: a checkpoint manifest's ``default_stages`` (``depthkit.stages.default_stages``),
read by ``Pipeline()``, ``Pipeline.from_pretrained`` and ``depthkit run`` / ``eval`` without --stages, and written by
checkpoints/assemble_default.py from the measured quality (both stages only when the sharpener lost to its input on
no pattern)."""

from pathlib import Path

import numpy as np
import pytest
from repo_scripts import load_script

from depthkit.checkpoints import CheckpointError, CheckpointRef, load_manifest, write_manifest
from depthkit.cli import main
from depthkit.stages import checkpoint_method, default_stages

ROOT = Path(__file__).resolve().parent.parent


def _ref(default=(), method="sdim"):
    return CheckpointRef(Path("ck"), {"complete": {"method": method}, "sharpen": {}}, tuple(default))


def test_default_stages_by_cases(tmp_path):
    both = ("complete", "sharpen")
    assert default_stages(None) == ("complete",)
    assert default_stages(_ref()) == ("complete",)  # the manifest names none: the completion alone, as before
    assert default_stages(_ref(), fallback=both) == both  # (from_pretrained's: every stage it lists)
    assert default_stages(_ref(both)) == both
    assert default_stages(_ref(both), method="sdim") == both  # the manifest's own method
    assert default_stages(_ref(both), method="guided") == ("complete",)  # another: not what was measured
    assert default_stages(_ref(["complete"])) == ("complete",)
    # a manifest naming no method runs the learned completer when it has a complete/ part, else guided
    (tmp_path / "complete").mkdir()
    implied = CheckpointRef(tmp_path, {"complete": {}, "sharpen": {}}, both)
    assert checkpoint_method(implied) == "sdim" and default_stages(implied, method="sdim") == both
    assert default_stages(implied, method="guided") == ("complete",)
    bare = CheckpointRef(tmp_path / "none", {"complete": {}, "sharpen": {}}, both)
    assert checkpoint_method(bare) == "guided" and default_stages(bare, method="guided") == both


@pytest.mark.parametrize("value, says", [
    (["complete", "complete"], "default_stages must be a list of distinct stages"),
    (["denoise"], "default_stages must be a list of distinct stages"),
    ("complete,sharpen", "default_stages must be a list of distinct stages"),
    ([], "default_stages must be a list of distinct stages"),
    ([1], "default_stages must be a list of distinct stages"),
    (["sharpen", "complete"], "in the order complete, sharpen"),
    (["sharpen"], "must start with complete"),
])
def test_a_manifests_bad_default_stages_are_refused_with_what_was_received(tmp_path, value, says):
    """When the manifest is read (a bad value), or when a run given no stage list resolves them (order)."""
    from depthkit import Pipeline

    write_manifest(tmp_path, {"complete": {"method": "guided"}, "sharpen": {}}, default_stages=value)
    with pytest.raises(CheckpointError, match=says) as err:
        default_stages(CheckpointRef.open(tmp_path))
    assert str(tmp_path / "depthkit.json") in str(err.value)
    if "distinct stages" in says:
        assert repr(value) in str(err.value) and "complete, sharpen" in str(err.value)
    else:  # every entry point resolves them the same way
        for build in (lambda: Pipeline(checkpoint=tmp_path), lambda: Pipeline.from_pretrained(tmp_path)):
            with pytest.raises(CheckpointError, match=says):
                build()


def test_a_stage_the_manifest_does_not_list_is_refused(tmp_path):
    write_manifest(tmp_path, {"complete": {"method": "guided"}}, default_stages=["complete", "sharpen"])
    with pytest.raises(CheckpointError, match="stages this manifest lists"):
        load_manifest(tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-weight two-stage checkpoint (``depthkit init-checkpoint --tiny``: ``plain``) and copies whose
    manifests name both stages (``both``) or the first (``first``) as their default, with an image and sparse points
    beside them."""
    import shutil

    import cv2

    root = tmp_path_factory.mktemp("tiny")
    assert main(["init-checkpoint", "--tiny", str(root / "plain")]) == 0
    for name, default in (("both", ["complete", "sharpen"]), ("first", ["complete"])):
        shutil.copytree(root / "plain", root / name)
        write_manifest(root / name, load_manifest(root / name)["stages"], default_stages=default)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    sparse = np.zeros((40, 56), np.float32)
    sparse.flat[rng.choice(40 * 56, 60, replace=False)] = rng.uniform(1.0, 6.0, 60)
    cv2.imwrite(str(root / "a.png"), image[:, :, ::-1])
    np.save(root / "a_sparse.npy", sparse)
    return root, image, sparse


def test_pipeline_without_stages_runs_the_manifests_default(tiny):
    from depthkit import Pipeline

    root, image, sparse = tiny
    assert Pipeline(checkpoint=root / "plain").stage_names == ("complete",)
    pipe = Pipeline(checkpoint=root / "both")
    assert pipe.stage_names == ("complete", "sharpen")
    out = pipe(image, sparse)
    assert list(out.stages) == ["complete", "sharpen"]
    assert np.array_equal(out.depth[sparse > 0], sparse[sparse > 0])
    assert Pipeline(checkpoint=root / "both", method="guided").stage_names == ("complete",)
    guided = {"complete": {"method": "guided"}}  # a method given as a stage option counts the same
    assert Pipeline(checkpoint=root / "both", stage_options=guided).stage_names == ("complete",)
    assert Pipeline.from_pretrained(root / "both", method="guided").stage_names == ("complete",)
    assert Pipeline.from_pretrained(root / "both", stage_options=guided).stage_names == ("complete",)
    with pytest.raises(ValueError, match="the default stages for this checkpoint and completion method"):
        Pipeline(checkpoint=root / "both", method="guided", stage_options={"sharpen": {}})
    assert Pipeline(checkpoint=root / "both", stages="complete").stage_names == ("complete",)  # a list given wins
    # from_pretrained: the manifest's default too, else every stage it lists (as before)
    assert Pipeline.from_pretrained(root / "both").stage_names == ("complete", "sharpen")
    assert Pipeline.from_pretrained(root / "plain").stage_names == ("complete", "sharpen")
    assert Pipeline.from_pretrained(root / "first").stage_names == ("complete",)
    assert Pipeline(checkpoint=root / "first").stage_names == ("complete",)


@pytest.mark.parametrize("extra, ran", [([], "sharpen"), (["--stages", "complete"], None),
                                        (["--method", "guided"], None), (["--option", "complete.method=guided"], None),
                                        (["--method", "sdim"], "sharpen")])
def test_depthkit_run_without_stages_runs_the_checkpoints_default(tiny, capsys, extra, ran):
    root, _, sparse = tiny
    out = root / f"out_{len(extra)}_{'_'.join(extra).replace('.', '_').replace('=', '_')}"
    assert main(["run", "--checkpoint", str(root / "both"), "--image", str(root / "a.png"), "--sparse",
                 str(root / "a_sparse.npy"), "--out", str(out), *extra]) == 0
    text = capsys.readouterr().out
    assert ("SharpenStage" in text) == (ran == "sharpen"), text
    depth = np.load(out / "a_depth.npy")
    assert np.array_equal(depth[sparse > 0], sparse[sparse > 0])
    # a checkpoint whose manifest names no default completes only, as before
    assert main(["run", "--checkpoint", str(root / "plain"), "--image", str(root / "a.png"), "--sparse",
                 str(root / "a_sparse.npy"), "--out", str(out), "--overwrite"]) == 0
    assert "SharpenStage" not in capsys.readouterr().out


def _assemble():
    return load_script("checkpoints/assemble_default.py")


def test_the_on_by_default_rule_by_cases():
    """Both stages when no pattern's sharpener row lost to its input: equal DBE (a frame left as it is) is no loss,
    worse DBE or MAE more than 2 % above its input's is; nothing measured keeps the completion alone."""
    assemble = _assemble()
    gain = {"input_mae": 1.0, "mae": 0.99, "input_dbe_acc": 2.0, "dbe_acc": 1.9}
    kept = {"input_mae": 1.0, "mae": 1.0, "input_dbe_acc": 2.0, "dbe_acc": 2.0}
    complete = {"a": {}, "b": {}}

    def rule(b, method="sdim", **rows):
        return assemble.default_stages({"complete": complete, "sharpen": {"a": gain, "b": b, **rows}}, method)

    assert rule(kept) == ["complete", "sharpen"]
    assert rule({**kept, "dbe_acc": 2.001}) == ["complete"]
    assert rule({**kept, "mae": 1.021}) == ["complete"]
    assert rule({**kept, "mae": 1.019}) == ["complete", "sharpen"]
    assert rule(kept, method="guided") == ["complete"]  # rows measured on the learned completion, not on guided's
    assert assemble.default_stages({"complete": complete, "sharpen": {"a": gain}}) == ["complete"]  # b unmeasured
    assert assemble.default_stages({"complete": complete, "sharpen": {}}) == ["complete"]
    # the bar is stricter than the loss: a frame left as it is does not meet it
    assert not assemble.sharpener_meets_bar(kept) and not assemble.sharpener_loses_to_input(kept)


def test_the_speed_benchmark_times_each_sparse_pattern(tiny, tmp_path, capsys):
    """``benchmarks/default_speed.py --patterns``: a row per stage list and pattern, the pattern in its JSON and
    markdown (the speed of a LiDAR frame, which the default's sharpener leaves as completed); an unknown pattern is
    refused naming the allowed ones."""
    import json
    import shutil
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import default_speed

    root, _, _ = tiny
    gated = tmp_path / "gated"  # the tiny two-stage checkpoint with the sharpener's scan-line gate on
    shutil.copytree(root / "plain", gated)
    manifest = load_manifest(gated)
    manifest["stages"]["sharpen"].setdefault("config", {})["keep_scanline_frames"] = True
    write_manifest(gated, manifest["stages"])
    args = ["--checkpoint", str(gated), "--threads", "1", "--sizes", "320", "--repeats", "1",
            "--patterns", "random500,lidar64", "--out", str(tmp_path)]
    assert default_speed.main(args) == 0
    rows = json.loads((tmp_path / "default_speed.json").read_text())["rows"]
    assert [(r["sparse"], r["stages"], r["sharpen_unet"]) for r in rows] == [
        ("random500", "complete", None), ("random500", "complete,sharpen", True),
        ("lidar64", "complete", None), ("lidar64", "complete,sharpen", False)]  # the LiDAR frame: no UNet
    assert "| complete,sharpen | as shipped | sdim | lidar64 | 320x240 | 1 |" in (tmp_path / "default_speed.md").read_text()
    with pytest.raises(SystemExit):
        default_speed.main([*args[:-4], "--patterns", "lidar65"])
    assert "--patterns takes names from" in capsys.readouterr().err
    # --sharpen-config: each setting's two-stage rows beside the others', named in the JSON and the table
    configs = ["--sharpen-config", "exact={}", "--sharpen-config", 'pooled={"self_attention_max_keys": 4}']
    assert default_speed.main([*args[:-4], "--patterns", "random500", *configs, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "default_speed.json").read_text())["rows"]
    assert [(r["stages"], r["sharpen_config"]) for r in rows] == [
        ("complete", None), ("complete,sharpen", "exact"), ("complete,sharpen", "pooled")]
    assert "| complete,sharpen | pooled | sdim | random500 |" in (tmp_path / "default_speed.md").read_text()
    with pytest.raises(SystemExit):
        default_speed.main([*args, "--sharpen-config", 'bad={"self_attention_max_keys": -1}'])
    assert "--sharpen-config 'bad': self_attention_max_keys must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        default_speed.main([*args, "--sharpen-config", "a={}", "--sharpen-config", "a={}"])
    assert "each NAME once; ['a'] given twice" in capsys.readouterr().err


def test_depthkit_eval_without_stages_evaluates_and_records_the_default(tiny, tmp_path):
    """``depthkit eval`` without --stages evaluates what ``depthkit run`` runs, and its results' fingerprint records
    the stages it ran (so a resumed run with other stages is refused)."""
    import json

    root, _, _ = tiny
    for extra, stages in (([], "complete,sharpen"), (["--method", "guided"], "complete")):
        out = tmp_path / f"eval_{len(extra)}.json"
        assert main(["eval", "--dataset", "synthetic", "--dataset-option", "length=1", "--checkpoint",
                     str(root / "both"), "--out", str(out), "--quiet", *extra]) == 0
        assert json.loads(out.read_text())["fingerprint"]["stages"] == stages


def test_the_speed_benchmarks_scenes_follow_the_pattern():
    """``benchmarks/default_speed.py``'s scene per pattern: 500 scattered GT points, or a 64-beam LiDAR frame that the
    sharpener's detector calls one."""
    import sys

    import torch

    from depthkit.sharpen.limits import scanline_frames

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import default_speed

    _, points = default_speed._scene(240, 320, "random500")
    _, beams = default_speed._scene(240, 320, "lidar64")  # (at 120x160 its 64 beams fill nearly every row)
    assert np.count_nonzero(points) == 500 and np.count_nonzero(beams) > 1000
    assert scanline_frames(torch.from_numpy(np.stack([points, beams]) > 0)[:, None]).tolist() == [False, True]


def test_ls_says_whether_a_run_without_stages_sharpens():
    from depthkit.cli_ls import _sharpen_default

    gated = {"stages": {"complete": {}, "sharpen": {"config": {"keep_scanline_frames": True}}}}
    both = {**gated, "default_stages": ["complete", "sharpen"]}
    assert _sharpen_default({**gated, "default_stages": ["complete"]}) == "run it with --stages complete,sharpen"
    assert _sharpen_default(gated) == "run it with --stages complete,sharpen"
    said = _sharpen_default(both)
    assert "depthkit run without --stages runs both stages" in said and "--stages complete for the completion" in said
    assert "LiDAR frames (scan lines) come back as completed" in said
    plain = {"stages": {"complete": {}, "sharpen": {}}, "default_stages": ["complete", "sharpen"]}
    assert "LiDAR" not in _sharpen_default(plain) and "runs both stages" in _sharpen_default(plain)
