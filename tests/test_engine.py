"""The stage-1 inference engine (depthkit.complete.engine) against the naive per-pixel generate() reference.

What is compared (see the engine's module docstring):
- constrained engine == ``generate()`` with the same template + digit grammar as a LogitsProcessor, token for
  token, on a random tiny model whose answers differ from pixel to pixel (weights drawn with std 0.3);
- free engine decoding == plain unconstrained greedy ``generate()`` on the same random model;
- rope pixel reference == a teacher-forced forward of the whole sequence at the positions of positions.py;
- residual-head readout == the head applied to the stock model's last hidden state of the full sequence;
- a tiny model trained to write the template: constrained engine numbers == plain ``generate()`` numbers.
"""

import numpy as np
import pytest
import torch

from depthkit.complete import prompts as P
from depthkit.complete.decoding import AnswerGrammar, answer_confidence, naive_answers
from depthkit.complete.depth_inputs import SDIMConfig, prepare_depth_inputs
from depthkit.complete.engine import CompletionEngine
from depthkit.complete.model import SDIMModel
from depthkit.complete.positions import pixel_grid_position, prefix_position_ids, suffix_position_ids
from depthkit.complete.processor import build_tiny_processor, map_to_resized
from depthkit.complete.tiny import build_tiny_qwen2_5_vl
from depthkit.complete.tokenizer import build_offline_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tok():
    return build_offline_tokenizer()


@pytest.fixture(scope="module")
def proc(tok):
    return build_tiny_processor(tok)


