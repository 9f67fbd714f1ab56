"""Train Lotus with dense ground truth: ``depthkit train recipes/lotus/lotus_g_sd2.yaml`` (or ``recipes/tiny/lotus.yaml``).

No Lotus weights are reachable here, so depthkit trains its own: the tiny one (embedded default, CPU, synthetic
scenes) and, on a GPU, the full one from Stable Diffusion 2 on Hypersim + Virtual KITTI 2, as the Lotus paper does.
One step, for a batch of crops with GT depth d (metres) and valid mask v:

- GT → [-1, 1] per image (2%/98% quantiles of valid pixels, in the model's depth or disparity space) → z_gt = VAE(GT);
- Lotus-G input: ``cat(z_img, z_T)`` with z_T = add_noise(z_gt, ε, T) at the fixed T = 999 (≈ pure noise);
  Lotus-D: z_img alone; the UNet predicts x0 ẑ with the "depth" task switch;
- ``latent``: MSE(ẑ, z_gt) over latent cells whose pixels are all valid (Lotus's loss);
- ``detail_preserver``: the "rgb" task switch reconstructs z_img the same way (Lotus's detail preserver);
- ``pixel`` / ``vae_depth`` (tiny models from random init, ``train_vae``): L1 of decode(ẑ) and of
  decode(encode(GT)) against GT over valid pixels — a random VAE cannot write depth, so it learns to.

Two phases (``loss.vae_steps`` = N > 0; 0 trains VAE and UNet jointly throughout): steps < N train the VAE alone
with ``vae_depth``; at step N :func:`calibrate_depth_scaling` sets ``vae.config.scaling_factor`` so that the latents
of GT depth (posterior means of :data:`CALIBRATION_BATCHES` fixed training batches of process 0) have unit std, as
Stable Diffusion's factor does for its latents, and the VAE is frozen (eval, no gradients; ``pixel`` still reaches
the UNet through the frozen decoder); steps >= N train the UNet with ``latent`` / ``pixel`` / ``detail_preserver``.
Each phase has its own warmup and LR decay. Why: in the miniature (:mod:`depthkit.sharpen.miniature`) a tiny Lotus
from random init became sharp only this way; with the diffusers default factor (0.18215) its depth latents had std
≈ 0.05 against unit noise. The factor is in the resumable checkpoints and in ``final/vae/config.json``.

Accelerate runs it (bf16 autocast on CUDA, gradient accumulation, several processes with gradients averaged by
hand); checkpoints are atomic (:func:`depthkit.run_state.save_state`) and ``--resume`` continues exactly (per-step seeds and data
order from :mod:`depthkit.training`). The result, ``<output_dir>/final/``, is a Lotus folder
(:meth:`LotusModel.save_pretrained`): the ``model.lotus`` of a sharpen recipe.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

__all__ = ["train", "build_lotus", "lotus_losses", "evaluate_lotus", "LotusBatches", "calibrate_depth_scaling",
           "PHASES"]

PHASES = ("joint", "vae", "unet")
"""Phases of :func:`lotus_losses`: all terms; ``vae_depth`` alone; the UNet terms on a frozen VAE."""
CALIBRATION_BATCHES = 8
"""Micro-batches (the first ones of process 0) whose GT depth latents set the VAE's scaling factor."""


def build_lotus(cfg, seed: int = 0):
    """The model a Lotus recipe starts from (see ``LotusModelConfig.init``)."""
    from depthkit.sharpen.lotus import LotusModel

    if cfg.init == "tiny":
        from depthkit.sharpen.tiny import build_tiny_lotus

        return build_tiny_lotus(mode=cfg.mode, seed=seed, norm=cfg.norm, unet=dict(cfg.tiny_unet),
                                vae=dict(cfg.tiny_vae), default_processing_resolution=cfg.default_processing_resolution)
    path = Path(cfg.init).expanduser()
    if (path / "lotus.json").is_file() or (path / "empty_prompt_embeds.safetensors").is_file():
        model = LotusModel.from_pretrained(path)
        if (model.mode, model.norm) != (cfg.mode, cfg.norm):
            raise ValueError(f"model.init {path} is a {model.mode} model predicting {model.norm}; the recipe says "
                             f"mode={cfg.mode!r}, norm={cfg.norm!r}. Set model.mode / model.norm to match it.")
        if cfg.default_processing_resolution is not None:
            model.default_processing_resolution = int(cfg.default_processing_resolution)
        return model
    from depthkit.sharpen.importer import lotus_from_stable_diffusion

    return lotus_from_stable_diffusion(cfg.init, mode=cfg.mode, norm=cfg.norm,
                                       processing_resolution=cfg.default_processing_resolution, seed=seed)


