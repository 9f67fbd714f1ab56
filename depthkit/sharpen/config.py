"""SharpDepth's switches: :class:`SharpDepthConfig` (a recipe's ``sharpdepth:`` section and a checkpoint's
``sharpdepth.json`` share it). ``[code]`` marks the public implementation's choice, ``[paper]`` the paper's text,
``depthkit`` an addition that is off by default. Used by :class:`depthkit.sharpen.model.SharpDepth`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from depthkit.sharpen.ema import EMA_SCHEDULES
from depthkit.sharpen.gating import DISCREPANCY_DOWNSAMPLES, DISCREPANCY_NORMS

__all__ = ["SharpDepthConfig", "RECONS_WEIGHTS"]

RECONS_WEIGHTS = ("e", "one_minus_e", "uniform")
"""Choices of :attr:`SharpDepthConfig.recons_weight`."""


@dataclass
class SharpDepthConfig:
    """SharpDepth switches; ``[code]`` = the public implementation, ``[paper]`` = the paper's text."""

    discrepancy_norm: str = "minmax"
    """"minmax" [code]: compare Lotus(x) with min/max-normalised d directly; "lstsq" [paper]: first align Lotus(x)
    to norm(d) by least-squares scale/shift."""
    discrepancy_downsample: str = "nearest"
    """Resize of e to latent size: "nearest" [code] or "area" (average over each cell)."""
    norm_range: str = "processing"
    """Inference: where the metric input's min/max (its [-1, 1] range) is taken: "processing" [code] = on the map at
    the processing size, as the UNet sees it (it spans exactly [-1, 1], as in training); "input" (depthkit before
    session 39, which the embedded default was measured with) = on the full-resolution input, whose thin
    extremes a shrink averages away (the map the UNet sees then falls short of ±1). Equal at the native size."""
    resize_back: str = "bilinear"
    """Inference: how the prediction and e go back to the input size: "bilinear" [code] = plain bilinear; "antialias"
    (depthkit before session 39) = antialiased when shrinking (a processing size above the input's), which softens
    the edges just sharpened. Equal when the processing size is at most the input's."""
    gating: bool = True
    """Noise-aware gating of pass 2's input [paper and code]; False (an ablation, the paper's "uniform noise"): pass 2
    always gets pure noise ε, in training and at inference, so the metric input reaches the output only through
    the reconstruction loss and the scale/shift fit."""
    gate_prob: float = 0.8
    """Training: probability that a sample gets the gated latent; otherwise pure noise ε [code]."""
    gate_noise: str = "noised_lotus"
    """What fills high-discrepancy cells: "noised_lotus" [code, training and inference] = the pass-1 latent noised to
    t=999 with the scheduler, sqrt(ᾱ)·ẑ_lotus + sqrt(1−ᾱ)·ε (≈ 0.068·ẑ + 0.998·ε for SD's schedule); "noise"
    [paper formula] = ε."""
    sds_timestep: str = "fixed"
    """"fixed": t = 999 [code]; "sampled": t ~ U[sds_t_min, sds_t_max] per sample [paper]."""
    sds_t_min: int = 20
    """Lower bound of sampled SDS timesteps (DreamFusion's 0.02·T; neither source gives a range)."""
    sds_t_max: int = 980
    """Upper bound (inclusive) of sampled SDS timesteps (0.98·T)."""
    lambda_sds: float = 1.0
    """Weight of the SDS loss [paper and code]."""
    lambda_recons: float = 0.3
    """Weight of the reconstruction loss [paper]; the released training script passes 0.4 (its argparse default is
    0.2)."""
    recons_weight: str = "e"
    """Per-pixel weight of the reconstruction loss: "e" [paper and code] = the discrepancy (reconstruct d where
    Lotus disagrees with it); "one_minus_e" (an ablation) = 1 − e; "uniform" (an ablation) = 1 everywhere."""
    ema_decay: float = 0.9999
    """EMA decay (the maximum, with a warm-up) of the student that produces pass 1 during training [code]."""
    ema_start: int = 100
    """EMA: calls up to this one copy the student [code: ema-pytorch's update_after_step]."""
    ema_every: int = 10
    """EMA: act on every this-many-th call [code: update_every]."""
    ema_warmup_power: float | None = 2.0 / 3.0
    """EMA warm-up, counted in calls k (not in averaging updates): decay_k = min(ema_decay, 1 − (1 + k −
    ema_start)^(−power)) [code: ema-pytorch's default power 2/3, inv_gamma 1]; None = constant ema_decay."""
    ema_schedule: str = "ema_pytorch"
    """"ema_pytorch" [code]: the library's rule — call 0 and every ema_every-th call up to ema_start copy, and so
    does the first one after it (the library copies the model in before its first average), every ema_every-th call
    after that averages; "no_init_copy": the same without that first copy (depthkit's rule until session 39, with
    which the embedded default's sharpener was trained); "every_call_copy": every call before ema_start copies, then
    every ema_every-th call from ema_start on averages (depthkit's earliest rule)."""
    fit_threshold: float = 0.5
    """Inference: scale/shift are fitted over pixels with e < fit_threshold [code]."""
    output: str = "decoded"
    """Inference: "decoded" [paper and code] = the decoded pass-2 map, scale/shift-fitted to d; "residual" (depthkit)
    = d plus the fitted change pass 2 made, d + s·(dec(ẑ) − dec(z_d)): where pass 2 returns z_d the output is d
    exactly, so the VAE's reconstruction error (benchmarks/sharpen_limits.py) never reaches it. Pixels without
    metric input take the decoded map."""
    change_band_px: int = 0
    """depthkit (inference and the ground-truth terms): > 0 lets the output differ from the metric input only within
    this many pixels (at the processing size) of a depth edge of the input, where its log depth varies by more than
    ``change_band_jump`` inside the window (:func:`depthkit.sharpen.gating.edge_band`); elsewhere the output is the
    input exactly. Depth edges are what SharpDepth sharpens, and a change far from them only adds the UNet's error
    (in min-max space an error of 1 % of an 80 m range is 0.8 m). 0 [paper and code]: every pixel may change."""
    change_band_jump: float = 0.2
    """Log-depth spread that makes a window an edge for ``change_band_px`` (0.2: a factor 1.22)."""
    keep_near_measured_px: float = 0.0
    """depthkit (inference and the ground-truth terms): > 0 scales the output's change at each pixel by
    min(1, distance to the nearest measured pixel / this many pixels, at the processing size), so depth pinned by a
    nearby measurement (dense LiDAR rows, thousands of points) is left as the input has it; not applied to a dense
    sensor's frame (``dense_measured_fraction``). Needs the sparse input; without measurements nothing changes.
    0 [paper and code]: off."""
    change_within_measured_px: float = 0.0
    """depthkit (inference and the ground-truth terms): > 0 lets the output differ from the metric input only where a
    measured pixel lies within this many pixels (at the processing size). Farther away the input is an extrapolation
    (the rows above a LiDAR's beams, the middle of a large hole) whose depth edges may be anywhere, and moving them
    measured worse than leaving them (the val-split grid in checkpoints/README.md). Needs the sparse input; an image
    without measurements is not limited. 0 [paper and code]: off."""
    change_within_measured_hull: bool = False
    """depthkit (inference and the ground-truth terms): True lets the output differ from the metric input only inside
    the convex hull of the measured pixels (at the processing size): where measurements lie on every side of a pixel
    the completion interpolates between them, outside it extrapolates beyond the outermost ones (the rows above a
    LiDAR's top beam, the margins beyond a frame's outermost points), and an edge there is a guess. Unlike
    ``change_within_measured_px`` it does not depend on how far apart the measurements are. Needs the sparse input;
    an image without measurements is not limited. Measured on the val split with the default's other switches: LiDAR
    DBE slightly worse than without it (checkpoints/README.md, session 14), so the default leaves it off. False
    [paper and code]: off."""
    dense_measured_fraction: float = 0.0
    """depthkit (inference and the ground-truth terms): > 0 treats a frame whose measured pixels are at least this
    fraction of its pixels with metric input (counted at the input size; in training, at the training size) as a
    dense sensor's (ToF, structured light, stereo) and does not apply ``keep_near_measured_px`` to it
    (``change_within_measured_px`` still applies). In such a frame the missing pixels are the sensor's holes and occlusion shadows, which are next to measured pixels
    yet are where the completion interpolates across a depth edge; the distance weight, meant for frames of scattered
    points, kept the sharpener's changes there small. In [0, 1]; 0 [paper and code]: off."""
    keep_scanline_frames: bool = False
    """depthkit (inference and the ground-truth terms): True leaves a frame whose measured pixels lie on scan lines
    (a scanning LiDAR projected into the image: :func:`depthkit.sharpen.limits.scanline_frames`) as its metric input.
    There the rows of measurements already pin the completion's depth edges every few pixels, and the embedded
    default's sharpener neither helps nor harms measurably (checkpoints/README.md, session 16): a user who would
    rather not risk a change there can switch this on. Needs the sparse input; a frame without measurements is not
    limited. False [paper and code]: off."""
    pass1_max_side: int = 0
    """depthkit (inference only): > 0 runs pass 1 (the Lotus, which sees only the image) at a longest side of at most
    this many pixels when the processing size is larger (with the top-left crop of the noise a full-size pass 1 would
    draw, so every later draw is unchanged), and resizes its prediction up to the processing size (the gate's
    noised-Lotus fill then encodes that upsampled prediction with the depth VAE); pass 2 still runs at the
    processing size. The UNet's self-attention grows with the square of its tokens, so on a large frame this saves
    most of pass 1's time. A processing size within it runs exactly as with 0. 0 [paper and code]: pass 1 at the
    processing size."""
    self_attention_max_keys: int = 0
    """depthkit (inference only): > 0 lets each spatial self-attention of the UNet read at most this many keys: on a
    larger token grid its keys and values are the grid average-pooled over p x p cells (p the smallest that fits),
    each pooled key's score raised by the log of the tokens it covers; queries stay one per token and
    cross-attention is unchanged (:mod:`depthkit.sharpen.attention`). Attention's cost is tokens x keys, and at
    480 px the embedded default's UNet spends most of its time there (10,800 tokens). A grid within the limit runs
    exactly as with 0. 0 [paper and code]: exact attention."""
    change_range_px: int = 0
    """depthkit (inference and the ground-truth terms): > 0 keeps the output at each pixel within the minimum and
    maximum of the metric input over the (2·this + 1)-pixel window around it (at the processing size, scaled up to
    the input size and rounded up; pixels without metric input neither count nor are clamped): sharpening moves a
    depth edge by giving its pixels one side's depth or the other's, and a value outside both is the UNet's error (an
    overshoot), which this clips. Applied before the band and distance weights. 0 [paper and code]: off."""
    lambda_gt: float = 0.0
    """depthkit (training only): weight of an L1 term against ground truth, for training data that has it
    (synthetic scenes). It scores the output as inference forms it (``output``: decoded, or residual) against GT,
    both in d's normalised space scaled to [0, 1] (:func:`depthkit.sharpen.losses.gt_loss`). 0 [paper and code]:
    label-free."""
    lambda_gt_grad: float = 0.0
    """depthkit (training only): weight of the L1 term between the output's and GT's neighbour differences (edges),
    same space; 0 [paper and code]."""
    zero_discrepancy_at_sparse: bool = True
    """depthkit: e = 0 at measured sparse pixels (and the output keeps the measured values there)."""
    sparse_latent_cells: bool = False
    """depthkit: also ê = 0 in every latent cell that contains a measured pixel. Off by default because one LiDAR
    return then switches sharpening off for its whole cell, while the measured pixels are restored after decoding
    either way. Measured (geometry only, :func:`depthkit.data.sparse.sample_lidar` on a KITTI-size 352x1216 frame,
    8x latent cells): a 64-beam LiDAR has a return in 66 % of the cells (9.9 % of the pixels), a 16-beam one with
    every 8th column in 20 % — switched on, this would keep the metric input unsharpened in most of the image's
    lower part. Its effect on DBE with a trained full-size model is not measured."""

    def __post_init__(self):
        self._check_types()
        for f in fields(self):  # a NaN passes every `< 0` check below and would switch a limit off unsaid
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"SharpDepthConfig.{f.name} must be a finite number; received {value!r}.")
        choices = {"discrepancy_norm": DISCREPANCY_NORMS, "discrepancy_downsample": DISCREPANCY_DOWNSAMPLES,
                   "gate_noise": ("noise", "noised_lotus"), "sds_timestep": ("fixed", "sampled"),
                   "ema_schedule": EMA_SCHEDULES, "recons_weight": RECONS_WEIGHTS,
                   "output": ("decoded", "residual"), "norm_range": ("processing", "input"),
                   "resize_back": ("bilinear", "antialias")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"SharpDepthConfig.{name} must be one of {allowed}; received {getattr(self, name)!r}.")
        if not 0.0 <= self.gate_prob <= 1.0:
            raise ValueError(f"gate_prob is a probability in [0, 1]; received {self.gate_prob}.")
        if not 0 <= self.sds_t_min <= self.sds_t_max:
            raise ValueError(f"need 0 <= sds_t_min <= sds_t_max; received {self.sds_t_min}, {self.sds_t_max}.")
        if not 0.0 <= self.ema_decay < 1.0 or self.ema_start < 0 or self.ema_every < 1:
            raise ValueError(f"EMA needs 0 <= ema_decay < 1, ema_start >= 0, ema_every >= 1; received "
                             f"{self.ema_decay}, {self.ema_start}, {self.ema_every}.")
        for name in ("keep_near_measured_px", "change_within_measured_px", "change_range_px", "pass1_max_side",
                     "self_attention_max_keys"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; received {getattr(self, name)}.")
        f = self.dense_measured_fraction
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"dense_measured_fraction is a fraction of the frame's pixels, a number in [0, 1] (0 = "
                             f"off); received {f!r}.")
        if self.change_band_px < 0 or not self.change_band_jump > 0:
            raise ValueError(f"change_band_px must be >= 0 and change_band_jump > 0; received {self.change_band_px}, "
                             f"{self.change_band_jump}.")
        if not 0.0 < self.fit_threshold <= 1.0:
            raise ValueError(f"fit_threshold must be in (0, 1]; received {self.fit_threshold}.")
        if min(self.lambda_sds, self.lambda_recons, self.lambda_gt, self.lambda_gt_grad) < 0:
            raise ValueError(f"loss weights must be >= 0; received lambda_sds={self.lambda_sds}, "
                             f"lambda_recons={self.lambda_recons}, lambda_gt={self.lambda_gt}, "
                             f"lambda_gt_grad={self.lambda_gt_grad}.")

    def _check_types(self) -> None:
        """Each field's value is of its annotated type (:func:`depthkit.checkpoints.field_type_problem`), so a
        wrong type names its field rather than failing in a comparison below."""
        import typing

        from depthkit.checkpoints import field_type_problem

        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            want = field_type_problem(hints[f.name], value)
            if want is not None:
                raise ValueError(f"SharpDepthConfig.{f.name} must be {want}; received {value!r}.")

    @property
    def uses_gt(self) -> bool:
        """Whether training needs ground truth (``lambda_gt`` or ``lambda_gt_grad`` > 0)."""
        return self.lambda_gt > 0 or self.lambda_gt_grad > 0

    @classmethod
    def from_dict(cls, data: dict | None) -> SharpDepthConfig:
        """Build from a dict, refusing unknown keys (a typo must not silently fall back to a default)."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SharpDepthConfig keys {unknown}; allowed: {sorted(known)}.")
        return cls(**data)
