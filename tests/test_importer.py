"""depthkit import-checkpoint: diffusers pipeline releases (SharpDepth, Lotus, Stable Diffusion) → depthkit layout.

The releases are tiny pipelines written in code in the real layout (:mod:`depthkit.sharpen.release`): model_index.json,
unet/, vae/, scheduler/ (DDIM, as released), text_encoder/ (a 1-layer CLIP) and tokenizer/ (a 6-token CLIP BPE).
"""

import json

import numpy as np
import pytest
import torch

from depthkit.checkpoints import CheckpointError, load_manifest, write_manifest
from depthkit.data.synthetic import render_scene
from depthkit.sharpen.importer import import_checkpoint, lotus_from_stable_diffusion
from depthkit.sharpen.lotus import LotusModel
from depthkit.sharpen.model import SharpDepth
from depthkit.sharpen.tiny import build_tiny_lotus


def write_release(root, unet, vae, seed=0, class_name="SharpDepthPipeline"):
    """A released-layout pipeline folder (:func:`depthkit.sharpen.release.write_release`), and the expected
    empty-prompt conditioning checked here independently: with CLIP's causal attention the unpadded BOS + EOS
    embedding equals the first two rows of the 77-token padded one (EOS also pads)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from depthkit.sharpen import release

    unpadded = release.write_release(root, unet, vae, seed, class_name)
    encoder = CLIPTextModel.from_pretrained(root / "text_encoder").eval()
    tok = CLIPTokenizer.from_pretrained(root / "tokenizer")
    with torch.no_grad():
        padded = encoder(torch.tensor([[tok.bos_token_id] + [tok.eos_token_id] * 76]))[0]
    assert unpadded.shape == (1, 2, 32) and torch.allclose(padded[:, :2], unpadded, atol=1e-5)
    return unpadded


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    base = tmp_path_factory.mktemp("releases")
    sharp = build_tiny_lotus(seed=1)
    lotus = build_tiny_lotus(seed=2)
    lotus.vae.load_state_dict(sharp.vae.state_dict())  # one base model: the same VAE
    lotus_d = build_tiny_lotus(mode="direct", seed=3)
    return {
        "sharpdepth": (base / "sharpdepth", sharp, write_release(base / "sharpdepth", sharp.unet, sharp.vae, 0)),
        "lotus": (base / "lotus-depth-g-disparity", lotus,
                  write_release(base / "lotus-depth-g-disparity", lotus.unet, sharp.vae, 1, "LotusGPipeline")),
        "lotus_d": (base / "lotus-d", lotus_d, write_release(base / "lotus-d", lotus_d.unet, lotus_d.vae, 2)),
    }


def _scene():
    s = render_scene(5, 32, 48, kind="indoor")
    return s.image, s.depth


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_import_sharpdepth_release(releases, tmp_path):
    root, model, embeds = releases["sharpdepth"]
    out = import_checkpoint(tmp_path / "ck", sharpdepth=root)
    manifest = load_manifest(out)
    assert manifest["stages"] == {"sharpen": {"processing_resolution": None}}
    assert manifest["imported_from"] == {"sharpdepth": str(root)} and manifest["sharpener_trained"] is True
    part = out / "sharpen"
    assert not (part / "text_encoder").exists() and not (part / "tokenizer").exists()
    meta = json.loads((part / "lotus.json").read_text())
    assert meta["mode"] == "generative" and meta["norm"] == "depth" and meta["default_processing_resolution"] == 768
    loaded = SharpDepth.from_pretrained(part)
    assert loaded.lotus_unet is None
    assert loaded.config.gate_noise == "noised_lotus"  # the public pipeline's gate input
    assert loaded.model.empty_prompt_embeds.shape == (1, 2, 32)  # unpadded: BOS + EOS
    assert torch.allclose(loaded.model.empty_prompt_embeds, embeds, atol=1e-6)  # computed once, from the release's CLIP
    # a UNet call of the imported checkpoint is a direct diffusers call with that embedding and Lotus's task switch
    z_img, noise = torch.randn(1, 4, 8, 12), torch.randn(1, 4, 8, 12)
    depth_switch = torch.tensor([[np.sin(1.0), np.sin(0.0), np.cos(1.0), np.cos(0.0)]], dtype=torch.float32)
    with torch.no_grad():
        direct = model.unet(torch.cat([z_img, noise], 1), torch.tensor([999]), encoder_hidden_states=embeds,
                            class_labels=depth_switch).sample
        ours = loaded.model.predict_latent(z_img, noise)
    assert torch.allclose(ours, direct, atol=1e-5)
    assert _same_weights(loaded.model.unet, model.unet) and _same_weights(loaded.model.vae, model.vae)
    # the checkpoint sharpens exactly like the release's parts assembled by hand
    image, depth = _scene()
    by_hand = SharpDepth(LotusModel(model.unet, model.vae, embeds, default_processing_resolution=768))
    from depthkit.pipeline import Pipeline

    # 48 px: the tiny model at the release default of 768 px would take minutes on a CPU
    pipe = Pipeline(stages=("sharpen",), checkpoint=out, stage_options={"sharpen": {"processing_resolution": 48}})
    out_pipe = pipe(image, None, depth=depth)
    np.testing.assert_allclose(out_pipe.depth, by_hand.sharpen(image, depth, processing_resolution=48).depth,
                               rtol=1e-6, atol=1e-6)  # loaded weights are equal; conv kernels may differ in the last ulp


def test_import_bin_only_release(releases, tmp_path):
    """A hub release with only pytorch_model.bin / diffusion_pytorch_model.bin weights imports (torch.load with
    weights_only=True) to the same checkpoint as the safetensors one."""
    import shutil

    from safetensors.torch import load_file

    root, model, _ = releases["sharpdepth"]
    bin_root = tmp_path / "bin_release"
    shutil.copytree(root, bin_root)
    for st in list(bin_root.rglob("*.safetensors")):
        name = "pytorch_model.bin" if st.parent.name == "text_encoder" else "diffusion_pytorch_model.bin"
        torch.save(load_file(str(st)), st.parent / name)
        st.unlink()
    a = SharpDepth.from_pretrained(import_checkpoint(tmp_path / "a", sharpdepth=root) / "sharpen")
    b = SharpDepth.from_pretrained(import_checkpoint(tmp_path / "b", sharpdepth=bin_root) / "sharpen")
    assert _same_weights(a.model.unet, b.model.unet) and _same_weights(a.model.vae, b.model.vae)
    assert torch.equal(a.model.empty_prompt_embeds, b.model.empty_prompt_embeds)
    assert _same_weights(b.model.unet, model.unet)


def test_import_with_separate_lotus_and_lotus_alone(releases, tmp_path):
    sd_root, _, _ = releases["sharpdepth"]
    lotus_root, lotus, lotus_embeds = releases["lotus"]
    both = SharpDepth.from_pretrained(import_checkpoint(tmp_path / "both", sharpdepth=sd_root, lotus=lotus_root)
                                      / "sharpen")
    assert both.lotus_unet is not None and _same_weights(both.lotus_unet, lotus.unet)
    image, depth = _scene()
    single = SharpDepth.from_pretrained(import_checkpoint(tmp_path / "single", sharpdepth=sd_root) / "sharpen")
    assert not np.array_equal(both.sharpen(image, depth, processing_resolution=48).lotus,
                              single.sharpen(image, depth, processing_resolution=48).lotus)
    from safetensors.torch import load_file, save_file

    from depthkit.checkpoints import CheckpointError

    weights = tmp_path / "both" / "sharpen" / "lotus_unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    key = sorted(tensors)[0]
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match=r"the pass-1 Lotus UNet weights in .*lotus_unet hold non-finite"):
        SharpDepth.from_pretrained(tmp_path / "both" / "sharpen")

    alone = import_checkpoint(tmp_path / "alone", lotus=lotus_root)
    assert load_manifest(alone)["sharpener_trained"] is False
    model = SharpDepth.from_pretrained(alone / "sharpen")
    assert model.model.norm == "disparity"  # from the release's name
    assert _same_weights(model.model.unet, lotus.unet)
    assert torch.allclose(model.model.empty_prompt_embeds, lotus_embeds, atol=1e-6)


def test_import_keeps_other_stages_and_cli(releases, tmp_path, capsys):
    from depthkit.cli import main

    ck = tmp_path / "ck"
    write_manifest(ck, {"complete": {"method": "guided"}})
    assert main(["import-checkpoint", "--sharpdepth", str(releases["sharpdepth"][0]), "--out", str(ck)]) == 0
    assert set(load_manifest(ck)["stages"]) == {"complete", "sharpen"}
    unet = (ck / "sharpen" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    lotus_release = ["import-checkpoint", "--lotus", str(releases["lotus"][0]), "--out", str(ck)]
    assert main(lotus_release) == 2  # would replace the imported sharpener: refused, nothing written
    assert "sharpen exists; the import would replace it. Pass --overwrite" in capsys.readouterr().err
    assert (ck / "sharpen" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == unet
    assert main([*lotus_release, "--overwrite"]) == 0
    assert (ck / "sharpen" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() != unet
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "n.txt").write_text("mine")
    assert main(["import-checkpoint", "--lotus", str(releases["lotus"][0]), "--out", str(tmp_path / "notes")]) == 2
    assert "not empty and not a depthkit checkpoint" in capsys.readouterr().err
    for norm in ("depth", "disparity"):  # the CLI's --norm reaches the importer
        out = tmp_path / f"ck_{norm}"
        assert main(["import-checkpoint", "--sharpdepth", str(releases["sharpdepth"][0]), "--out", str(out),
                     "--norm", norm, "--processing-resolution", "0"]) == 0
        assert SharpDepth.from_pretrained(out / "sharpen").model.norm == norm
    # options it cannot write into a loadable checkpoint are refused before any release is read
    (tmp_path / "afile").write_text("x")
    for argv, words in ((["--processing-resolution", "100000"], "must be 8 to 4096 pixels"),
                        (["--processing-resolution", "4"], "or 0 for the input's size; received 4"),
                        (["--processing-resolution", "-5"], "received -5"),
                        (["--out", str(tmp_path / "afile")], "afile is a file; give the checkpoint folder")):
        out = [] if "--out" in argv else ["--out", str(tmp_path / "never")]
        with pytest.raises(SystemExit):
            main(["import-checkpoint", "--sharpdepth", str(releases["sharpdepth"][0]), *out, *argv])
        assert words in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_import_errors(releases, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(releases["sharpdepth"][0], broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(CheckpointError, match="missing text_encoder"):
        import_checkpoint(tmp_path / "o1", sharpdepth=broken)
    with pytest.raises(CheckpointError, match="Lotus-D"):
        import_checkpoint(tmp_path / "o2", lotus=releases["lotus_d"][0])
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        import_checkpoint(tmp_path / "o3", sharpdepth="nobody/no-such-release")
    with pytest.raises(ValueError, match="sharpdepth=RELEASE and/or lotus=RELEASE"):
        import_checkpoint(tmp_path / "o4")
    with pytest.raises(ValueError, match="must be 8 to 4096 pixels"):  # what the loader would refuse, unwritten
        import_checkpoint(tmp_path / "o5", sharpdepth=releases["sharpdepth"][0], processing_resolution=100000)
    assert not (tmp_path / "o5").exists()


@pytest.mark.parametrize("part, file, change, kind", [
    ("text_encoder", "model.safetensors", "drop", "missing"),
    ("text_encoder", "model.safetensors", "add", "unexpected"),
    ("unet", "diffusion_pytorch_model.safetensors", "drop", "missing"),
    ("unet", "diffusion_pytorch_model.safetensors", "add", "unexpected"),
    ("vae", "diffusion_pytorch_model.safetensors", "drop", "missing"),
])
def test_a_release_whose_weights_do_not_match_its_config_is_refused(releases, tmp_path, part, file, change, kind):
    """One tensor too few or too many in a release's text encoder, UNet or VAE: one CheckpointError naming the part
    and the key, and nothing written. (Loaded as is, a missing text-encoder tensor stays random and changes the stored
    empty-prompt embedding silently; an extra one is dropped; a missing UNet tensor fails later, deep in the save.)"""
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "release"
    shutil.copytree(releases["sharpdepth"][0], bad)
    path = bad / part / file
    tensors = load_file(str(path))
    key = sorted(tensors)[1] if change == "drop" else "extra.weight"
    if change == "drop":
        del tensors[key]
    else:
        tensors[key] = torch.zeros(2)
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"{part} do not match the model: 1 {kind} keys \\({key}\\)"):
        import_checkpoint(tmp_path / "out", sharpdepth=bad)
    assert not (tmp_path / "out" / "depthkit.json").exists() and not (tmp_path / "out" / "sharpen").exists()


def test_a_lotus_release_of_another_base_cannot_be_pass_1(releases, tmp_path):
    """--lotus whose UNet cross-attends to another width than the sharpener's (another base model, so another
    empty-prompt embedding): refused at import, not a matrix-shape error at the first image after it."""
    root, sharp, _ = releases["sharpdepth"]
    from depthkit.sharpen import release

    other = build_tiny_lotus(seed=4, unet={"cross_attention_dim": 16})
    release.write_release(tmp_path / "lotus16", other.unet, sharp.vae, 4, "LotusGPipeline")  # a 16-wide CLIP
    with pytest.raises(CheckpointError, match="cannot run pass 1 of .*cross_attention_dim=16 \\(the sharpener's: 32\\)"):
        import_checkpoint(tmp_path / "out", sharpdepth=root, lotus=tmp_path / "lotus16")
    assert not (tmp_path / "out" / "depthkit.json").exists()


def test_lotus_from_stable_diffusion_widens_conv_in(tmp_path):
    from diffusers import UNet2DConditionModel

    from depthkit.sharpen.tiny import tiny_unet_config

    cfg = tiny_unet_config(in_channels=4, class_embed_type=None, projection_class_embeddings_input_dim=None)
    torch.manual_seed(0)
    sd_unet = UNet2DConditionModel(**cfg).eval()
    vae = build_tiny_lotus().vae
    write_release(tmp_path / "sd2", sd_unet, vae, 0, "StableDiffusionPipeline")
    lotus = lotus_from_stable_diffusion(tmp_path / "sd2")
    w_sd, w = sd_unet.conv_in.weight, lotus.unet.conv_in.weight
    assert w.shape[1] == 8 and torch.equal(w[:, :4], w_sd * 0.5) and torch.equal(w[:, 4:], w_sd * 0.5)
    assert torch.equal(lotus.unet.conv_in.bias, sd_unet.conv_in.bias)
    assert torch.equal(lotus.unet.up_blocks[1].resnets[0].conv1.weight, sd_unet.up_blocks[1].resnets[0].conv1.weight)
    assert lotus.unet.config.class_embed_type == "projection" and lotus.mode == "generative"
    # cat(z, z) gives SD's conv_in response to z: the duplicated-and-halved initialisation of Lotus
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(lotus.unet.conv_in(torch.cat([z, z], 1)), sd_unet.conv_in(z), atol=1e-6)
    write_release(tmp_path / "g", build_tiny_lotus().unet, vae, 0)
    with pytest.raises(CheckpointError, match="in_channels=8"):
        lotus_from_stable_diffusion(tmp_path / "g")


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: what a hostile ``.bin`` would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickle_payload_in_a_bin_release_never_runs(releases, tmp_path):
    """A release whose text encoder is a pickle carrying code: the import refuses it with one clear error (the .bin
    is read with torch.load(weights_only=True)) and the payload never runs."""
    import pickle
    import shutil

    from depthkit.checkpoints import CheckpointError

    root, _, _ = releases["sharpdepth"]
    bad = tmp_path / "hostile_release"
    shutil.copytree(root, bad)
    for st in (bad / "text_encoder").glob("*.safetensors"):
        st.unlink()
    marker = tmp_path / "payload_ran"
    with open(bad / "text_encoder" / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weight": _Payload(marker)}, f)
    with pytest.raises(CheckpointError, match="hostile_release"):
        import_checkpoint(tmp_path / "out", sharpdepth=bad)
    assert not marker.exists()


def test_release_with_custom_code_is_refused_without_a_prompt(releases, tmp_path, monkeypatch):
    """A release whose tokenizer config names custom code (auto_map) is refused before transformers could ask
    "Do you wish to run the custom code?": stdin answering "y" changes nothing and no code runs."""
    import io
    import json
    import shutil

    from depthkit.checkpoints import CheckpointError

    root, _, _ = releases["sharpdepth"]
    bad = tmp_path / "custom_code_release"
    shutil.copytree(root, bad)
    marker = tmp_path / "code_ran"
    (bad / "tokenizer" / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    cfg = json.loads((bad / "tokenizer" / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["evil.Tok", None]}
    (bad / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n" * 10))
    with pytest.raises(CheckpointError, match="auto_map"):
        import_checkpoint(tmp_path / "out", sharpdepth=bad)
    assert not marker.exists()
