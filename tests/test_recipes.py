"""Every shipped recipe parses against its schema and opens with its launch command (found by walking recipes/)."""

from pathlib import Path

import pytest

from depthkit.config import RecipeError, load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
ALL_YAML = sorted(p for p in RECIPES.rglob("*") if p.suffix in (".yaml", ".yml"))
ACCELERATE = [p for p in ALL_YAML if p.parent.name == "accelerate"]
TRAINING = [p for p in ALL_YAML if p not in ACCELERATE]


def _rel(path: Path) -> str:
    return str(path.relative_to(RECIPES.parent))


def test_recipes_were_found():
    names = {_rel(p) for p in TRAINING}
    assert {"recipes/complete/qwen2_5_vl_3b_lora.yaml", "recipes/complete/qwen2_5_vl_7b_lora.yaml",
            "recipes/tiny/complete.yaml"} <= names
    assert len(ACCELERATE) >= 2


@pytest.mark.parametrize("path", TRAINING, ids=_rel)
def test_training_recipe_parses_and_shows_its_command(path):
    recipe = load_recipe(path)
    assert recipe.kind in ("complete", "sharpen", "lotus", "refine")
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and ("depthkit train" in first or "accelerate launch" in first), first
    assert _rel(path) in first, "the first line must be the command that launches this very file"


