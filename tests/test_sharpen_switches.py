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
    """An empty band (a jump no scene has) must give the input back exactly: change 0, same DBE; the shipped switches
    must change something. The input's MAE, each scene's output (the stage itself, one variant at a time) and the
    standard error of the DBE change are recomputed here."""
    from depthkit.checkpoints import CheckpointRef
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.metrics import dbe_metrics, depth_metrics
    from depthkit.sharpen.stage import build_sharpen_stage
    from depthkit.sharpen.teachers import build_metric_source

    empty = json.dumps({"change_band_px": 2, "change_band_jump": 1e9})
    argv = ["--scenes", "2", "--patterns", "random100", "--variant", "shipped={}", "--variant", f"no band={empty}",
            "--variant", 'fit 0.3={"fit_threshold": 0.3}',  # another UNet pass: its own group
            "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path)]
    assert sharpen_switches.main(argv) == 0
    report = json.loads((tmp_path / "sharpen_switches.json").read_text())
    shipped, none = report["results"]["shipped"]["random100"], report["results"]["no band"]["random100"]
    assert none["change"] == 0 and none["dbe_acc"] == none["input_dbe_acc"] and not none["goal_met"]
    assert none["dbe_change_se"] == 0
    assert shipped["mae"] != shipped["input_mae"]
    data = SyntheticDataset(split="val", length=2, sparse_pattern="random", sparse_kwargs={"n": 100})
    source = build_metric_source("complete:sdim", checkpoint=str(ROOT / "checkpoints" / "default"), query_budget=0)
    ref = CheckpointRef.open(str(ROOT / "checkpoints" / "default"))
    stage, fit = build_sharpen_stage(ref), build_sharpen_stage(ref, options={"config": {"fit_threshold": 0.3}})
    maes, changes = [], []
    for i in range(2):
        sample = data[i]
        completion = source(sample["image"], sample["sparse"], sample["name"])
        gt = sample["depth"]
        maes.append(depth_metrics(completion, gt, gt > 0)["mae"])
        out = stage.run(sample["image"], sample["sparse"], completion).depth
        dbe_in = dbe_metrics(completion, gt, valid=gt > 0)["dbe_acc"]
        changes.append(dbe_metrics(out, gt, valid=gt > 0)["dbe_acc"] - dbe_in)
        other = fit.run(sample["image"], sample["sparse"], completion).depth
        scored = report["results"]["fit 0.3"]["random100"]["per_scene"][i]
        assert scored[2] == pytest.approx(depth_metrics(other, gt, gt > 0)["mae"], rel=1e-6)
        assert scored[2] != pytest.approx(depth_metrics(out, gt, gt > 0)["mae"], rel=1e-6)
        cached = list((tmp_path / "work").glob(f"val_random100_{i}_*.npy"))
        assert len(cached) == 1 and np.array_equal(np.load(cached[0]), completion)
    assert shipped["input_mae"] == pytest.approx(np.mean(maes), rel=1e-6)
    assert shipped["dbe_change_se"] == pytest.approx(abs(changes[0] - changes[1]) / 2, rel=1e-6)  # n = 2: |a - b| / 2
    assert "| no band | +0.0 % / " in (tmp_path / "sharpen_switches.md").read_text()


def test_a_bad_variant_value_fails_before_any_scene_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sharpen_switches.main(["--scenes", "1", "--patterns", "random100", "--variant", 'x={"change_range_px": 1.5}',
                               "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path)])
    assert "'x'" in capsys.readouterr().err and not (tmp_path / "work").exists()


@pytest.mark.parametrize("text", ["band 2", "band 2={not json}", "=[1]", "x=[1, 2]"])
def test_a_malformed_variant_says_what_is_expected(text):
    with pytest.raises(ValueError, match="NAME=JSON|not JSON"):
        sharpen_switches.parse_variant(text)


def test_bad_pattern_says_what_is_allowed(capsys):
    with pytest.raises(SystemExit):
        sharpen_switches.main(["--patterns", "random7"])
    assert "random500" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["sharpen_switches", "sharpen_resolution", "sharpen_limits"])
def test_threads_below_one_is_a_parser_error_not_a_torch_traceback(script, capsys, tmp_path):
    """--threads 0 reached torch.set_num_threads: a bare RuntimeError traceback."""
    import importlib

    with pytest.raises(SystemExit) as exc:
        importlib.import_module(script).main(["--threads", "0", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].endswith("error: --threads must be >= 1 torch CPU thread (received 0).")
    assert not list(tmp_path.iterdir())


def test_standard_error_by_hand_and_none_below_two_scenes():
    assert sharpen_switches.standard_error([1.0, 2.0, 4.0, float("nan")]) == pytest.approx(
        np.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2) / np.sqrt(3))
    assert sharpen_switches.standard_error([0.5, float("nan")]) is None


def test_rank_orders_by_goals_met_then_one_percent_gains_then_mean_mae_change():
    def r(change, dbe_in, dbe_out):
        return {"change": change, "input_dbe_acc": dbe_in, "dbe_acc": dbe_out,
                "goal_met": dbe_out < dbe_in and change <= 0.02}

    rows = {
        "two met, small gains": {"a": r(-0.01, 1.0, 0.995), "b": r(0.0, 1.0, 0.999)},
        "two met, one 1 % gain": {"a": r(0.01, 1.0, 0.98), "b": r(0.01, 1.0, 0.999)},
        "two met, one 1 % gain, lower MAE": {"a": r(-0.03, 1.0, 0.98), "b": r(0.0, 1.0, 0.999)},
        "one met": {"a": r(-0.5, 1.0, 0.5), "b": r(0.03, 1.0, 0.5)},
        "MAE over 2 % is no 1 % gain": {"a": r(0.021, 1.0, 0.5), "b": r(-0.1, 1.0, 1.1)},
    }
    got = [(n, m, m1) for n, m, m1, _ in sharpen_switches.rank(rows)]
    assert got == [("two met, one 1 % gain, lower MAE", 2, 1), ("two met, one 1 % gain", 2, 1),
                   ("two met, small gains", 2, 0), ("one met", 1, 1), ("MAE over 2 % is no 1 % gain", 0, 0)]
    assert sharpen_switches.rank(rows)[0][3] == pytest.approx(-0.015)


def test_the_grid_is_the_27_variants_of_checkpoints_readme():
    grid = sharpen_switches.grid_variants()
    combos = {(c["change_range_px"], c["keep_near_measured_px"], c["change_within_measured_px"]) for c in grid.values()}
    assert len(grid) == 27 and combos == {(a, b, c) for a in (0, 2, 3) for b in (8, 16, 24) for c in (0, 32, 48)}
    assert all(c["change_band_px"] == 3 and c["change_band_jump"] == 0.2 for c in grid.values())
    # session 10's grid, whatever the checkpoint ships: every variant names every limit field (dense rule off)
    from depthkit.sharpen.limits import LIMIT_FIELDS

    for c in [*grid.values(), *sharpen_switches.DEFAULT_VARIANTS.values()]:
        assert set(c) == set(LIMIT_FIELDS)
    assert all(c["dense_measured_fraction"] == 0 for c in grid.values())
    assert grid["range 3, near 24, within 32"] == sharpen_switches.DEFAULT_VARIANTS[
        "band 3 px, near 24 px, range 3 px, within 32 px"]


def test_grid_runs_end_to_end_and_reports_its_ranking(tmp_path):
    """--grid scores the 27 variants (one pass per scene) and the report's ranking is rank() of its own rows, best
    first, with the table in that order."""
    argv = ["--grid", "--scenes", "2", "--patterns", "random100", "--work-dir", str(tmp_path / "work"),
            "--out", str(tmp_path)]
    assert sharpen_switches.main(argv) == 0
    report = json.loads((tmp_path / "sharpen_switches.json").read_text())
    assert set(report["results"]) == set(sharpen_switches.grid_variants())
    expected = [name for name, *_ in sharpen_switches.rank(report["results"])]
    assert [r["variant"] for r in report["ranking"]] == expected
    rows = [line.split(" | ")[0][2:] for line in (tmp_path / "sharpen_switches.md").read_text().splitlines()
            if line.startswith("| range ")]
    assert rows == expected
    # distinct limits give distinct outputs on this scene: the variants are applied, not one output copied
    assert len({r["random100"]["mae"] for r in report["results"].values()}) >= 9  # range x distance weight


def test_the_shipped_variant_is_what_the_pipeline_gives_a_stereo_frame(tmp_path):
    """On a stereo frame the default's fills place pixels, which its sharpener keeps (``keep_placed``): the
    benchmark's ``shipped={}`` must score the Pipeline's output, not the sharpener's own."""
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.metrics import depth_metrics
    from depthkit.pipeline import Pipeline

    argv = ["--scenes", "1", "--patterns", "stereo", "--variant", "shipped={}", "--work-dir", str(tmp_path / "w"),
            "--out", str(tmp_path)]
    assert sharpen_switches.main(argv) == 0
    scored = json.loads((tmp_path / "sharpen_switches.json").read_text())["results"]["shipped"]["stereo"]
    sample = SyntheticDataset(split="val", length=1, sparse_pattern="stereo")[0]
    out = Pipeline(stages=("complete", "sharpen"), checkpoint=ROOT / "checkpoints" / "default",
                   stage_options={"complete": {"query_budget": 0}})(sample["image"], sample["sparse"])
    placed = out.stages["complete"].extras["placed"] > 0
    assert placed.sum() > 100  # the frame has placed pixels, kept by the sharpener
    gt = sample["depth"]
    assert scored["per_scene"][0][2] == pytest.approx(depth_metrics(out.depth, gt, gt > 0)["mae"], rel=1e-6)


def test_pass1_gt_scores_the_sharpener_with_the_scenes_gt_as_pass1(tmp_path):
    """``--pass1 gt``: each scene's output is the stage's with the GT as its pass 1 (recomputed here), not the
    shipped one, and the report says it is an oracle."""
    from depthkit.checkpoints import CheckpointRef
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.metrics import depth_metrics
    from depthkit.sharpen.stage import build_sharpen_stage
    from depthkit.sharpen.teachers import build_metric_source

    argv = ["--scenes", "1", "--patterns", "random100", "--variant", "shipped={}", "--pass1", "gt",
            "--out", str(tmp_path)]
    assert sharpen_switches.main(argv) == 0
    report = json.loads((tmp_path / "sharpen_switches.json").read_text())
    assert report["pass1"] == "gt" and "Pass 1 is the GT" in (tmp_path / "sharpen_switches.md").read_text()
    sample = SyntheticDataset(split="val", length=1, sparse_pattern="random", sparse_kwargs={"n": 100})[0]
    source = build_metric_source("complete:sdim", checkpoint=str(ROOT / "checkpoints" / "default"), query_budget=0)
    completion = source(sample["image"], sample["sparse"], sample["name"])
    stage = build_sharpen_stage(CheckpointRef.open(str(ROOT / "checkpoints" / "default")))
    gt = sample["depth"]
    oracle = stage.run_limits(sample["image"], sample["sparse"], completion, {"s": {}}, pass1_depth=gt)["s"]
    shipped = stage.run(sample["image"], sample["sparse"], completion).depth
    scored = report["results"]["shipped"]["random100"]["per_scene"][0][2]
    assert scored == pytest.approx(depth_metrics(oracle, gt, gt > 0)["mae"], rel=1e-6)
    assert scored != pytest.approx(depth_metrics(shipped, gt, gt > 0)["mae"], rel=1e-6)


def _sharpened_at_40_and_native():
    """The first 60x80 val scene of random-500: the default's completion without queries (as sharpen_resolution.py
    makes its input), its GT, and ``{"40": StageResult, "native": StageResult}``, the default's sharpen stage run on
    it at a longest side of 40 px and at its own 80 px."""
    from depthkit.checkpoints import CheckpointRef
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.sharpen.stage import build_sharpen_stage
    from depthkit.sharpen.teachers import build_metric_source

    sample = SyntheticDataset(split="val", length=1, height=60, width=80, sparse_pattern="random",
                              sparse_kwargs={"n": 500})[0]
    completion = build_metric_source("complete:sdim", checkpoint=str(ROOT / "checkpoints" / "default"),
                                     query_budget=0)(sample["image"], sample["sparse"], sample["name"])
    ref = CheckpointRef.open(str(ROOT / "checkpoints" / "default"))
    outputs = {label: build_sharpen_stage(ref, options={"processing_resolution": side}).run(
        sample["image"], sample["sparse"], completion) for label, side in (("40", 40), ("native", 80))}
    return completion, sample["depth"], outputs


def test_sharpen_resolution_scores_the_stage_at_each_processing_side(tmp_path, capsys):
    """benchmarks/sharpen_resolution.py: the val scenes rendered at --size, each column the sharpen stage with
    ``processing_resolution`` = its side (``native`` = the frame's own longest side), scored against the completion
    it sharpens (recomputed here for one scene); bad --size / --sides say what is expected."""
    import sharpen_resolution

    from depthkit.metrics import depth_metrics

    argv = ["--scenes", "1", "--patterns", "random500", "--size", "60x80", "--sides", "40,native",
            "--out", str(tmp_path)]
    assert sharpen_resolution.main(argv) == 0
    report = json.loads((tmp_path / "sharpen_resolution.json").read_text())
    assert report["sides"] == {"40": 40, "native": 80} and report["size"] == [60, 80]
    completion, gt, outputs = _sharpened_at_40_and_native()
    for label, out in outputs.items():
        scored = report["results"][label]["random500"]["per_scene"][0]
        assert scored[0] == pytest.approx(depth_metrics(completion, gt, gt > 0)["mae"], rel=1e-6)
        assert scored[2] == pytest.approx(depth_metrics(out.depth, gt, gt > 0)["mae"], rel=1e-6)
    assert report["results"]["40"]["random500"]["mae"] != report["results"]["native"]["random500"]["mae"]
    assert "| goals met |" in (tmp_path / "sharpen_resolution.md").read_text()
    for bad, said in ((["--size", "480"], "--size takes HEIGHTxWIDTH"), (["--size", "16x640"], "at least 32 pixels"),
                      (["--sides", "320,full"], "--sides takes"), (["--sides", "8"], "--sides takes")):
        with pytest.raises(SystemExit):
            sharpen_resolution.main(["--out", str(tmp_path / "bad"), *bad])
        assert said in capsys.readouterr().err


def test_sharpen_resolution_scores_each_limit_setting_from_one_pass(tmp_path, capsys):
    """sharpen_resolution.py --variant: each column is (side, setting); ``shipped={}`` is the stage's own output, a
    band no edge reaches gives the input back exactly, and a setting of the UNet pass itself (``pass1_max_side``) is
    a stage of its own at each side: the stage built with it at native size, the shipped one at a side within it;
    a bad setting names itself."""
    import sharpen_resolution

    from depthkit.checkpoints import CheckpointRef
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.metrics import depth_metrics
    from depthkit.sharpen.stage import build_sharpen_stage

    empty = json.dumps({"change_band_px": 2, "change_band_jump": 1e9})
    argv = ["--scenes", "1", "--patterns", "random500", "--size", "60x80", "--sides", "40,native",
            "--variant", "shipped={}", "--variant", f"no band={empty}", "--variant", 'p1={"pass1_max_side": 40}',
            "--out", str(tmp_path)]
    assert sharpen_resolution.main(argv) == 0
    report = json.loads((tmp_path / "sharpen_resolution.json").read_text())
    assert list(report["results"]) == ["40, shipped", "40, no band", "40, p1", "native, shipped", "native, no band",
                                       "native, p1"]
    completion, gt, outputs = _sharpened_at_40_and_native()
    for label, out in outputs.items():
        shipped = report["results"][f"{label}, shipped"]["random500"]
        assert shipped["per_scene"][0][2] == pytest.approx(depth_metrics(out.depth, gt, gt > 0)["mae"], rel=1e-6)
        assert shipped["change"] != 0
        none = report["results"][f"{label}, no band"]["random500"]
        assert none["change"] == 0 and none["dbe_acc"] == none["input_dbe_acc"]
        assert none["seconds"] == shipped["seconds"]  # limits only: the same UNet pass, timed once
    results = report["results"]
    assert results["40, p1"]["random500"]["per_scene"] == results["40, shipped"]["random500"]["per_scene"]
    sample = SyntheticDataset(split="val", length=1, height=60, width=80, sparse_pattern="random",
                              sparse_kwargs={"n": 500})[0]
    p1 = build_sharpen_stage(CheckpointRef.open(str(ROOT / "checkpoints" / "default")),
                             options={"processing_resolution": 80, "config": {"pass1_max_side": 40}})
    out = p1.run(sample["image"], sample["sparse"], completion).depth
    assert results["native, p1"]["random500"]["per_scene"][0][2] == pytest.approx(
        depth_metrics(out, gt, gt > 0)["mae"], rel=1e-6)
    assert results["native, p1"]["random500"]["mae"] != results["native, shipped"]["random500"]["mae"]
    assert "| random500 | " in (tmp_path / "sharpen_resolution.md").read_text()
    with pytest.raises(SystemExit):
        sharpen_resolution.main(["--out", str(tmp_path / "bad"), "--scenes", "1", "--size", "60x80",
                                 "--variant", 'p1={"pass1_max_side": -3}'])
    assert "--variant 'p1'" in capsys.readouterr().err


@pytest.mark.parametrize("script, argv, keys", [
    ("sharpen_switches", ["--variant", "shipped={}"], ("sharpen_identity", "checkpoint_identity")),
    ("sharpen_resolution", ["--size", "60x80", "--sides", "40"], ("sharpen_identity", "checkpoint_identity")),
    ("sharpen_limits", ["--metric", "guided"], ("checkpoint_identity",))])
def test_the_reports_say_which_weights_ran(tmp_path, script, argv, keys):
    """The JSON named --sharpen / --checkpoint only by the path given: a folder retrained in place (or another one
    of the same name) read the same. Each identity is the resolved folder and its files' hash, as accuracy.py
    records them."""
    import importlib

    from depthkit.checkpoints import checkpoint_identity

    module = importlib.import_module(script)
    assert module.main(["--scenes", "1", "--patterns", "random100", *argv, "--out", str(tmp_path)]) == 0
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    expected = checkpoint_identity(ROOT / "checkpoints" / "default")
    assert expected["files"] and all(report[key] == expected for key in keys), {k: report.get(k) for k in keys}


def test_sharpen_resolution_times_no_stage_on_its_first_call(tmp_path, monkeypatch):
    """Each sharpen stage runs once untimed before its first timed call (a first call pays for allocations and
    kernel choice: with --scenes 1-2 it would be half the median), and every later call is timed. Fails if the
    warm-up is dropped (the first call is timed) or runs for every scene (untimed calls after the first)."""
    import sharpen_resolution

    from depthkit.sharpen.stage import SharpenStage

    clock = {"timing": False}
    calls: dict[int, list[bool]] = {}
    real_run, real_clock = SharpenStage.run_limits, sharpen_resolution.time.perf_counter

    def counted(self, *args, **kwargs):
        calls.setdefault(id(self), []).append(clock["timing"])
        return real_run(self, *args, **kwargs)

    def toggling():
        clock["timing"] = not clock["timing"]
        return real_clock()

    monkeypatch.setattr(SharpenStage, "run_limits", counted)
    monkeypatch.setattr(sharpen_resolution.time, "perf_counter", toggling)
    argv = ["--scenes", "2", "--patterns", "random500", "--size", "60x80", "--sides", "40,native",
            "--out", str(tmp_path)]
    assert sharpen_resolution.main(argv) == 0
    assert len(calls) == 2  # one stage per side
    for timed in calls.values():
        assert timed == [False, True, True]
    assert "rendered at 60x80 (height x width)" in (tmp_path / "sharpen_resolution.md").read_text()
