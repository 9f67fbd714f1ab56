"""Validation of the ``complete`` trainer: held-out sparse points of synthetic scenes, answered by the inference
engine.

Every ``train.eval_every`` steps and at the end the trainer asks ``eval.queries_per_scene`` held-out sparse points
of ``eval.num_scenes`` synthetic scenes from the ``val`` split (seeds disjoint from training; never trained on).
The points are removed from the sparse input and asked with mask 0, exactly as at inference, through
:class:`depthkit.complete.engine.CompletionEngine` (the stage's shared-prefix fast path): the text readout decodes
with ``eval.decode`` (``free`` by default: greedy over the full vocabulary, the model's own answer, template
included — so ``val_unparseable`` tells whether it has learned to write the answer; ``constrained``: what the stage
answers), the residual head reads its number from the last hidden state.

Reported (:func:`validate`): ``val_mae`` and ``val_rmse`` (metres, over readable answers), ``val_unparseable``
(fraction), ``val_queries``, and the references ``val_prior_mae`` / ``val_prior_rmse`` (the prompt prior itself;
only with a prompt prior) and ``val_median_mae`` (the median of the input points: what a model that ignores the pixel scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from depthkit.complete.batching import sample_training_queries

__all__ = ["ValidationScene", "validation_scenes", "validate"]


@dataclass
class ValidationScene:
    """One validation image and its held-out queries (pixels at input resolution)."""

    image: np.ndarray
    """HxWx3 uint8 RGB."""
    sparse: np.ndarray
    """HxW float32 metres, 0 = missing: the model's input (the held-out points removed)."""
    rows: np.ndarray
    """N int64 rows of the held-out points."""
    cols: np.ndarray
    """N int64 columns."""
    labels: np.ndarray
    """N metres: the held-out measurements."""
    priors: np.ndarray | None
    """N metres: the prompt prior at those pixels (None when ``prompt_prior`` is none)."""


def validation_scenes(recipe) -> list[ValidationScene]:
    """The held-out validation scenes (``val`` split of synthetic scenes; fixed seeds)."""
    from depthkit.data.datasets import SyntheticDataset

    e = recipe.eval
    ds = SyntheticDataset(split="val", length=e.num_scenes, height=e.height, width=e.width, kind=e.kind,
                          sparse_kwargs={"n": e.sparse_points})
    prior = recipe.prompts.prompt_prior
    out = []
    for i in range(len(ds)):
        item = ds[i]
        rng = np.random.default_rng([7, i])
        sparse_input, queries = sample_training_queries(item["image"], item["sparse"], None, e.queries_per_scene,
                                                        rng, "sparse", 0.0, 0.0, prior, recipe.data.min_sparse_points)
        if not queries:
            continue
        out.append(ValidationScene(
            image=item["image"], sparse=sparse_input, rows=np.array([q.row for q in queries], dtype=np.int64),
            cols=np.array([q.col for q in queries], dtype=np.int64), labels=np.array([q.label for q in queries]),
            priors=np.array([q.prior for q in queries]) if prior != "none" else None))
    return out


@torch.no_grad()
def validate(sdim, head, processor, scenes: list[ValidationScene], recipe) -> dict:
    """``val_mae``, ``val_rmse``, ``val_unparseable``, ``val_prior_mae``, ``val_prior_rmse``, ``val_median_mae``,
    ``val_queries`` over ``scenes`` (errors pooled over all queries, metres)."""
    from depthkit.complete.engine import CompletionEngine
    from depthkit.complete.prompts import PromptConfig

    p, e = recipe.prompts, recipe.eval
    was_training = sdim.training
    sdim.eval()
    errors, priors, medians, unparseable, total = [], [], [], 0, 0
    try:
        engine = CompletionEngine(sdim, processor, PromptConfig(p.prompt_prior, p.pixel_reference, mask_text=p.mask_text),
                                  readout=p.readout,
                                  residual_head=head, batch_size=e.batch_queries, decode=e.decode,
                                  max_new_tokens=e.max_new_tokens)
        for scene in scenes:
            labels = scene.labels
            total += labels.size
            median = float(np.median(scene.sparse[scene.sparse > 0]))
            medians += list(np.abs(labels - median))
            if scene.priors is not None:
                priors += list(np.abs(labels - scene.priors))
            answers = engine.answer(engine.encode(scene.image, scene.sparse), scene.rows, scene.cols, scene.priors)
            unparseable += int((~answers.ok).sum())
            errors += list(np.abs(answers.values[answers.ok].astype(np.float64) - labels[answers.ok]))
    finally:
        sdim.train(was_training)
    out = {"val_mae": float(np.mean(errors)) if errors else math.nan,
           "val_rmse": float(np.sqrt(np.mean(np.square(errors)))) if errors else math.nan,
           "val_unparseable": unparseable / max(1, total), "val_median_mae": float(np.mean(medians)),
           "val_queries": total}
    if priors:
        out["val_prior_mae"] = float(np.mean(priors))
        out["val_prior_rmse"] = float(np.sqrt(np.mean(np.square(priors))))
    return out
