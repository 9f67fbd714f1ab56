"""The answer number: its token grammar, its confidence, and the per-pixel ``generate()`` reference.

The answer sentence is fixed (``The pixel is {y:.3f} meters away from the camera.``), so a decoder only has to choose
the number. :class:`AnswerGrammar` is that choice as a state machine over 11 tokens (the ten digits and the point):
1 to ``max_int_digits`` (3) integer digits, the point, exactly ``frac_digits`` (3) decimals — the ``{y:.3f}`` format
for depths up to 300 m. Leading zeros are not forbidden (``"007.5"`` reads as 7.5); the point is forced after the
third integer digit. :func:`answer_confidence` turns the digit distributions along a decoded path into a confidence
in [0, 1]: the expected error of the decoded value, carry-aware (its docstring has the rule).

:func:`AnswerConstraint` is the same template + grammar as a ``transformers`` ``LogitsProcessor`` and
:func:`naive_answers` the paper's way of asking — the processor builds the whole conversation and
``SDIMModel.generate`` decodes greedily, one pixel at a time — the reference the engine is tested and benchmarked
against (with or without the constraint).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from depthkit.complete import prompts

__all__ = ["DECODE_MODES", "AnswerGrammar", "answer_confidence", "AnswerConstraint", "naive_answers",
           "head_reference"]

# --------------------------------------------------------------------------------------------------------------------
# The answer grammar

DECODE_MODES = ("constrained", "free")
"""``constrained``: forced answer template, digits only (:class:`AnswerGrammar`); ``free``: greedy over the full
vocabulary (plain ``generate()``)."""


class AnswerGrammar:
    """The number in the answer as a tiny state machine over token ids: int digits, point, decimals.

    Allowed tokens are indexed 0..10: 0-9 = the digit tokens, 10 = the point. State per row: ``n_int`` integer digits
    so far, ``point`` (bool), ``n_frac`` decimals so far; a row is done after ``frac_digits`` decimals.
    """

    def __init__(self, tokenizer, max_int_digits: int = 3, frac_digits: int = 3):
        if max_int_digits < 1 or frac_digits < 1:
            raise ValueError(f"need max_int_digits >= 1 and frac_digits >= 1; got {max_int_digits}, {frac_digits}.")
        self.token_ids = prompts.single_token_ids(tokenizer, "0123456789.")
        self.max_int_digits = int(max_int_digits)
        self.frac_digits = int(frac_digits)
        self.max_tokens = self.max_int_digits + 1 + self.frac_digits

    def init_state(self, batch: int, device=None) -> dict:
        z = torch.zeros(batch, dtype=torch.long, device=device)
        return {"n_int": z.clone(), "point": torch.zeros(batch, dtype=torch.bool, device=device), "n_frac": z.clone()}

    def allowed(self, state: dict) -> torch.Tensor:
        """B x 11 bool: which of the 11 tokens (digits, point) each row may take next."""
        n_int, point = state["n_int"], state["point"]
        b = n_int.shape[0]
        digits = ~(~point & (n_int >= self.max_int_digits))  # after the point, or room left in the integer part
        dot = ~point & (n_int >= 1)
        return torch.cat([digits.view(b, 1).expand(b, 10), dot.view(b, 1)], dim=1)

    def advance(self, state: dict, choice: torch.Tensor) -> dict:
        """Update the state with each row's choice (index 0..10)."""
        is_dot = choice == 10
        point = state["point"]
        return {
            "n_int": state["n_int"] + (~point & ~is_dot).long(),
            "point": point | is_dot,
            "n_frac": state["n_frac"] + (point & ~is_dot).long(),
        }

    def done(self, state: dict) -> torch.Tensor:
        return state["n_frac"] >= self.frac_digits

    def text(self, choices) -> str:
        return "".join("." if int(c) == 10 else str(int(c)) for c in choices)


