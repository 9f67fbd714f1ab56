"""Dataset readers and protocols, each read back from a tiny fixture written in the dataset's real on-disk format."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from fixtures_datasets import (
    write_ddad,
    write_hypersim,
    write_hypersim_marigold,
    write_ibims_mat,
    write_ibims_raw,
    write_kitti,
    write_mask_1bit,
    write_nyu,
    write_nyu_h5,
    write_png16,
    write_processed,
    write_rgb_jpg,
    write_rgb_png,
    write_vkitti2,
    write_void,
)

from depthkit.data.datasets import (
    DATASETS,
    DatasetLayoutError,
    build_dataset,
    collate_items,
    distance_to_planar,
    filter_local_outliers,
    marigold_dc_select,
    reader_options,
)
from depthkit.data.datasets.hypersim import hypersim_focal, hypersim_intrinsics
from depthkit.data.datasets.nyuv2 import H5_INTRINSICS, NYU_INTRINSICS
from depthkit.data.protocols import PROTOCOLS, Protocol, apply_protocol, crop_mask, protocol_table_markdown
from depthkit.warning_types import DepthkitWarning


def _check_item_contract(item):
    h, w = item["image"].shape[:2]
    assert item["image"].dtype == np.uint8 and item["image"].shape == (h, w, 3)
    for key in ("sparse", "depth"):
        assert item[key].dtype == np.float32 and item[key].shape == (h, w)
    assert item["valid"].dtype == bool and item["valid"].shape == (h, w)
    assert isinstance(item["name"], str)


# ------------------------------------------------------------------------------------------------------ NYUv2
def test_nyu_protocol_geometry_depth_and_intrinsics(tmp_path):
    fx = write_nyu(tmp_path)
    ds = build_dataset("nyuv2", tmp_path)
    assert len(ds) == 3 and ds.names == fx["names"]
    item = ds[1]
    _check_item_contract(item)
    assert item["image"].shape == (228, 304, 3)
    i, j = np.mgrid[0:228, 0:304]
    # 640x480 -> 320x240 by pixel-centre nearest (source pixel 2k+1), then rows 6:234, cols 8:312.
    expected = fx["filled_mm"][1][2 * (i + 6) + 1, 2 * (j + 8) + 1].astype(np.float32) / 1000
    np.testing.assert_array_equal(item["depth"], expected)
    assert item["valid"].all()
    # The RGB is halved by nearest like the GT (Ma & Karaman's val_transform: scipy imresize 'nearest' = PIL
    # NEAREST), not area-averaged: source rows 13, 15, ..., 467 and cols 17, 19, ..., 623.
    np.testing.assert_array_equal(item["image"], fx["rgb"][1][13:468:2, 17:624:2])
    k = item["intrinsics"]
    assert k.fx == pytest.approx(NYU_INTRINSICS.fx / 2) and k.fy == pytest.approx(NYU_INTRINSICS.fy / 2)
    assert k.cx == pytest.approx((NYU_INTRINSICS.cx + 0.5) / 2 - 0.5 - 8)
    assert k.cy == pytest.approx((NYU_INTRINSICS.cy + 0.5) / 2 - 0.5 - 6)


def test_nyu_image_resize_area_is_a_protocol_choice_and_an_unknown_one_refused(tmp_path):
    fx = write_nyu(tmp_path, n=1)
    area = replace(PROTOCOLS["nyuv2"], image_resize="area")
    image = build_dataset("nyuv2", tmp_path, protocol=area)[0]["image"]
    src = fx["rgb"][0].astype(np.float64)
    block_mean = (src[0::2, 0::2] + src[1::2, 0::2] + src[0::2, 1::2] + src[1::2, 1::2]) / 4
    assert np.abs(image - block_mean[6:234, 8:312]).max() <= 1
    assert all(p.image_resize == "area" for name, p in PROTOCOLS.items() if name != "nyuv2")
    with pytest.raises(ValueError, match=r"image_resize must be one of \('area', 'nearest'\); received 'bicubic'"):
        replace(PROTOCOLS["nyuv2"], image_resize="bicubic")


def test_nyu_sparse_is_500_gt_points_seeded_by_name(tmp_path):
    fx = write_nyu(tmp_path)
    ds = build_dataset("nyuv2", tmp_path)
    items = [ds[i] for i in range(3)]
    for item in items:
        m = item["sparse"] > 0
        assert m.sum() == 500
        np.testing.assert_array_equal(item["sparse"][m], item["depth"][m])
    assert not np.array_equal(items[0]["sparse"] > 0, items[1]["sparse"] > 0)
    # Same points again, from a subset, from a shuffled list file, and through torch's Subset.
    np.testing.assert_array_equal(build_dataset("nyuv2", tmp_path)[2]["sparse"], items[2]["sparse"])
    lf = tmp_path / "subset.txt"
    lf.write_text("\n".join([fx["lines"][2], fx["lines"][0]]))
    sub = build_dataset("nyuv2", tmp_path, list_file=lf)
    assert sub.names == [fx["names"][2], fx["names"][0]]
    np.testing.assert_array_equal(sub[0]["sparse"], items[2]["sparse"])
    np.testing.assert_array_equal(sub[1]["sparse"], items[0]["sparse"])
    np.testing.assert_array_equal(torch.utils.data.Subset(ds, [2])[0]["sparse"], items[2]["sparse"])
    # A different protocol seed gives different points.
    other = replace(PROTOCOLS["nyuv2"], sparse_seed=7)
    assert not np.array_equal(build_dataset("nyuv2", tmp_path, protocol=other)[2]["sparse"], items[2]["sparse"])


def test_nyu_raw_gt_holes_are_invalid_and_all_points_when_few(tmp_path):
    write_nyu(tmp_path, list_file=False)  # no list file: the folder scan finds the same samples
    ds = build_dataset("nyuv2", tmp_path, gt="raw")
    item = ds[0]
    # raw[:120, :160] == 0 maps to output rows 0..53 and cols 0..71.
    assert (~item["valid"]).sum() == 54 * 72 and not item["valid"][:54, :72].any()
    assert (item["sparse"][:54, :72] == 0).all()
    greedy = replace(PROTOCOLS["nyuv2"], n_sparse_points=10**6)
    many = build_dataset("nyuv2", tmp_path, gt="raw", protocol=greedy)[0]
    assert (many["sparse"] > 0).sum() == item["valid"].sum()


def test_nyu_list_file_with_missing_file_names_it(tmp_path):
    fx = write_nyu(tmp_path, n=2)
    (tmp_path / "filename_list_test.txt").write_text(fx["lines"][0] + "\ntest/x/rgb_9999.png test/x/depth_9999.png "
                                                     "test/x/filled_9999.png\n")
    with pytest.raises(DatasetLayoutError, match=r"rgb_9999\.png is missing \(listed in .*filename_list_test\.txt"):
        build_dataset("nyuv2", tmp_path)


def test_nyu_list_file_in_the_root_above_the_extraction_is_read_and_an_empty_one_refused(tmp_path):
    fx = write_nyu(tmp_path / "nyu_labeled_extracted", n=3, h=48, w=64, list_file=False)
    list_file = tmp_path / "filename_list_test.txt"  # beside the extracted folder, as docs/datasets.md allows
    list_file.write_text(fx["lines"][1] + "\n")
    assert build_dataset("nyuv2", tmp_path).names == [fx["names"][1]]
    list_file.write_text("\n \n")
    with pytest.raises(DatasetLayoutError, match=r"filename_list_test\.txt names no images"):
        build_dataset("nyuv2", tmp_path)


def test_nyu_h5_pair_gives_marigold_dc_hints_as_the_sparse_input(tmp_path):
    fx = write_nyu_h5(tmp_path, n=3)
    ds = build_dataset("nyuv2", tmp_path)
    assert ds.format == "h5" and ds.names == ["0000", "0001", "0002"]
    for i in range(3):
        item = ds[i]
        _check_item_contract(item)
        assert item["image"].shape == (228, 304, 3)
        np.testing.assert_array_equal(item["image"], fx["img"][i])
        np.testing.assert_array_equal(item["depth"], fx["gt"][i])  # metres, as stored
        np.testing.assert_array_equal(item["sparse"], fx["hints"][i])  # the file's points, not a fresh draw
        assert (item["sparse"] > 0).sum() == 500 and item["valid"].all()
    assert ds[1]["depth"][10, 20] == pytest.approx(0.5 + 0.1 + 0.02 + 0.25)
    k = ds[0]["intrinsics"]
    assert (k.fx, k.fy) == pytest.approx((518.8579 / 2, 519.4696 / 2))
    # the toolbox's principal point (325.5824, 253.7362) is 1-based: 1 px less in 0-based pixel centres
    assert (k.cx, k.cy) == pytest.approx(((324.5824 + 0.5) / 2 - 0.5 - 8, (252.7362 + 0.5) / 2 - 0.5 - 6))
    # A different protocol seed changes nothing: the points come from the file.
    other = replace(PROTOCOLS["nyuv2"], sparse_seed=7)
    np.testing.assert_array_equal(build_dataset("nyuv2", tmp_path, protocol=other)[2]["sparse"], fx["hints"][2])


def test_nyu_h5_intrinsics_match_the_native_protocol_geometry(tmp_path):
    write_nyu(tmp_path / "native", n=1)
    k = build_dataset("nyuv2", tmp_path / "native")[0]["intrinsics"]
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((H5_INTRINSICS.fx, H5_INTRINSICS.fy, H5_INTRINSICS.cx,
                                                      H5_INTRINSICS.cy))


def test_nyu_layout_option_and_h5_errors(tmp_path):
    import h5py

    fx = write_nyu(tmp_path, n=2)
    write_nyu_h5(tmp_path, n=2)
    assert build_dataset("nyuv2", tmp_path).format == "h5"  # auto prefers Marigold-DC's own points
    native = build_dataset("nyuv2", tmp_path, layout="native")
    assert native.format == "native" and native.names == fx["names"]
    with pytest.raises(ValueError, match="layout must be one of auto, native, processed, h5 .*received 'hdf5'"):
        build_dataset("nyuv2", tmp_path, layout="hdf5")
    with pytest.raises(ValueError, match="gt and list_file apply to the native layout only"):
        build_dataset("nyuv2", tmp_path, gt="raw")
    with pytest.raises(ValueError, match="test split only"):
        build_dataset("nyuv2", tmp_path, split="train")
    with pytest.raises(DatasetLayoutError, match="is not a Marigold-DC processed folder"):
        build_dataset("nyuv2", tmp_path, layout="processed")
    (tmp_path / "nyu_pred_with_500.h5").unlink()
    assert build_dataset("nyuv2", tmp_path).format == "native"
    with pytest.raises(DatasetLayoutError, match=r"layout 'h5' needs .*nyu_pred_with_500\.h5"):
        build_dataset("nyuv2", tmp_path, layout="h5")
    with h5py.File(tmp_path / "nyu_pred_with_500.h5", "w") as f:
        f.create_dataset("preds", data=np.zeros((2, 228, 304, 1), np.float32))
    with pytest.raises(DatasetLayoutError, match="has no dataset 'hints'"):
        build_dataset("nyuv2", tmp_path)
    with h5py.File(tmp_path / "nyu_pred_with_500.h5", "w") as f:
        f.create_dataset("hints", data=np.zeros((3, 228, 304, 1), np.float32))
    with pytest.raises(DatasetLayoutError, match=r"'hints' is \(3, 228, 304, 1\); expected \(2, 228, 304, 1\)"):
        build_dataset("nyuv2", tmp_path)
    with h5py.File(tmp_path / "nyu_img_gt.h5", "w") as f:
        f.create_dataset("img", data=np.zeros((2, 3, 228, 304), np.uint8))
        f.create_dataset("gt", data=np.zeros((2, 228, 304, 1), np.float32))
    with pytest.raises(DatasetLayoutError, match="channels last"):
        build_dataset("nyuv2", tmp_path)


# ------------------------------------------------------------------------------------------------------ KITTI DC
def test_kitti_reads_uint16_over_256_pairs_by_name_and_filters_outlier(tmp_path):
    fx = write_kitti(tmp_path)
    for root in (tmp_path, fx["base"], tmp_path / "depth_selection"):
        ds = build_dataset("kitti_dc", root)
        assert ds.names == fx["names"]
    item = ds[0]
    _check_item_contract(item)
    np.testing.assert_array_equal(item["depth"], fx["gt_raw"][0].astype(np.float32) / 256)
    np.testing.assert_array_equal(item["valid"], fx["gt_raw"][0] > 0)
    expected = fx["velo_raw"][0].astype(np.float32) / 256
    assert expected[10, 11] == 30.0 and expected[20, 28] == 40.0
    expected[10, 11] = 0  # the planted outlier is removed; the isolated far return is not
    np.testing.assert_array_equal(item["sparse"], expected)
    k = item["intrinsics"]
    assert (k.fx, k.fy, k.cx, k.cy) == (721.5377, 721.5377, 596.5593, 149.854)


def test_kitti_missing_partner_file_is_named(tmp_path):
    fx = write_kitti(tmp_path)
    victim = fx["base"] / "groundtruth_depth" / (fx["names"][1].replace("_sync_image_", "_sync_groundtruth_depth_")
                                                 + ".png")
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match=victim.name):
        build_dataset("kitti_dc", tmp_path)


def _brute_force_filter(d, window, threshold):
    """The filter's rule written as loops: per measured pixel q, the minimum (> 1e-3) of its window; each pixel p in
    that window gets delta(p) = max(delta(p), d(p) - min(q)); measured p with delta(p) > threshold is dropped."""
    h, w = d.shape
    r = window // 2
    delta = np.zeros_like(d)
    for y in range(h):
        for x in range(w):
            if d[y, x] <= 0:
                continue
            win = d[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
            dmin = win[win > 1e-3].min()
            for yy in range(max(0, y - r), min(h, y + r + 1)):
                for xx in range(max(0, x - r), min(w, x + r + 1)):
                    delta[yy, xx] = max(delta[yy, xx], d[yy, xx] - dmin)
    out = d.copy()
    out[(d > 0) & (delta > threshold)] = 0
    return out


def test_local_outlier_filter_matches_its_rule_and_chains_through_neighbours():
    rng = np.random.default_rng(3)
    for _ in range(3):
        d = np.where(rng.random((20, 30)) < 0.15, rng.uniform(1, 12, (20, 30)), 0)
        np.testing.assert_array_equal(filter_local_outliers(d, 7, 1.5), _brute_force_filter(d, 7, 1.5).astype(np.float32))
    # p (30 m) sees r (20 m) three pixels away; r's window reaches q (10 m): p is judged against 10 m and removed.
    d = np.zeros((5, 12))
    d[2, 0], d[2, 3], d[2, 6] = 30.0, 20.0, 10.0
    out = filter_local_outliers(d, 7, 1.5)
    assert out[2, 0] == 0 and out[2, 3] == 0 and out[2, 6] == 10.0


# ------------------------------------------------------------------------------------------------------ VOID
def test_void_lists_values_and_densities(tmp_path):
    fx = write_void(tmp_path, density=150)
    for ds in (build_dataset("void150", tmp_path), build_dataset("void", tmp_path, density=150),
               build_dataset("void150", fx["dens"])):
        assert ds.names == fx["names"] and ds.protocol.name == "void150"
    item = ds[1]
    _check_item_contract(item)
    np.testing.assert_array_equal(item["depth"], fx["gt_raw"][1].astype(np.float32) / 256)
    np.testing.assert_array_equal(item["sparse"], fx["sparse_raw"][1].astype(np.float32) / 256)
    assert not item["valid"][0].any() and item["valid"][1:].all()
    k = item["intrinsics"]
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx(fx["K"][1])
    with pytest.raises(DatasetLayoutError, match="no void_1500"):
        build_dataset("void", tmp_path)  # density 1500 by default, not present


def test_void_malformed_lists_are_reported(tmp_path):
    fx = write_void(tmp_path, density=500)
    lf = fx["dens"] / "test_ground_truth.txt"
    lines = lf.read_text().splitlines()
    lf.write_text(lines[0] + "\n")
    with pytest.raises(DatasetLayoutError, match="different lengths"):
        build_dataset("void500", tmp_path)
    lf.write_text(lines[0] + "\nvoid_500/data/classroom6/ground_truth/missing.png\n")
    with pytest.raises(DatasetLayoutError, match=r"missing\.png.*test_ground_truth\.txt"):
        build_dataset("void500", tmp_path)


@pytest.mark.parametrize("density", ["abc", 150.7, 1500.5, True])
def test_void_density_must_be_one_of_the_releases(tmp_path, density):
    write_void(tmp_path, density=150)
    assert build_dataset("void", tmp_path, density="150").density == 150
    with pytest.raises(ValueError, match=r"density must be one of \(150, 500, 1500\).*received"):
        build_dataset("void", tmp_path, density=density)


@pytest.mark.parametrize("what", ["sparse_depth", "ground_truth", "intrinsics"])
def test_void_lists_out_of_step_are_refused_not_paired(tmp_path, what):
    """The four lists are read in parallel: one in another order would pair frame 0's image with frame 1's depth."""
    fx = write_void(tmp_path, density=150)
    lf = fx["dens"] / f"test_{what}.txt"
    lf.write_text("\n".join(lf.read_text().splitlines()[::-1]) + "\n")
    with pytest.raises(DatasetLayoutError, match=rf"line 1 of test_image\.txt and of test_{what}\.txt.*different "
                                                 "frames"):
        build_dataset("void150", tmp_path)


# ------------------------------------------------------------------------------------------------------ iBims-1
def _marigold_dc_reference_selection(mask, k, seed):
    """Marigold-DC's deterministic_select_k_true as it runs there: global np.random.seed, then shuffle."""
    state = np.random.get_state()
    try:
        idx = np.argwhere(mask)
        np.random.seed(seed)
        np.random.shuffle(idx)
        out = np.zeros_like(mask)
        out[tuple(zip(*idx[:k]))] = True
        return out
    finally:
        np.random.set_state(state)


