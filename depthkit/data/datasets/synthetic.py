"""depthkit's procedural scene generator (:mod:`depthkit.data.synthetic`) as a dataset with fixed splits.

Item ``i`` of split ``s`` is ``render_scene(SPLIT_SEEDS[s] + seed_offset + i, height, width, kind)``: the splits
occupy disjoint seed ranges of 10 million scenes each, so train, val and test never share a scene whatever the
lengths. No files are read; ``root`` is ignored (pass None). Sparse input follows the training readers
(:class:`~depthkit.data.datasets._training.TrainingDepthDataset`): ``sparse_pattern`` / ``sparse_kwargs`` for
:func:`depthkit.data.sparse.make_sparse`, 500 random points by default (the ``synthetic`` protocol).

One more pattern needs the scene itself, not only its GT: ``sparse_pattern="stereo_sgbm"`` renders the scene's
right view and runs a real stereo matcher on the pair (:func:`depthkit.data.stereo_match.sgbm_disparity`), so the
map carries a matcher's own failures (matches in the sky, fattened edges, speckle, the band left of the search
range). ``sparse_kwargs``: ``baseline`` (metres) and ``nearest_m`` (the nearest depth the search reaches); by
default those of :data:`STEREO_RIGS` for the scene's kind. It is deterministic: ``sparse_seed`` and epochs do not
change it.
"""

from __future__ import annotations

import numpy as np

from depthkit.data.datasets._base import Sample
from depthkit.data.datasets._training import TrainingDepthDataset

SPLIT_SEEDS = {"train": 0, "val": 10_000_000, "test": 20_000_000}
SPLIT_SIZE = 10_000_000
DEFAULT_LENGTHS = {"train": 10_000, "val": 100, "test": 100}
STEREO_SGBM = "stereo_sgbm"
STEREO_RIGS = {"outdoor": (0.54, 2.0), "indoor": (0.12, 0.5)}
"""The ``stereo_sgbm`` pattern's rig per scene kind: (baseline, nearest depth searched), metres. Outdoors KITTI's
0.54 m baseline; indoors 0.12 m, a desktop stereo camera's (ZED: 0.12 m), since KITTI's rig in a room loses a wide
left band (the GT-simulated ``stereo`` pattern keeps 0.54 m for both)."""


