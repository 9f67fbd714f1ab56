"""Hypersim (Roberts et al., 2021) training reader: tone-mapped previews + HDF5 depth, converted ray -> planar.

Layout (as ml-hypersim's download script extracts it)::

    <root>/ai_VVV_NNN/images/scene_cam_XX_final_preview/frame.IIII.tonemap.jpg      RGB 1024x768
    <root>/ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.depth_meters.hdf5 dataset "dataset": metres
    <root>/metadata_images_split_scene_v1.csv     the official split (ml-hypersim evermotion_dataset/analysis)

``depth_meters`` is the Euclidean distance from the camera centre to the surface along each pixel's ray, *not* the
planar depth z. With pixel centres at ``x = u - (W - 1) / 2``, ``y = v - (H - 1) / 2`` on an image plane at focal
length ``f`` (pixels), ``z = distance * f / sqrt(x^2 + y^2 + f^2)``. Hypersim renders with a 60-degree horizontal
field of view, so ``f = (W / 2) / tan(30 deg)`` = 886.81 px at 1024 wide. NaN (no surface) becomes 0. Scenes
rendered with VRay tilt-shift cameras deviate from this pinhole model; the official split does not exclude them
(a known Hypersim caveat; exclude them with ``scenes=``).

Splits come from the CSV (``included_in_public_release`` and ``split_partition_name``); frames on disk that the
CSV excludes are skipped. ``split="all"`` uses every frame found and needs no CSV.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

from depthkit.data.datasets._base import Sample
from depthkit.data.datasets._ops import DatasetLayoutError
from depthkit.data.datasets._training import TrainingDepthDataset
from depthkit.geometry import Intrinsics
from depthkit.io import read_image

SPLIT_CSV = "metadata_images_split_scene_v1.csv"
HFOV_DEG = 60.0
_FRAME_RE = re.compile(r"^frame\.(\d{4})\.(\w+)\.jpg$")


def hypersim_focal(width: int) -> float:
    """Focal length in pixels of a Hypersim image ``width`` pixels wide (60-degree horizontal field of view)."""
    return (width / 2.0) / math.tan(math.radians(HFOV_DEG) / 2.0)


def hypersim_intrinsics(height: int, width: int) -> Intrinsics:
    """Hypersim pinhole intrinsics (pixels; pixel centres at integers, so the centre is ((W-1)/2, (H-1)/2))."""
    f = hypersim_focal(width)
    return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0)


def distance_to_planar(distance: np.ndarray, focal: float | None = None) -> np.ndarray:
    """Convert HxW distance-along-the-ray (metres) to planar depth z (metres); NaN/inf/negative become 0."""
    distance = np.asarray(distance, dtype=np.float64)
    h, w = distance.shape
    f = hypersim_focal(w) if focal is None else float(focal)
    x = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
    y = np.arange(h, dtype=np.float64) - (h - 1) / 2.0
    norm = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + f * f)
    z = distance * (f / norm)
    return np.where(np.isfinite(z) & (z > 0), z, 0).astype(np.float32)


class HypersimDataset(TrainingDepthDataset):
    key = "hypersim"
    title = "Hypersim"
    layout = """\
  <root>/ai_001_001/images/scene_cam_00_final_preview/frame.0000.tonemap.jpg
  <root>/ai_001_001/images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5   (dataset "dataset", metres)
  <root>/metadata_images_split_scene_v1.csv       (needed for split train/val/test)"""
    source = ("https://github.com/apple/ml-hypersim (code/python/tools/dataset_download_images.py; the split CSV is "
              "evermotion_dataset/analysis/metadata_images_split_scene_v1.csv)")

    def __init__(self, root, split: str | None = None, protocol=None, image: str = "tonemap", split_csv=None,
                 scenes=None, sparse_pattern: str | None = "random", sparse_kwargs: dict | None = None,
                 sparse_seed: int | None = None):
        super().__init__(root, protocol, split, sparse_pattern, sparse_kwargs, sparse_seed)
        self._check_split(("train", "val", "test", "all"))
        if image not in ("tonemap", "color", "gamma"):
            raise ValueError(f"Hypersim image must be 'tonemap', 'color' or 'gamma' (the final_preview JPEGs); "
                             f"received {image!r}.")
        self.image_kind = image
        scene_dirs = sorted(p for p in self.root.glob("ai_*_*") if p.is_dir())
        if not scene_dirs and (self.root / "scenes").is_dir():
            scene_dirs = sorted(p for p in (self.root / "scenes").glob("ai_*_*") if p.is_dir())
        if scenes is not None:
            wanted = set(scenes)
            scene_dirs = [p for p in scene_dirs if p.name in wanted]
        if not scene_dirs:
            raise self.layout_error(f"{self.root} holds no ai_VVV_NNN scene folders")
        keep = None if self.split == "all" else self._read_split(split_csv)
        self._entries = []
        for scene in scene_dirs:
            for preview in sorted((scene / "images").glob("scene_cam_*_final_preview")):
                cam = preview.name[len("scene_"):-len("_final_preview")]
                for jpg in sorted(preview.glob(f"frame.*.{image}.jpg")):
                    m = _FRAME_RE.match(jpg.name)
                    if m is None:
                        continue
                    frame = int(m.group(1))
                    if keep is not None and (scene.name, cam, frame) not in keep:
                        continue
                    depth = scene / "images" / f"scene_{cam}_geometry_hdf5" / f"frame.{frame:04d}.depth_meters.hdf5"
                    if not depth.is_file():
                        raise self.layout_error(f"{depth} is missing (the depth of {jpg})")
                    self._entries.append((jpg, depth))
                    self.names.append(f"{scene.name}_{cam}_{frame:04d}")
        if not self._entries:
            raise self.layout_error(f"no frame.IIII.{image}.jpg of split {self.split!r} found under {self.root}")

    def _read_split(self, split_csv) -> set[tuple[str, str, int]]:
        path = Path(split_csv) if split_csv is not None else self.root / SPLIT_CSV
        if not path.is_file():
            raise self.layout_error(f"split file {path} is missing; download {SPLIT_CSV} from ml-hypersim "
                                    "(evermotion_dataset/analysis/) or pass split='all'")
        keep = set()
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            need = {"scene_name", "camera_name", "frame_id", "included_in_public_release", "split_partition_name"}
            if not need <= set(reader.fieldnames or ()):
                raise self.layout_error(f"{path} lacks columns {sorted(need - set(reader.fieldnames or ()))}")
            for row in reader:
                if row["included_in_public_release"].strip().lower() != "true":
                    continue
                if row["split_partition_name"].strip() == self.split:
                    keep.add((row["scene_name"].strip(), row["camera_name"].strip(), int(row["frame_id"])))
        return keep

    def _load(self, index: int) -> Sample:
        import h5py

        jpg, depth_path = self._entries[index]
        image = read_image(jpg)
        try:
            with h5py.File(depth_path, "r") as f:
                distance = np.asarray(f["dataset"][()], dtype=np.float32)
        except (OSError, KeyError) as exc:
            raise DatasetLayoutError(f"could not read dataset 'dataset' from {depth_path}: {exc}") from exc
        if distance.shape != image.shape[:2]:
            raise DatasetLayoutError(f"{depth_path} is {distance.shape} but {jpg.name} is {image.shape[:2]} (HxW).")
        h, w = distance.shape
        return Sample(image=image, depth=distance_to_planar(distance), sparse=None,
                      intrinsics=hypersim_intrinsics(h, w), name=self.names[index])
