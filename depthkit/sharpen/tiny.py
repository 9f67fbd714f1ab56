"""Tiny, random-weight Lotus models built entirely in code (no hub): for tests, smoke runs and tiny training.

The parts are the stock diffusers ``UNet2DConditionModel`` and ``AutoencoderKL`` with small sizes, so every code
path is the one full-size Lotus takes. The layout is Stable Diffusion's in miniature, sized for a CPU:

- UNet: block_out_channels (32, 64) (``DownBlock2D`` + ``CrossAttnDownBlock2D``: self-attention only at the lowest
  resolution, as cheap as SD keeps it relative to the image), layers_per_block 1, cross_attention_dim 32,
  attention_head_dim 8, projection class embedding of the 4-dim task switch; in_channels 8 (generative, Lotus-G) or
  4 (direct, Lotus-D), out_channels 4.
- VAE: block_out_channels (16, 32, 64, 64), layers_per_block 1, latent channels 4, no mid-block attention:
  **downsample factor 8**, as SD's. With the UNet's one downsampling, ``resolution_multiple`` (training crops) is
  16; inference pads to a multiple of 8.
- empty-prompt embedding: random ``1 x 2 x 32`` (a stand-in for CLIP's unpadded BOS + EOS embedding; any fixed
  tensor works for a model trained with it).

:data:`TINY_V1_UNET` / :data:`TINY_V1_VAE` are the overrides that rebuild the earlier layout (attention at the
highest UNet level, a 4x VAE), whose cost grew quadratically with the pixels. ``benchmarks/results/sharpen_tiny.md``
times both side by side (one CPU thread, a 2-core machine at load ~10): both UNet passes of the current layout take
0.25 s at 320x240 and 1.4 s at 640x480 (the earlier layout 14.5 s and 244 s); the VAE (two encodes, two decodes)
1.7 s and 10.8 s.
"""

from __future__ import annotations

import torch

__all__ = ["tiny_unet_config", "tiny_vae_config", "build_tiny_lotus", "TINY_V1_UNET", "TINY_V1_VAE"]

TINY_V1_UNET = {"down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")}
"""Overrides of :func:`tiny_unet_config` giving the earlier tiny UNet (self-attention at the highest level)."""
TINY_V1_VAE = {"block_out_channels": (32, 64, 64), "norm_num_groups": 32,
               "down_block_types": ("DownEncoderBlock2D",) * 3, "up_block_types": ("UpDecoderBlock2D",) * 3}
"""Overrides of :func:`tiny_vae_config` giving the earlier tiny VAE (4x downsampling)."""


def tiny_unet_config(mode: str = "generative", latent_channels: int = 4, **overrides) -> dict:
    """Keyword arguments of a tiny Lotus ``UNet2DConditionModel`` (override any field)."""
    cfg = dict(
        sample_size=32,
        in_channels=2 * latent_channels if mode == "generative" else latent_channels,
        out_channels=latent_channels,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=4,
    )
    cfg.update(overrides)
    return cfg


def tiny_vae_config(**overrides) -> dict:
    """Keyword arguments of a tiny ``AutoencoderKL`` (downsample factor 2 ** (len(block_out_channels) - 1) = 8)."""
    cfg = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
        mid_block_add_attention=False,
    )
    cfg.update(overrides)
    return cfg


def build_tiny_lotus(mode: str = "generative", seed: int = 0, norm: str = "depth", unet: dict | None = None,
                     vae: dict | None = None, default_processing_resolution: int | None = None):
    """A random-weight tiny :class:`~depthkit.sharpen.lotus.LotusModel` (float32, CPU, eval mode).

    ``seed`` fixes every weight and the embedding without touching the global RNG; ``unet`` / ``vae`` override
    fields of :func:`tiny_unet_config` / :func:`tiny_vae_config`.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from depthkit.sharpen.lotus import LotusModel, check_lotus_mode

    check_lotus_mode(mode)  # before the configs below, which depend on it
    vae_cfg = tiny_vae_config(**(vae or {}))
    unet_cfg = tiny_unet_config(mode, vae_cfg["latent_channels"], **(unet or {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        vae_model = AutoencoderKL(**vae_cfg)
        unet_model = UNet2DConditionModel(**unet_cfg)
        embeds = torch.randn(1, 2, unet_cfg["cross_attention_dim"])
    model = LotusModel(unet_model, vae_model, embeds, mode=mode, norm=norm,
                       default_processing_resolution=default_processing_resolution)
    return model.eval()
