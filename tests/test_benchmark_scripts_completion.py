"""The completion / engine benchmark scripts refuse a user's mistake before any work (one ``error:`` line, status 2)
and write their results where --out / --name say, with the run keys of benchmarks/_results.py. Nothing here trains or
times a model: the expensive parts are replaced by stubs that fail the test if they are reached."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import _results  # noqa: E402
import complete_ablation  # noqa: E402
import complete_confidence  # noqa: E402
import complete_fill  # noqa: E402
import complete_headroom  # noqa: E402
import complete_train_step  # noqa: E402
import engine  # noqa: E402
import full_frame  # noqa: E402
import full_size_readiness  # noqa: E402
import memory_bound  # noqa: E402
import rope_positions  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SCRIPTS = ("rope_positions", "memory_bound", "complete_ablation", "complete_confidence", "complete_train_step",
           "complete_headroom", "complete_fill", "full_size_readiness", "engine", "full_frame")


def _strict(path: Path) -> dict:
    """The JSON at ``path``, refusing NaN / Infinity (strict JSON), with the run keys present."""
    def refuse(token):
        raise AssertionError(f"{path} has a bare {token}")

    report = json.loads(path.read_text(), parse_constant=refuse)
    assert set(_results.RUN_KEYS) <= set(report), path
    return report


def _never(what):
    def fail(*args, **kwargs):
        pytest.fail(f"{what} ran although the arguments should have been refused first")
    return fail


def _one_error_line(capsys, *needles):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and ": error: " in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


# --------------------------------------------------------------------------------------------- rope_positions


def test_rope_positions_help_exits_0_and_writes_nothing(tmp_path):
    committed = {p.name: p.read_bytes() for p in (BENCH / "results").glob("rope_positions.*")}
    proc = subprocess.run([sys.executable, str(BENCH / "rope_positions.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "--out" in proc.stdout and "--name" in proc.stdout
    assert {p.name: p.read_bytes() for p in (BENCH / "results").glob("rope_positions.*")} == committed
    assert not list(tmp_path.iterdir())


def test_rope_positions_writes_out_name_with_run_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(rope_positions, "spread", lambda theta, image, sparse: 0.25)  # the model part: not timed here
    committed = {p.name: p.read_bytes() for p in (BENCH / "results").glob("rope_positions.*")}
    assert rope_positions.main(["--out", str(tmp_path / "o"), "--name", "rope_check"]) == 0
    report = _strict(tmp_path / "o" / "rope_check.json")
    assert report["spread_by_theta"] == {f"{t:g}": 0.25 for t in rope_positions.THETAS}
    assert "| 1e+06 | 2.50e-01 |" in (tmp_path / "o" / "rope_check.md").read_text()
    assert {p.name: p.read_bytes() for p in (BENCH / "results").glob("rope_positions.*")} == committed
    with pytest.raises(SystemExit) as exc:
        rope_positions.parse_args(["--name", "../escape"])
    assert exc.value.code == 2


# ----------------------------------------------------------------------------------------------- memory_bound


def test_memory_bound_out_name_and_run_keys(tmp_path, monkeypatch):
    args = memory_bound.parse_args([])
    assert args.out == BENCH / "results" and args.name == "memory_bound"
    import depthkit.cli

    monkeypatch.setattr(depthkit.cli, "main", lambda argv: 0)  # no checkpoint is built

    real_run = subprocess.run

    def fake_run(cmd, **kwargs):  # one stage's child process (other commands, e.g. git: the real ones)
        if cmd[:2] != [sys.executable, "-c"]:
            return real_run(cmd, **kwargs)
        stage = cmd[3]
        line = {"stage": stage, "seconds": 1.5, "peak_rss_mb": 500.0, "rss_before_run_mb": 400.0, "finite": True,
                "shape": [int(cmd[5]), int(cmd[6])]}
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(line) + "\n", stderr="")

    monkeypatch.setattr(memory_bound.subprocess, "run", fake_run)
    assert memory_bound.main(["--height", "12", "--width", "16", "--out", str(tmp_path), "--name", "mem_small"]) == 0
    report = _strict(tmp_path / "mem_small.json")
    assert report["input"] == [12, 16] and [s["stage"] for s in report["stages"]] == ["complete", "sharpen"]
    md = (tmp_path / "mem_small.md").read_text()
    assert "12x16 input" in md and "| complete | 500 | 400 | 1.5 | True |" in md
    with pytest.raises(SystemExit):
        memory_bound.parse_args(["--name", "sub/x"])


# ------------------------------------------------------------------------------------------ complete_ablation


def _fake_run(runs: Path, key: str, seed: int, mae: float) -> None:
    (runs / f"{key}_seed{seed}").mkdir(parents=True)
    (runs / f"{key}_seed{seed}" / "log.jsonl").write_text(json.dumps(
        {"step": 200, "val_mae": mae, "val_rmse": 2 * mae, "val_prior_mae": 1.0, "val_prior_rmse": 2.0}) + "\n")


@pytest.mark.parametrize("argv, needle", [(["--rows", "z"], "--rows"), (["--rows", "ax"], "unknown: x"),
                                          (["--seeds", "0", "0"], "distinct")])
def test_complete_ablation_refuses_bad_rows_and_seeds_before_any_run(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.setattr(complete_ablation.subprocess, "call", _never("a training run"))
    with pytest.raises(SystemExit) as exc:
        complete_ablation.main([*argv, "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "res")])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written, no "not run" table


def test_complete_ablation_records_the_full_command_and_strict_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(complete_ablation.subprocess, "call", _never("a training run"))
    runs = tmp_path / "runs"
    _fake_run(runs, "c", 0, 0.9)
    _fake_run(runs, "e", 0, 0.8)
    argv = ["--seeds", "0", "--rows", "ce", "--jobs", "1", "--runs-dir", str(runs), "--out", str(tmp_path / "res")]
    assert complete_ablation.main(argv) == 0  # finished runs are skipped
    report = _strict(tmp_path / "res.json")
    assert report["command"] == _results.command_line(argv, str(BENCH / "complete_ablation.py"))
    for flag in ("--rows ce", "--jobs 1", "--runs-dir", "--out", "--seeds 0"):
        assert flag in report["command"], flag
    rows = {r["row"]: r for r in report["rows"]}
    assert rows["c"]["mae"]["std"] is None and rows["c"]["mae"]["n"] == 1  # one seed: no spread, null not NaN
    capsys.readouterr()
    with pytest.raises(SystemExit):  # --help says what one seed gives, as the run does
        complete_ablation.parse_args(["--help"])
    assert "with one seed" in re.sub(r"\s+", " ", capsys.readouterr().out)


# ------------------------------------------------------------------------------------------ engine, full_frame


@pytest.mark.parametrize("argv, needle", [
    (["--frame-layouts", "grid-token"], "grid_token"), (["--frame-layouts", "text,pixels"], "unknown: pixels"),
    (["--name", "../escape"], "'../escape'"), (["--name", "sub/x"], "'sub/x'")])
def test_engine_and_full_frame_refuse_bad_layouts_and_names_before_timing(tmp_path, monkeypatch, capsys, argv,
                                                                           needle):
    monkeypatch.setattr(engine, "build", _never("engine.build"))
    monkeypatch.setattr(engine, "full_frame", _never("engine's full-frame timing"))
    monkeypatch.setattr(full_frame, "full_frame", _never("full_frame timing"))
    for main in (engine.main, full_frame.main):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--out", str(tmp_path)])
        assert exc.value.code == 2
        assert needle in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("main, argv, needle", [
    ("engine", ["--pixels", "0"], "--pixels takes a number of query pixels, at least 1; received 0"),
    ("engine", ["--naive-pixels", "-1"], "--naive-pixels takes a number of query pixels to time naive on, at least 1"),
    ("engine", ["--batch-sizes", "64,x"], "--batch-sizes takes comma-separated batch sizes, each at least 1 (e.g. "
                                          "64,256); received '64,x'"),
    ("engine", ["--batch-sizes", "0"], "received '0'"),
    ("engine", ["--frame-queries", "-5"], "--frame-queries takes a number of queries per frame (0: no frame timing)"),
    ("engine", ["--threads", "0"], "--threads takes a number of torch CPU threads, at least 1; received 0"),
    ("engine", ["--memory-budget-mb", "0"], "--memory-budget-mb takes a positive number of MB; received 0.0"),
    ("engine", ["--frame-repeats", "0"], "--frame-repeats takes a number of timed full-frame runs"),
    ("full_frame", ["--frame-repeats", "0"], "--frame-repeats takes a number of timed runs after the warm-up, at "
                                             "least 1; received 0"),
    ("full_frame", ["--threads", "-2"], "--threads takes a number of threads for torch and guided, at least 1; "
                                        "received -2")])
def test_engine_and_full_frame_refuse_counts_they_cannot_use_before_timing(tmp_path, monkeypatch, capsys, main, argv,
                                                                            needle):
    """These ended in a bare ZeroDivisionError (--pixels 0), TypeError (--frame-repeats 0), torch RuntimeError
    (--threads 0) or "invalid literal for int()" without the option's name, after building the model."""
    monkeypatch.setattr(engine, "build", _never("engine.build"))
    monkeypatch.setattr(engine, "full_frame", _never("engine's full-frame timing"))
    monkeypatch.setattr(full_frame, "full_frame", _never("full_frame timing"))
    with pytest.raises(SystemExit) as exc:
        {"engine": engine.main, "full_frame": full_frame.main}[main]([*argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and ": error: " in err[-1] and needle in err[-1], err[-1]
    assert not list(tmp_path.iterdir())


def test_full_frame_writes_out_name_with_run_keys(tmp_path, monkeypatch):
    import numpy as np

    layout = {"seconds": np.float32(1.5), "queries": 971, "fill": "residual", "model_seconds": 0.5,
              "prefix_seconds": 0.2, "queries_seconds": 0.3, "shared_suffix_tokens": 2, "batch_size": 64,
              "prior_map_seconds": 0.1, "fill_dense_seconds": 0.2, "fill_residual_seconds": 0.0,
              "confidence_map_seconds": 0.1, "other_seconds": 0.6}
    monkeypatch.setattr(full_frame, "full_frame", lambda layouts, repeats, threads: {
        "size": [480, 640], "sparse_points": 1000, "threads": threads, "repeats": repeats,
        "layouts": {name: layout for name in layouts}})
    argv = ["--frame-layouts", "grid_token,text", "--out", str(tmp_path), "--name", "ff_check"]
    assert full_frame.main(argv) == 0
    report = _strict(tmp_path / "ff_check.json")
    assert list(report["full_frame"]["layouts"]) == ["grid_token", "text"]
    assert report["machine"]["load_average_after"] and report["command"].endswith(" ".join(argv))
    assert "| grid_token | 971 | **1.50** |" in (tmp_path / "ff_check.md").read_text()


def test_engine_refuses_cuda_without_it_before_building(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine, wherever the test runs
    monkeypatch.setattr(engine, "build", _never("engine.build"))
    argv = ["--config", "3b", "--device", "cuda", "--dtype", "bfloat16", "--naive-pixels", "16", "--out",
            str(tmp_path)]
    assert _results.run_main(engine.main, argv) == 2
    _one_error_line(capsys, "--device cuda", "CUDA is not available")
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------- complete_confidence


def test_complete_confidence_out_must_be_a_folder(tmp_path, monkeypatch, capsys):
    from depthkit.complete import stage

    monkeypatch.setattr(stage.CompleteVLMStage, "from_checkpoint", _never("the checkpoint load"))
    existing = tmp_path / "file"
    existing.write_text("keep")
    for out in (tmp_path / "conf.json", existing):
        with pytest.raises(SystemExit) as exc:
            complete_confidence.main(["--checkpoint", str(tmp_path), "--out", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "folder" in err and "complete_confidence.json" in err and str(out) in err
    assert not (tmp_path / "conf.json").exists() and existing.read_text() == "keep"
    with pytest.raises(SystemExit):
        complete_confidence.main(["--help"])
    assert "folder of the results: writes <out>/complete_confidence.json" in re.sub(r"\s+", " ",
                                                                                     capsys.readouterr().out)


class _StubStage:
    """A completer stand-in for complete_confidence.py: depth 1 m everywhere, four queried pixels."""

    readout = "stub"
    prompt_config = type("PromptConfig", (), {})()

    def run(self, image, sparse):
        from types import SimpleNamespace

        h, w = sparse.shape
        rng = np.random.default_rng(0)
        queries = np.zeros((h, w))
        queries[1:3, 1:3] = 1
        return SimpleNamespace(depth=np.ones((h, w), np.float32), confidence=rng.random((h, w)),
                               extras={"query_mask": queries, "query_confidence": rng.random((h, w)),
                                       "unparseable_mask": np.zeros((h, w))})


def test_complete_confidence_and_fill_record_the_checkpoints_files(tmp_path, monkeypatch):
    """Beside the path, the files' hash (checkpoint_identity): AUROC or MAE of a folder retrained in place differ
    there, as accuracy.py's rows do; an oracle-only fill run has none."""
    from depthkit.checkpoints import checkpoint_identity, write_manifest
    from depthkit.complete import stage

    ck = tmp_path / "final"
    write_manifest(ck, {"complete": {"method": "nearest"}})
    monkeypatch.setattr(stage.CompleteVLMStage, "from_checkpoint", classmethod(lambda cls, *a, **k: _StubStage()))
    assert complete_confidence.main(["--checkpoint", str(ck), "--scenes", "1", "--height", "16", "--width", "16",
                                     "--sparse-points", "5", "--threads", "1", "--out", str(tmp_path / "c")]) == 0
    report = json.loads((tmp_path / "c" / "complete_confidence.json").read_text())
    assert report["checkpoint_identity"] == checkpoint_identity(ck) and report["checkpoint_identity"]["files"]
    monkeypatch.setattr(complete_fill, "scenes", lambda n: iter([]))
    monkeypatch.setattr(complete_fill, "oracle_rows", lambda data: {"guided": [{"mae": 1.0, "rmse": 1.0}]})
    monkeypatch.setattr(complete_fill, "model_rows", lambda stages, data: {})
    for argv, identity in ((["--checkpoint", str(ck)], checkpoint_identity(ck)), (["--oracle-only"], None)):
        assert complete_fill.main([*argv, "--scenes", "1", "--out", str(tmp_path / "f")]) == 0
        assert json.loads((tmp_path / "f" / "complete_fill.json").read_text())["checkpoint_identity"] == identity


# ----------------------------------------------------------------------------------------- complete_train_step


@pytest.mark.parametrize("argv", [[], ["--device", "cpu"]])
def test_complete_train_step_refuses_3b_without_cuda(tmp_path, monkeypatch, capsys, argv):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine, wherever the test runs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # main sets it for --device cpu: restored after the test
    monkeypatch.setattr(complete_train_step, "build_recipe", _never("the 3B build"))
    out = tmp_path / "r.json"
    assert _results.run_main(complete_train_step.main, [*argv, "--out", str(out)]) == 2
    _one_error_line(capsys, "--tiny", "--full-size-on-cpu")
    assert not out.exists()


# ------------------------------------------------------------------------------------------- complete_headroom


def test_complete_headroom_checks_patterns_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(complete_headroom, "make_scenes", _never("scene making / training"))
    with pytest.raises(SystemExit) as exc:
        complete_headroom.main(["--patterns", "random500,lidar_64", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "lidar_64" in err and "lidar64" in err
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------- full_size_readiness


def _small_config(folder: Path) -> None:
    """The config.json a --small snapshot has (built as make_snapshot builds it; no weights)."""
    from depthkit.complete.tiny import tiny_qwen2_5_vl_config, token_ids_from_tokenizer
    from depthkit.complete.tokenizer import build_offline_tokenizer

    fsr = full_size_readiness
    config = tiny_qwen2_5_vl_config(fsr.VOCAB_3B, token_ids_from_tokenizer(build_offline_tokenizer()),
                                    text=dict(fsr.TEXT_SMALL), vision=dict(fsr.VISION_SMALL), tie_word_embeddings=True)
    config.save_pretrained(folder)


def test_full_size_readiness_modes_have_their_own_defaults_and_record_mode_and_command(tmp_path):
    fsr = full_size_readiness
    full, small = fsr.parse_args([]), fsr.parse_args(["--small"])
    assert full.snapshot != small.snapshot and full.out != small.out
    assert full.out == fsr.OUT  # the committed 3B record is the full mode's only
    argv = ["--small", "--snapshot", str(tmp_path / "snap"), "--out", str(tmp_path / "r.json")]
    args = fsr.parse_args(argv)
    fsr._record(args, "snapshot", {"status": "done"})
    report = _strict(tmp_path / "r.json")
    assert report["mode"] == "small" and report["command"] == _results.command_line(argv, fsr.__file__)
    assert "--small" in report["command"]
    # a phase process records the parent's command, and a record of the other mode is started anew
    child = fsr.parse_args(["--phase", "run", "--snapshot", str(tmp_path / "snap"), "--out", str(tmp_path / "r.json"),
                            "--command", "python benchmarks/full_size_readiness.py --as-typed"])
    fsr._record(child, "run", {"status": "done"})
    report = _strict(tmp_path / "r.json")
    assert report["mode"] == "3b" and report["command"].endswith("--as-typed") and list(report["phases"]) == ["run"]


def test_full_size_readiness_refuses_the_other_modes_snapshot(tmp_path, monkeypatch, capsys):
    fsr = full_size_readiness
    snap = tmp_path / "snap"
    _small_config(snap)
    fsr.check_snapshot(snap, "small")  # its own mode's passes (the --small test reuses it)
    monkeypatch.setattr(fsr.subprocess, "call", _never("a phase"))
    monkeypatch.setattr(fsr, "make_snapshot", _never("make_snapshot"))
    monkeypatch.setattr(fsr, "run_user_path", _never("run_user_path"))
    for phase in ("all", "run", "snapshot"):
        argv = ["--phase", phase, "--snapshot", str(snap), "--out", str(tmp_path / "r.json")]
        assert _results.run_main(fsr.main, argv) == 2
        _one_error_line(capsys, str(snap), "3b mode", "--small", "hidden_size 128")
    assert not (tmp_path / "r.json").exists() and (snap / "config.json").is_file()


# -------------------------------------------------------------------------------------- run_main, every script


@pytest.mark.parametrize("module, argv", [
    (complete_fill, ["--checkpoint", "/tmp/nope_depthkit_missing", "--scenes", "1"]),
    (complete_confidence, ["--checkpoint", "/tmp/nope_depthkit_missing", "--scenes", "1"])])
def test_missing_checkpoint_is_one_error_line_and_status_2(tmp_path, monkeypatch, capsys, module, argv):
    monkeypatch.setattr(complete_fill, "scenes", _never("scene rendering"))  # the checkpoint is checked first
    assert _results.run_main(module.main, [*argv, "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "/tmp/nope_depthkit_missing")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_runs_main_through_run_main(script):
    source = (BENCH / f"{script}.py").read_text()
    block = source.split('if __name__ == "__main__":', 1)[1]
    assert "run_main(main)" in block, script


@pytest.mark.parametrize("argv, says", [
    (["--threads", "0"], "--threads must be >= 1; received 0."),
    (["--scenes", "0"], "--scenes must be >= 1"),
    (["--height", "-1"], "--height must be >= 1"),
    (["--width", "0"], "--width must be >= 1"),
    (["--sparse-points", "0"], "--sparse-points must be >= 1"),
    (["--query-budget", "0"], "--query-budget must be >= 1"),
])
def test_complete_confidence_refuses_sizes_below_one_before_the_checkpoint_loads(tmp_path, monkeypatch, capsys,
                                                                                 argv, says):
    """--threads 0 was torch's RuntimeError traceback; the other sizes failed inside the stage or the metrics."""
    from depthkit.complete import stage

    monkeypatch.setattr(stage.CompleteVLMStage, "from_checkpoint", _never("the checkpoint load"))
    with pytest.raises(SystemExit) as exc:
        complete_confidence.main(["--checkpoint", str(tmp_path), *argv, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, says", [
    (["--steps", "0"], "--steps must be >= 1; received 0."),
    (["--threads", "0"], "--threads must be >= 1; received 0."),
    (["--batch", "0"], "--batch must be >= 1"),
    (["--queries", "-2"], "--queries must be >= 1"),
    (["--image", "168"], "--image takes HEIGHTxWIDTH in pixels, e.g. 168x168; received '168'"),
    (["--image", "0x16"], "--image takes HEIGHTxWIDTH"),
])
def test_complete_train_step_refuses_sizes_below_one_before_building(tmp_path, monkeypatch, capsys, argv, says):
    """--steps 0 failed after the model was built (no median of no steps); --threads 0 was read as not given, though
    the command recorded it."""
    monkeypatch.setattr(complete_train_step, "build_recipe", _never("the recipe build"))
    with pytest.raises(SystemExit) as exc:
        complete_train_step.main(["--tiny", *argv, "--out", str(tmp_path / "o.json")])
    assert exc.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
