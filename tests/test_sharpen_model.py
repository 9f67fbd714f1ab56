"""SharpDepth blocks: gating, discrepancy, SDS / reconstruction losses, EMA, two-pass inference, training steps."""

import copy

import numpy as np
import pytest
import torch

from depthkit.geometry import fit_scale_shift
from depthkit.sharpen.ema import EMA
from depthkit.sharpen.gating import apply_gate, discrepancy, downsample_discrepancy, gate
from depthkit.sharpen.losses import (
    reconstruction_loss,
    sample_sds_timesteps,
    sds_loss,
    sds_teacher_input,
    sds_weight,
)
from depthkit.sharpen.model import SharpDepth, SharpDepthConfig
from depthkit.sharpen.normalize import denormalize_depth, normalize_depth
from depthkit.sharpen.tiny import build_tiny_lotus


@pytest.fixture(scope="module")
def sharp():
    return SharpDepth(build_tiny_lotus("generative", seed=0))


def _scene(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    depth = np.tile(np.linspace(1.0, 5.0, w, dtype=np.float32), (h, 1))
    depth[h // 4: h // 2, w // 4: w // 2] = 1.5  # a box in front
    sparse = np.zeros_like(depth)
    sparse[[5, h // 2, h - 3], [7, w // 2, w - 4]] = [1.234, 2.5, 4.75]
    return img, depth, sparse


def _scheduler_alphas():
    # Stable Diffusion's scaled_linear schedule, by hand
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


# ------------------------------------------------------------------------------------------------ gating
def test_gate_formula_on_known_tensors():
    z_d = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2).expand(1, 4, 2, 2).clone()
    noise = torch.full((1, 4, 2, 2), -1.0)
    e = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 2, 2)
    out = gate(z_d, noise, e)
    expected = torch.tensor([1.0, 0.25 * -1 + 0.75 * 2, 0.5 * -1 + 0.5 * 3, -1.0]).view(1, 1, 2, 2)
    assert torch.allclose(out, expected.expand(1, 4, 2, 2))
    assert torch.equal(gate(z_d, noise, torch.zeros_like(e)), z_d)
    assert torch.equal(gate(z_d, noise, torch.ones_like(e)), noise)


def test_gate_latent_by_hand(sharp):
    """SharpDepth's pass-2 input, computed here without depthkit.sharpen.gating: ê = e at the top-left pixel of each
    latent cell [code: nearest], fill = sqrt(ᾱ_999)·ẑ_lotus + sqrt(1 − ᾱ_999)·ε [code] (ε with ``gate_noise="noise"``
    [paper]), z' = ê·fill + (1 − ê)·z_d; with ``sparse_latent_cells`` a cell holding a measurement keeps z_d; gating
    off or an ungated training sample gets ε. Fails if the gate ignores e, inverts it, ignores the sparse cells or
    the gating switch."""
    g = torch.Generator().manual_seed(5)
    z_d, z_lotus = torch.randn(2, 4, 3, 4, generator=g), torch.randn(2, 4, 3, 4, generator=g)
    e = torch.rand(2, 1, 12, 16, generator=g)  # 4x the latent size
    e[:, :, 0, 0], e[:, :, 4, 4], e[0, :, 8, 12] = 0.0, 1.0, 0.5  # cells (0, 0), (1, 1), (2, 3)
    e_hat = e[:, :, ::4, ::4]
    eps = torch.randn(z_d.shape, generator=torch.Generator().manual_seed(9))  # what gate_latent draws first
    a = float(_scheduler_alphas()[999])
    fill = a ** 0.5 * z_lotus + (1 - a) ** 0.5 * eps

    def run(config, training=False, sparse=None):
        model = SharpDepth(sharp.model, config)
        return model.gate_latent(z_d, e, sparse, z_lotus, torch.Generator().manual_seed(9), training=training)

    out, gated = run({})
    assert gated.all()
    assert torch.allclose(out, e_hat * fill + (1 - e_hat) * z_d, atol=1e-5)
    assert torch.equal(out[:, :, 0, 0], z_d[:, :, 0, 0])  # e = 0: the metric latent, untouched
    assert torch.allclose(out[:, :, 1, 1], fill[:, :, 1, 1], atol=1e-6)  # e = 1: regenerated
    assert torch.allclose(out[0, :, 2, 3], 0.5 * (fill[0, :, 2, 3] + z_d[0, :, 2, 3]), atol=1e-6)
    assert torch.allclose(run({"gate_noise": "noise"})[0], e_hat * eps + (1 - e_hat) * z_d, atol=1e-5)
    # a measurement inside a cell (not at the pixel nearest picks) keeps that cell's z_d; other cells are as before
    sparse = torch.zeros(2, 1, 12, 16, dtype=torch.bool)
    sparse[1, 0, 6, 5] = True  # sample 1, cell (1, 1), where e = 1
    out_sp, _ = run({"sparse_latent_cells": True}, sparse=sparse)
    assert torch.equal(out_sp[1, :, 1, 1], z_d[1, :, 1, 1])
    keep = torch.ones_like(out, dtype=torch.bool)
    keep[1, :, 1, 1] = False
    assert torch.equal(out_sp[keep], out[keep])
    assert torch.equal(run({"sparse_latent_cells": False}, sparse=sparse)[0], out)  # the default ignores it
    # training: gated with probability gate_prob, else pure ε; gating off: ε always
    assert torch.allclose(run({"gate_prob": 1.0}, training=True)[0], out, atol=1e-6)
    assert torch.equal(run({"gate_prob": 0.0}, training=True)[0], eps)
    for training in (False, True):
        off, gated = run({"gating": False}, training=training)
        assert torch.equal(off, eps) and not gated.any()


def test_apply_gate_probability():
    z_d, noise, e = torch.zeros(4000, 1, 1, 1), torch.ones(4000, 1, 1, 1), torch.zeros(4000, 1, 1, 1)
    out, gated = apply_gate(z_d, noise, e, prob=0.8, generator=torch.Generator().manual_seed(0))
    # gated samples keep z_d (e = 0), the others are pure noise
    assert torch.equal(out.flatten()[gated], z_d.flatten()[gated])
    assert torch.equal(out.flatten()[~gated], noise.flatten()[~gated])
    assert 0.77 < gated.float().mean() < 0.83
    assert apply_gate(z_d, noise, e, prob=1.0)[1].all() and not apply_gate(z_d, noise, e, prob=0.0)[1].any()
    # with a gate fill other than ε (the noised Lotus latent), samples that are not gated still get pure ε [code]
    fill, eps = torch.full_like(noise, 5.0), torch.full_like(noise, -2.0)
    out, gated = apply_gate(z_d, fill, torch.ones_like(e), prob=0.5, generator=torch.Generator().manual_seed(1),
                            pure_noise=eps)
    assert torch.all(out.flatten()[gated] == 5.0) and torch.all(out.flatten()[~gated] == -2.0)


# ------------------------------------------------------------------------------------------------ discrepancy
def test_discrepancy_values_range_and_sparse_zero():
    lotus = torch.tensor([0.0, 0.5, -1.0, 1.0]).view(1, 1, 2, 2)
    target = torch.zeros(1, 1, 2, 2)
    e = discrepancy(lotus, target)
    assert torch.allclose(e.flatten(), torch.tensor([0.0, 0.5, 1.0, 1.0]))
    sparse = torch.tensor([False, False, True, False]).view(1, 1, 2, 2)
    assert torch.allclose(discrepancy(lotus, target, sparse).flatten(), torch.tensor([0.0, 0.5, 0.0, 1.0]))
    valid = torch.tensor([True, True, True, False]).view(1, 1, 2, 2)
    # the missing pixel does not set the max and gets e = 1
    assert torch.allclose(discrepancy(lotus, target, valid_mask=valid).flatten(), torch.tensor([0.0, 0.5, 1.0, 1.0]))
    # lstsq [paper]: an affine copy of the target has no discrepancy; minmax [code] sees one
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    affine = 0.5 * target + 0.2
    assert discrepancy(affine, target, mode="lstsq").max() < 1e-3
    e = discrepancy(affine, target, mode="minmax")
    assert e.min() >= 0 and e.max() == 1.0
    with pytest.raises(ValueError, match="'minmax' or 'lstsq'"):
        discrepancy(affine, target, mode="l1")


def test_downsample_discrepancy_modes_and_sparse_cells():
    e = torch.arange(16.0).view(1, 1, 4, 4) / 15
    near = downsample_discrepancy(e, (2, 2), "nearest")
    assert torch.allclose(near.flatten(), torch.tensor([0.0, 2.0, 8.0, 10.0]) / 15)  # top-left of each cell
    area = downsample_discrepancy(e, (2, 2), "area")
    assert torch.allclose(area.flatten(), torch.tensor([2.5, 4.5, 10.5, 12.5]) / 15)
    sparse = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    sparse[0, 0, 1, 1] = True  # not the pixel nearest picks, but inside cell (0, 0)
    sparse[0, 0, 3, 2] = True  # cell (1, 1)
    out = downsample_discrepancy(e, (2, 2), "nearest", sparse)
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 2.0 / 15, 8.0 / 15, 0.0]))


