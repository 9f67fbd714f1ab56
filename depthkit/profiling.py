"""Peak-memory measurement for benchmarks: the CUDA allocator's peak, or the process's resident set sampled on CPU.

    with PeakMemory("cpu") as mem:
        run()
    mem.peak    # bytes above the level at entry
    mem.total   # bytes in total at the peak
"""

from __future__ import annotations

import os
import threading
import time


class PeakMemory:
    """Peak memory growth (bytes) during a ``with`` block: CUDA allocator peak, or sampled process RSS on CPU."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self._rss()
        self._max = self.base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._max = max(self._max, self._rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.total = torch.cuda.max_memory_allocated()
            self.peak = self.total - self.base
        else:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, self._rss())
            self.peak = self._max - self.base
            self.total = self._max
        return False
