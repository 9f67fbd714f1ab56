"""Array operations shared by the dataset readers: file decoding, resizing, cropping, sparse-input filters.

Conventions as everywhere in depthkit: depth is HxW float32 metres with 0 = missing, images HxWx3 uint8 RGB,
intrinsics in pixels with pixel centres at integer coordinates (:class:`depthkit.geometry.Intrinsics`).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from depthkit.decode import decode_image_file
from depthkit.geometry import Intrinsics

__all__ = ["DatasetLayoutError", "read_text_file", "read_png_raw", "read_png_depth", "read_mask", "read_k_file",
           "image_rng", "name_crc", "resize_sample_arrays", "scatter_sparse", "filter_local_outliers", "marigold_dc_select"]


class DatasetLayoutError(ValueError):
    """A dataset root is missing or does not have the layout its reader expects (names the path and the layout)."""


def read_text_file(path: Path, what: str) -> str:
    """The text of a dataset's list, intrinsics or split file, decoded as UTF-8 (a leading byte-order mark dropped).
    ``what`` names the file's role in the error (e.g. "list file"). A file that is not UTF-8 (saved in another
    encoding, or damaged) is a :class:`DatasetLayoutError` naming it, the line and byte offset of the first byte that
    cannot be decoded and what to do, instead of a ``UnicodeDecodeError`` that names no file."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetLayoutError(
            f"{what} {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line}) "
            f"cannot be decoded ({exc.reason}). Restore the file from the dataset's release, or save it as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _decode(path: Path, what: str) -> np.ndarray | None:
    """:func:`depthkit.decode.decode_image_file`, its damaged-PNG error a :class:`DatasetLayoutError`. An ancillary
    chunk left out for a failed CRC is not said: a dataset's depth units are its layout's, not read from the file."""
    try:
        return decode_image_file(path, what)[0]
    except ValueError as err:
        raise DatasetLayoutError(str(err)) from None


def read_png_raw(path: Path, what: str) -> np.ndarray:
    """A single-channel 16-bit PNG as stored (uint16), with errors that name the file. ``what`` says the file's
    units for the error an 8-bit file gets (e.g. "KITTI depth (value / 256 = metres)"): every dataset's depth is
    16-bit, and an 8-bit file (one re-saved or converted) would otherwise read as depths 256 times too small."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f"file not found: {path}")
    arr = _decode(path, "depth PNG")
    if arr is None:
        raise DatasetLayoutError(f"could not decode {path}: the file is empty, truncated or not an image.")
    if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
        raise DatasetLayoutError(f"{path} is {arr.dtype} with shape {arr.shape}; expected a single-channel 16-bit "
                                 "PNG.")
    if arr.dtype != np.uint16:
        raise DatasetLayoutError(f"{path} is an 8-bit PNG (values {arr.min()}-{arr.max()}); {what} is a 16-bit PNG, "
                                 "and 8 bits cannot hold it. Use the dataset's original 16-bit file (one re-saved or "
                                 "converted to 8 bits has lost its depth).")
    return arr


def read_png_depth(path: Path, units_per_metre: float) -> np.ndarray:
    """16-bit PNG depth divided by ``units_per_metre`` (256 KITTI/VOID/DDAD, 1000 NYU millimetres) -> float32 m."""
    raw = read_png_raw(path, f"depth here (value / {units_per_metre:g} = metres)")
    return (raw.astype(np.float32) / np.float32(units_per_metre)).astype(np.float32)


def read_mask(path: Path) -> np.ndarray:
    """A mask image (1-bit, 8-bit or 16-bit PNG; any channels) -> HxW bool, True where non-zero."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f"mask file not found: {path}")
    arr = _decode(path, "mask")
    if arr is None:
        raise DatasetLayoutError(f"could not decode mask {path}: the file is empty, truncated or not an image.")
    return arr.any(axis=2) if arr.ndim == 3 else arr != 0


def read_k_file(path: Path) -> Intrinsics:
    """Intrinsics from a text file of 4 numbers (fx, fy, cx, cy) or 9 numbers (3x3 K, row-major; a transposed K,
    as some MATLAB exports store it, is recognised by its last column). Commas or whitespace separate numbers."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f"intrinsics file not found: {path}")
    text = read_text_file(path, "intrinsics file")
    try:
        vals = [float(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise DatasetLayoutError(f"intrinsics file {path} must contain numbers only: {exc}") from exc
    if len(vals) == 4:
        return Intrinsics(*vals)
    if len(vals) == 9:
        k = np.asarray(vals, dtype=np.float64).reshape(3, 3)
        if k[0, 2] == 0 and k[1, 2] == 0 and k[2, 0] != 0:
            k = k.T
        return Intrinsics(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
    raise DatasetLayoutError(f"intrinsics file {path} has {len(vals)} numbers; expected 4 (fx fy cx cy) or 9 (3x3 K).")


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The random generator for one image: a function of the protocol seed and the image *name* only, so any
    subset, order or shard of a dataset draws the same points for the same image."""
    if int(seed) < 0:
        raise ValueError(f"sparse seed must be >= 0; received {seed}.")
    return np.random.default_rng([int(seed), name_crc(name)])


