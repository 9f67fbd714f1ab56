"""The completer's dense refiner: its input, its bounded output, its training (learns, resumes exactly), its place in
a completer checkpoint and in the stage (on by default when present, ``refine=False`` switches it off)."""

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from depthkit.complete.refiner import DenseRefiner, refiner_features, refiner_log_l1
from depthkit.complete.refiner_check import check_refiner

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _scene(h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    completed = rng.uniform(1.0, 8.0, (h, w)).astype(np.float32)
    sparse = np.zeros((h, w), np.float32)
    sparse[3, 4], sparse[10, 20] = 2.0, 5.5
    return image, sparse, completed


def test_features_by_hand_and_scale_free():
    image, sparse, completed = _scene()
    x = refiner_features(image, sparse, completed)
    ref = np.median(np.log(completed.astype(np.float64)))
    assert x.shape == (6, 24, 32) and x.dtype == np.float32
    assert np.allclose(x[:3], image.transpose(2, 0, 1) / 255.0)
    assert np.allclose(x[3], np.log(completed) - ref, atol=1e-5)
    assert x[4].sum() == 2 and x[4, 3, 4] == 1 and x[4, 10, 20] == 1
    assert x[5, 10, 20] == pytest.approx(np.log(5.5) - ref, abs=1e-5) and x[5, 0, 0] == 0
    scaled = refiner_features(image, sparse * 7.0, completed * 7.0)  # a 7x larger scene looks the same
    assert np.allclose(scaled, x, atol=1e-5)
    with pytest.raises(ValueError, match="HxWx3"):
        refiner_features(image[..., 0], sparse, completed)


def test_untrained_refiner_returns_its_input_and_a_moved_one_keeps_measurements_within_its_bound():
    image, sparse, completed = _scene()
    net = DenseRefiner(width=8, max_log_correction=0.5)
    measured = sparse > 0
    assert np.array_equal(net.refine(image, sparse, completed), np.where(measured, sparse, completed))
    with torch.no_grad():
        net.head[-1].bias.fill_(0.3)  # every pixel corrected by exp(0.5 * tanh(0.3))
    out = net.refine(image, sparse, completed)
    assert np.array_equal(out[measured], sparse[measured])
    assert np.allclose(out[~measured], completed[~measured] * np.exp(0.5 * np.tanh(0.3)), rtol=1e-5)
    with torch.no_grad():
        net.head[-1].bias.fill_(1e3)  # saturated: exactly the bound
    assert np.allclose(net.refine(image, sparse, completed)[~measured], completed[~measured] * np.exp(0.5), rtol=1e-5)
    with pytest.raises(ValueError, match="width"):
        DenseRefiner(width=0)
    with pytest.raises(ValueError, match="B x 6"):
        net(torch.zeros(1, 5, 8, 8))


def test_log_l1_by_hand():
    r = torch.tensor([0.0, 0.1, -0.2, 5.0]).view(1, 1, 2, 2)
    completed = torch.tensor([2.0, 2.0, 4.0, 1.0]).view(1, 1, 2, 2)
    gt = torch.tensor([2.0, 3.0, 3.0, 0.0]).view(1, 1, 2, 2)
    valid = gt > 0
    expected = (0.0 + abs(0.1 - np.log(1.5)) + abs(-0.2 - np.log(0.75))) / 3
    assert float(refiner_log_l1(r, completed, gt, valid)) == pytest.approx(expected, rel=1e-6)


def _recipe(out, one_cycle=False, **train):
    from depthkit.config import load_recipe
    from depthkit.io import DepthkitWarning

    tc = {"max_steps": 200, "batch_size": 4, "lr": 5e-3, "warmup_steps": 10, "log_every": 100, "eval_every": 0,
          "save_every": 100, "seed": 0, **train}
    said = pytest.warns(DepthkitWarning, match="train.lr=0") if tc["lr"] == 0 else contextlib.nullcontext()
    with said:  # lr 0 on purpose: the export is the starting model
        return load_recipe({"kind": "refine", "model": {"width": 8},
                            "data": {"datasets": {"synthetic": {"options": {"sparse_pattern": "random",
                                                                            "sparse_kwargs": {"n": 60}}}},
                                     "subset_size": 6, "synthetic": {"height": 40, "width": 48}, "crop": [32, 32]},
                            "eval": {"num_scenes": 2, "height": 40, "width": 48, "sparse_points": 60},
                            "train": tc, "output": {"output_dir": str(out)}, "one_cycle": one_cycle})


def test_training_learns_the_correction_of_guided_on_its_scenes(tmp_path):
    """200 steps lower the MAE of guided on the training pool; with the learning rate at 0 nothing moves (the
    comparison that shows the gain comes from training)."""
    from depthkit.complete.train_refiner import build_pool, evaluate_refiner, train

    recipe = _recipe(tmp_path / "run")
    final = train(recipe)
    info = json.loads((final / "refiner.json").read_text())
    assert info["width"] == 8 and info["steps"] == 200 and "val_change" in info
    net = DenseRefiner.load(final, info)
    pool = build_pool(recipe)
    learned = evaluate_refiner(net, pool)
    assert learned["val_change"] < -0.02, learned  # measured: about -10 %
    frozen = DenseRefiner.load(train(_recipe(tmp_path / "lr0", lr=0.0)), info)
    assert evaluate_refiner(frozen, pool)["val_change"] == pytest.approx(0.0, abs=1e-7)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "loss" in row] == [1, 100, 200]


