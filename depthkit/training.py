"""Training plumbing shared by every trainer (``complete``, ``sharpen``, ``lotus``): run folder, accelerator, LR
schedule, deterministic data order and seeds, mixed datasets, atomic resumable checkpoints and exports, a JSONL log.

Each stage's trainer (``depthkit/complete/train.py``, ``depthkit/sharpen/train.py``, ``depthkit/sharpen/
train_lotus.py``) owns its loop; these are the pieces that must behave identically everywhere:

- **Run folder** (:func:`prepare_run_dir`, :func:`start_run`): a fresh run never starts over a folder that holds
  resumable checkpoints (it would mix two runs); ``--resume`` continues it.
- **Determinism** (what makes ``--resume`` exact): the sample indices of global micro-step ``k`` come from
  :class:`StepSampler` (an epoch-wise permutation, sharded by process) and every random draw of step ``k`` is seeded
  by :func:`step_seed` ``(seed, k, rank, stream)``, so a resumed run sees exactly the data and the random numbers an
  uninterrupted run would have seen, with no sampler or RNG state to save.
- **Data** (:class:`MixedDataset`): several readers behind one index, mixed by weight.
- **Checkpoints** (:func:`save_state` / :func:`load_latest_state`): ``<run>/checkpoints/step_000123/`` holds
  ``state.pt`` (model/optimizer/scheduler/EMA state dicts, tensors only) and ``meta.json``; written to a temporary
  folder, fsynced and renamed, so an interrupted save never leaves a half checkpoint that resume would pick up.
  Resume loads with ``torch.load(weights_only=True)``. The final export (:func:`atomic_export`) is swapped into
  place the same way.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

CHECKPOINTS = "checkpoints"


def prepare_run_dir(output_dir, resume: bool) -> Path:
    """Create the run folder; refuse to start over a run that has resumable checkpoints unless resuming."""
    run = Path(output_dir)
    if not resume and latest_state_dir(run) is not None:
        raise ValueError(f"{run} already holds a training run (checkpoints/). Resume it with --resume, or choose "
                         "another output.output_dir.")
    run.mkdir(parents=True, exist_ok=True)
    return run


def start_run(recipe, resume: bool):
    """Run folder (see :func:`prepare_run_dir`) and accelerator for ``recipe``; the main process records the resolved
    recipe as ``recipe.yaml``. Returns ``(run, accelerator)``."""
    from depthkit.config import recipe_to_yaml

    run = prepare_run_dir(recipe.output.output_dir, resume)
    accelerator = build_accelerator(recipe.train, run)
    if accelerator.is_main_process:
        (run / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    return run, accelerator


def build_accelerator(train_cfg, run_dir: str | Path):
    """An ``accelerate.Accelerator`` for ``train_cfg`` (mixed precision, grad accumulation); CPU when no CUDA."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    mp = train_cfg.mixed_precision
    if mp != "no" and not torch.cuda.is_available():
        mp = "no"  # bf16/fp16 autocast is a CUDA setting; CPU runs stay fp32
    return Accelerator(mixed_precision=mp, gradient_accumulation_steps=train_cfg.grad_accum, cpu=not torch.cuda.is_available(),
                       project_config=ProjectConfiguration(project_dir=str(run_dir)))


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based): linear warmup, then cosine/linear/constant."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, train_cfg, total_steps: int):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, train_cfg.warmup_steps, train_cfg.schedule))


def total_steps(train_cfg, dataset_len: int, world_size: int = 1) -> int:
    """``max_steps`` or, when it is 0, ``epochs`` converted to optimizer steps."""
    if train_cfg.max_steps > 0:
        return train_cfg.max_steps
    per_step = train_cfg.batch_size * train_cfg.grad_accum * world_size
    return max(1, math.ceil(train_cfg.epochs * dataset_len / per_step))


