"""Test settings: offline hub, deterministic threads. Set before any huggingface import."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


import pytest  # noqa: E402  (after the environment settings above, which must precede any huggingface import)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models gain
    nothing from a second thread, which only adds contention on a shared 2-core machine (10x slower measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fill_option_runs(tmp_path):
    """``run(image, sparse, option, value, stat, expected)``: a tiny random-weight checkpoint's complete stage (8
    queries) on one frame with the fill ``option`` off (null) and set to ``value``; checks that both keep the
    measured values, that ``last_stats[stat]`` is absent when off and counts ``expected`` (HxW bool) when on, and that
    the two outputs differ only at ``expected``. Returns ``{None: depth, value: depth}``."""
    import numpy as np

    from depthkit import Pipeline
    from depthkit.checkpoints import write_manifest
    from depthkit.complete.checkpoint import write_tiny

    write_tiny(tmp_path / "complete")
    write_manifest(tmp_path, {"complete": {}}, tiny=True)

    def run(image, sparse, option, value, stat, expected):
        out = {}
        for v in (None, value):
            pipe = Pipeline(checkpoint=tmp_path, stage_options={"complete": {option: v, "query_budget": 8}})
            out[v] = pipe(image, sparse).depth
            assert np.array_equal(out[v][sparse > 0], sparse[sparse > 0])
            assert pipe.stages[0].last_stats.get(stat) == (None if v is None else int(expected.sum()))
        np.testing.assert_array_equal(out[value][~expected], out[None][~expected])
        return out

    run.checkpoint = tmp_path
    return run


@pytest.fixture
def adamw_rates(monkeypatch):
    """The learning rate of every ``torch.optim.AdamW`` step taken while the test runs, read in the optimiser itself
    (what a trainer's logged ``lr`` must equal)."""
    import torch

    seen = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return seen
