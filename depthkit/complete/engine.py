"""The stage-1 inference engine: one image prefix, many per-pixel suffixes, digits-only decoding.

The paper asks the VLM one pixel at a time (``generate()`` over the whole conversation per pixel: 0.327 FPS, 46 GB).
Every query of an image shares the same prefix — system turn + image tokens, up to ``<|vision_end|>`` — and its
answer is a fixed sentence around one number. The engine exploits both:

1. **Prefix once.** :meth:`SharedPrefixLM.encode_prefix` runs the stock model (vision tower with the SDIM depth
   embedding, then the language model) over the prefix once, ``logits_to_keep=1``, and keeps its K/V per layer as
   ONE copy (``Hkv x P x d``).
2. **Suffix batches attend to the shared prefix without copying it.** :meth:`SharedPrefixLM.forward` runs the
   decoder layers itself (the stock modules: norms, projections, rotary, MLP — LoRA-wrapped projections work the
   same) over a left-padded batch of suffixes. Attention is split in two exact parts sharing one softmax: the scores
   against the prefix are one GEMM per KV head, ``(B*g*s) x d @ d x P`` with the prefix broadcast (never expanded
   per row), the scores against the row's own suffix keys are a small batched GEMM; the max/exp/sum are merged
   before the value products. Suffix K/V live in buffers preallocated for the suffix plus the answer, so decoding
   steps write in place (the prototype's expanded ``DynamicCache`` re-copied the whole prefix for every row at every
   step, which made bigger batches slower). In the last layer only the last position's query, attention and MLP
   are computed (``logits_to_keep=1``); and the LM head is applied to the allowed tokens' rows only. Tokens that
   every suffix of a call starts with (the mask sentence, the question and ``The current pixel is at (`` with text
   coordinates: the prompt puts the coordinates last for this) are computed once and
   appended to the prefix cache — exact, since they see the same context at the same positions in every query.
3. **Forced template, digits only.** The suffix is the query turn plus the assistant header plus the answer's fixed
   opening ``"The pixel is "`` (:data:`depthkit.complete.prompts.ANSWER_PREFIX`): those tokens are fed in the
   suffix pass, not decoded. Then only the number is decoded, under
   :class:`~depthkit.complete.decoding.AnswerGrammar`: 1 to
   ``max_int_digits`` (3) integer digits, the point, exactly ``frac_digits`` (3) decimals — the ``{y:.3f}`` format
   of the prompts for depths up to 300 m (leading zeros are not forbidden; ``"007.5"`` would read as 7.5). The loop
   stops after the last decimal, so the closing ``" meters away from the camera."`` is never generated. At most 7
   tokens, 4 to 6 decoding steps after the suffix pass.

Greedy answers are the same tokens as ``generate()``. :func:`~depthkit.complete.decoding.naive_answers` is that
reference — processor plus ``SDIMModel.generate`` per pixel — and ``AnswerConstraint`` is the same template + grammar
as a ``LogitsProcessor`` (both in :mod:`depthkit.complete.decoding`, re-exported here),
so for any model (a random one included) constrained ``generate()`` and the engine must agree token for token. With
``decode="free"`` the engine decodes the whole answer greedily over the full vocabulary (up to ``max_new_tokens``,
stopping at ``<|im_end|>``) and parses it, which must equal plain unconstrained ``generate()``; for a model that
writes the template, free and constrained decoding give the same number. The tests check all three.

**Readouts.** ``readout="text"`` decodes digits as above. ``readout="residual_head"`` needs no decoding loop: one
suffix pass (query turn + assistant header, without the forced answer prefix) gives the last token's final hidden
state (after the model's final norm), which :class:`depthkit.complete.readout.ResidualHead` maps to a bounded
correction of the prompt prior.

**Confidence** (text readout) from the digit distributions along the greedy path, renormalised over the allowed
tokens. With ``y`` the decoded metres, each decoded position k contributes an expected error ``e_k``: for a digit
with place value ``v``, ``v * sum_d p(d) |d - d*|``; the probability of choosing differently between digit and point
(which would change the order of magnitude) counts as an error of ``y``. ``sigma = sum_k e_k`` (metres) and
``confidence = exp(-sigma / (tolerance * y))`` in [0, 1]: 1 when every choice is certain, ``1/e`` when the expected
error is ``tolerance`` (default 10 %) of the depth. A forced choice (the point after 3 integer digits) is certain.
The residual head has no distribution: its answers get confidence 1.

**Memory** is bounded for any image: the prefix is one copy; the batch size is ``min(batch_size, budget / bytes per
row)`` with the per-row estimate covering attention scores (``H x s x (P + s)`` float32), the suffix K/V buffers,
MLP activations and the kept logits; queries run in batches of that size, so memory does not grow with their
number. Queries are sorted by suffix length to keep left padding small; identical suffixes are answered once. The
prefix itself is one copy whose size follows the processor's ``max_pixels`` (image tokens).

**Measured** (``benchmarks/engine.py --config bench``: the SPEC prototype's size, random weights, 448x448 image,
274-token prefix, ~50-token suffixes, 256 pixels, 1 thread of a 2-core CPU shared with other jobs): naive
``generate()`` 1.9 s/pixel; the prototype's expanded-``DynamicCache`` batch 71-118 ms/pixel; the engine
30-49 ms/pixel — 38x to 63x faster than naive with identical answers, the spread following the machine's load;
1.05x the FLOP floor (one prefix pass + suffix and answer tokens at this CPU's GEMM speed) at the lowest load.
Results: ``benchmarks/results/engine_*.md``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from depthkit.complete import prompts
from depthkit.complete.decoding import AnswerConstraint, AnswerGrammar, answer_confidence, naive_answers
from depthkit.complete.positions import pixel_grid_position, prefix_position_ids, suffix_position_ids

__all__ = [
    "DECODE_MODES",
    "AnswerGrammar",
    "AnswerConstraint",
    "PrefixCache",
    "SharedPrefixLM",
    "EngineAnswers",
    "CompletionEngine",
    "answer_confidence",
    "naive_answers",
]

DECODE_MODES = ("constrained", "free")


# --------------------------------------------------------------------------------------------------------------------
# Shared-prefix language model


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


def _stock(model):
    """The stock Qwen2_5_VLForConditionalGeneration inside an SDIMModel / PeftModel / itself."""
    base = getattr(model, "base", model) if hasattr(model, "depth_branch") else model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    if not (hasattr(base, "model") and hasattr(base.model, "language_model") and hasattr(base, "lm_head")):
        raise TypeError(f"{type(model).__name__} is not a Qwen2.5-VL model (an SDIMModel, a PeftModel around a "
                        "Qwen2_5_VLForConditionalGeneration, or one itself).")
    return base


class SharedPrefixLM:
    """Runs suffix batches of the language model against one cached prefix (see the module docstring).

    Args:
        model: an :class:`~depthkit.complete.model.SDIMModel` (or a stock Qwen2.5-VL model: no depth branch).
    """

    def __init__(self, model):
        self.model = model
        self.stock = _stock(model)
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
        cache = out.past_key_values
        keys = [layer.keys[0].contiguous() for layer in cache.layers]
        values = [layer.values[0].contiguous() for layer in cache.layers]
        pos = prefix_position_ids(self.stock, ids, inputs["image_grid_thw"], inputs["mm_token_type_ids"])
        return keys, values, pos

    def new_cache(self, batch: int, capacity: int) -> dict:
        """Suffix K/V buffers: per layer ``B x Hkv x capacity x d``, and a key-validity mask ``B x capacity``."""
        shape = (batch, self.num_kv_heads, capacity, self.head_dim)
        kw = {"dtype": self.dtype, "device": self.device}
        return {
            "k": [torch.empty(shape, **kw) for _ in self.layers],
            "v": [torch.empty(shape, **kw) for _ in self.layers],
            "valid": torch.zeros(batch, capacity, dtype=torch.bool, device=self.device),
            "length": 0,
        }

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
    def forward(self, prefix: PrefixCache, cache: dict, ids: torch.Tensor, mask: torch.Tensor,
                positions: torch.Tensor, head_rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed ``ids`` (B x s, left-padded, ``mask`` 1 = real) at ``positions`` (3 x B x s) after the cached
        prefix and the suffix tokens already in ``cache``; appends their K/V to ``cache``.

        Returns (logits B x V' of the last position over ``head_rows`` (all V when None), last position's final
        hidden state B x D after the model's norm).
        """
        b, s = ids.shape
        start = cache["length"]
        if start + s > cache["valid"].shape[1]:
            raise RuntimeError(f"suffix cache holds {cache['valid'].shape[1]} tokens; {start + s} needed.")
        cache["valid"][:, start:start + s] = mask.bool()
        cache["length"] = end = start + s
        valid = cache["valid"][:, :end]
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
            cache["k"][li][:, :, start:end] = k
            cache["v"][li][:, :, start:end] = v
            km = key_mask
            if li == n_layers - 1 and s > 1:  # only the last position feeds the logits
                q, x, km = q[:, :, -1:], x[:, -1:], key_mask[..., -1:, :]
            o = self._attention(q, prefix.keys[li], prefix.values[li], cache["k"][li][:, :, :end],
                                cache["v"][li][:, :, :end], km)
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
        """Estimated peak bytes one batch row needs in a suffix pass (see the module docstring)."""
        elem = torch.finfo(self.dtype).bits // 8
        keys = prefix_len + capacity
        scores = self.num_heads * suffix_len * keys * 4 * 2  # float32 scores + exp (transient)
        kv = len(self.layers) * 2 * self.num_kv_heads * capacity * self.head_dim * elem
        act = suffix_len * (6 * self.hidden_size + 3 * self.intermediate_size) * elem
        return int(scores + kv + act + 2 * vocab_kept * 4)


