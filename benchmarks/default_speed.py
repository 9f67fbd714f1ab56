"""Speed of the embedded default checkpoint on a CPU: ``complete`` and ``complete,sharpen`` at 640x480 and 320x240.

Usage (from the repository root)::

    python benchmarks/default_speed.py                      # checkpoints/default, 1 and 2 threads
    python benchmarks/default_speed.py --checkpoint CKPT --threads 1 --sizes 640

One synthetic outdoor scene per size, with 500 random GT points (``--patterns``: any of benchmarks/accuracy.py's
drawn from the GT, e.g. ``random500,lidar64``; a sharpener with ``keep_scanline_frames`` leaves a LiDAR frame as
completed without running its UNet, which each row says). For each thread count, size and pattern: the median wall
time of
``--repeats`` Pipeline calls after one warm-up (model loading excluded), per stage list — with the checkpoint's own
completion method and, when that is not the learned one, also with ``method="sdim"`` — and the split of the
learned completer's time (engine prefix and queries; the dense refiner, when the checkpoint has one; the rest is the
classical prior and the dense fill). The
issue's goal: both stages at 640x480 in <= 10 s on this CPU. Variants run side by side in one process (the machine
is shared; treat absolute numbers as rough, compare rows).

``--sharpen-config NAME=JSON`` (repeatable) times the two stages with those settings of the sharpener's ``config``
over the checkpoint's, each as its own rows beside the others' (e.g. exact attention against
``self_attention_max_keys``); without it, the checkpoint's own (``as shipped``).

Writes ``<out>/default_speed.json`` and ``<out>/default_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results, accuracy
from _results import run_info, run_main, write_results  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def _scene(height: int, width: int, pattern: str = "random500"):
    """The scene's image (HxWx3 uint8) and ``pattern``'s sparse map of its GT (HxW metres)."""
    from accuracy import SYNTHETIC_PATTERNS

    from depthkit.data.sparse import make_sparse
    from depthkit.data.synthetic import render_scene

    scene = render_scene(20000003, height, width, kind="outdoor")
    name, options = SYNTHETIC_PATTERNS[pattern]
    return scene.image, make_sparse(scene.depth, name, 0, intrinsics=scene.intrinsics, **options)


def measure(checkpoint, stages: str, method: str | None, threads: int, size: tuple[int, int], repeats: int,
            pattern: str = "random500", sharpen_config: tuple[str, dict] = ("as shipped", {})) -> dict:
    import torch

    from depthkit import Pipeline
    from depthkit.stages import checkpoint_method

    torch.set_num_threads(threads)
    options = {"sharpen": {"config": sharpen_config[1]}} if "sharpen" in stages and sharpen_config[1] else None
    pipe = Pipeline(stages=stages, checkpoint=checkpoint, method=method, stage_options=options)
    image, sparse = _scene(*size, pattern)
    pipe(image, sparse)  # warm-up
    times, splits = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out = pipe(image, sparse)
        times.append(time.perf_counter() - start)
        stats = getattr(pipe.stages[0], "last_stats", {}) or {}
        engine = float(stats.get("prefix_seconds", 0.0)) + float(stats.get("suffix_seconds", 0.0))
        splits.append({"engine_s": engine, "refine_s": float(stats.get("refine_seconds", 0.0)),
                       "complete_s": float(stats.get("seconds", float("nan")))})
    learned = bool(splits) and not math.isnan(splits[0]["complete_s"])
    return {"stages": stages, "method": method or checkpoint_method(checkpoint), "sparse": pattern,
            "sharpen_config": sharpen_config[0] if "sharpen" in stages else None,
            "threads": threads, "height": size[0], "width": size[1],
            "median_s": statistics.median(times), "runs_s": times,
            # False: the sharpen stage left the frame as completed without its UNet (SharpenStage.leaves_as_input)
            "sharpen_unet": ("discrepancy" in out.stages["sharpen"].extras) if "sharpen" in out.stages else None,
            "complete_engine_s": statistics.median(s["engine_s"] for s in splits) if learned else None,
            "complete_refine_s": statistics.median(s["refine_s"] for s in splits) if learned else None,
            "complete_total_s": statistics.median(s["complete_s"] for s in splits) if learned else None}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"## Default checkpoint speed ({m.get('cpu') or m['platform']}, {m['cpu_count']} cores)", "",
             f"{report['date']}, `{report['command']}`; checkpoint `{report['checkpoint']}`; median of "
             f"{report['repeats']} calls after a warm-up; load average {report['load_average']} at the start.", "",
             "| stages | sharpen config | completion method | sparse | size | threads | s / image | "
             "complete: engine s | complete: refiner s | complete: total s | sharpener's UNet ran |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in report["rows"]:
        split = [("–" if r.get(k) is None else f"{r[k]:.2f}")
                 for k in ("complete_engine_s", "complete_refine_s", "complete_total_s")]
        lines.append(f"| {r['stages']} | {r.get('sharpen_config') or '–'} | {r['method']} | {r.get('sparse', 'random500')} | {r['width']}x{r['height']} | "
                     f"{r['threads']} | {r['median_s']:.2f} | {' | '.join(split)} | "
                     f"{ {None: '–', True: 'yes', False: 'no'}[r.get('sharpen_unet')]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Speed of the embedded default checkpoint on a CPU.")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the embedded default)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--sizes", type=int, nargs="+", default=[640, 320], help="image widths (3:4 images)")
    p.add_argument("--patterns", default="random500",
                   help="comma-separated sparse patterns of benchmarks/accuracy.py (default random500)")
    p.add_argument("--sharpen-config", action="append", default=None, metavar="NAME=JSON",
                   help="settings of the sharpener's config over the checkpoint's (repeatable: each one's rows run "
                        "side by side with the others'; default: the checkpoint's own, 'as shipped')")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=OUT)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    for option, values, least, unit in (("--threads", args.threads, 1, "torch CPU threads"),
                                        ("--sizes", args.sizes, 2, "pixels wide (3:4 images)"),
                                        ("--repeats", [args.repeats], 1, "timed calls after the warm-up")):
        low = [v for v in values if v < least]
        if low:  # refused before the checkpoint loads: torch's bare RuntimeError, or no median after the warm-up
            p.error(f"{option} must be >= {least} {unit}; received {' '.join(map(str, values))}.")
    for option, values in (("--threads", args.threads), ("--sizes", args.sizes)):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:  # each repeat would time the same rows again, as rows of their own
            p.error(f"{option} must be distinct (each value is its own rows); received {' '.join(map(str, values))} "
                    f"(repeated: {' '.join(map(str, twice))}).")
    from accuracy import SYNTHETIC_PATTERNS, pattern_names
    from sharpen_switches import parse_variant

    from depthkit.data.sparse import SAMPLERS

    try:
        patterns = pattern_names(args.patterns)
    except ValueError as err:
        p.error(str(err))
    scene_free = [n for n in SYNTHETIC_PATTERNS if SYNTHETIC_PATTERNS[n][0] in SAMPLERS]
    if set(patterns) - set(scene_free):  # stereo_sgbm matches the scene's rendered right view, not its GT
        p.error(f"--patterns: {sorted(set(patterns) - set(scene_free))} cannot be drawn from a scene's GT here; "
                f"choose from {', '.join(scene_free)}")
    from depthkit.sharpen.config import SharpDepthConfig

    configs = {"as shipped": {}}
    if args.sharpen_config:
        try:
            parsed = [parse_variant(v, "--sharpen-config") for v in args.sharpen_config]
        except ValueError as err:
            p.error(str(err))
        names = [name for name, _ in parsed]
        if len(set(names)) < len(names):
            p.error(f"--sharpen-config: each NAME once; {sorted({n for n in names if names.count(n) > 1})} given twice")
        configs = dict(parsed)
    for name, config in configs.items():
        try:
            SharpDepthConfig.from_dict(config)  # a bad key or value stops here, before anything is timed
        except ValueError as err:
            p.error(f"--sharpen-config {name!r}: {err}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from depthkit.checkpoints import CheckpointRef, checkpoint_identity
    from depthkit.stages import checkpoint_method

    ref = CheckpointRef.open(args.checkpoint) if args.checkpoint else CheckpointRef.default()
    if ref is None:
        p.error("no embedded default checkpoint in this install; pass --checkpoint DIR")
    load_average = round(os.getloadavg()[0], 1)  # the table says "at the start": before anything is timed
    rows = []
    for threads in args.threads:
        for width in args.sizes:
            methods = [None] + (["sdim"] if ref.has_part("complete") and checkpoint_method(ref) != "sdim" else [])
            for method in methods:
                for pattern in patterns:
                    runs = [("complete", ("as shipped", {}))]
                    if "sharpen" in ref.stages:
                        runs += [("complete,sharpen", item) for item in configs.items()]
                    for stages, config in runs:
                        rows.append(measure(ref, stages, method, threads, (width * 3 // 4, width), args.repeats,
                                            pattern, config))
                        print(json.dumps(rows[-1]))
    report = {"benchmark": "default_speed", **run_info(argv, __file__), "checkpoint": str(ref.root),
              "checkpoint_identity": checkpoint_identity(ref.root),  # its files' hash: a retrained folder differs
              "repeats": args.repeats, "load_average": load_average, "rows": rows}
    write_results(args.out, "default_speed", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
