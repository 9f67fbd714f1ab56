"""Reading and writing images, depth maps, colour visualisations and point clouds.

Conventions: images are HxWx3 uint8 RGB (OpenCV reads BGR; converted here); depth is HxW float32 metres with
0 = missing. Integer depth (a 16-bit PNG or an integer ``.npy``: raw sensor units) is divided by its ``depth_scale``
(units per metre: KITTI/VOID 256, millimetres 1000) and refused without one. 16-bit PNGs written here store
``round(depth * scale)`` and record ``scale`` in a ``depth_scale`` text chunk, which :func:`read_depth` reads back.
Images carrying an EXIF orientation (phone photos) are rotated upright as they are read, with a
:class:`DepthkitWarning` saying so. open3d is imported lazily (and its ``libusb-1.0`` dependency is preloaded from
the ``libusb-package`` wheel, so it imports on a machine without the system library; :func:`preload_libusb` does the
same for a user's own ``import open3d``).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np

from depthkit.colormap import colorize, legend_labels  # noqa: F401  (legend_labels: public here too)
from depthkit.decode import decode_image_file
from depthkit.float32_metres import float32_metres, unmasked  # noqa: F401  (unmasked: re-exported)
from depthkit.geometry import backproject
from depthkit.intrinsics import parse_intrinsics
from depthkit.npy_file import load_npy_depth
from depthkit.orientation import decode_tagged_tiff, exif_orientation, say_oriented, upright
from depthkit.png_scale import (  # noqa: F401  (PNG_SCALES, PNG_SCALE_KEY, png_depth_scale: public here too)
    PNG_SCALE_KEY,
    PNG_SCALES,
    choose_png_scale,
    fitting_png_scale,
    keeps_every_pixel,
    png_depth_scale,
)
from depthkit.sparse_resize import scatter_points, target_size
from depthkit.warning_types import DepthkitWarning, UnitWarning  # noqa: F401  (public here too)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_SUFFIXES = (".npy", ".png")
LIKELY_NOT_METRES = 500.0
"""A float depth map whose median valid value exceeds this many 'metres' is almost surely in another unit."""
LIKELY_NOT_DEPTH = 1.0e6  # ... and beyond this, no common unit explains it (1 km as millimetres): not depth, or µm


def _cv2():
    import cv2

    return cv2


def _as_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected a file path (str or Path); received {type(path).__name__}")
    return Path(path)


def read_image(path) -> np.ndarray:
    """Read a colour image file as HxWx3 uint8 RGB (grey images are replicated; alpha is dropped; 16-bit scaled)."""
    path = _as_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {_not_a_file(path)}: {path}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(
            f"unsupported image file {path.name!r}: allowed suffixes are {', '.join(IMAGE_SUFFIXES)}. "
            "Convert the image to PNG or JPEG."
        )
    tag = exif_orientation(path)
    tagged_tiff = tag != 1 and path.suffix.lower() in (".tif", ".tiff")  # decoded upright (orientation.py)
    img = decode_tagged_tiff(path, tag) if tagged_tiff else _decode_file(path, "image")
    if img is None:
        raise ValueError(f"could not decode image {path}: the file is empty, truncated or not an image.")
    if img.dtype == np.uint16:
        img = to_8bit(img)
    elif img.dtype != np.uint8:
        raise ValueError(f"image {path} has dtype {img.dtype}; expected 8- or 16-bit channels.")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, 2::-1]
    elif img.shape[2] == 3:
        img = img[:, :, ::-1]
    else:
        raise ValueError(f"image {path} has {img.shape[2]} channels; expected 1, 3 or 4.")
    if tag != 1:  # phones store pixels sideways plus a tag; viewers apply it, so a user's sparse map is upright
        img = img if tagged_tiff else upright(img, tag)
        say_oriented(path.name, tag, img.shape)
    return np.ascontiguousarray(img)


def to_8bit(levels: np.ndarray) -> np.ndarray:
    """16-bit image levels (0..65535, any shape) as uint8 0..255: divided by 257 (65535 -> 255) and rounded, as every
    16-bit image depthkit reads (a file, a PIL image in mode I;16) is brought to 8 bits."""
    return (np.asarray(levels, dtype=np.float64) / 257.0 + 0.5).astype(np.uint8)


def _decode_file(path: Path, what: str) -> np.ndarray | None:
    """:func:`depthkit.decode.decode_image_file`, warning about what it left out of a PNG (chunks that failed their
    CRC, image data past the image's end) or what libjpeg skipped in a JPEG."""
    img, notes = decode_image_file(path, what)
    if notes:
        import warnings

        warnings.warn(f"{path.name}: {' '.join(notes)}", DepthkitWarning, stacklevel=3)
    return img


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as a file: "not found", or what it is instead."""
    if path.is_dir():
        return "is a folder, not a file"
    if path.is_symlink() and not path.exists():
        return f"is a link to {os.readlink(path)}, which does not exist"
    return "is not a regular file (a device or pipe)" if path.exists() else "not found"


def depth_to_metres(arr: np.ndarray, depth_scale: float | None = None, what: str = "sparse") -> np.ndarray:
    """HxW depth as float32 metres: integer arrays (raw sensor units) are divided by ``depth_scale``.

    Integer input without a ``depth_scale`` raises ``ValueError``; float input is taken as metres (``depth_scale``
    is not applied to it, with a :class:`UnitWarning` saying so: one scale serves every input of a call, e.g. an
    integer sparse PNG and a float depth map) and warns when its median looks like another unit. float64 input is rounded to float32
    (about 7 significant digits: 0.1 mm at 1 km), the precision every output keeps; finite values beyond float32's
    range, and positive ones that would round to 0, are refused.
    """
    arr = np.asarray(arr)
    if depth_scale is not None and (isinstance(depth_scale, (bool, np.bool_))
                                    or not isinstance(depth_scale, (int, float, np.integer, np.floating))):
        raise ValueError(f"depth scale must be a number of units per metre (1000 for millimetres, 256 for KITTI/VOID "
                         f"PNGs); received {depth_scale!r} ({type(depth_scale).__name__}).")
    if depth_scale is not None and not (math.isfinite(depth_scale) and depth_scale > 0):  # for any input: a scale
        # given with a float map is not applied, but one that could never be right is a mistake to say, not to skip
        raise ValueError(f"depth scale must be a finite number > 0 units per metre; received {depth_scale}.")
    if arr.dtype.kind in "ui":
        if depth_scale is None:
            top = int(arr.max(initial=0))
            raise ValueError(
                f"{what} holds integers ({arr.dtype}, max {top}), i.e. raw sensor units, and no depth scale was "
                "given. Give its scale in units per metre (1000 for millimetres, 256 for KITTI/VOID PNGs): "
                "`depthkit run --depth-scale`, or depth_scale=... in Python; or save float metres (what a dataset "
                "folder's .npy files must hold)."
            )
        metres = arr.astype(np.float64) / float(depth_scale)
        units = arr[arr > 0]
        if units.size:
            low, high = float(units.min()) / float(depth_scale), float(units.max()) / float(depth_scale)
            if not (high <= float(np.finfo(np.float32).max) and np.float32(low) > 0):
                raise ValueError(f"at depth scale {depth_scale:g} units per metre, {what}'s values ({int(units.min())}"
                                 f"-{int(units.max())} units) would be {low:.3g}-{high:.3g} m, which float32 metres "
                                 "cannot hold; check --depth-scale (1000 for millimetres, 256 for KITTI/VOID PNGs).")
            median = float(np.median(units)) / float(depth_scale)
            if median > LIKELY_NOT_METRES:
                import warnings

                inverse = (f" A scale below 1 makes each unit more than a metre: if {depth_scale:g} is metres per unit "
                           f"(as RealSense reports it), pass {1 / depth_scale:g}." if depth_scale < 1 else "")
                warnings.warn(f"{what} at depth scale {depth_scale:g} units per metre has median {median:.0f} m, far "
                              f"beyond any scene: the scale looks wrong (1000 for millimetres, 256 for KITTI/VOID "
                              f"PNGs).{inverse}", UnitWarning, stacklevel=3)
        return metres.astype(np.float32)
    if arr.dtype.kind != "f":
        hint = (" A mask says where depth was measured, not how far: pass the depths (0 where missing)."
                if arr.dtype == bool else " Convert it to float32 metres (0 = missing).")
        raise ValueError(f"{what} has dtype {arr.dtype}; expected float metres or integer sensor units.{hint}")
    out = float32_metres(arr, what)
    valid = np.isfinite(out) & (out > 0)
    import warnings

    if depth_scale is not None:  # one scale serves a call's every input; this one is metres already
        warnings.warn(f"{what} holds floats, read as metres: the depth scale {depth_scale:g} given converts integer "
                      "sensor units only and was not applied to it. If it holds sensor units stored as floats, "
                      f"divide it by {depth_scale:g} (or save it as integers).", UnitWarning, stacklevel=3)
    if valid.any():
        median = float(np.median(out[valid].astype(np.float64)))  # float32 overflows averaging two near its max
        if median > LIKELY_NOT_DEPTH:
            warnings.warn(f"{what} is float with median {median:.3g} 'metres': no common depth unit explains that "
                          f"({median / 1000:.3g} m as millimetres, {median / 1e6:.3g} m as micrometres). Check that it "
                          "holds depth (not raw bytes read as floats), in metres.", UnitWarning, stacklevel=3)
        elif median > LIKELY_NOT_METRES:
            warnings.warn(f"{what} is float with median {median:.0f} 'metres', far beyond any scene: it looks like "
                          "millimetres (divide by 1000) or 1/256 m KITTI units (divide by 256). Depth must be "
                          "metres.", UnitWarning, stacklevel=3)
    return out


def check_depth_values(depth: np.ndarray, what: str = "sparse") -> None:
    """Refuse (``ValueError``) NaN / inf and negative values in ``depth`` (metres): missing measurements are 0, and
    anything else would be silently dropped or kept as garbage."""
    bad = ~np.isfinite(depth)
    if bad.any():
        raise ValueError(f"{what} has {int(bad.sum())} NaN/inf values; mark missing measurements with 0 instead.")
    if (depth < 0).any():
        raise ValueError(f"{what} has {int((depth < 0).sum())} negative values (min {depth.min():.3f}); depth is "
                         "metres >= 0 with 0 = missing.")


def read_depth(path, depth_scale: float | None = None, what: str = "depth") -> np.ndarray:
    """Read a depth map as HxW float32 metres (0 = missing).

    ``.npy``: a 2-D array (or HxWx1); float arrays are metres as-is (a ``depth_scale`` given with one is not applied,
    with a warning), integer arrays (e.g. uint16 millimetres) are divided by ``depth_scale`` (units per metre),
    which they require. NaN/inf are rejected later, not zeroed.
    ``.png``: a single-channel 8/16-bit PNG divided by ``depth_scale``; without one, the scale recorded in the PNG's
    ``depth_scale`` text chunk (PNGs depthkit writes) is used, else it is an error (the encoding is not
    self-describing).
    """
    path = _as_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {_not_a_file(path)}: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = load_npy_depth(path)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise ValueError(f"depth array {path} has shape {arr.shape}; expected HxW (metres, 0 = missing).")
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"depth array {path} has dtype {arr.dtype}; expected a numeric array in metres.")
        return depth_to_metres(arr, depth_scale, what=f"{what} file {path.name}")
    if suffix == ".png":
        arr = _decode_file(path, "depth PNG")
        if arr is None:
            raise ValueError(f"could not decode depth PNG {path}: the file is empty, truncated or not a PNG.")
        if arr.ndim != 2 or arr.dtype not in (np.uint16, np.uint8):
            raise ValueError(
                f"depth PNG {path} is {arr.dtype} with shape {arr.shape}; expected a single-channel 16-bit PNG."
            )
        recorded = png_depth_scale(path)
        usable = recorded is not None and math.isfinite(recorded) and recorded > 0
        if depth_scale is None and recorded is not None and not usable:
            raise ValueError(f"depth PNG {path} records depth_scale {recorded:g} in its text chunk, which is no scale "
                             "(units per metre, a finite number > 0). Give the file's true scale: --depth-scale "
                             "(depth_scale=... in Python).")
        if depth_scale is None:
            depth_scale = recorded
        elif (usable and isinstance(depth_scale, (int, float, np.number))
              and not isinstance(depth_scale, bool) and float(depth_scale) != recorded):
            import warnings

            warnings.warn(f"{what} PNG {path.name} records depth_scale {recorded:g} units per metre, but "
                          f"{depth_scale:g} was given and is used (depth {recorded / float(depth_scale):g} times "
                          "what the file says). Leave --depth-scale out to use the file's.", UnitWarning,
                          stacklevel=2)
        return depth_to_metres(arr, depth_scale, what=f"{what} PNG {path.name}")
    raise ValueError(
        f"unsupported depth file {path.name!r}: allowed are .npy (float metres, or integers with a depth scale) and "
        "16-bit .png with a depth scale."
    )


@contextlib.contextmanager
def atomic_write(path, suffix: str | None = None):
    """Write ``path`` atomically: yields a temporary path beside it (a hidden name ending in ``suffix``, default the
    path's own, so writers that go by the suffix pick the format) for the caller to write; on success it replaces
    ``path``, and on any error it is removed, so a failed write leaves neither a partial file nor a stray temporary.
    A folder already at ``path`` is an ``IsADirectoryError`` that says so before anything is written."""
    path = _as_path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: a folder of that name is in the way. Move or rename the "
                                "folder, or write to another --out folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix or path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_output_parent(path, what: str = "--out") -> None:
    """Raise ``ValueError`` when output ``path`` cannot be created because an existing part of its folder path is a
    file (``notes.txt/out.json``), before any work is done; missing folders are fine (they are created)."""
    path = _as_path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {path}: {parent} is a file, not a folder, so nothing can be written under "
                                 "it. Give a path inside a folder (missing folders are created).")
            return


def strict_json(value):
    """``value`` (nested dicts/lists) with every non-finite float replaced by None, so ``json.dumps(...,
    allow_nan=False)`` writes strict JSON (``null``, which every JSON reader accepts) instead of ``NaN`` /
    ``Infinity``. A NaN is an undefined number (a score with nothing to score), an infinity an unbounded limit.
    numpy scalars and arrays become Python numbers and lists first (``np.float32`` is no ``float`` to ``json``)."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_depth_npy(path, depth: np.ndarray) -> Path:
    """Write HxW float32 metres as ``.npy`` (atomically)."""
    path = _as_path(path)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(depth, dtype=np.float32))
    return path


def write_depth_png16(path, depth: np.ndarray, scale: float | None = 1000.0) -> Path:
    """Write depth (HxW metres) as a 16-bit PNG storing ``round(depth * scale)``, with ``scale`` (units per metre)
    recorded in its ``depth_scale`` text chunk. ``scale=None`` chooses one that fits (:func:`choose_png_scale`).

    Values beyond 65535 / scale metres cannot be represented: raises instead of wrapping around. Valid pixels
    below half a unit are written as 0 (missing) with a :class:`DepthkitWarning` (a given ``scale`` under which a
    fitting one would keep them is refused by :func:`choose_png_scale`).
    """
    from PIL import Image, PngImagePlugin

    depth = np.asarray(depth, dtype=np.float64)
    scale = choose_png_scale(depth, scale)
    q = np.round(np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0) * scale)
    _warn_png_loss(path, depth, q, scale)
    info = PngImagePlugin.PngInfo()
    text = f"{scale:g}" if float(f"{scale:g}") == scale else repr(float(scale))  # "1000"; every digit of 1236.123456
    info.add_text(PNG_SCALE_KEY, text)
    info.add_text("depth_unit", f"value / {text} = metres; 0 = missing")
    path = _as_path(path)
    with atomic_write(path) as tmp:
        Image.fromarray(np.clip(q, 0, 65535).astype(np.uint16)).save(tmp, format="PNG", pnginfo=info)
    return path


