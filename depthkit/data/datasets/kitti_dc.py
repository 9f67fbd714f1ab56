"""KITTI depth completion, the 1000-image ``val_selection_cropped`` split, as the KITTI benchmark distributes it.

Layout (``data_depth_selection.zip``)::

    <root>/depth_selection/val_selection_cropped/      (or <root> = either of these folders)
        image/<drive>_sync_image_<frame>_image_0X.png                RGB 1216x352
        velodyne_raw/<drive>_sync_velodyne_raw_<frame>_image_0X.png  uint16, depth * 256 (0 = missing)
        groundtruth_depth/<drive>_sync_groundtruth_depth_<frame>_image_0X.png   uint16, depth * 256
        intrinsics/<drive>_sync_image_<frame>_image_0X.txt           9 numbers: 3x3 K

Files are paired by name (the drive, frame and camera), not by sort order. The ``kitti_dc`` protocol keeps the native
resolution and cleans the LiDAR input with the 7x7 / 1.5 m local-minimum filter
(:func:`depthkit.data.datasets.filter_local_outliers`). Marigold-DC's processed folder (``kittidc/``) is read too.
"""

from __future__ import annotations

import re

from depthkit.data.datasets._base import (
    PROCESSED_LAYOUT,
    DepthDataset,
    Sample,
    is_processed_folder,
    load_png256_sample,
    load_processed,
    processed_names,
    visible,
)

_IMAGE_RE = re.compile(r"^(?P<drive>.+_sync)_image_(?P<frame>\d+)_(?P<cam>image_0[0-9])$")
_SUBDIRS = ("image", "velodyne_raw", "groundtruth_depth", "intrinsics")


class KITTIDCDataset(DepthDataset):
    key = "kitti_dc"
    title = "KITTI depth completion"
    layout = """\
  <root>/depth_selection/val_selection_cropped/   (or <root> = that folder)
      image/2011_09_26_drive_0002_sync_image_0000000005_image_02.png
      velodyne_raw/2011_09_26_drive_0002_sync_velodyne_raw_0000000005_image_02.png   (uint16 / 256 m)
      groundtruth_depth/2011_09_26_drive_0002_sync_groundtruth_depth_0000000005_image_02.png
      intrinsics/2011_09_26_drive_0002_sync_image_0000000005_image_02.txt   (3x3 K)
or Marigold-DC's processed folder (kittidc/):
""" + PROCESSED_LAYOUT
    source = ("data_depth_selection.zip from https://www.cvlibs.net/datasets/kitti/eval_depth.php?benchmark="
              "depth_completion (https://s3.eu-central-1.amazonaws.com/avg-kitti/data_depth_selection.zip)")

    def __init__(self, root, split: str | None = None, protocol=None):
        super().__init__(root, protocol, split)
        self._check_split(("val",))
        if is_processed_folder(self.root):
            self.base, self._processed = self.root, True
            self.names = processed_names(self, self.root)
            return
        self._processed = False
        candidates = [self.root, self.root / "val_selection_cropped",
                      self.root / "depth_selection" / "val_selection_cropped"]
        base = next((c for c in candidates if all((c / d).is_dir() for d in _SUBDIRS)), None)
        if base is None:
            raise self.layout_error(f"{self.root} has no val_selection_cropped folder with {', '.join(_SUBDIRS)}/")
        self.base = base
        self._entries = []
        for img in sorted(visible((base / "image").glob("*.png"))):
            m = _IMAGE_RE.match(img.stem)
            if m is None:
                raise self.layout_error(f"{img} is not named <drive>_sync_image_<frame>_image_0X.png")
            drive, frame, cam = m["drive"], m["frame"], m["cam"]
            files = (img, base / "velodyne_raw" / f"{drive}_velodyne_raw_{frame}_{cam}.png",
                     base / "groundtruth_depth" / f"{drive}_groundtruth_depth_{frame}_{cam}.png",
                     base / "intrinsics" / f"{img.stem}.txt")
            for f in files[1:]:
                if not f.is_file():
                    raise self.layout_error(f"{f} is missing (the partner of {img.name})")
            self._entries.append(files)
            self.names.append(img.stem)
        if not self._entries:
            raise self.layout_error(f"{base / 'image'} holds no .png images")

    def _load(self, index: int) -> Sample:
        if self._processed:
            return load_processed(self.base, self.names[index])
        img, velo, gt, k = self._entries[index]
        return load_png256_sample(img, velo, gt, k, self.names[index])
