"""Registries that later stages plug into: completion methods (classical and learned) and pipeline stages.

A *completion method* is a function ``fn(image, sparse) -> dense`` with
``image`` HxWx3 uint8 RGB, ``sparse`` HxW float32 metres (0 = missing) and ``dense`` HxW float32 metres.
It may instead return ``(dense, confidence)`` with confidence HxW float32 in [0, 1].
Register one with :func:`register_completion_method`; the ``complete`` stage looks it up by name.

A *stage factory* builds a pipeline stage (see :mod:`depthkit.stages`) from keyword options; register one with
:func:`register_stage`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_COMPLETION_METHODS: dict[str, CompletionMethod] = {}
_STAGES: dict[str, Callable] = {}
_BUILTINS_LOADED = False
_STAGE_MODULES = ("depthkit.sharpen.stage",)


@dataclass(frozen=True)
class CompletionMethod:
    name: str
    fn: Callable
    description: str
    learned: bool = False


def register_completion_method(name: str, description: str = "", learned: bool = False):
    """Decorator: register ``fn(image, sparse)`` as completion method ``name`` (unique)."""

    def wrap(fn):
        if name in _COMPLETION_METHODS and _COMPLETION_METHODS[name].fn is not fn:
            raise ValueError(f"completion method {name!r} is already registered by {_COMPLETION_METHODS[name].fn}")
        doc = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        _COMPLETION_METHODS[name] = CompletionMethod(name, fn, doc, learned)
        return fn

    return wrap


def register_stage(name: str):
    """Decorator: register a stage factory ``factory(**options) -> Stage`` under ``name``."""

    def wrap(factory):
        _STAGES[name] = factory
        return factory

    return wrap


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import importlib
    import importlib.util

    import depthkit.data.baselines  # noqa: F401  (registers the classical methods)
    import depthkit.stages  # noqa: F401  (registers the complete stage)

    for module in _STAGE_MODULES:  # stages that register themselves (light modules: heavy imports inside)
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def completion_methods() -> dict[str, CompletionMethod]:
    _load_builtins()
    return dict(_COMPLETION_METHODS)


def get_completion_method(name: str) -> CompletionMethod:
    methods = completion_methods()
    if name not in methods:
        raise ValueError(
            f"unknown completion method {name!r}; available: {', '.join(sorted(methods))}. "
            "Run `depthkit ls` to see every method with a description."
        )
    return methods[name]


def stage_factories() -> dict[str, Callable]:
    _load_builtins()
    return dict(_STAGES)