def _warn_png_loss(path, depth: np.ndarray, q: np.ndarray, scale: float) -> None:
    """Warn when valid ``depth`` pixels (metres, > 0) became 0 in ``q`` = round(depth * ``scale``), the PNG's
    values, saying which ``--png-scale`` would keep them, if any."""
    lost = int(((q == 0) & np.isfinite(depth) & (depth > 0)).sum())
    if not lost:
        return
    valid = depth[np.isfinite(depth) & (depth > 0)]
    fit = fitting_png_scale(float(valid.max()))
    advice = ("no 16-bit scale holds this depth range" if not keeps_every_pixel(valid, fit)
              else f"--png-scale {fit:g} keeps them")
    import warnings

    warnings.warn(f"{Path(path).name}: {lost} valid pixel(s) below {0.5 / scale:g} m are stored as 0 (missing) at "
                  f"{scale:g} units per metre; {advice}. The .npy keeps every value.", DepthkitWarning, stacklevel=3)


def hxw_depth_map(depth: np.ndarray, what: str) -> np.ndarray:
    """``depth`` as HxW: an HxWx1 map loses its last axis; any other shape, or no pixel at all, is a ``ValueError``
    naming ``what`` and the shape received."""
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2 or not depth.size:
        raise ValueError(f"{what} has shape {depth.shape}; expected HxW metres (0 = missing), at least 1x1.")
    return depth


