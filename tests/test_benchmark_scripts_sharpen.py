"""The sharpen benchmark scripts (and accuracy.py's --merge) on a user's mistakes: what they refuse, before any work,
and what they leave alone; run in-process (their ``main``, or the ``__main__`` block by :func:`runpy.run_path`)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from repo_scripts import load_script

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))  # the scripts import their siblings (_results, accuracy) by name

import sharpen_ablation  # noqa: E402
import sharpen_readiness  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _load(name: str):
    """A script as a module of its own name (``sharpen.py`` as ``sharpen_benchmark``: not depthkit.sharpen)."""
    return load_script(f"benchmarks/{name}.py")


sharpen = _load("sharpen")


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


@pytest.mark.parametrize("bad, needle", [
    (["--size", "0"], "--size takes the longest image side in pixels, at least 4 (e.g. 768); received 0"),
    (["--threads", "0"], "--threads takes a number of torch CPU threads, at least 1; received 0")])
def test_readiness_refuses_a_size_or_threads_it_cannot_use_before_the_release(tmp_path, monkeypatch, capsys, bad,
                                                                              needle):
    """These reached the phases' child processes (the folder prepared first): --threads 0 a torch RuntimeError in
    the first phase; --size 0 an import without a processing resolution and a failure only in the infer phase."""
    ran = []
    monkeypatch.setattr(sharpen_readiness, "run_phase", lambda name, args: ran.append(name) or {"ok": True})
    folder, out = tmp_path / "work", tmp_path / "r.json"
    with pytest.raises(SystemExit) as exc:
        sharpen_readiness.main([*bad, "--dir", str(folder), "--out", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err, err
    assert ran == [] and not folder.exists() and not out.exists()


def test_readiness_help_describes_dir(capsys):
    with pytest.raises(SystemExit):
        sharpen_readiness.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--dir DIR work folder" in text and "non-empty folder without the marker is refused" in text


@pytest.mark.parametrize("bad", ["sub/x", "../escape", ""])
def test_sharpen_and_ablation_refuse_a_bad_name_before_any_work(tmp_path, monkeypatch, capsys, bad):
    def no_work(*_, **__):
        raise AssertionError("work started before --name was checked")

    monkeypatch.setattr(sharpen, "build_model", no_work)
    monkeypatch.setattr("depthkit.sharpen.miniature.make_split", no_work)
    for main in (sharpen.main, sharpen_ablation.main):
        with pytest.raises(SystemExit) as exc:
            main(["--name", bad, "--out", str(tmp_path)])
        assert exc.value.code == 2 and "a results name is a file stem" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


class _StubSharpener(torch.nn.Module):
    """What sharpen.py's report reads of a model: its parameters and its UNet's."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.unet = torch.nn.Linear(2, 2)


