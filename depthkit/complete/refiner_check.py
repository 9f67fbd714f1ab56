"""How far to trust the dense refiner on one frame, decided by the frame's own measured points (a depthkit addition).

The refiner (:mod:`depthkit.complete.refiner`) is trained on synthetic scenes. On a frame unlike them it can move
depth the wrong way: on the real Aloe frame (``benchmarks/real_frame.py``) the refiner of ``recipes/default/
refine.yaml`` made the completion 8 % worse in MAE, almost all of it at depth edges, while it is 6-33 % better than
``guided`` on every synthetic pattern (the default's refiner since session 13, fine-tuned with plants in the scenes,
no longer does that harm there; the check still guards frames unlike its training). The frame itself can tell the
two apart. :func:`check_refiner` cross-validates the refiner on the measured points:

1. split the measured pixels into ``folds`` seeded folds; for each fold, interpolate the classical prior (``guided``,
   the map the refiner was trained to correct) from the *other* folds, run the refiner on it, and read the prior
   ``p`` and the log correction ``r`` at the held-out pixels;
2. score every candidate strength ``a`` (:data:`CHECK_STRENGTHS`, 0 = prior, 1 = refiner as trained) by the mean
   ``|p * exp(a * r) - measured|`` over the held-out pixels, **weighted so that they stand for the pixels the output
   actually has to fill**: a held-out pixel's distance to the nearest kept point is binned (:data:`DISTANCE_BINS_PX`)
   and weighted by (share of unmeasured pixels at that distance from the measurements) / (share of held-out pixels at
   that distance). Without it a ToF frame (dense points with large holes) would be judged only next to measurements,
   where the prior is nearly exact, though the refiner's gain is inside the holes;
3. take the strength with the lowest weighted error (ties to the stronger one). When the held-out pixels cannot
   stand for the unmeasured ones — more than ``max_uncovered`` of the unmeasured pixels lie at distances no held-out
   pixel has (LiDAR rows, large holes), fewer than ``min_points`` measured pixels, or every pixel measured — the
   check does not decide and the refiner runs as trained (strength 1: what the synthetic test split measured).

The check runs at most at ``max_side`` pixels on the longest side (the image is area-resized and the measured
points moved to their scaled pixel centres, :func:`depthkit.io.resize_sparse`), so it adds two classical fills and
two refiner passes at 320 px to a frame of any size. Everything is seeded: the same input gives the same strength.
Known limits: the strength is chosen at that size but applied at the stage's working size; the score is absolute
error in metres (the evaluation's metric), so far points weigh most.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from depthkit.geometry import distance_to

__all__ = ["check_refiner", "RefineCheck", "CHECK_STRENGTHS", "DISTANCE_BINS_PX"]

CHECK_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Candidate strengths of the refiner's log correction (0: the prior unchanged, 1: as trained)."""
DISTANCE_BINS_PX = (0.0, 1.5, 3.0, 6.0, 12.0, 24.0, 48.0, float("inf"))
"""Edges of the distance-to-nearest-measurement bins (pixels at the check's resolution)."""


@dataclass
class RefineCheck:
    """The outcome of :func:`check_refiner`.

    ``strength``: the strength to apply (in [0, 1]); ``decided``: False when the check could not judge (then
    ``strength`` is 1 and ``reason`` says why); ``errors``: the weighted held-out MAE (metres) of each of
    ``strengths`` (empty when not decided); ``uncovered``: share of unmeasured pixels at distances no held-out pixel
    has; ``n_heldout``: held-out pixels over all folds; ``size``: (H, W) the check ran at."""

    strength: float
    decided: bool
    reason: str = ""
    strengths: tuple = CHECK_STRENGTHS
    errors: list = field(default_factory=list)
    uncovered: float = 0.0
    n_heldout: int = 0
    size: tuple = ()

    def summary(self) -> dict:
        """JSON-friendly dict for ``last_stats``."""
        return {"strength": self.strength, "decided": self.decided, "reason": self.reason,
                "errors": [round(float(e), 6) for e in self.errors], "uncovered": round(self.uncovered, 4),
                "n_heldout": self.n_heldout, "size": list(self.size)}


