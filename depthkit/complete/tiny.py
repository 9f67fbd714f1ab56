"""Tiny, random-weight Qwen2.5-VL models for tests, smoke runs and ``depthkit init-checkpoint --tiny``.

The model is the stock ``transformers.Qwen2_5_VLForConditionalGeneration`` (never a subclass: see SPEC section 3),
only with small sizes, so every code path (processor → vision tower → M-RoPE → decoder, LoRA, saving) is the one
the real 3B model takes. Defaults:

- text: hidden 64, 2 layers, 4 heads (head_dim 16) with 2 KV heads, MLP 128, ``mrope_section`` [2, 3, 3] — it must
  sum to head_dim / 2, which :func:`tiny_qwen2_5_vl_config` checks;
- vision: depth 2, hidden 32, 2 heads, MLP 64, patch 14, temporal patch 2, spatial merge 2 (Qwen's), window 56,
  last block full attention, ``out_hidden_size`` = text hidden;
- token ids (image/video/vision start/end, eos, pad) read from the tokenizer, never hard-coded.

A 56x56 image is 16 patches → 4 image tokens; the whole model has about 260k parameters (with the
~800-token offline tokenizer; most are in the embeddings).
"""

from __future__ import annotations

__all__ = ["tiny_qwen2_5_vl_config", "build_tiny_qwen2_5_vl", "token_ids_from_tokenizer", "build_tiny_base",
           "TINY_MIN_PIXELS", "TINY_MAX_PIXELS"]

TINY_MIN_PIXELS = 28 * 28
TINY_MAX_PIXELS = 168 * 168
"""Processor resize bounds of the tiny models (pixels, H*W)."""


def token_ids_from_tokenizer(tokenizer) -> dict:
    """The Qwen2.5-VL config token ids as this tokenizer numbers them."""
    ids = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    out = {}
    for key, token in ids.items():
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token!r}; use a Qwen2.5-VL tokenizer (or build_offline_tokenizer()).")
        out[key] = int(tid)
    out["eos_token_id"] = int(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    out["pad_token_id"] = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else out["eos_token_id"])
    out["bos_token_id"] = int(tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    return out


def tiny_qwen2_5_vl_config(vocab_size: int, token_ids: dict | None = None, text: dict | None = None,
                           vision: dict | None = None, **overrides):
    """A small ``Qwen2_5_VLConfig``.

    Args:
        vocab_size: ``len(tokenizer)``.
        token_ids: from :func:`token_ids_from_tokenizer`; without it Qwen's released ids are kept (which only fit
            the real tokenizer).
        text, vision: overrides of the text / vision sub-config fields (e.g. ``text={"num_hidden_layers": 4}``).
        overrides: top-level config fields (e.g. ``tie_word_embeddings=True``).
    """
    from transformers import Qwen2_5_VLConfig

    token_ids = dict(token_ids or {})
    text_cfg = dict(
        vocab_size=int(vocab_size),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
    )
    for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
        if key in token_ids:
            text_cfg[key] = token_ids.pop(key)
    text_cfg.update(text or {})
    hidden = text_cfg["hidden_size"]
    heads = text_cfg["num_attention_heads"]
    if hidden % heads:
        raise ValueError(f"text hidden_size={hidden} must be divisible by num_attention_heads={heads}.")
    head_dim = text_cfg.get("head_dim") or hidden // heads
    section = text_cfg["rope_parameters"].get("mrope_section")
    if section is None or sum(section) != head_dim // 2:
        raise ValueError(
            f"mrope_section={section} must sum to head_dim/2={head_dim // 2} (head_dim={head_dim}); e.g. "
            f"[{head_dim // 2 - 2 * (3 * head_dim // 16)}, {3 * head_dim // 16}, {3 * head_dim // 16}]."
        )
    vision_cfg = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        in_channels=3,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        window_size=56,
        fullatt_block_indexes=[1],
        out_hidden_size=hidden,
    )
    vision_cfg.update(vision or {})
    return Qwen2_5_VLConfig(text_config=text_cfg, vision_config=vision_cfg, **token_ids, **overrides)


def build_tiny_qwen2_5_vl(tokenizer, seed: int = 0, text: dict | None = None, vision: dict | None = None,
                          **overrides):
    """A random-weight stock ``Qwen2_5_VLForConditionalGeneration`` matched to ``tokenizer``, fp32, eval mode.

    Same ``seed`` → bit-identical weights. ``text`` / ``vision`` / ``overrides`` as in :func:`tiny_qwen2_5_vl_config`.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = tiny_qwen2_5_vl_config(len(tokenizer), token_ids_from_tokenizer(tokenizer), text=text, vision=vision,
                                    **overrides)
    # Seed a private generator state: the global RNG is restored so callers' randomness is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    return model.eval()


def build_tiny_base(tiny=None, seed: int = 0, min_pixels: int | None = None, max_pixels: int | None = None):
    """``(model, processor)``: a random-weight stock Qwen2.5-VL at the sizes of ``tiny``
    (:class:`depthkit.complete.recipe.TinyModelConfig`, defaults when None) with the offline tokenizer."""
    from depthkit.complete.processor import build_tiny_processor
    from depthkit.complete.recipe import TinyModelConfig
    from depthkit.complete.tokenizer import build_offline_tokenizer

    tiny = tiny or TinyModelConfig()
    tokenizer = build_offline_tokenizer()
    if tiny.vocab_size is not None and tiny.vocab_size < len(tokenizer):
        raise ValueError(f"model.tiny.vocab_size={tiny.vocab_size} is smaller than the offline tokenizer "
                         f"({len(tokenizer)} tokens); leave it null or make it larger.")
    processor = build_tiny_processor(tokenizer, min_pixels=min_pixels or TINY_MIN_PIXELS,
                                     max_pixels=max_pixels or TINY_MAX_PIXELS)
    model = build_tiny_qwen2_5_vl(tokenizer, seed=seed, text=tiny.text_overrides(), vision=tiny.vision_overrides(),
                                  tie_word_embeddings=tiny.tie_word_embeddings)
    return model, processor
