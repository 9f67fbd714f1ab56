"""Self-attention over pooled keys: a depthkit speed switch for the sharpener's UNet (inference only).

A UNet's spatial self-attention compares every token of its h x w grid with every other, so its cost grows with
(h·w)². With :attr:`~depthkit.sharpen.config.SharpDepthConfig.self_attention_max_keys` > 0, a self-attention whose
grid has more than that many tokens reads its keys and values from the grid average-pooled over p x p cells, p the
smallest integer for which the pooled grid has at most that many cells; its queries stay one per token, so the output
keeps the grid's resolution. A pooled key's score is raised by log(n), n the tokens its cell covers (p², fewer at the
ragged bottom and right edges), so a cell of n equal tokens weighs exactly what those n tokens weighed: on a grid
that is constant within every cell the pooled attention equals the exact one (tested). Cross-attention (the text
prompt's keys) and grids within the limit are never changed.

Keys and values are linear in the tokens (``to_k``, ``to_v``), so pooling the tokens before the projections gives
the pooled keys and values; the projections then run on a p²-th of the tokens.

This is not in SharpDepth's paper or code (both attend exactly); 0, the default, attends exactly.
:func:`pooled_self_attention` installs it on a UNet for the length of a ``with`` block. It changes the UNet's
modules while the block runs, so one UNet must not run two such blocks at once (from two threads).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

__all__ = ["key_pool_factor", "pooled_keys", "PooledKeysAttention", "pooled_self_attention"]


def key_pool_factor(height: int, width: int, max_keys: int) -> int:
    """The smallest integer p >= 1 for which a ``height x width`` token grid pooled over p x p cells (ragged cells
    kept at the bottom and right) has at most ``max_keys`` cells; 1 when ``max_keys`` is 0 (off) or the grid fits."""
    if height < 1 or width < 1:
        raise ValueError(f"a token grid needs at least one row and column; received {height} x {width}.")
    if max_keys < 0:
        raise ValueError(f"max_keys must be >= 0 (0 = exact attention); received {max_keys}.")
    if max_keys == 0 or height * width <= max_keys:
        return 1
    p = max(2, math.isqrt(height * width // max_keys))
    while math.ceil(height / p) * math.ceil(width / p) > max_keys:
        p += 1
    return p


def pooled_keys(tokens: torch.Tensor, grid: tuple[int, int], p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens`` (``B x h·w x C``, row-major over ``grid`` = (h, w)) averaged over p x p cells.

    Returns ``(pooled B x h'·w' x C, counts h'·w')``: h' = ceil(h / p), w' = ceil(w / p); ``counts`` holds the
    number of tokens each cell averages (p², fewer in the ragged last row and column of cells)."""
    b, n, c = tokens.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"pooled_keys: {n} tokens do not fill a {h} x {w} grid.")
    x = tokens.float().transpose(1, 2).reshape(b, c, h, w)  # sums of p² tokens in float32, whatever the model's dtype
    pad = (0, -w % p, 0, -h % p)
    sums = F.avg_pool2d(F.pad(x, pad), p, divisor_override=1)
    ones = F.pad(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device), pad)
    counts = F.avg_pool2d(ones, p, divisor_override=1)
    return (sums / counts).flatten(2).transpose(1, 2).to(tokens.dtype), counts.flatten()


class PooledKeysAttention:
    """A diffusers attention processor: self-attention with keys and values from the token grid pooled to at most
    ``max_keys`` cells (module docstring); anything else (cross-attention, a grid within the limit) goes to
    ``exact``, the processor it stands in for (default diffusers' ``AttnProcessor2_0``). :attr:`grid` is the (h, w)
    of the tokens of the next call, set by a forward pre-hook of the transformer block's owner
    (:func:`pooled_self_attention`)."""

    def __init__(self, max_keys: int, exact=None):
        from diffusers.models.attention_processor import AttnProcessor2_0

        if max_keys < 1:
            raise ValueError(f"PooledKeysAttention needs max_keys >= 1; received {max_keys}.")
        self.max_keys = max_keys
        self.grid: tuple[int, int] | None = None
        self.exact = AttnProcessor2_0() if exact is None else exact

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        grid = self.grid
        p = 1 if (encoder_hidden_states is not None or grid is None or hidden_states.ndim != 3) \
            else key_pool_factor(*grid, self.max_keys)
        if p == 1:
            return self.exact(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if attention_mask is not None:
            raise ValueError(f"self_attention_max_keys: pooled keys cannot take an attention mask (received one of "
                             f"shape {tuple(attention_mask.shape)}); run with self_attention_max_keys 0 (exact "
                             "attention) for a UNet called with one.")
        b, n, _ = hidden_states.shape
        tokens, counts = pooled_keys(hidden_states, grid, p)
        heads = attn.heads
        q, k, v = attn.to_q(hidden_states), attn.to_k(tokens), attn.to_v(tokens)
        d = q.shape[-1] // heads
        q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
        bias = None
        if bool((counts != counts[0]).any()):  # ragged cells; an equal bias on every key changes nothing
            bias = counts.log().to(q.dtype).view(1, 1, 1, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0, is_causal=False)
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(b, n, heads * d).to(q.dtype)))
        return out / attn.rescale_output_factor


