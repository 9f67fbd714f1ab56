"""The refiner's per-frame check (:mod:`depthkit.complete.refiner_check`): its weighted held-out error recomputed
independently, a wrong refiner switched off, the shipped refiner kept where the synthetic test split says it helps,
no decision where the measured points cannot judge (ToF holes), the check's working size."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from depthkit.complete.refiner import DenseRefiner
from depthkit.complete.refiner_check import CHECK_STRENGTHS, DISTANCE_BINS_PX, check_refiner

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
ROOT = Path(__file__).resolve().parent.parent


def _scene(pattern="random", n=120, h=48, w=64, index=0, split="val"):
    from depthkit.data.datasets.synthetic import SyntheticDataset

    kwargs = {"n": n} if pattern in ("random", "noisy") else {}
    s = SyntheticDataset(split=split, length=index + 1, height=h, width=w, sparse_pattern=pattern,
                         sparse_kwargs=kwargs)[index]
    return s["image"], s["sparse"], s["depth"]


def _random_refiner(seed=0):
    torch.manual_seed(seed)
    net = DenseRefiner(width=8)
    torch.nn.init.normal_(net.head[-1].weight, std=0.3)  # a spatially varying correction
    return net.eval()


def _shipped_refiner():
    folder = ROOT / "checkpoints" / "default" / "complete"
    info = json.loads((folder / "complete.json").read_text())["refiner"]
    return DenseRefiner.load(folder, info)


def _expected_errors(net, image, sparse, folds=2, seed=0):
    """The weighted held-out MAE per strength, by brute force: exact distances, loops over bins."""
    from depthkit.data.baselines import guided

    measured = sparse > 0
    ys, xs = np.nonzero(measured)
    fold = np.random.default_rng(seed).permutation(len(ys)) % folds  # the documented fold rule
    grid = np.stack(np.mgrid[:sparse.shape[0], :sparse.shape[1]], -1).reshape(-1, 2).astype(np.float64)

    def nearest(points, queries):
        return np.sqrt(((queries[:, None, :] - points[None, :, :]) ** 2).sum(-1)).min(1)

    pts = np.stack([ys, xs], 1).astype(np.float64)
    unmeasured = grid[~measured.reshape(-1)]
    du = nearest(pts, unmeasured)
    edges = np.asarray(DISTANCE_BINS_PX)
    rows = []  # (distance, errors per strength)
    for k in range(folds):
        keep = fold != k
        sp = np.zeros_like(sparse)
        sp[ys[keep], xs[keep]] = sparse[ys[keep], xs[keep]]
        base = guided(image, sp)
        r = net.log_correction(image, sp, base)
        dh = nearest(pts[keep], pts[~keep])
        for (y, x), d in zip(pts[~keep].astype(int), dh):
            rows.append((d, [abs(base[y, x] * np.exp(a * r[y, x]) - sparse[y, x]) for a in CHECK_STRENGTHS]))
    total, wsum = np.zeros(len(CHECK_STRENGTHS)), 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = [e for d, e in rows if lo <= d < hi]
        share_u = np.mean((du >= lo) & (du < hi))
        if not in_bin or share_u == 0:
            continue
        w = share_u / (len(in_bin) / len(rows))
        total += w * np.sum(in_bin, 0)
        wsum += w * len(in_bin)
    return total / wsum


def test_weighted_error_matches_an_independent_computation():
    image, sparse, _ = _scene()
    net = _random_refiner()
    check = check_refiner(net, image, sparse)
    assert check.decided and check.size == (48, 64)
    assert check.n_heldout == int((sparse > 0).sum())  # two folds: every measured pixel held out once
    expected = _expected_errors(net, image, sparse)
    np.testing.assert_allclose(check.errors, expected, rtol=1e-4)
    best = max(i for i, e in enumerate(expected) if e <= min(expected) * (1 + 1e-9))
    assert check.strength == CHECK_STRENGTHS[best]


def test_a_refiner_that_moves_depth_the_wrong_way_is_switched_off():
    image, sparse, _ = _scene()
    net = DenseRefiner(width=8)
    with torch.no_grad():
        net.head[-1].bias.fill_(1.0)  # every pixel 2.1x deeper
    check = check_refiner(net, image, sparse)
    assert check.decided and check.strength == 0.0
    assert np.all(np.diff(check.errors) > 0)  # every step of strength is worse
    untouched = DenseRefiner(width=8)  # zero correction: every strength equal, ties go to the strongest
    assert check_refiner(untouched, image, sparse).strength == 1.0


def test_the_shipped_refiner_is_kept_where_it_helps_and_not_judged_in_tof_holes():
    from depthkit.data.baselines import guided
    from depthkit.metrics import depth_metrics

    net = _shipped_refiner()
    image, sparse, depth = _scene("random", n=500, h=240, w=320, split="test")
    check = check_refiner(net, image, sparse)
    assert check.decided and check.strength >= 0.5, check.summary()
    base = guided(image, sparse)
    valid = depth > 0
    refined = net.refine(image, sparse, base, strength=check.strength)
    assert depth_metrics(refined, depth, valid)["mae"] < depth_metrics(base, depth, valid)["mae"]

    image, sparse, _ = _scene("holes", h=240, w=320, split="test")
    check = check_refiner(net, image, sparse)
    assert not check.decided and check.strength == 1.0 and check.uncovered > 0.5
    assert "no held-out point has" in check.reason


def test_check_runs_at_most_at_max_side_and_refuses_bad_settings():
    image, sparse, _ = _scene(n=400, h=96, w=128)
    net = _random_refiner()
    check = check_refiner(net, image, sparse, max_side=64)
    assert check.size == (48, 64)
    assert 0.9 * 400 <= check.n_heldout <= 400  # points moved to the smaller grid (a few may share a pixel)
    few = np.zeros_like(sparse)
    few[5, 5] = 2.0
    lone = check_refiner(net, image, few)
    assert not lone.decided and lone.strength == 1.0 and "too few" in lone.reason
    ys, xs = np.nonzero(sparse)
    nineteen, twenty = np.zeros_like(sparse), np.zeros_like(sparse)
    nineteen[ys[:19], xs[:19]] = sparse[ys[:19], xs[:19]]
    twenty[ys[:20], xs[:20]] = sparse[ys[:20], xs[:20]]
    assert "too few" in check_refiner(net, image, nineteen).reason
    assert "too few" not in check_refiner(net, image, twenty).reason
    dense = check_refiner(net, image, np.full_like(sparse, 2.0))
    assert not dense.decided and dense.strength == 1.0 and "every pixel" in dense.reason
    one = np.zeros((100, 100), np.float32)  # a point moves to its pixel centre's cell: 3.5 * 0.32 = 1.12 -> 1
    one[3, 3], one[97, 40] = 2.0, 3.0
    grid = np.zeros((100, 100, 3), np.uint8)
    sized = check_refiner(net, grid, one, max_side=32, min_points=1)
    assert sized.size == (32, 32)
    from depthkit.complete.refiner_check import _downscale

    _, small = _downscale(grid, one, 32)
    assert sorted(zip(*np.nonzero(small))) == [(1, 1), (31, 12)]  # (97.5 * .32 = 31.2, 40.5 * .32 = 12.96)
    zero = DenseRefiner(width=8)  # every strength ties: the strongest wins whatever the order
    assert check_refiner(zero, image, sparse, strengths=(1.0, 0.5, 0.0)).strength == 1.0
    with pytest.raises(ValueError, match="strengths"):
        check_refiner(net, image, sparse, strengths=(0.0, 1.5))
    with pytest.raises(ValueError, match="folds"):
        check_refiner(net, image, sparse, folds=1)
    with pytest.raises(ValueError, match="strength"):
        net.refine(image, sparse, np.ones_like(sparse), strength=1.5)
