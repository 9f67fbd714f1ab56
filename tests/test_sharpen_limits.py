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


def test_runs_on_the_default_checkpoint_and_scores_its_metric_input(tmp_path):
    """The default metric input is the checkpoint's completion without queries (recomputed here); ``--metric
    guided`` scores guided; "sharpened" is the pipeline stage's output, with the manifest's run-time options."""
    from depthkit.checkpoints import CheckpointRef
    from depthkit.data.baselines import guided
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.metrics import depth_metrics
    from depthkit.sharpen.stage import build_sharpen_stage
    from depthkit.sharpen.teachers import build_metric_source

    sample = SyntheticDataset(split="test", length=1, sparse_pattern="random", sparse_kwargs={"n": 100})[0]
    gt = sample["depth"]
    completion = build_metric_source("complete:sdim", checkpoint=str(ROOT / "checkpoints" / "default"),
                                     query_budget=0)(sample["image"], sample["sparse"], sample["name"])
    stage = build_sharpen_stage(CheckpointRef.open(str(ROOT / "checkpoints" / "default")))
    for metric, expected_input in (("complete", completion), ("guided", guided(sample["image"], sample["sparse"]))):
        out = tmp_path / metric
        assert sharpen_limits.main(["--scenes", "1", "--patterns", "random100", "--metric", metric,
                                    "--near-px", "8", "--out", str(out)]) == 0
        report = json.loads((out / "sharpen_limits.json").read_text())
        row = report["per_scene"]["random100"][0]
        assert set(row) == set(sharpen_limits.MAPS) and report["metric"] == metric
        expected = depth_metrics(expected_input, gt, gt > 0)["mae"]
        assert row["input"]["mae"] == pytest.approx(expected, rel=1e-6)
        assert row["VAE round trip"]["mae"] != pytest.approx(expected, rel=1e-3)  # the VAE is lossy
        assert row["sharpened, no limits"]["mae"] != row["sharpened"]["mae"]  # the shipped limits act
        staged = stage.run(sample["image"], sample["sparse"], expected_input).depth  # the manifest's options
        assert row["sharpened"]["mae"] == pytest.approx(depth_metrics(staged, gt, gt > 0)["mae"], rel=1e-6)
        md = (out / "sharpen_limits.md").read_text()
        assert "| random100 |" in md and report["near_px"] == 8.0
        for part in ("near", "far"):  # the by-region table, from the same rows
            cells = next(line for line in md.splitlines() if line.startswith(f"| random100 | {part} |"))
            assert cells.split(" | ")[2] == f"{row['input'][part + '_mae']:.3f} / {row['input'][part + '_dbe_acc']:.2f}"
    out = tmp_path / "round_trip"  # the GT through the VAE alone: nearer the GT than the input's round trip
    assert sharpen_limits.main(["--scenes", "1", "--patterns", "random100", "--metric", "guided", "--gt-round-trip",
                                "--out", str(out)]) == 0
    report = json.loads((out / "sharpen_limits.json").read_text())
    row = report["per_scene"]["random100"][0]
    assert set(row) == set(sharpen_limits.MAPS) | {sharpen_limits.GT_ROUND_TRIP} and report["gt_round_trip"]
    assert row[sharpen_limits.GT_ROUND_TRIP]["mae"] < 0.75 * row["VAE round trip"]["mae"], row  # 0.46 vs 0.80 m
    assert f"| {sharpen_limits.GT_ROUND_TRIP} |" in (out / "sharpen_limits.md").read_text()


def _band_sharpener_and_scene(tmp_path, height, width, pattern, sparse_kwargs):
    """A random tiny checkpoint's sharpener with a 1-px band only, one synthetic test scene and its guided input:
    ``(checkpoint dir, sharpdepth, image, gt, sparse, guided)``."""
    from depthkit.cli import main
    from depthkit.data.baselines import guided
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.sharpen.model import SharpDepth

    ck = tmp_path / "tiny"
    assert main(["init-checkpoint", "--tiny", str(ck), "--seed", "1"]) == 0
    sharpdepth = SharpDepth.from_dir(ck / "sharpen", config={"change_band_px": 1, "change_band_jump": 0.1})
    sample = SyntheticDataset(split="test", length=1, height=height, width=width, sparse_pattern=pattern,
                              sparse_kwargs=sparse_kwargs)[0]
    image, gt, sparse = sample["image"], sample["depth"], sample["sparse"]
    return ck, sharpdepth, image, gt, sparse, guided(image, sparse)