@pytest.fixture(scope="module")
def model(tok):
    # std 0.3 instead of 0.02: a random model whose greedy answers depend on the pixel (else every answer is equal
    # and the comparison proves little). init="he" makes the depth branch change the image embedding.
    base = build_tiny_qwen2_5_vl(tok, seed=1, text={"initializer_range": 0.3}, initializer_range=0.3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return SDIMModel(base, SDIMConfig(init="he")).eval()


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    image = (rng.random((56, 84, 3)) * 255).astype(np.uint8)
    sparse = rng.uniform(0.5, 10.0, (56, 84)).astype(np.float32)
    sparse[rng.random((56, 84)) > 0.1] = 0.0
    # pixels chosen so that coordinate text lengths differ (x < 10 vs x >= 10): left padding inside a batch
    rows = np.array([0, 5, 55, 17, 30, 2, 44, 9, 27, 50, 13])
    cols = np.array([3, 80, 7, 42, 1, 66, 25, 9, 83, 58, 36])
    return image, sparse, rows, cols


def test_grammar_states(tok):
    g = AnswerGrammar(tok)
    assert g.max_tokens == 7 and len(set(g.token_ids)) == 11
    state = g.init_state(1)
    assert g.allowed(state)[0].tolist() == [True] * 10 + [False]  # no point first
    for choice in (3, 0, 0):
        state = g.advance(state, torch.tensor([choice]))
    assert g.allowed(state)[0].tolist() == [False] * 10 + [True]  # 3 integer digits: the point is forced
    state = g.advance(state, torch.tensor([10]))
    assert g.allowed(state)[0].tolist() == [True] * 10 + [False]
    for choice in (1, 2):
        state = g.advance(state, torch.tensor([choice]))
        assert not g.done(state)[0]
    state = g.advance(state, torch.tensor([5]))
    assert g.done(state)[0] and g.text([3, 0, 0, 10, 1, 2, 5]) == "300.125"


def test_answer_confidence_hand_cases():
    one_hot = np.eye(11)
    choices = [2, 10, 5, 0, 0]  # "2.500"
    probs = one_hot[choices]
    assert answer_confidence(choices, probs, [False] * 5) == pytest.approx(1.0)
    # units digit split 50/50 between 2 and 3: the "3" branch reaches 3.000 at best, 0.5 m away; 0.5 * 0.5 m on
    # 2.5 m at tolerance 10 % -> exp(-0.25 / 0.25)
    p = probs.copy()
    p[0] = 0.0
    p[0, 2] = p[0, 3] = 0.5
    assert answer_confidence(choices, p, [False] * 5) == pytest.approx(np.exp(-1.0))
    # the same doubt on the third decimal costs 1000x less
    p = probs.copy()
    p[4] = 0.0
    p[4, 0] = p[4, 1] = 0.5
    assert answer_confidence(choices, p, [False] * 5) == pytest.approx(np.exp(-0.0005 / 0.25))
    # point vs a digit at 50/50: "27..." is at least 27 m, 24.5 m away; a forced step counts nothing
    p = probs.copy()
    p[1] = 0.0
    p[1, 10] = p[1, 7] = 0.5
    assert answer_confidence(choices, p, [False] * 5) == pytest.approx(np.exp(-0.5 * 24.5 / 0.25))
    assert answer_confidence(choices, p, [False, True, False, False, False]) == pytest.approx(1.0)
    # probability on tokens outside the 11 (full-vocabulary softmax) is an error of the whole value
    p = probs.copy()
    p[2] *= 0.5
    assert answer_confidence(choices, p, [False] * 5) == pytest.approx(np.exp(-0.5 * 2.5 / 0.25))


def test_answer_confidence_is_carry_aware():
    """The issue's case: a 50/50 split between 0.999 and 1.000 is a 1 mm doubt and must score far above a 50/50
    split between 5 m and 9 m (per-digit scoring gave 0.0067 vs 0.018)."""
    one_hot = np.eye(11)

    def conf(choices, step, split):
        p = one_hot[choices].copy()
        p[step] = 0.0
        for c in split:
            p[step, c] = 1.0 / len(split)
        return answer_confidence(choices, p, [False] * len(choices))

    near_carry = [conf([0, 10, 9, 9, 9], 0, (0, 1)), conf([1, 10, 0, 0, 0], 0, (0, 1))]
    far = conf([5, 10, 0, 0, 0], 0, (5, 9))
    assert min(near_carry) > 0.99 and far < 0.02
    assert near_carry[0] == pytest.approx(np.exp(-0.0005 / 0.0999))


def test_engine_equals_constrained_generate(model, proc, scene):
    image, sparse, rows, cols = scene
    engine = CompletionEngine(model, proc, batch_size=4)
    prefix = engine.encode(image, sparse)
    got = engine.answer(prefix, rows, cols)
    ref = naive_answers(model, proc, image, sparse, rows, cols)
    assert got.texts == [r["number"] for r in ref]
    assert len(set(got.texts)) >= 4  # the answers really differ between pixels
    assert got.stats["n_batches"] == 3 and got.stats["n_unique"] == len(rows)  # 4 + 4 + 3: a partial last batch
    # everything up to the coordinates' "(" is common to every mask-0 suffix: computed once, as part of the prefix
    marker = "The current pixel is at ("
    common = P.chat_suffix_text(P.query_text(0, (0, 0))).split(marker)[0] + marker
    n_common = len(proc.tokenizer(common, add_special_tokens=False).input_ids)
    assert got.stats["shared_suffix_tokens"] == n_common > 20
    assert np.allclose(got.values, [min(max(float(r["number"]), P.MIN_DEPTH), P.MAX_DEPTH) for r in ref])
    assert got.ok.all() and ((got.confidence >= 0) & (got.confidence <= 1)).all()
    # the decoded tokens of generate() are the forced template followed by the number, nothing else
    forced = proc.tokenizer(P.ANSWER_PREFIX, add_special_tokens=False).input_ids
    assert all(r["tokens"][:len(forced)] == forced for r in ref)


def test_batching_padding_and_budget_do_not_change_answers(model, proc, scene):
    image, sparse, rows, cols = scene
    a = CompletionEngine(model, proc, batch_size=64)
    prefix = a.encode(image, sparse)
    full = a.answer(prefix, rows, cols)
    assert full.stats["n_batches"] == 1
    ids = a._suffix_ids(a.query_texts(*map_to_resized(rows, cols, (56, 84), prefix.resized_hw)[::-1], None))
    assert len({len(i) for i in ids}) > 1  # one batch with left padding
    tiny_budget = CompletionEngine(model, proc, batch_size=64, memory_budget_mb=1e-3)
    one = tiny_budget.answer(prefix, rows, cols)
    assert one.stats["batch_size"] == 1 and one.stats["n_batches"] == len(rows)
    assert one.texts == full.texts
    np.testing.assert_allclose(one.confidence, full.confidence, rtol=1e-4, atol=1e-6)
    # duplicates are answered once and returned in input order; a single query works
    dup = a.answer(prefix, np.r_[rows[:3], rows[:3]], np.r_[cols[:3], cols[:3]])
    assert dup.stats["n_unique"] == 3 and dup.texts == full.texts[:3] * 2
    single = a.answer(prefix, rows[4:5], cols[4:5])
    assert single.texts == full.texts[4:5]
    empty = a.answer(prefix, np.zeros(0, int), np.zeros(0, int))
    assert empty.values.shape == (0,) and empty.stats["n_batches"] == 0
    with pytest.raises(ValueError, match="inside the 56x84 image"):
        a.answer(prefix, [56], [0])



def test_a_memory_budget_beyond_floats_range_in_bytes_is_no_limit(model, proc, scene):
    """memory_budget_mb=1e308 is a legal (finite) option, but 1e308 MiB is inf bytes: the rows per batch are then
    batch_size (inf // bytes gave NaN and a bare "cannot convert float NaN to integer")."""
    image, sparse, rows, cols = scene
    engine = CompletionEngine(model, proc, batch_size=4)
    prefix = engine.encode(image, sparse)
    huge = CompletionEngine(model, proc, batch_size=4, memory_budget_mb=1e308).answer(prefix, rows, cols)
    assert huge.stats["batch_size"] == 4 and huge.stats["n_batches"] == 3
    assert huge.texts == engine.answer(prefix, rows, cols).texts

def test_prompt_prior_text_readout_equals_constrained_generate(model, proc, scene):
    image, sparse, rows, cols = scene
    cfg = P.PromptConfig(prompt_prior="guided")
    priors = np.array([0.75, 3.5, 12.25, 2.0])
    engine = CompletionEngine(model, proc, cfg, batch_size=3)
    got = engine.answer(engine.encode(image, sparse), rows[:4], cols[:4], priors)
    ref = naive_answers(model, proc, image, sparse, rows[:4], cols[:4], prompt_config=cfg, priors=priors)
    assert got.texts == [r["number"] for r in ref]
    with pytest.raises(ValueError, match="finite values > 0"):
        engine.answer(engine.encode(image, sparse), rows[:2], cols[:2], [1.0, 0.0])


def test_free_decoding_equals_plain_generate(model, proc, scene):
    image, sparse, rows, cols = scene
    engine = CompletionEngine(model, proc, batch_size=4, decode="free", max_new_tokens=8)
    got = engine.answer(engine.encode(image, sparse), rows[:6], cols[:6])
    ref = naive_answers(model, proc, image, sparse, rows[:6], cols[:6], constrained=False, max_new_tokens=8)
    assert got.texts == [r["text"] for r in ref]
    # a random model does not write the template: unreadable answers are flagged, never raised
    assert got.stats["n_unparseable"] == int((~got.ok).sum())
    assert np.isnan(got.values[~got.ok]).all() and (got.confidence[~got.ok] == 0).all()


def _full_sequence_forward(model, proc, image, sparse, suffix_ids, mode="text", pixel_rc=None):
    """The stock forward over prefix + suffix_ids as ONE sequence, at positions.py's positions."""
    out = proc(images=[image], text=[P.chat_prefix_text()], return_tensors="pt")
    pre = prefix_position_ids(model, out["input_ids"], out["image_grid_thw"], out["mm_token_type_ids"])
    ids = torch.cat([out["input_ids"], torch.tensor([suffix_ids])], dim=1)
    mm = torch.cat([out["mm_token_type_ids"], torch.zeros(1, len(suffix_ids), dtype=torch.long)], dim=1)
    hw = None if pixel_rc is None else pixel_grid_position(*pixel_rc, pre["image_start"][0][0])
    suffix_pos = suffix_position_ids(pre["next_pos"], torch.ones(1, len(suffix_ids)), mode, pixel_hw=hw)
    pos = torch.cat([pre["position_ids"].float(), suffix_pos.float()], dim=2)
    depth = prepare_depth_inputs(sparse, out["image_grid_thw"], out["pixel_values"], proc, model.sdim_config)
    with torch.no_grad():
        res = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=out["pixel_values"],
                    image_grid_thw=out["image_grid_thw"], mm_token_type_ids=mm, position_ids=pos,
                    output_hidden_states=True, **depth)
    return res, out["input_ids"].shape[1], pre


