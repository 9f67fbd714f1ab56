"""Full-size readiness on a CPU: the Qwen2.5-VL-3B-Instruct architecture, random bf16 weights, through the user path.

Usage (from the repository root; needs 7 GiB of disk and ~18 GiB of free RAM for float32 compute; ~10 minutes on one
CPU core)::

    python benchmarks/full_size_readiness.py                      # snapshot in /tmp/qwen2_5_vl_3b_random
    python benchmarks/full_size_readiness.py --snapshot DIR --threads 2 --compute-dtype bfloat16
    python benchmarks/full_size_readiness.py --small              # toy widths, seconds: /tmp/qwen2_5_vl_small_random,
                                                                  # results/full_size_readiness_small.json

Each mode (``3b``, or ``small`` with ``--small``) has its own default snapshot folder and results file, and the JSON
records the mode and the command as typed; a snapshot folder whose ``config.json`` has the other mode's sizes is
refused (a 3B run never reports a toy model, nor the other way round).

Phases, each in its own process (so each has its own peak RSS), results in
``benchmarks/results/full_size_readiness.json`` (rewritten after every phase, so an interrupted run records how far
it got); an existing snapshot folder is reused (delete it afterwards: 7 GiB):

1. ``snapshot``: build the stock ``Qwen2_5_VLForConditionalGeneration`` at Qwen2.5-VL-3B-Instruct's sizes (text hidden
   2048, 36 layers, 16 heads / 2 KV heads, MLP 11008, ``mrope_section`` [16, 24, 24], vocab 151,936, tied
   embeddings; vision depth 32, hidden 1280, 16 heads, MLP 3420, window 112, full attention in blocks 7/15/23/31) on
   the meta device, give it bf16 storage and seeded random weights (:func:`fill_random`: the stock init's scale
   without its cost), and save it as a hub-style snapshot folder: ``config.json``, sharded
   ``model-0000x-of-0000n.safetensors`` (bf16, the checkpoint's key names, no separate ``lm_head``) +
   ``model.safetensors.index.json``, ``preprocessor_config.json`` and the tokenizer files (depthkit's offline
   tokenizer: no network here; its ids fit the 151,936-row embedding).
2. ``run``: ``recipes/complete/qwen2_5_vl_3b_lora.yaml`` with ``model.base=<snapshot>`` — the path a downloaded
   snapshot takes (:func:`depthkit.complete.checkpoint.load_base_model`, :func:`~depthkit.complete.processor.
   load_processor`), SDIM attached, LoRA r=16 — and synthetic 224x224 frames instead of Hypersim/VKITTI: one training
   step (:func:`depthkit.complete.train.setup_training` / :func:`~depthkit.complete.train.train_step`: forward,
   backward, AdamW; gradient checkpointing, one query per image as in the recipe), then 16 queries through
   :class:`depthkit.complete.engine.CompletionEngine` (shared prefix, constrained digits). ``--compute-dtype`` is
   applied as a user would: the override ``model.dtype=<dtype>`` (weights loaded in it), plus
   ``train.mixed_precision=no`` for float32. Default float32 without CUDA — CPUs without AMX / AVX512-BF16 emulate
   bf16 matmuls (on this AVX2 machine one bf16 step had not finished after 24 CPU minutes) — else bfloat16.

Peak memory is the process's peak RSS (``ru_maxrss``). Measured on this 2-core AVX2 machine (1 thread, niced, load
average ~3.6-4.1 from other jobs; float32 compute): snapshot build 3.7 min + save 1.1 min at 7.5 GiB peak RSS;
load + attach 47 s, 17.4 GiB peak (14.1 GiB of it the float32 weights); training step 106 s (70 CPU s); 16 engine
queries 97 s. ``benchmarks/README.md`` has the figures in context.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "complete" / "qwen2_5_vl_3b_lora.yaml"
RESULTS = REPO / "benchmarks" / "results"
OUT = RESULTS / "full_size_readiness.json"
sys.path.insert(0, str(REPO))  # this checkout's depthkit, not an installed one
sys.path.insert(0, str(REPO / "benchmarks"))  # sibling scripts: _results
from _results import command_line, run_info, run_main, write_json  # noqa: E402

TEXT_3B = {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
           "num_key_value_heads": 2, "max_position_embeddings": 128000,
           "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]}}
VISION_3B = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "window_size": 112,
             "fullatt_block_indexes": [7, 15, 23, 31], "out_hidden_size": 2048}
VOCAB_3B = 151936
# --small: the same vocabulary and code path at toy widths (the test of this script; seconds, not minutes).
TEXT_SMALL = {**TEXT_3B, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2,
              "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]}}
VISION_SMALL = {**VISION_3B, "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
                "fullatt_block_indexes": [1], "out_hidden_size": 128}
# Each mode: its sizes, its default snapshot folder and its default results file (never shared between modes).
MODES = {"3b": {"text": TEXT_3B, "vision": VISION_3B, "snapshot": "qwen2_5_vl_3b_random", "out": OUT},
         "small": {"text": TEXT_SMALL, "vision": VISION_SMALL, "snapshot": "qwen2_5_vl_small_random",
                   "out": RESULTS / "full_size_readiness_small.json"}}
CHECKED = {"text_config": ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                           "intermediate_size"),
           "vision_config": ("depth", "hidden_size", "num_heads", "intermediate_size")}
"""The config.json keys that tell the modes' snapshots apart (:func:`check_snapshot`)."""