_EXACT_PROCESSORS = ("AttnProcessor2_0", "AttnProcessor")
"""The processors (diffusers' plain attention) that :class:`PooledKeysAttention` computes the pooled form of."""


def _supported(attn) -> str | None:
    """Why ``attn`` (a diffusers ``Attention``) cannot take pooled keys, or None when it can."""
    for name in ("spatial_norm", "group_norm", "norm_q", "norm_k", "added_kv_proj_dim"):
        if getattr(attn, name, None) is not None:
            return f"it has {name} set"
    if getattr(attn, "residual_connection", False):
        return "it adds a residual connection"
    if not getattr(attn, "scale_qk", True):
        return "it does not scale its scores by 1/sqrt(head size) (scale_qk=False)"
    if getattr(attn, "inner_kv_dim", attn.inner_dim) != attn.inner_dim:
        return "its keys and values have other heads than its queries (kv_heads)"
    kind = type(attn.processor).__name__
    if kind not in _EXACT_PROCESSORS:
        return f"its processor is {kind}, not one of diffusers' plain {' or '.join(_EXACT_PROCESSORS)}"
    return None


@contextmanager
def pooled_self_attention(unet, max_keys: int):
    """Within the block, ``unet``'s spatial self-attentions (``attn1`` of each ``Transformer2DModel``'s blocks) read
    at most ``max_keys`` pooled keys (:class:`PooledKeysAttention`); on leaving it, their own processors are back.
    ``max_keys`` 0: nothing changes. A UNet with none, or with an attention the switch cannot take (a norm inside
    the attention, a residual connection), is a ValueError that says so."""
    if max_keys < 0:
        raise ValueError(f"self_attention_max_keys must be >= 0 (0 = exact attention); received {max_keys}.")
    if max_keys == 0:
        yield
        return
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    owners = [m for m in unet.modules() if isinstance(m, Transformer2DModel)]
    attns = [block.attn1 for owner in owners for block in owner.transformer_blocks]
    if not attns:
        raise ValueError("self_attention_max_keys needs a UNet with spatial transformer blocks; this one has none. "
                         "Use 0 (exact attention).")
    for owner in owners:
        if not owner.is_input_continuous:
            raise ValueError("self_attention_max_keys cannot pool this UNet's self-attention: a transformer block "
                             "takes patches or vector embeddings, not a feature map's pixels. Use 0 (exact attention).")
    for attn in attns:
        why = _supported(attn)
        if why is not None:
            raise ValueError(f"self_attention_max_keys cannot pool this UNet's self-attention: {why}. Use 0 (exact "
                             "attention).")
    saved = [(attn, attn.processor) for attn in attns]
    hooks = []
    try:
        for owner in owners:
            processors = [PooledKeysAttention(max_keys, exact=block.attn1.processor)
                          for block in owner.transformer_blocks]

            def note_grid(_module, args, kwargs, processors=processors):
                x = args[0] if args else kwargs["hidden_states"]
                for processor in processors:
                    processor.grid = tuple(x.shape[-2:]) if x.ndim == 4 else None

            hooks.append(owner.register_forward_pre_hook(note_grid, with_kwargs=True))
            for block, processor in zip(owner.transformer_blocks, processors):
                block.attn1.set_processor(processor)
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for attn, processor in saved:
            attn.set_processor(processor)
