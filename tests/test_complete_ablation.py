"""benchmarks/complete_ablation.py: rows → overrides, finished runs are skipped, the table and the ordering verdict
(on fabricated run logs; the real runs take hours)."""

import json
from pathlib import Path

import pytest
from repo_scripts import load_script

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def ablation():
    return load_script("benchmarks/complete_ablation.py")


def _fake_run(runs: Path, key: str, seed: int, mae: float, steps: int = 200) -> None:
    run = runs / f"{key}_seed{seed}"
    run.mkdir(parents=True)
    rows = [{"step": steps, "loss": 0.1},
            {"step": steps, "val_mae": mae, "val_rmse": 2 * mae, "val_prior_mae": 1.0, "val_prior_rmse": 2.0,
             "val_unparseable": 0.0, "val_queries": 512}]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"step\": 3, \"cut")


def test_rows_map_to_recipe_overrides_that_parse(ablation):
    from depthkit.config import load_recipe

    keys = [r[0] for r in ablation.ROWS]
    assert keys == list("abcdef")
    by_key = {r[0]: r[4] for r in ablation.ROWS}
    # (c)-(e) differ only in the prompt text, (f) only in the supervision.
    assert set(by_key["d"]) ^ set(by_key["c"]) == {"prompts.mask_text=none", "prompts.mask_text=mask"}
    assert set(by_key["f"]) - set(by_key["e"]) == {"data.supervision=dense"}
    for key, overrides in by_key.items():
        recipe = load_recipe(REPO / ablation.RECIPE, ablation.budget(200) + overrides)
        assert recipe.prompts.prompt_prior == "guided" and recipe.prompts.readout == "residual_head", key


def test_finished_runs_are_skipped_and_the_verdict_needs_two_seeds(ablation, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setattr(ablation.subprocess, "call", lambda *a, **k: pytest.fail("a finished run was rerun"))
    for i, key in enumerate("abcdef"):
        _fake_run(runs, key, 0, 0.9 - 0.01 * i)
    args = ablation.parse_args(["--runs-dir", str(runs), "--out", str(tmp_path / "res"), "--seeds", "0", "1",
                                "--report-only"])
    assert ablation.run_one("a", [], 0, args)["val_mae"] == 0.9
    res = ablation.summarise(args)
    assert res["ordering"]["reproduces"] is None  # one seed: not decided
    for i, key in enumerate("abcdef"):
        _fake_run(runs, key, 1, 0.9 - 0.01 * i + (0.002 if i % 2 else -0.002))
    res = ablation.summarise(args)
    assert res["ordering"]["reproduces"] is True  # every step 0.01 better, seed spread ~0.003
    assert res["rows"][0]["mae_minus_prior"]["mean"] == pytest.approx((0.9 + 0.898) / 2 - 1.0)
    ablation.write(res, str(tmp_path / "res"))
    md = (tmp_path / "res.md").read_text()
    assert "| (f) |" in md and "| prior |" in md and "**yes**" in md
    # c a hair better than b on average but with a wide seed spread: within noise, so not reproduced.
    (runs / "c_seed1" / "log.jsonl").write_text(json.dumps({"step": 200, "val_mae": 0.9, "val_rmse": 1.8,
                                                             "val_prior_mae": 1.0, "val_prior_rmse": 2.0}))
    res = ablation.summarise(args)
    assert [p["verdict"] for p in res["ordering"]["pairs"]][1] == "within seed noise"
    assert res["ordering"]["reproduces"] is False
    # A run whose log has validation only at an earlier step is unfinished.
    (runs / "c_seed1" / "log.jsonl").write_text(json.dumps({"step": 100, "val_mae": 0.9, "val_rmse": 1.8,
                                                             "val_prior_mae": 1.0, "val_prior_rmse": 2.0}))
    assert ablation.final_row(runs / "c_seed1", 200) is None


def test_a_failed_training_run_is_named_with_its_log_and_the_exit_status_is_1(ablation, tmp_path, monkeypatch, capsys):
    """`depthkit train` failing (here: at once, rc 2) leaves the row unfinished: the script still writes the table,
    then exits 1 naming the (row, seed) and its log, so a driver script sees the failure."""
    calls = []
    monkeypatch.setattr(ablation.subprocess, "call", lambda cmd, **kw: calls.append((cmd, kw["cwd"])) or 2)
    monkeypatch.chdir(tmp_path)
    rc = ablation.main(["--rows", "a", "--seeds", "0", "--steps", "1", "--runs-dir", "runs", "--out", "res/abl"])
    err = capsys.readouterr().err
    assert rc == 1 and len(calls) == 1
    assert "1 training run(s) ended without their step-1 validation row: row a seed 0 (log " in err
    assert str(tmp_path / "runs" / "a_seed0.out") in err
    assert (tmp_path / "res" / "abl.md").is_file()
    # the relative --runs-dir is the caller's: training (cwd = the repository) writes where the script reads
    (cmd, cwd), = calls
    assert cwd == ablation.REPO and f"output.output_dir={tmp_path / 'runs' / 'a_seed0'}" in cmd


def test_a_finished_run_of_another_recipe_is_refused(ablation, tmp_path, monkeypatch):
    """A finished run is reused only when its recipe.yaml is the recipe its row runs now (any run folder path): one
    trained as another row (or budget) would be reported as this row's."""
    from depthkit.config import load_recipe
    from depthkit.run_recipe import record_recipe

    monkeypatch.setattr(ablation.subprocess, "call", lambda *a, **k: pytest.fail("a finished run was rerun"))
    runs = tmp_path / "runs"
    rows = {r[0]: r[4] for r in ablation.ROWS}
    args = ablation.parse_args(["--runs-dir", str(runs), "--out", str(tmp_path / "res"), "--seeds", "0", "--steps",
                                "200", "--rows", "a"])
    _fake_run(runs, "a", 0, 0.5)
    record_recipe(runs / "a_seed0", load_recipe(REPO / ablation.RECIPE, ablation.run_overrides(
        rows["a"], 0, 200, Path("elsewhere/a_seed0"))))
    assert ablation.run_one("a", rows["a"], 0, args)["val_mae"] == 0.5  # the same recipe, another folder path
    record_recipe(runs / "a_seed0", load_recipe(REPO / ablation.RECIPE, ablation.run_overrides(
        rows["b"], 0, 200, runs / "a_seed0")))  # trained as row b
    for call in (lambda: ablation.run_one("a", rows["a"], 0, args), lambda: ablation.summarise(args)):
        with pytest.raises(ValueError, match=r"a_seed0 was trained with another recipe than its row runs now .*"
                                             r"sdim.fusion: 'soft' then, 'hard_concat' now"):
            call()
    assert ablation.run_main(ablation.main, ["--runs-dir", str(runs), "--out", str(tmp_path / "res"), "--seeds",
                                             "0", "--rows", "a"]) == 2
