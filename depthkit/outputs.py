"""Result types shared by the pipeline and its stages.

Their reprs summarise arrays (shape, dtype, range) instead of printing them, so ``print(out)`` stays one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StageResult:
    """What one stage produced for one image.

    Attributes:
        depth: HxW float32 metres at input resolution; measured sparse pixels hold their measured values exactly.
        confidence: HxW float32 in [0, 1] (1 = certain; measured pixels are 1), or None when the stage has none
            (the classical completion methods and ``sharpen`` report none; the learned ``complete`` does).
        extras: named HxW float32 maps a stage exposes (e.g. ``"discrepancy"`` in [0, 1] for sharpen; ``"placed"``,
            1 where the complete stage's occlusion or hole fill set the depth, which the Pipeline keeps through a
            later stage whose ``keep_placed`` is True).
        seconds: wall-clock time the stage took for this image.
    """

    depth: np.ndarray
    confidence: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0

    def __repr__(self) -> str:
        extras = "{" + ", ".join(f"{k!r}: {describe_array(v)}" for k, v in self.extras.items()) + "}"
        return (f"StageResult(depth={describe_array(self.depth)}, confidence={describe_array(self.confidence)}, "
                f"extras={extras}, seconds={self.seconds:.3f})")


def keep_placed_depth(depth: np.ndarray, previous: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """``depth`` (HxW metres, a stage's output) with ``previous``'s depth (its input) wherever ``placed`` (HxW bool:
    the complete stage's ``extras["placed"] > 0``) is set, float32: what a stage whose ``keep_placed`` is True gives
    (the Pipeline, and :meth:`SharpenStage.run_limits <depthkit.sharpen.stage.SharpenStage.run_limits>`)."""
    return np.where(placed, previous, depth).astype(np.float32)


def describe_array(a) -> str:
    """One line for an array: ``HxW float32 [min, max]`` over its finite values (``None`` for None)."""
    if a is None:
        return "None"
    a = np.asarray(a)
    shape = "x".join(str(n) for n in a.shape)
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a.ravel()
    rng = f" [{finite.min():.3g}, {finite.max():.3g}]" if finite.size else ""
    return f"{shape} {a.dtype}{rng}"


@dataclass
class DepthOutput:
    """The pipeline's result for one image.

    Attributes:
        depth: HxW float32 metres, input resolution, dense (> 0) wherever the last stage predicts;
            equal to the sparse input wherever a measurement exists.
        confidence: HxW float32 in [0, 1] from the last stage that reports one; None when no stage reports one
            (a classical ``--method`` or ``sharpen`` alone; the learned completion stage reports one). After
            complete + sharpen it is the completion's map, measured to rank the sharpened depth's errors about as
            well as the completion's (AUROC within 0.007 per sparse pattern; README, "The embedded default").
        stages: every stage's :class:`StageResult`, by stage name, in run order.
        timings: seconds per stage and ``"total"``.
    """

    depth: np.ndarray
    confidence: np.ndarray | None
    stages: dict[str, StageResult]
    timings: dict[str, float]

    def __repr__(self) -> str:
        times = ", ".join(f"{k}={v:.3f}s" for k, v in self.timings.items())
        return (f"DepthOutput(depth={describe_array(self.depth)} m, confidence={describe_array(self.confidence)}, "
                f"stages={list(self.stages)}, timings=({times}))")
