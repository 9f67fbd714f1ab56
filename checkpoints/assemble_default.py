"""Assemble the embedded default checkpoint (``checkpoints/default/``) from the runs of ``recipes/default/*.yaml``.

Usage (from the repository root; the full sequence, with the training commands, is in ``checkpoints/README.md``)::

    python checkpoints/assemble_default.py --complete runs/default_complete/final \\
        --refiner runs/default_refine/final --sharpen runs/default_sharpen/final --lotus runs/default_lotus \\
        --out checkpoints/default
    python benchmarks/accuracy.py --patterns all --limit 50 --checkpoint checkpoints/default
    python checkpoints/assemble_default.py ... --accuracy benchmarks/results/accuracy.json   # records the quality

It copies the ``complete/`` part of the completer run's final checkpoint and the ``sharpen/`` part of the sharpener
run's, adds the dense refiner of ``--refiner`` (the final folder of ``recipes/default/refine.yaml``) to the
completer (``complete/refiner.safetensors`` and the ``refiner`` entry of ``complete/complete.json``), keeps each
run's resolved recipe as ``recipes/<stage>.yaml`` (the refiner's as ``recipes/refine.yaml``), and writes ``depthkit.json`` with the stage
options the default runs with. With ``--accuracy`` it also records, per sparse pattern, how the default measured
against ``guided`` (``quality`` in the manifest, which ``depthkit ls`` prints), and it switches off a stage that lost
to its input (issue policy: a stage that makes its input worse is not on by default): a learned completer worse
than ``guided`` on any measured pattern makes the default's ``complete`` method ``guided`` (the learned completer
stays in the checkpoint: ``--method sdim`` runs it). ``depthkit run`` completes only unless
``--stages complete,sharpen`` is given or the manifest's ``default_stages`` (written with ``--accuracy``) name both:
they do when the sharpener lost to its input on no measured pattern (:func:`default_stages`).
``quality["sharpen_passes"]`` records whether it improved DBE accuracy with MAE within 2 % of its input on every
measured sparse pattern (its bar).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

COMPLETE_OPTIONS = {"method": "sdim", "fill": "residual", "occlusion_fill": "auto", "hole_fill": "colour"}
"""The learned completer's run options: answers correct the guided map (depthkit/complete/query_plan.py); a stereo
map's occluded strips get the background's depth where the frame's holes show the reference side
(depthkit/complete/occlusion.py, session 18); a dense sensor's holes at depth edges are split by the image's colours
(depthkit/complete/hole_fill.py, session 17)."""
SHARPEN_OPTIONS = {"keep_placed": True, "max_processing_resolution": 480}
"""The sharpener's stage options on top of its run's manifest: it leaves the depth the complete stage's occlusion and
hole fills placed as they placed it (depthkit/sharpen/stage.py, session 18), and its UNet runs at the frame's own
size up to a longest side of 480 px instead of always at 320 (session 22: on frames larger than the 240x320 it was
trained at it sharpened far less at 320; benchmarks/sharpen_resolution.py), which replaces the run's
``processing_resolution``."""
SHARPEN_MEASURED_CONFIG = {"norm_range": "input", "resize_back": "antialias"}
"""The sharpener's inference rules the default was measured with, where SharpDepthConfig's defaults now follow the
public code (session 39): stored in the manifest's sharpen config under any --sharpen-config."""
SHARPEN_MAE_TOLERANCE = 0.02
"""The sharpener must keep MAE within this fraction of its input's to be on by default."""


def _copy_part(run: Path, stage: str, out: Path) -> None:
    src = run / stage
    if not src.is_dir():
        raise SystemExit(f"assemble_default: {run} has no {stage}/ folder; pass the final checkpoint of a "
                         f"recipes/default run (e.g. runs/default_{stage}/final).")
    shutil.rmtree(out / stage, ignore_errors=True)
    shutil.copytree(src, out / stage)
    if (run / "recipe.yaml").is_file():
        (out / "recipes").mkdir(exist_ok=True)
        shutil.copyfile(run / "recipe.yaml", out / "recipes" / f"{stage}.yaml")


