"""Dataset readers refusing bad options and malformed files early, with errors that name what is wrong."""

from __future__ import annotations

import pytest
from fixtures_datasets import write_hypersim_marigold, write_vkitti2

from depthkit.data.datasets import build_dataset


@pytest.mark.parametrize("name, write", [("vkitti2", write_vkitti2), ("hypersim", write_hypersim_marigold),
                                         ("synthetic", None)])
def test_an_unknown_sparse_pattern_is_refused_when_the_reader_is_built(tmp_path, name, write):
    root = None
    if write is not None:
        write(tmp_path)
        root = tmp_path
    with pytest.raises(ValueError, match=r"sparse_pattern must be one of holes, lidar, noisy, random, stereo.*"
                                         r"received 'lidar_typo'"):
        build_dataset(name, root, sparse_pattern="lidar_typo")
    with pytest.raises(ValueError, match="stereo_sgbm"):  # synthetic's own pattern: listed there, refused elsewhere
        build_dataset(name, root, sparse_pattern="stereo_sgbm", **({} if write else {"width": 10}))
    assert build_dataset(name, root, sparse_pattern=None)[0]["sparse"].max() == 0
