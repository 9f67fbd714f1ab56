"""The ``sharpen/`` part of a depthkit checkpoint: writing a tiny random one, exporting, loading.

Layout (inside a checkpoint directory that has ``depthkit.json``)::

    sharpen/unet/ vae/ scheduler/                  the sharpener (a Lotus-G UNet) + VAE + DDPM schedule (diffusers)
    sharpen/lotus_unet/                            optional separate pass-1 Lotus UNet (else the sharpener runs twice)
    sharpen/empty_prompt_embeds.safetensors        the constant text conditioning (no text encoder at run time)
    sharpen/lotus.json, sharpen/sharpdepth.json    model settings and the SharpDepthConfig switches

The manifest's ``stages.sharpen`` holds the options the stage factory receives (``processing_resolution``...).
A bare Lotus-G directory (``lotus.json``, unmarked, without ``sharpdepth.json``) is also a valid ``sharpen/``: the sharpener
then starts as Lotus — what ``depthkit import-checkpoint --lotus`` writes and what training starts from.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PART", "write_tiny", "write_sharpen_checkpoint", "load_sharpdepth", "resolve_sharpen_dir"]

PART = "sharpen"


def write_tiny(directory, seed: int = 0) -> dict:
    """Write a random-weight tiny SharpDepth into ``directory`` (the ``<checkpoint>/sharpen`` folder) and return
    the stage's manifest options (``depthkit init-checkpoint --tiny`` calls this)."""
    from depthkit.sharpen.model import SharpDepth
    from depthkit.sharpen.tiny import build_tiny_lotus

    SharpDepth(build_tiny_lotus(seed=seed)).save_pretrained(directory)
    return {"processing_resolution": None}


def write_sharpen_checkpoint(root, sharpdepth, options: dict | None = None, **extra) -> Path:
    """Save ``sharpdepth`` (a :class:`~depthkit.sharpen.model.SharpDepth`) as ``<root>/sharpen`` and add the stage
    to ``<root>/depthkit.json``, keeping the stages an existing manifest already lists (e.g. ``complete``). The part
    is written beside and swapped in (:func:`depthkit.run_state.atomic_export`): a write that fails part way (a full
    disk, an interrupt) leaves an existing ``sharpen/`` as it was."""
    from depthkit.checkpoints import CheckpointError, load_manifest, write_manifest
    from depthkit.run_state import atomic_export

    root = Path(root)
    stages = {}
    if (root / "depthkit.json").is_file():
        try:
            stages = dict(load_manifest(root)["stages"])
        except CheckpointError:
            stages = {}  # an unreadable manifest is replaced, not merged
    atomic_export(root / PART, sharpdepth.save_pretrained)
    stages[PART] = dict(options or {})
    write_manifest(root, stages, **extra)
    return root


def resolve_sharpen_dir(path_or_hub_id) -> Path:
    """A local sharpen model folder from ``path_or_hub_id``: a depthkit checkpoint (→ its ``sharpen/``), a
    Lotus / SharpDepth folder (→ itself) or a hub id of one (→ its snapshot, via
    :func:`depthkit.sharpen.lotus.resolve_model_dir`)."""
    from depthkit.sharpen.lotus import resolve_model_dir

    p = resolve_model_dir(path_or_hub_id)
    if (p / "depthkit.json").is_file() and (p / PART).is_dir():
        return p / PART
    if (p / "depthkit.json").is_file() and not (p / "unet").is_dir():
        from depthkit.checkpoints import CheckpointError

        raise CheckpointError(f"checkpoint {p} has no {PART}/ part (found: {sorted(q.name for q in p.iterdir())}). "
                              "Add one with `depthkit import-checkpoint --sharpdepth DIR --out CKPT`, "
                              "`depthkit init-checkpoint --tiny CKPT` or `depthkit train recipes/sharpen/...`.")
    return p


def load_sharpdepth(path_or_hub_id, device: str = "cpu", dtype: str = "float32", config: dict | None = None):
    """Load a :class:`~depthkit.sharpen.model.SharpDepth` from a depthkit checkpoint, its ``sharpen/`` folder, a
    Lotus-G folder or a hub id (resolved once, by :func:`resolve_sharpen_dir`); ``config`` overrides stored
    :class:`~depthkit.sharpen.model.SharpDepthConfig` fields."""
    from depthkit.dtypes import torch_dtype
    from depthkit.sharpen.model import SharpDepth

    dtype = torch_dtype(dtype)  # a bad name fails before any download
    return SharpDepth.from_dir(resolve_sharpen_dir(path_or_hub_id), device=device, dtype=dtype, config=config)
