"""SharpDepth's mechanism in miniature (:mod:`depthkit.sharpen.miniature`), scored on scenes not trained on.

The paper's setting, small: a metric input that is right on average but has rounded, displaced edges (GT sampled at
1/4 resolution and upsampled bilinearly, the stand-in for a discriminative model such as UniDepth; GT only makes
this input and scores), and a tiny Lotus trained on dense GT of other scenes whose edges are clearly sharper than
that input (checked first). The Lotus is test data (``tests/data/mini_lotus``, ~0.75 MB, written by
:func:`~depthkit.sharpen.miniature.save_lotus`; its README gives the command), so only SharpDepth trains here; a
``slow`` test retrains the Lotus with that command and checks it scores the same. SharpDepth trained label-free must
improve the input's DBE accuracy by a clear margin with MAE within 5 %, and each of the paper's mechanisms, switched
off through :class:`~depthkit.sharpen.model.SharpDepthConfig`, must measurably lose on the measure it is there for:

- SDS off (``lambda_sds=0``) — DBE accuracy (SDS is what carries Lotus's edges into the sharpener);
- reconstruction weighted by 1 − e instead of e (``recons_weight="one_minus_e"``) — MAE away from depth edges;
- gating off (``gating=False``: pass 2 always gets pure noise) — MAE inside painted decoys and away from edges, on
  the *decoy* scenes (:data:`~depthkit.sharpen.miniature.DECOY_SPLIT`): every box painted to look 1-2 m off, so
  the Lotus (trained on honest scenes) is wrong there while the metric input is right. Where Lotus and the input
  roughly agree, the gate hands the sharpener the metric latent; without it the sharpener can only redraw from the
  image. On the honest scenes gating does not matter measurably (below).

Measured on the 16 held-out scenes (committed Lotus, SharpDepth 30 steps — ``benchmarks/sharpen_ablation.py``
runs 40; each cell is the range over SharpDepth seeds 0-3, each run alone; the test uses seed 0). Honest scenes
(``make_split(32, 16)``):

| | MAE (m) | MAE near edges (m) | MAE elsewhere (m) | DBE acc (px) |
|---|---:|---:|---:|---:|
| metric input | 0.280 | 0.640 | 0.053 | 0.845 |
| Lotus alone (pass 1, affine-invariant) | – | – | – | 0.471 |
| untrained SharpDepth (initial Lotus as both passes) | 0.260 | 0.355 | 0.199 | 0.485 |
| full (defaults) | 0.237-0.239 | 0.377-0.387 | 0.145-0.151 | 0.433-0.472 |
| gating off | 0.238 | 0.376-0.383 | 0.149-0.153 | 0.367-0.420 |
| reconstruction weighted by 1 − e | 0.231-0.232 | 0.344-0.348 | 0.160-0.163 | 0.387-0.422 |
| λ_SDS = 0 | 0.303-0.318 | 0.550-0.576 | 0.151-0.160 | 0.703-0.765 |

Decoy scenes (``make_split(32, 16, **DECOY_SPLIT)``; "in decoys" = inside painted boxes, away from edges):

| | MAE (m) | MAE elsewhere (m) | MAE in decoys (m) | DBE acc (px) |
|---|---:|---:|---:|---:|
| metric input | 0.330 | 0.064 | 0.096 | 0.976 |
| Lotus alone | – | – | – | 0.618 |
| untrained SharpDepth | 0.482 | 0.353 | 0.958 | 0.689 |
| full (defaults) | 0.405-0.423 | 0.262-0.276 | 0.736-0.789 | 0.610-0.619 |
| gating off | 0.433-0.441 | 0.296-0.299 | 0.823-0.862 | 0.602-0.663 |
| ``gate()`` broken to return the fill whatever e | 0.433-0.443 | 0.295-0.301 | 0.831-0.856 | 0.615-0.675 |

What holds, on every seed: the full method sharpens (DBE −44 to −49 %, asserted < 0.7 x the input) and lowers the
MAE (−15 %; asserted within +5 %), and beats the untrained init on MAE (−8 to −9 %; asserted < 0.95 x); SDS off
loses DBE (0.70-0.77 against 0.43-0.47 px); 1 − e loses MAE away from edges (0.160-0.163 against 0.145-0.151 m).
On the decoy scenes gating off loses MAE in decoys by 7-12 % (seed by seed; asserted full < 0.96 x gating off) and
away from edges by 7-12 % (asserted < 0.97 x), and a gate broken to ignore e scores as gating off (fails both).
The decoy scenes are the paper's stated limit too: with Lotus wrong in every box, SharpDepth is sharper than its
input but worse on MAE (0.41 against 0.33 m), with or without gating. What does not hold: on the honest scenes
gating off is *sharper* than the full method (the paper finds gating better on every measure) and only slightly
worse away from edges (overlapping ranges; not run here: at 40 steps a gate that ignored e passed that comparison,
hence the decoy scenes); 1 − e beats e on overall MAE (strict xfail), because near edges e is high where the smooth
input is wrong and the e-weighted reconstruction pulls the output towards it there.

Runtime: five SharpDepth runs of ~5-7 s (one thread) and ~1 s per scoring, plus ~20 s of interpreter start,
collection and imports (diffusers alone ~9 s): ``time python -m pytest tests/test_sharpen_mechanism.py`` took
49-62 s wall (pytest's own count 41-55 s; 32-37 s of CPU) on the 2-core machine at load 3.6-4.1, two other jobs
running. The ``slow`` provenance test (retraining the Lotus) adds ~90 s.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from depthkit.sharpen import miniature as mini

SEEDS = (0,)
SHARPEN_STEPS = 30
N_TRAIN, N_TEST = 32, 16
LOTUS_DIR = Path(__file__).parent / "data" / "mini_lotus"


@pytest.fixture(scope="module")
def lotus(one_thread):
    from depthkit.sharpen.lotus import LotusModel

    return LotusModel.from_pretrained(LOTUS_DIR)


@pytest.fixture(scope="module")
def splits():
    """Scenes by name: (SharpDepth's training scenes, held-out scenes)."""
    return {"honest": mini.make_split(N_TRAIN, N_TEST), "decoys": mini.make_split(N_TRAIN, N_TEST, **mini.DECOY_SPLIT)}


@pytest.fixture(scope="module")
def untrained(lotus, splits):
    """Scores of the initial Lotus as both passes on the honest held-out scenes."""
    from depthkit.sharpen.model import SharpDepth

    return mini.evaluate(SharpDepth(lotus), splits["honest"][1])


_CACHE: dict = {}


def _scores(lotus, splits, config, scenes="honest"):
    """Mean scores over ``SEEDS`` of SharpDepth trained with ``config`` on ``scenes`` (computed once each)."""
    key = (scenes, repr(sorted(config.items())))
    if key not in _CACHE:
        train, test = splits[scenes]
        rows = [mini.evaluate(mini.train_sharpdepth(lotus, train, config, steps=SHARPEN_STEPS, seed=s), test)
                for s in SEEDS]
        _CACHE[key] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(scenes, config, {k: round(v, 3) for k, v in _CACHE[key].items()})
    return _CACHE[key]


@pytest.fixture(scope="module")
def full(lotus, splits):
    return _scores(lotus, splits, {})


def test_the_committed_lotus_is_sharper_than_the_metric_input(untrained):
    """The setting itself: without a Lotus whose edges beat the input's there is nothing to distil."""
    assert untrained["dbe_lotus"] < 0.7 * untrained["dbe_in"], untrained


def test_the_committed_lotus_says_how_to_remake_it():
    assert mini.LOTUS_COMMAND in (LOTUS_DIR / "README.md").read_text()


@pytest.mark.slow
def test_the_lotus_command_remakes_the_committed_lotus(tmp_path, untrained):
    """Provenance: ``LOTUS_COMMAND`` (run as a subprocess, into a temporary folder) makes a Lotus that scores as the
    committed one (bit-identical on one machine and torch version; within 5 % is what is asserted). ~60-70 s."""
    from depthkit.sharpen.lotus import LotusModel
    from depthkit.sharpen.model import SharpDepth

    root = Path(__file__).resolve().parents[1]
    args = ["-m", "depthkit.sharpen.miniature", "--out"]
    assert " ".join(args) in mini.LOTUS_COMMAND
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *args, str(tmp_path / "mini_lotus")], cwd=root, env=env, check=True)
    held_out = mini.make_split(N_TRAIN, N_TEST)[1]
    remade = mini.evaluate(SharpDepth(LotusModel.from_pretrained(tmp_path / "mini_lotus")), held_out)
    assert remade["dbe_lotus"] < 0.7 * remade["dbe_in"], remade
    for key in ("dbe_lotus", "dbe_out", "mae_out"):
        assert abs(remade[key] - untrained[key]) < 0.05 * untrained[key], (key, remade[key], untrained[key])


