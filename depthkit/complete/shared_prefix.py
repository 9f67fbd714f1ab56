"""Shared-prefix attention: many suffix rows of the language model against ONE cached image prefix, without copies.

The engine (:mod:`depthkit.complete.engine`) asks many pixels of one image; every query shares the same prefix —
system turn + image tokens, up to ``<|vision_end|>`` — and differs only in a short suffix. This module is the part
that runs the model:

1. **Prefix once.** :meth:`SharedPrefixLM.encode_prefix` runs the stock model (vision tower with the SDIM depth
   embedding, then the language model) over the prefix once, ``logits_to_keep=1``, and keeps its K/V per layer as
   ONE copy (``Hkv x P x d``), held in a :class:`PrefixCache`.
2. **Suffix batches attend to the shared prefix without copying it.** :meth:`SharedPrefixLM.forward` runs the
   decoder layers itself (the stock modules: norms, projections, rotary, MLP — LoRA-wrapped projections work the
   same) over a left-padded batch of suffixes. Attention is split in two exact parts sharing one softmax: the scores
   against the prefix are one GEMM per KV head, ``(B*g*s) x d @ d x P`` with the prefix broadcast (never expanded
   per row), the scores against the row's own suffix keys are a small batched GEMM; the max/exp/sum are merged
   before the value products. Suffix K/V live in a :class:`SuffixCache` preallocated for the suffix plus the
   answer, so decoding steps write in place (an expanded ``DynamicCache`` would re-copy the whole prefix for every
   row at every step). In the last layer only the last position's query, attention and MLP are computed
   (``logits_to_keep=1``), and the LM head is applied to the requested token rows only (the 11 digit/point tokens
   under the answer grammar).

:meth:`SharedPrefixLM.bytes_per_row` estimates the working memory of one batch row (attention scores
``H x s x (P + s)`` float32, the suffix K/V buffers, MLP activations, the kept logits); the engine sizes its batches
with it, so memory does not grow with the number of queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from depthkit.complete.model import stock_model
from depthkit.complete.positions import prefix_position_ids

__all__ = ["PrefixCache", "SuffixCache", "SharedPrefixLM"]


@dataclass
class PrefixCache:
    """The encoded image prefix of one image.

    Attributes:
        keys, values: per decoder layer, ``Hkv x P x d`` (one copy, model dtype, model device).
        length: P, prefix tokens.
        next_pos: first free M-RoPE position after the prefix (index + rope delta).
        image_start: M-RoPE start position ``s`` of the image tokens (for ``pixel_reference="rope"``).
        resized_hw: (H', W') pixels, the size the vision tower saw.
        input_hw: (H, W) pixels of the input image.
        seconds: wall time of the prefix pass (processor + vision + language model).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int
    next_pos: int
    image_start: int
    resized_hw: tuple[int, int]
    input_hw: tuple[int, int]
    seconds: float = 0.0


