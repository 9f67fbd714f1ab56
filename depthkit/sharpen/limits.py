"""Run-time limits on how far SharpDepth may move its metric input (depthkit switches, all off by default).

The sharpener's output before these limits is its *free* output (metres, ``B x 1 x H x W``, at the input size). Seven
fields of :class:`~depthkit.sharpen.config.SharpDepthConfig` (:data:`LIMIT_FIELDS`) limit it, in this order:

1. ``change_range_px`` — each pixel is clamped to the metric input's minimum and maximum over its window
   (:func:`clip_to_local_range`);
2. ``change_band_px`` / ``change_band_jump``, ``keep_near_measured_px`` (not in a dense sensor's frame:
   ``dense_measured_fraction``), ``change_within_measured_px``, ``change_within_measured_hull``,
   ``keep_scanline_frames`` (w = 0 in a scan-line frame: :func:`scanline_frames`) — a weight w in [0, 1]
   (:func:`change_weight`) mixes input and clamped output: ``d + w · (clamped − d)``.

Measured pixels are restored by the caller afterwards. Inference (:meth:`SharpDepth.sharpen_tensors
<depthkit.sharpen.model.SharpDepth.sharpen_tensors>`) applies the limits in metres with :func:`limit_output`; the
ground-truth training terms apply :func:`limit_change` in the normalised space. Because the free output does not
depend on these fields, :func:`limit_output` can score many settings from one UNet pass
(:meth:`SharpenStage.run_limits <depthkit.sharpen.stage.SharpenStage.run_limits>`, ``benchmarks/sharpen_switches.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from depthkit.sharpen.config import SharpDepthConfig
from depthkit.sharpen.gating import (
    edge_band,
    local_range,
    measured_distance_weight,
    measured_hull_weight,
    sparse_to_latent_mask,
)
from depthkit.sharpen.lotus import pad_to_multiple, resize_bilinear
from depthkit.sharpen.normalize import valid_depth

__all__ = ["LIMIT_FIELDS", "change_weight", "clip_to_local_range", "limit_change", "limit_output",
           "measured_fraction", "processing_inputs", "resize_depth", "scanline_frames"]

LIMIT_FIELDS = ("change_band_px", "change_band_jump", "keep_near_measured_px", "change_within_measured_px",
                "change_within_measured_hull", "dense_measured_fraction", "keep_scanline_frames", "change_range_px")
"""The :class:`~depthkit.sharpen.config.SharpDepthConfig` fields that act only on the free output at inference."""


def resize_depth(depth: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize metric depth with holes (``B x 1 x H x W`` metres, 0 / non-finite = missing) to ``size`` (h', w'):
    validity-weighted bilinear. Returns ``(depth metres, valid bool)``, each ``B x 1 x h' x w'``; a pixel is valid
    when at least half of its interpolation weight fell on known depth (missing stays 0)."""
    valid = valid_depth(depth).float()
    if tuple(depth.shape[-2:]) == tuple(size):
        return torch.where(valid > 0, depth.float(), torch.zeros_like(valid)), valid > 0
    weight = resize_bilinear(valid, size)
    num = resize_bilinear(torch.where(valid > 0, depth.float(), torch.zeros_like(valid)), size)
    ok = weight >= 0.5
    return torch.where(ok, num / weight.clamp_min(1e-6), torch.zeros_like(num)), ok


