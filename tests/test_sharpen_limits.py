"""benchmarks/sharpen_limits.py: the decomposition of a sharpener's error runs on the shipped checkpoint and scores
what it says it scores."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import sharpen_limits  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_affine_to_recovers_a_scaled_and_shifted_map():
    rng = np.random.default_rng(0)
    target = rng.uniform(1, 9, (12, 16)).astype(np.float32)
    valid = rng.random((12, 16)) > 0.3
    pred = (target - 3.0) / 2.0  # target = 2 * pred + 3
    pred[~valid] = 100.0  # pixels outside valid do not enter the fit
    aligned = sharpen_limits.affine_to(pred, target, valid)
    assert np.allclose(aligned[valid], target[valid], atol=1e-4)


def test_runs_on_the_default_checkpoint_and_scores_guided_as_the_input(tmp_path):
    from depthkit.data.baselines import guided
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.metrics import depth_metrics

    assert sharpen_limits.main(["--scenes", "1", "--patterns", "random100", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "sharpen_limits.json").read_text())
    row = report["per_scene"]["random100"][0]
    assert set(row) == set(sharpen_limits.MAPS)
    sample = SyntheticDataset(split="test", length=1, sparse_pattern="random", sparse_kwargs={"n": 100})[0]
    gt = sample["depth"]
    expected = depth_metrics(guided(sample["image"], sample["sparse"]), gt, gt > 0)["mae"]
    assert row["input"]["mae"] == pytest.approx(expected, rel=1e-6)
    assert row["VAE round trip"]["mae"] != pytest.approx(expected, rel=1e-3)  # the VAE is lossy
    assert "| random100 |" in (tmp_path / "sharpen_limits.md").read_text()


def test_bad_pattern_says_what_is_allowed(capsys):
    with pytest.raises(SystemExit):
        sharpen_limits.main(["--patterns", "random7"])
    assert "random500" in capsys.readouterr().err
