"""Training stage 1 (depthkit/complete/train.py, batching.py): queries, sequences, prefix sharing, learning, resume,
the CLI and a 2-process accelerate run — all on tiny models on the CPU."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from depthkit.complete import prompts as P
from depthkit.complete import train as T
from depthkit.complete.batching import encode_group, number_places, pack_groups, sample_training_queries
from depthkit.complete.engine import CompletionEngine
from depthkit.complete.model import stock_model
from depthkit.complete.train_data import TrainSteps, build_datasets
from depthkit.complete.validation import validate, validation_scenes
from depthkit.config import load_recipe
from depthkit.training import MixedDataset

REPO = Path(__file__).resolve().parent.parent
TINY_RECIPE = REPO / "recipes" / "tiny" / "complete.yaml"
# Shrinks the tiny recipe to test size (the model keeps every code path; only widths and image sizes change).
SMALL = [
    "model.tiny.hidden_size=64", "model.tiny.num_hidden_layers=2", "model.tiny.intermediate_size=128",
    "model.tiny.vision_hidden_size=32", "model.tiny.vision_intermediate_size=64", "model.max_pixels=3136",
    "data.synthetic.height=56", "data.synthetic.width=56", "data.synthetic.length=16", "data.sparse_points=40",
    "data.queries_per_image=4", "eval.num_scenes=1", "eval.queries_per_scene=4", "eval.height=56", "eval.width=56",
    "eval.sparse_points=40", "train.warmup_steps=1", "train.log_every=1",
]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scene(seed=3, h=64, w=80, n=60):
    from depthkit.data.sparse import sample_random_points
    from depthkit.data.synthetic import render_scene

    scene = render_scene(seed, h, w, "indoor")
    sparse = np.asarray(sample_random_points(scene.depth, n, 0), np.float32)
    return scene.image, sparse, scene.depth.astype(np.float32)


# ---- queries and sequences ----------------------------------------------------------------------------------------


def test_sparse_supervision_holds_points_out():
    image, sparse, depth = _scene()
    n_measured = int((sparse > 0).sum())
    sp_in, queries = sample_training_queries(image, sparse, None, 16, np.random.default_rng(0), "sparse", p_keep=0.25,
                                             prompt_prior="nearest")
    assert len(queries) == 16
    held = [q for q in queries if q.mask_value == 0]
    kept = [q for q in queries if q.mask_value == 1]
    assert held and kept
    for q in held:  # label = the measurement, removed from the input, prior from the remaining points
        assert sp_in[q.row, q.col] == 0 and q.label == sparse[q.row, q.col] and q.sparse_value is None
        assert q.prior > 0 and q.head_prior == q.prior
    for q in kept:  # preserve: still in the input, the prompt carries its value
        assert sp_in[q.row, q.col] == q.label == q.sparse_value == q.head_prior == sparse[q.row, q.col]
        assert q.prior is None
    assert int((sp_in > 0).sum()) == n_measured - len(held)
    # The nearest prior of a held-out point is the value of the nearest remaining point.
    q = held[0]
    rr, cc = np.nonzero(sp_in)
    nearest = np.argmin((rr - q.row) ** 2 + (cc - q.col) ** 2)
    assert q.prior == pytest.approx(float(sp_in[rr[nearest], cc[nearest]]))
    # Never fewer than min_sparse_points measurements left in the input.
    few = np.zeros_like(sparse)
    few[[1, 5, 9], [2, 6, 10]] = [1.0, 2.0, 3.0]
    sp_in, queries = sample_training_queries(image, few, None, 8, np.random.default_rng(0), "sparse", 0.0,
                                             min_sparse_points=2)
    assert len(queries) == 1 and int((sp_in > 0).sum()) == 2


def test_sparse_supervision_edge_weight_favours_points_beside_a_depth_jump():
    """With data.edge_weight under sparse supervision, the held-out points are drawn by their depth step to the
    neighbouring points: on a grid of points over a step edge, both columns beside it (2 of 16) take a large share
    of the picks. Weighed by the gradient of the nearest-filled sparse map, as before, one column got none of that
    (a point sits inside its own cell, where that gradient is 0 unless the cell's border is next to it)."""
    depth = np.full((48, 64), 2.0, np.float32)
    depth[:, 32:] = 6.0
    sparse = np.zeros_like(depth)
    sparse[::4, ::4] = depth[::4, ::4]
    image = np.zeros((48, 64, 3), np.uint8)
    cols = []
    for seed in range(10):
        _, queries = sample_training_queries(image, sparse, None, 8, np.random.default_rng(seed), "sparse", 0.0,
                                             edge_weight=9.0)
        cols += [q.col for q in queries]
    # weights 10 for the 24 points of the two columns, 1 for the other 168: about 29 % of the picks each (1/16
    # without weighting); the filled map's gradient reached only the points of column 32 (its jump is next to them)
    assert np.mean(np.asarray(cols) == 28) > 0.15 and np.mean(np.asarray(cols) == 32) > 0.15


def test_dense_supervision_labels_gt_pixels():
    image, sparse, depth = _scene()
    sp_in, queries = sample_training_queries(image, sparse, depth, 12, np.random.default_rng(1), "dense", p_keep=0.0)
    assert np.array_equal(sp_in, sparse) and len(queries) == 12
    for q in queries:
        assert q.mask_value == 0 and sparse[q.row, q.col] == 0 and q.label == depth[q.row, q.col] > 0
    with pytest.raises(ValueError, match="needs the sample's GT"):
        sample_training_queries(image, sparse, None, 4, np.random.default_rng(1), "dense")


def test_number_places():
    assert number_places("12.345") == [10.0, 1.0, 0.0, 0.1, 0.01, 0.001]
    assert number_places("7") == [1.0]


def _tiny(prior="none", readout="text", extra=()):
    recipe = load_recipe(TINY_RECIPE, SMALL + [f"prompts.prompt_prior={prior}", f"prompts.readout={readout}",
                                               *extra])
    sdim, processor, head = T.build_completer(recipe)
    return recipe, sdim, processor, head


def test_encoded_suffix_labels_the_answer():
    recipe, sdim, processor, _ = _tiny()
    image, sparse, _ = _scene()
    sp_in, queries = sample_training_queries(image, sparse, None, 3, np.random.default_rng(2), "sparse", 0.0)
    group = encode_group(processor, image, sp_in, queries, P.PromptConfig(), recipe.sdim)
    tok = processor.tokenizer
    s = group.suffixes[0]
    assert tok.decode(s.ids[s.answer_start:]) == P.answer_text(queries[0].label) + P.END_OF_TURN
    assert tok.decode(s.ids[s.answer_start - 1:s.answer_start]) == "\n"  # the query's last token: after "assistant"
    digits = [tok.decode([int(i)]) for i, p in zip(s.ids, s.places) if p != 0]
    assert "".join(digits) == P.format_depth(queries[0].label).replace(".", "")
    batch = pack_groups([group], stock_model(sdim).config, pad_id=0, layout="packed")
    # Targets are shifted by one: the logits at target_pos predict target_ids, the answer tokens in order.
    row = batch["input_ids"][0]
    first = batch["target_query"] == 0
    assert torch.equal(row[batch["target_pos"][first, 1] + 1], s.ids[s.answer_start:])
    assert batch["target_places"][first].sum() == pytest.approx(sum(number_places(P.format_depth(queries[0].label))))


def test_prefix_sharing_layouts_agree():
    """packed, replicate and kv_cache compute the same hidden states, losses and gradients."""
    recipe, sdim, processor, head = _tiny("nearest", "residual_head", ["loss.numeric_l1=0.5"])
    cfg = stock_model(sdim).config
    groups = []
    for seed in (3, 4):
        image, sparse, _ = _scene(seed)
        sp_in, queries = sample_training_queries(image, sparse, None, 5, np.random.default_rng(seed), "sparse", 0.2,
                                                 prompt_prior="nearest")
        groups.append(encode_group(processor, image, sp_in, queries, P.PromptConfig("nearest"), recipe.sdim))
    from depthkit.complete.readout import digit_token_ids

    objective = T.CompleterObjective(sdim, head, digit_token_ids(processor.tokenizer), recipe.loss).eval()
    results = {}
    for layout in ("packed", "replicate", "kv_cache"):
        batch = pack_groups(groups, cfg, pad_id=0, layout=layout)
        loss, stats = objective(batch)
        objective.zero_grad()
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in objective.parameters() if p.grad is not None])
        results[layout] = (loss.detach(), stats, grads)
        assert batch["query_pos"].shape[0] == 10
    ref_loss, ref_stats, ref_grad = results["packed"]
    for layout in ("replicate", "kv_cache"):
        loss, stats, grad = results[layout]
        assert torch.allclose(loss, ref_loss, atol=1e-5), layout
        assert stats["numeric_l1"] == pytest.approx(float(ref_stats["numeric_l1"]), abs=1e-4)
        assert torch.allclose(grad, ref_grad, atol=2e-5, rtol=1e-3), layout


