import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from depthkit.cli import main
from depthkit.evaluate import markdown_table, mean_scores


def test_eval_synthetic_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", "--dataset", "synthetic", "--method", "guided", "--out", str(out), "--limit", "2"]) == 0
    summary = json.loads(out.read_text())
    assert summary["n_images"] == 2 and len(summary["per_image"]) == 2
    assert summary["mean"]["preservation"] == 0.0
    per = [r["metrics"]["mae"] for r in summary["per_image"]]
    assert summary["mean"]["mae"] == np.mean(per) and all(v > 0 for v in per)
    assert "| guided |" in out.with_suffix(".md").read_text()
    assert "| guided |" in capsys.readouterr().out


def test_eval_resumes_from_finished_rows(tmp_path):
    out = tmp_path / "m.json"
    args = ["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(out)]
    assert main(args + ["--limit", "1"]) == 0
    part = tmp_path / "m.json.parts" / "rank0.jsonl"
    row = json.loads(part.read_text())
    row.update(metrics={"mae": 123.0})  # planted
    part.write_text(json.dumps(row) + "\n{\"index\": 1, \"trunc")  # second line cut short by an interruption
    assert main(args + ["--limit", "2"]) == 0  # raising --limit keeps what is done and adds the rest
    rows = json.loads(out.read_text())["per_image"]
    assert rows[0]["metrics"]["mae"] == 123.0  # not recomputed
    assert rows[1]["metrics"]["mae"] < 10  # the interrupted one was redone


def test_eval_refuses_to_mix_results_of_another_method(tmp_path, capsys):
    out = tmp_path / "x.json"
    base = ["eval", "--dataset", "synthetic", "--limit", "2", "--out", str(out)]
    assert main(base + ["--method", "guided"]) == 0
    guided = json.loads(out.read_text())["mean"]["mae"]
    capsys.readouterr()
    assert main(base + ["--method", "nearest"]) == 2
    err = capsys.readouterr().err
    assert "method: 'guided' there, 'nearest' now" in err and "--overwrite" in err
    assert main(base + ["--method", "nearest", "--split", "val"]) == 2
    assert "split" in capsys.readouterr().err
    assert main(base + ["--method", "nearest", "--overwrite"]) == 0
    summary = json.loads(out.read_text())
    assert summary["fingerprint"]["method"] == "nearest" and summary["mean"]["mae"] != guided
    assert main(base + ["--method", "nearest", "--dataset-option", "length=3"]) == 2
    assert "reader_options" in capsys.readouterr().err


def test_eval_refuses_results_it_cannot_vouch_for(tmp_path, capsys):
    """Each check on its own: the recorded fingerprint with no finished row (every row refused or the rows lost),
    a row without a fingerprint (an older depthkit), and a metrics JSON without one, are each refused, not mixed in
    or overwritten."""
    import shutil

    out = tmp_path / "x.json"
    base = ["eval", "--dataset", "synthetic", "--limit", "2", "--out", str(out)]
    assert main(base + ["--method", "guided"]) == 0
    part = tmp_path / "x.json.parts" / "rank0.jsonl"
    rows = part.read_text()
    part.write_text("")  # only the recorded fingerprint is left to say what made the results
    capsys.readouterr()
    assert main(base + ["--method", "nearest"]) == 2
    assert "method: 'guided' there, 'nearest' now" in capsys.readouterr().err
    part.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "fingerprint"}) + "\n"
                            for line in rows.splitlines()))
    assert main(base + ["--method", "guided"]) == 2
    assert "they carry no fingerprint (an older depthkit wrote them)" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "x.json.parts")
    out.write_text("{}")
    assert main(base + ["--method", "guided"]) == 2
    assert "they carry no fingerprint" in capsys.readouterr().err


