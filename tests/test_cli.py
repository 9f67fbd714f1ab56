import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from depthkit import io
from depthkit.cli import main


def _write_pair(folder, stem, h=20, w=28, seed=0, png_sparse=False):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / f"{stem}.png"), image[:, :, ::-1])
    sparse = np.zeros((h, w), np.float32)
    idx = rng.choice(h * w, 30, replace=False)
    sparse.flat[idx] = rng.uniform(0.5, 8.0, 30).round(3)
    if png_sparse:
        io.write_depth_png16(folder / f"{stem}_sparse.png", sparse, scale=1000)
    else:
        np.save(folder / f"{stem}_sparse.npy", sparse)
    return image, sparse


@pytest.mark.parametrize("units, scale, png_scale", [(256, 256, 256.0), (1000, 1000, 1000.0), (None, None, 1000.0)])
def test_the_depth_png_holds_the_measured_values_exactly_when_a_fitting_scale_can(tmp_path, units, scale, png_scale):
    """KITTI's uint16 / 256 m values come back bit for bit from a PNG at 256 (at 1000 most would move by up to half a
    millimetre); millimetres stay at 1000; float metres no PNG scale holds keep the first that fits."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    raw = np.zeros((20, 28), np.uint16)
    raw.flat[rng.choice(20 * 28, 40, replace=False)] = rng.integers(300, 16000, 40)  # within 62.5 m: 1000 fits
    if units is None:
        np.save(tmp_path / "a_sparse.npy", (raw / 997.3).astype(np.float32))
        extra = []
    else:
        cv2.imwrite(str(tmp_path / "a_sparse.png"), raw)  # as a sensor writes it: no depth_scale chunk
        extra = ["--depth-scale", str(scale)]
    sparse_file = next(tmp_path.glob("a_sparse.*"))
    assert main(["run", "--image", str(tmp_path / "a.png"), "--sparse", str(sparse_file), "--method", "nearest",
                 "--out", str(tmp_path / "o"), *extra]) == 0
    sparse = io.read_depth(sparse_file, depth_scale=scale)
    png = tmp_path / "o" / "a_depth.png"
    assert io.png_depth_scale(png) == png_scale
    m = sparse > 0
    if units is not None:
        np.testing.assert_array_equal(io.read_depth(png)[m], sparse[m])
        np.testing.assert_array_equal(cv2.imread(str(png), cv2.IMREAD_UNCHANGED)[m], raw[m])
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "a_depth.npy")[m], sparse[m])


def test_run_single_writes_all_outputs_and_keeps_measurements(tmp_path, capsys):
    _, sparse = _write_pair(tmp_path, "a")
    rc = main(["run", "--image", str(tmp_path / "a.png"), "--sparse", str(tmp_path / "a_sparse.npy"),
               "--out", str(tmp_path / "out"), "--intrinsics", "20,20,14,10", "--ply"])
    assert rc == 0
    out = tmp_path / "out"
    depth = np.load(out / "a_depth.npy")
    m = sparse > 0
    assert np.array_equal(depth[m], sparse[m]) and (depth > 0).all()
    png = cv2.imread(str(out / "a_depth.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and np.array_equal(png[m], np.round(sparse[m] * 1000).astype(np.uint16))
    color = io.read_image(out / "a_color.png")
    assert color.shape[0] == 20 and color.shape[1] > 28
    assert len(io.read_point_cloud(out / "a.ply")) == 20 * 28
    assert "1 image(s) in" in capsys.readouterr().out


def test_run_folder_skips_bad_file_and_exits_nonzero(tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    _write_pair(inp, "good1", seed=1)
    _write_pair(inp, "good2", seed=2, png_sparse=True)
    (inp / "broken.png").write_bytes(b"garbage")
    np.save(inp / "broken_sparse.npy", np.ones((20, 28), np.float32))
    cv2.imwrite(str(inp / "lonely.png"), np.zeros((20, 28, 3), np.uint8))
    (inp / "gone.png").symlink_to(tmp_path / "nowhere.png")  # links to missing files: inputs that fail, not skipped
    np.save(inp / "gone_sparse.npy", np.ones((20, 28), np.float32))
    _write_pair(inp, "unlinked", seed=3)
    (inp / "unlinked_sparse.npy").unlink()
    (inp / "unlinked_sparse.npy").symlink_to(tmp_path / "nowhere.npy")
    rc = main(["run", "--input-dir", str(inp), "--out", str(tmp_path / "out"), "--depth-scale", "1000",
               "--method", "nearest"])
    assert rc == 1
    written = sorted(p.name for p in (tmp_path / "out").glob("*_depth.npy"))
    assert written == ["good1_depth.npy", "good2_depth.npy"]
    err = capsys.readouterr().err
    assert "broken.png" in err and "lonely.png" in err and "4 input(s) failed" in err
    assert f"image file is a link to {tmp_path / 'nowhere.png'}, which does not exist" in err
    assert f"is a link to {tmp_path / 'nowhere.npy'}, which does not exist" in err


def test_run_folder_takes_a_datasets_frame_color_png_and_skips_depthkits_outputs(tmp_path, capsys):
    """RGB-D datasets name frames NAME_color.png: such an image is an input; NAME_depth.png / NAME_color.png beside
    NAME's own image are depthkit's outputs (a run with --out in the input folder) and are not."""
    _write_pair(tmp_path, "frame_color")
    _write_pair(tmp_path, "other")
    args = ["run", "--input-dir", str(tmp_path), "--method", "nearest"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "frame_color_depth.npy").is_file() and (tmp_path / "other_depth.npy").is_file()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "o")]) == 0  # other_color.png etc. are now in the folder
    assert sorted(p.name for p in (tmp_path / "o").glob("*_depth.npy")) == ["frame_color_depth.npy",
                                                                           "other_depth.npy"]
    assert "failed" not in capsys.readouterr().err


def test_run_folder_takes_name_color_jpg_and_a_sparse_dir_that_is_the_input_dir_by_another_spelling(
        tmp_path, capsys, monkeypatch):
    """Only depthkit's own outputs are left out of a folder run: scene_color.jpg and scene_depth.webp beside scene.png
    are images (depthkit writes neither). --sparse-dir naming --input-dir by another path (relative vs absolute)
    is the same folder: an image is never its own sparse map (a.png was taken as a's map, and a 16-bit image with
    no sparse file was 'completed' from its own pixels)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    for stem in ("scene", "scene_color"):
        _write_pair(tmp_path / "in", stem)
    image, _ = _write_pair(tmp_path / "in", "scene_depth")
    cv2.imwrite(str(tmp_path / "in" / "scene_depth.webp"), image[:, :, ::-1], [cv2.IMWRITE_WEBP_QUALITY, 101])
    (tmp_path / "in" / "scene_depth.png").unlink()
    cv2.imwrite(str(tmp_path / "in" / "scene_color.jpg"), image[:, :, ::-1])
    (tmp_path / "in" / "scene_color.png").unlink()
    cv2.imwrite(str(tmp_path / "in" / "ir.png"), np.full((20, 28), 3000, np.uint16))  # no sparse file
    assert main(["run", "--input-dir", "in", "--sparse-dir", str(tmp_path / "in"), "--out", "o",
                 "--method", "nearest", "--depth-scale", "1000"]) == 1
    err = capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "o").glob("*_depth.npy")) == [
        "scene_color_depth.npy", "scene_depth.npy", "scene_depth_depth.npy"], err
    assert "ir.png: no sparse file" in err and "1 input(s) failed" in err, err


