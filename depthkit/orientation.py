"""Images stored sideways with an EXIF orientation tag (phone photos): read upright, as viewers show them.

:func:`depthkit.io.read_image` turns what it decodes :func:`upright` (and says so); :func:`image_size` gives the size it
will read from the file's header alone (``depthkit run`` checks a folder's sizes against intrinsics before any model
loads).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ORIENTATIONS", "exif_orientation", "image_size", "upright"]

_EXIF_ORIENTATION = 0x0112
ORIENTATIONS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down", 5: "transposed",
                6: "rotated 90 degrees clockwise", 7: "transversed", 8: "rotated 90 degrees counter-clockwise"}


def exif_orientation(path) -> int:
    """The EXIF orientation tag (1-8; 1 = upright) of an image file, 1 when it has none."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # not readable by PIL (cv2 decoded it): no EXIF to honour
        return 1
    return int(value) if value in ORIENTATIONS else 1


def image_size(path) -> tuple[int, int] | None:
    """The size (H, W) :func:`depthkit.io.read_image` gives ``path``, read from the file's header (EXIF orientation applied, so a
    sideways-stored photo reads upright), without decoding it; None when the header cannot be read that way."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # not readable by PIL: read_image decides
        return None
    return (w, h) if exif_orientation(path) in (5, 6, 7, 8) else (h, w)


def upright(img: np.ndarray, tag: int) -> np.ndarray:
    """HxWxC ``img`` as stored, rotated/flipped upright per EXIF orientation ``tag`` (1-8; 1 returns it as is)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
           8: lambda a: np.rot90(a, 1)}
    return ops[tag](img) if tag in ops else img
