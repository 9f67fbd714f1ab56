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
        ("kind: unit-test\n", ["train.mixed_precision=fp16"], r"mixed_precision='fp16' is not supported: its loss "
                                                             r"scaler's state is not part of depthkit's resumable"),
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
        ("kind: unit-test\n", ["train.seed=-3"], r"train.seed must be .* >= 0; received -3"),
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


def test_recipe_files_are_read_as_yaml_1_2_as_their_overrides_are(tmp_path):
    """The same text in the file and as an override is the same value: OmegaConf's reader (YAML 1.1) made the
    file's ``max_steps: 0100`` an octal 64 and ``name: 1:30`` the base-60 90 while the override read 100 and "1:30";
    a key given twice stays an error, and a scalar recipe says what it holds."""
    p = tmp_path / "r.yaml"
    p.write_text("kind: unit-test\nname: 1:30\ntags: [a, 1]\ntrain:\n  max_steps: 0100\n  seed: 0o17\n"
                 "  lr: 1e-3\n  warmup_steps: +07\n  mixed_precision: no\n")
    r = load_recipe(p, schemas=SCHEMAS)
    assert (r.train.max_steps, r.train.seed, r.name, r.train.lr, r.train.warmup_steps) == (100, 15, "1:30", 1e-3, 7)
    assert r.tags == ["a", 1] and r.train.mixed_precision == "no"
    p.write_text("kind: unit-test\ntrain:\n  max_steps: 5\n  max_steps: 6\n")
    with pytest.raises(RecipeError, match=r"is not valid YAML: .*found duplicate key max_steps"):
        load_recipe(p, schemas=SCHEMAS)
    p.write_text("42\n")
    with pytest.raises(RecipeError, match=r"holds a int at its top level; expected a mapping that starts with"):
        load_recipe(p, schemas=SCHEMAS)
    p.write_text("")
    with pytest.raises(RecipeError, match=r"has no 'kind' key") as err:
        load_recipe(p, schemas=SCHEMAS)
    assert "accelerate" not in str(err.value)
    from depthkit.resources import list_launch_configs

    with pytest.raises(RecipeError, match=r"has no 'kind' key.* an accelerate launch config .*--config_file"):
        load_recipe(list_launch_configs()["accelerate/fsdp"])


def test_override_values_are_read_as_yaml_1_2(tmp_path):
    """``key=value`` values are read as ``--option`` values are (YAML 1.2): OmegaConf alone (YAML 1.1) made
    ``train.max_steps=0100`` an octal 64 and ``name=1:30`` the base-60 number 90, silently."""
    r = load_recipe({"kind": "unit-test"}, ["train.max_steps=0100", "train.seed=0o17", "name=1:30",
                                            "train.lr=1e-3", "train.warmup_steps=+07", "tags=[a, 1]"], schemas=SCHEMAS)
    assert (r.train.max_steps, r.train.seed, r.name, r.train.lr, r.train.warmup_steps) == (100, 15, "1:30", 1e-3, 7)
    assert r.tags == ["a", 1]
    with pytest.raises(RecipeError, match="Value '1:30' of type 'str' could not be converted to Integer"):
        load_recipe({"kind": "unit-test"}, ["train.max_steps=1:30"], schemas=SCHEMAS)


@pytest.mark.parametrize("override, message", [
    ("tags=[a, b", r"override 'tags=\[a, b': the value is not valid YAML \(.*\); write lists as \[a, b\]"),
    ("name={a: 1, a: 2}", r"override 'name={a: 1, a: 2}': the value is not valid YAML \(.*duplicate key a"),
])
def test_an_override_that_is_not_yaml_is_a_recipe_error(override, message):
    """Not a bare yaml.ScannerError traceback from ``depthkit train``."""
    with pytest.raises(RecipeError, match=message):
        load_recipe({"kind": "unit-test"}, [override], schemas=SCHEMAS)


def test_learning_rate_zero_is_allowed_and_said():
    """lr 0 exports the starting model (a check some tests and users make on purpose): allowed, with a warning."""
    from depthkit.io import DepthkitWarning

    with pytest.warns(DepthkitWarning, match="train.lr=0: no weight will change"):
        assert load_recipe({"kind": "unit-test", "train": {"lr": 0}}, schemas=SCHEMAS).train.lr == 0


def test_epochs_beside_max_steps_are_said_to_be_unused():
    """max_steps > 0 sets the run's length; epochs given as well were silently ignored."""
    import warnings

    from depthkit.io import DepthkitWarning

    with pytest.warns(DepthkitWarning, match=r"train.epochs=6 is not used: train.max_steps=100 sets the run's length"):
        assert load_recipe({"kind": "unit-test", "train": {"max_steps": 0, "epochs": 6}}, ["train.max_steps=100"],
                           schemas=SCHEMAS).train.max_steps == 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_recipe({"kind": "unit-test", "train": {"max_steps": 0, "epochs": 6}}, schemas=SCHEMAS)
        load_recipe({"kind": "unit-test", "train": {"max_steps": 7}}, schemas=SCHEMAS)


def test_unquoted_no_is_no_mixed_precision(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("kind: unit-test\ntrain:\n  mixed_precision: no\n")  # YAML 1.1: no = false
    assert load_recipe(p, schemas=SCHEMAS).train.mixed_precision == "no"
    p.write_text("kind: unit-test\ntrain:\n  mixed_precision: bf16\n")
    assert load_recipe(p, ["train.mixed_precision=no"], schemas=SCHEMAS).train.mixed_precision == "no"


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
