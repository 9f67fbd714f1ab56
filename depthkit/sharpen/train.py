"""Label-free SharpDepth training: ``depthkit train recipes/sharpen/sharpdepth_sd2.yaml`` (``recipes/tiny/sharpen.yaml``).

Any folder of unlabelled images works: for each image a metric source (:mod:`depthkit.sharpen.teachers`) gives d —
UniDepth as in the paper, depthkit's complete stage on sparse input, a transformers depth model or precomputed
files — and no ground truth is read. Models:

- **student** (trained): the sharpener UNet, initialised from Lotus-G (``model.lotus``);
- **EMA** of the student (:class:`~depthkit.sharpen.model.EMA`, float32): runs pass 1, the Lotus prediction that
  the discrepancy e is computed from, so the discrepancy improves with the student [code]; with ``model.pass1:
  lotus`` (a depthkit switch) a frozen copy of the initial Lotus runs it instead, and is exported as
  ``sharpen/lotus_unet/``;
- **teacher** f_G (frozen; ``model.teacher`` or a copy of the initial Lotus): scores the student's latent for SDS;
- the VAE is frozen.

Each step is :meth:`SharpDepth.compute_losses` (gating with probability 0.8, SDS in x0 form, e-weighted
reconstruction; λ_SDS = 1.0, λ_recons = 0.3 by default) on random crops of ``data.resolution``. d is computed once per
image at its own resolution and cached under ``<output_dir>/metric_cache/`` (``metric.cache``), then cropped with
the image. With ``data.use_sparse`` the sample's sparse input (synthetic/hypersim/vkitti2 draw it from GT; image
folders read ``sparse_dir``) sets e = 0 at measured pixels.

Accelerate handles bf16 autocast (the frozen VAE and teacher are cast to bf16 on CUDA), gradient accumulation and
several processes (gradients averaged by hand, data sharded by :class:`~depthkit.training.StepSampler`).
Checkpoints (student, optimiser, LR schedule, EMA) are atomic and ``--resume`` continues exactly. The result,
``<output_dir>/final/``, is a depthkit checkpoint (``depthkit.json`` + ``sharpen/``) that
``Pipeline.from_pretrained`` and ``depthkit run --checkpoint`` load directly.
"""

from __future__ import annotations

import copy
import hashlib
import re
import time
from pathlib import Path

import numpy as np

__all__ = ["METRIC_CODE", "MetricCache", "code_identity", "evaluate_sharpening", "load_initial_lotus", "train"]


def load_initial_lotus(path: str, cfg=None, seed: int = 0):
    """The Lotus-G a sharpen recipe starts from: "tiny" (random, ``cfg.tiny_unet``/``tiny_vae``), a Lotus folder,
    a depthkit checkpoint with ``sharpen/``, or a hub id."""
    from depthkit.sharpen.checkpoint import resolve_sharpen_dir
    from depthkit.sharpen.lotus import LotusModel

    if path == "tiny":
        from depthkit.sharpen.tiny import build_tiny_lotus

        return build_tiny_lotus(seed=seed, unet=dict(getattr(cfg, "tiny_unet", {}) or {}),
                                vae=dict(getattr(cfg, "tiny_vae", {}) or {}))
    model = LotusModel.from_pretrained(resolve_sharpen_dir(path))
    if model.mode != "generative":
        raise ValueError(f"model.lotus {path} is a Lotus-D (direct) model; SharpDepth needs Lotus-G (8-channel UNet).")
    return model


METRIC_CODE = ("",)
"""The depthkit sources (files or folders, relative to the package) whose code computes a metric source's maps: a
change to any of them is a different source for :class:`MetricCache`. The whole package: a completion reaches into
the stage builders, checkpoint loading, resizing and geometry too, and a missed module would serve stale maps."""


