"""The completer checkpoint (depthkit/complete/checkpoint.py) and the residual-head / digit readouts (readout.py)."""

import json
import math

import numpy as np
import pytest
import torch

from depthkit.checkpoints import CheckpointError
from depthkit.complete import prompts as P
from depthkit.complete.checkpoint import load_base_model, load_complete, save_complete, write_tiny
from depthkit.complete.depth_inputs import prepare_depth_inputs
from depthkit.complete.model import SDIMModel, apply_lora
from depthkit.complete.readout import ResidualHead, digit_token_ids, expected_digit_value, residual_l1_loss
from depthkit.complete.recipe import TinyModelConfig
from depthkit.complete.settings import COMPLETE_JSON, CompleteSettings
from depthkit.complete.tiny import build_tiny_base

SMALL = TinyModelConfig(hidden_size=64, num_hidden_layers=2, intermediate_size=128, vision_hidden_size=32,
                        vision_intermediate_size=64)


def _inputs(processor, seed=0):
    rng = np.random.default_rng(seed)
    image = (rng.random((56, 84, 3)) * 255).astype(np.uint8)
    sparse = np.where(rng.random((56, 84)) < 0.1, rng.uniform(0.5, 9.0, (56, 84)), 0).astype(np.float32)
    text = [P.chat_prefix_text() + P.chat_suffix_text(P.query_text(0, (5, 7)), P.answer_text(2.5))]
    enc = dict(processor(images=[image], text=text, return_tensors="pt"))
    enc.update(prepare_depth_inputs(sparse, enc["image_grid_thw"], enc["pixel_values"], processor))
    return enc


def _trained_like(seed=1, lora=False):
    """A tiny completer whose depth branch, BN statistics and head are all non-trivial (as after training)."""
    base, processor = build_tiny_base(SMALL, seed=seed)
    model = SDIMModel(base)
    if lora:
        apply_lora(model, r=4, alpha=8, dropout=0.0)
    head = ResidualHead(64, max_log_correction=0.5)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(head.named_parameters()):
            if name.startswith(("depth_branch", "proj2", "net")) or "lora_B" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 2.0, generator=gen)
    return model.eval(), processor, head.eval()


def test_save_load_round_trip_is_exact(tmp_path):
    model, processor, head = _trained_like()
    batch = _inputs(processor)
    with torch.no_grad():
        ref = model(**batch).logits
        hidden = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
        ref_head = head.predict(hidden, torch.tensor([1.0, 2.0, 3.0]))
    settings = {"prompt_prior": "guided", "readout": "residual_head", "note": "x"}
    out = save_complete(tmp_path / "complete", model, processor, settings, residual_head=head)
    loaded = load_complete(out)
    assert not loaded.model.training and not loaded.residual_head.training
    with torch.no_grad():
        assert torch.equal(loaded.model(**_inputs(loaded.processor)).logits, ref)
        assert torch.equal(loaded.residual_head.predict(hidden, torch.tensor([1.0, 2.0, 3.0])), ref_head)
    s = loaded.settings
    assert (s.prompt_prior, s.pixel_reference, s.readout, s.note) == ("guided", "text", "residual_head", "x")
    assert s.prompt_version == P.PROMPT_VERSION
    assert (s.min_pixels, s.max_pixels) == (28 * 28, 168 * 168)
    assert s.residual_head["max_log_correction"] == 0.5
    assert not list(tmp_path.glob(".complete.tmp*"))  # the temporary folder was renamed into place
    # Overwriting an existing checkpoint keeps it loadable (atomic replace).
    save_complete(out, model, processor, settings, residual_head=head)
    assert load_complete(out).settings.note == "x"


def test_lora_merge_does_not_touch_the_model_and_matches(tmp_path):
    model, processor, head = _trained_like(lora=True)
    batch = _inputs(processor)
    with torch.no_grad():
        before = model(**batch).logits
    save_complete(tmp_path / "c", model, processor, {})
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)  # not merged in place
    loaded = load_complete(tmp_path / "c")
    assert json.loads((tmp_path / "c" / COMPLETE_JSON).read_text())["weights"] == {"kind": "full",
                                                                                  "lora_merged": True}
    assert not any("lora" in n for n, _ in loaded.model.named_parameters())
    with torch.no_grad():
        after = loaded.model(**batch).logits
    assert torch.allclose(after, before, atol=1e-5)  # W + BA in one matrix: equal up to float rounding