def test_ibims_png_release_masks_scaling_edges_and_marigold_dc_points(tmp_path):
    fx = write_ibims_raw(tmp_path)
    ds = build_dataset("ibims1", tmp_path)
    assert ds.names == ["corridor_01", "office_03"] and ds.format == "raw"
    item = ds[1]
    _check_item_contract(item)
    a = fx["office_03"]
    valid = a["mask_invalid"] & a["mask_transp"] & (a["depth_raw"] > 0)
    np.testing.assert_array_equal(item["valid"], valid)
    expected = np.where(valid, a["depth_raw"].astype(np.float32) * np.float32(50 / 65535), 0)
    np.testing.assert_allclose(item["depth"], expected, rtol=1e-6, atol=0)
    assert item["depth"][10, 10] == pytest.approx((2000 + 370 + 110 + 5) * 50 / 65535, rel=1e-6)
    np.testing.assert_array_equal(item["edges"], a["edges"])
    k = item["intrinsics"]
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx(a["K"])
    chosen = item["sparse"] > 0
    assert chosen.sum() == 1000
    np.testing.assert_array_equal(chosen, _marigold_dc_reference_selection(valid, 1000, 2024))
    np.testing.assert_array_equal(item["sparse"][chosen], item["depth"][chosen])
    np.testing.assert_array_equal(marigold_dc_select(valid, 1000, 2024), chosen)