def processing_inputs(metric_depth: torch.Tensor, measured: torch.Tensor | None, size: tuple[int, int],
                      padded: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The metric input (``B x 1 x H x W`` metres; ``measured`` a bool mask of the same shape, or None) at the
    processing ``size`` (h', w'), replicate-padded to ``padded``: ``(depth metres, valid bool, measured bool or
    None)``, each ``B x 1 x padded``. A processing pixel is measured when its cell of the input holds a measured
    pixel."""
    d_p, valid_p = resize_depth(metric_depth, size)
    d_p, valid_p = pad_to_multiple(d_p, padded), pad_to_multiple(valid_p.float(), padded) > 0.5
    measured_p = None
    if measured is not None:
        measured_p = pad_to_multiple(sparse_to_latent_mask(measured, size).float(), padded) > 0.5
    return d_p, valid_p, measured_p


def clip_to_local_range(out: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor, radius: int) -> torch.Tensor:
    """``out`` clamped, at each pixel of ``valid``, to the range of ``reference`` over ``valid`` pixels in the
    ``(2·radius + 1)``-pixel window (``change_range_px``); other pixels unchanged. Shapes ``B x 1 x H x W``."""
    low, high = local_range(reference, radius, valid)
    return torch.where(valid, torch.minimum(torch.maximum(out, low), high), out)


def change_weight(config: SharpDepthConfig, depth: torch.Tensor, valid: torch.Tensor,
                  measured: torch.Tensor | None, fraction: torch.Tensor | None = None,
                  scanline: torch.Tensor | None = None) -> torch.Tensor | None:
    """How far the output may move each pixel away from the metric input ``depth`` (``B x 1 x H x W`` metres, with
    ``valid`` and ``measured`` bool masks of that shape), in [0, 1] at its size: the edge band
    (``config.change_band_px``, a :class:`~depthkit.sharpen.config.SharpDepthConfig`) times the distance weight
    (``keep_near_measured_px``, not applied to images whose :func:`measured_fraction` reaches
    ``dense_measured_fraction``, and its cap ``change_within_measured_px``, when ``measured`` is given) times the
    measured pixels' convex hull (``change_within_measured_hull``, when ``measured`` is given), times 0 in the
    images that are scan-line frames (``keep_scanline_frames``, when ``measured`` is given); None when all are off
    (or leave every pixel free). Radii are pixels of ``depth``'s size. ``fraction`` and ``scanline`` (``B`` floats
    / bools) are the images' measured fraction and :func:`scanline_frames` when the caller has them at another size
    (inference: the input's, since shrinking to the processing size marks a cell measured when any of its pixels
    is); by default computed from ``measured`` (and ``valid``)."""
    weight = None
    if config.change_band_px > 0:
        weight = edge_band(depth, config.change_band_px, config.change_band_jump, valid)
    if (config.keep_near_measured_px > 0 or config.change_within_measured_px > 0) and measured is not None:
        radius, cap = config.keep_near_measured_px, config.change_within_measured_px
        dense = torch.zeros(measured.shape[0], dtype=torch.bool, device=measured.device)
        if config.dense_measured_fraction > 0 and radius > 0:
            fraction = measured_fraction(measured, valid) if fraction is None else fraction
            dense = fraction.to(measured.device) >= config.dense_measured_fraction
        if bool(dense.all()):  # only dense sensors' frames: the cap alone
            near = measured_distance_weight(measured, 0.0, cap)
        else:
            near = measured_distance_weight(measured, radius, cap)
            if bool(dense.any()):  # a batch mixing both
                near = torch.where(dense.view(-1, 1, 1, 1), measured_distance_weight(measured, 0.0, cap), near)
        weight = near if weight is None else weight * near
    if config.change_within_measured_hull and measured is not None:
        hull = measured_hull_weight(measured)
        weight = hull if weight is None else weight * hull
    if config.keep_scanline_frames and measured is not None:
        scan = (scanline_frames(measured) if scanline is None else scanline).to(measured.device)
        if bool(scan.any()):
            keep = (~scan).float().view(-1, 1, 1, 1).expand(measured.shape)
            weight = keep if weight is None else weight * keep
    return weight


def measured_fraction(measured: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per image, the measured pixels' share of the pixels with metric input: ``B`` floats in [0, 1] from ``B x 1 x H
    x W`` bool masks (``dense_measured_fraction``); 0 for an image without metric input."""
    both = (measured & valid).flatten(1).sum(1).float()
    return both / valid.flatten(1).sum(1).clamp_min(1).float()


SCANLINE_ROW_SHARE = 0.8
"""A scan-line frame's measured pixels have a row neighbour at least this often (:func:`scanline_frames`)."""
SCANLINE_COLUMN_SHARE = 0.2
"""... and a column neighbour at most this often."""
SCANLINE_MIN_POINTS = 64
"""... and there are at least this many of them."""


