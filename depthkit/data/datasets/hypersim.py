"""Hypersim (Roberts et al., 2021) training reader: ml-hypersim's download (ray distance -> planar) or Marigold's
preprocessed PNGs (planar already).

``layout="raw"`` (as ml-hypersim's download script extracts it)::

    <root>/ai_VVV_NNN/images/scene_cam_XX_final_preview/frame.IIII.tonemap.jpg      RGB 1024x768
    <root>/ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.depth_meters.hdf5 dataset "dataset": metres
    <root>/metadata_images_split_scene_v1.csv     the official split (ml-hypersim evermotion_dataset/analysis)

``depth_meters`` is the Euclidean distance from the camera centre to the surface along each pixel's ray, *not* the
planar depth z. With pixel centres at ``x = u - (W - 1) / 2``, ``y = v - (H - 1) / 2`` on an image plane at focal
length ``f`` (pixels), ``z = distance * f / sqrt(x^2 + y^2 + f^2)``. Hypersim renders with a 60-degree horizontal
field of view, so ``f = (W / 2) / tan(30 deg)`` = 886.81 px at 1024 wide. NaN (no surface) becomes 0. Scenes
rendered with VRay tilt-shift cameras deviate from this pinhole model; the official split does not exclude them
(a known Hypersim caveat; exclude them with ``scenes=``). Splits come from the CSV (``included_in_public_release``
and ``split_partition_name``); frames on disk that the CSV excludes are skipped. ``split="all"`` uses every frame
found and needs no CSV.

``layout="marigold"`` (the output of Marigold's ``script/depth/dataset_preprocess/hypersim/preprocess_hypersim.py``,
github.com/prs-eth/Marigold, one folder per split; its per-split tars hold the inside of that folder)::

    <root>/<split>/<scene>/rgb_cam_XX_frIIII.png          RGB 1024x768 (tone-mapped from the HDR colour)
    <root>/<split>/<scene>/depth_plane_cam_XX_frIIII.png  uint16 planar depth in millimetres (0 = no surface)
    <root>/<split>/filename_list_<split>.txt              "rgb depth" paths per line, relative to <root>/<split>

``<root>`` may also be the split folder itself (a folder named ``train``/``val``/``test`` is that split only). The
depth is already planar (converted before it was written, with the same f = 886.81 px), so it is only divided by
1000; the conversion above is *not* applied. The list is the ``list_file`` option when given (e.g. Marigold's
``data_split/hypersim_depth/filename_list_train_filtered.txt``, the frames Marigold trains on), else
``filename_list_<split>_filtered.txt`` or ``filename_list_<split>.txt`` in the split folder, else every
``<scene>/rgb_cam_XX_frIIII.png`` found there. ``layout="auto"`` (default) reads raw when ``<root>`` holds
``ai_VVV_NNN/images/``, else marigold.

Both layouts give the same names (``ai_VVV_NNN_cam_XX_IIII``), the same intrinsics and the ``hypersim`` protocol
(native resolution, GT valid in 1e-5 < d < 65 m, 500 random points). Marigold's training additionally resizes to
480x640 (nearest); that is the training recipe's choice, not the reader's.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np

from depthkit.data.datasets._base import Sample, refuse_repeated
from depthkit.data.datasets._ops import DatasetLayoutError, read_png_depth, read_text_file
from depthkit.data.datasets._training import TrainingDepthDataset
from depthkit.geometry import Intrinsics
from depthkit.io import read_image

SPLIT_CSV = "metadata_images_split_scene_v1.csv"
HFOV_DEG = 60.0
_FRAME_RE = re.compile(r"^frame\.(\d{4})\.(\w+)\.jpg$")
_PNG_RE = re.compile(r"^rgb_(cam_\d+)_fr(\d{4})\.png$")
LAYOUTS = ("auto", "raw", "marigold")


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
  <root>/metadata_images_split_scene_v1.csv       (needed for split train/val/test)
or Marigold's preprocessed PNGs (layout='marigold'):
  <root>/train/ai_001_001/rgb_cam_00_fr0000.png
  <root>/train/ai_001_001/depth_plane_cam_00_fr0000.png   (uint16 millimetres, planar)
  <root>/train/filename_list_train.txt            (optional: 'rgb depth' per line, relative to <root>/train)"""
    source = ("https://github.com/apple/ml-hypersim (code/python/tools/dataset_download_images.py; the split CSV is "
              "evermotion_dataset/analysis/metadata_images_split_scene_v1.csv); the PNG layout is written from it by "
              "Marigold's script/depth/dataset_preprocess/hypersim/preprocess_hypersim.py (github.com/prs-eth/"
              "Marigold)")

    def __init__(self, root, split: str | None = None, protocol=None, image: str | None = None, split_csv=None,
                 scenes=None, sparse_pattern: str | None = "random", sparse_kwargs: dict | None = None,
                 sparse_seed: int | None = None, layout: str = "auto", list_file=None):
        super().__init__(root, protocol, split, sparse_pattern, sparse_kwargs, sparse_seed)
        if layout not in LAYOUTS:
            raise ValueError(f"Hypersim layout must be one of {', '.join(LAYOUTS)} ('raw': ml-hypersim's download, "
                             f"'marigold': Marigold's preprocessed PNGs); received {layout!r}.")
        if image not in (None, "tonemap", "color", "gamma"):
            raise ValueError(f"Hypersim image must be 'tonemap', 'color' or 'gamma' (the final_preview JPEGs); "
                             f"received {image!r}.")
        self._check_split(("train", "val", "test", "all"))
        self.format = layout if layout != "auto" else self._detect_layout()
        wanted = None if scenes is None else set([scenes] if isinstance(scenes, str) else scenes)
        if self.format == "raw":
            if list_file is not None:
                raise ValueError("Hypersim list_file applies to layout 'marigold' only; the raw layout's split comes "
                                 "from split_csv. Drop list_file, or pass layout='marigold'.")
            self.image_kind = image or "tonemap"
            self._list_raw(split_csv, wanted)
        else:
            if image is not None or split_csv is not None:
                raise ValueError("Hypersim options image and split_csv apply to layout 'raw' only (Marigold's PNGs "
                                 "have one tone-mapped image and per-split folders). Drop them, or pass layout='raw'.")
            self._check_split(("train", "val", "test"))
            self._list_marigold(list_file, wanted)

    def _detect_layout(self) -> str:
        if self._raw_scene_dirs():
            return "raw"
        for base in (self.root / self.split, self.root, *(self.root / s for s in ("train", "val", "test"))):
            if next(base.glob("filename_list_*.txt"), None) is not None or \
                    next(base.glob("ai_*_*/rgb_cam_*_fr*.png"), None) is not None:
                return "marigold"
        raise self.layout_error(f"{self.root} holds neither ai_VVV_NNN/images/ scene folders (ml-hypersim) nor "
                                f"ai_VVV_NNN/rgb_cam_XX_frIIII.png (Marigold's PNGs, in {self.root / self.split} or "
                                f"{self.root})")

    # ------------------------------------------------------------------ raw layout (ml-hypersim)
    def _raw_scene_dirs(self) -> list[Path]:
        scene_dirs = sorted(p for p in self.root.glob("ai_*_*") if (p / "images").is_dir())
        if not scene_dirs and (self.root / "scenes").is_dir():
            scene_dirs = sorted(p for p in (self.root / "scenes").glob("ai_*_*") if (p / "images").is_dir())
        return scene_dirs

    def _list_raw(self, split_csv, wanted: set[str] | None) -> None:
        image = self.image_kind
        scene_dirs = [p for p in self._raw_scene_dirs() if wanted is None or p.name in wanted]
        if not scene_dirs:
            raise self.layout_error(f"{self.root} holds no ai_VVV_NNN/images/ scene folders")
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
        with io.StringIO(read_text_file(path, "split file"), newline="") as f:
            reader = csv.DictReader(f)
            need = {"scene_name", "camera_name", "frame_id", "included_in_public_release", "split_partition_name"}
            if not need <= set(reader.fieldnames or ()):
                raise self.layout_error(f"{path} lacks columns {sorted(need - set(reader.fieldnames or ()))}")
            for row in reader:
                if row["included_in_public_release"].strip().lower() != "true":
                    continue
                if row["split_partition_name"].strip() == self.split:
                    frame = (row["frame_id"] or "").strip()
                    if not frame.isdigit():
                        raise self.layout_error(f"{path} line {reader.line_num}: frame_id is {row['frame_id']!r}; "
                                                "expected a whole number >= 0. Restore the file from the release")
                    keep.add((row["scene_name"].strip(), row["camera_name"].strip(), int(frame)))
        return keep

    # ------------------------------------------------------------------ marigold layout (preprocessed PNGs)
    def _list_marigold(self, list_file, wanted: set[str] | None) -> None:
        base = self.root / self.split if (self.root / self.split).is_dir() else self.root
        self.base = base
        other = self.root.name if self.root.name in ("train", "val", "test") else self.split
        if base == self.root and other != self.split and list_file is None:  # <root> is another split's folder
            raise ValueError(f"Hypersim: {self.root} is the {other!r} split folder of Marigold's PNGs (it has no "
                             f"{self.split}/ folder); received split {self.split!r}. Pass the folder holding "
                             f"{self.split}/ (or {self.split}/ itself), or split={other!r}.")
        if list_file is not None:
            lf = Path(list_file)
            if not lf.is_file():
                raise self.layout_error(f"list file {lf} does not exist")
        else:
            lf = next((base / f"filename_list_{self.split}{tail}.txt" for tail in ("_filtered", "")
                       if (base / f"filename_list_{self.split}{tail}.txt").is_file()), None)
        if lf is not None:
            pairs = []
            for lineno, line in enumerate(read_text_file(lf, "list file").splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise self.layout_error(f"{lf} line {lineno} has {len(parts)} paths; expected 'rgb depth'")
                pairs.append((parts[0], parts[1]))
            origin = f"listed in {lf}"
        else:
            pairs = [(str(p.relative_to(base)), str(p.relative_to(base).parent / ("depth_plane_" + p.name[4:])))
                     for p in sorted(base.glob("ai_*_*/rgb_cam_*_fr*.png"))]
            origin = f"the depth of {base}/<scene>/rgb_cam_XX_frIIII.png"
        self._entries = []
        for rgb_rel, depth_rel in pairs:
            scene = Path(rgb_rel).parent.name
            m = _PNG_RE.match(Path(rgb_rel).name)
            if m is None:
                raise self.layout_error(f"{rgb_rel} ({origin}) is not named <scene>/rgb_cam_XX_frIIII.png")
            partner = Path(rgb_rel).parent / f"depth_plane_{m.group(1)}_fr{m.group(2)}.png"
            if Path(depth_rel) != partner:  # a list line pairing an image with another frame's depth
                raise self.layout_error(f"{rgb_rel} is paired with {depth_rel} ({origin}); its depth is {partner} "
                                        "(the same scene, camera and frame). Correct that line of the list")
            if wanted is not None and scene not in wanted:
                continue
            for rel in (rgb_rel, depth_rel):
                if not (base / rel).is_file():
                    raise self.layout_error(f"{base / rel} is missing ({origin})")
            self._entries.append((base / rgb_rel, base / depth_rel))
            self.names.append(f"{scene}_{m.group(1)}_{m.group(2)}")
        if lf is not None:
            refuse_repeated(self, self.names, lf, "Remove the repeated lines (or restore the file from Marigold's "
                            "data_split)", listed=[f"{rgb.relative_to(base)} {depth.relative_to(base)}"
                                                   for rgb, depth in self._entries])
        if not self._entries:
            raise self.layout_error(f"no <scene>/rgb_cam_XX_frIIII.png of split {self.split!r} found under {base}")

    def _load(self, index: int) -> Sample:
        if self.format == "marigold":
            rgb, depth_path = self._entries[index]
            image, depth = read_image(rgb), read_png_depth(depth_path, 1000.0)  # mm -> m, already planar
            h, w = depth.shape
            return Sample(image=image, depth=depth, sparse=None, intrinsics=hypersim_intrinsics(h, w),
                          name=self.names[index])
        return self._load_raw(index)

    def _load_raw(self, index: int) -> Sample:
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
