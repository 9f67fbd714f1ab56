"""The ``complete`` trainer's data: training datasets from the recipe, and the packed batch of every micro-step.

:func:`build_datasets` reads ``data.datasets`` into a :class:`depthkit.training.MixedDataset` (a fixed list, or a
seeded ``data.subset_size`` subset drawn by weight). :class:`TrainSteps` item ``k`` is the packed batch of global
micro-step ``k`` for one process: its samples come from :class:`depthkit.training.StepSampler`, each gets
``data.queries_per_image`` queries (:func:`depthkit.complete.batching.sample_training_queries`, seeded by
``(seed, k, rank, sample, attempt)``), and the groups are packed (:func:`depthkit.complete.batching.pack_groups`).
Everything is a pure function of the recipe, the seed, the rank and ``k``, so DataLoader workers and resumed runs
produce the same batches.
"""

from __future__ import annotations

import numpy as np
import torch

from depthkit.complete import prompts
from depthkit.complete.batching import encode_group, pack_groups, sample_training_queries
from depthkit.training import MixedDataset, StepSampler, training_split

__all__ = ["build_datasets", "TrainSteps", "pad_id", "to_device"]


def build_datasets(recipe) -> MixedDataset:
    """The recipe's ``data.datasets`` behind one index (``data.subset_size`` > 0: a seeded subset by weight)."""
    from depthkit.data.datasets import DATASETS, build_dataset

    d = recipe.data
    if not d.datasets:
        raise ValueError("data.datasets is empty; list at least one, e.g. data.datasets: {synthetic: {}} (YAML) "
                         "or {hypersim: {root: /data/hypersim}, vkitti2: {root: /data/vkitti2}}.")
    datasets, weights, names = [], [], []
    for key, entry in d.datasets.items():
        if entry.weight <= 0:  # left out (lets an override drop a dataset that has no root here)
            continue
        name = entry.name or key
        if name not in DATASETS:  # before "needs a root", which would take a typo for a dataset without one
            import difflib

            close = difflib.get_close_matches(name, DATASETS, n=1)
            raise ValueError(f"data.datasets.{key}: {name!r} is not a dataset"
                             + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; known: {', '.join(DATASETS)}. A key other than a dataset's name needs "
                             f"data.datasets.{key}.name=DATASET.")
        kwargs = dict(entry.options)
        kwargs.setdefault("sparse_pattern", d.sparse_pattern)
        sk = dict(d.sparse_kwargs) if kwargs["sparse_pattern"] == d.sparse_pattern else {}
        if kwargs["sparse_pattern"] == "random":
            sk.setdefault("n", d.sparse_points)
        kwargs.setdefault("sparse_kwargs", sk)
        if name == "synthetic":
            s = d.synthetic
            for k, v in (("length", s.length), ("height", s.height), ("width", s.width), ("kind", s.kind),
                         ("image_noise", s.image_noise), ("clutter", s.clutter)):
                kwargs.setdefault(k, v)
        elif entry.root is None:
            raise ValueError(f"data.datasets.{key} ({name}) needs a root folder: add data.datasets.{key}.root=/path "
                             "to the command line.")
        datasets.append(build_dataset(name, entry.root, split=training_split(entry.split), **kwargs))
        weights.append(entry.weight)
        names.append(key)
    if not datasets:
        raise ValueError("every dataset under data.datasets has weight 0; give at least one a weight > 0.")
    return MixedDataset(datasets, weights, names, seed=recipe.train.seed, subset_size=d.subset_size)


class TrainSteps(torch.utils.data.Dataset):
    """Item ``k`` = the packed batch of global micro-step ``k`` for this process (see the module docstring)."""

    def __init__(self, recipe, mixed: MixedDataset, processor, model_config, rank: int = 0, world: int = 1):
        self.recipe, self.mixed, self.processor, self.model_config = recipe, mixed, processor, model_config
        self.rank = rank
        self.sampler = StepSampler(len(mixed), recipe.train.batch_size, recipe.train.seed, rank, world)
        p = recipe.prompts
        self.prompt_config = prompts.PromptConfig(p.prompt_prior, p.pixel_reference, mask_text=p.mask_text)

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int) -> dict:
        d, seed = self.recipe.data, self.recipe.train.seed
        groups = []
        for j, (index, epoch) in enumerate(self.sampler.positions(k)):  # each sample's own epoch (its sparse draw)
            for attempt in range(20):
                item = self.mixed.get((index + attempt) % len(self.mixed), epoch)
                rng = np.random.default_rng([seed, k, self.rank, j, attempt])
                sparse_input, queries = sample_training_queries(
                    item["image"], item["sparse"], item["depth"], d.queries_per_image, rng, d.supervision, d.p_keep,
                    d.edge_weight, self.recipe.prompts.prompt_prior, d.min_sparse_points)
                if queries:
                    break
            else:
                raise ValueError(f"20 samples in a row (from index {index}) had fewer than "
                                 f"{d.min_sparse_points + 1} sparse points; check data.sparse_* settings.")
            groups.append(encode_group(self.processor, item["image"], sparse_input, queries, self.prompt_config,
                                       self.recipe.sdim, with_answers=self.recipe.loss.reads_answers))
        return pack_groups(groups, self.model_config, self.recipe.prompts.pixel_reference,
                           pad_id=pad_id(self.processor), layout=d.prefix_sharing)


def pad_id(processor) -> int:
    """The token id that pads batch rows (the tokenizer's pad token, else its end-of-sequence token)."""
    tok = processor.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


def to_device(batch: dict, device) -> dict:
    """``batch`` with its tensors (and lists of tensors) moved to ``device``."""
    def move(v):
        if isinstance(v, list):
            return [t.to(device) for t in v]
        return v.to(device) if isinstance(v, torch.Tensor) else v

    return {k: move(v) for k, v in batch.items()}
