"""``keep_scanline_frames``: the sharpener leaves a frame whose measured pixels lie on scan lines (a projected
scanning LiDAR) as its metric input. The detector (:func:`depthkit.sharpen.limits.scanline_frames`) is checked
against a loop implementation of its definition and on the project's simulated sensors; the limit at inference and
in the ground-truth training terms on a tiny SharpDepth."""

import numpy as np
import pytest
import torch

from depthkit.data.sparse import make_sparse
from depthkit.data.synthetic import render_scene
from depthkit.sharpen.limits import LIMIT_FIELDS, scanline_frames
from depthkit.sharpen.model import SharpDepth, SharpDepthConfig
from depthkit.sharpen.tiny import build_tiny_lotus


def _by_loops(mask: np.ndarray) -> bool:
    """The definition, pixel by pixel: row neighbours at (dy, dx) in {-1, 0, 1} x {-1, 1} and (0, +-2); column
    neighbours at (+-1, 0); >= 64 measured, >= 80 % with a row neighbour, <= 20 % with a column neighbour."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)

    def measured(y, x):
        return 0 <= y < h and 0 <= x < w and bool(mask[y, x])

    row = column = 0
    for y, x in zip(ys, xs):
        row += any(measured(y + dy, x + dx) for dy, dx in
                   [(-1, -1), (0, -1), (1, -1), (-1, 1), (0, 1), (1, 1), (0, -2), (0, 2)])
        column += measured(y - 1, x) or measured(y + 1, x)
    n = len(ys)
    return n >= 64 and row >= 0.8 * n and column <= 0.2 * n


def _masks(rng: np.random.Generator, count: int, h: int = 24, w: int = 40) -> np.ndarray:
    """Masks near the thresholds: scan lines (tilted, with dropped points) plus scattered points, and plain
    scattered points of any density."""
    out = np.zeros((count, h, w), bool)
    for i in range(count):
        if i % 3 == 2:
            out[i] = rng.random((h, w)) < rng.uniform(0.02, 0.5)
            continue
        spacing, slope = int(rng.integers(2, 6)), rng.uniform(-0.3, 0.3)
        for start in range(int(rng.integers(0, spacing)), h, spacing):
            ys = np.round(start + slope * np.arange(w)).astype(int)
            xs = np.arange(w)[(ys >= 0) & (ys < h) & (rng.random(w) >= rng.uniform(0.0, 0.7))]
            out[i, np.clip(np.round(start + slope * xs).astype(int), 0, h - 1), xs] = True
        out[i] |= rng.random((h, w)) < rng.uniform(0.0, 0.08)
    return out


def test_scanline_frames_match_the_definition_by_loops():
    masks = _masks(np.random.default_rng(0), 240)
    got = scanline_frames(torch.from_numpy(masks)[:, None])
    want = np.array([_by_loops(m) for m in masks])
    np.testing.assert_array_equal(got.numpy(), want)
    assert 40 <= want.sum() <= 200, want.sum()  # both kinds are well represented
    # fewer than 64 points: never, however line-like
    line = np.zeros((1, 1, 8, 80), bool)
    line[0, 0, 3, :63] = True
    assert not scanline_frames(torch.from_numpy(line))[0]
    line[0, 0, 3, 63] = True
    assert scanline_frames(torch.from_numpy(line))[0]


@pytest.mark.parametrize("height,width,hfov", [(240, 320, 60.0), (352, 1216, 81.0)])
def test_simulated_lidar_is_a_scanline_frame_and_other_sensors_are_not(height, width, hfov):
    found = {}
    for seed, kind in ((3, "indoor"), (4, "outdoor")):
        scene = render_scene(seed, height, width, kind=kind, hfov_deg=hfov)
        inputs = {
            "lidar64": make_sparse(scene.depth, "lidar", seed, intrinsics=scene.intrinsics, n_beams=64),
            "lidar16": make_sparse(scene.depth, "lidar", seed, intrinsics=scene.intrinsics, n_beams=16),
            "random500": make_sparse(scene.depth, "random", seed, n=500),
            "random18%": make_sparse(scene.depth, "random", seed, n=int(0.18 * height * width)),
            "holes": make_sparse(scene.depth, "holes", seed),
            "stereo": make_sparse(scene.depth, "stereo", seed, intrinsics=scene.intrinsics),
        }
        masks = torch.from_numpy(np.stack([v > 0 for v in inputs.values()]))[:, None]
        for name, hit in zip(inputs, scanline_frames(masks).tolist()):
            found.setdefault(name, []).append(hit)
    assert found == {"lidar64": [True] * 2, "lidar16": [True] * 2, "random500": [False] * 2,
                     "random18%": [False] * 2, "holes": [False] * 2, "stereo": [False] * 2}


@pytest.fixture(scope="module")
def sharp():
    return SharpDepth(build_tiny_lotus("generative", seed=0))


def _batch(h=48, w=64):
    """A LiDAR-like frame (every pixel of rows 8, 14, ..., 44) and a frame of 40 scattered points, one scene."""
    rng = np.random.default_rng(0)
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    depth = np.tile(np.linspace(1.0, 5.0, w, dtype=np.float32), (h, 1))
    depth[h // 4: h // 2, w // 4: w // 2] = 1.5
    beams, points = np.zeros_like(depth), np.zeros_like(depth)
    beams[8::6] = depth[8::6]
    ys, xs = rng.integers(0, h, 40), rng.integers(0, w, 40)
    points[ys, xs] = depth[ys, xs]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().expand(2, -1, -1, -1) / 127.5 - 1
    d = torch.from_numpy(depth)[None, None].expand(2, -1, -1, -1)
    sp = torch.from_numpy(np.stack([beams, points]))[:, None]
    assert scanline_frames(sp > 0).tolist() == [True, False]
    return x, d, sp


@pytest.mark.parametrize("others", [{}, {"change_band_px": 2, "change_band_jump": 0.1, "change_range_px": 2}])
def test_keep_scanline_frames_leaves_the_scanline_frame_as_its_input(sharp, others):
    """In a batch, the scan-line frame's output is its metric input bit for bit and the other frame's is what it is
    without the switch; without the switch the scan-line frame changes (so the comparison can fail)."""
    x, d, sp = _batch()
    base = {"output": "residual", **others}
    off = SharpDepth(sharp.model, base).sharpen_tensors(x, d, sp, processing_resolution=64)["depth"]
    on = SharpDepth(sharp.model, {**base, "keep_scanline_frames": True}).sharpen_tensors(
        x, d, sp, processing_resolution=64)["depth"]
    torch.testing.assert_close(on[0], d[0], rtol=0, atol=0)
    torch.testing.assert_close(on[1], off[1], rtol=0, atol=0)
    assert (off[0] - d[0]).abs().max() > 1e-3
    # detected at the input size: every other row measured is a scan-line frame there, but not at half the size,
    # where every processing row holds a measured pixel
    rows = torch.zeros_like(d[:1])
    rows[..., ::2, :] = d[:1, :, ::2, :]
    kept = SharpDepth(sharp.model, {**base, "keep_scanline_frames": True}).sharpen_tensors(
        x[:1], d[:1], rows, processing_resolution=32)["depth"]
    free = SharpDepth(sharp.model, base).sharpen_tensors(x[:1], d[:1], rows, processing_resolution=32)["depth"]
    torch.testing.assert_close(kept, d[:1], rtol=0, atol=0)
    assert (free - d[:1]).abs().max() > 1e-3
    # without measurements nothing is a scan-line frame
    none = SharpDepth(sharp.model, {**base, "keep_scanline_frames": True}).sharpen_tensors(
        x[:1], d[:1], None, processing_resolution=64)["depth"]
    plain = SharpDepth(sharp.model, base).sharpen_tensors(x[:1], d[:1], None, processing_resolution=64)["depth"]
    torch.testing.assert_close(none, plain, rtol=0, atol=0)


def test_gt_terms_score_a_scanline_frame_as_its_input():
    """Training's GT terms under the switch score the input itself in a scan-line frame: the loss no longer depends
    on the UNet (two differently initialised tiny models give the same loss), and still does in the other frame."""
    x, d, sp = _batch()
    gt = d * 1.1
    base = {"output": "residual", "lambda_gt": 1.0, "lambda_gt_grad": 0.5}

    def loss(seed, config, b):
        model = SharpDepth(build_tiny_lotus("generative", seed=seed), {**base, **config})
        with torch.no_grad():
            return float(model.compute_losses(x[b:b + 1], d[b:b + 1], model.model.unet,
                                              generator=torch.Generator().manual_seed(0),
                                              sparse=sp[b:b + 1], gt=gt[b:b + 1])["gt"])

    on = {"keep_scanline_frames": True}
    assert loss(0, on, 0) == pytest.approx(loss(1, on, 0), rel=1e-6)
    assert loss(0, {}, 0) != pytest.approx(loss(1, {}, 0), rel=1e-3)
    assert loss(0, on, 1) == pytest.approx(loss(0, {}, 1), rel=1e-6)
    assert loss(0, on, 1) != pytest.approx(loss(1, on, 1), rel=1e-3)


def test_the_switch_is_a_run_time_limit_and_off_by_default():
    assert SharpDepthConfig().keep_scanline_frames is False
    assert "keep_scanline_frames" in LIMIT_FIELDS
    assert SharpDepthConfig.from_dict({"keep_scanline_frames": True}).keep_scanline_frames is True
    for bad in (1, "true", None):
        with pytest.raises(ValueError, match="keep_scanline_frames must be bool; received"):
            SharpDepthConfig(keep_scanline_frames=bad)


def test_the_stage_skips_the_unet_on_a_frame_its_limits_leave_as_it_is(sharp):
    """SharpenStage.run on a scan-line frame with the switch on gives the model's own output (the input, measured
    pixels restored) bit for bit without running the UNet (no discrepancy extra); the scattered-points frame, a
    scan-line frame with a missing depth pixel (which the sharpener fills whatever its limits) and any frame with the
    switch off run the model."""
    from depthkit.sharpen.stage import SharpenStage

    x, d, sp = _batch()
    image = np.ascontiguousarray(((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy())
    depth, beams, points = d[0, 0].numpy() * 1.05, sp[0, 0].numpy(), sp[1, 0].numpy()  # measured != input there
    on = SharpDepth(sharp.model, {"output": "residual", "keep_scanline_frames": True})
    stage = SharpenStage(on, processing_resolution=64)
    skipped = stage.run(image, beams, depth)
    assert "discrepancy" not in skipped.extras
    model = on.sharpen_checked(image, depth, beams, processing_resolution=64).depth
    np.testing.assert_array_equal(skipped.depth, model)
    assert np.array_equal(model[beams > 0], beams[beams > 0]) and not np.array_equal(model, depth)
    for frame, missing in ((points, False), (beams, True)):
        given = depth.copy()
        if missing:
            given[0, 0] = 0.0
        ran = stage.run(image, frame, given)
        assert "discrepancy" in ran.extras
        np.testing.assert_array_equal(ran.depth, on.sharpen_checked(image, given, frame, processing_resolution=64).depth)
    off = SharpenStage(SharpDepth(sharp.model, {"output": "residual"}), processing_resolution=64)
    assert "discrepancy" in off.run(image, beams, depth).extras
