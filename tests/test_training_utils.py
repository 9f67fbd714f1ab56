import math
import shutil

import pytest
import torch

from depthkit.run_state import latest_state_dir, load_latest_state, save_state
from depthkit.training import StepSampler, lr_factor


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


def test_a_batch_over_an_epoch_end_takes_its_later_samples_with_the_next_epoch():
    """Positions run through one epoch's permutation and then the next's; a sample's epoch is that of its own
    position (its sparse draw depends on it), not the epoch its batch starts in: with 7 samples in batches of 2,
    micro-step 3 holds position 6 (epoch 0) and position 7 (epoch 1, the next permutation's first)."""
    import numpy as np

    sampler = StepSampler(7, 2, seed=5)
    first, second = (np.random.default_rng([5, e]).permutation(7) for e in (0, 1))
    assert sampler.positions(3) == [(int(first[6]), 0), (int(second[0]), 1)]
    assert sampler.indices(3) == [int(first[6]), int(second[0])]
    r1 = StepSampler(7, 2, seed=5, rank=1, world=2)  # 2 processes: step 1 is positions 4..7, rank 1 takes 5 and 7
    assert r1.positions(1) == [(int(first[5]), 0), (int(second[0]), 1)]


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
    from depthkit.run_state import atomic_export, prepare_run_dir
    from depthkit.training import step_seed

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
    # a finished run whose checkpoints were deleted: a new run (or a --resume that would start at 0) is refused
    shutil.rmtree(run / "checkpoints")
    for resume in (False, True):
        with pytest.raises(ValueError, match=r"holds a finished run's exported weights .*final\) and no checkpoint to "
                                             r"resume from, so this run would start at step 0 and replace them"):
            prepare_run_dir(run, resume=resume)
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"output.output_dir .*afile is a file; give the folder for the run"):
        prepare_run_dir(tmp_path / "afile", resume=False)


# ----------------------------------------------------------------------------------- hardening (issue 14, items 6-7)


def _save_three(run):
    for step in (1, 2, 3):
        save_state(run, step, {"w": torch.full((4,), float(step))}, {"steps_total": 10}, keep_last=2)


def test_full_disk_during_save_keeps_the_last_checkpoint_and_a_clear_error(tmp_path, monkeypatch):
    import errno

    _save_three(tmp_path)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # part of the file is written, then the disk is full
        raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed writing file: "
                           "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="step_0000003.*intact") as info:
        save_state(tmp_path, 4, {"w": torch.zeros(4)}, keep_last=2)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(torch, "save", real_save)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000002", "step_0000003"]  # no partial folder, nothing pruned
    step, state, _ = load_latest_state(tmp_path)
    assert step == 3 and torch.equal(state["w"], torch.full((4,), 3.0))


def test_a_save_killed_midway_leaves_no_checkpoint_that_resume_would_take(tmp_path, monkeypatch):
    """A process killed while it writes a checkpoint (here: after state.pt and meta.json, before the checksums)
    leaves only a hidden partial folder: resume takes the previous checkpoint. Fails if the checkpoint is written in
    place, where the half-written step would be the newest and resume would refuse it."""
    import depthkit.run_state as run_state

    _save_three(tmp_path)

    def killed(path):
        raise KeyboardInterrupt  # stands for SIGKILL: nothing after it runs, no cleanup

    monkeypatch.setattr(run_state, "_sha256", killed)
    with pytest.raises(KeyboardInterrupt):
        save_state(tmp_path, 4, {"w": torch.zeros(4)}, {"steps_total": 10}, keep_last=2)
    monkeypatch.undo()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert [n for n in names if not n.startswith(".")] == ["step_0000002", "step_0000003"], names
    step, state, _ = load_latest_state(tmp_path)
    assert step == 3 and torch.equal(state["w"], torch.full((4,), 3.0))


def test_run_start_removes_partial_folders_of_killed_saves_and_exports(tmp_path):
    from depthkit.run_state import prepare_run_dir

    _save_three(tmp_path)
    partial = tmp_path / "checkpoints" / ".tmp_step_0000004_999999"
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"x" * 100)
    (tmp_path / ".final.tmp-999999").mkdir()
    (tmp_path / ".old_export.old-999999").mkdir()  # a swap killed after moving the old export aside
    prepare_run_dir(tmp_path, resume=True)
    assert not partial.exists() and not (tmp_path / ".final.tmp-999999").exists()
    assert (tmp_path / "old_export").is_dir()  # moved back
    assert load_latest_state(tmp_path)[0] == 3


def test_checkpoints_past_step_9999999_are_ordered_by_number_not_by_name(tmp_path):
    """Folder names are zero-padded to 7 digits: step 10,000,000 sorts before step 9,999,999 as text, so resume took
    the older checkpoint and pruning deleted the newer one."""
    for step in (9_999_998, 9_999_999, 10_000_000):
        save_state(tmp_path, step, {"w": torch.full((2,), float(step))}, keep_last=2)
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {"step_9999999", "step_10000000"}
    step, state, _ = load_latest_state(tmp_path)
    assert step == 10_000_000 and float(state["w"][0]) == 10_000_000.0


