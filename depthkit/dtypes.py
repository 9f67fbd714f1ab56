"""The one table of floating-point dtype names depthkit accepts, and their torch dtypes.

Recipes, checkpoints, the CLI and every ``from_pretrained`` take a dtype by name: ``float32`` (CPU default),
``bfloat16`` or ``float16`` (CUDA), with the short aliases ``fp32``/``bf16``/``fp16``. torch is imported only when
:func:`torch_dtype` is called, so the name checks stay cheap for the CLI and recipe validation.
"""

from __future__ import annotations

DTYPE_NAMES = ("float32", "bfloat16", "float16")
"""Canonical names, in the order help texts list them."""

ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def canonical_dtype_name(name) -> str:
    """``"bf16"`` → ``"bfloat16"``; raise ``ValueError`` naming the allowed names for anything else."""
    text = ALIASES.get(str(name), str(name))
    if text not in DTYPE_NAMES:
        raise ValueError(f"dtype {name!r} is not supported; allowed: {', '.join(DTYPE_NAMES)} "
                         f"(or {', '.join(ALIASES)}).")
    return text


def torch_dtype(dtype):
    """A dtype name (see :data:`DTYPE_NAMES`), an alias, or a ``torch.dtype`` → ``torch.dtype``. None stays None."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, canonical_dtype_name(dtype))
