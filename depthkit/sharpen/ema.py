"""Exponential moving average of a module's parameters: SharpDepth's pass-1 model during training.

The schedule's settings are :class:`~depthkit.sharpen.model.SharpDepthConfig`'s ``ema_*`` fields
(:meth:`EMA.from_config`); the trainer (:mod:`depthkit.sharpen.train`) owns the updates.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of a module's parameters (SharpDepth's pass-1 model during training).

    Calls are numbered k = 0, 1, 2, ... For k < ``start`` the EMA copies the parameters; from k = ``start`` on,
    every ``every``-th call (k − start ≡ 0 mod every) applies ``ema = d · ema + (1 − d) · param`` with
    d = ``decay`` (or, with ``warmup_power`` p, d = min(decay, 1 − (1 + n)^(−p)) for the n-th such update,
    n = 0, 1, ...). Buffers are copied. The average lives in ``self.model``, a frozen deep copy.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, start: int = 100, every: int = 10,
                 warmup_power: float | None = None):
        if not 0.0 <= decay < 1.0 or start < 0 or every < 1:
            raise ValueError(f"EMA needs 0 <= decay < 1, start >= 0, every >= 1; received {decay}, {start}, {every}.")
        self.decay, self.start, self.every, self.warmup_power = float(decay), int(start), int(every), warmup_power
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.step = 0
        self.num_averaged = 0

    @classmethod
    def from_config(cls, model: nn.Module, config) -> EMA:
        """The EMA of ``model`` with the ``ema_*`` fields of ``config`` (a
        :class:`~depthkit.sharpen.model.SharpDepthConfig`)."""
        return cls(model, config.ema_decay, config.ema_start, config.ema_every, config.ema_warmup_power)

    def current_decay(self) -> float:
        if self.warmup_power is None:
            return self.decay
        return min(self.decay, 1.0 - (1.0 + self.num_averaged) ** (-float(self.warmup_power)))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        k = self.step
        self.step += 1
        src = dict(model.named_parameters())
        if k < self.start:
            for name, p in self.model.named_parameters():
                p.copy_(src[name])
        elif (k - self.start) % self.every == 0:
            d = self.current_decay()
            for name, p in self.model.named_parameters():
                p.lerp_(src[name].to(p.dtype), 1.0 - d)
            self.num_averaged += 1
        else:
            return
        bufs = dict(model.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(bufs[name])

    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged parameters into ``model`` (e.g. to save the EMA as the release)."""
        model.load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict:
        return {"step": self.step, "num_averaged": self.num_averaged, "decay": self.decay, "start": self.start,
                "every": self.every, "warmup_power": self.warmup_power, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.num_averaged = int(state["step"]), int(state["num_averaged"])
        self.decay, self.start, self.every = float(state["decay"]), int(state["start"]), int(state["every"])
        self.warmup_power = state["warmup_power"]
        self.model.load_state_dict(state["model"])

    def to(self, *args, **kwargs) -> EMA:
        self.model.to(*args, **kwargs)
        return self