def test_run_folder_with_two_sparse_files_for_one_image_fails_that_image(tmp_path, capsys):
    """a_sparse.npy and a_sparse.png: which one is meant is not guessed; a is reported, b still runs."""
    _, sparse = _write_pair(tmp_path, "a")
    io.write_depth_png16(tmp_path / "a_sparse.png", sparse, scale=1000)
    _write_pair(tmp_path, "b")
    assert main(["run", "--input-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--method", "nearest"]) == 1
    err = capsys.readouterr().err
    assert "a.png: 2 sparse files (a_sparse.npy, a_sparse.png); keep one" in err
    assert sorted(p.name for p in (tmp_path / "o").glob("*_depth.npy")) == ["b_depth.npy"]


def test_run_messages_say_what_is_wrong(tmp_path, capsys):
    """A folder given as the image is a folder (not "not found"); no input at all is "nothing to run"; intrinsics
    without --ply are said to be unused; a method for a pipeline without complete is refused."""
    from depthkit import Pipeline

    _write_pair(tmp_path, "a")
    (tmp_path / "dir.png").mkdir()
    assert main(["run", "--image", str(tmp_path / "dir.png"), "--sparse", str(tmp_path / "a_sparse.npy"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "image file is a folder, not a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--out", str(tmp_path / "o")])
    assert "nothing to run" in capsys.readouterr().err
    assert main(_single(tmp_path, "--intrinsics", "30,30,14,10")) == 0
    assert "--intrinsics is used by --ply only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="method='nearest' chooses how the complete stage completes"):
        Pipeline(stages=("sharpen",), method="nearest")

def test_intrinsics_in_the_wrong_order_are_said(tmp_path, capsys):
    """fx,fy,cx,cy given as cx,cy,fx,fy (a 28x20 image): the principal point lands far outside; said once, the point
    cloud still written as given. A principal point inside the image is silent."""
    _write_pair(tmp_path, "a")
    assert main(_single(tmp_path, "--ply", "--intrinsics", "14,10,500,500")) == 0
    assert "principal point (500, 500) lies far outside the 28x20 image" in capsys.readouterr().err
    assert main(_single(tmp_path, "--ply", "--intrinsics", "30,30,14,10", out="o2")) == 0
    assert "principal point" not in capsys.readouterr().err
    assert main(_single(tmp_path, "--ply", "--intrinsics", "1.07,1.5,0.5,0.5", out="o3")) == 0  # K / image size
    assert "--intrinsics 1.07,1.5,0.5,0.5 look normalised by the image size (fractions, not pixels): a focal " \
           "length under 2 px would make the point cloud hundreds of times too wide. For this 28x20 image: " \
           "--intrinsics 29.96,30,14,10" in capsys.readouterr().err


@pytest.mark.parametrize("given, k, scaled", [
    ("60,60,27.5,19.5", 2, "30,30,13.5,9.5"),       # the same camera at 56x40, for this 28x20 image
    ("15,15,6.5,4.5", 0.5, "30,30,13.5,9.5"),       # ... and at 14x10
    ("30,30,14.3,9.2", None, None),                 # this image's own camera, its centre a little off: silent
    ("30,30,27.5,9.5", None, None),                 # off across only (a crop?): not another resolution
])
def test_intrinsics_of_another_resolution_are_said(tmp_path, capsys, given, k, scaled):
    """Intrinsics of the same camera at k times the image's size (a sensor's full resolution for a resized photo):
    the principal point is off the centre by k across and down. Said with the values scaled to this image (the
    pixel-centre rule: (c + 0.5) / k - 0.5); the cloud is still written as given."""
    _write_pair(tmp_path, "a")
    assert main(_single(tmp_path, "--ply", "--intrinsics", given)) == 0
    err = capsys.readouterr().err
    if k is None:
        assert "principal point" not in err
    else:
        assert f"look like the same camera's at {k:g}x this size" in err and f"--intrinsics {scaled} " in err
        assert (tmp_path / "o" / "a.ply").is_file()


def test_an_output_folder_that_cannot_be_made_is_said_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import depthkit.cli as cli

    _write_pair(tmp_path, "a")
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name == "blocked":
            raise PermissionError(13, "Permission denied")
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(cli, "_build_pipeline", lambda args: pytest.fail("a model loaded first"))
    assert main(_single(tmp_path, out="blocked")) == 2
    err = capsys.readouterr().err
    assert "cannot create the output folder --out" in err and "(Permission denied); give a folder you can" in err


def test_resize_sparse_refuses_a_dense_depth_of_another_size(tmp_path, capsys):
    """--resize-sparse scatters points; a dense --depth of another size would become mostly holes: refused."""
    image, _ = _write_pair(tmp_path, "a")
    np.save(tmp_path / "d.npy", np.full((10, 14), 2.0, np.float32))
    assert main(["run", "--stages", "sharpen", "--image", str(tmp_path / "a.png"), "--depth", str(tmp_path / "d.npy"),
                 "--resize-sparse", "--out", str(tmp_path / "o")]) == 2
    assert "Resize the depth map to the image's size first" in capsys.readouterr().err


def test_run_folder_with_separate_sparse_dir(tmp_path):
    inp, sp = tmp_path / "rgb", tmp_path / "lidar"
    inp.mkdir()
    sp.mkdir()
    _write_pair(inp, "f0")
    shutil.move(inp / "f0_sparse.npy", sp / "f0.npy")
    assert main(["run", "--input-dir", str(inp), "--sparse-dir", str(sp), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "f0_depth.npy").is_file()


def test_an_error_is_one_line_unless_a_traceback_is_asked_for(tmp_path, capsys, monkeypatch):
    """depthkit says a ValueError / OSError as the user's mistake in one line; DEPTHKIT_TRACEBACK=1 shows the
    traceback instead, for a bug that raises one."""
    argv = ["run", "--image", str(tmp_path / "missing.png"), "--sparse", str(tmp_path / "s.npy"), "--out",
            str(tmp_path / "o"), "--method", "nearest"]
    assert main(argv) == 2 and "depthkit run: error: " in capsys.readouterr().err
    monkeypatch.setenv("DEPTHKIT_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        main(argv)


def test_run_argument_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--out", str(tmp_path)])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["run", "--image", "a.png", "--sparse", "b.npy", "--out", str(tmp_path), "--ply"])
    assert "--ply needs --intrinsics" in capsys.readouterr().err
    _write_pair(tmp_path, "a")
    rc = main(["run", "--image", str(tmp_path / "a.png"), "--sparse", str(tmp_path / "a_sparse.npy"),
               "--out", str(tmp_path / "o"), "--method", "nope"])
    assert rc == 2 and "unknown completion method 'nope'" in capsys.readouterr().err


def test_ls_lists_methods(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in ("complete", "nearest", "ip_basic", "guided"):
        assert name in out


@pytest.mark.parametrize("edit, rc, says", [
    (lambda m, c: m["quality"]["complete"].update(lidar64={"mae": 1.0}), 0, "quality: unreadable in"),
    (lambda m, c: m["stages"]["sharpen"].update(config="x"), 0, "learned completer vs guided"),
    (lambda m, c: c.write_text("[]"), 2, "complete.json must hold a JSON object"),
    (lambda m, c: c.write_text(c.read_text().replace('"refiner"', '"refiner_"')), 2,
     "complete.json: unknown key(s) ['refiner_']"),  # refused as the completer's loader refuses it
])
def test_ls_describes_a_broken_embedded_default_without_a_traceback(tmp_path, monkeypatch, capsys, edit, rc, says):
    """depthkit ls on an embedded default ($DEPTHKIT_CHECKPOINTS) with a malformed quality entry, sharpen config or
    complete.json: a line or one error naming the file, never a KeyError / AttributeError traceback."""
    import json

    from depthkit.resources import checkpoints_dir

    src = checkpoints_dir() / "default"
    (tmp_path / "default" / "complete").mkdir(parents=True)
    manifest = json.loads((src / "depthkit.json").read_text())
    settings = tmp_path / "default" / "complete" / "complete.json"
    settings.write_text((src / "complete" / "complete.json").read_text())
    edit(manifest, settings)
    (tmp_path / "default" / "depthkit.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("DEPTHKIT_CHECKPOINTS", str(tmp_path))
    assert main(["ls"]) == rc
    assert says in (capsys.readouterr().out if rc == 0 else capsys.readouterr().err)


def test_console_script_help_is_fast_and_real_run_works(tmp_path):
    exe = shutil.which("depthkit") or str(__import__("pathlib").Path(sys.executable).with_name("depthkit"))
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "run" in res.stdout
    # --help must not import torch/transformers; checked structurally rather than by timing
    probe = subprocess.run([sys.executable, "-c", "import sys, depthkit.cli as c; c.build_parser(); "
                            "print(sorted(m for m in ('torch','transformers','diffusers','cv2') if m in sys.modules))"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    as_module = subprocess.run([sys.executable, "-m", "depthkit", "ls", "--help"], capture_output=True, text=True,
                               timeout=60)  # python -m depthkit is the same command
    assert as_module.returncode == 0 and "usage: depthkit ls" in as_module.stdout, as_module.stderr
    _write_pair(tmp_path, "s")
    res = subprocess.run([exe, "run", "--image", str(tmp_path / "s.png"), "--sparse", str(tmp_path / "s_sparse.npy"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "s_depth.png").is_file()


def test_stage_options_from_the_command_line(tmp_path, capsys):
    from depthkit.cli import parse_stage_options

    assert parse_stage_options(["complete.query_budget=2048", "complete.fusion=fallback", "sharpen.x=0.5"]) == {
        "complete": {"query_budget": 2048, "fusion": "fallback"}, "sharpen": {"x": 0.5}}
    with pytest.raises(ValueError, match="STAGE.KEY=VALUE"):
        parse_stage_options(["query_budget=3"])
    # numbers as YAML 1.2 reads them: 0100 was YAML 1.1's octal 64, 1:30 its base-60 90, 1e3 a string
    assert parse_stage_options(["complete.query_budget=0100", "complete.query_stride=1:30", "complete.x=1e3",
                                "complete.y=0x10", "complete.z=off", "complete.w=null", "complete.v=[1, 2.5e-1]"]) == {
        "complete": {"query_budget": 100, "query_stride": "1:30", "x": 1000.0, "y": 16, "z": False, "w": None,
                     "v": [1, 0.25]}}
    with pytest.raises(ValueError, match=r"--option 'complete.query_budget=' has no value after '='.*KEY=null"):
        parse_stage_options(["complete.query_budget="])  # it read as null: no cap, every missing pixel asked
    _write_pair(tmp_path, "a")
    rc = main(["run", "--image", str(tmp_path / "a.png"), "--sparse", str(tmp_path / "a_sparse.npy"),
               "--out", str(tmp_path / "o"), "--method", "nearest", "--option", "complete.query_budget=8"])
    assert rc == 2 and "takes no options" in capsys.readouterr().err


def test_tiny_checkpoint_runs_with_stage_options(tmp_path):
    ck = tmp_path / "ck"
    assert main(["init-checkpoint", "--tiny", str(ck), "--stages", "complete"]) == 0
    _, sparse = _write_pair(tmp_path, "a")
    rc = main(["run", "--checkpoint", str(ck), "--image", str(tmp_path / "a.png"), "--sparse",
               str(tmp_path / "a_sparse.npy"), "--out", str(tmp_path / "o"), "--option", "complete.query_budget=4"])
    assert rc == 0
    depth = np.load(tmp_path / "o" / "a_depth.npy")
    assert np.array_equal(depth[sparse > 0], sparse[sparse > 0]) and (depth > 0).all()


def test_init_checkpoint_refuses_to_overwrite_a_folder_with_files(tmp_path, capsys):
    """Random weights must not silently replace a trained checkpoint (or anything else) in the folder: refused, the
    files as they were; --overwrite writes; an empty folder is fine."""
    ck = tmp_path / "ck"
    assert main(["init-checkpoint", "--tiny", str(ck), "--stages", "complete"]) == 0
    (ck / "mine.txt").write_text("trained")
    before = {p: p.read_bytes() for p in ck.rglob("*") if p.is_file()}
    assert main(["init-checkpoint", "--tiny", str(ck), "--stages", "complete", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "a checkpoint (it holds depthkit.json)" in err and "--overwrite" in err and "nothing was written" in err
    assert {p: p.read_bytes() for p in ck.rglob("*") if p.is_file()} == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    assert main(["init-checkpoint", "--tiny", str(other), "--stages", "complete"]) == 2
    assert "a folder that is not empty" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    for extra in ([], ["--overwrite"]):  # a file: no --overwrite offered (it could not help), none taken
        assert main(["init-checkpoint", "--tiny", str(tmp_path / "afile"), "--stages", "complete", *extra]) == 2
        err = capsys.readouterr().err
        assert "afile is a file, not a folder; give a new folder" in err and "--overwrite" not in err
    assert main(["init-checkpoint", "--tiny", str(ck), "--stages", "complete", "--seed", "3", "--overwrite"]) == 0
    assert {p: p.read_bytes() for p in ck.rglob("*") if p.is_file()} != before
    (tmp_path / "empty").mkdir()
    assert main(["init-checkpoint", "--tiny", str(tmp_path / "empty"), "--stages", "complete"]) == 0


def _single(tmp_path, *extra, stem="a", out="o"):
    return ["run", "--image", str(tmp_path / f"{stem}.png"), "--sparse", str(tmp_path / f"{stem}_sparse.npy"),
            "--out", str(tmp_path / out), "--method", "nearest", *extra]


def test_existing_outputs_need_overwrite_or_skip(tmp_path, capsys):
    _write_pair(tmp_path, "a")
    assert main(_single(tmp_path)) == 0
    capsys.readouterr()
    assert main(_single(tmp_path)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(_single(tmp_path, "--overwrite")) == 0
    out = capsys.readouterr().out
    assert "replaced a_depth.npy" in out and "replaced 1 existing (--overwrite)" in out
    assert main(_single(tmp_path, "--skip-existing")) == 0
    assert "kept 1 existing" in capsys.readouterr().out
    (tmp_path / "file").write_text("x")
    assert main(_single(tmp_path, out="file")) == 2
    assert "is a file" in capsys.readouterr().err


def test_integer_npy_sparse_needs_and_uses_depth_scale(tmp_path, capsys):
    _, sparse = _write_pair(tmp_path, "a")
    mm = np.round(sparse * 1000).astype(np.uint16)
    np.save(tmp_path / "a_sparse.npy", mm)
    assert main(_single(tmp_path)) == 2
    assert "--depth-scale" in capsys.readouterr().err
    assert main(_single(tmp_path, "--depth-scale", "1000")) == 0
    depth = np.load(tmp_path / "o" / "a_depth.npy")
    np.testing.assert_allclose(depth[mm > 0], mm[mm > 0] / 1000, atol=1e-6)


def test_deep_scene_png_scale_fits_and_too_deep_fails_before_writing(tmp_path, capsys):
    _, sparse = _write_pair(tmp_path, "a")
    np.save(tmp_path / "a_sparse.npy", sparse * 10)  # up to 80 m
    assert main(_single(tmp_path)) == 0
    assert io.png_depth_scale(tmp_path / "o" / "a_depth.png") == 256
    np.testing.assert_allclose(io.read_depth(tmp_path / "o" / "a_depth.png"), np.load(tmp_path / "o" / "a_depth.npy"),
                               atol=1 / 511)
    assert main(_single(tmp_path, "--png-scale", "1000", out="o2")) == 2
    assert "does not fit" in capsys.readouterr().err and not list((tmp_path / "o2").glob("*"))
    # a completion deeper than its sparse input (checked before the model ran) is said to be what did not fit
    from depthkit.cli_run import write_outputs

    with pytest.raises(ValueError, match=r"the output depth \(a completion may reach beyond the sparse input's deepest "
                                         r"value, which --png-scale was checked against before the model ran\) up to "
                                         r"70\.000 m does not fit a 16-bit PNG at scale 1000"):
        write_outputs(tmp_path / "o3", "b", np.array([[1.0, 70.0]], np.float32), png_scale=1000,
                      measured=np.array([[1.0, 0.0]], np.float32))
    assert not (tmp_path / "o3").exists() or not list((tmp_path / "o3").glob("*"))


def test_returns_under_half_a_millimetre_get_a_finer_png_scale(tmp_path):
    """A frame with one return of 0.2 mm: 1000 units per metre would store it as 0 (missing), so the automatic
    scale is the finest that fits (5000 for 8 m) and the PNG keeps every pixel."""
    _, sparse = _write_pair(tmp_path, "a")
    sparse[0, 0] = 0.0002
    np.save(tmp_path / "a_sparse.npy", sparse)
    assert main(_single(tmp_path)) == 0
    assert io.png_depth_scale(tmp_path / "o" / "a_depth.png") == 5000
    png = io.read_depth(tmp_path / "o" / "a_depth.png")
    assert (png > 0).all() and png[0, 0] == pytest.approx(0.0002, abs=1e-4)


def test_a_failed_write_leaves_no_partial_result(tmp_path, monkeypatch):
    """If a write fails half way (here the colour map), the files already written for that image are removed, so
    --skip-existing cannot take them for a finished result; the other image of the folder is written whole."""
    from depthkit import io as dio

    for stem in ("a", "b"):
        _write_pair(tmp_path, stem)
    real = dio.write_colorized

    def fail_for_a(path, depth):
        if Path(path).name.startswith("a_"):
            raise OSError("disk full (simulated)")
        return real(path, depth)

    monkeypatch.setattr(dio, "write_colorized", fail_for_a)
    args = ["run", "--input-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--method", "nearest"]
    assert main(args) == 1
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["b_color.png", "b_depth.npy", "b_depth.png"]
    monkeypatch.setattr(dio, "write_colorized", real)
    assert main([*args, "--skip-existing"]) == 0
    assert len(list((tmp_path / "o").iterdir())) == 6


def test_skip_existing_runs_an_input_whose_outputs_are_incomplete(tmp_path, capsys):
    """Outputs written without --ply, then --skip-existing --ply: the point cloud is missing, so the image runs."""
    _write_pair(tmp_path, "a")
    assert main(_single(tmp_path)) == 0
    capsys.readouterr()
    assert main(_single(tmp_path, "--skip-existing", "--ply", "--intrinsics", "30,30,14,10")) == 0
    assert (tmp_path / "o" / "a.ply").is_file() and "nothing to do" not in capsys.readouterr().out
    assert main(_single(tmp_path, "--skip-existing", "--ply", "--intrinsics", "30,30,14,10")) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_one_stems_outputs_are_one_runs_and_a_users_own_ply_is_kept(tmp_path, capsys):
    """A point cloud from a run with --ply is removed when --overwrite replaces the depth without --ply (it would be
    another depth's cloud, and --skip-existing --ply would then keep it as whole). A <stem>.ply without depthkit's
    depth files beside it is the user's own (a scan kept with its image, --out being the input folder): it is no
    reason to refuse, and neither --skip-existing nor --overwrite touches it."""
    _write_pair(tmp_path, "a")
    ply = ["--ply", "--intrinsics", "30,30,14,10"]
    assert main(_single(tmp_path, *ply)) == 0
    capsys.readouterr()
    assert main(_single(tmp_path, "--overwrite")) == 0
    assert "replaced a_depth.npy, a_depth.png, a_color.png; removed a.ply (an earlier run's)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_color.png", "a_depth.npy", "a_depth.png"]
    assert main(_single(tmp_path, "--skip-existing", *ply)) == 0
    assert "nothing to do" not in capsys.readouterr().out and (tmp_path / "o" / "a.ply").is_file()
    own = tmp_path / "scan"
    own.mkdir()
    _write_pair(own, "s")
    (own / "s.ply").write_text("the user's own scan")
    folder = ["run", "--input-dir", str(own), "--out", str(own), "--method", "nearest"]
    for flags in ([], ["--skip-existing"], ["--overwrite"]):
        assert main([*folder, *flags]) == 0, capsys.readouterr().err
        assert (own / "s.ply").read_text() == "the user's own scan" and "removed" not in capsys.readouterr().out
        for name in ("s_color.png", "s_depth.npy", "s_depth.png"):
            (own / name).unlink()
    for flags in ([], ["--skip-existing"]):  # ... but --ply, which would write that very file, asks for --overwrite
        assert main([*folder, *ply, *flags]) == 2
        assert f"{own / 's.ply'} already exists without depth outputs beside it (perhaps not a depthkit result), " \
               "and --ply would replace it. Pass --overwrite" in capsys.readouterr().err
        assert (own / "s.ply").read_text() == "the user's own scan" and not (own / "s_depth.npy").exists()
    assert main([*folder, *ply, "--overwrite"]) == 0
    assert (own / "s.ply").read_bytes().startswith(b"ply")


def test_the_overwrite_summary_counts_only_the_results_it_replaced(tmp_path, capsys):
    """--overwrite over two results where one input has gone bad: one replaced (the other's old files stay), not 2."""
    for stem in ("a", "b"):
        _write_pair(tmp_path, stem)
    args = ["run", "--input-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--method", "nearest"]
    assert main(args) == 0
    (tmp_path / "b_sparse.npy").write_text("x")
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 1
    assert "1 image(s) in" in (out := capsys.readouterr().out) and "replaced 1 existing (--overwrite)" in out, out


def test_single_failure_is_reported_once(tmp_path, capsys):
    _write_pair(tmp_path, "a")
    np.save(tmp_path / "a_sparse.npy", np.zeros((5, 5), np.float32))
    assert main(_single(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("5x5") == 1 and "wrote 0" not in err and "Traceback" not in err


def test_resize_sparse_scatters_points(tmp_path):
    _write_pair(tmp_path, "a", h=20, w=28)
    small = np.zeros((10, 14), np.float32)
    small[3, 4] = 2.5
    np.save(tmp_path / "a_sparse.npy", small)
    assert main(_single(tmp_path, "--resize-sparse")) == 0
    depth = np.load(tmp_path / "o" / "a_depth.npy")
    assert depth[7, 9] == np.float32(2.5) and np.allclose(depth, 2.5)


def test_resize_sparse_says_how_many_points_were_merged(tmp_path, capsys):
    """Scattered down to the image's size, points that share a pixel are merged, the nearest kept, and the run says
    how many (once); scattered up, nothing merges and nothing is said."""
    cv2.imwrite(str(tmp_path / "a.png"), np.full((2, 3, 3), 128, np.uint8))
    big = np.zeros((4, 6), np.float32)  # twice the image: each 2x2 block is one pixel
    big[0, 0], big[0, 1], big[1, 1] = 3.0, 1.0, 2.0  # -> pixel (0, 0), 1.0 kept
    big[2, 2], big[3, 3] = 4.0, 6.0  # -> pixel (1, 1), 4.0 kept
    big[3, 5] = 5.0  # -> pixel (1, 2), alone
    np.save(tmp_path / "a_sparse.npy", big)
    assert main(_single(tmp_path, "--resize-sparse")) == 0
    err = capsys.readouterr().err
    assert err.count("depthkit run: warning:") == 1 and (
        "depthkit run: warning: sparse is 4x6 and is scattered to 2x3: 5 of 6 measured points fell on a pixel shared "
        "with another and were merged (kept: the nearest depth of each such pixel), leaving 3 points.") in err, err
    depth = np.load(tmp_path / "o" / "a_depth.npy")
    assert (depth[0, 0], depth[1, 1], depth[1, 2]) == (1.0, 4.0, 5.0)
    _write_pair(tmp_path, "b", h=8, w=12)
    np.save(tmp_path / "b_sparse.npy", big)
    assert main(_single(tmp_path, "--resize-sparse", stem="b")) == 0
    assert "warning" not in capsys.readouterr().err


def test_missing_inputs_reported_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import depthkit.cli as cli

    def boom(args):
        raise AssertionError("the pipeline was built before the inputs were checked")

    monkeypatch.setattr(cli, "_build_pipeline", boom)
    _write_pair(tmp_path, "a")
    rc = main(["run", "--stages", "sharpen", "--image", str(tmp_path / "a.png"), "--depth",
               str(tmp_path / "missing.npy"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "depth file not found" in capsys.readouterr().err
    # a folder cannot be sharpened alone (no --depth per image): said before the sharpener loads
    with pytest.raises(SystemExit):
        main(["run", "--stages", "sharpen", "--input-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "--stages sharpen alone sharpens one --depth map: give --image with --depth" in capsys.readouterr().err


def test_device_and_checkpoint_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import torch

    _write_pair(tmp_path, "a")
    if not torch.cuda.is_available():
        assert main(_single(tmp_path, "--device", "cuda")) == 2
        err = capsys.readouterr().err
        assert "no CUDA device" in err and "runs on the CPU" in err and len(err.strip().splitlines()) == 2
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    ck = ["run", "--image", "a.png", "--sparse", "a_sparse.npy", "--out", "o", "--checkpoint", "runs/final"]
    assert main(ck) == 2
    assert "no such checkpoint folder: runs/final" in capsys.readouterr().err


def test_every_option_has_help():
    from depthkit.cli import build_parser

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, __import__("argparse")._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)
            elif action.dest != "help":
                yield parser.prog, action

    missing = [f"{prog} {a.option_strings or a.dest}" for prog, a in walk(build_parser()) if not a.help]
    assert not missing, missing


def test_ls_lists_recipes_and_recipes_cp(tmp_path, capsys):
    assert main(["ls"]) == 0
    assert "tiny/complete" in capsys.readouterr().out
    assert main(["recipes", "cp", "tiny/complete", str(tmp_path / "mine.yaml")]) == 0
    from depthkit.config import load_recipe

    assert load_recipe(tmp_path / "mine.yaml").kind == "complete"
    assert main(["recipes", "cp", "tiny/complete", str(tmp_path / "mine.yaml")]) == 2  # never overwrites
    # every recipe listed loads as one; the accelerate launch configs are listed apart, and still copied
    from depthkit.resources import list_launch_configs, list_recipes

    assert all(load_recipe(p).kind for p in list_recipes().values())
    assert sorted(list_launch_configs()) == ["accelerate/deepspeed_zero2", "accelerate/fsdp", "accelerate/multi_node"]
    assert main(["recipes", "ls"]) == 0
    listed = capsys.readouterr().out.split("accelerate launch configs")
    assert "tiny/complete" in listed[0] and "accelerate/fsdp" not in listed[0] and "accelerate/fsdp" in listed[1]
    assert main(["recipes", "cp", "accelerate/fsdp", str(tmp_path / "fsdp.yaml")]) == 0


def test_shipped_recipe_found_from_another_folder(tmp_path, monkeypatch):
    from depthkit.resources import find_recipe

    monkeypatch.chdir(tmp_path)
    assert find_recipe("recipes/tiny/complete.yaml").is_file() and find_recipe("tiny/complete").is_file()
    with pytest.raises(FileNotFoundError, match="Shipped recipes"):
        find_recipe("recipes/nope.yaml")


def test_library_noise_hidden_unless_verbose_and_data_warnings_always_shown(tmp_path, capsys, caplog, monkeypatch):
    import logging
    import warnings

    import depthkit.cli as cli
    from depthkit.pipeline import Pipeline

    class Noisy(Pipeline):
        def __call__(self, *a, **k):
            warnings.warn("`past_key_values` is deprecated", FutureWarning, stacklevel=2)
            logging.getLogger("transformers").warning("Loading weights chatter")
            return super().__call__(*a, **k)

    monkeypatch.setattr(cli, "_build_pipeline", lambda args: Noisy(method="nearest"))
    _, sparse = _write_pair(tmp_path, "a")
    np.save(tmp_path / "a_sparse.npy", sparse * 1000)  # millimetres saved as float
    assert main(_single(tmp_path)) == 0
    out, err = capsys.readouterr()
    assert "deprecated" not in err and "chatter" not in caplog.text
    assert err.count("looks like millimetres") == 1 and "a.png:" in out
    assert main(_single(tmp_path, "--verbose", "--overwrite")) == 0
    assert "deprecated" in capsys.readouterr().err and "chatter" in caplog.text
    assert main(_single(tmp_path, "--quiet", "--overwrite")) == 0
    out, err = capsys.readouterr()
    assert out == "" and "millimetres" in err


def test_exif_rotated_photo_is_read_upright_and_said(tmp_path, capsys):
    from PIL import Image

    image = np.random.default_rng(0).integers(0, 255, (20, 28, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(image).save(tmp_path / "a.png", exif=exif)
    sparse = np.zeros((28, 20), np.float32)  # aligned with the upright (rotated) photo
    sparse[5, 5] = 2.0
    np.save(tmp_path / "a_sparse.npy", sparse)
    assert main(_single(tmp_path)) == 0
    assert "EXIF orientation 6" in capsys.readouterr().err
    assert np.load(tmp_path / "o" / "a_depth.npy").shape == (28, 20)



def test_resize_sparse_refuses_a_map_in_the_stored_orientation_of_an_exif_rotated_photo(tmp_path, capsys):
    """The sparse map as the photo is stored (20x28) and the photo read upright (28x20): --resize-sparse must not
    scatter it stretched and squeezed into garbage; it is refused saying the orientation, and nothing is written."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((20, 28, 3), np.uint8)).save(tmp_path / "a.jpg", exif=exif)
    sparse = np.zeros((20, 28), np.float32)
    sparse[5, 5] = 2.0
    np.save(tmp_path / "a_sparse.npy", sparse)
    args = ["run", "--image", str(tmp_path / "a.jpg"), "--sparse", str(tmp_path / "a_sparse.npy"), "--resize-sparse",
            "--method", "nearest", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "EXIF orientation 6" in err and "sparse is 20x28 (HxW, aspect 1.400) and is to be scattered to 28x20" in err
    assert not (tmp_path / "o" / "a_depth.npy").exists()



def test_intrinsics_of_the_stored_orientation_of_an_exif_rotated_photo_are_said(tmp_path, capsys):
    """A photo stored 28x20 (WxH) with EXIF orientation 6 is read 20x28; intrinsics centred on the stored pixels
    (cx 13.5, cy 9.5) would skew the point cloud: said, with the values for the upright image (fx, fy swapped, the
    principal point turned: cx' = W_read - 1 - cy, cy' = cx). Those values, and any for a photo without the tag,
    are silent."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((20, 28, 3), np.uint8)).save(tmp_path / "a.png", exif=exif)
    sparse = np.zeros((28, 20), np.float32)  # aligned with the upright photo
    sparse[5, 5] = 2.0
    np.save(tmp_path / "a_sparse.npy", sparse)
    args = ["run", "--image", str(tmp_path / "a.png"), "--sparse", str(tmp_path / "a_sparse.npy"), "--ply",
            "--method", "nearest"]
    assert main(args + ["--intrinsics", "30,31,13.5,9.5", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "principal point (13.5, 9.5) is nearer the centre of the photo as stored" in err
    assert "--intrinsics 31,30,9.5,13.5)" in err
    assert main(args + ["--intrinsics", "31,30,9.5,13.5", "--out", str(tmp_path / "o2")]) == 0
    assert "nearer the centre" not in capsys.readouterr().err
    _write_pair(tmp_path, "b")  # 20x28 without a tag: the same values are its own
    assert main(_single(tmp_path, "--ply", "--intrinsics", "30,31,13.5,9.5", stem="b", out="o3")) == 0
    assert "nearer the centre" not in capsys.readouterr().err


def _no_pipeline(monkeypatch):
    """Make building the pipeline fail the test: errors must come before any model loads."""
    import depthkit.cli as cli

    def boom(args):
        raise AssertionError("the pipeline was built before the error was found")

    monkeypatch.setattr(cli, "_build_pipeline", boom)


def test_a_folder_none_of_whose_images_fit_the_intrinsics_fails_before_any_model_loads(tmp_path, capsys,
                                                                                        monkeypatch):
    """Intrinsics for a 56x40 image, a folder of 28x20 ones (one stored sideways with an EXIF tag, read upright as
    28x20 too): every point cloud would fail, so the run says so before building the pipeline, with the scaled values
    for the first image. One image of the right size (EXIF applied) and the run goes on."""
    import json

    from PIL import Image

    from depthkit.orientation import image_size

    folder = tmp_path / "frames"
    folder.mkdir()
    _write_pair(folder, "a")
    _write_pair(folder, "b")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 20 wide x 28 high, read upright as 28 wide x 20 high
    Image.fromarray(np.zeros((28, 20, 3), np.uint8)).save(folder / "b.png", exif=exif)
    with pytest.warns(io.DepthkitWarning, match="EXIF orientation 6"):
        assert image_size(folder / "b.png") == (20, 28) == io.read_image(folder / "b.png").shape[:2]
    assert image_size(folder / "a_sparse.npy") is None
    k = tmp_path / "k.json"
    k.write_text(json.dumps({"fx": 60.0, "fy": 60.0, "cx": 27.5, "cy": 19.5, "width": 56, "height": 40}))
    argv = ["run", "--input-dir", str(folder), "--out", str(tmp_path / "o"), "--method", "nearest", "--ply",
            "--intrinsics", str(k)]
    with monkeypatch.context() as m:
        _no_pipeline(m)
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "none of the 2 image(s) in --input-dir has the size the intrinsics are for; the first, a.png:" in err
    assert "--intrinsics 30,30,13.5,9.5" in err
    Image.fromarray(np.zeros((56, 40, 3), np.uint8)).save(folder / "b.png", exif=exif)  # read as 56x40: fits
    big = np.zeros((40, 56), np.float32)
    big[5, 5] = 2.0
    np.save(folder / "b_sparse.npy", big)
    assert main(argv) == 1  # a.png fails alone, b.png is written
    assert "a.png: failed: --intrinsics" in capsys.readouterr().err and (tmp_path / "o" / "b.ply").is_file()
    with monkeypatch.context() as m:  # b.png done and kept: what is left to run (a.png) cannot fit
        _no_pipeline(m)
        assert main([*argv, "--skip-existing"]) == 2
    assert "none of the 1 image(s) in --input-dir has the size" in capsys.readouterr().err
    (folder / "b.png").write_bytes(b"not an image")  # a size no header tells: it may fit, so the run goes on
    assert main([*argv, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "a.png: failed: --intrinsics" in err and "b.png: failed: could not decode image" in err


def test_a_truncated_png_is_said_by_depthkit_alone(tmp_path, capfd):
    """depthkit run on a cut-short image PNG: one error line, depthkit's, with no "libpng error" from OpenCV's decoder
    before it (checked on the process's stderr, where libpng writes)."""
    _write_pair(tmp_path, "a", h=120, w=160)
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) - 12])  # the IEND chunk gone
    capfd.readouterr()
    assert main(_single(tmp_path)) == 2
    err = capfd.readouterr().err
    assert err == (f"depthkit run: error: could not decode image {tmp_path / 'a.png'}: the file is a truncated or "
                   f"damaged PNG ({len(data) - 12} bytes, ending after its IDAT chunk without the IEND chunk that "
                   "closes a PNG). Copy or export it again.\n"), err


def test_depth_scale_with_float_sparse_is_said_not_silently_ignored(tmp_path, capsys):
    _, sparse = _write_pair(tmp_path, "a")
    assert main(_single(tmp_path, "--depth-scale", "100")) == 0
    assert "a_sparse.npy holds floats, read as metres: the depth scale 100" in capsys.readouterr().err
    out = np.load(tmp_path / "o" / "a_depth.npy")
    assert np.array_equal(out[sparse > 0], sparse[sparse > 0])  # metres as given, not divided by 100


def test_resize_sparse_refuses_nan_and_negative_like_without_it(tmp_path, capsys, monkeypatch):
    _no_pipeline(monkeypatch)
    _write_pair(tmp_path, "a", h=20, w=28)
    small = np.zeros((10, 14), np.float32)
    small[3, 4], small[5, 5], small[6, 6] = 2.5, np.nan, -2.0
    np.save(tmp_path / "a_sparse.npy", small)
    assert main(_single(tmp_path, "--resize-sparse")) == 2
    assert "sparse has 1 NaN/inf values" in capsys.readouterr().err
    small[5, 5] = 0
    np.save(tmp_path / "a_sparse.npy", small)
    assert main(_single(tmp_path, "--resize-sparse")) == 2
    assert "sparse has 1 negative values" in capsys.readouterr().err


def test_folder_images_sharing_a_stem_are_refused_before_running(tmp_path, capsys, monkeypatch):
    _no_pipeline(monkeypatch)
    inp = tmp_path / "in"
    inp.mkdir()
    image, _ = _write_pair(inp, "x")
    cv2.imwrite(str(inp / "x.jpg"), image[:, :, ::-1])
    _write_pair(inp, "y")
    assert main(["run", "--input-dir", str(inp), "--out", str(tmp_path / "o"), "--method", "nearest"]) == 2
    err = capsys.readouterr().err
    assert "share a name: x.jpg and x.png" in err and "overwrite each other" in err
    assert not (tmp_path / "o").exists()
    (inp / "x.jpg").rename(inp / "X.jpg")  # letter case aside: one file on macOS and Windows
    assert main(["run", "--input-dir", str(inp), "--out", str(tmp_path / "o"), "--method", "nearest"]) == 2
    assert "share a name: X.jpg and x.png" in capsys.readouterr().err


def test_a_folder_with_an_image_name_is_not_an_image(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    _write_pair(inp, "x")
    (inp / "z.png").mkdir()  # was reported as an image without a sparse file
    assert main(["run", "--input-dir", str(inp), "--out", str(tmp_path / "o"), "--method", "nearest"]) == 0
    assert [p.name for p in (tmp_path / "o").glob("*_depth.npy")] == ["x_depth.npy"]


def test_malformed_yaml_option_is_one_line_error(tmp_path, capsys):
    from depthkit.cli import parse_dataset_options, parse_stage_options

    with pytest.raises(ValueError, match=r"--option 'complete.query_budget=\[1,': the value '\[1,' is not valid YAML"):
        parse_stage_options(["complete.query_budget=[1,"])
    with pytest.raises(ValueError, match=r"--dataset-option 'length=\[1,'.*not valid YAML"):
        parse_dataset_options(["length=[1,"])
    _write_pair(tmp_path, "a")
    assert main(_single(tmp_path, "--option", "sharpen.config={change_range_px: ")) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "Traceback" not in err


def test_out_under_a_file_is_refused_before_running(tmp_path, capsys, monkeypatch):
    _no_pipeline(monkeypatch)
    _write_pair(tmp_path, "a")
    (tmp_path / "notes").write_text("x")
    assert main(_single(tmp_path, out="notes/sub")) == 2
    assert "notes is a file, not a folder" in capsys.readouterr().err


def test_png_scale_checked_before_the_model(tmp_path, capsys, monkeypatch):
    _no_pipeline(monkeypatch)
    _write_pair(tmp_path, "a")
    with pytest.raises(SystemExit):
        main(_single(tmp_path, "--png-scale", "inf"))
    assert "--png-scale must be a finite number > 0" in capsys.readouterr().err
    assert main(_single(tmp_path, "--png-scale", "1e-9")) == 2
    err = capsys.readouterr().err
    assert "30 of 30 valid pixel(s) of sparse a_sparse.npy" in err and "round to 0" in err
    assert not (tmp_path / "o").exists()


def test_too_deep_for_png_suggests_a_png_scale(tmp_path, capsys, monkeypatch):
    _, sparse = _write_pair(tmp_path, "a")
    sparse.flat[np.flatnonzero(sparse)[0]] = 1e5  # one point 100 km away, the rest 0.5-8 m
    np.save(tmp_path / "a_sparse.npy", sparse)
    _no_pipeline(monkeypatch)  # said from the sparse map, before any model runs (the output keeps that point)
    assert main(_single(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "sparse a_sparse.npy up to 100000.0 m does not fit" in err and "Pass --png-scale 0.5" in err
    monkeypatch.undo()
    assert main(_single(tmp_path, "--png-scale", "0.5")) == 0  # the suggestion works
    assert io.png_depth_scale(tmp_path / "o" / "a_depth.png") == 0.5
    err = capsys.readouterr().err  # depth below 1 m cannot be stored at 2 m steps: said, not silent
    assert "a_depth.png: " in err and "below 1 m are stored as 0 (missing)" in err and "no 16-bit scale" in err
    assert np.load(tmp_path / "o" / "a_depth.npy").max() == np.float32(1e5)


def test_bad_stage_option_type_stops_a_folder_run_once(tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    _write_pair(inp, "a", seed=1)
    _write_pair(inp, "b", seed=2)
    assert main(["run", "--input-dir", str(inp), "--out", str(tmp_path / "o"),
                 "--option", "complete.query_budget=abc"]) == 2
    err = capsys.readouterr().err
    assert "query_budget" in err and "failed" not in err and len(err.strip().splitlines()) == 1


def test_depth_with_a_completing_run_is_a_usage_error_before_the_model(tmp_path, capsys, monkeypatch):
    _no_pipeline(monkeypatch)
    _, sparse = _write_pair(tmp_path, "a")
    np.save(tmp_path / "d.npy", np.full(sparse.shape, 3.0, np.float32))
    with pytest.raises(SystemExit):
        main(_single(tmp_path, "--depth", str(tmp_path / "d.npy")))
    assert "--depth is the metric input of --stages sharpen" in capsys.readouterr().err


def test_usage_errors_show_the_verbs_usage(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--image", "a.png", "--sparse", "b.npy", "--out", str(tmp_path), "--ply"])
    err = capsys.readouterr().err
    assert "usage: depthkit run " in err and "(see `depthkit run --help`)" in err and "VERB" not in err
    with pytest.raises(SystemExit):
        main(["eval", "--dataset", "synthetic", "--out", str(tmp_path / "m.json"), "--limit", "0"])
    err = capsys.readouterr().err
    assert "usage: depthkit eval " in err and "(see `depthkit eval --help`)" in err


def test_intrinsics_starting_with_a_minus_sign_are_read_as_the_value(tmp_path, capsys, monkeypatch):
    """``--intrinsics -50,...`` reaches the intrinsics check (argparse alone takes a leading '-' for an option)."""
    _no_pipeline(monkeypatch)
    _write_pair(tmp_path, "a")
    assert main(_single(tmp_path, "--intrinsics", "-50,50,10,10")) == 2
    err = capsys.readouterr().err
    assert "fx, fy > 0; received fx=-50.0" in err and "expected one argument" not in err
    assert main(_single(tmp_path, "--intrinsics=-50,50,10,10")) == 2  # the joined form, as before
    assert "fx, fy > 0; received fx=-50.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --intrinsics last: still argparse's own error
        main(_single(tmp_path) + ["--intrinsics"])
    assert "expected one argument" in capsys.readouterr().err


def test_intrinsics_for_another_image_size_are_refused_with_the_scaled_values(tmp_path, capsys):
    """A JSON intrinsics file with width/height (as camera exports write) for a 56x40 image, given with a 28x20 one:
    refused before any output, naming both sizes and the values scaled to this image; the right size passes, and a
    folder run fails only the image of another size."""
    import json

    _write_pair(tmp_path, "a")
    k = tmp_path / "k.json"
    k.write_text(json.dumps({"fx": 60.0, "fy": 60.0, "cx": 27.5, "cy": 19.5, "width": 56, "height": 40}))
    assert main(_single(tmp_path, "--ply", "--intrinsics", str(k))) == 2
    assert ("are for a 56x40 image (its width and height), but this image is 28x20; give intrinsics for this size — "
            "for the same camera resized, --intrinsics 30,30,13.5,9.5 (not for a crop)") in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    k.write_text(json.dumps({"fx": 30.0, "fy": 30.0, "cx": 13.5, "cy": 9.5, "width": 28, "height": 20}))
    assert main(_single(tmp_path, "--ply", "--intrinsics", str(k), out="o2")) == 0
    assert (tmp_path / "o2" / "a.ply").is_file()
    folder = tmp_path / "frames"
    folder.mkdir()
    _write_pair(folder, "small")
    _write_pair(folder, "big", h=40, w=56)
    capsys.readouterr()
    assert main(["run", "--input-dir", str(folder), "--out", str(tmp_path / "o3"), "--method", "nearest", "--ply",
                 "--intrinsics", str(k)]) == 1
    err = capsys.readouterr().err
    assert "big.png: failed: --intrinsics" in err and "are for a 28x20 image" in err and "small.png" not in err
    assert (tmp_path / "o3" / "small.ply").is_file() and not (tmp_path / "o3" / "big.ply").exists()
    for shape, words in (((28, 20), "rotated by 90 degrees against them"), ((40, 40), "another aspect ratio")):
        k.write_text(json.dumps({"fx": 30.0, "fy": 30.0, "cx": 13.5, "cy": 9.5, "width": 28, "height": 20}))
        _write_pair(tmp_path, "r", h=shape[0], w=shape[1])
        assert main(_single(tmp_path, "--ply", "--intrinsics", str(k), stem="r", out="o5")) == 2
        err = capsys.readouterr().err
        assert words in err and "for the same camera resized" not in err
    for bad in ({"width": 0, "height": 20}, {"width": 28}, {"width": "28", "height": 20}, {"width": 28.5, "height": 20},
                {"width": 1e300, "height": 20}):
        k.write_text(json.dumps({"fx": 30.0, "fy": 30.0, "cx": 13.5, "cy": 9.5, **bad}))
        assert main(_single(tmp_path, "--ply", "--intrinsics", str(k), out="o4")) == 2
        assert "both must be whole numbers of pixels > 0" in capsys.readouterr().err


def test_stages_out_of_order_or_unknown_are_named_before_the_model(tmp_path, capsys, monkeypatch):
    """--stages sharpen,complete is the wrong order, not "sharpen alone"; the Pipeline's own rule says so, before any
    model loads, as for an unknown or repeated stage."""
    _no_pipeline(monkeypatch)
    _write_pair(tmp_path, "a")
    for stages, said in (("sharpen,complete", "must be distinct and in the order complete, sharpen"),
                         ("complete,complete", "must be distinct"), ("complete,paint", "unknown stage 'paint'")):
        with pytest.raises(SystemExit):
            main(_single(tmp_path, "--stages", stages))
        err = capsys.readouterr().err
        assert f"--stages {stages}: " in err and said in err and "alone" not in err


def test_a_folder_in_an_outputs_way_is_named_and_leaves_nothing_behind(tmp_path, capsys):
    """An output name taken by a folder: the image fails with a message that says so (not the OS's rename error),
    and no hidden temporary is left in --out."""
    _write_pair(tmp_path, "a")
    (tmp_path / "o" / "a_depth.npy").mkdir(parents=True)
    assert main(_single(tmp_path, "--overwrite")) == 2
    assert "a folder of that name is in the way" in capsys.readouterr().err
    assert not [p.name for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]


def test_train_overrides_may_follow_resume():
    """`depthkit train R --resume key=value` (overrides after the flag) parses as it reads, not as "unrecognized"."""
    from depthkit.cli import build_parser

    for argv in (["train", "r.yaml", "a.b=1", "--resume", "c.d=2"], ["train", "--resume", "r.yaml", "a.b=1", "c.d=2"],
                 ["train", "r.yaml", "a.b=1", "c.d=2", "--resume"]):
        args = build_parser().parse_args(argv)
        assert (str(args.recipe), args.overrides, args.resume) == ("r.yaml", ["a.b=1", "c.d=2"], True), argv
    assert build_parser().parse_args(["train", "r.yaml", "a.b=1"]).resume is False
    for flag, dest in (("--quiet", "quiet"), ("-q", "quiet"), ("--verbose", "verbose"), ("-v", "verbose")):
        args = build_parser().parse_args(["train", "r.yaml", flag, "a.b=1", "--resume", "c.d=2"])
        assert (args.overrides, args.resume, getattr(args, dest)) == (["a.b=1", "c.d=2"], True, True), flag


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`depthkit ls | head`: the reader leaves; the command stops with the shell's SIGPIPE status (141) and says
    nothing on stderr (no "error: [Errno 32] Broken pipe", no second error from the exit's flush)."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # a reader that has already left: the first flush meets EPIPE
    try:
        res = subprocess.run([sys.executable, "-m", "depthkit", "ls"], stdout=write_end, stderr=subprocess.PIPE,
                             text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        os.close(write_end)
    assert (res.returncode, res.stderr) == (141, "")
