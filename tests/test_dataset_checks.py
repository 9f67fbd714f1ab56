"""Dataset readers refusing bad options and malformed files early, with errors that name what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_datasets import (
    write_ddad,
    write_hypersim,
    write_hypersim_marigold,
    write_ibims_mat,
    write_ibims_raw,
    write_kitti,
    write_mask_1bit,
    write_nyu,
    write_processed,
    write_vkitti2,
    write_void,
)

from depthkit.data.datasets import DatasetLayoutError, build_dataset


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


@pytest.mark.parametrize("shape", [(1, 64), (48, 1), (10, 10)])
def test_an_ibims_mask_of_another_size_is_refused_naming_the_file_not_broadcast(tmp_path, shape):
    write_ibims_raw(tmp_path, names=("corridor_01",))  # 48x64
    write_mask_1bit(tmp_path / "ibims1_core_raw" / "mask_transp" / "corridor_01.png", np.ones(shape, bool))
    with pytest.raises(DatasetLayoutError, match=rf"mask_transp/corridor_01\.png is {shape[0]}x{shape[1]} \(HxW\) "
                                                 r"but the depth \S*corridor_01\.png is 48x64"):
        build_dataset("ibims1", tmp_path)[0]


def test_an_ibims_mat_mask_of_another_size_is_refused_naming_the_field(tmp_path):
    from scipy import io as sio

    write_ibims_mat(tmp_path, names=("corridor_01",))
    path = tmp_path / "ibims1_core_mat" / "corridor_01.mat"
    data = sio.loadmat(str(path))["data"]
    fields = {f: data[f][0][0] for f in data.dtype.names}
    fields["mask_invalid"] = np.ones((1, 64), np.uint8)
    sio.savemat(str(path), {"data": fields})
    with pytest.raises(DatasetLayoutError, match=r"corridor_01\.mat field 'mask_invalid' is 1x64 \(HxW\) but the "
                                                 r"depth .* is 48x64"):
        build_dataset("ibims1", tmp_path)[0]


def test_a_processed_image_with_an_upper_case_suffix_is_read_as_it_is_listed(tmp_path):
    fx = write_processed(tmp_path)
    (tmp_path / "rgb" / "0001.png").rename(tmp_path / "rgb" / "0001.PNG")
    ds = build_dataset("kitti_dc", tmp_path)
    assert ds.names == ["0000", "0001"]
    np.testing.assert_array_equal(ds[1]["image"], fx["rgb"][1])


def test_the_docs_say_which_vkitti2_cameras_are_read_by_default():
    from pathlib import Path

    from depthkit.data.datasets import reader_options

    docs = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    section = docs.split("## Virtual KITTI 2", 1)[1].split("\n## ", 1)[0]
    default = reader_options("vkitti2")["cameras"]
    assert default == ("Camera_0",) and "by default `Camera_0` only" in section
    assert "both mean every frame (" not in section  # "every frame" alone was wrong: one camera of two is read


@pytest.mark.parametrize("name, write, images", [
    ("kitti_dc", write_kitti, "depth_selection/val_selection_cropped/image"),
    ("ddad", write_ddad, "pregenerated/val/rgb"),
    ("kitti_dc", write_processed, "rgb"),
    ("ibims1", write_ibims_raw, "ibims1_core_raw/rgb"),
])
def test_hidden_appledouble_files_are_not_listed_as_samples(tmp_path, name, write, images):
    """A release copied through a macOS volume gains ``._NAME`` files beside each file; a reader that lists a
    folder must not take them as samples (KITTI DC refused the whole folder for the name, the others listed a sample
    that cannot be decoded). Fails if any listing keeps names starting with "."."""
    write(tmp_path)
    (tmp_path / "imagelist.txt").unlink(missing_ok=True)  # iBims-1: list the rgb folder
    folder = tmp_path / images
    expected = len(list(folder.glob("*.png")))
    for p in list(folder.glob("*.png")):
        (folder / f"._{p.name}").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # AppleDouble header, not a PNG
    ds = build_dataset(name, tmp_path)
    assert len(ds) == expected
    for i in range(len(ds)):
        assert ds[i]["image"].ndim == 3


@pytest.mark.parametrize("h, w", [(240, 320), (480, 320)])
def test_a_native_nyu_image_that_is_not_640x480_is_refused_not_given_640x480_intrinsics(tmp_path, h, w):
    """NYU_INTRINSICS are for 640x480; a 320x240 image got cx = 316.6 px (about 154 is right) with no error."""
    write_nyu(tmp_path, n=1, h=h, w=w)
    ds = build_dataset("nyuv2", tmp_path, layout="native")
    with pytest.raises(DatasetLayoutError, match=rf"rgb_0001\.png is {w}x{h} \(WxH\); the native NYUv2 layout holds "
                                                 r"the labelled set's 640x480 images.*layout='h5'"):
        ds[0]


@pytest.mark.parametrize("name, cap", [("hypersim", 65.0), ("vkitti2", 80.0)])
def test_gt_exactly_at_marigolds_max_depth_is_invalid_as_in_marigold(name, cap):
    """Marigold's valid mask is ``min_depth < depth < max_depth``; these protocols say they follow it. GT of exactly
    65 m / 80 m was valid (``<=``)."""
    from dataclasses import replace

    from depthkit.data.protocols import PROTOCOLS, depth_range_mask

    gt = np.array([[1e-5, 2e-5, cap - 0.01, cap, cap + 0.01]], np.float32)
    np.testing.assert_array_equal(depth_range_mask(gt, PROTOCOLS[name]), [[False, True, True, False, False]])
    # a protocol of one's own keeps depthkit's inclusive cap unless it says otherwise
    own = replace(PROTOCOLS[name], name="own", max_inclusive=True)
    np.testing.assert_array_equal(depth_range_mask(gt, own), [[False, True, True, True, False]])


def test_vkitti2_depth_of_8000_cm_is_outside_the_training_range(tmp_path):
    from fixtures_datasets import write_png16

    fx = write_vkitti2(tmp_path)
    raw = fx["depth_raw"][(0, 0)].copy()
    raw[5:7] = 8000  # exactly 80 m
    write_png16(tmp_path / "Scene01" / "clone" / "frames" / "depth" / "Camera_0" / "depth_00000.png", raw)
    item = build_dataset("vkitti2", tmp_path)[0]
    assert item["depth"][5, 0] == 80.0 and not item["valid"][5:7].any() and item["valid"][7:].all()


@pytest.mark.parametrize("name, write, text_file, at_item", [
    ("void150", write_void, "void_150/test_image.txt", False),
    ("nyuv2", lambda root: write_nyu(root, n=1), "filename_list_test.txt", False),
    ("hypersim", write_hypersim_marigold, "train/filename_list_train.txt", False),
    ("hypersim", write_hypersim, "metadata_images_split_scene_v1.csv", False),
    ("ibims1", write_ibims_raw, "imagelist.txt", False),
    ("vkitti2", write_vkitti2, "Scene01/clone/intrinsic.txt", True),
    ("kitti_dc", write_kitti, "depth_selection/val_selection_cropped/intrinsics/*.txt", True),
])
def test_a_text_file_that_is_not_utf8_is_refused_naming_the_file_and_the_byte(tmp_path, name, write, text_file,
                                                                               at_item):
    """A list / intrinsics / split file with a byte that is not UTF-8 raised a bare UnicodeDecodeError naming no
    file."""
    write(tmp_path)
    path = sorted(tmp_path.glob(text_file))[0]
    good = path.read_bytes()
    path.write_bytes(good + b"\xff\n")
    line = good.count(b"\n") + 1
    with pytest.raises(DatasetLayoutError, match=rf"{path.name} is not UTF-8 text: byte 0xff at byte offset "
                                                 rf"{len(good)} \(line {line}\).*save it as UTF-8"):
        ds = build_dataset(name, tmp_path)
        if at_item:
            ds[0]


def test_a_utf8_byte_order_mark_is_not_read_as_part_of_the_first_list_entry(tmp_path):
    fx = write_nyu(tmp_path, n=2)
    lf = tmp_path / "filename_list_test.txt"
    lf.write_bytes(b"\xef\xbb\xbf" + lf.read_bytes())
    assert build_dataset("nyuv2", tmp_path).names == fx["names"]


@pytest.mark.parametrize("name, write, list_files", [
    ("nyuv2", lambda root: write_nyu(root, n=2), ["filename_list_test.txt"]),
    ("void150", write_void, [f"void_150/test_{w}.txt" for w in ("image", "sparse_depth", "ground_truth", "intrinsics")]),
    ("hypersim", write_hypersim_marigold, ["train/filename_list_train.txt"]),
    ("ibims1", write_ibims_raw, ["imagelist.txt"]),
])
def test_a_list_file_naming_one_image_twice_is_refused(tmp_path, name, write, list_files):
    """A repeated line made one image be read, and scored, twice (its error counted twice in the mean)."""
    write(tmp_path)
    for rel in list_files:  # VOID: the same repeat in all four parallel lists, so rows still pair up
        lf = tmp_path / rel
        lines = lf.read_text().splitlines()
        lf.write_text("\n".join([*lines, lines[0], lines[0]]) + "\n")
    first = (tmp_path / list_files[0]).read_text().splitlines()[0]
    with pytest.raises(DatasetLayoutError, match=rf"{list_files[0].split('/')[-1]} names 1 sample\(s\) more than "
                                                 rf"once: '{first}' \(3 times\).*Remove the repeated lines"):
        build_dataset(name, tmp_path)
