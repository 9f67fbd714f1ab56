"""``self_attention_max_keys``: the sharpener's self-attention over average-pooled keys (a depthkit speed switch).

The pooled attention is checked against a float64 NumPy computation written from its definition (cells averaged by
loops, one softmax per query with log(cell size) added), against exact attention on a grid that is constant within
every cell (where the two are equal by construction, ragged cells included), and through a tiny SharpDepth: a grid
within the limit runs bit for bit as exact attention, the UNets get their own processors back, measured pixels stay.
"""

import math

import numpy as np
import pytest
import torch

from depthkit.sharpen.attention import PooledKeysAttention, key_pool_factor, pooled_keys, pooled_self_attention
from depthkit.sharpen.config import SharpDepthConfig
from depthkit.sharpen.model import SharpDepth
from depthkit.sharpen.tiny import build_tiny_lotus


def _factor_by_search(h: int, w: int, max_keys: int) -> int:
    """The definition, by search: the first p whose p x p cells (ragged ones kept) number at most max_keys."""
    if max_keys == 0:
        return 1
    return next(p for p in range(1, h + w + 2) if -(-h // p) * -(-w // p) <= max_keys)


def test_key_pool_factor_is_the_smallest_factor_that_fits():
    for h in range(1, 40, 3):
        for w in range(1, 50, 4):
            for max_keys in (0, 1, 2, 5, 12, 100, 6400):
                assert key_pool_factor(h, w, max_keys) == _factor_by_search(h, w, max_keys), (h, w, max_keys)
    assert key_pool_factor(90, 120, 6400) == 2  # 480 px in the embedded default: 10,800 tokens -> 45 x 60 keys
    assert key_pool_factor(60, 80, 6400) == 1  # 320 px: 4,800 tokens, exact
    with pytest.raises(ValueError, match="max_keys must be >= 0"):
        key_pool_factor(4, 4, -1)
    with pytest.raises(ValueError, match="at least one row"):
        key_pool_factor(0, 4, 3)


def _cells_by_loops(tokens: np.ndarray, h: int, w: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """tokens N x C (row-major h x w) -> (cell means M x C, cell sizes M), cells row-major, ragged ones kept."""
    grid = tokens.reshape(h, w, -1)
    means, sizes = [], []
    for top in range(0, h, p):
        for left in range(0, w, p):
            cell = grid[top:top + p, left:left + p].reshape(-1, grid.shape[-1])
            means.append(cell.mean(0))
            sizes.append(len(cell))
    return np.array(means), np.array(sizes, dtype=np.float64)


def test_pooled_keys_average_the_cells():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(2, 5 * 7, 3)).astype(np.float32)
    pooled, counts = pooled_keys(torch.from_numpy(tokens), (5, 7), 2)
    for b in range(2):
        means, sizes = _cells_by_loops(tokens[b].astype(np.float64), 5, 7, 2)
        np.testing.assert_allclose(pooled[b].numpy(), means, atol=1e-6)
        np.testing.assert_array_equal(counts.numpy(), sizes)
    with pytest.raises(ValueError, match="do not fill a 5 x 6 grid"):
        pooled_keys(torch.from_numpy(tokens), (5, 6), 2)


def _attention(seed: int = 0):
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(seed)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    with torch.no_grad():  # to_out's bias, so a wrong order of projection and bias would show
        attn.to_out[0].bias.normal_()
    return attn


def _pooled_by_numpy(attn, tokens: np.ndarray, h: int, w: int, p: int) -> np.ndarray:
    """The definition in float64: queries from every token, keys/values from the cell means, one softmax per query
    and head over the cells with log(cell size) added to each score, then to_out."""
    wq, wk, wv = (getattr(attn, n).weight.detach().double().numpy() for n in ("to_q", "to_k", "to_v"))
    wo, bo = attn.to_out[0].weight.detach().double().numpy(), attn.to_out[0].bias.detach().double().numpy()
    heads, out = attn.heads, []
    for b in range(tokens.shape[0]):
        means, sizes = _cells_by_loops(tokens[b], h, w, p)
        q, k, v = tokens[b] @ wq.T, means @ wk.T, means @ wv.T
        d = q.shape[1] // heads
        per_head = []
        for i in range(heads):
            s = q[:, i * d:(i + 1) * d] @ k[:, i * d:(i + 1) * d].T / math.sqrt(d) + np.log(sizes)[None]
            a = np.exp(s - s.max(1, keepdims=True))
            per_head.append((a / a.sum(1, keepdims=True)) @ v[:, i * d:(i + 1) * d])
        out.append(np.concatenate(per_head, 1) @ wo.T + bo)
    return np.stack(out)


@pytest.mark.parametrize("grid, max_keys", [((5, 7), 12), ((6, 8), 12), ((7, 9), 4)])
def test_pooled_attention_matches_its_definition(grid, max_keys):
    h, w = grid
    attn = _attention()
    tokens = np.random.default_rng(1).normal(size=(2, h * w, 16))
    processor = PooledKeysAttention(max_keys)
    processor.grid = grid
    p = key_pool_factor(h, w, max_keys)
    assert p > 1
    with torch.no_grad():
        got = processor(attn, torch.from_numpy(tokens).float()).numpy()
    np.testing.assert_allclose(got, _pooled_by_numpy(attn, tokens, h, w, p), atol=2e-5)


def test_a_grid_constant_within_its_cells_attends_exactly_as_the_full_grid():
    from diffusers.models.attention_processor import AttnProcessor2_0

    h, w, p = 7, 9, 2  # ragged last row and column of cells: 2 x 2, 2 x 1, 1 x 2 and 1 x 1 cells
    attn = _attention(3)
    cells = torch.randn(2, -(-h // p), -(-w // p), 16)
    grid = cells.repeat_interleave(p, 1).repeat_interleave(p, 2)[:, :h, :w]  # each cell's tokens equal
    tokens = grid.reshape(2, h * w, 16)
    processor = PooledKeysAttention(max_keys=20)
    processor.grid = (h, w)
    assert key_pool_factor(h, w, 20) == p
    with torch.no_grad():
        exact = AttnProcessor2_0()(attn, tokens)
        pooled = processor(attn, tokens)
    torch.testing.assert_close(pooled, exact, atol=1e-5, rtol=1e-5)


def test_cross_attention_and_grids_within_the_limit_are_exact():
    from diffusers.models.attention_processor import AttnProcessor2_0

    attn = _attention(4)
    tokens, text = torch.randn(1, 30, 16), torch.randn(1, 2, 16)
    processor = PooledKeysAttention(max_keys=30)
    processor.grid = (5, 6)
    with torch.no_grad():
        assert torch.equal(processor(attn, tokens), AttnProcessor2_0()(attn, tokens))  # 30 tokens fit
        processor.max_keys = 4
        assert torch.equal(processor(attn, tokens, text), AttnProcessor2_0()(attn, tokens, text))
        assert not torch.allclose(processor(attn, tokens), AttnProcessor2_0()(attn, tokens), atol=1e-4)
        with pytest.raises(ValueError, match="cannot take an attention mask"):
            processor(attn, tokens, attention_mask=torch.zeros(1, 30, 30))
    with pytest.raises(ValueError, match="max_keys >= 1"):
        PooledKeysAttention(0)


def _unet_call(unet, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, unet.config.in_channels, h, w, generator=g)
    text = torch.randn(1, 2, unet.config.cross_attention_dim, generator=g)
    cls = torch.randn(1, 4, generator=g)
    with torch.no_grad():
        return unet(x, 999, encoder_hidden_states=text, class_labels=cls).sample


def test_the_context_pools_the_unets_self_attention_and_gives_its_processors_back():
    from diffusers.models.attention_processor import AttnProcessor

    unet = build_tiny_lotus("generative", seed=0).unet
    first = next(m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock").attn1
    first.set_processor(AttnProcessor())  # diffusers' other plain processor: kept, and used for what is not pooled
    before = dict(unet.attn_processors)
    exact = _unet_call(unet)  # 16 x 24 latent: self-attention over an 8 x 12 grid, 96 tokens
    with pooled_self_attention(unet, 96):
        assert torch.equal(_unet_call(unet), exact)  # the grid fits: exact, bit for bit
    with pooled_self_attention(unet, 24):  # 2 x 2 cells
        kinds = {type(v).__name__ for k, v in unet.attn_processors.items() if "attn1" in k}
        assert kinds == {"PooledKeysAttention"}
        assert first.processor.exact is before[next(k for k, v in before.items() if v is first.processor.exact)]
        assert isinstance(first.processor.exact, AttnProcessor)
        assert all(type(v).__name__ != "PooledKeysAttention" for k, v in unet.attn_processors.items()
                   if "attn2" in k)
        pooled = _unet_call(unet)
    assert not torch.allclose(pooled, exact, atol=1e-5)
    same = lambda: all(v is before[k] for k, v in unet.attn_processors.items())  # noqa: E731  (the objects)
    assert same()
    assert torch.equal(_unet_call(unet), exact)
    with pytest.raises(RuntimeError, match="inside"), pooled_self_attention(unet, 24):
        raise RuntimeError("inside")
    assert same()
    with pooled_self_attention(unet, 0):  # off: nothing installed
        assert same()


def test_the_context_refuses_a_unet_it_cannot_pool():
    unet = build_tiny_lotus("generative", seed=0).unet
    with pytest.raises(ValueError, match="must be >= 0"), pooled_self_attention(unet, -1):
        pass
    with pytest.raises(ValueError, match="this one has none"), pooled_self_attention(torch.nn.Linear(2, 2), 8):
        pass
    attn = next(m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock").attn1
    own = attn.processor

    class Custom:  # a processor the pooled form does not stand in for (IP-adapter, cross-frame, ...)
        def __call__(self, *args, **kwargs):
            return own(*args, **kwargs)

    attn.set_processor(Custom())
    with pytest.raises(ValueError, match="its processor is Custom, not one of"), pooled_self_attention(unet, 8):
        pass
    attn.set_processor(own)
    attn.scale_qk = False
    with pytest.raises(ValueError, match="scale_qk=False"), pooled_self_attention(unet, 8):
        pass
    attn.scale_qk = True
    attn.group_norm = torch.nn.GroupNorm(1, 64)
    with pytest.raises(ValueError, match="group_norm"), pooled_self_attention(unet, 8):
        pass
    attn.group_norm = None
    assert all(type(v).__name__ != "PooledKeysAttention" for v in unet.attn_processors.values())


@pytest.fixture(scope="module")
def lotus():
    return build_tiny_lotus("generative", seed=0)


def _frame(h=128, w=192):
    rng = np.random.default_rng(0)
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    depth = np.tile(np.linspace(1.0, 5.0, w, dtype=np.float32), (h, 1))
    depth[h // 4: h // 2, w // 4: w // 2] = 1.5
    sparse = np.zeros_like(depth)
    ys, xs = rng.integers(0, h, 60), rng.integers(0, w, 60)
    sparse[ys, xs] = depth[ys, xs] * 1.01
    return image, depth, sparse


def test_sharpdepth_with_the_switch(lotus):
    image, depth, sparse = _frame()  # 128 x 192: latent 16 x 24, self-attention over 8 x 12 = 96 tokens
    exact = SharpDepth(lotus).sharpen(image, depth, sparse).depth
    fits = SharpDepth(lotus, {"self_attention_max_keys": 96}).sharpen(image, depth, sparse).depth
    assert np.array_equal(fits, exact)
    pooled_model = SharpDepth(lotus, {"self_attention_max_keys": 24})
    pooled = pooled_model.sharpen(image, depth, sparse).depth
    assert not np.allclose(pooled, exact, atol=1e-6)
    measured = sparse > 0
    assert np.array_equal(pooled[measured], sparse[measured])
    assert all(type(v).__name__ != "PooledKeysAttention" for v in lotus.unet.attn_processors.values())
    assert np.array_equal(SharpDepth(lotus).sharpen(image, depth, sparse).depth, exact)


def test_a_separate_pass1_unet_is_pooled_too(lotus):
    """With a separate pass-1 Lotus UNet (``lotus_unet``), its self-attention reads pooled keys as well."""
    import copy

    image, depth, sparse = _frame()
    pass1 = copy.deepcopy(lotus.unet)
    seen = []
    for module in pass1.modules():
        if type(module).__name__ == "BasicTransformerBlock":
            module.attn1.register_forward_pre_hook(lambda m, *_: seen.append(type(m.processor).__name__))
    SharpDepth(lotus, {"self_attention_max_keys": 24}, lotus_unet=pass1).sharpen(image, depth, sparse)
    assert seen and set(seen) == {"PooledKeysAttention"}
    seen.clear()
    SharpDepth(lotus, lotus_unet=pass1).sharpen(image, depth, sparse)
    assert seen and "PooledKeysAttention" not in seen


def test_pooled_keys_keep_the_models_dtype():
    tokens = torch.full((1, 16, 2), 1.0, dtype=torch.bfloat16)
    tokens[:, ::2] = 1 + 2 ** -7
    pooled, _ = pooled_keys(tokens, (4, 4), 2)
    assert pooled.dtype == torch.bfloat16
    assert torch.equal(pooled, tokens.float().view(1, 2, 2, 2, 2, 2).mean((2, 4)).reshape(1, 4, 2).to(torch.bfloat16))


def test_the_switch_is_checked_and_off_by_default():
    assert SharpDepthConfig().self_attention_max_keys == 0
    with pytest.raises(ValueError, match="self_attention_max_keys must be >= 0"):
        SharpDepthConfig(self_attention_max_keys=-5)
    with pytest.raises(ValueError, match="self_attention_max_keys must be"):
        SharpDepthConfig.from_dict({"self_attention_max_keys": 2.5})