@pytest.mark.parametrize("path", ACCELERATE, ids=_rel)
def test_accelerate_config_loads_and_names_a_recipe(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 2 and config.mixed_precision == "bf16"
    first = path.read_text().splitlines()[0]
    assert first.startswith("# accelerate launch --config_file " + _rel(path))
    named = [w for w in first.split() if w.startswith("recipes/") and w != _rel(path)]
    assert named and all((RECIPES.parent / w).is_file() for w in named)


def test_paper_recipe_is_the_papers_setting():
    r = load_recipe(RECIPES / "complete" / "qwen2_5_vl_3b_lora.yaml")
    assert r.model.base == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert r.lora.enabled and not r.lora.full_finetune
    assert (r.prompts.pixel_reference, r.prompts.prompt_prior, r.prompts.readout) == ("text", "none", "text")
    assert set(r.data.datasets) == {"hypersim", "vkitti2"} and r.data.subset_size == 20000
    assert r.data.queries_per_image == 1 and r.data.supervision == "sparse"
    assert r.train.epochs == 10 and r.train.max_steps == 0
    assert r.train.batch_size * r.train.grad_accum * 8 == 16  # 8 processes, as its launch command says
    assert r.train.mixed_precision == "bf16" and r.train.gradient_checkpointing
    from depthkit.training import total_steps

    assert total_steps(r.train, 20000, world_size=8) == 12500
    r7 = load_recipe(RECIPES / "complete" / "qwen2_5_vl_7b_lora.yaml")
    assert r7.model.base == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert r7.train.batch_size * r7.train.grad_accum * 8 == 16


def test_tiny_recipe_uses_the_head_start_levers():
    r = load_recipe(RECIPES / "tiny" / "complete.yaml")
    assert r.model.base == "tiny" and r.lora.full_finetune and not r.lora.enabled
    assert r.prompts.prompt_prior == "guided" and r.prompts.readout == "residual_head"
    assert r.data.edge_weight > 0 and r.data.queries_per_image > 1


def test_complete_schema_refuses_bad_values():
    base = {"kind": "complete", "lora": {"enabled": False, "full_finetune": True}}
    for overrides, message in (
        (["data.bogus=1"], "bogus"),
        (["prompts.readout=residual_head"], "prompt_prior"),
        (["data.supervision=weak"], "supervision"),
        (["data.p_keep=1.5"], "p_keep"),
        (["lora.enabled=true"], "cannot both be true"),
        (["model.tiny.hidden_size=100"], "divide|multiple of 16"),
        (["data.prefix_sharing=kv_cache", "train.gradient_checkpointing=true"], "gradient_checkpointing"),
        (["train.mixed_precision=fp8"], "mixed_precision"),
        (["prompts.pixel_reference=grid_token", "prompts.prompt_prior=guided", "prompts.readout=residual_head"],
         "grid_token.*mask_text: none"),
        (["prompts.pixel_reference=grid_token", "prompts.mask_text=none"], "grid_token.*readout: residual_head"),
        (["prompts.head_prior_input=true"], "head_prior_input.*readout: residual_head"),
    ):
        with pytest.raises(RecipeError, match=message):
            load_recipe(base, overrides)
    r = load_recipe(base, ["data.datasets.hypersim.root=/data/hs", "data.datasets.hypersim.weight=2"])
    assert r.data.datasets["hypersim"].root == "/data/hs" and r.data.datasets["hypersim"].weight == 2.0


def test_residual_head_without_its_l1_warns_that_the_readout_is_the_prior():
    """readout=residual_head with loss.residual_l1=0 freezes the head's correction (build_completer), so the trained
    completer answers the prompt prior exactly: allowed (text-only training), but said; with no loss reading the
    answer either it is refused, and the message names both ways out."""
    from depthkit.warning_types import DepthkitWarning

    base = {"kind": "complete", "lora": {"enabled": False, "full_finetune": True}}
    head = ["prompts.prompt_prior=guided", "prompts.readout=residual_head"]
    with pytest.warns(DepthkitWarning, match="residual_l1=0.*prompt prior exactly"):
        load_recipe(base, head + ["loss.residual_l1=0"])
    with pytest.raises(RecipeError, match=r"residual_l1 > 0.*cross_entropy > 0"):
        load_recipe(base, head + ["loss.residual_l1=0", "loss.cross_entropy=0"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DepthkitWarning)
        load_recipe(base, head)  # the head trained: nothing to say


def test_complete_weights_without_a_subset_are_refused_as_they_would_mix_nothing():
    """Without data.subset_size every dataset contributes all its samples, so unequal positive weights change nothing
    (the shares stay those of the datasets' lengths): refused, naming the weights; equal weights, a 0 that leaves a
    dataset out, or a subset drawn by weight are accepted, and such a subset's shares follow the weights."""
    from depthkit.training import MixedDataset

    base = {"kind": "complete", "lora": {"enabled": False, "full_finetune": True}}
    two = ["data.datasets.a.name=synthetic", "data.datasets.b.name=synthetic"]
    with pytest.raises(RecipeError, match=r"weights \{'a': 2.0, 'b': 1.0\} mix nothing with data.subset_size 0"):
        load_recipe(base, [*two, "data.datasets.a.weight=2"])
    load_recipe(base, [*two, "data.datasets.a.weight=0"])
    load_recipe(base, two)
    r = load_recipe(base, [*two, "data.datasets.a.weight=2", "data.subset_size=30"])
    mixed = MixedDataset([list(range(100)), list(range(100))], [r.data.datasets[k].weight for k in ("a", "b")],
                         subset_size=r.data.subset_size)
    assert [j for j, _ in mixed.pairs].count(0) == 20 and len(mixed) == 30


def test_sharpen_and_lotus_validation_needs_at_least_one_image():
    """val.n_images 0 would log NaN metrics and export anyway: refused, with how to skip validation instead."""
    for name in ("tiny/lotus.yaml", "tiny/sharpen.yaml"):
        assert load_recipe(RECIPES / name, ["val.n_images=1"]).val.n_images == 1
        with pytest.raises(RecipeError, match=r"val.n_images must be >= 1; received 0 \(to skip validation, leave "
                                              r"val.source out\)"):
            load_recipe(RECIPES / name, ["val.n_images=0"])


def test_sharpen_and_lotus_validation_must_be_held_out_of_training():
    """A val.source that leaves out its split reads split train (the schema's default for every source), so
    ``val: {source: {name: synthetic}}`` scored the first training scenes as 'validation'. Refused, naming the
    training source; a held-out split, or training-split scenes past those the run trains on, are accepted."""
    train = {"sources": [{"name": "synthetic", "options": {"length": 500}}]}
    for kind in ("lotus", "sharpen"):
        with pytest.raises(RecipeError, match=r"val.source reads the images training reads \(data.sources\[0\]: "
                                              r"synthetic, split 'train'\).*Set val.source.split to a held-out"):
            load_recipe({"kind": kind, "data": train, "val": {"source": {"name": "synthetic"}}})
        for held_out in ({"split": "val"}, {"options": {"seed_offset": 500}}):
            recipe = load_recipe({"kind": kind, "data": train, "val": {"source": {"name": "synthetic", **held_out}}})
            assert recipe.val.source.name == "synthetic"
    with pytest.raises(RecipeError, match=r"data.sources\[0\]: image_folder, split 'train', root data/images"):
        load_recipe({"kind": "sharpen", "data": {"sources": [{"name": "image_folder", "root": "data/images"}]},
                     "val": {"source": {"name": "image_folder", "root": "./data/../data/images"}}})
