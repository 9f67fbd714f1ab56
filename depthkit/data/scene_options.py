"""The options a synthetic scene is rendered with (:func:`depthkit.data.synthetic.render_scene`,
:class:`depthkit.data.datasets.synthetic.SyntheticDataset`), checked in one place: its kind, field of view and image
noise, and the whole numbers the renderers and the sparse patterns (:mod:`depthkit.data.sparse`) take; with the
number tests the data modules share (:func:`is_int`, :func:`is_real`: booleans are never numbers)."""

from __future__ import annotations

import numpy as np

__all__ = ["KINDS", "is_int", "is_real", "check_int", "resolve_kind", "check_view_options"]

KINDS = ("indoor", "outdoor", "random")


def is_int(value) -> bool:
    """True for a Python or numpy integer, never a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """True for a Python or numpy integer or float (NaN and inf included), never a bool or a complex number."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int; ValueError naming ``name`` unless it is an integer (not a bool) >= ``minimum``."""
    if not is_int(value) or value < minimum:
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
    if not is_real(hfov_deg) or not 5.0 <= float(hfov_deg) <= 150.0:
        raise ValueError(f"hfov_deg must be a number of degrees in [5, 150]; received {hfov_deg!r}.")
    if not is_real(image_noise) or not 0 <= float(image_noise) < np.inf:
        raise ValueError(f"image_noise must be a finite number >= 0 (8-bit levels; 0 = none); received "
                         f"{image_noise!r}.")
    return float(hfov_deg), float(image_noise)
