"""Training sequences for SDIM: which pixels to ask about, their prompts, tokens and labels, and packed batches.

One training *group* is one image with Q queries (``data.queries_per_image``)::

    sample (image, sparse, GT)
      └─ sample_training_queries ─▶ sparse input (held-out points removed) + Q queries (pixel, mask, label, prior)
           └─ encode_group ─▶ image prefix tokens + pixel_values + depth-branch maps, and Q suffix token runs
                └─ pack_groups ─▶ one batch: tokens, 4-D attention mask, M-RoPE positions, gather indices of labels

**Supervision.** ``sparse`` (label-free, the default): valid sparse points are picked (optionally favouring depth
edges of the sparse map), each is held out of the input — removed from the depth branch's map and asked with mask 0
— and its measured value is the label; with probability ``p_keep`` a picked point instead stays in the input and is
asked with mask 1 and its value ("preserve the given value"). ``dense``: mask-0 queries are pixels with valid GT that
are not in the sparse input (edge weighting from the GT), labelled with the GT; ``p_keep`` mask-1 queries are
measured points. At least ``min_sparse_points`` measurements always stay in the input.

**Prompt prior.** With ``prompt_prior: nearest | guided`` the classical baseline of the same name
(:func:`depthkit.complete.query_plan.prior_map`, the function the stage uses) fills the *held-out* sparse input at
input resolution and its value at the queried pixel is written into the mask-0 prompt; the residual head starts
from that value (for a mask-1 query from the measured value).

**Labels.** Cross-entropy covers every answer token — the template words, the digits and the point, and the final
``<|im_end|>`` — the usual SFT reading of the paper's text supervision (the paper names an L1 objective; recipes
choose between them with ``loss.cross_entropy`` and ``loss.numeric_l1``): the template is learned within minutes
even from scratch (SPEC section 7), and a
model trained this way answers in the right form under plain ``generate()`` too, not only when an engine forces the
template. ``target_places`` marks the digit targets with their place value for the numeric L1
(:func:`depthkit.complete.readout.expected_digit_value`). The residual head reads the hidden state of the query's last
token (the ``\\n`` after ``assistant``), which causal attention keeps blind to the answer that follows it.
With ``pixel_reference: grid_token`` that token is the query token at the pixel's grid position and the text before
it is the question alone, the same for every query (:mod:`depthkit.complete.prompts`), so it joins the image prefix
once, as in the engine, and each suffix is the query token (and its answer): the same positions and attention as the
question repeated per query, with 1/18 of the suffix tokens without answers (about 1/2 with them). The answer after the query token keeps text
positions, so cross-entropy still trains the answer text while the engine reads only the head. When no loss reads
the answer (``loss.cross_entropy`` and ``loss.numeric_l1`` both 0) the trainer leaves it out (``with_answers``).

**Prefix sharing** (``data.prefix_sharing``; :func:`pack_groups` ``layout``). All three compute the same thing
(hidden states agree to 1e-6, checked by the tests); they differ in cost:

- ``kv_cache``: the image prefixes (system turn + image tokens through ``<|vision_end|>``, + the shared question with
  grid_token) run as one batch with
  ``use_cache=True``; the cache is gathered to one row per query (``batch_select_indices``, differentiable) and the
  suffixes run as a second batch against it. The vision tower runs once per image and the language model sees
  P + Q*S tokens, each suffix attending to P + S keys. transformers drops ``past_key_values`` inside checkpointed
  layers, so this layout refuses gradient checkpointing.
- ``packed``: the prefix appears once per row, followed by all Q suffixes; a block attention mask lets each suffix
  see the prefix and itself only, and each suffix's M-RoPE positions restart right after the prefix
  (:mod:`depthkit.complete.positions`). One ordinary forward, so it works with gradient checkpointing — but the
  mask is dense, so attention costs (P + Q*S)^2 per row. With Q = 1 (the paper's setting) it is a plain sequence.
- ``replicate``: one full sequence per query, the image repeated Q times (the vision tower runs Q times).

Measured with ``python benchmarks/complete_train_step.py --tiny --compare-sharing --threads 1 --queries Q`` (the tiny
recipe's model, 2 images of 168x168 → 38-token prefixes, ~75-token suffixes, forward + backward, one CPU thread on a
shared 2-core machine, two runs): Q = 32: kv_cache 0.48–0.51 s, packed 1.9–2.5 s, replicate 12–19 s; Q = 4: 0.18–0.33 s,
0.19–0.32 s, 0.57–1.2 s. So the tiny recipe uses ``kv_cache``; the GPU recipes (Q = 1, gradient checkpointing) use
``packed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from depthkit.complete import prompts
from depthkit.complete.positions import pixel_grid_position, prefix_position_ids, suffix_position_ids
from depthkit.complete.processor import map_to_resized, process_image_text, processor_geometry
from depthkit.complete.query_plan import prior_map
from depthkit.complete.recipe import LAYOUTS, SUPERVISIONS

__all__ = ["Query", "EncodedSuffix", "EncodedGroup", "sample_training_queries", "encode_group",
           "pack_groups", "number_places"]




@dataclass
class Query:
    """One queried pixel. ``row``/``col`` at input resolution; metres everywhere."""

    row: int
    col: int
    mask_value: int
    """0 = predict (held out or missing), 1 = measured, preserve."""
    label: float
    """Target metres (nan at inference)."""
    sparse_value: float | None = None
    """The measurement written into a mask-1 prompt."""
    prior: float | None = None
    """The prompt prior written into a mask-0 prompt (None when prompt_prior is none)."""
    head_prior: float = math.nan
    """What the residual head corrects: the prior (mask 0) or the measurement (mask 1); nan without a prior."""


def sample_training_queries(image: np.ndarray, sparse: np.ndarray, depth: np.ndarray | None, n: int,
                            rng: np.random.Generator, supervision: str = "sparse", p_keep: float = 0.1,
                            edge_weight: float = 0.0, prompt_prior: str = "none",
                            min_sparse_points: int = 2) -> tuple[np.ndarray, list[Query]]:
    """Pick up to ``n`` training queries for one sample (see the module docstring).

    Args:
        image: HxWx3 uint8 RGB. sparse: HxW metres, 0 = missing. depth: HxW GT metres (``dense`` only).
        rng: the source of every random choice (seed it per sample and step for a reproducible data order).

    Returns:
        ``(sparse_input, queries)``: the sparse map the model sees (float32, held-out points zeroed) and the
        queries; empty when the sample has too few measurements (the caller draws another sample).
    """
    sparse = np.asarray(sparse, dtype=np.float32)
    measured = sparse > 0
    n_measured = int(measured.sum())
    seed = int(rng.integers(2**31))
    queries: list[tuple[int, int, int, float]] = []  # (row, col, mask, label)
    if supervision == "sparse":
        # each point weighed by its depth step to the neighbouring points (a gradient of the sparse map is 0 there)
        picks_r, picks_c = prompts.sample_query_pixels(
            measured, n, seed=seed, edge_weight=edge_weight,
            strength=prompts.point_edge_strength(sparse) if edge_weight > 0 else None)
        keep = rng.random(picks_r.size) < p_keep
        budget = n_measured - min_sparse_points  # held-out points must leave enough input
        for r, c, k in zip(picks_r, picks_c, keep):
            if not k:
                if budget <= 0:
                    continue
                budget -= 1
            queries.append((int(r), int(c), int(k), float(sparse[r, c])))
    elif supervision == "dense":
        if depth is None:
            raise ValueError("supervision='dense' needs the sample's GT depth; this dataset has none.")
        depth = np.asarray(depth, dtype=np.float32)
        n_keep = int(rng.binomial(n, p_keep)) if n_measured else 0
        kr, kc = prompts.sample_query_pixels(measured, n_keep, seed=seed)
        missing = (depth > 0) & np.isfinite(depth) & ~measured
        mr, mc = prompts.sample_query_pixels(missing, n - kr.size, seed=seed + 1, edge_weight=edge_weight,
                                       depth_or_image=depth if edge_weight > 0 else None)
        queries += [(int(r), int(c), 1, float(sparse[r, c])) for r, c in zip(kr, kc)]
        queries += [(int(r), int(c), 0, float(depth[r, c])) for r, c in zip(mr, mc)]
        order = rng.permutation(len(queries))
        queries = [queries[i] for i in order]
    else:
        raise ValueError(f"supervision={supervision!r}; allowed: {', '.join(SUPERVISIONS)}.")
    sparse_input = sparse.copy()
    for r, c, mask, _ in queries:
        if mask == 0:
            sparse_input[r, c] = 0.0
    if not queries or int((sparse_input > 0).sum()) < max(1, min_sparse_points):
        return sparse_input, []
    prior = prior_map(image, sparse_input, prompt_prior) if prompt_prior != "none" else None
    out = []
    for r, c, mask, label in queries:
        if mask == 1:
            out.append(Query(r, c, 1, label, sparse_value=label, head_prior=label))
        else:
            p = float(prior[r, c]) if prior is not None else None
            out.append(Query(r, c, 0, label, prior=p, head_prior=p if p is not None else math.nan))
    return sparse_input, out


# --------------------------------------------------------------------------------------------------------- encoding


@dataclass
class EncodedSuffix:
    ids: torch.Tensor
    """S token ids after the prefix: query, end of turn, assistant header[, answer, <|im_end|>] (grid_token: the
    query token alone[, answer, <|im_end|>]; the rest is in the prefix)."""
    answer_start: int
    """Index in ``ids`` of the first answer token (= len(ids) without an answer); the query's last token is one
    before it."""
    places: torch.Tensor
    """S floats: the place value (10**k) of each answer-number digit token, 0 elsewhere (unshifted)."""
    label: float
    head_prior: float
    mask_value: int
    pixel_resized: tuple[int, int]
    """(row, col) of the queried pixel in the resized image."""


@dataclass
class EncodedGroup:
    """One image prefix with its query suffixes, ready to pack."""

    prefix_ids: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    sparse_pixels: torch.Tensor
    """2 x H' x W' depth-branch features (held-out input)."""
    rgb_pixels: torch.Tensor
    suffixes: list[EncodedSuffix] = field(default_factory=list)


def number_places(text: str) -> list[float]:
    """Place value of each character of a decimal number string: ``"12.345"`` → [10, 1, 0, 0.1, 0.01, 0.001]
    (the point gets 0)."""
    whole, _, frac = text.partition(".")
    places = [10.0 ** (len(whole) - 1 - i) for i in range(len(whole))]
    if "." in text:
        places.append(0.0)
        places += [10.0 ** -(j + 1) for j in range(len(frac))]
    return places


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def encode_group(processor, image: np.ndarray, sparse_input: np.ndarray, queries: list[Query],
                 prompt_config: prompts.PromptConfig, sdim_config=None, with_answers: bool = True) -> EncodedGroup:
    """Tokenise one image prefix and its queries' suffixes (answers included when ``with_answers``)."""
    from depthkit.complete.depth_inputs import prepare_depth_inputs

    tok = processor.tokenizer
    enc = process_image_text(processor, image, prompts.chat_prefix_text())
    depth = prepare_depth_inputs(sparse_input, enc["image_grid_thw"], enc["pixel_values"], processor, sdim_config)
    g = processor_geometry(processor)
    grid = enc["image_grid_thw"][0].tolist()
    resized = (grid[1] * g["patch_size"], grid[2] * g["patch_size"])
    group = EncodedGroup(
        prefix_ids=enc["input_ids"][0], mm_token_type_ids=enc["mm_token_type_ids"][0],
        pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"],
        sparse_pixels=depth["sparse_pixels"][0], rgb_pixels=depth["rgb_pixels"][0])
    h, w = sparse_input.shape
    shared = 0  # grid_token: tokens of the question that every suffix repeats, moved into the prefix (below)
    cache: dict[str, list[int]] = {}
    for q in queries:
        rr, cc = map_to_resized([q.row], [q.col], (h, w), resized)
        rr, cc = int(rr[0]), int(cc[0])
        text = prompts.query_text(q.mask_value, xy=(cc, rr), sparse_value=q.sparse_value, prior=q.prior,
                            config=prompt_config)
        suffix_text = prompts.chat_suffix_text(text)
        if suffix_text not in cache:  # (grid_token: one text for every query)
            cache[suffix_text] = _ids(tok, suffix_text)
        ids = list(cache[suffix_text])
        if prompt_config.pixel_reference == "grid_token":
            # the question is the same text for every pixel: it joins the prefix once, as in the engine, and each
            # suffix starts at the query token (the same positions and attention as the question repeated per query)
            if not shared:
                shared = len(ids) - 1
                question = ids[:shared]
                group.prefix_ids = torch.cat([group.prefix_ids, torch.tensor(ids[:shared], dtype=torch.long)])
                group.mm_token_type_ids = torch.cat([group.mm_token_type_ids,
                                                     torch.zeros(shared, dtype=group.mm_token_type_ids.dtype)])
            elif ids[:shared] != question:  # query_text gives one text per image in this layout; guard it
                raise ValueError("grid_token queries of one image must share their question text; "
                                 f"received {tok.decode(ids)!r} after {tok.decode(question)!r}.")
            ids = ids[shared:]
        start = len(ids)
        places = [0.0] * len(ids)
        if with_answers:
            number = prompts.format_depth(q.label)
            head, num, tail = (_ids(tok, prompts.ANSWER_PREFIX), _ids(tok, number),
                               _ids(tok, prompts.ANSWER_SUFFIX + prompts.END_OF_TURN))
            if len(num) != len(number):
                raise ValueError(f"the tokenizer does not spell {number!r} one character per token ({num}); use a "
                                 "Qwen2.5-VL tokenizer.")
            ids = ids + head + num + tail
            places += [0.0] * len(head) + number_places(number) + [0.0] * len(tail)
        group.suffixes.append(EncodedSuffix(
            ids=torch.tensor(ids, dtype=torch.long), answer_start=start,
            places=torch.tensor(places, dtype=torch.float32), label=float(q.label), head_prior=float(q.head_prior),
            mask_value=int(q.mask_value), pixel_resized=(rr, cc)))
    return group