def test_ibims_edge_map_of_another_size_is_refused_naming_both(tmp_path):
    fx = write_ibims_raw(tmp_path, names=("corridor_01",))
    write_mask_1bit(tmp_path / "ibims1_core_raw" / "edges" / "corridor_01.png", fx["corridor_01"]["edges"][:, :-1])
    with pytest.raises(DatasetLayoutError, match=r"edges/corridor_01\.png is 48x63 \(HxW\) but the depth \S*depth/"
                       r"corridor_01\.png is 48x64"):
        build_dataset("ibims1", tmp_path)[0]


def test_ibims_mat_release_matches_png_release(tmp_path):
    write_ibims_raw(tmp_path / "raw", names=("corridor_01",))
    write_ibims_mat(tmp_path / "mat", names=("corridor_01",))
    a, b = build_dataset("ibims1", tmp_path / "raw")[0], build_dataset("ibims1", tmp_path / "mat")[0]
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["valid"], b["valid"])
    np.testing.assert_array_equal(a["sparse"] > 0, b["sparse"] > 0)
    np.testing.assert_allclose(a["depth"], b["depth"], rtol=1e-6)
    np.testing.assert_array_equal(a["edges"], b["edges"])
    ka, kb = a["intrinsics"], b["intrinsics"]  # the .mat stores K transposed; both must read the same camera
    assert (kb.fx, kb.fy, kb.cx, kb.cy) == pytest.approx((ka.fx, ka.fy, ka.cx, ka.cy))


