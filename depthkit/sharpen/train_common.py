"""What both stage-2 trainers (SharpDepth, Lotus) share beyond :mod:`depthkit.training`: their data sources
(recipe ``DataSourceConfig`` entries, with sparse maps from a side folder), random resized crops, and image/map
tensors.

Every random choice of global micro-step ``k`` (where to crop, whether to flip) is drawn from a generator seeded
with :func:`depthkit.training.step_seed`, so ``--resume`` stays exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["build_training_data", "random_resized_crop", "check_resolution", "images_to_tensor", "maps_to_tensor"]


def _read_sparse_file(sparse_dir: Path, name: str, scale: float | None) -> np.ndarray | None:
    from depthkit.checkpoints import safe_join
    from depthkit.io import read_depth

    for rel in (f"{name}.npy", f"{name}_sparse.npy", f"{name}.png", f"{name}_sparse.png"):
        path = safe_join(sparse_dir, rel)
        if path.is_file():
            if path.suffix == ".png" and scale is None:
                raise ValueError(f"sparse file {path} is a 16-bit PNG: set the source's sparse_scale (units per "
                                 "metre: 256 KITTI/VOID, 1000 millimetres).")
            return read_depth(path, depth_scale=scale)
    return None


class _WithSparseDir:
    """Adds ``sparse`` from ``sparse_dir`` to a reader's items that have none (image folders)."""

    def __init__(self, dataset, sparse_dir, scale: float | None):
        self.dataset, self.sparse_dir, self.scale = dataset, Path(sparse_dir).expanduser(), scale
        if not self.sparse_dir.is_dir():
            raise FileNotFoundError(f"sparse_dir {self.sparse_dir} does not exist.")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        if item.get("sparse") is None:
            item["sparse"] = _read_sparse_file(self.sparse_dir, item["name"], self.scale)
        return item


def build_training_data(sources, seed: int = 0, exclude_sparse_files: bool = True):
    """A :class:`depthkit.training.MixedDataset` (``draw=True``) from recipe ``DataSourceConfig`` entries (``build_dataset(name, root, split,
    **options)``; image folders skip ``*_sparse.*`` and depthkit's own ``*_depth.*``/``*_color.*`` outputs)."""
    from depthkit.data.datasets import build_dataset
    from depthkit.training import MixedDataset, training_split

    datasets, weights, names = [], [], []
    for src in sources:
        options = dict(src.options)
        if src.name == "image_folder" and exclude_sparse_files:
            options.setdefault("exclude", ("*_sparse.*", "*_depth.*", "*_color.*"))
        ds = build_dataset(src.name, src.root, split=training_split(src.split), **options)
        if src.sparse_dir is not None:
            ds = _WithSparseDir(ds, src.sparse_dir, src.sparse_scale)
        datasets.append(ds)
        weights.append(src.weight)
        names.append(src.name)
    return MixedDataset(datasets, weights, names, seed=seed, draw=True)


def check_resolution(resolution, multiple: int) -> tuple[int, int]:
    """``(H, W)`` from the recipe, each a multiple of ``multiple`` (the model's ``resolution_multiple``)."""
    h, w = (int(v) for v in resolution)
    if h % multiple or w % multiple:
        suggestion = [max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple)]
        raise ValueError(f"data.resolution={[h, w]} must be multiples of {multiple} pixels per side for this model "
                         f"(VAE factor x UNet downsampling); e.g. {suggestion}.")
    return h, w


def random_resized_crop(image: np.ndarray, maps: dict, sparse: np.ndarray | None, out_hw: tuple[int, int],
                        rng: np.random.Generator, flip: bool = False):
    """Resize ``image`` (and the dense ``maps``: nearest; ``sparse``: points moved, none lost) so it covers
    ``out_hw`` with its aspect kept, crop ``out_hw`` at a random position and flip horizontally with probability
    0.5 when ``flip``. Returns ``(image, maps, sparse)``."""
    from depthkit.data.datasets._ops import resize_sample_arrays, scatter_sparse

    oh, ow = out_hw
    h, w = image.shape[:2]
    scale = max(oh / h, ow / w)
    rh, rw = max(oh, int(np.ceil(h * scale - 1e-6))), max(ow, int(np.ceil(w * scale - 1e-6)))
    if (rh, rw) != (h, w):
        import cv2

        image = resize_sample_arrays(image, None, None, {}, None, (rh, rw))[0]
        maps = {k: (None if v is None else cv2.resize(v, (rw, rh), interpolation=cv2.INTER_NEAREST_EXACT))
                for k, v in maps.items()}
        sparse = None if sparse is None else scatter_sparse(sparse, (rh, rw))
    top = int(rng.integers(rh - oh + 1))
    left = int(rng.integers(rw - ow + 1))
    do_flip = bool(flip and rng.random() < 0.5)

    def cut(a):
        if a is None:
            return None
        a = a[top:top + oh, left:left + ow]
        return np.ascontiguousarray(a[:, ::-1] if do_flip else a)

    return cut(image), {k: cut(v) for k, v in maps.items()}, cut(sparse)


def images_to_tensor(images: list[np.ndarray], device):
    """HxWx3 uint8 list → ``B x 3 x H x W`` float32 in [-1, 1]."""
    import torch

    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return (x / 127.5 - 1.0).to(device)


def maps_to_tensor(maps: list[np.ndarray], device):
    """HxW float list → ``B x 1 x H x W`` float32."""
    import torch

    return torch.from_numpy(np.stack(maps).astype(np.float32))[:, None].to(device)
