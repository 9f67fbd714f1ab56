"""NYU Depth v2 (labelled set, 654 official test images): Marigold's extraction, Conti's HDF5 pair, or Marigold-DC's
processed folder.

``layout="native"`` (``nyu_labeled_extracted``, Marigold's extraction of ``nyu_depth_v2_labeled.mat``)::

    <root>/test/<scene>/rgb_XXXX.png       RGB 640x480 (another size is refused: the intrinsics are for 640x480)
    <root>/test/<scene>/depth_XXXX.png     uint16 millimetres, raw Kinect depth (0 = missing)
    <root>/test/<scene>/filled_XXXX.png    uint16 millimetres, in-painted depth
    <root>/filename_list_test.txt          optional: "rgb depth filled" paths per line, relative to <root>
                                           (Marigold's data_split/nyu_depth/labeled/filename_list_test.txt)

Without a list file, every ``<split>/*/rgb_*.png`` is used, sorted. The protocol (``nyuv2``) resizes RGB and GT
to 320x240 by nearest (source pixel 2i+1, as Ma & Karaman's ``val_transform`` behind the HDF5 pair below),
centre-crops 304x228 and draws 500 random points from the GT; intrinsics are the standard NYUv2 colour-camera
values (fx 518.858, fy 519.470, cx 325.582, cy 253.736 px at 640x480) with the principal point moved to depthkit's
0-based pixel centres (cx 324.582, cy 252.736: the NYU toolbox uses its values with MATLAB's 1-based pixel indices,
``meshgrid(1:640, 1:480)`` in its ``rgb_plane2rgb_world.m``; many ports keep them unchanged, 1 px off), adjusted for
the resize and crop.
``gt="filled"`` (default, *assumed* to be what the HDF5 pair below holds) or ``"raw"``.

``layout="h5"``: the pair Marigold-DC evaluates on (Conti et al., github.com/andreaconti/sparsity-agnostic-depth-
completion, release v0.1.0), already in protocol form (320x240 -> centre crop 304x228), test split only::

    <root>/nyu_img_gt.h5          "img" N x 228 x 304 x 3 uint8 RGB (HWC); "gt" N x 228 x 304 x 1 float metres
    <root>/nyu_pred_with_500.h5   "hints" N x 228 x 304 x 1 float metres, 500 GT points per image, 0 elsewhere
                                  ("preds": Conti's own predictions, not read)

The ``hints`` are exactly the 500 points Marigold-DC's published numbers used; they are the sparse input as they are
(no resampling, no filter). Item ``i`` is named ``f"{i:04d}"``, as Marigold-DC's processed folder names it. The
intrinsics are the native ones carried through the same resize and crop in depthkit's pixel-centre convention
(cx = (324.582 + 0.5) / 2 - 0.5 - 8); Marigold-DC writes 325.582 / 2 - 8, three quarters of a pixel apart (the
1-based principal point, halved without the pixel-centre shift). ``layout="processed"``
reads Marigold-DC's processed folder (written from that pair). ``layout="auto"`` (default) picks h5, then processed,
then native, by what ``<root>`` holds.
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
from depthkit.data.datasets._ops import DatasetLayoutError, read_png_depth, read_text_file
from depthkit.geometry import Intrinsics
from depthkit.io import read_image

NATIVE_LAYOUT = """\
  <root>/test/<scene>/rgb_XXXX.png       RGB 640x480
  <root>/test/<scene>/depth_XXXX.png     uint16 millimetres (raw)
  <root>/test/<scene>/filled_XXXX.png    uint16 millimetres (in-painted)
  <root>/filename_list_test.txt          optional list: 'rgb depth filled' per line"""
H5_IMAGES, H5_HINTS = "nyu_img_gt.h5", "nyu_pred_with_500.h5"
H5_LAYOUT = f"""\
  <root>/{H5_IMAGES}            "img" Nx228x304x3 uint8, "gt" Nx228x304x1 float metres
  <root>/{H5_HINTS}     "hints" Nx228x304x1 float metres (Marigold-DC's 500 points)"""
LAYOUTS = ("auto", "native", "processed", "h5")
NATIVE_HW = (480, 640)
"""(H, W) pixels of every labelled-set image; :data:`NYU_INTRINSICS` hold for this size only."""
NYU_INTRINSICS = Intrinsics(fx=518.8579, fy=519.4696, cx=325.5824 - 1, cy=253.7362 - 1)
"""Pixels at 640x480, 0-based: the NYU toolbox's principal point (325.5824, 253.7362) is 1-based (module docstring)."""
H5_HW = (228, 304)
"""(H, W) of the HDF5 pair: 640x480 halved to 320x240, then rows 6:234 and cols 8:312."""
_h = NYU_INTRINSICS.scaled(0.5, 0.5)
H5_INTRINSICS = Intrinsics(_h.fx, _h.fy, _h.cx - 8, _h.cy - 6)
"""NYU_INTRINSICS at 320x240 (pixel-centre model) shifted by the 304x228 centre crop."""


def _native_name(rgb: str) -> str:
    """``<scene>_<index>`` of a native-layout image path (``test/<scene>/rgb_XXXX.png``)."""
    return f"{Path(rgb).parent.name}_{Path(rgb).stem.split('_')[-1]}"


class NYUv2Dataset(DepthDataset):
    key = "nyuv2"
    title = "NYUv2"
    layout = (NATIVE_LAYOUT + "\nor the HDF5 pair Marigold-DC evaluates on (layout='h5'):\n" + H5_LAYOUT +
              "\nor Marigold-DC's processed folder (nyudepthv2/):\n" + PROCESSED_LAYOUT)
    source = ("nyuv2/nyu_labeled_extracted.tar from Marigold's evaluation data (https://share.phys.ethz.ch/~pf/"
              "bingkedata/marigold/evaluation_dataset/), extracted; list file: Marigold's data_split/nyu_depth/"
              "labeled/filename_list_test.txt (github.com/prs-eth/Marigold); or nyu_img_gt.h5 and "
              "nyu_pred_with_500.h5 from https://github.com/andreaconti/sparsity-agnostic-depth-completion/releases/"
              "tag/v0.1.0 (as Marigold-DC's DATASETS.md says)")

    def __init__(self, root, split: str | None = None, protocol=None, gt: str | None = None, list_file=None,
                 layout: str = "auto"):
        super().__init__(root, protocol, split)
        self._check_split(("test", "train"))
        if layout not in LAYOUTS:
            raise ValueError(f"NYUv2 layout must be one of {', '.join(LAYOUTS)} ('native': Marigold's "
                             f"nyu_labeled_extracted, 'h5': {H5_IMAGES} + {H5_HINTS}, 'processed': Marigold-DC's "
                             f"processed folder); received {layout!r}.")
        if gt not in (None, "filled", "raw"):
            raise ValueError(f"NYUv2 gt must be 'filled' (in-painted) or 'raw' (Kinect, with holes); received {gt!r}.")
        self.gt = gt or "filled"
        base = self.root / "nyu_labeled_extracted" if (self.root / "nyu_labeled_extracted").is_dir() else self.root
        self.base = base
        self.format = self._pick_layout(layout, base)
        if self.format != "native" and (gt is not None or list_file is not None):
            raise ValueError(f"NYUv2 options gt and list_file apply to the native layout only; {self.root} is read "
                             f"as layout {self.format!r}. Drop them, or pass layout='native'.")
        if self.format == "h5":
            if self.split != "test":
                raise ValueError(f"the NYUv2 HDF5 pair holds the test split only; received split {self.split!r}.")
            self.base = self.root
            self.names = [f"{i:04d}" for i in range(self._check_h5())]
        elif self.format == "processed":
            self.names = processed_names(self, base)
        else:
            self._entries = self._list_entries(base, list_file)
            self.names = [_native_name(rgb) for rgb, _, _ in self._entries]

    def _pick_layout(self, layout: str, base: Path) -> str:
        h5 = all((self.root / f).is_file() for f in (H5_IMAGES, H5_HINTS))
        if layout == "h5" and not h5:
            missing = [str(self.root / f) for f in (H5_IMAGES, H5_HINTS) if not (self.root / f).is_file()]
            raise self.layout_error(f"layout 'h5' needs {' and '.join(missing)}")
        if layout == "processed" and not is_processed_folder(base):
            raise self.layout_error(f"{base} is not a Marigold-DC processed folder (rgb/, sparse/*.npy, gt/)")
        if layout != "auto":
            return layout
        return "h5" if h5 else "processed" if is_processed_folder(base) else "native"

    # ------------------------------------------------------------------ HDF5 pair
    def _check_h5(self) -> int:
        """Number of samples in the HDF5 pair, after checking keys, shapes and dtypes agree."""
        import h5py

        shapes = {}
        for fname, keys in ((H5_IMAGES, ("img", "gt")), (H5_HINTS, ("hints",))):
            path = self.root / fname
            try:
                with h5py.File(path, "r") as f:
                    for key in keys:
                        if key not in f:
                            raise self.layout_error(f"{path} has no dataset {key!r} (it holds {sorted(f.keys())})")
                        shapes[key] = (f[key].shape, f[key].dtype)
            except OSError as exc:
                raise self.layout_error(f"could not open {path} as HDF5: {exc}") from exc
        (img, img_dtype), (gt, _), (hints, _) = shapes["img"], shapes["gt"], shapes["hints"]
        if len(img) != 4 or img[1:] != (*H5_HW, 3) or img_dtype != np.uint8:
            raise self.layout_error(f"{self.root / H5_IMAGES} 'img' is {img_dtype} {img}; expected uint8 "
                                    f"N x {H5_HW[0]} x {H5_HW[1]} x 3 (RGB, channels last)")
        for key, shape, fname in (("gt", gt, H5_IMAGES), ("hints", hints, H5_HINTS)):
            if len(shape) < 3 or shape[:3] != img[:3] or any(d != 1 for d in shape[3:]):
                raise self.layout_error(f"{self.root / fname} {key!r} is {shape}; expected {img[:3] + (1,)} to "
                                        f"match 'img' {img}")
        return int(img[0])

    def _load_h5(self, index: int) -> Sample:
        import h5py

        try:
            with h5py.File(self.root / H5_IMAGES, "r") as f:
                image = np.asarray(f["img"][index], dtype=np.uint8)
                depth = np.asarray(f["gt"][index], dtype=np.float32).reshape(H5_HW)
            with h5py.File(self.root / H5_HINTS, "r") as f:
                hints = np.asarray(f["hints"][index], dtype=np.float32).reshape(H5_HW)
        except (OSError, KeyError) as exc:
            raise DatasetLayoutError(f"could not read sample {index} of {self.root / H5_IMAGES} / "
                                     f"{self.root / H5_HINTS}: {exc}") from exc
        return Sample(image=image, depth=depth, sparse=hints, intrinsics=H5_INTRINSICS, name=self.names[index],
                      preprocessed=True)

    # ------------------------------------------------------------------ native layout
    def _list_entries(self, base: Path, list_file) -> list[tuple[str, str, str]]:
        if list_file is None:  # in the extracted folder, or in --root above it (docs/datasets.md allows both)
            found = [d / f"filename_list_{self.split}.txt" for d in dict.fromkeys((base, self.root))]
            lf = next((f for f in found if f.is_file()), found[0])
        else:
            lf = Path(list_file)
        if list_file is not None and not lf.is_file():
            raise self.layout_error(f"list file {lf} does not exist")
        entries = []
        if lf.is_file():
            for lineno, line in enumerate(read_text_file(lf, "list file").splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 3:
                    raise self.layout_error(f"{lf} line {lineno} has {len(parts)} paths; expected 'rgb depth filled'")
                entries.append(tuple(parts))
            if not entries:
                raise self.layout_error(f"list file {lf} names no images; expected 'rgb depth filled' paths per line")
            refuse_repeated(self, [_native_name(e[0]) for e in entries], lf, "Remove the repeated lines (or restore "
                            "the file from Marigold's data_split)", listed=[" ".join(e) for e in entries])
        else:
            split_dir = base / self.split
            if not split_dir.is_dir():
                raise self.layout_error(f"{split_dir} does not exist (and there is no list file {lf.name})")
            for rgb in sorted(visible(split_dir.glob("*/rgb_*.png"))):
                rel = rgb.relative_to(base)
                idx = rgb.stem.split("_", 1)[1]
                entries.append((str(rel), str(rel.parent / f"depth_{idx}.png"), str(rel.parent / f"filled_{idx}.png")))
            if not entries:
                raise self.layout_error(f"{split_dir} holds no <scene>/rgb_XXXX.png files")
        needed = 2 if self.gt == "filled" else 1
        origin = f"listed in {lf}" if lf.is_file() else f"the depth file of {self.split}/*/rgb_XXXX.png"
        for entry in entries:
            for rel in (entry[0], entry[needed]):
                if not (base / rel).is_file():
                    raise self.layout_error(f"{base / rel} is missing ({origin})")
        return entries

    def _load(self, index: int) -> Sample:
        name = self.names[index]
        if self.format == "h5":
            return self._load_h5(index)
        if self.format == "processed":
            return load_processed(self.base, name)
        rgb, raw, filled = self._entries[index]
        image = read_image(self.base / rgb)
        if image.shape[:2] != NATIVE_HW:  # NYU_INTRINSICS would be scaled as if from 640x480: a wrong K, no error
            raise DatasetLayoutError(
                f"{self.base / rgb} is {image.shape[1]}x{image.shape[0]} (WxH); the native NYUv2 layout holds the "
                f"labelled set's {NATIVE_HW[1]}x{NATIVE_HW[0]} images, the only size its intrinsics are known for. "
                f"Use the images of Marigold's extraction as they are (not resized), or the HDF5 pair (layout='h5') "
                f"for the 304x228 protocol form")
        depth = read_png_depth(self.base / (filled if self.gt == "filled" else raw), 1000.0)
        return Sample(image=image, depth=depth, sparse=None, intrinsics=NYU_INTRINSICS, name=name)
