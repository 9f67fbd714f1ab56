"""A real stereo matcher's map: OpenCV's semi-global block matcher (SGBM) on a rectified pair.

Where :func:`depthkit.data.sparse.sample_stereo` simulates a matcher's failures from the GT alone, this runs one on
two images, so its map has the errors a real rig's has: matches in textureless sky, fattened foreground edges,
speckle, a left band with no match and holes wherever the filters reject a match. Used by the synthetic dataset's
``stereo_sgbm`` pattern (:class:`depthkit.data.datasets.synthetic.SyntheticDataset`, whose scenes render a right
view) and by ``benchmarks/real_frame.py`` on the Middlebury Aloe and Motorcycle pairs.
"""

from __future__ import annotations

import math

import numpy as np

from depthkit.data.scene_options import is_int
from depthkit.data.sparse import _check_non_negative, _check_positive

SGBM_BLOCK_PX = 5
"""Block size of the matcher (pixels, odd)."""
_FX_BASELINE = "fx_baseline (focal length in pixels times baseline in metres)"


def sgbm_disparity(left: np.ndarray, right: np.ndarray, min_disparity: int, num_disparities: int,
                   block: int = SGBM_BLOCK_PX) -> np.ndarray:
    """Disparity of the left image of a rectified pair: HxW float32 pixels, 0 where the matcher found no match.

    ``left``, ``right``: HxWx3 uint8 images of one channel order (both RGB or both BGR) or HxW uint8 grey, the
    image at least ``min_disparity + num_disparities + block // 2 + 1`` pixels wide and ``block`` high.
    The search covers ``[min_disparity, min_disparity + num_disparities)`` (``num_disparities`` a positive multiple
    of 16). Smoothness penalties ``P1 = 8·C·block²``, ``P2 = 32·C·block²`` for ``C`` channels (OpenCV's recommended
    values), left-right consistency 1 px, uniqueness 10 %, speckle filter (100 px regions, 2 px range): the settings
    of OpenCV's stereo sample. (With OpenCV 5.0 the left-right setting changes no output on any pair tried, rendered
    or textured with occlusions: the uniqueness and speckle filters are what remove occluded pixels.) Disparities
    are sub-pixel (OpenCV's 1/16 px fixed point). A match at the bottom of the range is kept, so with
    ``min_disparity`` > 0 every 0 is a failed match; with ``min_disparity`` 0 a match at disparity 0 (a surface at
    infinity) is 0 too, and with a negative one, failures and zeros look alike.
    """
    import cv2

    left, right = np.asarray(left), np.asarray(right)
    if left.shape != right.shape or left.dtype != np.uint8 or right.dtype != np.uint8 or left.ndim not in (2, 3) \
            or (left.ndim == 3 and left.shape[2] != 3):
        raise ValueError(f"sgbm_disparity takes two uint8 images of one shape (HxW or HxWx3); received "
                         f"{left.shape} {left.dtype} and {right.shape} {right.dtype}.")
    if not is_int(min_disparity):
        raise ValueError(f"min_disparity must be an integer number of pixels; received {min_disparity!r}.")
    if not is_int(num_disparities) or num_disparities < 16 or num_disparities % 16:
        raise ValueError(f"num_disparities must be a positive multiple of 16; received {num_disparities!r}.")
    if not is_int(block) or block < 1 or block % 2 == 0:
        raise ValueError(f"block must be an odd number of pixels >= 1; received {block!r}.")
    h, w = left.shape[:2]
    need = int(min_disparity) + int(num_disparities) + block // 2 + 1
    if w < need or h < block:
        raise ValueError(f"received a {w}x{h} pair, too small for a search of disparities {min_disparity}.."
                         f"{min_disparity + num_disparities - 1} with {block}x{block} blocks: it needs at least "
                         f"{need} px of width and {block} of height. Match larger images, or search fewer "
                         "disparities (a smaller baseline, or a nearest depth farther away).")
    channels = 1 if left.ndim == 2 else 3
    matcher = cv2.StereoSGBM_create(minDisparity=int(min_disparity), numDisparities=int(num_disparities),
                                    blockSize=int(block), P1=8 * channels * block ** 2, P2=32 * channels * block ** 2,
                                    disp12MaxDiff=1, uniquenessRatio=10, speckleWindowSize=100, speckleRange=2)
    disp = matcher.compute(np.ascontiguousarray(left), np.ascontiguousarray(right)).astype(np.float32) / 16.0
    return np.where(disp >= min_disparity, disp, 0.0).astype(np.float32)  # invalid: (min_disparity - 1)


