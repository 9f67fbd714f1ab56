"""Writers of tiny dataset fixtures in each benchmark's real on-disk format (names, folders, encodings).

Each ``write_*`` function builds a few small samples under a root folder and returns what was written (the exact
arrays in metres, names, paths) so tests can compare the readers' output with known values.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A deterministic HxWx3 uint8 RGB test image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_rgb_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]))


def write_rgb_jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 100])


def write_png16(path: Path, raw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert raw.dtype == np.uint16
    assert cv2.imwrite(str(path), raw)


def write_mask_1bit(path: Path, mask: np.ndarray) -> None:
    """A 1-bit PNG, as the iBims-1 release stores its masks."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(bool)).convert("1").save(path)


def k_text(fx, fy, cx, cy) -> str:
    return f"{fx} 0 {cx} 0 {fy} {cy} 0 0 1\n"


# ---------------------------------------------------------------------------------------------------- NYUv2
def write_nyu(root: Path, n: int = 3, h: int = 480, w: int = 640, list_file: bool = True) -> dict:
    """Marigold's nyu_labeled_extracted layout; depth_XXXX (raw, with a hole) and filled_XXXX in millimetres."""
    v, u = np.mgrid[0:h, 0:w]
    out = {"rgb": [], "filled_mm": [], "raw_mm": [], "names": [], "lines": []}
    scenes = ["kitchen_0004", "office_0005", "bathroom_0010"]
    for i in range(n):
        scene, idx = scenes[i % len(scenes)], f"{i + 1:04d}"
        folder = root / "test" / scene
        image = rgb(h, w, i)
        filled = (1000 + 10 * v + u + 7 * i).astype(np.uint16)
        raw = filled.copy()
        raw[: h // 4, : w // 4] = 0
        write_rgb_png(folder / f"rgb_{idx}.png", image)
        write_png16(folder / f"depth_{idx}.png", raw)
        write_png16(folder / f"filled_{idx}.png", filled)
        out["rgb"].append(image)
        out["filled_mm"].append(filled)
        out["raw_mm"].append(raw)
        out["names"].append(f"{scene}_{idx}")
        out["lines"].append(f"test/{scene}/rgb_{idx}.png test/{scene}/depth_{idx}.png test/{scene}/filled_{idx}.png")
    if list_file:
        (root / "filename_list_test.txt").write_text("\n".join(out["lines"]))
    return out


def write_nyu_h5(root: Path, n: int = 3) -> dict:
    """Conti's HDF5 pair as Marigold-DC reads it: nyu_img_gt.h5 ("img" Nx228x304x3 uint8, "gt" Nx228x304x1 float32
    metres) and nyu_pred_with_500.h5 ("hints" Nx228x304x1: 500 GT points per image, "preds" Nx228x304x1)."""
    import h5py

    h, w = 228, 304
    v, u = np.mgrid[0:h, 0:w]
    img = np.stack([rgb(h, w, 60 + i) for i in range(n)])
    gt = np.stack([(0.5 + 0.01 * v + 0.001 * u + 0.25 * i).astype(np.float32) for i in range(n)])[..., None]
    hints = np.zeros_like(gt)
    rng = np.random.default_rng(123)  # not the protocol's seed: the reader must use these points, not draw its own
    for i in range(n):
        flat = rng.choice(h * w, 500, replace=False)
        hints[i, flat // w, flat % w, 0] = gt[i, flat // w, flat % w, 0]
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "nyu_img_gt.h5", "w") as f:
        f.create_dataset("img", data=img)
        f.create_dataset("gt", data=gt)
    with h5py.File(root / "nyu_pred_with_500.h5", "w") as f:
        f.create_dataset("hints", data=hints)
        f.create_dataset("preds", data=gt * 1.1)
    return {"img": img, "gt": gt[..., 0], "hints": hints[..., 0], "names": [f"{i:04d}" for i in range(n)]}


# ---------------------------------------------------------------------------------------------------- KITTI DC
KITTI_STEMS = ("2011_09_26_drive_0002_sync_{}_0000000005_image_02", "2011_09_26_drive_0002_sync_{}_0000000010_image_03")


def write_kitti(root: Path, h: int = 24, w: int = 32) -> dict:
    """depth_selection/val_selection_cropped with two samples; sample 0 has a planted LiDAR outlier."""
    base = root / "depth_selection" / "val_selection_cropped"
    out = {"gt_raw": [], "velo_raw": [], "rgb": [], "names": []}
    for i, stem in enumerate(KITTI_STEMS):
        image = rgb(h, w, 10 + i)
        gt = np.zeros((h, w), np.uint16)
        gt[h // 3:, :] = np.arange(w, dtype=np.uint16)[None, :] * 256 + 2560  # 10 m + u metres, rows below a third
        velo = np.zeros((h, w), np.uint16)
        velo[10, 4:20:2] = 2560  # a row of 10 m returns
        velo[10, 11] = 30 * 256  # planted: 30 m, 1 px from 10 m neighbours (seen through an object)
        velo[20, 28] = 40 * 256  # isolated far return, no neighbour within reach: kept
        write_rgb_png(base / "image" / (stem.format("image") + ".png"), image)
        write_png16(base / "velodyne_raw" / (stem.format("velodyne_raw") + ".png"), velo)
        write_png16(base / "groundtruth_depth" / (stem.format("groundtruth_depth") + ".png"), gt)
        (base / "intrinsics").mkdir(parents=True, exist_ok=True)
        (base / "intrinsics" / (stem.format("image") + ".txt")).write_text(
            "721.5377 0.0 596.5593 0.0 721.5377 149.854 0.0 0.0 1.0\n")
        out["gt_raw"].append(gt)
        out["velo_raw"].append(velo)
        out["rgb"].append(image)
        out["names"].append(stem.format("image"))
    out["base"] = base
    return out


# ---------------------------------------------------------------------------------------------------- VOID
def write_void(root: Path, density: int = 150, h: int = 24, w: int = 32) -> dict:
    """void_release/void_<density> with list files (paths relative to void_release) and two test frames."""
    dens = root / f"void_{density}"
    frames = [("birthplace_of_internet", "1552097915.4833"), ("classroom6", "1552695287.9811")]
    lines = {k: [] for k in ("image", "sparse_depth", "ground_truth", "intrinsics", "validity_map")}
    out = {"gt_raw": [], "sparse_raw": [], "rgb": [], "names": [], "K": []}
    for i, (seq, ts) in enumerate(frames):
        d = dens / "data" / seq
        image = rgb(h, w, 20 + i)
        gt = (np.arange(h * w, dtype=np.uint16).reshape(h, w) + 256).astype(np.uint16)
        gt[0, :] = 0
        sparse = np.zeros((h, w), np.uint16)
        sparse[5, 5], sparse[12, 20] = 300, 900
        write_rgb_png(d / "image" / f"{ts}.png", image)
        write_png16(d / "sparse_depth" / f"{ts}.png", sparse)
        write_png16(d / "ground_truth" / f"{ts}.png", gt)
        (d / "validity_map").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(d / "validity_map" / f"{ts}.png"), (sparse > 0).astype(np.uint8))
        (d / "K.txt").write_text(f"{514.6 + i} 0 {315.9} \n0 {514.6 + i} 246.9\n0 0 1\n")
        for key, rel in (("image", f"image/{ts}.png"), ("sparse_depth", f"sparse_depth/{ts}.png"),
                         ("ground_truth", f"ground_truth/{ts}.png"), ("validity_map", f"validity_map/{ts}.png")):
            lines[key].append(f"void_{density}/data/{seq}/{rel}")
        lines["intrinsics"].append(f"void_{density}/data/{seq}/K.txt")
        out["gt_raw"].append(gt)
        out["sparse_raw"].append(sparse)
        out["rgb"].append(image)
        out["names"].append(f"{seq}_{ts}")
        out["K"].append((514.6 + i, 514.6 + i, 315.9, 246.9))
    for key, ls in lines.items():
        (dens / f"test_{key}.txt").write_text("\n".join(ls) + "\n")
    out["dens"] = dens
    return out


# ---------------------------------------------------------------------------------------------------- iBims-1
def ibims_arrays(h: int, w: int, i: int) -> dict:
    v, u = np.mgrid[0:h, 0:w]
    depth_raw = (2000 + 37 * v + 11 * u + 5 * i).astype(np.uint16)
    depth_raw[0, 0] = 0  # missing laser return
    mask_invalid = np.ones((h, w), bool)
    mask_invalid[:, :3] = False
    mask_transp = np.ones((h, w), bool)
    mask_transp[h - 4:, :] = False
    edges = np.zeros((h, w), bool)
    edges[h // 2, :] = True
    return {"rgb": rgb(h, w, 30 + i), "depth_raw": depth_raw, "mask_invalid": mask_invalid,
            "mask_transp": mask_transp, "edges": edges, "K": (559.6 + i, 559.7, 319.9, 239.5)}


def write_ibims_raw(root: Path, names=("corridor_01", "office_03"), h: int = 48, w: int = 64) -> dict:
    """ibims1_core_raw (PNG release) with imagelist.txt beside it; masks as 1-bit PNGs; comma-separated calib."""
    base = root / "ibims1_core_raw"
    out = {}
    for i, name in enumerate(names):
        a = ibims_arrays(h, w, i)
        write_rgb_png(base / "rgb" / f"{name}.png", a["rgb"])
        write_png16(base / "depth" / f"{name}.png", a["depth_raw"])
        write_mask_1bit(base / "mask_invalid" / f"{name}.png", a["mask_invalid"])
        write_mask_1bit(base / "mask_transp" / f"{name}.png", a["mask_transp"])
        write_mask_1bit(base / "edges" / f"{name}.png", a["edges"])
        fx, fy, cx, cy = a["K"]
        (base / "calib").mkdir(parents=True, exist_ok=True)
        (base / "calib" / f"{name}.txt").write_text(f"{fx},0,{cx}\n0,{fy},{cy}\n0,0,1\n")
        out[name] = a
    (root / "imagelist.txt").write_text("\n".join(names) + "\n")
    return out


def write_ibims_mat(root: Path, names=("corridor_01",), h: int = 48, w: int = 64) -> dict:
    """ibims1_core_mat: one .mat per image with struct ``data`` (depth in metres, calib stored transposed)."""
    from scipy import io as sio

    base = root / "ibims1_core_mat"
    base.mkdir(parents=True)
    out = {}
    for i, name in enumerate(names):
        a = ibims_arrays(h, w, i)
        fx, fy, cx, cy = a["K"]
        k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
        sio.savemat(str(base / f"{name}.mat"), {"data": {
            "rgb": a["rgb"], "depth": a["depth_raw"].astype(np.float64) * 50.0 / 65535.0, "calib": k.T,
            "mask_invalid": a["mask_invalid"].astype(np.uint8), "mask_transp": a["mask_transp"].astype(np.uint8),
            "edges": a["edges"].astype(np.uint8)}})
        out[name] = a
    return out


# ---------------------------------------------------------------------------------------------------- DDAD
def write_ddad(root: Path, n: int = 2, h: int = 24, w: int = 40) -> dict:
    """VPP4DC's pregenerated/val layout: rgb, hints and gt as KITTI-style PNGs, K via numpy.savetxt."""
    base = root / "pregenerated" / "val"
    out = {"gt_raw": [], "hints_raw": [], "rgb": [], "names": [], "K": []}
    for i in range(n):
        name = f"{i:010d}"
        image = rgb(h, w, 40 + i)
        gt = np.full((h, w), 5 * 256 + i, np.uint16)
        gt[:2] = 0
        hints = np.zeros((h, w), np.uint16)
        hints[8, 8:14] = 5 * 256
        hints[8, 10] = 60 * 256  # occluded return -> filtered
        write_rgb_png(base / "rgb" / f"{name}.png", image)
        write_png16(base / "hints" / f"{name}.png", hints)
        write_png16(base / "gt" / f"{name}.png", gt)
        (base / "intrinsics").mkdir(parents=True, exist_ok=True)
        k = np.array([[2181.5 + i, 0, 928.0], [0, 2181.5, 615.0], [0, 0, 1]])
        np.savetxt(base / "intrinsics" / f"{name}.txt", k)
        out["gt_raw"].append(gt)
        out["hints_raw"].append(hints)
        out["rgb"].append(image)
        out["names"].append(name)
        out["K"].append((2181.5 + i, 2181.5, 928.0, 615.0))
    out["base"] = base
    return out


# ---------------------------------------------------------------------------------------------------- Hypersim
def write_hypersim(root: Path, h: int = 24, w: int = 32) -> dict:
    """One scene, one camera, three frames (train / val / excluded in the CSV); float16 HDF5 distances with a NaN."""
    import h5py

    scene, cam = "ai_001_001", "cam_00"
    prev = root / scene / "images" / f"scene_{cam}_final_preview"
    geo = root / scene / "images" / f"scene_{cam}_geometry_hdf5"
    geo.mkdir(parents=True)
    out = {"distance": {}, "rgb": {}}
    for frame in (0, 1, 2):
        dist = np.full((h, w), 2.0 + frame, np.float16)
        dist[3, 5] = np.float16(7.5)
        dist[0, 0] = np.nan
        color = np.full((h, w, 3), (200, 120, 40), np.uint8)
        write_rgb_jpg(prev / f"frame.{frame:04d}.tonemap.jpg", color)
        write_rgb_jpg(prev / f"frame.{frame:04d}.color.jpg", color)
        with h5py.File(geo / f"frame.{frame:04d}.depth_meters.hdf5", "w") as f:
            f.create_dataset("dataset", data=dist)
        out["distance"][frame] = dist
        out["rgb"][frame] = color
    rows = ["scene_name,camera_name,frame_id,included_in_public_release,exclude_reason,split_partition_name",
            f"{scene},{cam},0,True,,train", f"{scene},{cam},1,True,,val", f"{scene},{cam},2,False,bad,train",
            "ai_999_999,cam_00,0,True,,train"]
    (root / "metadata_images_split_scene_v1.csv").write_text("\n".join(rows) + "\n")
    out["scene"], out["cam"] = scene, cam
    return out


def write_hypersim_marigold(root: Path, h: int = 24, w: int = 32, list_file: bool = True) -> dict:
    """Marigold's preprocessed Hypersim: <split>/<scene>/rgb_cam_XX_frIIII.png and depth_plane_cam_XX_frIIII.png
    (uint16 planar millimetres, 0 = no surface) with filename_list_<split>.txt; train frames 0 and 2 of ai_001_001
    cam_00 and frame 1 of ai_001_002 cam_01 (its list leaves frame 2 of ai_001_001 out), val frame 5."""
    frames = {"train": [("ai_001_001", "cam_00", 0), ("ai_001_001", "cam_00", 2), ("ai_001_002", "cam_01", 1)],
              "val": [("ai_003_010", "cam_00", 5)]}
    out = {"depth_mm": {}, "rgb": {}, "lines": {}}
    for split, items in frames.items():
        lines = []
        for k, (scene, cam, fr) in enumerate(items):
            mm = np.full((h, w), 2000 + 100 * fr, np.uint16)
            mm[3, 5] = 7512  # 7.512 m
            mm[0, 0] = 0  # no surface
            mm[1, :4] = 65535  # 65.535 m: beyond the 65 m training range
            image = rgb(h, w, 70 + 10 * fr + k)
            folder = root / split / scene
            write_rgb_png(folder / f"rgb_{cam}_fr{fr:04d}.png", image)
            write_png16(folder / f"depth_plane_{cam}_fr{fr:04d}.png", mm)
            name = f"{scene}_{cam}_{fr:04d}"
            out["depth_mm"][name], out["rgb"][name] = mm, image
            lines.append(f"{scene}/rgb_{cam}_fr{fr:04d}.png {scene}/depth_plane_{cam}_fr{fr:04d}.png")
        out["lines"][split] = lines
        if list_file:
            listed = [ln for ln in lines if "fr0002" not in ln]
            (root / split / f"filename_list_{split}.txt").write_text("\n".join(listed))
    return out


# ---------------------------------------------------------------------------------------------------- VKITTI2
def write_vkitti2(root: Path, h: int = 24, w: int = 40, separate: bool = False) -> dict:
    """Scene01/clone frames 0-1 for Camera_0 and Camera_1; depth in cm with a 65535 sky band and a 90 m far band."""
    rgb_root = root / "vkitti_2.0.3_rgb" if separate else root
    depth_root = root / "vkitti_2.0.3_depth" if separate else root
    text_root = root / "vkitti_2.0.3_textgt" if separate else root
    out = {"depth_raw": {}}
    lines = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
    for frame in (0, 1):
        for cam in (0, 1):
            raw = np.full((h, w), 1234 + 100 * frame + cam, np.uint16)
            raw[:3] = 65535  # sky
            raw[3:5] = 9000  # 90 m: outside the 80 m training range
            write_rgb_jpg(rgb_root / "Scene01" / "clone" / "frames" / "rgb" / f"Camera_{cam}" / f"rgb_{frame:05d}.jpg",
                          np.full((h, w, 3), 90, np.uint8))
            write_png16(depth_root / "Scene01" / "clone" / "frames" / "depth" / f"Camera_{cam}" /
                        f"depth_{frame:05d}.png", raw)
            out["depth_raw"][(frame, cam)] = raw
            lines.append(f"{frame} {cam} {725.0087 + frame} 725.0087 620.5 {187.0 + cam}")
    (text_root / "Scene01" / "clone").mkdir(parents=True, exist_ok=True)
    (text_root / "Scene01" / "clone" / "intrinsic.txt").write_text("\n".join(lines) + "\n")
    return out


# ---------------------------------------------------------------------------------------------------- processed
def write_processed(root: Path, n: int = 2, h: int = 24, w: int = 32) -> dict:
    """Marigold-DC's processed layout: rgb/*.png, sparse/*.npy, gt/*.npy, intrinsics/*.txt (3x3 via savetxt)."""
    out = {"rgb": [], "sparse": [], "gt": [], "names": []}
    for sub in ("rgb", "sparse", "gt", "intrinsics"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        name = f"{i:04d}"
        image = rgb(h, w, 50 + i)
        gt = np.random.default_rng(i).uniform(1, 20, (h, w))
        sparse = np.zeros((h, w))
        sparse[4, 4], sparse[4, 5] = 3.0, 50.0  # would be filtered if the protocol were applied again
        write_rgb_png(root / "rgb" / f"{name}.png", image)
        np.save(root / "sparse" / f"{name}.npy", sparse)
        np.save(root / "gt" / f"{name}.npy", gt)
        np.savetxt(root / "intrinsics" / f"{name}.txt", np.array([[100.0, 0, 16], [0, 101.0, 12], [0, 0, 1]]))
        out["rgb"].append(image)
        out["sparse"].append(sparse.astype(np.float32))
        out["gt"].append(gt.astype(np.float32))
        out["names"].append(name)
    return out
