"""Tests for the procedural RGB-D scene generator (depthkit.data.synthetic)."""

import math

import numpy as np
import pytest

from depthkit.data._raycast import _Box, _Cylinder, _Material, _Plane, _Sphere
from depthkit.data.synthetic import (
    MAX_OUTDOOR_DEPTH,
    Scene,
    intrinsics_from_fov,
    render_scene,
    resolve_kind,
)
from depthkit.geometry import Intrinsics, backproject

H, W = 48, 64


def _world_points(scene: Scene, mask: np.ndarray) -> np.ndarray:
    """Back-project the pixels in ``mask`` with depthkit.geometry and move them to the world frame (Nx3)."""
    pts = backproject(scene.depth, scene.intrinsics, mask=mask).astype(np.float64)
    pose = scene.camera_to_world
    return pts @ pose[:3, :3].T + pose[:3, 3]


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_shapes_dtypes_and_intrinsics(kind):
    s = render_scene(3, H, W, kind=kind, hfov_deg=70.0)
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    assert s.depth.shape == (H, W) and s.depth.dtype == np.float32
    assert s.instance.shape == (H, W) and s.kind == kind and s.seed == 3
    f = 32.0 / math.tan(math.radians(35.0))  # (W / 2) / tan(hfov / 2)
    assert s.intrinsics == Intrinsics(f, f, 31.5, 23.5)
    assert np.all(np.isfinite(s.depth)) and s.depth.min() >= 0
    # the instance map marks exactly the pixels that have a surface
    np.testing.assert_array_equal(s.instance >= 0, s.depth > 0)
    assert s.instance.max() < len(s.instance_names)


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_same_seed_identical_different_seed_different(kind):
    a, b, c = render_scene(7, H, W, kind=kind), render_scene(7, H, W, kind=kind), render_scene(8, H, W, kind=kind)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert not np.array_equal(a.depth, c.depth)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_three_times_resolution_samples_the_same_scene(kind):
    # pixel (u, v) at 1x has its centre exactly at pixel (3u + 1, 3v + 1) at 3x, so the depths must agree
    for seed in (0, 5):
        lo = render_scene(seed, 30, 40, kind=kind)
        hi = render_scene(seed, 90, 120, kind=kind)
        assert lo.intrinsics == intrinsics_from_fov(30, 40, 60.0)
        sub = hi.depth[1::3, 1::3]
        close = np.isclose(lo.depth, sub, rtol=1e-5, atol=0)
        assert close.mean() > 0.995
        np.testing.assert_array_equal(lo.instance, hi.instance[1::3, 1::3])


def test_two_times_resolution_matches_after_downsampling():
    # on a plane inverse depth is affine in pixel coordinates, so the mean of a 2x2 block of inverse depths equals the
    # inverse depth at the block centre, which is the 1x pixel centre
    lo = render_scene(11, 40, 56, kind="indoor")
    hi = render_scene(11, 80, 112, kind="indoor")
    inv = (1.0 / hi.depth.astype(np.float64)).reshape(40, 2, 56, 2).mean(axis=(1, 3))
    rel = np.abs(1.0 / inv - lo.depth) / lo.depth
    assert np.median(rel) < 1e-5
    assert (rel < 1e-3).mean() > 0.9  # the rest straddle depth edges


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_indoor_depth_lies_on_floor_ceiling_and_inside_the_room(seed):
    s = render_scene(seed, H, W, kind="indoor")
    names = np.array(s.instance_names + ("none",))[s.instance]
    floor = _world_points(s, names == "floor")
    assert len(floor) > 20
    np.testing.assert_allclose(floor[:, 2], 0.0, atol=1e-4)
    ceiling = _world_points(s, names == "ceiling")
    if len(ceiling):
        np.testing.assert_allclose(ceiling[:, 2], ceiling[0, 2], atol=1e-4)
        assert 2.3 < ceiling[0, 2] < 3.5
    everything = _world_points(s, s.depth > 0)
    assert everything[:, 2].min() > -1e-4  # nothing below the floor
    # indoor scenes have a surface everywhere, within the documented range
    assert (s.depth > 0).all()
    assert 0.3 < s.depth.min() and s.depth.max() < 12.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_outdoor_has_sky_ground_and_range_limit(seed):
    s = render_scene(seed, H, W, kind="outdoor")
    assert (s.depth == 0).any() and (s.depth > 0).mean() > 0.3
    assert s.depth.max() <= MAX_OUTDOOR_DEPTH
    assert s.depth[s.depth > 0].min() > 1.0
    names = np.array(s.instance_names + ("none",))[s.instance]
    ground = _world_points(s, names == "ground")
    assert len(ground) > 20
    np.testing.assert_allclose(ground[:, 2], 0.0, atol=1e-3)
    # the top row looks above the horizon: some of it is sky
    assert (s.depth[0] == 0).any()


