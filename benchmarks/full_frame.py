"""Full-frame completion speed: a whole 640x480 frame through the complete stage, split into model and classical parts.

Usage (from the repository root)::

    python benchmarks/full_frame.py --threads 1                   # writes results/engine_full_frame_1t.{json,md}
    python benchmarks/full_frame.py --threads 2 --frame-layouts grid_token,text,rope

:func:`full_frame` times :class:`depthkit.complete.stage.CompleteVLMStage` with its default query plan (``query_budget``
1024) and the random-weight tiny checkpoint of ``depthkit init-checkpoint --tiny`` in each pixel_reference layout,
split into the model (the engine's prefix pass and its query batches) and the classical parts (``prior_map``,
``fill_dense`` or ``fill_residual``, ``confidence_map``, the rest), with ``--threads`` threads for torch and for
``guided``. ``benchmarks/engine.py`` includes the same section in its report.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import results_name, run_info, run_main, write_results  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def frame_layouts(text: str, allow_empty: bool = False) -> list[str]:
    """A ``--frame-layouts`` value (comma-separated ``pixel_reference`` layouts) → the layouts; raises ValueError
    naming what is allowed (the scripts pass it to ``parser.error``, before any timing). ``allow_empty``: '' is
    allowed and means no full-frame timing (``engine.py``)."""
    from depthkit.complete.prompts import PIXEL_REFERENCES

    layouts = [x for x in text.split(",") if x]
    unknown = [x for x in layouts if x not in PIXEL_REFERENCES]
    if unknown or not (layouts or allow_empty):
        raise ValueError(f"--frame-layouts takes comma-separated pixel_reference layouts from "
                         f"{', '.join(PIXEL_REFERENCES)}" + (" ('' skips the full-frame timing)" if allow_empty else
                                                              " (at least one)")
                         + f", e.g. grid_token,text; received {text!r}"
                         + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return layouts


def check_at_least(parser: argparse.ArgumentParser, option: str, value, least, what: str) -> None:
    """``parser.error`` (before any timing) when ``value`` of ``option`` is below ``least``: one line naming the
    option, what it takes (``what``) and what was received."""
    if value < least:
        parser.error(f"{option} takes {what}, at least {least}; received {value}.")


def full_frame(layouts: list[str], size: tuple[int, int] = (480, 640), repeats: int = 3, threads: int = 2) -> dict:
    """Time ``CompleteVLMStage.run`` on one ``size`` frame (synthetic indoor scene, 1000 random measured points)
    with the stage's default options and the random-weight tiny checkpoint (``write_tiny``) in each layout; best of
    ``repeats`` after a warm-up, with ``threads`` threads for torch and for ``guided``'s k-d tree queries and weight
    arithmetic (:func:`depthkit.data.baselines.set_guided_workers`). The classical functions are timed by wrapping
    them where the stage looks them up."""
    import tempfile

    from depthkit.complete import query_plan
    from depthkit.complete.checkpoint import write_tiny
    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.data.baselines import set_guided_workers
    from depthkit.data.sparse import sample_random_points
    from depthkit.data.synthetic import render_scene

    scene = render_scene(0, *size, kind="indoor")
    sparse = np.asarray(sample_random_points(scene.depth, 1000, 0), np.float32)
    spent: dict = {}

    def timing(name, fn):
        def wrapped(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return wrapped

    names = ("prior_map", "fill_dense", "fill_residual", "confidence_map")
    originals = {n: getattr(query_plan, n) for n in names}
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    set_guided_workers(threads)
    out = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for layout in layouts:
                extra = {"mask_text": "none"} if layout == "grid_token" else {}
                write_tiny(Path(tmp) / layout, pixel_reference=layout, **extra)
                stage = CompleteVLMStage.from_checkpoint(Path(tmp) / layout)
                stage.run(scene.image, sparse)  # warm-up
                best = None
                try:
                    for name in names:
                        setattr(query_plan, name, timing(name, originals[name]))
                    for _ in range(repeats):
                        spent.clear()
                        t = time.perf_counter()
                        stage.run(scene.image, sparse)
                        seconds = time.perf_counter() - t
                        if best is None or seconds < best["seconds"]:
                            st = stage.last_stats
                            model = st["prefix_seconds"] + st["suffix_seconds"]
                            best = {"seconds": seconds, "queries": st["n_queries"], "fill": st["fill"],
                                    "model_seconds": model, "prefix_seconds": st["prefix_seconds"],
                                    "queries_seconds": st["suffix_seconds"],
                                    "shared_suffix_tokens": st["shared_suffix_tokens"], "batch_size": st["batch_size"],
                                    **{f"{n}_seconds": spent.get(n, 0.0) for n in names}}
                            best["other_seconds"] = seconds - model - sum(spent.get(n, 0.0) for n in names)
                finally:
                    for name in names:
                        setattr(query_plan, name, originals[name])
                out[layout] = best
                print(f"full frame {size[1]}x{size[0]}, {layout}, {threads} thread(s): {best['seconds']:.2f} s (model "
                      f"{best['model_seconds']:.2f} s)", flush=True)
    finally:
        torch.set_num_threads(torch_threads)
        set_guided_workers(None)
    return {"size": list(size), "sparse_points": int((sparse > 0).sum()), "threads": threads, "repeats": repeats,
            "layouts": out}


def full_frame_markdown(ff: dict) -> list[str]:
    """The full-frame section of the report: one row per layout."""
    threads = ff.get("threads")
    lines = [f"Full frame {ff['size'][1]}x{ff['size'][0]} through CompleteVLMStage (default query plan, "
             f"{ff['sparse_points']} measured points, random-weight tiny checkpoint, best of {ff.get('repeats', 3)}"
             + (f", {threads} thread(s) for torch and guided" if threads else "") + "; seconds):", "",
             "| layout | queries | total | model: prefix | model: queries | prior_map | fill_dense / fill_residual | "
             "confidence_map | other |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in ff["layouts"].items():
        fill = v["fill_dense_seconds"] + v.get("fill_residual_seconds", 0.0)
        lines.append(f"| {name} | {v['queries']} | **{v['seconds']:.2f}** | {v['prefix_seconds']:.2f} | "
                     f"{v['queries_seconds']:.2f} | {v['prior_map_seconds']:.2f} | {fill:.2f} "
                     f"| {v['confidence_map_seconds']:.2f} | {v['other_seconds']:.2f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and guided (default 1)")
    parser.add_argument("--frame-layouts", default="grid_token,text",
                        help="pixel_reference layouts to time, from text, rope, grid_token (default grid_token,text)")
    parser.add_argument("--frame-repeats", type=int, default=5, help="runs to take the best of (default 5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", type=results_name, default=None,
                        help="output file stem: NAME.json and NAME.md in --out (default engine_full_frame_<threads>t)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    try:
        layouts = frame_layouts(args.frame_layouts)
    except ValueError as err:
        parser.error(str(err))
    check_at_least(parser, "--threads", args.threads, 1, "a number of threads for torch and guided")
    check_at_least(parser, "--frame-repeats", args.frame_repeats, 1, "a number of timed runs after the warm-up")
    info = run_info(argv, __file__)
    report = {
        **info, "machine": {**info["machine"], "load_average": os.getloadavg()},
        "full_frame": full_frame(layouts, repeats=args.frame_repeats, threads=args.threads),
    }
    report["machine"]["load_average_after"] = os.getloadavg()
    load = report["machine"]["load_average"][0], report["machine"]["load_average_after"][0]
    text = "\n".join([f"## Full-frame completion speed ({args.threads} thread(s))", "",
                      f"{report['date']}, `{report['command']}`; load average {load[0]:.1f} before, {load[1]:.1f} "
                      f"after, on {os.cpu_count()} CPUs.", ""] + full_frame_markdown(report["full_frame"])) + "\n"
    paths = write_results(args.out, args.name or f"engine_full_frame_{args.threads}t", report, text)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
