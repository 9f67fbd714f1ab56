"""Camera intrinsics (pixels) from what a user passes: ``"fx,fy,cx,cy"``, a sequence, a 3x3 matrix, or a JSON / TXT
file (:func:`parse_intrinsics`). Every value must be a real number; errors name the file and the key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from depthkit.geometry import Intrinsics

__all__ = ["intrinsics_image_size", "parse_intrinsics"]


def parse_intrinsics(spec) -> Intrinsics:
    """Intrinsics (pixels) from ``"fx,fy,cx,cy"``, an :class:`Intrinsics`, a 4-sequence (or 3x3 K), or a file.

    Files: UTF-8 JSON with keys ``fx, fy, cx, cy`` (or ``K``: 3x3; with both, they must agree), or TXT with 4
    numbers or a 3x3 matrix (9 numbers). Every value must be a real number (not null, a string, a list or true/false); errors name the file
    and the key.
    """
    if isinstance(spec, Intrinsics):
        return spec
    if isinstance(spec, (list, tuple, np.ndarray)):
        source = f"sequence {np.asarray(spec, dtype=object).tolist()!r}"
        return _intrinsics_from_numbers(_real_numbers(spec, "intrinsics"), source)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"intrinsics must be 'fx,fy,cx,cy', a file path or Intrinsics; received {type(spec).__name__}")
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() in (".json", ".txt") or path.is_file():
        return _intrinsics_from_file(path)
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise ValueError(f"could not parse intrinsics {text!r}: expected 'fx,fy,cx,cy' in pixels or a file") from exc
    return _intrinsics_from_numbers(vals, repr(text))


def intrinsics_image_size(spec) -> tuple[int, int] | None:
    """The image size ``(H, W)`` (pixels) a JSON intrinsics file says its values are for (keys ``width`` and
    ``height``, as camera exports write them), or None (no such keys, or not a JSON file). Whole numbers > 0 only;
    a bad value is a ``ValueError`` naming the file and the key."""
    if not isinstance(spec, (str, os.PathLike)) or Path(spec).suffix.lower() != ".json" or not Path(spec).is_file():
        return None
    try:
        data = json.loads(Path(spec).read_text(encoding="utf-8-sig"))  # a BOM (Windows editors) is not data
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # parse_intrinsics says what is wrong with the file
    if not isinstance(data, dict) or not ("width" in data or "height" in data):
        return None
    size = []
    for key in ("height", "width"):
        value = data.get(key)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
            shown = json.dumps(value) if not isinstance(value, (int, float)) else f"{value:.6g}"
            raise ValueError(f"intrinsics file {spec}, key {key!r} is {shown}; with 'width' or 'height' present both "
                             "must be whole numbers of pixels > 0 (at most 1,000,000: the image size the intrinsics "
                             "are for).")
        size.append(value)
    return size[0], size[1]


def _intrinsics_from_file(path: Path) -> Intrinsics:
    """Intrinsics from a JSON (``fx, fy, cx, cy`` or ``K``) or TXT (4 or 9 numbers) file; see :func:`parse_intrinsics`."""
    if not path.is_file():
        raise FileNotFoundError(f"intrinsics file not found: {path}")
    try:
        raw = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not data
    except UnicodeDecodeError as exc:
        raise ValueError(f"intrinsics file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected JSON "
                         "with keys fx, fy, cx, cy (pixels) or a TXT file of 4 or 9 numbers.") from exc
    source = f"file {path}"
    if path.suffix.lower() != ".json":
        try:
            vals = [float(v) for v in raw.replace(",", " ").split()]
        except ValueError as exc:
            raise ValueError(f"intrinsics {source} must contain numbers only: {exc}") from exc
        return _intrinsics_from_numbers(vals, source)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"intrinsics {source} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and all(k in data for k in ("fx", "fy", "cx", "cy")):
        vals = [_real_numbers(data[k], f"intrinsics {source}, key {k!r}", single=True)[0]
                for k in ("fx", "fy", "cx", "cy")]
        intrinsics = _intrinsics_from_numbers(vals, source)
        if "K" in data:
            _check_same_as_k(intrinsics, _intrinsics_from_json_k(data, source), source)
        return intrinsics
    if isinstance(data, dict) and "K" in data:
        return _intrinsics_from_json_k(data, source)
    if isinstance(data, dict):
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in data]
        raise ValueError(f"intrinsics JSON {path} has keys {sorted(data)}: missing {', '.join(missing)}. It needs "
                         "fx, fy, cx, cy (pixels) or a 3x3 'K'.")
    raise ValueError(f"intrinsics JSON {path} holds a {type(data).__name__}, not an object; it needs "
                     '{"fx": ..., "fy": ..., "cx": ..., "cy": ...} (pixels) or {"K": a 3x3 matrix}.')


def _check_same_as_k(intrinsics: Intrinsics, from_k: Intrinsics, source: str) -> None:
    """Refuse (``ValueError``) a JSON file whose ``fx, fy, cx, cy`` keys and ``K`` matrix give different intrinsics
    (pixels; equal to 1e-6 relative): which one describes the camera is not depthkit's guess."""
    keys, k = (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy), (from_k.fx, from_k.fy, from_k.cx, from_k.cy)
    if all(abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1.0) for a, b in zip(keys, k)):
        return
    raise ValueError(f"intrinsics {source} has keys fx, fy, cx, cy = {', '.join(f'{v:g}' for v in keys)} and a 'K' "
                     f"whose fx, fy, cx, cy are {', '.join(f'{v:g}' for v in k)}: they disagree. Keep the right one "
                     "(the keys or 'K', both in pixels of this image) and remove the other.")


