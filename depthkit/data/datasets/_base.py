"""The base class of every depthkit dataset reader: one item contract, protocol geometry, sparse input, errors.

Every item is a dict::

    image       HxWx3 uint8 RGB
    sparse      HxW float32 metres, 0 = missing (None for unlabelled folders)
    depth       HxW float32 ground-truth metres, 0 = missing (None for unlabelled folders)
    valid       HxW bool: GT present and inside the protocol's depth range (None for unlabelled folders)
    intrinsics  depthkit.geometry.Intrinsics (pixels, for the returned resolution) or None
    name        str, unique within the dataset (used for per-image seeds and output file names)
    edges       HxW bool (iBims-1 only, when its edge annotations are present)

A reader lists its samples when constructed (failing early, with the expected layout, when the root is missing or
malformed) and decodes one sample per ``__getitem__``. The shared pipeline then applies the protocol
(:mod:`depthkit.data.protocols`): resize to ``eval_resolution``, cut ``input_crop``, draw the sparse input from the
GT (``n_sparse_points``, seeded per image from the protocol seed and the image name) or filter the dataset's own
(``outlier_filter``), and compute ``valid``. Samples read from a Marigold-DC processed folder are already in
protocol form and pass through unchanged.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from depthkit.data.datasets._ops import (
    DatasetLayoutError,
    filter_local_outliers,
    image_rng,
    marigold_dc_select,
    read_k_file,
    read_png_depth,
    resize_sample_arrays,
)
from depthkit.data.protocols import Protocol, depth_range_mask, get_protocol
from depthkit.geometry import Intrinsics
from depthkit.io import read_depth, read_image

__all__ = ["Sample", "DepthDataset", "collate_items"]


@dataclass
class Sample:
    """One decoded sample before the protocol is applied (arrays as described in the module docstring)."""

    image: np.ndarray
    depth: np.ndarray | None
    sparse: np.ndarray | None
    intrinsics: Intrinsics | None
    name: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    """Extra HxW bool maps that follow the geometry (e.g. ``edges``); returned as item keys."""
    preprocessed: bool = False
    """True when the files are already in protocol form (Marigold-DC processed folders): no resize/crop/sampling."""


class DepthDataset(torch.utils.data.Dataset):
    """Base reader. Subclasses set the class attributes and implement ``_load(index) -> Sample``."""

    key: ClassVar[str] = ""
    """Registry name, also the default protocol name."""
    title: ClassVar[str] = ""
    """Human name used in messages."""
    layout: ClassVar[str] = ""
    """The expected on-disk layout, shown when the root is missing or malformed."""
    source: ClassVar[str] = ""
    """Where to get the dataset."""

    needs_root: ClassVar[bool] = True
    """False for generated data (synthetic), whose ``root`` is ignored."""

    def __init__(self, root, protocol: Protocol | str | None = None, split: str | None = None):
        self.protocol = get_protocol(protocol if protocol is not None else self.key)
        self.split = split if split is not None else self.protocol.split
        self.names: list[str] = []
        if not self.needs_root and root is None:
            self.root = None
            return
        if root is None or not isinstance(root, (str, Path)):
            raise TypeError(f"{self.title} root must be a folder path (str or Path); received {type(root).__name__}.")
        self.root = Path(root).expanduser()
        if self.needs_root and not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise self.layout_error(f"{self.root} {what}")

    # ------------------------------------------------------------------ errors
    @classmethod
    def layout_error(cls, problem: str) -> DatasetLayoutError:
        """An error naming the problem, the expected layout and where the dataset comes from."""
        return DatasetLayoutError(
            f"{cls.title}: {problem}.\nExpected layout:\n{cls.layout.rstrip()}\nGet it: {cls.source}"
        )

    def _check_split(self, allowed: tuple[str, ...]) -> None:
        if self.split not in allowed:
            raise ValueError(f"{self.title} has no split {self.split!r}; allowed: {', '.join(allowed)}.")

    # ------------------------------------------------------------------ torch Dataset
    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"{self.title} index must be an integer; received {type(index).__name__}.") from None
        if not -n <= index < n:
            raise IndexError(f"{self.title} index {index} out of range for {n} samples.")
        return self._finish(self._load(index % n))

    def _load(self, index: int) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"

    # ------------------------------------------------------------------ protocol pipeline
    def _finish(self, s: Sample) -> dict:
        self._check_shapes(s)
        p = self.protocol
        if not s.preprocessed:
            s = self._apply_geometry(s)
            if s.sparse is None and s.depth is not None:
                s.sparse = self._draw_sparse(s)
            elif s.sparse is not None and p.outlier_filter is not None:
                s.sparse = filter_local_outliers(s.sparse, *p.outlier_filter)
        item = {
            "image": np.ascontiguousarray(s.image),
            "sparse": None if s.sparse is None else np.ascontiguousarray(s.sparse, dtype=np.float32),
            "depth": None if s.depth is None else np.ascontiguousarray(s.depth, dtype=np.float32),
            "valid": None if s.depth is None else depth_range_mask(s.depth, p),
            "intrinsics": s.intrinsics,
            "name": s.name,
        }
        for key, mask in s.masks.items():
            item[key] = np.ascontiguousarray(mask, dtype=bool)
        return item

    def _check_shapes(self, s: Sample) -> None:
        img = s.image
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise DatasetLayoutError(f"{self.title} sample {s.name!r}: image must be HxWx3 uint8; received "
                                     f"{img.dtype} {img.shape}.")
        for what, arr in (("depth", s.depth), ("sparse", s.sparse), *s.masks.items()):
            if arr is not None and arr.shape != img.shape[:2]:
                raise DatasetLayoutError(
                    f"{self.title} sample {s.name!r}: {what} is {arr.shape[1]}x{arr.shape[0]} (WxH) but the image is "
                    f"{img.shape[1]}x{img.shape[0]}; the files do not belong together."
                )

    def _apply_geometry(self, s: Sample) -> Sample:
        p = self.protocol
        image, depth, sparse, masks, intr = s.image, s.depth, s.sparse, dict(s.masks), s.intrinsics
        if p.eval_resolution is not None and tuple(image.shape[:2]) != tuple(p.eval_resolution):
            image, depth, sparse, masks, intr = resize_sample_arrays(image, depth, sparse, masks, intr,
                                                                     p.eval_resolution, p.image_resize)
        if p.input_crop is not None:
            top, bottom, left, right = p.input_crop
            if bottom > image.shape[0] or right > image.shape[1]:
                raise ValueError(f"{self.title} sample {s.name!r}: input crop {p.input_crop} does not fit "
                                 f"{image.shape[0]}x{image.shape[1]} (HxW).")
            rows, cols = slice(top, bottom), slice(left, right)
            image = image[rows, cols]
            depth = None if depth is None else depth[rows, cols]
            sparse = None if sparse is None else sparse[rows, cols]
            masks = {k: m[rows, cols] for k, m in masks.items()}
            if intr is not None:
                intr = Intrinsics(intr.fx, intr.fy, intr.cx - left, intr.cy - top)
        return replace(s, image=image, depth=depth, sparse=sparse, masks=masks, intrinsics=intr)

    def _draw_sparse(self, s: Sample) -> np.ndarray:
        """Sparse input drawn from the GT (metres, 0 = missing) as the protocol says; zeros when it draws none."""
        p = self.protocol
        n = p.n_sparse_points
        if n is None:
            return np.zeros_like(s.depth, dtype=np.float32)
        valid = depth_range_mask(s.depth, p)
        gt = np.where(valid, s.depth, 0).astype(np.float32)
        if p.sparse_sampler == "marigold_dc":
            chosen = marigold_dc_select(valid, n, p.sparse_seed or 0)
            return np.where(chosen, gt, 0).astype(np.float32)
        from depthkit.data.sparse import sample_random_points

        return np.asarray(sample_random_points(gt, n, image_rng(p.sparse_seed or 0, s.name)), dtype=np.float32)


# ---------------------------------------------------------------------- Marigold-DC processed folders
PROCESSED_LAYOUT = """\
  <root>/rgb/<name>.png            RGB
  <root>/sparse/<name>.npy         float metres, 0 = missing (protocol already applied)
  <root>/gt/<name>.npy             float metres, 0 = missing
  <root>/intrinsics/<name>.txt     3x3 K (optional)
  (the output of Marigold-DC's script/dataset_processing.py)"""


def visible(paths) -> list[Path]:
    """``paths`` without the hidden files among them (a name starting with "."): the ``._NAME`` AppleDouble files a
    release gains on a macOS or non-HFS volume would otherwise be listed as samples that cannot be read."""
    return [p for p in paths if not p.name.startswith(".")]


def refuse_repeated(ds: DepthDataset, names: list[str], source, fix: str, listed: list[str] | None = None) -> None:
    """Refuse a listing (a list file, a folder) that names one sample more than once: the sample would be read, and
    scored, once per mention, counting twice in the mean. ``names`` are the samples in listing order; ``listed`` (same
    length, optional) what the listing says for each, shown in the error instead of the name; ``source`` is the file
    or folder and ``fix`` what to do."""
    count: dict[str, int] = {}
    for name in names:
        count[name] = count.get(name, 0) + 1
    repeated = [name for name, n in count.items() if n > 1]
    if not repeated:
        return
    shown: dict[str, str] = {}
    for name, entry in zip(names, listed or names):
        shown.setdefault(name, entry)  # the first mention of each name
    first = ", ".join(f"{shown[name]!r} ({count[name]} times)" for name in repeated[:3])
    more = f" and {len(repeated) - 3} more" if len(repeated) > 3 else ""
    raise ds.layout_error(f"{source} names {len(repeated)} sample(s) more than once: {first}{more}; each would be "
                          f"read, and scored, once per mention. {fix}")


def is_processed_folder(root: Path) -> bool:
    """True when ``root`` holds Marigold-DC's processed layout (rgb/, sparse/*.npy, gt/)."""
    return (root / "rgb").is_dir() and (root / "gt").is_dir() and (root / "sparse").is_dir() and \
        any((root / "sparse").glob("*.npy"))


def processed_names(ds: DepthDataset, root: Path) -> list[str]:
    """Names of a processed folder (sorted), after checking every sample has its rgb, sparse and gt file. The folder
    holds the frames of the split the protocol evaluates (Marigold-DC processes nothing else), so another ``split``
    is refused rather than answered with those frames."""
    if ds.split != ds.protocol.split:
        raise ValueError(f"{ds.title}: {root} is a Marigold-DC processed folder, which holds the "
                         f"{ds.protocol.split!r} split only; received split {ds.split!r}. Leave split out (or pass "
                         f"{ds.protocol.split!r}), or give the root of the dataset's own release for the "
                         f"{ds.split!r} split.")
    names = sorted(p.stem for p in _processed_images(root))
    if not names:
        raise ds.layout_error(f"{root / 'rgb'} holds no .png/.jpg images")
    refuse_repeated(ds, names, root / "rgb", "Keep one image per sample (0000.png and 0000.jpg are one sample, 0000)")
    for name in names:
        for sub in ("sparse", "gt"):
            if not (root / sub / f"{name}.npy").is_file():
                raise ds.layout_error(f"{root / sub / (name + '.npy')} is missing (its image is {root / 'rgb'})")
    return names


def _processed_images(root: Path) -> list[Path]:
    """The images in ``root/rgb``: .png, .jpg or .jpeg, the suffix in any case (``0000.PNG`` too)."""
    return [p for p in visible((root / "rgb").iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg")]


def load_processed(root: Path, name: str) -> Sample:
    """Decode one sample of a processed folder; it is already in protocol form."""
    rgb = next((root / "rgb" / f"{name}{ext}" for ext in (".png", ".jpg", ".jpeg")
                if (root / "rgb" / f"{name}{ext}").is_file()), None)
    if rgb is None:  # a suffix in another case (processed_names lists those too): one listing of the folder
        rgb = next((p for p in _processed_images(root) if p.stem == name), root / "rgb" / f"{name}.png")
    k_path = root / "intrinsics" / f"{name}.txt"
    return Sample(
        image=read_image(rgb),
        depth=read_depth(root / "gt" / f"{name}.npy"),
        sparse=read_depth(root / "sparse" / f"{name}.npy"),
        intrinsics=read_k_file(k_path) if k_path.is_file() else None,
        name=name,
        preprocessed=True,
    )


def load_png256_sample(image: Path, sparse: Path, gt: Path, intrinsics: Path, name: str) -> Sample:
    """One sample of a KITTI-style release: RGB, sparse and GT as uint16 PNG at 256 units per metre, a 3x3 K file."""
    return Sample(image=read_image(image), depth=read_png_depth(gt, 256.0), sparse=read_png_depth(sparse, 256.0),
                  intrinsics=read_k_file(intrinsics), name=name)


# ---------------------------------------------------------------------- batching
def collate_items(batch: list[dict]) -> dict:
    """Collate items for a ``DataLoader``: same-shape arrays become stacked tensors (images Bx3xHxW uint8, depth
    maps BxHxW); intrinsics become a Bx4 float tensor (fx, fy, cx, cy) when all are known, else a list; names and
    None values stay lists."""
    out: dict = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if key == "intrinsics":
            if all(v is not None for v in values):
                out[key] = torch.tensor([[v.fx, v.fy, v.cx, v.cy] for v in values], dtype=torch.float32)
            else:
                out[key] = values
        elif all(isinstance(v, np.ndarray) for v in values) and len({v.shape for v in values}) == 1:
            t = torch.from_numpy(np.stack(values))
            out[key] = t.permute(0, 3, 1, 2).contiguous() if key == "image" else t
        else:
            out[key] = values
    return out
