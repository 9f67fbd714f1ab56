"""Dense refiner: a small CNN that corrects the completer's dense map at every pixel (a depthkit variant).

The SDIM completer answers at a grid of query pixels and spreads its corrections with the edge-aware fill
(:mod:`depthkit.complete.query_plan`); between the queries it follows the classical interpolation. The refiner is
the per-pixel step after that: it reads, at full resolution,

    x = [RGB in [0, 1] (3), log(completed) - m (1), measured mask (1), (log(sparse) - m) at measured pixels (1)]
    m = median of log(completed)                                     (6 x H x W, scale-free: a 1 m and a 50 m
                                                                      scene look alike)

and predicts a bounded log-space correction ``r = max_log_correction * tanh(net(x))``; the output is
``completed * exp(r)`` with every measured pixel restored bit for bit. The network has two scales: two 3x3 convs at
full resolution (edges), four at 1/4 resolution with dilations 1, 1, 2, 4 (context of ~60 px), upsampled and joined
with the full-resolution features by two more convs (~67 k parameters at width 32). Its last conv starts at zero, so
an untrained refiner returns its input exactly.

Trained with dense synthetic GT (``depthkit train recipes/default/refine.yaml``, :mod:`depthkit.complete.train_refiner`):
L1 of ``log(completed) + r - log(gt)`` over valid GT pixels. Why it exists: measured in ``checkpoints/README.md``,
the tiny completer's query answers stay within ~0.4 % of the classical map, while a per-pixel correction learned
from dense GT beats it by ~8 % on random-500 points; the refiner brings that to every pixel of the completer's
output. Its files, in a ``complete/`` checkpoint folder: ``refiner.safetensors`` (weights) and the ``refiner``
entry of ``complete.json`` (:meth:`DenseRefiner.config`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["DenseRefiner", "refiner_features", "refiner_log_l1", "REFINER_FILE", "IN_CHANNELS"]

REFINER_FILE = "refiner.safetensors"
IN_CHANNELS = 6
"""RGB, log(completed) - median, measured mask, log(sparse) - median (module docstring)."""


def refiner_features(image: np.ndarray, sparse: np.ndarray, completed: np.ndarray) -> np.ndarray:
    """The refiner's input, ``6 x H x W`` float32 (module docstring).

    Args:
        image: H x W x 3 uint8 RGB.
        sparse: H x W metres, 0 (or NaN / negative) = missing.
        completed: H x W metres > 0, the dense map to refine.
    """
    image, sparse, completed = np.asarray(image), np.asarray(sparse), np.asarray(completed)
    if image.ndim != 3 or image.shape[2] != 3 or sparse.shape != image.shape[:2] or completed.shape != sparse.shape:
        raise ValueError(f"refiner input must be an HxWx3 image with HxW sparse and completed maps; got image "
                         f"{image.shape}, sparse {sparse.shape}, completed {completed.shape}.")
    log_c = np.log(np.maximum(np.nan_to_num(completed, nan=1e-3), 1e-3))
    ref = float(np.median(log_c))
    measured = np.isfinite(sparse) & (sparse > 0)
    log_s = np.where(measured, np.log(np.maximum(np.where(measured, sparse, 1.0), 1e-3)) - ref, 0.0)
    rgb = image.astype(np.float32).transpose(2, 0, 1) / 255.0
    return np.concatenate([rgb, (log_c - ref)[None], measured[None], log_s[None]]).astype(np.float32)


class DenseRefiner(nn.Module):
    """Two-scale CNN → bounded log correction of a dense depth map (module docstring).

    Args:
        width: channels of every hidden layer (32 in the default checkpoint: ~67 k parameters).
        max_log_correction: bound of ``|r|`` (> 0); the output stays within a factor ``e**max`` of the input.
    """

    def __init__(self, width: int = 32, max_log_correction: float = 1.0):
        super().__init__()
        if int(width) < 1:
            raise ValueError(f"refiner width={width} must be >= 1 (32 in the default checkpoint).")
        if not (max_log_correction > 0 and math.isfinite(max_log_correction)):
            raise ValueError(f"refiner max_log_correction={max_log_correction} must be a positive finite number.")
        self.width, self.max_log_correction = int(width), float(max_log_correction)
        w = self.width

        def conv(cin, cout, stride=1, dilation=1):
            return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation)

        self.full = nn.Sequential(conv(IN_CHANNELS, w), nn.GELU(), conv(w, w), nn.GELU())
        self.coarse = nn.Sequential(conv(w, w, stride=2), nn.GELU(), conv(w, w, stride=2), nn.GELU(),
                                    conv(w, w, dilation=2), nn.GELU(), conv(w, w, dilation=4), nn.GELU())
        self.head = nn.Sequential(conv(2 * w, w), nn.GELU(), conv(w, 1))
        nn.init.zeros_(self.head[-1].weight)  # an untrained refiner returns its input exactly
        nn.init.zeros_(self.head[-1].bias)

    def config(self) -> dict:
        """Constructor arguments (the ``refiner`` entry of ``complete.json``)."""
        return {"width": self.width, "max_log_correction": self.max_log_correction}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 6 x H x W features (:func:`refiner_features`) → B x 1 x H x W log corrections in [-max, max]."""
        if x.dim() != 4 or x.shape[1] != IN_CHANNELS:
            raise ValueError(f"refiner input must be B x {IN_CHANNELS} x H x W; got {tuple(x.shape)}.")
        f = self.full(x)
        c = nn.functional.interpolate(self.coarse(f), size=f.shape[-2:], mode="bilinear", align_corners=False)
        return self.max_log_correction * torch.tanh(self.head(torch.cat([f, c], 1)))

    @torch.no_grad()
    def log_correction(self, image: np.ndarray, sparse: np.ndarray, completed: np.ndarray) -> np.ndarray:
        """H x W float32: the log correction ``r`` the refiner predicts for ``completed`` (its inputs as in
        :func:`refiner_features`); :meth:`refine` applies it."""
        p = next(self.parameters())
        x = torch.from_numpy(refiner_features(image, sparse, completed))[None].to(p.device, p.dtype)
        return self(x)[0, 0].float().cpu().numpy()

    def refine(self, image: np.ndarray, sparse: np.ndarray, completed: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """H x W float32 metres: ``completed * exp(strength * r)``, measured pixels of ``sparse`` copied exactly.

        ``strength`` in [0, 1] scales the log correction (1: as trained; 0: ``completed`` itself; the stage sets it
        per frame with :func:`depthkit.complete.refiner_check.check_refiner`)."""
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"refiner strength={strength!r} must be in [0, 1] (1: as trained, 0: no correction).")
        r = self.log_correction(image, sparse, completed)
        out = (np.asarray(completed, dtype=np.float64) * np.exp(float(strength) * r)).astype(np.float32)
        measured = np.isfinite(sparse) & (sparse > 0)
        return np.where(measured, sparse, out).astype(np.float32)

    def save(self, directory) -> dict:
        """Write ``<directory>/refiner.safetensors``; returns the ``complete.json`` entry (file + config)."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(Path(directory) / REFINER_FILE))
        return {"file": REFINER_FILE, **self.config()}

    @classmethod
    def load(cls, directory, info: dict) -> DenseRefiner:
        """The refiner described by ``info`` (a ``complete.json`` entry) with its weights from ``directory``."""
        from safetensors.torch import load_file

        path = Path(directory) / str(info.get("file", REFINER_FILE))
        if not path.is_file():
            raise ValueError(f"{Path(directory)}: complete.json names a refiner but {path.name} is missing; "
                             "restore the file or remove the 'refiner' entry.")
        net = cls(int(info.get("width", 32)), float(info.get("max_log_correction", 1.0)))
        missing, unexpected = net.load_state_dict(load_file(str(path)), strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: refiner weights do not match width={net.width} (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}); the file and complete.json disagree.")
        return net.eval()


def refiner_log_l1(r: torch.Tensor, completed: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid pixels of ``|log(completed) + r - log(gt)|`` (all B x 1 x H x W; metres > 0 where valid)."""
    target = torch.log(gt.clamp_min(1e-3)) - torch.log(completed.clamp_min(1e-3))
    v = valid.float()
    return ((r - target).abs() * v).sum() / v.sum().clamp_min(1.0)