def test_eval_with_a_lower_limit_checks_only_the_images_it_keeps(tmp_path):
    """--limit 2 after --limit 3: a finished row beyond the limit is not compared with the dataset (an image changed
    there is not this run's concern), and the mean is the first two images'."""
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.data.protocols import get_protocol
    from depthkit.evaluate import evaluate
    from depthkit.pipeline import Pipeline

    out, pipe, protocol = tmp_path / "m.json", Pipeline(method="nearest"), get_protocol("synthetic")
    evaluate(pipe, SyntheticDataset(split="test", length=3, height=24, width=32), protocol, out, progress=False,
             label="nearest")
    changed = SyntheticDataset(split="test", length=3, height=24, width=32)
    changed.names[2] = "another_frame"
    assert evaluate(pipe, changed, protocol, out, limit=2, progress=False, label="nearest")["n_images"] == 2


def test_eval_user_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--dataset", "nyuv2", "--method", "nearest", "--out", str(tmp_path / "n.json")]) == 2
    assert "needs --root" in capsys.readouterr().err
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(tmp_path / "r.md")]) == 2
    assert f"ends in .md, the name of the markdown table written beside the metrics JSON, which would overwrite it; " \
           f"give the JSON file, e.g. {tmp_path / 'r.json'}" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(tmp_path / "o.json"),
                 "--dataset-option", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(tmp_path / "o.json"),
                 "--dataset-option", "sparse_seed=abc"]) == 2  # the reader's own message names no option: said which
    assert "the synthetic dataset with --dataset-option {'sparse_seed': 'abc'}: invalid literal" in capsys.readouterr().err
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(tmp_path / "o.json"),
                 "--dataset-option", "length=abc"]) == 2  # named by the reader itself
    assert "synthetic length must be an integer >= 1; received 'abc'" in capsys.readouterr().err
    # a missing --root: the reader's error, which names the path, repeats the layout and says where the data comes
    # from (docs/datasets.md); a root for a dataset that reads no files is not silently ignored
    assert main(["eval", "--dataset", "kitti_dc", "--root", str(tmp_path / "none"), "--method", "nearest",
                 "--out", str(tmp_path / "k.json")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'none'} does not exist.\nExpected layout:" in err and "Get it: " in err, err
    assert main(["eval", "--dataset", "synthetic", "--root", str(tmp_path), "--method", "nearest",
                 "--out", str(tmp_path / "s.json")]) == 2
    assert "--dataset synthetic reads no files (it renders its scenes), so --root" in capsys.readouterr().err


def test_mean_ignores_undefined_and_table_formats():
    rows = [{"metrics": {"mae": 1.0, "dbe_acc": float("nan")}}, {"metrics": {"mae": 3.0, "dbe_acc": 2.0}}]
    m = mean_scores(rows)
    assert m["mae"] == 2.0 and m["dbe_acc"] == 2.0 and math.isnan(m["rmse"])
    table = markdown_table({"x": m}, keys=("mae", "rmse"))
    assert table.splitlines()[2] == "| x | 2.0000 | n/a |"


def test_eval_data_parallel_two_cpu_processes(tmp_path):
    exe = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    out = tmp_path / "dp.json"
    cmd = [exe, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "depthkit.cli", "eval", "--dataset", "synthetic", "--method", "nearest",
           "--out", str(out), "--limit", "3"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    parts = sorted(p.name for p in (tmp_path / "dp.json.parts").iterdir())
    assert parts == ["fingerprint.json", "rank0.jsonl", "rank1.jsonl"]
    summary = json.loads(out.read_text())
    assert [r["index"] for r in summary["per_image"]] == [0, 1, 2]
    single = tmp_path / "single.json"
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(single), "--limit", "3"]) == 0
    assert json.loads(single.read_text())["mean"] == summary["mean"]


def test_score_image_adds_confidence_auroc_only_with_a_confidence_map():
    from depthkit.evaluate import score_image
    from depthkit.metrics import confidence_auroc

    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, (16, 20)).astype(np.float32)
    pred = gt + rng.normal(0, 0.3, gt.shape).astype(np.float32)
    sparse = np.where(rng.random(gt.shape) < 0.1, gt, 0).astype(np.float32)
    pred[sparse > 0] = sparse[sparse > 0]
    item = {"depth": gt, "sparse": sparse}
    valid = np.ones(gt.shape, bool)
    conf = np.exp(-np.abs(pred - gt))  # an oracle confidence
    assert "confidence_auroc" not in score_image(pred, item, valid)
    scores = score_image(pred, item, valid, conf)
    assert scores["confidence_auroc"] == confidence_auroc(conf, pred, gt, valid, sparse) > 0.99