# ------------------------------------------------------------------------------------------------------ DDAD
def test_ddad_pregenerated_layout_and_filter(tmp_path):
    fx = write_ddad(tmp_path)
    for root in (tmp_path, tmp_path / "pregenerated", fx["base"]):
        assert build_dataset("ddad", root).names == fx["names"]
    item = build_dataset("ddad", tmp_path)[1]
    _check_item_contract(item)
    np.testing.assert_array_equal(item["depth"], fx["gt_raw"][1].astype(np.float32) / 256)
    expected = fx["hints_raw"][1].astype(np.float32) / 256
    expected[8, 10] = 0
    np.testing.assert_array_equal(item["sparse"], expected)
    k = item["intrinsics"]
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx(fx["K"][1])


# ------------------------------------------------------------------------------------------------------ processed
def test_marigold_dc_processed_folder_is_read_as_is(tmp_path):
    fx = write_processed(tmp_path)
    ds = build_dataset("kitti_dc", tmp_path)
    assert ds.names == fx["names"]
    item = ds[0]
    np.testing.assert_array_equal(item["sparse"], fx["sparse"][0])  # no second filtering
    np.testing.assert_array_equal(item["depth"], fx["gt"][0])
    np.testing.assert_array_equal(item["image"], fx["rgb"][0])
    assert (item["intrinsics"].fx, item["intrinsics"].fy, item["intrinsics"].cx) == (100.0, 101.0, 16.0)
    (tmp_path / "gt" / "0001.npy").unlink()
    with pytest.raises(DatasetLayoutError, match="0001.npy is missing"):
        build_dataset("nyuv2", tmp_path)


def test_a_processed_folder_with_two_images_of_one_name_is_refused(tmp_path):
    """rgb/0000.png and rgb/0000.jpg: sample 0000 would be listed, and scored, twice."""
    fx = write_processed(tmp_path)
    write_rgb_jpg(tmp_path / "rgb" / "0000.jpg", fx["rgb"][0])
    with pytest.raises(DatasetLayoutError, match=r"rgb names 1 sample\(s\) more than once: '0000' \(2 times\)"):
        build_dataset("kitti_dc", tmp_path)


@pytest.mark.parametrize("name", ["void150", "nyuv2"])
def test_a_processed_folder_is_not_read_as_another_split(tmp_path, name):
    """Marigold-DC's processed folder holds the evaluated split: split='train' must not return those test frames."""
    write_processed(tmp_path)
    assert build_dataset(name, tmp_path).split == "test"
    with pytest.raises(ValueError, match="processed folder, which holds the 'test' split only; received split "
                                         "'train'"):
        build_dataset(name, tmp_path, split="train")