# --------------------------------------------------------------------------------------------------------------------
# The engine


@dataclass
class EngineAnswers:
    """Answers for a list of queried pixels (input order).

    Attributes:
        values: N float32 metres, clipped to [0.001, 300]; NaN where the answer could not be read.
        confidence: N float32 in [0, 1] (0 where unreadable).
        ok: N bool, False where the answer could not be read (counted, never raised).
        texts: N decoded answer strings (the number for constrained decoding, the whole answer for free decoding).
        stats: timings (s) and counts: ``prefix_seconds``, ``suffix_seconds``, ``n_queries``, ``n_unique``,
            ``n_batches``, ``batch_size``, ``n_unparseable``, ``shared_suffix_tokens`` (common leading suffix
            tokens moved into the prefix), ``prefix_tokens`` (including those).
    """

    values: np.ndarray
    confidence: np.ndarray
    ok: np.ndarray
    texts: list[str]
    stats: dict = field(default_factory=dict)


class CompletionEngine:
    """Answers per-pixel depth queries of one image with one shared prefix (see the module docstring).

    Args:
        model: :class:`~depthkit.complete.model.SDIMModel` in eval mode (or a stock Qwen2.5-VL model: RGB only).
        processor: the matching :class:`~depthkit.complete.processor.SDIMProcessor`.
        prompt_config: :class:`~depthkit.complete.prompts.PromptConfig` (``pixel_reference``, ``prompt_prior``).
        readout: ``"text"`` (decode digits) or ``"residual_head"`` (needs ``residual_head``).
        residual_head: a :class:`~depthkit.complete.readout.ResidualHead` for ``readout="residual_head"``.
        batch_size: most suffixes per batch (the memory budget may lower it).
        memory_budget_mb: bound on the suffix batches' working memory (MiB), besides weights and the prefix.
        decode: ``"constrained"`` (forced template, digits only; default) or ``"free"`` (greedy, full vocabulary).
        max_new_tokens: answer length limit for ``decode="free"``.
        confidence_tolerance: relative error that maps to confidence 1/e.
        max_int_digits, frac_digits: the number format (3 and 3 for the ``{y:.3f}`` prompts up to 300 m).
        sdim_config: depth-feature settings (default: the model's own ``sdim_config``).
    """

    def __init__(self, model, processor, prompt_config: prompts.PromptConfig | None = None, readout: str = "text",
                 residual_head=None, batch_size: int = 64, memory_budget_mb: float = 1024.0,
                 decode: str = "constrained", max_new_tokens: int = 24, confidence_tolerance: float = 0.1,
                 max_int_digits: int = 3, frac_digits: int = 3):
        if readout not in prompts.READOUTS:
            raise ValueError(f"readout={readout!r} is not one of {prompts.READOUTS}.")
        if decode not in DECODE_MODES:
            raise ValueError(f"decode={decode!r} is not one of {DECODE_MODES}.")
        if readout == "residual_head" and residual_head is None:
            raise ValueError("readout='residual_head' needs residual_head= (a trained ResidualHead, from the "
                             "checkpoint's complete/ folder).")
        if readout == "residual_head" and (prompt_config or prompts.PromptConfig()).prompt_prior == "none":
            raise ValueError("readout='residual_head' corrects the prompt prior, so prompt_prior must be 'nearest' "
                             "or 'guided'; got 'none'.")
        if batch_size < 1 or not memory_budget_mb > 0:
            raise ValueError(f"need batch_size >= 1 and memory_budget_mb > 0; got {batch_size}, {memory_budget_mb}.")
        if not confidence_tolerance > 0 or max_new_tokens < 1:
            raise ValueError(f"need confidence_tolerance > 0 and max_new_tokens >= 1; got {confidence_tolerance}, "
                             f"{max_new_tokens}.")
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.prompt_config = prompt_config or prompts.PromptConfig()
        self.readout = readout
        self.residual_head = residual_head
        self.batch_size = int(batch_size)
        self.memory_budget = float(memory_budget_mb) * 2**20
        self.decode = decode
        self.max_new_tokens = int(max_new_tokens)
        self.tolerance = float(confidence_tolerance)
        self.grammar = AnswerGrammar(self.tokenizer, max_int_digits, frac_digits)
        self.lm = SharedPrefixLM(model)
        self.forced_ids = self.tokenizer(prompts.ANSWER_PREFIX, add_special_tokens=False).input_ids
        self.eos_id = int(self.tokenizer.convert_tokens_to_ids(prompts.END_OF_TURN))
        geometry = processor.image_processor
        self.token_pixels = int(geometry.patch_size) * int(geometry.merge_size)

    # ---- prefix ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, image: np.ndarray, sparse: np.ndarray | None) -> PrefixCache:
        """Process the image and its sparse depth (HxW metres, 0 = missing; None = RGB only) and run the prefix."""
        from depthkit.complete.model import prepare_depth_inputs

        start = time.perf_counter()
        image = np.asarray(image)
        out = self.processor(images=[image], text=[prompts.chat_prefix_text()], return_tensors="pt")
        inputs = {k: v.to(self.lm.device) for k, v in out.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.lm.dtype)
        depth_inputs = None
        if sparse is not None and hasattr(self.model, "depth_branch"):
            config = self.model.sdim_config
            depth_inputs = prepare_depth_inputs(sparse, out["image_grid_thw"], out["pixel_values"], self.processor,
                                                config)
            depth_inputs = {k: v.to(self.lm.device) for k, v in depth_inputs.items()}
        keys, values, pos = self.lm.encode_prefix(inputs, depth_inputs)
        grid = out["image_grid_thw"][0].tolist()
        patch = int(self.processor.image_processor.patch_size)
        return PrefixCache(keys=keys, values=values, length=int(out["input_ids"].shape[1]),
                           next_pos=int(pos["next_pos"][0]), image_start=int(pos["image_start"][0][0]),
                           resized_hw=(grid[1] * patch, grid[2] * patch), input_hw=tuple(image.shape[:2]),
                           seconds=time.perf_counter() - start)

    # ---- queries -----------------------------------------------------------------------------------------------

    def query_texts(self, cols: np.ndarray, rows: np.ndarray, priors: np.ndarray | None) -> list[str]:
        """User text of each query (mask 0: queried pixels are never measured); (cols, rows) in resized pixels."""
        cfg = self.prompt_config
        texts = []
        for i, (x, y) in enumerate(zip(cols.tolist(), rows.tolist())):
            prior = None if cfg.prompt_prior == "none" else float(priors[i])
            texts.append(prompts.query_text(0, (x, y) if cfg.pixel_reference == "text" else None, prior=prior, config=cfg))
        return texts

    def _suffix_ids(self, texts: list[str]) -> list[list[int]]:
        forced = self.forced_ids if self.readout == "text" and self.decode == "constrained" else []
        if not texts:
            return []
        enc = self.tokenizer([prompts.chat_suffix_text(t) for t in texts], add_special_tokens=False).input_ids
        return [list(e) + forced for e in enc]

    @torch.no_grad()
    def answer(self, prefix: PrefixCache, rows: np.ndarray, cols: np.ndarray,
               priors: np.ndarray | None = None) -> EngineAnswers:
        """Answer queries at input-resolution pixels (``rows``, ``cols``: int arrays of equal length N).

        ``priors`` (N metres > 0) is required when ``prompt_prior != "none"`` (and for the residual head).
        Pixels are mapped into the resized frame (:func:`~depthkit.complete.processor.map_to_resized`); queries
        whose prompts coincide are answered once.
        """
        from depthkit.complete.processor import map_to_resized

        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        cols = np.asarray(cols, dtype=np.int64).reshape(-1)
        n = rows.size
        if cols.size != n:
            raise ValueError(f"rows and cols must have the same length; got {rows.size} and {cols.size}.")
        h, w = prefix.input_hw
        if n and (rows.min() < 0 or cols.min() < 0 or rows.max() >= h or cols.max() >= w):
            raise ValueError(f"query pixels must lie inside the {h}x{w} image (rows 0..{h - 1}, cols 0..{w - 1}).")
        needs_prior = self.prompt_config.prompt_prior != "none"
        if needs_prior:
            if priors is None:
                raise ValueError(f"prompt_prior={self.prompt_config.prompt_prior!r} needs priors= (N metres > 0).")
            priors = np.asarray(priors, dtype=np.float64).reshape(-1)
            if priors.size != n or not (np.isfinite(priors).all() and (priors > 0).all()):
                raise ValueError(f"priors must be {n} finite values > 0 metres; got {priors.size} values.")
        start = time.perf_counter()
        rr, cc = map_to_resized(rows, cols, (h, w), prefix.resized_hw)
        texts = self.query_texts(cc, rr, priors)
        if self.prompt_config.pixel_reference == "rope":
            keys = [(t, int(y), int(x)) for t, y, x in zip(texts, rr, cc)]
        else:
            keys = texts
        unique: dict = {}
        inverse = np.array([unique.setdefault(k, len(unique)) for k in keys], dtype=np.int64)
        first = np.zeros(len(unique), dtype=np.int64)
        first[inverse[::-1]] = np.arange(n)[::-1]
        u_texts = [texts[i] for i in first]
        ids = self._suffix_ids(u_texts)
        hw = pixel_grid_position(rr[first], cc[first], prefix.image_start, self.token_pixels)
        u_prior = priors[first] if needs_prior else None
        shared = 0
        if self.prompt_config.pixel_reference == "text" and ids:
            prefix, ids, shared = self._share_common_tokens(prefix, ids)
        values, conf, ok, out_texts, n_batches, used = self._run(prefix, ids, hw, u_prior)
        stats = {
            "prefix_seconds": prefix.seconds,
            "suffix_seconds": time.perf_counter() - start,
            "shared_suffix_tokens": shared,
            "n_queries": int(n),
            "n_unique": len(unique),
            "n_batches": n_batches,
            "batch_size": used,
            "n_unparseable": int((~ok[inverse]).sum()) if n else 0,
            "prefix_tokens": prefix.length,
        }
        return EngineAnswers(values=values[inverse].astype(np.float32), confidence=conf[inverse].astype(np.float32),
                             ok=ok[inverse], texts=[out_texts[i] for i in inverse], stats=stats)

    @torch.no_grad()
    def _share_common_tokens(self, prefix: PrefixCache, ids: list[list[int]]):
        """Move the tokens every suffix starts with (e.g. the mask sentence and question) into the prefix cache.

        Exact: those tokens see the same context at the same positions in every query, so their K/V are the same;
        each suffix keeps at least one token (its last one gives the logits). Text positions only — with
        ``pixel_reference="rope"`` every suffix token's position depends on its pixel.
        """
        k = min(len(i) for i in ids) - 1
        first = ids[0]
        for seq in ids[1:]:
            j = 0
            while j < k and seq[j] == first[j]:
                j += 1
            k = j
        if k <= 0:
            return prefix, ids, 0
        lm = self.lm
        cache = lm.new_cache(1, k)
        tok = torch.tensor([first[:k]], device=lm.device)
        ones = torch.ones_like(tok)
        lm.forward(prefix, cache, tok, ones, suffix_position_ids(prefix.next_pos, ones, "text"), head_rows=[])
        keys = [torch.cat([pk, ck[0]], dim=1) for pk, ck in zip(prefix.keys, cache["k"])]
        values = [torch.cat([pv, cv[0]], dim=1) for pv, cv in zip(prefix.values, cache["v"])]
        extended = PrefixCache(keys=keys, values=values, length=prefix.length + k, next_pos=prefix.next_pos + k,
                               image_start=prefix.image_start, resized_hw=prefix.resized_hw,
                               input_hw=prefix.input_hw, seconds=prefix.seconds)
        return extended, [seq[k:] for seq in ids], k

    def _batch_rows(self, prefix: PrefixCache, suffix_len: int, capacity: int, vocab_kept: int) -> int:
        per_row = self.lm.bytes_per_row(prefix.length, suffix_len, capacity, vocab_kept)
        return max(1, min(self.batch_size, int(self.memory_budget // per_row)))

    def _run(self, prefix, ids: list[list[int]], hw: torch.Tensor, priors):
        m = len(ids)
        values = np.full(m, np.nan)
        conf = np.zeros(m)
        ok = np.zeros(m, dtype=bool)
        texts = [""] * m
        if m == 0:
            return values, conf, ok, texts, 0, 0
        order = sorted(range(m), key=lambda i: len(ids[i]))
        free = self.readout == "text" and self.decode == "free"
        steps = 0 if self.readout == "residual_head" else (self.max_new_tokens if free else self.grammar.max_tokens)
        vocab_kept = self.lm.vocab_size if free else 11
        n_batches, used, i = 0, 0, 0
        while i < m:
            longest = len(ids[order[min(m - 1, i + self.batch_size - 1)]])
            rows_fit = self._batch_rows(prefix, longest, longest + steps, vocab_kept)
            batch = order[i:i + rows_fit]
            i += len(batch)
            n_batches += 1
            used = max(used, len(batch))
            result = self._run_batch(prefix, [ids[j] for j in batch], hw[batch],
                                     None if priors is None else priors[batch], steps, free)
            for j, (val, c, good, text) in zip(batch, result):
                values[j], conf[j], ok[j], texts[j] = val, c, good, text
        return values, conf, ok, texts, n_batches, used

    def _run_batch(self, prefix, ids, hw, priors, steps, free):
        lm = self.lm
        dev = lm.device
        b = len(ids)
        s = max(map(len, ids))
        pad = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id)
        tok = torch.full((b, s), pad, dtype=torch.long)
        mask = torch.zeros((b, s), dtype=torch.long)
        for r, seq in enumerate(ids):
            tok[r, s - len(seq):] = torch.tensor(seq)
            mask[r, s - len(seq):] = 1
        tok, mask = tok.to(dev), mask.to(dev)
        mode = self.prompt_config.pixel_reference
        pixel_hw = hw.to(dev) if mode == "rope" else None
        pos = suffix_position_ids(prefix.next_pos, mask, mode, pixel_hw)
        cache = lm.new_cache(b, s + max(steps, 1))
        head_rows = None if free or self.readout == "residual_head" else torch.tensor(self.grammar.token_ids,
                                                                                       device=dev)
        logits, hidden = lm.forward(prefix, cache, tok, mask, pos, head_rows)
        if self.readout == "residual_head":
            pred = self.residual_head.predict(hidden.to(next(self.residual_head.parameters()).dtype),
                                              torch.as_tensor(priors, dtype=torch.float32, device=dev))
            pred = pred.float().cpu().numpy()
            good = np.isfinite(pred) & (pred > 0)
            vals = np.where(good, np.clip(pred, prompts.MIN_DEPTH, prompts.MAX_DEPTH), np.nan)
            return [(v, 1.0 if g else 0.0, bool(g), f"{v:.3f}" if g else "") for v, g in zip(vals, good)]
        count = mask.sum(1)
        if free:
            return self._decode_free(prefix, cache, logits, count, pixel_hw, steps)
        return self._decode_constrained(prefix, cache, logits, count, pixel_hw)

    def _step_positions(self, prefix, count, pixel_hw):
        one = torch.ones(count.shape[0], 1, dtype=torch.long, device=count.device)
        return suffix_position_ids(prefix.next_pos, one, self.prompt_config.pixel_reference, pixel_hw, offset=count)

    def _decode_constrained(self, prefix, cache, logits, count, pixel_hw):
        g = self.grammar
        b = logits.shape[0]
        dev = logits.device
        state = g.init_state(b, dev)
        token_ids = torch.tensor(g.token_ids, device=dev)
        choices, probs, forced = [], [], []
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        finished_at = torch.full((b,), g.max_tokens, dtype=torch.long, device=dev)
        for step in range(g.max_tokens):
            allowed = g.allowed(state)
            masked = logits.masked_fill(~allowed, float("-inf"))
            choice = masked.argmax(-1)
            choices.append(choice)
            probs.append(masked.softmax(-1))
            forced.append(allowed.sum(-1) == 1)
            state = g.advance(state, torch.where(done, torch.zeros_like(choice), choice))
            now_done = g.done(state) & ~done
            finished_at = torch.where(now_done, torch.full_like(finished_at, step + 1), finished_at)
            done = done | now_done
            if bool(done.all()):
                break
            logits, _ = self.lm.forward(prefix, cache, token_ids[choice].view(b, 1), torch.ones(b, 1, device=dev),
                                        self._step_positions(prefix, count + step, pixel_hw), token_ids)
        choices = torch.stack(choices, 1).cpu().numpy()
        probs = torch.stack(probs, 1).cpu().numpy()
        forced = torch.stack(forced, 1).cpu().numpy()
        out = []
        for r in range(b):
            k = int(finished_at[r])
            text = g.text(choices[r, :k])
            value = prompts.parse_answer(text)
            if value is None:
                out.append((np.nan, 0.0, False, text))
                continue
            c = answer_confidence(choices[r, :k].tolist(), probs[r, :k], forced[r, :k].tolist(), self.tolerance)
            out.append((min(max(value, prompts.MIN_DEPTH), prompts.MAX_DEPTH), c, True, text))
        return out

    def _decode_free(self, prefix, cache, logits, count, pixel_hw, steps):
        b = logits.shape[0]
        dev = logits.device
        digit_ids = torch.tensor(self.grammar.token_ids, device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        tokens, sub = [], []
        for step in range(steps):
            choice = logits.argmax(-1)
            choice = torch.where(done, torch.full_like(choice, self.eos_id), choice)
            tokens.append(choice)
            sub.append(logits[:, digit_ids])
            done = done | (choice == self.eos_id)
            if bool(done.all()) or step == steps - 1:
                break
            logits, _ = self.lm.forward(prefix, cache, choice.view(b, 1), torch.ones(b, 1, device=dev),
                                        self._step_positions(prefix, count + step, pixel_hw), None)
        tokens = torch.stack(tokens, 1).cpu().tolist()
        sub = torch.stack(sub, 1).float().cpu()
        out = []
        for r in range(b):
            seq = tokens[r]
            if self.eos_id in seq:
                seq = seq[:seq.index(self.eos_id)]
            text = self.tokenizer.decode(seq, skip_special_tokens=True)
            value = prompts.parse_answer(text)
            if value is None or not math.isfinite(value):
                out.append((np.nan, 0.0, False, text))
                continue
            out.append((min(max(value, prompts.MIN_DEPTH), prompts.MAX_DEPTH),
                        self._free_confidence(seq, sub[r, :len(seq)]), True, text))
        return out

    def _free_confidence(self, seq: list[int], sub_logits: torch.Tensor) -> float:
        """Confidence of the first digit/point run of a freely decoded answer (same rule as constrained)."""
        ids = self.grammar.token_ids
        start = next((k for k, t in enumerate(seq) if t in ids[:10]), None)
        if start is None:
            return 0.0
        end = start
        while end < len(seq) and seq[end] in ids:
            end += 1
        choices = [ids.index(t) for t in seq[start:end]]
        probs = sub_logits[start:end].softmax(-1).numpy()
        return answer_confidence(choices, probs, [False] * len(choices), self.tolerance)