def test_rope_reference_matches_teacher_forced_full_sequence(tok, proc, scene):
    image, sparse, rows, cols = scene
    # rope_theta 10: at the stock 1e6 the h/w bands barely rotate over a small grid (SPEC section 3)
    rope = {"rope_type": "default", "rope_theta": 10.0, "mrope_section": [2, 3, 3]}
    base = build_tiny_qwen2_5_vl(tok, seed=2, text={"initializer_range": 0.3, "rope_parameters": rope},
                                 initializer_range=0.3)
    model = SDIMModel(base, SDIMConfig(init="he")).eval()
    cfg = P.PromptConfig(pixel_reference="rope")
    engine = CompletionEngine(model, proc, cfg, batch_size=3)
    prefix = engine.encode(image, sparse)
    got = engine.answer(prefix, rows[:5], cols[:5])
    assert len(set(got.texts)) > 1  # same text for every pixel: only the positions tell them apart
    assert got.stats["shared_suffix_tokens"] == 0  # rope positions differ per pixel: nothing to share
    g = engine.grammar
    rr, cc = map_to_resized(rows[:5], cols[:5], (56, 84), prefix.resized_hw)
    for i, text in enumerate(got.texts):
        number = [g.token_ids["0123456789.".index(ch)] for ch in text]
        suffix = engine._suffix_ids(engine.query_texts(cc[i:i + 1], rr[i:i + 1], None))[0]
        seq = suffix + number
        res, p_len, _ = _full_sequence_forward(model, proc, image, sparse, seq, "rope", (rr[i:i + 1], cc[i:i + 1]))
        logits = res.logits[0, p_len + len(suffix) - 1: p_len + len(seq) - 1][:, g.token_ids]
        state = g.init_state(1)
        for k, tok_id in enumerate(number):
            allowed = g.allowed(state)[0]
            choice = int(logits[k].masked_fill(~allowed, float("-inf")).argmax())
            assert g.token_ids[choice] == tok_id
            state = g.advance(state, torch.tensor([choice]))


