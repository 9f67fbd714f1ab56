"""A checkpoint's config checked against its weight files before the model is built (depthkit/weight_budget.py)."""

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from depthkit.checkpoints import CheckpointError


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    from depthkit.cli import main

    root = tmp_path_factory.mktemp("tiny_budget") / "ck"
    assert main(["init-checkpoint", "--tiny", str(root)]) == 0
    return root


@pytest.fixture
def ck(tiny_source, tmp_path):
    return Path(shutil.copytree(tiny_source, tmp_path / "ck"))


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _load(root, stage):
    from depthkit import Pipeline

    return Pipeline.from_pretrained(root, stages=(stage,))


@pytest.mark.parametrize("change", [
    lambda c: c["text_config"].update(vocab_size=4_000_000),  # 4.2 GB allocated before the report refused it
    lambda c: c["text_config"].update(num_hidden_layers=5_000, layer_types=["full_attention"] * 5_000),
])
def test_a_base_model_config_asking_for_more_than_its_weights_is_refused_before_it_is_built(ck, change):
    """Fails if the check is not made: the loader then builds the model first (gigabytes) and its own report gives
    another message (mismatched or missing keys)."""
    _edit(ck / "complete" / "config.json", change)
    with pytest.raises(CheckpointError, match=r"config.json describes a Qwen2.5-VL base model of [\d,]+ parameters, "
                                              r"but its weights \(model.safetensors\) hold only [\d,]+ values.*Refused "
                                              r"before the model is built"):
        _load(ck, "complete")


@pytest.mark.parametrize("part, change", [
    ("unet", lambda c: c.update(block_out_channels=[512, 1024])),
    ("vae", lambda c: c.update(layers_per_block=400)),
])
def test_a_diffusers_config_asking_for_more_than_its_weights_is_refused_before_it_is_built(ck, part, change):
    _edit(ck / "sharpen" / part / "config.json", change)
    with pytest.raises(CheckpointError, match=r"describes a (UNet2DConditionModel|AutoencoderKL) of [\d,]+ "
                                              r"parameters, but its weights \(diffusion_pytorch_model.safetensors\)"):
        _load(ck, "sharpen")


def test_the_count_is_exact_for_fitting_models_sharded_and_tied(tmp_path):
    """The stored values, read from the headers, equal an independent count of the saved state (a sharded save and
    tied embeddings included), and equal the meta-built model's parameters: the check passes where the weights fit
    (a refusal here would refuse a good checkpoint), and refuses from just over SLACK times the stored values."""
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from depthkit.weight_budget import SLACK, check_config_fits_weights, stored_values, weight_files

    config = Qwen2_5_VLConfig.from_pretrained(str(tiny_checkpoint_complete()))
    config.tie_word_embeddings = True
    config.text_config.tie_word_embeddings = True
    model = Qwen2_5_VLForConditionalGeneration._from_config(config)
    model.save_pretrained(str(tmp_path), max_shard_size="1MB")
    files = weight_files(tmp_path, "model")
    assert len(files) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    by_loading = sum(t.numel() for f in files for t in load_file(str(f)).values())
    assert stored_values(files) == by_loading == sum(p.numel() for p in model.parameters())
    check_config_fits_weights(tmp_path, "model", lambda: Qwen2_5_VLForConditionalGeneration._from_config(config),
                              "a model")
    bigger = copy.deepcopy(config)  # a config asking for just over SLACK times the stored values
    per_token = config.text_config.hidden_size
    bigger.text_config.vocab_size += math.ceil((SLACK - 1) * by_loading / per_token) + 1
    with pytest.raises(CheckpointError, match="describes a model of"):
        check_config_fits_weights(tmp_path, "model",
                                  lambda: Qwen2_5_VLForConditionalGeneration._from_config(bigger), "a model")
    bigger.text_config.vocab_size -= 2  # just under: left to the loading report, which names the keys
    check_config_fits_weights(tmp_path, "model", lambda: Qwen2_5_VLForConditionalGeneration._from_config(bigger),
                              "a model")
    assert torch.device("meta") != torch.empty(0).device  # the default device was not left on meta


def tiny_checkpoint_complete() -> Path:
    return Path(__file__).resolve().parents[1] / "checkpoints" / "default" / "complete"
