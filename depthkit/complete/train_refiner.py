"""Train the completer's dense refiner (:mod:`depthkit.complete.refiner`): ``depthkit train recipes/default/refine.yaml``.

Recipe ``kind: refine`` (:class:`RefineRecipe`). The data are a fixed pool of ``data.subset_size`` training scenes
drawn by weight from ``data.datasets`` (the same readers and mixing as the ``complete`` trainer,
:func:`depthkit.complete.train_data.build_datasets`), each with its sparse input, its dense GT and the map the
refiner will correct, computed once with the classical method ``data.prior`` (``guided``: the map the completer's
answers correct, and the map it returns where it has no answer). Optimizer step ``k`` takes ``train.batch_size``
scenes from :class:`depthkit.training.StepSampler` and one random ``data.crop`` of each (flipped left-right with
probability 1/2 when ``data.random_flip``), every draw seeded by ``(seed, k)``, so ``--resume`` continues exactly.
The loss is :func:`depthkit.complete.refiner.refiner_log_l1` (L1 in log depth over valid GT pixels). AdamW with the
recipe's warmup and schedule (or ``one_cycle``), optional gradient clipping; atomic resumable checkpoints (:func:`depthkit.run_state.save_state`).

Validation (every ``train.eval_every`` steps and at the end) on ``eval.num_scenes`` scenes of the synthetic ``val``
split (never trained on) with ``eval.sparse_points`` random points: MAE (m) of the prior and of the refined map, and
the change (``val_change`` = refined / prior - 1). One process, on CUDA when there is one, else the CPU: the model is
~67 k parameters. The result, ``<output_dir>/final/``, holds ``refiner.safetensors``, ``refiner.json`` (the
``complete.json`` entry plus the final validation) and ``recipe.yaml``; ``checkpoints/assemble_default.py
--refiner`` puts it into a ``complete/`` checkpoint folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from depthkit.complete.recipe import DatasetEntry, SyntheticOptions
from depthkit.config import OutputConfig, RecipeError, TrainConfig

__all__ = ["RefineRecipe", "RefineModelConfig", "RefineDataConfig", "RefineEvalConfig", "train", "build_pool",
           "prepare_scene", "crop_batch", "evaluate_refiner", "write_refiner_folder", "load_refiner_folder",
           "REFINER_JSON"]

REFINER_JSON = "refiner.json"


@dataclass
class RefineModelConfig:
    width: int = 32
    """Channels of every hidden conv (~67 k parameters at 32)."""
    max_log_correction: float = 1.0
    """Bound of the log correction: the output stays within a factor e**max of its input."""
    init_from: str | None = None
    """Start from these weights instead of a zero-output refiner (fine-tuning): a refine run's ``final/`` folder or
    a checkpoint's ``complete/`` folder with a refiner; its width and bound must equal the fields above."""

    def __post_init__(self):
        if self.width < 1 or not self.max_log_correction > 0:
            raise RecipeError(f"model needs width >= 1 and max_log_correction > 0; received {self.width}, "
                              f"{self.max_log_correction}")


@dataclass
class RefineDataConfig:
    """Training scenes; the fields shared with the ``complete`` recipe's ``data`` mean the same."""

    datasets: dict[str, DatasetEntry] = field(default_factory=dict)
    subset_size: int = 600
    """Scenes in the fixed training pool (held in memory with their prior; > 0)."""
    synthetic: SyntheticOptions = field(default_factory=SyntheticOptions)
    sparse_pattern: str = "random"
    sparse_points: int = 500
    sparse_kwargs: dict[str, Any] = field(default_factory=dict)
    prior: str = "guided"
    """The classical method whose map the refiner learns to correct (depthkit.data.baselines)."""
    crop: list[int] = field(default_factory=lambda: [128, 128])
    """Training crop, [height, width] in pixels (at most the scenes' size)."""
    random_flip: bool = True

    def __post_init__(self):
        from depthkit.data.baselines import BASELINE_NAMES

        if self.subset_size < 1:
            raise RecipeError(f"data.subset_size must be >= 1 (the refiner trains on a fixed pool of scenes); "
                              f"received {self.subset_size}")
        if self.prior not in BASELINE_NAMES:
            raise RecipeError(f"data.prior={self.prior!r}; allowed: {', '.join(BASELINE_NAMES)}")
        if len(self.crop) != 2 or min(self.crop) < 8:
            raise RecipeError(f"data.crop must be [height, width], each >= 8 px; received {list(self.crop)}")


