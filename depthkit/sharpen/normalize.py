"""Depth normalisation to Lotus's [-1, 1] space, its inverse, and a batched masked scale/shift fit (torch).

Lotus and SharpDepth never see metres: depth is mapped per image to [-1, 1] before VAE encoding, replicated to 3
channels (the VAE is an RGB autoencoder), and decoded back as the mean of the 3 output channels.

Two *spaces* (which quantity is normalised) and two *methods* (which range is used):

- ``space="depth"``: x = 2 (d − lo) / (hi − lo) − 1, so near → −1, far → +1.
- ``space="disparity"``: the same on 1/d, so near → +1, far → −1 (Lotus's ``trunc_disparity`` models).
- ``method="quantile"``: lo/hi are the per-image 2% / 98% quantiles (Lotus training), values outside are clipped;
- ``method="minmax"``: lo/hi are the per-image min / max (SharpDepth's normaliser of the metric source).

Only pixels with finite depth > 0 (and inside ``valid_mask``) define lo/hi; the others are set to the *far* value
(+1 in depth space, −1 in disparity space), a neutral filler that callers mask out. The inverse
(:func:`denormalize_depth`) needs the ``NormParams`` of the forward pass, so it exists only where a metric reference
defined them (SharpDepth); a bare Lotus prediction stays affine-invariant.

All tensors are ``B x 1 x H x W``; depth in metres; normalised maps in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPACES = ("depth", "disparity")
METHODS = ("quantile", "minmax")

__all__ = ["NormParams", "normalize_depth", "denormalize_depth", "output_depth_bounds", "replicate3", "masked_scale_shift",
           "valid_depth"]


@dataclass
class NormParams:
    """Per-image range of a normalisation: ``lo``, ``hi`` are ``[B]`` tensors in metres (depth space) or 1/metres
    (disparity space)."""

    lo: torch.Tensor
    hi: torch.Tensor
    space: str

    def to(self, device) -> NormParams:
        return NormParams(self.lo.to(device), self.hi.to(device), self.space)


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"normalisation space must be one of {SPACES}; received {space!r}.")


def _check_bchw(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a B x 1 x H x W tensor; received {shape}. Add dims with x[None, None].")


def valid_depth(depth: torch.Tensor, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask of usable depth: finite, > 0, and inside ``valid_mask`` when given."""
    m = torch.isfinite(depth) & (depth > 0)
    if valid_mask is not None:
        m &= valid_mask.to(torch.bool)
    return m


def _to_space(depth: torch.Tensor, valid: torch.Tensor, space: str) -> torch.Tensor:
    if space == "depth":
        return torch.where(valid, depth, torch.zeros_like(depth))
    return torch.where(valid, 1.0 / torch.where(valid, depth, torch.ones_like(depth)), torch.zeros_like(depth))


def normalize_depth(depth: torch.Tensor, space: str = "depth", method: str = "quantile",
                    valid_mask: torch.Tensor | None = None, quantiles: tuple[float, float] = (0.02, 0.98),
                    params: NormParams | None = None, clip: bool = True) -> tuple[torch.Tensor, NormParams]:
    """Map metric depth (``B x 1 x H x W`` metres, 0 = missing) to [-1, 1] per image.

    Args:
        space: ``"depth"`` or ``"disparity"`` (see module docstring).
        method: ``"quantile"`` (2%/98% by default, Lotus) or ``"minmax"`` (SharpDepth).
        valid_mask: optional ``B x 1 x H x W`` bool; pixels outside it (or with depth <= 0) do not set the range and
            come out as the far value.
        params: reuse a range computed before (e.g. at another resolution) instead of computing one.
        clip: clip to [-1, 1] (always true in Lotus/SharpDepth; off only to test the affine map).

    Returns:
        ``(normalised, params)``; computation is float32 whatever the input dtype.
    """
    _check_bchw("depth", depth)
    _check_space(space)
    if method not in METHODS:
        raise ValueError(f"normalisation method must be one of {METHODS}; received {method!r}.")
    depth = depth.float()
    valid = valid_depth(depth, valid_mask)
    values = _to_space(depth, valid, space)
    if params is None:
        lo, hi = [], []
        for b in range(depth.shape[0]):
            v = values[b][valid[b]]
            if v.numel() == 0:
                raise ValueError(
                    f"image {b} of the batch has no valid depth (all pixels are 0, negative, non-finite or masked); "
                    "normalisation needs at least one positive depth value."
                )
            if method == "quantile":
                q = torch.quantile(v, torch.tensor(quantiles, dtype=v.dtype, device=v.device))
                lo.append(q[0])
                hi.append(q[1])
            else:
                lo.append(v.min())
                hi.append(v.max())
        params = NormParams(torch.stack(lo), torch.stack(hi), space)
    elif params.space != space:
        raise ValueError(f"params were computed in {params.space!r} space but space={space!r} was requested.")
    lo = params.lo.to(values).view(-1, 1, 1, 1)
    hi = params.hi.to(values).view(-1, 1, 1, 1)
    x = 2.0 * (values - lo) / _span(lo, hi) - 1.0
    if clip:
        x = x.clamp(-1.0, 1.0)
    far = 1.0 if space == "depth" else -1.0
    return torch.where(valid, x, torch.full_like(x, far)), params