def add_refiner(run_final: Path, complete_dir: Path) -> None:
    """Copy the refiner of ``run_final`` into ``complete_dir`` and describe it in its ``complete.json``."""
    from depthkit.complete.refiner import REFINER_FILE
    from depthkit.complete.settings import COMPLETE_JSON, CompleteSettings
    from depthkit.complete.train_refiner import REFINER_JSON

    info = json.loads((run_final / REFINER_JSON).read_text())
    shutil.copyfile(run_final / REFINER_FILE, complete_dir / REFINER_FILE)
    settings = CompleteSettings.read(complete_dir / COMPLETE_JSON)
    settings.refiner = {"file": REFINER_FILE, "width": info["width"], "max_log_correction": info["max_log_correction"]}
    settings.write(complete_dir / COMPLETE_JSON)


def _by_label(section: dict) -> dict[str, dict]:
    return {m["method"]: m["mean"] for m in section["methods"]}


def quality_from_accuracy(report: dict, name: str) -> dict:
    """Per-pattern figures of checkpoint folder ``name`` from an ``accuracy.json`` made with ``--patterns``:
    ``{"complete": {pattern: {mae, guided_mae, change}}, "sharpen": {pattern: {mae, dbe_acc, input_mae,
    input_dbe_acc}}, "n_images": ..., "command": ..., "date": ...}``."""
    complete, sharpen, n_images = {}, {}, set()
    for section in report["datasets"]:
        pattern = section.get("pattern")
        if not pattern:
            continue
        rows = _by_label(section)
        own, both, guided = rows.get(f"{name}: complete"), rows.get(f"{name}: complete + sharpen"), rows.get("guided")
        if own is None or guided is None:
            continue
        n_images.add(section["n_images"])
        complete[pattern] = {"mae": own["mae"], "guided_mae": guided["mae"],
                             "change": own["mae"] / guided["mae"] - 1.0}
        if both is not None:
            sharpen[pattern] = {"mae": both["mae"], "dbe_acc": both["dbe_acc"], "input_mae": own["mae"],
                                "input_dbe_acc": own["dbe_acc"]}
    if not complete:
        raise SystemExit(f"assemble_default: the accuracy report has no per-pattern rows for '{name}: complete' "
                         "and 'guided'; run benchmarks/accuracy.py --patterns all --checkpoint checkpoints/default.")
    return {"complete": complete, "sharpen": sharpen, "n_images_per_pattern": sorted(n_images),
            "command": report.get("command"), "date": report.get("date")}


def sharpener_meets_bar(row: dict) -> bool:
    """One pattern's sharpener row (``mae``, ``input_mae``, ``dbe_acc``, ``input_dbe_acc``): DBE accuracy better than
    its input's and MAE within :data:`SHARPEN_MAE_TOLERANCE` of its input's."""
    return row["dbe_acc"] < row["input_dbe_acc"] and row["mae"] <= (1 + SHARPEN_MAE_TOLERANCE) * row["input_mae"]


def sharpener_loses_to_input(row: dict) -> bool:
    """One pattern's sharpener row made its input worse: DBE accuracy worse than its input's, or MAE more than
    :data:`SHARPEN_MAE_TOLERANCE` above it (equal DBE, as in a frame the sharpener leaves as it is, is no loss)."""
    return row["dbe_acc"] > row["input_dbe_acc"] or row["mae"] > (1 + SHARPEN_MAE_TOLERANCE) * row["input_mae"]


def default_stages(quality: dict, method: str = "sdim") -> list[str]:
    """The manifest's ``default_stages`` from the measured quality and the default's completion ``method``: both
    stages when the sharpener was measured on the learned completion (``method`` sdim: its rows are sharpened
    ``sdim`` maps, so a default that falls back to ``guided`` does not inherit them) on every pattern the completion
    was, and lost to its input on none (issue policy: a stage that loses to its input is not on by default; meeting
    its bar, ``sharpen_passes``, asks more: a DBE gain on every pattern); else the completion alone."""
    rows = quality["sharpen"]
    measured = bool(rows) and set(rows) >= set(quality["complete"])
    on = method == "sdim" and measured and not any(sharpener_loses_to_input(r) for r in rows.values())
    return ["complete", "sharpen"] if on else ["complete"]


