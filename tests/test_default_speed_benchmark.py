"""benchmarks/default_speed.py's bookkeeping, with the timing itself (``measure``) replaced: what its report says
about the run matches when it was measured."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))  # the script imports its siblings (_results, accuracy) by name

import default_speed  # noqa: E402


def _row(stages, method, threads, size, repeats, pattern, config):
    return {"stages": stages, "method": method or "sdim", "sparse": pattern, "sharpen_config": None,
            "threads": threads, "height": size[0], "width": size[1], "median_s": 1.0, "runs_s": [1.0] * repeats,
            "sharpen_unet": None, "complete_engine_s": None, "complete_refine_s": None, "complete_total_s": None}


def test_the_load_average_is_the_one_before_anything_is_timed(tmp_path, monkeypatch):
    """The table says "load average X at the start": it is read before the first timed call, not after the last
    (the benchmark's own threads raise it while they run)."""
    timed = []

    def fake_measure(checkpoint, *args):
        timed.append(args)
        return _row(*args)

    monkeypatch.setattr(default_speed, "measure", fake_measure)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0 if timed else 0.5, 0.0, 0.0))
    assert default_speed.main(["--threads", "1", "--sizes", "64", "--repeats", "1", "--out", str(tmp_path)]) == 0
    assert timed
    report = json.loads((tmp_path / "default_speed.json").read_text())
    assert report["load_average"] == 0.5
    assert "load average 0.5 at the start" in (tmp_path / "default_speed.md").read_text()


def test_a_count_below_one_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    """--threads 0 (torch's bare RuntimeError traceback), --repeats 0 ("no median for empty data" after the
    warm-up) and a width too small for a 3:4 image are refused in one line naming the option and what it takes."""
    import pytest

    monkeypatch.setattr(default_speed, "measure", lambda *a: pytest.fail("measured despite a bad option"))
    for bad, says in ((["--threads", "1", "0"], "--threads must be >= 1 torch CPU threads; received 1 0."),
                      (["--repeats", "0"], "--repeats must be >= 1 timed calls after the warm-up; received 0."),
                      (["--sizes", "1"], "--sizes must be >= 2 pixels wide (3:4 images); received 1."),
                      (["--threads", "1", "2", "1"], "--threads must be distinct (each value is its own rows); "
                                                     "received 1 2 1 (repeated: 1)."),
                      (["--sizes", "16", "16"], "--sizes must be distinct (each value is its own rows); received "
                                                "16 16 (repeated: 16).")):
        with pytest.raises(SystemExit) as exc:
            default_speed.main([*bad, "--out", str(tmp_path / "x")])
        assert exc.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_report_records_the_checkpoints_files_not_only_its_path(tmp_path, monkeypatch):
    """A folder retrained in place keeps its path; the report's checkpoint_identity (the files' hash) tells the
    runs apart, as accuracy.py's rows do."""
    from depthkit.checkpoints import checkpoint_identity

    monkeypatch.setattr(default_speed, "measure", lambda checkpoint, *args: _row(*args))
    assert default_speed.main(["--threads", "1", "--sizes", "64", "--repeats", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "default_speed.json").read_text())
    assert report["checkpoint_identity"] == checkpoint_identity(report["checkpoint"])
    assert report["checkpoint_identity"]["files"]