def test_score_image_dbe_is_nan_without_a_gt_edge_and_refuses_an_edge_map_of_another_size():
    from depthkit.evaluate import score_image

    rng = np.random.default_rng(1)
    gt = np.full((24, 32), 2.0, np.float32)  # a flat wall: no GT edge
    pred = gt + rng.normal(0, 0.05, gt.shape).astype(np.float32)
    item = {"depth": gt, "sparse": np.zeros_like(gt)}
    valid = np.ones(gt.shape, bool)
    scores = score_image(pred, item, valid)
    assert math.isnan(scores["dbe_acc"]) and math.isnan(scores["dbe_comp"]) and scores["mae"] > 0
    gt[:, 16:] = 4.0  # one vertical depth step, given as the dataset's edge map
    pred[:, 16:] += 2.0
    edges = np.zeros(gt.shape, bool)
    edges[:, 15:17] = True
    scores = score_image(pred, dict(item, edges=edges), valid)
    assert 0 <= scores["dbe_acc"] < 2
    with pytest.raises(ValueError, match=r"gt_edges must have the shape of gt; received gt_edges \(24, 31\)"):
        score_image(pred, dict(item, edges=edges[:, :-1]), valid)  # not scored as "no GT edge"


def test_eval_json_is_strict_and_out_under_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(out), "--limit", "1"]) == 0

    def refuse(token):
        raise AssertionError(f"{token} is not strict JSON")

    summary = json.loads(out.read_text(), parse_constant=refuse)
    assert summary["protocol"]["max_depth"] is None  # math.inf (no cap) is written as null
    shutil.rmtree(tmp_path / "m.json.parts")  # the rerun now compares with the fingerprint in m.json (null there)
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(out), "--limit", "1"]) == 0
    (tmp_path / "notes").write_text("x")
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(tmp_path / "notes" / "m.json"),
                 "--limit", "1"]) == 2
    assert "notes is a file, not a folder" in capsys.readouterr().err


def test_eval_without_checkpoint_fingerprints_the_embedded_default(tmp_path, capsys, monkeypatch):
    """A learned stage loaded from the embedded default (no --checkpoint) is part of the fingerprint, so a rerun
    after the default changed is refused instead of mixing rows of two checkpoints; a classical method is not tied to
    it."""
    import depthkit.checkpoints as checkpoints
    from depthkit.checkpoints import write_manifest
    from depthkit.complete.checkpoint import write_tiny

    embedded = tmp_path / "embedded"
    write_tiny(embedded / "default" / "complete")
    write_manifest(embedded / "default", {"complete": {"query_budget": 4}}, tiny=True)
    monkeypatch.setattr(checkpoints, "embedded_checkpoints_dir", lambda: embedded)
    out = tmp_path / "m.json"
    small = ["--dataset-option", "height=24", "--dataset-option", "width=32"]
    base = ["eval", "--dataset", "synthetic", "--limit", "1", "--out", str(out), *small]
    assert main(base) == 0
    fingerprint = json.loads(out.read_text())["fingerprint"]
    assert fingerprint["checkpoint"]["path"] == str((embedded / "default").resolve())
    manifest = embedded / "default" / "depthkit.json"
    manifest.write_text(manifest.read_text() + "\n")  # the default rebuilt in place
    capsys.readouterr()
    assert main(base + ["--limit", "2"]) == 2
    assert "checkpoint:" in capsys.readouterr().err
    guided = tmp_path / "g.json"
    assert main(["eval", "--dataset", "synthetic", "--limit", "1", "--out", str(guided), "--method", "guided",
                 *small]) == 0
    assert json.loads(guided.read_text())["fingerprint"]["checkpoint"] is None


