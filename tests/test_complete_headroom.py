"""benchmarks/complete_headroom.py: the CNN that bounds what a dense learned correction of guided gains."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import complete_headroom as headroom  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _scene(h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    prior = rng.uniform(1.0, 8.0, (h, w)).astype(np.float32)
    sparse = np.zeros((h, w), np.float32)
    sparse[3, 4], sparse[10, 20] = 2.0, 5.5
    return {"image": image, "prior": prior, "sparse": sparse, "x": headroom.features(image, sparse, prior)}


def test_features_by_hand():
    s = _scene()
    x = s["x"]
    ref = np.median(np.log(s["prior"]))
    assert x.shape == (6, 24, 32) and x.dtype == np.float32
    assert np.allclose(x[:3], s["image"].transpose(2, 0, 1) / 255.0)
    assert np.allclose(x[3], np.log(s["prior"]) - ref, atol=1e-6)
    assert x[4].sum() == 2 and x[4, 3, 4] == 1 and x[4, 10, 20] == 1
    assert x[5, 10, 20] == pytest.approx(np.log(5.5) - ref, abs=1e-6) and x[5, 0, 0] == 0


def test_untrained_net_is_guided_and_a_moved_one_keeps_measurements():
    s = _scene()
    net = headroom.build_net()
    assert np.array_equal(headroom.correct(net, s), np.where(s["sparse"] > 0, s["sparse"], s["prior"]))
    with torch.no_grad():
        net.head[-1].bias.fill_(0.5)  # every pixel corrected by exp(tanh(0.5))
    out = headroom.correct(net, s)
    measured = s["sparse"] > 0
    assert np.array_equal(out[measured], s["sparse"][measured])
    assert np.allclose(out[~measured], s["prior"][~measured] * np.exp(np.tanh(0.5)), rtol=1e-5)


def test_smoke_run_scores_guided_like_the_accuracy_benchmark(tmp_path):
    from depthkit.data.baselines import guided
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.metrics import depth_metrics

    assert headroom.main(["--train-scenes", "2", "--steps", "2", "--test-scenes", "1", "--patterns", "random500",
                          "--out", str(tmp_path), "--save", str(tmp_path / "refiner")]) == 0
    report = json.loads((tmp_path / "complete_headroom.json").read_text())
    sample = SyntheticDataset(split="test", length=1, sparse_pattern="random", sparse_kwargs={"n": 500})[0]
    gt = sample["depth"]
    expected = depth_metrics(guided(sample["image"], sample["sparse"]), gt, gt > 0)["mae"]
    assert report["mean"]["random500"]["guided_mae"] == pytest.approx(expected, rel=1e-6)
    assert report["mean"]["random500"]["preservation"] == 0
    assert "| random500 |" in (tmp_path / "complete_headroom.md").read_text()
    from depthkit.complete.refiner import DenseRefiner  # --save: a refiner folder assemble_default --refiner takes

    info = json.loads((tmp_path / "refiner" / "refiner.json").read_text())
    assert info["width"] == 32 and info["steps"] == 2
    net = DenseRefiner.load(tmp_path / "refiner", info)
    cnn = net.refine(sample["image"], sample["sparse"], guided(sample["image"], sample["sparse"]))
    assert depth_metrics(cnn, gt, gt > 0)["mae"] == pytest.approx(report["mean"]["random500"]["cnn_mae"], rel=1e-6)


@pytest.mark.parametrize("bad, says", [(["--test-scenes", "0"], "--test-scenes must be >= 1; received 0"),
                                       (["--train-scenes", "-1"], "--train-scenes must be >= 1"),
                                       (["--steps", "0"], "--steps must be >= 1"),
                                       (["--batch", "0"], "--batch must be >= 1"),
                                       (["--threads", "0"], "--threads must be >= 1"),
                                       (["--lr", "0"], "--lr must be > 0"),
                                       (["--lr", "nan"], "--lr must be > 0")])
def test_bad_sizes_are_refused_before_any_training(bad, says, tmp_path, monkeypatch, capsys):
    """A count < 1 or a learning rate <= 0 is refused by the parser, before the training scenes are made (found
    after training it would lose the trained net)."""
    monkeypatch.setattr(headroom, "make_scenes", lambda *a, **k: pytest.fail("scenes made before the check"))
    with pytest.raises(SystemExit) as exc:
        headroom.main([*bad, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
