"""Stage-1 model foundations: offline tokenizer, tiny Qwen2.5-VL, processor/patchify, SDIM depth modules, LoRA."""

import time

import numpy as np
import pytest
import torch

from depthkit.complete import prompts as P
from depthkit.complete.depth_inputs import (
    SDIMConfig,
    normalize_sparse_depth,
    prepare_depth_inputs,
    scatter_sparse_to_grid,
    sparse_depth_features,
)
from depthkit.complete.model import LORA_TARGET_REGEX, SDIMModel, apply_lora
from depthkit.complete.processor import (
    build_tiny_processor,
    load_processor,
    map_to_resized,
    patchify_like_processor,
    resized_size,
    rgb_from_pixel_values,
    unpatchify_like_processor,
)
from depthkit.complete.tiny import build_tiny_qwen2_5_vl, tiny_qwen2_5_vl_config
from depthkit.complete.tokenizer import QWEN2_5_VL_SPECIAL_TOKENS, build_offline_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_offline_tokenizer()


@pytest.fixture(scope="module")
def processor(tokenizer):
    return build_tiny_processor(tokenizer)


@pytest.fixture(scope="module")
def batch(processor):
    """Two 56x84 images (no resize: multiples of 28) with sparse depth and one answered query each."""
    rng = np.random.default_rng(0)
    images = [(rng.random((56, 84, 3)) * 255).astype(np.uint8) for _ in range(2)]
    sparse = []
    for _ in range(2):
        s = rng.uniform(0.5, 10.0, (56, 84)).astype(np.float32)
        s[rng.random((56, 84)) > 0.1] = 0.0
        sparse.append(s)
    texts = [
        P.chat_prefix_text() + P.chat_suffix_text(P.query_text(0, (3, 4)), P.answer_text(2.5)),
        P.chat_prefix_text() + P.chat_suffix_text(P.query_text(1, (10, 2), sparse_value=7.25), P.answer_text(7.25)),
    ]
    out = processor(images=images, text=texts, return_tensors="pt", padding=True)
    depth = prepare_depth_inputs(sparse, out["image_grid_thw"], out["pixel_values"], processor)
    return {"images": images, "sparse": sparse, "inputs": dict(out), "depth": depth}


# ---- tokenizer ---------------------------------------------------------------------------------------------------


def test_tokenizer_trains_fast_and_round_trips(tokenizer, tmp_path):
    start = time.perf_counter()
    build_offline_tokenizer(tmp_path / "tok")
    assert time.perf_counter() - start < 1.0
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert type(reloaded).__name__ == "Qwen2Tokenizer"
    text = P.chat_prefix_text() + P.chat_suffix_text(P.query_text(0, (31, 7)), P.answer_text(12.375)) + " Ünïcode ✓"
    ids = tokenizer(text).input_ids
    assert reloaded(text).input_ids == ids
    assert tokenizer.decode(ids) == text
    assert reloaded.chat_template == tokenizer.chat_template
    assert (reloaded.eos_token, reloaded.pad_token) == ("<|im_end|>", "<|endoftext|>")


def test_tokenizer_special_tokens_in_qwen_order(tokenizer):
    ids = tokenizer.convert_tokens_to_ids(list(QWEN2_5_VL_SPECIAL_TOKENS))
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive, Qwen's order, after the BPE vocab
    assert ids[-1] == len(tokenizer) - 1
    for token in QWEN2_5_VL_SPECIAL_TOKENS:
        assert tokenizer.tokenize(f"a{token}b") == ["a", token, "b"]


def test_digits_are_single_tokens(tokenizer):
    for d in "0123456789":
        assert len(tokenizer(d).input_ids) == 1
    assert tokenizer.tokenize("123.456") == ["1", "2", "3", ".", "4", "5", "6"]
    assert tokenizer.tokenize("is 1000") == ["is", "Ġ", "1", "0", "0", "0"]