# ---------------------------------------------------------------------------------------------------------- packing


def _prefix_positions(g: EncodedGroup, model_config, pixel_reference: str) -> dict:
    pre = prefix_position_ids(model_config, g.prefix_ids[None], g.image_grid_thw, g.mm_token_type_ids[None])
    pre["row"] = pre["position_ids"][:, 0].to(torch.long if pixel_reference == "text" else torch.float32)
    return pre


def _suffix_positions(s: EncodedSuffix, pre: dict, model_config, pixel_reference: str) -> torch.Tensor:
    """3 x S positions of one suffix that directly follows its prefix (grid_token: the query token, the one before
    the answer, at the pixel; the answer after it at text positions — :mod:`depthkit.complete.positions`)."""
    mask = torch.ones(1, s.ids.numel(), dtype=torch.long)
    if pixel_reference == "text":
        return suffix_position_ids(pre["next_pos"], mask, "text")[:, 0]
    token_pixels = int(model_config.vision_config.patch_size) * int(model_config.vision_config.spatial_merge_size)
    hw = pixel_grid_position([s.pixel_resized[0]], [s.pixel_resized[1]], pre["image_start"][0][0], token_pixels)
    if pixel_reference == "rope":
        return suffix_position_ids(pre["next_pos"], mask, "rope", pixel_hw=hw)[:, 0]
    query = suffix_position_ids(pre["next_pos"], mask[:, :s.answer_start], "grid_token", pixel_hw=hw)[:, 0]
    answer = suffix_position_ids(pre["next_pos"], mask[:, s.answer_start:], "text", offset=s.answer_start)[:, 0]
    return torch.cat([query, answer.float()], dim=1)


