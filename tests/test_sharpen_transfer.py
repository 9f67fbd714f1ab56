"""``transfer_edges_px`` / ``transfer_edges_hard``: the sharpener's free output gives only its shape in each window,
carried onto the metric input's depths (:func:`depthkit.sharpen.limits.transfer_edges`). Checked against a loop
implementation of the definition, on a step whose metric depth the free output gets wrong, and at inference on a
tiny SharpDepth (the radius scaled from the processing size to the input size, the weights applied after it,
measured pixels kept)."""

import numpy as np
import pytest
import torch
from test_sharpen_model import _scene as _model_scene

from depthkit.sharpen.limits import LIMIT_FIELDS, transfer_edges
from depthkit.sharpen.model import SharpDepth, SharpDepthConfig
from depthkit.sharpen.tiny import build_tiny_lotus


def _by_loops(out: np.ndarray, ref: np.ndarray, valid: np.ndarray, radius: int, hard: bool) -> np.ndarray:
    """The definition, pixel by pixel: the window's valid pixels give out's range and ref's range; t = out's position
    in its range, clipped to [0, 1] (rounded when hard, 0.5 going to 0); ref's minimum + t x ref's range. A flat
    window of out (range <= 1e-6 of its maximum) and an invalid pixel keep ref."""
    h, w = ref.shape
    result = ref.astype(np.float64).copy()
    for y in range(h):
        for x in range(w):
            if not valid[y, x]:
                continue
            win = (slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1))
            o, r = out[win][valid[win]].astype(np.float64), ref[win][valid[win]].astype(np.float64)
            if o.max() - o.min() <= 1e-6 * abs(o.max()):
                continue
            t = min(1.0, max(0.0, (float(out[y, x]) - o.min()) / (o.max() - o.min())))
            if hard:
                t = 1.0 if t > 0.5 else 0.0
            result[y, x] = r.min() + t * (r.max() - r.min())
    return result


def _range_by_loops(ref: np.ndarray, valid: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    low, high = np.full(ref.shape, np.inf, np.float32), np.full(ref.shape, -np.inf, np.float32)
    for y in range(ref.shape[0]):
        for x in range(ref.shape[1]):
            win = (slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1))
            if valid[win].any():
                low[y, x], high[y, x] = ref[win][valid[win]].min(), ref[win][valid[win]].max()
    return low, high


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))[None, None]


@pytest.mark.parametrize("radius,hard", [(1, False), (2, False), (2, True), (3, True)])
def test_transfer_edges_matches_the_definition_by_loops(radius, hard):
    """Random depths with holes (invalid pixels neither count in a window nor change) and flat patches of the free
    output (which keep the input): equal to the loops. Fails if invalid pixels count or move, the window is one
    pixel off, the flat rule is dropped, or the rounding is inverted or ignored."""
    rng = np.random.default_rng(radius + 10 * hard)
    ref = rng.uniform(1.0, 9.0, (20, 26)).astype(np.float32)
    out = (rng.uniform(-20.0, 60.0, (20, 26))).astype(np.float32)  # metric depth far off: only the shape counts
    out[2:9, 3:12] = 7.25  # a flat patch of the free output
    valid = rng.random(ref.shape) > 0.15
    got = transfer_edges(_t(out), _t(ref), _t(valid), radius, hard)[0, 0].numpy()
    want = _by_loops(out, ref, valid, radius, hard)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert np.array_equal(got[~valid], ref[~valid])
    inside = (slice(2 + radius, 9 - radius), slice(3 + radius, 12 - radius))
    assert np.array_equal(got[inside], ref[inside])  # flat windows keep the input
    moved = valid & (got != ref)
    assert moved.mean() > 0.5
    low, high = _range_by_loops(ref, valid, radius)
    assert (got[valid] >= low[valid] - 1e-6).all() and (got[valid] <= high[valid] + 1e-6).all()
    if hard:  # each pixel takes one side of its window: the input's minimum or maximum there
        assert ((got == low) | (got == high))[moved].all()