def code_identity(parts=METRIC_CODE, root: Path | None = None) -> str:
    """A short hash of the Python sources under ``parts`` (relative to ``root``, default the installed depthkit
    package; files or folders, their names and contents): it changes when that code changes."""
    root = Path(__file__).resolve().parent.parent if root is None else Path(root)
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        path = root / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
        if not files:
            raise ValueError(f"code_identity: {path} holds no Python source; parts name files or folders of {root}.")
        for f in files:
            h.update(f"{f.relative_to(root)}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


class MetricCache:
    """Metric depth per input, computed once by ``source`` and kept as ``<root>/<name>_<digest>.npy`` (atomic
    writes; ``root`` a path or str), with the pixels a completer placed by rule beside it (:meth:`with_placed`);
    ``root=None`` disables the cache.

    The file is keyed by the sample's name *and* a digest of its image, its sparse map, the source's ``identity``
    (for a completer checkpoint: its files and options) and ``code`` (default: :func:`code_identity` of
    :data:`METRIC_CODE`, read once): readers of a mix may share names (several synthetic sources render the same
    scenes with different sparse patterns; two folders may both hold ``0001.png``), a metric input computed from one
    sparse map must never be served with another, nor one from a retrained or reconfigured source, nor one that a
    since-changed version of the code computed.
    """

    def __init__(self, source, root: str | Path | None, code: str | None = None):
        self.source, self.root = source, None if root is None else Path(root)
        self.code = code if code is not None else code_identity() if root is not None else ""

    def _path(self, image: np.ndarray, sparse: np.ndarray | None, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "__", name).lstrip(".") or "_"
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"code:{self.code}|".encode())
        identity = getattr(self.source, "identity", None) or getattr(self.source, "__qualname__", None)
        digest.update(str(identity or type(self.source).__qualname__).encode())  # (a plain function: its name)
        for a in (image, sparse):
            if a is None:
                digest.update(b"none")
                continue
            a = np.ascontiguousarray(a)
            digest.update(f"{a.dtype.str}{a.shape}".encode())
            digest.update(a.tobytes())
        return self.root / f"{safe}_{digest.hexdigest()}.npy"

    def __call__(self, image: np.ndarray, sparse: np.ndarray | None, name: str) -> np.ndarray:
        return self.with_placed(image, sparse, name)[0]

    def with_placed(self, image: np.ndarray, sparse: np.ndarray | None,
                    name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """``(depth, placed)``: the metric depth and, for a source that reports them (its ``with_placed``: the
        complete stage's source), the pixels it placed by rule (HxW bool; else None), kept beside the depth as
        ``<name>_<digest>.placed.npz`` (written first; a depth whose record is missing, unreadable or not a mask of
        its size is computed again)."""
        def compute(*args):
            with_placed = getattr(self.source, "with_placed", None)
            return with_placed(*args) if with_placed is not None else (self.source(*args), None)  # a plain callable

        if self.root is None:
            return compute(image, sparse, name)
        path = self._path(image, sparse, name)
        placed_path = path.with_suffix(".placed.npz")
        if path.is_file():
            depth = np.load(path, allow_pickle=False)
            if depth.shape == image.shape[:2]:
                found = _read_placed(placed_path, depth.shape)
                if found is not _MISSING:
                    return depth, found
        depth, placed = compute(image, sparse, name)
        self.root.mkdir(parents=True, exist_ok=True)
        # the mask's record first (an empty one for a source without rules): a depth is served only with its record
        tmp = placed_path.with_name(f".tmp_{placed_path.name}")  # ends in .npz, so numpy keeps the name
        np.savez_compressed(tmp, placed=np.zeros(0, bool) if placed is None else placed, none=placed is None)
        tmp.replace(placed_path)
        tmp = path.with_name(f".tmp_{path.name}")  # ends in .npy, so np.save keeps the name
        np.save(tmp, depth.astype(np.float32))
        tmp.replace(path)
        return depth, placed


_MISSING = object()


def _read_placed(path: Path, shape: tuple[int, int]):
    """A cached placed-mask record: the HxW bool mask, None (the source has no rules), or ``_MISSING`` when the file
    is absent, unreadable, or not a bool mask of ``shape`` (then the entry is computed again)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if bool(stored["none"]):
                return None
            placed = stored["placed"]
    except Exception:  # absent, truncated, or not written by this cache
        return _MISSING
    return placed if placed.dtype == bool and placed.shape == tuple(shape) else _MISSING


def evaluate_sharpening(sharpdepth, dataset, metric, n_images: int, processing_resolution: int | None = None) -> dict:
    """On the first ``n_images`` items of ``dataset`` (with GT): mean MAE (m) and iBims DBE accuracy (px) of the
    metric input and of the sharpened output, sharpened at ``processing_resolution`` (longest side in pixels; the
    recipe's ``model.processing_resolution``, which the exported checkpoint runs at; None: the model's default)."""
    from depthkit.metrics import dbe_metrics

    rows = []
    for i in range(min(n_images, len(dataset))):
        item = dataset[i]
        gt = item["depth"]
        if gt is None:
            raise ValueError("validation needs a dataset with GT depth (e.g. synthetic split val).")
        valid = (item["valid"] if item.get("valid") is not None else gt > 0) & (gt > 0)
        sparse = item.get("sparse")
        d = metric(item["image"], sparse, f"val/{item['name']}")
        out = sharpdepth.sharpen(item["image"], d, sparse if sparse is not None and (sparse > 0).any() else None,
                                 processing_resolution=processing_resolution)
        rows.append((np.abs(d - gt)[valid].mean(), np.abs(out.depth - gt)[valid].mean(),
                     dbe_metrics(d, gt, valid=valid)["dbe_acc"], dbe_metrics(out.depth, gt, valid=valid)["dbe_acc"]))
    a = np.asarray(rows, dtype=np.float64)
    with np.errstate(all="ignore"):
        m = np.nanmean(a, axis=0) if len(a) else [float("nan")] * 4
    return {"val_mae_metric": float(m[0]), "val_mae_sharp": float(m[1]), "val_dbe_metric": float(m[2]),
            "val_dbe_sharp": float(m[3])}


def _batch(data, sampler, k: int, metric, resolution, flip: bool, seed: int, rank: int, use_sparse: bool,
           use_gt: bool = False):
    """Micro-step ``k``'s crops: ``(images, metric depths, sparse maps or None, GT maps or None)``."""
    from depthkit.sharpen.train_common import random_resized_crop
    from depthkit.training import step_seed

    images, depths, sparses, gts = [], [], [], []
    for j, idx in enumerate(sampler.indices(k)):
        item = data[idx]
        sparse = item.get("sparse")
        d = metric(item["image"], sparse, item["name"])
        maps = {"metric": d}
        if use_gt:
            if item.get("depth") is None:
                raise ValueError(f"training sample {item['name']!r} has no GT depth, and the recipe's lambda_gt / "
                                 "lambda_gt_grad need it: train on data with GT (synthetic scenes) or set both to 0.")
            gt = np.asarray(item["depth"], np.float32)
            valid = item.get("valid")
            maps["gt"] = gt if valid is None else np.where(valid, gt, 0.0).astype(np.float32)
        rng = np.random.default_rng(step_seed(seed, k, rank, stream=2 + j))
        img, maps, sp = random_resized_crop(item["image"], maps, sparse if use_sparse else None, resolution, rng, flip)
        images.append(img)
        depths.append(maps["metric"])
        sparses.append(sp if sp is not None else np.zeros(img.shape[:2], np.float32))
        gts.append(maps.get("gt"))
    return images, depths, sparses if use_sparse else None, gts if use_gt else None


def _place(module, device, dtype):
    """``module.to(device[, dtype])``, casting only when the dtype changes (diffusers warns on every cast)."""
    current = next(module.parameters()).dtype
    return module.to(device) if current == dtype else module.to(device, dtype)


def check_teacher(teacher, student, where: str) -> None:
    """Raise ``ValueError`` unless ``teacher`` (the Lotus-G of ``model.teacher``) can score the student in SDS: its
    UNet runs on the student's VAE latents, conditioned on the student's empty-prompt embedding, and its prediction
    is compared with the student's, so the two must share the mode, the depth normalisation, the VAE (its latent
    channels, scaling factor and weights) and the embedding, as Lotus-G and SharpDepth share Stable Diffusion 2's."""
    import torch

    def same_tensors(a: dict, b: dict) -> bool:  # up to rounding (e.g. an embedding computed in another dtype)
        return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.allclose(
            a[k].cpu().float(), b[k].cpu().float(), rtol=1e-3, atol=1e-3) for k in a)

    tv, sv = teacher.vae.config, student.vae.config
    differ = [f"{name} {a!r} (the student's: {b!r})" for name, a, b in (
        ("mode", teacher.mode, student.mode), ("norm", teacher.norm, student.norm),
        ("UNet in_channels", teacher.unet.config.in_channels, student.unet.config.in_channels),
        ("VAE latent_channels", tv.latent_channels, sv.latent_channels),
        ("VAE scaling_factor", tv.scaling_factor, sv.scaling_factor)) if a != b]
    if not differ and not same_tensors(teacher.vae.state_dict(), student.vae.state_dict()):
        differ.append("other VAE weights")
    if not differ and not same_tensors({"e": teacher.empty_prompt_embeds}, {"e": student.empty_prompt_embeds}):
        differ.append("another empty-prompt embedding")
    if differ:
        raise ValueError(f"model.teacher {where} cannot score this student in SDS: it has {'; '.join(differ)}. The "
                         "teacher's UNet runs on the student's VAE latents and prompt embedding, so both must be "
                         "Lotus-G models of one base (e.g. Lotus-G and the sharpener's init on Stable Diffusion 2), "
                         "or leave model.teacher unset to use a frozen copy of model.lotus.")


