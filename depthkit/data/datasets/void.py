"""VOID (Wong et al., 2020): indoor/outdoor RealSense frames with 150 / 500 / 1500-point VIO sparse depth.

Layout of the release (``void_release.zip``, see github.com/alexklwong/void-dataset)::

    <root>/void_1500/                      (<root> = void_release; or <root> = void_1500 itself)
        test_image.txt                     one path per line, relative to void_release,
        test_sparse_depth.txt              e.g. void_1500/data/<sequence>/image/<timestamp>.png
        test_ground_truth.txt
        test_intrinsics.txt                -> void_1500/data/<sequence>/K.txt
        data/<sequence>/image/<timestamp>.png           RGB 640x480
        data/<sequence>/sparse_depth/<timestamp>.png    uint16, depth * 256 (0 = missing)
        data/<sequence>/ground_truth/<timestamp>.png    uint16, depth * 256
        data/<sequence>/K.txt                           3x3 K

The four list files are read in parallel, line by line (as Marigold-DC does); each path is resolved against
void_release, then against the density folder. The 800 test frames are evaluated at 640x480 with the provided
sparse depth. Marigold-DC's processed folders (``void150/``, ``void500/``, ``void1500/``) are read too.
"""

from __future__ import annotations

from pathlib import Path

from depthkit.data.datasets._base import (
    PROCESSED_LAYOUT,
    DepthDataset,
    Sample,
    is_processed_folder,
    load_png256_sample,
    load_processed,
    processed_names,
    refuse_repeated,
)
from depthkit.data.datasets._ops import read_text_file

DENSITIES = (150, 500, 1500)
_LISTS = ("image", "sparse_depth", "ground_truth", "intrinsics")


class VOIDDataset(DepthDataset):
    key = "void"
    title = "VOID"
    default_density = 1500
    layout = """\
  <root>/void_1500/            (<root> = void_release, or the void_<density> folder itself)
      test_image.txt, test_sparse_depth.txt, test_ground_truth.txt, test_intrinsics.txt
      data/<sequence>/image/<timestamp>.png           RGB 640x480
      data/<sequence>/sparse_depth/<timestamp>.png    uint16 / 256 m
      data/<sequence>/ground_truth/<timestamp>.png    uint16 / 256 m
      data/<sequence>/K.txt                           3x3 K
or Marigold-DC's processed folder (void150/, void500/, void1500/):
""" + PROCESSED_LAYOUT
    source = "void_release.zip, linked from https://github.com/alexklwong/void-dataset"

    def __init__(self, root, split: str | None = None, protocol=None, density: int | None = None):
        density = self.default_density if density is None else density
        if isinstance(density, str) and density.strip().isdigit():
            density = int(density)
        if isinstance(density, bool) or density not in DENSITIES:  # 150.0 == 150; 150.7, "abc" and True are refused
            raise ValueError(f"VOID density must be one of {DENSITIES} sparse points (the release's void_150, "
                             f"void_500, void_1500); received {density!r}.")
        density = int(density)
        if protocol is None:
            protocol = f"void{density}"
        super().__init__(root, protocol, split)
        self._check_split(("test", "train"))
        self.density = density
        if is_processed_folder(self.root):
            self.base, self._processed = self.root, True
            self.names = processed_names(self, self.root)
            return
        self._processed = False
        folder = f"void_{density}"
        if (self.root / folder).is_dir():
            release, dens_dir = self.root, self.root / folder
        elif self.root.name == folder:
            release, dens_dir = self.root.parent, self.root
        else:
            raise self.layout_error(f"{self.root} has no {folder}/ folder (and is not one)")
        self.base = dens_dir
        columns, listed = [], {}
        for what in _LISTS:
            lf = dens_dir / f"{self.split}_{what}.txt"
            if not lf.is_file():
                raise self.layout_error(f"list file {lf} is missing")
            lines = listed[what] = [ln.strip() for ln in read_text_file(lf, "list file").splitlines() if ln.strip()]
            columns.append([self._resolve(release, dens_dir, line, lf) for line in lines])
        lengths = {len(c) for c in columns}
        if len(lengths) != 1:
            counts = ", ".join(f"{self.split}_{w}.txt: {len(c)}" for w, c in zip(_LISTS, columns))
            raise self.layout_error(f"the list files in {dens_dir} have different lengths ({counts})")
        self._entries = list(zip(*columns))
        if not self._entries:
            raise self.layout_error(f"{dens_dir / (self.split + '_image.txt')} is empty")
        self._check_rows(dens_dir)
        # <sequence>_<timestamp>: unique, and the same for every density, so seeds and outputs line up across them.
        self.names = [f"{Path(e[0]).parent.parent.name}_{Path(e[0]).stem}" for e in self._entries]
        refuse_repeated(self, self.names, dens_dir / f"{self.split}_image.txt", "Remove the repeated lines from all "
                        "four list files (or restore them from the release)", listed=listed["image"])

    def _check_rows(self, dens_dir: Path) -> None:
        """Refuse list files whose line N names different frames: the lists are read in parallel, so a reordered or
        edited list would pair an image with another frame's depth. Row N must name one sequence and, for the three
        PNGs, one timestamp (``data/<sequence>/{image,sparse_depth,ground_truth}/<timestamp>.png``,
        ``data/<sequence>/K.txt``)."""
        for lineno, (img, sparse, gt, k) in enumerate(self._entries, 1):
            frame = (img.parent.parent.name, img.stem)
            for what, path, got in (("sparse_depth", sparse, (sparse.parent.parent.name, sparse.stem)),
                                    ("ground_truth", gt, (gt.parent.parent.name, gt.stem)),
                                    ("intrinsics", k, (k.parent.name, img.stem))):
                if got != frame:
                    raise self.layout_error(
                        f"line {lineno} of {self.split}_image.txt and of {self.split}_{what}.txt in {dens_dir} name "
                        f"different frames ({img} and {path}); the four list files must list the same frames in the "
                        "same order. Restore the lists from the release")

    def _resolve(self, release: Path, dens_dir: Path, line: str, lf: Path) -> Path:
        for base in (release, dens_dir, release.parent):
            if (base / line).is_file():
                return base / line
        raise self.layout_error(f"{line!r} (listed in {lf}) is not a file under {release} or {dens_dir}")

    def _load(self, index: int) -> Sample:
        if self._processed:
            return load_processed(self.base, self.names[index])
        img, sparse, gt, k = self._entries[index]
        return load_png256_sample(img, sparse, gt, k, self.names[index])


class VOID150Dataset(VOIDDataset):
    key = "void150"
    default_density = 150


class VOID500Dataset(VOIDDataset):
    key = "void500"
    default_density = 500


class VOID1500Dataset(VOIDDataset):
    key = "void1500"
    default_density = 1500
