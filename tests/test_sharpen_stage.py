"""The sharpen pipeline stage: tiny checkpoints, two UNet passes, measured pixels, CLI, errors."""

from pathlib import Path

import numpy as np
import pytest

from depthkit.cli import main
from depthkit.data.sparse import sample_random_points
from depthkit.data.synthetic import render_scene
from depthkit.pipeline import Pipeline


@pytest.fixture(scope="module")
def tiny_ck(tmp_path_factory):
    ck = tmp_path_factory.mktemp("ck") / "tiny"
    assert main(["init-checkpoint", "--tiny", str(ck), "--seed", "3"]) == 0
    return ck


def _scene(h=32, w=48, seed=2, n=40):
    s = render_scene(seed, h, w, kind="indoor")
    return s.image, s.depth, sample_random_points(s.depth, n, seed)


def _count_unet_calls(stage):
    calls = []
    stage.model.model.unet.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_two_stage_tiny_checkpoint_runs_end_to_end(tiny_ck):
    from depthkit.checkpoints import load_manifest

    assert "sharpen" in load_manifest(tiny_ck)["stages"] and (tiny_ck / "sharpen" / "sharpdepth.json").is_file()
    image, _, sparse = _scene()
    pipe = Pipeline.from_pretrained(tiny_ck, stages=("complete", "sharpen"))
    sharpen = pipe.stages[1]
    calls = _count_unet_calls(sharpen)
    out = pipe(image, sparse)
    assert len(calls) == 2  # pass 1 (Lotus on noise) and pass 2 (sharpener on the gated latent), once each
    measured = sparse > 0
    assert out.depth.shape == sparse.shape and out.depth.dtype == np.float32 and np.isfinite(out.depth).all()
    assert np.array_equal(out.depth[measured], sparse[measured])
    res = out.stages["sharpen"]
    e = res.extras["discrepancy"]
    assert e.shape == sparse.shape and e.min() >= 0 and e.max() <= 1 and (e[measured] == 0).all()
    assert res.extras["lotus"].shape == sparse.shape and "sharpen" in out.timings
    # the sharpen stage is SharpDepth on the completed depth, nothing else
    direct = sharpen.model.sharpen(image, out.stages["complete"].depth, sparse)
    assert np.array_equal(direct.depth, out.depth)


def test_sharpen_alone_and_round_trip_exact(tiny_ck):
    """write_tiny → load gives bit-identical outputs to the in-memory model with the same seed."""
    from depthkit.io import DepthkitWarning
    from depthkit.sharpen.model import SharpDepth
    from depthkit.sharpen.tiny import build_tiny_lotus

    image, depth, sparse = _scene(seed=4)
    metric = depth.copy()
    metric[:4] = 0  # unknown metric depth: regenerated, e = 1 there
    pipe = Pipeline(stages=("sharpen",), checkpoint=tiny_ck)
    with pytest.warns(DepthkitWarning, match=r"12\.5 % of its pixels missing \(0\); .* regenerates them"):
        out = pipe(image, sparse, depth=metric)
    in_memory = SharpDepth(build_tiny_lotus(seed=3)).sharpen(image, metric, sparse)
    np.testing.assert_allclose(out.depth, in_memory.depth, rtol=1e-6, atol=1e-6)  # loaded weights are equal; conv kernels may differ in the last ulp
    np.testing.assert_allclose(out.stages["sharpen"].extras["discrepancy"], in_memory.discrepancy, atol=1e-5)
    e = out.stages["sharpen"].extras["discrepancy"]
    assert np.all(e[:4][sparse[:4] == 0] == 1.0)
    assert np.array_equal(out.depth[sparse > 0], sparse[sparse > 0])
    # no sparse input at all: still runs, nothing to preserve
    out2 = pipe(image, None, depth=depth)
    assert np.isfinite(out2.depth).all() and out2.depth.min() > 0


def test_cli_run_sharpen_with_depth_file(tiny_ck, tmp_path):
    from depthkit.io import write_image

    image, depth, _ = _scene(seed=6)
    write_image(tmp_path / "rgb.png", image)
    np.save(tmp_path / "metric.npy", depth)
    rc = main(["run", "--stages", "sharpen", "--checkpoint", str(tiny_ck), "--image", str(tmp_path / "rgb.png"),
               "--depth", str(tmp_path / "metric.npy"), "--out", str(tmp_path / "out")])
    assert rc == 0
    written = np.load(tmp_path / "out" / "rgb_depth.npy")
    expected = Pipeline(stages=("sharpen",), checkpoint=tiny_ck)(image, None, depth=depth).depth
    assert np.array_equal(written, expected)


