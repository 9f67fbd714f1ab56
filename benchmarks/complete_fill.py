"""How the learned completer's answers should become the dense map: fill and fusion variants side by side, on the
synthetic **validation** split (the test split stays for the accuracy benchmark), plus oracle answers.

Usage (from the repository root)::

    python benchmarks/complete_fill.py --checkpoint checkpoints/default --scenes 24
    python benchmarks/complete_fill.py --oracle-only --scenes 16        # no model: GT / prior / half-way answers

Rows (MAE and RMSE in metres over valid GT pixels, mean over scenes; 500 random GT points per scene at 240x320):

- ``guided``: the classical interpolation alone (the floor).
- oracle rows (no model): the answers at the stage's query pixels (default plan, 1,024 queries) replaced by the GT
  (``oracle``), by the guided value itself (``copy``: what a completer that learned nothing says) or by the half-way
  point between them (``half``), each through ``fill=anchors`` (answers are extra points of the guided fill) and
  ``fill=residual`` (answers correct the guided map). They show what each fill can gain and what it costs when the
  answers carry no information.
- with ``--checkpoint``: the learned stage under each ``fill`` x ``fusion`` (none | blend | fallback) variant.

Writes ``<out>/complete_fill.json`` and ``<out>/complete_fill.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results, accuracy
import numpy as np
from _results import run_info, run_main, write_results  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def scenes(n: int):
    """``n`` scenes of the synthetic val split (its seeds), 240x320, 500 random points each."""
    from depthkit.data.datasets.synthetic import SPLIT_SEEDS
    from depthkit.data.sparse import sample_random_points
    from depthkit.data.synthetic import render_scene

    for i in range(n):
        scene = render_scene(SPLIT_SEEDS["val"] + i, 240, 320, kind="random")
        yield scene.image, scene.depth, sample_random_points(scene.depth, 500, seed=i)


def _scores(pred, gt) -> dict:
    valid = gt > 0
    err = (pred - gt)[valid]
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}


def oracle_rows(data) -> dict[str, list[dict]]:
    from depthkit.complete.query_plan import fill_dense, fill_residual, plan_queries, prior_map

    rows: dict[str, list[dict]] = {}
    for image, gt, sparse in data:
        prior = prior_map(image, sparse, "guided")
        rows.setdefault("guided", []).append(_scores(prior, gt))
        plan = plan_queries(sparse, budget=1024)
        r, c = plan["rows"], plan["cols"]
        truth, base = gt[r, c].astype(np.float64), prior[r, c].astype(np.float64)
        truth = np.where(truth > 0, truth, base)  # sky: no GT, keep the prior
        for name, values in (("oracle", truth), ("copy", base), ("half", 0.5 * (truth + base))):
            rows.setdefault(f"{name}, fill=anchors", []).append(_scores(fill_dense(image, sparse, r, c, values), gt))
            rows.setdefault(f"{name}, fill=residual", []).append(
                _scores(fill_residual(image, sparse, r, c, values, prior), gt))
    return rows


def load_stages(checkpoint) -> dict:
    """The learned stage of ``checkpoint`` under each fill x fusion variant (a missing or broken checkpoint raises
    :class:`depthkit.checkpoints.CheckpointError`, a ValueError, before any scene is scored)."""
    from depthkit.complete.stage import CompleteVLMStage

    return {f"fill={fill}, fusion={fusion}": CompleteVLMStage.from_checkpoint(Path(checkpoint) / "complete",
                                                                              fill=fill, fusion=fusion)
            for fill in ("anchors", "residual") for fusion in ("none", "blend", "fallback")}


def model_rows(stages: dict, data) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for image, gt, sparse in data:
        for name, stage in stages.items():
            rows.setdefault(name, []).append(_scores(stage.run(image, sparse).depth, gt))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fill and fusion variants of the learned completer, on validation scenes.")
    p.add_argument("--checkpoint", default=None, help="a checkpoint folder with complete/")
    p.add_argument("--oracle-only", action="store_true")
    p.add_argument("--scenes", type=int, default=24)
    p.add_argument("--out", type=Path, default=OUT)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.checkpoint is None and not args.oracle_only:
        p.error("give --checkpoint DIR, or --oracle-only")
    from depthkit.checkpoints import checkpoint_identity

    stages = load_stages(args.checkpoint) if args.checkpoint is not None else None  # before any work
    data = list(scenes(args.scenes))
    rows = oracle_rows(data)
    if stages is not None:
        rows.update(model_rows(stages, data))
    mean = {k: {m: float(np.mean([r[m] for r in v])) for m in ("mae", "rmse")} for k, v in rows.items()}
    ref = mean["guided"]["mae"]
    report = {"benchmark": "complete_fill", **run_info(argv, __file__),
              "checkpoint": args.checkpoint, "checkpoint_identity": checkpoint_identity(args.checkpoint),
              "scenes": args.scenes, "split": "val", "mean": mean, "per_scene": rows}
    lines = ["## Completer answers → dense map: fill and fusion variants (synthetic val split)", "",
             f"{report['date']}, `{report['command']}`; {args.scenes} scenes at 240x320, 500 random points, "
             "1,024 queries (default plan); MAE / RMSE in metres over valid GT pixels, mean over scenes.", "",
             "| variant | MAE (m) | RMSE (m) | MAE vs guided |", "|---|---:|---:|---:|"]
    for name, m in mean.items():
        lines.append(f"| {name} | {m['mae']:.4f} | {m['rmse']:.4f} | {100 * (m['mae'] / ref - 1):+.1f} % |")
    write_results(args.out, "complete_fill", report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