@dataclass
class RefineEvalConfig:
    num_scenes: int = 16
    height: int = 192
    width: int = 256
    kind: str = "random"
    sparse_points: int = 500

    def __post_init__(self):
        if min(self.num_scenes, self.height, self.width, self.sparse_points) < 1:
            raise RecipeError("eval sizes must all be >= 1")


@dataclass
class RefineRecipe:
    kind: str = "refine"
    model: RefineModelConfig = field(default_factory=RefineModelConfig)
    data: RefineDataConfig = field(default_factory=RefineDataConfig)
    eval: RefineEvalConfig = field(default_factory=RefineEvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    one_cycle: bool = False
    """Use torch's one-cycle schedule instead of ``train.schedule``: the LR rises from ``lr/25`` to ``train.lr`` over
    ``train.warmup_steps`` (at most half the run) and anneals to ~0 by ``train.max_steps`` (cosine both ways) while
    AdamW's beta1 cycles 0.95 → 0.85 → 0.95 — the schedule ``benchmarks/complete_headroom.py`` measured its CNN with
    (the default recipe's first run, warmup + cosine with clipping, did not learn)."""

    def __post_init__(self):
        if self.kind != "refine":
            raise RecipeError(f"kind={self.kind!r}; this schema is for kind: refine")
        tc = self.train  # the trainer runs plain float32 PyTorch (no accelerator): these would be ignored
        if tc.mixed_precision != "no" or tc.gradient_checkpointing:
            raise RecipeError(f"train.mixed_precision={tc.mixed_precision!r}, train.gradient_checkpointing="
                              f"{tc.gradient_checkpointing}: the refiner trainer runs in float32 without either "
                              "(a ~67 k-parameter CNN); set train.mixed_precision=no, "
                              "train.gradient_checkpointing=false.")
        if tc.num_workers:
            raise RecipeError(f"train.num_workers={tc.num_workers}: the refiner trainer crops its batches from a "
                              "pool prepared once in memory and uses no DataLoader workers; set train.num_workers=0.")


def prepare_scene(image, sparse, depth, prior_name: str = "guided") -> dict:
    """One scene as the refiner trains and is scored on: ``image``, ``sparse``, ``depth`` (GT, float32), ``prior``
    (the classical method ``prior_name``'s map, float32) and ``x`` (:func:`~depthkit.complete.refiner.refiner_features`
    of that map)."""
    from depthkit.complete.refiner import refiner_features
    from depthkit.data import baselines

    prior = np.asarray(getattr(baselines, prior_name)(image, sparse), dtype=np.float32)
    return {"x": refiner_features(image, sparse, prior), "prior": prior, "depth": np.asarray(depth, np.float32),
            "sparse": np.asarray(sparse, np.float32), "image": image}


def build_pool(recipe) -> list[dict]:
    """The training pool: ``data.subset_size`` scenes with features, prior, GT (see the module docstring)."""
    from depthkit.complete.train_data import build_datasets

    mixed = build_datasets(recipe)
    ch, cw = recipe.data.crop
    pool = []
    for i in range(len(mixed)):
        item = mixed.get(i)
        if item["depth"].shape[0] < ch or item["depth"].shape[1] < cw:
            raise ValueError(f"training scene {i} is {item['depth'].shape}, smaller than data.crop={[ch, cw]}.")
        pool.append(prepare_scene(item["image"], item["sparse"], item["depth"], recipe.data.prior))
    return pool


def crop_batch(pool: list[dict], indices, crop, flip: bool, seed: int):
    """``(x B x 6 x h x w, prior, gt, valid  B x 1 x h x w)`` float tensors: one random crop of each pool scene
    (flipped left-right with probability 1/2 when ``flip``), drawn by ``numpy.random.default_rng(seed)``."""
    import torch

    rng = np.random.default_rng(seed)
    ch, cw = crop
    xs, priors, gts = [], [], []
    for j in indices:
        s = pool[int(j)]
        h, w = s["depth"].shape
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        x = s["x"][:, y0:y0 + ch, x0:x0 + cw]
        prior, gt = s["prior"][y0:y0 + ch, x0:x0 + cw], s["depth"][y0:y0 + ch, x0:x0 + cw]
        if flip and rng.random() < 0.5:
            x, prior, gt = x[..., ::-1], prior[:, ::-1], gt[:, ::-1]
        xs.append(np.ascontiguousarray(x))
        priors.append(np.ascontiguousarray(prior))
        gts.append(np.ascontiguousarray(gt))
    gt = torch.from_numpy(np.stack(gts))[:, None]
    return (torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(priors))[:, None], gt,
            torch.isfinite(gt) & (gt > 0))


