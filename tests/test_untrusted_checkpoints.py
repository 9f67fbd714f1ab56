"""A checkpoint is untrusted input (issue 14, items 1-5): no code of its own runs, wrong weights do not load
silently, malformed files give one error naming the file, paths stay inside, sizes are bounded.

Each test builds one hostile variant of a tiny checkpoint (copied from one written once per module)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from depthkit.checkpoints import CheckpointError, CheckpointRef, check_finite_output, load_manifest
from depthkit.complete.checkpoint import load_complete


def _write_tiny(tmp_path_factory, stage: str):
    """A random-weight tiny checkpoint with only ``stage``, written once per module (tests edit copies of it)."""
    from depthkit.cli import main

    root = tmp_path_factory.mktemp(f"tiny_{stage}") / "ck"
    assert main(["init-checkpoint", "--tiny", str(root), "--stages", stage]) == 0
    return root


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    return _write_tiny(tmp_path_factory, "complete")


@pytest.fixture
def ck(tiny_source, tmp_path):
    return Path(shutil.copytree(tiny_source, tmp_path / "ck"))


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------- 1. no code of the checkpoint


EVIL = '''
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import PreTrainedTokenizerFast
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
'''


def test_auto_map_is_refused_and_no_prompt_or_code_runs(ck, tmp_path, monkeypatch):
    from depthkit.complete.processor import load_processor

    part = ck / "complete"
    marker = tmp_path / "code_ran"
    (part / "tokenization_evil.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((part / "tokenizer_config.json").read_text())
    config.pop("tokenizer_class", None)  # with no class of its own (and no config.json), transformers would ask
    config["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    (part / "tokenizer_config.json").write_text(json.dumps(config))
    asked = []
    monkeypatch.setattr("builtins.input", lambda *a: asked.append(a) or "y")  # a user (or a pipe) answering "y"
    with pytest.raises(CheckpointError, match="auto_map"):
        load_complete(part)
    with pytest.raises(CheckpointError, match="auto_map"):
        CheckpointRef.open(ck)
    (part / "config.json").unlink()
    with pytest.raises(ValueError, match="custom code"):  # the processor loader alone (no tree check)
        load_processor(part)
    assert asked == [] and not marker.exists()  # transformers neither asked nor imported the code


# ------------------------------------------------------------------------------------ 2. wrong weights are errors


def test_missing_weights_are_an_error_naming_the_file_and_keys(ck, tiny_source):
    from safetensors.torch import load_file, save_file

    part = ck / "complete"
    save_file({}, str(part / "model.safetensors"), metadata={"format": "pt"})  # valid file, no tensors
    with pytest.raises(CheckpointError, match=r"weights \(model.safetensors\) hold only 0 values") as info:
        load_complete(part)  # refused before the model is built (depthkit/weight_budget.py)
    assert str(part) in str(info.value)
    tensors = load_file(str(tiny_source / "complete" / "model.safetensors"))
    dropped = sorted(k for k in tensors if k.endswith("layers.0.mlp.up_proj.weight"))[:1] + sorted(
        k for k in tensors if k.endswith("layers.1.mlp.up_proj.weight"))[:1]
    save_file({k: v for k, v in tensors.items() if k not in dropped}, str(part / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"2 missing keys \(.*model\..*up_proj") as info:
        load_complete(part)  # a few keys short: the loading report names them
    assert str(part) in str(info.value)
    tensors["model.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(part / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \(model\..*extra\.weight\)"):
        load_complete(part)


def test_a_wrong_tensor_shape_is_one_error_naming_the_file(ck, tiny_source):
    from safetensors.torch import load_file, save_file

    part = ck / "complete"
    tensors = load_file(str(part / "model.safetensors"))
    name = sorted(k for k in tensors if k.endswith("embed_tokens.weight"))[0]
    tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] + 3)
    save_file(tensors, str(part / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=str(part)):
        load_complete(part)
    shutil.copy(tiny_source / "complete" / "model.safetensors", part / "model.safetensors")
    depth = load_file(str(part / "depth_modules.safetensors"))
    key = sorted(k for k in depth if depth[k].dim() >= 1)[0]
    depth[key] = torch.zeros(*depth[key].shape[:-1], depth[key].shape[-1] + 1)
    save_file(depth, str(part / "depth_modules.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="depth modules .* does not load"):
        load_complete(part)


def test_a_wrong_shaped_base_model_tensor_is_named_with_its_key(ck):
    from safetensors.torch import load_file, save_file

    path = ck / "complete" / "model.safetensors"
    tensors = load_file(str(path))
    key = sorted(k for k in tensors if tensors[k].ndim == 2)[0]
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"do not match the model: 1 mismatched keys \({re.escape(key)}"):
        load_complete(ck / "complete")


def test_non_finite_weights_are_refused_at_load(ck):
    from safetensors.torch import load_file, save_file

    part = ck / "complete"
    for name in ("residual_head.safetensors", "depth_modules.safetensors", "model.safetensors"):
        good = (part / name).read_bytes()
        tensors = load_file(str(part / name))
        key = sorted(k for k in tensors if tensors[k].is_floating_point())[0]
        tensors[key] = torch.full_like(tensors[key], float("nan"))
        save_file(tensors, str(part / name), metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match="non-finite"):
            load_complete(part)
        (part / name).write_bytes(good)


def test_a_non_finite_stage_output_is_an_error_naming_the_stage(monkeypatch):
    from depthkit import Pipeline
    from depthkit.outputs import StageResult
    from depthkit.stages import ClassicalCompleteStage

    check_finite_output("complete", np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="the sharpen stage produced 1 non-finite"):
        check_finite_output("sharpen", np.array([[1.0, np.nan]], np.float32))

    def broken(self, image, sparse, depth=None):  # as a stage with NaN weights: 99 % NaN
        out = np.full(sparse.shape, np.nan, np.float32)
        out[0, 0] = 1.0
        return StageResult(depth=out)

    monkeypatch.setattr(ClassicalCompleteStage, "run", broken)
    pipe = Pipeline(stages=("complete",), method="nearest")
    sparse = np.zeros((20, 30), np.float32)
    sparse[5, 5] = 3.0
    with pytest.raises(ValueError, match="complete stage produced 599 non-finite"):
        pipe(np.zeros((20, 30, 3), np.uint8), sparse)


def test_a_library_load_error_keeps_every_line_in_one():
    """torch names the keys on the lines after "Error(s) in loading state_dict for ...:": they stay in the message
    (joined, cut at 500 characters)."""
    from depthkit.checkpoints import loading

    with pytest.raises(CheckpointError, match=r"\(RuntimeError: Error\(s\) in loading state_dict for Head: "
                                              r"Missing key\(s\) in state_dict: \"fc.weight\"\.\)\. Re-export"):
        with loading("/ck/complete", "the residual head"):
            raise RuntimeError('Error(s) in loading state_dict for Head:\n\tMissing key(s) in state_dict: "fc.weight".')
    with pytest.raises(CheckpointError) as err:
        with loading("/ck/complete", "the residual head"):
            raise RuntimeError("x" * 600)
    assert f"{'x' * 500} ...)" in str(err.value) and "x" * 501 not in str(err.value)


# ------------------------------------------------------------------------ 3. malformed files: one error, named file


@pytest.mark.parametrize("version", [None, [1], 1e400, "1", True, 0])
def test_bad_format_versions_are_named_errors(ck, version):
    text = (ck / "depthkit.json").read_text()
    data = json.loads(text)
    data["format_version"] = version
    raw = json.dumps(data).replace("Infinity", "1e400")  # json.dumps writes inf as Infinity; the attack used 1e400
    (ck / "depthkit.json").write_text(raw)
    with pytest.raises(CheckpointError, match="depthkit.json"):
        load_manifest(ck)


def test_deeply_nested_json_is_a_named_error(ck):
    (ck / "depthkit.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_manifest(ck)
    (ck / "complete" / "complete.json").write_text('{"note": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(CheckpointError, match="complete.json"):
        load_complete(ck / "complete")


@pytest.mark.parametrize("changes, match", [
    ({"min_pixels": "x"}, "min_pixels"), ({"max_pixels": 1e400}, "overflows"), ({"note": 5}, "note must be text"),
    ({"format_version": None}, "format_version"), ({"weights": "x"}, "weights"),
])
def test_wrong_types_in_complete_json_are_named_errors(ck, changes, match):
    path = ck / "complete" / "complete.json"
    data = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(data).replace("Infinity", "1e400"))
    with pytest.raises(CheckpointError, match=match):
        load_complete(ck / "complete")


@pytest.mark.parametrize("options, match", [
    ({"attn_implementation": "kernels-community/flash-attn"}, "attn_implementation"),
    ({"quantization_config": {"load_in_4bit": True}}, "quantization_config"),
    ({"trust_remote_code": True}, "trust_remote_code"),
])
def test_manifest_options_that_load_code_are_refused(ck, options, match):
    data = json.loads((ck / "depthkit.json").read_text())
    data["stages"]["complete"].update(options)
    (ck / "depthkit.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=match):
        load_manifest(ck)


def test_flash_attention_without_its_package_says_to_install_it_or_use_sdpa(monkeypatch):
    import importlib.util

    from depthkit.checkpoints import check_attn_implementation

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    with pytest.raises(CheckpointError, match="needs the flash-attn package .* or use sdpa"):
        check_attn_implementation("flash_attention_2", "opts")
    assert check_attn_implementation("sdpa", "opts") == "sdpa"


def test_quantization_config_in_the_model_config_is_refused(ck):
    _edit_json(ck / "complete" / "config.json", quantization_config={"quant_method": "bitsandbytes"})
    with pytest.raises(CheckpointError, match="quantization_config"):
        load_complete(ck / "complete")


def test_truncated_config_is_not_reported_as_a_hub_cache_miss(ck):
    path = ck / "complete" / "config.json"
    path.write_text(path.read_text()[:50])
    with pytest.raises(CheckpointError) as info:
        load_complete(ck / "complete")
    assert "config.json" in str(info.value) and "HF_HUB_OFFLINE" not in str(info.value)


def test_the_cli_turns_a_checkpoint_error_into_one_message(ck, tmp_path, capsys):
    from PIL import Image

    from depthkit.cli import main

    _edit_json(ck / "depthkit.json", format_version=None)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "im.png")
    np.save(tmp_path / "sp.npy", np.full((16, 16), 2.0, np.float32))
    code = main(["run", "--image", str(tmp_path / "im.png"), "--sparse", str(tmp_path / "sp.npy"),
                 "--out", str(tmp_path / "out"), "--checkpoint", str(ck)])
    err = capsys.readouterr().err
    assert code != 0 and "format_version" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ 4. paths stay inside


def test_an_adapter_base_that_looks_like_a_hub_id_is_a_path_inside(ck, tmp_path, monkeypatch):
    outside = tmp_path / "outside_ck" / "complete"
    shutil.copytree(ck / "complete", outside)
    monkeypatch.chdir(tmp_path)  # "outside_ck/complete" exists relative to the current directory
    path = ck / "complete" / "complete.json"
    data = json.loads(path.read_text())
    data["weights"] = {"kind": "adapter", "base_model": "outside_ck/complete", "adapter": "adapter"}
    path.write_text(json.dumps(data))
    (ck / "complete" / "adapter").mkdir()
    shutil.copy(outside / "config.json", ck / "complete" / "adapter" / "adapter_config.json")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(ck / "complete" / "adapter" / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match="not a folder inside the checkpoint.*hub:owner/name"):
        load_complete(ck / "complete")
    data["weights"]["base_model"] = "../../outside_ck/complete"
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="outside the checkpoint"):
        load_complete(ck / "complete")


@pytest.mark.parametrize("target", ["/etc/passwd", "OUTSIDE"])
def test_symlinks_out_of_the_checkpoint_are_refused(ck, tmp_path, target):
    if target == "OUTSIDE":
        target = tmp_path / "elsewhere.json"
        target.write_text("{}")
    (ck / "complete" / "tokenizer_config.json").unlink()
    (ck / "complete" / "tokenizer_config.json").symlink_to(target)
    with pytest.raises(CheckpointError, match="symlink"):
        CheckpointRef.open(ck)
    with pytest.raises(CheckpointError, match="symlink"):
        load_complete(ck / "complete")


def test_symlinks_inside_the_checkpoint_are_allowed(ck):
    (ck / "complete" / "alias.json").symlink_to(ck / "complete" / "complete.json")
    CheckpointRef.open(ck)


# --------------------------------------------------------------------------------------- 5. sizes are bounded


@pytest.mark.parametrize("file, change, match", [
    ("preprocessor_config.json", {"size": {"shortest_edge": 784, "longest_edge": 8_000_000_000}}, "longest_edge"),
    ("preprocessor_config.json", {"max_pixels": 8_000_000_000}, "max_pixels"),
    ("preprocessor_config.json", {"patch_size": 0}, "patch_size"),
    ("complete.json", {"max_pixels": 60000 * 60000}, "max_pixels"),
])
def test_sizes_outside_their_range_are_refused_before_loading(ck, file, change, match):
    _edit_json(ck / "complete" / file, **change)
    with pytest.raises(CheckpointError, match=f"{match}.*outside the allowed range"):
        load_complete(ck / "complete")


def test_sdim_channels_are_bounded(ck):
    path = ck / "complete" / "sdim_config.json"
    data = json.loads(path.read_text())
    data["sdim_config"]["channels"] = 10_000_000
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="channels=10000000 is outside the allowed range"):
        load_complete(ck / "complete")


# ------------------------------------------------------------------------------- the sharpen part (items 3 and 5)


@pytest.fixture(scope="module")
def sharpen_source(tmp_path_factory):
    return _write_tiny(tmp_path_factory, "sharpen")


@pytest.fixture
def sck(sharpen_source, tmp_path):
    return Path(shutil.copytree(sharpen_source, tmp_path / "sck"))


def _sharpen_pipeline(root):
    from depthkit import Pipeline

    return Pipeline.from_pretrained(root, stages=("sharpen",))


def test_non_finite_sharpen_weights_are_refused_at_load_naming_the_file(sck):
    """Not only when the sharpener runs (LiDAR frames skip it, so bad weights would go unnoticed there)."""
    from safetensors.torch import load_file, save_file

    from depthkit.sharpen.model import SharpDepth

    root = sck / "sharpen"
    for name in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "empty_prompt_embeds.safetensors"):
        good = (root / name).read_bytes()
        tensors = load_file(str(root / name))
        key = sorted(k for k in tensors if tensors[k].is_floating_point())[-1]
        tensors[key] = torch.full_like(tensors[key], float("inf"))
        save_file(tensors, str(root / name))
        part = name.split("/")[0]
        with pytest.raises(CheckpointError, match=rf"in {re.escape(str(root / part))} hold non-finite values"):
            SharpDepth.from_pretrained(root)
        (root / name).write_bytes(good)
    SharpDepth.from_pretrained(root)  # intact again


def test_malformed_sharpen_json_is_one_error_naming_the_folder(sck):
    _edit_json(sck / "sharpen" / "sharpdepth.json", config="x")
    with pytest.raises(ValueError, match="sharp"):  # CheckpointError or the loader's own ValueError: one message
        _sharpen_pipeline(sck)


def test_half_the_unet_tensors_missing_is_a_named_error(sck):
    from safetensors.torch import load_file, save_file

    path = sck / "sharpen" / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(path))
    keep = sorted(tensors)[: len(tensors) // 2]
    save_file({k: tensors[k] for k in keep}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="sharpen"):
        _sharpen_pipeline(sck)


def test_unet_weights_its_config_does_not_use_are_refused(sck):
    """A UNet config without the mid block its weights hold: diffusers drops those tensors with a log line and the
    stage would run on other weights than those stored; the loading report makes it one error naming the keys."""
    _edit_json(sck / "sharpen" / "unet" / "config.json", mid_block_type=None)
    with pytest.raises(CheckpointError, match=r"UNet weights in .*sharpen/unet do not match the model: \d+ "
                                              r"unexpected keys \(mid_block\."):
        _sharpen_pipeline(sck)


@pytest.mark.parametrize("folder, key", [("unet", "conv_in.bias"), ("vae", "decoder.conv_out.bias"),
                                         ("lotus_unet", "conv_in.bias")])
def test_one_missing_sharpen_tensor_is_named(sck, folder, key):
    """One tensor missing from the UNet, the VAE or a separate pass-1 UNet: an error naming it (diffusers would leave
    it randomly initialised on the meta device), for the pass-1 UNet too."""
    from safetensors.torch import load_file, save_file

    part = sck / "sharpen"
    if folder == "lotus_unet":
        shutil.copytree(part / "unet", part / folder)
        _edit_json(part / "sharpdepth.json", separate_lotus_unet=True)
    path = part / folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(path))
    del tensors[key]
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"{folder} do not match the model: 1 missing keys \\({key}\\)"):
        _sharpen_pipeline(sck)


def test_sharpen_processing_resolution_is_bounded(sck):
    _edit_json(sck / "depthkit.json", stages={"sharpen": {"processing_resolution": 60000}})
    with pytest.raises(CheckpointError, match="processing_resolution=60000 is outside the allowed range"):
        _sharpen_pipeline(sck)


def test_the_sharpen_stage_works_at_a_capped_resolution():
    from types import SimpleNamespace

    from depthkit.checkpoints import MAX_WORKING_SIDE, working_side
    from depthkit.sharpen.stage import SharpenStage

    assert working_side(None, (6000, 8000)) == MAX_WORKING_SIDE and working_side(None, (60, 80)) is None
    assert working_side(768, (6000, 8000)) == 768
    seen = []

    def sharpen_checked(image, depth, sparse, processing_resolution):
        seen.append(processing_resolution)
        z = np.zeros(depth.shape, np.float32)
        return SimpleNamespace(depth=z, discrepancy=z, lotus=z)

    model = SimpleNamespace(model=SimpleNamespace(default_processing_resolution=None), sharpen_checked=sharpen_checked)
    big = np.zeros((MAX_WORKING_SIDE + 1, 4), np.float32)
    SharpenStage(model).run(np.zeros((*big.shape, 3), np.uint8), None, big)
    SharpenStage(model).run(np.zeros((8, 4, 3), np.uint8), None, np.ones((8, 4), np.float32))
    SharpenStage(model, processing_resolution=64).run(np.zeros((*big.shape, 3), np.uint8), None, big)
    assert seen == [MAX_WORKING_SIDE, None, 64]


@pytest.mark.parametrize("file, edit, message", [
    ("sharpdepth.json", lambda d: d["config"].update(gate_prob="high"), "gate_prob must be float"),
    ("sharpdepth.json", lambda d: d["config"].update(gating=1), "gating must be bool"),
    ("sharpdepth.json", lambda d: d.update(config="x"), "expected a JSON object"),
    ("sharpdepth.json", lambda d: d["config"].update(typo=1), "unknown SharpDepthConfig key 'typo'"),
    ("lotus.json", lambda d: d.update(timestep="999"), "timestep must be int"),
    ("lotus.json", lambda d: d.update(default_processing_resolution=60000), "outside the allowed range"),
    ("lotus.json", lambda d: d.update(format_version=0), "format_version must be a positive integer"),
    ("sharpdepth.json", lambda d: d.update(format_version=2), "format_version 2, newer than"),
    ("sharpdepth.json", lambda d: d.update(format="depthkit-lotus"), "not a depthkit-sharpdepth settings file"),
    ("sharpdepth.json", lambda d: d.update(gate_prob=0.5), r"unknown key\(s\) \['gate_prob'\]"),
    ("sharpdepth.json", lambda d: d.update(separate_lotus_unet="no"), "separate_lotus_unet must be true or false"),
])
def test_sharpen_json_is_read_against_typed_schemas(tmp_path, file, edit, message):
    """sharpdepth.json and lotus.json are checked field by field when read: a wrong type or an unknown key is one
    CheckpointError naming the file, never a traceback from deep inside the model."""
    import json

    from depthkit.checkpoints import CheckpointError
    from depthkit.sharpen.model import SharpDepth
    from depthkit.sharpen.tiny import build_tiny_lotus

    part = tmp_path / "sharpen"
    SharpDepth(build_tiny_lotus(seed=0)).save_pretrained(part)
    data = json.loads((part / file).read_text())
    if file == "sharpdepth.json":
        data.setdefault("config", {})
    edit(data)
    (part / file).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message) as exc:
        SharpDepth.from_pretrained(part)
    assert file in str(exc.value)


def test_a_separate_pass1_unet_named_but_missing_is_refused(tmp_path):
    """sharpdepth.json says pass 1 runs its own Lotus UNet but lotus_unet/ is gone (a partial copy): an error naming
    the folder, not the sharpener silently running both passes."""
    from depthkit.sharpen.model import SharpDepth
    from depthkit.sharpen.tiny import build_tiny_lotus

    part = tmp_path / "sharpen"
    SharpDepth(build_tiny_lotus(seed=0), lotus_unet=build_tiny_lotus(seed=1).unet).save_pretrained(part)
    assert SharpDepth.from_pretrained(part).lotus_unet is not None
    shutil.rmtree(part / "lotus_unet")
    with pytest.raises(CheckpointError, match=r"separate_lotus_unet: true\), but .*lotus_unet/config.json is missing"):
        SharpDepth.from_pretrained(part)


def test_a_sharpener_that_lost_a_settings_file_is_refused(tmp_path):
    """A sharpener folder is marked as one in its lotus.json ("sharpener": true), so a copy that lost sharpdepth.json
    is refused instead of loading as a bare Lotus-G with the default SharpDepthConfig (other outputs than those
    measured); one that lost lotus.json is refused too (mode, normalisation and resolution would be guessed). A bare
    Lotus folder has no mark and still loads as a sharpener that starts as Lotus, and so does a folder whose owner set
    the mark to false on purpose, as the message says."""
    from depthkit.sharpen.lotus import LotusModel
    from depthkit.sharpen.model import SharpDepth
    from depthkit.sharpen.tiny import build_tiny_lotus

    part = tmp_path / "sharpen"
    SharpDepth(build_tiny_lotus(seed=0)).save_pretrained(part)
    assert json.loads((part / "lotus.json").read_text())["sharpener"] is True
    lost_sharpdepth = Path(shutil.copytree(part, tmp_path / "no_sharpdepth"))
    (lost_sharpdepth / "sharpdepth.json").unlink()
    with pytest.raises(CheckpointError, match=r"says the folder is a SharpDepth sharpener .*sharpdepth.json is "
                                              r"missing") as exc:
        SharpDepth.from_pretrained(lost_sharpdepth)
    assert str(lost_sharpdepth) in str(exc.value)
    lost_lotus = Path(shutil.copytree(part, tmp_path / "no_lotus"))
    (lost_lotus / "lotus.json").unlink()
    with pytest.raises(CheckpointError, match=r"has sharpdepth.json but no lotus.json"):
        SharpDepth.from_pretrained(lost_lotus)
    _edit_json(lost_sharpdepth / "lotus.json", sharpener=False)  # the owner's choice: use the UNet as bare Lotus
    assert SharpDepth.from_pretrained(lost_sharpdepth).config == SharpDepth(build_tiny_lotus(seed=0)).config
    bare = tmp_path / "bare"
    build_tiny_lotus(seed=0).save_pretrained(bare)
    assert "sharpener" not in json.loads((bare / "lotus.json").read_text())
    assert SharpDepth.from_pretrained(bare).lotus_unet is None
    assert LotusModel.from_pretrained(part).mode == "generative"  # the sharpener's UNet still loads as a Lotus


def test_the_shipped_sharpener_is_marked_and_refused_without_its_settings(tmp_path):
    """The embedded default's sharpen/ carries the mark, so a copy of the default that lost sharpdepth.json fails when
    the Pipeline loads it (naming the file) instead of sharpening with other settings than those measured."""
    from depthkit.checkpoints import default_checkpoint
    from depthkit.pipeline import Pipeline

    shipped = default_checkpoint()
    assert json.loads((shipped / "sharpen" / "lotus.json").read_text())["sharpener"] is True
    copy = Path(shutil.copytree(shipped, tmp_path / "default"))
    (copy / "sharpen" / "sharpdepth.json").unlink()
    with pytest.raises(CheckpointError, match=r"sharpdepth.json is missing"):
        Pipeline(checkpoint=copy, stages=("sharpen",))


def test_a_pass1_unet_the_manifest_does_not_name_is_ignored_with_a_warning(tmp_path):
    """A lotus_unet/ folder beside a sharpdepth.json without ``separate_lotus_unet: true`` (left by an earlier save
    into the same folder): both passes run the sharpener's UNet, as the json says, and a warning names the folder —
    the stale UNet does not silently run pass 1."""
    from depthkit.sharpen.model import SharpDepth
    from depthkit.sharpen.tiny import build_tiny_lotus

    part = tmp_path / "sharpen"
    SharpDepth(build_tiny_lotus(seed=0), lotus_unet=build_tiny_lotus(seed=1).unet).save_pretrained(part)
    SharpDepth(build_tiny_lotus(seed=0)).save_pretrained(part)  # the same folder, now without a pass-1 UNet
    assert (part / "lotus_unet").is_dir()
    with pytest.warns(UserWarning, match=r"lotus_unet is ignored: .*sharpdepth.json does not say "
                                         r"separate_lotus_unet: true"):
        loaded = SharpDepth.from_pretrained(part)
    assert loaded.lotus_unet is None


def test_a_pass1_unet_of_another_width_is_refused_at_load(tmp_path):
    """A separate pass-1 UNet whose cross-attention width differs from the sharpener's (another base model): one
    error naming the field when the checkpoint loads, not a matrix-shape error at the first image."""
    from depthkit.sharpen.model import SharpDepth
    from depthkit.sharpen.tiny import build_tiny_lotus

    part = tmp_path / "sharpen"
    SharpDepth(build_tiny_lotus(seed=0)).save_pretrained(part)
    build_tiny_lotus(seed=1, unet={"cross_attention_dim": 16}).unet.save_pretrained(part / "lotus_unet")
    _edit_json(part / "sharpdepth.json", separate_lotus_unet=True)
    with pytest.raises(CheckpointError, match=r"sharpen/lotus_unet: the pass-1 Lotus UNet does not fit the "
                                              r"sharpener: cross_attention_dim=16 \(the sharpener's: 32\)"):
        SharpDepth.from_pretrained(part)