def test_init_from_starts_from_the_given_weights(tmp_path):
    """model.init_from fine-tunes: with the learning rate at 0 the run's refiner is the one it started from, weight
    for weight, whether given as a run's final/ folder or a checkpoint's complete/ folder; a folder without a
    refiner, or one of another width, is refused before any step runs."""
    from depthkit.complete.train_refiner import load_refiner_folder, train, write_refiner_folder

    start = DenseRefiner(8)
    torch.manual_seed(3)
    for q in start.parameters():
        q.data.normal_(0.0, 0.1)
    write_refiner_folder(tmp_path / "start", start.eval(), steps=0)
    complete = tmp_path / "ckpt" / "complete"
    complete.mkdir(parents=True)
    (complete / "complete.json").write_text(json.dumps({"refiner": start.save(complete)}))
    for name, folder in (("run", tmp_path / "start"), ("ckpt", complete)):
        recipe = _recipe(tmp_path / f"from_{name}", max_steps=2, lr=0.0, save_every=0)
        recipe.model.init_from = str(folder)
        tuned = DenseRefiner.load(train(recipe), {"width": 8})
        for (key, a), b in zip(start.state_dict().items(), tuned.state_dict().values()):
            assert torch.equal(a, b), (name, key)
    plain = DenseRefiner.load(train(_recipe(tmp_path / "plain", max_steps=2, lr=0.0, save_every=0)), {"width": 8})
    assert not any(torch.equal(a, b) for a, b in zip(start.state_dict().values(), plain.state_dict().values()))
    with pytest.raises(ValueError, match="holds no refiner"):
        load_refiner_folder(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_refiner_folder(tmp_path / "nowhere")
    recipe = _recipe(tmp_path / "wide", max_steps=2)
    recipe.model.init_from, recipe.model.width = str(tmp_path / "start"), 16
    with pytest.raises(ValueError, match="width 8 .* asks for 16"):
        train(recipe)
    assert not (tmp_path / "wide" / "final").exists()


@pytest.mark.parametrize("one_cycle", [False, True])
def test_resume_continues_exactly(tmp_path, one_cycle):
    from depthkit.complete.train_refiner import train

    def run(name, resume=False):
        return DenseRefiner.load(train(_recipe(tmp_path / name, one_cycle, max_steps=6, save_every=3), resume=resume),
                                 {"width": 8})

    whole = run("a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "final")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_0000006")  # as if killed after the step-3 checkpoint
    with pytest.raises(ValueError, match="--resume"):
        run("b")
    resumed = run("b", resume=True)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("override", [{"mixed_precision": "bf16"}, {"gradient_checkpointing": True}])
def test_train_settings_the_refiner_trainer_does_not_use_are_refused(tmp_path, override):
    """The refiner trains in float32 with plain PyTorch: bf16 or gradient checkpointing were accepted and ignored."""
    from depthkit.config import RecipeError

    with pytest.raises(RecipeError, match=r"the refiner trainer runs in float32 without either"):
        _recipe(tmp_path / "a", **override)


def test_num_workers_the_refiner_trainer_does_not_use_are_refused(tmp_path):
    """It crops batches from a pool in memory (no DataLoader): train.num_workers=4 was accepted and ignored."""
    from depthkit.config import RecipeError

    with pytest.raises(RecipeError, match=r"train.num_workers=4: the refiner trainer .* set train.num_workers=0"):
        _recipe(tmp_path / "a", num_workers=4)


def test_epochs_become_steps_rounded_up_as_in_every_trainer(tmp_path):
    """train.max_steps=0 derives the run's length from train.epochs with depthkit.training.total_steps (rounded up):
    one epoch of a 6-scene pool in batches of 4 is 2 steps (the refiner trainer rounded down to 1: part of the pool
    never seen)."""
    from depthkit.complete.train_refiner import train

    final = train(_recipe(tmp_path / "a", max_steps=0, epochs=1.0, save_every=0, log_every=1))
    assert json.loads((final / "refiner.json").read_text())["steps"] == 2


def test_resume_of_a_one_cycle_run_with_more_steps_is_refused_before_a_step(tmp_path):
    """train.max_steps may change on --resume (RESUME_MAY_CHANGE), but torch's OneCycleLR keeps the length it was
    saved with: the resumed run trained one step and died with 'Tried to step 4 times. The specified number of total
    steps is 3'. Refused before any step, saying which max_steps resumes it."""
    from depthkit.complete.train_refiner import train

    train(_recipe(tmp_path / "a", True, max_steps=3, save_every=3, log_every=1))
    rows = (tmp_path / "a" / "log.jsonl").read_text()
    with pytest.raises(ValueError, match=r"step 3 in .* has a one-cycle schedule laid out for 3 steps, which cannot "
                                         r"be stretched to train.max_steps=5; resume with train.max_steps=3"):
        train(_recipe(tmp_path / "a", True, max_steps=5, save_every=3, log_every=1), resume=True)
    assert (tmp_path / "a" / "log.jsonl").read_text() == rows  # no step ran
    train(_recipe(tmp_path / "a", True, max_steps=3, save_every=3, log_every=1), resume=True)


def test_resume_of_a_checkpoint_for_another_width_is_one_clear_error(tmp_path):
    """A run folder without its recipe record resumed with a wider refiner: one error naming the checkpoint and the
    size mismatch (run_recipe.load_resumed_weights), not torch's traceback."""
    from depthkit.complete.train_refiner import train

    train(_recipe(tmp_path / "a", max_steps=1, save_every=1))
    (tmp_path / "a" / "recipe.yaml").unlink()
    wider = _recipe(tmp_path / "a", max_steps=2, save_every=1)
    wider.model.width = 16
    with pytest.raises(ValueError, match=r"^the checkpoint at step 1 in .* does not fit this recipe's model \(size "
                                         r"mismatch for "):
        train(wider, resume=True)


def test_checkpoint_round_trip_and_stage_switch(tmp_path):
    """A completer saved with a refiner loads it; the stage runs it after the fill (refined output differs from
    ``refine=False``, measured values kept); a missing or mismatched file is refused by name."""
    from depthkit.checkpoints import CheckpointError
    from depthkit.complete.checkpoint import load_complete, save_complete, write_tiny
    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.data.baselines import guided

    write_tiny(tmp_path / "plain")
    loaded = load_complete(tmp_path / "plain")
    assert loaded.refiner is None
    net = DenseRefiner(width=8)
    with torch.no_grad():
        net.head[-1].bias.fill_(0.2)
    settings = {"prompt_prior": "guided", "pixel_reference": "text", "readout": "residual_head"}
    save_complete(tmp_path / "refined", loaded.model, loaded.processor, settings, residual_head=loaded.residual_head,
                  refiner=net)
    again = load_complete(tmp_path / "refined")
    assert again.settings.refiner == {"file": "refiner.safetensors", "width": 8, "max_log_correction": 1.0}
    for a, b in zip(net.state_dict().values(), again.refiner.state_dict().values()):
        assert torch.equal(a, b)

    rng = np.random.default_rng(1)
    image = (rng.random((32, 40, 3)) * 255).astype(np.uint8)
    sparse = np.where(rng.random((32, 40)) < 0.08, rng.uniform(1, 6, (32, 40)), 0).astype(np.float32)
    on = CompleteVLMStage.from_checkpoint(tmp_path / "refined", query_budget=20, fill="residual")
    out = on.run(image, sparse)
    assert on.last_stats["refined"]
    off = CompleteVLMStage.from_checkpoint(tmp_path / "refined", query_budget=20, fill="residual", refine=False)
    base = off.run(image, sparse)
    assert not off.last_stats["refined"]
    np.testing.assert_allclose(base.depth, guided(image, sparse), rtol=1e-5)  # untrained head: guided
    strength = on.last_stats["refine_strength"]  # the frame's points judged it (tests/test_refiner_check.py)
    assert strength == check_refiner(net, image, sparse).strength < 1.0  # the check's own answer, not trust
    np.testing.assert_allclose(out.depth, net.refine(image, sparse, base.depth, strength=strength), rtol=1e-6)
    trusted = CompleteVLMStage.from_checkpoint(tmp_path / "refined", query_budget=20, fill="residual",
                                               refine_check=False)
    full = trusted.run(image, sparse)
    assert trusted.last_stats["refine_strength"] == 1.0 and "refine_check" not in trusted.last_stats
    np.testing.assert_allclose(full.depth, net.refine(image, sparse, base.depth), rtol=1e-6)
    assert not np.allclose(full.depth, base.depth)
    assert np.array_equal(out.depth[sparse > 0], sparse[sparse > 0])
    assert np.array_equal(full.depth[sparse > 0], sparse[sparse > 0])
    with pytest.raises(ValueError, match="no dense refiner"):
        CompleteVLMStage.from_checkpoint(tmp_path / "plain", refine=True)
    for wrong in ("yes", 0, 1, 0.0):  # 0 == False and 1 == True: not read as the switch (0 ran the refiner)
        with pytest.raises(ValueError, match=rf"^refine={wrong!r}; allowed: None"):
            CompleteVLMStage.from_checkpoint(tmp_path / "refined", refine=wrong)
    with pytest.raises(ValueError, match="refine_check="):
        CompleteVLMStage.from_checkpoint(tmp_path / "refined", refine_check="sometimes")

    cfg = tmp_path / "refined" / "complete.json"
    data = json.loads(cfg.read_text())
    data["refiner"]["width"] = 16
    cfg.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="refiner"):
        load_complete(tmp_path / "refined")
    data["refiner"].update(width=8, file="../plain/model.safetensors")  # a path out of the folder
    cfg.write_text(json.dumps(data))
    with pytest.raises(CheckpointError):
        load_complete(tmp_path / "refined")
    data["refiner"]["file"] = "refiner.safetensors"
    cfg.write_text(json.dumps(data))
    (tmp_path / "refined" / "refiner.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing refiner.safetensors"):
        load_complete(tmp_path / "refined")