class _Poisoned:
    """The synthetic test split with a NaN in the sparse map of the images in ``nan`` and a reader error (a corrupt
    file) for those in ``unreadable``; counts the items read."""

    def __init__(self, nan=(), unreadable=(), length=4, no_gt=(), vanished=()):
        from depthkit.data.datasets.synthetic import SyntheticDataset

        self.base, self.nan, self.unreadable, self.read = (SyntheticDataset(split="test", length=length, height=24,
                                                                            width=32), set(nan), set(unreadable), [])
        self.names, self.no_gt, self.vanished = self.base.names, set(no_gt), set(vanished)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        from depthkit.data.datasets._ops import DatasetLayoutError

        self.read.append(i)
        if i in self.unreadable:
            raise DatasetLayoutError(f"could not decode /data/depth_{i}.png: the file is empty, truncated or not an "
                                     "image.")
        if i in self.vanished:  # deleted (or made unreadable) after the dataset listed it
            raise FileNotFoundError(2, "No such file or directory", f"/data/rgb_{i}.png")
        item = dict(self.base[i])
        if i in self.nan:
            item["sparse"] = item["sparse"].copy()
            item["sparse"][0, 0] = np.nan
        if i in self.no_gt:
            item["depth"] = np.zeros_like(item["depth"])
        return item


def test_eval_runs_past_refused_inputs_names_them_all_and_writes_no_mean(tmp_path):
    """A NaN in one image's sparse map, a corrupt file for another and a GT with no valid pixel in a third do not stop
    the split: the other images are scored and kept, then one error names each refused image (index of n, name when
    known, reason) and no mean is written; after the fix the same call runs only those and the mean is the whole
    split's."""
    import pytest

    from depthkit.data.protocols import get_protocol
    from depthkit.evaluate import evaluate
    from depthkit.pipeline import Pipeline

    out, pipe, protocol = tmp_path / "m.json", Pipeline(method="nearest"), get_protocol("synthetic")
    names = _Poisoned(length=5).names
    name1 = names[1]
    bad = _Poisoned(nan={1}, unreadable={2}, no_gt={3}, length=5)
    with pytest.raises(ValueError) as info:
        evaluate(pipe, bad, protocol, out, progress=False, label="nearest")
    msg = str(info.value)
    assert msg.startswith("3 of 5 image(s) could not be evaluated, so no mean was written")
    assert f"  image 1 of 5 ({name1!r}): sparse has 1 NaN/inf values" in msg
    assert f"  image 2 of 5 ({names[2]!r}): could not decode /data/depth_2.png" in msg  # the reader's listing names it
    assert f"  image 3 of 5 ({names[3]!r}): no valid ground-truth pixel" in msg
    assert "The 2 image(s) scored are kept in" in msg and "only the images without a result will run" in msg
    assert bad.read == [0, 1, 2, 3, 4] and not out.exists()
    # an earlier, smaller run's summary does not stay at --out looking like this run's
    evaluate(pipe, _Poisoned(length=5), protocol, tmp_path / "s.json", progress=False, label="nearest", limit=1)
    assert (tmp_path / "s.json").is_file() and (tmp_path / "s.md").is_file()
    with pytest.raises(ValueError, match="1 of 5 image"):
        evaluate(pipe, _Poisoned(nan={1}, length=5), protocol, tmp_path / "s.json", progress=False, label="nearest")
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "s.md").exists()
    assert [json.loads(r)["index"] for r in (tmp_path / "m.json.parts" / "rank0.jsonl").read_text().splitlines()] \
        == [0, 4]
    fixed = _Poisoned(length=5)
    summary = evaluate(pipe, fixed, protocol, out, progress=False, label="nearest")
    assert fixed.read == [1, 2, 3] and summary["n_images"] == 5
    assert [r["index"] for r in summary["per_image"]] == [0, 1, 2, 3, 4]
    whole = evaluate(pipe, _Poisoned(length=5), protocol, tmp_path / "whole.json", progress=False, label="nearest")
    assert json.dumps(summary["mean"]) == json.dumps(whole["mean"])  # NaN (no confidence map) reads as NaN