def answer_confidence(choices: list[int], probs: np.ndarray, forced: list[bool], tolerance: float = 0.1) -> float:
    """Confidence in [0, 1] of one decoded number: ``exp(-sigma / (tolerance * y))``, with ``sigma`` the expected
    absolute error (metres) of the decoded value ``y`` under the step distributions along the greedy path.

    Carry-aware: choosing digit ``d`` instead of ``d*`` at place value ``v`` leads to numbers in
    ``[P + d v, P + (d + 1) v)`` (``P`` the value of the digits before it, any later digits), so its error is the
    distance from ``y`` to that interval, not ``v |d - d*|`` — a 50/50 split between 0.999 and 1.000 costs 0.0005 m,
    a 50/50 split between 5 m and 9 m costs 2 m. A point instead of a digit (or a digit instead of the point) changes
    the order of magnitude; its error is likewise the distance to the numbers that choice can still reach. For a
    digit the interval assumes the decoded number of integer digits: an alternative integer digit could still be
    followed by an earlier point (after ``9`` instead of the ``1`` of ``123.456``, also ``9.xxx`` or ``99.xxx``),
    so with two or more integer digits ``sigma`` can exceed the error of the nearest reachable number (12.345: 4.37
    m against 3.73 by enumeration; 123.456: 9.82 against 3.03) and the confidence errs low, never high.
    Probability on tokens outside the 11 allowed ones (``1 - sum(p)``, when ``probs`` come from the full
    vocabulary) is a wrong answer of unknown size and counts as an error of ``y``.

    Args:
        choices: the decoded indices (0-9 digits, 10 = point), in order.
        probs: len(choices) x 11, each step's probabilities of the 11 tokens (full-vocabulary softmax, or
            renormalised over them).
        forced: per step, True when only one token was allowed (contributes nothing).
        tolerance: relative depth error that maps to confidence 1/e.
    """
    text = "".join("." if c == 10 else str(c) for c in choices)
    try:
        y = float(text)
    except ValueError:
        return 0.0
    n_int = text.index(".") if "." in text else len(text)
    frac = len(text) - n_int - 1 if "." in text else 0
    ulp = 10.0 ** -frac
    alt = np.arange(10, dtype=np.float64)
    sigma = 0.0
    for k, (c, p, f) in enumerate(zip(choices, probs, forced)):
        if f:
            continue
        p = np.asarray(p, dtype=np.float64)
        other = max(0.0, 1.0 - float(p.sum()))
        head = float(text[:k]) if k and text[:k] != "." else 0.0  # value of the digits before step k, as decoded
        int_head = float(text[:min(k, n_int)] or 0)  # integer digits before step k
        if c == 10:  # point chosen; a digit would make the integer part >= 10 * int_head + d
            err = np.maximum(0.0, 10.0 * int_head + alt - y)
            sigma += float((p[:10] * err).sum()) + other * y
            continue
        place = 10.0 ** (n_int - 1 - k) if k < n_int else 10.0 ** (n_int - k)
        if k < n_int:  # integer digit: the decoded digits before it form head * place * 10
            base = int_head * place * 10.0
        else:
            base = head
        tail = y - base - c * place  # later digits' value, in [0, place)
        err = np.where(alt > c, (alt - c) * place - tail, (c - alt - 1) * place + tail + ulp)
        err[c] = 0.0
        point = 0.0
        if k < n_int and k > 0:  # a point here: the number would be int_head.xxx
            point = p[10] * max(0.0, y - (int_head + 1.0))
        elif k < n_int:
            point = p[10] * y
        sigma += float((p[:10] * np.maximum(err, 0.0)).sum()) + point + other * y
    return float(math.exp(-sigma / (tolerance * max(y, prompts.MIN_DEPTH))))


