"""Step time and peak memory of one stage-1 training step: the full Qwen2.5-VL-3B architecture, random weights, bf16.

Usage (from the repository root)::

    python benchmarks/complete_train_step.py                          # CUDA: 3B architecture, the 3B recipe's settings
    python benchmarks/complete_train_step.py --tiny                   # same code, the tiny recipe's sizes (CPU smoke test)
    python benchmarks/complete_train_step.py --tiny --compare-sharing --queries 32 --image 168x168
                                                                      # kv_cache vs packed vs replicate (batching.py)

What runs is exactly the training code: ``recipes/complete/qwen2_5_vl_3b_lora.yaml`` loaded with overrides that
swap the hub model for ``model.base=tiny`` at the 3B sizes (text hidden 2048, 36 layers, 16 heads / 2 KV heads, MLP
11008, 151,936-row tied embedding; vision hidden 1280, depth 32, window 112, full attention in blocks 7/15/23/31;
random init — no download) and the datasets for synthetic scenes at ``--image`` (default 768x1024, Hypersim's frame
size), then :func:`depthkit.complete.train.setup_training` (accelerate, bf16 autocast, gradient checkpointing,
LoRA r=16 on the language model, depth modules trained) and :func:`~depthkit.complete.train.train_step`. Batches
are built before timing (the data pipeline is timed separately: ``data_s_per_step``). ``--steps`` timed steps
follow one warm-up step; ``step_time_s`` is their median. Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA,
peak RSS (``resource.getrusage``) on the CPU.

Without ``--tiny`` the full 3B architecture is built, which needs CUDA: on a machine without it (or with ``--device
cpu``) the script stops before building anything and suggests ``--tiny``, unless ``--full-size-on-cpu`` says the CPU
run is meant (minutes per step and ~60 GB of RAM).

Results go to ``benchmarks/results/complete_train_step[_tiny].json`` (with the date, command, machine and depthkit
version) and a markdown line is printed. The 3B numbers are not in the repository yet: the session that wrote this
script had no GPU (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import run_info, run_main, write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "complete" / "qwen2_5_vl_3b_lora.yaml"
TINY_RECIPE = REPO / "recipes" / "tiny" / "complete.yaml"

QWEN2_5_VL_3B = {
    "hidden_size": 2048, "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
    "intermediate_size": 11008, "rope_theta": 1_000_000.0, "vision_hidden_size": 1280, "vision_depth": 32,
    "vision_num_heads": 16, "vision_intermediate_size": 3420, "tie_word_embeddings": True,
    "vision_window_size": 112, "vision_fullatt_block_indexes": "[7,15,23,31]", "vocab_size": 151936,
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny recipe's model sizes (runs on a CPU in seconds)")
    ap.add_argument("--device", choices=("auto", "cpu"), default="auto",
                    help="cpu hides CUDA; auto uses CUDA when present. Without --tiny, a run without CUDA is refused "
                         "unless --full-size-on-cpu")
    ap.add_argument("--full-size-on-cpu", action="store_true",
                    help="build the full 3B architecture even without CUDA (minutes per step, ~60 GB of RAM); "
                         "without it such a run stops with an error suggesting --tiny")
    ap.add_argument("--image", default=None, help="HxW of the synthetic frames (default 768x1024; --tiny 168x168)")
    ap.add_argument("--batch", type=int, default=2, help="images per step (the 3B recipe: 2 per GPU)")
    ap.add_argument("--queries", type=int, default=1, help="queries per image (the paper: 1)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--compare-sharing", action="store_true",
                    help="time forward+backward of the three prefix-sharing layouts instead (no optimizer)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = ap.parse_args(argv)
    for option in ("batch", "queries", "steps", "threads"):  # before the model is built (--steps 0: no median)
        value = getattr(args, option)
        if value is not None and value < 1:
            ap.error(f"--{option} must be >= 1; received {value}.")
    if args.image is not None and not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", args.image):
        ap.error(f"--image takes HEIGHTxWIDTH in pixels, e.g. 168x168; received {args.image!r}.")
    return args


def build_recipe(args, run_dir: str):
    """The 3B recipe with the benchmark's overrides (or, for ``--tiny --compare-sharing``, the tiny recipe)."""
    import torch

    from depthkit.config import load_recipe

    h, w = (int(v) for v in (args.image or ("168x168" if args.tiny else "768x1024")).split("x"))
    common = [f"data.synthetic.height={h}", f"data.synthetic.width={w}", "data.synthetic.length=64",
              f"data.queries_per_image={args.queries}", f"train.batch_size={args.batch}", "train.grad_accum=1",
              "train.max_steps=100", "train.num_workers=0", f"output.output_dir={run_dir}"]
    if args.tiny and args.compare_sharing:  # where the layout choice matters: many queries per small image
        return load_recipe(TINY_RECIPE, common + [f"model.max_pixels={max(h * w, 784)}"])
    overrides = common + ["model.base=tiny", "data.datasets.hypersim.weight=0", "data.datasets.vkitti2.weight=0",
                          "data.datasets.synthetic.weight=1", "data.subset_size=0"]
    if args.tiny:
        tiny = load_recipe(TINY_RECIPE).model.tiny
        overrides += [f"model.tiny.{k}={getattr(tiny, k)}" for k in ("hidden_size", "num_hidden_layers",
                                                                     "num_attention_heads", "num_key_value_heads",
                                                                     "intermediate_size", "vision_hidden_size",
                                                                     "vision_depth", "vision_num_heads",
                                                                     "vision_intermediate_size")]
        overrides += [f"model.max_pixels={max(h * w, 784)}"]
    else:
        overrides += [f"model.tiny.{k}={v}" for k, v in QWEN2_5_VL_3B.items()]
    if not torch.cuda.is_available():
        overrides.append("model.dtype=float32")  # bf16 matmuls on a CPU are slow and not what a GPU run does
    if args.compare_sharing:
        overrides += ["train.gradient_checkpointing=false"]
    return load_recipe(RECIPE, overrides)


