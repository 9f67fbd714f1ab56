"""Files shipped with depthkit: the training recipes (``recipes/``), the bundled example (``examples/``) and the
embedded checkpoints (``checkpoints/``, among them the default one).

In a source checkout (or an editable install) they are the repository's top-level ``recipes/``, ``examples/`` and
``checkpoints/``; a built wheel carries the same files as package data under ``depthkit/recipes``,
``depthkit/examples`` and ``depthkit/checkpoints``
(copied there by the build hook in ``setup.py``), so ``depthkit train recipes/tiny/complete.yaml`` and the README example work from
any folder.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):  # wheel, then source checkout
        if candidate.is_dir():
            return candidate
    return _PACKAGE / name


def recipes_dir() -> Path:
    """The folder holding the shipped recipe YAMLs."""
    return _shipped("recipes")


def examples_dir() -> Path:
    """The folder holding the bundled example (``room_rgb.png``, ``room_sparse.npy``, ...)."""
    return _shipped("examples")


def checkpoints_dir() -> Path:
    """The folder holding the embedded checkpoints (``default/``, see ``checkpoints/README.md``)."""
    return _shipped("checkpoints")


LAUNCH_CONFIGS = "accelerate"
"""The folder of ``recipes/`` holding ``accelerate launch --config_file`` configs, not training recipes."""


def _shipped_yaml(launch: bool) -> dict[str, Path]:
    root = recipes_dir()
    return {str(p.relative_to(root).with_suffix("")): p for p in sorted(root.rglob("*.yaml"))
            if (p.relative_to(root).parts[0] == LAUNCH_CONFIGS) == launch}


def list_recipes() -> dict[str, Path]:
    """Shipped training recipes by name (path under ``recipes/`` without ``.yaml``, e.g. ``tiny/complete``)."""
    return _shipped_yaml(launch=False)


def list_launch_configs() -> dict[str, Path]:
    """Shipped ``accelerate launch --config_file`` configs by name (e.g. ``accelerate/fsdp``)."""
    return _shipped_yaml(launch=True)


def find_recipe(spec) -> Path:
    """A recipe path as given when it exists; else the shipped recipe it names (``recipes/tiny/complete.yaml``,
    ``tiny/complete.yaml`` or ``tiny/complete``); else ``FileNotFoundError`` listing the shipped ones."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("recipes",) else path.parts
    if parts and not path.is_absolute():
        name = str(Path(*parts).with_suffix("")) if Path(*parts).suffix in (".yaml", ".yml") else str(Path(*parts))
        shipped = {**list_recipes(), **list_launch_configs()}  # `depthkit recipes cp` copies either
        if name in shipped:
            return shipped[name]
    names = ", ".join(list_recipes()) or f"none found in {recipes_dir()}"
    raise FileNotFoundError(f"recipe {spec} not found (no such file, and no shipped recipe of that name). "
                            f"Shipped recipes: {names}. `depthkit recipes cp NAME DEST` copies one to edit.")