def AnswerConstraint(prompt_length: int, forced_ids: list[int], grammar: AnswerGrammar, eos_id: int):  # noqa: N802
    """A ``transformers`` ``LogitsProcessor`` (batch of one) that forces ``forced_ids``, then the number under
    ``grammar``, then ``eos_id`` — the engine's template and grammar, for a constrained ``generate()`` reference."""
    from transformers import LogitsProcessor

    class _AnswerConstraint(LogitsProcessor):
        def __call__(self, input_ids, scores):
            new = input_ids[0, prompt_length:].tolist()
            allowed = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
            if len(new) < len(forced_ids):
                allowed[forced_ids[len(new)]] = True
            else:
                state = grammar.init_state(1)
                for tok in new[len(forced_ids):]:
                    state = grammar.advance(state, torch.tensor([grammar.token_ids.index(tok)]))
                if bool(grammar.done(state)[0]):
                    allowed[eos_id] = True
                else:
                    ok = grammar.allowed(state)[0]
                    allowed[torch.tensor(grammar.token_ids)[ok]] = True
            return scores.masked_fill(~allowed, float("-inf"))

    return _AnswerConstraint()


# --------------------------------------------------------------------------------------------------------------------
# The naive reference


@torch.no_grad()
def naive_answers(model, processor, image: np.ndarray, sparse: np.ndarray | None, rows, cols,
                  prompt_config: prompts.PromptConfig | None = None, priors=None, constrained: bool = True,
                  max_new_tokens: int = 24, margins: bool = False) -> list[dict]:
    """The paper's way, as the reference: for each pixel the processor builds the whole conversation and
    ``SDIMModel.generate`` decodes greedily. Text pixel reference only (``rope`` needs custom positions).

    With ``constrained=True`` an :func:`AnswerConstraint` forces the answer prefix and the number grammar (the
    engine's rule); otherwise plain greedy ``generate()``. Returns per pixel ``{"tokens": generated ids,
    "text": decoded text, "number": the number's text (constrained) or None, "value": parsed metres or None}``;
    with ``margins=True`` (constrained only) also ``"margins"``: per decoded number token, the winning logit minus
    the runner-up among the tokens the grammar allowed (``inf`` where only one was allowed).
    """
    from depthkit.complete.depth_inputs import prepare_depth_inputs
    from depthkit.complete.processor import map_to_resized, process_image_text, resized_size

    config = prompt_config or prompts.PromptConfig()
    if config.pixel_reference != "text":
        raise ValueError("naive_answers reproduces the paper's text-coordinate prompts only (pixel_reference='text').")
    if config.prompt_prior != "none" and priors is None:
        raise ValueError(f"prompt_prior={config.prompt_prior!r} needs priors= (one interpolated metre value per pixel).")
    tokenizer = processor.tokenizer
    grammar = AnswerGrammar(tokenizer)
    forced = tokenizer(prompts.ANSWER_PREFIX, add_special_tokens=False).input_ids
    eos = int(tokenizer.convert_tokens_to_ids(prompts.END_OF_TURN))
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    image = np.asarray(image)
    h, w = image.shape[:2]
    rr, cc = map_to_resized(np.asarray(rows), np.asarray(cols), (h, w), resized_size(h, w, processor))
    results = []
    for i, (y, x) in enumerate(zip(rr.tolist(), cc.tolist())):
        prior = None if config.prompt_prior == "none" else float(np.asarray(priors).reshape(-1)[i])
        text = prompts.chat_prefix_text() + prompts.chat_suffix_text(prompts.query_text(0, (x, y), prior=prior, config=config))
        out = process_image_text(processor, image, text)
        inputs = {k: v.to(device) for k, v in out.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        kwargs = dict(inputs, max_new_tokens=(len(forced) + grammar.max_tokens + 1) if constrained else max_new_tokens,
                      do_sample=False)
        if constrained:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList(
                [AnswerConstraint(out["input_ids"].shape[1], forced, grammar, eos)])
        if sparse is not None and hasattr(model, "depth_branch"):
            depth = prepare_depth_inputs(sparse, out["image_grid_thw"], out["pixel_values"], processor,
                                         model.sdim_config)
            kwargs.update({k: v.to(device) for k, v in depth.items()})
        if margins:
            kwargs.update(output_scores=True, return_dict_in_generate=True)
        result = model.generate(**kwargs)
        sequences = result.sequences if margins else result
        gen = sequences[0, out["input_ids"].shape[1]:].tolist()
        gaps = None
        if margins and constrained:
            gaps = []
            for score in result.scores[len(forced):len(forced) + grammar.max_tokens]:
                top = score[0].float().topk(2).values
                gaps.append(float(top[0] - top[1]) if bool(torch.isfinite(top[1])) else math.inf)
        if eos in gen:
            gen = gen[:gen.index(eos)]
        decoded = tokenizer.decode(gen, skip_special_tokens=True)
        number = None
        if constrained:
            number = grammar.text(grammar.token_ids.index(t) for t in gen[len(forced):])
        results.append({"tokens": gen, "text": decoded, "number": number, "value": prompts.parse_answer(decoded)})
        if gaps is not None:
            results[-1]["margins"] = gaps[:len(number)]
    return results


@torch.no_grad()
def head_reference(model, processor, head, image: np.ndarray, sparse: np.ndarray | None, rows, cols,
                   prompt_config: prompts.PromptConfig, priors) -> tuple[np.ndarray, np.ndarray]:
    """The residual-head readout without prefix sharing, as the reference: per pixel ONE stock forward over the whole
    sequence (prefix + query turn + assistant header) at :mod:`depthkit.complete.positions`' positions (text, rope
    or grid_token: there the whole question is recomputed for every pixel, nothing is shared), then ``head`` on the
    last token's final hidden state. Returns (metres N, Laplace scale N) as float64."""
    from depthkit.complete.depth_inputs import prepare_depth_inputs
    from depthkit.complete.positions import pixel_grid_position, prefix_position_ids, suffix_position_ids
    from depthkit.complete.processor import map_to_resized, process_image_text

    param = next(model.parameters())
    image = np.asarray(image)
    out = process_image_text(processor, image, prompts.chat_prefix_text())
    pre = prefix_position_ids(model, out["input_ids"], out["image_grid_thw"], out["mm_token_type_ids"])
    grid = out["image_grid_thw"][0].tolist()
    geometry = processor.image_processor
    patch = int(geometry.patch_size)
    rr, cc = map_to_resized(np.asarray(rows), np.asarray(cols), image.shape[:2], (grid[1] * patch, grid[2] * patch))
    depth = {}
    if sparse is not None and hasattr(model, "depth_branch"):
        depth = prepare_depth_inputs(sparse, out["image_grid_thw"], out["pixel_values"], processor, model.sdim_config)
        depth = {k: v.to(param.device) for k, v in depth.items()}
    mode = prompt_config.pixel_reference
    priors = np.asarray(priors, dtype=np.float64).reshape(-1)
    values, scales = np.zeros(len(rr)), np.zeros(len(rr))
    for i, (y, x) in enumerate(zip(rr.tolist(), cc.tolist())):
        query = prompts.query_text(0, (x, y) if mode == "text" else None, prior=float(priors[i]), config=prompt_config)
        suffix = processor.tokenizer(prompts.chat_suffix_text(query), add_special_tokens=False).input_ids
        ids = torch.cat([out["input_ids"], torch.tensor([suffix])], dim=1)
        mm = torch.cat([out["mm_token_type_ids"], torch.zeros(1, len(suffix), dtype=torch.long)], dim=1)
        hw = pixel_grid_position([y], [x], pre["image_start"][0][0], patch * int(geometry.merge_size))
        pos = suffix_position_ids(pre["next_pos"], torch.ones(1, len(suffix)), mode, hw if mode != "text" else None)
        pos = torch.cat([pre["position_ids"].to(pos.dtype), pos], dim=2)
        res = model(input_ids=ids.to(param.device), attention_mask=torch.ones_like(ids).to(param.device),
                    pixel_values=out["pixel_values"].to(param.device, param.dtype),
                    image_grid_thw=out["image_grid_thw"].to(param.device), mm_token_type_ids=mm.to(param.device),
                    position_ids=pos.to(param.device), output_hidden_states=True, logits_to_keep=1, **depth)
        hidden = res.hidden_states[-1][:, -1]
        value, scale = head.predict_with_scale(hidden.to(next(head.parameters()).dtype),
                                               torch.tensor([priors[i]], device=param.device))
        values[i], scales[i] = float(value[0]), float(scale[0])
    return values, scales