def _downscale(image: np.ndarray, sparse: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Image area-resized and measured points moved to their scaled pixel centres
    (:func:`depthkit.io.resize_sparse`, as the stage's own resizing does; points sharing a pixel merged
    silently) so the longest side is <= ``max_side``."""
    import cv2

    from depthkit.io import resize_sparse

    h, w = sparse.shape
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image, sparse
    hs, ws = max(1, round(h * scale)), max(1, round(w * scale))
    measured = np.where(np.isfinite(sparse) & (sparse > 0), sparse, 0.0)
    small = resize_sparse(measured, (hs, ws), working_size=True)
    return cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA), small


def _bin(distance: np.ndarray) -> np.ndarray:
    return np.clip(np.digitize(distance, DISTANCE_BINS_PX) - 1, 0, len(DISTANCE_BINS_PX) - 2)


def check_refiner(refiner, image: np.ndarray, sparse: np.ndarray, prior: str = "guided", folds: int = 2,
                  seed: int = 0, max_side: int = 320, strengths=CHECK_STRENGTHS, max_uncovered: float = 0.5,
                  min_points: int = 20) -> RefineCheck:
    """Cross-validate ``refiner`` on the measured points of one frame (module docstring).

    Args:
        refiner: a :class:`~depthkit.complete.refiner.DenseRefiner`.
        image: H x W x 3 uint8 RGB; sparse: H x W metres, 0 = missing (checked by the caller).
        prior: the classical method the refiner corrects (:func:`depthkit.complete.query_plan.prior_map`).
        folds: number of folds (>= 2); seed: the folds' seed.
        max_side: longest side (px) the check runs at.
    """
    from depthkit.complete.query_plan import prior_map

    if int(folds) < 2:
        raise ValueError(f"refiner check folds={folds!r} must be >= 2 (each fold is held out once).")
    strengths = np.asarray(strengths, dtype=np.float64)
    if strengths.ndim != 1 or strengths.size == 0 or not np.all((strengths >= 0) & (strengths <= 1)):
        raise ValueError(f"refiner check strengths={list(np.atleast_1d(strengths))} must be a non-empty list of "
                         "values in [0, 1] (0: the prior, 1: the refiner as trained).")
    image, sparse = _downscale(np.asarray(image), np.asarray(sparse, np.float32), int(max_side))
    size = tuple(sparse.shape)
    measured = np.isfinite(sparse) & (sparse > 0)
    ys, xs = np.nonzero(measured)
    enough = max(int(min_points), int(folds))
    if len(ys) < enough:
        return RefineCheck(1.0, False, f"{len(ys)} measured pixel(s) at the check's size, fewer than {enough}: too "
                           "few to judge", size=size)
    if measured.all():
        return RefineCheck(1.0, False, "every pixel is measured: nothing to fill, nothing to judge", size=size)
    fold = np.random.default_rng(seed).permutation(len(ys)) % int(folds)
    unmeasured = distance_to(measured)[~measured]
    n_bins = len(DISTANCE_BINS_PX) - 1
    share_unmeasured = np.bincount(_bin(unmeasured), minlength=n_bins) / max(unmeasured.size, 1)
    distances, errors = [], []
    for k in range(int(folds)):
        keep = fold != k
        kept = np.zeros_like(measured)
        kept[ys[keep], xs[keep]] = True
        sparse_k = np.where(kept, sparse, 0.0).astype(np.float32)
        base = prior_map(image, sparse_k, prior)
        r = refiner.log_correction(image, sparse_k, base)
        hy, hx = ys[~keep], xs[~keep]
        distances.append(distance_to(kept)[hy, hx])
        corrected = base[hy, hx, None].astype(np.float64) * np.exp(strengths[None] * r[hy, hx, None])
        errors.append(np.abs(corrected - sparse[hy, hx, None]))
    b = _bin(np.concatenate(distances))
    err = np.concatenate(errors)
    share_heldout = np.bincount(b, minlength=n_bins) / len(b)
    uncovered = float(share_unmeasured[share_heldout == 0].sum())
    if uncovered > max_uncovered:
        return RefineCheck(1.0, False, f"{uncovered:.0%} of the unmeasured pixels lie at distances from the "
                           "measurements that no held-out point has: the points cannot judge the refiner there",
                           uncovered=uncovered, n_heldout=len(b), size=size)
    weight = share_unmeasured[b] / np.maximum(share_heldout[b], 1e-12)
    weighted = (weight[:, None] * err).sum(0) / max(float(weight.sum()), 1e-12)
    best = float(strengths[weighted <= weighted.min()].max())  # ties go to the stronger correction
    return RefineCheck(best, True, strengths=tuple(float(s) for s in strengths),
                       errors=[float(e) for e in weighted], uncovered=uncovered, n_heldout=len(b), size=size)
