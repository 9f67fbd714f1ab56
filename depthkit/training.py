"""Training utilities shared by every recipe: accelerator set-up, LR schedule, deterministic data order, atomic
resumable checkpoints and a JSONL log.

Each stage's trainer (``depthkit/complete/train.py``, ``depthkit/sharpen/train.py``) owns its loop; these are the
pieces that must behave identically everywhere:

- **Data order** (:class:`StepSampler`): the sample indices of global micro-step ``k`` are a pure function of
  ``(seed, k)`` (an epoch-wise permutation, sharded by process), so a resumed run sees exactly the data an
  uninterrupted run would have seen, with no sampler state to save.
- **Checkpoints** (:func:`save_state` / :func:`load_latest_state`): ``<run>/checkpoints/step_000123/`` holds
  ``state.pt`` (model/optimizer/scheduler/EMA state dicts, tensors only) and ``meta.json``; written to a temporary
  folder, fsynced and renamed, so an interrupted save never leaves a half checkpoint that resume would pick up.
  Resume loads with ``torch.load(weights_only=True)``.
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