def test_bfloat16_runs_and_keeps_measurements(tiny_ck):
    image, depth, sparse = _scene(seed=7)
    out = Pipeline(stages=("sharpen",), checkpoint=tiny_ck, dtype="bfloat16")(image, sparse, depth=depth)
    assert np.isfinite(out.depth).all() and np.array_equal(out.depth[sparse > 0], sparse[sparse > 0])


def test_errors(tiny_ck, tmp_path, monkeypatch):
    from depthkit.checkpoints import CheckpointRef, write_manifest
    from depthkit.sharpen.stage import build_sharpen_stage

    ck = CheckpointRef.open(tiny_ck)
    stage = build_sharpen_stage(ck)
    image, depth, sparse = _scene()
    with pytest.raises(ValueError, match="needs a metric depth"):
        stage.run(image, sparse, None)
    with pytest.raises(ValueError, match="takes the options"):
        build_sharpen_stage(ck, options={"resolution": 64})
    with pytest.raises(ValueError, match="positive int"):
        build_sharpen_stage(ck, options={"processing_resolution": 0})
    write_manifest(tmp_path / "only_complete", {"complete": {"method": "guided"}})
    with pytest.raises(ValueError, match="no sharpen/ folder"):
        build_sharpen_stage(CheckpointRef.open(tmp_path / "only_complete"))
    import shutil

    shutil.copytree(tiny_ck, tmp_path / "no_weights")  # the sharpener's folder is named as what it is
    (tmp_path / "no_weights" / "sharpen" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"sharpen is not a complete Lotus / SharpDepth model folder: missing "
                                         r"unet/diffusion_pytorch_model.safetensors \(found: .*SharpDepth.save_pretr"):
        build_sharpen_stage(CheckpointRef.open(tmp_path / "no_weights"))
    (tmp_path / "no_embedded").mkdir()
    monkeypatch.setenv("DEPTHKIT_CHECKPOINTS", str(tmp_path / "no_embedded"))
    with pytest.raises(ValueError, match="init-checkpoint --tiny"):
        Pipeline(stages=("sharpen",))
    with pytest.raises(ValueError, match="needs a metric depth input"):
        Pipeline(stages=("sharpen",), checkpoint=tiny_ck)(image, sparse)


def test_a_sparse_map_given_as_the_depth_to_sharpen_is_said_and_an_empty_one_refused(tiny_ck):
    """depth= is the dense metric input of a sharpen-first pipeline: under half of it known warns (it runs), all
    zeros is refused with a message about sharpening (not completion), a dense one is silent."""
    import warnings

    from depthkit.io import DepthkitWarning

    image, depth, sparse = _scene(seed=8)
    pipe = Pipeline(stages=("sharpen",), checkpoint=tiny_ck)
    with pytest.warns(DepthkitWarning, match=r"only \d+\.\d % of its pixels known; .*--stages complete,sharpen"):
        pipe(image, None, depth=sparse)
    half = depth.copy()
    half[: depth.shape[0] // 2 + 1] = 0
    with pytest.warns(DepthkitWarning, match="of its pixels known"):
        pipe(image, None, depth=half)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DepthkitWarning)
        pipe(image, None, depth=depth)
    with pytest.raises(ValueError, match="sharpening needs metric depth to sharpen"):
        pipe(image, None, depth=np.zeros_like(depth))