def test_images_are_textured_and_shaded():
    for kind in ("indoor", "outdoor"):
        s = render_scene(4, H, W, kind=kind)
        assert s.image.std() > 10
        assert len(np.unique(s.image.reshape(-1, 3), axis=0)) > 200
        # inside one surface the colour still varies (texture + shading), so it is not a flat fill
        biggest = np.bincount(s.instance[s.instance >= 0]).argmax()
        assert s.image[s.instance == biggest].std() > 2


def test_scenes_vary_with_the_seed():
    heights, counts, kinds = set(), set(), set()
    for seed in range(8):
        s = render_scene(seed, 24, 32, kind="random")
        heights.add(round(float(s.camera_to_world[2, 3]), 3))
        counts.add(len(s.instance_names))
        kinds.add(s.kind)
    assert len(heights) == 8 and len(counts) >= 3 and kinds == {"indoor", "outdoor"}


def test_random_kind_is_the_scene_of_the_chosen_kind():
    for seed in range(4):
        s = render_scene(seed, 24, 32, kind="random")
        assert s.kind == resolve_kind(seed, "random")
        np.testing.assert_array_equal(s.depth, render_scene(seed, 24, 32, kind=s.kind).depth)


def test_image_noise_changes_pixels_not_depth():
    clean = render_scene(2, H, W, image_noise=0.0)
    noisy = render_scene(2, H, W, image_noise=3.0)
    np.testing.assert_array_equal(clean.depth, noisy.depth)
    diff = noisy.image.astype(float) - clean.image.astype(float)
    assert 2.0 < diff.std() < 4.0
    np.testing.assert_array_equal(noisy.image, render_scene(2, H, W, image_noise=3.0).image)


def test_any_aspect_ratio_and_tiny_images():
    tall = render_scene(1, 50, 20)
    assert tall.depth.shape == (50, 20) and (tall.depth > 0).all()
    one = render_scene(1, 1, 1)
    assert one.depth.shape == (1, 1) and one.depth[0, 0] > 0


@pytest.mark.parametrize("kwargs", [
    {"seed": -1}, {"seed": 1.5}, {"seed": True}, {"height": 0}, {"width": 2.0}, {"kind": "space"},
    {"hfov_deg": 0.0}, {"hfov_deg": 179.0}, {"hfov_deg": float("nan")}, {"image_noise": -1.0},
    {"image_noise": True}, {"clutter": -1}, {"clutter": 1.5}, {"clutter": True},
])
def test_invalid_arguments_raise(kwargs):
    args = {"seed": 0, "height": 8, "width": 8, **kwargs}
    with pytest.raises(ValueError):
        render_scene(**args)


