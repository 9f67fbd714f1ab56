"""depthkit's procedural scene generator (:mod:`depthkit.data.synthetic`) as a dataset with fixed splits.

Item ``i`` of split ``s`` is ``render_scene(SPLIT_SEEDS[s] + seed_offset + i, height, width, kind)``: the splits
occupy disjoint seed ranges of 10 million scenes each, so train, val and test never share a scene whatever the
lengths. No files are read; ``root`` is ignored (pass None). Sparse input follows the training readers
(:class:`~depthkit.data.datasets._training.TrainingDepthDataset`): ``sparse_pattern`` / ``sparse_kwargs`` for
:func:`depthkit.data.sparse.make_sparse`, 500 random points by default (the ``synthetic`` protocol).
"""

from __future__ import annotations

from depthkit.data.datasets._base import Sample
from depthkit.data.datasets._training import TrainingDepthDataset

SPLIT_SEEDS = {"train": 0, "val": 10_000_000, "test": 20_000_000}
SPLIT_SIZE = 10_000_000
DEFAULT_LENGTHS = {"train": 10_000, "val": 100, "test": 100}


class SyntheticDataset(TrainingDepthDataset):
    key = "synthetic"
    title = "synthetic scenes"
    needs_root = False
    layout = "  (generated in memory; no files)"
    source = "depthkit.data.synthetic.render_scene"

    def __init__(self, root=None, split: str | None = None, protocol=None, length: int | None = None,
                 height: int = 240, width: int = 320, kind: str = "random", hfov_deg: float = 60.0,
                 image_noise: float = 0.0, seed_offset: int = 0, sparse_pattern: str | None = "random",
                 sparse_kwargs: dict | None = None, sparse_seed: int | None = None, clutter: int = 0):
        super().__init__(root, protocol, split, sparse_pattern, sparse_kwargs, sparse_seed)
        self._check_split(tuple(SPLIT_SEEDS))
        length = DEFAULT_LENGTHS[self.split] if length is None else int(length)
        if length < 1 or seed_offset < 0 or seed_offset + length > SPLIT_SIZE:
            raise ValueError(f"synthetic split needs length >= 1, seed_offset >= 0 and seed_offset + length <= "
                             f"{SPLIT_SIZE}; received length={length}, seed_offset={seed_offset}.")
        if height < 1 or width < 1:
            raise ValueError(f"synthetic image size must be >= 1 pixel; received height={height}, width={width}.")
        self.length, self.height, self.width = length, int(height), int(width)
        self.kind, self.hfov_deg, self.image_noise = kind, float(hfov_deg), float(image_noise)
        from depthkit.data.synthetic import _check_int

        self.clutter = _check_int("synthetic clutter (plants per scene)", clutter, 0)
        self.first_seed = SPLIT_SEEDS[self.split] + int(seed_offset)
        self.names = [f"synthetic_{self.first_seed + i}" for i in range(length)]

    def scene_seed(self, index: int) -> int:
        """The ``render_scene`` seed of item ``index``."""
        return self.first_seed + index

    def _load(self, index: int) -> Sample:
        from depthkit.data.synthetic import render_scene

        scene = render_scene(self.scene_seed(index), self.height, self.width, self.kind, self.hfov_deg,
                             image_noise=self.image_noise, clutter=self.clutter)
        return Sample(image=scene.image, depth=scene.depth, sparse=None, intrinsics=scene.intrinsics,
                      name=self.names[index])

    def __repr__(self) -> str:
        clutter = f", clutter={self.clutter}" if self.clutter else ""
        return (f"SyntheticDataset(split={self.split!r}, n={len(self)}, size={self.height}x{self.width}, "
                f"kind={self.kind!r}, first_seed={self.first_seed}{clutter})")
