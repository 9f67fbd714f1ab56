"""Virtual KITTI 2 (Cabon et al., 2020) training reader: JPEG frames, uint16 centimetre depth, per-frame intrinsics.

Layout of the release tarballs (``vkitti_2.0.3_rgb``, ``vkitti_2.0.3_depth``, ``vkitti_2.0.3_textgt``), either
extracted into one folder (they merge) or side by side under ``<root>``::

    <root>/[vkitti_2.0.3_rgb/]Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg        RGB 1242x375
    <root>/[vkitti_2.0.3_depth/]Scene01/clone/frames/depth/Camera_0/depth_00000.png  uint16 centimetres
    <root>/[vkitti_2.0.3_textgt/]Scene01/clone/intrinsic.txt   "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"

Depth is ``value / 100`` metres; 65535 marks the sky (beyond the far plane) and becomes 0 (missing). When
``intrinsic.txt`` is absent the dataset's constant camera (725.0087, 725.0087, 620.5, 187.0 px) is used. There is no
official split: ``split="train"`` and ``"all"`` both mean every frame of the chosen cameras, by default ``Camera_0``
only (half the frames; Marigold's training list holds both cameras); choose with ``scenes``, ``variations`` and
``cameras`` (each a name, e.g. ``"Camera_1"``, or a list of names).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from depthkit.data.datasets._base import Sample
from depthkit.data.datasets._ops import DatasetLayoutError, read_png_raw, read_text_file
from depthkit.data.datasets._training import TrainingDepthDataset
from depthkit.geometry import Intrinsics
from depthkit.io import read_image

SKY_VALUE = 65535
VKITTI2_INTRINSICS = Intrinsics(725.0087, 725.0087, 620.5, 187.0)
_RGB_RE = re.compile(r"^rgb_(\d+)\.jpg$")


class VKITTI2Dataset(TrainingDepthDataset):
    key = "vkitti2"
    title = "Virtual KITTI 2"
    layout = """\
  <root>/Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg
  <root>/Scene01/clone/frames/depth/Camera_0/depth_00000.png   (uint16 cm; 65535 = sky)
  <root>/Scene01/clone/intrinsic.txt
  (or the three release folders vkitti_2.0.3_rgb/, vkitti_2.0.3_depth/, vkitti_2.0.3_textgt/ under <root>)"""
    source = "https://europe.naverlabs.com/research/computer-vision/proxy-virtual-worlds-vkitti-2/"

    def __init__(self, root, split: str | None = None, protocol=None, scenes=None, variations=None,
                 cameras=("Camera_0",), sparse_pattern: str | None = "random", sparse_kwargs: dict | None = None,
                 sparse_seed: int | None = None):
        super().__init__(root, protocol, split, sparse_pattern, sparse_kwargs, sparse_seed)
        self._check_split(("train", "all"))
        # one name or a list of names (a bare str would otherwise match by substring, or iterate its characters)
        scenes, variations, cameras = ([v] if isinstance(v, str) else v for v in (scenes, variations, cameras))
        scene_dirs = [p for p in self.root.glob("Scene*") if p.is_dir()]
        scene_dirs += [p for p in self.root.glob("*/Scene*") if p.is_dir()]
        if not scene_dirs:
            raise self.layout_error(f"{self.root} holds no SceneXX folders (directly or one level down)")
        depth_files: dict[tuple, Path] = {}
        intrinsic_files: dict[tuple, Path] = {}
        rgb_files: dict[tuple, Path] = {}
        for scene in sorted(scene_dirs):
            if scenes is not None and scene.name not in scenes:
                continue
            for var in sorted(p for p in scene.iterdir() if p.is_dir()):
                if variations is not None and var.name not in variations:
                    continue
                if (var / "intrinsic.txt").is_file():
                    self._add_once(intrinsic_files, (scene.name, var.name), var / "intrinsic.txt")
                for cam in cameras:
                    for f in sorted((var / "frames" / "depth" / cam).glob("depth_*.png")):
                        self._add_once(depth_files, (scene.name, var.name, cam, f.stem.split("_")[1]), f)
                    for f in sorted((var / "frames" / "rgb" / cam).glob("rgb_*.jpg")):
                        m = _RGB_RE.match(f.name)
                        if m:
                            self._add_once(rgb_files, (scene.name, var.name, cam, m.group(1)), f)
        if not rgb_files:
            chosen = ", ".join(f"{what} {list(v)}" for what, v in
                               (("scenes", scenes), ("variations", variations), ("cameras", cameras)) if v is not None)
            found = sorted({p.name for p in scene_dirs})
            raise self.layout_error(f"no frames/rgb/<camera>/rgb_XXXXX.jpg under {self.root} for {chosen} (scene "
                                    f"folders found: {found}; variations are folders such as 'clone' in each, "
                                    f"cameras 'Camera_0' and 'Camera_1')")
        self._entries = []
        for key, rgb in sorted(rgb_files.items()):
            if key not in depth_files:
                raise self.layout_error(f"the depth of {rgb} (frames/depth/{key[2]}/depth_{key[3]}.png) is missing")
            self._entries.append((rgb, depth_files[key], intrinsic_files.get(key[:2]), int(key[3]),
                                  int(key[2].split("_")[-1])))
            self.names.append("_".join(key))
        self._intrinsics_cache: dict[Path, dict] = {}

    def _add_once(self, files: dict[tuple, Path], key: tuple, path: Path) -> None:
        """Record ``path`` under ``key``; a second file for one frame (the release folders extracted both merged and
        side by side under ``<root>``) is refused instead of listing the frame twice or keeping one silently."""
        if key in files and files[key] != path:
            raise self.layout_error(f"{files[key]} and {path} are the same frame ({'/'.join(key)}): <root> holds "
                                    f"the release both merged and as separate vkitti_2.0.3_* folders; keep one")
        files[key] = path

    def _intrinsics(self, path: Path | None, frame: int, camera: int) -> Intrinsics:
        if path is None:
            return VKITTI2_INTRINSICS
        table = self._intrinsics_cache.get(path)
        if table is None:
            table = {}
            for lineno, line in enumerate(read_text_file(path, "intrinsics file").splitlines()[1:], 2):
                parts = line.split()
                if not parts:
                    continue
                try:
                    if len(parts) != 6:
                        raise ValueError("not 6 values")
                    table[(int(parts[0]), int(parts[1]))] = Intrinsics(*(float(v) for v in parts[2:]))
                except ValueError:  # a wrong count, or a value that is not a number
                    raise DatasetLayoutError(f"{path} line {lineno}: expected 'frame cameraID fx fy cx cy' (two "
                                             f"integers, four numbers), got {line!r}") from None
            self._intrinsics_cache[path] = table
        if (frame, camera) not in table:
            raise DatasetLayoutError(f"{path} has no row for frame {frame}, camera {camera}")
        return table[(frame, camera)]

    def _load(self, index: int) -> Sample:
        rgb, depth_path, intr_path, frame, camera = self._entries[index]
        raw = read_png_raw(depth_path, "Virtual KITTI 2 depth (centimetres)")
        depth = np.where(raw == SKY_VALUE, 0, raw.astype(np.float32) / np.float32(100.0)).astype(np.float32)
        return Sample(image=read_image(rgb), depth=depth, sparse=None,
                      intrinsics=self._intrinsics(intr_path, frame, camera), name=self.names[index])
