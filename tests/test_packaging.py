import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_recipes_and_example(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("depthkit", "recipes", "examples", "checkpoints"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path / "whl"), str(src)], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    names = set(zipfile.ZipFile(next((tmp_path / "whl").glob("*.whl"))).namelist())
    for shipped in ROOT.joinpath("recipes").rglob("*.yaml"):
        assert f"depthkit/{shipped.relative_to(ROOT)}" in names
    assert {"depthkit/examples/room_rgb.png", "depthkit/examples/room_sparse.npy"} <= names
    for shipped in ROOT.joinpath("checkpoints", "default").rglob("*"):  # the embedded default, every file
        if shipped.is_file():
            assert f"depthkit/{shipped.relative_to(ROOT)}" in names
