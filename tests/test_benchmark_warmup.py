"""Benchmark scripts time no model call that is the first of its kind: benchmarks/engine.py warms every engine (one
per batch size) with an untimed full batch before its timed run. Runs the real script on its tiny configuration."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import engine  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_engine_benchmark_times_every_engine_only_after_an_untimed_full_batch(tmp_path, monkeypatch):
    """Each timed section runs inside ``PeakMemory``; every engine's first call must come before any timed one and
    answer at least one full batch (or all pixels, when fewer). Fails if only the first engine is warmed (the B=4
    engine's first call is timed) or if the warm-up is a 4-pixel call (the B=8 engine never saw its batch shape
    untimed)."""
    timing = {"on": False}
    calls: dict[int, list[tuple[bool, int]]] = {}
    real_memory, real_engine, real_plain = engine.PeakMemory, engine.run_engine, engine.run_plain_shared_prefix

    @contextlib.contextmanager
    def flagged(device):
        with real_memory(device) as mem:
            timing["on"] = True
            try:
                yield mem
            finally:
                timing["on"] = False

    def counted(e, image, sparse, rows, cols, *rest):
        calls.setdefault(id(e), []).append((timing["on"], len(rows)))
        return (real_plain if rest else real_engine)(e, image, sparse, rows, cols, *rest)

    monkeypatch.setattr(engine, "PeakMemory", flagged)
    monkeypatch.setattr(engine, "run_engine", counted)
    monkeypatch.setattr(engine, "run_plain_shared_prefix", counted)
    argv = ["--config", "tiny", "--pixels", "8", "--batch-sizes", "2,4,8", "--frame-queries", "0",
            "--frame-layouts", "", "--threads", "1", "--out", str(tmp_path)]
    assert engine.main(argv) == 0
    assert len(calls) == 3  # one engine per batch size
    for (b, seen) in zip((2, 4, 8), calls.values()):
        first_timed, first_rows = seen[0]
        assert not first_timed and first_rows >= min(8, max(4, b)), (b, seen)
        assert all(timed for timed, _ in seen[1:]), (b, seen)  # plain prototype and engine: both timed
