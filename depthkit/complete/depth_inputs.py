"""SDIM's configuration and input preparation: :class:`SDIMConfig` (the depth branch's settings, saved as
``sdim_config.json``) and how sparse metres become the depth branch's inputs.

:func:`prepare_depth_inputs` takes the sparse map at input resolution and the processor's output: the sparse map
goes to the resized grid by nearest-valid scatter (:func:`scatter_sparse_to_grid`: no value blending, nearest point
wins a collision, ties go to the nearer surface), becomes two feature channels (:func:`sparse_depth_features`:
normalised depth and validity mask), and the RGB input of the branch is recovered from ``pixel_values`` (the exact
resized image the vision tower sees). The modules that consume these live in :mod:`depthkit.complete.model`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from depthkit.complete.processor import map_to_resized, rgb_from_pixel_values

__all__ = [
    "SDIMConfig",
    "FEATURE_MODES",
    "BRANCH_FUSIONS",
    "INITS",
    "normalize_sparse_depth",
    "sparse_depth_features",
    "scatter_sparse_to_grid",
    "prepare_depth_inputs",
]

FEATURE_MODES = ("log", "inverse", "linear")
"""How sparse metres become the first feature channel (:attr:`SDIMConfig.sparse_features`)."""
BRANCH_FUSIONS = ("soft", "hard_concat")
"""How the depth branch joins the patch embedding (:attr:`SDIMConfig.fusion`; see :mod:`depthkit.complete.model`)."""
INITS = ("zero", "he")
"""Initialisation of the branch's new weights (:attr:`SDIMConfig.init`)."""


@dataclass
class SDIMConfig:
    """Settings of the depth branch. Saved next to its weights as ``sdim_config.json``."""

    sparse_features: str = "log"
    """How sparse metres become the first feature channel: ``log`` = log(d/min)/log(max/min) in [0, 1];
    ``inverse`` = 1/(1 + d/1 m) in (0, 1), disparity-like (most resolution near the camera); ``linear`` = d/max.
    Depth is clipped to [min_depth, max_depth] first; missing pixels are 0 (the mask channel tells them apart)."""
    fusion: str = "soft"
    """``soft`` (the paper's zero-init branch) or ``hard_concat`` (ablation (a); see :mod:`depthkit.complete.model`)."""
    init: str = "zero"
    """``zero`` (paper) or ``he`` (ablation (b)): init of the sparse-encoder conv and the output conv (for
    ``hard_concat``: of ``proj2``)."""
    channels: int = 32
    """Width of the branch (paper: 32)."""
    kernel_size: int = 3
    """Conv kernel size (odd; 'same' padding)."""
    negative_slope: float = 0.01
    """LeakyReLU slope."""
    min_depth: float = 0.001
    """Metres; smaller valid values are clipped up to this."""
    max_depth: float = 300.0
    """Metres; larger values are clipped down to this."""

    def __post_init__(self):
        if self.sparse_features not in FEATURE_MODES:
            raise ValueError(f"sparse_features={self.sparse_features!r} is not one of {FEATURE_MODES}.")
        if self.fusion not in BRANCH_FUSIONS:
            raise ValueError(f"fusion={self.fusion!r} is not one of {BRANCH_FUSIONS}.")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} is not one of {INITS}.")
        if self.channels < 1:
            raise ValueError(f"channels={self.channels} must be >= 1.")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={self.kernel_size} must be a positive odd number.")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth; got {self.min_depth}, {self.max_depth} (metres).")

    @property
    def in_channels(self) -> int:
        """Sparse feature channels: normalised depth and validity mask."""
        return 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SDIMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SDIMConfig keys {unknown}; allowed: {sorted(known)}.")
        return cls(**data)