def resize_sparse(sparse: np.ndarray, shape: tuple[int, int], what: str = "sparse", working_size: bool = False,
                  depth_scale: float | None = None) -> np.ndarray:
    """Move sparse depth (HxW metres, 0 = missing) to ``shape`` = (H', W'), each point to its scaled pixel centre
    (:func:`~depthkit.sparse_resize.scatter_points`): of points sharing a pixel the nearest wins, and a
    :class:`DepthkitWarning` counts them. Another :class:`DepthkitWarning` says when the two aspects differ by over 2 %
    (the inputs may cover different fields of view); a map whose aspect is the target's turned sideways (a photo read
    upright by its EXIF orientation, the map not) is refused, a ``ValueError``. ``working_size=True`` silences both
    warnings and skips that check: the caller shrinks the image to ``shape`` the same way (a model's working size;
    merging is then on purpose, and an aspect change from rounding a small side says nothing about the user's
    inputs).

    ``sparse`` is checked first as at the image's size (:func:`depth_to_metres`, :func:`check_depth_values`, as
    :func:`depthkit.pipeline.check_sparse` does): NaN, inf, negative values and integer units are refused with the
    same messages rather than dropped as missing (integer units are divided by ``depth_scale``, units per metre,
    when given); an HxWx1 map is taken as HxW and a numpy masked array's masked pixels are missing, as there.
    ``shape`` may be an image's ``shape`` (H', W', 3): its first two are used.
    """
    sparse = depth_to_metres(hxw_depth_map(np.asarray(unmasked(sparse)), what), depth_scale, what=what)
    check_depth_values(sparse, what)
    h, w = sparse.shape
    oh, ow = target_size(shape, what)
    import warnings

    if not working_size:
        _refuse_sideways_sparse((h, w), (oh, ow), what)
    # a 2 % aspect difference: different fields of view, or a crop
    if not working_size and abs(math.log((w / h) / (ow / oh))) > 0.02:
        warnings.warn(f"{what} is {h}x{w} (aspect {w / h:.3f}) and is scattered to {oh}x{ow} (aspect {ow / oh:.3f}): "
                      "its points move by different factors across and down. Scaling assumes both cover the same "
                      "field of view; crop or pad one to match the other first if they do not.", DepthkitWarning,
                      stacklevel=2)
    out, merged = scatter_points(sparse, (oh, ow))
    if merged and not working_size:
        left = np.count_nonzero(out)
        warnings.warn(f"{what} is {h}x{w} and is scattered to {oh}x{ow}: {merged} of {np.count_nonzero(sparse)} measured "
                      "points fell on a pixel shared with another and were merged (kept: the nearest depth of each "
                      f"such pixel), leaving {left} point{'' if left == 1 else 's'}.", DepthkitWarning, stacklevel=2)
    return out