def test_sharpdepth_sharpens_its_metric_input_on_unseen_scenes(full):
    assert full["dbe_out"] < 0.7 * full["dbe_in"], full
    assert full["mae_out"] <= 1.05 * full["mae_in"], full


def test_training_improves_on_the_untrained_init(untrained, full):
    """Label-free training must buy something over using the initial Lotus as both passes: metric accuracy."""
    assert full["mae_out"] < 0.95 * untrained["mae_out"], (full["mae_out"], untrained["mae_out"])


@pytest.mark.parametrize("config, measure", [
    ({"lambda_sds": 0.0}, "dbe_out"),
    ({"recons_weight": "one_minus_e"}, "mae_flat_out"),
    pytest.param({"recons_weight": "one_minus_e"}, "mae_out", marks=pytest.mark.xfail(
        reason="1 − e beats e on overall MAE in this miniature; see the module docstring", strict=True)),
], ids=["sds_off-dbe", "recons_one_minus_e-mae_flat", "recons_one_minus_e-mae"])
def test_each_mechanism_matters(lotus, splits, full, config, measure):
    broken = _scores(lotus, splits, config)
    assert full[measure] < broken[measure], (measure, full[measure], broken[measure])


@pytest.mark.parametrize("measure, margin", [("mae_decoy_out", 0.96), ("mae_flat_out", 0.97)])
def test_gating_keeps_the_metric_input_where_lotus_is_wrong(lotus, splits, measure, margin):
    """On the decoy scenes the gate is what lets the metric input through where Lotus and the input roughly agree;
    pure noise in pass 2 leaves only the (misled) image."""
    gated = _scores(lotus, splits, {}, "decoys")
    noise = _scores(lotus, splits, {"gating": False}, "decoys")
    assert gated[measure] < margin * noise[measure], (measure, gated[measure], noise[measure])
