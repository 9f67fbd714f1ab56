"""The pipeline stages and their registration.

A stage is an object with ``name`` and ``run(image, sparse, depth) -> StageResult`` where ``image`` is HxWx3 uint8
RGB, ``sparse`` HxW float32 metres (0 = missing) and ``depth`` the previous stage's HxW float32 metres (None for the
first stage). Stages are built by factories registered with :func:`depthkit.registry.register_stage`, which receive
the pipeline's options (``method``, ``checkpoint``, ``device``, ``dtype`` and stage-specific ones).

``complete`` runs a completion method from :mod:`depthkit.registry`. Until a learned completer is available
(no ``--checkpoint`` and no embedded default), it runs the classical ``guided`` method.
"""

from __future__ import annotations

import numpy as np

from depthkit.outputs import StageResult
from depthkit.registry import get_completion_method, register_stage

DEFAULT_COMPLETE_METHOD = "guided"


def restore_measurements(depth: np.ndarray, sparse: np.ndarray) -> np.ndarray:
    """Return ``depth`` with every measured pixel (sparse > 0) set to its measured value exactly (float32)."""
    out = np.array(depth, dtype=np.float32, copy=True)
    measured = sparse > 0
    out[measured] = sparse[measured]
    return out


class CompleteStage:
    """Depth completion with a registered completion method (classical or learned)."""

    name = "complete"

    def __init__(self, method: str):
        self.method = get_completion_method(method)

    def run(self, image: np.ndarray, sparse: np.ndarray, depth: np.ndarray | None = None) -> StageResult:
        out = self.method.fn(image, sparse)
        confidence = None
        if isinstance(out, tuple):
            out, confidence = out
        out = np.asarray(out, dtype=np.float32)
        if out.shape != sparse.shape:
            raise RuntimeError(
                f"completion method {self.method.name!r} returned shape {out.shape} for input {sparse.shape}"
            )
        if confidence is not None:
            confidence = np.clip(np.asarray(confidence, np.float32), 0.0, 1.0)
            confidence[sparse > 0] = 1.0
        return StageResult(depth=restore_measurements(out, sparse), confidence=confidence)

    def __repr__(self) -> str:
        return f"CompleteStage(method={self.method.name!r})"


@register_stage("complete")
def build_complete_stage(method: str | None = None, checkpoint=None, **options) -> CompleteStage:
    if checkpoint is not None and method is None:
        raise ValueError(
            f"checkpoint {checkpoint} has no learned completer this version can load. "
            f"Pass --method with a classical method (e.g. {DEFAULT_COMPLETE_METHOD})."
        )
    return CompleteStage(method or DEFAULT_COMPLETE_METHOD)