def _check_disparity(disp) -> np.ndarray:
    """``disp`` as an HxW float32 array of pixels, or ValueError saying what was received."""
    arr = np.asarray(disp)
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise ValueError(f"disparity_to_depth takes an HxW disparity map in pixels (float or integer); received shape "
                         f"{arr.shape}, dtype {arr.dtype}. Pass one channel (e.g. disp[..., 0] of a 3-channel image), "
                         "as numbers.")
    return arr.astype(np.float32, copy=False)


def disparity_to_depth(disp: np.ndarray, fx_baseline: float, min_disparity_px: float = 1.0,
                       doffs_px: float = 0.0) -> np.ndarray:
    """Planar depth (HxW float32 metres, 0 = missing) from a disparity map (pixels): ``fx·baseline / (disp +
    doffs_px)``.

    ``fx_baseline`` is the focal length in pixels (of the disparity map's own size) times the baseline in metres.
    ``doffs_px`` is the difference of the two cameras' principal points along x (right minus left; Middlebury's
    calibration files call it ``doffs``; 0 for a pair rectified to one principal point), in the map's pixels.
    Disparities below ``min_disparity_px`` (before the offset) and non-finite ones are missing: beyond the rig's
    range, where a fraction of a pixel is tens of metres, or unmatched. The farthest depth it can give,
    ``fx_baseline / (min_disparity_px + doffs_px)``, and ``fx_baseline`` itself must fit float32 (the division runs in
    float32), so that no depth comes back inf.
    """
    fx_baseline = _check_positive(_FX_BASELINE, fx_baseline, allow_none=False)
    min_disparity_px = _check_positive("min_disparity_px (pixels)", min_disparity_px, allow_none=False)
    doffs_px = _check_non_negative("doffs_px (pixels: the principal points' x difference)", doffs_px)
    farthest = fx_baseline / (min_disparity_px + doffs_px)
    if not max(farthest, fx_baseline) <= float(np.finfo(np.float32).max):  # the division runs in float32
        raise ValueError(f"received fx_baseline={fx_baseline!r}, min_disparity_px={min_disparity_px!r} and doffs_px="
                         f"{doffs_px!r}: depths up to {farthest:.3g} m, computed in float32 from fx_baseline; both "
                         f"must stay within float32's range ({float(np.finfo(np.float32).max):.3g}) or a depth comes "
                         "back inf. Check fx_baseline's units (pixels x metres), or raise min_disparity_px.")
    disp = _check_disparity(disp)
    ok = np.isfinite(disp) & (disp >= min_disparity_px)
    return np.where(ok, fx_baseline / (np.where(ok, disp, 1.0) + np.float32(doffs_px)), 0.0).astype(np.float32)


def search_range(fx_baseline: float, nearest_m: float) -> int:
    """The ``num_disparities`` (a multiple of 16, from ``min_disparity`` 0) whose search, which ends one pixel below
    it, reaches surfaces ``nearest_m`` metres away (disparity ``fx_baseline / nearest_m``)."""
    reach = _check_positive(_FX_BASELINE, fx_baseline, allow_none=False) \
        / _check_positive("nearest_m (metres)", nearest_m, allow_none=False)
    if reach > 1e6:
        raise ValueError(f"received nearest_m={nearest_m!r}: a surface that near is at a disparity of {reach:.3g} "
                         "px, beyond any image; give a nearest depth farther away.")
    return max(16, 16 * math.ceil((reach + 1) / 16))
