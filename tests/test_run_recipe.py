"""A run's recipe held on ``--resume`` (depthkit/run_recipe.py): a changed model or optimiser setting is refused
before anything loads or is written, bookkeeping and the step count may change, and a checkpoint that does not fit
the model is said in one line, not in torch's many."""
import json

import pytest
import torch
from test_sharpen_train import write_lotus_yaml  # the tiny Lotus the trainer tests run

from depthkit.run_recipe import load_resumed_weights, recipe_differences

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_recipe_differences_by_dotted_key():
    old = {"model": {"size": [16, 32], "depth": 2}, "train": {"lr": 1e-3, "max_steps": 3},
           "output": {"output_dir": "a"}}
    new = {"model": {"size": [16, 64], "extra": True}, "train": {"lr": 1e-3, "max_steps": 9},
           "output": {"output_dir": "b"}}
    assert recipe_differences(old, new) == [("model.depth", 2, None), ("model.extra", None, True),
                                            ("model.size", [16, 32], [16, 64])]
    assert recipe_differences(old, new, ignore=()) == [
        ("model.depth", 2, None), ("model.extra", None, True), ("model.size", [16, 32], [16, 64]),
        ("output.output_dir", "a", "b"), ("train.max_steps", 3, 9)]


def test_a_checkpoint_that_does_not_fit_is_one_clear_error():
    small, large = torch.nn.Linear(2, 3), torch.nn.Linear(2, 4)
    with pytest.raises(ValueError, match=r"^step 7 does not fit this recipe's model \(size mismatch for weight: .*"
                                         r"torch.Size\(\[3, 2\]\).*torch.Size\(\[4, 2\]\).*; resume with the recipe"):
        load_resumed_weights(large, small.state_dict(), "step 7")
    load_resumed_weights(large, torch.nn.Linear(2, 4).state_dict(), "step 7")  # one that fits loads


def test_resume_refuses_a_changed_recipe_before_writing_and_allows_more_steps(tmp_path, capsys):
    from depthkit.cli import main
    from depthkit.run_state import latest_state_dir

    path = write_lotus_yaml(tmp_path / "lotus.yaml", scenes=4, schedule="constant")
    run = tmp_path / "run"
    base = ["train", str(path), f"output.output_dir={run}"]
    assert main([*base, "train.max_steps=2", "--resume"]) == 0  # nothing to resume yet: said, then a fresh start
    assert f"--resume but no checkpoint in {run / 'checkpoints'}; starting at step 0" in capsys.readouterr().out
    recorded = (run / "recipe.yaml").read_text()
    for change, said in (("model.tiny_unet.block_out_channels=[32,64]",
                          "model.tiny_unet.block_out_channels: [16, 32] then, [32, 64] now"),
                         ("train.lr=0.5", "train.lr: 0.001 then, 0.5 now")):
        assert main([*base, "train.max_steps=2", change, "--resume"]) == 2
        err = capsys.readouterr().err
        assert said in err and "Resume with that recipe" in err, err
        assert (run / "recipe.yaml").read_text() == recorded  # the run's record is not rewritten by a refused resume
    # more steps and other bookkeeping may change; the record then says what ran
    assert main([*base, "train.max_steps=3", "train.log_every=2", "--resume"]) == 0
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert latest_state_dir(run).name == "step_0000003"
    assert "max_steps: 3" in (run / "recipe.yaml").read_text() and "log_every: 2" in (run / "recipe.yaml").read_text()
    # a run folder without its record (checkpoints copied alone): a model that does not fit is one clear error, and
    # the recipe that failed is not recorded as the run's
    (run / "recipe.yaml").unlink()
    assert main([*base, "train.max_steps=4", "model.tiny_unet.block_out_channels=[32,64]", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint at step 3 in" in err and "does not fit this recipe's model (size mismatch for" in err, err
    assert "Traceback" not in err and not (run / "recipe.yaml").exists()
