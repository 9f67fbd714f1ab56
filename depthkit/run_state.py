"""A training run's folder and the files in it, shared by every trainer: atomic resumable checkpoints, atomic
exports, the JSONL log.

- **Run folder** (:func:`prepare_run_dir`): a fresh run never starts over a folder that holds resumable checkpoints
  (it would mix two runs); ``--resume`` continues it.
- **Checkpoints** (:func:`save_state` / :func:`load_latest_state`): ``<run>/checkpoints/step_000123/`` holds
  ``state.pt`` (model/optimizer/scheduler/EMA state dicts, tensors only), ``meta.json`` and ``checksums.json``
  (SHA-256 of the other two); written to a temporary folder, fsynced and renamed, so an interrupted save never
  leaves a half checkpoint that resume would pick up. A failed write (a full disk) removes its temporary folder,
  keeps the previous checkpoint and raises an ``OSError`` saying so. Resume verifies the checksums, checks the
  step (the folder's name, ``meta.json``, ``max_steps``), loads with ``torch.load(weights_only=True)`` and
  truncates ``log.jsonl`` to the resumed step. The final export (:func:`atomic_export`) is swapped into place the
  same way. Partial folders left by a killed save or export are removed when a run starts
  (:func:`remove_partial`).
- **Log** (:class:`JsonlLogger`): one JSON object per line in ``<run>/log.jsonl``.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

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
    if run.exists() and not run.is_dir():
        raise ValueError(f"output.output_dir {run} is a file; give the folder for the run (it is created if missing).")
    found = latest_state_dir(run)
    if found is None and (run / "final").exists():  # a finished run whose checkpoints were deleted to save space
        raise ValueError(f"{run} holds a finished run's exported weights ({run / 'final'}) and no checkpoint to "
                         "resume from, so this run would start at step 0 and replace them. Choose another "
                         "output.output_dir, or move final/ away first.")
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
    this run), ``meta["world_size"]`` (when saved) must equal it: :class:`depthkit.training.StepSampler` shards the data order by
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