# ------------------------------------------------------------------------------------------------ losses
def test_sds_gradient_equals_weighted_difference(sharp):
    alphas = sharp.model.scheduler.alphas_cumprod
    assert np.allclose(alphas.numpy(), _scheduler_alphas(), rtol=1e-5)
    g = torch.Generator().manual_seed(0)
    z_hat = torch.randn(2, 4, 3, 5, generator=g, requires_grad=True)
    teacher = torch.randn(2, 4, 3, 5, generator=g)
    t = torch.tensor([999, 500])
    w = torch.tensor(1.0 - _scheduler_alphas()[[999, 500]], dtype=torch.float32).view(2, 1, 1, 1)
    assert torch.allclose(sds_weight(t, alphas, 2), w)
    expected = w * (z_hat.detach() - teacher)
    sds_loss(z_hat, teacher, t, alphas, reduction="sum").backward()
    assert torch.allclose(z_hat.grad, expected, atol=1e-6)
    z_hat.grad = None
    loss = sds_loss(z_hat, teacher, t, alphas)
    loss.backward()
    assert torch.allclose(z_hat.grad, expected / z_hat.numel(), atol=1e-8)
    assert float(loss.detach()) == pytest.approx(0.5 * float((expected ** 2).mean()), rel=1e-5)


def test_sds_teacher_input_and_timesteps(sharp):
    sched = sharp.model.scheduler
    z, noise = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    a = _scheduler_alphas()[[999, 10]]
    zt = sds_teacher_input(z.requires_grad_(), noise, torch.tensor([999, 10]), sched)
    expected = torch.tensor(np.sqrt(a), dtype=torch.float32).view(2, 1, 1, 1) * z.detach() + torch.tensor(
        np.sqrt(1 - a), dtype=torch.float32).view(2, 1, 1, 1) * noise
    assert torch.allclose(zt, expected, atol=1e-5) and not zt.requires_grad
    assert sample_sds_timesteps(3, SharpDepthConfig()).tolist() == [999, 999, 999]
    t = sample_sds_timesteps(500, SharpDepthConfig(sds_timestep="sampled", sds_t_min=20, sds_t_max=980),
                             generator=torch.Generator().manual_seed(0))
    assert t.min() >= 20 and t.max() <= 980 and len(set(t.tolist())) > 100


def test_reconstruction_loss_hand_value_and_zero_weight():
    d_hat = torch.tensor([0.2, 0.5, 0.9, 0.1]).view(1, 1, 2, 2).requires_grad_()
    d = torch.tensor([0.4, 0.5, 0.3, 0.1]).view(1, 1, 2, 2)
    e = torch.tensor([1.0, 0.5, 0.0, 0.25]).view(1, 1, 2, 2)
    loss = reconstruction_loss(d_hat, d, e)
    assert float(loss.detach()) == pytest.approx(0.2 / 1.75)  # |0.2-0.4|*1 + 0*0.5 + |0.9-0.3|*0 + 0*0.25, over Σe = 1.75
    loss.backward()
    assert d_hat.grad[0, 0, 1, 0] == 0  # e = 0: no pull at all
    moved = d_hat.detach().clone()
    moved[0, 0, 1, 0] = -5.0
    assert float(reconstruction_loss(moved, d, e)) == pytest.approx(0.2 / 1.75)
    empty = reconstruction_loss(d_hat, d, torch.zeros_like(e))
    assert float(empty.detach()) == 0.0
    empty.backward()  # safe when Σe = 0