def _val_scenes(cfg: RefineEvalConfig, prior_name: str) -> list[dict]:
    from depthkit.data.datasets.synthetic import SyntheticDataset

    ds = SyntheticDataset(split="val", length=cfg.num_scenes, height=cfg.height, width=cfg.width, kind=cfg.kind,
                          sparse_pattern="random", sparse_kwargs={"n": cfg.sparse_points})
    return [prepare_scene(s["image"], s["sparse"], s["depth"], prior_name) for s in (ds[i] for i in range(len(ds)))]


def evaluate_refiner(net, scenes: list[dict]) -> dict:
    """Mean MAE (m, valid GT pixels) of the prior and of ``net``'s refinement over ``scenes``; ``val_change`` =
    refined / prior - 1 (negative: the refiner helps)."""
    from depthkit.metrics import depth_metrics

    was_training = net.training
    net.eval()
    prior_mae, refined_mae = [], []
    for s in scenes:
        valid = s["depth"] > 0
        refined = net.refine(s["image"], s["sparse"], s["prior"])
        prior_mae.append(float(depth_metrics(s["prior"], s["depth"], valid)["mae"]))
        refined_mae.append(float(depth_metrics(refined, s["depth"], valid)["mae"]))
    net.train(was_training)
    p, r = float(np.mean(prior_mae)), float(np.mean(refined_mae))
    return {"val_prior_mae": p, "val_refined_mae": r, "val_change": r / p - 1.0}


def load_refiner_folder(directory, model: RefineModelConfig | None = None):
    """The :class:`~depthkit.complete.refiner.DenseRefiner` in ``directory``: a refine run's ``final/`` folder
    (``refiner.json``) or a checkpoint's ``complete/`` folder (the ``refiner`` entry of ``complete.json``). With
    ``model``, its width and bound must match (``model.init_from``). Raises ValueError saying what is missing."""
    from depthkit.checkpoints import read_json
    from depthkit.complete.refiner import DenseRefiner
    from depthkit.complete.settings import COMPLETE_JSON

    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"model.init_from={str(directory)!r} does not exist (or is not a folder); give a refine run's "
                         "final/ folder or a checkpoint's complete/ folder, or null to start from scratch.")
    info = None
    if (directory / REFINER_JSON).is_file():
        info = read_json(directory / REFINER_JSON, "refiner settings")
    elif (directory / COMPLETE_JSON).is_file():
        info = read_json(directory / COMPLETE_JSON, "completer settings")
        info = info.get("refiner") if isinstance(info, dict) else None
    if not isinstance(info, dict):
        raise ValueError(f"{directory} holds no refiner: expected {REFINER_JSON} (a refine run's final/ folder) or a "
                         f"{COMPLETE_JSON} with a 'refiner' entry (a checkpoint's complete/ folder). Train one with "
                         "recipes/default/refine.yaml or point model.init_from at such a folder.")
    net = DenseRefiner.load(directory, info)
    if model is not None and (net.width, net.max_log_correction) != (model.width, model.max_log_correction):
        raise ValueError(f"model.init_from={str(directory)!r} is a refiner of width {net.width} and "
                         f"max_log_correction {net.max_log_correction}; the recipe asks for {model.width} and "
                         f"{model.max_log_correction}. Make them equal.")
    return net.train()


