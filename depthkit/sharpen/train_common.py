"""Pieces both stage-2 trainers share: mixed data sources, random resized crops, per-micro-step seeds, run folders.

Determinism is what makes ``--resume`` exact: every random choice of global micro-step ``k`` (which samples, where
to crop, whether to flip, every torch draw inside the losses) is a pure function of ``(train.seed, k, rank)``, and
the optimiser, LR schedule and EMA are restored from the checkpoint. A resumed run therefore takes the same steps
an uninterrupted one would have taken.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["atomic_export", "step_seed", "step_generator", "MixedDataset", "build_training_data", "random_resized_crop",
           "check_resolution", "prepare_run_dir", "images_to_tensor", "maps_to_tensor"]


def step_seed(seed: int, k: int, rank: int = 0, stream: int = 0) -> int:
    """A 63-bit seed for micro-step ``k`` of process ``rank`` (``stream`` separates independent uses)."""
    return int(np.random.SeedSequence([int(seed), int(k), int(rank), int(stream)]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


def step_generator(seed: int, k: int, rank: int = 0, device="cpu"):
    """A ``torch.Generator`` on ``device`` seeded for micro-step ``k`` (the losses' noise, gate coins, timesteps)."""
    import torch

    return torch.Generator(device=device).manual_seed(step_seed(seed, k, rank, stream=1))


class MixedDataset:
    """Several readers mixed by weight. Position ``i`` maps to ``(source, item)`` by a generator seeded with
    ``(seed, i)``: the source is drawn with probability weight / sum of weights, the item uniformly within it. Its
    length is the sum of the sources' lengths, so one "epoch" is as many samples as the sources hold."""

    def __init__(self, datasets: list, weights: list[float], names: list[str], seed: int = 0):
        if len(datasets) != len(weights) or not datasets:
            raise ValueError("MixedDataset needs one weight per dataset and at least one dataset.")
        self.datasets, self.names, self.seed = list(datasets), list(names), int(seed)
        w = np.asarray(weights, dtype=np.float64)
        self.p = w / w.sum()
        self.lengths = [len(d) for d in self.datasets]

    def __len__(self) -> int:
        return int(sum(self.lengths))

    def locate(self, i: int) -> tuple[int, int]:
        if len(self.datasets) == 1:
            return 0, int(i) % self.lengths[0]
        rng = np.random.default_rng([self.seed, int(i)])
        j = int(rng.choice(len(self.datasets), p=self.p))
        return j, int(rng.integers(self.lengths[j]))

    def __getitem__(self, i: int) -> dict:
        j, idx = self.locate(i)
        item = dict(self.datasets[j][idx])
        item["source"] = j
        return item


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


def build_training_data(sources, seed: int = 0, exclude_sparse_files: bool = True) -> MixedDataset:
    """A :class:`MixedDataset` from recipe ``DataSourceConfig`` entries (``build_dataset(name, root, split,
    **options)``; image folders skip ``*_sparse.*`` and depthkit's own ``*_depth.*``/``*_color.*`` outputs)."""
    from depthkit.data.datasets import build_dataset

    datasets, weights, names = [], [], []
    for src in sources:
        options = dict(src.options)
        if src.name == "image_folder" and exclude_sparse_files:
            options.setdefault("exclude", ("*_sparse.*", "*_depth.*", "*_color.*"))
        ds = build_dataset(src.name, src.root, split=src.split, **options)
        if src.sparse_dir is not None:
            ds = _WithSparseDir(ds, src.sparse_dir, src.sparse_scale)
        datasets.append(ds)
        weights.append(src.weight)
        names.append(src.name)
    return MixedDataset(datasets, weights, names, seed=seed)


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


def prepare_run_dir(output_dir, resume: bool) -> Path:
    """Create the run folder; refuse to start over a run that has resumable checkpoints unless resuming."""
    from depthkit.training import latest_state_dir

    run = Path(output_dir)
    if not resume and latest_state_dir(run) is not None:
        raise ValueError(f"{run} already holds a training run (checkpoints/). Resume it with --resume, or choose "
                         "another output.output_dir.")
    run.mkdir(parents=True, exist_ok=True)
    return run


def start_run(recipe, resume: bool):
    """Run folder (see :func:`prepare_run_dir`) and accelerator for ``recipe``; the main process records the resolved
    recipe as ``recipe.yaml``. Returns ``(run, accelerator)``."""
    from depthkit.config import recipe_to_yaml
    from depthkit.training import build_accelerator

    run = prepare_run_dir(recipe.output.output_dir, resume)
    accelerator = build_accelerator(recipe.train, run)
    if accelerator.is_main_process:
        (run / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    return run, accelerator


def atomic_export(final: Path, write) -> Path:
    """Call ``write(tmp)`` on a sibling temporary folder, then swap it in for ``final``: an interrupted export never
    leaves a half-written final checkpoint."""
    import shutil

    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)
    return final
