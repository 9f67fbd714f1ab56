"""Prompt templates, number format/parse and query-pixel sampling (depthkit.complete.prompts)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depthkit.complete import prompts as P


def test_paper_templates_are_verbatim():
    assert P.MASK0_TEXT == "The mask value is 0; predict the distance to the camera."
    assert P.mask_text(1, 2.5) == (
        "The mask value is 1, and the distance to the camera is 2.500 meters, preserve the given value."
    )
    assert P.QUESTION_TEXT == "What is the distance from the current pixel to the camera?"
    assert P.answer_text(4.23) == "The pixel is 4.230 meters away from the camera."
    assert P.ANSWER_PREFIX == "The pixel is "
    assert P.ANSWER_SUFFIX == " meters away from the camera."
    assert P.PROMPT_VERSION == "sdim-prompts-2"


def test_module_docstring_example_is_the_query_text_the_code_writes():
    """The conversation example at the top of prompts.py shows the user text query_text writes (prompt version 2:
    mask sentence, question, then the coordinates), not an older layout."""
    doc = " ".join(P.__doc__.split())  # the example is wrapped over two lines
    assert P.query_text(0, (7, 9)).replace("(7, 9)", "(x, y)") + "<|im_end|>" in doc


def test_query_text_text_reference_prior_and_rope():
    assert P.query_text(0, (12, 7)) == (
        "The mask value is 0; predict the distance to the camera. "
        "What is the distance from the current pixel to the camera? The current pixel is at (12, 7)."
    )
    assert P.query_text(1, (0, 3), sparse_value=1.0) == (
        "The mask value is 1, and the distance to the camera is 1.000 meters, "
        "preserve the given value. What is the distance from the current pixel to the camera? "
        "The current pixel is at (0, 3)."
    )
    guided = P.PromptConfig(prompt_prior="guided")
    assert P.query_text(0, (1, 2), prior=3.14159, config=guided) == (
        "The mask value is 0; predict the distance to the camera. The interpolated estimate is 3.142 meters. "
        "What is the distance from the current pixel to the camera? The current pixel is at (1, 2)."
    )
    # A measured pixel states its value, never a prior.
    assert "interpolated" not in P.query_text(1, (1, 2), sparse_value=2.0, config=guided)
    rope = P.PromptConfig(pixel_reference="rope")
    assert P.query_text(0, config=rope) == P.MASK0_TEXT + " " + P.QUESTION_TEXT
    # grid_token: the same text for every pixel, mask and prior (they reach the model through the depth branch
    # and the residual head), so the text must not claim a mask sentence
    grid = P.PromptConfig("guided", pixel_reference="grid_token", mask_text="none")
    assert {P.query_text(0, (1, 2), prior=3.0, config=grid), P.query_text(0, (7, 9), prior=5.0, config=grid),
            P.query_text(1, (7, 9), sparse_value=2.0, config=grid)} == {P.QUESTION_TEXT}
    with pytest.raises(ValueError, match="mask_text must be 'none'"):
        P.PromptConfig("guided", pixel_reference="grid_token")


def test_mask_text_switch_for_the_ablation_rows():
    """mask_text: the paper's full prompt (default, unchanged), the mask sentences without the value, or none;
    the prompt prior is stated in every mode, never for a measured pixel."""
    question = "What is the distance from the current pixel to the camera? The current pixel is at (1, 2)."
    full, mask, none = (P.PromptConfig("guided", mask_text=m) for m in ("mask_and_value", "mask", "none"))
    assert P.query_text(1, (1, 2), sparse_value=2.0, config=full) == P.query_text(
        1, (1, 2), sparse_value=2.0, config=P.PromptConfig("guided"))
    assert P.query_text(0, (1, 2), prior=3.0, config=mask) == P.query_text(0, (1, 2), prior=3.0, config=full)
    assert P.query_text(1, (1, 2), sparse_value=2.0, config=mask) == (
        "The mask value is 1; preserve the given value. " + question)
    assert P.query_text(0, (1, 2), prior=3.0, config=none) == "The interpolated estimate is 3.000 meters. " + question
    assert P.query_text(1, (1, 2), sparse_value=2.0, config=none) == question
    assert P.query_text(0, (1, 2), config=P.PromptConfig(mask_text="none")) == question
    with pytest.raises(ValueError, match="mask_text"):
        P.PromptConfig(mask_text="value")


def test_prompt_misuse_is_refused():
    with pytest.raises(ValueError, match="prompt_prior"):
        P.PromptConfig(prompt_prior="bilinear")
    with pytest.raises(ValueError, match="pixel_reference"):
        P.PromptConfig(pixel_reference="marker")
    with pytest.raises(ValueError, match="version"):
        P.PromptConfig(version="old")
    with pytest.raises(ValueError, match="needs prior"):
        P.mask_text(0, config=P.PromptConfig(prompt_prior="nearest"))
    with pytest.raises(ValueError, match="prompt_prior='none'"):
        P.mask_text(0, prior=2.0)
    with pytest.raises(ValueError, match="needs sparse_value"):
        P.mask_text(1)
    with pytest.raises(ValueError, match="takes no sparse_value"):
        P.mask_text(0, sparse_value=1.0)
    with pytest.raises(ValueError, match="xy"):
        P.query_text(0)
    with pytest.raises(ValueError, match="non-negative integers"):
        P.coordinate_text(1.5, 2)


# Qwen2.5-VL's chat format, written out by hand from the released chat template (not from depthkit's strings): the
# default system turn, the user turn with the image placeholder before the text, the assistant header.
QWEN_RENDERED = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                 "<|vision_start|><|image_pad|><|vision_end|>{query}<|im_end|>\n<|im_start|>assistant\n")


def test_chat_text_split_at_vision_end():
    q = P.query_text(0, (3, 4))
    assert q == ("The mask value is 0; predict the distance to the camera. What is the distance from the current "
                 "pixel to the camera? The current pixel is at (3, 4).")
    assert P.chat_prefix_text() + P.chat_suffix_text(q) == QWEN_RENDERED.format(query=q)
    assert P.chat_prefix_text().endswith("<|vision_end|>")  # the split: prefix up to the image, suffix after it
    assert P.chat_suffix_text(q) == q + "<|im_end|>\n<|im_start|>assistant\n"
    assert P.chat_suffix_text(q, P.answer_text(1.5)).endswith(
        "assistant\nThe pixel is 1.500 meters away from the camera.<|im_end|>"
    )
    assert P.chat_messages(q, "a")[0]["content"] == [{"type": "image"}, {"type": "text", "text": q}]


def test_format_depth_rounds_and_clips():
    assert P.format_depth(1.2344) == "1.234"
    assert P.format_depth(1.2346) == "1.235"
    assert P.format_depth(0.0) == "0.001"
    assert P.format_depth(-5) == "0.001"
    assert P.format_depth(1e6) == "300.000"
    assert P.format_depth(299.9999) == "300.000"
    with pytest.raises(ValueError, match="not finite"):
        P.format_depth(float("nan"))


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0.001, max_value=300.0, allow_nan=False))
def test_format_parse_round_trip_to_1mm(y):
    assert abs(P.parse_answer(P.answer_text(y)) - y) <= 0.0005 + 1e-9
    # The engine forces ANSWER_PREFIX and decodes only what follows.
    assert abs(P.parse_answer(P.format_depth(y) + P.ANSWER_SUFFIX) - y) <= 0.0005 + 1e-9


def test_parse_answer_accepts_template_variants():
    assert P.parse_answer("The pixel is 12.345 meters away from the camera.") == 12.345
    assert P.parse_answer("  the pixel is 7 meters away from the camera.<|im_end|>") == 7.0
    assert P.parse_answer("0.5") == 0.5
    assert P.parse_answer("3.250 meters away from the camera.") == 3.25


@pytest.mark.parametrize("garbage", [
    "", "hello", "The pixel is meters away", "The pixel is -1.5 meters away from the camera.", "-2.0",
    "1.2.3", "12abc", "nan", "inf meters", "The pixel is far away.", None, 3.5, b"1.0", ["1.0"],
])
def test_parse_answer_returns_none_on_garbage(garbage):
    assert P.parse_answer(garbage) is None


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_answer_never_raises(text):
    value = P.parse_answer(text)
    assert value is None or (value >= 0 and np.isfinite(value))


def test_sample_query_pixels_basic_contract():
    cand = np.zeros((20, 30), bool)
    cand[5:10, 3:9] = True  # 30 candidates
    r, c = P.sample_query_pixels(cand, 12, seed=3)
    assert len(r) == 12 and cand[r, c].all()
    assert len(set(zip(r.tolist(), c.tolist()))) == 12
    r2, c2 = P.sample_query_pixels(cand, 12, seed=3)
    assert np.array_equal(r, r2) and np.array_equal(c, c2)
    r3, c3 = P.sample_query_pixels(cand, 100, seed=0)  # more than available: all of them
    assert sorted(zip(r3.tolist(), c3.tolist())) == sorted(zip(*np.nonzero(cand)))
    sparse = np.where(cand, 2.0, 0.0)  # a sparse map works as the candidate mask
    assert len(P.sample_query_pixels(sparse, 5, seed=0)[0]) == 5
    with pytest.raises(ValueError, match="depth_or_image"):
        P.sample_query_pixels(cand, 5, edge_weight=1.0)


def test_point_edge_strength_is_each_points_largest_step_to_a_neighbouring_point():
    """Written out by hand on three points in a row (2 m, 2 m, 8 m; the third far right): the middle point's cell
    borders both others, so its strength is the largest step log(8/2), as is the last point's; the first point's
    only neighbour is the middle one (step 0). On a sparse map drawn from a real scene the measured points that sit
    next to a depth jump weigh more than the others."""
    sparse = np.zeros((5, 30))
    sparse[2, 2], sparse[2, 10], sparse[2, 25] = 2.0, 2.0, 8.0
    s = P.point_edge_strength(sparse)
    assert (s[2, 2], s[2, 10], s[2, 25]) == (0.0, 1.0, 1.0) and np.count_nonzero(s) == 2
    sparse[2, 2] = 4.0  # steps log 2 (first-middle) and log 4 (middle-last): strengths 0.5, 1, 1
    s = P.point_edge_strength(sparse)
    assert s[2, 2] == pytest.approx(np.log(2) / np.log(4)) and s[2, 10] == 1.0 and s[2, 25] == 1.0
    assert np.array_equal(P.point_edge_strength(sparse.T), s.T)  # the same points in a column
    assert not P.point_edge_strength(np.zeros((4, 4))).any() and not P.point_edge_strength(sparse * 0 + 3.0).any()


def _near_edge_fraction(rows, cols, edge_col):
    return float(np.mean(np.abs(cols - edge_col + 0.5) <= 2))


def test_sample_query_pixels_prefers_depth_and_image_edges():
    h, w = 48, 64
    depth = np.full((h, w), 2.0)
    depth[:, 32:] = 6.0  # a step edge between columns 31 and 32
    cand = np.ones((h, w), bool)
    rows, cols = P.sample_query_pixels(cand, 300, seed=0)
    uniform = _near_edge_fraction(rows, cols, 32)
    rows, cols = P.sample_query_pixels(cand, 300, seed=0, edge_weight=30.0, depth_or_image=depth)
    weighted = _near_edge_fraction(rows, cols, 32)
    # Uniform: 4 of 64 columns (~6 %); weighted: 4*31 / (60 + 4*31) (~67 %).
    assert uniform < 0.15 and weighted > 0.45

    # The same edge seen only through a sparse map (zeros filled from the nearest point) ...
    sparse = np.zeros_like(depth)
    sparse[::4, ::4] = depth[::4, ::4]
    rows, cols = P.sample_query_pixels(cand, 300, seed=1, edge_weight=30.0, depth_or_image=sparse)
    assert _near_edge_fraction(rows, cols, 32) > 3 * uniform
    # ... or, for candidates that are the sparse points themselves, as each point's step to its neighbours: the
    # points of the columns on either side of the edge (28 and 32) have strength 1, every other point 0, and are
    # picked far more often than their share (2 of 16 columns)
    strength = P.point_edge_strength(sparse)
    assert set(np.unique(strength[sparse > 0])) == {0.0, 1.0}
    assert sorted(set(np.nonzero(strength)[1])) == [28, 32] and not strength[sparse == 0].any()
    rows, cols = P.sample_query_pixels(sparse, 30, seed=4, edge_weight=30.0, strength=strength)
    assert np.mean(np.isin(cols, [28, 32])) > 0.6
    with pytest.raises(ValueError, match="strength is \\(8, 8\\) but candidates is \\(48, 64\\)"):
        P.sample_query_pixels(sparse, 3, edge_weight=1.0, strength=np.zeros((8, 8)))
    # ... or through an RGB image.
    image = np.zeros((h, w, 3), np.uint8)
    image[:, 32:] = 200
    rows, cols = P.sample_query_pixels(cand, 300, seed=2, edge_weight=30.0, depth_or_image=image)
    assert _near_edge_fraction(rows, cols, 32) > 0.45