def test_residual_head_readout_reads_the_last_suffix_hidden_state(model, proc, scene):
    from depthkit.complete.readout import ResidualHead

    image, sparse, rows, cols = scene
    with torch.random.fork_rng(devices=[]):  # its hidden layers: the same weights whichever tests ran before
        torch.manual_seed(2)
        head = ResidualHead(model.base.config.text_config.hidden_size)
    with torch.no_grad():
        torch.nn.init.normal_(head.net[-1].weight, std=0.5, generator=torch.Generator().manual_seed(0))
        torch.nn.init.normal_(head.log_scale.weight, std=0.5, generator=torch.Generator().manual_seed(1))
    cfg = P.PromptConfig(prompt_prior="nearest")
    priors = np.linspace(1.0, 5.0, 4)
    engine = CompletionEngine(model, proc, cfg, readout="residual_head", residual_head=head, batch_size=3)
    prefix = engine.encode(image, sparse)
    got = engine.answer(prefix, rows[:4], cols[:4], priors)
    assert got.ok.all() and 0 < got.confidence.min() and got.confidence.max() < 1
    assert np.ptp(got.confidence) > 0.01  # the head's uncertainty differs per pixel
    rr, cc = map_to_resized(rows[:4], cols[:4], (56, 84), prefix.resized_hw)
    for i in range(4):
        suffix = engine._suffix_ids(engine.query_texts(cc[i:i + 1], rr[i:i + 1], priors[i:i + 1]))[0]
        assert suffix[-1] == proc.tokenizer("\n", add_special_tokens=False).input_ids[0]  # after "assistant"
        res, _, _ = _full_sequence_forward(model, proc, image, sparse, suffix)
        with torch.no_grad():
            want, scale = head.predict_with_scale(res.hidden_states[-1][:, -1], torch.tensor([priors[i]]))
        assert got.values[i] == pytest.approx(float(want[0]), rel=1e-4)
        assert got.confidence[i] == pytest.approx(float(torch.exp(-scale[0] / 0.1)), rel=1e-4)
    assert not np.allclose(got.values, priors)  # the head really corrected the priors
    with pytest.raises(ValueError, match="needs priors"):
        engine.answer(prefix, rows[:2], cols[:2])
    with pytest.raises(ValueError, match="prompt_prior must be"):
        CompletionEngine(model, proc, readout="residual_head", residual_head=head)


