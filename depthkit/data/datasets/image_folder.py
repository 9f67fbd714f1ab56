"""Unlabelled images from a folder tree (SharpDepth's label-free training): any .png/.jpg/.jpeg, recursively.

Items have ``image`` and ``name`` (the path relative to the root, without suffix, ``/``-separated); ``depth``,
``sparse``, ``valid`` and ``intrinsics`` are None. Files are sorted by relative path; hidden files and folders are
skipped; ``exclude`` takes glob patterns on the relative path (e.g. ``"*_depth.png"`` for depthkit's own outputs).
"""

from __future__ import annotations

import fnmatch
import warnings

from depthkit.data.datasets._base import DepthDataset, Sample
from depthkit.data.protocols import Protocol
from depthkit.io import read_image
from depthkit.warning_types import DepthkitWarning

SUFFIXES = (".png", ".jpg", ".jpeg")
_UNLABELLED = Protocol("image_folder", 0.0, float("inf"), None, None, None, None,
                       "unlabelled images; no GT, no sparse input", split="all", benchmark=False)


class ImageFolderDataset(DepthDataset):
    key = "image_folder"
    title = "image folder"
    layout = "  <root>/**/*.png|jpg|jpeg   (any folder tree of RGB images)"
    source = "any folder of images"

    def __init__(self, root, split: str | None = None, protocol=None, exclude: tuple[str, ...] = ()):
        super().__init__(root, protocol if protocol is not None else _UNLABELLED, split)
        self._check_split(("all", "train"))
        files, dangling = [], []
        for p in self.root.rglob("*"):
            rel = p.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts) or p.suffix.lower() not in SUFFIXES:
                continue
            if any(fnmatch.fnmatch(rel.as_posix(), pat) for pat in exclude):
                continue
            if p.is_symlink() and not p.exists():
                dangling.append(rel.as_posix())
            elif p.is_file():
                files.append(p)
        if dangling:
            warnings.warn(f"{self.root}: skipped {len(dangling)} image link(s) whose target does not exist, e.g. "
                          f"{sorted(dangling)[:3]}; restore the targets or remove the links", DepthkitWarning,
                          stacklevel=2)
        self._files = sorted(files, key=lambda p: p.relative_to(self.root).as_posix())
        if not self._files:
            raise self.layout_error(f"{self.root} holds no {'/'.join(SUFFIXES)} images")
        self.names = [p.relative_to(self.root).with_suffix("").as_posix() for p in self._files]
        if len(set(self.names)) != len(self.names):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})[:3]
            raise self.layout_error(f"several images share a name once the suffix is dropped: {dup}; rename them")

    def _load(self, index: int) -> Sample:
        return Sample(image=read_image(self._files[index]), depth=None, sparse=None, intrinsics=None,
                      name=self.names[index])
