"""Choose a sharpener's run-time switches on the synthetic **val** split: every variant on every sparse pattern.

Usage (from the repository root; ~1 min per pattern at 12 scenes on one CPU thread, however many variants differ
only in the run-time limits)::

    python benchmarks/sharpen_switches.py                       # checkpoints/default's sharpener, four variants
    python benchmarks/sharpen_switches.py --grid --scenes 24    # the 27-variant grid the shipped switches came from
    python benchmarks/sharpen_switches.py --sharpen runs/default_sharpen_gt/final --scenes 12 \\
        --variant 'band 2={"change_band_px": 2}' \\
        --variant 'band 2, near 8={"change_band_px": 2, "keep_near_measured_px": 8}'

The metric input of every scene is the completion of ``--checkpoint`` (the embedded default by default) without
language-model queries (``query_budget 0``: its dense refiner on ``guided``, equal to the full completion within
0.1 %), computed once per scene and pattern (kept in ``--work-dir`` when given, by the sharpen trainer's
:class:`~depthkit.sharpen.train.MetricCache`). The sharpener of ``--sharpen`` (a
checkpoint folder with a ``sharpen/`` part or a training run's ``final/``) is built by the sharpen stage's own
builder, so a variant is exactly a ``config`` stage option (overrides of single
:class:`~depthkit.sharpen.config.SharpDepthConfig` fields on top of the checkpoint's manifest options and stored
switches); an empty object (``--variant 'shipped={}'``) measures the checkpoint as the pipeline runs it (since
session 19 with its ``keep_placed``: the pixels the completion's fills placed keep their depth). Variants
whose overrides differ only in the run-time limits
(:data:`~depthkit.sharpen.limits.LIMIT_FIELDS`) share one UNet pass per scene
(:meth:`~depthkit.sharpen.stage.SharpenStage.run_limits`, equal to the Pipeline's output for each).

The val split is the one to choose on: the test split is kept for ``benchmarks/accuracy.py``. For each variant and
pattern: MAE (m) of input and output with the change in per cent, and DBE accuracy (px) of both; the goal of the
embedded default (issue 13) is a better DBE with the MAE within 2 %. Writes ``<out>/sharpen_switches.{json,md}``
(the JSON with :func:`checkpoint_identities`: which weights ran);
``--out`` defaults to ``benchmarks/results/``, and with ``--grid`` to ``benchmarks/results/sharpen_switches_grid/``
(where the grid's results live), so a grid run never replaces ``results/sharpen_switches.{json,md}``.

``--pass1 gt`` replaces the sharpener's pass 1 (the Lotus prediction its discrepancy and gate come from) by the
scene's GT, normalised with the input's own range: a generous oracle (a Lotus predicts depth only up to scale and
shift), how far a perfect pass 1 would take this sharpener's pass 2 under each variant (every random draw stays the
one the sharpener makes, so the two runs pair scene by scene).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results, accuracy
from _results import run_info, run_main, write_results  # noqa: E402
from accuracy import SYNTHETIC_PATTERNS, add_scene_options, parse_scene_options  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "checkpoints"))  # the default's bar: checkpoints/assemble_default.py
from assemble_default import SHARPEN_MAE_TOLERANCE, sharpener_meets_bar  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
GRID_OUT = OUT / "sharpen_switches_grid"
"""Where a ``--grid`` run writes without ``--out``."""
# the variants the shipped switches were checked with (name -> config overrides; the first three are those of
# benchmarks/results/sharpen_switches.md, session 10's check): session 9's choice, the distance weight alone, session
# 10's choice, and the shipped one (session 10's + the dense-frame rule of session 12, dense_measured_fraction 0.4,
# checked in benchmarks/results/sharpen_switches_dense/). The wider grid session 10 chose from (checkpoints/README.md)
# varied range 0/2/3 px, distance weight 8/16/24 px and cap none/32/48 px. Each names every limit field: a variant
# overrides single fields of the checkpoint as shipped.
_BAND = {"change_band_px": 3, "change_band_jump": 0.2, "dense_measured_fraction": 0.0,
         "change_within_measured_hull": False, "keep_scanline_frames": False}
_SESSION_10 = {**_BAND, "keep_near_measured_px": 24, "change_range_px": 3, "change_within_measured_px": 32}
DEFAULT_VARIANTS = {
    "band 3 px, near 16 px": {**_BAND, "keep_near_measured_px": 16, "change_range_px": 0,
                              "change_within_measured_px": 0},
    "band 3 px, near 24 px": {**_BAND, "keep_near_measured_px": 24, "change_range_px": 0,
                              "change_within_measured_px": 0},
    "band 3 px, near 24 px, range 3 px, within 32 px": _SESSION_10,
    "band 3 px, near 24 px, range 3 px, within 32 px, dense 0.4": {**_SESSION_10, "dense_measured_fraction": 0.4},
}



def grid_variants() -> dict[str, dict]:
    """The 27-variant grid the shipped switches were chosen from (``--grid``; checkpoints/README.md): band 3 px /
    jump 0.2 with range 0/2/3 px x distance weight 8/16/24 px x cap none/32/48 px."""
    grid = {}
    for rng in (0, 2, 3):
        for near in (8, 16, 24):
            for within in (0, 32, 48):
                name = f"range {rng}, near {near}" + (f", within {within}" if within else "")
                grid[name] = {**_BAND, "keep_near_measured_px": near, "change_range_px": rng,
                              "change_within_measured_px": within}
    return grid


def rank(rows: dict[str, dict]) -> list[tuple[str, int, int, float]]:
    """Variants best first by the rule the shipped switches were picked with: most patterns meeting the goal, then
    most with DBE accuracy better by >= 1 % (MAE within 2 %), then the lowest mean MAE change. Returns ``(name, met,
    met by 1 %, mean change)``."""
    ranked = []
    for name, per in rows.items():
        met = sum(r["goal_met"] for r in per.values())
        met1 = sum(r["dbe_acc"] <= 0.99 * r["input_dbe_acc"] and r["change"] <= SHARPEN_MAE_TOLERANCE
                   for r in per.values())
        ranked.append((name, met, met1, sum(r["change"] for r in per.values()) / max(1, len(per))))
    return sorted(ranked, key=lambda t: (-t[1], -t[2], t[3]))


def standard_error(differences) -> float | None:
    """Standard error of the mean of per-scene differences (NaN ones, scenes without GT edges, dropped): how far the
    mean change could move by the choice of scenes alone; None with fewer than two."""
    import numpy as np

    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d)]
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None


def _se_text(se: float | None) -> str:
    return "± n/a" if se is None else f"± {se:.3f}"


def result_cell(r: dict) -> str:
    """A results table's cell for one variant and pattern (a ``rows`` entry): MAE change / DBE accuracy input →
    output ± its standard error, in bold when the goal is met."""
    cell = (f"{100 * r['change']:+.1f} % / {r['input_dbe_acc']:.3f} → {r['dbe_acc']:.3f} "
            f"{_se_text(r['dbe_change_se'])}")
    return f"**{cell}**" if r["goal_met"] else cell


def parse_variant(text: str, flag: str = "--variant") -> tuple[str, dict]:
    """``'NAME={"key": value, ...}'`` → ``(NAME, overrides)``; raises ValueError saying what is expected (of the
    option ``flag``)."""
    name, sep, body = text.partition("=")
    try:
        overrides = json.loads(body) if sep else None
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} {text!r}: the part after '=' is not JSON ({err}).") from None
    if not sep or not name.strip() or not isinstance(overrides, dict):
        raise ValueError(f"{flag} takes NAME=JSON-OBJECT, e.g. 'band 2={{\"change_band_px\": 2}}'; "
                         f"received {text!r}.")
    return name.strip(), overrides


def parse_variants(texts: list[str], flag: str = "--variant") -> dict[str, dict]:
    """Every ``NAME=JSON`` of a repeatable ``flag`` (:func:`parse_variant`) → ``{NAME: overrides}`` in the given
    order; ValueError for a NAME given twice (one would silently replace the other)."""
    parsed = [parse_variant(text, flag) for text in texts]
    names = [name for name, _ in parsed]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{flag}: each NAME once; {twice} given twice (the last would silently replace the "
                         "first); rename one.")
    return dict(parsed)


def score(depth, gt) -> tuple[float, float]:
    """(MAE in m, DBE accuracy in px) of ``depth`` against ``gt`` over its valid pixels."""
    from depthkit.metrics import dbe_metrics, depth_metrics

    valid = gt > 0
    return float(depth_metrics(depth, gt, valid)["mae"]), float(dbe_metrics(depth, gt, valid=valid)["dbe_acc"])


def add_sharpener_options(p: argparse.ArgumentParser) -> None:
    """The options of a benchmark that sharpens the completion of val scenes: ``--sharpen``, ``--checkpoint``,
    ``--work-dir`` and :func:`accuracy.add_scene_options` (12 scenes, every pattern); read them back with
    :func:`accuracy.parse_scene_options`, then :func:`open_sharpener`."""
    p.add_argument("--sharpen", type=Path, default=ROOT / "checkpoints" / "default",
                   help="checkpoint (or run's final/) whose sharpen/ part is measured (default: the embedded default)")
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "default",
                   help="checkpoint whose completer makes the metric input (default: the embedded default)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the metric inputs here (reused by reruns)")
    add_scene_options(p, "val", 12, "all", OUT)


def open_sharpener(p: argparse.ArgumentParser, args: argparse.Namespace):
    """``(CheckpointRef of --sharpen, MetricCache of --checkpoint's completion without queries)``; ``parser.error``
    when --sharpen has no sharpen/ part."""
    from depthkit.checkpoints import CheckpointRef
    from depthkit.sharpen.teachers import build_metric_source
    from depthkit.sharpen.train import MetricCache

    ref = CheckpointRef.open(str(args.sharpen))
    if not ref.has_part("sharpen"):
        p.error(f"{args.sharpen} has no sharpen/ part; pass a checkpoint or a sharpen run's final/ folder.")
    return ref, MetricCache(build_metric_source("complete:sdim", checkpoint=str(args.checkpoint), query_budget=0),
                            args.work_dir)


def checkpoint_identities(args: argparse.Namespace) -> dict:
    """Which weights ran, for the report: ``sharpen_identity`` (of ``--sharpen``) and ``checkpoint_identity`` (of
    ``--checkpoint``, the completer of the metric input), each the resolved folder and a hash of its files
    (:func:`depthkit.checkpoints.checkpoint_identity`: retraining into the same folder changes it)."""
    from depthkit.checkpoints import checkpoint_identity

    return {"sharpen_identity": checkpoint_identity(args.sharpen),
            "checkpoint_identity": checkpoint_identity(args.checkpoint)}


def variant_groups(p: argparse.ArgumentParser, ref, variants: dict[str, dict], options: dict | None = None) -> list:
    """``[(stage, {name: limit overrides})]``: one sharpen stage of checkpoint ``ref`` per set of ``variants`` that
    differ only in the run-time limits (:data:`depthkit.sharpen.limits.LIMIT_FIELDS`), so they share one UNet pass
    per scene (``SharpenStage.run_limits``); each stage built with ``options`` and its variants' other fields as its
    ``config``. A bad variant is a ``p.error`` naming it, before any scene runs."""
    from depthkit.sharpen.limits import LIMIT_FIELDS
    from depthkit.sharpen.stage import build_sharpen_stage

    groups: dict[str, tuple[object, dict]] = {}
    for name, cfg in variants.items():
        rest = {k: v for k, v in cfg.items() if k not in LIMIT_FIELDS}
        key = json.dumps(rest, sort_keys=True)
        try:
            if key not in groups:
                groups[key] = (build_sharpen_stage(ref, options={**(options or {}), "config": rest}), {})
            limits = {k: v for k, v in cfg.items() if k in LIMIT_FIELDS}
            groups[key][0].limit_configs({name: limits})  # a bad value fails here, before any scene runs
        except ValueError as err:
            p.error(f"--variant {name!r}: {err}")
        groups[key][1][name] = limits
    return list(groups.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Score a sharpener's run-time switches on the synthetic val split.")
    add_sharpener_options(p)
    p.add_argument("--variant", action="append", default=None, metavar="NAME=JSON",
                   help="a variant: config overrides as a JSON object (repeatable; default: the four "
                        "DEFAULT_VARIANTS, or only the grid with --grid)")
    p.add_argument("--grid", action="store_true",
                   help="score the 27-variant grid the shipped switches were chosen from, besides any --variant (one "
                        "UNet pass per scene serves every variant that differs only in the limits); without --out it "
                        "writes into benchmarks/results/sharpen_switches_grid/")
    p.add_argument("--pass1", choices=("model", "gt"), default="model",
                   help="pass 1 (the discrepancy pass): the sharpener's own Lotus (default), or the scene's GT "
                        "depth, normalised as the input is (the input where the GT has none): an oracle for how far "
                        "a perfect pass 1 would take this sharpener")
    p.set_defaults(out=None)  # benchmarks/results/, or GRID_OUT with --grid
    argv = sys.argv[1:] if argv is None else list(argv)
    args, patterns = parse_scene_options(p, argv)
    if args.out is None:
        args.out = GRID_OUT if args.grid else OUT
    import numpy as np

    from depthkit.data.datasets.synthetic import SyntheticDataset

    try:
        variants = parse_variants(args.variant) if args.variant else {}
    except ValueError as err:
        p.error(str(err))
    variants = {**(grid_variants() if args.grid else {}), **variants} or dict(DEFAULT_VARIANTS)
    ref, metric = open_sharpener(p, args)
    identities = checkpoint_identities(args)
    groups = variant_groups(p, ref, variants)

    rows = {name: {} for name in variants}
    for pattern in patterns:
        kind, kwargs = SYNTHETIC_PATTERNS[pattern]
        data = SyntheticDataset(split="val", length=args.scenes, sparse_pattern=kind, sparse_kwargs=kwargs)
        scores = {name: [] for name in variants}
        for i in range(len(data)):
            item = data[i]
            d, placed = metric.with_placed(item["image"], item["sparse"], f"val_{pattern}_{i}")
            before = score(d, item["depth"])
            given = item["depth"] if args.pass1 == "gt" else None
            for stage, limits in groups:
                for name, out in stage.run_limits(item["image"], item["sparse"], d, limits, placed=placed,
                                                  pass1_depth=given).items():
                    scores[name].append(before + score(out, item["depth"]))
        for name, s in scores.items():
            per_scene = np.asarray(s, np.float64)
            mae_in, dbe_in, mae_out, dbe_out = (float(v) for v in np.nanmean(per_scene, axis=0))
            r = {"input_mae": mae_in, "mae": mae_out, "change": mae_out / mae_in - 1, "input_dbe_acc": dbe_in,
                 "dbe_acc": dbe_out, "dbe_change_se": standard_error(per_scene[:, 3] - per_scene[:, 1])}
            rows[name][pattern] = r = {**r, "goal_met": bool(sharpener_meets_bar(r)), "per_scene": per_scene.tolist()}
            print(f"{pattern:11s} {name:38s} MAE {mae_in:.4f} -> {mae_out:.4f} ({100 * r['change']:+.1f} %)  "
                  f"DBE-acc {dbe_in:.3f} -> {dbe_out:.3f} (change {_se_text(r['dbe_change_se'])})", flush=True)

    report = {"benchmark": "sharpen_switches", "sharpen": str(args.sharpen), "checkpoint": str(args.checkpoint),
              **identities, **run_info(argv, __file__), "threads": args.threads, "split": "val", "scenes": args.scenes, "pass1": args.pass1, "variants": variants, "results": rows}
    lines = [f"## Sharpener run-time switches: {args.sharpen}", "",
             f"{report['date']}, `{report['command']}`; first {args.scenes} scenes of the synthetic **val** split "
             "(240x320), metric input = the completion without queries. Per cell: MAE change against the input / "
             "DBE accuracy input → output (px) ± the standard error of the per-scene DBE change (a change smaller "
             "than about twice it is within what the choice of scenes alone gives); **bold** = the goal (DBE better, "
             "MAE within 2 %) met. Rows best first by the rule the shipped switches were picked with (`rank` in the "
             "script): goals met, then DBE better by >= 1 %, then the mean MAE change."
             + (" **Pass 1 is the GT** (`--pass1 gt`): an oracle, not the sharpener as shipped." if args.pass1 == "gt"
                else ""), "",
             "| variant | " + " | ".join(patterns) + " | goal met | DBE >= 1 % | mean MAE |",
             "|---|" + "---:|" * (len(patterns) + 3)]
    ranked = rank(rows)
    report["ranking"] = [{"variant": n, "goal_met": m, "dbe_1pc": m1, "mean_change": c} for n, m, m1, c in ranked]
    for name, met, met1, mean_change in ranked:
        cells = []
        for pattern in patterns:
            cells.append(result_cell(rows[name][pattern]))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {met}/{len(patterns)} | {met1} | "
                     f"{100 * mean_change:+.2f} % |")
    write_results(args.out, "sharpen_switches", report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
