import shutil
import subprocess
import sys

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
    rc = main(["run", "--input-dir", str(inp), "--out", str(tmp_path / "out"), "--depth-scale", "1000",
               "--method", "nearest"])
    assert rc == 1
    written = sorted(p.name for p in (tmp_path / "out").glob("*_depth.npy"))
    assert written == ["good1_depth.npy", "good2_depth.npy"]
    err = capsys.readouterr().err
    assert "broken.png" in err and "lonely.png" in err and "2 input(s) failed" in err


def test_run_folder_with_separate_sparse_dir(tmp_path):
    inp, sp = tmp_path / "rgb", tmp_path / "lidar"
    inp.mkdir()
    sp.mkdir()
    _write_pair(inp, "f0")
    shutil.move(inp / "f0_sparse.npy", sp / "f0.npy")
    assert main(["run", "--input-dir", str(inp), "--sparse-dir", str(sp), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "f0_depth.npy").is_file()


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


def test_console_script_help_is_fast_and_real_run_works(tmp_path):
    exe = shutil.which("depthkit") or str(__import__("pathlib").Path(sys.executable).with_name("depthkit"))
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "run" in res.stdout
    # --help must not import torch/transformers; checked structurally rather than by timing
    probe = subprocess.run([sys.executable, "-c", "import sys, depthkit.cli as c; c.build_parser(); "
                            "print(sorted(m for m in ('torch','transformers','diffusers','cv2') if m in sys.modules))"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    _write_pair(tmp_path, "s")
    res = subprocess.run([exe, "run", "--image", str(tmp_path / "s.png"), "--sparse", str(tmp_path / "s_sparse.npy"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "s_depth.png").is_file()


def test_stage_options_from_the_command_line(tmp_path, capsys):
    from depthkit.cli import parse_stage_options

    assert parse_stage_options(["complete.query_budget=2048", "complete.fusion=gate", "sharpen.x=0.5"]) == {
        "complete": {"query_budget": 2048, "fusion": "gate"}, "sharpen": {"x": 0.5}}
    with pytest.raises(ValueError, match="STAGE.KEY=VALUE"):
        parse_stage_options(["query_budget=3"])
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