def test_transfer_moves_the_edge_and_keeps_the_inputs_depths():
    """The input's edge is a ramp from 2 m to 6 m over columns 8-12; the free output steps at column 13 but between
    40 m and 50 m. Hard transfer: the pixels within reach of the edge take the near side left of column 13 and 6 m from
    it, so the edge sits where the free output puts it, at the input's depths; soft transfer gives the
    same (t is 0 or 1 on a step). The near side is each window's own minimum: 3 m at column 12, whose window
starts at column 9."""
    ref = np.tile(np.concatenate([np.full(8, 2.0), np.linspace(2.0, 6.0, 5), np.full(11, 6.0)]), (6, 1))
    ref = ref.astype(np.float32)
    free = np.where(np.arange(24) < 13, 40.0, 50.0).astype(np.float32)[None].repeat(6, 0)
    valid = np.ones(ref.shape, bool)
    got = transfer_edges(_t(free), _t(ref), _t(valid), 3, hard=True)[0, 0].numpy()
    np.testing.assert_array_equal(got[:, 10:12], 2.0)  # the ramp's upper pixels move to the near side ...
    np.testing.assert_array_equal(got[:, 12], 3.0)  # ... as near as their window reaches (columns 9-15 here)
    np.testing.assert_array_equal(got[:, 13:17], 6.0)
    np.testing.assert_array_equal(got[:, :10], ref[:, :10])  # out of reach of the free edge, or flat: as they were
    np.testing.assert_array_equal(got[:, 17:], 6.0)
    soft = transfer_edges(_t(free), _t(ref), _t(valid), 3)[0, 0].numpy()
    np.testing.assert_array_equal(soft, got)  # a step has t in {0, 1}: soft and hard agree
    assert set(np.unique(got)) <= set(np.unique(ref))


@pytest.fixture(scope="module")
def sharp():
    return SharpDepth(build_tiny_lotus("generative", seed=0))


def _scene():
    """test_sharpen_model's scene (a ramp with a box in front, three measured pixels) with a hole in its metric
    input; the image as the model takes it."""
    img, depth, sparse = _model_scene()
    depth[30:34, 40:44] = 0.0  # a hole without metric input
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    return x, depth, sparse


@pytest.mark.parametrize("resolution,hard,band", [(64, False, 0), (32, True, 0), (32, False, 2)])
def test_inference_transfers_the_free_output_then_weights_and_keeps_measured(sharp, resolution, hard, band):
    """At inference the free output (the same model without limits) is transferred with the radius scaled to the
    input size (2 processing pixels: 2 at 64 px, 4 at 32 px for a 64-px input), then the band weight mixes the input
    and the transferred output, and measured pixels keep their values: equal to the loops applied to the free
    output. Fails if the radius is not scaled, the transfer is skipped or comes after the weight, or the measured
    pixels are not restored."""
    x, depth, sparse = _scene()
    d, sp = torch.from_numpy(depth)[None, None], torch.from_numpy(sparse)[None, None]
    limits = {"transfer_edges_px": 2, "transfer_edges_hard": hard, "change_band_px": band, "change_band_jump": 0.4}
    run = SharpDepth(sharp.model, {"output": "residual", **limits}).sharpen_tensors(
        x, d, sp, processing_resolution=resolution)
    free = run["free"][0, 0].numpy()
    want = _by_loops(free, depth, depth > 0, 2 * 64 // resolution, hard)
    if band:
        weight = run["band"][0, 0].numpy()
        assert 0.05 < (weight > 0).mean() < 0.95
        want = np.where(depth > 0, depth + weight * (want - depth), want)
    want = np.where(sparse > 0, sparse, want)
    got = run["depth"][0, 0].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    assert np.array_equal(got[sparse > 0], sparse[sparse > 0])
    assert np.abs(got - depth)[(depth > 0) & (sparse == 0)].max() > 1e-2  # the transfer moved pixels
    plain = SharpDepth(sharp.model, {"output": "residual"}).sharpen_tensors(x, d, sp, processing_resolution=resolution)
    np.testing.assert_array_equal(plain["free"].numpy(), run["free"].numpy())  # the limit does not touch the pass


def test_the_switches_are_run_time_limits_and_off_by_default():
    config = SharpDepthConfig()
    assert config.transfer_edges_px == 0 and config.transfer_edges_hard is False
    assert {"transfer_edges_px", "transfer_edges_hard"} <= set(LIMIT_FIELDS)
    with pytest.raises(ValueError, match="transfer_edges_px must be >= 0; received -1"):
        SharpDepthConfig(transfer_edges_px=-1)
    with pytest.raises(ValueError, match="transfer_edges_px must be int; received 1.5"):
        SharpDepthConfig(transfer_edges_px=1.5)
    with pytest.raises(ValueError, match="transfer_edges_hard must be bool; received 'yes'"):
        SharpDepthConfig(transfer_edges_hard="yes")