def test_a_dense_depth_with_holes_is_said_once_with_the_share_and_how_they_are_filled(tiny_ck, tmp_path, capsys):
    """A dense --depth with 1 % or more of its pixels missing (a sensor's frame with holes) gets one warning with the
    share, how the sharpen stage fills them (its own prediction, scaled to the known pixels) and the advice for a
    learned fill; its holes come out filled. Under 1 % missing is silent."""
    import warnings

    from depthkit.io import DepthkitWarning, write_image

    image, depth, _ = _scene(seed=8)  # 32x48 = 1536 pixels
    holes = depth.copy()
    holes[:, :10] = 0.0  # 320 pixels: 20.8 %
    write_image(tmp_path / "rgb.png", image)
    np.save(tmp_path / "holes.npy", holes)
    assert main(["run", "--stages", "sharpen", "--checkpoint", str(tiny_ck), "--image", str(tmp_path / "rgb.png"),
                 "--depth", str(tmp_path / "holes.npy"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("depthkit run: warning: the metric depth to sharpen") == 1, err
    assert ("has 20.8 % of its pixels missing (0); the sharpen stage does not complete them from the known depth: it "
            "regenerates them from the image" in err and "run both stages (--stages complete,sharpen) with this map "
            "as --sparse." in err), err
    written = np.load(tmp_path / "out" / "rgb_depth.npy")
    assert np.isfinite(written).all() and (written[:, :10] > 0).all()
    pipe = Pipeline(stages=("sharpen",), checkpoint=tiny_ck)
    few = depth.copy()
    few.flat[:16] = 0.0  # 1.04 %: said
    with pytest.warns(DepthkitWarning, match=r"has 1\.0 % of its pixels missing"):
        pipe(image, None, depth=few)
    few.flat[15] = depth.flat[15]  # 15 pixels, 0.98 %: a border's or a few dropped pixels, silent
    with warnings.catch_warnings():
        warnings.simplefilter("error", DepthkitWarning)
        pipe(image, None, depth=few)


def test_upsampling_far_beyond_the_image_and_float16_on_the_cpu_are_said(tiny_ck):
    import warnings

    from depthkit.io import DepthkitWarning

    image, depth, sparse = _scene(seed=9)
    side = -(-1024 // max(image.shape[:2])) * max(image.shape[:2])  # at least 1024 px and 4x the image
    assert side >= 4 * max(image.shape[:2]) and side >= 1024
    big = Pipeline(stages=("sharpen",), checkpoint=tiny_ck, stage_options={"sharpen": {"processing_resolution": side}})
    with pytest.warns(DepthkitWarning, match=rf"the UNet runs {side // max(image.shape[:2])} times larger than the"):
        big(image, sparse, depth=depth)
    with warnings.catch_warnings():  # once per stage; not for a resolution near the image's, nor a small one
        warnings.simplefilter("error", DepthkitWarning)
        big(image, sparse, depth=depth)
        for small in (2 * max(image.shape[:2]), 1000):
            Pipeline(stages=("sharpen",), checkpoint=tiny_ck, stage_options={"sharpen": {"processing_resolution": small}})(
                image, sparse, depth=depth)
    with pytest.warns(DepthkitWarning, match="float16 on the CPU"):
        Pipeline(stages=("sharpen",), checkpoint=tiny_ck, dtype="float16")


def test_one_resolution_and_one_validation_per_run(tiny_ck, monkeypatch):
    """The stage factory loads <checkpoint>/sharpen without resolving it again (the public from_pretrained /
    load_sharpdepth resolve exactly once), and a pipeline run checks each input once, in the Pipeline."""
    import depthkit.sharpen.lotus as lotus
    import depthkit.sharpen.model as model
    from depthkit.checkpoints import CheckpointRef
    from depthkit.sharpen.checkpoint import load_sharpdepth
    from depthkit.sharpen.stage import build_sharpen_stage

    resolved, checked = [], []
    real_resolve, real_check, real_prepare = lotus.resolve_model_dir, model.check_depth_array, lotus.LotusModel.prepare_image
    monkeypatch.setattr(lotus, "resolve_model_dir", lambda p: resolved.append(p) or real_resolve(p))
    monkeypatch.setattr(model, "check_depth_array", lambda *a: checked.append(a[2]) or real_check(*a))
    monkeypatch.setattr(lotus.LotusModel, "prepare_image",
                        lambda self, im: checked.append("image") or real_prepare(self, im))
    stage = build_sharpen_stage(CheckpointRef.open(tiny_ck))
    assert resolved == []
    model.SharpDepth.from_pretrained(tiny_ck / "sharpen")
    assert resolved == [tiny_ck / "sharpen"]
    load_sharpdepth(tiny_ck)
    assert resolved == [tiny_ck / "sharpen", tiny_ck]

    image, depth, sparse = _scene(seed=8)
    pipe = Pipeline(stages=("sharpen",), checkpoint=tiny_ck)
    out = pipe(image, sparse, depth=depth)
    assert checked == []  # the Pipeline validated image, sparse and depth; the stage trusts them
    direct = stage.model.sharpen(image, depth, sparse)  # the public entry still checks everything
    assert checked == ["image", "metric_depth", "sparse"]
    assert np.array_equal(out.depth, direct.depth)
    with pytest.raises(ValueError, match="NaN or negative"):
        stage.model.sharpen(image, -depth)


@pytest.mark.parametrize("shape", [(2, 3), (8, 8)])
def test_tiny_images_are_padded_not_refused(tiny_ck, shape):
    """Below the UNet's minimum (its lowest level needs 2 x 2 cells for GroupNorm) the input is padded and cropped
    back, instead of failing with a GroupNorm message."""
    h, w = shape
    image = np.full((h, w, 3), 90, np.uint8)
    depth = np.linspace(1.0, 2.0, h * w, dtype=np.float32).reshape(h, w)
    sparse = np.zeros_like(depth)
    sparse[0, 0] = 1.5
    out = Pipeline(stages=("sharpen",), checkpoint=tiny_ck)(image, sparse, depth=depth)
    assert out.depth.shape == (h, w) and np.isfinite(out.depth).all() and out.depth[0, 0] == np.float32(1.5)


def test_run_limits_equals_run_for_each_setting_from_one_unet_pass(tiny_ck):
    """One UNet pass scored under several run-time limits gives, for each setting, what run() gives for a stage
    built with that setting on top of the same stage options (whose own limits are on, so a setting that names no
    field inherits them; input size != processing size, so the band is resized and the range radius scaled; holes
    in the metric input; with and without sparse input); a field that changes the pass, or a bad value, is refused.
    The comparison allows 1e-5 m: OpenCV's threaded distance transform may differ in the last float bits between
    two calls."""
    from depthkit.checkpoints import CheckpointRef
    from depthkit.sharpen.stage import build_sharpen_stage

    image, depth, sparse = _scene(h=40, w=60, seed=8, n=60)
    metric = depth.copy()
    metric[:3, :10] = 0
    ref = CheckpointRef.open(str(tiny_ck))
    own = {"change_band_px": 2, "change_band_jump": 0.05, "keep_near_measured_px": 3.0}
    settings = {
        "inherited": {},
        "none": {"change_band_px": 0, "keep_near_measured_px": 0.0},
        "all": {"change_within_measured_px": 6.0, "change_range_px": 1},
        "range, near": {"change_band_px": 0, "keep_near_measured_px": 5.0, "change_range_px": 2},
    }
    base = build_sharpen_stage(ref, options={"processing_resolution": 32, "config": own})
    calls = _count_unet_calls(base)
    for sp in (sparse, None):
        calls.clear()
        got = base.run_limits(image, sp, metric, settings)
        assert len(calls) == 2  # pass 1 and pass 2, once for all settings
        outs = {}
        for name, overrides in settings.items():
            stage = build_sharpen_stage(ref, options={"processing_resolution": 32, "config": {**own, **overrides}})
            outs[name] = stage.run(image, sp, metric).depth
            np.testing.assert_allclose(got[name], outs[name], rtol=0, atol=1e-5, err_msg=name)
        assert np.abs(outs["none"] - outs["inherited"]).max() > 1e-3  # the limits act on this scene
        assert np.abs(outs["inherited"] - outs["all"]).max() > 1e-3
        if sp is not None:
            assert np.array_equal(got["all"][sparse > 0], sparse[sparse > 0])
    with pytest.raises(ValueError, match="fit_threshold"):
        base.run_limits(image, sparse, metric, {"x": {"fit_threshold": 0.3}})
    with pytest.raises(ValueError, match="'x'.*change_range_px must be int"):
        base.run_limits(image, sparse, metric, {"x": {"change_range_px": 1.5}})
    with pytest.raises(ValueError, match="must be an object"):
        base.run_limits(image, sparse, metric, {"x": 3})
    # a given pass 1 (the oracle of sharpen_switches.py --pass1 gt) goes to the model's pass 1 with the same limits
    import torch

    from depthkit.sharpen.lotus import image_to_tensor
    from depthkit.sharpen.model import depth_tensor

    given = depth * 1.3
    oracle = base.run_limits(image, sparse, metric, {"inherited": {}}, pass1_depth=given)["inherited"]
    direct = base.model.sharpen_tensors(image_to_tensor(image), depth_tensor(metric), depth_tensor(sparse),
                                        processing_resolution=32, pass1_depth=torch.from_numpy(given)[None, None])
    np.testing.assert_allclose(oracle, direct["depth"][0, 0].numpy(), rtol=0, atol=1e-5)
    plain = base.run_limits(image, sparse, metric, {"inherited": {}})["inherited"]
    assert np.abs(oracle - plain).max() > 1e-3
    with pytest.raises(ValueError, match="pass1_depth"):
        base.run_limits(image, sparse, metric, {"x": {}}, pass1_depth=given[:-1])


def test_a_config_option_overrides_single_fields_of_the_shipped_switches(tiny_ck, tmp_path):
    """The manifest's run-time switches stay on when a caller's config names other fields (they were silently
    dropped when the caller's object replaced the manifest's); a field named by both takes the caller's value; a
    config that is not an object is refused by name."""
    import json
    import shutil

    from depthkit.checkpoints import CheckpointRef
    from depthkit.sharpen.stage import build_sharpen_stage

    ck = Path(shutil.copytree(tiny_ck, tmp_path / "ck"))
    manifest = json.loads((ck / "depthkit.json").read_text())
    manifest["stages"]["sharpen"] = {"config": {"change_band_px": 2, "change_range_px": 1}}
    (ck / "depthkit.json").write_text(json.dumps(manifest))
    ref = CheckpointRef.open(str(ck))
    cfg = build_sharpen_stage(ref, options={"config": {"fit_threshold": 0.3, "change_range_px": 4}}).model.config
    assert (cfg.change_band_px, cfg.change_range_px, cfg.fit_threshold) == (2, 4, 0.3)
    assert build_sharpen_stage(ref).model.config.change_band_px == 2
    with pytest.raises(ValueError, match="config must be an object"):
        build_sharpen_stage(ref, options={"config": [1]})
    for shipped, expected in (([1], "depthkit.json's sharpen config must be an object"), (None, None)):
        manifest["stages"]["sharpen"] = {"config": shipped}
        (ck / "depthkit.json").write_text(json.dumps(manifest))
        if expected:
            with pytest.raises(ValueError, match=expected):
                build_sharpen_stage(CheckpointRef.open(str(ck)))
        else:  # a null config is no config: the stored switches
            assert build_sharpen_stage(CheckpointRef.open(str(ck))).model.config.change_band_px == 0
    for field, value, kind in (("change_range_px", "abc", "int"), ("fit_threshold", None, "float"),
                               ("gating", "yes", "bool"), ("output", 1, "str")):
        with pytest.raises(ValueError, match=f"SharpDepthConfig.{field} must be {kind}; received") as err:
            build_sharpen_stage(ref, options={"config": {field: value}})  # the caller's value, not the checkpoint
        assert "re-download" not in str(err.value)


def test_max_processing_resolution_is_the_images_own_side_up_to_a_cap(tiny_ck, tmp_path):
    """``max_processing_resolution: N``: the UNet runs at the image's own size when its longest side is at most N
    (the output of a stage told that size, whatever the model's own default), else at N (the output of a stage told
    N); a caller's one replaces the manifest's other; both at once, or a bad value, is refused."""
    import shutil

    from depthkit.checkpoints import CheckpointError, CheckpointRef, load_manifest, write_manifest
    from depthkit.sharpen.stage import build_sharpen_stage

    ck = CheckpointRef.open(tiny_ck)
    capped = build_sharpen_stage(ck, options={"max_processing_resolution": 64})
    capped.model.model.default_processing_resolution = 40  # as a checkpoint's lotus.json may say: not used here
    for h, w, side in ((32, 48, 48), (60, 64, 64), (96, 128, 64)):
        image, depth, sparse = _scene(h, w, seed=4)
        assert capped.processing_side(image) == side
        told = build_sharpen_stage(ck, options={"processing_resolution": side})
        got = capped.run(image, sparse, depth).depth
        assert np.array_equal(got, told.run(image, sparse, depth).depth), (h, w)
        if side != 64:
            other = build_sharpen_stage(ck, options={"processing_resolution": 64}).run(image, sparse, depth).depth
            assert not np.array_equal(got, other)
    fixed = tmp_path / "fixed"
    shutil.copytree(tiny_ck, fixed)
    manifest = load_manifest(fixed)
    write_manifest(fixed, {**manifest["stages"], "sharpen": {**manifest["stages"]["sharpen"],
                                                            "processing_resolution": 96}}, tiny=True)
    ref = CheckpointRef.open(fixed)
    assert build_sharpen_stage(ref).processing_side(np.zeros((32, 48, 3))) == 96
    stage = build_sharpen_stage(ref, options={"max_processing_resolution": 64})
    assert stage.processing_resolution is None and stage.processing_side(np.zeros((32, 48, 3))) == 48
    with pytest.raises(ValueError, match="processing_resolution .* or max_processing_resolution .*, not both"):
        build_sharpen_stage(ck, options={"processing_resolution": 64, "max_processing_resolution": 64})
    with pytest.raises(ValueError, match="max_processing_resolution must be a positive int"):
        build_sharpen_stage(ck, options={"max_processing_resolution": True})
    with pytest.raises(CheckpointError, match="max_processing_resolution=5 is outside the allowed range"):
        build_sharpen_stage(ck, options={"max_processing_resolution": 5})


def test_assemble_default_replaces_the_runs_fixed_side_by_its_cap(tiny_ck, tmp_path):
    """checkpoints/assemble_default.py: the sharpen run's manifest says ``processing_resolution: 64``; the assembled
    default says SHARPEN_OPTIONS' ``max_processing_resolution`` instead (the two exclude each other) and loads."""
    import shutil
    import sys

    from depthkit.checkpoints import CheckpointRef, load_manifest, write_manifest
    from depthkit.sharpen.stage import build_sharpen_stage

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "checkpoints"))
    import assemble_default

    src = tmp_path / "src"
    shutil.copytree(tiny_ck, src)
    stages = load_manifest(src)["stages"]
    write_manifest(src, {**stages, "sharpen": {**stages["sharpen"], "processing_resolution": 64}}, tiny=True)
    assert assemble_default.main(["--complete", str(src), "--sharpen", str(src), "--out", str(tmp_path / "out")]) == 0
    sharpen = load_manifest(tmp_path / "out")["stages"]["sharpen"]
    assert "processing_resolution" not in sharpen
    assert sharpen["max_processing_resolution"] == assemble_default.SHARPEN_OPTIONS["max_processing_resolution"]
    stage = build_sharpen_stage(CheckpointRef.open(tmp_path / "out"))
    assert stage.processing_resolution is None and stage.processing_side(np.zeros((600, 800, 3))) == 480
    # the inference rules the default was measured with ride in the manifest's config, under --sharpen-config
    assert sharpen["config"] == assemble_default.SHARPEN_MEASURED_CONFIG
    assert (stage.model.config.norm_range, stage.model.config.resize_back) == ("input", "antialias")
    assert assemble_default.main(["--complete", str(src), "--sharpen", str(src), "--out", str(tmp_path / "o2"),
                                  "--sharpen-config", '{"resize_back": "bilinear", "fit_threshold": 0.3}']) == 0
    assert load_manifest(tmp_path / "o2")["stages"]["sharpen"]["config"] == {
        "norm_range": "input", "resize_back": "bilinear", "fit_threshold": 0.3}


def test_a_sharpen_part_written_over_an_existing_one_is_swapped_in_whole(tmp_path, monkeypatch):
    """write_sharpen_checkpoint writes beside and swaps: a save that fails part way leaves the existing sharpen/ as
    it was (and no temporary folder); a save that succeeds replaces it whole (no file of the old part left)."""
    from depthkit.sharpen.checkpoint import write_sharpen_checkpoint
    from depthkit.sharpen.model import SharpDepth
    from depthkit.sharpen.tiny import build_tiny_lotus

    root = tmp_path / "ck"
    model = SharpDepth(build_tiny_lotus(seed=3))
    write_sharpen_checkpoint(root, model)
    stray = root / "sharpen" / "stray.txt"
    stray.write_text("from the part before")
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def fails_part_way(self, directory):
        Path(directory, "unet").mkdir(parents=True)
        Path(directory, "unet", "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SharpDepth, "save_pretrained", fails_part_way)
    with pytest.raises(OSError, match="No space left"):
        write_sharpen_checkpoint(root, model)
    assert {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in root.iterdir()) == ["depthkit.json", "sharpen"]
    monkeypatch.undo()
    write_sharpen_checkpoint(root, model)
    assert not stray.exists() and (root / "sharpen" / "sharpdepth.json").is_file()
