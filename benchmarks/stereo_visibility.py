"""Speed of :func:`depthkit.data.sparse.seen_by_right_camera` (the stereo simulator's visibility): the bucketed
search against the scan it replaced, side by side on one rendered indoor scene per size, with KITTI's 0.54 m
baseline (the widest disparity range: a room at 0.5-10 m).

Usage (from the repository root)::

    python benchmarks/stereo_visibility.py                        # 240x320, 480x640, 1080x1920
    python benchmarks/stereo_visibility.py --sizes 240x320 --repeats 5

Each row checks that both give the same array (the run stops otherwise) and reports the best of ``--repeats``
calls (seconds). The scan is the same module's ``_covered_by_scan``, which the search still uses where covers crowd;
it is forced by making a candidate pair infinitely costly. Writes ``<out>/stereo_visibility.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import run_info, run_main, write_results  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is HxW in pixels, e.g. 480x640; received {text!r}") from None
    if h < 2 or w < 2:
        raise argparse.ArgumentTypeError(f"a size needs at least 2x2 pixels; received {text!r}")
    return h, w


def _best(fn, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def measure(size: tuple[int, int], repeats: int, seed: int = 2, baseline: float = 0.54) -> dict:
    import depthkit.data._stereo_visibility as sv
    from depthkit.data.sparse import seen_by_right_camera
    from depthkit.data.synthetic import render_scene

    scene = render_scene(seed, *size, "indoor")
    ok = scene.depth > 0
    disp = np.where(ok, scene.intrinsics.fx * baseline / np.where(ok, scene.depth, 1.0), 0.0)
    cost = sv._PAIR_COST
    try:
        search_s, search = _best(lambda: seen_by_right_camera(disp, ok), repeats)
        sv._PAIR_COST = np.inf  # every block takes the scan
        scan_s, scan = _best(lambda: seen_by_right_camera(disp, ok), repeats)
    finally:
        sv._PAIR_COST = cost
    if not np.array_equal(search, scan):
        raise SystemExit(f"stereo_visibility: the search and the scan differ at {size[0]}x{size[1]}")
    values = disp[ok]
    return {"size": list(size), "disparity_range_px": float(values.max() - values.min()), "scan_s": scan_s,
            "search_s": search_s, "speedup": scan_s / search_s, "equal": True}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_size, nargs="+", default=[(240, 320), (480, 640), (1080, 1920)])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=OUT)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1; received {args.repeats}")
    load = os.getloadavg()[0]
    rows = [measure(size, args.repeats) for size in args.sizes]
    report = {"benchmark": "stereo_visibility", **run_info(argv, __file__),
              "load_average": [load, os.getloadavg()[0]], "rows": rows}
    lines = ["# Stereo visibility speed (`seen_by_right_camera`)", "",
             f"{report['date']}, `{report['command']}`; load average {load:.1f} before, "
             f"{report['load_average'][1]:.1f} after, on {os.cpu_count()} CPUs. One indoor scene per size, "
             "0.54 m baseline; best of the repeats; the two give the same array in every row.", "",
             "| size | disparity range (px) | scan (s) | bucketed search (s) | speed-up |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['size'][0]}x{r['size'][1]} | {r['disparity_range_px']:.0f} | {r['scan_s']:.3f} | "
              f"{r['search_s']:.3f} | {r['speedup']:.0f}x |" for r in rows]
    write_results(args.out, "stereo_visibility", report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