@dataclass
class SuffixCache:
    """K/V of one batch of suffix rows, preallocated for the suffix plus the answer (decoding writes in place).

    Attributes:
        keys, values: per decoder layer, ``B x Hkv x capacity x d`` (model dtype, model device); positions
            ``[0, length)`` are written.
        valid: ``B x capacity`` bool, True where a real (not padding) token has been written.
        length: tokens written so far (the same for every row: rows are left-padded to one width).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        """Most suffix tokens the buffers hold."""
        return int(self.valid.shape[1])


class SharedPrefixLM:
    """Runs suffix batches of the language model against one cached prefix (see the module docstring).

    Args:
        model: an :class:`~depthkit.complete.model.SDIMModel` (or a stock Qwen2.5-VL model: no depth branch).
    """

    def __init__(self, model):
        self.model = model
        self.stock = stock_model(model)
        lm = self.stock.model.language_model
        cfg = lm.config
        if getattr(cfg, "use_sliding_window", False):
            raise ValueError("sliding-window attention (use_sliding_window=True) is not supported by the engine; the "
                             "released Qwen2.5-VL configs have it off.")
        self.lm = lm
        self.layers = list(lm.layers)
        attn = self.layers[0].self_attn
        self.num_heads = attn.num_heads
        self.num_kv_heads = attn.num_key_value_heads
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling
        self.hidden_size = cfg.hidden_size
        self.intermediate_size = cfg.intermediate_size
        self.vocab_size = cfg.vocab_size
        self.lm_head = self.stock.lm_head
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

        self._rotary = apply_rotary_pos_emb

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @torch.no_grad()
    def encode_prefix(self, inputs: dict, depth_inputs: dict | None) -> tuple[list, list, dict]:
        """Run the stock model over one prefix (B = 1); returns (keys, values, positions dict)."""
        ids = inputs["input_ids"]
        if ids.shape[0] != 1:
            raise ValueError(f"encode one prefix at a time; got a batch of {ids.shape[0]}.")
        kwargs = dict(inputs)
        kwargs.update(use_cache=True, logits_to_keep=1)
        if hasattr(self.model, "depth_branch"):
            out = self.model(**kwargs, **(depth_inputs or {}))
        else:
            out = self.model(**kwargs)
        cache = out.cache
        keys = [layer.keys[0].contiguous() for layer in cache.layers]
        values = [layer.values[0].contiguous() for layer in cache.layers]
        pos = prefix_position_ids(self.stock, ids, inputs["image_grid_thw"], inputs["mm_token_type_ids"])
        return keys, values, pos

    def new_cache(self, batch: int, capacity: int) -> SuffixCache:
        """Empty suffix K/V buffers for ``batch`` rows of up to ``capacity`` tokens."""
        shape = (batch, self.num_kv_heads, capacity, self.head_dim)
        kw = {"dtype": self.dtype, "device": self.device}
        return SuffixCache(keys=[torch.empty(shape, **kw) for _ in self.layers],
                           values=[torch.empty(shape, **kw) for _ in self.layers],
                           valid=torch.zeros(batch, capacity, dtype=torch.bool, device=self.device))

    def _attention(self, q, pk, pv, sk, sv, key_mask):
        """Exact softmax attention over [shared prefix ; own suffix] without expanding the prefix.

        q: B x H x s x d; pk, pv: Hkv x P x d; sk, sv: B x Hkv x L x d; key_mask: B x 1 x 1 x s x L bool.
        Returns B x s x H*d.
        """
        b, h, s, d = q.shape
        hkv = pk.shape[0]
        g = h // hkv
        p_len = pk.shape[1]
        qg = q.reshape(b, hkv, g * s, d)
        qp = qg.transpose(0, 1).reshape(hkv, b * g * s, d)
        sp = torch.matmul(qp, pk.transpose(-1, -2)).float().mul_(self.scaling)  # Hkv x (B g s) x P
        ss = torch.matmul(qg, sk.transpose(-1, -2)).float().mul_(self.scaling)  # B x Hkv x (g s) x L
        ss = ss.view(b, hkv, g, s, -1).masked_fill_(~key_mask, float("-inf")).view(b, hkv, g * s, -1)
        m = torch.maximum(sp.amax(-1).view(hkv, b, g * s).transpose(0, 1), ss.amax(-1))  # B x Hkv x gs
        sp = sp.view(hkv, b, g * s, p_len).sub_(m.transpose(0, 1).unsqueeze(-1)).exp_()
        ss = ss.sub_(m.unsqueeze(-1)).exp_()
        denom = sp.sum(-1).transpose(0, 1) + ss.sum(-1)  # B x Hkv x gs
        op = torch.matmul(sp.view(hkv, b * g * s, p_len).to(pv.dtype), pv).view(hkv, b, g * s, d).transpose(0, 1)
        os_ = torch.matmul(ss.to(sv.dtype), sv)
        out = (op.float() + os_.float()) / denom.unsqueeze(-1)
        return out.to(q.dtype).reshape(b, h, s, d).transpose(1, 2).reshape(b, s, h * d)

    @torch.no_grad()
    def forward(self, prefix: PrefixCache, cache: SuffixCache, ids: torch.Tensor, mask: torch.Tensor,
                positions: torch.Tensor, head_rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed ``ids`` (B x s, left-padded, ``mask`` 1 = real) at ``positions`` (3 x B x s) after the cached
        prefix and the suffix tokens already in ``cache``; appends their K/V to ``cache``.

        Returns (logits B x V' of the last position over ``head_rows`` (all V when None), last position's final
        hidden state B x D after the model's norm).
        """
        b, s = ids.shape
        start = cache.length
        if start + s > cache.capacity:
            raise RuntimeError(f"suffix cache holds {cache.capacity} tokens; {start + s} needed.")
        cache.valid[:, start:start + s] = mask.bool()
        cache.length = end = start + s
        valid = cache.valid[:, :end]
        causal = torch.arange(end, device=ids.device).view(1, -1) <= (start + torch.arange(s, device=ids.device)).view(
            -1, 1)
        key_mask = (valid.view(b, 1, end) & causal.view(1, s, end)).view(b, 1, 1, s, end)
        x = self.lm.embed_tokens(ids)
        cos, sin = self.lm.rotary_emb(x, positions)
        n_layers = len(self.layers)
        h, hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        for li, layer in enumerate(self.layers):
            attn = layer.self_attn
            hs = layer.input_layernorm(x)
            q = attn.q_proj(hs).view(b, s, h, d).transpose(1, 2)
            k = attn.k_proj(hs).view(b, s, hkv, d).transpose(1, 2)
            v = attn.v_proj(hs).view(b, s, hkv, d).transpose(1, 2)
            q, k = self._rotary(q, k, cos, sin)
            cache.keys[li][:, :, start:end] = k
            cache.values[li][:, :, start:end] = v
            km = key_mask
            if li == n_layers - 1 and s > 1:  # only the last position feeds the logits
                q, x, km = q[:, :, -1:], x[:, -1:], key_mask[..., -1:, :]
            o = self._attention(q, prefix.keys[li], prefix.values[li], cache.keys[li][:, :, :end],
                                cache.values[li][:, :, :end], km)
            x = x + attn.o_proj(o)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        hidden = self.lm.norm(x[:, -1])
        if head_rows is not None and len(head_rows) == 0:  # K/V only (e.g. extending the prefix)
            return hidden.new_zeros(b, 0), hidden
        if head_rows is None:
            logits = self.lm_head(hidden)
        else:
            weight = self.lm_head.weight[head_rows]
            bias = self.lm_head.bias[head_rows] if getattr(self.lm_head, "bias", None) is not None else None
            logits = torch.nn.functional.linear(hidden, weight, bias)
        return logits.float(), hidden

    def bytes_per_row(self, prefix_len: int, suffix_len: int, capacity: int, vocab_kept: int) -> int:
        """Estimated peak bytes one batch row needs in a suffix pass (see the module docstring); ``capacity`` is
        the suffix cache's size, ``vocab_kept`` the LM-head rows computed."""
        elem = torch.finfo(self.dtype).bits // 8
        keys = prefix_len + capacity
        scores = self.num_heads * suffix_len * keys * 4 * 2  # float32 scores + exp (transient)
        kv = len(self.layers) * 2 * self.num_kv_heads * capacity * self.head_dim * elem
        act = suffix_len * (6 * self.hidden_size + 3 * self.intermediate_size) * elem
        return int(scores + kv + act + 2 * vocab_kept * 4)