def scanline_frames(measured: torch.Tensor) -> torch.Tensor:
    """Per image, whether its measured pixels lie on scan lines, as a scanning LiDAR's do once projected into the
    camera (``keep_scanline_frames``): ``B`` bools from ``B x 1 x H x W`` bool masks.

    A measured pixel has a *row neighbour* when another is measured 1 px to its left or right (in its own row or
    the row above or below: a projected scan line is not exactly horizontal) or 2 px to its left or right in its row,
    and a *column neighbour* when one is measured directly above or below it. A scan-line frame has at least
    :data:`SCANLINE_MIN_POINTS` measured pixels, at least :data:`SCANLINE_ROW_SHARE` of them with a row neighbour
    and at most :data:`SCANLINE_COLUMN_SHARE` with a column neighbour. Scattered points never meet both: at a
    uniform density p the shares are 1 − (1 − p)^8 and 1 − (1 − p)^2, and the first reaches 0.8 only from p = 0.18,
    where the second is 0.33; a dense sensor's frame (ToF, structured light, stereo) has both near 1."""
    m = measured.to(torch.bool)
    x = m.float()
    row_kernel = torch.zeros(1, 1, 3, 5, dtype=x.dtype, device=x.device)
    row_kernel[..., :, 1] = row_kernel[..., :, 3] = 1.0
    row_kernel[..., 1, 0] = row_kernel[..., 1, 4] = 1.0
    column_kernel = torch.tensor([1.0, 0.0, 1.0], dtype=x.dtype, device=x.device).view(1, 1, 3, 1)
    row = (F.conv2d(x, row_kernel, padding=(1, 2)) > 0.5) & m
    column = (F.conv2d(x, column_kernel, padding=(1, 0)) > 0.5) & m
    n = m.flatten(1).sum(1)
    row_share = row.flatten(1).sum(1).float() / n.clamp_min(1).float()
    column_share = column.flatten(1).sum(1).float() / n.clamp_min(1).float()
    return (n >= SCANLINE_MIN_POINTS) & (row_share >= SCANLINE_ROW_SHARE) & (column_share <= SCANLINE_COLUMN_SHARE)


def limit_change(out: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None,
                 range_radius: int) -> torch.Tensor:
    """``out`` kept to ``reference``'s local range (``range_radius`` > 0), then its change from ``reference`` scaled
    by ``weight``, at ``valid`` pixels; all ``B x 1 x H x W`` in one space (metres, or the normalised space)."""
    if range_radius > 0:
        out = clip_to_local_range(out, reference, valid, range_radius)
    if weight is not None:
        out = torch.where(valid, reference + weight * (out - reference), out)
    return out


def limit_output(config: SharpDepthConfig, free: torch.Tensor, metric_depth: torch.Tensor, measured: torch.Tensor | None,
                 size: tuple[int, int], padded: tuple[int, int],
                 at_processing: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inference's limits: ``(limited depth, weight or None)``, ``B x 1 x H x W`` at the input size, measured pixels
    not yet restored.

    Args:
        config: the :class:`~depthkit.sharpen.config.SharpDepthConfig` whose :data:`LIMIT_FIELDS` apply.
        free: the sharpener's output in metres before the limits.
        metric_depth: its metric input, metres (0 = missing; such pixels are never limited).
        measured: bool mask of measured pixels at the input size (``B x 1 x H x W``), or None.
        size, padded: the processing size (h', w') and its padded size; the band and the distance weight are
            computed there (radii are processing pixels) and resized to the input size; the range window's radius
            is scaled up to the input size and rounded up.
        at_processing: :func:`processing_inputs` of these inputs when the caller already has them.
    """
    h, w = metric_depth.shape[-2:]
    d_p, valid_p, measured_p = at_processing or processing_inputs(metric_depth, measured, size, padded)
    fraction = None if measured is None else measured_fraction(measured, valid_depth(metric_depth))
    scanline = scanline_frames(measured) if measured is not None and config.keep_scanline_frames else None
    crop = (..., slice(0, size[0]), slice(0, size[1]))  # the padding's replicated measured pixels would widen the hull
    weight = change_weight(config, d_p[crop], valid_p[crop], None if measured_p is None else measured_p[crop],
                           fraction, scanline)
    if weight is not None:
        weight = resize_bilinear(weight, (h, w)).clamp(0.0, 1.0)
    radius = 0
    if config.change_range_px > 0:
        radius = max(1, math.ceil(config.change_range_px * max(h / size[0], w / size[1]) - 1e-6))
    # mixed in metres, so a pixel outside the band is the input bit for bit (not its normalise/denormalise trip)
    return limit_change(free, metric_depth, valid_depth(metric_depth), weight, radius), weight
