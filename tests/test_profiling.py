import numpy as np

from depthkit.profiling import PeakMemory


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory("cpu") as mem:
        block = np.ones((3000, 3000))  # 72 MB, touched
        block += 1
    assert mem.peak > 50 * 2**20 and mem.total >= mem.peak