def _masked_mean(x, mask):
    mask = mask.to(x.dtype).expand_as(x)
    total = mask.sum()
    return (x * mask).sum() / total if total > 0 else (x * 0).sum()


def _valid_cells(valid, size):
    """``B x 1 x h x w`` bool: latent cells of size ``(h, w)`` whose pixels of ``valid`` (``B x 1 x H x W``) are all
    valid."""
    import torch.nn.functional as F

    return -F.adaptive_max_pool2d(-valid.float(), tuple(size)) > 0.5


def _normalised_gt(model, depth, valid, loss_cfg):
    """GT depth (metres) → [-1, 1] in the model's space, per image (the loss's quantiles of valid pixels)."""
    from depthkit.sharpen.normalize import normalize_depth

    gt, _ = normalize_depth(depth, model.norm, "quantile", valid_mask=valid, quantiles=tuple(loss_cfg.quantiles))
    return gt


def calibrate_depth_scaling(model, batches) -> float:
    """Set ``model.vae.config.scaling_factor`` so that depth latents have unit standard deviation; returns it.

    Args:
        model: :class:`~depthkit.sharpen.lotus.LotusModel`.
        batches: iterable of ``(gt, valid)``: ``gt`` ``B x 1 x H x W`` normalised depth in [-1, 1] on the model's
            device, ``valid`` ``B x 1 x H x W`` bool or None (all valid). The std is taken over the latent cells whose
            pixels are all valid, of the posterior means (:meth:`LotusModel.encode_depth`).
    The new factor is ``old / std(encode_depth(gt))`` (so ``1 / std`` of the unscaled posterior mean)."""
    import torch

    values = []
    with torch.no_grad():
        for gt, valid in batches:
            z = model.encode_depth(gt.to(model.vae.dtype)).float()
            values.append(z.flatten() if valid is None else
                          z[_valid_cells(valid, z.shape[-2:]).expand_as(z)])
        z_all = values[0] if len(values) == 1 else torch.cat(values)
        if z_all.numel() < 2:
            raise ValueError("calibrate_depth_scaling: fewer than 2 latent values with all pixels valid; give "
                             "batches with more valid GT depth")
        factor = float(model.vae.config.scaling_factor) / float(z_all.std())
    model.vae.register_to_config(scaling_factor=factor)
    return factor


