"""Stage-2 training: Lotus with dense GT and label-free SharpDepth, through ``depthkit train``'s trainers.

The trainer test runs both trainers end to end on a few synthetic scenes (a tiny Lotus from random init, then
SharpDepth label-free with a blurred GT as its precomputed, cached metric source) and checks that each lowers its own
objective. It makes no claim about sharpening: an earlier version asserted DBE/MAE marks on the training images that
the *untrained* model already met. Whether SharpDepth sharpens, and whether each of its mechanisms matters, is
tested on held-out scenes in ``tests/test_sharpen_mechanism.py``.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from depthkit.config import RecipeError, load_recipe
from depthkit.data.datasets import build_dataset
from depthkit.io import write_image
from depthkit.metrics import dbe_metrics

SMALL_UNET = {"block_out_channels": [16, 32], "norm_num_groups": 8}
SMALL_VAE = {"block_out_channels": [8, 16], "norm_num_groups": 4,
             "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}
BLUR_SIGMA = 3.0  # pixels


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def lotus_recipe(out, scenes: dict, steps: int, **train):
    return load_recipe({
        "kind": "lotus",
        "model": {"init": "tiny", "tiny_unet": SMALL_UNET, "tiny_vae": SMALL_VAE},
        "loss": {"latent": 1.0, "pixel": 1.0, "vae_depth": 1.0, "train_vae": True},
        "data": {"sources": [{"name": "synthetic", "split": "train", "options": scenes}],
                 "resolution": [scenes["height"], scenes["width"]], "random_flip": False},
        "train": {"max_steps": steps, "batch_size": 4, "lr": 3e-3, "schedule": "constant", "log_every": 10,
                  "eval_every": 0, "save_every": 0, **train},
        "output": {"output_dir": str(out)}})


def sharpen_recipe(out, lotus, sources: list, resolution, metric: str, steps: int, sharpdepth=None, **train):
    return load_recipe({
        "kind": "sharpen",
        "model": {"lotus": str(lotus), "tiny_unet": SMALL_UNET, "tiny_vae": SMALL_VAE},
        "metric": {"source": metric, "cache": True},
        "data": {"sources": sources, "resolution": list(resolution), "random_flip": False},
        "sharpdepth": {"ema_start": 0, "ema_every": 1, "ema_decay": 0.99, **(sharpdepth or {})},
        "train": {"max_steps": steps, "batch_size": 4, "lr": 5e-4, "schedule": "constant", "log_every": 1,
                  "eval_every": 0, "save_every": 0, **train},
        "output": {"output_dir": str(out)}})


def _log(run, key="loss"):
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def learn_to_sharpen(tmp_path, n_scenes: int, lotus_steps: int, sharpen_steps: int, batch_size: int) -> dict:
    """Train a tiny Lotus on ``n_scenes`` synthetic scenes (32x48), then SharpDepth on the same images with the
    blurred GT as metric input; return DBE accuracy (px) and MAE (m) of the blurred input and the sharpened output."""
    from depthkit.sharpen import train as train_sharpen
    from depthkit.sharpen import train_lotus
    from depthkit.sharpen.checkpoint import load_sharpdepth

    torch.manual_seed(0)
    scenes = {"length": n_scenes, "height": 32, "width": 48, "kind": "indoor"}
    lotus_final = train_lotus.train(lotus_recipe(tmp_path / "lotus", scenes, steps=lotus_steps,
                                                 batch_size=batch_size))
    losses = _log(tmp_path / "lotus")
    assert np.mean(losses[-2:]) < 0.4 * np.mean(losses[:2]), losses

    # the same scenes as an unlabelled image folder + a blurred GT as the precomputed metric source
    items = [build_dataset("synthetic", None, split="train", **scenes)[i] for i in range(n_scenes)]
    (tmp_path / "images").mkdir()
    (tmp_path / "metric").mkdir()
    for it in items:
        write_image(tmp_path / "images" / f"{it['name']}.png", it["image"])
        np.save(tmp_path / "metric" / f"{it['name']}.npy", cv2.GaussianBlur(it["depth"], (0, 0), BLUR_SIGMA))
    recipe = sharpen_recipe(tmp_path / "sharp", lotus_final, [{"name": "image_folder", "root": str(tmp_path / "images")}],
                            (32, 48), f"npy:{tmp_path / 'metric'}", steps=sharpen_steps, batch_size=batch_size)
    final = train_sharpen.train(recipe)
    assert len(list((tmp_path / "sharp" / "metric_cache").glob(f"{items[0]['name']}_*.npy"))) == 1

    trained, untrained = load_sharpdepth(final), load_sharpdepth(lotus_final)
    rows = []
    for it in items:
        gt, blurred = it["depth"], np.load(tmp_path / "metric" / f"{it['name']}.npy")
        sharp = trained.sharpen(it["image"], blurred).depth
        rows.append([dbe_metrics(blurred, gt)["dbe_acc"], dbe_metrics(sharp, gt)["dbe_acc"],
                     np.abs(blurred - gt).mean(), np.abs(sharp - gt).mean()])
    dbe_blur, dbe_sharp, mae_blur, mae_sharp = np.nanmean(np.array(rows), axis=0)
    print(f"DBE acc blurred {dbe_blur:.3f} px -> sharpened {dbe_sharp:.3f} px; "
          f"MAE blurred {mae_blur:.3f} m -> sharpened {mae_sharp:.3f} m")

    # training lowered SharpDepth's own objective on a fixed batch (same noise, same coins, frozen pass 1)
    x = torch.from_numpy(np.stack([it["image"] for it in items])).permute(0, 3, 1, 2).float() / 127.5 - 1
    d = torch.from_numpy(np.stack([np.load(tmp_path / "metric" / f"{it['name']}.npy") for it in items]))[:, None]
    teacher = untrained.model.unet

    def objective(model):
        with torch.no_grad():
            return float(model.compute_losses(x, d, teacher, pass1_unet=teacher,
                                              generator=torch.Generator().manual_seed(0))["loss"])

    return {"dbe_blur": dbe_blur, "dbe_sharp": dbe_sharp, "mae_blur": mae_blur, "mae_sharp": mae_sharp,
            "objective_before": objective(untrained), "objective_after": objective(trained)}


def test_lotus_then_sharpdepth_trainers_lower_their_objectives(tmp_path):
    """2 scenes, 150 Lotus steps, 15 SharpDepth steps (~25 s on one CPU thread)."""
    r = learn_to_sharpen(tmp_path, n_scenes=2, lotus_steps=150, sharpen_steps=15, batch_size=2)
    assert r["objective_after"] < r["objective_before"], r


def _tiny_sources(n=3):
    return [{"name": "synthetic", "split": "train",
             "options": {"length": n, "height": 16, "width": 24, "kind": "indoor", "sparse_kwargs": {"n": 20}}}]


def _interrupt_after(run, step: int, dst):
    """A copy of ``run`` as if the process had died right after saving ``step``: later checkpoints and the final
    export are gone."""
    import shutil

    shutil.copytree(run, dst)
    for ck in (dst / "checkpoints").glob("step_*"):
        if int(ck.name.split("_")[1]) > step:
            shutil.rmtree(ck)
    shutil.rmtree(dst / "final")
    return dst


def test_sharpen_resume_is_exact_and_final_checkpoint_runs(tmp_path):
    from depthkit.pipeline import Pipeline
    from depthkit.run_state import latest_state_dir
    from depthkit.sharpen import train as train_sharpen

    def recipe(out):
        # metric source: depthkit's complete stage (classical guided) on sparse points drawn from the GT; cosine LR
        # and grad accumulation so that a resume must restore the schedule and accumulate the same micro-steps
        return sharpen_recipe(out, "tiny", _tiny_sources(), (16, 24), "complete:guided", steps=4, batch_size=2,
                              grad_accum=2, save_every=2, lr=1e-3, schedule="cosine", warmup_steps=1)

    straight = train_sharpen.train(recipe(tmp_path / "a"))
    a = torch.load(latest_state_dir(tmp_path / "a") / "state.pt", weights_only=True)
    crashed = _interrupt_after(tmp_path / "a", 2, tmp_path / "b")
    with pytest.raises(ValueError, match="--resume"):
        train_sharpen.train(recipe(crashed))
    resumed = train_sharpen.train(recipe(crashed), resume=True)
    b = torch.load(latest_state_dir(crashed) / "state.pt", weights_only=True)
    for key in ("unet", "optimizer", "lr_scheduler", "ema"):
        flat_a, flat_b = _flatten(a[key]), _flatten(b[key])
        assert flat_a.keys() == flat_b.keys() and all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), key
    assert _log(tmp_path / "a")[-1] == _log(crashed)[-1]
    assert any(p.name.endswith(".npy") for p in (crashed / "metric_cache").iterdir())
    # the exported checkpoint is what the pipeline loads
    for final in (straight, resumed):
        assert (final / "depthkit.json").is_file() and (final / "sharpen" / "sharpdepth.json").is_file()
    item = build_dataset("synthetic", None, split="val", length=1, height=16, width=24, kind="indoor")[0]
    out = Pipeline.from_pretrained(resumed, stages=("sharpen",))(item["image"], item["sparse"], depth=item["depth"])
    assert np.array_equal(out.depth[item["sparse"] > 0], item["sparse"][item["sparse"] > 0])


def _flatten(obj, prefix=""):
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}/"))
    elif isinstance(obj, torch.Tensor):
        out[prefix] = obj
    else:
        out[prefix] = torch.tensor(float(obj)) if isinstance(obj, (int, float)) else torch.tensor(0.0)
    return out


def test_sharpen_resume_of_a_checkpoint_for_another_unet_is_one_clear_error(tmp_path):
    """Resuming a run folder without its recipe record with wider UNet blocks: one error naming the checkpoint and
    the size mismatch (run_recipe.load_resumed_weights), not torch's list of mismatched tensors."""
    from depthkit.sharpen import train as train_sharpen

    def recipe(steps):
        return sharpen_recipe(tmp_path / "a", "tiny", _tiny_sources(2), (16, 24), "complete:guided", steps=steps,
                              batch_size=2, save_every=1)

    train_sharpen.train(recipe(1))
    (tmp_path / "a" / "recipe.yaml").unlink()
    wider = recipe(2)
    wider.model.tiny_unet = {**SMALL_UNET, "block_out_channels": [32, 64]}
    with pytest.raises(ValueError, match=r"^the checkpoint at step 1 in .* does not fit this recipe's model \(size "
                                         r"mismatch for "):
        train_sharpen.train(wider, resume=True)


