"""Where a sharpener's error comes from: its VAE, its Lotus, or the sharpening itself (synthetic test split).

Usage (from the repository root; ~2 min for the embedded default on one CPU thread)::

    python benchmarks/sharpen_limits.py                                  # checkpoints/default, 8 scenes, random500
    python benchmarks/sharpen_limits.py --checkpoint DIR --scenes 16 --patterns random500,lidar64

For each scene of the synthetic test split (240x320) the metric input is ``guided`` on the pattern's sparse points
(the embedded default's completion) and five maps are scored against the GT depth, MAE (m) and DBE accuracy (px):

- ``input``: the metric input itself;
- ``VAE round trip``: the input normalised, encoded and decoded by the sharpener's depth VAE at the processing size,
  no UNet (``SharpDepth.sharpen_tensors(..., autoencoded=True)``): every output of the sharpener is decoded by this
  VAE, so this bounds how close to its input it can stay where it should not move;
- ``Lotus, affine to GT``: the pass-1 Lotus map with the least-squares scale and shift to the GT (an oracle
  alignment): how good Lotus's shape and edges are, the teacher the sharpener learns its edges from;
- ``sharpened``: the sharpener's output as the checkpoint configures it (measured pixels restored);
- ``sharpened, residual output``: the same pass with ``output="residual"`` (the input plus the change pass 2 made
  to the input's own VAE round trip, so the round trip's error cancels; :class:`~depthkit.sharpen.model.SharpDepthConfig`).

A sharpener can only improve DBE over its input where its Lotus's edges are better than the input's, and can only
keep the MAE within a few per cent where its VAE round trip does. Writes ``<out>/sharpen_limits.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results, accuracy
from _results import write_results  # noqa: E402
from accuracy import SYNTHETIC_PATTERNS, add_scene_options, parse_scene_options  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "results"
MAPS = ("input", "VAE round trip", "Lotus, affine to GT", "sharpened", "sharpened, residual output")


def affine_to(pred, target, valid):
    """``pred`` mapped by the least-squares scale and shift that best match ``target`` over ``valid`` (float64)."""
    import numpy as np

    a = np.stack([pred[valid].astype(np.float64), np.ones(int(valid.sum()))], 1)
    (s, t), *_ = np.linalg.lstsq(a, target[valid].astype(np.float64), rcond=None)
    return (s * pred + t).astype(np.float32)


def score_scene(sharpdepth, residual, image, gt, sparse, processing_resolution: int | None) -> dict:
    """The five maps of one scene → ``{map: {"mae", "dbe_acc"}}``."""
    import numpy as np
    import torch

    from depthkit.data.baselines import guided
    from depthkit.metrics import dbe_metrics, depth_metrics
    from depthkit.sharpen.lotus import image_to_tensor

    valid = gt > 0
    metric = guided(image, sparse)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]  # noqa: E731
    out = sharpdepth.sharpen_tensors(image_to_tensor(image), as_tensor(metric), as_tensor(sparse),
                                     processing_resolution, autoencoded=True)
    lotus = out["lotus"][0, 0].float().numpy()
    edited = residual.sharpen_tensors(image_to_tensor(image), as_tensor(metric), as_tensor(sparse),
                                      processing_resolution)["depth"][0, 0].float().numpy()
    maps = {"input": metric, "VAE round trip": out["autoencoded"][0, 0].float().numpy(),
            "Lotus, affine to GT": affine_to(lotus, gt, valid), "sharpened": out["depth"][0, 0].float().numpy(),
            "sharpened, residual output": edited}
    return {name: {"mae": float(depth_metrics(pred, gt, valid)["mae"]),
                   "dbe_acc": float(dbe_metrics(pred, gt, valid=valid)["dbe_acc"])} for name, pred in maps.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Decompose a sharpener's error: VAE round trip, Lotus, sharpening.")
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "default",
                   help="a checkpoint with a sharpen/ part (default: the embedded default)")
    add_scene_options(p, "test", 8, "random500", OUT)
    argv = sys.argv[1:] if argv is None else list(argv)
    args, patterns = parse_scene_options(p, argv)
    import numpy as np

    from depthkit.checkpoints import CheckpointRef
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.sharpen.model import SharpDepth

    ref = CheckpointRef.open(str(args.checkpoint))
    if not ref.has_part("sharpen"):
        p.error(f"{args.checkpoint} has no sharpen/ part; pass a checkpoint with one.")
    resolution = ref.options("sharpen").get("processing_resolution")
    sharpdepth = SharpDepth.from_dir(ref.part("sharpen"))
    residual = SharpDepth(sharpdepth.model, {**asdict(sharpdepth.config), "output": "residual"},
                          lotus_unet=sharpdepth.lotus_unet)
    per_scene, mean = {}, {}
    for pattern in patterns:
        kind, kwargs = SYNTHETIC_PATTERNS[pattern]
        data = SyntheticDataset(split="test", length=args.scenes, sparse_pattern=kind, sparse_kwargs=kwargs)
        rows = []
        for i in range(len(data)):
            sample = data[i]
            rows.append(score_scene(sharpdepth, residual, sample["image"], sample["depth"], sample["sparse"], resolution))
            print(pattern, i, {k: (round(v["mae"], 3), round(v["dbe_acc"], 2)) for k, v in rows[-1].items()},
                  flush=True)
        per_scene[pattern] = rows
        mean[pattern] = {name: {k: float(np.nanmean([r[name][k] for r in rows])) for k in ("mae", "dbe_acc")}
                         for name in MAPS}
    report = {"benchmark": "sharpen_limits", "checkpoint": str(args.checkpoint),
              "date": _dt.datetime.now().replace(microsecond=0).isoformat(),
              "command": "python benchmarks/sharpen_limits.py" + (" " + shlex.join(argv) if argv else ""),
              "scenes": args.scenes, "processing_resolution": resolution, "threads": args.threads,
              "mean": mean, "per_scene": per_scene}
    lines = [f"## Sharpener limits: {args.checkpoint.name}", "",
             f"{report['date']}, `{report['command']}`; first {args.scenes} scenes of the synthetic test split "
             f"(240x320), metric input = `guided`, processing resolution {resolution}. MAE (m) / DBE accuracy (px), "
             "lower is better; change against the input in brackets.", "",
             "| pattern | " + " | ".join(MAPS) + " |", "|---|" + "---:|" * len(MAPS)]
    for pattern, m in mean.items():
        base = m["input"]["mae"]
        cells = [f"{m[n]['mae']:.3f} ({100 * (m[n]['mae'] / base - 1):+.0f} %) / {m[n]['dbe_acc']:.2f}" for n in MAPS]
        lines.append(f"| {pattern} | " + " | ".join(cells) + " |")
    write_results(args.out, "sharpen_limits", report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
