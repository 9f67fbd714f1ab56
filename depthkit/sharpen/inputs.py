"""Checks of what :meth:`depthkit.sharpen.model.SharpDepth.sharpen` (the direct Python entry) is given, as the
Pipeline checks its own inputs: depth arrays (HxW float metres, 0 = missing; NaN, inf, negative values and values
float32 cannot hold refused) and the noise generator."""

from __future__ import annotations

import numpy as np
import torch

from depthkit.float32_metres import float32_metres

__all__ = ["depth_tensor", "check_depth_array", "check_generator"]


def depth_tensor(depth: np.ndarray) -> torch.Tensor:
    """HxW metres → ``1 x 1 x H x W`` float32 (CPU)."""
    return torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]


def check_depth_array(depth, shape: tuple[int, int], name: str) -> torch.Tensor:
    """:func:`depth_tensor` of ``depth`` after checking it is an HxW float array of metres matching ``shape``, every
    value finite and >= 0 once in float32 (0 = missing), as the Pipeline checks its inputs; ``metric_depth`` needs a
    value > 0. An inf, or a float64 value float32 cannot hold (:func:`depthkit.float32_metres.float32_metres`), would
    otherwise be taken for missing without a word."""
    if isinstance(depth, torch.Tensor):
        depth = depth.detach().cpu().numpy()
    depth = np.asarray(depth)
    if depth.shape != tuple(shape) or depth.dtype.kind != "f":
        raise ValueError(f"{name} must be an HxW float array of metres matching the image {tuple(shape)}; received "
                         f"shape {depth.shape}, dtype {depth.dtype}.")
    metres = float32_metres(depth, name)
    nan, inf, negative = np.isnan(metres), np.isinf(metres), metres < 0
    if nan.any() or inf.any() or negative.any():
        raise ValueError(f"{name} has NaN or negative values, or infinite ones: {int(nan.sum())} NaN, {int(inf.sum())} "
                         f"inf, {int(negative.sum())} negative. Depth is finite metres >= 0; mark missing depth with 0.")
    if name == "metric_depth" and not (metres > 0).any():
        raise ValueError("metric_depth has no pixel > 0 (all missing); sharpening needs metric depth to sharpen. Pass "
                         "a dense depth map in metres, or complete a sparse one first (Pipeline(stages=('complete', "
                         "'sharpen'))).")
    return depth_tensor(metres)


def check_generator(generator, device: torch.device) -> None:
    """Refuse (``ValueError``) a ``generator`` that is not None or a ``torch.Generator`` on ``device``'s
    type (torch would fail deep inside the first noise draw)."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None (None: seeded 0, deterministic); received "
                         f"{type(generator).__name__}. For a seed s pass torch.Generator(device="
                         f"'{device.type}').manual_seed(s).")
    if generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model is on {device}; create it there: "
                         f"torch.Generator(device='{device.type}').manual_seed(s).")
