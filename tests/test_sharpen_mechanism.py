"""SharpDepth's mechanism in miniature (:mod:`depthkit.sharpen.miniature`), scored on scenes not trained on.

The paper's setting, small: a metric input that is right on average but has rounded, displaced edges (GT sampled at
1/4 resolution and upsampled bilinearly, the stand-in for a discriminative model such as UniDepth; GT only makes
this input and scores), and a tiny Lotus trained on dense GT of other scenes whose edges are clearly sharper than
that input (checked first). SharpDepth trained label-free must improve the input's DBE accuracy by a clear margin
with MAE within 5 %, and each of the paper's mechanisms, switched off through
:class:`~depthkit.sharpen.model.SharpDepthConfig`, must measurably lose on the measure it is there for:

- SDS off (``lambda_sds=0``) — DBE accuracy (SDS is what carries Lotus's edges into the sharpener);
- gating off (``gating=False``: pass 2 always gets pure noise) — MAE away from depth edges (the gate keeps the
  metric input where Lotus agrees with it);
- reconstruction weighted by 1 − e instead of e (``recons_weight="one_minus_e"``) — MAE away from depth edges.

Measured on the 16 held-out scenes with the module's settings (one Lotus, SharpDepth 40 steps; each cell is the
range over SharpDepth seeds 0, 1, 2, 3, each run alone; the test uses seed 0):

| | MAE (m) | MAE near edges (m) | MAE elsewhere (m) | DBE acc (px) |
|---|---:|---:|---:|---:|
| metric input | 0.280 | 0.640 | 0.053 | 0.845 |
| Lotus alone (pass 1, affine-invariant) | – | – | – | 0.471 |
| untrained SharpDepth (initial Lotus as both passes) | 0.260 | 0.355 | 0.199 | 0.485 |
| full (defaults) | 0.236-0.239 | 0.382-0.388 | 0.147-0.148 | 0.429-0.471 |
| gating off | 0.238-0.239 | 0.375-0.384 | 0.148-0.155 | 0.377-0.441 |
| reconstruction weighted by 1 − e | 0.230-0.232 | 0.342-0.347 | 0.158-0.162 | 0.384-0.398 |
| λ_SDS = 0 | 0.306-0.334 | 0.567-0.610 | 0.147-0.165 | 0.592-0.796 |

What holds, on every seed: the full method sharpens (DBE −44 to −49 %, asserted < 0.7 x the input) and lowers the
MAE (−15 %; asserted within +5 %), and beats the untrained init on MAE (−9 %; asserted < 0.95 x); SDS off loses
DBE by 0.12-0.37 px; 1 − e loses MAE away from edges by 0.011-0.015 m (7-10 %). Weak: gating off loses MAE away
from edges on every seed but by only 0.001-0.008 m (1-5 %; seeds 2 and 3 are the small ones), and breaking the
gate in the code (``gate()`` returning the fill whatever e) still passed that comparison on seed 0; so it is a
non-strict xfail, and gating has no test here that can fail. What does not
hold (strict xfails): gating off is *sharper* than the full method (the paper finds gating better on every
measure), and 1 − e beats e on overall MAE, because near edges e is high where the smooth input is wrong and the
e-weighted reconstruction pulls the output towards it there.

Runtime: Lotus training (300 VAE + 200 UNet steps) ~60 s and each SharpDepth run ~6-7 s on one thread of the
2-core machine at load ~6 (other jobs running); the module is over the minute, hence ``slow``.
"""

import numpy as np
import pytest
import torch

from depthkit.sharpen import miniature as mini

SEEDS = (0,)
SHARPEN_STEPS = 40
N_TRAIN, N_TEST = 32, 16
pytestmark = pytest.mark.slow  # ~60 s of Lotus training + 4 SharpDepth runs: 90-100 s at load ~6 (see STATUS)


@pytest.fixture(scope="module")
def setting():
    """(train scenes, held-out scenes, trained tiny Lotus, untrained scores) — one thread: tiny models gain nothing
    from more."""
    from depthkit.sharpen.model import SharpDepth

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train, test = mini.make_split(N_TRAIN, N_TEST)
    lotus = mini.train_lotus(train)
    untrained = mini.evaluate(SharpDepth(lotus), test)  # evaluate() copies nothing; it only runs inference
    yield train, test, lotus, untrained
    torch.set_num_threads(before)


_CACHE: dict = {}


def _scores(setting, config):
    """Mean scores over ``SEEDS`` of SharpDepth trained with ``config`` (computed once per config)."""
    key = repr(sorted(config.items()))
    if key in _CACHE:
        return _CACHE[key]
    train, test, lotus, _ = setting
    rows = [mini.evaluate(mini.train_sharpdepth(lotus, train, config, steps=SHARPEN_STEPS, seed=s), test)
            for s in SEEDS]
    _CACHE[key] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return _CACHE[key]


@pytest.fixture(scope="module")
def full(setting):
    return _scores(setting, {})


def test_the_lotus_is_sharper_than_the_metric_input(setting):
    """The setting itself: without a Lotus whose edges beat the input's there is nothing to distil."""
    u = setting[3]
    assert u["dbe_lotus"] < 0.7 * u["dbe_in"], u


def test_sharpdepth_sharpens_its_metric_input_on_unseen_scenes(full):
    print("full:", {k: round(v, 3) for k, v in full.items()})
    assert full["dbe_out"] < 0.7 * full["dbe_in"], full
    assert full["mae_out"] <= 1.05 * full["mae_in"], full


def test_training_improves_on_the_untrained_init(setting, full):
    """Label-free training must buy something over using the initial Lotus as both passes: metric accuracy."""
    u = setting[3]
    assert full["mae_out"] < 0.95 * u["mae_out"], (full["mae_out"], u["mae_out"])


@pytest.mark.parametrize("config, measure", [
    ({"lambda_sds": 0.0}, "dbe_out"),
    pytest.param({"gating": False}, "mae_flat_out", marks=pytest.mark.xfail(
        reason="holds on seeds 0-3 but by 1-5 %, and a gate that ignores e is not caught; not a reliable test of "
               "gating", strict=False)),
    pytest.param({"gating": False}, "dbe_out", marks=pytest.mark.xfail(
        reason="gating off is sharper here (the paper finds gating better on every measure)", strict=True)),
    ({"recons_weight": "one_minus_e"}, "mae_flat_out"),
    pytest.param({"recons_weight": "one_minus_e"}, "mae_out", marks=pytest.mark.xfail(
        reason="1 − e beats e on overall MAE in this miniature; see the module docstring", strict=True)),
], ids=["sds_off-dbe", "gating_off-mae_flat", "gating_off-dbe", "recons_one_minus_e-mae_flat", "recons_one_minus_e-mae"])
def test_each_mechanism_matters(setting, full, config, measure):
    broken = _scores(setting, config)
    print(config, {k: round(v, 3) for k, v in broken.items()})
    assert full[measure] < broken[measure], (measure, full[measure], broken[measure])
