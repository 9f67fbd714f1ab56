"""Speed benchmark of the stage-1 inference engine against the paper's per-pixel ``generate()``.

Usage (from the repository root)::

    python benchmarks/engine.py --config tiny                        # tiny test model, 112x112 image
    python benchmarks/engine.py --config bench                       # SPEC prototype size, 448x448 (~4 min, 2 CPUs)
    python benchmarks/engine.py --config 3b --device cuda --dtype bfloat16 --naive-pixels 16   # see below

On one model (random weights, SDIM depth branch attached) and one image, over the SAME query pixels (missing pixels
drawn with a fixed seed), it times:

- ``naive``: the paper's way (timed in two halves, one before and one after the other variants, to even out load
  drift on a shared machine) — for each pixel the processor builds the whole conversation and
  ``SDIMModel.generate`` decodes greedily (:func:`depthkit.complete.decoding.naive_answers`). Random weights do not
  write the answer template, so the naive run carries the engine's template + digit grammar as a LogitsProcessor
  (about 12 generated tokens per pixel; a trained model writing the whole sentence generates ~16, so naive is if
  anything favoured here);
- ``plain shared prefix, B=...``: the prototype of SPEC section 3 — the prefix once, its ``DynamicCache`` expanded to
  B rows, the suffixes through the stock forward with ``logits_to_keep=1``, then the same constrained greedy loop;
- ``engine, B=...``: :class:`depthkit.complete.engine.CompletionEngine` (shared-prefix attention without copies,
  preallocated suffix K/V, last-layer pruning, LM head on the 11 allowed rows).

Then the readout modes side by side (``readout_modes`` in the JSON): the text readout (the engine above), and the
residual head (no decoding loop: one suffix pass, no LM head; a seeded random head, guided prior; the first
``--batch-sizes`` entry) with text coordinates, with ``pixel_reference: rope``, and with ``pixel_reference:
grid_token`` (the question in the shared prefix, ONE query token per pixel at its grid position), each with its
speed-up over naive ``generate()`` and over its own per-pixel reference
(:func:`depthkit.complete.decoding.head_reference`: one full forward per pixel, no prefix sharing), and whether its
values match that reference (relative difference <= 1e-4).

Last, ``full_frame``: a whole 640x480 completion through :class:`depthkit.complete.stage.CompleteVLMStage` with its
default query plan (``query_budget`` 1024) and the random-weight tiny checkpoint of ``depthkit init-checkpoint
--tiny`` in each pixel_reference layout (``--frame-layouts``), split into the model (the engine's prefix pass and
its query batches) and the classical parts (``prior_map``, ``fill_dense`` or ``fill_residual``, ``confidence_map``,
the rest), with ``--threads`` threads for torch and for ``guided`` (:mod:`full_frame` next to this file;
``python benchmarks/full_frame.py`` runs that part alone).

It checks that every variant decodes the same number for every pixel as naive, and reports ms/pixel, pixels/s, the
speed ratio to naive, peak memory (CUDA: ``max_memory_allocated``; CPU: peak RSS growth sampled every 2 ms), the
engine's time split between the prefix pass and the suffix batches, and the FLOP floor: FLOPs actually executed
(``torch.utils.flop_counter``) and the analytic minimum — one prefix pass plus, per query, every decoder layer over
the suffix and answer tokens (2 x layer weights per token + 4 x heads x head_dim x context for attention) — turned
into time at the matmul throughput measured on this machine with the model's own GEMM shape. Variants run one after
another in one process; on a shared CPU the numbers are noisy (the JSON records the load average).

Configurations (random weights; the offline tokenizer's ids inside Qwen's 151,936-token vocabulary):

- ``tiny``: the test model (text hidden 64, 2 layers; vision hidden 32, depth 2), 112x112 image → 16 image tokens.
- ``bench``: text hidden 512, 4 layers, 8 heads / 2 KV heads, MLP 2752, tied embeddings; vision hidden 256,
  depth 4, 4 heads; 448x448 image → 256 image tokens, a 273-token prefix (the SPEC prototype's size).
- ``3b``: the Qwen2.5-VL-3B architecture (text hidden 2048, 36 layers, 16 heads / 2 KV heads, MLP 11008; vision
  hidden 1280, depth 32) with a 480x640 frame (→ 476x644, 1564 image tokens). Reports frames per second for
  ``--frame-queries`` queries per frame (the stage's default budget, 1024) next to the paper's 0.327 FPS / 46 GB.
  Meant for ``--device cuda --dtype bfloat16``. NOT RUN YET: the session that wrote this had no GPU; run it on a
  CUDA machine and commit the JSON/markdown it writes.

Writes ``<out>/engine_<config>.json`` and ``<out>/engine_<config>.md`` (``--name`` changes the stem).

(Over 500 lines on purpose: every variant, the FLOP floor and the report must run in one process on the same model
and pixels to be comparable on a shared machine; the full-frame part lives in ``full_frame.py``.)
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from depthkit.profiling import PeakMemory

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark modules below, run as a script
from _results import check_device, results_name, run_info, run_main, write_results  # noqa: E402
from full_frame import check_at_least, frame_layouts, full_frame, full_frame_markdown  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
QWEN_VOCAB = 151936
PAPER = {"fps": 0.327, "memory_gb": 46.0}

CONFIGS = {
    "tiny": {"text": {}, "vision": {}, "image": (112, 112), "pixels": (28 * 28, 112 * 112), "tie": False,
             "vocab": None},
    "bench": {
        "text": {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
                 "intermediate_size": 2752,
                 "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}},
        "vision": {"hidden_size": 256, "depth": 4, "num_heads": 4, "intermediate_size": 1024, "window_size": 112,
                   "fullatt_block_indexes": [3]},
        "image": (448, 448), "pixels": (28 * 28, 448 * 448), "tie": True, "vocab": QWEN_VOCAB,
    },
    "3b": {
        "text": {"hidden_size": 2048, "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
                 "intermediate_size": 11008, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
                 "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}},
        "vision": {"hidden_size": 1280, "depth": 32, "num_heads": 16, "intermediate_size": 3420, "window_size": 112,
                   "fullatt_block_indexes": [7, 15, 23, 31]},
        "image": (480, 640), "pixels": (56 * 56, 28 * 28 * 16384), "tie": True, "vocab": QWEN_VOCAB,
    },
}


# ---------------------------------------------------------------------------------------------------------- setup


def build(config_name: str, device: str, dtype: torch.dtype, seed: int = 0):
    """(SDIMModel, processor, image, sparse) for a configuration; weights random, built on ``device``."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from depthkit.complete.model import SDIMModel
    from depthkit.complete.processor import build_tiny_processor
    from depthkit.complete.tiny import tiny_qwen2_5_vl_config, token_ids_from_tokenizer
    from depthkit.complete.tokenizer import build_offline_tokenizer
    from depthkit.data.sparse import sample_random_points
    from depthkit.data.synthetic import render_scene

    spec = CONFIGS[config_name]
    tok = build_offline_tokenizer()
    proc = build_tiny_processor(tok, min_pixels=spec["pixels"][0], max_pixels=spec["pixels"][1])
    text = dict(spec["text"])
    if spec["vocab"]:
        text["vocab_size"] = spec["vocab"]
    cfg = tiny_qwen2_5_vl_config(len(tok), token_ids_from_tokenizer(tok), text=text, vision=spec["vision"],
                                 tie_word_embeddings=spec["tie"])
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        base = Qwen2_5_VLForConditionalGeneration(cfg).to(dtype).eval()
        model = SDIMModel(base).to(device=device, dtype=dtype).eval()
    h, w = spec["image"]
    scene = render_scene(seed, h, w, kind="indoor")
    sparse = sample_random_points(scene.depth, 500, seed)
    return model, proc, scene.image, sparse


