"""Base for training readers (Hypersim, Virtual KITTI 2, synthetic): sparse input from a configurable pattern.

The sparse input is drawn from the GT by :func:`depthkit.data.sparse.make_sparse` with a pattern (``"random"``,
LiDAR-like scanlines, ...) and keyword options. The draw is seeded from ``(sparse_seed, image name, epoch)``, so a
given epoch is reproducible on any worker or shard and :meth:`set_epoch` gives fresh points every epoch.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from depthkit.data.datasets._base import DepthDataset, Sample
from depthkit.data.datasets._ops import name_crc
from depthkit.data.protocols import depth_range_mask


class TrainingDepthDataset(DepthDataset):
    """A :class:`DepthDataset` whose sparse input comes from ``make_sparse(gt, sparse_pattern, rng, intrinsics,
    **sparse_kwargs)``; ``sparse_pattern=None`` gives no sparse input (an all-zero map)."""

    extra_patterns: ClassVar[tuple[str, ...]] = ()
    """Patterns a reader draws itself besides :data:`depthkit.data.sparse.SAMPLERS` (it checks their options)."""

    def __init__(self, root, protocol=None, split=None, sparse_pattern: str | None = "random",
                 sparse_kwargs: dict | None = None, sparse_seed: int | None = None):
        super().__init__(root, protocol, split)
        self.sparse_pattern = sparse_pattern
        self.sparse_kwargs = dict(sparse_kwargs or {})
        from depthkit.data.sparse import SAMPLERS, check_sparse_kwargs

        # checked when built, not at the first item (inside a DataLoader worker, or at every image of an evaluation)
        if sparse_pattern is not None and sparse_pattern not in self.extra_patterns:
            if sparse_pattern not in SAMPLERS:
                allowed = ", ".join(sorted([*SAMPLERS, *self.extra_patterns]))
                raise ValueError(f"{self.title} sparse_pattern must be one of {allowed} (or None: no sparse input); "
                                 f"received {sparse_pattern!r}.")
            check_sparse_kwargs(sparse_pattern, self.sparse_kwargs)
        self.sparse_seed = int(self.protocol.sparse_seed or 0) if sparse_seed is None else int(sparse_seed)
        if self.sparse_seed < 0:
            raise ValueError(f"sparse_seed must be >= 0; received {sparse_seed}.")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw different (still reproducible) sparse points in each epoch."""
        self.epoch = int(epoch)

    def _rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng([self.sparse_seed, name_crc(name), self.epoch])

    def _draw_sparse(self, s: Sample) -> np.ndarray:
        if self.sparse_pattern is None:
            return np.zeros_like(s.depth, dtype=np.float32)
        from depthkit.data.sparse import make_sparse

        gt = np.where(depth_range_mask(s.depth, self.protocol), s.depth, 0).astype(np.float32)
        kwargs = dict(self.sparse_kwargs)
        if self.sparse_pattern == "random" and self.protocol.n_sparse_points is not None:
            kwargs.setdefault("n", self.protocol.n_sparse_points)
        out = make_sparse(gt, self.sparse_pattern, self._rng(s.name), intrinsics=s.intrinsics, **kwargs)
        return np.asarray(out, dtype=np.float32)