def lotus_losses(model, image, depth, valid, loss_cfg, generator=None, phase: str = "joint") -> dict:
    """Losses of one batch (see the module docstring).

    Args:
        model: :class:`~depthkit.sharpen.lotus.LotusModel` (train mode).
        image: ``B x 3 x H x W`` in [-1, 1]; depth: ``B x 1 x H x W`` metres; valid: ``B x 1 x H x W`` bool.
        loss_cfg: ``LotusLossConfig``.
        generator: torch generator for the input noise.
        phase: one of :data:`PHASES`: "joint" (every weighted term), "vae" (``vae_depth`` alone; the UNet does not
            run) or "unet" (``latent``, ``pixel``, ``detail_preserver``; the VAE encodes without gradients and
            ``vae_depth`` is 0).
    Returns:
        dict with ``loss`` and the detached terms ``latent``, ``pixel``, ``vae_depth``, ``detail_preserver``.
    """
    import torch

    if phase not in PHASES:
        raise ValueError(f"phase={phase!r}; allowed: {', '.join(PHASES)}")
    cfg = loss_cfg
    gt = _normalised_gt(model, depth, valid, cfg).to(image.device)
    if phase == "vae":
        z_gt = model.encode_depth(gt.to(image.dtype))
        vae_depth = _masked_mean((model.decode_depth(z_gt).float() - gt).abs(), valid)
        zero = vae_depth.detach() * 0.0
        return {"loss": cfg.vae_depth * vae_depth, "latent": zero, "pixel": zero, "vae_depth": vae_depth.detach(),
                "detail_preserver": zero}
    with nullcontext() if cfg.train_vae and phase == "joint" else torch.no_grad():
        z_img = model.encode(image)
        z_gt = model.encode_depth(gt.to(image.dtype))
    b = image.shape[0]
    t = model.timesteps(b)
    second = None
    if model.mode == "generative":
        noise = model.noise_like(z_gt, generator)
        second = model.scheduler.add_noise(z_gt.detach().float(), noise.float(), t).to(z_gt.dtype)
    pred = model.predict_latent(z_img, second)
    zero = pred.float().sum() * 0.0
    terms = {}
    cells = _valid_cells(valid, pred.shape[-2:])
    terms["latent"] = (_masked_mean((pred.float() - z_gt.detach().float()) ** 2, cells)
                       if cfg.latent > 0 else zero)
    terms["pixel"] = (_masked_mean((model.decode_depth(pred).float() - gt).abs(), valid)
                      if cfg.pixel > 0 else zero)
    terms["vae_depth"] = (_masked_mean((model.decode_depth(z_gt).float() - gt).abs(), valid)
                          if cfg.vae_depth > 0 and phase == "joint" else zero)
    if cfg.detail_preserver > 0:
        second_rgb = None
        if model.mode == "generative":
            noise = model.noise_like(z_img, generator)
            second_rgb = model.scheduler.add_noise(z_img.detach().float(), noise.float(), t).to(z_img.dtype)
        pred_rgb = model.predict_latent(z_img, second_rgb, task="rgb")
        terms["detail_preserver"] = ((pred_rgb.float() - z_img.detach().float()) ** 2).mean()
    else:
        terms["detail_preserver"] = zero
    loss = (cfg.latent * terms["latent"] + cfg.pixel * terms["pixel"] + cfg.vae_depth * terms["vae_depth"]
            + cfg.detail_preserver * terms["detail_preserver"])
    return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}


class LotusBatches:
    """Map-style dataset whose item ``k`` is the batch of global micro-step ``k`` (so a DataLoader's workers can
    build batches in parallel and a resumed run starts at any ``k``)."""

    def __init__(self, data, sampler, resolution, flip: bool, seed: int, rank: int):
        self.data, self.sampler, self.resolution, self.flip = data, sampler, resolution, flip
        self.seed, self.rank = seed, rank

    def __getitem__(self, k: int) -> dict:
        from depthkit.sharpen.train_common import random_resized_crop
        from depthkit.training import step_seed

        images, depths, valids = [], [], []
        for j, idx in enumerate(self.sampler.indices(k)):
            item = self.data[idx]
            if item.get("depth") is None:
                raise ValueError(f"Lotus training needs dense GT depth; sample {item.get('name')!r} of source "
                                 f"{self.data.names[item['source']]!r} has none (an unlabelled reader?).")
            valid = item["valid"] if item.get("valid") is not None else item["depth"] > 0
            rng = np.random.default_rng(step_seed(self.seed, k, self.rank, stream=2 + j))
            img, maps, _ = random_resized_crop(item["image"], {"depth": item["depth"],
                                                               "valid": valid.astype(np.uint8)},
                                               None, self.resolution, rng, self.flip)
            images.append(img)
            depths.append(np.where(maps["valid"] > 0, maps["depth"], 0).astype(np.float32))
            valids.append(maps["valid"] > 0)
        return {"image": np.stack(images), "depth": np.stack(depths), "valid": np.stack(valids), "k": k}

    def __len__(self) -> int:  # a DataLoader with an explicit sampler never asks beyond it
        return 1 << 62