class SyntheticDataset(TrainingDepthDataset):
    key = "synthetic"
    title = "synthetic scenes"
    needs_root = False
    layout = "  (generated in memory; no files)"
    source = "depthkit.data.synthetic.render_scene"
    extra_patterns = (STEREO_SGBM,)

    def __init__(self, root=None, split: str | None = None, protocol=None, length: int | None = None,
                 height: int = 240, width: int = 320, kind: str = "random", hfov_deg: float = 60.0,
                 image_noise: float = 0.0, seed_offset: int = 0, sparse_pattern: str | None = "random",
                 sparse_kwargs: dict | None = None, sparse_seed: int | None = None, clutter: int = 0):
        super().__init__(root, protocol, split, sparse_pattern, sparse_kwargs, sparse_seed)
        self._check_split(tuple(SPLIT_SEEDS))
        from depthkit.data.scene_options import check_int, check_view_options, resolve_kind

        length = DEFAULT_LENGTHS[self.split] if length is None else check_int("synthetic length", length, 1)
        seed_offset = check_int("synthetic seed_offset", seed_offset, 0)
        if seed_offset + length > SPLIT_SIZE:
            raise ValueError(f"synthetic split needs length >= 1, seed_offset >= 0 and seed_offset + length <= "
                             f"{SPLIT_SIZE}; received length={length}, seed_offset={seed_offset}.")
        self.length = length
        self.height, self.width = check_int("synthetic height", height, 1), check_int("synthetic width", width, 1)
        resolve_kind(0, kind)  # refuses an unknown kind now, not at the first item (in a DataLoader worker)
        self.kind = kind
        self.hfov_deg, self.image_noise = check_view_options(hfov_deg, image_noise)
        self.clutter = check_int("synthetic clutter (plants per scene)", clutter, 0)
        self.first_seed = SPLIT_SEEDS[self.split] + int(seed_offset)
        self.names = [f"synthetic_{self.first_seed + i}" for i in range(length)]
        if sparse_pattern == STEREO_SGBM:
            self._check_rig()

    def scene_seed(self, index: int) -> int:
        """The ``render_scene`` seed of item ``index``."""
        return self.first_seed + index

    def _load(self, index: int) -> Sample:
        from depthkit.data.synthetic import render_scene

        scene = render_scene(self.scene_seed(index), self.height, self.width, self.kind, self.hfov_deg,
                             image_noise=self.image_noise, clutter=self.clutter)
        sparse = self._matched_stereo(index, scene) if self.sparse_pattern == STEREO_SGBM else None
        return Sample(image=scene.image, depth=scene.depth, sparse=sparse, intrinsics=scene.intrinsics,
                      name=self.names[index])

    def _rig(self, kind: str) -> tuple[float, float]:
        """(baseline, nearest depth searched) in metres for scenes of ``kind``: ``sparse_kwargs`` over
        :data:`STEREO_RIGS`."""
        baseline, nearest = STEREO_RIGS[kind]
        return self.sparse_kwargs.get("baseline") or baseline, self.sparse_kwargs.get("nearest_m") or nearest

    def _check_rig(self) -> None:
        """Refuse (ValueError) ``stereo_sgbm`` options other than a rig, and a rig whose search does not fit the
        image (OpenCV would fail on every item)."""
        from depthkit.data.sparse import _check_positive
        from depthkit.data.stereo_match import SGBM_BLOCK_PX, search_range
        from depthkit.data.synthetic import intrinsics_from_fov

        if self.height < SGBM_BLOCK_PX:
            raise ValueError(f"the {STEREO_SGBM} pattern matches {SGBM_BLOCK_PX}x{SGBM_BLOCK_PX}-pixel blocks, so the "
                             f"image must be at least {SGBM_BLOCK_PX} px high; received height {self.height}.")
        unknown = sorted(set(self.sparse_kwargs) - {"baseline", "nearest_m"})
        if unknown:
            raise ValueError(f"the {STEREO_SGBM} pattern takes sparse_kwargs baseline and nearest_m (metres; None: the "
                             f"scene kind's rig); received {self.sparse_kwargs!r}.")
        for key, value in self.sparse_kwargs.items():
            _check_positive(f"the {STEREO_SGBM} pattern's sparse_kwargs {key} (metres)", value)
        fx = intrinsics_from_fov(self.height, self.width, self.hfov_deg).fx
        for kind in STEREO_RIGS if self.kind == "random" else (self.kind,):
            baseline, nearest = self._rig(kind)
            need = search_range(fx * baseline, nearest) + SGBM_BLOCK_PX // 2 + 1
            if self.width < need:
                raise ValueError(f"the {STEREO_SGBM} pattern's {kind} rig (baseline {baseline:g} m, surfaces from "
                                 f"{nearest:g} m) searches disparities up to {need - SGBM_BLOCK_PX // 2 - 2} px at "
                                 f"this focal length ({fx:.4g} px: width {self.width}, {self.hfov_deg:g} degrees), "
                                 f"which needs an image at least {need} px wide; use a wider image, a wider field of "
                                 "view, a smaller baseline or a larger nearest_m (sparse_kwargs).")

    def _matched_stereo(self, index: int, scene) -> np.ndarray:
        """The ``stereo_sgbm`` map of ``scene`` (item ``index``): HxW float32 metres, 0 = no match."""
        from depthkit.data.stereo_match import disparity_to_depth, search_range, sgbm_disparity
        from depthkit.data.synthetic import render_scene

        baseline, nearest = self._rig(scene.kind)
        right = render_scene(self.scene_seed(index), self.height, self.width, self.kind, self.hfov_deg,
                             image_noise=self.image_noise, clutter=self.clutter, shift_right_m=baseline)
        fx_baseline = scene.intrinsics.fx * baseline
        disp = sgbm_disparity(scene.image, right.image, 0, search_range(fx_baseline, nearest))
        return disparity_to_depth(disp, fx_baseline)

    def __repr__(self) -> str:
        clutter = f", clutter={self.clutter}" if self.clutter else ""
        return (f"SyntheticDataset(split={self.split!r}, n={len(self)}, size={self.height}x{self.width}, "
                f"kind={self.kind!r}, first_seed={self.first_seed}{clutter})")
