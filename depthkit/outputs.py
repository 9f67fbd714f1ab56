"""Result types shared by the pipeline and its stages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StageResult:
    """What one stage produced for one image.

    Attributes:
        depth: HxW float32 metres at input resolution; measured sparse pixels hold their measured values exactly.
        confidence: HxW float32 in [0, 1] (1 = certain; measured pixels are 1), or None when the stage has none.
        extras: named HxW float32 maps a stage exposes (e.g. ``"discrepancy"`` in [0, 1] for sharpen).
        seconds: wall-clock time the stage took for this image.
    """

    depth: np.ndarray
    confidence: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class DepthOutput:
    """The pipeline's result for one image.

    Attributes:
        depth: HxW float32 metres, input resolution, dense (> 0) wherever the last stage predicts;
            equal to the sparse input wherever a measurement exists.
        confidence: HxW float32 in [0, 1] from the last stage that reports one, or None.
        stages: every stage's :class:`StageResult`, by stage name, in run order.
        timings: seconds per stage and ``"total"``.
    """

    depth: np.ndarray
    confidence: np.ndarray | None
    stages: dict[str, StageResult]
    timings: dict[str, float]