def _refuse_sideways_sparse(src: tuple[int, int], dst: tuple[int, int], what: str) -> None:
    """Refuse (``ValueError``) scattering a sparse map of ``src`` = (H, W) pixels to ``dst`` = (H', W') when its
    aspect is the target's turned sideways (within 2 %, and not within 2 % of the target's own): no resolution change
    does that, a map in the other orientation does (a phone photo read upright by its EXIF orientation, the map
    still sideways). Scattering would stretch it one way and squeeze it the other: every point off its pixel."""
    (h, w), (oh, ow) = src, dst
    if abs(math.log((w / h) * (ow / oh))) > 0.02 or abs(math.log((w / h) / (ow / oh))) <= 0.02:
        return
    raise ValueError(f"{what} is {h}x{w} (HxW, aspect {w / h:.3f}) and is to be scattered to {oh}x{ow} (aspect "
                     f"{ow / oh:.3f}): it has the image's shape turned sideways, which no resolution change gives, "
                     "so scattering would put every point on the wrong pixel. If the image is a photo with an EXIF "
                     "orientation, depthkit read it upright as viewers show it: give the sparse map in that "
                     "orientation (e.g. turned with numpy.rot90 as the photo's tag says), then run again.")


def write_image(path, image: np.ndarray) -> Path:
    """Write HxWx3 uint8 RGB to an image file (format from the suffix)."""
    path = _as_path(path)
    cv2 = _cv2()
    with atomic_write(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(np.asarray(image)[:, :, ::-1])):
            raise OSError(f"could not write {path}")
    return path