def _one_step_loss(losses):
    """``(objective, loss, stats)`` of a tiny residual-head completer (nearest prior, ``losses`` overrides) on one
    scene's 5 sparse-supervision queries."""
    from depthkit.complete.readout import digit_token_ids

    recipe, sdim, processor, head = _tiny("nearest", "residual_head", losses)
    image, sparse, _ = _scene(3)
    sp_in, queries = sample_training_queries(image, sparse, None, 5, np.random.default_rng(3), "sparse", 0.2,
                                             prompt_prior="nearest")
    group = encode_group(processor, image, sp_in, queries, P.PromptConfig("nearest"), recipe.sdim)
    objective = T.CompleterObjective(sdim, head, digit_token_ids(processor.tokenizer), recipe.loss).eval()
    loss, stats = objective(pack_groups([group], stock_model(sdim).config, pad_id=0, layout="packed"))
    return objective, loss, stats


def test_the_numeric_target_is_the_number_the_answer_spells(monkeypatch):
    """The numeric L1 aims at format_depth's 3 decimals, the digits the cross-entropy teaches (rounding the float32
    label itself gave 49.136 for 49.13650131225586, whose answer says 49.137), and the objective uses it."""
    labels = torch.tensor([49.13650131225586, 0.0004, 1.2344, 500.0, 2.0005], dtype=torch.float32)
    spelled = [float(P.format_depth(v)) for v in labels.double().tolist()]
    assert T.numeric_targets(labels).tolist() == torch.tensor(spelled, dtype=torch.float32).tolist()
    assert T.numeric_targets(labels)[0] == torch.tensor(49.137) and spelled[1:4] == [0.001, 1.234, 300.0]
    seen = []
    real = T.numeric_targets
    monkeypatch.setattr(T, "numeric_targets", lambda x: seen.append(x.clone()) or real(x))
    _one_step_loss(["loss.numeric_l1=0.5"])
    assert len(seen) == 1 and seen[0].numel() == 5