def test_a_refusal_names_only_what_changed_not_what_json_stored_differently():
    from depthkit.evaluate import _differences

    there = {"method": "nearest", "protocol": {"outlier_filter": [7, 1.5], "max_depth": None}}  # as read back
    now = {"method": "guided", "protocol": {"outlier_filter": (7, 1.5), "max_depth": float("inf")}}
    assert _differences(there, now) == "method: 'nearest' there, 'guided' now"


def test_eval_cli_refuses_an_empty_split_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import depthkit.cli as cli
    import depthkit.data.datasets as datasets

    def boom(args):
        raise AssertionError("the pipeline was built for a split with nothing to score")

    monkeypatch.setattr(cli, "_build_pipeline", boom)
    monkeypatch.setattr(datasets, "build_dataset", lambda *a, **k: [])  # a reader that let an empty split through
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(tmp_path / "e.json")]) == 2
    assert "has no images to evaluate; check --root, --split" in capsys.readouterr().err


def test_eval_refuses_an_empty_split_before_making_anything(tmp_path):
    from depthkit.data.protocols import get_protocol
    from depthkit.evaluate import evaluate
    from depthkit.pipeline import Pipeline

    with pytest.raises(ValueError, match=r"has no images to evaluate; check --root, --split and the dataset's list"):
        evaluate(Pipeline(method="nearest"), [], get_protocol("synthetic"), tmp_path / "e.json", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_eval_runs_past_a_file_that_went_missing_after_the_dataset_was_listed(tmp_path):
    """The reader's FileNotFoundError / PermissionError (a file deleted or made unreadable mid-run) stopped the whole
    split with a traceback; it is one refused image like a corrupt file."""
    import pytest

    from depthkit.data.protocols import get_protocol
    from depthkit.evaluate import evaluate
    from depthkit.pipeline import Pipeline

    bad = _Poisoned(vanished={1}, length=3)
    with pytest.raises(ValueError) as info:
        evaluate(Pipeline(method="nearest"), bad, get_protocol("synthetic"), tmp_path / "m.json", progress=False,
                 label="nearest")
    assert str(info.value).startswith("1 of 3 image(s) could not be evaluated")
    assert (f"  image 1 of 3 ({bad.names[1]!r}): FileNotFoundError: [Errno 2] No such file or directory: "
            "'/data/rgb_1.png'") in str(info.value)
    assert bad.read == [0, 1, 2]


def test_eval_lists_at_most_ten_refused_images_and_ignores_an_earlier_runs_other_shards(tmp_path):
    """Twelve refused images are named ten at a time with the rest counted; a failure list left by an earlier run
    with two processes (rank 1's) is not read by a one-process run, whose own shard covers every image."""
    import pytest

    from depthkit.data.protocols import get_protocol
    from depthkit.evaluate import evaluate
    from depthkit.pipeline import Pipeline

    out, pipe, protocol = tmp_path / "m.json", Pipeline(method="nearest"), get_protocol("synthetic")
    with pytest.raises(ValueError, match=r"^12 of 12 image\(s\)[^$]*image 9 of 12 \('synthetic_20000009'\): [^$]*\.\.\. and 2 more\n") as info:
        evaluate(pipe, _Poisoned(unreadable=range(12), length=12), protocol, out, progress=False, label="nearest")
    assert "image 10 of 12" not in str(info.value)
    (tmp_path / "m.json.parts" / "failed_rank1.jsonl").write_text(
        json.dumps({"index": 5, "name": None, "error": "stale"}) + "\n")
    assert evaluate(pipe, _Poisoned(length=12), protocol, out, progress=False, label="nearest")["n_images"] == 12


def test_eval_refuses_to_resume_when_the_datasets_images_moved(tmp_path):
    """A frame added under the same root shifts every later image's index: resuming by position would score one
    image twice and the new one never. The stored names are checked against the dataset's (its names list, or the
    item's own name when it has none) and the rerun is refused, naming what moved."""
    import pytest

    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.data.protocols import get_protocol
    from depthkit.evaluate import evaluate
    from depthkit.pipeline import Pipeline

    out, pipe, protocol = tmp_path / "m.json", Pipeline(method="nearest"), get_protocol("synthetic")
    first = SyntheticDataset(split="test", length=2, height=24, width=32, seed_offset=1)
    evaluate(pipe, first, protocol, out, progress=False, label="nearest")
    shifted = SyntheticDataset(split="test", length=3, height=24, width=32)  # a frame before the others

    class NoNames:  # the same images, without a names list: each finished index is loaded to read its name
        def __len__(self):
            return len(shifted)

        def __getitem__(self, i):
            return shifted[i]

    for ds in (shifted, NoNames()):
        with pytest.raises(ValueError, match=rf"^the dataset is not the one the results in .* were made from: image 0 "
                                             rf"was {first.names[0]!r}, now {shifted.names[0]!r}; image 1 was "
                                             rf"{first.names[1]!r}, now {shifted.names[1]!r}\. .*--overwrite"):
            evaluate(pipe, ds, protocol, out, progress=False, label="nearest")
    assert evaluate(pipe, shifted, protocol, out, progress=False, label="nearest", overwrite=True)["n_images"] == 3
    # frames added after the finished ones move nothing: the run resumes
    evaluate(pipe, first, protocol, tmp_path / "m2.json", progress=False, label="nearest")
    longer = SyntheticDataset(split="test", length=3, height=24, width=32, seed_offset=1)
    assert evaluate(pipe, longer, protocol, tmp_path / "m2.json", progress=False, label="nearest")["n_images"] == 3


def test_eval_dbe_canny_scores_the_scripts_edges_and_never_mixes_them(tmp_path, capsys):
    """--dbe-canny skimage scores every image's DBE with iBims-1's public-script edges (recomputed here from the
    same prediction with dbe_metrics(canny="skimage")); the other metrics are unchanged; resuming under the other
    choice is refused, naming it."""
    from depthkit import Pipeline
    from depthkit.cli import build_parser
    from depthkit.data.datasets import build_dataset
    from depthkit.data.protocols import apply_protocol
    from depthkit.metrics import DBE_CANNY, dbe_metrics

    ev = next(a for a in build_parser()._subparsers._group_actions[0].choices["eval"]._actions
              if a.dest == "dbe_canny")
    assert tuple(ev.choices) == DBE_CANNY and ev.default == DBE_CANNY[0]
    base = ["eval", "--dataset", "synthetic", "--method", "guided", "--limit", "2"]
    paper, script = tmp_path / "paper.json", tmp_path / "script.json"
    assert main(base + ["--out", str(paper)]) == 0
    assert main(base + ["--out", str(script), "--dbe-canny", "skimage"]) == 0
    a, b = json.loads(paper.read_text()), json.loads(script.read_text())
    assert b["fingerprint"]["dbe_canny"] == "skimage" and "dbe_canny" not in a["fingerprint"]
    # holes NaN to that Canny since session 38: results made with the nearest fill are not resumed into these
    assert b["fingerprint"]["dbe_holes"] == "nan" and "dbe_holes" not in a["fingerprint"]
    dataset, pipe = build_dataset("synthetic", None), Pipeline(method="guided")
    for ra, rb in zip(a["per_image"], b["per_image"]):
        item = dataset[rb["index"]]
        pred = pipe(item["image"], item["sparse"]).depth
        valid = apply_protocol(pred, item["depth"], item["valid"], dataset.protocol)
        expected = dbe_metrics(pred, item["depth"], gt_edges=item.get("edges"), valid=valid, canny="skimage")
        assert rb["metrics"]["dbe_acc"] == expected["dbe_acc"] and rb["metrics"]["dbe_comp"] == expected["dbe_comp"]
        assert ra["metrics"]["dbe_acc"] != rb["metrics"]["dbe_acc"]
        assert ra["metrics"]["mae"] == rb["metrics"]["mae"]
    assert "DBE edges: skimage" in script.with_suffix(".md").read_text()
    assert "DBE edges" not in paper.with_suffix(".md").read_text()
    from depthkit.evaluate import evaluate, score_image

    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="dbe_canny must be one of"):  # refused before --overwrite discards a thing
        evaluate(pipe, dataset, dataset.protocol, script, limit=1, overwrite=True, dbe_canny="Skimage")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and script.is_file()
    with pytest.raises(ValueError, match="dbe_canny must be one of"):  # not taken for "no GT edge" (NaN)
        score_image(pred, item, valid, dbe_canny="opencv")
    capsys.readouterr()
    assert main(base + ["--out", str(script)]) == 2  # the default now, the script's edges there
    assert "dbe_canny: 'skimage' there, 'matlab' now" in capsys.readouterr().err
    assert main(base + ["--out", str(paper), "--dbe-canny", "skimage"]) == 2
    assert "dbe_canny: 'matlab' there, 'skimage' now" in capsys.readouterr().err


