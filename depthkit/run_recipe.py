"""The recipe a training run was made with: recorded in ``<run>/recipe.yaml`` when the run starts, and held to on
``--resume``.

A resumed run restores its model, optimizer and schedule from the checkpoint, so a recipe that changed in between
would either fail deep inside ``load_state_dict`` (another model size) or be silently ignored while ``recipe.yaml``
claimed it (a new learning rate: the optimizer's saved one wins). :func:`check_resumed_recipe` refuses such a
resume before anything is loaded or written, naming each key that differs; only the keys in
:data:`RESUME_MAY_CHANGE` (bookkeeping, and the number of steps, which :func:`depthkit.run_state.load_latest_state`
checks against the checkpoint) may differ. :func:`load_resumed_weights` turns a checkpoint that does not fit the
model (a run folder without ``recipe.yaml``) into the same kind of error.
"""
from __future__ import annotations

import os
from pathlib import Path

RECIPE_FILE = "recipe.yaml"
RESUME_MAY_CHANGE = ("output.output_dir", "train.max_steps", "train.epochs", "train.log_every", "train.eval_every",
                     "train.save_every", "train.keep_last", "train.num_workers")
"""Recipe keys a resumed run may change (dotted paths)."""


def record_recipe(run: str | Path, recipe) -> Path:
    """Write ``recipe`` (resolved) as ``<run>/recipe.yaml`` atomically (every process of a distributed run may call
    this: each writes its own temporary file and renames it over the same content)."""
    from depthkit.config import recipe_to_yaml

    path = Path(run) / RECIPE_FILE
    tmp = path.with_name(f".{RECIPE_FILE}.tmp-{os.getpid()}")
    tmp.write_text(recipe_to_yaml(recipe))
    os.replace(tmp, path)
    return path


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def recipe_differences(old: dict, new: dict, ignore: tuple[str, ...] = RESUME_MAY_CHANGE) -> list[tuple[str, object,
                                                                                                       object]]:
    """``(key, old value, new value)`` for each dotted key whose value differs between two recipe trees (a key
    only one side has counts, with ``None`` on the other), except the keys in ``ignore``; sorted by key. Lists are
    compared whole."""
    a, b = _flat(old), _flat(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)]


def check_resumed_recipe(run: str | Path, recipe) -> None:
    """Refuse (``ValueError``) to resume the run in ``run`` with a ``recipe`` that differs from its ``recipe.yaml``
    beyond :data:`RESUME_MAY_CHANGE`; the message lists up to 8 differences (key: then → now). Nothing to compare
    (no ``recipe.yaml``) passes."""
    from omegaconf import OmegaConf

    from depthkit.config import recipe_to_yaml

    path = Path(run) / RECIPE_FILE
    if not path.is_file():
        return
    try:
        old = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as exc:
        raise ValueError(f"{path} (the recipe this run was trained with) cannot be read ({exc}); restore it, or "
                         "delete it to resume without the check.") from exc
    new = OmegaConf.to_container(OmegaConf.create(recipe_to_yaml(recipe)))
    diffs = recipe_differences(old if isinstance(old, dict) else {}, new)
    if diffs:
        shown = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, a, b in diffs[:8])
        more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
        raise ValueError(f"--resume: this recipe differs from the one the run in {run} was trained with ({path}): "
                         f"{shown}{more}. A resumed run keeps its model, optimizer and schedule, so these would not "
                         "take effect (or would not fit). Resume with that recipe (only "
                         f"{', '.join(RESUME_MAY_CHANGE)} may change), or start a new run in another "
                         "output.output_dir.")


def load_resumed_weights(module, weights: dict, where: str, strict: bool = True):
    """``module.load_state_dict(weights, strict)``, with a checkpoint that does not fit the module (other sizes,
    missing or extra names) refused as a ``ValueError`` that names ``where`` and the first mismatches, instead of
    torch's many-line ``RuntimeError``."""
    try:
        return module.load_state_dict(weights, strict=strict)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise ValueError(f"{where} does not fit this recipe's model ({'; '.join(lines[:3])}"
                         f"{f'; and {len(lines) - 3} more' if len(lines) > 3 else ''}); resume with the recipe it was "
                         "trained with, or start a new run in another output.output_dir.") from exc