def name_crc(name: str) -> int:
    """CRC-32 of an image name's UTF-8 bytes (a seed part). A file name that is not valid UTF-8 reaches Python with
    surrogate escapes (``os.fsdecode``); those stand for its original bytes here instead of raising
    ``UnicodeEncodeError``."""
    return zlib.crc32(name.encode("utf-8", "surrogateescape"))


def scatter_sparse(sparse: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize a sparse map by moving each measured point to the output pixel containing its centre (no point is
    lost to interpolation); where several land on one pixel the nearest (smallest depth) wins."""
    h, w = sparse.shape
    oh, ow = out_hw
    v, u = np.nonzero(sparse > 0)
    out = np.full((oh, ow), np.inf, dtype=np.float32)
    tv = np.minimum(((v + 0.5) * oh / h).astype(np.int64), oh - 1)
    tu = np.minimum(((u + 0.5) * ow / w).astype(np.int64), ow - 1)
    np.minimum.at(out, (tv, tu), sparse[v, u].astype(np.float32))
    out[np.isinf(out)] = 0
    return out


def resize_sample_arrays(image, depth, sparse, masks: dict, intrinsics, out_hw, image_resize: str = "area"):
    """Resize image, GT depth and masks (nearest, pixel-centre exact), sparse (:func:`scatter_sparse`) and
    intrinsics (pixels) to ``out_hw = (H, W)`` pixels. The image is resized as ``image_resize`` says
    (:attr:`depthkit.data.protocols.Protocol.image_resize`): ``"area"`` (area when shrinking, bilinear when
    enlarging) or ``"nearest"`` (pixel-centre nearest, as the GT; OpenCV's ``INTER_NEAREST_EXACT`` = PIL NEAREST)."""
    h, w = image.shape[:2]
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if image_resize == "nearest":
        interp = cv2.INTER_NEAREST_EXACT
    elif image_resize == "area":
        interp = cv2.INTER_AREA if oh <= h and ow <= w else cv2.INTER_LINEAR
    else:
        raise ValueError(f"image_resize must be 'area' or 'nearest'; received {image_resize!r}.")
    image = cv2.resize(image, (ow, oh), interpolation=interp)
    if depth is not None:
        depth = cv2.resize(depth, (ow, oh), interpolation=cv2.INTER_NEAREST_EXACT)
    if sparse is not None:
        sparse = scatter_sparse(sparse, (oh, ow))
    masks = {k: cv2.resize(m.astype(np.uint8), (ow, oh), interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)
             for k, m in masks.items()}
    if intrinsics is not None:
        intrinsics = intrinsics.scaled(ow / w, oh / h)
    return image, depth, sparse, masks, intrinsics


def filter_local_outliers(sparse: np.ndarray, window: int = 7, threshold: float = 1.5) -> np.ndarray:
    """Remove sparse points that lie far behind their neighbours (LiDAR points seen through foreground objects).

    The rule of VPP4DC's heuristic as Marigold-DC applies it to KITTI DC and DDAD (``window = 7``, ``threshold =
    1.5`` m): for every measured pixel q, ``m(q)`` is the smallest depth > 1e-3 m in the ``window x window`` box
    around q; a measured pixel p is removed when ``d(p) - min{m(q) : q measured, p in box(q)} > threshold``. Because
    boxes are symmetric this is two minimum filters. Returns a float32 copy (metres, 0 = missing).
    """
    d = np.asarray(sparse, dtype=np.float64)
    measured = d > 0
    box_min = ndimage.minimum_filter(np.where(d > 1e-3, d, np.inf), size=window, mode="constant", cval=np.inf)
    reach_min = ndimage.minimum_filter(np.where(measured, box_min, np.inf), size=window, mode="constant",
                                       cval=np.inf)
    out = np.asarray(sparse, dtype=np.float32).copy()
    out[measured & (d - reach_min > threshold)] = 0
    return out


def marigold_dc_select(mask: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Marigold-DC's point selection (``deterministic_select_k_true``), reproduced so that iBims-1 gets the very
    points its published numbers used: the row-major list of True pixels is shuffled by NumPy's legacy global-state
    generator seeded with ``seed`` (the same seed for every image) and the first ``k`` are kept (all if fewer).
    Returns HxW bool."""
    mask = np.asarray(mask, dtype=bool)
    idx = np.argwhere(mask)
    out = np.zeros_like(mask)
    if k <= 0 or len(idx) == 0:
        return out
    np.random.RandomState(seed).shuffle(idx)  # legacy RandomState: bit-identical to np.random.seed + shuffle
    sel = idx[: min(k, len(idx))]
    out[sel[:, 0], sel[:, 1]] = True
    return out
