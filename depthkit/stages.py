"""The pipeline stages and their registration.

A stage is an object with ``name`` and ``run(image, sparse, depth) -> StageResult`` where ``image`` is HxWx3 uint8
RGB, ``sparse`` HxW float32 metres (0 = missing) and ``depth`` the previous stage's HxW float32 metres (None for the
first stage). Stages are built by factories registered with :func:`depthkit.registry.register_stage`, which receive
the pipeline's options (``method``, ``checkpoint``, ``device``, ``dtype`` and stage-specific ones).

``complete`` runs the learned SDIM completer from a checkpoint (``depthkit.complete.stage``) or a classical
completion method from :mod:`depthkit.registry`. Without a checkpoint and without an embedded default it runs the
classical ``guided`` method.
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


LEARNED_COMPLETE_METHOD = "sdim"


@register_stage("complete")
def build_complete_stage(method: str | None = None, checkpoint=None, device: str = "cpu", dtype: str = "float32",
                         **options):
    """The ``complete`` stage.

    ``method="sdim"`` (or None with a checkpoint that has a ``complete/`` part) loads the learned completer from
    ``<checkpoint>/complete``; with no checkpoint, None means the embedded default when this install has one, else
    the classical ``guided`` method. Any other name is a registered classical method.
    """
    from pathlib import Path

    if checkpoint is None and method in (None, LEARNED_COMPLETE_METHOD):
        from depthkit.checkpoints import default_checkpoint, load_manifest

        default = default_checkpoint()
        if default is not None and "complete" in load_manifest(default)["stages"]:
            checkpoint = default
            options = {**load_manifest(default)["stages"]["complete"], **options}
            method = options.pop("method", LEARNED_COMPLETE_METHOD)
    if method is None and checkpoint is not None:
        method = LEARNED_COMPLETE_METHOD
    if method == LEARNED_COMPLETE_METHOD:
        if checkpoint is None:
            raise ValueError(
                "the learned completer (method 'sdim') needs a checkpoint: pass --checkpoint DIR (e.g. one made by "
                "`depthkit init-checkpoint --tiny DIR` or `depthkit train`), or choose a classical --method."
            )
        part = Path(checkpoint) / "complete"
        if not part.is_dir():
            raise ValueError(f"checkpoint {checkpoint} has no complete/ folder for the learned completer.")
        from depthkit.complete.stage import CompleteVLMStage

        return CompleteVLMStage.from_checkpoint(part, device=device, dtype=dtype, **options)
    if options:
        raise ValueError(f"classical method {method or DEFAULT_COMPLETE_METHOD!r} takes no options; got {sorted(options)}")
    return CompleteStage(method or DEFAULT_COMPLETE_METHOD)