def test_lora_merge_of_a_bfloat16_base_keeps_the_deltas(tmp_path):
    """The full-size recipes train LoRA (float32) on a bfloat16 base. The merged export, loaded in float32, must be
    the trained model run in float32 (its base upcast, its LoRA as trained: computed here by peft itself), not the
    deltas rounded into bfloat16 weights. Fails if the merge is cast back to the base's dtype (the logits then move
    by ~10 % of what the LoRA changed)."""
    import copy

    model, processor, _ = _trained_like(lora=True)
    model.base.get_base_model().to(torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.data = p.data.float() * (0.05 if "lora_B" in name else 1.0)  # small deltas, as after training
    batch = _inputs(processor)
    reference = copy.deepcopy(model).float()
    with torch.no_grad():
        expected = reference(**batch).logits
        with reference.base.disable_adapter():
            lora_effect = (expected - reference(**batch).logits).abs().max()
    save_complete(tmp_path / "c", model, processor, {})
    with torch.no_grad():
        got = load_complete(tmp_path / "c", dtype="float32").model(**batch).logits
    assert lora_effect > 1e-3
    assert (got - expected).abs().max() < 0.01 * lora_effect


def test_adapter_checkpoint_names_its_base(tmp_path):
    model, processor, _ = _trained_like(lora=True)
    batch = _inputs(processor)
    with torch.no_grad():
        ref = model(**batch).logits
    base_dir = tmp_path / "base"
    fresh, _ = build_tiny_base(SMALL, seed=1)
    fresh.save_pretrained(base_dir)
    save_complete(tmp_path / "c", model, processor, {"base_model": "Qwen/Qwen2.5-VL-3B-Instruct"}, merge_lora=False)
    assert (tmp_path / "c" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "c" / "model.safetensors").exists()
    with pytest.raises(OSError, match="HF_HUB_OFFLINE is set"):  # conftest sets it: no network at test time
        load_complete(tmp_path / "c")
    loaded = load_complete(tmp_path / "c", base_model=str(base_dir))
    with torch.no_grad():
        assert torch.allclose(loaded.model(**batch).logits, ref, atol=1e-5)
    with pytest.raises(ValueError, match="absolute path"):
        save_complete(tmp_path / "d", model, processor, {"base_model": str(base_dir)}, merge_lora=False)


def test_broken_checkpoints_give_named_errors(tmp_path):
    write_tiny(tmp_path / "c")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_complete(tmp_path / "nope")
    (tmp_path / "c" / "depth_modules.safetensors").rename(tmp_path / "dm")
    with pytest.raises(CheckpointError, match="missing depth_modules.safetensors"):
        load_complete(tmp_path / "c")
    (tmp_path / "dm").rename(tmp_path / "c" / "depth_modules.safetensors")
    (tmp_path / "c" / "tokenizer.json").rename(tmp_path / "tok")  # not "the tokenizer spells '0' as 0 tokens"
    with pytest.raises(CheckpointError, match=r"missing tokenizer.json \(the tokenizer's vocabulary\)"):
        load_complete(tmp_path / "c")
    (tmp_path / "tok").rename(tmp_path / "c" / "tokenizer.json")
    weights = tmp_path / "c" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt or truncated"):
        load_complete(tmp_path / "c")
    weights.write_bytes(data)
    meta = json.loads((tmp_path / "c" / COMPLETE_JSON).read_text())
    meta["residual_head"]["file"] = "../../outside.safetensors"
    (tmp_path / "c" / COMPLETE_JSON).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="outside the checkpoint"):
        load_complete(tmp_path / "c")
    (tmp_path / "c" / COMPLETE_JSON).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_complete(tmp_path / "c")
    model, processor, _ = _trained_like()
    with pytest.raises(ValueError, match="reserved keys"):
        save_complete(tmp_path / "x", model, processor, {"weights": 1})
    with pytest.raises(ValueError, match="no residual_head"):
        save_complete(tmp_path / "x", model, processor, {"readout": "residual_head"})