def train(recipe, resume: bool = False) -> Path:
    """Run a ``kind: sharpen`` recipe; returns ``<output_dir>/final`` (a depthkit checkpoint with ``sharpen/``)."""
    import torch

    from depthkit.config import recipe_to_yaml
    from depthkit.run_recipe import load_resumed_weights
    from depthkit.run_state import JsonlLogger, atomic_export, load_latest_state, save_state
    from depthkit.sharpen.model import EMA, SharpDepth
    from depthkit.sharpen.teachers import build_metric_source
    from depthkit.sharpen.train_common import (
        build_training_data,
        check_resolution,
        images_to_tensor,
        maps_to_tensor,
    )
    from depthkit.training import StepSampler, build_scheduler, start_run, step_generator, total_steps

    tc = recipe.train
    run, accelerator = start_run(recipe, resume)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    # frozen parts run in bf16 when training in bf16 (as diffusers scripts do); the student stays float32
    frozen_name = {"bf16": "bfloat16"}.get(accelerator.mixed_precision, "float32")
    frozen_dtype = getattr(torch, frozen_name)

    lotus = load_initial_lotus(recipe.model.lotus, recipe.model, seed=tc.seed)
    teacher = None
    if recipe.model.teacher is not None:
        teacher_lotus = load_initial_lotus(recipe.model.teacher, recipe.model, seed=tc.seed)
        check_teacher(teacher_lotus, lotus, str(recipe.model.teacher))
        teacher = teacher_lotus.unet
    lotus = lotus.to(device)
    resolution = check_resolution(recipe.data.resolution, lotus.resolution_multiple)
    kept: dict[str, dict] = {}  # float32 CPU copies of the frozen parts run in bf16, restored for the export

    def freeze(module, name: str | None = None):
        if name is not None and frozen_dtype != torch.float32:
            kept[name] = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        return _place(module, device, frozen_dtype).eval().requires_grad_(False)

    frozen_pass1 = None  # model.pass1 "lotus": the initial Lotus, frozen, runs pass 1 (and is exported as lotus_unet)
    if recipe.model.pass1 == "lotus":
        frozen_pass1 = freeze(copy.deepcopy(lotus.unet), "pass1")
    sd = SharpDepth(lotus, recipe.sharpdepth, lotus_unet=frozen_pass1)
    if teacher is None:
        teacher = frozen_pass1 if frozen_pass1 is not None else copy.deepcopy(lotus.unet)  # both: the initial Lotus
    teacher = freeze(teacher)
    freeze(lotus.vae, "vae")
    student = lotus.unet
    student.train()
    if tc.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    ema = EMA.from_config(student, sd.config).to(device)  # a float32 copy: the student is float32
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = accelerator.prepare(torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay))

    data = build_training_data(recipe.data.sources, seed=tc.seed)
    steps = total_steps(tc, len(data), world)
    lr_sched = build_scheduler(optimizer, tc, steps)
    sampler = StepSampler(len(data), tc.batch_size, seed=tc.seed, rank=rank, world=world)
    source = build_metric_source(recipe.metric.source, checkpoint=recipe.metric.checkpoint, device=str(device),
                                 dtype=frozen_name, **dict(recipe.metric.options))
    metric = MetricCache(source, run / "metric_cache" if recipe.metric.cache else None)
    use_sparse = bool(recipe.data.use_sparse)
    val_data = None
    if recipe.val.source is not None:
        from depthkit.data.datasets import build_dataset

        src = recipe.val.source
        val_data = build_dataset(src.name, src.root, split=src.split, **dict(src.options))

    start = 0
    if resume:
        loaded = load_latest_state(run, map_location="cpu", max_steps=steps, world_size=world)
        if loaded is not None:
            start, state, _ = loaded
            load_resumed_weights(student, state["unet"], f"the checkpoint at step {start} in {run}")
            optimizer.load_state_dict(state["optimizer"])
            lr_sched.load_state_dict(state["lr_scheduler"])
            ema.load_state_dict(state["ema"])
            accelerator.print(f"depthkit train: resumed {run} at step {start}")
    logger = JsonlLogger(run, enabled=main)
    pass1 = ema.model if frozen_pass1 is None else frozen_pass1  # the EMA's model is updated in place
    t0 = time.perf_counter()
    for step in range(start, steps):
        sums: dict[str, float] = {}
        for a in range(tc.grad_accum):
            k = step * tc.grad_accum + a
            images, depths, sparses, gts = _batch(data, sampler, k, metric, resolution, recipe.data.random_flip,
                                                  tc.seed, rank, use_sparse, sd.config.uses_gt)
            x = images_to_tensor(images, device)
            d = maps_to_tensor(depths, device)
            sp = None if sparses is None else maps_to_tensor(sparses, device)
            gt = None if gts is None else maps_to_tensor(gts, device)
            with accelerator.autocast():
                out = sd.compute_losses(x, d, teacher, pass1_unet=pass1, sparse=sp,
                                        generator=step_generator(tc.seed, k, rank, device), gt=gt)
            accelerator.backward(out["loss"])  # divides by grad_accum
            for name in ("loss", "sds", "recons", "gt", "gt_grad"):
                sums[name] = sums.get(name, 0.0) + float(out[name].detach()) / tc.grad_accum
            sums["gated"] = sums.get("gated", 0.0) + float(out["gated"].float().mean()) / tc.grad_accum
            sums["e_mean"] = sums.get("e_mean", 0.0) + float(out["discrepancy"].mean()) / tc.grad_accum
        if world > 1:
            for p in params:
                if p.grad is not None:
                    p.grad = accelerator.reduce(p.grad, reduction="mean")
        if tc.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, tc.max_grad_norm)
        lr = lr_sched.get_last_lr()[0]  # the rate this step runs at (read before the schedule moves on)
        optimizer.step()
        lr_sched.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(student)
        done = step + 1
        if done % max(1, tc.log_every) == 0 or done == steps or done == start + 1:
            logger.log(step=done, lr=lr, seconds=time.perf_counter() - t0, **sums)
        if val_data is not None and main and ((tc.eval_every > 0 and done % tc.eval_every == 0) or done == steps):
            student.eval()
            logger.log(step=done, **evaluate_sharpening(sd, val_data, metric, recipe.val.n_images,
                                                        recipe.model.processing_resolution))
            student.train()
        if main and ((tc.save_every > 0 and done % tc.save_every == 0) or done == steps):
            save_state(run, done, {"unet": student.state_dict(), "optimizer": optimizer.state_dict(),
                                   "lr_scheduler": lr_sched.state_dict(), "ema": ema.state_dict()},
                       {"kind": "sharpen", "micro_steps": done * tc.grad_accum, "world_size": world},
                       keep_last=tc.keep_last)
        accelerator.wait_for_everyone()

    final = run / "final"
    if main:
        from depthkit.sharpen.checkpoint import write_sharpen_checkpoint

        student.eval()
        if recipe.model.export == "ema":
            ema.copy_to(student)
        for module, name in ((lotus.vae, "vae"), (frozen_pass1, "pass1")):
            if module is not None:  # back to float32, with the weights it started from (not their bf16 rounding)
                _place(module, device, torch.float32)
                if name in kept:
                    module.load_state_dict(kept.pop(name))
        export = SharpDepth(lotus, sd.config, lotus_unet=frozen_pass1)

        def write(tmp: Path) -> None:
            write_sharpen_checkpoint(tmp, export, {"processing_resolution": recipe.model.processing_resolution},
                                     trained_from=str(recipe.model.lotus), metric_source=recipe.metric.source,
                                     steps=steps)
            (tmp / "recipe.yaml").write_text(recipe_to_yaml(recipe))

        atomic_export(final, write)
    accelerator.wait_for_everyone()
    return final
