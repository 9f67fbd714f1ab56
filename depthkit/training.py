"""Training plumbing shared by every trainer (``complete``, ``sharpen``, ``lotus``): accelerator, LR schedule,
deterministic data order and seeds, mixed datasets. The run folder and its files (atomic resumable checkpoints and
exports, the JSONL log) are :mod:`depthkit.run_state`.

Each stage's trainer (``depthkit/complete/train.py``, ``depthkit/sharpen/train.py``, ``depthkit/sharpen/
train_lotus.py``) owns its loop; these are the pieces that must behave identically everywhere:

- **Run** (:func:`start_run`): the run folder (:func:`depthkit.run_state.prepare_run_dir`) and the accelerator.
- **Determinism** (what makes ``--resume`` exact): the sample indices of global micro-step ``k`` come from
  :class:`StepSampler` (an epoch-wise permutation, sharded by process) and every random draw of step ``k`` is seeded
  by :func:`step_seed` ``(seed, k, rank, stream)``, so a resumed run sees exactly the data and the random numbers an
  uninterrupted run would have seen, with no sampler or RNG state to save.
- **Data** (:class:`MixedDataset`): several readers behind one index, mixed by weight.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from depthkit.run_state import prepare_run_dir


def start_run(recipe, resume: bool):
    """Run folder (see :func:`prepare_run_dir`: the recipe checked on resume and recorded as ``recipe.yaml``) and
    accelerator for ``recipe``. Returns ``(run, accelerator)``."""
    run = prepare_run_dir(recipe.output.output_dir, resume, recipe)
    return run, build_accelerator(recipe.train, run)


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


def training_split(split: str | None) -> str:
    """The split a recipe's training dataset entry reads: ``split``, or ``"train"`` when it is None. Not the reader's
    own default: that is the split its protocol *evaluates* (``test`` for synthetic, seeds 20,000,000 on), so a None
    passed through would train on the scenes the benchmarks measure (as the completer's recipes did until session
    32: checkpoints/README.md)."""
    return "train" if split is None else split


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

    def positions(self, k: int) -> list[tuple[int, int]]:
        """``(index, epoch)`` of each sample of micro-step ``k`` for this process: a batch that runs over an epoch's
        end takes its later samples from the next epoch's permutation, and they belong to that epoch."""
        out = []
        base = k * self.batch_size * self.world
        for j in range(self.batch_size):
            pos = base + j * self.world + self.rank
            epoch = pos // self.n
            out.append((int(self._perm(epoch)[pos % self.n]), epoch))
        return out

    def indices(self, k: int) -> list[int]:
        """The sample indices of micro-step ``k`` for this process (:meth:`positions` without the epochs)."""
        return [index for index, _ in self.positions(k)]

