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


def test_mixed_dataset_list_mode_keeps_every_item_or_a_weighted_subset():
    from depthkit.training import MixedDataset

    a = [{"x": ("a", i)} for i in range(10)]
    b = [{"x": ("b", i)} for i in range(30)]
    every = MixedDataset([a, b], [1.0, 3.0])
    assert len(every) == 40 and sorted(every[i]["x"] for i in range(40)) == sorted(d["x"] for d in a + b)
    subset = MixedDataset([a, b], [1.0, 3.0], seed=5, subset_size=8)
    sources = [subset[i]["source"] for i in range(len(subset))]
    assert (sources.count(0), sources.count(1)) == (2, 6)  # by weight
    again = MixedDataset([a, b], [1.0, 3.0], seed=5, subset_size=8)
    assert [subset[i]["x"] for i in range(8)] == [again[i]["x"] for i in range(8)]  # fixed by the seed
    assert len(MixedDataset([a, b], [0.0, 1.0])) == 30  # weight 0 leaves a dataset out


def test_mixed_dataset_draw_mode_and_epochs():
    from depthkit.training import MixedDataset

    class Epochs:
        def __init__(self):
            self.epoch = None

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"i": i, "epoch": self.epoch}

        def set_epoch(self, epoch):
            self.epoch = epoch

    mixed = MixedDataset([Epochs(), [{"i": 9}] * 100], [1.0, 0.0], draw=True, seed=3)
    assert len(mixed) == 104 and all(mixed[i]["source"] == 0 for i in range(50))  # weight 0: never drawn
    assert mixed.get(1, epoch=7)["epoch"] == 7
    both = MixedDataset([Epochs(), Epochs()], [1.0, 1.0], draw=True, seed=3)
    assert {both[i]["source"] for i in range(50)} == {0, 1}
    assert [both.locate(i) for i in range(20)] == [both.locate(i) for i in range(20)]
    with pytest.raises(ValueError, match="one weight per dataset"):
        MixedDataset([Epochs()], [1.0, 2.0])


def test_run_folder_guard_and_atomic_export(tmp_path):
    from depthkit.training import atomic_export, prepare_run_dir, step_seed

    run = prepare_run_dir(tmp_path / "run", resume=False)
    save_state(run, 1, {"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="--resume"):
        prepare_run_dir(run, resume=False)
    assert prepare_run_dir(run, resume=True) == run
    assert step_seed(0, 5, 1) == step_seed(0, 5, 1) != step_seed(0, 5, 1, stream=1)

    def write(folder):
        (folder / "a.txt").write_text("new")

    final = run / "final"
    final.mkdir()
    (final / "old.txt").write_text("old")
    assert atomic_export(final, write) == final
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]

    def fail(folder):
        (folder / "half.txt").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_export(final, fail)
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]  # the previous export is untouched
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "final"]  # no temporary folder left