# ------------------------------------------------------------------------------------------------------ Hypersim
def test_hypersim_ray_distance_to_planar_depth_by_hand(tmp_path):
    fx = write_hypersim(tmp_path)
    assert hypersim_focal(1024) == pytest.approx(886.81, abs=0.005)
    ds = build_dataset("hypersim", tmp_path, split="train")
    assert ds.names == ["ai_001_001_cam_00_0000"]
    item = ds[0]
    _check_item_contract(item)
    f = 16 / math.tan(math.radians(30))  # 32 px wide, 60 degree horizontal field of view
    # pixel (row 3, col 5): x = 5 - 15.5, y = 3 - 11.5 on the image plane at distance f
    assert item["depth"][3, 5] == pytest.approx(7.5 * f / math.sqrt(10.5**2 + 8.5**2 + f**2), rel=1e-6)
    assert item["depth"][11, 15] == pytest.approx(2.0 * f / math.sqrt(0.5**2 + 0.5**2 + f**2), rel=1e-6)
    assert item["depth"][0, 0] == 0 and not item["valid"][0, 0]  # NaN distance
    assert item["valid"].sum() == 24 * 32 - 1
    k = item["intrinsics"]
    assert (k.fx, k.cx, k.cy) == pytest.approx((f, 15.5, 11.5))
    assert np.abs(item["image"].astype(int) - fx["rgb"][0]).max() <= 2
    planar = distance_to_planar(fx["distance"][0].astype(np.float32))
    np.testing.assert_array_equal(planar, item["depth"])
    m = item["sparse"] > 0
    assert m.sum() == 500 and np.array_equal(item["sparse"][m], item["depth"][m])


def test_hypersim_splits_from_csv_and_epochs(tmp_path):
    write_hypersim(tmp_path)
    assert build_dataset("hypersim", tmp_path, split="val").names == ["ai_001_001_cam_00_0001"]
    assert len(build_dataset("hypersim", tmp_path, split="all")) == 3
    ds = build_dataset("hypersim", tmp_path, split="all", image="color")
    a = ds[0]["sparse"]
    np.testing.assert_array_equal(ds[0]["sparse"], a)
    ds.set_epoch(1)
    assert not np.array_equal(ds[0]["sparse"], a)
    csv = tmp_path / "metadata_images_split_scene_v1.csv"
    rows = csv.read_text().splitlines()
    at = next(i for i, r in enumerate(rows) if ",val" in r or "val," in r)
    csv.write_text("\n".join([*rows[:at], rows[at].replace(",1,", ",one,"), *rows[at + 1:]]) + "\n")
    with pytest.raises(DatasetLayoutError, match=rf"line {at + 1}: frame_id is 'one'; expected a whole number"):
        build_dataset("hypersim", tmp_path, split="val")  # was a bare int() ValueError naming no file
    csv.unlink()
    with pytest.raises(DatasetLayoutError, match="metadata_images_split_scene_v1.csv"):
        build_dataset("hypersim", tmp_path, split="train")


def test_a_name_that_is_not_utf8_draws_its_points_instead_of_raising():
    """A file name with bytes that are not UTF-8 arrives with surrogate escapes; seeding by its name raised
    UnicodeEncodeError. Valid names keep their CRC of UTF-8 bytes, so no existing seed moves."""
    import zlib

    from depthkit.data.datasets._ops import image_rng, name_crc

    assert name_crc("scène_01") == zlib.crc32("scène_01".encode())
    assert name_crc("scene_\udcff") == zlib.crc32(b"scene_\xff")
    assert image_rng(3, "scene_\udcff").integers(1 << 30) == image_rng(3, "scene_\udcff").integers(1 << 30)


def test_hypersim_marigold_pngs_are_planar_millimetres(tmp_path):
    fx = write_hypersim_marigold(tmp_path)
    ds = build_dataset("hypersim", tmp_path, split="train")
    assert ds.format == "marigold"
    assert ds.names == ["ai_001_001_cam_00_0000", "ai_001_002_cam_01_0001"]  # as listed: frame 2 is left out
    item = ds[1]
    _check_item_contract(item)
    mm = fx["depth_mm"]["ai_001_002_cam_01_0001"]
    np.testing.assert_array_equal(item["depth"], mm.astype(np.float32) / 1000)  # no ray -> planar conversion
    assert item["depth"][3, 5] == np.float32(7.512) and item["depth"][12, 16] == np.float32(2.1)
    assert item["depth"][0, 0] == 0 and not item["valid"][0, 0]
    assert not item["valid"][1, :4].any() and item["valid"].sum() == 24 * 32 - 5  # 65.535 m > 65 m range
    np.testing.assert_array_equal(item["image"], fx["rgb"]["ai_001_002_cam_01_0001"])
    assert item["intrinsics"] == hypersim_intrinsics(24, 32)
    m = item["sparse"] > 0
    assert m.sum() == 500 and np.array_equal(item["sparse"][m], item["depth"][m]) and item["valid"][m].all()
    val = build_dataset("hypersim", tmp_path, split="val")
    assert val.names == ["ai_003_010_cam_00_0005"] and val[0]["depth"][3, 5] == np.float32(7.512)


