import json

import cv2
import numpy as np
import pytest

from depthkit import io
from depthkit.geometry import Intrinsics


def test_read_image_returns_rgb_from_png_and_jpg(tmp_path):
    img = np.zeros((8, 10, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    cv2.imwrite(str(tmp_path / "a.png"), img[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "a.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), img)
    jpg = io.read_image(tmp_path / "a.jpg")
    assert jpg.dtype == np.uint8 and jpg.shape == (8, 10, 3)
    assert abs(int(jpg[..., 0].mean()) - 200) <= 2 and jpg[..., 2].mean() < 5


def test_read_image_grey_and_errors(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.full((4, 4), 7, np.uint8))
    assert io.read_image(tmp_path / "g.png").shape == (4, 4, 3)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="could not decode"):
        io.read_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        io.read_image(tmp_path / "missing.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="allowed suffixes"):
        io.read_image(tmp_path / "x.gif")


def test_depth_png16_roundtrip_is_exact_at_scale(tmp_path):
    depth = np.array([[0.0, 1.234], [65.535, 0.001]], np.float32)
    io.write_depth_png16(tmp_path / "d.png", depth, scale=1000)
    raw = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.tolist() == [[0, 1234], [65535, 1]]
    back = io.read_depth(tmp_path / "d.png", depth_scale=1000)
    np.testing.assert_allclose(back, depth, atol=1e-6)


def test_depth_png16_refuses_overflow_and_png_needs_scale(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        io.write_depth_png16(tmp_path / "d.png", np.full((2, 2), 70.0), scale=1000)
    io.write_depth_png16(tmp_path / "k.png", np.full((2, 2), 70.0), scale=256)
    np.testing.assert_allclose(io.read_depth(tmp_path / "k.png", depth_scale=256), 70.0, atol=1 / 256)
    # a PNG depthkit wrote records its scale; a foreign one does not and needs one
    np.testing.assert_allclose(io.read_depth(tmp_path / "k.png"), 70.0, atol=1 / 256)
    cv2.imwrite(str(tmp_path / "foreign.png"), np.full((2, 2), 7000, np.uint16))
    with pytest.raises(ValueError, match="no depth scale was given"):
        io.read_depth(tmp_path / "foreign.png")


def test_npy_roundtrip_and_shape_errors(tmp_path):
    depth = np.random.default_rng(0).uniform(0, 5, (5, 6)).astype(np.float32)
    io.write_depth_npy(tmp_path / "d.npy", depth)
    np.testing.assert_array_equal(io.read_depth(tmp_path / "d.npy"), depth)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="expected HxW"):
        io.read_depth(tmp_path / "bad.npy")
    (tmp_path / "trunc.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="could not read"):
        io.read_depth(tmp_path / "trunc.npy")


def test_colorize_has_legend_and_black_missing():
    depth = np.tile(np.linspace(1, 5, 64, dtype=np.float32), (48, 1))
    depth[0, 0] = 0
    rgb = io.colorize(depth)
    assert rgb.dtype == np.uint8 and rgb.shape[0] == 48 and rgb.shape[1] > 64
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert not np.array_equal(rgb[10, 1], rgb[10, 62])  # near and far get different colours
    assert io.colorize(depth, legend=False).shape == (48, 64, 3)


@pytest.mark.parametrize("kind", ["string", "json", "jsonK", "txt4", "txt9"])
def test_parse_intrinsics_forms(tmp_path, kind):
    expected = Intrinsics(500.0, 510.0, 320.0, 240.0)
    k = [[500, 0, 320], [0, 510, 240], [0, 0, 1]]
    if kind == "string":
        spec = "500,510,320,240"
    elif kind == "json":
        spec = tmp_path / "k.json"
        spec.write_text(json.dumps({"fx": 500, "fy": 510, "cx": 320, "cy": 240}))
    elif kind == "jsonK":
        spec = tmp_path / "k.json"
        spec.write_text(json.dumps({"K": k}))
    elif kind == "txt4":
        spec = tmp_path / "k.txt"
        spec.write_text("500 510 320 240\n")
    else:
        spec = tmp_path / "k.txt"
        spec.write_text("\n".join(" ".join(str(v) for v in row) for row in k))
    assert io.parse_intrinsics(spec) == expected


def test_parse_intrinsics_errors(tmp_path):
    with pytest.raises(ValueError, match="expected 4"):
        io.parse_intrinsics("1,2,3")
    with pytest.raises(ValueError, match="could not parse"):
        io.parse_intrinsics("a,b,c,d")


def test_point_cloud_written_with_open3d(tmp_path):
    depth = np.zeros((4, 5), np.float32)
    depth[1, 2] = 2.0
    depth[3, 4] = 3.0
    image = np.full((4, 5, 3), 128, np.uint8)
    path = io.write_point_cloud(tmp_path / "p.ply", depth, "10,10,2,1", image=image)
    pts = io.read_point_cloud(path)
    np.testing.assert_allclose(pts, [[0, 0, 2], [0.6, 0.6, 3]], atol=1e-6)


def test_integer_npy_needs_and_uses_depth_scale(tmp_path):
    mm = np.array([[0, 1500], [2250, 0]], np.uint16)
    np.save(tmp_path / "mm.npy", mm)
    with pytest.raises(ValueError, match="--depth-scale"):
        io.read_depth(tmp_path / "mm.npy")
    np.testing.assert_allclose(io.read_depth(tmp_path / "mm.npy", depth_scale=1000), mm / 1000, atol=1e-6)


def test_float_depth_in_another_unit_warns(tmp_path):
    np.save(tmp_path / "f.npy", np.full((3, 3), 2500.0, np.float32))
    with pytest.warns(io.DepthkitWarning, match="millimetres"):
        io.read_depth(tmp_path / "f.npy")


def test_png_scale_chosen_to_fit_and_recorded(tmp_path):
    depth = np.array([[0.0, 1.5], [80.0, 30.0]], np.float32)  # outdoor: beyond 65.5 m
    assert io.choose_png_scale(depth) == 256 and io.choose_png_scale(depth[:1]) == 1000
    with pytest.raises(ValueError, match="does not fit"):
        io.choose_png_scale(depth, 1000)
    io.write_depth_png16(tmp_path / "d.png", depth, scale=None)
    assert io.png_depth_scale(tmp_path / "d.png") == 256
    np.testing.assert_allclose(io.read_depth(tmp_path / "d.png"), depth, atol=1 / 512)


def test_resize_sparse_keeps_points_single_pixels():
    sparse = np.zeros((4, 6), np.float32)
    sparse[1, 2], sparse[3, 5] = 2.0, 5.0
    up = io.resize_sparse(sparse, (8, 12))
    assert (up > 0).sum() == 2 and up[3, 5] == 2.0 and up[7, 11] == 5.0
    down = io.resize_sparse(np.array([[3.0, 1.0], [0.0, 0.0]], np.float32), (1, 1))
    assert down.tolist() == [[1.0]]  # collision: nearest wins


def test_exif_orientation_is_applied_and_reported(tmp_path):
    from PIL import Image

    img = np.zeros((4, 6, 3), np.uint8)
    img[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    Image.fromarray(img).save(tmp_path / "p.png", exif=exif)
    with pytest.warns(io.DepthkitWarning, match="EXIF orientation 6"):
        upright = io.read_image(tmp_path / "p.png")
    assert upright.shape == (6, 4, 3) and upright[0, -1].min() == 255  # top-left went to top-right


def test_legend_marks_clipping_and_scales_with_height():
    assert io.legend_labels(1, 2, 2, clipped_low=True, clipped_high=True) == ["<= 1.00 m", ">= 2.00 m"]
    depth = np.linspace(0.5, 80, 1080 * 64, dtype=np.float32).reshape(1080, 64)
    small = io.colorize(depth[:120]).shape[1] - 64
    assert io.colorize(depth).shape[1] - 64 > 2 * small  # 1080p legend text is larger, not a fixed 72 px


def test_preload_libusb_lets_open3d_import():
    import subprocess
    import sys

    code = "import depthkit.io as i; i.preload_libusb(); import open3d; print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "ok", res.stderr[-2000:]
