"""iBims-1 (Koch et al., 2018): 100 indoor images with laser-scanned depth, validity masks and depth-edge annotations.

Read from the PNG release ``ibims1_core_raw`` (default) or the MATLAB release ``ibims1_core_mat`` (what Marigold-DC
processes; one ``.mat`` per image holding a struct ``data`` with fields ``rgb``, ``depth``, ``calib``,
``mask_invalid``, ``mask_transp``, ``edges``)::

    <root>/ibims1_core_raw/            (or <root> = that folder)
        rgb/<name>.png                 RGB 640x480
        depth/<name>.png               uint16, depth = value * 50 / 65535 m
        mask_invalid/<name>.png        1 = valid pixel
        mask_transp/<name>.png         1 = not transparent
        edges/<name>.png               optional, 1 = annotated depth edge (for DBE)
        calib/<name>.txt               3x3 K (or fx,fy,cx,cy)
    <root>/imagelist.txt               optional (next to or inside ibims1_core_raw): one name per line

GT is zeroed outside ``mask_invalid & mask_transp`` (as Marigold-DC stores it), so ``valid`` is exactly that mask
with depth > 0. The ``ibims1`` protocol draws 1000 points from it with Marigold-DC's own selection and seed 2024,
so the sparse input is the one its published numbers used. Items carry ``edges`` (HxW bool) when annotated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depthkit.data.datasets._base import (
    PROCESSED_LAYOUT,
    DepthDataset,
    Sample,
    is_processed_folder,
    load_processed,
    processed_names,
    refuse_repeated,
    visible,
)
from depthkit.data.datasets._ops import DatasetLayoutError, read_k_file, read_mask, read_png_raw, read_text_file
from depthkit.geometry import Intrinsics
from depthkit.io import read_image

DEPTH_SCALE = 50.0 / 65535.0  # metres per uint16 unit in ibims1_core_raw/depth
_RAW_DIRS = ("rgb", "depth", "mask_invalid", "mask_transp", "calib")


class IBims1Dataset(DepthDataset):
    key = "ibims1"
    title = "iBims-1"
    layout = """\
  <root>/ibims1_core_raw/        (or <root> = that folder)
      rgb/<name>.png, depth/<name>.png (uint16, * 50 / 65535 m), mask_invalid/<name>.png, mask_transp/<name>.png,
      calib/<name>.txt, edges/<name>.png (optional)
  <root>/imagelist.txt           (optional)
