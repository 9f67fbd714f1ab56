"""SharpDepth's discrepancy map and noise-aware gating (the second input of its sharpener).

- :func:`discrepancy` — e in [0, 1] from Lotus's prediction and the normalised metric depth (0 at measured pixels,
  1 where the metric depth is missing);
- :func:`downsample_discrepancy`, :func:`sparse_to_latent_mask` — e at latent size (ê), 0 in every cell that
  contains a measurement (used only with ``SharpDepthConfig.sparse_latent_cells``);
- :func:`gate` — ``ê ⊙ noise + (1 − ê) ⊙ z_d``; :func:`apply_gate` — the training-time coin that gates a sample
  with probability ``gate_prob`` and otherwise gives it pure noise;
- :func:`edge_band` — depthkit: the pixels near a depth edge of the metric input, the only ones the output may change
  when ``SharpDepthConfig.change_band_px`` > 0; :func:`measured_distance_weight` — depthkit: how far the output may
  move a pixel given its distance to the nearest measurement (``keep_near_measured_px``,
  ``change_within_measured_px``); :func:`measured_hull_weight` — depthkit: the measured pixels' convex hull
  (``change_within_measured_hull``); :func:`local_range` — the window minimum and maximum that ``edge_band`` and
  ``change_range_px`` use.

"Gate" in ``depthkit.sharpen`` means only this. All tensors are ``B x 1 x H x W`` (maps) or ``B x C x h x w``
(latents); see :mod:`depthkit.sharpen.model` for how :class:`~depthkit.sharpen.model.SharpDepth` uses them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from depthkit.sharpen.normalize import masked_scale_shift

__all__ = ["DISCREPANCY_NORMS", "DISCREPANCY_DOWNSAMPLES", "discrepancy", "sparse_to_latent_mask",
           "downsample_discrepancy", "gate", "apply_gate", "edge_band", "local_range", "measured_distance_weight",
           "measured_hull_weight"]

DISCREPANCY_NORMS = ("minmax", "lstsq")
"""How :func:`discrepancy` compares the maps: as they are [code], or after a least-squares alignment [paper]."""
DISCREPANCY_DOWNSAMPLES = ("nearest", "area")
"""How :func:`downsample_discrepancy` brings e to latent size: one pixel per cell [code], or the cell's mean."""


def discrepancy(lotus_pred: torch.Tensor, metric_norm: torch.Tensor, sparse_mask: torch.Tensor | None = None,
                mode: str = "minmax", valid_mask: torch.Tensor | None = None, min_peak: float = 1e-3) -> torch.Tensor:
    """Discrepancy map e in [0, 1], ``B x 1 x H x W`` float32.

    Args:
        lotus_pred: Lotus's prediction in its normalised space (``B x 1 x H x W``, ~[-1, 1]).
        metric_norm: norm(d) in the same space and size.
        sparse_mask: measured pixels (bool/0-1); e = 0 there.
        mode: "minmax" [code]: e from the two maps as they are; "lstsq" [paper]: ``lotus_pred`` is first aligned
            to ``metric_norm`` by a per-image least-squares scale/shift over ``valid_mask``.
        valid_mask: pixels where d is known; elsewhere e = 1 and they do not set the max.
        min_peak: floor of the per-image max (normalised units; the range is 2). Without it two maps that agree
            up to rounding would have their rounding noise stretched to [0, 1]; above it this is the code's rule.
    """
    if mode not in DISCREPANCY_NORMS:
        raise ValueError(f"discrepancy mode must be 'minmax' or 'lstsq'; received {mode!r}.")
    if lotus_pred.shape != metric_norm.shape:
        raise ValueError(f"lotus_pred {tuple(lotus_pred.shape)} and metric_norm {tuple(metric_norm.shape)} differ.")
    pred = lotus_pred.float()
    target = metric_norm.float()
    if mode == "lstsq":
        s, t = masked_scale_shift(pred, target, valid_mask)
        pred = s.view(-1, 1, 1, 1) * pred + t.view(-1, 1, 1, 1)
    err = (pred - target).abs()
    valid = None if valid_mask is None else valid_mask.to(device=err.device, dtype=torch.bool)
    if valid is not None:
        err = torch.where(valid, err, torch.zeros_like(err))
    peak = err.amax(dim=(1, 2, 3), keepdim=True)
    e = (err / peak.clamp_min(min_peak)).clamp(0.0, 1.0)
    if valid is not None:
        e = torch.where(valid, e, torch.ones_like(e))
    if sparse_mask is not None:
        e = torch.where(sparse_mask.to(device=e.device, dtype=torch.bool), torch.zeros_like(e), e)
    return e


