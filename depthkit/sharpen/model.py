"""SharpDepth: its switches (:class:`SharpDepthConfig`), two-pass inference and one training step's losses.

SharpDepth (Pham et al., CVPR 2025, arXiv 2411.18229) sharpens a metric depth map d where it disagrees with Lotus:

1. pass 1 — Lotus-G with pure noise gives an affine-invariant prediction; the discrepancy
   e = |Lotus(x) − norm(d)| / max, clipped to [0, 1], marks where d needs sharpening;
2. pass 2 — the sharpener (a Lotus-G-layout UNet initialised from Lotus) sees the gated latent
   z'_d = ê ⊙ ε + (1 − ê) ⊙ z_d, z_d = VAE(norm(d)), ê = e at latent size, and predicts ẑ;
3. ẑ is decoded, fitted to d by least squares over pixels with e < 0.5, and returned in metres.

Where the public code and the paper differ, :class:`SharpDepthConfig` has a switch; each field's docstring says
which source its default follows ([code] = github.com/Qualcomm-AI-research/SharpDepth, [paper] = arXiv 2411.18229).
Defaults follow the code except λ_recons (0.3, the paper's; the released training script passes 0.4).
norm(d) is the per-image min/max map of d to [-1, 1] in the Lotus model's space (depth or disparity, see
:mod:`depthkit.sharpen.normalize`); the scale/shift fit happens in that space and is mapped back to metres with the
same range, which for depth space is exactly the code's direct fit to metres. The fit's target is the metric input
at its own size (depthkit: it is an input here); the code fits to UniDepth's map at the processing size resized
back, which is the same thing at the native size.

depthkit additions (documented choices):

- e = 0 at measured sparse pixels, and the returned depth has every measured pixel restored after decoding, so
  sharpening never moves a measurement. Optionally (``sparse_latent_cells``) every latent cell containing a
  measured pixel also gets ê = 0; off by default, because one LiDAR return then switches sharpening off for its
  whole f x f cell (see the field for the measurement).
- pixels where d is missing (0, not finite) get e = 1 at inference: they are fully regenerated and excluded from the
  fit; in training they carry no reconstruction weight (there is nothing to reconstruct).
- e's max is taken per image (the code takes it over the batch, which is the same at its batch size 1).
- inference is single-step and deterministic by default (noise from a generator seeded 0).

Both passes use the same UNet unless a separate ``lotus_unet`` is given: the released SharpDepth runs its one UNet
twice; during training pass 1 runs the EMA of the student (:class:`depthkit.sharpen.ema.EMA`). The discrepancy and
gating functions live in :mod:`depthkit.sharpen.gating`, the losses in :mod:`depthkit.sharpen.losses`.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from depthkit.dtypes import torch_dtype
from depthkit.sharpen.attention import pooled_self_attention
from depthkit.sharpen.config import RECONS_WEIGHTS, SharpDepthConfig  # noqa: F401  (re-exported)
from depthkit.sharpen.ema import EMA  # noqa: F401  (re-exported: depthkit.sharpen.train imports it)
from depthkit.sharpen.folders import (  # noqa: F401  (SHARPDEPTH_JSON: re-exported)
    LOTUS_UNET_DIR,
    SHARPDEPTH_JSON,
    check_pass1_unet,
    check_sharpener_files,
    load_pass1_unet,
    read_sharpdepth_json,
)
from depthkit.sharpen.gating import apply_gate, discrepancy, downsample_discrepancy, gate
from depthkit.sharpen.inputs import check_depth_array, check_generator, depth_tensor
from depthkit.sharpen.limits import (
    change_weight,
    limit_change,
    limit_output,
    processing_inputs,
    resize_depth,  # noqa: F401  (re-exported)
)
from depthkit.sharpen.lotus import LotusModel, image_to_tensor, pad_to_multiple, resize_bilinear
from depthkit.sharpen.normalize import (
    denormalize_depth,
    masked_scale_shift,
    normalize_depth,
    output_depth_bounds,
    valid_depth,
)

__all__ = ["SharpDepthConfig", "resize_depth", "SharpDepth", "SharpenOutput", "SHARPDEPTH_JSON", "depth_tensor"]

# --------------------------------------------------------------------------------------------- model
@dataclass
class SharpenOutput:
    """Result of :meth:`SharpDepth.sharpen` for one image.

    Attributes:
        depth: HxW float32 metres, sharpened, measured sparse pixels restored exactly.
        discrepancy: HxW float32 in [0, 1] (0 at measured pixels, 1 where the metric input was missing).
        lotus: HxW float32 pass-1 Lotus prediction mapped to [0, 1] (affine-invariant; depth or disparity).
        scale, shift: the fit ``norm(d) ≈ scale · prediction + shift`` in the normalised space.
        fit_pixels: number of pixels the fit used.
    """

    depth: np.ndarray
    discrepancy: np.ndarray
    lotus: np.ndarray
    scale: float
    shift: float
    fit_pixels: int


class SharpDepth(nn.Module):
    """SharpDepth around a Lotus-G model whose UNet is the sharpener.

    Args:
        model: :class:`LotusModel` in generative mode; ``model.unet`` is the sharpener (at the start of training,
            a copy of Lotus).
        config: :class:`SharpDepthConfig` (or a dict of its fields).
        lotus_unet: optional separate UNet for pass 1 (plain Lotus); default ``model.unet``, as the released model.
    """

    def __init__(self, model: LotusModel, config: SharpDepthConfig | dict | None = None, lotus_unet=None):
        super().__init__()
        if not isinstance(model, LotusModel) or model.mode != "generative":
            got = getattr(model, "mode", type(model).__name__)
            raise ValueError(f"SharpDepth needs a generative (Lotus-G, 8-channel) LotusModel; received {got!r}. "
                             "Its gating feeds a depth latent beside the image latent, which Lotus-D cannot take.")
        if lotus_unet is not None and lotus_unet.config.in_channels != model.unet.config.in_channels:
            raise ValueError(f"lotus_unet has in_channels={lotus_unet.config.in_channels}; it must match the "
                             f"sharpener's {model.unet.config.in_channels} (a Lotus-G UNet).")
        if lotus_unet is not None:
            check_pass1_unet(lotus_unet, model.unet)
        self.model = model
        self.lotus_unet = lotus_unet
        self.config = config if isinstance(config, SharpDepthConfig) else SharpDepthConfig.from_dict(config)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ----------------------------------------------------------------- shared by inference and training
    def lotus_pass(self, image_latent: torch.Tensor, generator: torch.Generator | None = None,
                   unet=None, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1: pure noise → ``(x0 latent, decoded prediction B x 1 x H x W)``. ``unet``: e.g. the EMA; default
        ``lotus_unet`` or the sharpener. ``noise``: the latent's noise, when the caller drew it (else drawn here)."""
        unet = unet if unet is not None else (self.lotus_unet if self.lotus_unet is not None else self.model.unet)
        noise = self.model.noise_like(image_latent, generator) if noise is None else noise
        z = self.model.predict_latent(image_latent, noise, unet=unet)
        return z, self.model.decode_depth(z)

    def gate_latent(self, z_d: torch.Tensor, e: torch.Tensor, sparse_mask: torch.Tensor | None = None,
                    lotus_latent: torch.Tensor | None = None, generator: torch.Generator | None = None,
                    training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The sharpener's second input from z_d and the full-resolution e: downsample e (cells with a
        measurement → 0 when ``sparse_latent_cells``), draw ε, fill high-e cells per ``gate_noise``, gate. With
        ``training`` the gate is applied with probability ``gate_prob``; other samples get pure ε [code]. Returns
        ``(latent, gated [B] bool)``."""
        cfg = self.config
        sparse = sparse_mask if (cfg.zero_discrepancy_at_sparse and cfg.sparse_latent_cells) else None
        e_hat = downsample_discrepancy(e, z_d.shape[-2:], cfg.discrepancy_downsample, sparse)
        noise = self.model.noise_like(z_d, generator)
        if not cfg.gating:  # ablation: pure noise for every sample
            return noise, torch.zeros(z_d.shape[0], dtype=torch.bool, device=z_d.device)
        fill = noise
        if cfg.gate_noise == "noised_lotus":
            if lotus_latent is None:
                raise ValueError("gate_noise='noised_lotus' needs the pass-1 latent (lotus_latent).")
            t = self.model.timesteps(z_d.shape[0])
            fill = self.model.scheduler.add_noise(lotus_latent.float(), noise.float(), t).to(z_d.dtype)
        if training:
            return apply_gate(z_d, fill, e_hat, cfg.gate_prob, generator, pure_noise=noise)
        return gate(z_d, fill, e_hat), torch.ones(z_d.shape[0], dtype=torch.bool, device=z_d.device)

    # ----------------------------------------------------------------- inference
    @torch.inference_mode()
    def sharpen_tensors(self, image: torch.Tensor, metric_depth: torch.Tensor, sparse: torch.Tensor | None = None,
                        processing_resolution: int | None = None,
                        generator: torch.Generator | None = None, autoencoded: bool = False,
                        pass1_depth: torch.Tensor | None = None) -> dict:
        """Batched inference on tensors.

        Args:
            image: ``B x 3 x H x W`` in [-1, 1].
            metric_depth: ``B x 1 x H x W`` metres (0 = missing), the metric source d.
            sparse: optional ``B x 1 x H x W`` metres, 0 = not measured.
        Returns:
            dict of ``depth`` (``B x 1 x H x W`` metres), ``discrepancy`` (same size, [0, 1]), ``lotus`` (pass-1
            prediction at input size, normalised [-1, 1]), ``prediction`` (pass-2, normalised), ``scale``/``shift``
            (``[B]``), ``fit_pixels`` (``[B]``), ``band`` (with ``change_band_px``, ``keep_near_measured_px`` or
            ``change_within_measured_px``: how far each pixel may move from the input, at input size, [0, 1]),
            ``free`` (``B x 1 x H x W`` metres: the output before the run-time limits of
            :mod:`depthkit.sharpen.limits` and before measured pixels are restored); with
            ``autoencoded`` also ``autoencoded`` (``B x 1 x H x W`` metres): the metric input through the depth VAE
            alone (normalised, encoded, decoded, denormalised at the processing size; no UNet), the closest any
            decoded output can stay to the input — a diagnostic (``benchmarks/sharpen_limits.py``), one more decode.
            pass1_depth: a diagnostic, off by default: ``B x 1 x H x W`` metres (0 = unknown, where the metric input
            stands in) that replaces pass 1's Lotus prediction, normalised with the metric input's range, its latent
            the VAE's encoding of it (e.g. the GT: how far a perfect pass 1 would take this sharpener,
            ``benchmarks/sharpen_switches.py --pass1 gt``). Pass 1's noise is drawn all the same, so every later
            draw is the one a run without it makes.
        """
        with ExitStack() as stack:  # self_attention_max_keys: pooled keys in both passes' UNets, for this call only
            for unet in {id(u): u for u in (self.model.unet, self.lotus_unet) if u is not None}.values():
                stack.enter_context(pooled_self_attention(unet, self.config.self_attention_max_keys))
            return self._sharpen_tensors(image, metric_depth, sparse, processing_resolution, generator, autoencoded,
                                         pass1_depth)

    def _sharpen_tensors(self, image, metric_depth, sparse, processing_resolution, generator, autoencoded,
                         pass1_depth) -> dict:
        """:meth:`sharpen_tensors` with the UNets' attention as the config sets it."""
        m, cfg = self.model, self.config
        image = image.to(m.device, torch.float32)
        metric_depth = metric_depth.to(m.device, torch.float32)
        b, _, h, w = image.shape
        if metric_depth.shape != (b, 1, h, w):
            raise ValueError(f"metric_depth must be {b} x 1 x {h} x {w} to match the image; received "
                             f"{tuple(metric_depth.shape)}.")
        if generator is None:
            generator = torch.Generator(device=m.device).manual_seed(0)
        valid = valid_depth(metric_depth)
        measured = None
        if sparse is not None:
            sparse = sparse.to(m.device, torch.float32)
            if sparse.shape != metric_depth.shape:
                raise ValueError(f"sparse must have the metric depth's shape {tuple(metric_depth.shape)}; received "
                                 f"{tuple(sparse.shape)}.")
            measured = valid_depth(sparse)
        # the public pipeline's geometry: longest side -> processing resolution, aspect kept, replicate-padded to a
        # multiple of the VAE factor; everything below runs padded and is cropped back before resizing to (h, w)
        hr, wr = m.processing_size(h, w, processing_resolution)
        pad = m.padded_size(hr, wr)
        at_p = processing_inputs(metric_depth, measured, (hr, wr), pad)
        d_p, valid_p, measured_at_p = at_p
        # one normalisation range for every resolution: the processing-size map's [code] or the input's (norm_range)
        params = None
        if cfg.norm_range == "processing":
            _, params = normalize_depth(d_p, m.norm, "minmax", valid_mask=valid_p)
        # (unclipped at the input size: a thin extreme a shrink averaged away stays what it is, not the range's end)
        norm_full, params = normalize_depth(metric_depth, m.norm, "minmax", params=params, clip=params is None)
        norm_p, _ = normalize_depth(d_p, m.norm, "minmax", valid_mask=valid_p, params=params)
        measured_p = measured_at_p if cfg.zero_discrepancy_at_sparse else None

        z_img = m.encode(pad_to_multiple(resize_bilinear(image, (hr, wr)), pad))
        if pass1_depth is None:
            z_lotus, lotus_p = self._pass1(image, (hr, wr), pad, z_img, generator)
        else:
            z_lotus, lotus_p = self._given_pass1(pass1_depth, metric_depth, params, (hr, wr), pad, z_img, generator)
        e_p = discrepancy(lotus_p, norm_p, measured_p, cfg.discrepancy_norm, valid_p)
        z_d = m.encode_depth(norm_p)
        z_in, _ = self.gate_latent(z_d, e_p, measured_p, z_lotus, generator)
        pred_p = m.decode_depth(m.predict_latent(z_img, z_in))[..., :hr, :wr]
        lotus_p, e_p = lotus_p[..., :hr, :wr], e_p[..., :hr, :wr]

        def back(x, size):  # to the input size: plain bilinear [code] or antialiased when shrinking (resize_back)
            return resize_bilinear(x, size, antialias=cfg.resize_back == "antialias")

        pred = back(pred_p.float(), (h, w))
        e = back(e_p.float(), (h, w)).clamp(0.0, 1.0)
        e = torch.where(valid, e, torch.ones_like(e))
        if measured is not None and cfg.zero_discrepancy_at_sparse:
            e = torch.where(measured, torch.zeros_like(e), e)
        fit_mask = (e < cfg.fit_threshold) & valid
        s, t = masked_scale_shift(pred, norm_full, fit_mask, fallback=valid)  # never over the input's holes
        s4, fitted = s.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1) * pred + t.view(-1, 1, 1, 1)
        round_trip = None
        if autoencoded or cfg.output == "residual":
            round_trip = back(m.decode_depth(z_d)[..., :hr, :wr].float(), (h, w))
        if cfg.output == "residual":  # the input plus the change pass 2 made to its own VAE round trip
            fitted = torch.where(valid, norm_full + s4 * (pred - round_trip), fitted)
        bounds = output_depth_bounds(params)  # the scene's own scale, beyond 1 mm - 10 km too
        free = denormalize_depth(fitted, params, *bounds)
        depth, band = limit_output(cfg, free, metric_depth, measured, (hr, wr), pad, at_processing=at_p)
        if measured is not None:
            depth = torch.where(measured, sparse, depth)
        used = torch.where(fit_mask.flatten(1).sum(1) >= 2, fit_mask.flatten(1).sum(1), valid.flatten(1).sum(1))
        out = {"depth": depth, "discrepancy": e, "lotus": back(lotus_p.float(), (h, w)),
               "prediction": pred, "scale": s, "shift": t, "fit_pixels": used, "params": params, "free": free}
        if autoencoded:
            out["autoencoded"] = denormalize_depth(round_trip, params, *bounds)
        if band is not None:
            out["band"] = band
        return out

    def _pass1(self, image: torch.Tensor, size: tuple[int, int], padded: tuple[int, int], z_img: torch.Tensor,
               generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1 at inference: :meth:`lotus_pass` on ``z_img`` (the image's latent at the processing size ``size``,
        padded to ``padded``), or, with ``pass1_max_side`` below the processing size's longest side, on the image
        (``B x 3 x H x W`` in [-1, 1]) resized to that side, its prediction resized up to ``size``, padded, and its
        latent the depth VAE's encoding of it. The smaller pass's noise is the top-left crop of the noise drawn at the
        processing size, so every later draw is the one a run without the switch makes. Returns ``(latent,
        prediction B x 1 x padded)`` as :meth:`lotus_pass`."""
        m, side = self.model, self.config.pass1_max_side
        if side <= 0 or max(size) <= side:
            return self.lotus_pass(z_img, generator)
        noise = m.noise_like(z_img, generator)
        small = m.processing_size(*size, side)
        z_small = m.encode(pad_to_multiple(resize_bilinear(image, small), m.padded_size(*small)))
        noise = noise[..., :z_small.shape[-2], :z_small.shape[-1]]
        _, pred = self.lotus_pass(z_small, generator, noise=noise)
        pred = pad_to_multiple(resize_bilinear(pred[..., :small[0], :small[1]].float(), size), padded)
        return m.encode_depth(pred), pred

    def _given_pass1(self, pass1_depth: torch.Tensor, metric_depth: torch.Tensor, params, size: tuple[int, int],
                     padded: tuple[int, int], z_img: torch.Tensor, generator: torch.Generator | None):
        """Pass 1 taken from a given map (``pass1_depth`` of :meth:`sharpen_tensors`).

        ``pass1_depth`` and ``metric_depth`` are ``B x 1 x H x W`` metres, ``params`` the metric input's normalisation
        range, ``size`` the processing size (h', w') and ``padded`` its padded size. Returns ``(latent, prediction)``
        as :meth:`lotus_pass` does: the VAE latent of the prediction and the prediction, ``B x 1 x padded`` in the
        normalised space ([-1, 1])."""
        m = self.model
        given = pass1_depth.to(m.device, torch.float32)
        if given.shape != metric_depth.shape:
            raise ValueError(f"pass1_depth must have the metric depth's shape {tuple(metric_depth.shape)}; received "
                             f"{tuple(given.shape)}.")
        m.noise_like(z_img, generator)  # the draw pass 1 would make, so that the later draws stay the same
        given = torch.where(valid_depth(given), given, metric_depth)
        g_p, g_valid, _ = processing_inputs(given, None, size, padded)
        pred = normalize_depth(g_p, m.norm, "minmax", valid_mask=g_valid, params=params)[0]
        return m.encode_depth(pred), pred

    def sharpen(self, image: np.ndarray, metric_depth: np.ndarray, sparse: np.ndarray | None = None,
                processing_resolution: int | None = None, generator: torch.Generator | None = None) -> SharpenOutput:
        """Sharpen one image: HxWx3 uint8 RGB, metric depth HxW metres (0 = missing), optional sparse HxW metres.

        The public entry: checks every input (raising ``ValueError`` saying what was received), then runs
        :meth:`sharpen_checked`."""
        x, single = self.model.prepare_image(image)
        if not single:
            raise ValueError("sharpen() takes one HxWx3 uint8 image; use sharpen_tensors() for batches.")
        h, w = x.shape[-2:]
        check_generator(generator, self.device)
        d = check_depth_array(metric_depth, (h, w), "metric_depth")
        sp = None if sparse is None else check_depth_array(sparse, (h, w), "sparse")
        return self._sharpen_one(x, d, sp, processing_resolution, generator)

    def sharpen_checked(self, image: np.ndarray, metric_depth: np.ndarray, sparse: np.ndarray | None = None,
                        processing_resolution: int | None = None,
                        generator: torch.Generator | None = None) -> SharpenOutput:
        """:meth:`sharpen` for inputs the caller has already validated (the ``sharpen`` pipeline stage, whose
        :class:`~depthkit.pipeline.Pipeline` checked them): ``image`` HxWx3 uint8, ``metric_depth`` and ``sparse``
        (or None) HxW float32 metres, >= 0, no NaN. Nothing is re-checked; the result is identical."""
        return self._sharpen_one(image_to_tensor(image), depth_tensor(metric_depth),
                                 None if sparse is None else depth_tensor(sparse), processing_resolution, generator)

    def _sharpen_one(self, x: torch.Tensor, d: torch.Tensor, sp: torch.Tensor | None, processing_resolution,
                     generator) -> SharpenOutput:
        out = self.sharpen_tensors(x, d, sp, processing_resolution, generator)
        return SharpenOutput(
            depth=out["depth"][0, 0].float().cpu().numpy(),
            discrepancy=out["discrepancy"][0, 0].float().cpu().numpy(),
            lotus=((out["lotus"][0, 0].clamp(-1, 1) + 1) * 0.5).float().cpu().numpy(),
            scale=float(out["scale"][0]), shift=float(out["shift"][0]), fit_pixels=int(out["fit_pixels"][0]),
        )

    def forward(self, image, metric_depth, sparse=None, processing_resolution=None, generator=None) -> SharpenOutput:
        """``sharpdepth(image, metric_depth, sparse)`` is :meth:`sharpen`."""
        return self.sharpen(image, metric_depth, sparse, processing_resolution, generator)

    # ----------------------------------------------------------------- training
    def compute_losses(self, image: torch.Tensor, metric_depth: torch.Tensor, teacher_unet,
                       pass1_unet=None, sparse: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, gt: torch.Tensor | None = None) -> dict:
        """One training step's losses (no optimiser, no EMA update — the trainer owns those); label-free unless the
        config weighs the ground-truth terms.

        Args:
            image: ``B x 3 x H x W`` in [-1, 1], H and W multiples of ``model.resolution_multiple``.
            metric_depth: ``B x 1 x H x W`` metres from the metric source (0 = missing).
            teacher_unet: frozen Lotus UNet f_G for SDS.
            pass1_unet: UNet for the discrepancy pass (the EMA's ``model``); default ``lotus_unet`` / the student.
            sparse: optional measured depth; with ``zero_discrepancy_at_sparse`` e = 0 there.
            generator: on the model's device; draws pass-1 noise, the gate coin, the gating noise, the SDS timestep
                and the SDS noise (the EMA should be kept in float32: a 1e-4 step vanishes in bf16).
            gt: ``B x 1 x H x W`` metres (0 = unknown); needed, and only read, when ``config.uses_gt``.
        Returns:
            dict with ``loss`` = λ_SDS·sds + λ_recons·recons + λ_gt·gt + λ_gt_grad·gt_grad (differentiable w.r.t.
            the sharpener), ``sds``, ``recons``, ``gt``, ``gt_grad`` (0 when unused), ``discrepancy``
            (``B x 1 x H x W``), ``gated`` (``[B]`` bool), ``timesteps`` and ``prediction`` (the decoded pass-2
            map, normalised, ``B x 1 x H x W``, detached).
        """
        from depthkit.sharpen.losses import reconstruction_loss, sample_sds_timesteps, sds_loss, sds_teacher_input

        m, cfg = self.model, self.config
        k = m.resolution_multiple
        if image.shape[-2] % k or image.shape[-1] % k:
            raise ValueError(f"training images must be multiples of {k} pixels per side; received "
                             f"{tuple(image.shape[-2:])}. Crop or resize them first.")
        image = image.to(m.device, m.dtype)
        metric_depth = metric_depth.to(m.device, torch.float32)
        measured = measured_any = None
        if sparse is not None:
            sparse = sparse.to(m.device)
            measured_any = valid_depth(sparse)
            measured = measured_any if cfg.zero_discrepancy_at_sparse else None
        valid = valid_depth(metric_depth)
        with torch.no_grad():
            metric_norm, params = normalize_depth(metric_depth, m.norm, "minmax")
            z_img = m.encode(image)
            z_lotus, lotus_pred = self.lotus_pass(z_img, generator, unet=pass1_unet)
            e = discrepancy(lotus_pred, metric_norm, measured, cfg.discrepancy_norm, valid)
            z_d = m.encode_depth(metric_norm)
            z_in, gated = self.gate_latent(z_d, e, measured, z_lotus, generator, training=True)
        z_hat = m.predict_latent(z_img, z_in)
        t = sample_sds_timesteps(z_hat.shape[0], cfg, m.scheduler.config.num_train_timesteps, generator, m.device)
        z_t = sds_teacher_input(z_hat, m.noise_like(z_hat, generator), t, m.scheduler)
        sds = torch.zeros((), device=m.device)
        if cfg.lambda_sds > 0:  # a weight of 0 skips the teacher's forward pass (the draws above stay the same)
            with torch.no_grad():
                teacher_x0 = m.predict_latent(z_img, z_t, timestep=t, unet=teacher_unet)
            sds = sds_loss(z_hat, teacher_x0, t, m.scheduler.alphas_cumprod)
        d_hat = m.decode_depth(z_hat)
        # pixels without a metric value get no reconstruction weight (e = 1 there only tells the gate to regenerate)
        weight = {"e": e, "one_minus_e": 1.0 - e, "uniform": torch.ones_like(e)}[cfg.recons_weight]
        recons = reconstruction_loss(d_hat.float() * 0.5 + 0.5, metric_norm * 0.5 + 0.5, weight * valid.to(e.dtype))
        loss = cfg.lambda_sds * sds + cfg.lambda_recons * recons
        gt_l1 = gt_grad = torch.zeros((), device=m.device)
        if cfg.uses_gt:
            gt_l1, gt_grad = self._gt_terms(d_hat, z_d, metric_depth, metric_norm, params, valid, measured_any, gt)
            loss = loss + cfg.lambda_gt * gt_l1 + cfg.lambda_gt_grad * gt_grad
        return {"loss": loss, "sds": sds.detach(), "recons": recons.detach(), "gt": gt_l1.detach(),
                "gt_grad": gt_grad.detach(), "discrepancy": e, "gated": gated, "timesteps": t,
                "prediction": d_hat.detach()}

    def _gt_terms(self, d_hat: torch.Tensor, z_d: torch.Tensor, metric_depth: torch.Tensor, metric_norm: torch.Tensor,
                  params, valid: torch.Tensor, measured: torch.Tensor | None,
                  gt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ground-truth terms of :meth:`compute_losses`: the output formed as :meth:`sharpen_tensors` forms it
        (without the scale/shift fit; kept to the input's local range with ``change_range_px``; the change weighted
        by :func:`~depthkit.sharpen.limits.change_weight`) and GT normalised with d's own range, both scaled to
        [0, 1]."""
        from depthkit.sharpen.losses import gt_loss

        m = self.model
        if gt is None:
            raise ValueError("lambda_gt / lambda_gt_grad > 0 need ground-truth depth for every training sample "
                             "(gt=None was given). Train on data with GT (e.g. synthetic scenes) or set both to 0.")
        gt = gt.to(m.device, torch.float32)
        if gt.shape != d_hat.shape:
            raise ValueError(f"gt must be {tuple(d_hat.shape)} like the metric depth; received {tuple(gt.shape)}.")
        out = d_hat.float()
        if self.config.output == "residual":
            with torch.no_grad():
                round_trip = m.decode_depth(z_d).float()
            out = torch.where(valid, metric_norm + out - round_trip, out)
        band = change_weight(self.config, metric_depth, valid, measured)
        out = limit_change(out, metric_norm, valid, band, self.config.change_range_px)
        gt_valid = valid_depth(gt)
        gt_norm, _ = normalize_depth(gt, m.norm, "minmax", valid_mask=gt_valid, params=params)
        return gt_loss(out * 0.5 + 0.5, gt_norm * 0.5 + 0.5, gt_valid)

    # ----------------------------------------------------------------- save / load
    def save_pretrained(self, directory) -> Path:
        """The Lotus layout (``unet/`` = sharpener) + ``lotus_unet/`` when separate + ``sharpdepth.json``."""
        root = self.model.save_pretrained(directory, sharpener=True)
        if self.lotus_unet is not None:
            self.lotus_unet.save_pretrained(root / LOTUS_UNET_DIR, safe_serialization=True)
        meta = {"format": "depthkit-sharpdepth", "format_version": 1, "config": asdict(self.config),
                "separate_lotus_unet": self.lotus_unet is not None}
        (root / SHARPDEPTH_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return root

    @classmethod
    def from_pretrained(cls, path_or_hub_id, device=None, dtype=None, config: dict | None = None) -> SharpDepth:
        """Load what :meth:`save_pretrained` wrote (or a plain Lotus-G directory: the sharpener starts as Lotus)
        from a local directory or a hub id (see :func:`depthkit.sharpen.lotus.resolve_model_dir`). ``dtype``: a
        name from :mod:`depthkit.dtypes` or a ``torch.dtype``. ``config`` overrides fields of the stored
        :class:`SharpDepthConfig`. This is the public entry: it resolves the location once and calls
        :meth:`from_dir`."""
        from depthkit.sharpen.lotus import resolve_model_dir

        dtype = torch_dtype(dtype)  # a bad name fails before any download
        return cls.from_dir(resolve_model_dir(path_or_hub_id), device=device, dtype=dtype, config=config)

    @classmethod
    def from_dir(cls, root: Path, device=None, dtype: torch.dtype | None = None,
                 config: dict | None = None) -> SharpDepth:
        """Load from ``root``, a local SharpDepth / Lotus-G directory the caller has already resolved, with
        ``dtype`` a ``torch.dtype`` or None (the other arguments as in :meth:`from_pretrained`)."""
        check_sharpener_files(root)
        model = LotusModel.from_dir(root, device=device, dtype=dtype)
        stored, separate = read_sharpdepth_json(root)
        from depthkit.checkpoint_errors import CheckpointError

        try:  # the stored switches alone first: a bad one is the file's, a bad override the caller's
            SharpDepthConfig.from_dict(stored)
        except ValueError as exc:
            raise CheckpointError(f"{root / SHARPDEPTH_JSON}: {exc} Fix the file or re-export it.") from None
        lotus_unet = load_pass1_unet(root, separate, model.unet, device=device, dtype=dtype)
        return cls(model, SharpDepthConfig.from_dict({**stored, **(config or {})}), lotus_unet=lotus_unet)
