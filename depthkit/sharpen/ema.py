"""Exponential moving average of a module's parameters: SharpDepth's pass-1 model during training.

The schedule's settings are :class:`~depthkit.sharpen.model.SharpDepthConfig`'s ``ema_*`` fields
(:meth:`EMA.from_config`); the trainer (:mod:`depthkit.sharpen.train`) owns the updates (one call per optimiser
step, as the public code calls ema-pytorch's ``update()`` once per synchronised step).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA", "EMA_SCHEDULES"]

EMA_SCHEDULES = ("ema_pytorch", "no_init_copy", "every_call_copy")
"""When :class:`EMA` copies and when it averages; see :meth:`EMA.action`."""


class EMA:
    """Exponential moving average of a module's parameters (SharpDepth's pass-1 model during training).

    Calls are numbered k = 0, 1, 2, ... :meth:`action` says what call k does ("copy", "average" or nothing) and
    :meth:`decay_at` the decay of an averaging call: ``ema = d · ema + (1 − d) · param`` with d = ``decay`` or, with
    ``warmup_power`` p, d = min(decay, 1 − (1 + k − start)^(−p)) — the warm-up of ema-pytorch (inv_gamma 1),
    counted in calls. Buffers are copied whenever parameters change. The average lives in ``self.model``, a frozen
    deep copy.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, start: int = 100, every: int = 10,
                 warmup_power: float | None = 2.0 / 3.0, schedule: str = "ema_pytorch"):
        if not 0.0 <= decay < 1.0 or start < 0 or every < 1:
            raise ValueError(f"EMA needs 0 <= decay < 1, start >= 0, every >= 1; received {decay}, {start}, {every}.")
        if schedule not in EMA_SCHEDULES:
            raise ValueError(f"EMA schedule must be one of {EMA_SCHEDULES}; received {schedule!r}.")
        if warmup_power is not None and warmup_power <= 0:
            raise ValueError(f"EMA warmup_power must be > 0 or None; received {warmup_power!r}.")
        self.decay, self.start, self.every, self.warmup_power = float(decay), int(start), int(every), warmup_power
        self.schedule = schedule
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.step = 0
        self.num_averaged = 0

    @classmethod
    def from_config(cls, model: nn.Module, config) -> EMA:
        """The EMA of ``model`` with the ``ema_*`` fields of ``config`` (a
        :class:`~depthkit.sharpen.model.SharpDepthConfig`)."""
        return cls(model, config.ema_decay, config.ema_start, config.ema_every, config.ema_warmup_power,
                   config.ema_schedule)

    def action(self, k: int) -> str | None:
        """What call ``k`` does. "ema_pytorch" [code]: call 0 copies; otherwise only calls with k % every == 0 act,
        copying while k <= start and averaging after, except the first call after start, which copies too (the
        library copies the model in before its first average, its ``initted`` flag, so that call returns the model).
        "no_init_copy": as "ema_pytorch" without that copy, its first average blending the last copy in (depthkit
        before session 39, which trained the embedded default's sharpener). "every_call_copy": every call k < start
        copies; from start on, calls with (k − start) % every == 0 average."""
        if self.schedule in ("ema_pytorch", "no_init_copy"):
            if k == 0:
                return "copy"
            if k % self.every:
                return None
            first_average = self.start < k <= self.start + self.every
            return "copy" if k <= self.start or (first_average and self.schedule == "ema_pytorch") else "average"
        if k < self.start:
            return "copy"
        return "average" if (k - self.start) % self.every == 0 else None

    def decay_at(self, k: int) -> float:
        """Decay of an averaging call ``k``: ``min(decay, 1 − (1 + k − start)^(−warmup_power))`` (0 when
        k <= start), or ``decay`` without a warm-up."""
        if self.warmup_power is None:
            return self.decay
        epoch = k - self.start
        if epoch <= 0:
            return 0.0
        return min(self.decay, 1.0 - (1.0 + epoch) ** (-float(self.warmup_power)))

    def current_decay(self) -> float:
        """The decay the next call would use if it averages."""
        return self.decay_at(self.step)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        k = self.step
        self.step += 1
        act = self.action(k)
        if act is None:
            return
        src = dict(model.named_parameters())
        if act == "copy":
            for name, p in self.model.named_parameters():
                p.copy_(src[name])
        else:
            d = self.decay_at(k)
            for name, p in self.model.named_parameters():
                p.lerp_(src[name].to(p.dtype), 1.0 - d)
            self.num_averaged += 1
        bufs = dict(model.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(bufs[name])

    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged parameters into ``model`` (e.g. to save the EMA as the release)."""
        model.load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict:
        return {"step": self.step, "num_averaged": self.num_averaged, "decay": self.decay, "start": self.start,
                "every": self.every, "warmup_power": self.warmup_power, "schedule": self.schedule,
                "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.num_averaged = int(state["step"]), int(state["num_averaged"])
        self.decay, self.start, self.every = float(state["decay"]), int(state["start"]), int(state["every"])
        self.warmup_power = state["warmup_power"]
        self.schedule = state.get("schedule", "every_call_copy")  # states written before the switch existed
        self.model.load_state_dict(state["model"])

    def to(self, *args, **kwargs) -> EMA:
        self.model.to(*args, **kwargs)
        return self