def test_primitive_intersections_match_hand_computed_values():
    mat = _Material("plain", np.ones(3), np.ones(3), 1.0, 0.0, 0)
    o = np.zeros((3, 1))
    # ray directions as columns: +y, (0, 1, 0.5), (0.6, 0.8, 0), (0, 1, 0.25)
    d = np.array([[0.0, 0.0, 0.6, 0.0], [1.0, 1.0, 0.8, 1.0], [0.0, 0.5, 0.0, 0.25]])
    sphere = _Sphere([0, 5, 0], 1.0, mat, 0)
    t = sphere.intersect(o, d)
    np.testing.assert_allclose(t[0], 4.0)
    assert np.isinf(t[2])  # (0.6, 0.8, 0) passes 3 m from the centre
    assert np.isinf(t[3])  # (0, 1, 0.25) passes 5 * 0.25 / sqrt(1.0625) = 1.21 m from the centre
    # (0, 1, 0.1): 1.01 t^2 - 10 t + 24 = 0, nearer root
    np.testing.assert_allclose(sphere.intersect(o, np.array([[0.0], [1.0], [0.1]])),
                               [(10 - math.sqrt(100 - 4 * 1.01 * 24)) / (2 * 1.01)])
    box = _Box([0, 4, 0], [1, 1, 1], 0.0, mat, 0)  # x, z in [-1, 1], y in [3, 5]
    t = box.intersect(o, d)
    np.testing.assert_allclose(t[[0, 3]], [3.0, 3.0])  # face y = 3; the second ray is at z = 0.75 there
    assert np.isinf(t[1])  # (0, 1, 0.5) is at z = 1.5 when it reaches y = 3: over the box
    assert np.isinf(t[2])
    rotated = _Box([0, 4, 0], [1, 1, 1], math.pi / 4, mat, 0)  # a vertical edge points at the camera
    np.testing.assert_allclose(rotated.intersect(o, d[:, :1]), [4 - math.sqrt(2)])
    cyl = _Cylinder(0, 5, 0.5, -1.0, 1.0, mat, 0)
    np.testing.assert_allclose(cyl.intersect(o, d[:, :1]), [4.5])
    assert np.isinf(cyl.intersect(o, d[:, 1:2])[0])  # at y = 4.5 the ray is at z = 2.25, above the top cap
    down = np.array([[0.0], [5.0], [-1.0]])  # towards (0, 5, -1): reaches z = -1 at t = 1, inside the top cap
    cyl_cap = _Cylinder(0, 5, 0.5, -3.0, -1.0, mat, 0)
    np.testing.assert_allclose(cyl_cap.intersect(o, down), [1.0])
    plane = _Plane([0, 0, -2], [0, 0, 1], [1, 0, 0], mat, 0)
    np.testing.assert_allclose(plane.intersect(o, down), [2.0])
    assert np.isinf(plane.intersect(o, d[:, :1])[0])  # parallel ray
    # many origins at once (shadow rays): the same answers per column
    origins = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(sphere.intersect(origins, d[:, [0, 0]]), [4.0, 3.0])


