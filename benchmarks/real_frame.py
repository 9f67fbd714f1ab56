"""A real frame, for development checks only (never for training): Middlebury 2006 "Aloe" from Debian's opencv-doc.

Usage (from the repository root; ``apt-get install opencv-doc`` provides the files)::

    python benchmarks/real_frame.py                                 # nearest, guided and the embedded default
    python benchmarks/real_frame.py --checkpoint CKPT --seeds 0 1 2

``examples/data/aloeL.jpg`` with ``aloeGT.png`` (8-bit disparity, 0 = unknown, 1282x1110). Depth is ``1 /
disparity`` up to scale, scaled so its median is 1.5 (relative scale only: MAE is in those units), both resized to
320x276 (image: area; disparity: nearest). Sparse input: ``--points`` random GT pixels per seed. Reported per method:
MAE, RMSE (:func:`depthkit.metrics.depth_metrics`) and DBE accuracy (:func:`~depthkit.metrics.dbe_metrics`) against the GT, the mean over seeds. SPEC section 7 gives
guided 0.062 and nearest 0.095 MAE at 500 points (seed-dependent).

Writes ``<out>/real_frame.json`` and ``<out>/real_frame.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results, accuracy
from _results import write_results  # noqa: E402

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
OUT = Path(__file__).resolve().parent / "results"


def load_aloe(data: Path = DATA, size: tuple[int, int] = (276, 320)):
    """(HxWx3 uint8 RGB, HxW float32 depth with median 1.5, 0 = unknown) at ``size`` (H, W)."""
    import cv2
    import numpy as np

    left, gt = data / "aloeL.jpg", data / "aloeGT.png"
    if not left.is_file() or not gt.is_file():
        raise SystemExit(f"real_frame: {left} / {gt} not found; install Debian's opencv-doc package "
                         "(apt-get install opencv-doc) or pass --data DIR holding aloeL.jpg and aloeGT.png.")
    image = cv2.cvtColor(cv2.imread(str(left)), cv2.COLOR_BGR2RGB)
    disp = cv2.imread(str(gt), cv2.IMREAD_UNCHANGED).astype(np.float32)
    h, w = size
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    disp = cv2.resize(disp, (w, h), interpolation=cv2.INTER_NEAREST)
    depth = np.where(disp > 0, 1.0 / np.maximum(disp, 1e-6), 0).astype(np.float32)
    depth *= 1.5 / np.median(depth[depth > 0])
    return image, depth


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Real-frame development check on Middlebury Aloe (opencv-doc).")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--checkpoint", default=None, help="a checkpoint to add (default: the embedded default, if any)")
    p.add_argument("--stages", default="complete,sharpen")
    p.add_argument("--points", type=int, default=500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=OUT)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    import numpy as np

    from depthkit import Pipeline
    from depthkit.checkpoints import CheckpointRef
    from depthkit.data.sparse import sample_random_points
    from depthkit.metrics import dbe_metrics, depth_metrics

    image, depth = load_aloe(args.data)
    ref = CheckpointRef.open(args.checkpoint) if args.checkpoint else CheckpointRef.default()
    methods = {"nearest": Pipeline(method="nearest"), "guided": Pipeline(method="guided")}
    if ref is not None:
        stages = [s for s in args.stages.split(",") if s in ref.stages or s == "complete"]
        methods[f"{ref.root.name}: complete"] = Pipeline(stages=("complete",), checkpoint=ref)
        if "sharpen" in stages:
            methods[f"{ref.root.name}: complete + sharpen"] = Pipeline(stages=("complete", "sharpen"), checkpoint=ref)
    rows = {name: [] for name in methods}
    for seed in args.seeds:
        sparse = sample_random_points(depth, args.points, seed=seed)
        for name, pipe in methods.items():
            out = pipe(image, sparse)
            m = {**depth_metrics(out.depth, depth, depth > 0), **dbe_metrics(out.depth, depth, valid=depth > 0)}
            rows[name].append({k: float(m[k]) for k in ("mae", "rmse", "dbe_acc")})
    table = {name: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for name, rs in rows.items()}
    report = {"benchmark": "real_frame", "frame": "Middlebury 2006 Aloe (opencv-doc), 320x276, depth median 1.5",
              "date": _dt.datetime.now().replace(microsecond=0).isoformat(),
              "command": "python benchmarks/real_frame.py" + (" " + shlex.join(argv) if argv else ""),
              "points": args.points, "seeds": args.seeds, "mean": table, "per_seed": rows}
    lines = [f"## Real frame: {report['frame']}", "", f"{report['date']}, `{report['command']}`; {args.points} "
             f"random points, mean over seeds {args.seeds}. Development check only, never trained on.", "",
             "| method | MAE | RMSE | DBE-acc (px) |", "|---|---:|---:|---:|"]
    for name, t in table.items():
        lines.append(f"| {name} | {t['mae']:.4f} | {t['rmse']:.4f} | {t['dbe_acc']:.3f} |")
    write_results(args.out, "real_frame", report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