def write_refiner_folder(directory, net, **info) -> None:
    """Write ``net``'s weights and ``refiner.json`` (its ``complete.json`` entry plus ``info``: steps, seed,
    validation...) into ``directory`` — the layout ``checkpoints/assemble_default.py --refiner`` takes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entry = net.save(directory)
    (directory / REFINER_JSON).write_text(json.dumps({**entry, **info}, indent=2) + "\n")


def train(recipe: RefineRecipe, resume: bool = False) -> Path:
    """Run the recipe (module docstring); returns ``<output_dir>/final``."""
    import torch

    from depthkit.complete.refiner import DenseRefiner, refiner_log_l1
    from depthkit.config import recipe_to_yaml
    from depthkit.run_recipe import load_resumed_weights
    from depthkit.run_state import JsonlLogger, atomic_export, load_latest_state, prepare_run_dir, save_state
    from depthkit.training import StepSampler, build_scheduler, step_seed, total_steps

    tc = recipe.train
    if tc.grad_accum != 1:
        raise ValueError(f"train.grad_accum={tc.grad_accum}: the refiner trainer takes whole batches (set 1 and "
                         "raise train.batch_size instead).")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(tc.seed)
    # the network first: a bad model.init_from fails before the run folder is made
    net = (DenseRefiner(recipe.model.width, recipe.model.max_log_correction) if recipe.model.init_from is None
           else load_refiner_folder(recipe.model.init_from, recipe.model)).to(device)
    run = prepare_run_dir(recipe.output.output_dir, resume, recipe)
    optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    t0 = time.perf_counter()
    pool = build_pool(recipe)
    steps = total_steps(tc, len(pool))
    if recipe.one_cycle:
        lr_sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=tc.lr, total_steps=steps,
                                                       pct_start=min(max(tc.warmup_steps, 1) / steps, 0.5))
    else:
        lr_sched = build_scheduler(optimizer, tc, steps)
    val = _val_scenes(recipe.eval, recipe.data.prior)
    print(f"depthkit train: {len(pool)} training scenes and {len(val)} validation scenes prepared in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    start = 0
    if resume and (loaded := load_latest_state(run, map_location="cpu", max_steps=steps)) is not None:
        start, state, _ = loaded
        where = f"the checkpoint at step {start} in {run}"
        laid_out = state["lr_scheduler"].get("total_steps", steps) if recipe.one_cycle else steps
        if laid_out != steps:  # torch's OneCycleLR keeps its saved length and fails at the first step past it
            raise ValueError(f"{where} has a one-cycle schedule laid out for {laid_out} steps, which cannot be "
                             f"stretched to train.max_steps={steps}; resume with train.max_steps={laid_out}, or "
                             "start a new run (model.init_from=<run>/final) in another output.output_dir.")
        load_resumed_weights(net, state["refiner"], where)
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        print(f"depthkit train: resumed {run} at step {start}", flush=True)
    logger = JsonlLogger(run)
    sampler = StepSampler(len(pool), tc.batch_size, seed=tc.seed)
    last_val: dict = {}
    t0 = time.perf_counter()
    net.train()
    for step in range(start, steps):
        x, prior, gt, valid = (t.to(device) for t in crop_batch(pool, sampler.indices(step), recipe.data.crop,
                                                                 recipe.data.random_flip, step_seed(tc.seed, step)))
        loss = refiner_log_l1(net(x), prior, gt, valid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), tc.max_grad_norm)
        lr = lr_sched.get_last_lr()[0]  # the rate this step runs at (read before the schedule moves on)
        optimizer.step()
        lr_sched.step()
        done = step + 1
        if done % max(1, tc.log_every) == 0 or done == steps or done == start + 1:
            logger.log(step=done, lr=lr, seconds=time.perf_counter() - t0,
                       loss=float(loss.detach()))
        if (tc.eval_every > 0 and done % tc.eval_every == 0) or done == steps:
            last_val = evaluate_refiner(net, val)
            logger.log(step=done, **last_val)
        if (tc.save_every > 0 and done % tc.save_every == 0) or done == steps:
            state = {"refiner": net.state_dict(), "optimizer": optimizer.state_dict(),
                     "lr_scheduler": lr_sched.state_dict()}
            save_state(run, done, state, {"kind": "refine"}, keep_last=tc.keep_last)
    if not last_val:  # resumed at the last step: the export still records the final validation
        last_val = evaluate_refiner(net, val)
    net.eval()

    def write(tmp: Path) -> None:
        write_refiner_folder(tmp, net.cpu(), steps=steps, seed=tc.seed, **last_val)
        (tmp / "recipe.yaml").write_text(recipe_to_yaml(recipe))

    final = atomic_export(run / "final", write)
    return final
