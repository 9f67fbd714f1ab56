"""The stage-1 inference engine: one image prefix, many per-pixel suffixes, digits-only decoding.

The paper asks the VLM one pixel at a time (``generate()`` over the whole conversation per pixel). Every query of an
image shares the same prefix — system turn + image tokens, up to ``<|vision_end|>`` — and its answer is a fixed
sentence around one number. :class:`CompletionEngine` exploits both; the model is run by
:class:`~depthkit.complete.shared_prefix.SharedPrefixLM` (prefix once, suffix batches attending to it without
copies; see :mod:`depthkit.complete.shared_prefix`).

1. **Shared suffix tokens.** Tokens that every suffix of a call starts with (the mask sentence, the question and
   ``The current pixel is at (`` with text coordinates: the prompt puts the coordinates last for this) are computed
   once and appended to the prefix cache — exact, since they see the same context at the same positions in every
   query.
2. **Forced template, digits only.** The suffix is the query turn plus the assistant header plus the answer's fixed
   opening ``"The pixel is "`` (:data:`depthkit.complete.prompts.ANSWER_PREFIX`): those tokens are fed in the
   suffix pass, not decoded. Then only the number is decoded, under
   :class:`~depthkit.complete.decoding.AnswerGrammar`: 1 to ``max_int_digits`` (3) integer digits, the point,
   exactly ``frac_digits`` (3) decimals — the ``{y:.3f}`` format of the prompts for depths up to 300 m (leading
   zeros are not forbidden; ``"007.5"`` would read as 7.5). The loop stops after the last decimal, so the closing
   ``" meters away from the camera."`` is never generated. At most 7 tokens, 4 to 6 decoding steps after the
   suffix pass.

Greedy answers are the same tokens as ``generate()``. :func:`~depthkit.complete.decoding.naive_answers` is that
reference — processor plus ``SDIMModel.generate`` per pixel — and
:class:`~depthkit.complete.decoding.AnswerConstraint` is the same template + grammar as a ``LogitsProcessor``, so
for any model (a random one included) constrained ``generate()`` and the engine must agree token for token. With
``decode="free"`` the engine decodes the whole answer greedily over the full vocabulary (up to ``max_new_tokens``,
stopping at ``<|im_end|>``) and parses it, which must equal plain unconstrained ``generate()``; for a model that
writes the template, free and constrained decoding give the same number. The tests check all three. The trainer's
validation answers its held-out queries through this engine too.

**Readouts.** ``readout="text"`` decodes digits as above. ``readout="residual_head"`` needs no decoding loop: one
suffix pass (query turn + assistant header, without the forced answer prefix) gives the last token's final hidden
state (after the model's final norm), which :class:`depthkit.complete.readout.ResidualHead` maps to a bounded
correction of the prompt prior and an uncertainty; the LM head is not run and the suffix cache holds the suffix
only. :func:`~depthkit.complete.decoding.head_reference` (one full forward per pixel) is its reference, in every
pixel_reference layout.

**One query token per pixel** (``pixel_reference="grid_token"``, residual head only; :mod:`depthkit.complete.prompts`).
Every query of an image is the same conversation; only the last token's M-RoPE h/w (the pixel's place on the image
grid) differs. Step 1 above then moves everything but that token into the prefix cache, and each query is a
ONE-token suffix attending to the prefix and itself: a batch of ``batch_size`` pixels is one forward of
``batch_size`` tokens, no decoding, no LM head. The prompt text is tokenised once per distinct text, not per pixel.

**Confidence** is an estimate of the answer's relative error, mapped to [0, 1] by ``exp(-error / tolerance)``
(``tolerance`` default 10 %: confidence 1/e at an expected 10 % error). Text readout: the expected absolute error
``sigma`` of the decoded value under the digit distributions along the greedy path, carry-aware, with the
probability left to tokens outside the 11 allowed ones counted as an error of the whole value
(:func:`~depthkit.complete.decoding.answer_confidence`); ``confidence = exp(-sigma / (tolerance * y))``. With
``confidence_vocab="full"`` (default) those probabilities are softmaxes over the whole vocabulary (the LM head runs
over every row at each decoding step); ``"allowed"`` renormalises over the 11 tokens (cheaper, hides other mass).
Residual head: its predicted Laplace scale ``b`` of the log error (:class:`~depthkit.complete.readout.ResidualHead`),
``confidence = exp(-b / tolerance)``. A forced choice (the point after 3 integer digits) is certain.

**Ties** between allowed tokens go to the lowest token id, as ``generate()``'s argmax over the whole vocabulary.

**Exactness.** In float32 greedy answers are the tokens of ``generate()`` (tested). In bf16 they are not always: the
engine computes the same function as the stock model with a different attention kernel (its split prefix/suffix
softmax, float32 scores) and different matrix shapes than sdpa over the whole sequence, so logits differ by
rounding (measured on the test model: < 0.1 logit at the diverging steps, logits of magnitude ~5 whose bf16 spacing is
1/32). What it guarantees, and ``tests/test_engine.py`` checks in bf16 on a CPU: the engine decodes the same tokens as
constrained ``generate()`` up to the first step where ``generate()``'s winning margin (best minus runner-up allowed
logit) is below :data:`BF16_MARGIN` (0.25); answers whose margins all exceed it are identical (measured: 38 of 40
queries identical, the other two diverging at margins 0.09 and 0.016).

**Memory** is bounded for any image: the prefix is one copy (its size follows the processor's ``max_pixels``); the
batch size is ``min(batch_size, budget / bytes per row)`` (:meth:`SharedPrefixLM.bytes_per_row`), and queries run in
batches of that size, so memory does not grow with their number. Queries are sorted by suffix length to keep left
padding small; identical suffixes are answered once. Speed measurements: ``benchmarks/engine.py`` and
``benchmarks/results/engine_*.md``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from depthkit.complete import prompts
from depthkit.complete.decoding import DECODE_MODES, AnswerGrammar, answer_confidence
from depthkit.complete.positions import pixel_grid_position, suffix_position_ids
from depthkit.complete.shared_prefix import PrefixCache, SharedPrefixLM

__all__ = ["EngineAnswers", "CompletionEngine", "CONFIDENCE_VOCABS", "BF16_MARGIN"]

BF16_MARGIN = 0.25
"""Logits: in bf16 the engine follows constrained ``generate()`` wherever generate()'s winning margin is at least
this (module docstring, *Exactness*)."""

CONFIDENCE_VOCABS = ("full", "allowed")
"""Softmax of the text readout's confidence: over the whole vocabulary (probability on other tokens counts as an
error; the LM head runs over every row at each decoding step) or over the 11 allowed tokens only (cheaper)."""


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
        confidence_vocab: ``"full"`` or ``"allowed"`` (:data:`CONFIDENCE_VOCABS`).
        max_int_digits, frac_digits: the number format (3 and 3 for the ``{y:.3f}`` prompts up to 300 m).
        sdim_config: depth-feature settings (default: the model's own ``sdim_config``).
    """

    def __init__(self, model, processor, prompt_config: prompts.PromptConfig | None = None, readout: str = "text",
                 residual_head=None, batch_size: int = 64, memory_budget_mb: float = 1024.0,
                 decode: str = "constrained", max_new_tokens: int = 24, confidence_tolerance: float = 0.1,
                 max_int_digits: int = 3, frac_digits: int = 3, confidence_vocab: str = "full"):
        if readout not in prompts.READOUTS:
            raise ValueError(f"readout={readout!r} is not one of {prompts.READOUTS}.")
        if decode not in DECODE_MODES:
            raise ValueError(f"decode={decode!r} is not one of {DECODE_MODES}.")
        if readout == "residual_head" and residual_head is None:
            raise ValueError("readout='residual_head' needs residual_head= (a trained ResidualHead, from the "
                             "checkpoint's complete/ folder).")
        if (prompt_config or prompts.PromptConfig()).pixel_reference == "grid_token" and readout != "residual_head":
            raise ValueError(f"pixel_reference='grid_token' has no per-pixel text to decode an answer after; it needs "
                             f"readout='residual_head', got {readout!r}.")
        if readout == "residual_head" and (prompt_config or prompts.PromptConfig()).prompt_prior == "none":
            raise ValueError("readout='residual_head' corrects the prompt prior, so prompt_prior must be 'nearest' "
                             "or 'guided'; got 'none'.")
        if confidence_vocab not in CONFIDENCE_VOCABS:
            raise ValueError(f"confidence_vocab={confidence_vocab!r} is not one of {CONFIDENCE_VOCABS}.")
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
        self.confidence_vocab = confidence_vocab
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
        from depthkit.complete.depth_inputs import prepare_depth_inputs
        from depthkit.complete.processor import process_image_text

        start = time.perf_counter()
        image = np.asarray(image)
        out = process_image_text(self.processor, image, prompts.chat_prefix_text())
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
        distinct = list(dict.fromkeys(texts))  # e.g. one text for every pixel with grid_token
        enc = self.tokenizer([prompts.chat_suffix_text(t) for t in distinct], add_special_tokens=False).input_ids
        by_text = {t: list(e) + forced for t, e in zip(distinct, enc)}
        return [list(by_text[t]) for t in texts]

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
        if self.prompt_config.pixel_reference != "text":  # the position depends on the pixel
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
        if self.prompt_config.pixel_reference != "rope" and ids:
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
        ``pixel_reference="rope"`` every suffix token's position depends on its pixel; with ``"grid_token"`` only the
        last one's does, and it always stays in the suffix.
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
        keys = [torch.cat([pk, ck[0]], dim=1) for pk, ck in zip(prefix.keys, cache.keys)]
        values = [torch.cat([pv, cv[0]], dim=1) for pv, cv in zip(prefix.values, cache.values)]
        extended = PrefixCache(keys=keys, values=values, length=prefix.length + k, next_pos=prefix.next_pos + k,
                               image_start=prefix.image_start, resized_hw=prefix.resized_hw,
                               input_hw=prefix.input_hw, seconds=prefix.seconds)
        return extended, [seq[k:] for seq in ids], k

    def _batch_rows(self, prefix: PrefixCache, suffix_len: int, capacity: int, vocab_kept: int) -> int:
        """Rows of a suffix batch: ``batch_size`` or fewer, as many as the memory budget holds, at least one. The
        budget is compared, not divided into a whole number: a budget of ~1e308 MiB is infinite in bytes (inf // n is
        NaN, which no int holds)."""
        per_row = self.lm.bytes_per_row(prefix.length, suffix_len, capacity, vocab_kept)
        if self.memory_budget >= self.batch_size * per_row:
            return self.batch_size
        return max(1, int(self.memory_budget // per_row))

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
        vocab_kept = self.lm.vocab_size if free or self.confidence_vocab == "full" else 11
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
        pixel_hw = hw.to(dev) if mode != "text" else None
        pos = suffix_position_ids(prefix.next_pos, mask, mode, pixel_hw)
        cache = lm.new_cache(b, s + steps)
        if self.readout == "residual_head":
            head_rows = torch.zeros(0, dtype=torch.long)  # hidden state only, no LM head
        elif free or self.confidence_vocab == "full":
            head_rows = None
        else:
            head_rows = torch.tensor(self.grammar.token_ids, device=dev)
        logits, hidden = lm.forward(prefix, cache, tok, mask, pos, head_rows)
        if self.readout == "residual_head":
            pred, scale = self.residual_head.predict_with_scale(
                hidden.to(next(self.residual_head.parameters()).dtype),
                torch.as_tensor(priors, dtype=torch.float32, device=dev))
            pred, scale = pred.float().cpu().numpy(), scale.float().cpu().numpy()
            good = np.isfinite(pred) & (pred > 0)
            vals = np.where(good, np.clip(pred, prompts.MIN_DEPTH, prompts.MAX_DEPTH), np.nan)
            conf = np.where(good, np.exp(-scale / self.tolerance), 0.0)
            return [(v, float(c), bool(g), f"{v:.3f}" if g else "") for v, c, g in zip(vals, conf, good)]
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
        full = self.confidence_vocab == "full"
        by_id = torch.argsort(token_ids)  # ties go to the lowest token id, as generate()'s argmax over the vocabulary
        choices, probs, forced = [], [], []
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        finished_at = torch.full((b,), g.max_tokens, dtype=torch.long, device=dev)
        for step in range(g.max_tokens):
            allowed = g.allowed(state)
            if full:  # logits over the whole vocabulary: keep the probability the 11 tokens leave to others
                sub = logits[:, token_ids]
                probs.append(torch.where(allowed, (sub - logits.logsumexp(-1, keepdim=True)).exp(),
                                         torch.zeros_like(sub)))
            else:
                sub = logits
                probs.append(sub.masked_fill(~allowed, float("-inf")).softmax(-1))
            masked = sub.masked_fill(~allowed, float("-inf"))
            choice = by_id[masked[:, by_id].argmax(-1)]
            choices.append(choice)
            forced.append(allowed.sum(-1) == 1)
            state = g.advance(state, torch.where(done, torch.zeros_like(choice), choice))
            now_done = g.done(state) & ~done
            finished_at = torch.where(now_done, torch.full_like(finished_at, step + 1), finished_at)
            done = done | now_done
            if bool(done.all()):
                break
            logits, _ = self.lm.forward(prefix, cache, token_ids[choice].view(b, 1), torch.ones(b, 1, device=dev),
                                        self._step_positions(prefix, count + step, pixel_hw),
                                        None if full else token_ids)
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
            sub.append((logits[:, digit_ids] - logits.logsumexp(-1, keepdim=True)).exp())
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
        """Confidence of the first digit/point run of a freely decoded answer (same rule as constrained);
        ``sub_logits``: per step the full-vocabulary probabilities of the 11 tokens."""
        ids = self.grammar.token_ids
        start = next((k for k, t in enumerate(seq) if t in ids[:10]), None)
        if start is None:
            return 0.0
        end = start
        while end < len(seq) and seq[end] in ids:
            end += 1
        choices = [ids.index(t) for t in seq[start:end]]
        probs = sub_logits[start:end].numpy()
        return answer_confidence(choices, probs, [False] * len(choices), self.tolerance)