def decide(quality: dict) -> tuple[str, bool]:
    """(the default's completion method, whether the sharpener passed its bar) from the measured quality."""
    changes = [q["change"] for q in quality["complete"].values()]
    method = "sdim" if "random500" in quality["complete"] and max(changes) <= 0 else "guided"
    rows = quality["sharpen"].values()
    passes = bool(rows) and all(sharpener_meets_bar(s) for s in rows)
    return method, passes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--complete", type=Path, required=True, help="final checkpoint of recipes/default/complete.yaml")
    p.add_argument("--sharpen", type=Path, default=None,
                   help="final checkpoint of recipes/default/sharpen.yaml (left out on the first assembly: the "
                        "sharpener is trained on the assembled completer's output)")
    p.add_argument("--refiner", type=Path, default=None,
                   help="final folder of recipes/default/refine.yaml (the completer's dense refiner)")
    p.add_argument("--lotus", type=Path, default=None,
                   help="the run folder of recipes/default/lotus.yaml (its recipe.yaml is kept as recipes/lotus.yaml)")
    p.add_argument("--sharpen-config", type=json.loads, default=None, metavar="JSON",
                   help="run-time overrides of the sharpener's SharpDepthConfig, stored as the sharpen stage's "
                        "'config' option (e.g. '{\"change_band_px\": 2}', chosen on the val split)")
    p.add_argument("--out", type=Path, default=Path("checkpoints/default"))
    p.add_argument("--accuracy", type=Path, default=None,
                   help="accuracy.json from benchmarks/accuracy.py --patterns all --checkpoint OUT")
    args = p.parse_args(argv)

    from depthkit.checkpoints import load_manifest, write_manifest
    from depthkit.sharpen.stage import over_stored_options

    args.out.mkdir(parents=True, exist_ok=True)
    _copy_part(args.complete, "complete", args.out)
    stages = {"complete": dict(COMPLETE_OPTIONS)}
    if args.sharpen is not None:
        _copy_part(args.sharpen, "sharpen", args.out)
        stages["sharpen"] = over_stored_options(load_manifest(args.sharpen)["stages"].get("sharpen", {}),
                                                SHARPEN_OPTIONS)
        stages["sharpen"]["config"] = {**SHARPEN_MEASURED_CONFIG, **stages["sharpen"].get("config", {}),
                                       **(args.sharpen_config or {})}
    else:  # a completer-only default: no stale sharpener beside a manifest that does not name it
        shutil.rmtree(args.out / "sharpen", ignore_errors=True)
    if args.refiner is not None:
        add_refiner(args.refiner, args.out / "complete")
        (args.out / "recipes").mkdir(exist_ok=True)
        shutil.copyfile(args.refiner / "recipe.yaml", args.out / "recipes" / "refine.yaml")
    if args.lotus is not None:
        shutil.copyfile(args.lotus / "recipe.yaml", args.out / "recipes" / "lotus.yaml")
    extra = {}
    if args.accuracy is not None:
        quality = quality_from_accuracy(json.loads(args.accuracy.read_text()), args.out.name)
        method, quality["sharpen_passes"] = decide(quality)
        quality["completer_passes"] = method == "sdim"
        if method != "sdim":  # classical methods take no options
            stages["complete"] = {"method": method}
        extra = {"quality": quality,
                 "default_stages": default_stages(quality, method) if "sharpen" in stages else ["complete"]}
    write_manifest(args.out, stages, **extra)
    print(f"assemble_default: wrote {args.out} (complete: {stages['complete']}; quality "
          f"{'recorded' if extra else 'not measured yet'}; a run without --stages runs "
          f"{','.join(extra.get('default_stages', ['complete']))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