def test_hypersim_marigold_lists_scan_and_options(tmp_path):
    write_hypersim_marigold(tmp_path, list_file=False)
    every = ["ai_001_001_cam_00_0000", "ai_001_001_cam_00_0002", "ai_001_002_cam_01_0001"]
    assert build_dataset("hypersim", tmp_path).names == every  # no list: every frame, sorted
    assert build_dataset("hypersim", tmp_path / "train", layout="marigold").names == every  # root = split folder
    assert build_dataset("hypersim", tmp_path, scenes=["ai_001_002"]).names == every[2:]
    lf = tmp_path / "filename_list_train_filtered.txt"  # e.g. Marigold's data_split list
    lf.write_text("ai_001_001/rgb_cam_00_fr0002.png ai_001_001/depth_plane_cam_00_fr0002.png\n")
    assert build_dataset("hypersim", tmp_path, list_file=lf).names == every[1:2]
    (tmp_path / "train" / "filename_list_train_filtered.txt").write_text(lf.read_text())
    assert build_dataset("hypersim", tmp_path).names == every[1:2]  # a filtered list beside the data is used
    lf.write_text("ai_001_001/rgb_cam_00_fr0009.png ai_001_001/depth_plane_cam_00_fr0009.png\n")
    with pytest.raises(DatasetLayoutError, match=r"rgb_cam_00_fr0009\.png is missing \(listed in"):
        build_dataset("hypersim", tmp_path, list_file=lf)
    with pytest.raises(ValueError, match="image and split_csv apply to layout 'raw' only"):
        build_dataset("hypersim", tmp_path, image="color")
    with pytest.raises(ValueError, match="layout must be one of auto, raw, marigold .*received 'png'"):
        build_dataset("hypersim", tmp_path, layout="png")
    with pytest.raises(ValueError, match="no split 'all'"):
        build_dataset("hypersim", tmp_path, split="all")
    with pytest.raises(DatasetLayoutError, match="no <scene>/rgb_cam_XX_frIIII.png"):
        build_dataset("hypersim", tmp_path, layout="marigold", split="test")
    write_png16(tmp_path / "bad" / "train" / "ai_001_001" / "depth_plane_cam_00_fr0000.png", np.zeros((2, 2), np.uint16))
    with pytest.raises(DatasetLayoutError, match="holds neither ai_VVV_NNN/images/"):
        build_dataset("hypersim", tmp_path / "bad")


@pytest.mark.parametrize("list_file", [True, False])
def test_hypersim_marigold_split_folder_is_not_read_as_another_split(tmp_path, list_file):
    """<root> = train/ with split='val' must not return the train frames as the val split."""
    write_hypersim_marigold(tmp_path, list_file=list_file)
    train = build_dataset("hypersim", tmp_path / "train").names
    assert train and build_dataset("hypersim", tmp_path, split="val").names == ["ai_003_010_cam_00_0005"]
    with pytest.raises(ValueError, match=r"is the 'train' split folder .*received split 'val'.*split='train'"):
        build_dataset("hypersim", tmp_path / "train", split="val")


def test_hypersim_marigold_list_pairing_an_image_with_another_frames_depth_is_refused(tmp_path):
    write_hypersim_marigold(tmp_path)
    lf = tmp_path / "train" / "filename_list_train.txt"
    lf.write_text("ai_001_001/rgb_cam_00_fr0000.png ai_001_001/depth_plane_cam_00_fr0002.png\n")  # both files exist
    with pytest.raises(DatasetLayoutError, match=r"rgb_cam_00_fr0000\.png is paired with "
                                                 r"ai_001_001/depth_plane_cam_00_fr0002\.png.*its depth is "
                                                 r"ai_001_001/depth_plane_cam_00_fr0000\.png"):
        build_dataset("hypersim", tmp_path)
    lf.write_text("./ai_001_001/rgb_cam_00_fr0000.png ai_001_001/depth_plane_cam_00_fr0000.png\n")
    assert build_dataset("hypersim", tmp_path).names == ["ai_001_001_cam_00_0000"]


def test_hypersim_raw_layout_rejects_marigold_only_options(tmp_path):
    write_hypersim(tmp_path)
    assert build_dataset("hypersim", tmp_path, split="train").format == "raw"
    with pytest.raises(ValueError, match="list_file applies to layout 'marigold' only"):
        build_dataset("hypersim", tmp_path, split="train", list_file=tmp_path / "x.txt")


# ------------------------------------------------------------------------------------------------------ VKITTI2
@pytest.mark.parametrize("separate", [False, True])
def test_vkitti2_centimetres_sky_and_intrinsics(tmp_path, separate):
    fx = write_vkitti2(tmp_path, separate=separate)
    ds = build_dataset("vkitti2", tmp_path)
    assert ds.names == ["Scene01_clone_Camera_0_00000", "Scene01_clone_Camera_0_00001"]
    item = ds[1]
    _check_item_contract(item)
    raw = fx["depth_raw"][(1, 0)]
    np.testing.assert_array_equal(item["depth"], np.where(raw == 65535, 0, raw.astype(np.float32) / 100))
    assert item["depth"][0, 0] == 0 and item["depth"][3, 0] == 90.0 and item["depth"][10, 0] == 13.34
    assert not item["valid"][:5].any() and item["valid"][5:].all()  # sky and > 80 m are invalid
    assert (item["sparse"][:5] == 0).all() and (item["sparse"] > 0).sum() == 500
    k = item["intrinsics"]
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((726.0087, 725.0087, 620.5, 187.0))
    both = build_dataset("vkitti2", tmp_path, cameras=("Camera_0", "Camera_1"))
    assert len(both) == 4 and both[3]["intrinsics"].cy == 188.0


# ------------------------------------------------------------------------------------------------------ image folder
@pytest.mark.parametrize("bad", ["0 0 725.0087 725.0087 abc 187.0", "0 0 725.0087 725.0087 620.5"])
def test_vkitti2_malformed_intrinsic_row_names_the_file_and_line(tmp_path, bad):
    write_vkitti2(tmp_path)
    path = tmp_path / "Scene01" / "clone" / "intrinsic.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], bad, *lines[2:]]) + "\n")
    with pytest.raises(DatasetLayoutError, match=r"intrinsic\.txt line 2: expected 'frame cameraID fx fy cx cy'"):
        build_dataset("vkitti2", tmp_path)[0]


