"""The stage settings a completer checkpoint carries, ``complete/complete.json``, as a typed dataclass.

:func:`depthkit.complete.checkpoint.save_complete` writes it, :func:`depthkit.complete.checkpoint.load_complete`
reads it (:meth:`CompleteSettings.read`, through :func:`depthkit.checkpoints.read_json`; sizes within
:data:`depthkit.checkpoints.BOUNDS`), and :class:`depthkit.complete.stage.CompleteVLMStage` runs the engine with
the prompt settings the model was trained with. Every key of the file is a field here: an unknown key is an error
naming the file (a typo must not fall back to a default silently).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from depthkit.checkpoints import BOUNDS, bounded, check_format_version, read_json
from depthkit.complete.prompts import (
    MASK_TEXTS,
    PIXEL_REFERENCES,
    PROMPT_PRIORS,
    PROMPT_VERSION,
    READOUTS,
    PromptConfig,
)

__all__ = ["COMPLETE_JSON", "COMPLETE_FORMAT", "FORMAT_VERSION", "WEIGHT_KINDS", "CompleteSettings"]

COMPLETE_JSON = "complete.json"
COMPLETE_FORMAT = "depthkit-complete"
FORMAT_VERSION = 1
WEIGHT_KINDS = ("full", "adapter")
"""How the base model is stored: ``full`` weights (LoRA merged in) or a LoRA ``adapter`` over a named base."""

_OPTIONAL = ("residual_head", "refiner", "trained_with", "base_model_source", "note")  # left out of the file when None


@dataclass
class CompleteSettings:
    """What ``complete.json`` holds (see the module docstring)."""

    prompt_prior: str = "none"
    """none | nearest | guided: whether the mask-0 prompt states a classical interpolated estimate."""
    pixel_reference: str = "text"
    """text (coordinates in the prompt) | rope (the query tokens take the pixel's M-RoPE position) | grid_token (the
    question only, its last token at the pixel's grid position; residual head and mask_text none only)."""
    readout: str = "text"
    """text (decode digits) | residual_head (bounded correction of the prior from the last hidden state)."""
    mask_text: str = "mask_and_value"
    """mask_and_value (the paper's prompt) | mask | none: the mask sentences the model was trained with."""
    prompt_version: str = PROMPT_VERSION
    """The prompt text version the model was trained with (checked against this depthkit's by :meth:`prompt_config`)."""
    min_pixels: int | None = None
    """Processor resize bounds (pixels, H*W) the model was trained with."""
    max_pixels: int | None = None
    weights: dict[str, Any] = field(default_factory=lambda: {"kind": "full"})
    """How the base model is stored: ``{"kind": "full", "lora_merged": bool}`` or ``{"kind": "adapter",
    "base_model": hub id or a path inside the checkpoint, "adapter": folder}``."""
    residual_head: dict[str, Any] | None = None
    """For ``readout: residual_head``: ``{"file": ..., "hidden_size": ..., "max_log_correction": ..., "mlp_ratio": ...,
    "prior_input": ...}`` (the head's weights file and constructor arguments; no ``prior_input`` = false)."""
    refiner: dict[str, Any] | None = None
    """Optional dense refiner run after the fill (:mod:`depthkit.complete.refiner`): ``{"file": ..., "width": ...,
    "max_log_correction": ...}``; absent = none."""
    trained_with: str | None = None
    """Free text: what produced the checkpoint (e.g. ``depthkit train (kind: complete)``)."""
    base_model_source: str | None = None
    """The base model the training started from (a hub id or path; informational)."""
    note: str | None = None
    """Free text for people."""
    format: str = COMPLETE_FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        for name, allowed in (("prompt_prior", PROMPT_PRIORS), ("pixel_reference", PIXEL_REFERENCES),
                              ("readout", READOUTS), ("mask_text", MASK_TEXTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}.")
        if self.format != COMPLETE_FORMAT:
            raise ValueError(f"format={self.format!r} is not a depthkit completer description (expected "
                             f"{COMPLETE_FORMAT!r}).")
        check_format_version(self.format_version, FORMAT_VERSION, "complete settings")
        if not isinstance(self.weights, dict) or self.weights.get("kind") not in WEIGHT_KINDS:
            raise ValueError(f"'weights' must say kind {' or '.join(map(repr, WEIGHT_KINDS))}; got {self.weights!r}.")
        if self.pixel_reference == "grid_token" and self.readout != "residual_head":
            raise ValueError(f"pixel_reference=grid_token needs readout=residual_head (there is no per-pixel text to "
                             f"decode an answer after); got readout={self.readout!r}.")
        if self.readout == "residual_head" and not isinstance(self.residual_head, dict):
            raise ValueError("readout=residual_head but no residual head is described (residual_head is missing).")
        for name in ("min_pixels", "max_pixels"):
            bounded(name, getattr(self, name), *BOUNDS["pixels"], "complete settings", optional=True)
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels={self.min_pixels} is larger than max_pixels={self.max_pixels}.")
        if self.refiner is not None and not isinstance(self.refiner, dict):
            raise ValueError(f"refiner must be an object (file, width, max_log_correction) or absent; got "
                             f"{self.refiner!r}.")
        for name in _OPTIONAL[2:]:
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be text; got {getattr(self, name)!r}.")

    def prompt_config(self) -> PromptConfig:
        """The :class:`~depthkit.complete.prompts.PromptConfig` of these settings (raises if ``prompt_version`` is
        not this depthkit's)."""
        return PromptConfig(self.prompt_prior, self.pixel_reference, self.prompt_version, mask_text=self.mask_text)

    def to_json_dict(self) -> dict:
        """The file's content (optional fields that are None are left out)."""
        return {k: v for k, v in asdict(self).items() if not (k in _OPTIONAL and v is None)}

    @classmethod
    def from_dict(cls, data: dict, source: str = COMPLETE_JSON) -> CompleteSettings:
        """Settings from a mapping; ``source`` (the file) is named in the error for unknown keys or bad values."""
        if not isinstance(data, dict):
            raise ValueError(f"{source} must hold a JSON object; got {type(data).__name__}.")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; allowed: {', '.join(known)}.")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc

    @classmethod
    def read(cls, path: str | Path) -> CompleteSettings:
        """Read ``complete.json`` at ``path`` (``ValueError`` naming the file if it is not valid JSON)."""
        path = Path(path)
        return cls.from_dict(read_json(path, "completer settings"), source=str(path))

    def write(self, path: str | Path) -> Path:
        """Write the settings as ``complete.json`` at ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n")
        return path
