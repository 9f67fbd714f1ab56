"""Peak memory (RSS) and time of each pipeline stage on one 8000x6000 input with the tiny checkpoint.

Each stage runs in its own subprocess (so its peak RSS is its own); the sharpen stage gets a constant metric depth
as input. Writes ``<out>/<name>.json`` and ``.md`` (default ``benchmarks/results/memory_bound``, the committed
6000x8000 run: give a reduced run its own ``--out`` or ``--name``). Run once, guarded (it allocates GBs)::

    (ulimit -v 20000000; timeout 1500 python benchmarks/memory_bound.py)

Usage: ``python benchmarks/memory_bound.py [--height 6000 --width 8000] [--out DIR] [--name NAME]``, e.g. a quick
check: ``python benchmarks/memory_bound.py --height 120 --width 160 --out /tmp/mem``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import results_name, run_info, run_main, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r'''
import json, resource, sys, time
import numpy as np
from depthkit import Pipeline
stage, ck, h, w = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
sparse = np.where(rng.random((h, w)) < 0.001, rng.uniform(1, 20, (h, w)), 0).astype(np.float32)
pipe = Pipeline.from_pretrained(ck, stages=(stage,))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
out = pipe(image, sparse) if stage == "complete" else pipe(image, sparse, depth=np.full((h, w), 5.0, np.float32))
seconds = time.perf_counter() - t0
print(json.dumps({"stage": stage, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_run_mb": base / 1024, "finite": bool(np.isfinite(out.depth).all()),
                  "shape": list(out.depth.shape)}))
'''


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per stage")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results (default benchmarks/results)")
    parser.add_argument("--name", type=results_name, default="memory_bound",
                        help="file stem: writes NAME.json and NAME.md in --out (default memory_bound, the committed "
                             "6000x8000 run; give a reduced run another name or --out)")
    return parser.parse_args(argv)


def markdown(result: dict) -> list[str]:
    """The table of a run's :func:`main` report."""
    (height, width), cap = result["input"], result["max_working_side"]
    lines = [f"# Peak memory per stage, {height}x{width} input, tiny checkpoint, CPU", "",
             f"Working side cap (depthkit.checkpoints.MAX_WORKING_SIDE): {cap} px.", "",
             "| stage | peak RSS (MB) | RSS before the run (MB) | seconds | output finite |", "|---|---|---|---|---|"]
    for r in result["stages"]:
        if "error" in r:
            lines.append(f"| {r['stage']} | failed: {r['error']} | | {r['wall_s']:.0f} | |")
        else:
            lines.append(f"| {r['stage']} | {r['peak_rss_mb']:.0f} | {r['rss_before_run_mb']:.0f} | "
                         f"{r['seconds']:.1f} | {r['finite']} |")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    from depthkit.checkpoints import MAX_WORKING_SIDE
    from depthkit.cli import main as cli

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ck = Path(tmp) / "ck"
        cli(["init-checkpoint", "--tiny", str(ck)])
        for stage in ("complete", "sharpen"):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, stage, str(ck), str(args.height), str(args.width)],
                                  capture_output=True, text=True, timeout=args.timeout)
            if proc.returncode != 0:
                rows.append({"stage": stage, "error": proc.stderr.strip().splitlines()[-1:],
                             "wall_s": time.perf_counter() - t0})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    result = {"input": [args.height, args.width], "checkpoint": "tiny (depthkit init-checkpoint --tiny)",
              "max_working_side": MAX_WORKING_SIDE, "device": "cpu",
              "parent_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "stages": rows}
    write_results(args.out, args.name, {**run_info(argv, __file__), **result}, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