def test_a_checkpoint_saved_again_at_its_step_is_swapped_in_and_a_killed_swap_is_undone(tmp_path, monkeypatch):
    """Saving step 3 again replaces it only once the new one is complete: the old folder is moved aside, not deleted
    first. A swap killed between the two moves leaves the old one aside, and the next run start puts it back, so
    ``keep_last=1`` never leaves a run with no checkpoint."""
    import os

    import depthkit.run_state as run_state
    from depthkit.run_state import prepare_run_dir

    save_state(tmp_path, 3, {"w": torch.full((2,), 1.0)}, keep_last=1)
    save_state(tmp_path, 3, {"w": torch.full((2,), 2.0)}, keep_last=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000003"]
    assert float(load_latest_state(tmp_path)[1]["w"][0]) == 2.0
    moves = []

    def killed_after_the_first_move(src, dst):
        if moves:
            raise KeyboardInterrupt  # stands for SIGKILL between the two renames
        moves.append((src, dst))
        os.rename(src, dst)

    monkeypatch.setattr(run_state.os, "replace", killed_after_the_first_move)
    with pytest.raises(KeyboardInterrupt):
        save_state(tmp_path, 3, {"w": torch.full((2,), 3.0)}, keep_last=1)
    monkeypatch.undo()
    prepare_run_dir(tmp_path, resume=True)
    step, state, _ = load_latest_state(tmp_path)
    assert step == 3 and float(state["w"][0]) == 2.0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000003"]


def test_atomic_export_removes_what_a_killed_export_left(tmp_path):
    from depthkit.run_state import atomic_export

    stale = tmp_path / ".complete.tmp-999999"  # no such process
    stale.mkdir()
    atomic_export(tmp_path / "complete", lambda tmp: (tmp / "a.txt").write_text("a"))
    assert not stale.exists() and (tmp_path / "complete" / "a.txt").read_text() == "a"


def test_resume_refuses_flipped_bytes_and_edited_steps(tmp_path):
    _save_three(tmp_path)
    last = latest_state_dir(tmp_path)
    data = bytearray((last / "state.pt").read_bytes())
    data[-40] ^= 0x01  # one flipped bit inside the tensor data: torch.load alone would not notice
    (last / "state.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="state.pt does not match"):
        load_latest_state(tmp_path)

    run = tmp_path / "edited"
    _save_three(run)
    meta_path = latest_state_dir(run) / "meta.json"
    import json

    meta = json.loads(meta_path.read_text())
    meta["step"] = 999
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="meta.json does not match"):
        load_latest_state(run)
    # the same edit with the checksums rewritten is still refused: the step must match the folder and max_steps
    from depthkit.run_state import CHECKSUMS, _sha256

    sums = {n: _sha256(meta_path.parent / n) for n in ("state.pt", "meta.json")}
    (meta_path.parent / CHECKSUMS).write_text(json.dumps({"sha256": sums}))
    with pytest.raises(ValueError, match="says step 999"):
        load_latest_state(run)


def test_resume_refuses_a_step_beyond_max_steps(tmp_path):
    _save_three(tmp_path)
    with pytest.raises(ValueError, match="beyond this run's 2 steps"):
        load_latest_state(tmp_path, max_steps=2)
    assert load_latest_state(tmp_path, max_steps=3)[0] == 3


def test_resume_refuses_a_checkpoint_of_another_number_of_processes(tmp_path):
    save_state(tmp_path, 1, {"w": torch.zeros(1)}, {"world_size": 2})
    with pytest.raises(ValueError, match=r"step_0000001 was written by 2 processes; resume with the same number "
                                         r"\(this run has 1\)"):
        load_latest_state(tmp_path, world_size=1)
    assert load_latest_state(tmp_path, world_size=2)[0] == 1
    save_state(tmp_path / "older", 1, {"w": torch.zeros(1)})  # a checkpoint that did not record it
    assert load_latest_state(tmp_path / "older", world_size=1)[0] == 1


def test_resume_truncates_the_log_to_the_resumed_step(tmp_path):
    import json

    _save_three(tmp_path)
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)] + [{"note": "no step"}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    load_latest_state(tmp_path)
    kept = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in kept] == [1, 2, 3, None]


def test_a_run_that_starts_at_step_0_drops_the_log_of_an_attempt_without_checkpoints(tmp_path):
    """A run killed before its first checkpoint leaves log rows for steps 1..k; starting again (fresh, or --resume
    with nothing to resume) appended steps 1.. after them, so log.jsonl held two runs' step 1."""
    import json

    from depthkit.run_state import prepare_run_dir

    for resume in (False, True):
        run = tmp_path / f"resume_{resume}"
        run.mkdir()
        rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)] + [{"note": "no step"}]
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        prepare_run_dir(run, resume=resume)
        kept = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert kept == [{"note": "no step"}], resume