def test_complete_json_is_typed_and_refuses_unknown_keys(tmp_path):
    write_tiny(tmp_path / "c")
    path = tmp_path / "c" / COMPLETE_JSON
    meta = json.loads(path.read_text())
    assert CompleteSettings.from_dict(meta).to_json_dict() == meta  # the file round-trips through the dataclass
    path.write_text(json.dumps({**meta, "prompt_prio": "guided"}))  # a typo is an error, not a silent default
    with pytest.raises(CheckpointError, match=r"complete\.json: unknown key\(s\) \['prompt_prio'\]"):
        load_complete(tmp_path / "c")
    path.write_text(json.dumps({**meta, "readout": "digits"}))
    with pytest.raises(CheckpointError, match="readout='digits'; allowed: text, residual_head"):
        load_complete(tmp_path / "c")
    path.write_text(json.dumps({k: v for k, v in meta.items() if k != "residual_head"}))
    with pytest.raises(CheckpointError, match="no residual head is described"):
        load_complete(tmp_path / "c")


def test_weights_saved_as_pickle_are_refused(tmp_path):
    write_tiny(tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").unlink()
    (tmp_path / "c" / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="safetensors only"):
        load_complete(tmp_path / "c")


def test_write_tiny_and_init_checkpoint_cli(tmp_path):
    from depthkit.checkpoints import load_manifest
    from depthkit.cli import main

    assert write_tiny(tmp_path / "a" / "complete", seed=3) == {"method": "sdim"}
    loaded = load_complete(tmp_path / "a" / "complete")
    assert loaded.settings.readout == "residual_head" and loaded.residual_head is not None
    # The untrained head returns the prior exactly.
    hidden = torch.randn(4, loaded.residual_head.hidden_size)
    prior = torch.tensor([0.5, 1.0, 7.0, 80.0])
    assert torch.equal(loaded.residual_head.predict(hidden, prior), prior)
    assert main(["init-checkpoint", "--tiny", str(tmp_path / "b"), "--stages", "complete", "--seed", "3"]) == 0
    assert load_manifest(tmp_path / "b")["stages"]["complete"] == {"method": "sdim"}
    a = (tmp_path / "a" / "complete" / "model.safetensors").read_bytes()
    assert (tmp_path / "b" / "complete" / "model.safetensors").read_bytes() == a  # same seed, same weights
    pytest.importorskip("depthkit.complete.stage", reason="the inference stage is not written yet")
    from depthkit import Pipeline

    Pipeline.from_pretrained(tmp_path / "b", stages=("complete",))  # the layout the inference stage loads


def test_hub_id_offline_error_is_clear():
    with pytest.raises(OSError) as info:
        load_base_model("Qwen/Qwen2.5-VL-3B-Instruct")
    text = str(info.value)
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in text and "HF_HUB_OFFLINE is set" in text
    assert "huggingface-cli download" in text and "model.base=" in text


# ---- readouts -----------------------------------------------------------------------------------------------------


def test_residual_head_parametrisation_and_bound():
    head = ResidualHead(8, max_log_correction=0.7)
    hidden = torch.randn(5, 8)
    prior = torch.tensor([0.2, 1.0, 3.0, 10.0, 50.0])
    assert torch.equal(head.predict(hidden, prior), prior)  # zero-initialised output layer
    with torch.no_grad():
        head.net[-1].bias.fill_(100.0)  # saturate tanh: the correction hits its bound
    assert torch.allclose(head.predict(hidden, prior), prior * math.exp(0.7))
    with torch.no_grad():
        head.net[-1].bias.fill_(0.5)
    assert torch.allclose(head.predict(hidden, prior), prior * math.exp(0.7 * math.tanh(0.5)))
    with pytest.raises(ValueError, match="> 0 metres"):
        head.predict(hidden, torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="B x 8"):
        head.predict(torch.randn(5, 9), prior)
    with pytest.raises(ValueError, match="max_log_correction"):
        ResidualHead(8, max_log_correction=0.0)


def test_residual_head_prior_input_reads_log_prior(tmp_path):
    """prior_input=True: the hidden layer reads [LayerNorm(h), log prior]; the expected value is computed here from
    the head's weights by hand. The same hidden state with two priors gives two corrections (a head without the
    input gives one), the head refuses a call without the prior, and the option survives save / load."""
    head = ResidualHead(8, max_log_correction=0.7, prior_input=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    hidden = torch.randn(1, 8, generator=gen).repeat(2, 1)
    prior = torch.tensor([1.5, 6.0])
    norm, first, last = head.net[0], head.net[1], head.net[-1]
    h = (hidden - hidden.mean(-1, keepdim=True)) / torch.sqrt(hidden.var(-1, unbiased=False, keepdim=True) + norm.eps)
    h = h * norm.weight + norm.bias
    x = torch.cat([h, torch.log(prior)[:, None]], dim=1)
    z = torch.nn.functional.gelu(x @ first.weight.T + first.bias) @ last.weight.T + last.bias
    expected = prior * torch.exp(0.7 * torch.tanh(z[:, 0]))
    with torch.no_grad():
        got = head.predict(hidden, prior)
    assert torch.allclose(got, expected, rtol=1e-5)
    ratio = got / prior
    assert abs(float(ratio[0] - ratio[1])) > 1e-3  # the same hidden state, another prior: another correction
    with pytest.raises(ValueError, match="prior_input"):
        head.log_correction(hidden)
    model, processor, _ = _trained_like()
    out = save_complete(tmp_path / "c", model, processor, {"prompt_prior": "guided", "readout": "residual_head"},
                        residual_head=head)
    loaded = load_complete(out).residual_head
    assert loaded.prior_input
    with torch.no_grad():
        assert torch.equal(loaded.predict(hidden, prior), got)


def test_residual_l1_loss_hand_values():
    pred, target = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0])
    assert residual_l1_loss(pred, target, "metres").item() == pytest.approx(0.5)
    assert residual_l1_loss(pred, target, "log").item() == pytest.approx(math.log(2) / 2)
    assert residual_l1_loss(pred, target, "metres", weight=torch.tensor([1.0, 3.0])).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="space"):
        residual_l1_loss(pred, target, "feet")


