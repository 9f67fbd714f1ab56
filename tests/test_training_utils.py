import math

import pytest
import torch

from depthkit.training import StepSampler, latest_state_dir, load_latest_state, lr_factor, save_state


def test_step_sampler_is_a_pure_function_of_step():
    a, b = StepSampler(10, 3, seed=1), StepSampler(10, 3, seed=1)
    seq = [a.indices(k) for k in range(7)]
    assert [b.indices(k) for k in reversed(range(7))][::-1] == seq  # any order of calls, same batches
    flat = [i for batch in seq for i in batch]
    assert sorted(flat[:10]) == list(range(10))  # the first epoch is a permutation
    assert StepSampler(10, 3, seed=2).indices(0) != seq[0] or StepSampler(10, 3, seed=2).indices(1) != seq[1]


def test_step_sampler_shards_are_disjoint_within_an_epoch():
    r0, r1 = StepSampler(8, 2, seed=0, rank=0, world=2), StepSampler(8, 2, seed=0, rank=1, world=2)
    seen = r0.indices(0) + r1.indices(0) + r0.indices(1) + r1.indices(1)
    assert sorted(seen) == list(range(8))


def test_lr_factor_warmup_and_cosine():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(40, 100, 0, "linear") == pytest.approx(0.6)
    assert lr_factor(99, 100, 0, "constant") == 1.0


def test_checkpoints_are_atomic_pruned_and_resumable(tmp_path):
    for step in (1, 2, 3):
        save_state(tmp_path, step, {"w": torch.full((2,), float(step))}, {"epoch": 0}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000002", "step_0000003"]
    # a save that died half-way leaves a hidden temp folder that resume ignores
    (tmp_path / "checkpoints" / ".tmp_step_0000004_1").mkdir()
    (tmp_path / "checkpoints" / "step_0000009").mkdir()  # no state.pt: incomplete, ignored
    step, state, meta = load_latest_state(tmp_path)
    assert step == 3 and torch.equal(state["w"], torch.full((2,), 3.0)) and meta["epoch"] == 0
    (latest_state_dir(tmp_path) / "state.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_latest_state(tmp_path)
    assert load_latest_state(tmp_path / "nothing") is None