def _span(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    # a constant map has hi == lo; a tiny floor keeps the map finite (it then sends everything to -1)
    return (hi - lo).clamp_min(1e-6)


def denormalize_depth(x: torch.Tensor, params: NormParams, min_depth: float | torch.Tensor = 1e-3,
                      max_depth: float | torch.Tensor = 1e4) -> torch.Tensor:
    """Inverse of :func:`normalize_depth` for a map in its [-1, 1] space (values outside are extrapolated).

    Returns metres, clamped to ``[min_depth, max_depth]`` so that an extrapolated disparity never becomes <= 0. The
    bounds are metres, one for the batch or ``[B]`` tensors, one per image (:func:`output_depth_bounds`).
    """
    _check_bchw("x", x)
    _check_space(params.space)
    lo = params.lo.to(x.device, torch.float32).view(-1, 1, 1, 1)
    hi = params.hi.to(x.device, torch.float32).view(-1, 1, 1, 1)
    near = torch.as_tensor(min_depth, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
    far = torch.as_tensor(max_depth, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
    v = lo + (x.float() + 1.0) * 0.5 * _span(lo, hi)
    if params.space == "depth":
        return torch.minimum(torch.maximum(v, near), far)
    return 1.0 / torch.minimum(torch.maximum(v, 1.0 / far), 1.0 / near)


OUTPUT_DEPTH_MARGIN = 10.0
""":func:`output_depth_bounds` lets an output reach this factor nearer than a scene's nearest known depth and farther
than its farthest, where they lie outside [1 mm, 10 km]."""


def output_depth_bounds(params: NormParams, min_depth: float = 1e-3,
                        max_depth: float = 1e4) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image bounds (metres, two ``[B]`` float32 tensors) for :func:`denormalize_depth` of a map normalised with
    ``params``: ``min(min_depth, nearest / m)`` and ``max(max_depth, farthest · m)``, ``m`` =
    :data:`OUTPUT_DEPTH_MARGIN`, nearest and farthest the depths at the ends of ``params``' range.

    Within [``min_depth``, ``max_depth``] (1 mm to 10 km) these are the fixed bounds; a scene beyond them (a
    sub-millimetre close-up, a landscape tens of km deep) keeps its own scale instead of having every pixel clamped
    to 1 mm or 10 km, so its output still follows the metric input."""
    _check_space(params.space)
    lo, hi = params.lo.float(), params.hi.float()
    if params.space == "depth":
        nearest, farthest = lo, hi
    else:  # disparity: its largest value is the nearest depth
        nearest, farthest = 1.0 / hi, 1.0 / lo
    # within float32's range: an inf far bound lets a disparity reach 0 (infinite depth); 1e38 m, not float32's
    # largest (3.4e38), so that 1 / (1 / far) does not round past it
    return (torch.clamp(nearest / OUTPUT_DEPTH_MARGIN, min=torch.finfo(torch.float32).tiny, max=min_depth),
            torch.clamp(farthest * OUTPUT_DEPTH_MARGIN, min=max_depth, max=1e38))


def replicate3(x: torch.Tensor) -> torch.Tensor:
    """``B x 1 x H x W`` → ``B x 3 x H x W`` (the VAE encodes depth as a grey RGB image)."""
    _check_bchw("x", x)
    return x.expand(-1, 3, -1, -1)


def masked_scale_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                       min_pixels: int = 2, fallback: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image closed-form ``(s, t) = argmin sum_mask (s * pred + t - target)^2`` for ``B x 1 x H x W`` tensors.

    The same least-squares problem as :func:`depthkit.geometry.fit_scale_shift`, batched in torch so it runs on the
    GPU inside training steps; it shares that function's flatness rule (``pred`` constant on the mask → ``s = 1``
    and a pure shift) but never raises where it raises: an image with fewer than ``min_pixels`` usable (masked,
    finite) pixels falls back to its finite pixels of ``fallback`` (``B x 1 x H x W`` bool; default: all of them,
    e.g. the pixels where the target means something), and with fewer than 2 of those too it returns ``s = 1``,
    ``t`` = the mean difference (``s = 1, t = 0`` when none is finite). Computed in float64. Returns ``[B]``
    tensors ``s``, ``t`` (float32), no gradient.
    """
    _check_bchw("pred", pred)
    _check_bchw("target", target)
    with torch.no_grad():
        p = pred.detach().double().flatten(1)
        y = target.detach().double().flatten(1)
        finite = torch.isfinite(p) & torch.isfinite(y)
        m = finite if mask is None else (mask.flatten(1).to(torch.bool) & finite)
        few = m.sum(1) < min_pixels
        wide = finite if fallback is None else (fallback.flatten(1).to(torch.bool) & finite)
        m = torch.where(few[:, None], wide, m).double()
        n = m.sum(1).clamp_min(1.0)
        p0 = torch.where(m > 0, p, torch.zeros_like(p))
        y0 = torch.where(m > 0, y, torch.zeros_like(y))
        pm = p0.sum(1) / n
        ym = y0.sum(1) / n
        dp = (p0 - pm[:, None]) * m
        var = (dp * dp).sum(1)
        cov = (dp * (y0 - ym[:, None]) * m).sum(1)
        flat = var < 1e-12 * torch.clamp(pm * pm, min=1.0) * n
        s = torch.where(flat, torch.ones_like(var), cov / torch.where(flat, torch.ones_like(var), var))
        t = ym - s * pm
    return s.float(), t.float()
