"""The one cast of depth to float32 metres that refuses what the cast would lose.

Every output keeps depth as float32 (about 7 significant digits: 0.1 mm at 1 km). A wider float's finite value
beyond float32's range would become inf (and be misreported as a bad value), and a positive one below its smallest
would become 0, i.e. missing: a measurement lost without a word. Used by the Pipeline's input reader
(:func:`depthkit.io.depth_to_metres`), the classical methods called directly and the sharpener's direct entry.
:func:`unmasked` (a masked array's masked pixels are missing) is the step every reader of depth takes before it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["float32_metres", "unmasked"]


def unmasked(depth):
    """``depth`` with a numpy masked array's masked pixels set to 0 (missing), whatever lies under the mask; any
    other value as it is. Every reader of depth calls it first, so a mask means "missing" everywhere."""
    return depth.filled(0) if isinstance(depth, np.ma.MaskedArray) else depth


def float32_metres(arr: np.ndarray, what: str) -> np.ndarray:
    """``arr`` (any shape, float metres) cast to float32, raising ``ValueError`` naming ``what`` when a finite value
    is too large for float32 or a positive one too small (it would round to 0). NaN, inf and negative values pass
    through unchanged for the caller's own check (an inf stays inf)."""
    arr = np.asarray(arr)
    with np.errstate(over="ignore", under="ignore"):
        out = arr.astype(np.float32)
    if arr.dtype.kind != "f" or arr.dtype.itemsize <= 4:
        return out
    finite = np.isfinite(arr)
    huge = finite & ~np.isfinite(out)
    if huge.any():
        raise ValueError(f"{what} has {int(huge.sum())} finite value(s) too large for float32 metres (largest "
                         f"{float(np.abs(arr[huge]).max()):.3g}); depth is metres, 0 = missing. Check the units, or "
                         "set such pixels to 0.")
    tiny = finite & (arr > 0) & (out == 0)
    if tiny.any():
        raise ValueError(f"{what} has {int(tiny.sum())} positive value(s) too small for float32 metres (smallest "
                         f"{float(arr[tiny].min()):.3g}), the precision every output keeps; they would be lost as "
                         "missing. Check the units, or set such pixels to 0.")
    return out
