"""Does the completer's confidence rank its errors? AUROC on held-out synthetic scenes.

Usage (from the repository root, after training a completer, e.g. a short run of ``recipes/tiny/complete.yaml``)::

    PYTHONPATH=. python benchmarks/complete_confidence.py --checkpoint runs/tiny_complete/final --scenes 8
    python benchmarks/complete_confidence.py --checkpoint checkpoints/default --out /tmp/conf   # the embedded default

For each held-out scene (the ``val`` split of the synthetic scenes: seeds disjoint from training) the stage
(:class:`depthkit.complete.stage.CompleteVLMStage`, its default query plan with ``--query-budget``) completes the
sparse map; then, over the pixels that were not measured and have ground truth, the absolute error of the dense map
is split at its median, and the AUROC of ``1 - confidence`` for "error above the median" is computed (0.5 = chance,
1 = every above-median error is less confident than every below-median one). The same is reported for the queried
pixels alone (the answers' own confidence: the residual head's predicted uncertainty, or the digit spread of the text
readout) and for the old rule (each pixel taking its nearest anchor's confidence: no decay, no edge term), to show
what the new terms contribute.

Writes ``<out>/complete_confidence.json`` (``--out`` is a folder, default ``benchmarks/results``; ``auroc`` = the dense
map's, plus the others, and the date, command, machine and depthkit version).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import run_info, run_main, write_json  # noqa: E402

from depthkit.checkpoints import checkpoint_identity  # noqa: E402
from depthkit.metrics import auroc  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
NAME = "complete_confidence.json"


def out_folder(text: str) -> Path:
    """An argparse ``type`` for ``--out``: a folder (the script writes ``<out>/complete_confidence.json``), so neither
    a path ending in ``.json`` nor an existing file."""
    path = Path(text)
    if path.suffix.lower() == ".json" or path.is_file():
        raise argparse.ArgumentTypeError(
            f"--out is the folder the results go to (written as <out>/{NAME}), not a file; received {text!r}"
            f"{' (an existing file)' if path.is_file() else ''}: give its folder, e.g. --out {path.parent}")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run's final/ folder (or its complete/)")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--height", type=int, default=112)
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--sparse-points", type=int, default=100)
    parser.add_argument("--kind", default="random")
    parser.add_argument("--query-budget", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=out_folder, default=DEFAULT_OUT,
                        help=f"folder of the results: writes <out>/{NAME} (default benchmarks/results); not a .json "
                             "path")
    parser.add_argument("--note", default="", help="how the checkpoint was trained (stored in the JSON)")
    args = parser.parse_args(argv)
    for option in ("scenes", "height", "width", "sparse_points", "query_budget", "threads"):
        if getattr(args, option) < 1:  # --threads 0 was torch's RuntimeError traceback
            parser.error(f"--{option.replace('_', '-')} must be >= 1; received {getattr(args, option)}.")

    import torch

    from depthkit.complete.query_plan import confidence_map
    from depthkit.complete.stage import CompleteVLMStage
    from depthkit.data.datasets import SyntheticDataset

    torch.set_num_threads(args.threads)
    path = args.checkpoint if (args.checkpoint / "complete.json").is_file() else args.checkpoint / "complete"
    stage = CompleteVLMStage.from_checkpoint(path, query_budget=args.query_budget)
    ds = SyntheticDataset(split="val", length=args.scenes, height=args.height, width=args.width, kind=args.kind,
                          sparse_kwargs={"n": args.sparse_points})
    dense_err, dense_conf, nearest_conf, q_err, q_conf, dense_rel, q_rel = [], [], [], [], [], [], []
    start = time.perf_counter()
    for i in range(len(ds)):
        item = ds[i]
        sparse, gt = np.asarray(item["sparse"], np.float32), np.asarray(item["depth"], np.float32)
        out = stage.run(item["image"], sparse)
        use = (sparse <= 0) & (gt > 0) & np.isfinite(gt)
        dense_err.append(np.abs(out.depth - gt)[use])
        dense_rel.append((np.abs(out.depth - gt) / np.maximum(gt, 1e-6))[use])
        dense_conf.append(out.confidence[use])
        qmask = out.extras["query_mask"] > 0
        rows, cols = np.nonzero(qmask)
        no_decay = confidence_map(sparse, rows, cols, out.extras["query_confidence"][rows, cols],
                                  out.extras["unparseable_mask"][rows, cols] == 0, decay_px=1e12)
        nearest_conf.append(no_decay[use])
        q = qmask & use
        q_err.append(np.abs(out.depth - gt)[q])
        q_rel.append((np.abs(out.depth - gt) / np.maximum(gt, 1e-6))[q])
        q_conf.append(out.extras["query_confidence"][q])
        print(f"scene {i}: {int(q.sum())} queries, dense MAE {dense_err[-1].mean():.3f} m", flush=True)
    dense_err, dense_conf, nearest_conf = map(np.concatenate, (dense_err, dense_conf, nearest_conf))
    q_err, q_conf = np.concatenate(q_err), np.concatenate(q_conf)
    dense_rel, q_rel = np.concatenate(dense_rel), np.concatenate(q_rel)
    settings = json.loads(json.dumps({"readout": stage.readout, **vars(stage.prompt_config)}, default=str))
    report = {
        "benchmark": "complete_confidence",
        "checkpoint": str(args.checkpoint), "checkpoint_identity": checkpoint_identity(args.checkpoint),
        "trained_with": args.note, "settings": settings,
        "scenes": len(ds), "split": "val", "size": [args.height, args.width], "kind": args.kind,
        "sparse_points": args.sparse_points, "query_budget": args.query_budget,
        "auroc": auroc(1.0 - dense_conf, dense_err > np.median(dense_err)),
        "auroc_queries": auroc(1.0 - q_conf, q_err > np.median(q_err)),
        "auroc_nearest_anchor_only": auroc(1.0 - nearest_conf, dense_err > np.median(dense_err)),
        "auroc_relative": auroc(1.0 - dense_conf, dense_rel > np.median(dense_rel)),
        "auroc_queries_relative": auroc(1.0 - q_conf, q_rel > np.median(q_rel)),
        "auroc_nearest_anchor_only_relative": auroc(1.0 - nearest_conf, dense_rel > np.median(dense_rel)),
        "pixels": int(dense_err.size), "queries": int(q_err.size),
        "dense_mae_m": float(dense_err.mean()), "query_mae_m": float(q_err.mean()),
        "median_dense_error_m": float(np.median(dense_err)), "seconds": time.perf_counter() - start,
        "definition": "AUROC of (1 - confidence) for 'absolute error above the median absolute error', over "
                      "unmeasured pixels with ground truth (auroc: the stage's confidence map; auroc_queries: "
                      "queried pixels and their answers' confidence; auroc_nearest_anchor_only: the old rule, each pixel "
                      "taking its nearest anchor's confidence); *_relative: the same with the relative error "
                      "|pred - gt| / gt, the quantity the confidence estimates (exp(-relative error / tolerance)).",
    }
    target = write_json(args.out / NAME, {**run_info(argv, __file__), **report})
    print(json.dumps({k: v for k, v in report.items() if k.startswith("auroc") or k == "dense_mae_m"}))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
