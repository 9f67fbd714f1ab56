"""The sharpener at several processing sizes, on synthetic **val** scenes rendered larger than it was trained at.

Usage (from the repository root; ~7 min per pattern at 12 scenes and 480x640 on this CPU, most of it the native
size)::

    python benchmarks/sharpen_resolution.py                          # 480x640, sides 320,400,480,native
    python benchmarks/sharpen_resolution.py --size 375x1242 --sides 320,480 --patterns lidar64 --scenes 6
    python benchmarks/sharpen_resolution.py --sides 480 --patterns lidar64 \
        --variant 'shipped={}' --variant 'scan-line frames kept={"keep_scanline_frames": true}'
    python benchmarks/sharpen_resolution.py --sides 480 --variant 'shipped={}' --variant 'pass 1 at 320={"pass1_max_side": 320}'

The embedded default's sharpener was trained on 240x320 scenes and its manifest used to run the UNet at a longest
side of 320 whatever the frame's size, so a 640x480 frame was sharpened at 320x240 and the change resized back up.
This scores the same sharpener (``--sharpen``, the checkpoint's own switches, ``keep_placed`` as the Pipeline runs
it) with ``processing_resolution`` set to each of ``--sides`` (``native``: the frame's own longest side), on the
first ``--scenes`` val scenes rendered at ``--size`` (the same scenes as the 240x320 split, at more pixels). The
metric input is ``--checkpoint``'s completion without language-model queries, as in
``benchmarks/sharpen_switches.py`` (kept in ``--work-dir`` when given). Per pattern and side: MAE change against the
input, DBE accuracy (px, at the frame's size) input → output ± the standard error of the per-scene change, whether
the embedded default's goal is met (DBE better, MAE within 2 %), and the median seconds of one sharpen call per
column (each stage's first call, on the first scene, runs once untimed before its timed one; all columns run side by
side in one process; the machine is shared, so compare the columns, not absolutes).
``--variant NAME=JSON`` (repeatable) scores settings of the sharpener's ``config`` (as ``sharpen_switches.py``
takes them) at each side; those that differ only in the run-time limits share one UNet pass per scene and side
(``SharpenStage.run_limits``, and so one time). Without it, one setting: the checkpoint's own, ``as shipped``.
Writes ``<out>/<name>.{json,md}`` (default ``sharpen_resolution``; the JSON with the identities of ``--sharpen`` and
``--checkpoint``: their folders and a hash of their files).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results, accuracy, sharpen_switches
from _results import results_name, run_info, run_main, write_results  # noqa: E402
from accuracy import SYNTHETIC_PATTERNS, parse_scene_options  # noqa: E402
from sharpen_switches import (  # noqa: E402
    _se_text,
    add_sharpener_options,
    checkpoint_identities,
    open_sharpener,
    parse_variants,
    result_cell,
    score,
    sharpener_meets_bar,
    standard_error,
    variant_groups,
)

OUT = Path(__file__).resolve().parent / "results"


def parse_size(text: str) -> tuple[int, int]:
    """``'HxW'`` → (H, W), each at least 32 pixels; ValueError says what is expected."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size takes HEIGHTxWIDTH in pixels, e.g. 480x640; received {text!r}.") from None
    if min(h, w) < 32:
        raise ValueError(f"--size needs at least 32 pixels a side; received {text!r}.")
    return h, w


