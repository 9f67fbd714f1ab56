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
  ``state.pt`` (model/optimizer/scheduler/EMA state dicts, tensors only), ``meta.json`` and ``checksums.json``
  (SHA-256 of the other two); written to a temporary folder, fsynced and renamed, so an interrupted save never
  leaves a half checkpoint that resume would pick up. A failed write (a full disk) removes its temporary folder,
  keeps the previous checkpoint and raises an ``OSError`` saying so. Resume verifies the checksums, checks the
  step (the folder's name, ``meta.json``, ``max_steps``), loads with ``torch.load(weights_only=True)`` and
  truncates ``log.jsonl`` to the resumed step. The final export (:func:`atomic_export`) is swapped into place the
  same way. Partial folders left by a killed save or export are removed when a run starts
  (:func:`remove_partial`).
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

CHECKPOINTS = "checkpoints"
CHECKSUMS = "checksums.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TMP_STEP = ".tmp_step_"
_EXPORT_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


def prepare_run_dir(output_dir, resume: bool, recipe=None) -> Path:
    """Create the run folder (removing partial folders a killed save or export left, :func:`remove_partial`);
    refuse to start over a run that has resumable checkpoints unless resuming. With ``recipe``: a resume is checked
    against the recipe the run was trained with (:func:`depthkit.run_recipe.check_resumed_recipe`) before the
    recipe is recorded as ``<run>/recipe.yaml`` (not when resuming a run that has none: nothing vouches for it);
    ``--resume`` with no checkpoint yet says it starts at step 0. A run that starts at step 0 removes the rows of
    ``log.jsonl`` an earlier attempt (killed before its first checkpoint) wrote, as a resume removes those after
    its step."""
    from depthkit.run_recipe import RECIPE_FILE, check_resumed_recipe, record_recipe

    run = Path(output_dir)
    found = latest_state_dir(run)
    if not resume and found is not None:
        raise ValueError(f"{run} already holds a training run (checkpoints/). Resume it with --resume, or choose "
                         "another output.output_dir.")
    if resume and found is None and recipe is not None and os.environ.get("RANK", "0") == "0":
        print(f"depthkit train: --resume but no checkpoint in {run / CHECKPOINTS}; starting at step 0", flush=True)
    run.mkdir(parents=True, exist_ok=True)
    remove_partial(run)
    if found is None:  # starting at step 0: rows an attempt killed before its first checkpoint logged go
        truncate_log(run / "log.jsonl", 0)
    if recipe is not None:
        resuming = resume and found is not None
        if resuming:
            check_resumed_recipe(run, recipe)
        if not resuming or (run / RECIPE_FILE).is_file():  # never start a record from a recipe nothing checked
            record_recipe(run, recipe)
    return run


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_partial(run_dir: str | Path, all_pids: bool = True) -> list[Path]:
    """Remove what killed saves and exports left in ``run_dir``: ``checkpoints/.tmp_step_*`` folders and
    ``.<name>.tmp-<pid>`` export folders; an ``.<name>.old-<pid>`` folder (in ``run_dir`` or, from a checkpoint
    saved again at its step, in ``checkpoints/``) is moved back to ``<name>`` when the swap was killed before the
    new one arrived, else removed. ``all_pids=False`` spares folders of live processes. Returns the paths removed
    or restored."""
    run = Path(run_dir)
    done = []
    ckpts = run / CHECKPOINTS
    if ckpts.is_dir():
        for p in ckpts.glob(f"{_TMP_STEP}*"):
            pid = p.name.rsplit("_", 1)[-1]
            if all_pids or not (pid.isdigit() and _pid_alive(int(pid))):
                shutil.rmtree(p, ignore_errors=True)
                done.append(p)
    for folder in (run, ckpts):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = _EXPORT_TMP.match(p.name)
            if m is None or not p.is_dir() or (not all_pids and _pid_alive(int(m["pid"]))):
                continue
            final = folder / m["name"]
            if m["kind"] == "old" and not final.exists():
                os.replace(p, final)
            else:
                shutil.rmtree(p, ignore_errors=True)
            done.append(p)
    return done


def _step_dirs(root: Path) -> list[Path]:
    """The ``step_<n>`` folders in ``root``, oldest step first (by number: ``step_10000000`` comes after
    ``step_9999999``, which a sort of the names would invert)."""
    found = [(int(m.group(1)), p) for p in root.glob("step_*") if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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

    def epoch_of(self, k: int) -> int:
        return (k * self.batch_size * self.world) // self.n

    def indices(self, k: int) -> list[int]:
        out = []
        base = k * self.batch_size * self.world
        for j in range(self.batch_size):
            pos = base + j * self.world + self.rank
            out.append(int(self._perm(pos // self.n)[pos % self.n]))
        return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_state(run_dir: str | Path, step: int, state: dict, meta: dict | None = None, keep_last: int = 2) -> Path:
    """Atomically write a resumable checkpoint for optimizer step ``step`` and prune older ones.

    Raises:
        OSError: the write failed (e.g. ``ENOSPC``, a full disk); the temporary folder is removed, the previous
            checkpoints are untouched, and the message says what to do.
    """
    import torch

    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f"{_TMP_STEP}{step:07d}_{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, "time": time.time(), **(meta or {})}, indent=1))
        sums = {name: _sha256(tmp / name) for name in ("state.pt", "meta.json")}
        (tmp / CHECKSUMS).write_text(json.dumps({"sha256": sums}, indent=1))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_state_dir(run_dir)
        code = getattr(exc, "errno", None) or (errno.ENOSPC if "space" in str(exc).lower() else errno.EIO)
        raise OSError(code, f"could not write the training checkpoint for step {step} in {root} "
                      f"({type(exc).__name__}: {exc}). The partial folder was removed; the last complete checkpoint "
                      f"({previous.name if previous else 'none'}) is intact. Free disk space (or lower keep_last) "
                      "and continue with --resume.") from exc
    aside = root / f".{final.name}.old-{os.getpid()}"  # a checkpoint saved again at its step: the old one is
    if final.exists():                                 # moved aside, not deleted, until the new one is in place
        os.replace(final, aside)                       # (remove_partial puts it back if the swap was killed)
    os.replace(tmp, final)
    _fsync_dir(root)
    shutil.rmtree(aside, ignore_errors=True)
    steps = _step_dirs(root)
    for old in steps[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_state_dir(run_dir: str | Path) -> Path | None:
    root = Path(run_dir) / CHECKPOINTS
    steps = [p for p in _step_dirs(root) if (p / "state.pt").is_file() and (p / "meta.json").is_file()]
    return steps[-1] if steps else None


def _verify(path: Path) -> dict:
    """Check ``path``'s checksums and step; returns its ``meta.json``. Raises ValueError naming what is wrong."""
    what = (f"resumable checkpoint {path} is corrupt or was edited", "Delete it to resume from the previous one "
            "(or start the run again).")
    try:
        sums = json.loads((path / CHECKSUMS).read_text())["sha256"]
    except FileNotFoundError:
        raise ValueError(f"{what[0]}: {CHECKSUMS} is missing (it was written by an older depthkit, or the save "
                         f"was interrupted). {what[1]}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{what[0]}: {CHECKSUMS} is unreadable ({exc}). {what[1]}") from exc
    for name in ("state.pt", "meta.json"):
        if not isinstance(sums, dict) or sums.get(name) != _sha256(path / name):
            raise ValueError(f"{what[0]}: {name} does not match its SHA-256 in {CHECKSUMS}. {what[1]}")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what[0]}: meta.json is not JSON ({exc}). {what[1]}") from exc
    m = _STEP_DIR.match(path.name)
    step = meta.get("step") if isinstance(meta, dict) else None
    if m is None or type(step) is not int or step != int(m.group(1)):
        raise ValueError(f"{what[0]}: meta.json says step {step!r} but the folder is {path.name}. {what[1]}")
    return meta


def load_latest_state(run_dir: str | Path, map_location="cpu", max_steps: int | None = None,
                      world_size: int | None = None) -> tuple[int, dict, dict] | None:
    """``(step, state, meta)`` of the newest complete checkpoint under ``run_dir``, or None.

    The checkpoint's checksums (:data:`CHECKSUMS`) are verified and its step must match its folder name and be at
    most ``max_steps`` (when given) and ``meta["steps_total"]`` (when saved); with ``world_size`` (processes of
    this run), ``meta["world_size"]`` (when saved) must equal it: :class:`StepSampler` shards the data order by
    process, so another count would not continue the run. Rows of ``<run>/log.jsonl`` for steps after the resumed
    one are removed (they will be logged again). Raises ValueError naming the checkpoint."""
    import torch

    path = latest_state_dir(run_dir)
    if path is None:
        return None
    meta = _verify(path)
    step = meta["step"]
    limits = [x for x in (max_steps, meta.get("steps_total")) if type(x) is int]
    limit = min(limits) if limits else None
    if limit is not None and step > limit:
        raise ValueError(f"resumable checkpoint {path} is at step {step}, beyond this run's {limit} steps; resume "
                         "with the recipe it was trained with, or delete the checkpoint.")
    saved_world = meta.get("world_size")
    if world_size is not None and type(saved_world) is int and saved_world != world_size:
        raise ValueError(f"resumable checkpoint {path} was written by {saved_world} processes; resume with the same "
                         f"number (this run has {world_size}) so the data order and optimizer state line up.")
    try:
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"resumable checkpoint {path} is corrupt ({type(exc).__name__}: {exc}); delete it to "
                         "resume from the previous one.") from exc
    truncate_log(Path(run_dir) / "log.jsonl", step)
    return step, state, meta


def truncate_log(path: str | Path, step: int) -> None:
    """Drop the rows of JSONL log ``path`` whose ``step`` is after ``step`` (atomically; rows without a step and
    unparsable rows are kept)."""
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            row = json.loads(line)
            later = isinstance(row, dict) and isinstance(row.get("step"), (int, float)) and row["step"] > step
        except json.JSONDecodeError:
            later = False
        if not later:
            keep.append(line)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def atomic_export(final: str | Path, write) -> Path:
    """Call ``write(tmp)`` on a fresh sibling folder ``.<name>.tmp-<pid>``, fsync its files, then swap it in for
    ``final`` (an existing ``final`` is renamed aside first and removed after the swap): an interrupted export never
    leaves a half-written ``final``. The temporary folder is removed if ``write`` fails; folders a killed export
    left beside ``final`` are cleaned up first (an ``.old-<pid>`` one is moved back when ``final`` is missing).
    Returns ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for p in final.parent.glob(f".{final.name}.*-*"):  # left by a killed export (its process is gone)
        m = _EXPORT_TMP.match(p.name)
        if m and m["name"] == final.name and not _pid_alive(int(m["pid"])):
            if m["kind"] == "old" and not final.exists():
                os.replace(p, final)
            else:
                shutil.rmtree(p, ignore_errors=True)
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
            _fsync_dir(final.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
            _fsync_dir(final.parent)
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