def test_the_loss_is_the_weighted_sum_of_its_terms():
    """The objective adds every term with its recipe weight (distinct weights, so a dropped term, a swapped weight or
    a flipped sign changes the sum); each term is also reported on its own."""
    weights = {"cross_entropy": 0.7, "numeric_l1": 0.3, "residual_l1": 1.3, "residual_nll": 0.2}
    _, loss, stats = _one_step_loss([f"loss.{k}={v}" for k, v in weights.items()])
    terms = {"cross_entropy": "ce", "numeric_l1": "numeric_l1", "residual_l1": "residual_l1",
             "residual_nll": "residual_nll"}
    assert all(float(stats[name]) != 0.0 for name in terms.values())
    expected = sum(w * float(stats[terms[k]]) for k, w in weights.items())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_training_samples_read_their_own_epochs_sparse_draw(monkeypatch):
    """A micro-step whose batch runs over an epoch's end (7 scenes, batches of 2: step 3) reads its second sample with
    the next epoch's sparse draw, as its position says; it got the previous epoch's (the same draw it may already
    have had) when the whole batch took the epoch it started in."""
    from depthkit.complete.train_data import TrainSteps, build_datasets

    recipe, sdim, processor, _ = _tiny(extra=["data.synthetic.length=7", "train.batch_size=2"])
    mixed = build_datasets(recipe)
    steps = TrainSteps(recipe, mixed, processor, stock_model(sdim).config)
    seen, real = [], type(mixed).get
    monkeypatch.setattr(type(mixed), "get", lambda self, i, epoch=None: seen.append((i, epoch)) or real(self, i, epoch))
    steps[3]
    assert [e for _, e in seen] == [e for _, e in steps.sampler.positions(3)] == [0, 1]
    assert [i for i, _ in seen] == steps.sampler.indices(3)


@pytest.mark.parametrize("losses", [[], ["loss.residual_nll=0"], ["loss.residual_l1=0"],
                                    ["loss.residual_l1=0", "loss.residual_nll=0"],
                                    ["loss.cross_entropy=0", "loss.numeric_l1=0"]])
def test_every_trainable_parameter_gets_a_gradient(losses):
    """What DDP needs (it waits for every trainable parameter's gradient, and a 2-process run with
    loss.residual_nll=0 stopped at its second step): with any loss term switched off, every parameter build_completer
    leaves trainable receives a gradient from one step's loss, and the head's parts no term reaches are frozen."""
    objective, loss, _ = _one_step_loss(losses)
    head = objective.head
    loss.backward()
    trainable = [n for n, p in objective.named_parameters() if p.requires_grad]
    assert trainable and [n for n, p in objective.named_parameters() if p.requires_grad and p.grad is None] == []
    last = len(head.net) - 1  # the correction's layer
    expected = {(): [], ("loss.residual_nll=0",): ["log_scale.bias", "log_scale.weight"],
                ("loss.residual_l1=0",): [f"net.{last}.bias", f"net.{last}.weight"],
                ("loss.residual_l1=0", "loss.residual_nll=0"): sorted(n for n, _ in head.named_parameters()),
                ("loss.cross_entropy=0", "loss.numeric_l1=0"): []}[tuple(losses)]
    assert sorted(n for n, p in head.named_parameters() if not p.requires_grad) == expected


@pytest.mark.parametrize("readout,decode", [("text", "constrained"), ("text", "free"), ("residual_head", "free")])
def test_validation_answers_through_the_engine(readout, decode):
    """validate() reports what the inference engine answers at the held-out points (no decoder of its own)."""
    prior = "guided" if readout == "residual_head" else "none"
    recipe, sdim, processor, head = _tiny(prior, readout, [f"eval.decode={decode}", "eval.max_new_tokens=12"])
    scenes = validation_scenes(recipe)
    out = validate(sdim, head, processor, scenes, recipe)
    engine = CompletionEngine(sdim.eval(), processor, P.PromptConfig(prior), readout=readout, residual_head=head,
                              decode=decode, max_new_tokens=12)
    errors, bad = [], 0
    for s in scenes:
        answers = engine.answer(engine.encode(s.image, s.sparse), s.rows, s.cols, s.priors)
        errors += list(np.abs(answers.values[answers.ok] - s.labels[answers.ok]))
        bad += int((~answers.ok).sum())
    assert out["val_queries"] == sum(s.labels.size for s in scenes) > 0
    assert out["val_unparseable"] == bad / out["val_queries"]
    if errors:
        assert out["val_mae"] == pytest.approx(float(np.mean(errors)), rel=1e-5)
    if decode == "constrained":
        assert bad == 0  # the grammar always yields a number
    if prior != "none":
        assert out["val_prior_mae"] > 0


