"""The embedded default (``Pipeline()``, ``depthkit run`` without --checkpoint) loads through exactly the checks a
checkpoint given by path gets (review of session 40)."""

import os
import shutil

import numpy as np
import pytest

from depthkit.checkpoints import CheckpointError


@pytest.fixture
def hostile_default(tmp_path, monkeypatch):
    """``$DEPTHKIT_CHECKPOINTS/default``: a tiny checkpoint whose sharpen/vae is a symlink out of it."""
    from depthkit.cli import main

    root = tmp_path / "embedded" / "default"
    assert main(["init-checkpoint", "--tiny", str(root)]) == 0
    outside = tmp_path / "outside_vae"
    shutil.move(str(root / "sharpen" / "vae"), outside)
    os.symlink(outside, root / "sharpen" / "vae")
    monkeypatch.setenv("DEPTHKIT_CHECKPOINTS", str(root.parent))
    return root


def test_the_default_is_checked_like_any_checkpoint(hostile_default, tmp_path, capsys):
    from depthkit import Pipeline
    from depthkit.cli import main

    with pytest.raises(CheckpointError, match="symlink"):
        Pipeline(stages=("sharpen",), checkpoint=str(hostile_default))
    with pytest.raises(CheckpointError, match="symlink"):
        Pipeline(stages=("sharpen",))
    rng = np.random.default_rng(0)
    np.save(tmp_path / "s.npy", np.where(rng.random((16, 16)) < 0.2, 2.0, 0).astype(np.float32))
    from PIL import Image

    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(tmp_path / "i.png")
    code = main(["run", "--stages", "complete,sharpen", "--image", str(tmp_path / "i.png"), "--sparse",
                 str(tmp_path / "s.npy"), "--out", str(tmp_path / "out")])
    assert code != 0 and "symlink" in capsys.readouterr().err


def test_a_default_that_lost_its_manifest_is_an_error_not_the_classical_fill(tmp_path, monkeypatch):
    from depthkit import Pipeline
    from depthkit.cli import main

    root = tmp_path / "embedded" / "default"
    assert main(["init-checkpoint", "--tiny", str(root), "--stages", "complete"]) == 0
    (root / "depthkit.json").unlink()
    monkeypatch.setenv("DEPTHKIT_CHECKPOINTS", str(root.parent))
    with pytest.raises(CheckpointError, match=r"depthkit.json is missing \(found: complete"):
        Pipeline()
    (tmp_path / "none").mkdir()
    monkeypatch.setenv("DEPTHKIT_CHECKPOINTS", str(tmp_path / "none"))  # no default folder at all: classical
    assert Pipeline().stage_names == ("complete",)
    for missing in (tmp_path / "no_such_folder", tmp_path / "none" / "file"):  # a typo or an unmounted volume
        if missing.name == "file":
            missing.write_text("")
        monkeypatch.setenv("DEPTHKIT_CHECKPOINTS", str(missing))
        with pytest.raises(CheckpointError, match=r"DEPTHKIT_CHECKPOINTS=.* is not a folder.*unset it"):
            Pipeline()
