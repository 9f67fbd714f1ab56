"""The options a synthetic scene is rendered with (:func:`depthkit.data.synthetic.render_scene`,
:class:`depthkit.data.datasets.synthetic.SyntheticDataset`), checked in one place: its kind, field of view and image
noise, and the whole numbers the renderers and the sparse patterns (:mod:`depthkit.data.sparse`) take."""

from __future__ import annotations

import numpy as np

__all__ = ["KINDS", "check_int", "resolve_kind", "check_view_options"]

KINDS = ("indoor", "outdoor", "random")


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int; ValueError naming ``name`` unless it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; received {value!r} ({type(value).__name__}).")
    return int(value)


def resolve_kind(seed: int, kind: str) -> str:
    """``kind`` itself, or for ``"random"`` indoor/outdoor chosen by the seed (half each, independent of the scene)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; received {kind!r}.")
    if kind != "random":
        return kind
    return "indoor" if np.random.default_rng([check_int("seed", seed, 0), 0x6B1D]).random() < 0.5 else "outdoor"


def check_view_options(hfov_deg, image_noise) -> tuple[float, float]:
    """``(hfov_deg, image_noise)`` as floats; ValueError unless ``hfov_deg`` is a number of degrees in [5, 150] and
    ``image_noise`` a finite number >= 0 (standard deviation in 8-bit levels). Booleans are refused."""
    if isinstance(hfov_deg, bool) or not isinstance(hfov_deg, (int, float, np.integer, np.floating)) \
            or not 5.0 <= float(hfov_deg) <= 150.0:
        raise ValueError(f"hfov_deg must be a number of degrees in [5, 150]; received {hfov_deg!r}.")
    if isinstance(image_noise, bool) or not isinstance(image_noise, (int, float, np.integer, np.floating)) \
            or not 0 <= float(image_noise) < np.inf:
        raise ValueError(f"image_noise must be a finite number >= 0 (8-bit levels; 0 = none); received "
                         f"{image_noise!r}.")
    return float(hfov_deg), float(image_noise)
