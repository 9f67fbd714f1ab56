"""M-RoPE positions for a shared image prefix and per-pixel suffixes (depthkit.complete.positions)."""

import numpy as np
import pytest
import torch

from depthkit.complete import prompts as P
from depthkit.complete.positions import pixel_grid_position, prefix_position_ids, suffix_position_ids
from depthkit.complete.processor import build_tiny_processor
from depthkit.complete.tiny import build_tiny_qwen2_5_vl
from depthkit.complete.tokenizer import build_offline_tokenizer


@pytest.fixture(scope="module")
def tok_proc_model():
    tok = build_offline_tokenizer()
    return tok, build_tiny_processor(tok), build_tiny_qwen2_5_vl(tok)


def _images(seed=0, shapes=((56, 84), (84, 56))):
    rng = np.random.default_rng(seed)
    return [(rng.random((*s, 3)) * 255).astype(np.uint8) for s in shapes]


def test_prefix_positions_equal_stock_get_rope_index_with_left_padding(tok_proc_model):
    tok, proc, model = tok_proc_model
    texts = [P.chat_prefix_text() + P.chat_suffix_text(P.query_text(0, (3, 4))),
             P.chat_prefix_text() + "short"]
    tok.padding_side = "left"
    try:
        out = proc(images=_images(), text=texts, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = "right"
    assert (out["attention_mask"][1] == 0).any()  # the second row really is left-padded
    ours = prefix_position_ids(model, out["input_ids"], out["image_grid_thw"], out["mm_token_type_ids"],
                               out["attention_mask"])
    stock, delta = model.model.get_rope_index(out["input_ids"], mm_token_type_ids=out["mm_token_type_ids"],
                                              image_grid_thw=out["image_grid_thw"],
                                              attention_mask=out["attention_mask"])
    assert torch.equal(ours["position_ids"], stock)
    assert torch.equal(ours["rope_delta"], delta)
    # hand check of the first image (grid 4x6 patches -> 2x3 tokens): t = s, h = s + r, w = s + c
    row = ours["position_ids"][:, 0, out["mm_token_type_ids"][0].bool()]
    s = ours["image_start"][0][0]
    assert row.tolist() == [[s] * 6, [s, s, s, s + 1, s + 1, s + 1], [s, s + 1, s + 2, s, s + 1, s + 2]]
    n_real = int(out["attention_mask"][0].sum())
    assert int(ours["next_pos"][0]) == n_real + int(ours["rope_delta"][0])
    # the image advances the position by max(2, 3) = 3 instead of its 6 tokens
    assert int(ours["rope_delta"][0]) == 3 - 6


def test_config_and_sdim_model_accepted(tok_proc_model):
    from depthkit.complete.model import SDIMModel

    tok, proc, model = tok_proc_model
    out = proc(images=_images()[:1], text=[P.chat_prefix_text()], return_tensors="pt")
    a = prefix_position_ids(model.config, out["input_ids"], out["image_grid_thw"], out["mm_token_type_ids"])
    b = prefix_position_ids(SDIMModel(model), out["input_ids"], out["image_grid_thw"], out["mm_token_type_ids"])
    assert torch.equal(a["position_ids"], b["position_ids"])
    with pytest.raises(TypeError, match="not a Qwen2.5-VL"):
        prefix_position_ids(object(), out["input_ids"], out["image_grid_thw"], out["mm_token_type_ids"])
    with pytest.raises(ValueError, match="does not match grid"):
        prefix_position_ids(model, out["input_ids"], torch.tensor([[1, 2, 2]]), out["mm_token_type_ids"])


def test_text_suffix_positions_equal_stock_positions_of_full_sequence(tok_proc_model):
    """prefix + left-padded suffix batch == stock positions of each unpadded concatenated sequence."""
    tok, proc, model = tok_proc_model
    img = _images()[:1]
    prefix = proc(images=img, text=[P.chat_prefix_text()], return_tensors="pt")
    pre = prefix_position_ids(model, prefix["input_ids"], prefix["image_grid_thw"], prefix["mm_token_type_ids"])
    suffixes = [P.chat_suffix_text(P.query_text(0, (1, 2))), P.chat_suffix_text(P.query_text(0, (40, 51))) + "The"]
    ids = [tok(s, add_special_tokens=False).input_ids for s in suffixes]
    width = max(map(len, ids))
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    ours = suffix_position_ids(pre["next_pos"], mask, "text")
    assert ours.shape == (3, 2, width) and ours.dtype == torch.long
    for row, text in enumerate(suffixes):
        full = proc(images=img, text=[P.chat_prefix_text() + text], return_tensors="pt")
        stock, _ = model.model.get_rope_index(full["input_ids"], mm_token_type_ids=full["mm_token_type_ids"],
                                              image_grid_thw=full["image_grid_thw"])
        n = len(ids[row])
        assert torch.equal(stock[:, 0, -n:], ours[:, row, -n:])
        assert (ours[:, row, :-n] == 0).all()  # padding
    # decoding steps continue the count: offset = real tokens already placed
    step = suffix_position_ids(pre["next_pos"], torch.ones(2, 1), "text", offset=mask.sum(1))
    assert step[0, :, 0].tolist() == [int(pre["next_pos"]) + len(i) for i in ids]


def test_rope_suffix_positions_take_the_pixel_grid_position():
    hw = pixel_grid_position([0, 13, 27, 42], [14, 0, 55, 70], image_start=15)
    # pixel row 13 -> (13.5 / 28 - 0.5) = -0.0178...; row 42 -> 1.0357... (second token row)
    assert torch.allclose(hw[:, 0], torch.tensor([15 + 0.5 / 28 - 0.5, 15 + 13.5 / 28 - 0.5, 15 + 27.5 / 28 - 0.5,
                                                  15 + 42.5 / 28 - 0.5]))
    assert abs(float(pixel_grid_position([13.5], [41.5], 0)[0, 0]) - 0.0) < 1e-6  # token centre -> integer grid
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    pos = suffix_position_ids(torch.tensor([20, 20]), mask, "rope", pixel_hw=hw[:2])
    assert pos.dtype == torch.float32
    assert pos[0].tolist() == [[0, 20, 21], [20, 21, 22]]
    assert torch.allclose(pos[1, 1], hw[1, 0].expand(3)) and torch.allclose(pos[2, 1], hw[1, 1].expand(3))
    assert pos[1, 0, 0] == 0 and pos[2, 0, 0] == 0  # padding
    with pytest.raises(ValueError, match="needs pixel_hw"):
        suffix_position_ids(20, mask, "rope")
    with pytest.raises(ValueError, match="not one of"):
        suffix_position_ids(20, mask, "marker")


def test_grid_token_positions_move_only_the_last_token_to_the_pixel():
    hw = pixel_grid_position([13, 42], [0, 70], image_start=15)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    pos = suffix_position_ids(torch.tensor([20, 20]), mask, "grid_token", pixel_hw=hw)
    assert pos.dtype == torch.float32
    assert pos[0].tolist() == [[0, 20, 21], [20, 21, 22]]  # t: the text order, as in every mode
    text = suffix_position_ids(torch.tensor([20, 20]), mask, "text").float()
    assert torch.equal(pos[:, :, :-1], text[:, :, :-1])  # everything before the query token: text positions
    assert torch.allclose(pos[1:, :, -1], hw.T)  # the query token: the pixel's h, w
    with pytest.raises(ValueError, match="needs pixel_hw"):
        suffix_position_ids(20, mask, "grid_token")
    with pytest.raises(ValueError, match="at least one real token"):
        suffix_position_ids(20, torch.tensor([[0, 0], [1, 1]]), "grid_token", pixel_hw=hw)


def test_rope_float_positions_run_through_the_stock_model(tok_proc_model):
    """Float positions pass the stock rotary code; integer-valued floats give the same logits as longs."""
    tok, proc, model = tok_proc_model
    out = proc(images=_images()[:1], text=[P.chat_prefix_text() + "The"], return_tensors="pt")
    pos = prefix_position_ids(model, out["input_ids"], out["image_grid_thw"], out["mm_token_type_ids"])
    with torch.no_grad():
        a = model(**out, position_ids=pos["position_ids"]).logits
        b = model(**out, position_ids=pos["position_ids"].float()).logits
        c = model(**out).logits
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)