def _peak_memory_gib(torch) -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _sync(torch):
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_step_benchmark(args, recipe) -> dict:
    import torch

    from depthkit.complete import train as T
    from depthkit.complete.model import stock_model
    from depthkit.complete.train_data import TrainSteps, to_device

    run_dir = recipe.output.output_dir
    t = time.perf_counter()
    setup = T.setup_training(recipe, run_dir)
    build_s = time.perf_counter() - t
    acc = setup.accelerator
    steps = TrainSteps(recipe, setup.mixed, setup.processor, stock_model(setup.sdim).config)
    t = time.perf_counter()
    batches = [steps[k] for k in range(args.steps + 1)]
    data_s = (time.perf_counter() - t) / len(batches)
    batches = [to_device(b, acc.device) for b in batches]
    times, stats = [], {}
    for i, batch in enumerate(batches):
        _sync(torch)
        t = time.perf_counter()
        stats = T.train_step(setup, [batch], recipe.train.max_grad_norm)
        _sync(torch)
        if i > 0:
            times.append(time.perf_counter() - t)
    inner = stock_model(setup.sdim)
    b0 = batches[0]
    return {
        "what": "one optimizer step (forward + backward + AdamW), CompleterObjective via setup_training/train_step",
        "arch": "tiny recipe sizes" if args.tiny else "Qwen2.5-VL-3B (random weights)",
        "device": str(acc.device), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "mixed_precision": acc.mixed_precision, "weights_dtype": recipe.model.dtype,
        "gradient_checkpointing": recipe.train.gradient_checkpointing, "layout": recipe.data.prefix_sharing,
        "params_total": sum(p.numel() for p in setup.model.parameters()),
        "params_trainable": sum(p.numel() for p in setup.params),
        "text_hidden": inner.config.text_config.hidden_size, "text_layers": inner.config.text_config.num_hidden_layers,
        "image_hw": [recipe.data.synthetic.height, recipe.data.synthetic.width],
        "image_tokens_per_image": int((b0["image_grid_thw"].prod(-1) // 4)[0]),
        "batch_images": args.batch, "queries_per_image": args.queries,
        "tokens_per_step": int(b0["input_ids"].numel() + b0.get("prefix_ids", b0["input_ids"][:0]).numel()),
        "step_time_s": statistics.median(times), "step_times_s": times, "peak_memory_gib": _peak_memory_gib(torch),
        "data_s_per_step": data_s, "setup_s": build_s, "loss": stats.get("loss"),
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }


def run_sharing_comparison(args, recipe) -> dict:
    import numpy as np
    import torch

    from depthkit.complete import prompts as P
    from depthkit.complete import train as T
    from depthkit.complete.batching import encode_group, pack_groups, sample_training_queries
    from depthkit.complete.model import stock_model
    from depthkit.complete.readout import digit_token_ids
    from depthkit.complete.train_data import build_datasets

    sdim, processor, head = T.build_completer(recipe)
    mixed = build_datasets(recipe)
    cfg = stock_model(sdim).config
    prompts = P.PromptConfig(recipe.prompts.prompt_prior, recipe.prompts.pixel_reference)
    groups = []
    for j in range(args.batch):
        item = mixed.get(j, 0)
        sp, qs = sample_training_queries(item["image"], item["sparse"], None, args.queries,
                                         np.random.default_rng(j), "sparse", 0.1, 0.0, recipe.prompts.prompt_prior)
        groups.append(encode_group(processor, item["image"], sp, qs, prompts, recipe.sdim,
                                   with_answers=recipe.loss.reads_answers))
    objective = T.CompleterObjective(sdim, head, digit_token_ids(processor.tokenizer), recipe.loss).train()
    out = {"what": "forward + backward of one batch per layout (no optimizer)", "batch_images": args.batch,
           "queries_per_image": args.queries, "image_hw": [recipe.data.synthetic.height, recipe.data.synthetic.width],
           "torch_threads": torch.get_num_threads(), "layouts": {}}
    for layout in ("kv_cache", "packed", "replicate"):
        batch = pack_groups(groups, cfg, recipe.prompts.pixel_reference, pad_id=0, layout=layout)
        times = []
        for _ in range(args.steps + 1):
            t = time.perf_counter()
            loss, _ = objective(batch)
            loss.backward()
            objective.zero_grad()
            times.append(time.perf_counter() - t)
        out["layouts"][layout] = {"seconds": statistics.median(times[1:]), "loss": float(loss),
                                  "tokens": int(batch["input_ids"].numel())}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not args.tiny and not torch.cuda.is_available() and not args.full_size_on_cpu:
        why = "--device cpu was given" if args.device == "cpu" else f"CUDA is not available here (torch {torch.__version__})"
        raise ValueError(f"the full 3B architecture needs a CUDA GPU, and {why}: on a CPU it takes minutes per step and "
                         "~60 GB of RAM. Use --tiny for the same code at tiny sizes, or add --full-size-on-cpu if the "
                         "CPU run is meant.")
    with tempfile.TemporaryDirectory() as run_dir:
        recipe = build_recipe(args, run_dir)
        result = run_sharing_comparison(args, recipe) if args.compare_sharing else run_step_benchmark(args, recipe)
    name = "complete_prefix_sharing" if args.compare_sharing else "complete_train_step"
    out = args.out or REPO / "benchmarks" / "results" / f"{name}{'_tiny' if args.tiny else ''}.json"
    write_json(out, {"benchmark": name, **run_info(argv, __file__, result.get("device", "cpu")), **result})
    if args.compare_sharing:
        print("| layout | s / step (fwd+bwd) | tokens |\n|---|---|---|")
        for k, v in result["layouts"].items():
            print(f"| {k} | {v['seconds']:.3f} | {v['tokens']} |")
    else:
        print(f"| {result['arch']} | {result['device']} | {result['image_hw'][0]}x{result['image_hw'][1]} x "
              f"{result['batch_images']} | {result['step_time_s']:.3f} s/step | peak {result['peak_memory_gib']:.2f} "
              f"GiB | {result['params_trainable'] / 1e6:.1f}M / {result['params_total'] / 1e6:.1f}M trainable |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
