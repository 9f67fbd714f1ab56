"""Sharpen stage benchmark: latency and peak memory per part of the two-pass inference, and DBE / MAE before and
after sharpening on the synthetic test split.

Usage (from the repository root)::

    python benchmarks/sharpen.py                                   # tiny random model, 256/512/768 px, CPU
    python benchmarks/sharpen.py --threads 1 --config tiny_v1 tiny --sizes 320 640 --no-accuracy --name sharpen_tiny
    python benchmarks/sharpen.py --checkpoint runs/tiny_sharpen/final --name sharpen_tiny_trained
    python benchmarks/sharpen.py --config sd2 --device cuda --dtype bfloat16 --sizes 768     # SD2-size, see below

Speed. One SharpDepth call on a 3:4 image whose longest side is each ``--sizes`` value, run at that resolution
(``processing_resolution`` = the size): the median of ``--repeats`` calls after one warm-up. Parts are timed with
forward hooks: VAE encoder (the image, then the metric depth), UNet pass 1 (Lotus on pure noise), UNet pass 2 (the
sharpener on the gated latent), VAE decoder (both passes), and the rest (normalisation, discrepancy, gating, the
least-squares fit, resizing). The pipeline's ``complete`` stage (the classical ``guided`` method on 500 sparse
points) is timed beside it, so the table shows what sharpening adds to completion. Peak memory: CUDA
``max_memory_allocated``; CPU the growth of the resident set over its value before the call, sampled every 2 ms.

Accuracy. ``--eval-images`` scenes of the synthetic test split at ``--eval-size`` (H W) with two metric inputs:
``guided`` (depthkit's complete stage on 100 random GT points) and ``blur`` (the GT blurred with a Gaussian of
sigma 2 px — a smooth metric prediction in miniature). For each: MAE (m) and iBims-1 DBE accuracy / completeness
(px) of the input and of the sharpened output, and the preservation error (max |output − sparse|, m; ``guided``
only: ``blur`` is sharpened without sparse points, so its preservation is null in the JSON, n/a in the table).
Numbers are only meaningful for a trained checkpoint (``--checkpoint``); the default random model is a plumbing
check.

Configurations:

- ``tiny``: the ``depthkit init-checkpoint --tiny`` architecture (:mod:`depthkit.sharpen.tiny`: UNet 32/64 channels
  with attention only at the lowest level, VAE 8x downsampling), random weights unless ``--checkpoint`` is given
  (then the checkpoint's architecture and weights).
- ``tiny_v1``: the earlier tiny layout (``TINY_V1_UNET`` / ``TINY_V1_VAE``: attention at the highest UNet level,
  VAE 4x downsampling), random weights, for comparison. Several ``--config`` values run one after the other in one
  process and share one table (speed only; accuracy is measured for the first).
- ``sd2``: the SD2-size Lotus-G (UNet2DConditionModel of Stable Diffusion 2 with 8 input channels and the projection
  class embedding, ~866M parameters; SD's AutoencoderKL, 8x downsampling) with random weights, speed only. Meant for
  ``--device cuda --dtype bfloat16`` at 768 px: the released SharpDepth's two-pass inference.
  NOT RUN YET: the sessions that wrote this had no GPU; run it on a CUDA machine and commit what it writes.

Writes ``<out>/<name>.json`` (with ``checkpoint``: the resolved folder and a hash of its files, null for random
weights) and ``<out>/<name>.md``. ``--name`` (a file stem) defaults to ``sharpen_<config>``
(e.g. ``sharpen_tiny``) for random weights, and with ``--checkpoint`` to ``sharpen_ckpt_<its last two path parts>``
(``checkpoints/default`` -> ``sharpen_ckpt_checkpoints_default``), so a checkpoint's run never replaces a
random-weight comparison such as ``results/sharpen_tiny.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import check_device, results_name, run_info, run_main, write_results  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"

from depthkit.profiling import PeakMemory  # noqa: E402
from depthkit.sharpen.release import SD2_UNET, SD2_VAE  # noqa: E402

PARTS = ("vae_encode", "unet_pass1", "unet_pass2", "vae_decode", "other")


class PartTimer:
    """Wall time per part of a SharpDepth call, from forward pre/post hooks on the VAE encoder/decoder and UNet."""

    def __init__(self, sharpdepth, device: str):
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.times = {p: 0.0 for p in PARTS}
        self.unet_calls = 0
        m = sharpdepth.model
        unets = [m.unet] + ([sharpdepth.lotus_unet] if sharpdepth.lotus_unet is not None else [])
        self.handles = []
        for module, name in [(m.vae.encoder, "vae_encode"), (m.vae.decoder, "vae_decode")] + \
                            [(u, "unet") for u in unets]:
            self.handles.append(module.register_forward_pre_hook(self._start(name)))
            self.handles.append(module.register_forward_hook(self._stop(name)))

    def _start(self, name):
        def hook(*_):
            self.sync()
            self.t0 = time.perf_counter()
        return hook

    def _stop(self, name):
        def hook(*_):
            self.sync()
            dt = time.perf_counter() - self.t0
            part = name
            if name == "unet":
                self.unet_calls += 1
                part = "unet_pass1" if self.unet_calls % 2 == 1 else "unet_pass2"
            self.times[part] += dt
        return hook

    def reset(self):
        self.times = {p: 0.0 for p in PARTS}
        self.unet_calls = 0

    def remove(self):
        for h in self.handles:
            h.remove()


def build_model(args, config: str):
    from depthkit.sharpen.model import SharpDepth

    if args.checkpoint is not None:
        from depthkit.sharpen.checkpoint import load_sharpdepth

        return load_sharpdepth(args.checkpoint, device=args.device, dtype=args.dtype)
    if config in ("tiny", "tiny_v1"):
        from depthkit.sharpen.tiny import TINY_V1_UNET, TINY_V1_VAE, build_tiny_lotus

        layout = {"unet": TINY_V1_UNET, "vae": TINY_V1_VAE} if config == "tiny_v1" else {}
        return SharpDepth(build_tiny_lotus(seed=0, **layout).to(args.device, torch.float32)).to(args.device)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from depthkit.dtypes import torch_dtype
    from depthkit.sharpen.lotus import LotusModel

    torch.manual_seed(0)
    dtype = torch_dtype(args.dtype)
    with torch.device(args.device):
        unet = UNet2DConditionModel(**SD2_UNET).to(dtype)
        vae = AutoencoderKL(**SD2_VAE).to(dtype)
    lotus = LotusModel(unet, vae, torch.randn(1, 77, 1024), default_processing_resolution=768).to(args.device)
    return SharpDepth(lotus.eval())


def scene(h: int, w: int, seed: int = 0, n_sparse: int = 500):
    from depthkit.data.sparse import sample_random_points
    from depthkit.data.synthetic import render_scene

    s = render_scene(20_000_000 + seed, h, w, kind="random")
    return s.image, s.depth, sample_random_points(s.depth, n_sparse, seed)


def bench_speed(model, args, config: str = "") -> list[dict]:
    from depthkit.stages import ClassicalCompleteStage

    complete = ClassicalCompleteStage("guided")
    timer = PartTimer(model, args.device)
    rows = []
    for size in args.sizes:
        h, w = size * 3 // 4, size
        image, depth, sparse = scene(h, w)
        metric = complete.run(image, sparse).depth
        runs = []
        for r in range(args.repeats + 1):
            t0 = time.perf_counter()
            metric = complete.run(image, sparse).depth
            t_complete = time.perf_counter() - t0
            timer.reset()
            with PeakMemory(args.device) as mem:
                t0 = time.perf_counter()
                out = model.sharpen(image, metric, sparse, processing_resolution=size)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t_sharpen = time.perf_counter() - t0
            if timer.unet_calls != 2:
                raise RuntimeError(f"expected 2 UNet passes per call, counted {timer.unet_calls}")
            parts = dict(timer.times)
            parts["other"] = t_sharpen - sum(v for k, v in parts.items() if k != "other")
            if r > 0:  # the first call is a warm-up
                runs.append({"complete_s": t_complete, "sharpen_s": t_sharpen, "peak_bytes": mem.peak, **parts})
        med = {k: float(np.median([run[k] for run in runs])) for k in runs[0]}
        med.update(config=config, size=size, height=h, width=w, preserved=bool(np.array_equal(out.depth[sparse > 0],
                                                                              sparse[sparse > 0])))
        rows.append(med)
        print(f"{config} {h}x{w}: complete {med['complete_s']:.3f} s, sharpen {med['sharpen_s']:.3f} s "
              f"(UNet {med['unet_pass1']:.3f} + {med['unet_pass2']:.3f}), peak {med['peak_bytes'] / 2**20:.0f} MiB",
              flush=True)
    timer.remove()
    return rows


def bench_accuracy(model, args) -> dict:
    import cv2

    from depthkit.data.datasets import build_dataset
    from depthkit.metrics import dbe_metrics, preservation_error
    from depthkit.stages import ClassicalCompleteStage

    h, w = args.eval_size
    ds = build_dataset("synthetic", None, split="test", length=args.eval_images, height=h, width=w,
                       sparse_kwargs={"n": 100})
    complete = ClassicalCompleteStage("guided")
    acc: dict[str, list] = {"guided": [], "blur": []}
    for i in range(len(ds)):
        it = ds[i]
        gt, sparse = it["depth"], it["sparse"]
        valid = it["valid"] & (gt > 0)
        inputs = {"guided": complete.run(it["image"], sparse).depth,
                  "blur": np.where(gt > 0, cv2.GaussianBlur(gt, (0, 0), 2.0), 0).astype(np.float32)}
        for name, d in inputs.items():
            sp = sparse if name == "guided" else None
            out = model.sharpen(it["image"], d, sp).depth
            row = []
            for pred in (d, out):
                dbe = dbe_metrics(pred, gt, valid=valid)
                row += [float(np.abs(pred - gt)[valid].mean()), dbe["dbe_acc"], dbe["dbe_comp"]]
            row.append(preservation_error(out, sparse) if sp is not None else float("nan"))  # blur: none given
            acc[name].append(row)
    keys = ["mae_in", "dbe_acc_in", "dbe_comp_in", "mae_out", "dbe_acc_out", "dbe_comp_out", "preservation"]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of a column without a value (blur's preservation)
        return {name: dict(zip(keys, np.nanmean(np.asarray(rows, np.float64), axis=0).tolist()))
                for name, rows in acc.items()}


def default_name(configs: list[str], checkpoint: Path | None) -> str:
    """The results' file stem without ``--name``: ``sharpen_<configs>`` for random weights, ``sharpen_ckpt_<the
    checkpoint's last two path parts>`` with a checkpoint (its own file, never a random-weight comparison's)."""
    if checkpoint is None:
        return f"sharpen_{'_'.join(configs)}"
    parts = Path(checkpoint).resolve().parts[-2:]
    return "sharpen_ckpt_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts)).strip("_.") or "root")


def _preservation(value: float | None) -> str:
    """A preservation error (m) for the accuracy table; n/a for None / NaN: the ``blur`` input is sharpened without
    sparse points, so it has no measured pixel to keep."""
    return "n/a" if value is None or value != value else f"{value:.1e}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# Sharpen benchmark: `{report['name']}`", "",
             f"{report['date']} — `{report['command']}`", "",
             f"Model: {report['model']['description']}. Device {report['device']} "
             f"({m.get('gpu') or m.get('cpu') or m['platform']}), dtype {report['dtype']}, {m['torch_threads']} torch "
             "threads, "
             f"load average {m['load_average'][0]:.1f} on {m['cpu_count']} CPUs (a shared machine: times are noisy).",
             "", "## Latency (median seconds per image) and peak memory", "",
             "| config | image (HxW) | complete (guided) | sharpen total | VAE encode | UNet pass 1 | UNet pass 2 |"
             " both UNet passes per Mpx | VAE decode | other | peak memory (MiB) | measured pixels kept |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["speed"]:
        per_mpx = (r["unet_pass1"] + r["unet_pass2"]) / (r["height"] * r["width"] / 1e6)
        lines.append(f"| {r.get('config', '')} | {r['height']}x{r['width']} | {r['complete_s']:.3f} | "
                     f"{r['sharpen_s']:.3f} | {r['vae_encode']:.3f} | {r['unet_pass1']:.3f} | {r['unet_pass2']:.3f} | "
                     f"{per_mpx:.2f} | {r['vae_decode']:.3f} | {r['other']:.3f} | {r['peak_bytes'] / 2**20:.0f} | "
                     f"{'yes' if r['preserved'] else 'NO'} |")
    if report.get("accuracy"):
        h, w = report["eval_size"]
        lines += ["", f"## Accuracy on the synthetic test split ({report['eval_images']} scenes, {h}x{w})", "",
                  "| metric input | MAE in (m) | MAE out (m) | DBE acc in (px) | DBE acc out (px) | DBE comp in (px) |"
                  " DBE comp out (px) | preservation (m) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, a in report["accuracy"].items():
            label = {"guided": "complete stage (guided, 100 points)", "blur": "GT blurred (sigma 2 px)"}[name]
            lines.append(f"| {label} | {a['mae_in']:.3f} | {a['mae_out']:.3f} | {a['dbe_acc_in']:.2f} | "
                         f"{a['dbe_acc_out']:.2f} | {a['dbe_comp_in']:.2f} | {a['dbe_comp_out']:.2f} | "
                         f"{_preservation(a['preservation'])} |")
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` (before any model is built) for a size, count or thread number the run cannot use: every
    ``--sizes`` value >= 4 px (the 3:4 image is ``size * 3 // 4`` px high), ``--repeats`` >= 1 (the median is over
    the calls after the warm-up), ``--threads`` >= 1, ``--eval-images`` >= 1 and both ``--eval-size`` sides >= 1 px
    (unless ``--no-accuracy``); and for options the table would mislabel: several ``--config`` with a
    ``--checkpoint`` (one model, timed under each name), a ``--dtype`` other than float32 for a random tiny model
    (built in float32 whatever ``--dtype`` says)."""
    bad = [s for s in args.sizes if s < 4]
    if bad:
        p.error(f"--sizes takes longest image sides of at least 4 pixels (e.g. 256 512); received {bad[0]}.")
    if args.repeats < 1:
        p.error(f"--repeats takes the number of timed calls after the warm-up, at least 1; received {args.repeats}.")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads takes a number of torch CPU threads, at least 1; received {args.threads}.")
    if not args.no_accuracy and args.eval_images < 1:
        p.error(f"--eval-images takes a number of test scenes, at least 1 (or pass --no-accuracy); received "
                f"{args.eval_images}.")
    if not args.no_accuracy and min(args.eval_size) < 1:
        p.error(f"--eval-size takes H W in pixels, each at least 1 (e.g. 48 64); received "
                f"{' '.join(map(str, args.eval_size))}.")
    if args.checkpoint is not None and len(args.config) > 1:
        p.error(f"--checkpoint gives one model (the checkpoint's own architecture and weights), so several --config "
                f"values would time it once per name; pass one --config with it; received --config "
                f"{' '.join(args.config)}.")
    random_tiny = [c for c in args.config if c in ("tiny", "tiny_v1")] if args.checkpoint is None else []
    if random_tiny and args.dtype != "float32":
        p.error(f"--dtype {args.dtype}: the random-weight --config {random_tiny[0]} runs in float32 only (--dtype "
                "applies to --config sd2 and --checkpoint); drop --dtype or pass --config sd2 or a --checkpoint.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=("tiny", "tiny_v1", "sd2"), nargs="+", default=["tiny"],
                   help="one or more architectures, timed one after the other into one table")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a depthkit checkpoint (or its sharpen/ folder) instead of random weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 768], help="longest image side, pixels")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--eval-images", type=int, default=32)
    p.add_argument("--eval-size", type=int, nargs=2, default=[48, 64], metavar=("H", "W"))
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--name", type=results_name, default=None,
                   help="file stem of the results in --out (default: sharpen_<config>, e.g. sharpen_tiny, for random "
                        "weights; with --checkpoint sharpen_ckpt_<its last two path parts>, e.g. "
                        "sharpen_ckpt_checkpoints_default)")
    p.add_argument("--note", default="", help="a sentence added under the tables (e.g. where the checkpoint came from)")
    p.add_argument("--out", type=Path, default=OUT,
                   help="folder for the .json and .md results (default: benchmarks/results, wherever it is run from)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    check_args(p, args)
    name = args.name or default_name(args.config, args.checkpoint)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.config[0] == "sd2" and args.checkpoint is None:
        args.no_accuracy = True  # accuracy is measured on the first config; sd2's random weights: speed only
    check_device(args.device)

    from depthkit.checkpoints import checkpoint_identity

    checkpoint = checkpoint_identity(args.checkpoint)  # its resolved folder and files' hash (None: random weights)
    speed, models = [], []
    for config in args.config:
        models.append(build_model(args, config))
        speed += bench_speed(models[-1], args, config)
    model = models[0]
    n_params = sum(q.numel() for q in model.parameters())
    descs = {"tiny": "tiny random-weight SharpDepth (init-checkpoint --tiny architecture)",
             "tiny_v1": "the earlier tiny layout (TINY_V1_UNET/VAE), random weights",
             "sd2": "SD2-size Lotus-G UNet + SD VAE, random weights"}
    desc = (f"checkpoint {args.checkpoint}, {n_params / 1e6:.2f}M parameters" if args.checkpoint else
            "; ".join(f"{c}: {descs[c]}, {sum(q.numel() for q in m.parameters()) / 1e6:.2f}M parameters (UNet "
                      f"{sum(q.numel() for q in m.model.unet.parameters()) / 1e6:.2f}M)"
                      for c, m in zip(args.config, models)))
    accuracy = None if args.no_accuracy else bench_accuracy(model, args)
    info = run_info(argv, __file__, args.device)
    info["machine"]["load_average"] = os.getloadavg()
    report = {
        "name": name, "config": args.config, **info, "checkpoint": checkpoint, "device": args.device,
        "dtype": args.dtype,
        "model": {"description": desc, "parameters": n_params,
                  "unet_parameters": sum(q.numel() for q in model.model.unet.parameters()),
                  "processing": "each size runs at its own resolution (processing_resolution = size)"},
        "speed": speed, "accuracy": accuracy, "eval_images": args.eval_images, "eval_size": args.eval_size,
        "note": args.note,
    }
    write_results(args.out, name, report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