def evaluate_lotus(model, dataset, n_images: int) -> dict:
    """Mean MAE / AbsRel (after least-squares alignment to GT in the model's space) and iBims DBE accuracy (px) of
    Lotus predictions on the first ``n_images`` items of ``dataset`` (items need GT)."""
    from depthkit.geometry import align_depth, align_disparity
    from depthkit.metrics import dbe_metrics

    maes, rels, dbes = [], [], []
    was_training = model.training
    model.eval()
    for i in range(min(n_images, len(dataset))):
        item = dataset[i]
        gt = item["depth"]
        valid = (item["valid"] if item.get("valid") is not None else gt > 0) & (gt > 0)
        if valid.sum() < 2:
            continue
        unit = model.predict(item["image"]).astype(np.float64)
        pred = align_depth(unit, gt, valid) if model.norm == "depth" else align_disparity(unit, gt, valid)
        pred = np.clip(pred, 1e-3, None)
        err = np.abs(pred - gt)[valid]
        maes.append(float(err.mean()))
        rels.append(float((err / gt[valid]).mean()))
        dbes.append(dbe_metrics(pred, gt, valid=valid)["dbe_acc"])
    model.train(was_training)
    with np.errstate(all="ignore"):
        return {"val_mae": float(np.mean(maes)) if maes else float("nan"),
                "val_absrel": float(np.mean(rels)) if rels else float("nan"),
                "val_dbe_acc": float(np.nanmean(dbes)) if dbes and not np.all(np.isnan(dbes)) else float("nan")}


def _val_dataset(val_cfg):
    if val_cfg.source is None:
        return None
    from depthkit.data.datasets import build_dataset

    src = val_cfg.source
    return build_dataset(src.name, src.root, split=src.split, **dict(src.options))