def mode_of(args) -> str:
    return "small" if args.small else "3b"


def check_snapshot(folder: Path, mode: str) -> None:
    """Raise ``ValueError`` when ``folder`` holds a snapshot (``config.json``) whose sizes are not ``mode``'s, so a
    snapshot of the other mode is never reused or reported as this one. A folder without ``config.json`` passes."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--snapshot {folder}: config.json is not JSON ({exc}); delete the folder or give another "
                         "--snapshot") from exc
    want = {"text_config": MODES[mode]["text"], "vision_config": MODES[mode]["vision"]}
    found = {f"{part}.{k}": config.get(part, {}).get(k) for part, keys in CHECKED.items() for k in keys}
    expected = {f"{part}.{k}": want[part][k] for part, keys in CHECKED.items() for k in keys}
    if found != expected:
        other = [m for m in MODES if m != mode][0]
        differ = ", ".join(f"{k} {found[k]} (the {mode} mode's: {expected[k]})" for k in expected
                           if found[k] != expected[k])
        raise ValueError(f"--snapshot {folder} holds a snapshot that is not the {mode} mode's "
                         f"({'--small' if mode == 'small' else 'no --small'}): {differ}. Give the {mode} mode its own "
                         f"folder (default {Path(tempfile.gettempdir()) / MODES[mode]['snapshot']}), delete this one, "
                         f"or run the {other} mode ({'--small' if other == 'small' else 'without --small'}).")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", type=Path, default=None,
                    help="the snapshot folder, reused when it holds this mode's snapshot and refused when it holds "
                         "the other's (default: /tmp/qwen2_5_vl_3b_random, with --small /tmp/qwen2_5_vl_small_random)")
    ap.add_argument("--phase", choices=("all", "snapshot", "run"), default="all")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--image", default="224x224", help="HxW of the synthetic frame")
    ap.add_argument("--queries", type=int, default=16, help="engine queries after the training step")
    ap.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default=None,
                    help="dtype of the loaded base weights, as a user sets it: model.dtype=<this> (float32 also sets "
                         "train.mixed_precision=no). Default: float32 without CUDA (CPUs without AMX / AVX512-BF16 "
                         "emulate bf16 matmuls), else bfloat16 (the recipe as written)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results JSON (default benchmarks/results/full_size_readiness.json, with --small "
                         "benchmarks/results/full_size_readiness_small.json)")
    ap.add_argument("--small", action="store_true",
                    help="toy widths, same code path (tests); its own snapshot folder and results file")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)  # the phases' processes: the command as typed
    args = ap.parse_args(argv)
    mode = MODES[mode_of(args)]
    args.snapshot = args.snapshot or Path(tempfile.gettempdir()) / mode["snapshot"]
    args.out = args.out or mode["out"]
    args.command = args.command or command_line(argv, __file__)
    args.run_info = {**run_info(argv, __file__), "command": args.command}  # once: each record rewrites the file
    return args


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _record(args, phase: str, data: dict) -> None:
    out = args.out
    results = json.loads(out.read_text()) if out.exists() else {}
    if results.get("mode") != mode_of(args):  # another mode's record (or one from before modes): start anew
        results = {}
    phases = results.setdefault("phases", {})
    phases[phase] = {**phases.get(phase, {}), **data}  # a failure keeps what the phase had recorded
    results.update({"benchmark": "full_size_readiness", "mode": mode_of(args), "snapshot": str(args.snapshot),
                    **args.run_info})
    write_json(out, results)


def fill_random(model, seed: int, std: float, chunk: int = 1 << 24) -> None:
    """Seeded random weights, in place: norm scales 1, biases 0, every other tensor N(0, std²) drawn in float32
    chunks of ``chunk`` values and rounded to the parameter's dtype (the scale of the stock init, minutes faster).
    Buffers are left alone: the rotary ones are not saved and are recomputed when the snapshot is loaded."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied tensors appear once
            if p.dim() == 1:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            flat = p.view(-1)
            for i in range(0, flat.numel(), chunk):
                part = flat[i:i + chunk]
                part.copy_(torch.randn(part.numel(), generator=gen).mul_(std))


