"""NYU Depth v2 (labelled set, 654 official test images) as Marigold distributes it, or Marigold-DC's processed folder.

Native layout (``nyu_labeled_extracted``, Marigold's extraction of ``nyu_depth_v2_labeled.mat``)::

    <root>/test/<scene>/rgb_XXXX.png       RGB 640x480
    <root>/test/<scene>/depth_XXXX.png     uint16 millimetres, raw Kinect depth (0 = missing)
    <root>/test/<scene>/filled_XXXX.png    uint16 millimetres, in-painted depth
    <root>/filename_list_test.txt          optional: "rgb depth filled" paths per line, relative to <root>
                                           (Marigold's data_split/nyu_depth/labeled/filename_list_test.txt)

Without a list file, every ``<split>/*/rgb_*.png`` is used, sorted. The protocol (``nyuv2``) resizes to 320x240,
centre-crops 304x228 and draws 500 random points from the GT; intrinsics are the standard NYUv2 colour-camera
values (fx 518.858, fy 519.470, cx 325.582, cy 253.736 px at 640x480), adjusted for the resize and crop.
``gt="filled"`` (default, *assumed* to be what the sparse-to-dense HDF5 used by Marigold-DC holds) or ``"raw"``.
"""

from __future__ import annotations

from pathlib import Path

from depthkit.data.datasets._base import (
    PROCESSED_LAYOUT,
    DepthDataset,
    Sample,
    is_processed_folder,
    load_processed,
    processed_names,
)
from depthkit.data.datasets._ops import read_png_depth
from depthkit.geometry import Intrinsics
from depthkit.io import read_image

NATIVE_LAYOUT = """\
  <root>/test/<scene>/rgb_XXXX.png       RGB 640x480
  <root>/test/<scene>/depth_XXXX.png     uint16 millimetres (raw)
  <root>/test/<scene>/filled_XXXX.png    uint16 millimetres (in-painted)
  <root>/filename_list_test.txt          optional list: 'rgb depth filled' per line"""
NYU_INTRINSICS = Intrinsics(fx=518.8579, fy=519.4696, cx=325.5824, cy=253.7362)  # pixels at 640x480


class NYUv2Dataset(DepthDataset):
    key = "nyuv2"
    title = "NYUv2"
    layout = NATIVE_LAYOUT + "\nor Marigold-DC's processed folder (nyudepthv2/):\n" + PROCESSED_LAYOUT
    source = ("nyuv2/nyu_labeled_extracted.tar from Marigold's evaluation data (https://share.phys.ethz.ch/~pf/"
              "bingkedata/marigold/evaluation_dataset/), extracted; list file: Marigold's data_split/nyu_depth/"
              "labeled/filename_list_test.txt (github.com/prs-eth/Marigold)")

    def __init__(self, root, split: str | None = None, protocol=None, gt: str = "filled", list_file=None):
        super().__init__(root, protocol, split)
        self._check_split(("test", "train"))
        if gt not in ("filled", "raw"):
            raise ValueError(f"NYUv2 gt must be 'filled' (in-painted) or 'raw' (Kinect, with holes); received {gt!r}.")
        self.gt = gt
        base = self.root / "nyu_labeled_extracted" if (self.root / "nyu_labeled_extracted").is_dir() else self.root
        self._processed = is_processed_folder(base)
        self.base = base
        if self._processed:
            self.names = processed_names(self, base)
            return
        self._entries = self._list_entries(base, list_file)
        self.names = [f"{Path(rgb).parent.name}_{Path(rgb).stem.split('_')[-1]}" for rgb, _, _ in self._entries]

    def _list_entries(self, base: Path, list_file) -> list[tuple[str, str, str]]:
        lf = Path(list_file) if list_file is not None else base / f"filename_list_{self.split}.txt"
        if list_file is not None and not lf.is_file():
            raise self.layout_error(f"list file {lf} does not exist")
        entries = []
        if lf.is_file():
            for lineno, line in enumerate(lf.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 3:
                    raise self.layout_error(f"{lf} line {lineno} has {len(parts)} paths; expected 'rgb depth filled'")
                entries.append(tuple(parts))
        else:
            split_dir = base / self.split
            if not split_dir.is_dir():
                raise self.layout_error(f"{split_dir} does not exist (and there is no list file {lf.name})")
            for rgb in sorted(split_dir.glob("*/rgb_*.png")):
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
        if self._processed:
            return load_processed(self.base, name)
        rgb, raw, filled = self._entries[index]
        depth = read_png_depth(self.base / (filled if self.gt == "filled" else raw), 1000.0)
        return Sample(image=read_image(self.base / rgb), depth=depth, sparse=None,
                      intrinsics=NYU_INTRINSICS, name=name)
