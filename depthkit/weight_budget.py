"""A checkpoint's model config checked against its weight files before the model is built.

transformers and diffusers build a model from its ``config.json`` and only then fill it from the weight files, so a
config whose sizes were changed (a vocabulary of 4 million, ten thousand layers) allocates every parameter it asks
for before the loading report can say that the weights do not fit (a 600-byte edit then costs gigabytes, or the
process). :func:`check_config_fits_weights` builds the model on PyTorch's ``meta`` device (shapes only, no memory),
counts its parameters and compares them with the values the safetensors files hold, read from their headers.

A model that fits its weights never has more parameters than the files hold values: each parameter must match a
stored tensor of its shape (the loading report refuses a missing or mismatched one), and tied parameters count once.
So the check refuses only configs the loading report would refuse too. It refuses those asking for more than
:data:`SLACK` times the stored values; a smaller excess (a missing key, a layer too few) is left to the loading
report, which names the keys, at a cost in memory no larger than the files' own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from depthkit.checkpoint_errors import CheckpointError

__all__ = ["SLACK", "weight_files", "stored_values", "check_config_fits_weights"]

SLACK = 2.0
"""A config may ask for up to this many times the values its weight files hold before it is refused unbuilt."""


def weight_files(folder, stem: str) -> list[Path]:
    """The safetensors files ``from_pretrained`` reads in ``folder`` for weights named ``stem`` (``model`` for
    transformers, ``diffusion_pytorch_model`` for diffusers): the shards its ``<stem>.safetensors.index.json`` maps,
    else ``<stem>.safetensors``; empty when neither is there (the loader then names what is missing)."""
    from depthkit.checkpoints import read_json, safe_join

    folder = Path(folder)
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        weight_map = (read_json(index, "weight index") or {}).get("weight_map")
        if not isinstance(weight_map, dict):
            return []
        return [safe_join(folder, name) for name in sorted({str(v) for v in weight_map.values()})]
    single = folder / f"{stem}.safetensors"
    return [single] if single.is_file() else []


def stored_values(files) -> int | None:
    """How many values the safetensors ``files`` hold (from their headers: nothing is loaded); None when a file
    cannot be read (the loader reports it by name)."""
    from safetensors import safe_open

    total = 0
    try:
        for path in files:
            with safe_open(str(path), "pt") as f:
                total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    except Exception:  # noqa: BLE001 - corrupt, truncated, not UTF-8: the loader's own message names it
        return None
    return total


def check_config_fits_weights(folder, stem: str, build: Callable, what: str) -> None:
    """Refuse (:class:`CheckpointError`) a model whose config asks for more than :data:`SLACK` times as many
    parameters as ``folder``'s weight files (:func:`weight_files` of ``stem``) hold values. ``build()`` makes the model from the folder's config; it runs on
    the ``meta`` device. Nothing is refused when the config or the files cannot be read: the loader reports those."""
    import torch

    files = weight_files(folder, stem)
    stored = stored_values(files) if files else None
    if stored is None:
        return
    try:
        with torch.device("meta"):
            model = build()
    except Exception:  # noqa: BLE001 - a config the library refuses: its loader says why, naming the file
        return
    wanted = sum(p.numel() for p in model.parameters())
    if wanted > SLACK * stored:
        names = ", ".join(p.name for p in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise CheckpointError(
            f"{Path(folder) / 'config.json'} describes {what} of {wanted:,} parameters, but its weights ({names}) "
            f"hold only {stored:,} values: the config does not fit the weights (a layer count, width or vocabulary "
            "changed?). Refused before the model is built, which would allocate memory for every parameter it asks "
            "for. Restore the config.json that came with these weights, or re-export the checkpoint."
        )