def test_vkitti2_a_single_name_is_one_name_not_its_characters(tmp_path):
    write_vkitti2(tmp_path)
    cam1 = ["Scene01_clone_Camera_1_00000", "Scene01_clone_Camera_1_00001"]
    assert build_dataset("vkitti2", tmp_path, cameras="Camera_1").names == cam1
    assert build_dataset("vkitti2", tmp_path, cameras=["Camera_1"], scenes="Scene01", variations="clone").names == cam1
    for option in ({"scenes": "Scene01_extra"}, {"variations": "clone_and_more"}):  # no substring match
        with pytest.raises(DatasetLayoutError, match="no frames/rgb"):
            build_dataset("vkitti2", tmp_path, **option)


def test_vkitti2_release_both_merged_and_separate_is_refused_not_listed_twice(tmp_path):
    write_vkitti2(tmp_path)
    assert len(build_dataset("vkitti2", tmp_path).names) == 2
    write_vkitti2(tmp_path, separate=True)  # the same frames extracted a second time, as the release folders
    with pytest.raises(DatasetLayoutError, match=r"are the same frame \(Scene01/clone/Camera_0/00000\).*keep one"):
        build_dataset("vkitti2", tmp_path)


def test_vkitti2_a_filter_that_matches_nothing_names_every_filter_and_what_exists(tmp_path):
    write_vkitti2(tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"for scenes \['Scene02'\], cameras \['Camera_0'\] \(scene "
                       r"folders found: \['Scene01'\]"):
        build_dataset("vkitti2", tmp_path, scenes="Scene02")
    with pytest.raises(DatasetLayoutError, match=r"for variations \['fog'\], cameras \['Camera_0'\]"):
        build_dataset("vkitti2", tmp_path, variations="fog")


def test_image_folder_recursive_unlabelled(tmp_path):
    img = np.full((6, 8, 3), 77, np.uint8)
    write_rgb_png(tmp_path / "a" / "b" / "x.png", img)
    write_rgb_jpg(tmp_path / "c.JPG", img)
    write_rgb_png(tmp_path / "a" / "x_depth.png", img)
    write_rgb_png(tmp_path / ".cache" / "y.png", img)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = build_dataset("image_folder", tmp_path, exclude=("*_depth.png",))
    assert ds.names == ["a/b/x", "c"]
    item = ds[0]
    np.testing.assert_array_equal(item["image"], img)
    assert item["depth"] is None and item["sparse"] is None and item["valid"] is None and item["intrinsics"] is None
    assert len(build_dataset("image_folder", tmp_path)) == 3



def test_image_folder_names_the_image_links_it_skips(tmp_path):
    write_rgb_png(tmp_path / "a.png", np.full((6, 8, 3), 77, np.uint8))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "gone.png").symlink_to(tmp_path / "moved" / "gone.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")  # a link to an image is an image
    with pytest.warns(DepthkitWarning, match=r"skipped 1 image link\(s\) whose target does not exist, e.g. "
                      r"\['sub/gone\.png'\]"):
        ds = build_dataset("image_folder", tmp_path)
    assert ds.names == ["a", "b"]

# ------------------------------------------------------------------------------------------------------ synthetic
def test_synthetic_splits_use_disjoint_seeds_and_render_scene():
    from depthkit.data.synthetic import render_scene

    test = build_dataset("synthetic", None, split="test", length=2, height=30, width=40)
    train = build_dataset("synthetic", None, split="train", length=2, height=30, width=40)
    assert test.scene_seed(0) == 20_000_000 and train.scene_seed(1) == 1 and not set(test.names) & set(train.names)
    item = test[1]
    scene = render_scene(20_000_001, 30, 40, "random")
    np.testing.assert_array_equal(item["image"], scene.image)
    np.testing.assert_array_equal(item["depth"], scene.depth)
    assert item["intrinsics"] == scene.intrinsics
    m = item["sparse"] > 0
    assert m.sum() == min(500, int((scene.depth > 0).sum())) and np.array_equal(item["sparse"][m], scene.depth[m])
    lidar = build_dataset("synthetic", None, length=1, height=30, width=40, sparse_pattern="lidar",
                          sparse_kwargs={"n_beams": 8})[0]
    assert 0 < (lidar["sparse"] > 0).sum() < 30 * 40
    batch = collate_items([test[0], test[1]])
    assert batch["image"].shape == (2, 3, 30, 40) and batch["depth"].shape == (2, 30, 40)
    assert batch["intrinsics"].shape == (2, 4) and batch["name"] == test.names
    loaded = next(iter(torch.utils.data.DataLoader(test, batch_size=2, collate_fn=collate_items)))
    torch.testing.assert_close(loaded["sparse"], batch["sparse"])


# ------------------------------------------------------------------------------------------------------ errors
_ROOTED = [n for n in DATASETS if n != "synthetic"]


@pytest.mark.parametrize("name", _ROOTED)
def test_missing_and_empty_roots_explain_the_layout(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError) as err:
        build_dataset(name, missing)
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg and "Expected layout" in msg and "Get it:" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="Expected layout"):
        build_dataset(name, tmp_path / "empty")


def test_unknown_dataset_option_and_split():
    with pytest.raises(ValueError, match="unknown dataset 'nyu'.*nyuv2.*kitti_dc.*synthetic"):
        build_dataset("nyu", "/tmp")
    with pytest.raises(ValueError, match=r"'synthetic' does not take option\(s\) colour; .*length=None, height=240"):
        build_dataset("synthetic", None, colour=True)
    with pytest.raises(ValueError, match=r"'nyuv2' does not take option\(s\) density; .*layout='auto'"):
        build_dataset("nyuv2", "/tmp", density=500)
    with pytest.raises(ValueError, match=r"could not use the options sparse_kwargs=5.*width=320"):
        build_dataset("synthetic", None, sparse_kwargs=5)  # a TypeError inside the reader
    with pytest.raises(ValueError, match=r"synthetic height must be an integer >= 1; received '30'"):
        build_dataset("synthetic", None, height="30")  # checked by the reader itself
    assert "layout" in reader_options("hypersim") and "list_file" in reader_options("hypersim")
    with pytest.raises(ValueError, match="no split 'train'.*val"):
        build_dataset("kitti_dc", "/tmp", split="train")


