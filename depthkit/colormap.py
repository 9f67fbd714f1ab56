"""The colour map written beside every depth map: depth in metres to RGB, near = warm, with a colour bar labelled in
metres (:func:`colorize`; :func:`depthkit.io.write_colorized` writes it to a file)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["colorize", "legend_labels"]


def colorize(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None, legend: bool = True,
             colormap: str = "turbo") -> np.ndarray:
    """Colour-map depth (metres) to HxWx3 uint8 RGB, near = warm; missing pixels black.

    The colour range defaults to the 2nd/98th percentiles of valid depth, so a few outliers do not wash out the
    picture; depth outside the range takes the end colours. With ``legend`` a colour bar labelled in metres is
    appended on the right (the output is then wider than the input); an end label reads ``<= v m`` / ``>= v m``
    when depth beyond it was clipped to that colour. Its text scales with the image height.
    """
    import cv2

    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if valid.any():
        lo, hi = np.percentile(depth[valid], [2, 98])
        dmin, dmax = float(depth[valid].min()), float(depth[valid].max())
    else:
        lo, hi = dmin, dmax = 0.0, 1.0
    vmin = float(lo if vmin is None else vmin)
    vmax = float(hi if vmax is None else vmax)
    if vmax <= vmin:
        vmax = vmin + 1e-3
    cmap = {"turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS}
    if colormap not in cmap:
        raise ValueError(f"unknown colormap {colormap!r}; allowed: {', '.join(cmap)}")
    t = np.clip((np.where(valid, depth, vmax) - vmin) / (vmax - vmin), 0, 1)
    rgb = cv2.applyColorMap(((1 - t) * 255).astype(np.uint8), cmap[colormap])[:, :, ::-1].copy()
    rgb[~valid] = 0
    if not legend:
        return rgb
    h = rgb.shape[0]
    n_ticks = 5 if h >= 120 else 2
    labels = legend_labels(vmin, vmax, n_ticks, clipped_low=dmin < vmin, clipped_high=dmax > vmax)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, float(np.clip(h / 1200, 0.3, 1.2))
    thick = 1 if scale < 0.7 else 2
    text_w = max(cv2.getTextSize(lbl, font, scale, thick)[0][0] for lbl in labels) + 8
    text_h = cv2.getTextSize("0", font, scale, thick)[0][1]
    bar_w = max(8, h // 24)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None]  # top = vmin (near)
    bar = cv2.applyColorMap(((1 - ramp) * 255).astype(np.uint8).repeat(bar_w, 1), cmap[colormap])[:, :, ::-1]
    panel = np.full((h, bar_w + text_w, 3), 255, np.uint8)
    panel[:, :bar_w] = bar
    for i, label in enumerate(labels):
        y = int(round(i / (n_ticks - 1) * (h - 1)))
        ty = min(max(y + text_h // 2, text_h + 1), h - 3)
        cv2.putText(panel, label, (bar_w + 4, ty), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return np.concatenate([rgb, panel], axis=1)


def legend_labels(vmin: float, vmax: float, n: int, clipped_low: bool = False, clipped_high: bool = False) -> list[str]:
    """The colour bar's ``n`` tick labels (metres, top = near); clipped ends read ``<= v m`` / ``>= v m``."""
    step = (vmax - vmin) / (n - 1)
    # ticks that differ read differently
    decimals = max(2, -math.floor(math.log10(step))) if math.isfinite(step) and step > 0 else 2
    labels = [f"{vmin + i * step:.{decimals}f} m" for i in range(n)]
    if clipped_low:
        labels[0] = "<= " + labels[0]
    if clipped_high:
        labels[-1] = ">= " + labels[-1]
    return labels
