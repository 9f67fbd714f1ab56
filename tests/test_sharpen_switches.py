"""benchmarks/sharpen_switches.py: each variant is the sharpen stage with that ``config`` option, scored on the val
split against the completion it sharpens."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import sharpen_switches  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_variants_are_applied_and_scored_on_the_val_split(tmp_path):
    """An empty band (a jump no scene has) must give the input back exactly: change 0, same DBE; the stored switches
    must change something. The input's MAE is recomputed here from the completion of the val scene."""
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.metrics import depth_metrics
    from depthkit.sharpen.teachers import build_metric_source

    empty = json.dumps({"change_band_px": 2, "change_band_jump": 1e9})
    argv = ["--scenes", "1", "--patterns", "random100", "--variant", "stored={}", "--variant", f"no band={empty}",
            "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path)]
    assert sharpen_switches.main(argv) == 0
    report = json.loads((tmp_path / "sharpen_switches.json").read_text())
    stored, none = report["results"]["stored"]["random100"], report["results"]["no band"]["random100"]
    assert none["change"] == 0 and none["dbe_acc"] == none["input_dbe_acc"] and not none["goal_met"]
    assert stored["mae"] != stored["input_mae"]
    sample = SyntheticDataset(split="val", length=1, sparse_pattern="random", sparse_kwargs={"n": 100})[0]
    completion = build_metric_source("complete:sdim", checkpoint=str(ROOT / "checkpoints" / "default"),
                                     query_budget=0)(sample["image"], sample["sparse"], sample["name"])
    gt = sample["depth"]
    assert stored["input_mae"] == pytest.approx(depth_metrics(completion, gt, gt > 0)["mae"], rel=1e-6)
    (cached,) = (tmp_path / "work").glob("val_random100_0_*.npy")
    assert np.array_equal(np.load(cached), completion)
    assert "| no band | +0.0 %" in (tmp_path / "sharpen_switches.md").read_text()


@pytest.mark.parametrize("text", ["band 2", "band 2={not json}", "=[1]", "x=[1, 2]"])
def test_a_malformed_variant_says_what_is_expected(text):
    with pytest.raises(ValueError, match="NAME=JSON|not JSON"):
        sharpen_switches.parse_variant(text)


def test_bad_pattern_says_what_is_allowed(capsys):
    with pytest.raises(SystemExit):
        sharpen_switches.main(["--patterns", "random7"])
    assert "random500" in capsys.readouterr().err