def _intrinsics_from_json_k(data: dict, source: str) -> Intrinsics:
    """Intrinsics from a JSON object's ``K`` (a 3x3 matrix, pixels); ``ValueError`` naming the file otherwise."""
    if not isinstance(data["K"], list):
        raise ValueError(f"intrinsics {source}, key 'K' is {json.dumps(data['K'])}; expected a 3x3 matrix of numbers "
                         "(pixels), e.g. [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]].")
    k = np.asarray(data["K"], dtype=object)
    if k.shape != (3, 3):
        raise ValueError(f"intrinsics {source}, key 'K' is {json.dumps(data['K'])} (shape {k.shape}); expected a "
                         "3x3 matrix of numbers (pixels), e.g. [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]].")
    return _intrinsics_from_numbers(_real_numbers(data["K"], f"intrinsics {source}, key 'K'"), source)


def _real_numbers(value, where: str, single: bool = False) -> list[float]:
    """The numbers in ``value`` (a number, or nested lists / arrays of them) as floats; ``ValueError`` naming
    ``where`` for anything else: null, a string, a bool, or (with ``single``) a list."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and not single:
        return [x for i, v in enumerate(value) for x in _real_numbers(v, f"{where}[{i}]")]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        shown = json.dumps(value, default=repr)
        raise ValueError(f"{where} is {shown} ({type(value).__name__}); expected a number in pixels, e.g. 525.0.")
    return [float(value)]


def _intrinsics_from_numbers(vals: list[float], source: str) -> Intrinsics:
    if len(vals) not in (4, 9):
        raise ValueError(
            f"intrinsics from {source} have {len(vals)} numbers; expected 4 (fx,fy,cx,cy) or 9 (a 3x3 matrix K)."
        )
    if len(vals) == 9:
        k = np.asarray(vals).reshape(3, 3)
        if not np.allclose(k[2], [0.0, 0.0, 1.0], atol=1e-6) or k[1, 0] != 0 or abs(k[0, 1]) > 1e-6 * abs(k[0, 0]):
            hint = (" It looks transposed (cx, cy in the bottom row): pass K.T." if np.allclose(k[:, 2], [0, 0, 1])
                    and not np.allclose(k[2], [0, 0, 1]) else "")
            raise ValueError(f"intrinsics from {source}: K = {k.tolist()} is not a pinhole matrix [[fx, 0, cx], "
                             f"[0, fy, cy], [0, 0, 1]] (row by row; skew not supported).{hint}")
        vals = [k[0, 0], k[1, 1], k[0, 2], k[1, 2]]
    try:
        return Intrinsics(*(float(v) for v in vals))
    except ValueError as exc:
        raise ValueError(f"intrinsics from {source}: {exc}") from exc
