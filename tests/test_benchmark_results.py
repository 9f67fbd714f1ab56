"""benchmarks/_results.py: what every benchmark's JSON records about its run, strict JSON, and one error line for a
user's mistake."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from repo_scripts import load_script

REPO = Path(__file__).resolve().parent.parent


def _results():
    return load_script("benchmarks/_results.py")


def test_write_json_fills_the_run_keys_a_report_lacks_and_keeps_its_own(tmp_path, monkeypatch):
    """A report without date/command/version/commit/machine gets them (the command as typed: the script's path in
    the repository and its arguments, shell-quoted); keys the script set stay; NaN and inf are written as null."""
    from depthkit import __version__

    r = _results()
    monkeypatch.setattr(sys, "argv", [str(REPO / "benchmarks" / "x.py"), "--name", "a b", "--limit", "2"])
    path = r.write_json(tmp_path / "sub" / "x.json", {"benchmark": "x", "mae": math.nan, "big": math.inf})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    report = json.loads(text)
    assert report["mae"] is None and report["big"] is None
    assert report["command"] == "python benchmarks/x.py --name 'a b' --limit 2"
    assert report["depthkit_version"] == __version__ and report["date"].endswith("+00:00")
    assert report["machine"]["cpu_count"] and "torch_threads" in report["machine"]
    assert "git_commit" in report
    kept = json.loads(r.write_json(tmp_path / "y.json", {"command": "mine", "machine": "here"}).read_text())
    assert kept["command"] == "mine" and kept["machine"] == "here" and kept["depthkit_version"] == __version__


def test_write_results_writes_the_pair_and_the_run_keys(tmp_path, capsys):
    r = _results()
    json_path, md_path = r.write_results(tmp_path, "n", {"v": 1}, ["| a |", "|---|"], echo=True)
    assert md_path.read_text() == "| a |\n|---|\n" and capsys.readouterr().out == "| a |\n|---|\n"
    assert {"date", "command", "depthkit_version", "git_commit", "machine"} <= set(json.loads(json_path.read_text()))


def test_run_main_says_a_users_mistake_in_one_line_and_check_device_refuses_cuda_here(capsys, monkeypatch):
    r = _results()
    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py"])

    def main(argv):
        from depthkit.checkpoints import CheckpointRef

        CheckpointRef.open("/nonexistent/ck")

    assert r.run_main(main, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("x.py: error: ") and "/nonexistent/ck" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert r.run_main(lambda argv: 0, []) == 0
    monkeypatch.setenv("DEPTHKIT_TRACEBACK", "1")  # a bug raising a ValueError is not hidden when asked
    with pytest.raises(ValueError, match="/nonexistent/ck"):
        r.run_main(main, [])
    monkeypatch.setenv("DEPTHKIT_TRACEBACK", "0")
    assert r.run_main(main, []) == 2 and "x.py: error: " in capsys.readouterr().err
    with pytest.raises(KeyError):  # a bug is not dressed as a user's mistake
        r.run_main(lambda argv: {}["missing"], [])
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine, wherever the test runs
    with pytest.raises(ValueError, match=r"--device cuda:1 asked for but CUDA is not available here .*--device cpu"):
        r.check_device("cuda:1")
    r.check_device("cpu")


def test_a_run_from_another_folder_records_it_and_a_command_that_runs_from_anywhere(tmp_path, monkeypatch):
    """Relative arguments (--checkpoint, --root, --out) are relative to the folder the script ran in, so the report
    records that folder (``cwd``) and, away from the repository root, a command that goes there first and names the
    script by its absolute path; from the root, the command is as before."""
    r = _results()
    script = str(REPO / "benchmarks" / "x.py")
    monkeypatch.setattr(sys, "argv", ["../benchmarks/x.py", "--out", "res dir", "--limit", "2"])
    monkeypatch.chdir(tmp_path)
    report = json.loads(r.write_json(tmp_path / "x.json", {"benchmark": "x"}).read_text())
    assert report["cwd"] == str(tmp_path)
    assert report["command"] == f"cd {tmp_path} && python {(tmp_path / '../benchmarks/x.py').resolve()} --out " \
                                "'res dir' --limit 2"
    assert r.command_line(["--limit", "2"], script) == f"cd {tmp_path} && python {script} --limit 2"
    monkeypatch.chdir(REPO)
    assert r.command_line(["--limit", "2"], script) == "python benchmarks/x.py --limit 2"
    assert r.run_info(["--limit", "2"], script)["cwd"] == str(REPO)
