"""The scale (units per metre) of a 16-bit depth PNG: chosen to fit, or a user's checked (:func:`choose_png_scale`),
and the one a file records (:func:`png_depth_scale`).

A PNG stores ``round(depth * scale)`` in 0-65535 with 0 = missing, so a scale is refused when the deepest pixel does
not fit or when valid pixels would round to 0 although a fitting scale keeps them; messages suggest one that works.
"""

from __future__ import annotations

import math

import numpy as np

from depthkit.decode import pil_source

__all__ = ["PNG_SCALE_KEY", "PNG_SCALES", "choose_png_scale", "fitting_png_scale", "keeps_every_pixel",
           "png_depth_scale"]

PNG_SCALE_KEY = "depth_scale"
"""The text chunk of a depth PNG that records its units per metre."""

PNG_SCALES = (1000.0, 256.0, 100.0, 10.0, 1.0)
"""Units per metre tried, in order, when a 16-bit PNG's scale is chosen automatically (1000 = millimetres fits
0-65.5 m, 256 fits 0-256 m, ...)."""


def choose_png_scale(depth: np.ndarray, scale: float | None = None, what: str = "depth", exact=None) -> float:
    """Units per metre for a 16-bit PNG of ``depth`` (metres): ``scale`` if given, else the first of
    :data:`PNG_SCALES` that fits and, with ``exact`` (the measured depths, metres, 0 = none), reads every one of them
    back bit for bit (KITTI's 1/256 m values at 256, millimetres at 1000); without such a scale the first that fits
    — or, when some valid pixel would round to 0 there, :func:`fitting_png_scale` if that keeps every one (a frame
    with a few returns under half a millimetre). Raises ``ValueError`` (before
    anything is written) when the depth cannot fit, when ``scale`` is not a finite number > 0, or when at the given
    ``scale`` a valid pixel (> 0 m) would round to 0 (which the PNG stores as missing) although a scale that fits
    would keep it; the messages suggest a ``--png-scale`` that works."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = depth[np.isfinite(depth) & (depth > 0)]
    top = float(valid.max(initial=0.0))
    auto = next((c for c in PNG_SCALES if round(top * c) <= 65535), None)
    if scale is not None:
        _check_png_scale(valid, float(scale), auto, what)
        return float(scale)
    if exact is not None:
        measured = np.asarray(exact, dtype=np.float32)
        measured = measured[np.isfinite(measured) & (measured > 0)]
        holds = next((c for c in PNG_SCALES if round(top * c) <= 65535 and keeps_every_pixel(valid, c)
                      and _reads_back(measured, c)), None)
        if measured.size and holds is not None:
            return holds
    if auto is None:
        fit = fitting_png_scale(top)
        over = int((valid > 65535).sum())
        raise ValueError(f"{what} up to {top:.1f} m does not fit a 16-bit PNG even at 1 unit per metre (max 65535 m): "
                         f"{over} of {valid.size} valid pixel(s) lie beyond it, and the median is "
                         f"{float(np.median(valid)):.3g} m. Pass --png-scale {fit:g} (units per metre: {1 / fit:g} m "
                         f"steps, fits 0-{65535 / fit:g} m), or check the input's units and outliers: depth this large "
                         "is usually a unit error or a stray value.")
    if not keeps_every_pixel(valid, auto):  # pixels under half a unit: the finest scale that fits, if it keeps them
        finer = fitting_png_scale(top)
        if keeps_every_pixel(valid, finer):
            return finer
    return auto


def _check_png_scale(valid: np.ndarray, scale: float, auto: float | None, what: str) -> None:
    """Refuse a user's ``scale`` (units per metre) for the ``valid`` depths (metres, > 0): not finite and > 0, too
    fine for the deepest, or so coarse that some round to 0 although :func:`fitting_png_scale` keeps them all;
    ``auto`` is the automatic choice (None when there is none)."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"png scale must be a finite number > 0 (units per metre); received {scale}")
    top = float(valid.max(initial=0.0))
    fit = fitting_png_scale(top)
    if round(top * scale) > 65535:
        raise ValueError(f"{what} up to {top:.3f} m does not fit a 16-bit PNG at scale {scale:g} units per metre (max "
                         f"{65535 / scale:.3f} m). Use a smaller --png-scale (e.g. {fit:g} fits 0-{65535 / fit:g} m)"
                         f"{', or leave it out to choose one that fits' if auto is not None else ''}.")
    lost = int((np.round(valid * scale) == 0).sum())
    if lost and keeps_every_pixel(valid, fit):  # else no scale keeps them: the PNG writer warns
        keeps = auto is not None and keeps_every_pixel(valid, auto)
        raise ValueError(f"at png scale {scale:g} units per metre, {lost} of {valid.size} valid pixel(s) of {what} "
                         f"(from {float(valid.min()):.3g} m) round to 0, which the 16-bit PNG stores as missing. Use "
                         f"a larger --png-scale (e.g. {fit:g}, which fits 0-{65535 / fit:g} m)"
                         f"{', or leave it out' if keeps else ''}.")


def _reads_back(metres: np.ndarray, scale: float) -> bool:
    """Whether float32 ``metres`` come back unchanged from a PNG at ``scale``: stored as round(m * scale), read as
    units / scale in float64 then float32, as :func:`depthkit.io.read_depth` reads them."""
    units = np.round(metres.astype(np.float64) * scale)
    return bool(np.array_equal((units / scale).astype(np.float32), metres))


def keeps_every_pixel(valid: np.ndarray, scale: float) -> bool:
    """Whether every depth in ``valid`` (metres, > 0) stays non-zero in a PNG at ``scale`` units per metre (none
    rounds to 0, the PNG's "missing")."""
    return not (np.round(valid * scale) == 0).any()


def fitting_png_scale(top: float) -> float:
    """The finest round scale (1, 2 or 5 x 10^k units per metre) whose 16-bit range holds ``top`` metres (1000 for
    no depth)."""
    if not top > 0:
        return PNG_SCALES[0]
    k = math.floor(math.log10(65535 / top))  # may round up just above a power of ten: then the decade below
    return next(m * 10.0**j for j in (k, k - 1) for m in (5, 2, 1) if m * 10.0**j <= 65535 / top)


def png_depth_scale(path) -> float | None:
    """The units per metre recorded in a depth PNG's ``depth_scale`` text chunk, or None when it has none (or the
    chunk is damaged). Chunks that fail their CRC are left out first, as the decoder does
    (:func:`depthkit.decode.pil_source`), so a damaged colour profile does not hide a whole text chunk."""
    from PIL import Image

    try:
        with Image.open(pil_source(path)) as im:
            value = getattr(im, "text", {}).get(PNG_SCALE_KEY)
        return float(value) if value is not None else None
    except (OSError, ValueError):
        return None