def make_snapshot(args) -> dict:
    """Phase 1: random bf16 3B weights saved as a hub-style snapshot folder."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from depthkit.complete.processor import build_tiny_processor
    from depthkit.complete.tiny import tiny_qwen2_5_vl_config, token_ids_from_tokenizer
    from depthkit.complete.tokenizer import build_offline_tokenizer

    t0 = time.perf_counter()
    tokenizer = build_offline_tokenizer()
    text, vision = MODES[mode_of(args)]["text"], MODES[mode_of(args)]["vision"]
    config = tiny_qwen2_5_vl_config(VOCAB_3B, token_ids_from_tokenizer(tokenizer), text=dict(text),
                                    vision=dict(vision), tie_word_embeddings=True)
    config.text_config.tie_word_embeddings = True
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # bf16 directly: a float32 copy would need 15 GB
    try:
        with torch.device("meta"):  # no storage and no initialisation: the stock init takes ~16 min in bf16
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(before)
    model = model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives the tied lm_head its own storage; share the embedding again
    fill_random(model, seed=0, std=config.text_config.initializer_range)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    args.snapshot.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.snapshot, max_shard_size="2GB")
    # Qwen's processor bounds (56x56 .. 1280 image tokens), as in the released preprocessor_config.json.
    build_tiny_processor(tokenizer, min_pixels=3136, max_pixels=12845056).save_pretrained(args.snapshot)
    save_s = time.perf_counter() - t0
    files = sorted(p.name for p in args.snapshot.iterdir())
    size = sum(p.stat().st_size for p in args.snapshot.iterdir()) / 2**30
    return {"params": params, "dtype": str(next(model.parameters()).dtype), "build_s": build_s, "save_s": save_s,
            "snapshot_gib": size, "files": files, "peak_rss_gib": _peak_rss_gib()}


def run_user_path(args) -> dict:
    """Phase 2: load the snapshot through the recipe, one LoRA training step, then engine queries."""
    with tempfile.TemporaryDirectory(prefix="full_size_run_") as run_dir:  # the trainer's output_dir (unused)
        return _run_user_path(args, run_dir)


def _run_user_path(args, run_dir: str) -> dict:
    import numpy as np
    import torch

    from depthkit.complete import prompts
    from depthkit.complete import train as T
    from depthkit.complete.engine import CompletionEngine
    from depthkit.complete.model import stock_model
    from depthkit.complete.train_data import TrainSteps, to_device
    from depthkit.config import load_recipe
    from depthkit.data.synthetic import render_scene

    h, w = (int(v) for v in args.image.split("x"))
    dtype = args.compute_dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    precision = ["train.mixed_precision=no"] if dtype == "float32" else []  # the recipe's bf16 autocast otherwise
    recipe = load_recipe(RECIPE, [f"model.dtype={dtype}", *precision,
        f"model.base={args.snapshot}", "data.datasets.hypersim.weight=0", "data.datasets.vkitti2.weight=0",
        "data.datasets.synthetic.weight=1", "data.subset_size=0", "data.synthetic.length=8",
        f"data.synthetic.height={h}", f"data.synthetic.width={w}", "train.batch_size=1", "train.max_steps=1",
        "train.num_workers=0", f"output.output_dir={run_dir}"])
    result = {"recipe": str(RECIPE.relative_to(REPO)), "image_hw": [h, w], "torch_threads": torch.get_num_threads(),
              "weights_dtype": recipe.model.dtype, "mixed_precision": recipe.train.mixed_precision,
              "load_average": os.getloadavg()}
    t0 = time.perf_counter()
    setup = T.setup_training(recipe, run_dir)  # load_base_model(snapshot) + load_processor + SDIM + LoRA
    result["load_and_attach_s"] = time.perf_counter() - t0
    result["params_total"] = sum(p.numel() for p in setup.sdim.parameters())
    result["params_trainable"] = sum(p.numel() for p in setup.params)
    result["peak_rss_after_load_gib"] = _peak_rss_gib()
    frozen = stock_model(setup.sdim).model.language_model.layers[0].mlp.down_proj
    result["loaded_dtype"] = str(getattr(frozen, "base_layer", frozen).weight.dtype)  # what the step computes in
    lora = {n: p.detach().clone() for n, p in setup.sdim.named_parameters() if p.requires_grad and "lora_" in n}
    _record(args, "run", {**result, "status": "loaded; training step running"})
    steps = TrainSteps(recipe, setup.mixed, setup.processor, stock_model(setup.sdim).config)
    batch = to_device(steps[0], setup.accelerator.device)
    result["step_tokens"] = int(batch["input_ids"].numel())
    result["image_tokens"] = int((batch["image_grid_thw"].prod(-1) // 4)[0])
    t0, cpu0 = time.perf_counter(), time.process_time()
    stats = T.train_step(setup, [batch], recipe.train.max_grad_norm)
    result["train_step_s"] = time.perf_counter() - t0
    result["train_step_cpu_s"] = time.process_time() - cpu0
    result["train_loss"] = stats.get("loss")
    after = dict(setup.sdim.named_parameters())
    changed = [n for n, before in lora.items() if not torch.equal(before, after[n].detach())]
    result["lora_tensors"], result["lora_tensors_changed"] = len(lora), len(changed)
    result["lora_max_abs_change"] = max((float((after[n].detach() - lora[n]).abs().max()) for n in changed),
                                        default=0.0)
    result["peak_rss_after_step_gib"] = _peak_rss_gib()
    _record(args, "run", {**result, "status": "trained one step; engine queries running"})
    sdim = setup.sdim.eval()
    engine = CompletionEngine(sdim, setup.processor, prompts.PromptConfig(recipe.prompts.prompt_prior,
                                                                          recipe.prompts.pixel_reference),
                              readout=recipe.prompts.readout, batch_size=args.queries, decode="constrained")
    scene = render_scene(11, h, w, "indoor")
    rng = np.random.default_rng(0)
    sparse = np.zeros((h, w), np.float32)
    idx = rng.choice(h * w, 500, replace=False)
    sparse.flat[idx] = scene.depth.flat[idx]
    missing = np.flatnonzero(sparse.ravel() == 0)
    pick = rng.choice(missing, args.queries, replace=False)
    rows, cols = np.unravel_index(pick, (h, w))
    with torch.no_grad():
        t0 = time.perf_counter()
        prefix = engine.encode(scene.image, sparse)
        result["engine_prefix_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        answers = engine.answer(prefix, rows, cols)
        result["engine_answer_s"] = time.perf_counter() - t0
    result["engine_answer_texts"] = list(answers.texts)
    result["engine_queries"] = int(args.queries)
    result["engine_readable"] = int(answers.ok.sum())
    result["peak_rss_gib"] = _peak_rss_gib()
    result["status"] = "done"
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    check_snapshot(args.snapshot, mode_of(args))  # before any work: never reuse or rebuild over the other mode's
    if args.phase == "all":  # each phase in its own process: separate peak RSS, memory returned in between
        for phase in ("snapshot", "run"):
            if phase == "snapshot" and (args.snapshot / "config.json").is_file():
                print(f"snapshot exists ({mode_of(args)} mode's sizes): {args.snapshot}")
                continue
            cmd = [sys.executable, __file__, "--phase", phase, "--snapshot", str(args.snapshot), "--threads",
                   str(args.threads), "--image", args.image, "--queries", str(args.queries), "--out", str(args.out),
                   "--command", args.command,
                   *(["--small"] if args.small else []),
                   *(["--compute-dtype", args.compute_dtype] if args.compute_dtype else [])]
            rc = subprocess.call(cmd, cwd=REPO)
            if rc != 0:
                print(f"phase {phase} failed (rc={rc}); see {args.out}", file=sys.stderr)
                return rc
        print(args.out.read_text())
        return 0
    if args.phase == "snapshot" and args.out.exists():  # a new snapshot starts a new record
        args.out.unlink()
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        data = make_snapshot(args) if args.phase == "snapshot" else run_user_path(args)
    except Exception as exc:  # record how far it got, then fail
        _record(args, args.phase, {"status": f"failed: {type(exc).__name__}: {exc}",
                                       "seconds": time.perf_counter() - t0, "peak_rss_gib": _peak_rss_gib()})
        raise
    data["seconds"] = time.perf_counter() - t0
    _record(args, args.phase, data)
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
