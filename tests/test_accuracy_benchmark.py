"""benchmarks/accuracy.py (run in-process on tiny splits) and the evaluation commands documented in docs/datasets.md."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_datasets import (
    write_ddad,
    write_hypersim,
    write_ibims_raw,
    write_kitti,
    write_nyu,
    write_processed,
    write_vkitti2,
    write_void,
)
from repo_scripts import load_script

from depthkit.checkpoints import write_manifest
from depthkit.cli import main as cli_main
from depthkit.data.protocols import PROTOCOLS, protocol_table_markdown
from depthkit.io import strict_json

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "datasets.md"


def _load_script(name: str = "accuracy"):
    return load_script(f"benchmarks/{name}.py")


accuracy = _load_script()


def _tables(md: str) -> dict[str, dict[str, list[str]]]:
    """Markdown tables by the heading above them: {heading: {method: [cells]}}."""
    tables, heading = {}, None
    for line in md.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables.setdefault(heading, {})[cells[0]] = cells[1:]
    return tables


def test_baselines_table_has_a_numeric_row_per_method_and_zero_preservation(tmp_path, capsys):
    out = tmp_path / "res"
    assert accuracy.main(["--limit", "2", "--out", str(out), "--work-dir", str(tmp_path / "w"), "--quiet"]) == 0
    md = (out / "accuracy.md").read_text()
    table = _tables(md)["all (2 images)"]
    assert list(table) == ["nearest", "ip_basic", "guided"]
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert [h.strip() for h in header.strip("|").split("|")][1:] == [
        "MAE (m)", "RMSE (m)", "AbsRel", "δ1", "DBE-acc (px)", "DBE-comp (px)", "preservation (m)", "s / image"]
    for cells in table.values():
        values = [float(c) for c in cells]  # every cell is a number (no n/a on synthetic scenes)
        assert len(values) == 8 and all(np.isfinite(values))
        assert values[6] == 0.0  # preservation
        assert 0 < values[0] < values[1] and 0 < values[3] <= 1  # MAE <= RMSE, delta1 a fraction

    report = json.loads((out / "accuracy.json").read_text())
    assert {"date", "command", "machine", "depthkit_version"} <= set(report)
    assert report["command"].startswith("python benchmarks/accuracy.py --limit 2")
    (synthetic,) = report["datasets"]
    assert synthetic["dataset"] == "synthetic" and synthetic["n_images"] == 2
    for m in synthetic["methods"]:
        assert m["n_images"] == 2 and m["mean"]["preservation"] == 0.0
        assert m["by_group"]["all"]["mean"] == m["mean"]

    # the rows are exactly what `depthkit eval` gives for the same images (same code, no reimplemented metrics)
    single = tmp_path / "guided.json"
    assert cli_main(["eval", "--dataset", "synthetic", "--method", "guided", "--out", str(single), "--limit", "2"]) == 0
    guided = next(m for m in synthetic["methods"] if m["method"] == "guided")
    assert strict_json(json.loads(single.read_text())["mean"]) == guided["mean"]  # NaN is null here
    assert "| guided |" in capsys.readouterr().out


def test_kind_breakdown_and_checkpoint_rows(tmp_path):
    # a checkpoint whose complete stage names a classical method goes through Pipeline.from_pretrained
    ckpt = tmp_path / "nearest_ckpt"
    write_manifest(ckpt, {"complete": {"method": "nearest"}})
    out = tmp_path / "res"
    argv = ["--limit", "5", "--methods", "nearest", "--checkpoint", str(ckpt), "--out", str(out), "--quiet"]
    assert accuracy.main(argv) == 0
    (ds,) = json.loads((out / "accuracy.json").read_text())["datasets"]
    # test seeds 20000000..20000004: render_scene picks outdoor, outdoor, outdoor, outdoor, indoor
    assert ds["groups"] == {"all": 5, "indoor": 1, "outdoor": 4}
    nearest, from_ckpt = ds["methods"]
    assert from_ckpt["method"] == "nearest_ckpt: complete" and from_ckpt["checkpoint"] == str(ckpt)
    assert from_ckpt["mean"] == nearest["mean"]
    g = nearest["by_group"]
    for key in ("mae", "rmse", "delta1", "preservation"):  # the overall mean is the image-weighted mean of the kinds
        assert g["all"]["mean"][key] == pytest.approx((g["indoor"]["mean"][key] + 4 * g["outdoor"]["mean"][key]) / 5)
    md = (out / "accuracy.md").read_text()
    assert "### indoor (1 image)" in md and "### outdoor (4 images)" in md
    assert set(_tables(md)["outdoor (4 images)"]) == {"nearest", "nearest_ckpt: complete"}


def test_dataset_root_is_scored_under_its_protocol(tmp_path):
    root = tmp_path / "nyu_processed"
    data = write_processed(root)  # Marigold-DC's processed layout, read as is: two points per image
    out = tmp_path / "res"
    argv = ["--no-synthetic", "--dataset", "nyuv2", "--root", str(root), "--methods", "nearest", "--out", str(out),
            "--quiet"]
    assert accuracy.main(argv) == 0
    (ds,) = json.loads((out / "accuracy.json").read_text())["datasets"]
    assert ds["dataset"] == "nyuv2" and ds["n_images"] == 2 and ds["groups"] == {"all": 2}
    # nearest fills columns <= 4 from the point at (4, 4) = 3 m and the rest from (4, 5) = 50 m
    maes = []
    for gt in data["gt"]:
        pred = np.where(np.arange(gt.shape[1])[None, :] <= 4, 3.0, 50.0)
        maes.append(np.abs(pred - gt.astype(np.float64)).mean())
    (row,) = ds["methods"]
    assert row["mean"]["mae"] == pytest.approx(np.mean(maes), rel=1e-6)
    assert row["mean"]["preservation"] == 0.0


def test_bad_arguments_say_what_to_do(tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        accuracy.main(["--root", "x", *out])
    assert exc.value.code == 2 and "comes before any --dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--dataset", "nyuv2", *out])
    assert "needs --root DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--limit", "0", *out])
    assert accuracy.run_main(accuracy.main, ["--methods", "bogus", *out]) == 2
    assert "not classical completion methods" in capsys.readouterr().err
    assert accuracy.run_main(accuracy.main, ["--no-synthetic", "--dataset", "kitti_dc", "--root", str(tmp_path / "none"),
                                             *out]) == 2
    assert "Expected layout" in capsys.readouterr().err
    assert not (tmp_path / "accuracy.json").exists()
    monkeypatch.setenv("DEPTHKIT_TRACEBACK", "1")  # the switch reaches accuracy's refusals as every script's
    with pytest.raises(ValueError, match="not classical completion methods"):
        accuracy.run_main(accuracy.main, ["--methods", "bogus", *out])


# ---------------------------------------------------------------------------------------------------- docs
def _documented_eval_commands() -> dict[str, list[str]]:
    cmds = {}
    for line in DOCS.read_text().splitlines():
        if line.startswith("depthkit eval --dataset ") and "DATASET" not in line:
            argv = shlex.split(line)[1:]
            cmds[argv[argv.index("--dataset") + 1]] = argv
    return cmds


def test_docs_embed_the_current_protocol_table_and_a_section_per_dataset():
    from depthkit.data.datasets import DATASETS

    text = DOCS.read_text()
    for doc in (text, (DOCS.parent.parent / "README.md").read_text()):
        embedded = re.search(r"<!-- BEGIN protocol_table_markdown\(\) -->\n(.*?)<!-- END", doc, re.S).group(1)
        assert embedded == protocol_table_markdown()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    for name in DATASETS:
        assert any(f"`{name}`" in h for h in headings), f"docs/datasets.md has no section for {name}"
    benchmarks = {n for n, p in PROTOCOLS.items() if p.benchmark} - {"void"}  # "void" is void1500 under another name
    assert set(_documented_eval_commands()) >= benchmarks | {"synthetic"}


FIXTURES = {
    "nyuv2": lambda root: write_nyu(root, n=1),
    "kitti_dc": write_kitti,
    "void1500": lambda root: write_void(root, density=1500),
    "void500": lambda root: write_void(root, density=500),
    "void150": lambda root: write_void(root, density=150),
    "ibims1": write_ibims_raw,
    "ddad": write_ddad,
    "hypersim": write_hypersim,
    "vkitti2": write_vkitti2,
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_documented_eval_command_runs_on_a_fixture_in_the_documented_layout(tmp_path, name):
    argv = _documented_eval_commands()[name]
    root = tmp_path / "data"
    FIXTURES[name](root)
    out = tmp_path / "m.json"
    argv[argv.index("--root") + 1] = str(root)
    argv[argv.index("--out") + 1] = str(out)
    assert cli_main([*argv, "--limit", "1"]) == 0
    summary = json.loads(out.read_text())
    assert summary["n_images"] == 1 and summary["mean"]["preservation"] == 0.0
    assert summary["dataset"] == name


def test_pattern_names_expands_all_and_names_what_is_allowed():
    """The one parser of ``--patterns`` (accuracy, real_frame, sharpen_limits, sharpen_switches): ``all`` is every
    pattern in order, a list keeps its order, an unknown or empty value is refused with the allowed names."""
    assert accuracy.pattern_names("all") == ["random100", "random500", "random2000", "lidar64", "holes", "noisy"]
    assert accuracy.pattern_names("holes_speckle,holes_noisy") == ["holes_speckle", "holes_noisy"]  # by name only
    assert accuracy.pattern_names("holes,random100") == ["holes", "random100"]
    for bad in ("random7", "holes,all", "", ","):
        with pytest.raises(ValueError, match="random500"):
            accuracy.pattern_names(bad)


def test_a_score_without_a_value_is_null_in_the_json_and_na_in_the_table(tmp_path):
    """NaN (e.g. a confidence AUROC on a frame with one class) is written as null, so accuracy.json is strict JSON;
    the table says n/a, also after --merge reads the file back."""
    out = tmp_path / "a"
    assert accuracy.main(["--limit", "1", "--methods", "nearest", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "accuracy.json").read_text())
    report["datasets"][0]["methods"][0]["by_group"]["all"]["mean"]["mae"] = float("nan")
    accuracy.write_report(report, tmp_path / "b")

    def refuse(name):
        raise AssertionError(f"{name} in accuracy.json")

    text = (tmp_path / "b" / "accuracy.json").read_text()
    strict = json.loads(text, parse_constant=refuse)
    assert strict["datasets"][0]["methods"][0]["by_group"]["all"]["mean"]["mae"] is None
    assert "| nearest | n/a |" in (tmp_path / "b" / "accuracy.md").read_text()
    assert (tmp_path / "b" / "accuracy.md").read_text() == accuracy.report_markdown(report)
    assert sorted(f.name for f in (tmp_path / "b").iterdir()) == ["accuracy.json", "accuracy.md"]  # no temporary left
    assert accuracy.main(["--merge", str(tmp_path / "b" / "accuracy.json"), "--out", str(tmp_path / "c")]) == 0
    assert "| nearest | n/a |" in (tmp_path / "c" / "accuracy.md").read_text()


def test_a_results_name_sits_beside_the_main_results_and_is_never_a_path(tmp_path, capsys):
    """``--name`` writes NAME.json / NAME.md (a run and a merge), so a robustness run does not replace accuracy.md;
    anything but a plain file stem is refused by the parser (accuracy and real_frame)."""
    out = tmp_path / "r"
    assert accuracy.main(["--limit", "1", "--methods", "nearest", "--out", str(out), "--name", "accuracy_x",
                          "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_x.json", "accuracy_x.md"]
    assert accuracy.main(["--merge", str(out / "accuracy_x.json"), "--out", str(out), "--name", "accuracy_y"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_x.json", "accuracy_x.md", "accuracy_y.json",
                                                     "accuracy_y.md"]
    merged = json.loads((out / "accuracy_y.json").read_text())
    assert merged["merged_by"].endswith("--name accuracy_y") and merged["merged_from"][0]["file"].endswith("x.json")
    real_frame = _load_script("real_frame")
    for script in (accuracy, real_frame):
        for bad in ("../x", "a/b", "", ".hidden", "x y"):
            with pytest.raises(SystemExit):
                script.main(["--out", str(tmp_path / "bad"), "--name", bad])
            assert "a results name is a file stem" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_real_frame_gt_lies_where_its_image_does(tmp_path):
    """load_aloe shrinks the 1282x1110 image by area and the disparity by the source pixel under each output pixel's
    centre, so a step in both lands on the same output pixel. Built here: bright (disparity 200) right of source
    column 642 and below source row 556, dark (100) elsewhere; output column 160 covers source columns 641.0-645.0
    (3/4 bright) and row 138 source rows 555.0-559.0 (3/4 bright). A block's top-left pixel (plain nearest) is dark
    there: the GT would lie a pixel off its image."""
    import cv2

    real_frame = _load_script("real_frame")
    rows, cols = np.mgrid[0:1110, 0:1282]
    bright = (cols >= 642) | (rows >= 556)
    cv2.imwrite(str(tmp_path / "aloeL.jpg"), np.repeat(np.where(bright, 255, 0).astype(np.uint8)[..., None], 3, 2),
                [cv2.IMWRITE_JPEG_QUALITY, 100])
    cv2.imwrite(str(tmp_path / "aloeGT.png"), np.where(bright, 200, 100).astype(np.uint8))
    image, depth = real_frame.load_aloe(tmp_path)
    assert image.shape == (276, 320, 3) and depth.shape == (276, 320)
    near, far = depth.min(), depth.max()
    assert far == pytest.approx(2 * near)  # depth = 1 / disparity up to scale
    for y, x in ((10, 159), (10, 160), (137, 10), (138, 10), (200, 200), (5, 5)):
        image_bright = image[y, x].mean() > 127
        assert image_bright == (x >= 160 or y >= 138)  # the fixture is what the docstring says
        assert depth[y, x] == (near if image_bright else far), (y, x)


def _textured_pair(disp: np.ndarray):
    """A textured rectified pair (HxWx3 uint8 left, right) for the integer disparity map ``disp`` (HxW, pixels): the
    right view is rendered by moving every left pixel ``disp`` columns left, the nearer surface winning; what the
    left view does not show is new texture."""
    import cv2

    rng = np.random.default_rng(0)
    h, w = disp.shape
    left = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (3, 3), 0)
    right = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (3, 3), 0)
    owner = np.full((h, w), -1, np.int64)
    for y in range(h):
        xr = np.arange(w) - disp[y]
        for x in np.argsort(disp[y], kind="stable"):  # farther first, so the nearer surface is written last
            if xr[x] >= 0 and disp[y, x] > owner[y, xr[x]]:
                right[y, xr[x]], owner[y, xr[x]] = left[y, x], disp[y, x]
    return left, right


def _stereo_pair(tmp_path, background: int = 64, square: int = 96):
    """A textured rectified pair at Aloe's full size written as aloeL.jpg / aloeR.jpg / aloeGT.png: a wall at
    disparity ``background`` and a nearer block (rows 0-599, columns 224 on: 45 % of the frame, 54 % of what the
    matcher can reach) at ``square`` (:func:`_textured_pair`). Returns the GT disparity."""
    import cv2

    disp = np.full((1110, 1282), background, np.int64)
    disp[:600, 224:] = square
    for name, img in zip(("aloeL.jpg", "aloeR.jpg"), _textured_pair(disp)):
        cv2.imwrite(str(tmp_path / name), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    cv2.imwrite(str(tmp_path / "aloeGT.png"), disp.astype(np.uint8))
    return disp


def test_real_frame_stereo_map_measures_the_pairs_depth(tmp_path):
    """aloe_stereo on a built pair: matched pixels carry the GT's depth (1 / disparity in load_aloe's units, so the
    GT's scale, not one of its own: the block at 64/96 of the wall's depth, the wall at the GT's median 1.5 though
    most matched pixels are the block's), the band left of the matcher's range (full-size columns below 32 + 192)
    is missing, and most of the rest is matched."""
    real_frame = _load_script("real_frame")
    _stereo_pair(tmp_path)
    _, gt = real_frame.load_aloe(tmp_path)
    depth = real_frame.aloe_stereo(tmp_path)
    assert depth.shape == gt.shape == (276, 320) and depth.dtype == np.float32
    matched = depth > 0
    assert not matched[:, :55].any()  # 223 full-size columns: no right pixel to match
    assert matched[:, 60:].mean() > 0.9
    rel = np.abs(depth - gt)[matched] / gt[matched]
    assert np.median(rel) < 1e-3 and (rel < 0.02).mean() > 0.97
    wall, block = np.median(depth[200:260, 100:300]), np.median(depth[20:120, 100:300])
    assert wall == pytest.approx(1.5, rel=1e-3) and block == pytest.approx(1.0, rel=1e-3)
    assert (depth[matched] < 1.25).mean() > 0.5


def test_real_frame_takes_the_real_stereo_pattern_by_name(tmp_path, capsys):
    real_frame = _load_script("real_frame")
    assert list(real_frame.frame_patterns("stereo_sgbm,random100")) == ["random100", "stereo_sgbm"]
    assert list(real_frame.frame_patterns("stereo_sgbm")) == ["stereo_sgbm"]
    assert real_frame.frame_patterns("holes")["holes"] == accuracy.SYNTHETIC_PATTERNS["holes"]
    assert len(real_frame.frame_patterns("all")) == 6
    with pytest.raises(SystemExit):
        real_frame.main(["--patterns", "stereo_sgbm,bogus", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "bogus" in err and "stereo_sgbm" in err and "random500" in err


def test_clutter_scores_the_scenes_with_plants(tmp_path, capsys):
    """--clutter N scores render_scene(..., clutter=N): nearest's MAE in the report is the one computed here on
    those scenes, the reader line names the clutter, and it differs from the standard split's; N < 0 is refused."""
    from depthkit.data import baselines
    from depthkit.data.datasets.synthetic import SyntheticDataset
    from depthkit.metrics import depth_metrics

    def mae(clutter):  # one work folder for both: the scenes with plants must not reuse the plain scenes' scores
        out = tmp_path / f"c{clutter}"
        assert accuracy.main(["--limit", "1", "--methods", "nearest", "--patterns", "random100", "--clutter",
                              str(clutter), "--out", str(out), "--work-dir", str(tmp_path / "work"), "--quiet"]) == 0
        section = json.loads((out / "accuracy.json").read_text())["datasets"][0]
        return section["reader"], section["methods"][0]["mean"]["mae"]

    kind, kwargs = accuracy.SYNTHETIC_PATTERNS["random100"]
    item = SyntheticDataset(split="test", length=1, sparse_pattern=kind, sparse_kwargs=kwargs, clutter=2)[0]
    expected = depth_metrics(baselines.nearest(item["image"], item["sparse"]), item["depth"], item["depth"] > 0)
    reader, value = mae(2)
    assert "clutter=2" in reader and value == pytest.approx(float(expected["mae"]), rel=1e-6)
    reader0, value0 = mae(0)
    assert "clutter" not in reader0 and value0 != pytest.approx(value, rel=1e-3)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["synthetic_test_random100",
                                                                      "synthetic_test_random100_clutter2"]
    with pytest.raises(SystemExit):
        accuracy.main(["--clutter", "-1", "--out", str(tmp_path / "bad")])
    assert "--clutter must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--clutter", "2", "--no-synthetic", "--out", str(tmp_path / "bad")])
    assert "--no-synthetic leaves out" in capsys.readouterr().err


