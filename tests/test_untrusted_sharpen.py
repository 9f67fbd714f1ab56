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


def _edit(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "config":
            data["config"].update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, file, said", [
    (lambda s: _edit(s / "lotus.json", mode="fancy"), "lotus.json", "mode must be one of"),
    (lambda s: _edit(s / "lotus.json", timestep=5000), "lotus.json", r"timestep must be in \[0, 999\]"),
    (lambda s: _edit(s / "scheduler" / "scheduler_config.json", num_train_timesteps=100), "scheduler_config.json",
     r"timestep must be in \[0, 99\]"),
    (lambda s: __import__("safetensors.torch").torch.save_file(
        {"empty_prompt_embeds": torch.zeros(1, 2, 7)}, str(s / "empty_prompt_embeds.safetensors")),
     "empty_prompt_embeds.safetensors", "empty_prompt_embeds must be 1 x L x 32"),
    (lambda s: _edit(s / "sharpdepth.json", config={"gate_noise": "x"}), "sharpdepth.json", "gate_noise must be one"),
])
def test_a_bad_stored_value_is_a_checkpoint_error_naming_its_file(sck, edit, file, said):
    """Not a ValueError blamed on the manifest's stage options (Pipeline adds that to a plain ValueError)."""
    edit(sck / "sharpen")
    with pytest.raises(CheckpointError, match=said) as err:
        _load(sck)
    assert file in str(err.value) and "come from" not in str(err.value)


@pytest.mark.parametrize("steps, said", [(10**9, "num_train_timesteps=1000000000 is outside the allowed range"),
                                         (0, "num_train_timesteps=0 is outside"), ("1000", "num_train_timesteps='1000'")])
def test_a_scheduler_length_outside_its_bound_is_refused_before_it_is_allocated(sck, steps, said):
    """A 600-byte scheduler_config.json asking for 10^9 steps had the scheduler allocate them (the OOM killer took the
    process at 24 GB); the length is bounded (BOUNDS['num_train_timesteps']) before the scheduler is built. Fails if
    the bound is not checked (10^9: allocated; 0 and a string: diffusers' own error, or none)."""
    _edit(sck / "sharpen" / "scheduler" / "scheduler_config.json", num_train_timesteps=steps)
    with pytest.raises(CheckpointError, match=said) as err:
        _load(sck)
    assert "scheduler_config.json" in str(err.value)


def test_an_empty_prompt_embedding_without_tokens_is_refused(sck):
    """A 1 x 0 x D embedding gave cross-attention over no tokens: finite output of the wrong model."""
    from safetensors.torch import save_file

    save_file({"empty_prompt_embeds": torch.zeros(1, 0, 32)}, str(sck / "sharpen" / "empty_prompt_embeds.safetensors"))
    with pytest.raises(CheckpointError, match=r"L >= 1 tokens.*received \(1, 0, 32\)"):
        _load(sck)
