import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

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
    row.update(name="planted", metrics={"mae": 123.0})
    part.write_text(json.dumps(row) + "\n{\"index\": 1, \"trunc")  # second line cut short by an interruption
    assert main(args + ["--limit", "2"]) == 0  # raising --limit keeps what is done and adds the rest
    rows = json.loads(out.read_text())["per_image"]
    assert rows[0]["name"] == "planted" and rows[0]["metrics"]["mae"] == 123.0  # not recomputed
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


def test_eval_user_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--dataset", "nyuv2", "--method", "nearest", "--out", str(tmp_path / "n.json")]) == 2
    assert "needs --root" in capsys.readouterr().err
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(tmp_path / "o.json"),
                 "--dataset-option", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["eval", "--dataset", "synthetic", "--method", "nearest", "--out", str(tmp_path / "o.json"),
                 "--dataset-option", "length=abc"]) == 2  # the reader's own message names no option: said which
    assert "the synthetic dataset with --dataset-option {'length': 'abc'}: invalid literal" in capsys.readouterr().err


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


def test_eval_names_the_image_whose_input_is_refused_and_keeps_the_finished_ones(tmp_path):
    """A NaN in one image's sparse input stops the evaluation with that image's index and name (not a bare "sparse
    has 1 NaN/inf values" among n); the images before it are kept and a rerun after the fix resumes after them."""
    import pytest

    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.data.protocols import get_protocol
    from depthkit.evaluate import evaluate
    from depthkit.pipeline import Pipeline

    class OnePoisoned:
        def __init__(self, poisoned):
            self.base, self.poisoned = SyntheticDataset(split="test", length=3, height=24, width=32), poisoned

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            item = dict(self.base[i])
            if i == self.poisoned:
                item["sparse"] = item["sparse"].copy()
                item["sparse"][0, 0] = np.nan
            return item

    out, pipe, protocol = tmp_path / "m.json", Pipeline(method="nearest"), get_protocol("synthetic")
    name = OnePoisoned(None)[1]["name"]
    with pytest.raises(ValueError, match=rf"^image 1 of 3 \({name!r}\): sparse has 1 NaN/inf values.* Fix that "
                                         r"file and run the same command again; the 1 image\(s\) finished are kept"):
        evaluate(pipe, OnePoisoned(1), protocol, out, progress=False, label="nearest")
    assert [json.loads(r)["index"] for r in (tmp_path / "m.json.parts" / "rank0.jsonl").read_text().splitlines()] == [0]
    assert evaluate(pipe, OnePoisoned(None), protocol, out, progress=False, label="nearest")["n_images"] == 3