# ---- learning -----------------------------------------------------------------------------------------------------


def test_tiny_model_learns_held_out_points():
    """About a hundred steps on one scene teach a tiny model to answer held-out points better than ANY constant.

    The scene is a step: 1.5 m in the left half, 4.5 m in the right half (the image inverted there too), so a model
    that answers one number for every pixel — the failure this test exists to catch — cannot come near the labels:
    the best constant (the held-out labels' median, an oracle) has a mean error of about 1 m. At step 0 the random
    model's answers are unparseable (counted as answering 0 m); after 120 steps (text coordinates, the paper's
    prompt and text readout) they parse and follow the step. Measured: 3.56 m -> 0.14 m against 0.94 m for the best
    constant, answers correlated 0.90 with the labels, 0 % unparseable, ~30 s.
    """
    image, sparse, depth = _scene(3, 96, 128, n=100)
    right = np.arange(depth.shape[1]) >= depth.shape[1] // 2
    depth = np.where(right[None, :], 4.5, 1.5).astype(np.float32) * np.ones_like(depth)
    image = image.copy()
    image[:, right] = 255 - image[:, right]
    sparse = np.where(sparse > 0, depth, 0).astype(np.float32)
    item = {"image": image, "sparse": sparse, "depth": depth}
    recipe = load_recipe(TINY_RECIPE, SMALL + [
        "model.max_pixels=12544", "prompts.prompt_prior=none", "prompts.readout=text", "loss.cross_entropy=1.0",
        "data.queries_per_image=32", "data.p_keep=0.0", "data.edge_weight=0.0", "train.batch_size=1"])
    sdim, processor, head = T.build_completer(recipe)
    held_out = []
    for i in range(2):  # held-out points never used as labels in this draw; fixed seeds
        sp_in, queries = sample_training_queries(image, sparse, None, 32, np.random.default_rng([555, i]), "sparse",
                                                 0.0)
        held_out.append((sp_in, queries))
    labels = np.array([q.label for _, queries in held_out for q in queries])
    best_constant = float(np.abs(labels - np.median(labels)).mean())
    assert best_constant > 0.5 and np.ptp(labels) == 3.0  # both halves are asked

    def error():
        sdim.eval()
        engine = CompletionEngine(sdim, processor, decode="free", max_new_tokens=16)  # the model's own answer
        errors, unparseable = [], 0
        for sp_in, queries in held_out:
            rows, cols = np.array([q.row for q in queries]), np.array([q.col for q in queries])
            answers = engine.answer(engine.encode(image, sp_in), rows, cols)
            for value, ok, q in zip(answers.values, answers.ok, queries):
                unparseable += not ok
                errors.append(q.label if not ok else abs(float(value) - q.label))
        sdim.train()
        return float(np.mean(errors)), unparseable / len(errors)

    from depthkit.complete.readout import digit_token_ids

    objective = T.CompleterObjective(sdim, head, digit_token_ids(processor.tokenizer), recipe.loss).train()
    steps = TrainSteps(recipe, MixedDataset([[item]], [1.0]), processor, stock_model(sdim).config)
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=3e-3)
    before, before_unparseable = error()
    for k in range(120):
        loss, _ = objective(steps[k])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after, after_unparseable = error()
    assert before > 2.0 and before_unparseable == 1.0
    assert after < 0.5 * best_constant, (before, after, best_constant)  # a constant answer cannot pass
    assert after_unparseable <= 0.1


