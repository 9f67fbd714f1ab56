"""Development probe (session 36): where on the real Motorcycle frame does the session-36 candidate's completion lose
to the shipped default's? Per sparse pattern (3 draws each), the MAE of guided and the two completions' change against
it over regions of the frame (near GT depth edges, distance to the nearest measurement, image texture terciles, depth
bins), and each region's share of the MAE gap. Run from the repository root (needs scikit-image):
python benchmarks/results/session36_pool/moto_where.py"""
import sys

import cv2
import numpy as np

sys.path.insert(0, "benchmarks")
import real_frame as rf  # noqa: E402
from accuracy import SYNTHETIC_PATTERNS  # noqa: E402

from depthkit import Pipeline  # noqa: E402
from depthkit.checkpoints import CheckpointRef  # noqa: E402
from depthkit.data.sparse import make_sparse  # noqa: E402

frame = rf.FRAMES["motorcycle"]
data = frame.data()
image, depth = frame.load(data)
intr = frame.intrinsics(*depth.shape)
pipes = {"guided": Pipeline(method="guided"),
         "shipped": Pipeline(stages=("complete",), checkpoint=CheckpointRef.open("checkpoints/default")),
         "s36": Pipeline(stages=("complete",), checkpoint=CheckpointRef.open("benchmarks/results/session36_pool/candidate"))}
valid = depth > 0
# GT edges: log-depth jump over 3x3 > 0.05
ld = np.log(np.where(valid, depth, 1.0))
gx = cv2.Sobel(ld.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3) / 8
gy = cv2.Sobel(ld.astype(np.float32), cv2.CV_32F, 0, 1, ksize=3) / 8
edge = (np.hypot(gx, gy) > 0.05) & valid
near_edge = cv2.dilate(edge.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
tex = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
tex = cv2.blur(tex, (9, 9))
tq = np.quantile(tex[valid], [1 / 3, 2 / 3])
acc = {}
for pat in ("random500", "random100", "noisy"):
    kind, kw = SYNTHETIC_PATTERNS[pat]
    for seed in (0, 1, 2):
        sparse = make_sparse(depth, kind, seed, intrinsics=intr, **kw).astype(np.float32)
        dist = cv2.distanceTransform((sparse <= 0).astype(np.uint8), cv2.DIST_L2, 5)
        errs = {k: np.abs(p(image, sparse).depth - depth) for k, p in pipes.items()}
        regions = {"all": valid, "near GT edge (3px)": valid & near_edge, "away from edges": valid & ~near_edge,
                   "dist<8px": valid & (dist < 8), "dist 8-20": valid & (dist >= 8) & (dist < 20),
                   "dist>=20": valid & (dist >= 20),
                   "low texture": valid & (tex < tq[0]), "mid texture": valid & (tex >= tq[0]) & (tex < tq[1]),
                   "high texture": valid & (tex >= tq[1]),
                   "depth<3m": valid & (depth < 3), "depth 3-4m": valid & (depth >= 3) & (depth < 4),
                   "depth>=4m": valid & (depth >= 4)}
        for r, m in regions.items():
            a = acc.setdefault((pat, r), {"n": 0, **{k: 0.0 for k in errs}})
            a["n"] += int(m.sum())
            for k, e in errs.items():
                a[k] += float(e[m].sum())
print(f"{'pattern':10s} {'region':20s} {'share':>6s} {'guided':>8s} {'shipped':>8s} {'s36':>8s}  ship-s36 contribution to MAE gap (m)")
tot = {}
for (pat, r), a in acc.items():
    if r == "all":
        tot[pat] = a["n"]
for (pat, r), a in acc.items():
    n = a["n"]
    g, s, c = a["guided"] / n, a["shipped"] / n, a["s36"] / n
    print(f"{pat:10s} {r:20s} {n / tot[pat]:6.2f} {g:8.4f} {s / g - 1:+8.1%} {c / g - 1:+8.1%}  {(a['s36'] - a['shipped']) / tot[pat]:+.5f}")