def test_gt_under_the_limits_is_the_gt_inside_the_band_and_the_input_outside(tmp_path):
    """With a band-only sharpener the reference map is, by hand, GT where the input's log depth spreads by more than
    the jump within the window and the input elsewhere, measured pixels restored; "no limits" is the
    free output."""
    from depthkit.metrics import dbe_metrics, depth_metrics
    from depthkit.sharpen.model import SharpDepth

    ck, sharpdepth, image, gt, sparse, d = _band_sharpener_and_scene(tmp_path, 24, 32, "random", {"n": 30})
    h, w = gt.shape
    band = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            win = np.log(d[max(0, y - 1):y + 2, max(0, x - 1):x + 2])
            band[y, x] = win.max() - win.min() > 0.1
    assert 0 < band.mean() < 1
    row = sharpen_limits.score_scene(sharpdepth, image, gt, sparse, d, None)
    oracle = np.where(sparse > 0, sparse, np.where(band, gt, d))
    assert row["GT under the limits"]["mae"] == pytest.approx(depth_metrics(oracle, gt, gt > 0)["mae"], rel=1e-5)
    assert row["GT under the limits"]["dbe_acc"] == pytest.approx(dbe_metrics(oracle, gt, valid=gt > 0)["dbe_acc"])
    assert row["GT under the limits"]["mae"] < row["input"]["mae"]
    free = SharpDepth.from_dir(ck / "sharpen").sharpen(image, d, sparse).depth  # the same pass without limits
    assert row["sharpened, no limits"]["mae"] == pytest.approx(depth_metrics(free, gt, gt > 0)["mae"], rel=1e-5)


def test_regions_score_each_map_within_and_beyond_the_measured_pixels(tmp_path):
    """``near_px``: "near" = pixels within that many px of a measured pixel (brute force here), "far" = the rest;
    each map scored over its region alone: MAE by hand, DBE accuracy by its definition from the whole frame's edges
    restricted to the region. In this scene no GT edge of the frame lies beyond the beams, so the far region's DBE
    is NaN, where GT edges found in the region's own min-max range would give a number. A frame without measured
    pixels has no near region (NaN) and its far region is the whole frame. The report keeps NaN as null."""
    from depthkit.metrics import dbe_metrics, depth_edges

    _, sharpdepth, image, gt, sparse, d = _band_sharpener_and_scene(tmp_path, 60, 80, "lidar", {"n_beams": 12})
    ys, xs = np.nonzero(sparse)
    yy, xx = np.mgrid[:gt.shape[0], :gt.shape[1]]
    near = np.sqrt((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(-1) <= 3
    assert 0.1 < near.mean() < 0.9
    row = sharpen_limits.score_scene(sharpdepth, image, gt, sparse, d, None, near_px=3)
    gt_edges, pred_edges = depth_edges(gt, valid=gt > 0), depth_edges(d)  # the whole frame's edges
    for part, region in (("near", near), ("far", ~near)):
        valid = region & (gt > 0)
        assert row["input"][f"{part}_mae"] == pytest.approx(np.abs(d - gt)[valid].mean(), rel=1e-5)
    g, e = gt_edges & near & (gt > 0), pred_edges & near & (gt > 0)
    assert g.any() and e.any()
    dist = np.sqrt((yy[..., None] - np.nonzero(g)[0]) ** 2 + (xx[..., None] - np.nonzero(g)[1]) ** 2).min(-1)
    assert row["input"]["near_dbe_acc"] == pytest.approx(dist[e & (dist < 10)].mean(), rel=1e-5)
    assert not (gt_edges & ~near).any() and np.isnan(row["input"]["far_dbe_acc"])
    assert np.isfinite(dbe_metrics(d, gt, valid=~near & (gt > 0))["dbe_acc"])  # the region's own edges: not used
    assert row["input"]["mae"] == pytest.approx(np.abs(d - gt)[gt > 0].mean(), rel=1e-5)
    none = sharpen_limits.score_scene(sharpdepth, image, gt, np.zeros_like(sparse), d, None, near_px=3)
    assert np.isnan(none["input"]["near_mae"]) and none["input"]["far_mae"] == pytest.approx(none["input"]["mae"])
    from _results import write_results

    write_results(tmp_path / "r", "x", {"row": none["input"]}, ["x"])
    assert json.loads((tmp_path / "r" / "x.json").read_text())["row"]["near_mae"] is None


def test_near_px_must_be_a_distance(capsys, tmp_path):
    for bad in ("-1", "nan", "inf", "eight"):
        with pytest.raises(SystemExit):  # (--out: a broken check must not overwrite the committed results)
            sharpen_limits.main(["--near-px", bad, "--scenes", "1", "--out", str(tmp_path)])
        assert "finite number of pixels >= 0" in capsys.readouterr().err


def test_bad_pattern_says_what_is_allowed(capsys):
    with pytest.raises(SystemExit):
        sharpen_limits.main(["--patterns", "random7"])
    assert "random500" in capsys.readouterr().err
