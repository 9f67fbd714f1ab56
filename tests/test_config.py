from dataclasses import dataclass, field

import pytest

from depthkit.config import OutputConfig, RecipeError, TrainConfig, load_recipe, recipe_to_yaml


@dataclass
class _Recipe:
    kind: str = "unit-test"
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    name: str = "x"
    tags: list = field(default_factory=list)


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
        ("kind: unit-test\n", ["train.lr=-1"], r"train.lr must be a finite number >= 0; received -1.0"),
        ("kind: unit-test\n", ["train.lr=.nan"], r"train.lr must be a finite number >= 0; received nan"),
        ("kind: unit-test\n", ["train.lr=.inf"], r"train.lr must be a finite number >= 0; received inf"),
        ("kind: unit-test\n", ["train.weight_decay=-0.1"], r"train.weight_decay must be .* >= 0; received -0.1"),
        ("kind: unit-test\n", ["train.warmup_steps=-3"], r"train.warmup_steps must be .* >= 0; received -3"),
        ("kind: unit-test\n", ["train.max_grad_norm=-1"], r"train.max_grad_norm must be .* >= 0; received -1.0 "
                                                          r"\(0 = off\)"),
        ("kind: unit-test\n", ["train.save_every=-1"], r"train.save_every must be .* >= 0; received -1 \(0 = off\)"),
        ("kind: unit-test\n", ["train.keep_last=0"], r"train.keep_last must be .* >= 1; received 0"),
        ("kind: unit-test\n", ["train.log_every=0"], r"train.log_every must be .* >= 1; received 0"),
        ("kind: unit-test\n", ["train.max_steps=5", "train.epochs=-1"], r"train.epochs must be .* >= 0"),
        ("- a\n- b\n", [], r"holds a list at its top level; expected a mapping that starts with 'kind: <"),
        ("kind: unit-test\ntags: [a, b]\n", ["tags.1=c"], r"tags.1 addresses an item of a list, which overrides "
                                                         r"cannot do: give the whole list"),
    ],
)
def test_bad_recipes_are_errors(tmp_path, text, overrides, message):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(p, overrides, schemas=SCHEMAS)


def test_learning_rate_zero_is_allowed_and_said():
    """lr 0 exports the starting model (a check some tests and users make on purpose): allowed, with a warning."""
    from depthkit.io import DepthkitWarning

    with pytest.warns(DepthkitWarning, match="train.lr=0: no weight will change"):
        assert load_recipe({"kind": "unit-test", "train": {"lr": 0}}, schemas=SCHEMAS).train.lr == 0


def test_unquoted_no_is_no_mixed_precision(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("kind: unit-test\ntrain:\n  mixed_precision: no\n")  # YAML 1.1: no = false
    assert load_recipe(p, schemas=SCHEMAS).train.mixed_precision == "no"
    p.write_text("kind: unit-test\ntrain:\n  mixed_precision: bf16\n")
    assert load_recipe(p, ["train.mixed_precision=no"], schemas=SCHEMAS).train.mixed_precision == "no"


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