def test_chat_template_and_forced_answer_tokens(tokenizer):
    # Qwen2.5-VL's format written out by hand (not depthkit's strings), with and without the answer turn, and with
    # a caller's system turn replacing the default one
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    user = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{q}<|im_end|>\n"
    q = P.query_text(0, (5, 6))
    rendered = tokenizer.apply_chat_template(P.chat_messages(q), tokenize=False, add_generation_prompt=True)
    assert rendered == system + user.format(q=q) + "<|im_start|>assistant\n"
    assert rendered == P.chat_prefix_text() + P.chat_suffix_text(q)
    answered = tokenizer.apply_chat_template(P.chat_messages(q, "A"), tokenize=False)
    assert answered == system + user.format(q=q) + "<|im_start|>assistant\nA<|im_end|>\n"
    own = [{"role": "system", "content": "S"}] + P.chat_messages(q)
    assert tokenizer.apply_chat_template(own, tokenize=False) == "<|im_start|>system\nS<|im_end|>\n" + user.format(q=q)
    # The answer splits into token-aligned prefix / digits / suffix, so an engine can force prefix and suffix.
    enc = tokenizer(P.answer_text(43.21)).input_ids
    prefix = tokenizer(P.ANSWER_PREFIX).input_ids
    number = tokenizer("43.210").input_ids
    suffix = tokenizer(P.ANSWER_SUFFIX).input_ids
    assert enc == prefix + number + suffix


# ---- tiny model, processor, patchify --------------------------------------------------------------------------------


def test_tiny_config_matches_tokenizer_and_checks_mrope(tokenizer):
    cfg = tiny_qwen2_5_vl_config(len(tokenizer))
    assert sum(cfg.text_config.rope_parameters["mrope_section"]) == 64 // 4 // 2
    model = build_tiny_qwen2_5_vl(tokenizer)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert model.config.text_config.vocab_size == len(tokenizer)
    assert model.model.visual.patch_embed.proj.out_channels == 32
    assert model.model.visual.merger.mlp[-1].out_features == 64
    with pytest.raises(ValueError, match="mrope_section"):
        tiny_qwen2_5_vl_config(len(tokenizer), text={"num_attention_heads": 2, "num_key_value_heads": 2})
    again = build_tiny_qwen2_5_vl(tokenizer)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_processor_output_runs_the_tiny_model(tokenizer, batch):
    inputs = batch["inputs"]
    assert set(inputs) >= {"input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"}
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6], [1, 4, 6]]
    image_token = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ((inputs["input_ids"] == image_token).sum(1) == 6).all()  # 4x6 patches / merge 2x2
    assert torch.equal(inputs["mm_token_type_ids"].bool(), inputs["input_ids"] == image_token)
    model = build_tiny_qwen2_5_vl(tokenizer)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, len(tokenizer))
    assert torch.isfinite(logits).all()


