from dataclasses import dataclass, field

import pytest

from depthkit.config import OutputConfig, RecipeError, TrainConfig, load_recipe, recipe_to_yaml


@dataclass
class _Recipe:
    kind: str = "unit-test"
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    name: str = "x"


SCHEMAS = {"unit-test": _Recipe}


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("# depthkit train r.yaml\nkind: unit-test\ntrain:\n  max_steps: 5\n  lr: 0.01\n")
    r = load_recipe(p, ["train.max_steps=7", "name=y"], schemas=SCHEMAS)
    assert isinstance(r, _Recipe) and isinstance(r.train, TrainConfig)
    assert (r.train.max_steps, r.train.lr, r.name) == (7, 0.01, "y")
    assert "max_steps: 7" in recipe_to_yaml(r)


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("kind: unit-test\ntrain:\n  max_stpes: 5\n", [], "max_stpes"),
        ("kind: unit-test\ntrain:\n  max_steps: many\n", [], "max_steps"),
        ("kind: unit-test\n", ["train.lr"], "key=value"),
        ("kind: unit-test\n", ["train.mixed_precision=fp8"], "mixed_precision"),
        ("kind: nonsense\n", [], "unknown recipe kind"),
        ("train: {}\n", [], "no 'kind'"),
        ("kind: unit-test\n", ["train.nope=1"], "nope"),
    ],
)
def test_bad_recipes_are_errors(tmp_path, text, overrides, message):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(p, overrides, schemas=SCHEMAS)


def test_unquoted_no_is_no_mixed_precision(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("kind: unit-test\ntrain:\n  mixed_precision: no\n")  # YAML 1.1: no = false
    assert load_recipe(p, schemas=SCHEMAS).train.mixed_precision == "no"
    p.write_text("kind: unit-test\ntrain:\n  mixed_precision: bf16\n")
    assert load_recipe(p, ["train.mixed_precision=no"], schemas=SCHEMAS).train.mixed_precision == "no"


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
