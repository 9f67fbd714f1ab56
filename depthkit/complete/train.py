"""``depthkit train`` for ``kind: complete``: SDIM on Qwen2.5-VL (SPEC section 3), one loop for a CPU and for GPUs.

What one optimizer step does (``train.batch_size`` images per process per micro-step, ``train.grad_accum``
micro-steps): micro-step ``k``'s samples come from :class:`depthkit.training.StepSampler` (a pure function of the
seed and ``k``), each sample gets ``data.queries_per_image`` queries (:mod:`depthkit.complete.batching`), the groups
are packed, and :class:`CompleterObjective` returns answer-token cross-entropy + optional numeric L1 on expected
digits + residual-head L1. Everything random in a step is seeded by ``(seed, step, rank)``, so ``--resume`` from a
checkpoint written at step s continues exactly as the uninterrupted run would have (weights, optimizer moments,
schedule and data order are restored; checked by the tests).

Run folder (``output.output_dir``)::

    log.jsonl                          one JSON row per log / validation event (loss, lr, throughput, val MAE)
    checkpoints/step_0000100/          resumable state (depthkit.run_state.save_state: atomic, newest ``keep_last``)
    final/depthkit.json, final/recipe.yaml, final/complete/     the exported checkpoint (SPEC section 5 layout)

Scale-out is accelerate's: ``accelerate launch [--config_file recipes/accelerate/...] -m depthkit.cli train R``
runs one process per GPU (DDP by default; the FSDP / DeepSpeed examples under ``recipes/accelerate/``), bf16 via
``train.mixed_precision``, gradient checkpointing via ``train.gradient_checkpointing``. Resumable state holds only
trainable tensors (LoRA + depth modules + head for the 3B recipe), gathered with ``accelerator.get_state_dict``.
The optimizer state is rank 0's under DDP (replicated); under FSDP / DeepSpeed every process's shard is gathered
(``optimizer``, ``optimizer_rank1``, ...) and a resume must use the same number of processes and the same
distributed type (both recorded in the checkpoint's ``meta.json`` and checked). Under FSDP (version 1, the shipped
config) validation and the final export run inside ``summon_full_params`` (outside a forward FULL_SHARD keeps only
each rank's shard of the parameters the validation engine and ``save_pretrained`` read).

What has run: single-process, DDP (``accelerate launch`` with 2 CPU processes, gloo) and the FSDP config launched on
2 CPU processes (tests/test_scale_out.py, ``@slow``) — which is DDP too: accelerate 1.15 turns ``distributed_type:
FSDP`` + ``use_cpu`` into MULTI_CPU (DDP) and torch's FSDP1 refuses CPU devices ("FSDP needs a non-CPU accelerator
device"), so the trainer warns when an FSDP config does not give FSDP. The FSDP and DeepSpeed paths themselves
(sharded optimizer state, ``summon_full_params``) have not run yet: they need CUDA.

Data (:mod:`depthkit.complete.train_data`: datasets and the packed batch of each micro-step) and validation
(:mod:`depthkit.complete.validation`: held-out points answered through the inference engine, every
``train.eval_every`` steps and at the end) live in their own modules; this one holds the model set-up, the
objective and the loop. The run folder, seeds, resumable state and the final export come from
:mod:`depthkit.training`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from depthkit.complete import prompts
from depthkit.complete.model import stock_model
from depthkit.complete.readout import ResidualHead, digit_token_ids, expected_digit_value, laplace_nll, residual_l1_loss
from depthkit.complete.train_data import TrainSteps, build_datasets, to_device
from depthkit.complete.validation import validate, validation_scenes
from depthkit.dtypes import torch_dtype
from depthkit.training import MixedDataset

__all__ = ["train", "build_completer", "CompleterObjective", "run_packed", "setup_training", "train_step",
           "TrainingSetup"]


# ------------------------------------------------------------------------------------------------------------- model


def build_completer(recipe, seed: int = 0):
    """``(sdim_model, processor, residual_head or None)`` set up for training as ``recipe`` says (trainable flags,
    float32 trainable weights, gradient checkpointing). Deterministic for a given seed."""
    from depthkit.complete.checkpoint import load_base_model
    from depthkit.complete.model import SDIMModel, apply_lora
    from depthkit.complete.processor import load_processor
    from depthkit.complete.tiny import build_tiny_base

    m = recipe.model
    if m.base == "tiny":
        base, processor = build_tiny_base(m.tiny, seed=seed, min_pixels=m.min_pixels, max_pixels=m.max_pixels)
        base = base.to(torch_dtype(m.dtype))
    else:
        base = load_base_model(m.base, dtype=m.dtype, attn_implementation=m.attn_implementation)
        processor = load_processor(m.base, min_pixels=m.min_pixels, max_pixels=m.max_pixels)
    base.set_attn_implementation(m.attn_implementation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sdim = SDIMModel(base, recipe.sdim)
        head = None
        if recipe.prompts.readout == "residual_head":
            head = ResidualHead(base.config.text_config.hidden_size, recipe.prompts.max_log_correction,
                                prior_input=recipe.prompts.head_prior_input)
    lora = recipe.lora
    if lora.enabled:
        apply_lora(sdim, r=lora.r, alpha=lora.alpha, dropout=lora.dropout, train_vision=lora.train_vision)
    else:
        for p in sdim.base.parameters():
            p.requires_grad_(lora.full_finetune)
        if lora.train_vision:
            for p in stock_model(sdim).model.visual.parameters():
                p.requires_grad_(True)
        for p in sdim.depth_parameters():
            p.requires_grad_(True)
    if not recipe.loss.reads_answers and not stock_model(sdim).config.tie_word_embeddings:
        stock_model(sdim).lm_head.requires_grad_(False)  # unused: DDP would wait for its gradient forever
    if head is not None:  # parts of the head no loss term reaches: DDP would wait for their gradients too
        if recipe.loss.residual_nll == 0:
            head.log_scale.requires_grad_(False)  # the uncertainty: trained by the NLL term alone
        if recipe.loss.residual_l1 == 0:
            head.net[-1].requires_grad_(False)  # the correction: the NLL term sees it detached
            if recipe.loss.residual_nll == 0:
                head.requires_grad_(False)  # no head term at all
    for p in sdim.parameters():  # optimizer moments of bf16 weights lose too much precision
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    for module in (sdim.depth_branch, sdim.proj2):  # their BN statistics too (BN refuses mixed dtypes)
        if module is not None:
            module.float()
    if recipe.train.gradient_checkpointing:
        stock_model(sdim).activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return sdim, processor, head


def run_packed(sdim, batch: dict) -> torch.Tensor:
    """Last hidden states (rows x L x D) of ``batch["input_ids"]`` for a batch from
    :func:`depthkit.complete.batching.pack_groups` (any layout)."""
    inner = stock_model(sdim)
    depth = (batch["sparse_pixels"], batch["rgb_pixels"], batch["image_grid_thw"])
    if batch["layout"] == "kv_cache":
        with sdim.inject(*depth):
            pre = inner.model(input_ids=batch["prefix_ids"], attention_mask=batch["prefix_attention"],
                              position_ids=batch["prefix_position_ids"], pixel_values=batch["pixel_values"],
                              image_grid_thw=batch["image_grid_thw"], use_cache=True)
        cache = pre.cache
        if cache is None:
            raise RuntimeError("the prefix pass returned no KV cache (gradient checkpointing drops it); use "
                               "data.prefix_sharing=packed with train.gradient_checkpointing=true.")
        cache.batch_select_indices(batch["suffix_group"])  # differentiable gather: gradients reach the prefix
        out = inner.model(input_ids=batch["input_ids"], attention_mask=batch["suffix_attention"],
                          position_ids=batch["position_ids"], cache=cache, use_cache=True)
        return out.last_hidden_state
    allowed = batch["allowed"][:, None]
    if inner.config._attn_implementation == "sdpa":
        mask = allowed
    else:  # eager adds the mask to the scores
        mask = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
        mask = mask.masked_fill(~allowed, torch.finfo(torch.float32).min)
    with sdim.inject(*depth):
        out = inner.model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"],
                          pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"], use_cache=False)
    return out.last_hidden_state


def numeric_targets(labels: torch.Tensor) -> torch.Tensor:
    """The numbers the answers spell (``Q`` metres, float32 on ``labels``' device): each label through
    :func:`prompts.format_depth` (3 decimals, clipped), so the numeric L1 aims at the digits the cross-entropy
    teaches; rounding the float32 labels themselves differed by 1 mm on about 0.2 % of them (float32 ties)."""
    values = [float(prompts.format_depth(v)) for v in labels.detach().cpu().double().tolist()]
    return torch.tensor(values, dtype=torch.float32, device=labels.device)


class CompleterObjective(nn.Module):
    """The training forward: SDIM model (+ residual head) and the losses of ``recipe.loss``.

    ``forward(batch) -> (loss, stats)``; one module so that DDP/FSDP wrap everything that takes gradients.
    """

    def __init__(self, sdim, head: nn.Module | None, digit_ids: list[int], loss_cfg):
        super().__init__()
        self.sdim, self.head, self.loss_cfg = sdim, head, loss_cfg
        self.digit_ids = list(digit_ids)

    def forward(self, batch: dict):
        cfg = self.loss_cfg
        hidden = run_packed(self.sdim, batch)
        total = hidden.new_zeros((), dtype=torch.float32)
        stats = {}
        labels = batch["query_label"]
        if cfg.reads_answers:
            tp = batch["target_pos"]
            logits = stock_model(self.sdim).lm_head(hidden[tp[:, 0], tp[:, 1]]).float()
            ce = nn.functional.cross_entropy(logits, batch["target_ids"])
            stats["ce"] = ce.detach()
            if cfg.cross_entropy > 0:
                total = total + cfg.cross_entropy * ce
            if cfg.numeric_l1 > 0:
                value = expected_digit_value(logits, batch["target_places"], self.digit_ids,
                                             index=batch["target_query"], num_values=labels.numel())
                number = numeric_targets(labels)
                l1 = (value - number).abs().mean()
                stats["numeric_l1"] = l1.detach()
                total = total + cfg.numeric_l1 * l1
        if self.head is not None:
            qp = batch["query_pos"]
            pred, scale = self.head.predict_with_scale(hidden[qp[:, 0], qp[:, 1]], batch["query_head_prior"])
            l1 = residual_l1_loss(pred, labels, space=cfg.residual_space)
            stats["residual_l1"] = l1.detach()
            stats["head_mae"] = (pred.detach() - labels).abs().mean()
            if cfg.residual_l1 > 0:
                total = total + cfg.residual_l1 * l1
            if cfg.residual_nll > 0:  # the head's uncertainty (Laplace scale of its log error)
                nll = laplace_nll(pred, scale, labels)
                stats["residual_nll"] = nll.detach()
                total = total + cfg.residual_nll * nll
        stats["loss"] = total.detach()
        return total, stats


# ------------------------------------------------------------------------------------------------------------- loop


def _export(run_dir: Path, recipe, sdim, processor, head) -> Path:
    """Write ``<run>/final`` (``complete/``, ``recipe.yaml``, ``depthkit.json``) atomically."""
    from depthkit.checkpoints import write_manifest
    from depthkit.complete.checkpoint import save_complete
    from depthkit.config import recipe_to_yaml
    from depthkit.run_state import atomic_export

    settings = {"prompt_prior": recipe.prompts.prompt_prior, "pixel_reference": recipe.prompts.pixel_reference,
                "readout": recipe.prompts.readout, "mask_text": recipe.prompts.mask_text, "trained_with": "depthkit train (kind: complete)"}
    if recipe.model.base != "tiny":
        settings["base_model_source"] = recipe.model.base

    def write(tmp: Path) -> None:
        save_complete(tmp / "complete", sdim, processor, settings, residual_head=head)
        (tmp / "recipe.yaml").write_text(recipe_to_yaml(recipe))
        write_manifest(tmp, {"complete": {"method": "sdim"}})

    return atomic_export(run_dir / "final", write)


def _identity(batch):
    return batch


def _sharded(accelerator) -> bool:
    return accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")


def _warn_if_not_sharded(accelerator) -> None:
    """Say so when ``accelerate launch`` was given an FSDP / DeepSpeed config but the run is not sharded (accelerate
    silently runs DDP on CPU processes: FSDP and DeepSpeed need accelerator devices)."""
    import os

    for env, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")):
        if os.environ.get(env, "false").lower() == "true" and accelerator.distributed_type.name != name:
            accelerator.print(f"depthkit train: warning: the accelerate config asks for {name} but this run is "
                              f"{accelerator.distributed_type.name} (on CPU processes accelerate falls back to DDP; "
                              f"{name} needs CUDA devices). Checkpoints record the distributed type actually used.")


def _full_params(setup):
    """Context in which every rank holds the full parameters: FSDP1's ``summon_full_params`` (collective: all ranks
    must enter), a no-op otherwise."""
    import contextlib

    if setup.accelerator.distributed_type.name != "FSDP":
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(setup.model, writeback=False)


@dataclass
class TrainingSetup:
    """Everything a training step needs; built by :func:`setup_training` (also used by the benchmark)."""

    accelerator: object
    model: nn.Module
    """The prepared :class:`CompleterObjective` (DDP/FSDP-wrapped when distributed)."""
    optimizer: object
    scheduler: object
    params: list
    """Trainable parameters (for clipping)."""
    sdim: nn.Module
    head: nn.Module | None
    processor: object
    mixed: MixedDataset
    steps_total: int
    saved_keys: set


def setup_training(recipe, run_dir) -> TrainingSetup:
    """Accelerator, model, optimizer (AdamW; no weight decay on biases/norms), LR schedule and data for ``recipe``."""
    from depthkit.training import build_accelerator, build_scheduler, total_steps

    tc = recipe.train
    accelerator = build_accelerator(tc, run_dir)
    _warn_if_not_sharded(accelerator)
    sdim, processor, head = build_completer(recipe, seed=tc.seed)
    mixed = build_datasets(recipe)
    steps_total = total_steps(tc, len(mixed), accelerator.num_processes)
    objective = CompleterObjective(sdim, head, digit_token_ids(processor.tokenizer), recipe.loss)
    trainable = [(n, p) for n, p in objective.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("nothing to train: every parameter is frozen; check the lora section.")
    optimizer = torch.optim.AdamW([{"params": [p for _, p in trainable if p.dim() >= 2], "weight_decay": tc.weight_decay},
                                   {"params": [p for _, p in trainable if p.dim() < 2], "weight_decay": 0.0}], lr=tc.lr)
    scheduler = build_scheduler(optimizer, tc, steps_total)
    saved_keys = {n for n, _ in trainable} | {n for n, _ in objective.named_buffers()
                                              if n.startswith(("sdim.depth_branch", "sdim.proj2", "head."))}
    objective.train()
    model, optimizer = accelerator.prepare(objective, optimizer)
    return TrainingSetup(accelerator, model, optimizer, scheduler, [p for _, p in trainable], sdim, head, processor,
                         mixed, steps_total, saved_keys)


def train_step(setup: TrainingSetup, batches: list[dict], max_grad_norm: float) -> dict:
    """One optimizer step over ``batches`` (one per micro-step, already on the device); returns mean stats."""
    acc = setup.accelerator
    out: dict[str, float] = {}
    for batch in batches:
        with acc.accumulate(setup.model):
            loss, stats = setup.model(batch)
            acc.backward(loss)
            if acc.sync_gradients and max_grad_norm > 0:
                acc.clip_grad_norm_(setup.params, max_grad_norm)
            setup.optimizer.step()
            setup.optimizer.zero_grad()
        for k, v in stats.items():
            out[k] = out.get(k, 0.0) + float(v) / len(batches)
    setup.scheduler.step()
    return out


def _save(setup: TrainingSetup, run_dir: Path, done: int, keep_last: int) -> None:
    from depthkit.run_state import save_state

    acc = setup.accelerator
    full = acc.get_state_dict(setup.model)
    state = {"model": {k: v.detach().cpu().clone() for k, v in full.items() if k in setup.saved_keys},
             "scheduler": setup.scheduler.state_dict()}
    if _sharded(acc):  # each process holds its own optimizer shard
        from accelerate.utils import gather_object

        opt_states = gather_object([setup.optimizer.state_dict()])
    else:  # replicated: every process has the same state
        opt_states = [setup.optimizer.state_dict()]
    state["optimizer"] = opt_states[0]
    for r in range(1, len(opt_states)):
        state[f"optimizer_rank{r}"] = opt_states[r]
    if acc.is_main_process:
        save_state(run_dir, done, state, meta={"world_size": acc.num_processes, "steps_total": setup.steps_total,
                                               "distributed_type": acc.distributed_type.name}, keep_last=keep_last)
    acc.wait_for_everyone()


def _resume(setup: TrainingSetup, run_dir: Path) -> int:
    from depthkit.run_recipe import load_resumed_weights
    from depthkit.run_state import load_latest_state

    acc = setup.accelerator
    found = load_latest_state(run_dir, max_steps=setup.steps_total, world_size=acc.num_processes)
    if found is None:  # prepare_run_dir said so
        return 0
    start, state, meta = found
    kind = acc.distributed_type.name
    if meta.get("distributed_type", kind) != kind:
        raise ValueError(f"the checkpoint in {run_dir} was written by a {meta['distributed_type']} run; this run is "
                         f"{kind}. Resume with the same accelerate config (optimizer shards differ between them).")
    missing = sorted(setup.saved_keys - set(state["model"]))
    if missing:
        raise ValueError(f"the checkpoint at step {start} in {run_dir} does not match this recipe's model (missing "
                         f"{', '.join(missing[:5])}); resume with the recipe it was trained with.")
    result = load_resumed_weights(acc.unwrap_model(setup.model), state["model"],
                                  f"the checkpoint at step {start} in {run_dir}", strict=False)
    if result.unexpected_keys:  # a name the model does not have would otherwise be dropped silently
        raise ValueError(f"the checkpoint at step {start} in {run_dir} holds weights this model does not have "
                         f"({', '.join(sorted(result.unexpected_keys)[:5])}); resume with the recipe and accelerate "
                         "config it was trained with.")
    rank = acc.process_index
    setup.optimizer.load_state_dict(state.get("optimizer" if rank == 0 else f"optimizer_rank{rank}", state["optimizer"]))
    setup.scheduler.load_state_dict(state["scheduler"])
    acc.print(f"depthkit train: resumed from step {start} of {setup.steps_total}")
    return start


def train(recipe, resume: bool = False) -> Path:
    """Train as ``recipe`` (a :class:`depthkit.complete.recipe.CompleteRecipe`) says; returns ``<run>/final``."""
    from depthkit.run_state import JsonlLogger, prepare_run_dir
    from depthkit.training import step_seed

    tc = recipe.train
    run_dir = prepare_run_dir(recipe.output.output_dir, resume, recipe)
    setup = setup_training(recipe, run_dir)
    acc = setup.accelerator
    rank, world = acc.process_index, acc.num_processes
    start = _resume(setup, run_dir) if resume else 0
    logger = JsonlLogger(run_dir, enabled=acc.is_main_process)
    steps = TrainSteps(recipe, setup.mixed, setup.processor, stock_model(setup.sdim).config, rank, world)
    micro = tc.grad_accum
    loader = torch.utils.data.DataLoader(steps, batch_size=None,
                                         sampler=range(start * micro, setup.steps_total * micro),
                                         num_workers=tc.num_workers, collate_fn=_identity)
    val_scenes = validation_scenes(recipe)
    batches = iter(loader)
    t0, images, queries, tokens = time.perf_counter(), 0, 0, 0
    for step in range(start, setup.steps_total):
        torch.manual_seed(step_seed(tc.seed, step, rank))  # dropout etc.: a function of the step, so resume matches
        micro_batches = [to_device(next(batches), acc.device) for _ in range(micro)]
        lr = setup.scheduler.get_last_lr()[0]  # the rate this step runs at (train_step moves the schedule on)
        stats = train_step(setup, micro_batches, tc.max_grad_norm)
        for b in micro_batches:
            images += int(b["image_grid_thw"].shape[0])
            queries += int(b["query_pos"].shape[0])
            tokens += int(b["input_ids"].numel() + b.get("prefix_ids", b["input_ids"][:0]).numel())
        done = step + 1
        if done % max(1, tc.log_every) == 0 or done == setup.steps_total:
            dt = max(time.perf_counter() - t0, 1e-9)
            logger.log(step=done, lr=lr, **stats, steps_per_s=(done - start) / dt,
                       images_per_s=images * world / dt, queries_per_s=queries * world / dt,
                       tokens_per_s=tokens * world / dt)
        if (tc.eval_every > 0 and done % tc.eval_every == 0) or done == setup.steps_total:
            with acc.autocast(), _full_params(setup):
                logger.log(step=done, **validate(setup.sdim, setup.head, setup.processor, val_scenes, recipe))
        if (tc.save_every > 0 and done % tc.save_every == 0) or done == setup.steps_total:
            _save(setup, run_dir, done, tc.keep_last)
    final = run_dir / "final"
    with _full_params(setup):
        if acc.is_main_process:
            final = _export(run_dir, recipe, acc.unwrap_model(setup.model).sdim, setup.processor, setup.head)
        acc.wait_for_everyone()
    acc.end_training()
    return final