def test_sharpen_with_a_checkpoint_writes_its_own_results_not_sharpen_tiny(tmp_path, monkeypatch):
    monkeypatch.setattr(sharpen, "build_model", lambda args, config: _StubSharpener())
    monkeypatch.setattr(sharpen, "bench_speed", lambda model, args, config="": [])
    from depthkit.checkpoints import folder_identity

    out = tmp_path / "out"
    common = ["--no-accuracy", "--sizes", "64", "--repeats", "1", "--out", str(out)]
    ckpt = tmp_path / "runs" / "final"
    (ckpt / "sharpen").mkdir(parents=True)
    (ckpt / "sharpen" / "weights.bin").write_bytes(b"first")
    assert sharpen.main(["--checkpoint", str(ckpt), *common]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sharpen_ckpt_runs_final.json", "sharpen_ckpt_runs_final.md"]
    report = json.loads((out / "sharpen_ckpt_runs_final.json").read_text())
    assert report["name"] == "sharpen_ckpt_runs_final" and report["command"].startswith("python benchmarks/sharpen.py")
    assert {"date", "depthkit_version", "git_commit", "machine"} <= set(report)
    # which weights ran: the folder and its files' hash (the description named only the folder)
    assert report["checkpoint"] == {"path": str(ckpt.resolve()), "files": folder_identity(ckpt)}
    assert sharpen.main(common) == 0  # random weights keep their name
    assert json.loads((out / "sharpen_tiny.json").read_text())["checkpoint"] is None
    assert sharpen.default_name(["tiny"], Path("checkpoints/default")) == "sharpen_ckpt_checkpoints_default"


@pytest.mark.parametrize("configs, measured", [(["tiny", "sd2"], True), (["sd2", "tiny"], False), (["tiny"], True)])
def test_sharpen_measures_accuracy_on_its_first_config_unless_that_is_sd2(tmp_path, monkeypatch, configs, measured):
    """Accuracy is scored on the first --config's model; only random SD2-size weights there make a run speed-only
    (an sd2 anywhere in the list skipped the tiny model's accuracy too)."""
    built, scored = [], []
    monkeypatch.setattr(sharpen, "build_model", lambda args, config: built.append(config) or _StubSharpener())
    monkeypatch.setattr(sharpen, "bench_speed", lambda model, args, config="": [])
    scores = {"guided": dict.fromkeys(("mae_in", "dbe_acc_in", "dbe_comp_in", "mae_out", "dbe_acc_out",
                                       "dbe_comp_out", "preservation"), 1.0)}
    monkeypatch.setattr(sharpen, "bench_accuracy", lambda model, args: scored.append(model) or scores)
    assert sharpen.main(["--config", *configs, "--sizes", "64", "--repeats", "1", "--out", str(tmp_path)]) == 0
    assert built == configs and len(scored) == int(measured)
    report = json.loads((tmp_path / f"sharpen_{'_'.join(configs)}.json").read_text())
    assert report["accuracy"] == (scores if measured else None)


@pytest.mark.parametrize("bad, needle", [
    (["--repeats", "0"], "--repeats takes the number of timed calls after the warm-up, at least 1; received 0"),
    (["--sizes", "256", "-64"], "--sizes takes longest image sides of at least 4 pixels (e.g. 256 512); received -64"),
    (["--threads", "0"], "--threads takes a number of torch CPU threads, at least 1; received 0"),
    (["--eval-images", "0"], "--eval-images takes a number of test scenes, at least 1"),
    (["--eval-size", "0", "64"], "--eval-size takes H W in pixels, each at least 1 (e.g. 48 64); received 0 64")])
def test_sharpen_refuses_sizes_and_counts_it_cannot_use_before_any_work(tmp_path, monkeypatch, capsys, bad, needle):
    """A bare IndexError after the timing (--repeats 0), a torch RuntimeError (--threads 0) or an error about the
    synthetic reader after minutes of work (--eval-images 0) was what these got."""
    def no_work(*_, **__):
        raise AssertionError("work started before the option was checked")

    monkeypatch.setattr(sharpen, "build_model", no_work)
    with pytest.raises(SystemExit) as exc:
        sharpen.main([*bad, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad, needle", [
    (["--checkpoint", "ckpt", "--config", "tiny", "tiny_v1"], "pass one --config with it; received --config tiny "
                                                              "tiny_v1"),
    (["--dtype", "bfloat16"], "--dtype bfloat16: the random-weight --config tiny runs in float32 only"),
    (["--config", "sd2", "tiny_v1", "--dtype", "float16"], "--config tiny_v1 runs in float32 only")])
def test_sharpen_refuses_options_its_table_would_mislabel(tmp_path, monkeypatch, capsys, bad, needle):
    """One checkpoint timed once per --config name (rows 'tiny' and 'tiny_v1' of the same weights), and a random tiny
    model built in float32 recorded as --dtype bfloat16, were what these wrote."""
    def no_work(*_, **__):
        raise AssertionError("work started before the option was checked")

    monkeypatch.setattr(sharpen, "build_model", no_work)
    with pytest.raises(SystemExit) as exc:
        sharpen.main([*bad, "--no-accuracy", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err, err
    assert list(tmp_path.iterdir()) == []


class _KeepInput:
    """A sharpener that returns its metric input unchanged (what bench_accuracy calls: ``sharpen(...).depth``)."""

    def sharpen(self, image, depth, sparse=None):
        import types

        return types.SimpleNamespace(depth=depth)


def test_sharpen_accuracy_has_no_preservation_figure_for_the_input_given_no_sparse_points(tmp_path):
    """``blur`` is sharpened without sparse points: its preservation error was reported as 0.0 (a perfect score for
    nothing measured); it is null in the JSON and n/a in the table, while ``guided``'s is measured."""
    import argparse
    import math

    args = argparse.Namespace(eval_size=[24, 32], eval_images=1)
    acc = sharpen.bench_accuracy(_KeepInput(), args)
    assert acc["guided"]["preservation"] == 0.0 and math.isnan(acc["blur"]["preservation"])
    report = {"name": "t", "date": "d", "command": "c", "device": "cpu", "dtype": "float32", "speed": [],
              "machine": {"platform": "p", "torch_threads": 1, "load_average": [0.0], "cpu_count": 1},
              "model": {"description": "stub"}, "accuracy": acc, "eval_images": 1, "eval_size": [24, 32], "note": ""}
    rows = {line.split(" | ")[0]: line for line in sharpen.markdown(report).splitlines() if line.startswith("| ")}
    assert rows["| GT blurred (sigma 2 px)"].endswith("| n/a |")
    assert rows["| complete stage (guided, 100 points)"].endswith("| 0.0e+00 |")


def test_sharpen_ablation_refuses_too_few_training_scenes_up_front(tmp_path, monkeypatch, capsys):
    def no_work(*_, **__):
        raise AssertionError("work started before --train-scenes was checked")

    monkeypatch.setattr("depthkit.sharpen.miniature.make_split", no_work)
    least = sharpen_ablation.min_train_scenes()
    assert least == 4  # Lotus: 8 of the scenes and their mirror images; SharpDepth: 4 scenes
    for bad in (["--train-scenes", "2"], ["--train-scenes", str(least - 1)], ["--test-scenes", "0"]):
        with pytest.raises(SystemExit) as exc:
            sharpen_ablation.main([*bad, "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and f"received {bad[1]}" in err, err
        assert ("--train-scenes must be >= 4" if bad[0] == "--train-scenes" else "--test-scenes must be >= 1") in err


@pytest.mark.parametrize("bad, needle", [
    (["--sharpen-steps", "0"], "--sharpen-steps must be >= 1 training step; received 0"),
    (["--lotus-vae-steps", "-1"], "--lotus-vae-steps must be >= 1 training step; received -1"),
    (["--lotus-unet-steps", "0"], "--lotus-unet-steps must be >= 1 training step; received 0"),
    (["--seeds", "0", "1", "0"], "--seeds must be distinct (each seed's run counts once in the mean ± std); received "
                                 "0 1 0 (repeated: 0)"),
    (["--seeds", "0", "--variants", "full", "λ_recons = 0", "full"], "--variants must be distinct (each variant's "
                                                                     "runs count once in its mean ± std); received "
                                                                     "full λ_recons = 0 full (repeated: full)")])
def test_sharpen_ablation_refuses_no_training_and_repeated_seeds_up_front(tmp_path, monkeypatch, capsys, bad,
                                                                          needle):
    """--sharpen-steps 0 scored the untrained model as every variant, and a repeated seed counted one run twice in the
    mean ± std; both ran to the end and wrote the table."""
    def no_work(*_, **__):
        raise AssertionError("work started before the option was checked")

    monkeypatch.setattr("depthkit.sharpen.miniature.make_split", no_work)
    with pytest.raises(SystemExit) as exc:
        sharpen_ablation.main([*bad, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err, err
    assert list(tmp_path.iterdir()) == []


def test_sharpen_ablation_records_its_training_sizes_as_fields(tmp_path):
    """A run's JSON keeps the training scenes and the Lotus's VAE / UNet steps as numbers (they were only inside the
    text describing the Lotus), beside the SharpDepth steps, seeds and held-out scenes. A real, minimal run."""
    argv = ["--seeds", "3", "--train-scenes", "5", "--test-scenes", "1", "--lotus-vae-steps", "2",
            "--lotus-unet-steps", "1", "--sharpen-steps", "1", "--variants", "fixed Lotus as pass 1 (no EMA)",
            "--out", str(tmp_path)]
    assert sharpen_ablation.main(argv) == 0
    report = json.loads((tmp_path / "sharpen_ablation.json").read_text())
    got = {k: report.get(k) for k in ("train_scenes", "lotus_vae_steps", "lotus_unet_steps", "sharpen_steps",
                                      "test_scenes", "seeds")}
    assert got == {"train_scenes": 5, "lotus_vae_steps": 2, "lotus_unet_steps": 1, "sharpen_steps": 1,
                   "test_scenes": 1, "seeds": [3]}
    assert len(report["variants"]["fixed Lotus as pass 1 (no EMA)"]) == 1


class _Stop(Exception):
    """Raised by a stub in place of a script's first real work, carrying what the script had decided by then."""


def test_sharpen_switches_grid_writes_to_its_own_folder_by_default(tmp_path, monkeypatch):
    import sharpen_switches

    def stop(p, args):
        raise _Stop(args.out)

    monkeypatch.setattr(sharpen_switches, "open_sharpener", stop)
    with pytest.raises(_Stop) as grid:
        sharpen_switches.main(["--grid", "--scenes", "1", "--patterns", "random100"])
    with pytest.raises(_Stop) as plain:
        sharpen_switches.main(["--scenes", "1", "--patterns", "random100"])
    with pytest.raises(_Stop) as given:
        sharpen_switches.main(["--grid", "--scenes", "1", "--patterns", "random100", "--out", str(tmp_path)])
    results = BENCH / "results"
    assert (grid.value.args[0], plain.value.args[0], given.value.args[0]) == (
        results / "sharpen_switches_grid", results, tmp_path)
    assert "`results/sharpen_switches_grid/`: the 27-variant grid (where `--grid` writes without `--out`" in (
        BENCH / "README.md").read_text()


@pytest.mark.parametrize("script, option", [
    ("sharpen.py", "--checkpoint"), ("real_frame.py", "--checkpoint"), ("sharpen_limits.py", "--checkpoint"),
    ("sharpen_switches.py", "--sharpen"), ("sharpen_resolution.py", "--sharpen"), ("default_speed.py", "--checkpoint"),
])
def test_a_missing_checkpoint_is_one_error_line_and_status_2(tmp_path, monkeypatch, capsys, script, option):
    """The script as `python benchmarks/SCRIPT` runs it (its ``__main__`` block: run_main), in this process."""
    missing = tmp_path / "nope"
    monkeypatch.setattr(sys, "argv", [str(BENCH / script), option, str(missing), "--out", str(tmp_path / "out")])
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(BENCH / script), run_name="__main__")
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"{script}: error: ") and str(missing) in err, err
    assert not (tmp_path / "out").exists()


def test_stereo_visibility_records_where_when_and_with_which_version(tmp_path):
    """The run keys of _results.run_info (the same in every script's JSON), this script's own command line."""
    import stereo_visibility

    assert stereo_visibility.main(["--sizes", "8x8", "--repeats", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "stereo_visibility.json").read_text())
    assert {"date", "command", "depthkit_version", "git_commit", "machine"} <= set(report)
    assert report["command"] == f"python benchmarks/stereo_visibility.py --sizes 8x8 --repeats 1 --out {tmp_path}"
    assert {"cpu", "cpu_count", "torch"} <= set(report["machine"]) and len(report["load_average"]) == 2


@pytest.fixture(scope="module")
def accuracy_run(tmp_path_factory):
    """accuracy.py's report of nearest on one synthetic scene with the random100 pattern (--limit 1)."""
    import accuracy

    out = tmp_path_factory.mktemp("acc")
    assert accuracy.main(["--limit", "1", "--methods", "nearest", "--patterns", "random100", "--out", str(out),
                          "--work-dir", str(out / "work"), "--quiet"]) == 0
    return json.loads((out / "accuracy.json").read_text())


def _report(path: Path, report: dict, **changes) -> Path:
    """``report`` with top-level ``changes`` (``pattern``: its one section's pattern) written to ``path``."""
    report = json.loads(json.dumps(report))
    if "pattern" in changes:
        report["datasets"][0]["pattern"] = changes.pop("pattern")
    path.write_text(json.dumps({**report, **changes}))
    return path


def test_accuracy_merge_refuses_a_section_twice_and_differing_limits(tmp_path, accuracy_run, capsys):
    import accuracy

    a = _report(tmp_path / "a.json", accuracy_run)
    b = _report(tmp_path / "b.json", accuracy_run, pattern="random500")
    b2 = _report(tmp_path / "b2.json", accuracy_run, pattern="random500", limit=2, command="python run b2")
    out = tmp_path / "out"
    for files, says in (([a, a], "both have a section of dataset 'synthetic', pattern 'random100', split 'test'"),
                        ([a, b, a], f"{a} and {a} both have a section"),
                        ([a, b2], f"the runs differ in 'limit' ({a}: 1, {b2}: 2)")):
        assert accuracy.run_main(accuracy.main, ["--merge", *map(str, files), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert ": error: --merge: " in err and says in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    assert accuracy.main(["--merge", str(a), str(b), "--out", str(out)]) == 0  # same limit, two patterns
    merged = json.loads((out / "accuracy.json").read_text())
    assert merged["limit"] == 1 and [ds["pattern"] for ds in merged["datasets"]] == ["random100", "random500"]
    assert [m["file"] for m in merged["merged_from"]] == [str(a), str(b)]
    assert {"command", "date", "depthkit_version", "git_commit"} <= set(merged["merged_from"][0])
    assert merged["merged_by"] == f"python benchmarks/accuracy.py --merge {a} {b} --out {out}"


def test_accuracy_merge_refuses_rows_of_one_name_run_differently_and_other_scenes(tmp_path, accuracy_run, capsys):
    """A merged report's pattern summary puts the rows of one name in one column, so --merge refuses two runs whose
    rows of one name ran another checkpoint (a folder of the same name), other options or retrained weights, and
    runs of other scenes (--clutter) or dtype; a report written before clutter and dtype were recorded merges with
    one made the same way."""
    import accuracy

    assert accuracy_run["clutter"] == 0 and accuracy_run["dtype"] == "float32"
    row = {**accuracy_run["datasets"][0]["methods"][0], "method": "ck: complete", "kind": "checkpoint",
           "checkpoint": "/a/ck", "checkpoint_identity": {"path": "/a/ck", "files": "1111"}}
    with_row = json.loads(json.dumps(accuracy_run))
    with_row["datasets"][0]["methods"] = [row]
    a = _report(tmp_path / "a.json", with_row)

    def other(name, row_changes=None, **changes):
        report = json.loads(json.dumps(with_row))
        report["datasets"][0]["methods"][0].update(row_changes or {})
        return _report(tmp_path / name, report, pattern="random500", **changes)

    out = tmp_path / "out"
    for b, says in ((other("b1.json", {"checkpoint": "/b/ck", "checkpoint_identity": {"path": "/b/ck", "files": "2"}}),
                     "the rows named 'ck: complete' were run differently (checkpoint: \"/a/ck\" in"),
                    (other("b2.json", {"checkpoint_identity": {"path": "/a/ck", "files": "2222"}}),
                     "checkpoint_files: \"1111\" in"),
                    (other("b3.json", {"options": {"complete": {"hole_fill": None}}}), "(options: null in"),
                    (other("b4.json", clutter=3), f"the runs differ in 'clutter' ({a}: 0, "),
                    (other("b5.json", dtype="bfloat16"), "the runs differ in 'dtype'")):
        assert accuracy.run_main(accuracy.main, ["--merge", str(a), str(b), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert ": error: --merge: " in err and says in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    old = {k: v for k, v in with_row.items() if k not in ("clutter", "dtype")}  # before they were recorded
    assert accuracy.main(["--merge", str(_report(tmp_path / "old.json", old)), str(other("b.json")), "--out",
                          str(out)]) == 0
    merged = json.loads((out / "accuracy.json").read_text())
    assert merged["clutter"] == 0 and merged["dtype"] == "float32"


@pytest.mark.parametrize("script", ["sharpen_switches", "sharpen_resolution"])
def test_a_variant_name_given_twice_is_refused_before_the_checkpoint_loads(script, monkeypatch, capsys):
    """``--variant NAME=JSON`` twice with one NAME kept only the last JSON, silently (default_speed.py's
    --sharpen-config refuses it the same way)."""
    module = __import__(script)

    monkeypatch.setattr(module, "open_sharpener", lambda *a: pytest.fail("the checkpoint loaded before the check"))
    with pytest.raises(SystemExit) as exc:
        module.main(["--scenes", "1", "--patterns", "random100", "--variant", 'band={"change_band_px": 2}',
                     "--variant", 'other={}', "--variant", 'band={"change_band_px": 8}'])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--variant: each NAME once; ['band'] given twice" in err, err


@pytest.mark.parametrize("main", [sharpen.main, sharpen_ablation.main], ids=["sharpen", "sharpen_ablation"])
def test_results_go_to_benchmarks_results_from_any_folder(main, tmp_path, monkeypatch):
    """Without --out, the results folder is the script's benchmarks/results (as every other script's), not a
    benchmarks/results under whatever folder the script runs from."""
    import argparse

    parse = argparse.ArgumentParser.parse_args

    def stop(self, *a, **k):
        raise _Stop(parse(self, *a, **k))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(_Stop) as parsed:
        main([])
    assert parsed.value.args[0].out == BENCH / "results"