# ------------------------------------------------------------------------------------------------ EMA
def test_ema_update_rule_on_known_sequence():
    """depthkit's earlier rule ("every_call_copy", constant decay)."""
    param = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(param, decay=0.5, start=2, every=2, warmup_power=None, schedule="every_call_copy")
    seen = []
    for k in range(7):
        with torch.no_grad():
            param.weight.fill_(float(k))
        ema.update(param)
        seen.append(float(ema.model.weight))
    # k=0,1 copy; k=2: .5*1+.5*2; k=3 skipped; k=4: .5*1.5+.5*4; k=5 skipped; k=6: .5*2.75+.5*6
    assert seen == [0.0, 1.0, 1.5, 1.5, 2.75, 2.75, 4.375]
    restored = EMA(torch.nn.Linear(1, 1, bias=False), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert float(restored.model.weight) == 4.375 and restored.step == 7 and restored.decay == 0.5
    assert restored.schedule == "every_call_copy"
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_public_schedule_closed_form():
    """The public code's EMA (ema-pytorch: beta 0.9999, update_after_step 100, update_every 10, warm-up power 2/3,
    inv_gamma 1, counted in calls). The decay of call k is 1 − (1 + k − 100)^(−2/3), capped at 0.9999: 0.99783 at
    k = 10 000 (counting averaging updates instead, n = 990, would give 1 − 991^(−2/3) = 0.98994)."""
    cfg = SharpDepthConfig()
    param = torch.nn.Linear(1, 1, bias=False)
    ema = EMA.from_config(param, cfg)
    assert (ema.decay, ema.start, ema.every, ema.warmup_power, ema.schedule) == (0.9999, 100, 10, 2 / 3, "ema_pytorch")
    for k in (110, 200, 1000, 10_000, 100_000, 2_000_000):
        assert ema.decay_at(k) == pytest.approx(min(0.9999, 1.0 - (1.0 + k - 100) ** (-2.0 / 3.0)), rel=1e-12)
    assert ema.decay_at(10_000) == pytest.approx(0.997831, abs=1e-6)
    assert ema.decay_at(2_000_000) == 0.9999
    # which calls act: copy at 0 and at 10, 20, ..., 100, and at 110 (the library's first update copies the model in
    # before it averages: its `initted` flag); average at 120, 130, ...; nothing in between
    assert [ema.action(k) for k in (0, 1, 9, 10, 100, 101, 105, 110, 120, 130)] == [
        "copy", None, None, "copy", "copy", None, None, "copy", "average", "average"]
    # the whole sequence on a scalar "model" whose weight is k at call k, against ema-pytorch's update() written out
    # by hand (step counter, update_every, update_after_step, initted), and against depthkit's rule before session 39
    # ("no_init_copy": the first average blends the last copy in)
    ends = {}
    for schedule in ("ema_pytorch", "no_init_copy"):
        small = EMA(param, decay=0.9, start=4, every=2, warmup_power=2 / 3, schedule=schedule)
        value, initted = None, False
        for k in range(15):
            with torch.no_grad():
                param.weight.fill_(float(k))
            small.update(param)
            if k % 2 == 0:
                if k <= 4:
                    value = float(k)
                else:
                    if not initted and schedule == "ema_pytorch":
                        value = float(k)
                    initted = True
                    d = min(0.9, 1.0 - (1.0 + k - 4) ** (-2.0 / 3.0))
                    value = d * value + (1.0 - d) * k
            assert float(small.model.weight) == pytest.approx(value, rel=1e-6), (schedule, k)
        ends[schedule] = float(small.model.weight)
    assert ends["ema_pytorch"] > ends["no_init_copy"]  # the copy at call 6 starts the average from 6, not from 4
    with pytest.raises(ValueError, match="schedule must be one of"):
        EMA(param, schedule="karras")


# ------------------------------------------------------------------------------------------------ config
def test_config_defaults_and_validation():
    cfg = SharpDepthConfig()
    assert (cfg.discrepancy_norm, cfg.discrepancy_downsample, cfg.gate_prob, cfg.sds_timestep) == (
        "minmax", "nearest", 0.8, "fixed")
    assert (cfg.lambda_sds, cfg.lambda_recons, cfg.fit_threshold, cfg.zero_discrepancy_at_sparse) == (
        1.0, 0.3, 0.5, True)
    # the public code's inference and training fill the gate with the noised Lotus latent; cell zeroing is off
    assert (cfg.gate_noise, cfg.sparse_latent_cells) == ("noised_lotus", False)
    with pytest.raises(ValueError, match="discrepancy_norm must be one of"):
        SharpDepthConfig(discrepancy_norm="median")
    with pytest.raises(ValueError, match="unknown SharpDepthConfig keys"):
        SharpDepthConfig.from_dict({"gate_probability": 0.5})
    for name in ("keep_near_measured_px", "change_within_measured_px", "lambda_sds", "change_band_jump"):
        for bad in (float("nan"), float("inf")):  # NaN passed every `< 0` check and switched the limit off unsaid
            with pytest.raises(ValueError, match=rf"^SharpDepthConfig.{name} must be a finite number; received"):
                SharpDepthConfig(**{name: bad})
    with pytest.raises(ValueError, match="generative"):
        SharpDepth(build_tiny_lotus("direct"))


# ------------------------------------------------------------------------------------------------ inference
def test_autoencoded_is_the_input_through_the_vae_alone():
    """The diagnostic of benchmarks/sharpen_limits.py: the metric input normalised (min-max, by hand here), encoded,
    decoded and denormalised, with no UNet in the path."""
    sharp = SharpDepth(build_tiny_lotus("generative", seed=0))  # its own: the test moves its UNet's weights
    img, depth, _ = _scene()
    m = sharp.model
    assert m.norm == "depth" and m.processing_size(48, 64, 64) == (48, 64) == m.padded_size(48, 64)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d = torch.from_numpy(depth)[None, None]
    assert "autoencoded" not in sharp.sharpen_tensors(x, d, processing_resolution=64)
    res = sharp.sharpen_tensors(x, d, processing_resolution=64, autoencoded=True)
    lo, hi = float(depth.min()), float(depth.max())
    with torch.no_grad():
        decoded = m.decode_depth(m.encode(((d - lo) / (hi - lo) * 2 - 1).expand(-1, 3, -1, -1)))
    expected = (lo + (decoded + 1) * 0.5 * (hi - lo)).clamp(1e-3, 1e4)
    assert res["autoencoded"].shape == d.shape
    assert torch.allclose(res["autoencoded"], expected, atol=1e-5)
    # the UNet is not in it: other UNet weights move the sharpened depth, not the round trip
    with torch.no_grad():
        for q in m.unet.parameters():
            q.add_(0.05 * torch.randn_like(q))
    moved = sharp.sharpen_tensors(x, d, processing_resolution=64, autoencoded=True)
    assert torch.equal(moved["autoencoded"], res["autoencoded"])
    assert not torch.allclose(moved["depth"], res["depth"], atol=1e-3)


def test_residual_output_is_the_input_plus_the_fitted_change_of_pass_2(sharp):
    """``output="residual"``: d + s·(dec(ẑ) − dec(z_d)) in the min-max space (the round trip recomputed here by hand,
    the rest from the decoded mode's own prediction and fit); a hole in the metric input takes the decoded map;
    measured pixels keep their values."""
    img, depth, sparse = _scene()
    depth[:6, :6] = 0.0
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d, sp = torch.from_numpy(depth)[None, None], torch.from_numpy(sparse)[None, None]
    decoded = sharp.sharpen_tensors(x, d, sp, processing_resolution=64)
    residual = SharpDepth(sharp.model, {"output": "residual"}).sharpen_tensors(x, d, sp, processing_resolution=64)
    valid = depth > 0
    lo, hi = float(depth[valid].min()), float(depth[valid].max())
    norm = np.where(valid, (depth - lo) / (hi - lo) * 2 - 1, 1.0).astype(np.float32)
    m = sharp.model
    with torch.no_grad():
        round_trip = m.decode_depth(m.encode(torch.from_numpy(norm)[None, None].expand(-1, 3, -1, -1)))[0, 0].numpy()
    pred = decoded["prediction"][0, 0].numpy()
    s, t = float(decoded["scale"][0]), float(decoded["shift"][0])
    expected = np.where(valid, norm + s * (pred - round_trip), s * pred + t)
    expected = np.clip(lo + (expected + 1) * 0.5 * (hi - lo), 1e-3, 1e4)
    expected = np.where(sparse > 0, sparse, expected)
    np.testing.assert_allclose(residual["depth"][0, 0].numpy(), expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(residual["depth"][0, 0].numpy(), decoded["depth"][0, 0].numpy(), atol=1e-2)
    with pytest.raises(ValueError, match="output"):
        SharpDepthConfig(output="blend")


def test_with_no_pixel_to_fit_the_fit_falls_back_to_the_inputs_valid_pixels(sharp):
    """fit_threshold 1e-9 leaves (at most) one pixel of low discrepancy, the min-max discrepancy's zero, too few to fit:
    the scale/shift fit then falls back to every pixel where the
    metric input has depth (checked with the numpy least squares), not to the input's holes, whose normalised
    target is only the far filler; fit_pixels counts those valid pixels."""
    img, depth, sparse = _scene()
    depth[:, :12] = 0.0  # a hole in the metric input
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d = torch.from_numpy(depth)[None, None]
    res = SharpDepth(sharp.model, {"fit_threshold": 1e-9}).sharpen_tensors(x, d, processing_resolution=64)
    valid = depth > 0
    assert int(((res["discrepancy"][0, 0].numpy() < 1e-9) & valid).sum()) < 2  # the fallback's case
    norm_d, _ = normalize_depth(d, "depth", "minmax")
    s, t = fit_scale_shift(res["prediction"][0, 0].numpy(), norm_d[0, 0].numpy(), valid)
    assert float(res["scale"][0]) == pytest.approx(s, rel=1e-4, abs=1e-6)
    assert float(res["shift"][0]) == pytest.approx(t, rel=1e-4, abs=1e-6)
    assert int(res["fit_pixels"][0]) == int(valid.sum())


def test_norm_range_takes_the_metric_inputs_range_where_the_code_takes_it(sharp):
    """A 1-px far spike that a shrink to the processing size averages away: "processing" [code] takes min/max on the
    map the UNet sees (so the spike no longer sets the far end), "input" on the full-resolution input (its numpy
    min/max); at the native size the two give the same output."""
    from depthkit.sharpen.limits import processing_inputs

    img, depth, _ = _scene()
    depth[10, 40] = 40.0  # the spike
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d = torch.from_numpy(depth)[None, None]
    code = sharp.sharpen_tensors(x, d, processing_resolution=32)
    kept = SharpDepth(sharp.model, {"norm_range": "input"}).sharpen_tensors(x, d, processing_resolution=32)
    assert (float(kept["params"].lo), float(kept["params"].hi)) == (float(depth.min()), 40.0)
    m = sharp.model
    hr, wr = m.processing_size(48, 64, 32)
    d_p, valid_p, _ = processing_inputs(d, None, (hr, wr), m.padded_size(hr, wr))
    small = d_p[valid_p]
    assert float(code["params"].hi) == pytest.approx(float(small.max())) and float(small.max()) < 20.0
    assert float(code["params"].lo) == pytest.approx(float(small.min()))
    assert not torch.allclose(code["depth"], kept["depth"])
    native = [SharpDepth(sharp.model, {"norm_range": r}).sharpen_tensors(x, d, processing_resolution=64)["depth"]
              for r in ("processing", "input")]
    assert torch.equal(native[0], native[1])
    with pytest.raises(ValueError, match="norm_range"):
        SharpDepthConfig(norm_range="full")


def test_resize_back_is_plain_bilinear_unless_antialias_is_asked(sharp, monkeypatch):
    """The prediction and e go back to the input size by plain bilinear [code], or antialiased when shrinking
    ("antialias"): the two differ when the processing size is above the input's (a shrink back) and are the same
    when it is not."""
    import depthkit.sharpen.model as model_module

    calls = []
    real = model_module.resize_bilinear

    def spy(t, size, antialias=True):
        calls.append((tuple(t.shape[-2:]), tuple(size), antialias))
        return real(t, size, antialias)

    monkeypatch.setattr(model_module, "resize_bilinear", spy)
    img, depth, _ = _scene(24, 32)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d = torch.from_numpy(depth)[None, None]
    out = {}
    for rule in ("bilinear", "antialias"):
        calls.clear()
        out[rule] = SharpDepth(sharp.model, {"resize_back": rule}).sharpen_tensors(x, d, processing_resolution=64)
        back = [a for src, size, a in calls if size == (24, 32) and src != (24, 32)]
        assert back and set(back) == {rule == "antialias"}, rule
    assert not torch.allclose(out["bilinear"]["depth"], out["antialias"]["depth"])
    same = [SharpDepth(sharp.model, {"resize_back": r}).sharpen_tensors(x, d, processing_resolution=16)["depth"]
            for r in ("bilinear", "antialias")]
    assert torch.equal(same[0], same[1])


def test_sharpen_keeps_measurements_and_metric_scale(sharp):
    img, depth, sparse = _scene()
    out = sharp(img, depth, sparse)
    assert out.depth.shape == depth.shape and out.depth.dtype == np.float32
    measured = sparse > 0
    assert np.array_equal(out.depth[measured], sparse[measured])  # exactly, not approximately
    assert out.discrepancy.min() >= 0 and out.discrepancy.max() <= 1
    assert np.all(out.discrepancy[measured] == 0)
    assert 0 <= out.lotus.min() and out.lotus.max() <= 1
    for side in (32, 96):  # processed at another size: e is resized back, and still 0 where measured
        other = sharp(img, depth, sparse, processing_resolution=side)
        assert np.all(other.discrepancy[measured] == 0), side
        assert np.array_equal(other.depth[measured], sparse[measured])

    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d = torch.from_numpy(depth)[None, None]
    res = sharp.sharpen_tensors(x, d, torch.from_numpy(sparse)[None, None])
    assert np.allclose(res["depth"][0, 0].numpy(), out.depth)
    # the fit is least squares in the normalised space over e < 0.5 (checked with the numpy implementation)
    fit = res["discrepancy"][0, 0].numpy() < 0.5
    pred = res["prediction"][0, 0].numpy()
    norm_d, params = normalize_depth(d, "depth", "minmax")
    s, t = fit_scale_shift(pred, norm_d[0, 0].numpy(), fit)
    assert float(res["scale"][0]) == pytest.approx(s, rel=1e-4, abs=1e-6)
    assert float(res["shift"][0]) == pytest.approx(t, rel=1e-4, abs=1e-6)
    # so on the fitted pixels the output has the metric input's mean (the random model's shape aside)
    fitted = denormalize_depth(res["scale"].view(-1, 1, 1, 1) * res["prediction"] + res["shift"].view(-1, 1, 1, 1),
                               params)[0, 0].numpy()
    assert fitted[fit].mean() == pytest.approx(depth[fit].mean(), rel=1e-4)
    # metric scale follows the input: 10x the metres in, 10x out
    out10 = sharp(img, depth * 10, sparse * 10)
    assert np.allclose(out10.depth, out.depth * 10, rtol=1e-3)


@pytest.mark.parametrize("norm", ["depth", "disparity"])
@pytest.mark.parametrize("factor", [1e-4, 1e4])
def test_metric_scale_follows_the_input_beyond_a_millimetre_and_ten_kilometres(norm, factor):
    """A scene of 0.1-0.5 mm (1e-4 x the 1-5 m scene) or 10-50 km (1e4 x) comes out at 1e-4 x or 1e4 x the 1-5 m
    scene's output, as 10x does: the output's bounds follow the scene (output_depth_bounds) rather than clamping
    every pixel to 1 mm or 10 km. No measurements, so every pixel is the sharpener's."""
    img, depth, _ = _scene(40, 56, seed=4)
    model = SharpDepth(build_tiny_lotus(seed=3, norm=norm))
    base = model(img, depth).depth
    scaled = model(img, depth * factor).depth
    assert np.isfinite(scaled).all() and scaled.min() > 0
    assert np.allclose(scaled, base * factor, rtol=1e-3)


def test_output_depth_bounds_are_the_fixed_ones_within_them():
    """[1 mm, 10 km] for a scene inside them (every shipped result unchanged), the scene's nearest / 10 and farthest
    x 10 beyond them, in either space."""
    from depthkit.sharpen.normalize import NormParams, output_depth_bounds

    near, far = output_depth_bounds(NormParams(torch.tensor([0.5, 2e-4, 10.0]), torch.tensor([80.0, 5e-4, 3e4]),
                                               "depth"))
    assert near.tolist() == pytest.approx([1e-3, 2e-5, 1e-3]) and far.tolist() == pytest.approx([1e4, 1e4, 3e5])
    near, far = output_depth_bounds(NormParams(torch.tensor([1 / 80.0, 1 / 3e4]), torch.tensor([2.0, 1 / 10.0]),
                                               "disparity"))
    assert near.tolist() == pytest.approx([1e-3, 1e-3]) and far.tolist() == pytest.approx([1e4, 3e5])


def test_sharpen_missing_metric_pixels_and_disparity_mode():
    img, depth, sparse = _scene(40, 56, seed=2)
    depth[:8, :8] = 0.0  # a hole in the metric source
    model = SharpDepth(build_tiny_lotus(seed=3, norm="disparity"), {"discrepancy_norm": "lstsq",
                                                                   "discrepancy_downsample": "area",
                                                                   "gate_noise": "noised_lotus"})
    out = model(img, depth, sparse)
    hole = np.zeros_like(depth, dtype=bool)
    hole[:8, :8] = True
    assert sparse[5, 7] > 0  # one measurement sits in the hole: measured beats missing
    assert np.all(out.discrepancy[hole & (sparse == 0)] == 1.0) and out.discrepancy[5, 7] == 0
    assert np.isfinite(out.depth).all() and out.depth.min() > 0
    assert np.array_equal(out.depth[sparse > 0], sparse[sparse > 0])
    with pytest.raises(ValueError, match="metric_depth must be an HxW float array"):
        model(img, depth[:-1])
    with pytest.raises(ValueError, match="NaN or negative"):
        model(img, -depth)


def test_sharpen_refuses_what_the_pipeline_refuses(sharp):
    """The public entry refuses an inf (or a float64 value float32 cannot hold) in either map rather than taking it
    for missing, a positive value that would round to 0, an all-missing metric input, and a generator that is not a
    torch.Generator, each with a ValueError saying what was received."""
    img, depth, sparse = _scene(24, 32, seed=6)
    bad = depth.copy()
    bad[2, 3] = np.inf
    with pytest.raises(ValueError, match="1 inf"):
        sharp(img, bad, sparse)
    measured = sparse.copy()
    measured[5, 7] = np.inf  # a measurement, not a hole: it must not be dropped without a word
    with pytest.raises(ValueError, match="sparse has NaN or negative values, or infinite"):
        sharp(img, depth, measured)
    with pytest.raises(ValueError, match="metric_depth has .* too large for float32 metres"):
        sharp(img, np.where(depth > 4, 1e300, depth.astype(np.float64)))
    with pytest.raises(ValueError, match="too small for float32"):
        sharp(img, depth, np.where(sparse > 0, 1e-50, 0.0).astype(np.float64))
    with pytest.raises(ValueError, match="no pixel > 0"):
        sharp(img, np.zeros_like(depth), sparse)
    with pytest.raises(ValueError, match="torch.Generator or None"):
        sharp(img, depth, sparse, generator=5)
    assert np.array_equal(sharp(img, depth.astype(np.float64), sparse).depth, sharp(img, depth, sparse).depth)


def test_sharpdepth_save_load_round_trip(sharp, tmp_path):
    separate = SharpDepth(sharp.model, {"fit_threshold": 0.3}, lotus_unet=build_tiny_lotus(seed=5).unet)
    root = separate.save_pretrained(tmp_path / "sd")
    assert (root / "lotus_unet").is_dir() and (root / "sharpdepth.json").is_file()
    loaded = SharpDepth.from_pretrained(root)
    assert loaded.config.fit_threshold == 0.3 and loaded.lotus_unet is not None
    img, depth, sparse = _scene(32, 40, seed=4)
    a, b = separate(img, depth, sparse), loaded(img, depth, sparse)
    np.testing.assert_allclose(a.depth, b.depth, rtol=1e-6, atol=1e-6)  # loaded weights are equal; conv kernels may differ in the last ulp
    np.testing.assert_allclose(a.discrepancy, b.discrepancy, atol=1e-5)
    assert SharpDepth.from_pretrained(root, config={"fit_threshold": 0.7}).config.fit_threshold == 0.7


# ------------------------------------------------------------------------------------------------ training
def test_few_optimisation_steps_lower_the_loss():
    model = SharpDepth(build_tiny_lotus(seed=7), {"gate_prob": 1.0})
    teacher = copy.deepcopy(model.model.unet).requires_grad_(False)
    ema = EMA.from_config(model.model.unet, model.config)
    img, depth, sparse = _scene(32, 48, seed=6)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d = torch.from_numpy(depth)[None, None]
    sp = torch.from_numpy(sparse)[None, None]
    opt = torch.optim.Adam(model.model.unet.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        # the same noise every step, so the objective is fixed and its decrease is the optimiser's doing
        out = model.compute_losses(x, d, teacher, pass1_unet=ema.model, sparse=sp,
                                   generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        ema.update(model.model.unet)
        losses.append(float(out["loss"].detach()))
    assert out["gated"].all() and out["timesteps"].tolist() == [999]
    assert float(out["loss"].detach()) == pytest.approx(float(out["sds"]) + 0.3 * float(out["recons"]), rel=1e-5)
    assert torch.all(out["discrepancy"][sp > 0] == 0)
    assert losses[-1] < 0.8 * losses[0], losses
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in teacher.parameters())
    with pytest.raises(ValueError, match="multiples of 16"):
        model.compute_losses(x[..., :30], d[..., :30], teacher)


# ------------------------------------------------------------------------------------------------ ablation switches
def test_gating_off_gives_pure_noise_in_training_and_inference(sharp):
    model = SharpDepth(sharp.model, {"gating": False})
    z_d = torch.randn(2, 4, 4, 6)
    e = torch.rand(2, 1, 32, 48)
    for training in (True, False):
        z_in, gated = model.gate_latent(z_d, e, lotus_latent=torch.zeros_like(z_d),
                                        generator=torch.Generator().manual_seed(3), training=training)
        noise = model.model.noise_like(z_d, torch.Generator().manual_seed(3))
        assert torch.equal(z_in, noise) and not gated.any()
    with pytest.raises(ValueError, match="recons_weight must be one of"):
        SharpDepthConfig(recons_weight="e2")


@pytest.mark.parametrize("recons_weight", ["e", "one_minus_e", "uniform"])
def test_holes_in_the_metric_source_carry_no_reconstruction_weight(sharp, monkeypatch, recons_weight):
    import depthkit.sharpen.losses as losses

    seen = {}

    def spy(d_hat01, d01, weight):
        seen["weight"] = weight.detach().clone()
        return reconstruction_loss(d_hat01, d01, weight)

    monkeypatch.setattr(losses, "reconstruction_loss", spy)
    model = SharpDepth(sharp.model, {"recons_weight": recons_weight})
    img, depth, _ = _scene(32, 48, seed=2)
    depth[:8, :16] = 0.0  # a hole: nothing to reconstruct there
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        out = model.compute_losses(x, torch.from_numpy(depth)[None, None], sharp.model.unet,
                                   generator=torch.Generator().manual_seed(0))
    w, e = seen["weight"][0, 0], out["discrepancy"][0, 0]
    hole = torch.from_numpy(depth == 0)
    assert torch.all(e[hole] == 1.0)  # the gate regenerates the hole ...
    assert torch.all(w[hole] == 0.0)  # ... but the reconstruction loss ignores it
    expected = {"e": e, "one_minus_e": 1.0 - e, "uniform": torch.ones_like(e)}[recons_weight]
    assert torch.allclose(w[~hole], expected[~hole])


# ------------------------------------------------------------------------------------------------ ground truth terms
def test_gt_loss_by_hand_with_loops():
    """``gt_loss`` recomputed with Python loops: the mean absolute error over valid pixels and the mean absolute
    difference of neighbour differences over pairs whose two pixels are both valid (right and below neighbours
    pooled). Fails if the pair mask is dropped, a direction is missed, or the means are taken over all pixels."""
    from depthkit.sharpen.losses import gt_loss

    g = torch.Generator().manual_seed(4)
    out = torch.rand(2, 1, 5, 7, generator=g, requires_grad=True)
    gt = torch.rand(2, 1, 5, 7, generator=g)
    valid = torch.rand(2, 1, 5, 7, generator=g) > 0.3
    l1, grad = gt_loss(out, gt, valid)
    o, t, v = out.detach().numpy(), gt.numpy(), valid.numpy()
    errs, pairs = [], []
    for b in range(2):
        for y in range(5):
            for x in range(7):
                if v[b, 0, y, x]:
                    errs.append(abs(o[b, 0, y, x] - t[b, 0, y, x]))
                for dy, dx in ((0, 1), (1, 0)):
                    y2, x2 = y + dy, x + dx
                    if y2 < 5 and x2 < 7 and v[b, 0, y, x] and v[b, 0, y2, x2]:
                        pairs.append(abs((o[b, 0, y2, x2] - o[b, 0, y, x]) - (t[b, 0, y2, x2] - t[b, 0, y, x])))
    assert float(l1.detach()) == pytest.approx(np.mean(errs), rel=1e-5)
    assert float(grad.detach()) == pytest.approx(np.mean(pairs), rel=1e-5)
    (l1 + grad).backward()
    assert out.grad[~valid].abs().sum() == 0  # invalid pixels pull on nothing
    none = gt_loss(out, gt, torch.zeros_like(valid))
    assert float(none[0].detach()) == 0.0 and float(none[1].detach()) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        gt_loss(out, gt[..., :3], valid)


def _band_by_hand(depth, radius, jump, valid=None):
    """The edge band with loops: log-depth spread over the valid pixels of each (2r+1)² window > jump."""
    h, w = depth.shape
    ok = (depth > 0) if valid is None else (depth > 0) & valid
    out = np.zeros((h, w), np.float32)
    for y in range(h):
        for x in range(w):
            win = depth[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1]
            wok = ok[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1]
            if wok.any():
                v = np.log(win[wok])
                out[y, x] = float(v.max() - v.min() > jump)
    return out


def _range_by_hand(values, radius, valid):
    """Window minimum and maximum over ``valid`` pixels by loops (+inf / -inf where the window has none)."""
    h, w = values.shape
    low, high = np.full((h, w), np.inf, np.float32), np.full((h, w), -np.inf, np.float32)
    for y in range(h):
        for x in range(w):
            win = (slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1))
            if valid[win].any():
                low[y, x], high[y, x] = values[win][valid[win]].min(), values[win][valid[win]].max()
    return low, high


def test_local_range_by_hand(monkeypatch):
    """``local_range`` against loops: only valid pixels count, windows are clipped at the border, a window with no
    valid pixel gives +inf / -inf. Fails if the window is one pixel too small or invalid pixels count."""
    from depthkit.sharpen.gating import local_range

    rng = np.random.default_rng(5)
    values = rng.normal(0.0, 1.0, (9, 12)).astype(np.float32)
    valid = rng.random((9, 12)) > 0.3
    valid[:, 8:] = False  # windows in columns 10-11 see no valid pixel
    for radius in (1, 2):
        low, high = local_range(torch.from_numpy(values)[None, None], radius, torch.from_numpy(valid)[None, None])
        want_low, want_high = _range_by_hand(values, radius, valid)
        np.testing.assert_array_equal(low[0, 0].numpy(), want_low)
        np.testing.assert_array_equal(high[0, 0].numpy(), want_high)
        assert np.isinf(want_low[:, 10:]).all() and np.isfinite(want_low[:, :7]).all()  # both kinds of window
    with pytest.raises(ValueError, match="radius >= 0"):
        local_range(torch.from_numpy(values)[None, None], -1, torch.from_numpy(valid)[None, None])
    # a radius past the image's side sees what the whole-image window sees, at that window's cost (a radius of
    # 10**9 took 9 minutes on a 48x64 frame)
    import torch.nn.functional as F

    whole, kernels, pool = _range_by_hand(values, 12, valid), [], F.max_pool2d

    def recording_pool(x, k, *args, **kwargs):
        kernels.append(k)
        return pool(x, k, *args, **kwargs)

    monkeypatch.setattr(F, "max_pool2d", recording_pool)
    for radius in (12, 10**9):
        low, high = local_range(torch.from_numpy(values)[None, None], radius, torch.from_numpy(valid)[None, None])
        np.testing.assert_array_equal(low[0, 0].numpy(), whole[0])
        np.testing.assert_array_equal(high[0, 0].numpy(), whole[1])
    assert kernels == [25] * 4  # the window clipped to the image's longer side (12 px): 2 * 12 + 1


def test_edge_band_by_hand():
    """``edge_band`` against loops over each window; holes do not count; radius 0 lets every pixel change.
    Fails if holes count as depth, the window is one pixel too small or the jump is compared in metres."""
    from depthkit.sharpen.gating import edge_band

    rng = np.random.default_rng(2)
    depth = np.exp(rng.normal(1.0, 0.03, (9, 11))).astype(np.float32)
    depth[3:6, 4:8] *= 1.6  # an object in front of a noisy wall
    depth[0, :3] = 0.0  # a hole next to the border
    depth[7, 9] = 0.0
    for radius, jump in ((1, 0.12), (2, 0.2), (3, 0.4)):
        band = edge_band(torch.from_numpy(depth)[None, None], radius, jump)[0, 0].numpy()
        np.testing.assert_array_equal(band, _band_by_hand(depth, radius, jump))
        assert 0 < band.mean() < 1
    assert torch.equal(edge_band(torch.from_numpy(depth)[None, None], 0, 0.2), torch.ones(1, 1, 9, 11))
    with pytest.raises(ValueError, match="radius >= 0 and jump > 0"):
        edge_band(torch.from_numpy(depth)[None, None], 2, 0.0)


def test_change_band_keeps_the_input_exactly_outside_it(sharp):
    """``change_band_px``: the output equals the metric input outside the band and moves by band × (the unbanded
    output's change) inside it (the band recomputed by hand at the processing size, which here is the input size)."""
    img, depth, sparse = _scene()
    depth = (depth * 1.37 + 0.291).astype(np.float32)  # values whose normalise/denormalise round trip is inexact
    sparse = np.where(sparse > 0, depth, 0).astype(np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d, sp = torch.from_numpy(depth)[None, None], torch.from_numpy(sparse)[None, None]
    free = SharpDepth(sharp.model, {"output": "residual"}).sharpen_tensors(x, d, sp, processing_resolution=64)
    banded = SharpDepth(sharp.model, {"output": "residual", "change_band_px": 2, "change_band_jump": 0.1})
    res = banded.sharpen_tensors(x, d, sp, processing_resolution=64)
    band = _band_by_hand(depth, 2, 0.1)
    assert 0.05 < band.mean() < 0.6
    np.testing.assert_array_equal(res["band"][0, 0].numpy(), band)
    out, unbanded = res["depth"][0, 0].numpy(), free["depth"][0, 0].numpy()
    outside = (band == 0) & (sparse == 0)
    np.testing.assert_array_equal(out[outside], depth[outside])  # bit for bit, not a normalisation round trip
    inside = (band == 1) & (sparse == 0)
    np.testing.assert_allclose(out[inside], unbanded[inside], rtol=1e-4, atol=1e-4)
    assert np.abs(unbanded[outside] - depth[outside]).max() > 1e-2  # without the band those pixels moved
    assert np.array_equal(out[sparse > 0], sparse[sparse > 0])
    with pytest.raises(ValueError, match="change_band_px"):
        SharpDepthConfig(change_band_px=-1)


def test_measured_distance_weight_by_hand():
    """min(1, distance to the nearest measured pixel / radius), the distance by brute force over all measured
    pixels; no measurement or radius 0: 1 everywhere; with ``max_distance`` also 0 farther than it from every
    measurement. Fails if the distance is city-block, the ratio inverted or the cap ignored or inverted."""
    from depthkit.sharpen.gating import measured_distance_weight

    measured = torch.zeros(2, 1, 7, 9, dtype=torch.bool)
    measured[0, 0, 1, 2] = measured[0, 0, 5, 7] = measured[0, 0, 6, 0] = True
    w = measured_distance_weight(measured, 3.0).numpy()
    ys, xs = np.nonzero(measured[0, 0].numpy())
    for y in range(7):
        for x in range(9):
            dist = np.sqrt((ys - y) ** 2 + (xs - x) ** 2).min()
            assert w[0, 0, y, x] == pytest.approx(min(1.0, dist / 3.0), abs=1e-4)
    assert np.all(w[1] == 1.0)  # the second image has no measurement
    assert torch.all(measured_distance_weight(measured, 0.0) == 1.0)
    for radius, cap in ((3.0, 2.5), (0.0, 2.0)):  # the cap: 0 beyond it, alone or with the ratio
        w = measured_distance_weight(measured, radius, cap).numpy()
        for y in range(7):
            for x in range(9):
                dist = np.sqrt((ys - y) ** 2 + (xs - x) ** 2).min()
                want = (min(1.0, dist / radius) if radius else 1.0) * float(dist <= cap)
                assert w[0, 0, y, x] == pytest.approx(want, abs=1e-4)
        assert 0 < (w[0] == 0).mean() < 1 and np.all(w[1] == 1.0)
    with pytest.raises(ValueError, match="radius >= 0"):
        measured_distance_weight(measured, -1.0)
    with pytest.raises(ValueError, match="max_distance >= 0"):
        measured_distance_weight(measured, 1.0, -1.0)


@pytest.mark.parametrize("near,within", [(10.0, 0.0), (0.0, 12.0), (10.0, 12.0)])
def test_keep_near_measured_scales_the_change_by_the_distance_weight(sharp, near, within):
    """``keep_near_measured_px`` and ``change_within_measured_px``: output − input = weight × (the unweighted output −
    input), the weight min(1, dist / near) × [dist <= within] from the measured pixels by brute force (the processing
    size is the input size here)."""
    img, depth, sparse = _scene()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d, sp = torch.from_numpy(depth)[None, None], torch.from_numpy(sparse)[None, None]
    free = SharpDepth(sharp.model, {"output": "residual"}).sharpen_tensors(x, d, sp, processing_resolution=64)
    kept = SharpDepth(sharp.model, {"output": "residual", "keep_near_measured_px": near,
                                    "change_within_measured_px": within})
    res = kept.sharpen_tensors(x, d, sp, processing_resolution=64)
    ys, xs = np.nonzero(sparse)
    yy, xx = np.mgrid[:depth.shape[0], :depth.shape[1]]
    dist = np.sqrt((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(-1)
    weight = (np.minimum(1.0, dist / near) if near else 1.0) * (dist <= within if within else 1.0)
    lo, hi = float(depth.min()), float(depth.max())
    change_free = (free["depth"][0, 0].numpy() - depth) / (hi - lo)
    change_kept = (res["depth"][0, 0].numpy() - depth) / (hi - lo)
    free_px = sparse == 0  # measured pixels are restored to their values either way
    np.testing.assert_allclose(change_kept[free_px], (weight * change_free)[free_px], atol=1e-5)
    assert np.abs(change_free[dist < 5]).max() > 1e-3  # those pixels moved without the weight
    if within:
        assert np.abs(change_free[dist > within]).max() > 1e-3  # and so did those beyond the cap
    cfg = SharpDepthConfig()
    assert (cfg.keep_near_measured_px, cfg.change_within_measured_px) == (0.0, 0.0)
    with pytest.raises(ValueError, match="keep_near_measured_px"):
        SharpDepthConfig(keep_near_measured_px=-2.0)
    with pytest.raises(ValueError, match="change_within_measured_px"):
        SharpDepthConfig(change_within_measured_px=-1.0)


def test_measured_hull_ignores_the_padding(sharp):
    """At a processing size that is padded (44x60 padded to 128x128), a measured pixel on the last row is copied down
    into the padding; the hull must be the measured pixels' own: with three measured pixels, output − input = the
    change without the hull inside their triangle (by half-planes here) and 0 outside. Fails if the hull is taken on
    the padded mask (its lower vertex then reaches row 127, widening the triangle)."""
    img, depth, _ = _scene(44, 60)
    corners = [(0, 5), (0, 55), (43, 30)]
    sparse = np.zeros_like(depth)
    for r, c in corners:
        sparse[r, c] = depth[r, c]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d, sp = torch.from_numpy(depth)[None, None], torch.from_numpy(sparse)[None, None]
    base = {"output": "residual"}
    free = SharpDepth(sharp.model, base).sharpen_tensors(x, d, sp, processing_resolution=60)["depth"]
    res = SharpDepth(sharp.model, {**base, "change_within_measured_hull": True}).sharpen_tensors(
        x, d, sp, processing_resolution=60)["depth"]
    yy, xx = np.mgrid[:44, :60]
    (ay, ax), (by, bx), (cy, cx) = corners
    side = [(qx - px) * (yy - py) - (qy - py) * (xx - px)
            for (py, px), (qy, qx) in (((ay, ax), (cy, cx)), ((cy, cx), (by, bx)), ((by, bx), (ay, ax)))]
    hull = (side[0] >= 0) & (side[1] >= 0) & (side[2] >= 0) | (side[0] <= 0) & (side[1] <= 0) & (side[2] <= 0)
    change_free, change_kept = free[0, 0].numpy() - depth, res[0, 0].numpy() - depth
    free_px = sparse == 0
    np.testing.assert_allclose(change_kept[free_px], np.where(hull, change_free, 0.0)[free_px], atol=1e-5)
    assert np.abs(change_free[~hull & (yy > 30)]).max() > 1e-3  # beside the lower vertex the change was not nil


@pytest.mark.parametrize("near", [0.0, 10.0])
def test_change_within_measured_hull_keeps_the_input_outside_the_measured_pixels_hull(sharp, near):
    """``change_within_measured_hull``: in a LiDAR-like frame (every other pixel of rows 20, 26, ..., 44, none above
    or below) output − input = [row in 20..44 and column in 0..62] × the change without it (times the distance weight
    by brute force when ``keep_near_measured_px`` is on as well); a frame without measurements is not limited; the
    training terms use the same weight. Fails if the hull is ignored, inverted or replaced by its bounding rows."""
    img, depth, _ = _scene()
    beams = np.zeros_like(depth)
    beams[20:45:6, ::2] = depth[20:45:6, ::2]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().expand(2, -1, -1, -1) / 127.5 - 1
    d = torch.from_numpy(depth)[None, None].expand(2, -1, -1, -1)
    sp = torch.from_numpy(np.stack([beams, np.zeros_like(beams)]))[:, None]
    base = {"output": "residual", "keep_near_measured_px": near}
    free = SharpDepth(sharp.model, base).sharpen_tensors(x, d, sp, processing_resolution=64)["depth"]
    res = SharpDepth(sharp.model, {**base, "change_within_measured_hull": True}).sharpen_tensors(
        x, d, sp, processing_resolution=64)["depth"]
    yy, xx = np.mgrid[:depth.shape[0], :depth.shape[1]]
    hull = (yy >= 20) & (yy <= 44) & (xx <= 62)
    change_free, change_kept = free[0, 0].numpy() - depth, res[0, 0].numpy() - depth
    np.testing.assert_allclose(change_kept, np.where(hull, change_free, 0.0), atol=1e-5)
    assert np.abs(change_free[~hull]).max() > 1e-3 and np.abs(change_free[hull & (beams == 0)]).max() > 1e-3
    torch.testing.assert_close(res[1], free[1], rtol=0, atol=0)  # no measurements: nothing to bound the change
    gt = torch.from_numpy(depth * 1.1)[None, None]

    def loss(config, measured):
        with torch.no_grad():
            return float(SharpDepth(sharp.model, {**base, "lambda_gt": 1.0, **config}).compute_losses(
                x[:1], d[:1], sharp.model.unet, generator=torch.Generator().manual_seed(0),
                sparse=torch.from_numpy(measured)[None, None], gt=gt)["gt"])

    rim = depth.copy()  # measured on the first and last rows and columns: the hull is the whole frame
    rim[1:-1, 1:-1] = 0.0
    on = {"change_within_measured_hull": True}
    assert loss(on, beams) != pytest.approx(loss({}, beams), rel=1e-4)
    assert loss(on, rim) == pytest.approx(loss({}, rim), rel=1e-6)
    assert SharpDepthConfig().change_within_measured_hull is False
    for bad in (1, "true", None):
        with pytest.raises(ValueError, match="change_within_measured_hull must be bool; received"):
            SharpDepthConfig(change_within_measured_hull=bad)


def test_dense_measured_fraction_drops_the_distance_weight_in_a_dense_sensors_frame(sharp):
    """``dense_measured_fraction``: in a batch of a ToF-like frame (most pixels measured, holes) and a frame of three
    points, the dense one's change is the free change times the cap [dist <= within] alone, the sparse one's times
    min(1, dist / near) [dist <= within] (brute force, the processing size is the input size). The fraction is counted
    at the input size: every other row measured (half of the pixels) is not dense at a threshold of 0.6, though at
    half the processing size every cell holds a measured pixel."""
    img, depth, sparse = _scene()
    holes = np.ones_like(depth, bool)
    holes[10:30, 20:44] = False  # a blob the sensor missed ...
    holes[:, 15:17] = False  # ... and a shadow strip
    dense_sparse = np.where(holes, depth, 0.0).astype(np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().expand(2, -1, -1, -1) / 127.5 - 1
    d = torch.from_numpy(depth)[None, None].expand(2, -1, -1, -1)
    sp = torch.from_numpy(np.stack([dense_sparse, sparse]))[:, None]
    near, within = 10.0, 6.0
    free = SharpDepth(sharp.model, {"output": "residual"}).sharpen_tensors(x, d, sp, processing_resolution=64)
    kept = SharpDepth(sharp.model, {"output": "residual", "keep_near_measured_px": near,
                                    "change_within_measured_px": within, "dense_measured_fraction": 0.6})
    res = kept.sharpen_tensors(x, d, sp, processing_resolution=64)
    yy, xx = np.mgrid[:depth.shape[0], :depth.shape[1]]
    lo, hi = float(depth.min()), float(depth.max())
    for b, (mask, dense) in enumerate([(holes, True), (sparse > 0, False)]):
        ys, xs = np.nonzero(mask)
        dist = np.sqrt((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(-1)
        weight = (dist <= within) * (1.0 if dense else np.minimum(1.0, dist / near))
        change_free = (free["depth"][b, 0].numpy() - depth) / (hi - lo)
        change_kept = (res["depth"][b, 0].numpy() - depth) / (hi - lo)
        np.testing.assert_allclose(change_kept[~mask], (weight * change_free)[~mask], atol=1e-5)
        if dense:  # the distance weight would have damped these pixels, and the cap still holds these
            assert np.abs(change_free[~mask & (dist > 0) & (dist < near / 2)]).max() > 1e-3
            assert np.abs(change_free[dist > within]).max() > 1e-3
    rows = np.zeros_like(depth)
    rows[::2] = depth[::2]  # 50 % measured at the input size, every 2x2 cell measured at half of it
    x1, d1, sp1 = x[:1], d[:1], torch.from_numpy(rows)[None, None]
    base = {"output": "residual", "keep_near_measured_px": 4.0}
    weighted = SharpDepth(sharp.model, base).sharpen_tensors(x1, d1, sp1, processing_resolution=32)["depth"]
    unweighted = SharpDepth(sharp.model, {"output": "residual"}).sharpen_tensors(x1, d1, sp1, 32)["depth"]
    for threshold, dense in ((0.6, False), (0.5, True)):
        out = SharpDepth(sharp.model, {**base, "dense_measured_fraction": threshold}).sharpen_tensors(
            x1, d1, sp1, processing_resolution=32)["depth"]
        torch.testing.assert_close(out, unweighted if dense else weighted, rtol=0, atol=1e-6)
    assert (weighted - unweighted).abs().max() > 1e-3
    # the fraction is of the pixels with metric input: 70 % of the right half measured, the left half without input
    half = depth.copy()
    half[:, :32] = 0.0
    right = np.where((np.random.default_rng(1).random(depth.shape) < 0.7) & (half > 0), half, 0.0)
    d2, sp2 = torch.from_numpy(half)[None, None], torch.from_numpy(right.astype(np.float32))[None, None]
    assert 0.3 < (right > 0).mean() < 0.4
    outs = [SharpDepth(sharp.model, config).sharpen_tensors(x1, d2, sp2, processing_resolution=64)["depth"]
            for config in ({"output": "residual"}, base, {**base, "dense_measured_fraction": 0.5})]
    assert (outs[0] - outs[1]).abs().max() > 1e-3
    torch.testing.assert_close(outs[2], outs[0], rtol=0, atol=1e-6)  # dense: the distance weight is off
    assert SharpDepthConfig().dense_measured_fraction == 0.0
    for bad in (-0.1, 1.5, "0.4", None, True):
        with pytest.raises(ValueError, match="dense_measured_fraction .* received"):
            SharpDepthConfig(dense_measured_fraction=bad)


@pytest.mark.parametrize("resolution,near", [(64, 0.0), (32, 0.0), (64, 10.0)])
def test_change_range_keeps_the_output_within_the_inputs_local_range(sharp, resolution, near):
    """``change_range_px``: the output is the unclipped output clamped, pixel by pixel, to the metric input's minimum
    and maximum over the window (loops here), whose radius is given at the processing size (64: the input's size;
    32: half of it, so the window at the input size is twice as wide). Measured pixels keep their values. With a
    distance weight w (``keep_near_measured_px``, fractional) the clamp comes first: d + w·(clamp(free) − d), which
    differs from clamping d + w·(free − d)."""
    img, depth, sparse = _scene()
    depth[30:34, 40:44] = 0.0  # a hole without metric input: not clamped
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d, sp = torch.from_numpy(depth)[None, None], torch.from_numpy(sparse)[None, None]
    free = SharpDepth(sharp.model, {"output": "residual"}).sharpen_tensors(x, d, sp, processing_resolution=resolution)
    ranged = SharpDepth(sharp.model, {"output": "residual", "change_range_px": 2, "keep_near_measured_px": near})
    out = ranged.sharpen_tensors(x, d, sp, processing_resolution=resolution)["depth"][0, 0].numpy()
    unclipped = free["depth"][0, 0].numpy()
    low, high = _range_by_hand(depth, 2 * 64 // resolution, depth > 0)
    want = np.where(depth > 0, np.clip(unclipped, low, high), unclipped)
    if near:
        ys, xs = np.nonzero(sparse)
        yy, xx = np.mgrid[:depth.shape[0], :depth.shape[1]]
        weight = np.minimum(1.0, np.sqrt((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(-1) / near)
        mixed_then_clamped = np.clip(depth + weight * (unclipped - depth), low, high)
        want = np.where(depth > 0, depth + weight * (want - depth), want)
        ok = (depth > 0) & (sparse == 0)
        assert np.abs(mixed_then_clamped - want)[ok].max() > 1e-3  # the order matters on this scene
    want = np.where(sparse > 0, sparse, want)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-5)
    if not near:
        np.testing.assert_array_equal(out, want)
    clipped = (depth > 0) & ((unclipped < low) | (unclipped > high))
    assert 0.05 < clipped.mean() < 0.95  # the clamp did something, and not everywhere
    assert np.array_equal(out[sparse > 0], sparse[sparse > 0])
    assert SharpDepthConfig().change_range_px == 0
    with pytest.raises(ValueError, match="change_range_px"):
        SharpDepthConfig(change_range_px=-1)
    with pytest.raises(ValueError, match="change_range_px must be int; received 2.5"):
        SharpDepthConfig(change_range_px=2.5)


@pytest.mark.parametrize("output,band_px,range_px,near", [("decoded", 0, 0, 0.0), ("residual", 0, 0, 0.0),
                                                          ("residual", 2, 0, 0.0), ("residual", 2, 1, 0.0),
                                                          ("residual", 2, 1, 6.0)])
def test_gt_terms_score_the_output_as_inference_forms_it(sharp, output, band_px, range_px, near):
    """The ground-truth terms of ``compute_losses`` recomputed from the step's own decoded prediction: GT normalised
    with the *metric input's* min/max (by hand here), the output residual-formed (norm(d) + dec(ẑ) − dec(z_d), the
    round trip by hand) or decoded, then the loops of :func:`test_gt_loss_by_hand_with_loops` on the [0, 1] maps.
    With ``change_range_px`` the output is clamped to the input's window range, then with ``change_band_px`` the
    change is kept to the edge band, times the distance weight and its cap when measured pixels are given (all by
    hand). Fails if GT is normalised with its own range, the residual form, the clamp, the band or the distance weight
    is dropped, the clamp comes after the mix, or the weights are ignored."""
    model = SharpDepth(sharp.model, {"output": output, "lambda_gt": 0.7, "lambda_gt_grad": 0.2,
                                     "change_band_px": band_px, "change_band_jump": 0.1, "change_range_px": range_px,
                                     "keep_near_measured_px": near, "change_within_measured_px": 2 * near})
    img, depth, sparse = _scene(32, 48, seed=3)
    gt = depth.copy()
    gt[10:20, 30:40] = 6.5  # beyond the metric input's range: clipped to its far end
    gt[:4, :4] = 0.0  # no GT here
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d = torch.from_numpy(depth)[None, None]
    sp = torch.from_numpy(sparse)[None, None] if near else None
    with torch.no_grad():
        out = model.compute_losses(x, d, sharp.model.unet, generator=torch.Generator().manual_seed(0), sparse=sp,
                                   gt=torch.from_numpy(gt)[None, None])
    lo, hi = float(depth.min()), float(depth.max())
    norm_d = (depth - lo) / (hi - lo) * 2 - 1
    pred = out["prediction"][0, 0].numpy()
    if output == "residual":
        m = sharp.model
        with torch.no_grad():
            rt = m.decode_depth(m.encode(torch.from_numpy(norm_d)[None, None].float().expand(-1, 3, -1, -1)))
        pred = norm_d + pred - rt[0, 0].numpy()
    unclamped = pred
    if range_px:  # clamped to the input's window range (normalised: the affine map keeps min and max)
        low, high = _range_by_hand(norm_d, range_px, depth > 0)
        assert ((pred < low) | (pred > high)).mean() > 0.05
        pred = np.clip(pred, low, high)
    if band_px:
        band = _band_by_hand(depth, band_px, 0.1)
        assert 0.05 < band.mean() < 0.6
        if near:  # the distance weight and its cap, from the measured pixels by brute force
            ys, xs = np.nonzero(sparse)
            yy, xx = np.mgrid[:depth.shape[0], :depth.shape[1]]
            dist = np.sqrt((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(-1)
            band = band * np.minimum(1.0, dist / near) * (dist <= 2 * near)
            assert ((band > 0) & (band < 1)).any() and (dist > 2 * near).any()
            clamped_after = np.clip(norm_d + band * (unclamped - norm_d), low, high)
            assert np.abs(clamped_after - (norm_d + band * (pred - norm_d))).max() > 1e-3  # the order matters
        pred = norm_d + band * (pred - norm_d)
    o = pred * 0.5 + 0.5
    t = np.clip((gt - lo) / (hi - lo) * 2 - 1, -1, 1) * 0.5 + 0.5
    v = gt > 0
    l1 = np.abs(o - t)[v].mean()
    dx = np.abs(np.diff(o, axis=1) - np.diff(t, axis=1))[v[:, 1:] & v[:, :-1]]
    dy = np.abs(np.diff(o, axis=0) - np.diff(t, axis=0))[v[1:] & v[:-1]]
    grad = np.concatenate([dx, dy]).mean()
    assert float(out["gt"]) == pytest.approx(l1, rel=1e-4)
    assert float(out["gt_grad"]) == pytest.approx(grad, rel=1e-4)
    expected = float(out["sds"]) + 0.3 * float(out["recons"]) + 0.7 * l1 + 0.2 * grad
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-4)


def test_gt_terms_drop_the_distance_weight_in_a_dense_frame_as_inference_does(sharp):
    """In training, a frame whose measured fraction reaches ``dense_measured_fraction`` is scored with the cap alone
    (its loss equals that of a config without ``keep_near_measured_px``); a sparse frame keeps the distance weight."""
    img, depth, sparse = _scene(32, 48, seed=3)
    dense = np.where(np.random.default_rng(0).random(depth.shape) < 0.7, depth, 0.0).astype(np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d, gt = torch.from_numpy(depth)[None, None], torch.from_numpy(depth * 1.1)[None, None]
    base = {"output": "residual", "lambda_gt": 1.0, "lambda_gt_grad": 0.5, "change_band_px": 2,
            "change_band_jump": 0.1, "change_within_measured_px": 12.0}

    def loss(config, measured):
        with torch.no_grad():
            return float(SharpDepth(sharp.model, {**base, **config}).compute_losses(
                x, d, sharp.model.unet, generator=torch.Generator().manual_seed(0),
                sparse=torch.from_numpy(measured)[None, None], gt=gt)["gt"])

    rule = {"keep_near_measured_px": 6.0, "dense_measured_fraction": 0.5}
    assert loss(rule, dense) == pytest.approx(loss({}, dense), rel=1e-6)
    assert loss(rule, dense) != pytest.approx(loss({"keep_near_measured_px": 6.0}, dense), rel=1e-4)
    assert loss(rule, sparse) == pytest.approx(loss({"keep_near_measured_px": 6.0}, sparse), rel=1e-6)
    assert loss(rule, sparse) != pytest.approx(loss({}, sparse), rel=1e-4)


def test_gt_terms_need_gt_and_are_off_by_default(sharp):
    img, depth, _ = _scene(32, 48, seed=1)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d = torch.from_numpy(depth)[None, None]
    cfg = SharpDepthConfig()
    assert (cfg.lambda_gt, cfg.lambda_gt_grad, cfg.uses_gt) == (0.0, 0.0, False)
    with torch.no_grad():
        out = sharp.compute_losses(x, d, sharp.model.unet, generator=torch.Generator().manual_seed(0))
    assert float(out["gt"]) == 0.0 and float(out["loss"]) == pytest.approx(
        float(out["sds"]) + 0.3 * float(out["recons"]), rel=1e-6)
    with pytest.raises(ValueError, match="need ground-truth depth"):
        SharpDepth(sharp.model, {"lambda_gt_grad": 1.0}).compute_losses(x, d, sharp.model.unet)
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        SharpDepthConfig(lambda_gt=-1.0)


def test_a_given_pass1_replaces_the_lotus_prediction(sharp):
    """``pass1_depth`` (the oracle of ``benchmarks/sharpen_switches.py --pass1 gt``): pass 1's prediction is that map
    in the metric input's normalised range (the input where it has no depth), computed here with numpy; the input
    itself as pass 1 leaves no discrepancy; the random draws after pass 1 are the ones a plain run makes."""
    img, depth, sparse = _scene()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d = torch.from_numpy(depth)[None, None]
    sp = torch.from_numpy(sparse)[None, None]
    given = depth.copy()
    given[30:40, 40:60] = 0.8  # a box the input lacks, nearer than its nearest depth (clipped to -1)
    given[0:4, :] = 0.0  # unknown: the input stands in
    expected = np.clip(2 * (np.where(given > 0, given, depth) - depth.min()) / (depth.max() - depth.min()) - 1, -1, 1)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    plain = sharp.sharpen_tensors(x, d, sp, processing_resolution=64, generator=g1)
    oracle = sharp.sharpen_tensors(x, d, sp, processing_resolution=64, generator=g2,
                                   pass1_depth=torch.from_numpy(given)[None, None])
    np.testing.assert_allclose(oracle["lotus"][0, 0].numpy(), expected, atol=1e-5)
    assert not np.allclose(plain["lotus"][0, 0].numpy(), expected, atol=0.1)
    assert torch.equal(torch.randn(8, generator=g1), torch.randn(8, generator=g2))
    assert float(oracle["discrepancy"][0, 0, 30:40, 40:60].min()) > 0.5  # the box is where they disagree
    same = sharp.sharpen_tensors(x, d, sp, processing_resolution=64, pass1_depth=d)
    assert float(same["discrepancy"].max()) == 0.0
    with pytest.raises(ValueError, match="pass1_depth"):
        sharp.sharpen_tensors(x, d, sp, pass1_depth=d[..., :10])


def test_pass1_max_side_runs_the_lotus_smaller_and_pass2_at_the_processing_size(sharp):
    """``pass1_max_side``: the UNet's first call (pass 1) sees the image's latent at the smaller side, its second
    (pass 2) the processing size's; the pass-1 map is the Lotus run on the image resized to that side with the
    top-left crop of the processing size's noise, resized back up (recomputed here), and every later draw is the one
    a run without it makes; a processing size within the side runs exactly as without it. 50 x 70 is padded (to
    56 x 72, and 25 x 35 to 32 x 40), so the crops before resizing count."""
    from depthkit.sharpen.lotus import pad_to_multiple, resize_bilinear

    img, depth, sparse = _scene(h=50, w=70)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    d, sp = torch.from_numpy(depth)[None, None], torch.from_numpy(sparse)[None, None]
    m = sharp.model
    g_plain = torch.Generator().manual_seed(1)
    plain = sharp.sharpen_tensors(x, d, sp, processing_resolution=70, generator=g_plain)
    within = SharpDepth(m, {"pass1_max_side": 70}).sharpen_tensors(x, d, sp, processing_resolution=70,
                                                                  generator=torch.Generator().manual_seed(1))
    assert torch.equal(within["depth"], plain["depth"]) and torch.equal(within["lotus"], plain["lotus"])

    seen = []
    hook = m.unet.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    g_small = torch.Generator().manual_seed(1)
    try:
        small = SharpDepth(m, {"pass1_max_side": 35}).sharpen_tensors(x, d, sp, processing_resolution=70,
                                                                      generator=g_small)
    finally:
        hook.remove()
    assert torch.equal(torch.randn(8, generator=g_small), torch.randn(8, generator=g_plain))
    f = m.vae_scale_factor
    side = m.processing_size(50, 70, 35)
    assert side == (25, 35) and m.padded_size(*side) == (32, 40) and m.padded_size(50, 70) == (56, 72)
    assert seen == [(32 // f, 40 // f), (56 // f, 72 // f)]
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        full_noise = torch.randn((1, m.latent_channels, 56 // f, 72 // f), generator=g)
        z_small = m.encode(pad_to_multiple(resize_bilinear(x, side), (32, 40)))
        _, pred = sharp.lotus_pass(z_small, noise=full_noise[..., :32 // f, :40 // f])
    expected = resize_bilinear(pred[..., :25, :35].float(), (50, 70))
    np.testing.assert_allclose(small["lotus"][0, 0].numpy(), expected[0, 0].numpy(), atol=1e-5)
    assert not torch.allclose(small["depth"], plain["depth"], atol=1e-3)
    measured = sp > 0
    assert torch.equal(small["depth"][measured], sp[measured])
    for bad in (-1, 2.5, "320", True):
        with pytest.raises(ValueError, match="pass1_max_side"):
            SharpDepthConfig(pass1_max_side=bad)