def write_colorized(path, depth: np.ndarray, **kwargs) -> Path:
    """Write :func:`colorize` output (with a metres legend) as an image file."""
    return write_image(path, colorize(depth, **kwargs))


def preload_libusb() -> bool:
    """Load the ``libusb-1.0`` bundled by the ``libusb-package`` wheel into the process, so ``import open3d`` works
    on a machine without the system library. Returns True when it was loaded. Call it before your own
    ``import open3d`` (``import depthkit.io; depthkit.io.preload_libusb()``), or install ``libusb-1.0-0``."""
    import ctypes

    try:
        import libusb_package

        ctypes.CDLL(str(libusb_package.get_library_path()), mode=ctypes.RTLD_GLOBAL)
        return True
    except (ImportError, OSError, TypeError):  # the system library may exist; open3d's own error is clear then
        return False


def _open3d():
    preload_libusb()
    import open3d

    return open3d


def _check_point_cloud_inputs(depth: np.ndarray, image) -> None:
    """Refuse (``ValueError``) what :func:`write_point_cloud` cannot turn into a right cloud: ``depth`` not HxW,
    with NaN or inf (points at infinity), or with no pixel > 0; ``image`` not HxWx3 uint8 RGB of the depth's size
    (each point takes its pixel's colour)."""
    if depth.ndim != 2:
        raise ValueError(f"the point cloud's depth has shape {depth.shape}; expected HxW metres (0 = missing).")
    if not np.isfinite(depth).all():
        raise ValueError(f"the point cloud's depth holds {np.count_nonzero(~np.isfinite(depth))} NaN or inf value(s); "
                         "expected finite metres with 0 = missing. Set them to 0 first.")
    if not (depth > 0).any():
        raise ValueError(f"the point cloud's depth ({depth.shape[0]}x{depth.shape[1]}) has no pixel > 0: no point to "
                         "write (0 = missing).")
    if image is None:
        return
    image = np.asarray(image)
    if image.shape != (*depth.shape, 3) or image.dtype != np.uint8:
        raise ValueError(f"the point cloud's image is {'x'.join(map(str, image.shape))} {image.dtype}; expected "
                         f"{depth.shape[0]}x{depth.shape[1]}x3 uint8 RGB, the depth's size (as read_image gives), "
                         "each point coloured by its pixel. Pass the image the depth was made from, or image=None.")