def train(recipe, resume: bool = False) -> Path:
    """Run a ``kind: lotus`` recipe; returns ``<output_dir>/final`` (a Lotus folder)."""
    import torch
    from torch.utils.data import DataLoader

    from depthkit.config import recipe_to_yaml
    from depthkit.run_recipe import load_resumed_weights
    from depthkit.run_state import JsonlLogger, atomic_export, load_latest_state, save_state
    from depthkit.sharpen.train_common import (
        build_training_data,
        check_resolution,
        images_to_tensor,
        maps_to_tensor,
    )
    from depthkit.training import StepSampler, lr_factor, start_run, step_generator, total_steps

    tc = recipe.train
    run, accelerator = start_run(recipe, resume)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process

    model = build_lotus(recipe.model, seed=tc.seed).to(device)
    resolution = check_resolution(recipe.data.resolution, model.resolution_multiple)
    vae_steps = int(recipe.loss.vae_steps)
    vae_frozen = not recipe.loss.train_vae  # becomes True at step vae_steps of a two-phase run

    def set_modes() -> None:
        model.train()
        model.vae.requires_grad_(not vae_frozen)
        if vae_frozen:
            model.vae.eval()

    set_modes()
    if tc.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    optimizer = accelerator.prepare(optimizer)

    data = build_training_data(recipe.data.sources, seed=tc.seed)
    steps = total_steps(tc, len(data), world)
    if vae_steps >= steps:
        raise ValueError(f"loss.vae_steps={vae_steps} leaves no UNet steps in this run of {steps} optimizer steps; "
                         "lower loss.vae_steps or raise train.max_steps / train.epochs.")

    def lr_lambda(s: int) -> float:  # each phase has its own warmup and decay
        if s < vae_steps:
            return lr_factor(s, vae_steps, tc.warmup_steps, tc.schedule)
        return lr_factor(s - vae_steps, steps - vae_steps, tc.warmup_steps, tc.schedule)

    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    sampler = StepSampler(len(data), tc.batch_size, seed=tc.seed, rank=rank, world=world)
    val_data = _val_dataset(recipe.val)

    def batch_tensors(batch: dict):
        image = images_to_tensor(list(np.asarray(batch["image"])), device)
        depth = maps_to_tensor(list(np.asarray(batch["depth"])), device)
        valid = maps_to_tensor(list(np.asarray(batch["valid"]).astype(np.float32)), device) > 0.5
        return image, depth, valid

    def enter_unet_phase(factor: float | None = None) -> float:
        """Calibrate the VAE's scaling factor (or restore ``factor``) and freeze the VAE."""
        nonlocal vae_frozen
        if factor is None:
            calib = LotusBatches(data, StepSampler(len(data), tc.batch_size, seed=tc.seed, rank=0, world=world),
                                 resolution, recipe.data.random_flip, tc.seed, 0)
            model.vae.eval()
            pairs = []
            for k in range(CALIBRATION_BATCHES):
                _, depth, valid = batch_tensors(calib[k])
                pairs.append((_normalised_gt(model, depth, valid, recipe.loss).to(device), valid))
            factor = calibrate_depth_scaling(model, pairs)
        else:
            model.vae.register_to_config(scaling_factor=float(factor))
        vae_frozen = True
        set_modes()
        return float(factor)

    start = 0
    if resume:
        loaded = load_latest_state(run, map_location="cpu", max_steps=steps, world_size=world)
        if loaded is not None:
            start, state, _ = loaded
            where = f"the checkpoint at step {start} in {run}"
            load_resumed_weights(model.unet, state["unet"], where)
            if "vae" in state:
                load_resumed_weights(model.vae, state["vae"], where)
            optimizer.load_state_dict(state["optimizer"])
            lr_sched.load_state_dict(state["lr_scheduler"])
            if "vae_scaling_factor" in state:
                model.vae.register_to_config(scaling_factor=float(state["vae_scaling_factor"]))
            if 0 < vae_steps < start:
                enter_unet_phase(float(state["vae_scaling_factor"]))
            accelerator.print(f"depthkit train: resumed {run} at step {start}")
    logger = JsonlLogger(run, enabled=main)

    def state_dict() -> dict:
        state = {"unet": model.unet.state_dict(), "optimizer": optimizer.state_dict(),
                 "lr_scheduler": lr_sched.state_dict(),
                 "vae_scaling_factor": float(model.vae.config.scaling_factor)}
        if recipe.loss.train_vae:
            state["vae"] = model.vae.state_dict()
        return state

    batches = LotusBatches(data, sampler, resolution, recipe.data.random_flip, tc.seed, rank)
    loader = DataLoader(batches, batch_size=None, sampler=range(start * tc.grad_accum, steps * tc.grad_accum),
                        num_workers=tc.num_workers)
    it = iter(loader)
    t0 = time.perf_counter()
    for step in range(start, steps):
        if vae_steps > 0 and step == vae_steps:
            factor = enter_unet_phase()
            accelerator.print(f"depthkit train: step {step}: VAE frozen, scaling_factor={factor:.6g}")
        phase = "joint" if vae_steps == 0 else ("vae" if step < vae_steps else "unet")
        sums: dict[str, float] = {}
        for _ in range(tc.grad_accum):
            batch = next(it)
            k = int(batch["k"])
            image, depth, valid = batch_tensors(batch)
            with accelerator.autocast():
                out = lotus_losses(model, image, depth, valid, recipe.loss, step_generator(tc.seed, k, rank, device),
                                   phase=phase)
            accelerator.backward(out["loss"])  # divides by grad_accum
            for name in ("loss", "latent", "pixel", "vae_depth", "detail_preserver"):
                sums[name] = sums.get(name, 0.0) + float(out[name].detach()) / tc.grad_accum
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
        done = step + 1
        if done % max(1, tc.log_every) == 0 or done == steps or done == start + 1:
            extra = {"phase": phase, "vae_scaling_factor": float(model.vae.config.scaling_factor)} if vae_steps else {}
            logger.log(step=done, lr=lr, seconds=time.perf_counter() - t0, **sums, **extra)
        if val_data is not None and main and ((tc.eval_every > 0 and done % tc.eval_every == 0) or done == steps):
            logger.log(step=done, **evaluate_lotus(model, val_data, recipe.val.n_images))
            set_modes()
        if main and ((tc.save_every > 0 and done % tc.save_every == 0) or done == steps):
            save_state(run, done, state_dict(), {"kind": "lotus", "micro_steps": done * tc.grad_accum,
                                                 "vae_scaling_factor": float(model.vae.config.scaling_factor),
                                                 "world_size": world}, keep_last=tc.keep_last)
        accelerator.wait_for_everyone()

    final = run / "final"
    if main:
        model.eval()

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp)
            (tmp / "recipe.yaml").write_text(recipe_to_yaml(recipe))

        atomic_export(final, write)
    accelerator.wait_for_everyone()
    return final