def _targets(s: EncodedSuffix, row: int, offset: int, qi: int, out: dict) -> None:
    """Append the label gather indices of suffix ``s`` placed at ``offset`` in batch row ``row``."""
    out["query_pos"].append((row, offset + s.answer_start - 1))
    out["query_label"].append(s.label)
    out["query_head_prior"].append(s.head_prior)
    out["query_mask"].append(s.mask_value)
    for j in range(s.answer_start, s.ids.numel()):  # logits at j-1 predict token j
        out["target_pos"].append((row, offset + j - 1))
        out["target_ids"].append(int(s.ids[j]))
        out["target_query"].append(qi)
        out["target_places"].append(float(s.places[j]))


def _finish(out: dict, groups: list[EncodedGroup]) -> dict:
    out["pixel_values"] = torch.cat([g.pixel_values for g in groups])
    out["image_grid_thw"] = torch.cat([g.image_grid_thw for g in groups])
    out["sparse_pixels"] = [g.sparse_pixels for g in groups]
    out["rgb_pixels"] = [g.rgb_pixels for g in groups]
    for key, dtype in (("target_pos", torch.long), ("target_ids", torch.long), ("target_query", torch.long),
                       ("target_places", torch.float32), ("query_pos", torch.long), ("query_label", torch.float32),
                       ("query_head_prior", torch.float32), ("query_mask", torch.long)):
        out[key] = torch.tensor(out[key], dtype=dtype)
    out["target_pos"] = out["target_pos"].reshape(-1, 2)
    out["query_pos"] = out["query_pos"].reshape(-1, 2)
    return out



