"""The stage table: what a pipeline stage is, which stages and completion methods exist, and how each is built.

A stage (:class:`Stage`) has a ``name`` and ``run(image, sparse, depth) -> StageResult``. It receives inputs the
:class:`~depthkit.pipeline.Pipeline` has already checked — ``image`` HxWx3 uint8 RGB, ``sparse`` HxW float32 metres
(0 = missing), ``depth`` the previous stage's HxW float32 metres (None for the first stage) — and trusts them; the
Pipeline also restores the measured pixels after every stage, so a stage need not.

Two tables drive everything (``depthkit ls`` prints them, the Pipeline dispatches on them):

- :data:`STAGES`: stage name → :class:`StageSpec` (description, factory), in run order.
- :data:`COMPLETION_METHODS`: the ``complete`` stage's methods: the classical ones of
  :data:`depthkit.data.baselines.CLASSICAL_METHODS` and the learned SDIM completer :data:`LEARNED_METHOD`, which
  needs a checkpoint with a ``complete/`` part.

A factory is called as ``factory(checkpoint, device, dtype, options)`` with ``checkpoint`` a
:class:`~depthkit.checkpoints.CheckpointRef` (resolved once by the Pipeline; None when there is none) and
``options`` the stage's options: the checkpoint manifest's, overridden by the caller's. Heavy imports (torch,
transformers, diffusers) happen inside the factories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from depthkit.checkpoints import CheckpointRef
from depthkit.data.baselines import CLASSICAL_METHODS
from depthkit.outputs import StageResult
from depthkit.sharpen.stage import build_sharpen_stage

__all__ = ["Stage", "StageSpec", "STAGES", "STAGE_ORDER", "COMPLETION_METHODS", "DEFAULT_METHOD", "LEARNED_METHOD",
           "ClassicalCompleteStage", "build_complete_stage", "checkpoint_method", "default_stages", "parse_stages"]

LEARNED_METHOD = "sdim"
"""The learned completer's method name (a checkpoint's ``complete/`` part)."""
DEFAULT_METHOD = "guided"
"""The completion method used when no checkpoint provides a learned completer."""

COMPLETION_METHODS: dict[str, str] = {
    **{name: m.description for name, m in CLASSICAL_METHODS.items()},
    LEARNED_METHOD: "SDIM completer (Qwen2.5-VL with sparse depth injection) from a checkpoint's complete/ part.",
}
"""Every completion method by name → one-line description (classical ones first)."""


class Stage(Protocol):
    """What the Pipeline runs: ``run`` returns HxW float32 metres at the input's resolution (and optionally a
    confidence map and named extras, see :class:`~depthkit.outputs.StageResult`)."""

    name: str

    def run(self, image: np.ndarray, sparse: np.ndarray, depth: np.ndarray | None) -> StageResult: ...


class ClassicalCompleteStage:
    """The ``complete`` stage with a classical method of :data:`~depthkit.data.baselines.CLASSICAL_METHODS`."""

    name = "complete"

    def __init__(self, method: str):
        self.method = CLASSICAL_METHODS[method]

    def run(self, image: np.ndarray, sparse: np.ndarray, depth: np.ndarray | None = None) -> StageResult:
        return StageResult(depth=self.method.fn(image, sparse, sparse > 0))

    def __repr__(self) -> str:
        return f"ClassicalCompleteStage(method={self.method.name!r})"


def checkpoint_method(checkpoint: CheckpointRef | None) -> str:
    """The completion method ``checkpoint`` runs when none is given: its manifest's ``method``, else the learned
    completer when it has a ``complete/`` part, else :data:`DEFAULT_METHOD` (also for no checkpoint)."""
    if checkpoint is None:
        return DEFAULT_METHOD
    method = checkpoint.options("complete").get("method")  # not `or`: an empty name is refused, not the default
    if method is None:
        method = LEARNED_METHOD if checkpoint.has_part("complete") else DEFAULT_METHOD
    return method


def build_complete_stage(checkpoint: CheckpointRef | None, device: str = "cpu", dtype: str = "float32",
                         options: dict | None = None) -> Stage:
    """The ``complete`` stage.

    ``options["method"]`` picks the method (:data:`COMPLETION_METHODS`); without one, the checkpoint manifest's
    ``method``, else the learned completer when ``checkpoint`` has a ``complete/`` part, else
    :data:`DEFAULT_METHOD`. The learned stage (:class:`depthkit.complete.stage.CompleteVLMStage`) takes the
    manifest's other options overridden by ``options``; classical methods take none (the manifest's are ignored).
    """
    options = dict(options or {})
    stored = checkpoint.options("complete") if checkpoint is not None else {}
    has_part = checkpoint is not None and checkpoint.has_part("complete")
    method = options.pop("method", None)
    if method is None:  # not `or`: an empty name is refused below, not taken for the default
        method = checkpoint_method(checkpoint)
    stored.pop("method", None)
    if not isinstance(method, str) or method not in COMPLETION_METHODS:
        raise ValueError(f"unknown completion method {method!r}; available: {', '.join(COMPLETION_METHODS)}. "
                         "Run `depthkit ls` to see every method with a description.")
    if method != LEARNED_METHOD:
        if options:
            raise ValueError(f"classical method {method!r} takes no options; received {sorted(options)}.")
        return ClassicalCompleteStage(method)
    if checkpoint is None:
        raise ValueError(
            f"the learned completer (method {LEARNED_METHOD!r}) needs a checkpoint: pass --checkpoint DIR (e.g. one "
            "made by `depthkit init-checkpoint --tiny DIR` or `depthkit train`), or choose a classical --method.")
    if not has_part:
        raise ValueError(f"checkpoint {checkpoint.root} has no complete/ folder for the learned completer "
                         f"(it provides {', '.join(checkpoint.stages) or 'no stage'}).")
    from depthkit.complete.stage import CompleteVLMStage

    return CompleteVLMStage.from_checkpoint(checkpoint.part("complete"), device=device, dtype=dtype,
                                            **{**stored, **options})


@dataclass(frozen=True)
class StageSpec:
    """One row of :data:`STAGES`."""

    name: str
    description: str
    factory: Callable[..., Stage]


STAGES: dict[str, StageSpec] = {s.name: s for s in (
    StageSpec("complete", "sparse depth -> dense metric depth (classical methods or the learned SDIM completer)",
              build_complete_stage),
    StageSpec("sharpen", "dense metric depth -> sharper metric depth (SharpDepth; needs a checkpoint's sharpen/)",
              build_sharpen_stage),
)}
"""The stages by name, in the order a pipeline runs them."""

STAGE_ORDER = tuple(STAGES)


def parse_stages(stages) -> tuple[str, ...]:
    """The stages a pipeline runs, from a list / tuple of names or a comma-separated string (``"complete,sharpen"``):
    a tuple of known, distinct names in :data:`STAGE_ORDER`. ValueError says what was received and what is allowed."""
    if isinstance(stages, str):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    if not isinstance(stages, (list, tuple)):
        raise ValueError(f"stages must be a list of stage names or a comma-separated string, e.g. "
                         f"('complete', 'sharpen'); received {type(stages).__name__}.")
    stages = tuple(stages)
    if not stages:
        raise ValueError(f"no stages given; choose from {', '.join(STAGE_ORDER)}.")
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}; stages are {', '.join(STAGE_ORDER)} (in that order).")
    if len(set(stages)) != len(stages) or list(stages) != sorted(stages, key=STAGE_ORDER.index):
        raise ValueError(f"stages {stages} must be distinct and in the order {', '.join(STAGE_ORDER)}.")
    return stages


def default_stages(checkpoint: CheckpointRef | None, method: str | None = None, stage_options: dict | None = None,
                   fallback: tuple[str, ...] = ("complete",)) -> tuple[str, ...]:
    """The stages a run given no stage list runs (``Pipeline()``, ``Pipeline.from_pretrained``, ``depthkit run`` /
    ``eval`` without --stages): the checkpoint's ``default_stages`` (the embedded default's: complete, sharpen) when its
    manifest names them and the completion method given (``method``, else ``stage_options["complete"]["method"]``,
    else none) is the checkpoint's own (:func:`checkpoint_method`); else ``("complete",)``, or ``fallback`` for a
    checkpoint whose manifest names none. Another method completes only: a checkpoint's later stages were measured,
    and put in its default, on its own completion. Stages out of the stage order, or not starting with complete,
    raise :class:`~depthkit.checkpoints.CheckpointError` naming the manifest."""
    if checkpoint is None or not checkpoint.default_stages:
        return fallback if checkpoint is not None else ("complete",)
    from depthkit.checkpoints import MANIFEST, CheckpointError

    path = checkpoint.root / MANIFEST
    try:
        stages = parse_stages(list(checkpoint.default_stages))
    except ValueError as err:
        raise CheckpointError(f"{path}: default_stages: {err}") from None
    if stages[0] != "complete":  # a run given no stage list completes its sparse input; sharpen alone needs depth
        raise CheckpointError(f"{path}: default_stages must start with complete (a run given no stage list completes "
                              f"its sparse input); received {list(stages)}.")
    method = method or ((stage_options or {}).get("complete") or {}).get("method")
    if method is not None and method != checkpoint_method(checkpoint):
        return ("complete",)
    return stages