def step_seed(seed: int, k: int, rank: int = 0, stream: int = 0) -> int:
    """A 63-bit seed for micro-step (or optimizer step) ``k`` of process ``rank``; ``stream`` separates independent
    uses within one step (e.g. the per-sample crops from the losses' noise)."""
    return int(np.random.SeedSequence([int(seed), int(k), int(rank), int(stream)]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


def step_generator(seed: int, k: int, rank: int = 0, device="cpu"):
    """A ``torch.Generator`` on ``device`` seeded for micro-step ``k`` (stream 1 of :func:`step_seed`)."""
    import torch

    return torch.Generator(device=device).manual_seed(step_seed(seed, k, rank, stream=1))


class MixedDataset:
    """Several readers behind one index, mixed by weight. Items are the readers' dicts plus ``source`` (the index of
    the reader they came from). Two ways to mix:

    - ``draw=True`` (the stage-2 trainers): position ``i`` maps to ``(source, item)`` by a generator seeded with
      ``(seed, i)``: the source is drawn with probability weight / sum of weights, the item uniformly within it. The
      length is the sum of the readers' lengths, so one "epoch" is as many samples as the readers hold.
    - ``draw=False`` (the ``complete`` trainer): a fixed list of ``(source, item)`` pairs. ``subset_size > 0``:
      reader j contributes ``round(subset_size * w_j / sum w)`` items (all of it when it is smaller), chosen without
      replacement with ``seed``; ``0``: every item of every reader. Readers with weight 0 are left out.

    :meth:`get` with an ``epoch`` first calls ``set_epoch(epoch)`` on readers that have it (synthetic scenes vary
    their sparse sampling per epoch).
    """

    def __init__(self, datasets: list, weights: list[float], names: list[str] | None = None, seed: int = 0,
                 draw: bool = False, subset_size: int = 0):
        if not datasets or len(datasets) != len(weights):
            raise ValueError(f"MixedDataset needs at least one dataset and one weight per dataset; got "
                             f"{len(datasets)} datasets and {len(weights)} weights.")
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"dataset weights must be >= 0 with a positive sum; got {list(weights)}.")
        self.datasets, self.seed, self.draw = list(datasets), int(seed), bool(draw)
        self.names = list(names) if names is not None else [str(i) for i in range(len(datasets))]
        w = np.asarray(weights, dtype=np.float64)
        self.p = w / w.sum()
        self.lengths = [len(d) for d in self.datasets]
        self.pairs: list[tuple[int, int]] | None = None
        if not self.draw:
            rng = np.random.default_rng([self.seed, 1234])
            pairs = []
            for j, (n, wj) in enumerate(zip(self.lengths, weights)):
                if wj <= 0:
                    continue
                if subset_size > 0:
                    want = min(n, int(round(subset_size * wj / w.sum())))
                    idx = np.sort(rng.choice(n, size=want, replace=False))
                else:
                    idx = np.arange(n)
                pairs += [(j, int(i)) for i in idx]
            if not pairs:
                raise ValueError("the training datasets hold no samples (check roots, splits and weights).")
            self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else int(sum(self.lengths))

    def locate(self, i: int) -> tuple[int, int]:
        """``(source, item index)`` of position ``i``."""
        if self.pairs is not None:
            return self.pairs[i]
        if len(self.datasets) == 1:
            return 0, int(i) % self.lengths[0]
        rng = np.random.default_rng([self.seed, int(i)])
        j = int(rng.choice(len(self.datasets), p=self.p))
        return j, int(rng.integers(self.lengths[j]))

    def get(self, i: int, epoch: int | None = None) -> dict:
        """Item at position ``i`` (see the class docstring for ``epoch``)."""
        j, idx = self.locate(i)
        ds = self.datasets[j]
        if epoch is not None and hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        item = dict(ds[idx])
        item["source"] = j
        return item

    def __getitem__(self, i: int) -> dict:
        return self.get(i)


class StepSampler:
    """Deterministic, resumable data order: ``indices(k)`` is the batch of global micro-step ``k`` for this process.

    Sample positions run through epoch-wise permutations of ``range(n)`` seeded by ``(seed, epoch)``; process ``rank``
    of ``world`` takes every ``world``-th position, ``batch_size`` at a time.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        if n < 1:
            raise ValueError("the training dataset is empty")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self._perm_cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perm_cache[epoch]

    def epoch_of(self, k: int) -> int:
        return (k * self.batch_size * self.world) // self.n

    def indices(self, k: int) -> list[int]:
        out = []
        base = k * self.batch_size * self.world
        for j in range(self.batch_size):
            pos = base + j * self.world + self.rank
            out.append(int(self._perm(pos // self.n)[pos % self.n]))
        return out


def save_state(run_dir: str | Path, step: int, state: dict, meta: dict | None = None, keep_last: int = 2) -> Path:
    """Atomically write a resumable checkpoint for optimizer step ``step`` and prune older ones."""
    import torch

    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, "time": time.time(), **(meta or {})}, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_state_dir(run_dir: str | Path) -> Path | None:
    root = Path(run_dir) / CHECKPOINTS
    steps = sorted(p for p in root.glob("step_*") if (p / "state.pt").is_file() and (p / "meta.json").is_file())
    return steps[-1] if steps else None


def load_latest_state(run_dir: str | Path, map_location="cpu") -> tuple[int, dict, dict] | None:
    """``(step, state, meta)`` of the newest complete checkpoint under ``run_dir``, or None."""
    import torch

    path = latest_state_dir(run_dir)
    if path is None:
        return None
    try:
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=True)
        meta = json.loads((path / "meta.json").read_text())
    except Exception as exc:
        raise ValueError(f"resumable checkpoint {path} is corrupt ({type(exc).__name__}: {exc}); delete it to "
                         "resume from the previous one.") from exc
    return int(meta["step"]), state, meta


def atomic_export(final: str | Path, write) -> Path:
    """Call ``write(tmp)`` on a fresh sibling folder ``.<name>.tmp-<pid>``, fsync its files, then swap it in for
    ``final`` (an existing ``final`` is renamed aside first and removed after the swap): an interrupted export never
    leaves a half-written ``final``. The temporary folder is removed if ``write`` fails. Returns ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


class JsonlLogger:
    """Appends one JSON object per call to ``<run>/log.jsonl`` and prints a compact line."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, echo: bool = True):
        self.path = Path(run_dir) / "log.jsonl"
        self.enabled, self.echo = enabled, echo
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **row) -> None:
        if not self.enabled:
            return
        row = {k: (float(v) if hasattr(v, "item") else v) for k, v in row.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.echo:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