def _default_with(tmp_path, **complete) -> Path:
    """A copy of checkpoints/default whose manifest adds ``complete`` options."""
    import shutil

    ck = tmp_path / "with_manifest"
    src = REPO / "checkpoints" / "default"
    shutil.copytree(src, ck)
    manifest = json.loads((src / "depthkit.json").read_text())
    manifest["stages"]["complete"].update(complete)
    (ck / "depthkit.json").write_text(json.dumps(manifest))
    return ck


def test_a_stage_option_is_the_checkpoint_with_that_option_in_its_manifest(tmp_path, capsys):
    """``--option complete.occlusion_fill=right`` on the default scores what a copy of it with ``right`` in its
    manifest scores (the manifest's other options kept), differs from the default as shipped on a stereo frame, and
    names itself in the row; options for a stage nothing runs, malformed ones, and options without a checkpoint are
    refused."""
    base = ["--patterns", "stereo", "--limit", "1", "--methods", "none", "--stages", "complete", "--quiet"]
    default = str(REPO / "checkpoints" / "default")

    def mae(*extra, out):
        assert accuracy.main([*base, *extra, "--out", str(tmp_path / out)]) == 0
        (method,) = json.loads((tmp_path / out / "accuracy.json").read_text())["datasets"][0]["methods"]
        return method["method"], method["mean"]["mae"]

    name, told = mae("--checkpoint", default, "--option", "complete.occlusion_fill=right", out="a")
    assert name == "default [complete.occlusion_fill=right]: complete"
    assert mae("--checkpoint", str(_default_with(tmp_path, occlusion_fill="right")), out="b")[1] == told
    assert mae("--checkpoint", default, out="c")[1] != pytest.approx(told, rel=1e-4)
    for argv, words in (
            (["--checkpoint", default, "--option", "sharpen.keep_placed=false"], "no evaluated checkpoint runs"),
            (["--checkpoint", default, "--option", "occlusion_fill"], "must look like STAGE.KEY=VALUE"),
            (["--methods", "guided", "--option", "complete.hole_fill=null"], "options apply to checkpoints only"),
            (["--checkpoint", default, "--option", "complete.occlusion_fill=up"],  # refused before any image runs
             "--option for the row 'default [complete.occlusion_fill=up]: complete': "),
            (["--checkpoint", default, "--option", "complete.fill=anchors", "--option", "complete.fill=residual"],
             "gives complete.fill more than once")):
        assert accuracy.run_main(accuracy.main, [*base, *argv, "--out", str(tmp_path / "x")]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    sharpen_only = tmp_path / "sharpen_only"  # its rows complete with guided: a complete option cannot apply
    shutil.copytree(REPO / "checkpoints" / "default" / "sharpen", sharpen_only / "sharpen")
    write_manifest(sharpen_only, {"sharpen": json.loads((REPO / "checkpoints" / "default" / "depthkit.json")
                                                        .read_text())["stages"]["sharpen"]})
    assert accuracy.run_main(accuracy.main, [*base[:-3], "--checkpoint", str(sharpen_only), "--option",
                                             "complete.hole_fill=null", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "has no complete stage (its rows complete with the classical --base-method guided" in (
        capsys.readouterr().err)


def test_a_row_records_the_classical_method_it_completes_with(tmp_path):
    """A checkpoint without a complete stage completes with ``--base-method``: the row records it as a field (not
    only in its label); a classical row records its own method, a checkpoint's complete stage None."""
    sharpen_only = tmp_path / "sharpen_only"
    write_manifest(sharpen_only, {"sharpen": {}})
    nearest_ckpt = tmp_path / "nearest_ckpt"
    write_manifest(nearest_ckpt, {"complete": {"method": "nearest"}})
    out = tmp_path / "res"
    assert accuracy.main(["--limit", "1", "--methods", "guided", "--checkpoint", str(sharpen_only), "--checkpoint",
                          str(nearest_ckpt), "--stages", "complete", "--base-method", "nearest", "--out", str(out),
                          "--quiet"]) == 0
    rows = {m["method"]: m for m in json.loads((out / "accuracy.json").read_text())["datasets"][0]["methods"]}
    assert {k: m["base_method"] for k, m in rows.items()} == {
        "guided": "guided", "sharpen_only: nearest (classical)": "nearest", "nearest_ckpt: complete": None}
    assert rows["sharpen_only: nearest (classical)"]["mean"] == rows["nearest_ckpt: complete"]["mean"]


def test_an_option_names_only_the_rows_that_run_its_stage(tmp_path):
    """``sharpen.keep_placed=false`` with the rows complete and complete + sharpen: only the second takes it (and
    says so); its sharpen stage runs without keep_placed, the first row is the default's completion."""
    out = tmp_path / "o"
    argv = ["--patterns", "stereo", "--limit", "1", "--methods", "none", "--checkpoint",
            str(REPO / "checkpoints" / "default"), "--stages", "complete", "--stages", "complete,sharpen",
            "--option", "sharpen.keep_placed=false", "--out", str(out), "--quiet"]
    assert accuracy.main(argv) == 0
    first, second = json.loads((out / "accuracy.json").read_text())["datasets"][0]["methods"]
    assert first["method"] == "default: complete" and first["options"] == {}
    assert second["method"] == "default [sharpen.keep_placed=false]: complete + sharpen"
    assert second["options"] == {"sharpen": {"keep_placed": False}}
    entries = accuracy.checkpoint_entries(str(REPO / "checkpoints" / "default"), ["complete", "complete,sharpen"],
                                          "guided", ["sharpen.keep_placed=false"])
    assert [e["options"] for e in entries] == [first["options"], second["options"]]
    assert not accuracy.build_pipeline(entries[1], "cpu", "float32").stages[1].keep_placed


def test_real_frame_takes_stage_options_for_the_checkpoints_rows(tmp_path, capsys):
    """``--option complete.fill=anchors`` gives the checkpoint's rows the numbers of a copy with ``fill: anchors``
    in its manifest, names itself in them, and keeps the "refiner as trained" row's own option on top."""
    import cv2

    real_frame = _load_script("real_frame")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "aloeL.jpg"), cv2.GaussianBlur(rng.integers(0, 256, (1110, 1282, 3)).astype(np.uint8),
                                                              (9, 9), 0))
    disparity = np.full((1110, 1282), 100, np.uint8)
    disparity[300:800, 400:900] = 200
    cv2.imwrite(str(tmp_path / "aloeGT.png"), disparity)

    def rows(*extra, out, name="real_frame"):
        argv = ["--data", str(tmp_path), "--patterns", "random500", "--seeds", "0", "--stages", "complete",
                "--out", str(tmp_path / out), *extra]
        assert real_frame.main(argv) == 0
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == [f"{name}.json", f"{name}.md"]
        return json.loads((tmp_path / out / f"{name}.json").read_text())["mean"]["random500"]

    told = rows("--option", "complete.fill=anchors", out="a")
    copy = rows("--checkpoint", str(_default_with(tmp_path, fill="anchors")), "--name", "real_frame_copy", out="b",
                name="real_frame_copy")
    shipped = rows(out="c")
    assert told["default [complete.fill=anchors]: complete"] == copy["with_manifest: complete"]
    assert (told["default [complete.fill=anchors]: complete, refiner as trained"]
            == copy["with_manifest: complete, refiner as trained"])
    assert told["default [complete.fill=anchors]: complete"] != shipped["default: complete"]
    from depthkit.checkpoints import CheckpointRef

    ref = CheckpointRef.open(str(REPO / "checkpoints" / "default"))
    rows = real_frame.checkpoint_rows(ref, "complete,sharpen", ["complete.fill=anchors", "sharpen.keep_placed=false"])
    assert list(rows) == ["default [complete.fill=anchors]: complete",
                          "default [complete.fill=anchors]: complete, refiner as trained",
                          "default [complete.fill=anchors, sharpen.keep_placed=false]: complete + sharpen"]
    as_trained = rows["default [complete.fill=anchors]: complete, refiner as trained"].stages[0].options
    assert as_trained["fill"] == "anchors" and as_trained["refine_check"] is False
    both = rows["default [complete.fill=anchors, sharpen.keep_placed=false]: complete + sharpen"].stages
    assert both[0].options["fill"] == "anchors" and both[0].options["refine_check"] is not False
    assert not both[1].keep_placed
    told_check = real_frame.checkpoint_rows(ref, "complete", ["complete.refine_check=true"])
    assert list(told_check) == ["default [complete.refine_check=true]: complete"]  # no row contradicting it
    with pytest.raises(ValueError, match="more than once"):
        real_frame.checkpoint_rows(ref, "complete", ["complete.fill=anchors", "complete.fill=residual"])
    with pytest.raises(SystemExit):
        real_frame.main(["--data", str(tmp_path), "--stages", "complete", "--option", "sharpen.keep_placed=false",
                         "--out", str(tmp_path / "x")])
    assert "['sharpen'], which this run does not run" in capsys.readouterr().err


def _motorcycle_files(tmp_path, disp: np.ndarray, gt: np.ndarray | None = None):
    """Writes a built pair for ``disp`` (:func:`_textured_pair`) as scikit-image's Motorcycle files, with ``gt`` (or
    ``disp``) as the GT disparity."""
    import cv2

    for name, img in zip(("motorcycle_left.png", "motorcycle_right.png"), _textured_pair(disp)):
        cv2.imwrite(str(tmp_path / name), img)
    np.savez(tmp_path / "motorcycle_disp.npz", (disp if gt is None else gt).astype(np.float32))


def _wall_and_block(wall: int = 20, block: int = 40) -> np.ndarray:
    disp = np.full((500, 741), wall, np.int64)
    disp[100:400, 300:600] = block
    return disp


def test_motorcycle_depth_is_metric_by_its_calibration(tmp_path):
    """load_motorcycle: depth = f·B / (disparity + doffs) with the calibration scikit-image's stereo_motorcycle
    docstring gives for its size (f 994.978 px, principal point 311.193 / 254.877 px, doffs 31.086 px, B 193.001 mm),
    NaN or inf = no GT; the frame's intrinsics are that calibration's; a file of another size is refused."""
    real_frame = _load_script("real_frame")
    gt = np.full((500, 741), 10.0, np.float32)
    gt[:, 400:] = 47.5
    gt[:50] = np.nan
    gt[50:60] = np.inf  # scikit-image's file marks unknown pixels with inf
    _motorcycle_files(tmp_path, _wall_and_block(), gt)
    image, depth = real_frame.load_motorcycle(tmp_path)
    assert image.shape == (500, 741, 3) and image.dtype == np.uint8 and depth.dtype == np.float32
    fb = 994.978 * 0.193001
    assert depth[100, 10] == pytest.approx(fb / (10 + 31.086), rel=1e-6)  # 4.6739 m
    assert depth[100, 700] == pytest.approx(fb / (47.5 + 31.086), rel=1e-6)  # 2.4436 m
    assert not depth[:60].any() and (depth[60:] > 0).all()
    import cv2

    assert np.array_equal(image, cv2.imread(str(tmp_path / "motorcycle_left.png"))[..., ::-1])  # RGB
    k = real_frame.FRAMES["motorcycle"].intrinsics(500, 741)
    assert (k.fx, k.fy, k.cx, k.cy) == (994.978, 994.978, 311.193, 254.877)
    np.savez(tmp_path / "motorcycle_disp.npz", gt[:, :740])
    with pytest.raises(SystemExit, match=r"\(500, 740\).*calibration is for scikit-image's \(500, 741\)"):
        real_frame.load_motorcycle(tmp_path)
    _motorcycle_files(tmp_path, _wall_and_block()[:, :740])  # a pair and GT of one size, not the calibration's
    with pytest.raises(SystemExit, match=r"\(500, 740\).*calibration is for scikit-image's \(500, 741\)"):
        real_frame.load_motorcycle(tmp_path)


def test_motorcycle_stereo_map_measures_the_pairs_metric_depth(tmp_path):
    """motorcycle_stereo on a built pair with Middlebury's convention (disparity = f·B / depth − doffs): the matched
    wall (disparity 20) is 3.759 m and the block (40) 2.701 m — without doffs they would read 9.6 and 4.8 m — and
    the band left of the search (64 px) has no match."""
    real_frame = _load_script("real_frame")
    disp = _wall_and_block()
    _motorcycle_files(tmp_path, disp)
    depth = real_frame.motorcycle_stereo(tmp_path)
    assert depth.shape == (500, 741) and depth.dtype == np.float32
    fb, doffs = 994.978 * 0.193001, 31.086
    matched = depth > 0
    assert not matched[:, :60].any() and matched[:, 68:80].mean() > 0.9 and matched[:, 70:].mean() > 0.9
    wall, block = np.median(depth[420:, 100:700]), np.median(depth[150:350, 350:550])
    assert wall == pytest.approx(fb / (20 + doffs), rel=2e-3) and block == pytest.approx(fb / (40 + doffs), rel=2e-3)
    _, gt = real_frame.load_motorcycle(tmp_path)
    rel = np.abs(depth - gt)[matched] / gt[matched]
    assert np.median(rel) < 1e-3 and (rel < 0.02).mean() > 0.97


def test_real_frame_runs_the_motorcycle_frame(tmp_path, capsys):
    """``--frame motorcycle`` reads the frame from --data, writes real_frame_motorcycle.{json,md} in metres, and
    draws its LiDAR beams with the frame's calibration (the nearest row's MAE is the one computed here with those
    intrinsics, not a 60° field of view's); without the files it says how to get them."""
    real_frame = _load_script("real_frame")
    _motorcycle_files(tmp_path, _wall_and_block())
    out = tmp_path / "out"
    assert real_frame.main(["--frame", "motorcycle", "--data", str(tmp_path), "--patterns", "random100,lidar64",
                            "--seeds", "0", "--stages", "complete", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["real_frame_motorcycle.json", "real_frame_motorcycle.md"]
    report = json.loads((out / "real_frame_motorcycle.json").read_text())
    assert report["units"] == "metres" and "MAE and RMSE in metres" in (out / "real_frame_motorcycle.md").read_text()
    from depthkit import Pipeline
    from depthkit.data.sparse import make_sparse
    from depthkit.data.synthetic import intrinsics_from_fov
    from depthkit.geometry import Intrinsics
    from depthkit.metrics import depth_metrics

    image, gt = real_frame.load_motorcycle(tmp_path)

    def nearest_mae(intrinsics):
        sparse = make_sparse(gt, "lidar", 0, intrinsics=intrinsics, n_beams=64).astype(np.float32)
        return float(depth_metrics(Pipeline(method="nearest")(image, sparse).depth, gt, gt > 0)["mae"])

    calibrated = nearest_mae(Intrinsics(fx=994.978, fy=994.978, cx=311.193, cy=254.877))
    assert calibrated != nearest_mae(intrinsics_from_fov(500, 741, 60.0))
    assert report["mean"]["lidar64"]["nearest"]["mae"] == pytest.approx(calibrated, rel=1e-6)
    assert report["mean"]["random100"]["default: complete"]["mae"] > 0
    with pytest.raises(SystemExit, match="pip install scikit-image"):
        real_frame.load_motorcycle(tmp_path / "empty")
    with pytest.raises(SystemExit, match="are not installed; pip install scikit-image"):
        real_frame._files(None, real_frame._MOTORCYCLE_INSTALL, "motorcycle_left.png")


def test_a_work_dir_resume_refuses_rows_of_another_checkpoint_of_the_same_name(tmp_path, capsys):
    """Two checkpoints in folders of one name give rows of one label; resuming the first's --work-dir with the second
    must not report the first's rows as the second's (the rerun is refused, saying what differs), while rerunning
    the same command resumes."""
    for sub, method in (("a", "nearest"), ("b", "guided")):
        write_manifest(tmp_path / sub / "ck", {"complete": {"method": method}})
    work = tmp_path / "w"

    def run(sub, out):
        argv = ["--limit", "1", "--methods", "none", "--checkpoint", str(tmp_path / sub / "ck"), "--work-dir",
                str(work), "--out", str(tmp_path / out), "--quiet"]
        return accuracy.run_main(accuracy.main, argv)

    assert run("a", "oa") == 0 and run("a", "oa2") == 0  # the same command resumes
    capsys.readouterr()
    assert run("b", "ob") == 2
    err = capsys.readouterr().err
    assert "already holds results of a different evaluation" in err and str(tmp_path / "b" / "ck") in err
    assert "Give a fresh --work-dir" in err and "--overwrite" not in err
    assert not (tmp_path / "ob").exists()


def test_real_frame_reports_whether_the_measured_values_survive(tmp_path, monkeypatch):
    """Each real-frame row carries the preservation error (max |output - sparse| over the measured pixels, the
    largest over seeds), so a method that moves a measured value shows it instead of only its MAE."""
    from depthkit import Pipeline

    real_frame = _load_script("real_frame")
    _motorcycle_files(tmp_path, _wall_and_block())

    class Shifted:  # a "method" that moves every value, the measured ones too, by 0.25 m
        def __call__(self, image, sparse):
            out = Pipeline(method="nearest")(image, sparse)
            out.depth = out.depth + np.float32(0.25)
            return out

    monkeypatch.setattr(real_frame, "checkpoint_rows", lambda ref, stages, options: {"shifted": Shifted()})
    out = tmp_path / "out"
    assert real_frame.main(["--frame", "motorcycle", "--data", str(tmp_path), "--patterns", "random100",
                            "--seeds", "0", "1", "--out", str(out)]) == 0
    report = json.loads((out / "real_frame_motorcycle.json").read_text())
    mean = report["mean"]["random100"]
    assert mean["nearest"]["preservation"] == 0.0 and mean["guided"]["preservation"] == 0.0
    assert mean["shifted"]["preservation"] == pytest.approx(0.25, abs=1e-6)
    assert [r["preservation"] for r in report["per_seed"]["random100"]["shifted"]] == [pytest.approx(0.25, abs=1e-6)] * 2
    from depthkit.checkpoints import default_checkpoint, folder_identity

    assert report["checkpoint"] == {"path": str(default_checkpoint().resolve()),  # which weights the rows ran
                                    "files": folder_identity(default_checkpoint().resolve())}
    md = (out / "real_frame_motorcycle.md").read_text()
    assert "| DBE-acc (px) | preservation |" in md and "| random100 | nearest |" in md
    assert re.search(r"\| random100 \| shifted \| .* \| 0\.25 \|", md)
    assert report["dbe_canny"] == "matlab" and "--dbe-canny" not in md
    # --dbe-canny skimage: each seed's DBE is dbe_metrics' on the script's edges for that seed's output
    script = tmp_path / "script"
    assert real_frame.main(["--frame", "motorcycle", "--data", str(tmp_path), "--patterns", "random100",
                            "--seeds", "0", "--out", str(script), "--dbe-canny", "skimage"]) == 0
    other = json.loads((script / "real_frame_motorcycle.json").read_text())
    from depthkit.data.sparse import make_sparse
    from depthkit.metrics import dbe_metrics

    image, depth = real_frame.FRAMES["motorcycle"].load(tmp_path)
    intr = real_frame.FRAMES["motorcycle"].intrinsics(*depth.shape)
    kind, kwargs = accuracy.SYNTHETIC_PATTERNS["random100"]
    sparse = make_sparse(depth, kind, 0, intrinsics=intr, **kwargs).astype(np.float32)
    pred = Pipeline(method="guided")(image, sparse).depth
    expected = dbe_metrics(pred, depth, valid=depth > 0, canny="skimage")["dbe_acc"]
    assert other["dbe_canny"] == "skimage" and other["per_seed"]["random100"]["guided"][0]["dbe_acc"] == expected
    assert other["mean"]["random100"]["guided"]["mae"] == report["per_seed"]["random100"]["guided"][0]["mae"]
    assert "--dbe-canny skimage" in (script / "real_frame_motorcycle.md").read_text()


def _old_report_merges_only_with_the_default(tmp_path, capsys, key: str, default: str, other: str, **section):
    """A report written before ``key`` was recorded (the ``default`` run's, without ``key``, one section field
    changed by ``section`` so that only ``key`` differs) counts as the default: --merge refuses to join it with the
    ``other`` run's report, naming ``key``, and joins it with the default run's."""
    old = json.loads((tmp_path / default / "accuracy.json").read_text())
    del old[key]
    old["datasets"][0].update(section)
    (tmp_path / "old.json").write_text(json.dumps(old))
    capsys.readouterr()
    files = [str(tmp_path / "old.json"), str(tmp_path / other / "accuracy.json")]
    assert accuracy.run_main(accuracy.main, ["--merge", *files, "--out", str(tmp_path / "m")]) == 2
    assert f"'{key}'" in capsys.readouterr().err
    assert accuracy.main(["--merge", str(tmp_path / "old.json"), str(tmp_path / default / "accuracy.json"),
                          "--out", str(tmp_path / "m")]) == 0


def test_dbe_canny_run_scores_the_scripts_edges_says_so_and_never_merges_with_the_papers(tmp_path, capsys):
    """--dbe-canny skimage: each row's DBE is depthkit eval's with the same choice (other metrics equal to the
    default run's), the report records and says it, and --merge refuses to join it with a default run (a report
    written before the switch counts as the default)."""
    common = ["--limit", "2", "--methods", "nearest", "--quiet"]
    assert accuracy.main([*common, "--out", str(tmp_path / "paper")]) == 0
    assert accuracy.main([*common, "--out", str(tmp_path / "script"), "--dbe-canny", "skimage"]) == 0
    paper, script = (json.loads((tmp_path / d / "accuracy.json").read_text()) for d in ("paper", "script"))
    assert paper["dbe_canny"] == "matlab" and script["dbe_canny"] == "skimage"
    ev = tmp_path / "eval.json"
    assert cli_main(["eval", "--dataset", "synthetic", "--method", "nearest", "--limit", "2", "--out", str(ev),
                     "--dbe-canny", "skimage", "--quiet"]) == 0
    expected = json.loads(ev.read_text())["mean"]
    p, s = (r["datasets"][0]["methods"][0]["mean"] for r in (paper, script))
    assert s["dbe_acc"] == expected["dbe_acc"] != p["dbe_acc"] and s["mae"] == p["mae"]
    assert "scikit-image's Canny" in (tmp_path / "script" / "accuracy.md").read_text()
    assert "scikit-image" not in (tmp_path / "paper" / "accuracy.md").read_text()
    _old_report_merges_only_with_the_default(tmp_path, capsys, "dbe_canny", "paper", "script", pattern="other")


def test_dbe_region_image_scores_annotated_edges_as_depthkit_eval_and_never_merges_with_valid(tmp_path, capsys):
    """--dbe-region image on a fake iBims-1 release: each row's DBE is `depthkit eval --dbe-region image`'s (and not
    the default run's), the report records and says it, --merge refuses to join it with a default run (a report
    written before the switch counts as the default), and a run that includes the synthetic split (no annotated
    edges) is refused before anything is evaluated."""
    write_ibims_raw(tmp_path / "ibims")
    common = ["--no-synthetic", "--dataset", "ibims1", "--root", str(tmp_path / "ibims"), "--methods", "guided",
              "--quiet"]
    assert accuracy.main([*common, "--out", str(tmp_path / "valid")]) == 0
    assert accuracy.main([*common, "--out", str(tmp_path / "image"), "--dbe-region", "image"]) == 0
    valid, image = (json.loads((tmp_path / d / "accuracy.json").read_text()) for d in ("valid", "image"))
    assert valid["dbe_region"] == "valid" and image["dbe_region"] == "image"
    ev = tmp_path / "eval.json"
    assert cli_main(["eval", "--dataset", "ibims1", "--root", str(tmp_path / "ibims"), "--method", "guided",
                     "--out", str(ev), "--dbe-region", "image", "--quiet"]) == 0
    expected = json.loads(ev.read_text())["mean"]
    v, i = (r["datasets"][0]["methods"][0]["mean"] for r in (valid, image))
    assert (i["dbe_acc"], i["dbe_comp"]) == (expected["dbe_acc"], expected["dbe_comp"])
    assert i["dbe_comp"] != v["dbe_comp"] and i["mae"] == v["mae"]
    assert "`--dbe-region image`" in (tmp_path / "image" / "accuracy.md").read_text()
    assert "--dbe-region" not in (tmp_path / "valid" / "accuracy.md").read_text()
    _old_report_merges_only_with_the_default(tmp_path, capsys, "dbe_region", "valid", "image", split="other")
    with pytest.raises(SystemExit):
        accuracy.main(["--limit", "1", "--methods", "nearest", "--out", str(tmp_path / "syn"), "--dbe-region", "image"])
    assert "the synthetic test split has none" in capsys.readouterr().err and not (tmp_path / "syn").exists()


# ---------------------------------------------------------------------------------------------------- review fixes
def _refused(argv, says, capsys, code=2):
    """``accuracy.main(argv)`` stops with exit status ``code`` and one error line containing ``says``."""
    with pytest.raises(SystemExit) as exc:
        accuracy.run_main(accuracy.main, argv)
    err = capsys.readouterr().err
    assert exc.value.code == code and says in err, err


def test_two_checkpoints_in_folders_of_one_name_get_rows_of_their_own(tmp_path, capsys):
    """runs/a/ck and runs/b/ck (one folder name) are told apart by their parent folders, in the row names and in the
    work files, so one run evaluates both; a lone checkpoint keeps its folder's name; one given twice is refused."""
    for sub, method in (("a", "nearest"), ("b", "guided")):
        write_manifest(tmp_path / "runs" / sub / "ck", {"complete": {"method": method}})
    out = tmp_path / "res"
    argv = ["--limit", "1", "--methods", "nearest,guided", "--checkpoint", str(tmp_path / "runs" / "a" / "ck"),
            "--checkpoint", str(tmp_path / "runs" / "b" / "ck"), "--out", str(out), "--quiet"]
    assert accuracy.run_main(accuracy.main, argv) == 0
    (ds,) = json.loads((out / "accuracy.json").read_text())["datasets"]
    rows = {m["method"]: m for m in ds["methods"]}
    assert list(rows) == ["nearest", "guided", "a/ck: complete", "b/ck: complete"]
    assert rows["a/ck: complete"]["mean"] == rows["nearest"]["mean"]
    assert rows["b/ck: complete"]["mean"] == rows["guided"]["mean"]
    assert accuracy.checkpoint_names([str(tmp_path / "runs" / "a" / "ck")]) == ["ck"]
    capsys.readouterr()
    assert accuracy.run_main(accuracy.main, [*argv[:4], "--checkpoint", argv[5], *argv[4:]]) == 2
    assert "is given more than once" in capsys.readouterr().err


def test_a_dataset_asked_for_twice_or_synthetic_with_a_root_is_refused(tmp_path, capsys):
    """The synthetic test split beside --dataset synthetic (or one root given twice, also as a relative path) would
    be reported twice, the second section resumed from the first's files; synthetic ignores --root."""
    out = ["--out", str(tmp_path / "o"), "--methods", "nearest"]
    _refused(["--dataset", "synthetic", *out], "is asked for more than once (the synthetic test split", capsys)
    _refused(["--patterns", "random100", "--dataset", "synthetic", "--split", "val", "--dataset", "synthetic",
              "--split", "val", *out], "'synthetic', split 'val', root None, pattern None is asked for", capsys)
    _refused(["--no-synthetic", "--dataset", "synthetic", "--root", "/nonexistent", *out],
             "is generated, so it takes no --root (received --root /nonexistent)", capsys)
    write_processed(tmp_path / "nyu")
    _refused(["--no-synthetic", "--dataset", "nyuv2", "--root", str(tmp_path / "nyu"), "--dataset", "nyuv2",
              "--root", str(tmp_path / "x" / ".." / "nyu"), *out], "is asked for more than once", capsys)
    assert not (tmp_path / "o").exists()


def test_two_roots_of_one_dataset_in_one_run_and_the_resolved_root_is_recorded(tmp_path, monkeypatch, capsys):
    """Each root has its own work folder (so one run evaluates both) and its section records the resolved root, so
    two runs of one root, typed relative and absolute, are refused by --merge instead of merging twice."""
    write_processed(tmp_path / "nyuA")
    write_processed(tmp_path / "nyuB")
    monkeypatch.chdir(tmp_path)
    base = ["--no-synthetic", "--methods", "nearest", "--quiet"]
    assert accuracy.run_main(accuracy.main, [*base, "--dataset", "nyuv2", "--root", "nyuA", "--dataset", "nyuv2",
                                             "--root", "nyuB", "--out", "two", "--work-dir", "w"]) == 0
    sections = json.loads((tmp_path / "two" / "accuracy.json").read_text())["datasets"]
    assert [ds["root"] for ds in sections] == [str(tmp_path / "nyuA"), str(tmp_path / "nyuB")]
    assert len({p.name for p in (tmp_path / "w").iterdir()}) == 2
    assert accuracy.main([*base, "--dataset", "nyuv2", "--root", str(tmp_path / "nyuA"), "--out", "abs"]) == 0
    capsys.readouterr()
    assert accuracy.run_main(accuracy.main, ["--merge", "two/accuracy.json", "abs/accuracy.json", "--out", "m"]) == 2
    assert "both have a section of dataset 'nyuv2'" in capsys.readouterr().err


def test_repeated_or_ignored_evaluation_options_are_refused(tmp_path, capsys):
    """A method, checkpoint or stage list given twice would be a duplicate row; --merge evaluates nothing, so its
    evaluation options would be ignored; --patterns applies to the synthetic split only; --stages and
    --base-method only to checkpoints."""
    ck = tmp_path / "ck"
    write_manifest(ck, {"complete": {"method": "nearest"}})
    out = ["--out", str(tmp_path / "o")]
    assert accuracy.run_main(accuracy.main, ["--methods", "nearest,guided,nearest", *out]) == 2
    assert "names ['nearest'] more than once" in capsys.readouterr().err
    _refused(["--checkpoint", str(ck), "--stages", "complete", "--stages", " complete", *out],
             "--stages complete is given more than once", capsys)
    _refused(["--stages", "complete", *out], "--stages chooses how a --checkpoint runs, and none is given", capsys)
    _refused(["--base-method", "no_such", *out], "--base-method chooses how a --checkpoint runs", capsys)
    _refused(["--no-synthetic", "--patterns", "bogus", "--dataset", "nyuv2", "--root", "x", *out],
             "--patterns bogus chooses the sparse input of the synthetic test split, which --no-synthetic", capsys)
    _refused(["--merge", "a.json", "--limit", "-3", "--checkpoint", "/no/such", "--patterns", "bogus",
              "--dataset", "nyuv2", "--root", "x", *out],
             "takes only --out, --name and --quiet; received --checkpoint, --dataset, --limit, --patterns", capsys)
    assert not (tmp_path / "o").exists()


def test_a_checkpoint_rows_work_file_names_its_device(tmp_path):
    """A --work-dir resume on another device would mix rows (and timings) of two devices, so a checkpoint row's
    fingerprint holds the device; a classical row runs on the CPU whatever --device says, so its fingerprint
    (and resumable work files made before) stays as it was."""
    from depthkit.data.datasets import build_dataset

    write_manifest(tmp_path / "ck", {"complete": {"method": "nearest"}})
    spec = {"name": "synthetic", "root": None, "split": "test", "options": {}}
    dataset = build_dataset("synthetic", None, split="test")
    (row,) = accuracy.checkpoint_entries(str(tmp_path / "ck"), None, "guided")
    on = {d: accuracy.entry_fingerprint(spec, dataset, row, "float32", d) for d in ("cpu", "cuda")}
    assert on["cpu"]["device"] == "cpu" and on["cpu"] != on["cuda"]
    (classical,) = accuracy.classical_entries("nearest")
    assert "device" not in accuracy.entry_fingerprint(spec, dataset, classical, "float32", "cuda")


@pytest.fixture(scope="module")
def one_scene_report(tmp_path_factory):
    """accuracy.py's report of nearest on one synthetic scene with the random100 pattern."""
    out = tmp_path_factory.mktemp("acc")
    assert accuracy.main(["--limit", "1", "--methods", "nearest", "--patterns", "random100", "--out", str(out),
                          "--quiet"]) == 0
    return json.loads((out / "accuracy.json").read_text())


def _variant(path: Path, report: dict, pattern: str, **changes) -> Path:
    report = json.loads(json.dumps(report))
    report["datasets"][0]["pattern"] = pattern
    report.update(changes)
    path.write_text(json.dumps(report))
    return path


def test_a_merge_keeps_each_runs_machine_says_each_run_and_refuses_two_devices(tmp_path, one_scene_report, capsys):
    """merged_from keeps every run's machine; the merged markdown names the merge's command and each run's date,
    version, commit and device (a run's own markdown is unchanged); runs on two devices are refused, naming both."""
    a = _variant(tmp_path / "a.json", one_scene_report, "random100")
    b = _variant(tmp_path / "b.json", one_scene_report, "lidar64", depthkit_version="0.0.1-old",
                 git_commit="0123abc", date="2020-01-01T00:00:00+00:00")
    gpu = _variant(tmp_path / "gpu.json", one_scene_report, "holes",
                   machine={**one_scene_report["machine"], "device": "cuda", "gpu": "NVIDIA H200"})
    out = tmp_path / "m"
    assert accuracy.run_main(accuracy.main, ["--merge", str(a), str(gpu), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--merge: the runs ran on different devices (device cpu: " in err and str(a) in err and str(gpu) in err
    assert not out.exists()
    assert accuracy.main(["--merge", str(a), str(b), "--out", str(out)]) == 0
    merged = json.loads((out / "accuracy.json").read_text())
    assert [e["machine"] for e in merged["merged_from"]] == [one_scene_report["machine"]] * 2
    md = (out / "accuracy.md").read_text()
    assert f"Merged by `python benchmarks/accuracy.py --merge {a} {b} --out {out}` from 2 runs:" in md
    assert "on 2020-01-01T00:00:00+00:00 with depthkit 0.0.1-old (commit 0123abc); machine: " in md
    assert md.count(", device cpu.") == 2 and "Generated by" not in md
    # a nested merge keeps the entries (and machines); an older merge's entries without a machine still merge
    c = _variant(tmp_path / "c.json", one_scene_report, "holes")
    assert accuracy.main(["--merge", str(out / "accuracy.json"), str(c), "--out", str(tmp_path / "m2")]) == 0
    nested = json.loads((tmp_path / "m2" / "accuracy.json").read_text())["merged_from"]
    assert [e["file"] for e in nested] == [str(a), str(b), str(c)] and all("machine" in e for e in nested)


def test_the_markdown_of_committed_reports_is_as_their_runs_wrote_it():
    """A run's own markdown is byte-identical to what it was (the committed reports that are no merge)."""
    runs = [p for p in sorted((REPO / "benchmarks" / "results").glob("accuracy*.json"))
            if "merged_from" not in json.loads(p.read_text())]
    assert len(runs) >= 5
    for path in runs:
        assert accuracy.report_markdown(json.loads(path.read_text())) == path.with_suffix(".md").read_text(), path


@pytest.mark.parametrize("argv, says", [
    (["--seeds", "0", "0", "1"], "--seeds must be distinct (each seed's draw counts once in the mean over seeds); "
                                 "received 0 0 1 (repeated: 0)."),
    (["--points", "0"], "--points must be >= 1 random point per seed; received 0."),
    (["--points", "-5", "--patterns", "random100"], "--points must be >= 1"),
    (["--stages", "complete,sharpn"], "--stages takes comma-separated stage names of complete, sharpen; received "
                                      "'complete,sharpn' (unknown: sharpn)."),
    (["--stages", ","], "--stages takes comma-separated stage names"),
])
def test_real_frame_refuses_repeated_seeds_no_points_and_unknown_stages_before_any_work(tmp_path, monkeypatch,
                                                                                        capsys, argv, says):
    """A seed given twice counted its draw twice in the mean over seeds; --points < 1 was recorded as given (or
    failed in the pipeline); a misspelt stage silently lost its row."""
    real_frame = _load_script("real_frame")
    from depthkit.checkpoints import CheckpointRef

    monkeypatch.setattr(CheckpointRef, "open", _never_called)
    monkeypatch.setattr(CheckpointRef, "default", _never_called)
    with pytest.raises(SystemExit) as exc:
        real_frame.main([*argv, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _never_called(*args, **kwargs):
    raise AssertionError("work started before the arguments were checked")