def parse_sides(text: str, size: tuple[int, int]) -> dict[str, int]:
    """``'320,480,native'`` → ``{label: longest side in pixels}`` (``native`` = the frame's own longest side);
    ValueError for anything else."""
    sides = {}
    for part in (p.strip() for p in text.split(",")):
        if part == "native":
            sides["native"] = max(size)
        elif part.isdigit() and 32 <= int(part) <= 4096:
            sides[part] = int(part)
        else:
            raise ValueError(f"--sides takes comma-separated longest sides (32-4096 pixels) or 'native'; received "
                             f"{text!r}.")
    return sides


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The sharpener at several processing sizes on larger val scenes.")
    add_sharpener_options(p)
    p.add_argument("--size", default="480x640", help="HEIGHTxWIDTH the val scenes are rendered at (default 480x640)")
    p.add_argument("--sides", default="320,400,480,native",
                   help="processing sides to compare: pixels, or 'native' (default 320,400,480,native)")
    p.add_argument("--name", type=results_name, default="sharpen_resolution", help="file stem of the results")
    p.add_argument("--variant", action="append", default=None, metavar="NAME=JSON",
                   help="a setting of the sharpener's config as a JSON object, as sharpen_switches.py takes it "
                        "(repeatable; default: the checkpoint's own, 'as shipped')")
    argv = sys.argv[1:] if argv is None else list(argv)
    args, patterns = parse_scene_options(p, argv)
    try:
        size = parse_size(args.size)
        sides = parse_sides(args.sides, size)
        variants = parse_variants(args.variant) if args.variant else {"as shipped": {}}
    except ValueError as err:
        p.error(str(err))
    import numpy as np

    from depthkit.data.datasets.synthetic import SyntheticDataset

    ref, metric = open_sharpener(p, args)
    identities = checkpoint_identities(args)
    stages = {label: variant_groups(p, ref, variants, {"processing_resolution": side}) for label, side in sides.items()}
    columns = [(label, name) for label in sides for name in variants]
    # a column's name in the results: the side alone with the checkpoint's own setting only, as before --variant
    heads = {(label, name): label if args.variant is None else f"{label}, {name}" for label, name in columns}
    rows: dict[str, dict] = {heads[column]: {} for column in columns}
    warmed: set[int] = set()
    for pattern in patterns:
        kind, kwargs = SYNTHETIC_PATTERNS[pattern]
        data = SyntheticDataset(split="val", length=args.scenes, height=size[0], width=size[1], sparse_pattern=kind,
                                sparse_kwargs=kwargs)
        scores, seconds = {column: [] for column in columns}, {column: [] for column in columns}
        for i in range(len(data)):
            item = data[i]
            d, placed = metric.with_placed(item["image"], item["sparse"], f"val_{size[0]}x{size[1]}_{pattern}_{i}")
            before = score(d, item["depth"])
            for label, groups in stages.items():
                for stage, limits in groups:
                    if id(stage) not in warmed:  # a stage's first call (allocations, kernels) is not timed
                        stage.run_limits(item["image"], item["sparse"], d, limits, placed=placed)
                        warmed.add(id(stage))
                    start = time.perf_counter()
                    outs = stage.run_limits(item["image"], item["sparse"], d, limits, placed=placed)
                    took = time.perf_counter() - start
                    for name, out in outs.items():
                        scores[label, name].append(before + score(out, item["depth"]))
                        seconds[label, name].append(took)
        for label, name in columns:
            per_scene = np.asarray(scores[label, name], np.float64)
            mae_in, dbe_in, mae_out, dbe_out = (float(v) for v in np.nanmean(per_scene, axis=0))
            r = {"input_mae": mae_in, "mae": mae_out, "change": mae_out / mae_in - 1, "input_dbe_acc": dbe_in,
                 "dbe_acc": dbe_out, "dbe_change_se": standard_error(per_scene[:, 3] - per_scene[:, 1]),
                 "seconds": statistics.median(seconds[label, name])}
            rows[heads[label, name]][pattern] = r = {**r, "goal_met": bool(sharpener_meets_bar(r)),
                                                     "per_scene": per_scene.tolist()}
            print(f"{pattern:11s} side {heads[label, name]:7s} MAE {mae_in:.4f} -> {mae_out:.4f} "
                  f"({100 * r['change']:+.1f} %)  "
                  f"DBE-acc {dbe_in:.3f} -> {dbe_out:.3f} ({dbe_out - dbe_in:+.3f} {_se_text(r['dbe_change_se'])}),"
                  f" {r['seconds']:.2f} s", flush=True)

    report = {"benchmark": "sharpen_resolution", "sharpen": str(args.sharpen), "checkpoint": str(args.checkpoint),
              **identities, **run_info(argv, __file__), "split": "val", "scenes": args.scenes, "size": list(size),
              "sides": sides, "variants": variants, "threads": args.threads, "results": rows}
    lines = [f"## The sharpener at several processing sizes: {args.sharpen}", "",
             f"{report['date']}, `{report['command']}`; first {args.scenes} scenes of the synthetic **val** split "
             f"rendered at {size[0]}x{size[1]} (height x width), metric input = the completion without queries, the sharpener as the "
             "Pipeline runs it with `processing_resolution` = the column's longest side. Per cell: MAE change against "
             "the input / DBE accuracy input → output (px, at the frame's size) ± the standard error of the "
             "per-scene DBE change; **bold** = the goal (DBE better, MAE within 2 %) met. Last row: median seconds "
             f"of one sharpen call after an untimed first call of each stage ({args.threads} torch thread(s); compare "
             "columns, the machine is shared).", "",
             "| pattern | " + " | ".join(f"side {head}" for head in rows) + " |",
             "|---|" + "---:|" * len(rows)]
    for pattern in patterns:
        lines.append(f"| {pattern} | " + " | ".join(result_cell(row[pattern]) for row in rows.values()) + " |")
    lines.append("| goals met | " + " | ".join(f"{sum(r['goal_met'] for r in row.values())}/{len(patterns)}"
                                              for row in rows.values()) + " |")
    lines.append("| s / call | " + " | ".join(f"{statistics.median(r['seconds'] for r in row.values()):.2f}"
                                             for row in rows.values()) + " |")
    write_results(args.out, args.name, report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