def pack_groups(groups: list[EncodedGroup], model_config, pixel_reference: str = "text", pad_id: int = 0,
                layout: str = "packed") -> dict:
    """Build one batch from encoded groups.

    Layouts (see the module docstring): ``packed`` — one row per group, prefix then all its suffixes, block mask;
    ``replicate`` — one row per query (prefix + that suffix); ``kv_cache`` — the prefixes as one batch and the
    suffixes as another that attends to its prefix's (expanded) KV cache.

    Returns a dict of tensors. Common to all layouts: ``layout``; ``input_ids`` (rows x L: packed/replicate rows,
    or the suffix rows for kv_cache); ``position_ids`` 3 x rows x L (long, or float with rope and grid_token);
    ``pixel_values`` and ``image_grid_thw`` (one image per prefix), ``sparse_pixels`` / ``rgb_pixels`` (lists, one
    map per prefix); ``target_pos`` N x 2 ((row, position) of ``input_ids`` whose logits predict an answer
    token), ``target_ids`` N, ``target_query`` N (query index), ``target_places`` N (place value when the target
    is a digit of the number, else 0); ``query_pos`` Q x 2 ((row, position) of the query's last token),
    ``query_label`` Q metres, ``query_head_prior`` Q metres, ``query_mask`` Q (0/1).
    packed/replicate add ``allowed`` rows x L x L bool (row attends to column). kv_cache adds ``prefix_ids``,
    ``prefix_attention`` (B x P, 1 = real), ``prefix_position_ids`` 3 x B x P, ``suffix_attention``
    (rows x (P + L): the prefix part then the suffix part) and ``suffix_group`` (the prefix of each suffix row).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; allowed: {LAYOUTS}.")
    if layout == "replicate":
        groups = [EncodedGroup(g.prefix_ids, g.mm_token_type_ids, g.pixel_values, g.image_grid_thw, g.sparse_pixels,
                               g.rgb_pixels, [s]) for g in groups for s in g.suffixes]
    pos_dtype = torch.long if pixel_reference == "text" else torch.float32
    out: dict = {k: [] for k in ("target_pos", "target_ids", "target_query", "target_places", "query_pos",
                                 "query_label", "query_head_prior", "query_mask")}
    out["layout"] = layout
    pres = [_prefix_positions(g, model_config, pixel_reference) for g in groups]
    if layout == "kv_cache":
        b = len(groups)
        plen = max(g.prefix_ids.numel() for g in groups)
        suffixes = [(gi, s) for gi, g in enumerate(groups) for s in g.suffixes]
        slen = max(s.ids.numel() for _, s in suffixes)
        n = len(suffixes)
        out["prefix_ids"] = torch.full((b, plen), pad_id, dtype=torch.long)
        out["prefix_attention"] = torch.zeros(b, plen, dtype=torch.long)
        out["prefix_position_ids"] = torch.zeros(3, b, plen, dtype=pos_dtype)
        for i, (g, pre) in enumerate(zip(groups, pres)):
            k = g.prefix_ids.numel()
            out["prefix_ids"][i, :k] = g.prefix_ids
            out["prefix_attention"][i, :k] = 1
            out["prefix_position_ids"][:, i, :k] = pre["row"]
        out["input_ids"] = torch.full((n, slen), pad_id, dtype=torch.long)
        out["position_ids"] = torch.zeros(3, n, slen, dtype=pos_dtype)
        out["suffix_attention"] = torch.zeros(n, plen + slen, dtype=torch.long)
        out["suffix_group"] = torch.tensor([gi for gi, _ in suffixes], dtype=torch.long)
        for r, (gi, s) in enumerate(suffixes):
            k = s.ids.numel()
            out["input_ids"][r, :k] = s.ids
            out["position_ids"][:, r, :k] = _suffix_positions(s, pres[gi], model_config, pixel_reference)
            out["suffix_attention"][r, :plen] = out["prefix_attention"][gi]
            out["suffix_attention"][r, plen:plen + k] = 1
            _targets(s, r, 0, r, out)
        return _finish(out, groups)

    rows = []
    for g, pre in zip(groups, pres):
        ids, pos, segments, offset = [g.prefix_ids], [pre["row"]], [], g.prefix_ids.numel()
        for s in g.suffixes:
            pos.append(_suffix_positions(s, pre, model_config, pixel_reference))
            ids.append(s.ids)
            segments.append((offset, s))
            offset += s.ids.numel()
        rows.append((torch.cat(ids), torch.cat(pos, dim=1), g.prefix_ids.numel(), segments))
    b = len(rows)
    length = max(r[0].numel() for r in rows)
    out["input_ids"] = torch.full((b, length), pad_id, dtype=torch.long)
    out["position_ids"] = torch.zeros(3, b, length, dtype=pos_dtype)
    allowed = torch.zeros(b, length, length, dtype=torch.bool)
    for i, (ids, pos, p, segments) in enumerate(rows):
        n = ids.numel()
        out["input_ids"][i, :n] = ids
        out["position_ids"][:, i, :n] = pos
        allowed[i, :p, :p] = torch.ones(p, p, dtype=torch.bool).tril()
        for off, s in segments:
            k = s.ids.numel()
            allowed[i, off:off + k, :p] = True
            allowed[i, off:off + k, off:off + k] = torch.ones(k, k, dtype=torch.bool).tril()
            _targets(s, i, off, len(out["query_pos"]), out)
        pad = torch.arange(n, length)
        allowed[i, pad, pad] = True  # padding sees itself: no all-masked rows (NaN in sdpa)
    out["allowed"] = allowed
    return _finish(out, groups)
