"""Where a sharpener's error comes from, and how far it is from the best its limits allow (synthetic test split).

Usage (from the repository root; ~2 min per pattern at 8 scenes for the embedded default on one CPU thread)::

    python benchmarks/sharpen_limits.py                                  # checkpoints/default, 8 scenes, random500
    python benchmarks/sharpen_limits.py --checkpoint DIR --scenes 16 --patterns random500,lidar64 --work-dir W
    python benchmarks/sharpen_limits.py --scenes 8 --patterns all --near-px 8   # + near/far of the measured pixels

For each scene of the synthetic test split (240x320) the metric input is ``--metric`` on the pattern's sparse points:
by default the completion of ``--checkpoint`` without language-model queries (``complete:sdim``, query budget 0:
its dense refiner on ``guided``, equal to the full completion within 0.1 %, what the default's sharpener sharpens;
kept in ``--work-dir`` when given), or ``guided``. Six maps are scored against the GT depth, MAE (m) and DBE
accuracy (px):

- ``input``: the metric input itself;
- ``VAE round trip``: the input normalised, encoded and decoded by the sharpener's depth VAE at the processing size,
  no UNet (``SharpDepth.sharpen_tensors(..., autoencoded=True)``): a ``decoded`` output (the paper's) passes through
  this VAE, so it bounds how close to its input such a sharpener can stay where it should not move (the
  ``residual`` output cancels it);
- ``Lotus, affine to GT``: the pass-1 Lotus map with the least-squares scale and shift to the GT (an oracle
  alignment): how good Lotus's shape and edges are, the teacher a label-free sharpener learns its edges from;
- ``sharpened``: the sharpener's output as the pipeline's sharpen stage runs it (the stored switches and the
  manifest's run-time options; measured pixels restored), except ``keep_placed``: in a Pipeline the pixels the
  completion's fills placed in a dense frame also keep their depth (``benchmarks/sharpen_switches.py`` applies it);
- ``sharpened, no limits``: the same pass before the run-time limits of :mod:`depthkit.sharpen.limits` (band,
  range, distance weights; measured pixels restored): what the limits take away or add;
- ``GT under the limits``: the GT put through the same limits in place of the sharpener's output (measured pixels
  restored; pixels without GT, which no score counts, keep the input): a GT-perfect sharpener under these limits,
  the reference for how much they leave to gain. Not a strict bound: where the distance weight is fractional, an
  output beyond the GT (within the range clip) could land nearer to it after the mix.

With ``--gt-round-trip`` a seventh map, ``GT through the VAE``: the GT (holes filled with the input) normalised,
encoded and decoded by the depth VAE alone, as ``VAE round trip`` does with the input. No Lotus or sharpener that
decodes through this VAE gets sharper edges than these, so it says whether the VAE or the UNet keeps a tiny Lotus
blunt.

With ``--near-px PX`` every map is also scored within PX pixels of a measured pixel ("near") and beyond ("far"),
each over its own pixels and the frame's edges that lie in it (e.g. 8: a LiDAR's beams and the rows above them).

A sharpener can only improve DBE over its input where its edges are better than the input's, and the gap between
``sharpened`` and ``GT under the limits`` is roughly what a better sharpener could still gain. Writes
``<out>/sharpen_limits.{json,md}`` (the JSON with ``checkpoint_identity``: the checkpoint's folder and a hash of its
files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results, accuracy
from _results import run_info, run_main, write_results  # noqa: E402
from accuracy import SYNTHETIC_PATTERNS, add_scene_options, parse_scene_options  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "results"
MAPS = ("input", "VAE round trip", "Lotus, affine to GT", "sharpened", "sharpened, no limits", "GT under the limits")
GT_ROUND_TRIP = "GT through the VAE"
"""The map ``--gt-round-trip`` adds: the GT (holes filled with the input) through the depth VAE alone."""


def affine_to(pred, target, valid):
    """``pred`` mapped by the least-squares scale and shift that best match ``target`` over ``valid`` (float64)."""
    import numpy as np

    a = np.stack([pred[valid].astype(np.float64), np.ones(int(valid.sum()))], 1)
    (s, t), *_ = np.linalg.lstsq(a, target[valid].astype(np.float64), rcond=None)
    return (s * pred + t).astype(np.float32)


def region_scores(pred, gt, region, gt_edges) -> dict[str, float]:
    """MAE (m) and DBE accuracy (px) of ``pred`` against ``gt`` over ``region`` & valid GT only: the edges of the
    whole frame (predicted, and GT from the whole valid frame, so a region does not get edges of its own min-max
    range) restricted to the region (:func:`~depthkit.metrics.dbe_metrics`); MAE NaN where the region has no GT
    pixel, DBE NaN where it has no GT edge. ``gt_edges``: ``depth_edges(gt, valid=gt > 0)``, computed once per frame."""
    from depthkit.metrics import dbe_metrics, depth_metrics

    valid = region & (gt > 0)
    if not valid.any():
        return {"mae": float("nan"), "dbe_acc": float("nan")}
    return {"mae": float(depth_metrics(pred, gt, valid)["mae"]),
            "dbe_acc": float(dbe_metrics(pred, gt, gt_edges=gt_edges, valid=valid)["dbe_acc"])}


def score_scene(sharpdepth, image, gt, sparse, metric, processing_resolution: int | None,
                near_px: float | None = None, gt_round_trip: bool = False) -> dict:
    """The maps of :data:`MAPS` (and :data:`GT_ROUND_TRIP` with ``gt_round_trip``) for one scene (``metric`` the
    metric input, HxW metres) → ``{map: {"mae",
    "dbe_acc"}}``; with ``near_px`` also ``near_mae``, ``near_dbe_acc`` (pixels within ``near_px`` of a measured
    pixel, input size) and ``far_mae``, ``far_dbe_acc`` (the rest; e.g. above a LiDAR's beams)."""
    import numpy as np
    import torch

    from depthkit.geometry import distance_to
    from depthkit.metrics import depth_edges
    from depthkit.sharpen.limits import limit_output
    from depthkit.sharpen.lotus import image_to_tensor
    from depthkit.sharpen.model import depth_tensor

    valid = gt > 0
    d, sp = depth_tensor(metric), depth_tensor(sparse)
    measured = sp > 0
    out = sharpdepth.sharpen_tensors(image_to_tensor(image), d, sp, processing_resolution, autoencoded=True)
    size = sharpdepth.model.processing_size(*gt.shape, processing_resolution)
    oracle, _ = limit_output(sharpdepth.config, depth_tensor(np.where(valid, gt, metric)), d, measured, size,
                             sharpdepth.model.padded_size(*size))
    as_map = lambda t: torch.where(measured, sp, t)[0, 0].float().numpy()  # noqa: E731  (measured pixels kept)
    maps = {"input": metric, "VAE round trip": out["autoencoded"][0, 0].float().numpy(),
            "Lotus, affine to GT": affine_to(out["lotus"][0, 0].float().numpy(), gt, valid),
            "sharpened": out["depth"][0, 0].float().numpy(), "sharpened, no limits": as_map(out["free"]),
            "GT under the limits": as_map(oracle)}
    if gt_round_trip:  # the same call with the GT as its input: its "autoencoded" map is the GT's round trip
        filled = depth_tensor(np.where(valid, gt, metric))
        maps[GT_ROUND_TRIP] = sharpdepth.sharpen_tensors(image_to_tensor(image), filled, sp, processing_resolution,
                                                         autoencoded=True)["autoencoded"][0, 0].float().numpy()
    everywhere, gt_edges = np.ones(gt.shape, bool), depth_edges(gt, valid=valid)
    rows = {name: region_scores(pred, gt, everywhere, gt_edges) for name, pred in maps.items()}
    if near_px is not None:
        near = distance_to(sparse > 0) <= near_px if (sparse > 0).any() else np.zeros(gt.shape, bool)
        for name, pred in maps.items():
            for part, region in (("near", near), ("far", ~near)):
                rows[name].update({f"{part}_{k}": v for k, v in region_scores(pred, gt, region, gt_edges).items()})
    return rows


def _near_px(text: str) -> float:
    """``--near-px``: a finite distance in pixels >= 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of pixels >= 0 (e.g. 8); received {text!r}")
    return value


def _num(value: float) -> str:
    """A DBE figure for the table: two decimals, or n/a for NaN."""
    return "n/a" if value != value else f"{value:.2f}"


def _nanmean(values: list[float]) -> float:
    """Mean over the finite values (NaN when none is: a region no scene has, or no GT edge in it)."""
    import numpy as np

    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Decompose a sharpener's error: VAE round trip, Lotus, sharpening.")
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "default",
                   help="a checkpoint with a sharpen/ part (default: the embedded default)")
    p.add_argument("--metric", choices=("complete", "guided"), default="complete",
                   help="metric input: the checkpoint's completion without queries (default) or guided")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the metric inputs here (reused by reruns)")
    p.add_argument("--near-px", type=_near_px, default=None, metavar="PX",
                   help="also score each map within PX pixels of a measured pixel and beyond (e.g. 8: a LiDAR's "
                        "beams and the rows above them)")
    p.add_argument("--gt-round-trip", action="store_true",
                   help="also score the GT (holes filled with the input) through the depth VAE alone: the edge "
                        "ceiling of any Lotus or sharpener decoding through that VAE")
    add_scene_options(p, "test", 8, "random500", OUT)
    argv = sys.argv[1:] if argv is None else list(argv)
    args, patterns = parse_scene_options(p, argv)

    from depthkit.checkpoints import CheckpointRef, checkpoint_identity
    from depthkit.data.baselines import guided
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.sharpen.limits import LIMIT_FIELDS
    from depthkit.sharpen.stage import build_sharpen_stage
    from depthkit.sharpen.teachers import build_metric_source
    from depthkit.sharpen.train import MetricCache

    ref = CheckpointRef.open(str(args.checkpoint))
    identity = checkpoint_identity(args.checkpoint)  # its folder and files' hash: a retrained folder differs
    if not ref.has_part("sharpen"):
        p.error(f"{args.checkpoint} has no sharpen/ part; pass a checkpoint with one.")
    stage = build_sharpen_stage(ref)  # the checkpoint's run-time options (its manifest's config) included
    sharpdepth = stage.model
    if args.metric == "complete":
        source = build_metric_source("complete:sdim", checkpoint=str(args.checkpoint), query_budget=0)
    else:
        source = lambda image, sparse, name: guided(image, sparse)  # noqa: E731
    metric = MetricCache(source, args.work_dir)
    per_scene, mean = {}, {}
    names = MAPS + ((GT_ROUND_TRIP,) if args.gt_round_trip else ())
    for pattern in patterns:
        kind, kwargs = SYNTHETIC_PATTERNS[pattern]
        data = SyntheticDataset(split="test", length=args.scenes, sparse_pattern=kind, sparse_kwargs=kwargs)
        rows = []
        for i in range(len(data)):
            sample = data[i]
            d = metric(sample["image"], sample["sparse"], f"test_{pattern}_{i}_{args.metric}")
            rows.append(score_scene(sharpdepth, sample["image"], sample["depth"], sample["sparse"], d,
                                    stage.processing_side(sample["image"]), args.near_px, args.gt_round_trip))
            print(pattern, i, {k: (round(v["mae"], 3), round(v["dbe_acc"], 2)) for k, v in rows[-1].items()},
                  flush=True)
        per_scene[pattern] = rows
        resolution = stage.processing_side(sample["image"])  # every scene has the split's size
        mean[pattern] = {name: {k: _nanmean([r[name][k] for r in rows]) for k in rows[0][name]} for name in names}
    report = {"benchmark": "sharpen_limits", "checkpoint": str(args.checkpoint), "checkpoint_identity": identity,
              **run_info(argv, __file__),
              "scenes": args.scenes, "metric": args.metric, "processing_resolution": resolution,
              "near_px": args.near_px, "gt_round_trip": args.gt_round_trip,
              "threads": args.threads, "mean": mean, "per_scene": per_scene}
    cfg = sharpdepth.config
    limits = {k: getattr(cfg, k) for k in LIMIT_FIELDS
              if getattr(cfg, k) and (k != "change_band_jump" or cfg.change_band_px)} or "none"
    metric_name = "the completion without queries" if args.metric == "complete" else "`guided`"
    lines = [f"## Sharpener limits: {args.checkpoint.name}", "",
             f"{report['date']}, `{report['command']}`; first {args.scenes} scenes of the synthetic test split "
             f"(240x320), metric input = {metric_name}, "
             f"processing resolution {resolution}, limits {limits}. MAE (m) / DBE accuracy (px), "
             "lower is better; change against the input in brackets.", "",
             "| pattern | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for pattern, m in mean.items():
        base = m["input"]["mae"]
        cells = [f"{m[n]['mae']:.3f} ({100 * (m[n]['mae'] / base - 1):+.0f} %) / {m[n]['dbe_acc']:.2f}" for n in names]
        lines.append(f"| {pattern} | " + " | ".join(cells) + " |")
    if args.near_px is not None:
        lines += ["", f"By region: within {args.near_px:g} px of a measured pixel (near) and beyond it (far), each "
                  "scored over its own pixels and the frame's edges in it; MAE (m) / DBE accuracy (px), mean over the "
                  "scenes whose region has GT edges for DBE (n/a: none has).", "",
                  "| pattern | region | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
        for pattern, m in mean.items():
            for part in ("near", "far"):
                cells = [f"{m[n][part + '_mae']:.3f} / " + _num(m[n][part + "_dbe_acc"]) for n in names]
                lines.append(f"| {pattern} | {part} | " + " | ".join(cells) + " |")
    write_results(args.out, "sharpen_limits", report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
