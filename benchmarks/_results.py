"""The one way a benchmark script records and saves its results: ``<out>/<name>.json`` (every number, and where,
when and how it was measured: :func:`run_info`) and ``<out>/<name>.md`` (the table), and prints the table; and the one
way it fails on a user's mistake (:func:`run_main`: one ``error:`` line, exit status 2, not a traceback)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from depthkit.io import atomic_write, strict_json  # the one implementation of each

RUN_KEYS = ("date", "command", "cwd", "depthkit_version", "git_commit", "machine")
REPO = Path(__file__).resolve().parent.parent


def results_name(text: str) -> str:
    """An argparse ``type`` for ``--name``: the file stem of a results pair (letters, digits, ``_``, ``-``, ``.``; not
    a path), so a robustness run can sit beside the main results (``--name accuracy_stereo``) instead of replacing
    them."""
    import argparse
    import re

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", text or ""):
        raise argparse.ArgumentTypeError(f"a results name is a file stem of letters, digits, '_', '-' and '.', e.g. "
                                         f"accuracy_stereo (written as NAME.json and NAME.md in --out); received "
                                         f"{text!r}")
    return text


def command_line(argv: list[str] | None = None, script: str | None = None) -> str:
    """``python benchmarks/<script> <args>`` as it would be typed again (``argv``: the arguments, default
    ``sys.argv[1:]``; ``script``: default ``sys.argv[0]``, shown relative to the repository when inside it). Run from
    another folder than the repository root, ``cd <that folder> && python <script's absolute path> <args>``: its
    relative arguments (``--checkpoint``, ``--root``, ``--out``, ...) are relative to that folder."""
    argv = sys.argv[1:] if argv is None else list(argv)
    path = Path(script or sys.argv[0])
    cwd = Path.cwd()
    if cwd.resolve() != REPO:
        return f"cd {shlex.quote(str(cwd))} && python " + shlex.join([str(path.resolve()), *argv])
    try:
        shown = path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        shown = str(path)
    return "python " + shlex.join([shown, *argv])


def git_commit() -> str | None:
    """The repository's HEAD commit (with ``+dirty`` when the tree has changes), or None outside a git checkout."""
    repo = REPO
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: str = "cpu") -> dict:
    """Where the numbers were measured (timings depend on it): platform, CPU model and count, Python, numpy, torch
    and its thread count, and the GPU's name when ``device`` is a CUDA device."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "device": device}
    try:
        import numpy
        import torch

        info.update(numpy=numpy.__version__, torch=torch.__version__, torch_threads=torch.get_num_threads())
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except ImportError:
        pass
    return info


def run_info(argv: list[str] | None = None, script: str | None = None, device: str = "cpu") -> dict:
    """The :data:`RUN_KEYS` of a report: UTC date, :func:`command_line`, the folder it ran in (``cwd``: what its
    relative arguments are relative to), depthkit version, :func:`git_commit` and :func:`machine_info`.
    :func:`write_json` adds those a report does not set itself."""
    from depthkit import __version__

    return {"date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "command": command_line(argv, script), "cwd": str(Path.cwd()), "depthkit_version": __version__,
            "git_commit": git_commit(), "machine": machine_info(device)}


def write_json(path: Path, report: dict) -> Path:
    """Write ``report`` as strict JSON (NaN / inf as null) to ``path`` atomically, with the :data:`RUN_KEYS` it lacks
    filled in from :func:`run_info` (this process's command line), so every result says when, how and where it was
    measured. Creates the folder; returns ``path``."""
    path = Path(path)
    missing = [k for k in RUN_KEYS if k not in report]
    if missing:
        info = run_info()
        report = {**report, **{k: info[k] for k in missing}}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(strict_json(report), indent=1, allow_nan=False) + "\n")
    return path


def write_results(out: Path, name: str, report: dict, lines: list[str] | str, echo: bool = True) -> tuple[Path, Path]:
    """Write ``report`` as ``out/name.json`` (:func:`write_json`) and the markdown ``lines`` (a list of lines, or the
    text itself) as ``out/name.md`` (creating ``out``; each file atomically, so an interrupted run leaves the previous
    results whole), print the markdown when ``echo``, and return the two paths."""
    out = Path(out)
    paths = (out / f"{name}.json", out / f"{name}.md")
    markdown = lines if isinstance(lines, str) else "\n".join(lines) + "\n"
    write_json(paths[0], report)
    with atomic_write(paths[1]) as tmp:
        tmp.write_text(markdown)
    if echo:
        print(markdown, end="")
    return paths


def check_device(device: str) -> None:
    """Raise ``ValueError`` when ``device`` names CUDA and this machine has none (before any model is built)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} asked for but CUDA is not available here (torch "
                             f"{torch.__version__}); run it on a GPU machine, or use --device cpu.")


def run_main(main, argv: list[str] | None = None) -> int:
    """``main(argv)``'s exit status, with a user's mistake found while it runs (a ``ValueError`` or ``OSError``: a
    checkpoint or data folder that is not there, CUDA asked for on a CPU machine, a value a stage refuses) said in
    one ``<script>: error: ...`` line with status 2 instead of a traceback, as the ``depthkit`` command does; with
    ``DEPTHKIT_TRACEBACK=1`` (:data:`depthkit.cli_output.TRACEBACK_ENV`) the traceback, for a bug that raises one."""
    from depthkit.cli_output import traceback_asked

    try:
        return main(argv)
    except (ValueError, OSError) as exc:
        if traceback_asked():
            raise
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 2