# ---- the training loop: CLI, validation, checkpoints, resume -------------------------------------------------------


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_cli_train_validates_checkpoints_and_resumes_identically(tmp_path):
    from safetensors.torch import load_file

    from depthkit.cli import main
    from depthkit.complete.checkpoint import load_complete

    args = ["train", str(TINY_RECIPE), *SMALL, "train.max_steps=4", "train.save_every=2", "train.eval_every=2"]
    assert main([*args, f"output.output_dir={tmp_path / 'a'}"]) == 0
    a = tmp_path / "a"
    assert sorted(p.name for p in (a / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    rows = _rows(a)
    vals = [r for r in rows if "val_mae" in r]
    assert [r["step"] for r in vals] == [2, 4]
    assert all(np.isfinite(r["val_mae"]) and r["val_prior_mae"] > 0 and r["val_queries"] > 0 for r in vals)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert all(r["steps_per_s"] > 0 and r["queries_per_s"] > 0 for r in train_rows)
    loaded = load_complete(a / "final" / "complete")
    assert loaded.settings.readout == "residual_head" and loaded.settings.prompt_prior == "guided"
    assert loaded.settings.prompt_config().mask_text == "mask_and_value"
    assert (a / "final" / "depthkit.json").is_file() and (a / "final" / "recipe.yaml").is_file()
    # A fresh run into a folder with checkpoints is refused (it would mix two runs).
    assert main([*args, f"output.output_dir={a}"]) == 2
    # "Interrupted" after step 2: a copy of the run folder as it was then; --resume continues to step 4.
    b = tmp_path / "b"
    (b / "checkpoints").mkdir(parents=True)
    shutil.copytree(a / "checkpoints" / "step_0000002", b / "checkpoints" / "step_0000002")
    assert main([*args, f"output.output_dir={b}", "--resume"]) == 0
    for name in ("model.safetensors", "depth_modules.safetensors", "residual_head.safetensors"):
        wa, wb = load_file(a / "final" / "complete" / name), load_file(b / "final" / "complete" / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    resumed = [r for r in _rows(b) if "loss" in r]
    assert [r["step"] for r in resumed] == [3, 4]
    for ra, rb in zip(train_rows[2:], resumed):
        assert ra["loss"] == rb["loss"] and ra["lr"] == rb["lr"]
    sa = torch.load(a / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
    sb = torch.load(b / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
    assert sa["scheduler"] == sb["scheduler"]
    for k, v in sa["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], sb["optimizer"]["state"][k]["exp_avg"])
    # A checkpoint written by another distributed type (its optimizer shards would not line up) is refused.
    meta_path = b / "checkpoints" / "step_0000004" / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["distributed_type"] == "NO"
    meta_path.write_text(json.dumps({**meta, "distributed_type": "FSDP"}))
    assert main([*args, f"output.output_dir={b}", "--resume"]) == 2
    # A weight the model does not have (a renamed module, another wrapper's names) is refused, not dropped.
    meta_path.write_text(json.dumps(meta))
    state_path = b / "checkpoints" / "step_0000004" / "state.pt"
    sb["model"]["sdim.not_a_module.weight"] = torch.zeros(1)
    torch.save(sb, state_path)
    assert main([*args, f"output.output_dir={b}", "--resume"]) == 2


def test_the_logged_rate_is_the_one_each_step_ran_at(tmp_path, adamw_rates):
    """The ``lr`` logged for step N is the rate AdamW stepped with in step N (seen in the optimiser itself; warmup 2,
    cosine over 3 steps: 0.5, 1, 1 times the base rate), not the next step's (1, 1, 0 before)."""
    from depthkit.cli import main

    seen = adamw_rates
    args = ["train", str(TINY_RECIPE), *SMALL, "train.max_steps=3", "train.warmup_steps=2", "train.save_every=0",
            "train.eval_every=0", "train.schedule=cosine", "train.lr=1e-3", f"output.output_dir={tmp_path / 'a'}"]
    assert main(args) == 0
    logged = [r["lr"] for r in _rows(tmp_path / "a") if "loss" in r]
    assert logged == seen == pytest.approx([5e-4, 1e-3, 1e-3])


def test_cli_resume_of_a_checkpoint_for_another_model_is_one_clear_error(tmp_path, capsys):
    """A run folder without its recipe record (its checkpoints copied alone) resumed with another model width: one
    error naming the checkpoint and the size mismatch (run_recipe.load_resumed_weights), not torch's traceback."""
    from depthkit.cli import main

    args = ["train", str(TINY_RECIPE), *SMALL, "train.save_every=1", "train.eval_every=0",
            f"output.output_dir={tmp_path / 'a'}"]
    assert main([*args, "train.max_steps=1"]) == 0
    (tmp_path / "a" / "recipe.yaml").unlink()
    capsys.readouterr()
    assert main([*args, "train.max_steps=2", "model.tiny.intermediate_size=96", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint at step 1 in" in err and "does not fit this recipe's model (size mismatch for" in err, err
    assert "Traceback" not in err


def test_cli_resume_refuses_a_checkpoint_beyond_the_recipes_steps(tmp_path, capsys):
    """A checkpoint at step 2 resumed with train.max_steps=1 is refused (as the stage-2 trainers do), not exported
    as a 1-step run whose weights trained for 2 steps (the loop ran no step and final/recipe.yaml said 1)."""
    from depthkit.cli import main

    run = tmp_path / "a"
    args = ["train", str(TINY_RECIPE), *SMALL, "train.save_every=2", "train.eval_every=0", f"output.output_dir={run}"]
    assert main([*args, "train.max_steps=2"]) == 0
    before = (run / "final" / "recipe.yaml").read_text()
    capsys.readouterr()
    assert main([*args, "train.max_steps=1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "is at step 2, beyond this run's 1 steps" in err and "Traceback" not in err, err
    assert (run / "final" / "recipe.yaml").read_text() == before


def test_mask_text_switch_reaches_training_prompts_and_checkpoint_settings(tmp_path):
    """prompts.mask_text (the ablation's rows (c)-(e)) changes the training prompts; a checkpoint records it."""
    from depthkit.complete.settings import CompleteSettings

    texts = {}
    for mode in ("none", "mask", "mask_and_value"):
        recipe = load_recipe(TINY_RECIPE, [*SMALL, f"prompts.mask_text={mode}", "data.p_keep=0.5",
                                           "data.queries_per_image=8", f"output.output_dir={tmp_path}"])
        sdim, processor, _ = T.build_completer(recipe)
        steps = TrainSteps(recipe, build_datasets(recipe), processor, stock_model(sdim).config)
        texts[mode] = processor.tokenizer.decode(steps[0]["input_ids"].flatten())
    assert "mask value" not in texts["none"] and "interpolated estimate" in texts["none"]
    assert "The mask value is 1; preserve the given value." in texts["mask"]
    assert "The mask value is 1, and the distance" in texts["mask_and_value"]
    assert "The mask value is 0" in texts["mask"] and "The mask value is 0" in texts["mask_and_value"]
    settings = CompleteSettings.from_dict({"mask_text": "none"})
    assert settings.prompt_config().mask_text == "none"
    with pytest.raises(ValueError, match="mask_text"):
        CompleteSettings.from_dict({"mask_text": "values"})


def test_bf16_base_trains_with_float32_depth_modules(tmp_path):
    """model.dtype=bfloat16 (the 3B recipe's): the trainable depth modules, BN statistics included, are float32,
    and a training step runs (BatchNorm refuses a bf16 running mean with float32 weights)."""
    recipe = load_recipe(TINY_RECIPE, [*SMALL, "model.dtype=bfloat16", "lora.enabled=true", "lora.full_finetune=false",
                                       "train.max_steps=1", f"output.output_dir={tmp_path}"])
    setup = T.setup_training(recipe, tmp_path)
    assert stock_model(setup.sdim).model.visual.patch_embed.proj.weight.dtype == torch.bfloat16  # frozen: bf16
    depth = [setup.sdim.depth_branch, setup.sdim.proj2]
    assert all(t.dtype == torch.float32 for m in depth for t in [*m.parameters(), *m.buffers()] if t.is_floating_point())
    steps = TrainSteps(recipe, setup.mixed, setup.processor, stock_model(setup.sdim).config)
    stats = T.train_step(setup, [steps[0]], 1.0)
    assert np.isfinite(stats["loss"])


def test_text_readout_with_rope_reference_trains(tmp_path):
    """The paper's text readout, packed layout, numeric L1 and rope positions go through the loop too."""
    from depthkit.cli import main

    args = ["train", str(TINY_RECIPE), *SMALL, "prompts.prompt_prior=none", "prompts.readout=text",
            "prompts.pixel_reference=rope", "model.tiny.rope_theta=100", "data.prefix_sharing=packed",
            "loss.cross_entropy=1.0", "loss.numeric_l1=0.1", "train.max_steps=2", "train.save_every=0",
            "train.gradient_checkpointing=true", f"output.output_dir={tmp_path}"]
    assert main(args) == 0
    rows = _rows(tmp_path)
    assert all(np.isfinite(r["ce"]) and np.isfinite(r["numeric_l1"]) for r in rows if "loss" in r)
    val = [r for r in rows if "val_unparseable" in r][-1]
    assert 0.0 <= val["val_unparseable"] <= 1.0 and val["val_queries"] == 4
    # the loop's batches really name the pixel by its rope position: each query's last token sits at its pixel's
    # (h, w) on the visual grid (not at its text index, as text mode would), and the loss depends on it
    recipe = load_recipe(TINY_RECIPE, args[2:])
    sdim, processor, head = T.build_completer(recipe)
    image, sparse, depth = _scene()
    steps = TrainSteps(recipe, MixedDataset([[{"image": image, "sparse": sparse, "depth": depth}]], [1.0]), processor,
                       stock_model(sdim).config)
    batch = steps[0]
    qp = batch["query_pos"]
    t, h, w = batch["position_ids"][:, qp[:, 0], qp[:, 1]]
    assert batch["position_ids"].is_floating_point() and (h != t).all() and (w != t).all()
    assert len(set(zip(h.tolist(), w.tolist()))) > len(qp) // 2  # different pixels, different positions
    from depthkit.complete.readout import digit_token_ids

    objective = T.CompleterObjective(sdim, head, digit_token_ids(processor.tokenizer), recipe.loss).eval()
    as_text = dict(batch, position_ids=batch["position_ids"][:1].expand(3, -1, -1).clone())
    with torch.no_grad():
        assert abs(float(objective(batch)[0]) - float(objective(as_text)[0])) > 1e-6  # deterministic otherwise


GRID = ["prompts.pixel_reference=grid_token", "prompts.mask_text=none", "model.tiny.rope_theta=100"]


def test_grid_token_layout_trains_as_the_engine_answers():
    """pixel_reference=grid_token: the trainer's batches (every layout) put the query token at the pixel's grid
    position after the shared question, and the head reads there exactly what the engine's one-token fast path
    reads: the head's training prediction at a mask-0 query equals the engine's answer for that pixel."""
    from depthkit.complete.readout import digit_token_ids

    recipe, sdim, processor, head = _tiny("guided", "residual_head", GRID)
    with torch.no_grad():  # a head whose correction is not zero
        torch.nn.init.normal_(head.net[-1].weight, std=0.5, generator=torch.Generator().manual_seed(0))
    cfg = stock_model(sdim).config
    config = P.PromptConfig("guided", "grid_token", mask_text="none")
    image, sparse, _ = _scene(3)
    sp_in, queries = sample_training_queries(image, sparse, None, 6, np.random.default_rng(3), "sparse", 0.0,
                                             prompt_prior="guided")
    group = encode_group(processor, image, sp_in, queries, config, recipe.sdim)
    tok = processor.tokenizer
    question = tok(P.chat_suffix_text(P.QUESTION_TEXT), add_special_tokens=False).input_ids
    # the question, the same for every pixel, is in the prefix once; each suffix starts at the query token
    assert group.prefix_ids[-(len(question) - 1):].tolist() == question[:-1]
    assert all(s.answer_start == 1 and int(s.ids[0]) == question[-1] for s in group.suffixes)
    bare = encode_group(processor, image, sp_in, queries, config, recipe.sdim, with_answers=False)
    assert torch.equal(bare.prefix_ids, group.prefix_ids) and all(s.ids.numel() == 1 for s in bare.suffixes)
    objective = T.CompleterObjective(sdim, head, digit_token_ids(tok), recipe.loss).eval()
    preds = {}
    for layout in ("packed", "replicate", "kv_cache"):
        batch = pack_groups([group], cfg, "grid_token", pad_id=0, layout=layout)
        qp = batch["query_pos"]
        t, h, w = batch["position_ids"][:, qp[:, 0], qp[:, 1]]
        assert (h != t).all() and len(set(zip(h.tolist(), w.tolist()))) == len(queries)
        if layout == "replicate":  # prefix + one suffix per row: the token before the query ends the question
            before = batch["position_ids"][:, qp[:, 0], qp[:, 1] - 1]  # the token before the query token: text
            assert torch.equal(before[0], before[1]) and torch.equal(before[0], before[2])
            assert (before[0] < t).all()
        after = batch["position_ids"][:, qp[:, 0], qp[:, 1] + 1]  # the answer continues the text order
        assert torch.equal(after[0], t + 1) and torch.equal(after[1], t + 1) and torch.equal(after[2], t + 1)
        with torch.no_grad():
            hidden = T.run_packed(sdim, batch)
            preds[layout] = head.predict(hidden[qp[:, 0], qp[:, 1]], batch["query_head_prior"])
            assert np.isfinite(float(objective(batch)[0]))  # cross-entropy on the answer after the query token
            if layout == "kv_cache":  # without answers (no loss reads them): the same hidden state at the query
                nb = pack_groups([bare], cfg, "grid_token", pad_id=0, layout=layout)
                bq = nb["query_pos"]
                pb = head.predict(T.run_packed(sdim, nb)[bq[:, 0], bq[:, 1]], nb["query_head_prior"])
                assert torch.allclose(pb, head.predict(hidden[qp[:, 0], qp[:, 1]], batch["query_head_prior"]),
                                      rtol=1e-5)
    for layout in ("replicate", "kv_cache"):
        assert torch.allclose(preds[layout], preds["packed"], rtol=1e-5), layout
    engine = CompletionEngine(sdim.eval(), processor, config, readout="residual_head", residual_head=head)
    rows, cols = np.array([q.row for q in queries]), np.array([q.col for q in queries])
    got = engine.answer(engine.encode(image, sp_in), rows, cols, np.array([q.prior for q in queries]))
    assert got.stats["shared_suffix_tokens"] == len(question) - 1  # one token per pixel
    assert got.values == pytest.approx(preds["kv_cache"].numpy(), rel=1e-4)
    assert not np.allclose(got.values, [q.prior for q in queries])


def test_grid_token_checkpoint_records_its_layout(tmp_path):
    """A short CLI run with the one-token layout validates through the engine and exports a checkpoint whose
    complete.json says grid_token; the stage built from it answers through the one-token fast path."""
    from depthkit.cli import main
    from depthkit.complete.stage import CompleteVLMStage

    assert main(["train", str(TINY_RECIPE), *SMALL, *GRID, "train.max_steps=2", "train.save_every=0",
                 f"output.output_dir={tmp_path}"]) == 0
    settings = json.loads((tmp_path / "final" / "complete" / "complete.json").read_text())
    assert settings["pixel_reference"] == "grid_token" and settings["mask_text"] == "none"
    assert all(np.isfinite(r["val_mae"]) for r in _rows(tmp_path) if "val_mae" in r)
    stage = CompleteVLMStage.from_checkpoint(tmp_path / "final" / "complete", query_budget=64)
    image, sparse, _ = _scene()
    out = stage.run(image, sparse)
    assert np.isfinite(out.depth).all() and stage.last_stats["n_queries"] > 0
    assert stage.last_stats["shared_suffix_tokens"] > 10  # the question and the assistant header, once


def test_synthetic_options_reach_every_synthetic_dataset_and_an_entry_overrides_them():
    """data.synthetic's options (here clutter) go to every synthetic entry of the mix; an entry's own option wins
    (the plant entries of recipes/default/refine_plants.yaml set clutter: 3)."""
    recipe = load_recipe(REPO / "recipes" / "default" / "refine_plants.yaml", ["data.synthetic.clutter=1"])
    mixed = build_datasets(recipe)
    clutter = dict(zip(mixed.names, (d.clutter for d in mixed.datasets)))
    assert clutter["plants500"] == 3 and clutter["plants_holes"] == 3 and clutter["random500"] == 1
    assert {d.height for d in mixed.datasets} == {192}
    plain = build_datasets(load_recipe(REPO / "recipes" / "default" / "refine.yaml"))
    assert {d.clutter for d in plain.datasets} == {0}  # the shipped refiner's recipe: no plants


def test_a_mistyped_dataset_key_is_named_as_no_dataset_not_as_one_without_a_root():
    recipe = load_recipe(TINY_RECIPE, ["data.datasets.synthetc={}"])
    with pytest.raises(ValueError, match=r"data.datasets.synthetc: 'synthetc' is not a dataset \(did you mean "
                                         r"'synthetic'\?\); known: .*data.datasets.synthetc.name=DATASET"):
        build_datasets(recipe)


def test_training_mix_never_draws_the_synthetic_test_scenes():
    """An entry without a split trains on ``train`` seeds: the synthetic reader's own default is the split its
    protocol evaluates (``test``, seeds 20,000,000 on), which the benchmarks measure; the shipped recipes give none."""
    from depthkit.data.datasets.synthetic import SPLIT_SEEDS, SPLIT_SIZE

    for name in ("complete.yaml", "refine.yaml"):
        mixed = build_datasets(load_recipe(REPO / "recipes" / "default" / name))
        for ds in mixed.datasets:
            assert ds.split == "train"
            assert SPLIT_SEEDS["train"] <= ds.scene_seed(0) and ds.scene_seed(len(ds) - 1) < SPLIT_SIZE
    recipe = load_recipe(TINY_RECIPE, ["data.datasets.synthetic.split=val"])
    assert [d.split for d in build_datasets(recipe).datasets] == ["val"]  # an explicit split is kept
    # the sharpen / Lotus trainers' data (a source whose split is null) is read the same way
    from depthkit.sharpen.recipe import DataSourceConfig
    from depthkit.sharpen.train_common import build_training_data

    mixed = build_training_data([DataSourceConfig(split=None, options={"length": 2, "height": 8, "width": 8})])
    assert [d.split for d in mixed.datasets] == ["train"]


def test_missing_dataset_root_and_offline_hub_id_are_clear_errors(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "complete" / "qwen2_5_vl_3b_lora.yaml",
                         [f"output.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match=r"data.datasets.hypersim.root=/path"):
        build_datasets(recipe)
    with pytest.raises(OSError, match="HF_HUB_OFFLINE is set"):
        T.build_completer(recipe)


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate CLI not installed")
def test_two_process_accelerate_launch(tmp_path):
    """``accelerate launch`` with 2 CPU processes (gloo DDP) runs the tiny recipe to its final checkpoint."""
    exe = str(Path(sys.executable).parent / "accelerate")
    cmd = [exe, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "depthkit.cli", "train", str(TINY_RECIPE), *SMALL,
           "train.max_steps=2", "train.save_every=2", "train.eval_every=0", f"output.output_dir={tmp_path}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "final" / "complete" / "model.safetensors").is_file()
    state = torch.load(tmp_path / "checkpoints" / "step_0000002" / "state.pt", weights_only=True)
    assert json.loads((tmp_path / "checkpoints" / "step_0000002" / "meta.json").read_text())["world_size"] == 2
    assert "optimizer" in state and state["scheduler"]["last_epoch"] == 2


def test_train_step_benchmark_runs_on_cpu_with_tiny_flag(tmp_path, monkeypatch):
    """benchmarks/complete_train_step.py: the 3B recipe's step through setup_training/train_step, tiny sizes."""
    from repo_scripts import load_script

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    bench = load_script("benchmarks/complete_train_step.py")
    out = tmp_path / "r.json"
    assert bench.main(["--tiny", "--device", "cpu", "--image", "56x56", "--steps", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["step_time_s"] > 0 and result["peak_memory_gib"] > 0 and np.isfinite(result["loss"])
    assert result["gradient_checkpointing"] and result["layout"] == "packed"
    assert 0 < result["params_trainable"] < result["params_total"]  # LoRA + depth modules, as in the 3B recipe
    three_b = bench.build_recipe(bench.parse_args([]), str(tmp_path))  # the full-size settings parse too
    assert (three_b.model.tiny.hidden_size, three_b.model.tiny.num_hidden_layers) == (2048, 36)
    assert three_b.model.tiny.vocab_size == 151936 and three_b.lora.enabled
