"""The sharpen benchmark scripts (and accuracy.py's --merge) on a user's mistakes: what they refuse, before any work,
and what they leave alone; run in-process (their ``main``, or the ``__main__`` block by :func:`runpy.run_path`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))  # the scripts import their siblings (_results, accuracy) by name

import sharpen_readiness  # noqa: E402


def test_readiness_refuses_a_folder_it_did_not_make_and_leaves_its_files(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(sharpen_readiness, "run_phase", lambda name, args: ran.append(name) or {"ok": True})
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("a user's file")
    (folder / "release").mkdir()
    out = tmp_path / "r.json"
    with pytest.raises(ValueError, match=r"not empty \(keep.txt, release\).*no \.sharpen_readiness"):
        sharpen_readiness.main(["--dir", str(folder), "--out", str(out)])
    assert (folder / "keep.txt").read_text() == "a user's file" and (folder / "release").is_dir()
    assert ran == [] and not out.exists()


def test_readiness_marks_the_folder_it_makes_and_reuses_only_that(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(sharpen_readiness, "run_phase", lambda name, args: ran.append(name) or {"ok": True})
    folder, out = tmp_path / "work", tmp_path / "r.json"
    assert sharpen_readiness.main(["--dir", str(folder), "--out", str(out), "--threads", "1"]) == 0
    assert (folder / sharpen_readiness.MARKER).is_file() and ran == ["release", "import", "infer"]
    report = json.loads(out.read_text())
    assert {"date", "command", "depthkit_version", "git_commit", "machine"} <= set(report)
    assert report["command"] == f"python benchmarks/sharpen_readiness.py --dir {folder} --out {out} --threads 1"
    (folder / "release").mkdir()  # what a phase left, and a file of the user's beside it
    (folder / "notes.txt").write_text("kept")
    assert sharpen_readiness.main(["--dir", str(folder), "--out", str(out)]) == 0
    assert not (folder / "release").exists() and (folder / "notes.txt").read_text() == "kept"


def test_readiness_help_describes_dir(capsys):
    with pytest.raises(SystemExit):
        sharpen_readiness.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--dir DIR work folder" in text and "non-empty folder without the marker is refused" in text
