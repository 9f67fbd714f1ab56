"""Recipes: OmegaConf structured dataclasses are the schema, YAML files sit on top, ``key=value`` overrides last.

Every recipe YAML names its ``kind`` (``complete``, ``sharpen``, ``lotus`` or ``refine``); :data:`RECIPE_SCHEMAS` is the one
table from a kind to its schema dataclass, which lives in the stage's own ``recipe`` module and is imported only
when a recipe of that kind is loaded. Typos (unknown keys) and wrong types are errors that name the key and the
file, rather than silently falling back to defaults. The shipped recipes are listed by ``depthkit ls``.

Common sections shared by every recipe live here: :class:`TrainConfig` (optimisation, schedule, precision,
checkpointing) and :class:`OutputConfig`.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECIPE_SCHEMAS = {"complete": ("depthkit.complete.recipe", "CompleteRecipe"),
                  "sharpen": ("depthkit.sharpen.recipe", "SharpenRecipe"),
                  "lotus": ("depthkit.sharpen.recipe", "LotusRecipe"),
                  "refine": ("depthkit.complete.train_refiner", "RefineRecipe")}
"""Recipe kind → (module, class) of its schema dataclass."""
MIXED_PRECISION = ("no", "bf16")
"""fp16 is refused (:class:`TrainConfig`): accelerate trains it with a loss scaler whose state depthkit's resumable
checkpoints do not hold (a resumed run would scale and skip steps differently), and Stable Diffusion's VAE overflows
in float16."""
SCHEDULES = ("cosine", "constant", "linear")


class RecipeError(ValueError):
    """A recipe cannot be loaded: unknown key, wrong type, bad value or missing file."""


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping shared by every training recipe."""

    max_steps: int = 1000
    """Optimizer steps to run (after gradient accumulation). 0 = derive from ``epochs``."""
    epochs: float = 0.0
    """If > 0 and ``max_steps`` is 0: steps = epochs x dataset size / (batch_size x grad_accum x processes)."""
    batch_size: int = 1
    """Images per process per micro-step."""
    grad_accum: int = 1
    """Micro-steps per optimizer step."""
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"
    """Learning-rate schedule after warmup: cosine | constant | linear (to 0 at max_steps)."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    mixed_precision: str = "no"
    """no | bf16 (accelerate's setting; bf16 autocast on CUDA, float32 on a CPU). fp16 is refused (see
    :data:`MIXED_PRECISION`)."""
    gradient_checkpointing: bool = False
    seed: int = 0
    """>= 0: seeds the initial weights, the data order and every random draw of the trainer (numpy seeds are
    non-negative). Not the sparse points the training readers draw for each scene or image: those follow the reader
    (its ``sparse_seed`` option where it has one) and the epoch, so runs of different seeds see the same inputs."""
    num_workers: int = 0
    """DataLoader worker processes."""
    log_every: int = 10
    eval_every: int = 100
    """Validate every N steps (0 = only at the end)."""
    save_every: int = 100
    """Write a resumable checkpoint every N steps (0 = only at the end)."""
    keep_last: int = 2
    """Resumable checkpoints to keep under ``output_dir/checkpoints``."""

    def __post_init__(self):
        if self.mixed_precision == "False":  # YAML reads an unquoted `no` (train.mixed_precision=no) as false
            self.mixed_precision = "no"
        if self.mixed_precision == "fp16":
            raise RecipeError("train.mixed_precision='fp16' is not supported: its loss scaler's state is not part of "
                              "depthkit's resumable checkpoints (a resumed run would differ) and Stable Diffusion's VAE "
                              "overflows in float16. Use bf16 (CUDA GPUs from Ampere on) or no.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise RecipeError(f"train.mixed_precision={self.mixed_precision!r}; allowed: {', '.join(MIXED_PRECISION)}")
        if self.schedule not in SCHEDULES:
            raise RecipeError(f"train.schedule={self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise RecipeError(f"train.{name} must be >= 1; received {getattr(self, name)}")
        if self.max_steps < 0 or (self.max_steps == 0 and self.epochs <= 0):
            raise RecipeError("set train.max_steps > 0, or train.max_steps=0 with train.epochs > 0")
        for name, low in (("lr", 0), ("weight_decay", 0), ("max_grad_norm", 0), ("epochs", 0), ("warmup_steps", 0),
                          ("seed", 0), ("num_workers", 0), ("eval_every", 0), ("save_every", 0), ("log_every", 1),
                          ("keep_last", 1)):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= low):
                raise RecipeError(f"train.{name} must be a finite number >= {low}; received {value}"
                                  + (" (0 = off)" if low == 0 and name in ("max_grad_norm", "eval_every",
                                                                           "save_every") else ""))
        import warnings

        from depthkit.io import DepthkitWarning

        if self.lr == 0:  # a check (the export is the starting model), never a training run by mistake
            warnings.warn("train.lr=0: no weight will change; the exported model is the one the run starts from.",
                          DepthkitWarning, stacklevel=2)
        if self.max_steps > 0 and self.epochs > 0:  # e.g. train.max_steps=100 over a recipe that trains by epochs
            warnings.warn(f"train.epochs={self.epochs:g} is not used: train.max_steps={self.max_steps} sets the run's "
                          "length (set train.max_steps=0 to train by epochs).", DepthkitWarning, stacklevel=2)


@dataclass
class OutputConfig:
    output_dir: str = "runs/experiment"
    """Run folder: resumable checkpoints, logs, and the final exported checkpoint (``final/``)."""


def recipe_schema(kind: str, schemas: dict[str, type] | None = None) -> type:
    """The schema dataclass of recipe ``kind`` (from ``schemas`` when given, else :data:`RECIPE_SCHEMAS`)."""
    if schemas is not None and kind in schemas:
        return schemas[kind]
    if kind not in RECIPE_SCHEMAS:
        raise RecipeError(f"unknown recipe kind {kind!r}; allowed: {', '.join(sorted(RECIPE_SCHEMAS))}")
    module, name = RECIPE_SCHEMAS[kind]
    return getattr(importlib.import_module(module), name)


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
                schemas: dict[str, type] | None = None) -> Any:
    """Load a recipe (YAML path or dict), validate it against its schema and apply ``key=value`` overrides (values
    read as YAML 1.2: :func:`yaml_1_2_override`). A recipe file is read as YAML 1.2 too
    (:func:`depthkit.yaml_values.yaml_loader`; a key given twice is an error).

    Returns the typed recipe object (an instance of the kind's schema dataclass, ``__post_init__`` checks run).
    ``schemas`` adds kinds beyond :data:`RECIPE_SCHEMAS` (kind → dataclass), e.g. for a custom trainer.
    """
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from depthkit.yaml_values import yaml_loader

    where = str(source) if not isinstance(source, dict) else "<dict>"
    if isinstance(source, dict):
        raw = OmegaConf.create(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}. Shipped recipes are under recipes/ (depthkit ls).")
        try:  # YAML 1.2 numbers, as the overrides (OmegaConf.load reads 1.1: 0100 is 64, 1:30 is 90)
            with open(path, encoding="utf-8") as fh:
                data = yaml.load(fh, Loader=yaml_loader())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RecipeError(f"recipe {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
        if not isinstance(data, (dict, type(None))):
            raise RecipeError(f"recipe {where} holds a {type(data).__name__} at its top level; expected a mapping "
                              f"that starts with 'kind: <{' | '.join(sorted(RECIPE_SCHEMAS))}>' (see the shipped "
                              "recipes: depthkit ls).")
        raw = OmegaConf.create(data or {})
    kind = raw.get("kind")
    if kind is None:
        launch = (" It looks like an accelerate launch config (compute_environment): give it to `accelerate launch "
                  "--config_file` with `-m depthkit.cli train RECIPE`." if "compute_environment" in raw else "")
        raise RecipeError(f"recipe {where} has no 'kind' key; expected one of {', '.join(sorted(RECIPE_SCHEMAS))}."
                          + launch)
    schema = OmegaConf.structured(recipe_schema(str(kind), schemas))
    dotlist = [yaml_1_2_override(item) for item in overrides]
    try:
        merged = OmegaConf.merge(schema, raw, OmegaConf.from_dotlist(dotlist))
        return OmegaConf.to_object(merged)
    except RecipeError as exc:
        raise RecipeError(f"recipe {where}: {exc}") from exc
    except TypeError as exc:  # OmegaConf: a dotted override into a list (data.sources.0.x=...) cannot merge
        lists = [item.split("=", 1)[0] for item in overrides if any(part.isdigit() for part in
                                                                    item.split("=", 1)[0].split("."))]
        raise RecipeError(f"recipe {where}: an override could not be applied ({exc})"
                          + (f"; {', '.join(lists)} addresses an item of a list, which overrides cannot do: give the "
                             "whole list (e.g. data.sources=[...] in YAML flow style) or edit a copy of the recipe"
                             if lists else "") + ".") from exc
    except yaml.YAMLError as exc:  # OmegaConf's reader refuses what yaml_1_2_override passed (a duplicate key)
        raise RecipeError(f"recipe {where}: an override's value is not valid YAML ({' '.join(str(exc).split())}); "
                          "give each key once and quote strings that hold YAML syntax.") from None
    except OmegaConfBaseException as exc:
        msg = str(exc).split("\n")[0]
        key = getattr(exc, "full_key", None)
        raise RecipeError(f"recipe {where}: {msg}" + (f" (key: {key})" if key else "") +
                          ". Check the key's spelling and type against the schema.") from exc


def yaml_1_2_override(item: str) -> str:
    """Override ``key=value`` with its value spelt so that OmegaConf (a YAML 1.1 reader) reads what YAML 1.2 reads
    (:func:`depthkit.yaml_values.yaml_loader`, as ``--option`` values are read): ``train.max_steps=0100`` is 100,
    not 1.1's octal 64, and ``1:30`` is the string ``"1:30"``, not 1.1's base-60 90. Integers are rewritten in
    decimal and strings quoted; every other value is left as given.

    Raises:
        RecipeError: ``item`` has no ``=``, or its value is not YAML (an unclosed ``[``), saying how to write it.
    """
    import json

    import yaml

    from depthkit.yaml_values import yaml_loader

    key, sep, text = item.partition("=")
    if not sep:
        raise RecipeError(f"override {item!r} must look like key=value (e.g. train.max_steps=200)")
    try:
        value = yaml.load(text, Loader=yaml_loader())
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise RecipeError(f"override {item!r}: the value is not valid YAML ({reason}); write lists as [a, b], "
                          "mappings as {k: v}, and quote a string that holds such characters.") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{key}={value}"
    if isinstance(value, str) and re.match(r"[-+.]?[0-9]", text.strip()):  # 1.1 may read a number (1:30, 0b1)
        return f"{key}={json.dumps(value)}"  # a JSON string is a double-quoted YAML scalar
    return item


def recipe_to_yaml(recipe: Any) -> str:
    """The resolved recipe as YAML (stored next to checkpoints so a run can be reproduced)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(recipe))


def dataclass_field(default_factory):
    """``field(default_factory=...)`` shorthand for nested recipe sections."""
    return field(default_factory=default_factory)