def write_point_cloud(path, depth: np.ndarray, intrinsics, image: np.ndarray | None = None) -> Path:
    """Back-project depth (HxW metres, 0 = missing) with ``intrinsics`` and write a ``.ply`` point cloud: one point
    per pixel > 0 (:func:`~depthkit.geometry.backproject`), coloured by ``image`` (HxWx3 uint8 RGB of the same size)
    when given. Depth with NaN or inf, or without a pixel > 0, and an image of another size or type, are refused."""
    intr = parse_intrinsics(intrinsics)
    depth = np.asarray(depth, np.float32)
    _check_point_cloud_inputs(depth, image)
    pts = backproject(depth, intr)
    o3d = _open3d()
    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(pts.astype(np.float64))
    if image is not None:
        m = depth > 0
        pcd.colors = o3d.utility.Vector3dVector(np.asarray(image)[m].astype(np.float64) / 255.0)
    path = _as_path(path)
    with atomic_write(path, suffix=".ply") as tmp:
        if not o3d.io.write_point_cloud(str(tmp), pcd, write_ascii=False):
            raise OSError(f"could not write point cloud {path}")
    return path


def read_point_cloud(path) -> np.ndarray:
    """Read a ``.ply`` point cloud's points as Nx3 float64 (for checks and tools)."""
    o3d = _open3d()
    return np.asarray(o3d.io.read_point_cloud(str(path)).points)