def normalize_sparse_depth(depth: torch.Tensor, mode: str = "log", min_depth: float = 0.001,
                           max_depth: float = 300.0) -> torch.Tensor:
    """Metres → normalised feature (same shape); missing pixels (<= 0 or non-finite) → 0. See SDIMConfig."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"mode={mode!r} is not one of {FEATURE_MODES}.")
    depth = torch.as_tensor(depth, dtype=torch.float32)
    valid = torch.isfinite(depth) & (depth > 0)
    d = torch.where(valid, depth, torch.full_like(depth, min_depth)).clamp(min_depth, max_depth)
    if mode == "log":
        f = torch.log(d / min_depth) / math.log(max_depth / min_depth)
    elif mode == "inverse":
        f = 1.0 / (1.0 + d)
    else:
        f = d / max_depth
    return torch.where(valid, f, torch.zeros_like(f))


def sparse_depth_features(sparse, config: SDIMConfig | None = None) -> torch.Tensor:
    """Sparse metres at the resized size, (H, W) or (B, H, W) → features (2, H, W) or (B, 2, H, W), float32:
    channel 0 the normalised depth (``config.sparse_features``), channel 1 the validity mask (1 = measured)."""
    config = config or SDIMConfig()
    depth = torch.as_tensor(np.asarray(sparse) if not isinstance(sparse, torch.Tensor) else sparse,
                            dtype=torch.float32)
    if depth.dim() not in (2, 3):
        raise ValueError(f"sparse must be HxW or BxHxW metres; got shape {tuple(depth.shape)}.")
    valid = (torch.isfinite(depth) & (depth > 0)).float()
    feat = normalize_sparse_depth(depth, config.sparse_features, config.min_depth, config.max_depth)
    return torch.stack([feat, valid], dim=-3)


def scatter_sparse_to_grid(sparse: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Move a sparse depth map (HxW metres, 0/NaN = missing) onto an H'xW' grid without blending values.

    Each valid point goes to the target pixel containing its centre (:func:`map_to_resized`) and keeps its exact
    value. When several points land on one target pixel, the point whose centre is nearest that pixel's centre
    wins; exact ties go to the smaller depth (the foreground surface). When H' >= H and W' >= W no two points
    collide, so every point is kept. Returns float32 H'xW', 0 = missing.
    """
    arr = np.asarray(sparse)
    if arr.ndim != 2:
        raise ValueError(f"sparse must be an HxW depth map in metres; got shape {arr.shape}.")
    h, w = arr.shape
    h2, w2 = (int(v) for v in out_hw)
    out = np.zeros((h2, w2), np.float32)
    valid = np.isfinite(arr) & (arr > 0)
    rows, cols = np.nonzero(valid)
    if rows.size == 0:
        return out
    values = arr[rows, cols].astype(np.float32)
    tr, tc = map_to_resized(rows, cols, (h, w), (h2, w2))
    dist = ((rows + 0.5) * (h2 / h) - (tr + 0.5)) ** 2 + ((cols + 0.5) * (w2 / w) - (tc + 0.5)) ** 2
    key = tr * w2 + tc
    order = np.lexsort((values, dist, key))  # by target pixel, then distance, then depth
    key_sorted = key[order]
    first = np.ones(key_sorted.size, bool)
    first[1:] = key_sorted[1:] != key_sorted[:-1]
    out.reshape(-1)[key_sorted[first]] = values[order][first]
    return out


def prepare_depth_inputs(sparse, image_grid_thw, pixel_values, processor, config: SDIMConfig | None = None) -> dict:
    """Depth-branch inputs for a processed batch.

    Args:
        sparse: one HxW sparse depth map (metres, 0 = missing, at the input image's resolution) per image, in the
            order of the processor's images (a list, or one array for one image).
        image_grid_thw, pixel_values: the processor's outputs for those images.
        processor: the processor (for patch geometry and mean/std).
        config: feature settings.

    Returns:
        ``{"sparse_pixels": ..., "rgb_pixels": ...}``: float32 tensors (B, 2, H', W') and (B, 3, H', W') in [0, 1]
        when all images share one resized size, else lists of (C, H', W') tensors — both accepted by
        :meth:`SDIMModel.forward`.
    """
    config = config or SDIMConfig()
    if isinstance(sparse, (np.ndarray, torch.Tensor)) and np.ndim(sparse) == 2:
        sparse = [sparse]
    sparse = list(sparse)
    rgb = rgb_from_pixel_values(pixel_values, image_grid_thw, processor)
    if len(rgb) != len(sparse):
        raise ValueError(f"got {len(sparse)} sparse maps for {len(rgb)} images; give one per image.")
    feats = []
    for s, img in zip(sparse, rgb):
        s = s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else np.asarray(s)
        feats.append(sparse_depth_features(scatter_sparse_to_grid(s, img.shape[-2:]), config))
    if len({tuple(f.shape) for f in feats}) == 1:
        return {"sparse_pixels": torch.stack(feats), "rgb_pixels": torch.stack(rgb)}
    return {"sparse_pixels": feats, "rgb_pixels": rgb}

