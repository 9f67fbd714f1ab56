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