def test_expected_digit_value_hand_case():
    digit_ids = list(range(10, 20))  # pretend ids: token 10 + d spells digit d
    vocab = 25
    logits = torch.full((2, 4, vocab), -1e4)
    # Row 0 predicts "3.5": position 0 -> "3" (units, certain), position 2 -> "5"/"7" 50:50 (tenths).
    logits[0, 0, 13] = 0.0
    logits[0, 2, 15] = 0.0
    logits[0, 2, 17] = 0.0
    logits[0, 2, 3] = 50.0  # mass on a non-digit token does not count (softmax over digits only)
    # Row 1: "12": tens "1", units uniform over 0..9 (expected 4.5).
    logits[1, 0, 11] = 0.0
    logits[1, 1, 10:20] = 0.0
    places = torch.tensor([[1.0, 0.0, 0.1, 0.0], [10.0, 1.0, 0.0, 0.0]])
    value = expected_digit_value(logits, places, digit_ids)
    assert torch.allclose(value, torch.tensor([3.0 + 0.6, 14.5]))
    # The flattened form with an explicit query index gives the same numbers.
    flat = expected_digit_value(logits.reshape(8, vocab), places.reshape(8), digit_ids,
                                index=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), num_values=2)
    assert torch.allclose(flat, value)


def test_digit_token_ids_read_from_tokenizer():
    from depthkit.complete.tokenizer import build_offline_tokenizer

    tok = build_offline_tokenizer()
    ids = digit_token_ids(tok)
    assert [tok.decode([i]) for i in ids] == list("0123456789")


def test_an_adapter_with_keys_of_another_model_is_refused(tmp_path):
    """peft only warns on adapter keys it does not find (their LoRA B stays 0: the merged model is the bare base)."""
    from safetensors.torch import load_file, save_file

    model, processor, _ = _trained_like(lora=True)
    fresh, _ = build_tiny_base(SMALL, seed=1)
    save_complete(tmp_path / "c", model, processor, {"base_model": "hub:Qwen/Qwen2.5-VL-3B-Instruct"},
                  merge_lora=False)
    fresh.save_pretrained(tmp_path / "base")
    load_complete(tmp_path / "c", base_model=str(tmp_path / "base"))  # intact: loads
    weights = tmp_path / "c" / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k.replace(".layers.", ".blocks."): v for k, v in tensors.items()}, str(weights))
    with pytest.raises(CheckpointError, match=r"adapter_model.safetensors does not match.*missing.*unexpected"):
        load_complete(tmp_path / "c", base_model=str(tmp_path / "base"))
    save_file({k: v for k, v in list(tensors.items())[1:]}, str(weights))  # one tensor short
    with pytest.raises(CheckpointError, match=r"1 missing"):
        load_complete(tmp_path / "c", base_model=str(tmp_path / "base"))
