"""Full-size readiness of the sharpen stage on a CPU: an SD2-size SharpDepth release with random weights, imported
with ``depthkit import-checkpoint``, then one two-pass inference at 768 px.

Usage (from the repository root; ~8 GB of disk in --dir, ~10 GB of RAM; minutes on 2 CPU cores)::

    python benchmarks/sharpen_readiness.py                       # release + checkpoint in /tmp/sharpdepth_sd2_random
    python benchmarks/sharpen_readiness.py --dir DIR --size 768 --threads 2

``--dir`` is the script's own work folder: it creates it (with a marker file, :data:`MARKER`) when it is missing or
empty, and on a rerun replaces only the ``release/`` and ``checkpoint/`` a marked folder holds. A folder with other
files and no marker is refused untouched (the script never deletes what it did not make).

Phases, each in its own process (so each has its own peak RSS), recorded in
``benchmarks/results/sharpen_readiness.json`` (rewritten after each phase):

1. ``release``: the SD2-size UNet (:data:`depthkit.sharpen.release.SD2_UNET`, 8 input channels, ~866M parameters)
   and SD2's VAE (:data:`~depthkit.sharpen.release.SD2_VAE`) with random fp32 weights, written as a released
   pipeline folder (model_index.json, unet/, vae/, scheduler/, text_encoder/ — a one-layer CLIP text model of SD2's
   width 1024 — and tokenizer/) by :func:`depthkit.sharpen.release.write_release`.
2. ``import``: ``depthkit import-checkpoint --sharpdepth RELEASE --out CHECKPOINT`` (the command a user runs on a
   downloaded release).
3. ``infer``: ``Pipeline(stages=("complete", "sharpen"), checkpoint=CHECKPOINT)`` on a 3:4 synthetic scene whose
   longest side is ``--size`` (classical guided completion on 500 points, then SharpDepth's two UNet passes at
   ``processing_resolution`` = ``--size``): wall time, peak RSS, output finite, measured pixels kept.

The times say that the code path works at full size on this CPU, not what a GPU does (``benchmarks/sharpen.py --config
sd2 --device cuda --dtype bfloat16``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import run_info, run_main, write_json  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sharpen_readiness.json"
DEFAULT_DIR = Path("/tmp/sharpdepth_sd2_random")
MARKER = ".sharpen_readiness"
"""The file that marks ``--dir`` as this script's own work folder (written when the script creates the folder)."""
PARTS = ("release", "checkpoint")
"""What the phases write into ``--dir`` (replaced on a rerun in a marked folder)."""


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def phase_release(folder: Path) -> dict:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from depthkit.sharpen.release import SD2_UNET, SD2_VAE, write_release

    torch.manual_seed(0)
    unet, vae = UNet2DConditionModel(**SD2_UNET), AutoencoderKL(**SD2_VAE)
    write_release(folder, unet, vae)
    return {"unet_parameters": sum(p.numel() for p in unet.parameters()),
            "vae_parameters": sum(p.numel() for p in vae.parameters()),
            "release_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())}


def phase_import(release: Path, checkpoint: Path, size: int) -> dict:
    from depthkit.cli import main

    code = main(["import-checkpoint", "--sharpdepth", str(release), "--out", str(checkpoint),
                 "--processing-resolution", str(size)])
    if code != 0:
        raise SystemExit(f"import-checkpoint exited with {code}")
    return {"checkpoint_bytes": sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file())}


def phase_infer(checkpoint: Path, size: int) -> dict:
    import numpy as np

    from depthkit import Pipeline
    from depthkit.data.sparse import sample_random_points
    from depthkit.data.synthetic import render_scene

    scene = render_scene(20000001, size * 3 // 4, size, kind="indoor")
    sparse = sample_random_points(scene.depth, 500, seed=0)
    pipe = Pipeline(stages=("complete", "sharpen"), checkpoint=checkpoint)
    start = time.perf_counter()
    out = pipe(scene.image, sparse)
    seconds = time.perf_counter() - start
    measured = sparse > 0
    return {"height": int(sparse.shape[0]), "width": int(sparse.shape[1]), "seconds": seconds,
            "finite": bool(np.isfinite(out.depth).all()),
            "measured_kept": bool(np.array_equal(out.depth[measured], sparse[measured]))}


def run_phase(name: str, args) -> dict:
    """Run one phase in a child process; returns its result with wall time and peak RSS."""
    cmd = [sys.executable, __file__, "--phase", name, "--dir", str(args.dir), "--size", str(args.size),
           "--threads", str(args.threads)]
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if res.returncode != 0:
        return {"ok": False, "error": (res.stderr or res.stdout)[-2000:], "wall_s": time.perf_counter() - start}
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result.update(ok=True, wall_s=time.perf_counter() - start)
    return result


def prepare_dir(folder: Path) -> None:
    """Make ``folder`` ready for the phases: create it with :data:`MARKER` when it is missing or empty; in a marked
    folder remove only the :data:`PARTS` an earlier run left. ValueError (nothing deleted) for a file, or a non-empty
    folder without the marker: it is not this script's to empty."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--dir {folder} is a file, not a folder; pass a new or empty folder (default "
                         f"{DEFAULT_DIR}).")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        shown = sorted(p.name for p in folder.iterdir())
        raise ValueError(f"--dir {folder} is not empty ({', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''}) "
                         f"and has no {MARKER} file, so this script did not make it and will not delete anything in "
                         "it; pass a new or empty folder (the script writes ~8 GB into it), or one an earlier run of "
                         "this script made.")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("work folder of benchmarks/sharpen_readiness.py: its release/ and checkpoint/ are "
                                 "replaced on each run\n")
    for part in PARTS:
        shutil.rmtree(folder / part, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="SD2-size SharpDepth release -> import -> one 768-px inference, on a CPU.")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                   help=f"work folder for the release and the imported checkpoint (~8 GB; default {DEFAULT_DIR}): "
                        f"created with a {MARKER} marker file when missing or empty; a rerun replaces the release/ "
                        f"and checkpoint/ of a marked folder; a non-empty folder without the marker is refused and "
                        "left as it is")
    p.add_argument("--size", type=int, default=768, help="longest image side and processing resolution (px)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT, help="the JSON report (default benchmarks/results/"
                   "sharpen_readiness.json; rewritten after each phase)")
    p.add_argument("--phase", choices=("release", "import", "infer"), default=None, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.size < 4:  # the scene is size * 3 // 4 px high; 0 would also import as "no processing resolution"
        p.error(f"--size takes the longest image side in pixels, at least 4 (e.g. 768); received {args.size}.")
    if args.threads < 1:
        p.error(f"--threads takes a number of torch CPU threads, at least 1; received {args.threads}.")
    release, checkpoint = args.dir / "release", args.dir / "checkpoint"
    if args.phase is not None:  # child process
        import torch

        torch.set_num_threads(args.threads)
        result = {"release": lambda: phase_release(release),
                  "import": lambda: phase_import(release, checkpoint, args.size),
                  "infer": lambda: phase_infer(checkpoint, args.size)}[args.phase]()
        result["peak_rss_mb"] = _peak_mb()
        print(json.dumps(result))
        return 0
    prepare_dir(args.dir)
    report = {"benchmark": "sharpen_readiness", **run_info(argv, __file__), "threads": args.threads, "size": args.size,
              "phases": {}}
    for name in ("release", "import", "infer"):
        report["phases"][name] = run_phase(name, args)
        write_json(args.out, report)
        print(name, json.dumps(report["phases"][name])[:400], flush=True)
        if not report["phases"][name]["ok"]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