def write_lotus_yaml(path, scenes: int = 5, schedule: str = "cosine"):
    """A tiny Lotus recipe file for CLI runs (~1 s a step, a checkpoint every step); returns ``path``."""
    path.write_text(f"""kind: lotus
model: {{init: tiny, tiny_unet: {json.dumps(SMALL_UNET)}, tiny_vae: {json.dumps(SMALL_VAE)}}}
loss: {{latent: 1.0, pixel: 1.0, vae_depth: 1.0, train_vae: true}}
data:
  sources: [{{name: synthetic, split: train, options: {{length: {scenes}, height: 20, width: 28, kind: indoor}}}}]
  resolution: [16, 24]
train: {{batch_size: 2, lr: 1.0e-3, save_every: 1, log_every: 1, eval_every: 0, schedule: {schedule}}}
""")
    return path


def test_lotus_resume_is_exact_via_cli(tmp_path):
    from depthkit.cli import main
    from depthkit.run_state import latest_state_dir

    path = write_lotus_yaml(tmp_path / "lotus.yaml")
    assert main(["train", str(path), "train.max_steps=3", f"output.output_dir={tmp_path / 'a'}"]) == 0
    a = torch.load(latest_state_dir(tmp_path / "a") / "state.pt", weights_only=True)
    crashed = _interrupt_after(tmp_path / "a", 2, tmp_path / "b")
    assert main(["train", "--resume", str(path), "train.max_steps=3", f"output.output_dir={crashed}"]) == 0
    b = torch.load(latest_state_dir(crashed) / "state.pt", weights_only=True)
    for key in ("unet", "vae"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert (crashed / "final" / "lotus.json").is_file()
    assert [p.name for p in sorted((crashed / "checkpoints").glob("step_*"))] == ["step_0000002", "step_0000003"]


def test_lotus_resume_with_another_number_of_processes_is_refused(tmp_path, capsys):
    """The data order is sharded by process (StepSampler), so a checkpoint that 2 processes wrote does not continue
    in 1: refused as the complete trainer refuses it (the stage-2 checkpoints recorded no process count, and a
    resume went on with another data order)."""
    from depthkit.cli import main
    from depthkit.run_state import CHECKSUMS, _sha256, latest_state_dir

    path = write_lotus_yaml(tmp_path / "lotus.yaml")
    args = ["train", str(path), "train.max_steps=2", f"output.output_dir={tmp_path / 'a'}"]
    assert main([*args[:2], "train.max_steps=1", *args[3:]]) == 0
    ck = latest_state_dir(tmp_path / "a")
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["world_size"] == 1
    (ck / "meta.json").write_text(json.dumps({**meta, "world_size": 2}))  # as a 2-process run wrote it
    sums = {name: _sha256(ck / name) for name in ("state.pt", "meta.json")}
    (ck / CHECKSUMS).write_text(json.dumps({"sha256": sums}))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    assert "was written by 2 processes; resume with the same number (this run has 1)" in capsys.readouterr().err


def test_recipe_and_trainer_errors(tmp_path):
    from depthkit.sharpen import train as train_sharpen

    with pytest.raises(RecipeError, match="metric.source"):
        load_recipe({"kind": "sharpen", "metric": {"source": "midas"}})
    with pytest.raises(RecipeError, match="at least one > 0"):
        load_recipe({"kind": "lotus", "loss": {"latent": 0.0}})
    with pytest.raises(RecipeError, match="train_vae"):
        load_recipe({"kind": "lotus", "loss": {"vae_depth": 1.0}})
    with pytest.raises(RecipeError, match="sharpdepth.gate_prb"):
        load_recipe({"kind": "sharpen", "sharpdepth": {"gate_prb": 0.5}})
    with pytest.raises(RecipeError, match=r"train.num_workers=2: the sharpen trainer .* set train.num_workers=0"):
        load_recipe({"kind": "sharpen", "train": {"num_workers": 2}})  # was accepted and ignored
    assert load_recipe({"kind": "lotus", "train": {"num_workers": 2}}).train.num_workers == 2  # Lotus uses them
    with pytest.raises(ValueError, match="multiples of 4"):
        train_sharpen.train(sharpen_recipe(tmp_path / "r", "tiny", _tiny_sources(), (18, 24), "complete", steps=1))
    src = [{"name": "image_folder", "root": str(tmp_path / "imgs")}]
    (tmp_path / "imgs").mkdir()
    write_image(tmp_path / "imgs" / "a.png", np.zeros((16, 24, 3), np.uint8))
    with pytest.raises(ValueError, match="needs sparse input"):  # complete source, image folder without sparse_dir
        train_sharpen.train(sharpen_recipe(tmp_path / "r2", "tiny", src, (16, 24), "complete", steps=1))
    (tmp_path / "metric").mkdir()
    np.save(tmp_path / "metric" / "a.npy", np.full((16, 24), 2.0, np.float32))
    with pytest.raises(ValueError, match="has no GT depth"):  # the ground-truth terms on unlabelled images
        train_sharpen.train(sharpen_recipe(tmp_path / "r3", "tiny", src, (16, 24), f"npy:{tmp_path / 'metric'}",
                                           steps=1, sharpdepth={"lambda_gt": 1.0}))


def test_sharpen_trainer_feeds_ground_truth_crops(tmp_path, monkeypatch):
    """With ``lambda_gt`` the trainer hands compute_losses the GT crop that matches the image and metric crops
    (same resize, crop and flip): on a source whose metric input is twice the GT, every metric crop is twice its GT
    crop. Fails if the GT is cropped on its own or the metric map is passed as GT."""
    from depthkit.sharpen import train as train_sharpen
    from depthkit.sharpen.model import SharpDepth

    scenes = {"length": 3, "height": 20, "width": 40, "kind": "indoor"}  # resized to 16x32, then cropped to 16x24
    items = [build_dataset("synthetic", None, split="train", **scenes)[i] for i in range(3)]
    (tmp_path / "images").mkdir()
    (tmp_path / "metric").mkdir()
    for it in items:
        write_image(tmp_path / "images" / f"{it['name']}.png", it["image"])
        np.save(tmp_path / "metric" / f"{it['name']}.npy", 2.0 * it["depth"])
    seen = []
    real = SharpDepth.compute_losses

    def spy(self, image, metric_depth, *args, gt=None, **kwargs):
        seen.append((metric_depth.clone(), None if gt is None else gt.clone()))
        return real(self, image, metric_depth, *args, gt=gt, **kwargs)

    monkeypatch.setattr(SharpDepth, "compute_losses", spy)
    recipe = sharpen_recipe(tmp_path / "r", "tiny", [{"name": "synthetic", "split": "train", "options": scenes}],
                            (16, 24), f"npy:{tmp_path / 'metric'}", steps=3, batch_size=2,
                            sharpdepth={"lambda_gt": 1.0, "lambda_gt_grad": 1.0})
    recipe.data.random_flip = True
    train_sharpen.train(recipe)
    assert len(seen) == 3 and all(gt is not None and torch.equal(2.0 * gt, d) for d, gt in seen)
    assert all(v > 0 for v in _log(tmp_path / "r", "gt"))


def test_full_recipes_are_the_papers_setting():
    from pathlib import Path

    recipes = Path(__file__).resolve().parent.parent / "recipes"
    r = load_recipe(recipes / "sharpen" / "sharpdepth_sd2.yaml")
    sd = r.sharpdepth
    assert (sd.lambda_sds, sd.lambda_recons, sd.gate_prob, sd.sds_timestep) == (1.0, 0.3, 0.8, "fixed")
    assert (sd.ema_decay, sd.ema_start, sd.ema_every) == (0.9999, 100, 10)
    assert r.metric.source.startswith("unidepth") and r.data.sources[0].name == "image_folder"
    assert r.train.mixed_precision == "bf16" and r.train.batch_size * r.train.grad_accum == 8
    assert r.train.weight_decay == 0.01  # the public script's AdamW default, which its train.sh keeps
    t = load_recipe(recipes / "tiny" / "sharpen.yaml")
    assert t.model.lotus == load_recipe(recipes / "tiny" / "lotus.yaml").output.output_dir + "/final"
    lotus = load_recipe(recipes / "lotus" / "lotus_g_sd2.yaml")
    assert lotus.model.init == "stabilityai/stable-diffusion-2-base" and lotus.model.mode == "generative"
    assert [(s.name, s.weight) for s in lotus.data.sources] == [("hypersim", 0.9), ("vkitti2", 0.1)]
    assert (lotus.train.lr, lotus.train.max_steps, lotus.train.batch_size) == (3e-5, 20000, 16)


def test_lotus_init_from_a_checkpoint_must_match_the_recipe(tmp_path):
    from depthkit.sharpen.tiny import build_tiny_lotus
    from depthkit.sharpen.train_lotus import build_lotus

    saved = build_tiny_lotus(norm="disparity", unet=SMALL_UNET, vae=SMALL_VAE).save_pretrained(tmp_path / "l")
    cfg = load_recipe({"kind": "lotus", "model": {"init": str(saved), "norm": "disparity"}}).model
    assert build_lotus(cfg).norm == "disparity"
    cfg = load_recipe({"kind": "lotus", "model": {"init": str(saved)}}).model
    with pytest.raises(ValueError, match="predicting disparity"):
        build_lotus(cfg)


def test_metric_cache_keys_on_the_inputs_not_only_the_name(tmp_path):
    """Sources of a mix share names (the same synthetic scene with 16, 80 or 320 points): the cache must serve each
    sparse map (and each image) its own metric input, and serve a repeated input from disk, across instances.
    Fails if the cache is keyed by name alone (the second sparse map would get the first one's metric input)."""
    from depthkit.sharpen.train import MetricCache

    calls = []

    def source(image, sparse, name):  # a metric input that depends on both inputs
        calls.append(name)
        return np.full(image.shape[:2], float(image.mean()) + float(0 if sparse is None else sparse.sum()), np.float32)

    image = np.full((4, 6, 3), 10, np.uint8)
    few, many = np.zeros((4, 6), np.float32), np.zeros((4, 6), np.float32)
    few[0, 0], many[:2] = 1.0, 1.0
    cache = MetricCache(source, tmp_path)
    a, b, c = cache(image, few, "synthetic_0"), cache(image, many, "synthetic_0"), cache(image, None, "synthetic_0")
    other = cache(image + 1, few, "synthetic_0")
    assert (a == 11).all() and (b == 22).all() and (c == 10).all() and (other == 12).all()
    assert len(calls) == 4 and len(list(tmp_path.glob("synthetic_0_*.npy"))) == 4
    again = MetricCache(source, str(tmp_path))  # a str root as well as a Path
    assert (again(image, many, "synthetic_0") == 22).all() and (again(image, few.copy(), "synthetic_0") == 11).all()
    assert len(calls) == 4  # both served from disk


def test_metric_cache_keys_on_the_code_that_computed_it(tmp_path):
    """A completion cached by one version of the code must not be served after that code changed (an algorithm
    changed with the checkpoint's files untouched): the key holds a hash of the package's Python sources, which
    changes with any edit to them and not with other files."""
    import shutil

    import depthkit
    from depthkit.sharpen.train import METRIC_CODE, MetricCache, code_identity

    pkg = tmp_path / "pkg"
    shutil.copytree(Path(depthkit.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_identity(root=pkg) == code_identity()  # the same sources, wherever they lie
    before = code_identity(root=pkg)
    (pkg / "complete" / "hole_fill.py").write_text((pkg / "complete" / "hole_fill.py").read_text() + "\n# edited\n")
    edited = code_identity(root=pkg)
    (pkg / "geometry.py").write_text((pkg / "geometry.py").read_text() + "\n# edited too\n")
    assert len({before, edited, code_identity(root=pkg)}) == 3 and METRIC_CODE == ("",)  # any module of the package
    edited = code_identity(root=pkg)
    (pkg / "notes.txt").write_text("not code")
    assert code_identity(root=pkg) == edited
    with pytest.raises(ValueError, match="holds no Python source"):
        code_identity(("nowhere",), root=pkg)

    calls = []

    def source(image, sparse, name):
        calls.append(name)
        return np.ones(image.shape[:2], np.float32)

    image, sparse = np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6), np.float32)
    for code in (before, edited, before):
        MetricCache(source, tmp_path / "c", code=code)(image, sparse, "s0")
    assert len(calls) == 2 and len(list((tmp_path / "c").glob("s0_*.npy"))) == 2
    assert MetricCache(source, tmp_path / "c").code == code_identity()


def test_metric_cache_keys_on_the_source_too(tmp_path):
    """One cache folder reused with another source must not serve the first source's maps: classical methods differ,
    a learned completer's options differ, and a checkpoint whose files changed (retrained in place) differs; the
    same source in a new instance is served from disk."""
    from depthkit.checkpoints import write_manifest
    from depthkit.complete.checkpoint import write_tiny
    from depthkit.sharpen.teachers import CompleteSource
    from depthkit.sharpen.train import MetricCache

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    sparse = np.zeros((24, 32), np.float32)
    sparse.flat[rng.choice(24 * 32, 40, replace=False)] = rng.uniform(1.0, 5.0, 40)
    maps = {m: MetricCache(CompleteSource(m), tmp_path / "c")(image, sparse, "s0") for m in ("nearest", "guided")}
    assert not np.array_equal(maps["nearest"], maps["guided"])
    assert len(list((tmp_path / "c").glob("s0_*.npy"))) == 2
    np.testing.assert_array_equal(MetricCache(CompleteSource("guided"), tmp_path / "c")(image, sparse, "s0"),
                                  maps["guided"])
    ck = tmp_path / "ck"
    write_tiny(ck / "complete")
    write_manifest(ck, {"complete": {}}, tiny=True)
    ids = {CompleteSource("sdim", checkpoint=ck).identity,
           CompleteSource("sdim", checkpoint=ck, query_budget=0).identity}
    (ck / "complete" / "complete.json").write_text((ck / "complete" / "complete.json").read_text() + "\n")
    ids.add(CompleteSource("sdim", checkpoint=ck).identity)
    assert len(ids) == 3
    from depthkit.checkpoints import CheckpointRef

    assert CompleteSource("sdim", checkpoint=CheckpointRef.open(ck)).identity == CompleteSource(
        "sdim", checkpoint=ck).identity  # a CheckpointRef is the same checkpoint as its folder
    cache = MetricCache(CompleteSource("sdim", checkpoint=ck, query_budget=0), tmp_path / "c")
    cache(image, sparse, "s0")
    assert len(list((tmp_path / "c").glob("s0_*.npy"))) == 3


def _three_steps(tmp_path, **model):
    """A 3-step sharpen recipe from a tiny random Lotus (lr 1e-2, EMA decay 0.9 from step 0) with ``model`` fields."""
    recipe = sharpen_recipe(tmp_path / "r", "tiny", _tiny_sources(), (16, 24), "complete:guided", steps=3,
                            batch_size=2, lr=1e-2, sharpdepth={"ema_decay": 0.9, "ema_start": 0})
    for name, value in model.items():
        setattr(recipe.model, name, value)
    return recipe


def test_sharpen_trainer_runs_pass_one_with_the_ema_and_exports_it(tmp_path, monkeypatch):
    """Pass 1 (the discrepancy pass) runs the EMA of the student, not the student (the released training code's
    teacher for gating), and ``model.export: ema`` writes the EMA's weights as the final UNet. Fails if pass 1 is
    handed the student or the export keeps the student's weights."""
    from safetensors.torch import load_file

    from depthkit.run_state import latest_state_dir
    from depthkit.sharpen import train as train_sharpen
    from depthkit.sharpen.model import SharpDepth

    calls = []
    real = SharpDepth.compute_losses

    def spy(self, image, metric_depth, teacher_unet, *args, pass1_unet=None, **kwargs):
        student = self.model.unet
        calls.append((pass1_unet is student,
                      max(float((a - b).detach().abs().max()) for a, b in zip(pass1_unet.parameters(),
                                                                         student.parameters()))))
        return real(self, image, metric_depth, teacher_unet, *args, pass1_unet=pass1_unet, **kwargs)

    monkeypatch.setattr(SharpDepth, "compute_losses", spy)
    recipe = _three_steps(tmp_path, export="ema")
    recipe.train.max_steps = 4  # ema-pytorch's rule copies at calls 0 and 1 (its first average), averages from 2
    final = train_sharpen.train(recipe)
    assert len(calls) == 4 and not any(same for same, _ in calls)
    assert calls[0][1] == calls[2][1] == 0.0 and calls[-1][1] > 1e-4  # the EMA starts as the student, then lags
    state = torch.load(latest_state_dir(tmp_path / "r") / "state.pt", weights_only=True)
    exported = load_file(final / "sharpen" / "unet" / "diffusion_pytorch_model.safetensors")
    ema, student = state["ema"]["model"], state["unet"]
    assert exported.keys() == ema.keys()
    assert all(torch.equal(exported[k], ema[k].float()) for k in ema)
    assert any(not torch.equal(exported[k], student[k].float()) for k in student)


def test_sharpen_trainer_pass1_lotus_runs_a_frozen_copy_and_exports_it(tmp_path, monkeypatch):
    """``model.pass1: lotus`` (a depthkit switch): every step's pass 1 runs the initial Lotus's weights, unchanged
    while the student learns, and the export stores them as ``sharpen/lotus_unet/``, which a loaded sharpener then
    runs as its pass 1. Fails if pass 1 is the EMA or the student, if the copy is not frozen, or if the export
    leaves the Lotus out."""
    from safetensors.torch import load_file

    from depthkit.sharpen import train as train_sharpen
    from depthkit.sharpen.checkpoint import load_sharpdepth
    from depthkit.sharpen.model import SharpDepth

    initial, calls = {}, []
    real = SharpDepth.compute_losses

    def spy(self, image, metric_depth, teacher_unet, *args, pass1_unet=None, **kwargs):
        if not initial:  # before the first optimiser step the student holds the initial Lotus
            initial.update({k: v.detach().clone() for k, v in self.model.unet.state_dict().items()})
        p1 = pass1_unet.state_dict()
        calls.append((pass1_unet is self.model.unet, all(torch.equal(p1[k], initial[k]) for k in initial),
                      any(p.requires_grad for p in pass1_unet.parameters())))
        return real(self, image, metric_depth, teacher_unet, *args, pass1_unet=pass1_unet, **kwargs)

    monkeypatch.setattr(SharpDepth, "compute_losses", spy)
    final = train_sharpen.train(_three_steps(tmp_path, pass1="lotus"))
    assert calls == [(False, True, False)] * 3
    stored = load_file(final / "sharpen" / "lotus_unet" / "diffusion_pytorch_model.safetensors")
    assert stored.keys() == initial.keys() and all(torch.equal(stored[k], initial[k]) for k in initial)
    student = load_file(final / "sharpen" / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(student[k], initial[k]) for k in initial)  # the student learned; its Lotus did not
    loaded = load_sharpdepth(final)
    assert loaded.lotus_unet is not None
    assert all(torch.equal(v, initial[k]) for k, v in loaded.lotus_unet.state_dict().items())

    with pytest.raises(RecipeError, match=r"model.pass1='teacher'.*allowed: ema, lotus"):
        load_recipe({"kind": "sharpen", "model": {"lotus": "tiny", "pass1": "teacher"}})


def _lr_expected(lr: float, steps: int, warmup: int) -> list[float]:
    """The base LR times the warmup-then-cosine factor of each optimiser step 0..steps-1, written out here."""
    import math

    return [lr * ((k + 1) / warmup if k < warmup else 0.5 * (1 + math.cos(math.pi * (k - warmup) / (steps - warmup))))
            for k in range(steps)]


def test_sharpen_and_lotus_trainers_log_the_rate_each_step_ran_at(tmp_path, adamw_rates):
    """The ``lr`` logged for step N is the rate the optimiser used in step N (warmup 2, cosine over 4 steps:
    0.5, 1, 1, 0.5 times the base rate), not the next step's (which logged 1, 1, 0.5, 0). Fails if the rate is read
    after the schedule moved on."""
    from depthkit.sharpen import train as train_sharpen
    from depthkit.sharpen import train_lotus

    seen = adamw_rates
    expected = _lr_expected(1e-3, 4, 2)
    train_sharpen.train(sharpen_recipe(tmp_path / "s", "tiny", _tiny_sources(), (16, 24), "complete:guided", steps=4,
                                       batch_size=1, lr=1e-3, schedule="cosine", warmup_steps=2))
    assert _log(tmp_path / "s", "lr") == pytest.approx(expected) == seen
    seen.clear()
    train_lotus.train(lotus_recipe(tmp_path / "l", {"length": 2, "height": 16, "width": 24, "kind": "indoor"}, 4,
                                   lr=1e-3, schedule="cosine", warmup_steps=2, batch_size=1, log_every=1))
    assert _log(tmp_path / "l", "lr") == pytest.approx(expected) == seen


def test_bf16_training_exports_the_frozen_parts_it_started_from(tmp_path, monkeypatch):
    """Under bf16 the frozen VAE and pass-1 Lotus run cast to bf16; the export writes them as they were loaded, not
    their bf16 rounding cast back (up to 1e-3 per weight, 0.1 % of a decoded depth range). bf16 autocast is a CUDA
    setting, so the run's accelerator is made bf16 on the CPU here. Fails if the export casts the bf16 copies back."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from safetensors.torch import load_file

    import depthkit.training as training
    from depthkit.run_state import prepare_run_dir
    from depthkit.sharpen import train as train_sharpen

    def bf16_run(recipe, resume):
        return (prepare_run_dir(recipe.output.output_dir, resume, recipe),
                Accelerator(mixed_precision="bf16", cpu=True, gradient_accumulation_steps=recipe.train.grad_accum))

    monkeypatch.setattr(training, "start_run", bf16_run)
    recipe = _three_steps(tmp_path, pass1="lotus")
    recipe.train.max_steps, recipe.train.seed = 1, 3
    AcceleratorState._reset_state(True)  # a process-wide singleton: other tests' runs made it fp32
    try:
        final = train_sharpen.train(recipe)
    finally:
        AcceleratorState._reset_state(True)
    initial = train_sharpen.load_initial_lotus("tiny", recipe.model, seed=3)
    for folder, module in (("vae", initial.vae), ("lotus_unet", initial.unet)):
        stored = load_file(final / "sharpen" / folder / "diffusion_pytorch_model.safetensors")
        ref = module.state_dict()
        assert stored.keys() == ref.keys() and all(stored[k].dtype == torch.float32 for k in stored)
        assert all(torch.equal(stored[k], ref[k]) for k in ref), folder
        assert any(not torch.equal(ref[k], ref[k].to(torch.bfloat16).float()) for k in ref)  # rounding would show


def test_a_teacher_that_cannot_score_the_student_is_refused(tmp_path):
    """model.teacher's UNet runs on the student's VAE latents and prompt embedding: a teacher Lotus with another
    depth normalisation, VAE scaling factor, VAE weights or embedding is refused before the first step, naming what
    differs; a tiny teacher is built with the recipe's tiny architecture and seed, so it fits."""
    from depthkit.sharpen import train as train_sharpen
    from depthkit.sharpen.tiny import build_tiny_lotus

    def teacher(name, **changes):
        model = build_tiny_lotus(seed=0, unet=SMALL_UNET, vae=SMALL_VAE, norm=changes.pop("norm", "depth"))
        if "scaling_factor" in changes:
            model.vae.register_to_config(scaling_factor=changes["scaling_factor"])
        if "vae_seed" in changes:
            model.vae = build_tiny_lotus(seed=changes["vae_seed"], unet=SMALL_UNET, vae=SMALL_VAE).vae
        if "embeds" in changes:
            model.empty_prompt_embeds = model.empty_prompt_embeds + changes["embeds"]
        model.save_pretrained(tmp_path / name)
        return str(tmp_path / name)

    for name, changes, message in (("disp", {"norm": "disparity"}, r"norm 'disparity' \(the student's: 'depth'\)"),
                                   ("scale", {"scaling_factor": 3.7}, r"VAE scaling_factor 3.7"),
                                   ("vae", {"vae_seed": 5}, "other VAE weights"),
                                   ("emb", {"embeds": 0.5}, "another empty-prompt embedding")):
        recipe = _three_steps(tmp_path / name, teacher=teacher(name, **changes))
        with pytest.raises(ValueError, match=r"model.teacher .* cannot score this student in SDS: it has " + message):
            train_sharpen.train(recipe)
    recipe = _three_steps(tmp_path / "same", teacher=teacher("same"))
    recipe.train.max_steps = 1
    assert (train_sharpen.train(recipe) / "depthkit.json").is_file()
    recipe = _three_steps(tmp_path / "tiny", teacher="tiny")
    recipe.train.max_steps = 1
    assert (train_sharpen.train(recipe) / "depthkit.json").is_file()


def test_validation_sharpens_at_the_resolution_the_export_runs_at(tmp_path, monkeypatch):
    """In-training validation runs the sharpener at ``model.processing_resolution`` (what the exported manifest
    says), not at the model's default. Fails if validation leaves the resolution out."""
    from depthkit.sharpen import train as train_sharpen
    from depthkit.sharpen.model import SharpDepth

    seen = []
    real = SharpDepth.sharpen

    def spy(self, *args, processing_resolution=None, **kwargs):
        seen.append(processing_resolution)
        return real(self, *args, processing_resolution=processing_resolution, **kwargs)

    monkeypatch.setattr(SharpDepth, "sharpen", spy)
    recipe = _three_steps(tmp_path, processing_resolution=32)
    recipe.train.max_steps = 1
    recipe.val = type(recipe.val)(source=type(recipe.data.sources[0])(
        name="synthetic", split="val", options={"length": 2, "height": 16, "width": 24, "kind": "indoor"}), n_images=2)
    final = train_sharpen.train(recipe)
    assert seen == [32, 32]
    assert json.loads((final / "depthkit.json").read_text())["stages"]["sharpen"]["processing_resolution"] == 32