def test_an_oriented_box_is_the_axis_aligned_box_it_turns_into():
    """``rot`` orients a box fully: half sizes (1, 0.1, 2) with the local y axis turned to world z and z to world -y
    are the axis-aligned box with half sizes (1, 2, 0.1). Same hits, same normals, for rays in every direction."""
    mat = _Material("plain", np.ones(3), np.ones(3), 1.0, 0.0, 0)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # columns: local x, y, z in the world
    turned = _Box([0.3, 5, 0.05], [1, 0.1, 2], 0.0, mat, 0, rot=rot)
    aligned = _Box([0.3, 5, 0.05], [1, 2, 0.1], 0.0, mat, 0)
    o = np.zeros((3, 1))
    np.testing.assert_allclose(turned.intersect(o, np.array([[0.0], [1.0], [0.0]])), [3.0])  # face y = 5 - 2
    d = np.random.default_rng(0).normal(size=(3, 400)) * np.array([[0.3], [1.0], [0.1]]) + np.array([[0], [1], [0]])
    t_turned, t_aligned = turned.intersect(o, d), aligned.intersect(o, d)
    hit = np.isfinite(t_aligned)
    assert 40 < hit.sum() < 400
    np.testing.assert_array_equal(np.isfinite(t_turned), hit)
    np.testing.assert_allclose(t_turned[hit], t_aligned[hit])
    p = (d[:, hit] * t_aligned[hit]).T
    np.testing.assert_allclose(turned.surface(p)[0], aligned.surface(p)[0], atol=1e-9)
    assert turned.contains(np.array([0.3, 6.8, 0.05]), 0.0) and not turned.contains(np.array([0.3, 5.0, 0.3]), 0.0)


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_clutter_adds_plants_in_front_of_the_same_scene(kind):
    """A scene with clutter is the scene without it plus plants: every pixel the plants do not cover keeps its depth
    or lies in a plant's shadow (colour only), the plants' pixels are nearer than what they hide, and over a few
    seeds they are in view and mostly at slants (the rest of the generator turns boxes about the vertical only)."""
    covered = slanted = outlines = 0
    for seed in range(4):
        base = render_scene(seed, 96, 128, kind=kind)
        clut = render_scene(seed, 96, 128, kind=kind, clutter=3)
        plant = np.isin(clut.instance, [i for i, n in enumerate(clut.instance_names) if n == "plant"])
        assert clut.instance_names[:len(base.instance_names)] == base.instance_names
        np.testing.assert_array_equal(clut.depth[~plant], base.depth[~plant])
        np.testing.assert_array_equal(clut.instance[~plant], base.instance[~plant])
        hidden = plant & (base.depth > 0)
        assert (clut.depth[hidden] < base.depth[hidden]).all()
        covered += plant.sum()
        gy, gx = np.gradient(plant.astype(float))
        outline = np.hypot(gx, gy) > 0
        angle = np.degrees(np.arctan2(np.abs(gy[outline]), np.abs(gx[outline])))  # 0: vertical edge, 90: horizontal
        slanted += int(((angle > 20) & (angle < 70)).sum())
        outlines += int(outline.sum())
        np.testing.assert_array_equal(clut.image, render_scene(seed, 96, 128, kind=kind, clutter=3).image)
    assert covered > 0.02 * 4 * 96 * 128
    assert slanted > 0.2 * outlines  # ~0.35 here; 0.01 for upright rectangles


def test_synthetic_dataset_renders_clutter_and_checks_it():
    from depthkit.data.datasets.synthetic import SyntheticDataset

    ds = SyntheticDataset(split="val", length=1, height=48, width=64, clutter=2)
    np.testing.assert_array_equal(ds[0]["depth"], render_scene(ds.scene_seed(0), 48, 64, "random", clutter=2).depth)
    assert "clutter=2" in repr(ds)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="clutter"):
            SyntheticDataset(split="val", length=1, clutter=bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"height": 2.5}, "synthetic height must be an integer >= 1; received 2.5"),
    ({"width": "a"}, "synthetic width must be an integer >= 1; received 'a'"),
    ({"length": 2.5}, "synthetic length must be an integer >= 1; received 2.5"),
    ({"seed_offset": 1.5}, "synthetic seed_offset must be an integer >= 0; received 1.5"),
    ({"kind": "indor"}, r"kind must be one of \('indoor', 'outdoor', 'random'\); received 'indor'"),
    ({"hfov_deg": float("nan")}, r"hfov_deg must be a number of degrees in \[5, 150\]; received nan"),
    ({"image_noise": float("nan")}, "image_noise must be a finite number >= 0"),
    ({"sparse_kwargs": {"num": 100}}, r"sparse pattern 'random' takes the options n, valid; received \['num'\]"),
    ({"sparse_pattern": "lidar", "sparse_kwargs": {"beams": 32}},
     r"sparse pattern 'lidar' takes the options n_beams, .*; received \['beams'\]"),
    ({"sparse_pattern": "holes", "sparse_kwargs": {"sigma": 0.01, "blobs": 3}}, r"received \['blobs'\]"),
])
def test_synthetic_dataset_refuses_bad_options_when_built(kwargs, match):
    """Refused when the dataset is built (not truncated, and not at its first item inside a DataLoader worker)."""
    from depthkit.data.datasets.synthetic import SyntheticDataset

    with pytest.raises(ValueError, match=match):
        SyntheticDataset(split="val", **kwargs)
