"""Reading and writing images, depth maps, colour visualisations and point clouds.

Conventions: images are HxWx3 uint8 RGB (OpenCV reads BGR; converted here); depth is HxW float32 metres with
0 = missing. 16-bit PNG depth stores ``round(depth * scale)``: KITTI/VOID use 256 per metre, NYU-style millimetres
1000. open3d is imported lazily (and its ``libusb-1.0`` dependency is preloaded from the ``libusb-package`` wheel,
so it imports on a machine without the system library).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from depthkit.geometry import Intrinsics, backproject

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_SUFFIXES = (".npy", ".png")


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
        raise FileNotFoundError(f"image file not found: {path}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(
            f"unsupported image file {path.name!r}: allowed suffixes are {', '.join(IMAGE_SUFFIXES)}. "
            "Convert the image to PNG or JPEG."
        )
    cv2 = _cv2()
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"could not decode image {path}: the file is empty, truncated or not an image.")
    if img.dtype == np.uint16:
        img = (img / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"image {path} has dtype {img.dtype}; expected 8- or 16-bit channels.")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.shape[2] != 3:
        raise ValueError(f"image {path} has {img.shape[2]} channels; expected 1, 3 or 4.")
    return np.ascontiguousarray(img[:, :, ::-1])


def read_depth(path, depth_scale: float | None = None) -> np.ndarray:
    """Read a depth map as HxW float32 metres (0 = missing).

    ``.npy``: a 2-D array (or HxWx1) in metres, used as-is (NaN/inf are rejected, not silently zeroed).
    ``.png``: a 16-bit single-channel PNG divided by ``depth_scale`` (units per metre: 256 KITTI/VOID, 1000 mm);
    required for PNG because the encoding is not self-describing.
    """
    path = _as_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # numpy raises several types for corrupt files
            raise ValueError(f"could not read depth array {path}: {exc}. Save it with numpy.save.") from exc
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise ValueError(f"depth array {path} has shape {arr.shape}; expected HxW (metres, 0 = missing).")
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"depth array {path} has dtype {arr.dtype}; expected a numeric array in metres.")
        return arr.astype(np.float32)
    if suffix == ".png":
        if depth_scale is None or not depth_scale > 0:
            raise ValueError(
                f"reading depth PNG {path.name} needs depth_scale > 0 (units per metre); received {depth_scale}. "
                "Pass --depth-scale 256 for KITTI/VOID or 1000 for millimetre PNGs."
            )
        cv2 = _cv2()
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ValueError(f"could not decode depth PNG {path}: the file is empty, truncated or not a PNG.")
        if arr.ndim != 2 or arr.dtype not in (np.uint16, np.uint8):
            raise ValueError(
                f"depth PNG {path} is {arr.dtype} with shape {arr.shape}; expected a single-channel 16-bit PNG."
            )
        return (arr.astype(np.float32) / np.float32(depth_scale)).astype(np.float32)
    raise ValueError(
        f"unsupported depth file {path.name!r}: allowed are .npy (float metres) and 16-bit .png with a depth scale."
    )


def _atomic_target(path) -> tuple[Path, Path]:
    path = _as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


def write_depth_npy(path, depth: np.ndarray) -> Path:
    """Write HxW float32 metres as ``.npy`` (atomically)."""
    path, tmp = _atomic_target(path)
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(depth, dtype=np.float32))
    os.replace(tmp, path)
    return path


def write_depth_png16(path, depth: np.ndarray, scale: float = 1000.0) -> Path:
    """Write depth as a 16-bit PNG storing ``round(depth * scale)`` (default millimetres).

    Values beyond 65535 / scale metres cannot be represented: raises instead of wrapping around.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if not scale > 0:
        raise ValueError(f"png scale must be > 0 (units per metre); received {scale}")
    q = np.round(np.nan_to_num(depth, nan=0.0, posinf=0.0) * scale)
    if q.max(initial=0) > 65535:
        raise ValueError(
            f"depth up to {depth.max():.3f} m does not fit a 16-bit PNG at scale {scale} "
            f"(max {65535 / scale:.3f} m). Use a smaller --png-scale (e.g. 256 for outdoor scenes)."
        )
    path, tmp = _atomic_target(path)
    cv2 = _cv2()
    if not cv2.imwrite(str(tmp), np.clip(q, 0, 65535).astype(np.uint16)):
        raise OSError(f"could not write {path}")
    os.replace(tmp, path)
    return path


def write_image(path, image: np.ndarray) -> Path:
    """Write HxWx3 uint8 RGB to an image file (format from the suffix)."""
    path, tmp = _atomic_target(path)
    cv2 = _cv2()
    if not cv2.imwrite(str(tmp), np.ascontiguousarray(np.asarray(image)[:, :, ::-1])):
        raise OSError(f"could not write {path}")
    os.replace(tmp, path)
    return path


