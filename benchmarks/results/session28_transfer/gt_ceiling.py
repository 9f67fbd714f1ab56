"""Session 28's development diagnostic (not a benchmark): the GT put through the run-time limits in place of the
sharpener's free output, on the first 60 val LiDAR-64 scenes: how far a perfect edge placer gets under each limit,
with the edge transfer (`transfer_edges_px`) or without. Runs only at commits 2b9f0bd to a2a0c03, where the
transfer existed (it was removed after this measurement), from a worktree at /work/wt_meas with a MetricCache
in /work/exp/s28/W:
`PYTHONPATH=/work/wt_meas python gt_ceiling.py`. Its output is gt_ceiling.txt."""
import sys

import numpy as np
import torch

sys.path.insert(0, "/work/wt_meas/benchmarks")
from accuracy import SYNTHETIC_PATTERNS
from sharpen_switches import score, standard_error

from depthkit.checkpoints import CheckpointRef
from depthkit.data.datasets.synthetic import SyntheticDataset
from depthkit.outputs import keep_placed_depth
from depthkit.sharpen.limits import limit_output
from depthkit.sharpen.model import depth_tensor
from depthkit.sharpen.normalize import valid_depth
from depthkit.sharpen.stage import build_sharpen_stage
from depthkit.sharpen.teachers import build_metric_source
from depthkit.sharpen.train import MetricCache

torch.set_num_threads(1)
ref = CheckpointRef.open("/work/wt_meas/checkpoints/default")
source = build_metric_source("complete:sdim", checkpoint="/work/wt_meas/checkpoints/default", query_budget=0)
metric = MetricCache(source, "/work/exp/s28/W")
B = {"keep_scanline_frames": False}
BO = {**B, "keep_near_measured_px": 0, "change_within_measured_px": 0, "change_range_px": 0,
      "dense_measured_fraction": 0}
settings = {"scan off": B, "band only": BO, "no limits": {**BO, "change_band_px": 0},
            "transfer 3": {**B, "transfer_edges_px": 3},
            "transfer 3 hard": {**B, "transfer_edges_px": 3, "transfer_edges_hard": True},
            "transfer 3, band only": {**BO, "transfer_edges_px": 3},
            "transfer 3 hard, band only": {**BO, "transfer_edges_px": 3, "transfer_edges_hard": True}}
stage = build_sharpen_stage(ref)
configs = stage.limit_configs(settings)
kind, kwargs = SYNTHETIC_PATTERNS["lidar64"]
data = SyntheticDataset(split="val", length=60, sparse_pattern=kind, sparse_kwargs=kwargs)
scores = {n: [] for n in settings}
for i in range(len(data)):
    item = data[i]
    d, placed = metric.with_placed(item["image"], item["sparse"], f"val_lidar64_{i}")
    gt = item["depth"]
    oracle = np.where(np.isfinite(gt) & (gt > 0), gt, d).astype(np.float32)
    dt, sp = depth_tensor(d), depth_tensor(item["sparse"])
    mask = valid_depth(sp)
    side = stage.processing_side(item["image"])
    size = stage.model.model.processing_size(*d.shape, side)
    padded = stage.model.model.padded_size(*size)
    before = score(d, gt)
    for n, cfg in configs.items():
        out, _ = limit_output(cfg, depth_tensor(oracle), dt, mask, size, padded)
        out = torch.where(mask, sp, out)[0, 0].numpy()
        out = keep_placed_depth(out, d, placed)
        scores[n].append(before + score(out, gt))
for n, s in scores.items():
    a = np.asarray(s, float)
    m = np.nanmean(a, 0)
    print(f"{n:28s} MAE {m[0]:.4f} -> {m[2]:.4f} ({100 * (m[2] / m[0] - 1):+.1f} %)  "
          f"DBE {m[1]:.3f} -> {m[3]:.3f} ± {standard_error(a[:, 3] - a[:, 1]):.3f}")
