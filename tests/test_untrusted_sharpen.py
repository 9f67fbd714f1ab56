"""A checkpoint's sharpen/ part as untrusted input, cases found in the session-40 review: pickle weights, bad values
named by their file, bounded scheduler sizes."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from depthkit.checkpoints import CheckpointError


@pytest.fixture(scope="module")
def sharpen_source(tmp_path_factory):
    from depthkit.cli import main

    root = tmp_path_factory.mktemp("tiny_sharpen") / "ck"
    assert main(["init-checkpoint", "--tiny", str(root), "--stages", "sharpen"]) == 0
    return root


@pytest.fixture
def sck(sharpen_source, tmp_path):
    return Path(shutil.copytree(sharpen_source, tmp_path / "sck"))


def _load(root):
    from depthkit import Pipeline

    return Pipeline.from_pretrained(root, stages=("sharpen",))


@pytest.mark.parametrize("part", ["unet", "vae"])
def test_pickle_weights_in_a_sharpen_folder_are_refused(sck, part):
    from safetensors.torch import load_file

    folder = sck / "sharpen" / part
    st = folder / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(st)), folder / "diffusion_pytorch_model.bin")  # tensors only: weights_only would take it
    st.unlink()
    with pytest.raises(CheckpointError, match=rf"missing {part}/diffusion_pytorch_model.safetensors \({part}/"
                                              r"diffusion_pytorch_model.bin: PyTorch pickle weights"):
        _load(sck)


def test_pickle_weights_in_a_pass1_unet_are_refused(sck):
    from safetensors.torch import load_file

    part = sck / "sharpen"
    shutil.copytree(part / "unet", part / "lotus_unet")
    meta = json.loads((part / "sharpdepth.json").read_text())
    meta["separate_lotus_unet"] = True
    (part / "sharpdepth.json").write_text(json.dumps(meta))
    _load(sck)  # the safetensors copy loads
    st = part / "lotus_unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(st)), st.with_suffix(".bin"))
    st.unlink()
    with pytest.raises(CheckpointError, match="pass-1 Lotus UNet.*lotus_unet.*does not load"):
        _load(sck)
