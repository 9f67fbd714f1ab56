"""Lotus: task embedding, tiny G/D forward shapes, predict() sizes, depth normalisation, save/load round trip."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from depthkit.checkpoints import CheckpointError
from depthkit.sharpen.importer import compute_empty_prompt_embeds
from depthkit.sharpen.lotus import (
    EMBEDS_FILE,
    LotusModel,
    task_embedding,
)
from depthkit.sharpen.normalize import denormalize_depth, normalize_depth, replicate3
from depthkit.sharpen.tiny import build_tiny_lotus


@pytest.fixture(scope="module")
def lotus_g():
    return build_tiny_lotus("generative", seed=0)


@pytest.fixture(scope="module")
def lotus_d():
    return build_tiny_lotus("direct", seed=1)


def _image(h, w, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_task_embedding_values():
    s1, c1 = math.sin(1.0), math.cos(1.0)
    depth = task_embedding("depth", batch_size=3)
    assert depth.shape == (3, 4)
    assert torch.allclose(depth, torch.tensor([[s1, 0.0, c1, 1.0]] * 3))
    assert torch.allclose(task_embedding("rgb")[0], torch.tensor([0.0, s1, 1.0, c1]))
    assert task_embedding("depth", dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="task must be one of"):
        task_embedding("normal")


def test_forward_shapes_generative_and_direct(lotus_g, lotus_d):
    assert lotus_g.unet.config.in_channels == 8 and lotus_d.unet.config.in_channels == 4
    assert lotus_g.vae_scale_factor == 8 and lotus_g.resolution_multiple == 16
    x = torch.rand(2, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        z = lotus_g.encode(x)
        assert z.shape == (2, 4, 6, 8)
        x0 = lotus_g.predict_latent(z, lotus_g.noise_like(z))
        assert x0.shape == (2, 4, 6, 8)
        assert lotus_g.decode_depth(x0).shape == (2, 1, 48, 64)
        assert lotus_d.predict_latent(lotus_d.encode(x)).shape == (2, 4, 6, 8)
        rgb = lotus_d.predict_latent(lotus_d.encode(x), task="rgb")
        assert not torch.allclose(rgb, lotus_d.predict_latent(lotus_d.encode(x)))  # the task switch is live
    with pytest.raises(ValueError, match="needs depth_latent_or_noise"):
        lotus_g.predict_latent(z)
    with pytest.raises(ValueError, match="image latent alone"):
        lotus_d.predict_latent(z, z)


def test_encode_uses_posterior_mean_and_scaling(lotus_g):
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        mean = lotus_g.vae.encode(x).latent_dist.mean
        assert torch.equal(lotus_g.encode(x), mean * lotus_g.vae.config.scaling_factor)
        assert torch.equal(lotus_g.encode(x), lotus_g.encode(x))  # deterministic: no posterior sampling


def test_constructor_checks_layout(lotus_g):
    with pytest.raises(ValueError, match="mode='direct' needs a UNet with in_channels=4"):
        LotusModel(lotus_g.unet, lotus_g.vae, lotus_g.empty_prompt_embeds, mode="direct")
    with pytest.raises(ValueError, match="empty_prompt_embeds must be 1 x L x 32"):
        LotusModel(lotus_g.unet, lotus_g.vae, torch.zeros(1, 77, 16))
    with pytest.raises(ValueError, match="norm must be one of"):
        LotusModel(lotus_g.unet, lotus_g.vae, lotus_g.empty_prompt_embeds, norm="inverse")


def test_processing_size_keeps_aspect_and_pads(lotus_g):
    """Longest side -> the processing resolution, the other side h * res // longest (diffusers' Marigold image
    processor, as the public SharpDepth pipeline), then replicate padding to a multiple of the VAE factor (8)."""
    from depthkit.sharpen.lotus import pad_to_multiple

    # KITTI at 768: 352 * 768 // 1216 = 222 (222.3), not 64-rounded 256 (which squashed it by 13.6 %)
    assert lotus_g.processing_size(352, 1216, 768) == (222, 768)
    assert lotus_g.padded_size(222, 768) == (224, 768)
    assert lotus_g.processing_size(37, 53) == (37, 53) and lotus_g.padded_size(37, 53) == (40, 56)
    assert lotus_g.processing_size(37, 53, 64) == (44, 64)  # 37 * 64 // 53 = 44
    x = torch.arange(6.0).view(1, 1, 2, 3)
    padded = pad_to_multiple(x, (4, 4))
    assert torch.equal(padded[..., :2, :3], x) and torch.equal(padded[..., 3, :3], x[..., 1, :])
    assert torch.equal(padded[..., :2, 3], x[..., :, 2])
    with pytest.raises(ValueError, match="processing_resolution must be a positive int"):
        lotus_g.processing_size(37, 53, 0)


def test_predict_returns_input_resolution_for_odd_sizes(lotus_g, lotus_d):
    img = _image(37, 53)
    for model in (lotus_g, lotus_d):
        out = model.predict(img)
        assert isinstance(out, np.ndarray) and out.shape == (37, 53) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert model.predict(img, processing_resolution=24).shape == (37, 53)
    batch = torch.rand(2, 3, 29, 45) * 2 - 1
    out = lotus_g.predict(batch)
    assert out.shape == (2, 1, 29, 45)
    # default generator is seeded: repeatable
    assert np.array_equal(lotus_g.predict(img), lotus_g.predict(img))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        lotus_g.predict(img.astype(np.float32))
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        lotus_g.predict(batch * 3)


def test_normalisation_known_values():
    depth = torch.tensor([1.0, 2.0, 3.0, 5.0]).view(1, 1, 1, 4)
    x, p = normalize_depth(depth, "depth", "minmax")
    assert torch.allclose(x.flatten(), torch.tensor([-1.0, -0.5, 0.0, 1.0]))
    assert float(p.lo[0]) == 1.0 and float(p.hi[0]) == 5.0
    # disparity 1, 0.5, 1/3, 0.2: near → +1, far → -1
    x, p = normalize_depth(depth, "disparity", "minmax")
    expected = 2 * (torch.tensor([1.0, 0.5, 1 / 3, 0.2]) - 0.2) / 0.8 - 1
    assert torch.allclose(x.flatten(), expected, atol=1e-6)
    # quantiles of 1..101: 2% → 3, 98% → 99 (linear interpolation); 51 → 0, outside clipped
    ramp = torch.arange(1.0, 102.0).view(1, 1, 1, 101)
    x, p = normalize_depth(ramp, "depth", "quantile")
    assert float(p.lo[0]) == pytest.approx(3.0) and float(p.hi[0]) == pytest.approx(99.0)
    assert float(x[0, 0, 0, 50]) == pytest.approx(0.0, abs=1e-6)
    assert float(x[0, 0, 0, 0]) == -1.0 and float(x[0, 0, 0, 100]) == 1.0
    # missing pixels take the far value and do not set the range
    holes = torch.tensor([0.0, 2.0, 4.0, float("nan")]).view(1, 1, 1, 4)
    x, p = normalize_depth(holes, "depth", "minmax")
    assert x.flatten().tolist() == [1.0, -1.0, 1.0, 1.0] and float(p.lo[0]) == 2.0
    x, _ = normalize_depth(holes, "disparity", "minmax")
    assert x.flatten().tolist() == [-1.0, 1.0, -1.0, -1.0]
    assert replicate3(x.view(1, 1, 2, 2)).shape == (1, 3, 2, 2)
    with pytest.raises(ValueError, match="no valid depth"):
        normalize_depth(torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("space", ["depth", "disparity"])
def test_normalisation_round_trip(space):
    g = torch.Generator().manual_seed(0)
    depth = 0.5 + 9.5 * torch.rand(2, 1, 12, 16, generator=g)
    x, params = normalize_depth(depth, space, "minmax")
    assert x.min() >= -1 and x.max() <= 1
    assert torch.allclose(denormalize_depth(x, params), depth, rtol=1e-5)
    x, params = normalize_depth(depth, space, "quantile")
    back = denormalize_depth(x, params)
    v = depth if space == "depth" else 1 / depth
    inside = (v >= params.lo.view(-1, 1, 1, 1)) & (v <= params.hi.view(-1, 1, 1, 1))
    assert inside.float().mean() > 0.9
    assert torch.allclose(back[inside], depth[inside], rtol=1e-5)
    assert not torch.allclose(back[~inside], depth[~inside], rtol=1e-3)  # clipped pixels are not recoverable


def test_save_load_bit_identical_without_text_encoder(lotus_g, tmp_path, monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a text encoder was loaded")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    root = lotus_g.save_pretrained(tmp_path / "lotus")
    assert sorted(p.name for p in root.iterdir()) == sorted(["unet", "vae", "scheduler", EMBEDS_FILE, "lotus.json"])
    meta = json.loads((root / "lotus.json").read_text())
    assert meta["mode"] == "generative" and meta["norm"] == "depth" and meta["timestep"] == 999
    loaded = LotusModel.from_pretrained(root)
    assert not any("text" in name for name, _ in loaded.named_modules())
    assert torch.equal(loaded.empty_prompt_embeds, lotus_g.empty_prompt_embeds)
    img = _image(40, 56, seed=3)
    # loaded weights are equal (checked below); convolution kernels may differ in the last ulps
    np.testing.assert_allclose(loaded.predict(img), lotus_g.predict(img), rtol=1e-5, atol=1e-5)
    assert loaded.scheduler.config.prediction_type == "sample"
    # overrides and dtype
    bf16 = LotusModel.from_pretrained(str(root), dtype="bfloat16", norm="disparity")
    assert bf16.dtype == torch.bfloat16 and bf16.norm == "disparity"
    assert bf16.predict(_image(32, 32)).shape == (32, 32)  # 8x VAE + one UNet level: >= 32 px (GroupNorm)
    with pytest.raises(ValueError, match="dtype 'float8' is not supported; allowed: float32"):
        LotusModel.from_pretrained(root, dtype="float8")


def test_missing_parts_error(lotus_d, tmp_path):
    root = lotus_d.save_pretrained(tmp_path / "d")
    assert LotusModel.from_pretrained(root).mode == "direct"
    shutil.rmtree(root / "vae")
    (root / EMBEDS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"missing vae, {EMBEDS_FILE}"):
        LotusModel.from_pretrained(root)
    # a released diffusers pipeline: everything but the stored embedding, plus a text encoder
    release = tmp_path / "release"
    lotus_d.save_pretrained(release)
    (release / EMBEDS_FILE).unlink()
    (release / "text_encoder").mkdir()
    with pytest.raises(CheckpointError, match="compute_empty_prompt_embeds"):
        LotusModel.from_pretrained(release)
    with pytest.raises(CheckpointError, match="not found"):
        LotusModel.from_pretrained(tmp_path / "nope" / "deeper")
    (tmp_path / "corrupt").mkdir()
    lotus_d.save_pretrained(tmp_path / "corrupt")
    (tmp_path / "corrupt" / EMBEDS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        LotusModel.from_pretrained(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # not "no .bin file found"
    with pytest.raises(CheckpointError, match=r"missing unet/diffusion_pytorch_model.safetensors \(found: "):
        LotusModel.from_pretrained(tmp_path / "corrupt")
    # a part whose folder is there names the file it lacks, not the folder the message then lists as found
    (tmp_path / "corrupt" / "scheduler" / "scheduler_config.json").unlink()
    (tmp_path / "corrupt" / "vae" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing vae/config.json, scheduler/scheduler_config.json, "
                                              r"unet/diffusion_pytorch_model.safetensors \(found: "):
        LotusModel.from_pretrained(tmp_path / "corrupt")


def test_compute_empty_prompt_embeds_with_tiny_clip(tmp_path):
    """The empty prompt is tokenised without padding, as the public Lotus / SharpDepth code do: BOS + EOS only."""
    import json

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"),
                        model_max_length=77)
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=4, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                           num_attention_heads=4, max_position_embeddings=77)).eval()
    embeds = compute_empty_prompt_embeds(encoder, tok)
    assert embeds.shape == (1, 2, 32) and embeds.dtype == torch.float32
    with torch.no_grad():
        expected = encoder(torch.tensor([[tok.bos_token_id, tok.eos_token_id]]))[0]  # BOS, EOS by hand
    assert torch.allclose(embeds, expected)
    # a model built with it runs
    tiny = build_tiny_lotus()
    model = LotusModel(tiny.unet, tiny.vae, embeds)
    assert model.predict(_image(16, 24)).shape == (16, 24)


def test_hub_ids_and_dtype_names_checked_before_loading(tmp_path):
    """One hub-id rule (depthkit.checkpoints.is_hub_id) and one download; a bad dtype name fails before either."""
    from depthkit.sharpen.checkpoint import load_sharpdepth
    from depthkit.sharpen.model import SharpDepth

    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):  # conftest: offline, nothing in the hub cache
        LotusModel.from_pretrained("nobody/no-such-lotus")
    for not_hub in ("./nobody/x", "a/b/c", "~nobody/x", "no body/x"):
        with pytest.raises(CheckpointError, match="not found: no such directory"):
            LotusModel.from_pretrained(not_hub)
    for load in (LotusModel.from_pretrained, SharpDepth.from_pretrained, load_sharpdepth):
        with pytest.raises(ValueError, match="dtype 'fp8' is not supported"):
            load("nobody/no-such-lotus", dtype="fp8")


def test_masked_scale_shift_fallbacks():
    """The rules its docstring states: the fit of geometry.fit_scale_shift where that one has >= 2 pixels; a
    constant pred gives a pure shift; too few masked pixels fall back to all finite ones; fewer than 2 of those give
    s = 1 and the mean difference."""
    from depthkit.geometry import fit_scale_shift
    from depthkit.sharpen.normalize import masked_scale_shift

    rng = np.random.default_rng(0)
    pred = torch.from_numpy(rng.random((1, 1, 4, 5)))
    target = 3.0 * pred + 0.5
    mask = torch.zeros_like(pred, dtype=torch.bool)
    mask[..., :2, :] = True
    s, t = masked_scale_shift(pred, target, mask)
    s_ref, t_ref = fit_scale_shift(pred.numpy(), target.numpy(), mask.numpy())
    assert math.isclose(float(s), s_ref, rel_tol=1e-5) and math.isclose(float(t), t_ref, rel_tol=1e-5)
    s, t = masked_scale_shift(torch.full_like(pred, 2.0), target)
    assert float(s) == 1.0 and math.isclose(float(t), float(target.mean()) - 2.0, rel_tol=1e-5)
    one = torch.zeros_like(mask)
    one[0, 0, 0, 0] = True
    assert torch.allclose(torch.stack(masked_scale_shift(pred, target, one)), torch.tensor([[3.0], [0.5]]))
    # the fallback pixels can be named: the fit over them, not over the whole image
    wide = torch.zeros_like(mask)
    wide[..., 2:, :] = True
    garbage = torch.where(wide, target, torch.full_like(target, 50.0))
    s, t = masked_scale_shift(pred, garbage, one & False, fallback=wide)
    s_ref, t_ref = fit_scale_shift(pred.numpy(), garbage.numpy(), wide.numpy())
    assert math.isclose(float(s), s_ref, rel_tol=1e-5) and math.isclose(float(t), t_ref, rel_tol=1e-5)
    lone = torch.full_like(pred, float("nan"))
    lone[0, 0, 1, 1] = 2.0
    s, t = masked_scale_shift(lone, torch.full_like(pred, 7.0))
    assert float(s) == 1.0 and float(t) == 5.0


def test_image_to_tensor_takes_a_read_only_array_without_a_warning():
    """np.asarray of a PIL image is read-only; torch.from_numpy warns about (and could write into) such arrays."""
    import warnings

    from depthkit.sharpen.lotus import image_to_tensor

    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    image.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = image_to_tensor(image)
    assert x.shape == (1, 3, 4, 6)
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), [-1.0, 1 / 127.5 - 1, 2 / 127.5 - 1], rtol=1e-6)