def colorize(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None, legend: bool = True,
             colormap: str = "turbo") -> np.ndarray:
    """Colour-map depth (metres) to HxWx3 uint8 RGB, near = warm; missing pixels black.

    Range defaults to the 2nd/98th percentiles of valid depth. With ``legend`` a colour bar labelled in metres is
    appended on the right (the output is then wider than the input).
    """
    cv2 = _cv2()
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if valid.any():
        lo, hi = np.percentile(depth[valid], [2, 98])
    else:
        lo, hi = 0.0, 1.0
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
    bar_w, text_w = max(8, h // 24), 72
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None]  # top = vmin (near)
    bar = cv2.applyColorMap(((1 - ramp) * 255).astype(np.uint8).repeat(bar_w, 1), cmap[colormap])[:, :, ::-1]
    panel = np.full((h, bar_w + text_w, 3), 255, np.uint8)
    panel[:, :bar_w] = bar
    n_ticks = 5 if h >= 120 else 2
    scale = max(0.3, min(0.5, h / 600))
    for i in range(n_ticks):
        frac = i / (n_ticks - 1)
        y = int(round(frac * (h - 1)))
        label = f"{vmin + frac * (vmax - vmin):.2f} m"
        ty = min(max(y + 4, 10), h - 3)
        cv2.putText(panel, label, (bar_w + 3, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([rgb, panel], axis=1)


def write_colorized(path, depth: np.ndarray, **kwargs) -> Path:
    """Write :func:`colorize` output (with a metres legend) as an image file."""
    return write_image(path, colorize(depth, **kwargs))


def parse_intrinsics(spec) -> Intrinsics:
    """Intrinsics from ``"fx,fy,cx,cy"``, an :class:`Intrinsics`, a 4-sequence, or a file.

    Files: JSON with keys ``fx, fy, cx, cy`` (or ``K``: 3x3), or TXT with 4 numbers or a 3x3 matrix (9 numbers).
    """
    if isinstance(spec, Intrinsics):
        return spec
    if isinstance(spec, (list, tuple, np.ndarray)):
        vals = [float(v) for v in np.asarray(spec).ravel()]
        return _intrinsics_from_numbers(vals, f"sequence {list(spec)!r}")
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"intrinsics must be 'fx,fy,cx,cy', a file path or Intrinsics; received {type(spec).__name__}")
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() in (".json", ".txt") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"intrinsics file not found: {path}")
        raw = path.read_text()
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"intrinsics file {path} is not valid JSON: {exc}") from exc
            if isinstance(data, dict) and all(k in data for k in ("fx", "fy", "cx", "cy")):
                return Intrinsics(*(float(data[k]) for k in ("fx", "fy", "cx", "cy")))
            if isinstance(data, dict) and "K" in data:
                return _intrinsics_from_numbers([float(v) for v in np.asarray(data["K"]).ravel()], str(path))
            raise ValueError(f"intrinsics JSON {path} needs keys fx, fy, cx, cy (pixels) or a 3x3 'K'.")
        try:
            vals = [float(v) for v in raw.replace(",", " ").split()]
        except ValueError as exc:
            raise ValueError(f"intrinsics file {path} must contain numbers only: {exc}") from exc
        return _intrinsics_from_numbers(vals, str(path))
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise ValueError(f"could not parse intrinsics {text!r}: expected 'fx,fy,cx,cy' in pixels or a file") from exc
    return _intrinsics_from_numbers(vals, repr(text))


def _intrinsics_from_numbers(vals: list[float], source: str) -> Intrinsics:
    if len(vals) == 4:
        return Intrinsics(*vals)
    if len(vals) == 9:
        k = np.asarray(vals).reshape(3, 3)
        return Intrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    raise ValueError(
        f"intrinsics from {source} have {len(vals)} numbers; expected 4 (fx,fy,cx,cy) or 9 (a 3x3 matrix K)."
    )


def _open3d():
    import ctypes

    try:
        import libusb_package

        ctypes.CDLL(str(libusb_package.get_library_path()), mode=ctypes.RTLD_GLOBAL)
    except (ImportError, OSError):  # the system library may exist; open3d's own error is clear then
        pass
    import open3d

    return open3d


def write_point_cloud(path, depth: np.ndarray, intrinsics, image: np.ndarray | None = None) -> Path:
    """Back-project depth (HxW metres) with ``intrinsics`` and write a ``.ply`` point cloud (coloured by ``image``)."""
    intr = parse_intrinsics(intrinsics)
    depth = np.asarray(depth, np.float32)
    pts = backproject(depth, intr)
    o3d = _open3d()
    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(pts.astype(np.float64))
    if image is not None:
        m = depth > 0
        pcd.colors = o3d.utility.Vector3dVector(np.asarray(image)[m].astype(np.float64) / 255.0)
    path, tmp = _atomic_target(path)
    tmp = tmp.with_suffix(".ply")
    if not o3d.io.write_point_cloud(str(tmp), pcd, write_ascii=False):
        raise OSError(f"could not write point cloud {path}")
    os.replace(tmp, path)
    return path


def read_point_cloud(path) -> np.ndarray:
    """Read a ``.ply`` point cloud's points as Nx3 float64 (for checks and tools)."""
    o3d = _open3d()
    return np.asarray(o3d.io.read_point_cloud(str(path)).points)