def query_pixels(sparse: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct missing pixels (row, col), seeded."""
    from depthkit.complete.prompts import sample_query_pixels

    return sample_query_pixels(sparse <= 0, n, seed=seed)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------------- variants


def run_naive(model, proc, image, sparse, rows, cols) -> list[str]:
    from depthkit.complete.decoding import naive_answers

    return [r["number"] for r in naive_answers(model, proc, image, sparse, rows, cols, constrained=True)]


@torch.no_grad()
def run_plain_shared_prefix(engine, image, sparse, rows, cols, batch: int) -> list[str]:
    """The SPEC prototype: prefix once, DynamicCache expanded per batch, stock forward, constrained greedy loop."""
    from depthkit.complete import prompts as P
    from depthkit.complete.depth_inputs import prepare_depth_inputs
    from depthkit.complete.positions import prefix_position_ids, suffix_position_ids
    from depthkit.complete.processor import map_to_resized, process_image_text

    lm, g, proc = engine.lm, engine.grammar, engine.processor
    dev = lm.device
    out = process_image_text(proc, image, P.chat_prefix_text())
    inputs = {k: v.to(dev) for k, v in out.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(lm.dtype)
    depth = prepare_depth_inputs(sparse, out["image_grid_thw"], out["pixel_values"], proc, engine.model.sdim_config)
    res = engine.model(**inputs, **{k: v.to(dev) for k, v in depth.items()}, use_cache=True, logits_to_keep=1)
    cache = res.past_key_values
    next_pos = int(prefix_position_ids(lm.stock, out["input_ids"], out["image_grid_thw"],
                                       out["mm_token_type_ids"])["next_pos"][0])
    p_len = out["input_ids"].shape[1]
    h, w = image.shape[:2]
    resized = (int(out["image_grid_thw"][0, 1]) * 14, int(out["image_grid_thw"][0, 2]) * 14)
    rr, cc = map_to_resized(rows, cols, (h, w), resized)
    ids = engine._suffix_ids(engine.query_texts(cc, rr, None))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    token_ids = torch.tensor(g.token_ids, device=dev)
    answers = [""] * len(ids)
    for start in range(0, len(ids), batch):
        chunk = order[start:start + batch]
        b, s = len(chunk), max(len(ids[i]) for i in chunk)
        tok = torch.full((b, s), int(proc.tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros((b, s), dtype=torch.long)
        for r, i in enumerate(chunk):
            tok[r, s - len(ids[i]):] = torch.tensor(ids[i])
            mask[r, s - len(ids[i]):] = 1
        tok, mask = tok.to(dev), mask.to(dev)
        kv = copy.deepcopy(cache)
        kv.batch_repeat_interleave(b)
        attn = torch.cat([torch.ones(b, p_len, dtype=torch.long, device=dev), mask], dim=1)
        pos = suffix_position_ids(next_pos, mask, "text")
        logits = lm.stock(input_ids=tok, attention_mask=attn, position_ids=pos, past_key_values=kv, use_cache=True,
                          logits_to_keep=1).logits[:, -1].float()
        state, done = g.init_state(b, dev), torch.zeros(b, dtype=torch.bool, device=dev)
        chosen, count = [], mask.sum(1)
        for step in range(g.max_tokens):
            choice = logits[:, token_ids].masked_fill(~g.allowed(state), float("-inf")).argmax(-1)
            chosen.append(torch.where(done, torch.full_like(choice, -1), choice))
            state = g.advance(state, torch.where(done, torch.zeros_like(choice), choice))
            done = done | g.done(state)
            if bool(done.all()):
                break
            attn = torch.cat([attn, torch.ones(b, 1, dtype=torch.long, device=dev)], dim=1)
            pos = suffix_position_ids(next_pos, torch.ones(b, 1, device=dev), "text", offset=count + step)
            logits = lm.stock(input_ids=token_ids[choice].view(b, 1), attention_mask=attn, position_ids=pos,
                              past_key_values=kv, use_cache=True, logits_to_keep=1).logits[:, -1].float()
        chosen = torch.stack(chosen, 1).cpu().tolist()
        for r, i in enumerate(chunk):
            answers[i] = g.text(c for c in chosen[r] if c >= 0)
    return answers


def run_engine(engine, image, sparse, rows, cols):
    prefix = engine.encode(image, sparse)
    got = engine.answer(prefix, rows, cols)
    return got.texts, got.stats


def run_readout_modes(model, proc, image, sparse, rows, cols, n_ref: int, batch: int, budget_mb: float,
                      naive_ms: float) -> dict:
    """The residual-head readout (no decoding loop: one suffix pass, no LM head) with text coordinates and with rope
    positions, each timed over all query pixels and checked against its own per-pixel reference
    (:func:`depthkit.complete.decoding.head_reference`: one full forward per pixel, no prefix sharing) on the first
    ``n_ref`` pixels. The head has random weights (seeded; its correction is not zero) and the guided prior."""
    from depthkit.complete import prompts as P
    from depthkit.complete.decoding import head_reference
    from depthkit.complete.engine import CompletionEngine
    from depthkit.complete.query_plan import prior_map
    from depthkit.complete.readout import ResidualHead

    lm_cfg = model.base.config.text_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        head = ResidualHead(lm_cfg.hidden_size).to(next(model.parameters()).device)
        with torch.no_grad():
            torch.nn.init.normal_(head.net[-1].weight, std=0.5)
            torch.nn.init.normal_(head.log_scale.weight, std=0.5)
    priors = prior_map(image, sparse, "guided")[rows, cols].astype(np.float64)
    out = {}
    names = {"text": "residual head, text coordinates", "rope": "residual head, rope",
             "grid_token": "residual head, one grid token"}
    for mode, name in names.items():
        cfg = P.PromptConfig(prompt_prior="guided", pixel_reference=mode,
                             mask_text="none" if mode == "grid_token" else "mask_and_value")
        engine = CompletionEngine(model, proc, cfg, readout="residual_head", residual_head=head, batch_size=batch,
                                  memory_budget_mb=budget_mb)
        engine.answer(engine.encode(image, sparse), rows[:4], cols[:4], priors[:4])  # warm-up
        t = time.perf_counter()
        got = engine.answer(engine.encode(image, sparse), rows, cols, priors)
        seconds = time.perf_counter() - t
        t = time.perf_counter()
        ref, _ = head_reference(model, proc, head, image, sparse, rows[:n_ref], cols[:n_ref], cfg, priors[:n_ref])
        ref_seconds = time.perf_counter() - t
        diff = np.abs(got.values[:n_ref].astype(np.float64) - ref) / ref
        ms = 1e3 * seconds / len(rows)
        ref_ms = 1e3 * ref_seconds / n_ref
        out[name] = {
            "seconds": seconds, "pixels": len(rows), "ms_per_pixel": ms, "pixels_per_second": len(rows) / seconds,
            "speedup_vs_naive": naive_ms / ms, "reference_ms_per_pixel": ref_ms, "speedup_vs_reference": ref_ms / ms,
            "reference_pixels": n_ref, "max_relative_difference": float(diff.max()),
            "identical_to_reference": bool(diff.max() <= 1e-4), "same_mm": bool(
                [f"{v:.3f}" for v in got.values[:n_ref]] == [f"{v:.3f}" for v in ref]),
            "prefix_seconds": got.stats["prefix_seconds"], "suffix_seconds": got.stats["suffix_seconds"],
            "shared_suffix_tokens": got.stats["shared_suffix_tokens"], "batch_size": batch}
        print(f"{mode}: {ms:.2f} ms/pixel, {naive_ms / ms:.0f}x naive, reference {ref_ms:.1f} ms/pixel, max rel diff "
              f"{diff.max():.2e}", flush=True)
    return out


# ----------------------------------------------------------------------------------------------------------- FLOPs


def flop_floor(engine, prefix_flops: float, prefix_len: int, suffix_lengths: list[int],
               answer_lengths: list[int]) -> float:
    """The FLOP floor as SPEC defines it: one prefix pass (as counted) + per query every decoder layer over its
    suffix tokens and fed answer tokens (the last answer token is never fed; 2 x layer weights per token plus
    4 x heads x head_dim x context for attention) + the LM head over the 11 allowed rows per decoded token.
    The engine can execute less than this (shared leading suffix tokens, last-layer pruning)."""
    lm = engine.lm
    linear = 0
    for layer in lm.layers:
        for mod in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                    layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
            linear += mod.weight.numel()
    per_ctx = 4 * lm.num_heads * lm.head_dim * len(lm.layers)
    total = prefix_flops
    for s, a in zip(suffix_lengths, answer_lengths):
        fed = s + a - 1
        ctx = fed * prefix_len + fed * (fed + 1) // 2
        total += 2 * linear * fed + per_ctx * ctx + 2 * 11 * lm.hidden_size * a
    return float(total)


def matmul_gflops(engine, device: str, rows: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of this machine on the model's MLP GEMM shape (rows x hidden @ hidden x intermediate)."""
    lm = engine.lm
    a = torch.randn(rows, lm.hidden_size, dtype=lm.dtype, device=device)
    b = torch.randn(lm.hidden_size, lm.intermediate_size, dtype=lm.dtype, device=device)
    torch.matmul(a, b)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * rows * lm.hidden_size * lm.intermediate_size / best / 1e9


# ------------------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="bench")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--pixels", type=int, default=256, help="query pixels (default 256)")
    parser.add_argument("--naive-pixels", type=int, default=None,
                        help="time naive on the first N of them only (default: all)")
    parser.add_argument("--batch-sizes", default="64,256", help="comma-separated batch sizes (default 64,256)")
    parser.add_argument("--plain", default="auto", choices=("auto", "yes", "no"),
                        help="also run the plain shared-prefix prototype (auto: not for 3b)")
    parser.add_argument("--frame-queries", type=int, default=1024,
                        help="queries per frame for FPS (default 1024; 0 = no frame timing)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--memory-budget-mb", type=float, default=4096.0)
    parser.add_argument("--frame-layouts", default="text,rope,grid_token",
                        help="pixel_reference layouts of the full-frame tiny-checkpoint timing, from text, rope, "
                             "grid_token ('' = skip)")
    parser.add_argument("--frame-repeats", type=int, default=3, help="full-frame runs to take the best of (default 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", type=results_name, default=None,
                        help="output file stem: NAME.json and NAME.md in --out (default engine_<config>)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    try:
        layouts = frame_layouts(args.frame_layouts, allow_empty=True)
    except ValueError as err:
        parser.error(str(err))
    try:
        batches = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        batches = [0]
    if min(batches) < 1:
        parser.error(f"--batch-sizes takes comma-separated batch sizes, each at least 1 (e.g. 64,256); received "
                     f"{args.batch_sizes!r}.")
    check_at_least(parser, "--pixels", args.pixels, 1, "a number of query pixels")
    if args.naive_pixels is not None:
        check_at_least(parser, "--naive-pixels", args.naive_pixels, 1, "a number of query pixels to time naive on")
    check_at_least(parser, "--frame-queries", args.frame_queries, 0, "a number of queries per frame (0: no frame "
                   "timing)")
    check_at_least(parser, "--threads", args.threads, 1, "a number of torch CPU threads")
    if not args.memory_budget_mb > 0:
        parser.error(f"--memory-budget-mb takes a positive number of MB; received {args.memory_budget_mb}.")
    if layouts:
        check_at_least(parser, "--frame-repeats", args.frame_repeats, 1, "a number of timed full-frame runs after "
                       "the warm-up")
    check_device(args.device)  # before any model is built

    from torch.utils.flop_counter import FlopCounterMode

    from depthkit.complete.engine import CompletionEngine

    torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    t0 = time.perf_counter()
    model, proc, image, sparse = build(args.config, args.device, dtype)
    print(f"built {args.config} on {args.device} in {time.perf_counter() - t0:.1f} s", flush=True)
    rows, cols = query_pixels(sparse, args.pixels)
    n_naive = len(rows) if args.naive_pixels is None else min(args.naive_pixels, len(rows))
    engines = {b: CompletionEngine(model, proc, batch_size=b, memory_budget_mb=args.memory_budget_mb)
               for b in batches}

    # warm-up: first calls pay one-time costs (allocator, kernels, tokenizer caches), and each batch size its own
    # shapes: every engine answers one full batch (at least 4 pixels) untimed before it is timed
    run_naive(model, proc, image, sparse, rows[:1], cols[:1])
    for b, e in engines.items():
        n_warm = min(len(rows), max(4, b))
        run_engine(e, image, sparse, rows[:n_warm], cols[:n_warm])
    results = {}

    def timed(name, fn, n):
        _sync(args.device)
        with PeakMemory(args.device) as mem:
            t = time.perf_counter()
            value = fn()
            _sync(args.device)
            seconds = time.perf_counter() - t
        results[name] = {"seconds": seconds, "pixels": n, "ms_per_pixel": 1e3 * seconds / n,
                         "pixels_per_second": n / seconds, "peak_mb": mem.peak / 2**20, "total_mb": mem.total / 2**20}
        print(f"{name}: {results[name]['ms_per_pixel']:.2f} ms/pixel, peak +{results[name]['peak_mb']:.0f} MB",
              flush=True)
        return value

    # naive runs in two halves, before and after the other variants, so that drifting load on a shared machine
    # weighs on both sides of the ratio alike
    half = (n_naive + 1) // 2
    ref = timed("naive generate()", lambda: run_naive(model, proc, image, sparse, rows[:half], cols[:half]), half)
    first_half = results.pop("naive generate()")
    answers = {}
    plain = args.plain == "yes" or (args.plain == "auto" and args.config != "3b")
    for b in batches:
        if plain:
            answers[f"plain shared prefix, B={b}"] = timed(
                f"plain shared prefix, B={b}",
                lambda b=b: run_plain_shared_prefix(engines[b], image, sparse, rows, cols, b), len(rows))
        texts, stats = timed(f"engine, B={b}", lambda b=b: run_engine(engines[b], image, sparse, rows, cols),
                             len(rows))
        answers[f"engine, B={b}"] = texts
        total = stats["prefix_seconds"] + stats["suffix_seconds"]
        results[f"engine, B={b}"].update({
            "prefix_seconds": stats["prefix_seconds"], "suffix_seconds": stats["suffix_seconds"],
            "prefix_share": stats["prefix_seconds"] / total, "batch_size_used": stats["batch_size"],
            "prefix_tokens": stats["prefix_tokens"]})
    if n_naive > half:
        ref = ref + timed("naive generate()", lambda: run_naive(model, proc, image, sparse, rows[half:n_naive],
                                                                cols[half:n_naive]), n_naive - half)
        second = results["naive generate()"]
        seconds = first_half["seconds"] + second["seconds"]
        results["naive generate()"] = {
            "seconds": seconds, "pixels": n_naive, "ms_per_pixel": 1e3 * seconds / n_naive,
            "pixels_per_second": n_naive / seconds, "peak_mb": max(first_half["peak_mb"], second["peak_mb"]),
            "total_mb": max(first_half["total_mb"], second["total_mb"]),
            "ms_per_pixel_halves": [first_half["ms_per_pixel"], second["ms_per_pixel"]]}
    else:
        results["naive generate()"] = first_half
    results = {"naive generate()": results.pop("naive generate()"), **results}
    naive_ms = results["naive generate()"]["ms_per_pixel"]
    for name, texts in answers.items():
        results[name]["identical_to_naive"] = texts[:n_naive] == ref
        results[name]["speedup_vs_naive"] = naive_ms / results[name]["ms_per_pixel"]
    results["naive generate()"].update({"identical_to_naive": True, "speedup_vs_naive": 1.0})

    # FLOPs: executed (counted) and the analytic floor, at this machine's GEMM throughput
    best = min((k for k in results if k.startswith("engine")), key=lambda k: results[k]["ms_per_pixel"])
    engine = engines[int(best.split("=")[1])]
    with FlopCounterMode(display=False) as fc:
        prefix = engine.encode(image, sparse)
    prefix_flops = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        got = engine.answer(prefix, rows, cols)
    suffix_flops = fc.get_total_flops()
    from depthkit.complete.processor import map_to_resized

    rr, cc = map_to_resized(rows, cols, image.shape[:2], prefix.resized_hw)
    suffix_lengths = [len(s) for s in engine._suffix_ids(engine.query_texts(cc, rr, None))]
    answer_lengths = [len(t) for t in got.texts]
    floor = flop_floor(engine, prefix_flops, prefix.length, suffix_lengths, answer_lengths)
    gflops = matmul_gflops(engine, args.device)
    seconds = results[best]["seconds"]
    flops = {
        "prefix_gflop": prefix_flops / 1e9,
        "engine_executed_gflop": (prefix_flops + suffix_flops) / 1e9,
        "floor_gflop": floor / 1e9,
        "floor_gflop_per_pixel": floor / 1e9 / len(rows),
        "machine_gemm_gflops": gflops,
        "floor_seconds": floor / 1e9 / gflops,
        "engine_seconds": seconds,
        "engine_over_floor": seconds / (floor / 1e9 / gflops),
        "executed_seconds_at_gemm_speed": (prefix_flops + suffix_flops) / 1e9 / gflops,
        "engine_achieved_gflops": (prefix_flops + suffix_flops) / 1e9 / seconds,
        "mean_suffix_tokens": float(np.mean(suffix_lengths)),
        "mean_answer_tokens": float(np.mean(answer_lengths)),
        "variant": best,
    }
    frame = None
    if args.frame_queries:
        q_rows, q_cols = query_pixels(sparse, args.frame_queries, seed=1)
        _sync(args.device)
        with PeakMemory(args.device) as mem:
            t = time.perf_counter()
            run_engine(engine, image, sparse, q_rows, q_cols)
            _sync(args.device)
            secs = time.perf_counter() - t
        frame = {"queries": len(q_rows), "seconds": secs, "fps": 1.0 / secs, "peak_mb": mem.peak / 2**20,
                 "total_mb": mem.total / 2**20, "paper_fps": PAPER["fps"], "paper_memory_gb": PAPER["memory_gb"]}
        if args.device.startswith("cuda"):
            frame["weights_mb"] = torch.cuda.memory_allocated() / 2**20
    modes = run_readout_modes(model, proc, image, sparse, rows, cols, n_naive, batches[0], args.memory_budget_mb,
                              naive_ms)
    text_best = results[best]
    modes = {"text readout (" + best + ")": {
        "ms_per_pixel": text_best["ms_per_pixel"], "speedup_vs_naive": text_best["speedup_vs_naive"],
        "reference_ms_per_pixel": naive_ms, "speedup_vs_reference": text_best["speedup_vs_naive"],
        "identical_to_reference": text_best["identical_to_naive"]}, **modes}
    info = run_info(argv, __file__, args.device)
    report = {
        **info, "config": args.config, "device": args.device, "dtype": args.dtype, "threads": args.threads,
        "machine": {**info["machine"], "load_average": os.getloadavg()},
        "model": {"spec": CONFIGS[args.config], "parameters": sum(p.numel() for p in model.parameters()),
                  "image": list(image.shape[:2]), "resized": list(prefix.resized_hw), "prefix_tokens": prefix.length},
        "query_pixels": len(rows), "naive_pixels": n_naive, "variants": results, "readout_modes": modes,
        "flops": flops, "frame": frame,
        "full_frame": full_frame(layouts, repeats=args.frame_repeats, threads=args.threads) if layouts else None,
    }
    paths = write_results(args.out, args.name or f"engine_{args.config}", report, markdown(report))
    print(f"wrote {paths[0]} and {paths[1]}")
    ok = all(v["identical_to_naive"] for v in results.values()) and all(
        v["identical_to_reference"] for v in modes.values())
    return 0 if ok else 1


def markdown(report: dict) -> str:
    m, f = report["model"], report["flops"]
    lines = [
        f"## Engine speed — `{report['config']}` ({report['device']}, {report['dtype']}, {report['threads']} threads)",
        "",
        f"{report['date']}, `{report['command']}`; image {m['image'][0]}x{m['image'][1]} → "
        f"{m['resized'][0]}x{m['resized'][1]}, prefix {m['prefix_tokens']} tokens, {m['parameters'] / 1e6:.1f} M "
        f"parameters (random weights); {report['query_pixels']} query pixels (naive: first {report['naive_pixels']}); "
        f"load average {report['machine']['load_average'][0]:.1f} on {report['machine']['cpu_count']} CPUs.",
        "",
        "| variant | ms / pixel | pixels / s | speed-up vs naive | peak memory (MB) | prefix share | same answers |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, v in report["variants"].items():
        share = f"{100 * v['prefix_share']:.1f} %" if "prefix_share" in v else "–"
        lines.append(f"| {name} | {v['ms_per_pixel']:.2f} | {v['pixels_per_second']:.1f} | "
                     f"{v['speedup_vs_naive']:.1f}x | {v['peak_mb']:.0f} | {share} | "
                     f"{'yes' if v['identical_to_naive'] else '**NO**'} |")
    if report.get("readout_modes"):
        lines += ["", "Readout modes (each against its own per-pixel reference: naive generate() for the text readout, "
                  "one full forward per pixel + head for the residual head):", "",
                  "| mode | ms / pixel | speed-up vs naive generate() | reference ms / pixel | speed-up vs reference "
                  "| matches reference |", "|---|---:|---:|---:|---:|---|"]
        for name, v in report["readout_modes"].items():
            lines.append(f"| {name} | {v['ms_per_pixel']:.2f} | {v['speedup_vs_naive']:.1f}x | "
                         f"{v['reference_ms_per_pixel']:.1f} | {v['speedup_vs_reference']:.1f}x | "
                         f"{'yes' if v['identical_to_reference'] else '**NO**'} |")
    lines += [
        "",
        f"FLOP floor ({f['variant']}): executed {f['engine_executed_gflop']:.2f} GFLOP (prefix {f['prefix_gflop']:.2f}); "
        f"floor {f['floor_gflop']:.2f} GFLOP = one prefix pass + {f['mean_suffix_tokens']:.1f} suffix and "
        f"{f['mean_answer_tokens']:.1f} answer tokens per pixel ({1e3 * f['floor_gflop_per_pixel']:.0f} MFLOP/pixel). "
        f"At this machine's {f['machine_gemm_gflops']:.0f} GFLOP/s (model GEMM shape) the floor is "
        f"{f['floor_seconds']:.2f} s; the engine took {f['engine_seconds']:.2f} s = "
        f"**{f['engine_over_floor']:.2f}x the floor**. It executes less than the floor (common leading suffix tokens "
        f"computed once, last layer only at the logit position): its own FLOPs would take "
        f"{f['executed_seconds_at_gemm_speed']:.2f} s at GEMM speed; it reaches {f['engine_achieved_gflops']:.0f} "
        f"GFLOP/s.",
    ]
    if report.get("frame"):
        fr = report["frame"]
        lines += ["", f"Frame: {fr['queries']} queries in {fr['seconds']:.2f} s = **{fr['fps']:.2f} FPS**, peak "
                  f"+{fr['peak_mb']:.0f} MB (process/allocator total {fr['total_mb']:.0f} MB); paper: "
                  f"{fr['paper_fps']} FPS, {fr['paper_memory_gb']} GB."]
    if report.get("full_frame"):
        lines += [""] + full_frame_markdown(report["full_frame"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_main(main))
