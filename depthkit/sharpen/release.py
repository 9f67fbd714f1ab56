"""Write a diffusers pipeline folder in the layout SharpDepth and Lotus are released in, from models built in code.

For the importer's tests and the full-size readiness check (no model hub here): ``model_index.json``, ``unet/``,
``vae/``, ``scheduler/`` (DDIM, as released), ``text_encoder/`` (a small CLIP text model with the UNet's
cross-attention width, standing in for SD2's 1024-wide OpenCLIP) and ``tokenizer/`` (a CLIP BPE tokenizer with a
6-token vocabulary). :func:`depthkit.sharpen.importer.import_checkpoint` reads such a folder as it reads a release.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["SD2_UNET", "SD2_VAE", "tiny_clip_tokenizer", "small_clip_text_encoder", "write_release"]

SD2_UNET = dict(sample_size=96, in_channels=8, out_channels=4, layers_per_block=2,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                cross_attention_dim=1024, use_linear_projection=True, class_embed_type="projection",
                projection_class_embeddings_input_dim=4)
"""``UNet2DConditionModel`` arguments of the SD2-size Lotus-G / SharpDepth UNet (Stable Diffusion 2's UNet config with
8 input channels and the projection class embedding of the 4-dim task switch; ~866M parameters)."""
SD2_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=768,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
               block_out_channels=(128, 256, 512, 512), scaling_factor=0.18215)
"""``AutoencoderKL`` arguments of Stable Diffusion 2's VAE (8x downsampling, 4 latent channels)."""


def tiny_clip_tokenizer(folder):
    """A CLIP BPE tokenizer with the vocabulary ``<|startoftext|>, <|endoftext|>, a</w>, b</w>, a, b`` (its vocab
    and merges files are written into ``folder``)."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                         model_max_length=77)


def small_clip_text_encoder(hidden_size: int = 32, seed: int = 0):
    """A one-layer CLIP text model (vocabulary 6, ``hidden_size`` wide: the UNet's ``cross_attention_dim``)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    heads = 4 if hidden_size % 4 == 0 else 1
    return CLIPTextModel(CLIPTextConfig(vocab_size=6, hidden_size=hidden_size, intermediate_size=hidden_size + 5,
                                        num_hidden_layers=1, num_attention_heads=heads,
                                        max_position_embeddings=77)).eval()


def write_release(root, unet, vae, seed: int = 0, class_name: str = "SharpDepthPipeline") -> torch.Tensor:
    """Write ``unet`` and ``vae`` (diffusers models) with a small CLIP text encoder and tokenizer as a released
    pipeline folder ``root`` (created; must not exist). Returns the empty-prompt conditioning the public code would
    compute, built by hand: ``""`` tokenised without padding is the tokenizer's BOS and EOS ids, a
    ``1 x 2 x cross_attention_dim`` embedding."""
    from diffusers import DDIMScheduler

    from depthkit.sharpen.lotus import default_scheduler_config

    root = Path(root)
    root.mkdir(parents=True)
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    DDIMScheduler(**default_scheduler_config()).save_pretrained(root / "scheduler")
    encoder = small_clip_text_encoder(int(unet.config.cross_attention_dim), seed)
    encoder.save_pretrained(root / "text_encoder")
    tok = tiny_clip_tokenizer(root.parent / f".{root.name}_tokenizer_files")
    tok.save_pretrained(root / "tokenizer")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": class_name, "_diffusers_version": "0.30.0", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]}))
    with torch.no_grad():
        return encoder(torch.tensor([[tok.bos_token_id, tok.eos_token_id]]))[0]