def test_eval_dbe_region_image_scores_the_annotated_edges_everywhere_and_never_mixes(tmp_path, capsys):
    """--dbe-region image scores each iBims-1 image's DBE over the whole image against its annotated edges (recomputed
    here with dbe_metrics(region="image")), which masked pixels change; resuming under the default is refused."""
    from fixtures_datasets import write_ibims_raw

    from depthkit import Pipeline
    from depthkit.cli import build_parser
    from depthkit.data.datasets import build_dataset
    from depthkit.data.protocols import apply_protocol
    from depthkit.evaluate import evaluate
    from depthkit.metrics import DBE_REGION, dbe_metrics

    ev = next(a for a in build_parser()._subparsers._group_actions[0].choices["eval"]._actions
              if a.dest == "dbe_region")
    assert tuple(ev.choices) == DBE_REGION and ev.default == DBE_REGION[0]
    write_ibims_raw(tmp_path / "ibims")  # annotated edge rows run into the masked first columns
    base = ["eval", "--dataset", "ibims1", "--root", str(tmp_path / "ibims"), "--method", "guided", "--quiet"]
    valid_out, image_out = tmp_path / "valid.json", tmp_path / "image.json"
    assert main(base + ["--out", str(valid_out)]) == 0
    assert main(base + ["--out", str(image_out), "--dbe-region", "image"]) == 0
    a, b = json.loads(valid_out.read_text()), json.loads(image_out.read_text())
    assert b["fingerprint"]["dbe_region"] == "image" and "dbe_region" not in a["fingerprint"]
    dataset, pipe = build_dataset("ibims1", tmp_path / "ibims"), Pipeline(method="guided")
    for ra, rb in zip(a["per_image"], b["per_image"]):
        item = dataset[rb["index"]]
        assert not item["valid"][item["edges"]].all()  # some annotated edge pixels are masked
        pred = pipe(item["image"], item["sparse"]).depth
        valid = apply_protocol(pred, item["depth"], item["valid"], dataset.protocol)
        expected = dbe_metrics(pred, item["depth"], gt_edges=item["edges"], valid=valid, region="image")
        assert (rb["metrics"]["dbe_acc"], rb["metrics"]["dbe_comp"]) == (expected["dbe_acc"], expected["dbe_comp"])
        assert ra["metrics"]["dbe_comp"] != rb["metrics"]["dbe_comp"]
        assert ra["metrics"]["mae"] == rb["metrics"]["mae"]
    assert "DBE region: image" in image_out.with_suffix(".md").read_text()
    assert "DBE region" not in valid_out.with_suffix(".md").read_text()
    with pytest.raises(ValueError, match=r"dbe_region must be one of \('valid', 'image'\); received 'all'"):
        evaluate(pipe, dataset, dataset.protocol, image_out, limit=1, overwrite=True, dbe_region="all")
    assert image_out.is_file()  # refused before --overwrite discarded it
    capsys.readouterr()
    assert main(base + ["--out", str(image_out)]) == 2
    assert "dbe_region: 'image' there, 'valid' now" in capsys.readouterr().err
    # a dataset without annotated edges: refused at its first image, not scored against edges found in its depth
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--limit", "2", "--quiet", "--out",
                 str(tmp_path / "syn.json"), "--dbe-region", "image"]) == 2
    assert "scores DBE against a dataset's annotated edge maps" in capsys.readouterr().err
    assert not (tmp_path / "syn.json").exists()
