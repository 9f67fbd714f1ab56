"""Full-size readiness of the sharpen stage (``@slow``; minutes and ~10 GB of RAM): an SD2-size SharpDepth release
with random weights, imported by ``depthkit import-checkpoint``, then one 768-px two-pass inference
(``benchmarks/sharpen_readiness.py``; the committed figures are in benchmarks/results/sharpen_readiness.json)."""

import json
from pathlib import Path

import pytest
from repo_scripts import load_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sd2_size_release_imports_and_runs_at_768(tmp_path):
    module = load_script("benchmarks/sharpen_readiness.py")
    out = tmp_path / "readiness.json"
    assert module.main(["--dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    phases = json.loads(out.read_text())["phases"]
    assert all(p["ok"] for p in phases.values()), phases
    assert 8.0e8 < phases["release"]["unet_parameters"] < 9.0e8  # SD2's UNet with 8 input channels: ~866M
    infer = phases["infer"]
    assert (infer["height"], infer["width"]) == (576, 768) and infer["finite"] and infer["measured_kept"]