# ------------------------------------------------------------------------------------------------------ protocols
def test_protocol_values_match_marigold_dc():
    nyu = PROTOCOLS["nyuv2"]
    assert (nyu.n_sparse_points, nyu.eval_resolution, nyu.input_crop, nyu.n_images) == (500, (240, 320),
                                                                                        (6, 234, 8, 312), 654)
    assert PROTOCOLS["kitti_dc"].outlier_filter == (7, 1.5) and PROTOCOLS["ddad"].outlier_filter == (7, 1.5)
    assert (PROTOCOLS["ibims1"].n_sparse_points, PROTOCOLS["ibims1"].sparse_seed) == (1000, 2024)
    for name in ("nyuv2", "kitti_dc", "void150", "void500", "void1500", "ibims1", "ddad"):
        p = PROTOCOLS[name]
        assert p.min_depth == 0 and math.isinf(p.max_depth) and p.crop is None and p.benchmark
    assert set(DATASETS) - {"image_folder"} <= set(PROTOCOLS)


def test_apply_protocol_range_and_crops():
    p = Protocol("t", 1.0, 5.0, None, None, None, None, "test")
    gt = np.array([[0.0, 1.0, 1.5], [5.0, 5.01, np.nan]])
    np.testing.assert_array_equal(apply_protocol(None, gt, None, p), [[False, False, True], [True, False, False]])
    valid = np.array([[1, 1, 0], [1, 1, 1]], bool)
    np.testing.assert_array_equal(apply_protocol(gt, gt, valid, p), [[False, False, False], [True, False, False]])
    eigen = crop_mask((480, 640), "eigen")
    rows, cols = np.nonzero(eigen.any(1))[0], np.nonzero(eigen.any(0))[0]
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (45, 471, 41, 601) and eigen.sum() == 426 * 560
    garg = crop_mask((352, 1216), "garg")
    rows, cols = np.nonzero(garg.any(1))[0], np.nonzero(garg.any(0))[0]
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (143, 349, 43, 1172)
    boxed = Protocol("b", 0.0, math.inf, (1, 3, 0, 2), None, None, None, "box")
    np.testing.assert_array_equal(apply_protocol(None, np.ones((4, 3)), None, boxed),
                                  [[0, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="does not fit"):
        apply_protocol(None, np.ones((2, 2)), None, boxed)
    with pytest.raises(ValueError, match="pred shape"):
        apply_protocol(np.ones((3, 3)), np.ones((4, 3)), None, boxed)
    with pytest.raises(ValueError, match="unknown crop"):
        Protocol("x", 0.0, 1.0, "diagonal", None, None, None, "bad")
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        Protocol("x", 2.0, 1.0, None, None, None, None, "bad")
    with pytest.raises(ValueError, match="no evaluation protocol named 'image_folder'"):
        apply_protocol(None, gt, None, "image_folder")


def test_protocol_table_lists_every_protocol():
    table = protocol_table_markdown()
    lines = table.splitlines()
    assert lines[0].startswith("| Dataset |") and lines[1].startswith("|---")
    for name in PROTOCOLS:
        assert f"| {name} |" in table and f"`{name}`" in table
    nyu_row = next(line for line in lines if line.startswith("| nyuv2 |"))
    assert "240x320" in nyu_row and "228x304" in nyu_row and "500 random GT points" in nyu_row and "2024" in nyu_row


def test_a_truncated_dataset_png_is_named_by_depthkit_alone(tmp_path, capfd):
    """A cut-short depth PNG or mask in a dataset is a DatasetLayoutError that names the file and says where it ends,
    and OpenCV's decoder prints nothing (it used to print "libpng error: Read Error" before depthkit's message)."""
    from depthkit.data.datasets._ops import read_mask, read_png_raw

    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "d.png"), rng.integers(0, 65535, (200, 300), dtype=np.uint16))
    data = (tmp_path / "d.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    capfd.readouterr()
    for read, what in ((lambda path: read_png_raw(path, "depth"), "depth PNG"), (read_mask, "mask")):
        with pytest.raises(DatasetLayoutError, match=rf"could not decode {what} .*cut\.png: the file is a truncated"):
            read(tmp_path / "cut.png")
        assert capfd.readouterr().err == ""
        assert read(tmp_path / "d.png").shape == (200, 300)


@pytest.mark.parametrize("name, write, depth_glob", [
    ("kitti_dc", write_kitti, "**/groundtruth_depth/*.png"),
    ("nyuv2", lambda root: write_nyu(root, n=1), "test/*/*_0001.png"),
    ("ibims1", write_ibims_raw, "ibims1_core_raw/depth/*.png"),
    ("hypersim", write_hypersim_marigold, "*/*/depth_plane_*.png"),
    ("vkitti2", write_vkitti2, "**/depth_*.png"),
])
def test_an_8_bit_depth_png_is_refused_not_read_256_times_too_small(tmp_path, name, write, depth_glob):
    """Every reader's depth files are 16-bit PNGs; the same file re-saved with 8 bits (its depth lost) is refused
    by name with its value range, not read as depths in the 16-bit units (KITTI: 200 would be 0.78 m)."""
    write(tmp_path)
    paths = sorted(tmp_path.glob(depth_glob))
    assert paths
    for p in paths:
        assert cv2.imwrite(str(p), np.full(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape, 200, np.uint8))
    with pytest.raises(DatasetLayoutError, match=r"is an 8-bit PNG \(values 200-200\); .* is a 16-bit PNG, and 8 "
                                                 r"bits cannot hold it\. Use the dataset's original 16-bit file"):
        build_dataset(name, tmp_path)[0]
