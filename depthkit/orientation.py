"""Images stored sideways with an EXIF orientation tag (phone photos): read upright, as viewers show them.

:func:`depthkit.io.read_image` turns what it decodes :func:`upright` (and says so); :func:`image_size` gives the size it
will read from the file's header alone (``depthkit run`` checks a folder's sizes against intrinsics before any model
loads).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from depthkit.decode import pil_source
from depthkit.warning_types import DepthkitWarning

__all__ = ["ORIENTATIONS", "decode_tagged_tiff", "exif_orientation", "image_size", "say_oriented", "upright",
           "upright_pil"]

_EXIF_ORIENTATION = 0x0112
ORIENTATIONS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down", 5: "transposed",
                6: "rotated 90 degrees clockwise", 7: "transversed", 8: "rotated 90 degrees counter-clockwise"}


def _tag(im) -> int:
    value = im.getexif().get(_EXIF_ORIENTATION, 1)
    return int(value) if value in ORIENTATIONS else 1


@contextmanager
def _header(path):
    """``path`` opened by Pillow for its header and metadata (:func:`~depthkit.decode.pil_source`), Pillow's own
    warnings of a damaged file ("Corrupt EXIF data") silenced: the decode says more."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(pil_source(path)) as im:
            yield im


def exif_orientation(path) -> int:
    """The EXIF orientation tag (1-8; 1 = upright) of an image file, 1 when it has none."""
    try:
        with _header(path) as im:
            return _tag(im)
    except Exception:  # not readable by PIL (cv2 decoded it): no EXIF to honour
        return 1


def image_size(path) -> tuple[int, int] | None:
    """The size (H, W) :func:`depthkit.io.read_image` gives ``path``, read from the file's header (EXIF orientation
    applied, so a sideways-stored photo reads upright), without decoding it; None when the header cannot be read that
    way, and for a TIFF with an orientation tag (Pillow versions differ on whether its size is given upright)."""
    try:
        with _header(path) as im:
            (w, h), tag, tiff = im.size, _tag(im), im.format == "TIFF"
    except Exception:  # not readable by PIL: read_image decides
        return None
    if tiff and tag != 1:
        return None
    return (w, h) if tag in (5, 6, 7, 8) else (h, w)


def upright(img: np.ndarray, tag: int) -> np.ndarray:
    """``img`` (HxW or HxWxC) as stored, rotated/flipped upright per EXIF orientation ``tag`` (1-8; 1 returns it as
    is)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.swapaxes(np.rot90(a, 2), 0, 1), 8: lambda a: np.rot90(a, 1)}
    return ops[tag](img) if tag in ops else img


def say_oriented(name: str, tag: int, shape: tuple[int, ...], stacklevel: int = 3) -> None:
    """Warn (:class:`~depthkit.warning_types.DepthkitWarning`) that image ``name`` was turned upright per EXIF ``tag`` and
    is read as ``shape`` (H, W, ...), which its sparse depth must match."""
    warnings.warn(f"{name}: applied its EXIF orientation {tag} ({ORIENTATIONS[tag]}); the image is read as "
                  f"{shape[0]}x{shape[1]} (HxW), as viewers show it, and its sparse depth must match that.",
                  DepthkitWarning, stacklevel=stacklevel)


def upright_pil(im):
    """A PIL image upright per its EXIF orientation (said with :func:`say_oriented`), as :func:`depthkit.io.read_image`
    reads the file it came from: the same photo gives the same pixels as a path or as ``Image.open(path)``. An image
    already turned with ``ImageOps.exif_transpose`` has no tag left and is returned as is."""
    tag = _tag(im)
    if tag == 1:
        return im
    from PIL import ImageOps

    out = ImageOps.exif_transpose(im)
    say_oriented("the PIL image", tag, (out.height, out.width), stacklevel=4)
    return out


def decode_tagged_tiff(path, tag: int) -> np.ndarray | None:
    """A TIFF whose orientation ``tag`` is not 1, decoded upright in OpenCV's layout (HxW grey, or HxWx3 / HxWx4 in
    BGR(A) order; uint8 or uint16); None when Pillow cannot decode it.

    OpenCV turns a TIFF's orientation itself for some tags and cannot decode the others, so Pillow decodes these
    files. A Pillow that turns the image while loading drops the tag, and one that does not leaves it, which
    :func:`upright` then applies. Pillow 13 turns an RGB TIFF right for every tag but gives grey, RGBA and 16-bit ones
    with tags 5-8 the stored size: such a file is refused (``ValueError`` saying what to do), never returned sideways.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            stored = (int(im.tag_v2[257]), int(im.tag_v2[256]))  # ImageLength, ImageWidth: H, W as stored
            im.load()
            left, mode = _tag(im), im.mode
            a = np.asarray(im)
    except Exception:
        return None
    if left == tag:
        a = upright(a, tag)
    if a.shape[:2] != (stored if tag in (2, 3, 4) else stored[::-1]):
        raise ValueError(f"TIFF {Path(path).name} is stored {ORIENTATIONS[tag]} (EXIF orientation {tag}), in mode "
                         f"{mode}, and could not be decoded upright here (Pillow turns only RGB TIFFs of this "
                         "orientation reliably). Save it upright (e.g. as PNG, with the rotation applied), then "
                         "run again.")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., [2, 1, 0, 3][:a.shape[2]]]
    return np.ascontiguousarray(a)