or <root>/ibims1_core_mat/<name>.mat (or <root> = that folder), or Marigold-DC's processed folder (ibims1/):
""" + PROCESSED_LAYOUT
    source = ("https://www.asg.ed.tum.de/lmf/ibims1/ (ibims1_core_raw.zip / ibims1_core_mat.zip from "
              "mediatum.ub.tum.de/1455541)")

    def __init__(self, root, split: str | None = None, protocol=None, format: str = "auto"):
        super().__init__(root, protocol, split)
        self._check_split(("test",))
        if format not in ("auto", "raw", "mat"):
            raise ValueError(f"iBims-1 format must be 'auto', 'raw' (PNG release) or 'mat'; received {format!r}.")
        self._processed = False
        if format == "auto" and is_processed_folder(self.root):
            self.base, self._processed, self.format = self.root, True, "processed"
            self.names = processed_names(self, self.root)
            return
        raw = next((c for c in (self.root, self.root / "ibims1_core_raw")
                    if all((c / d).is_dir() for d in _RAW_DIRS)), None)
        mat = next((c for c in (self.root, self.root / "ibims1_core_mat") if any(c.glob("*.mat"))), None)
        if format in ("auto", "raw") and raw is not None:
            self.base, self.format = raw, "raw"
        elif format in ("auto", "mat") and mat is not None:
            self.base, self.format = mat, "mat"
        else:
            want = {"auto": "ibims1_core_raw/ (with " + ", ".join(_RAW_DIRS) + ") or ibims1_core_mat/*.mat",
                    "raw": "ibims1_core_raw/ with " + ", ".join(_RAW_DIRS), "mat": "ibims1_core_mat/*.mat"}[format]
            raise self.layout_error(f"{self.root} has no {want}")
        self.names = self._list_names()
        for name in self.names:
            needed = [self._path("rgb", name), self._path("depth", name)] if self.format == "raw" else \
                [self.base / f"{name}.mat"]
            for f in needed:
                if not f.is_file():
                    raise self.layout_error(f"{f} is missing (listed in imagelist.txt)")

    def _list_names(self) -> list[str]:
        for lf in (self.base / "imagelist.txt", self.base.parent / "imagelist.txt"):
            if lf.is_file():
                listed = [ln.strip() for ln in read_text_file(lf, "image list").splitlines() if ln.strip()]
                names = [Path(ln).stem for ln in listed]
                if names:
                    refuse_repeated(self, names, lf, "Remove the repeated lines (or restore imagelist.txt from the "
                                    "release)", listed=listed)
                    return names
        if self.format == "raw":
            names = sorted(p.stem for p in visible((self.base / "rgb").glob("*.png")))
        else:
            names = sorted(p.stem for p in visible(self.base.glob("*.mat")))
        if not names:
            raise self.layout_error(f"{self.base} holds no images")
        return names

    def _path(self, sub: str, name: str) -> Path:
        return self.base / sub / (f"{name}.txt" if sub == "calib" else f"{name}.png")

    def _load(self, index: int) -> Sample:
        name = self.names[index]
        if self._processed:
            return load_processed(self.base, name)
        if self.format == "mat":
            image, depth, valid, edges, intr = self._load_mat(self.base / f"{name}.mat")
        else:
            image = read_image(self._path("rgb", name))
            depth_path = self._path("depth", name)
            depth = read_png_raw(depth_path, "iBims-1 depth (value x 50 / 65535 = metres)")
            depth = depth.astype(np.float32) * np.float32(DEPTH_SCALE)
            masks = {self._path(sub, name): read_mask(self._path(sub, name)) for sub in ("mask_invalid", "mask_transp")}
            edge_path = self._path("edges", name)
            if edge_path.is_file():
                masks[edge_path] = read_mask(edge_path)
            _check_sizes(masks, depth.shape, depth_path)
            valid = np.logical_and(*list(masks.values())[:2])
            edges = masks.get(edge_path)
            calib = self._path("calib", name)
            intr = read_k_file(calib) if calib.is_file() else None
        depth = np.where(valid & (depth > 0), depth, 0).astype(np.float32)
        masks = {} if edges is None else {"edges": edges}
        return Sample(image=image, depth=depth, sparse=None, intrinsics=intr, name=name, masks=masks)

    @staticmethod
    def _load_mat(path: Path):
        from scipy import io as sio

        try:
            data = sio.loadmat(str(path))["data"]
        except Exception as exc:  # scipy raises several types for corrupt or foreign files
            raise DatasetLayoutError(f"could not read iBims-1 struct 'data' from {path}: {exc}") from exc
        fields = data.dtype.names or ()
        missing = [f for f in ("rgb", "depth", "mask_invalid", "mask_transp") if f not in fields]
        if missing:
            raise DatasetLayoutError(f"{path}: struct 'data' lacks fields {missing}; found {list(fields)}.")

        def field(f):
            return np.asarray(data[f][0][0])

        image = np.ascontiguousarray(field("rgb").astype(np.uint8))
        depth = field("depth").astype(np.float32)
        masks = {f"{path} field {f!r}": field(f) != 0 for f in ("mask_invalid", "mask_transp", "edges") if f in fields}
        _check_sizes(masks, depth.shape, f"{path} field 'depth'")
        valid = np.logical_and(masks[f"{path} field 'mask_invalid'"], masks[f"{path} field 'mask_transp'"])
        edges = masks.get(f"{path} field 'edges'")
        intr = None
        if "calib" in fields:
            k = field("calib").astype(np.float64)
            if k.shape == (3, 3):
                k = k.T if (k[0, 2] == 0 and k[2, 0] != 0) else k
                intr = Intrinsics(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
        return image, depth, valid, edges, intr


def _check_sizes(masks: dict, shape: tuple, depth_source) -> None:
    """Refuse a mask or edge map whose HxW is not the depth's, naming both files (or .mat fields): combined as they
    are, numpy would broadcast a 1xW or Hx1 map over every row or column (a wrong mask, silently) and fail on any
    other size without saying which file is wrong."""
    for source, mask in masks.items():
        if mask.shape != tuple(shape):
            raise DatasetLayoutError(
                f"iBims-1: {source} is {'x'.join(map(str, mask.shape))} (HxW) but the depth {depth_source} is "
                f"{shape[0]}x{shape[1]}; every map of an image has the depth's size. Restore the file from the release "
                "(ibims1_core_raw.zip / ibims1_core_mat.zip).")