def test_engine_refuses_bad_settings(model, proc):
    with pytest.raises(ValueError, match="readout"):
        CompletionEngine(model, proc, readout="digits")
    with pytest.raises(ValueError, match="decode"):
        CompletionEngine(model, proc, decode="beam")
    with pytest.raises(ValueError, match="needs residual_head"):
        CompletionEngine(model, proc, readout="residual_head")


def _train_template_model(tok, proc, image, steps=60):
    """A tiny model taught (teacher forcing, a few dozen steps) to answer in the template with varied numbers."""
    base = build_tiny_qwen2_5_vl(tok, seed=3)
    rng = np.random.default_rng(3)
    xy = [(int(x), int(y)) for x, y in zip(rng.integers(0, 56, 8), rng.integers(0, 28, 8))]
    texts = [P.chat_prefix_text() + P.chat_suffix_text(P.query_text(0, (x, y)), P.answer_text(1.234 + x / 7 + y / 3))
             for x, y in xy]
    out = proc(images=[image] * len(texts), text=texts, return_tensors="pt", padding=True)
    labels = out["input_ids"].clone()
    labels[out["attention_mask"] == 0] = -100
    start = tok.convert_tokens_to_ids("<|im_start|>")
    for r in range(len(texts)):
        labels[r, :int((out["input_ids"][r] == start).nonzero()[-1]) + 2] = -100  # answer tokens only
    opt = torch.optim.AdamW(base.parameters(), lr=4e-3)
    base.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(steps):
            loss = base(**out, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return SDIMModel(base.eval()).eval()


def test_constrained_engine_equals_plain_generate_on_a_template_model(tok, proc):
    rng = np.random.default_rng(4)
    image = (rng.random((28, 56, 3)) * 255).astype(np.uint8)
    sparse = np.zeros((28, 56), np.float32)
    sparse[3, 4] = 2.0
    model = _train_template_model(tok, proc, image)
    rows, cols = rng.integers(0, 28, 8), rng.integers(0, 56, 8)
    ref = naive_answers(model, proc, image, sparse, rows, cols, constrained=False, max_new_tokens=20)
    engine = CompletionEngine(model, proc, batch_size=3)
    got = engine.answer(engine.encode(image, sparse), rows, cols)
    well_formed = [r["text"].startswith(P.ANSWER_PREFIX) and r["text"].endswith(P.ANSWER_SUFFIX) for r in ref]
    assert sum(well_formed) >= 6, [r["text"] for r in ref]
    assert len({r["text"] for r in ref}) > 1
    for text, r, ok in zip(got.texts, ref, well_formed):
        if ok:
            assert P.answer_text(float(text)) == r["text"]


@pytest.mark.parametrize("height", [1, 3, 4])
def test_thin_images_are_read_channels_last(model, proc, height):
    """Images 1, 3 or 4 pixels tall: the image processor would guess channels-first; every path states the format,
    so the resized grid keeps the image's aspect (wide, not tall) and the engine still equals generate()."""
    from depthkit.complete.processor import process_image_text, resized_size

    rng = np.random.default_rng(height)
    image = (rng.random((height, 90, 3)) * 255).astype(np.uint8)
    sparse = np.zeros((height, 90), np.float32)
    sparse[0, ::7] = rng.uniform(1.0, 5.0, 13)
    out = process_image_text(proc, image, P.chat_prefix_text())
    grid = out["image_grid_thw"][0].tolist()
    assert (grid[1] * 14, grid[2] * 14) == resized_size(height, 90, proc) and grid[2] > grid[1]
    rows, cols = np.zeros(2, np.int64), np.array([3, 60])
    engine = CompletionEngine(model, proc)
    got = engine.answer(engine.encode(image, sparse), rows, cols)
    ref = naive_answers(model, proc, image, sparse, rows, cols, constrained=True)
    assert got.texts == [r["number"] for r in ref]
    with pytest.raises(ValueError, match="HxWx3"):
        process_image_text(proc, image.transpose(2, 0, 1), P.chat_prefix_text())


def test_bf16_guarantee_on_cpu(model, proc, scene):
    """bf16 (on the CPU): the engine decodes the same tokens as constrained generate() up to the first step where
    generate()'s winning margin (best minus runner-up allowed logit) is below BF16_MARGIN — and nowhere else may they
    differ. Ties go to the lowest token id on both sides."""
    import copy

    from depthkit.complete.engine import BF16_MARGIN

    image, sparse, _, _ = scene
    rng = np.random.default_rng(7)
    missing = np.argwhere(sparse <= 0)
    rows, cols = missing[rng.choice(len(missing), 24, replace=False)].T
    half = copy.deepcopy(model).to(torch.bfloat16)
    engine = CompletionEngine(half, proc, batch_size=16)
    got = engine.answer(engine.encode(image, sparse), rows, cols)
    ref = naive_answers(half, proc, image, sparse, rows, cols, constrained=True, margins=True)
    exact = 0
    for mine, r in zip(got.texts, ref):
        theirs = r["number"]
        if mine == theirs:
            exact += 1
            continue
        k = next(j for j in range(min(len(mine), len(theirs))) if mine[j] != theirs[j])
        assert r["margins"][k] < BF16_MARGIN, (mine, theirs, r["margins"])
    assert exact >= 18  # most answers are exact; the rest diverge only at a near tie


@pytest.mark.parametrize("mode", ["text", "rope", "grid_token"])
def test_residual_head_engine_equals_its_per_pixel_reference(tok, proc, scene, mode):
    """The fast path (one suffix pass, no decoding, no LM head) against one full forward per pixel."""
    from depthkit.complete.decoding import head_reference
    from depthkit.complete.readout import ResidualHead

    image, sparse, rows, cols = scene
    rope = {"rope_type": "default", "rope_theta": 10.0, "mrope_section": [2, 3, 3]}
    base = build_tiny_qwen2_5_vl(tok, seed=2, text={"initializer_range": 0.3, "rope_parameters": rope},
                                 initializer_range=0.3)
    model = SDIMModel(base, SDIMConfig(init="he")).eval()
    head = ResidualHead(64)
    with torch.no_grad():
        torch.nn.init.normal_(head.net[-1].weight, std=0.5, generator=torch.Generator().manual_seed(0))
        torch.nn.init.normal_(head.log_scale.weight, std=0.5, generator=torch.Generator().manual_seed(1))
    cfg = P.PromptConfig(prompt_prior="guided", pixel_reference=mode,
                         mask_text="none" if mode == "grid_token" else "mask_and_value")
    priors = np.linspace(1.0, 5.0, 5)
    engine = CompletionEngine(model, proc, cfg, readout="residual_head", residual_head=head, batch_size=2)
    got = engine.answer(engine.encode(image, sparse), rows[:5], cols[:5], priors)
    values, scales = head_reference(model, proc, head, image, sparse, rows[:5], cols[:5], cfg, priors)
    assert got.values == pytest.approx(values, rel=1e-5) and not np.allclose(values, priors)
    assert got.confidence == pytest.approx(np.exp(-scales / 0.1), rel=1e-4)
    if mode == "grid_token":  # everything but the query token is in the shared prefix: one token per pixel
        suffix = engine._suffix_ids(engine.query_texts(cols[:1], rows[:1], priors[:1]))[0]
        assert got.stats["shared_suffix_tokens"] == len(suffix) - 1
        # the same prior everywhere: only the query token's position tells the pixels apart
        same = engine.answer(engine.encode(image, sparse), rows[:5], cols[:5], np.full(5, 2.0))
        assert len(set(np.round(same.values, 6))) == 5


def test_grid_token_needs_the_residual_head(model, proc):
    cfg = P.PromptConfig(prompt_prior="guided", pixel_reference="grid_token", mask_text="none")
    with pytest.raises(ValueError, match="needs readout='residual_head'"):
        CompletionEngine(model, proc, cfg)