def test_assemble_default_adds_a_trained_refiner_to_a_completer(tmp_path):
    """checkpoints/assemble_default.py --refiner: the run's weights and config land in complete/ and load."""
    import sys

    from depthkit.complete.checkpoint import load_complete, write_tiny
    from depthkit.complete.train_refiner import REFINER_JSON

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "checkpoints"))
    from assemble_default import add_refiner

    run_final = tmp_path / "final"
    run_final.mkdir()
    net = DenseRefiner(width=4, max_log_correction=0.7)
    with torch.no_grad():
        net.head[-1].bias.fill_(0.1)
    (run_final / REFINER_JSON).write_text(json.dumps({**net.save(run_final), "steps": 1}))
    write_tiny(tmp_path / "complete")
    add_refiner(run_final, tmp_path / "complete")
    loaded = load_complete(tmp_path / "complete")
    assert loaded.settings.refiner == {"file": "refiner.safetensors", "width": 4, "max_log_correction": 0.7}
    assert float(loaded.refiner.head[-1].bias.detach()) == pytest.approx(0.1)


@pytest.mark.parametrize("one_cycle", [False, True])
def test_the_logged_rate_is_the_one_each_step_ran_at(tmp_path, adamw_rates, one_cycle):
    """The ``lr`` logged for step N is the rate AdamW stepped with in step N (seen here in the optimiser itself), for
    the warmup-cosine and the one-cycle schedules; it was the next step's (0 on the last row of a cosine run)."""
    from depthkit.complete.train_refiner import train

    seen = adamw_rates
    train(_recipe(tmp_path / "a", one_cycle, max_steps=4, warmup_steps=2, save_every=0, log_every=1))
    logged = [r["lr"] for r in map(json.loads, (tmp_path / "a" / "log.jsonl").read_text().splitlines()) if "lr" in r]
    assert len(seen) == 4 and logged == seen and len(set(seen)) > 1
