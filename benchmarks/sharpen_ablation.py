"""SharpDepth's ablations in miniature (:mod:`depthkit.sharpen.miniature`), on scenes not trained on.

Usage (from the repository root; the script runs one torch thread: 126 s in the recorded run, longer when loaded)::

    python benchmarks/sharpen_ablation.py --seeds 0 1 2

One tiny Lotus is trained on dense GT of ``--train-scenes`` synthetic scenes (32x32); then, for each seed, SharpDepth
is trained label-free on the smooth metric input (GT at 1/4 resolution, upsampled bilinearly) of the same images,
once per variant:

- ``full``: the defaults (noise-aware gating, EMA of the student as pass 1, λ_SDS = 1, λ_recons = 0.3);
- ``uniform noise``: ``gating=False`` (pass 2 always gets pure noise, training and inference);
- ``fixed Lotus``: pass 1 is a frozen copy of the initial Lotus instead of the EMA;
- ``SDS off``: λ_SDS = 0;
- ``λ_recons 0`` / ``λ_recons 1``: reconstruction weight (0.3 is ``full``);
- ``recons 1 − e``: the reconstruction loss weighted by 1 − e instead of e.

Each is scored on ``--test-scenes`` held-out scenes: MAE (m), MAE within 2 px of a GT edge and elsewhere, and DBE
accuracy (px) of the input and the output; mean ± std over seeds (the population std, numpy's ddof=0). Writes
``<out>/sharpen_ablation.{json,md}``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import results_name, run_info, run_main, write_results  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"

VARIANTS = {
    "full": ({}, "ema"),
    "uniform noise (gating off)": ({"gating": False}, "ema"),
    "fixed Lotus as pass 1 (no EMA)": ({}, "lotus"),
    "SDS off (λ_SDS = 0)": ({"lambda_sds": 0.0}, "ema"),
    "λ_recons = 0": ({"lambda_recons": 0.0}, "ema"),
    "λ_recons = 1": ({"lambda_recons": 1.0}, "ema"),
    "recons weighted by 1 − e": ({"recons_weight": "one_minus_e"}, "ema"),
}
COLUMNS = ("mae_out", "mae_edge_out", "mae_flat_out", "dbe_out")


def min_train_scenes() -> int:
    """The fewest ``--train-scenes`` the training draws its batches from without repeats: the Lotus batch (over the
    scenes and their mirror images) and SharpDepth's (over the scenes), as :mod:`depthkit.sharpen.miniature`'s
    ``train_lotus`` and ``train_sharpdepth`` default them."""
    from depthkit.sharpen import miniature as mini

    batch = {f.__name__: inspect.signature(f).parameters["batch"].default
             for f in (mini.train_lotus, mini.train_sharpdepth)}
    return max(-(-batch["train_lotus"] // 2), batch["train_sharpdepth"])


def markdown(report: dict) -> str:
    inp = report["input"]
    lines = [f"# SharpDepth ablation in miniature: `{report['name']}`", "",
             f"{report['date']} — `{report['command']}` ({report['seconds']:.0f} s)", "",
             f"Lotus: {report['lotus']}. Held-out scenes: {report['test_scenes']} (32x32); seeds {report['seeds']}; "
             f"SharpDepth {report['sharpen_steps']} steps per run. Mean ± std over seeds (population std, ddof=0); "
             "lower is better.", "",
             "| variant | MAE (m) | MAE near edges (m) | MAE elsewhere (m) | DBE acc (px) |", "|---|---:|---:|---:|---:|",
             f"| metric input | {inp['mae_in']:.3f} | {inp['mae_edge_in']:.3f} | {inp['mae_flat_in']:.3f} | "
             f"{inp['dbe_in']:.3f} |",
             f"| Lotus alone (pass 1, affine-invariant) | – | – | – | {inp['dbe_lotus']:.3f} |",
             f"| untrained SharpDepth (= Lotus init) | {inp['untrained']['mae_out']:.3f} | "
             f"{inp['untrained']['mae_edge_out']:.3f} | {inp['untrained']['mae_flat_out']:.3f} | "
             f"{inp['untrained']['dbe_out']:.3f} |"]
    for name, rows in report["variants"].items():
        cells = []
        for c in COLUMNS:
            v = np.array([r[c] for r in rows])
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-scenes", type=int, default=32)
    p.add_argument("--test-scenes", type=int, default=16)
    p.add_argument("--lotus-vae-steps", type=int, default=300)
    p.add_argument("--lotus-unet-steps", type=int, default=200)
    p.add_argument("--sharpen-steps", type=int, default=40)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--name", type=results_name, default="sharpen_ablation",
                   help="file stem of the results in --out (default sharpen_ablation)")
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, default=OUT,
                   help="folder for the .json and .md results (default: benchmarks/results, wherever it is run from)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    least = min_train_scenes()
    if args.train_scenes < least:
        p.error(f"--train-scenes must be >= {least} (the training draws batches of distinct scenes); received "
                f"{args.train_scenes}. The recorded run uses 32.")
    if args.test_scenes < 1:
        p.error(f"--test-scenes must be >= 1 held-out scene; received {args.test_scenes}.")
    for option, value in (("--lotus-vae-steps", args.lotus_vae_steps), ("--lotus-unet-steps", args.lotus_unet_steps),
                          ("--sharpen-steps", args.sharpen_steps)):
        if value < 1:  # 0 trains nothing: every variant would be the untrained model, scored as if trained
            p.error(f"{option} must be >= 1 training step; received {value}.")
    twice = sorted({v for v in args.variants if args.variants.count(v) > 1})
    if twice:  # as a repeated seed: each seed's run would count twice in the variant's mean and shrink its std
        p.error(f"--variants must be distinct (each variant's runs count once in its mean ± std); received "
                f"{' '.join(args.variants)} (repeated: {' '.join(twice)}).")
    repeated = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if repeated:  # the same run twice would count twice in the mean and shrink the std
        p.error(f"--seeds must be distinct (each seed's run counts once in the mean ± std); received "
                f"{' '.join(map(str, args.seeds))} (repeated: {' '.join(map(str, repeated))}).")
    torch.set_num_threads(1)
    from depthkit.sharpen import miniature as mini
    from depthkit.sharpen.model import SharpDepth

    t0 = time.perf_counter()
    train, test = mini.make_split(args.train_scenes, args.test_scenes)
    lotus = mini.train_lotus(train, vae_steps=args.lotus_vae_steps, unet_steps=args.lotus_unet_steps)
    base = mini.evaluate(SharpDepth(lotus), test)
    print("input / untrained:", json.dumps({k: round(v, 3) for k, v in base.items()}), flush=True)
    variants: dict[str, list] = {name: [] for name in args.variants}
    for seed in args.seeds:
        for name in args.variants:
            config, pass1 = VARIANTS[name]
            sd = mini.train_sharpdepth(lotus, train, config, steps=args.sharpen_steps, seed=seed, pass1=pass1)
            r = mini.evaluate(sd, test)
            variants[name].append({k: r[k] for k in COLUMNS})
            print(f"seed {seed} {name}:", json.dumps({k: round(r[k], 3) for k in COLUMNS}), flush=True)
    info = run_info(argv, __file__)
    info["machine"]["load_average"] = os.getloadavg()
    report = {
        "name": args.name, **info, "seconds": time.perf_counter() - t0,
        "lotus": f"tiny Lotus-G (miniature.MINI_LOTUS) trained on {args.train_scenes} scenes' dense GT "
                 f"({args.lotus_vae_steps} VAE steps, then {args.lotus_unet_steps} UNet steps)",
        "train_scenes": args.train_scenes, "lotus_vae_steps": args.lotus_vae_steps,
        "lotus_unet_steps": args.lotus_unet_steps,
        "seeds": args.seeds, "test_scenes": args.test_scenes, "sharpen_steps": args.sharpen_steps,
        "input": {**{k: base[k] for k in ("mae_in", "mae_edge_in", "mae_flat_in", "dbe_in", "dbe_lotus")},
                  "untrained": {k: base[k] for k in COLUMNS}},
        "variants": variants, "note": args.note,
    }
    write_results(args.out, args.name, report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