def test_processor_save_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = load_processor(tmp_path)
    assert type(loaded).__name__ == "SDIMProcessor"
    assert loaded.image_processor.size == processor.image_processor.size
    img = np.random.default_rng(1).integers(0, 255, (40, 70, 3), dtype=np.uint8)
    text = P.chat_prefix_text() + P.chat_suffix_text(P.query_text(0, (1, 1)))
    a, b = processor(images=[img], text=[text]), loaded(images=[img], text=[text])
    assert a["input_ids"] == b["input_ids"] and np.array_equal(a["pixel_values"], b["pixel_values"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_processor(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        load_processor(tmp_path / "empty")


@pytest.mark.parametrize("hw", [(50, 70), (100, 37), (56, 84), (120, 160)])
def test_resized_size_matches_the_processor(processor, hw):
    img = np.zeros((*hw, 3), np.uint8)
    grid = processor.image_processor(images=[img], return_tensors="pt")["image_grid_thw"][0].tolist()
    h2, w2 = resized_size(*hw, processor)
    assert (h2, w2) == (grid[1] * 14, grid[2] * 14)
    assert h2 % 28 == 0 and w2 % 28 == 0


def test_patchify_equals_processor_layout(processor):
    img = np.random.default_rng(2).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    raw = processor.image_processor(images=[img], do_rescale=False, do_normalize=False, return_tensors="pt")
    chw = torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)
    assert torch.equal(patchify_like_processor(chw, processor), raw["pixel_values"])
    normed = processor.image_processor(images=[img], return_tensors="pt")
    ip = processor.image_processor
    mean, std = torch.tensor(ip.image_mean).view(3, 1, 1), torch.tensor(ip.image_std).view(3, 1, 1)
    torch.testing.assert_close(patchify_like_processor((chw / 255 - mean) / std, processor), normed["pixel_values"],
                               atol=1e-6, rtol=0)
    # Inverse and RGB recovery; any channel count patchifies.
    assert torch.equal(unpatchify_like_processor(raw["pixel_values"], [1, 4, 6], processor), chw)
    torch.testing.assert_close(rgb_from_pixel_values(normed["pixel_values"], normed["image_grid_thw"], processor)[0],
                               chw / 255, atol=1e-6, rtol=0)
    two = torch.arange(2 * 56 * 84, dtype=torch.float32).view(2, 56, 84)
    assert patchify_like_processor(two, processor).shape == (24, 2 * 2 * 14 * 14)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        patchify_like_processor(torch.zeros(3, 50, 84), processor)


# ---- sparse inputs ------------------------------------------------------------------------------------------------


def test_sparse_features_hand_values():
    d = torch.tensor([[0.0, 1.0, 300.0, 1000.0]])
    log = normalize_sparse_depth(d, "log")
    torch.testing.assert_close(log, torch.tensor([[0.0, np.log(1000) / np.log(300000), 1.0, 1.0]]).float())
    torch.testing.assert_close(normalize_sparse_depth(d, "inverse"), torch.tensor([[0.0, 0.5, 1 / 301, 1 / 301]]))
    torch.testing.assert_close(normalize_sparse_depth(d, "linear"), torch.tensor([[0.0, 1 / 300, 1.0, 1.0]]))
    feats = sparse_depth_features(np.array([[0.0, 2.0], [np.nan, 5.0]]), SDIMConfig(sparse_features="linear"))
    assert feats.shape == (2, 2, 2)
    assert feats[1].tolist() == [[0.0, 1.0], [0.0, 1.0]]


def test_scatter_keeps_exact_values_and_every_point_when_upsampling():
    rng = np.random.default_rng(3)
    sparse = np.where(rng.random((37, 53)) < 0.2, rng.uniform(0.1, 80, (37, 53)), 0.0).astype(np.float32)
    out = scatter_sparse_to_grid(sparse, (56, 84))
    assert np.count_nonzero(out) == np.count_nonzero(sparse)
    assert sorted(out[out > 0].tolist()) == sorted(sparse[sparse > 0].tolist())
    rows, cols = np.nonzero(sparse)
    tr, tc = map_to_resized(rows, cols, sparse.shape, out.shape)
    assert np.array_equal(out[tr, tc], sparse[rows, cols])
    # Downsampling: no blending, every output value is one of the inputs.
    small = scatter_sparse_to_grid(sparse, (28, 28))
    assert set(small[small > 0].tolist()) <= set(sparse[sparse > 0].tolist())


def test_scatter_collision_rule():
    s = np.zeros((4, 4), np.float32)
    s[0, 0], s[1, 1] = 5.0, 3.0  # both land on (0, 0) of a 2x2 grid, equally far from its centre: min wins
    s[2, 3] = 9.0  # alone in (1, 1)
    assert scatter_sparse_to_grid(s, (2, 2)).tolist() == [[3.0, 0.0], [0.0, 9.0]]
    s = np.zeros((3, 3), np.float32)
    s[1, 1], s[0, 0] = 8.0, 1.0  # the centre point is nearest the 1x1 target's centre: it wins despite its depth
    assert scatter_sparse_to_grid(s, (1, 1)).tolist() == [[8.0]]


def test_prepare_depth_inputs_shapes_and_rgb(batch):
    depth = batch["depth"]
    assert depth["sparse_pixels"].shape == (2, 2, 56, 84) and depth["rgb_pixels"].shape == (2, 3, 56, 84)
    torch.testing.assert_close(depth["rgb_pixels"][0], torch.tensor(batch["images"][0]).permute(2, 0, 1) / 255,
                               atol=1e-6, rtol=0)
    # Same size as the input: the mask channel is exactly the validity of the input map.
    assert torch.equal(depth["sparse_pixels"][1, 1], torch.tensor(batch["sparse"][1] > 0).float())


def test_mixed_image_sizes_use_lists(tokenizer, processor):
    rng = np.random.default_rng(5)
    sizes = ((45, 50), (26, 80))  # resized to 56x56 and 28x84: both sides grow, so no sparse point collides
    images = [(rng.random(hw + (3,)) * 255).astype(np.uint8) for hw in sizes]
    sparse = [np.where(rng.random(im.shape[:2]) < 0.1, 4.0, 0.0).astype(np.float32) for im in images]
    text = P.chat_prefix_text() + P.chat_suffix_text(P.query_text(0, (1, 1)))
    inputs = processor(images=images, text=[text, text], return_tensors="pt", padding=True)
    depth = prepare_depth_inputs(sparse, inputs["image_grid_thw"], inputs["pixel_values"], processor)
    assert [resized_size(*hw, processor) for hw in sizes] == [(56, 56), (28, 84)]
    assert [tuple(t.shape) for t in depth["sparse_pixels"]] == [(2, 56, 56), (2, 28, 84)]
    assert [tuple(t.shape) for t in depth["rgb_pixels"]] == [(3, 56, 56), (3, 28, 84)]
    assert all(int(t[1].sum()) == int((s > 0).sum()) for t, s in zip(depth["sparse_pixels"], sparse))  # upsampled
    base = build_tiny_qwen2_5_vl(tokenizer)
    with torch.no_grad():
        ref = base(**inputs).logits
        got = SDIMModel(base).train()(**inputs, **depth).logits
    assert torch.equal(got, ref)


# ---- SDIM model -----------------------------------------------------------------------------------------------------


def _logits(model, batch, **extra):
    with torch.no_grad():
        return model(**batch["inputs"], **extra).logits


def test_zero_init_logits_equal_base_and_he_or_hard_differ(tokenizer, batch):
    base = build_tiny_qwen2_5_vl(tokenizer)
    ref = _logits(base, batch)
    sdim = SDIMModel(base)
    assert torch.equal(_logits(sdim.eval(), batch, **batch["depth"]), ref)
    assert torch.equal(_logits(sdim.train(), batch, **batch["depth"]), ref)
    assert torch.equal(sdim.proj2.weight, base.model.visual.patch_embed.proj.weight)
    # Outside forward the hook is a no-op: the base alone is still the stock model.
    assert torch.equal(_logits(base, batch), ref)
    for cfg in (SDIMConfig(init="he"), SDIMConfig(fusion="hard_concat", init="he")):
        other = SDIMModel(build_tiny_qwen2_5_vl(tokenizer), cfg).eval()
        assert (_logits(other, batch, **batch["depth"]) - ref).abs().max() > 1e-3
    hard_zero = SDIMModel(build_tiny_qwen2_5_vl(tokenizer), SDIMConfig(fusion="hard_concat", init="zero")).eval()
    assert hard_zero.depth_branch is None and hard_zero.proj2.in_channels == 2
    assert torch.equal(_logits(hard_zero, batch, **batch["depth"]), ref)


def _grad_schedule(model, batch, steps=3):
    """Names of new parameters with zero/no gradient at each of `steps` AdamW steps."""
    params = dict(model.named_parameters())
    new = [n for n in params if n.startswith(("depth_branch.", "proj2."))]
    opt = torch.optim.AdamW([params[n] for n in new], lr=1e-3)
    labels = batch["inputs"]["input_ids"].clone()
    zero = []
    for _ in range(steps):
        opt.zero_grad()
        model(**batch["inputs"], **batch["depth"], labels=labels).loss.backward()
        zero.append({n for n in new if params[n].grad is None or not params[n].grad.abs().max() > 0})
        opt.step()
    return new, zero


def test_every_new_module_gets_gradient(tokenizer, batch):
    model = SDIMModel(build_tiny_qwen2_5_vl(tokenizer)).train()
    new, zero = _grad_schedule(model, batch)
    # Step 1: only the zero-init output conv (O = 0 blocks everything upstream, proj2 sees O = 0).
    assert set(new) - zero[0] == {"depth_branch.out.weight", "depth_branch.out.bias"}
    # Step 2: everything but the sparse encoder's BN scale (its input is exactly 0 until the zero conv moves).
    assert zero[1] == {"depth_branch.sparse_encoder.1.weight"}
    # Step 3: all new parameters.
    assert zero[2] == set()


def test_depth_changes_logits_after_training_step(tokenizer, batch):
    model = SDIMModel(build_tiny_qwen2_5_vl(tokenizer)).train()
    _grad_schedule(model, batch, steps=2)
    model.eval()
    with_depth = _logits(model, batch, **batch["depth"])
    other = dict(batch["depth"], sparse_pixels=torch.zeros_like(batch["depth"]["sparse_pixels"]))
    assert (with_depth - _logits(model, batch, **other)).abs().max() > 0  # the sparse map now matters


def test_save_load_depth_modules_exact(tokenizer, batch, tmp_path):
    model = SDIMModel(build_tiny_qwen2_5_vl(tokenizer)).train()
    _grad_schedule(model, batch, steps=3)
    model.eval()
    model.save_depth_modules(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth_modules.safetensors", "sdim_config.json"]
    loaded = SDIMModel.from_depth_modules(build_tiny_qwen2_5_vl(tokenizer), tmp_path).eval()
    a, b = model.depth_state_dict(), loaded.depth_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "depth_branch.sparse_encoder.1.running_var" in a
    assert torch.equal(_logits(model, batch, **batch["depth"]), _logits(loaded, batch, **batch["depth"]))
    with pytest.raises(ValueError, match="another SDIMConfig"):
        SDIMModel(build_tiny_qwen2_5_vl(tokenizer), SDIMConfig(init="he")).load_depth_modules(tmp_path)
    with pytest.raises(FileNotFoundError, match="save_depth_modules"):
        SDIMModel.from_depth_modules(build_tiny_qwen2_5_vl(tokenizer), tmp_path / "nothing")


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_wraps_only_language_model_linears(tokenizer, batch):
    import re

    base = build_tiny_qwen2_5_vl(tokenizer)
    ref = _logits(base, batch)
    model = apply_lora(SDIMModel(base), r=4, alpha=8, dropout=0.0)
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    expected = {f"base.base_model.model.model.language_model.layers.{i}.{m}" for i in range(2) for m in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert wrapped == expected
    assert re.fullmatch(LORA_TARGET_REGEX, "model.visual.blocks.0.mlp.gate_proj") is None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if ".lora_" in n or n.startswith(("depth_branch.", "proj2."))}
    assert any(n.startswith("depth_branch.") for n in trainable) and "proj2.weight" in trainable
    # LoRA B starts at zero and the branch at O = 0: still the base model's logits, through the peft wrapper.
    assert torch.equal(_logits(model.eval(), batch, **batch["depth"]), ref)


def test_generate_and_input_errors(tokenizer, processor, batch):
    base = build_tiny_qwen2_5_vl(tokenizer)
    model = SDIMModel(base).eval()
    rng = np.random.default_rng(4)
    img = (rng.random((56, 56, 3)) * 255).astype(np.uint8)
    inputs = processor(images=[img], text=[P.chat_prefix_text() + P.chat_suffix_text(P.query_text(0, (2, 2)))],
                       return_tensors="pt")
    depth = prepare_depth_inputs(np.full((56, 56), 3.0, np.float32), inputs["image_grid_thw"],
                                 inputs["pixel_values"], processor)
    plain = base.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert torch.equal(model.generate(**inputs, **depth, max_new_tokens=3, do_sample=False), plain)  # zero init
    # ...and the depth really reaches generate(): with a non-zero branch the scores of every step change, and
    # they are those of a plain forward over the same inputs with the depth injected
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        live = SDIMModel(build_tiny_qwen2_5_vl(tokenizer), SDIMConfig(init="he")).eval()
    kw = dict(max_new_tokens=2, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        with_depth = live.generate(**inputs, **depth, **kw).scores[0]
        without = live.base.generate(**inputs, **kw).scores[0]
        forward = live(**inputs, **depth).logits[:, -1]
    assert not torch.allclose(with_depth, without, atol=1e-4)
    assert torch.allclose(with_depth, forward, atol=1e-5)
    no_mm = {k: v for k, v in batch["inputs"].items() if k != "mm_token_type_ids"}
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        model(**no_mm, **batch["depth"])
    wrong = dict(batch["depth"], sparse_pixels=batch["depth"]["sparse_pixels"][:, :, :28])
    with pytest.raises(ValueError, match="resized to"):
        model(**batch["inputs"], **wrong)
    with pytest.raises(ValueError, match="rgb_pixels"):
        model(**batch["inputs"], sparse_pixels=batch["depth"]["sparse_pixels"])
    with pytest.raises(ValueError, match="fusion="):
        SDIMConfig(fusion="late")


def test_laplace_nll_trains_the_scale_only():
    """The head's uncertainty loss: hand value, its minimum at b = mean |log error|, no gradient to the prediction."""
    from depthkit.complete.readout import ResidualHead, laplace_nll

    pred = torch.tensor([2.0, 4.0], requires_grad=True)
    target = torch.tensor([2.0 * np.e**0.2, 4.0 * np.e**-0.4])
    b = torch.full((2,), 0.3, requires_grad=True)
    loss = laplace_nll(pred, b, target)
    assert float(loss.detach()) == pytest.approx(np.mean([0.2 / 0.3, 0.4 / 0.3]) + np.log(0.3), rel=1e-5)
    loss.backward()
    assert pred.grad is None or float(pred.grad.abs().sum()) == 0.0
    assert float(b.grad.sum()) == pytest.approx(0.0, abs=1e-5)  # mean |r| = 0.3 is the optimum
    head = ResidualHead(8)
    pred_m, scale = head.predict_with_scale(torch.randn(3, 8), torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(pred_m, torch.tensor([1.0, 2.0, 3.0])) and torch.allclose(scale, torch.full((3,), 0.1))