def sparse_to_latent_mask(sparse_mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bool ``B x 1 x h x w``: true where the cell (of any size ratio) contains at least one measured pixel."""
    return F.adaptive_max_pool2d(sparse_mask.float(), tuple(size)) > 0


def downsample_discrepancy(e: torch.Tensor, latent_hw: tuple[int, int], mode: str = "nearest",
                           sparse_mask: torch.Tensor | None = None) -> torch.Tensor:
    """e (``B x 1 x H x W``) → ê at latent size; "nearest" [code] keeps one pixel per cell, "area" averages.

    With ``sparse_mask`` (full-resolution measured pixels), every cell containing a measurement gets ê = 0.
    """
    if mode not in DISCREPANCY_DOWNSAMPLES:
        raise ValueError(f"discrepancy_downsample must be 'nearest' or 'area'; received {mode!r}.")
    e_hat = F.interpolate(e.float(), size=tuple(latent_hw), mode=mode)
    if sparse_mask is not None:
        e_hat = torch.where(sparse_to_latent_mask(sparse_mask, latent_hw), torch.zeros_like(e_hat), e_hat)
    return e_hat


def gate(z_d: torch.Tensor, noise: torch.Tensor, e_hat: torch.Tensor) -> torch.Tensor:
    """Noise-aware gating ``ê ⊙ noise + (1 − ê) ⊙ z_d``; ê (``B x 1 x h x w``) broadcasts over latent channels."""
    e_hat = e_hat.to(z_d.dtype)
    return e_hat * noise.to(z_d.dtype) + (1.0 - e_hat) * z_d


def apply_gate(z_d: torch.Tensor, noise: torch.Tensor, e_hat: torch.Tensor, prob: float = 0.8,
               generator: torch.Generator | None = None,
               pure_noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time gating: each sample is gated (``gate(z_d, noise, e_hat)``) with probability ``prob``, else it
    gets ``pure_noise`` (default ``noise``) [code: ε, also when the gate fills with the noised Lotus latent].

    One coin per sample, a depthkit choice: the public code draws one per batch, which is the same at its batch of 1
    image per GPU (each micro-step of its gradient accumulation draws anew); with larger batches per-sample coins keep
    each image's chance of being gated independent of the others', as in that run.

    Returns ``(latent, gated)`` with ``gated`` a ``[B]`` bool tensor saying which samples were gated.
    """
    device = generator.device if generator is not None else z_d.device
    gated = (torch.rand(z_d.shape[0], generator=generator, device=device) < prob).to(z_d.device)
    other = noise if pure_noise is None else pure_noise
    out = torch.where(gated.view(-1, 1, 1, 1), gate(z_d, noise, e_hat), other.to(z_d.dtype))
    return out, gated


def edge_band(depth: torch.Tensor, radius: int, jump: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Float ``B x 1 x H x W`` mask, 1 where the metric depth varies by more than ``jump`` in log depth (a factor
    ``exp(jump)``) inside the ``(2·radius + 1)``-pixel square window around the pixel, else 0.

    Only pixels with finite depth > 0 (and inside ``valid``) count; a window with fewer than one valid pixel gives 0.
    ``radius`` 0 gives an all-ones mask (no band: every pixel may change).
    """
    if radius < 0 or not jump > 0:
        raise ValueError(f"edge_band needs radius >= 0 and jump > 0; received radius={radius}, jump={jump}.")
    if radius == 0:
        return torch.ones_like(depth, dtype=torch.float32)
    d = depth.float()
    ok = torch.isfinite(d) & (d > 0)
    if valid is not None:
        ok &= valid.to(device=d.device, dtype=torch.bool)
    log_d = torch.log(torch.where(ok, d, torch.ones_like(d)))
    low, high = local_range(log_d, radius, ok)
    spread = torch.where(torch.isfinite(high), high - low, torch.zeros_like(high))
    return (spread > jump).float()


def local_range(values: torch.Tensor, radius: int, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``: the minimum and maximum of ``values`` (``B x 1 x H x W``) over the pixels of ``valid`` (bool,
    same shape) inside the ``(2·radius + 1)``-pixel square window around each pixel (the window clipped at the
    border). A window without a valid pixel gives ``low = +inf``, ``high = -inf``. Computed in float32."""
    if radius < 0:
        raise ValueError(f"local_range needs radius >= 0; received {radius}.")
    v = values.float()
    valid = valid.to(device=v.device, dtype=torch.bool)
    inf = torch.tensor(float("inf"), dtype=v.dtype, device=v.device)
    r = min(int(radius), max(v.shape[-2:]))  # a wider window sees the same pixels, at a cost linear in its size
    k = 2 * r + 1
    high = F.max_pool2d(torch.where(valid, v, -inf), k, stride=1, padding=r)
    low = -F.max_pool2d(torch.where(valid, -v, -inf), k, stride=1, padding=r)
    return low, high


def measured_distance_weight(measured: torch.Tensor, radius: float, max_distance: float = 0.0) -> torch.Tensor:
    """Float ``B x 1 x H x W`` weight ``min(1, dist / radius)``, dist = Euclidean distance in pixels from each pixel's
    centre to the nearest measured pixel's (0 at a measured pixel); ``radius`` 0 leaves that factor 1. With
    ``max_distance`` > 0 the weight is also 0 where dist > ``max_distance`` (no measurement near enough). An image
    without measurements gets 1 everywhere."""
    import numpy as np

    from depthkit.geometry import distance_to

    if radius < 0 or max_distance < 0:
        raise ValueError(f"measured_distance_weight needs radius >= 0 and max_distance >= 0; received {radius}, "
                         f"{max_distance}.")
    if radius == 0 and max_distance == 0:
        return torch.ones_like(measured, dtype=torch.float32)

    def weight(mask: np.ndarray) -> np.ndarray:
        dist = distance_to(mask)
        out = np.minimum(1.0, dist / float(radius)) if radius > 0 else np.ones(mask.shape, np.float32)
        if max_distance > 0:
            out[dist > max_distance] = 0.0
        return out

    return _per_measured_image(measured, weight)


def measured_hull_weight(measured: torch.Tensor) -> torch.Tensor:
    """Float ``B x 1 x H x W``: 1 at pixels inside the convex hull of the measured pixels of ``measured`` (a bool
    mask of that shape; :func:`depthkit.geometry.convex_hull_mask`), 0 outside (``change_within_measured_hull``).
    An image without measurements gets 1 everywhere."""
    from depthkit.geometry import convex_hull_mask

    return _per_measured_image(measured, convex_hull_mask)


def _per_measured_image(measured: torch.Tensor, fn) -> torch.Tensor:
    """Float ``B x 1 x H x W`` on ``measured``'s device: ``fn`` (an HxW bool mask with a measured pixel -> an HxW
    map) of each image's mask, and 1 everywhere in an image without measurements."""
    import numpy as np

    mask = measured.detach().to(torch.bool).cpu().numpy()
    out = np.ones(mask.shape, np.float32)
    for b in range(mask.shape[0]):
        if mask[b, 0].any():
            out[b, 0] = fn(mask[b, 0])
    return torch.from_numpy(out).to(measured.device)
