"""Procedural RGB-D scenes with exact metric depth, rendered by an analytic ray caster in numpy.

``render_scene(seed, height, width, kind)`` builds a scene from the seed alone — an indoor room (floor, ceiling and
walls as planes; boxes, tables, panels, spheres and cylinders inside) or an outdoor layout (ground plane, a street
lined with box buildings, poles, trees and cars, or an open field of scattered objects; the sky has no surface) — and
ray-casts it through a pinhole camera, one ray per pixel centre, vectorised over pixels.

Notable properties:
- **Exact depth.** Rays are ``R @ ((u - cx) / fx, (v - cy) / fy, 1)``, so the ray parameter of the nearest hit *is*
  the planar depth z along the optical axis (metres, float32). 0 means no surface: the sky, and outdoor surfaces
  farther than ``MAX_OUTDOOR_DEPTH`` (a sensor-range cut, hidden in the image by haze).
- **Resolution-independent.** Geometry, materials and lights depend on ``seed``, ``kind`` and ``hfov_deg`` only;
  ``height``/``width`` only choose where rays are sampled. Objects are placed inside the frustum of a nominal 4:3
  image, so other aspect ratios show the same scene cropped or extended. Rendering at 3x the size and taking
  ``depth[1::3, 1::3]`` gives the 1x depth (the same pixel centres).
- **Textures in surface coordinates** (metres on each surface: checker, stripes, tiles, windows, wood, value noise),
  so patterns stay attached to objects under any camera. Shading is Lambertian with ambient light plus either a
  ceiling point light (indoor) or the sun (outdoor), with hard shadows cast by objects (the room's own planes and the
  ground cast none). Outdoor colours fade into haze with distance.
- A 320x240 scene renders in about 0.1 s on one core (each primitive is tested only against the rays that meet its
  bounding sphere); large images are traced in row chunks so memory stays bounded.

World frame: x right, y forward, z up (metres); floors and the ground are ``z = 0``. ``Scene.camera_to_world`` maps
camera coordinates (x right, y down, z forward — the convention of :func:`depthkit.geometry.backproject`) to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from depthkit.data._clutter import add_plants
from depthkit.data._raycast import (
    _Box,
    _Cylinder,
    _hsv,
    _occluded,
    _Plane,
    _random_material,
    _road_material,
    _Sphere,
    _trace,
)
from depthkit.data.scene_options import (  # noqa: F401  (KINDS, resolve_kind, check_view_options: public here too)
    KINDS,
    check_int,
    check_view_options,
    resolve_kind,
)
from depthkit.geometry import Intrinsics

MAX_OUTDOOR_DEPTH = 80.0  # metres: outdoor surfaces beyond this planar depth are "no return" (depth 0)
_NOMINAL_ASPECT = 0.75  # height / width of the frustum objects are placed in, so geometry ignores the image size
_CHUNK_PIXELS = 1 << 17


@dataclass
class Scene:
    """One rendered RGB-D scene.

    image: HxWx3 uint8 RGB. depth: HxW float32 planar depth in metres, 0 where no surface (sky, beyond range).
    intrinsics: pinhole intrinsics in pixels. kind: ``"indoor"`` or ``"outdoor"`` (never ``"random"``). seed: the seed.
    camera_to_world: 4x4 float64, camera frame (x right, y down, z forward) to world (z up, floor/ground at z = 0).
    instance: HxW int16 object index into ``instance_names`` (-1 = no surface); parts of one object (a table's legs)
    share an index.
    """

    image: np.ndarray
    depth: np.ndarray
    intrinsics: Intrinsics
    kind: str
    seed: int
    camera_to_world: np.ndarray = field(default_factory=lambda: np.eye(4))
    instance: np.ndarray | None = None
    instance_names: tuple[str, ...] = ()


def intrinsics_from_fov(height: int, width: int, hfov_deg: float) -> Intrinsics:
    """Square-pixel intrinsics (pixels) for a ``width``-pixel image spanning ``hfov_deg`` degrees horizontally.

    Pixel centres are at integer coordinates, so the principal point is ``((W - 1) / 2, (H - 1) / 2)``; this matches
    :meth:`Intrinsics.scaled`, which is why renders at integer multiples of a size sample the same scene.
    """
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return Intrinsics(fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)


# --------------------------------------------------------------------------------------------------- layouts


@dataclass
class _Layout:
    """Everything needed to render: primitives, camera pose, lights and sky (all world frame, metres)."""

    kind: str
    prims: list
    names: list
    origin: np.ndarray  # camera centre
    rot: np.ndarray  # 3x3 camera-to-world rotation
    max_depth: float
    ambient: float
    ambient_color: np.ndarray
    light_color: np.ndarray
    light_power: float
    light_pos: np.ndarray | None = None  # indoor point light
    light_falloff: float = 1.0  # metres; point light intensity / (1 + (dist / falloff)^2)
    sun: np.ndarray | None = None  # outdoor: unit vector towards the sun
    sky_zenith: np.ndarray | None = None
    sky_horizon: np.ndarray | None = None
    fog_dist: float = np.inf


class _Builder:
    def __init__(self):
        self.prims, self.names = [], []

    def instance(self, name: str) -> int:
        self.names.append(name)
        return len(self.names) - 1

    def add_object(self, prims: list, camera: np.ndarray, margin: float) -> bool:
        """Add an object's primitives unless the camera would sit inside (or within ``margin`` of) one of them."""
        if any(p.contains(camera, margin) for p in prims):
            if prims and prims[0].instance == len(self.names) - 1:
                self.names.pop()  # keep instance indices dense
            return False
        self.prims.extend(prims)
        return True


def _camera_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation; yaw turns right from +y about z, pitch > 0 looks up, roll about the optical axis."""
    fwd = np.array([math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), math.sin(pitch)])
    right = np.array([math.cos(yaw), -math.sin(yaw), 0.0])
    down = np.cross(fwd, right)
    cr, sr = math.cos(roll), math.sin(roll)
    return np.stack([cr * right + sr * down, -sr * right + cr * down, fwd], axis=1)


def _fovs(hfov_deg: float) -> tuple[float, float]:
    half_h = math.radians(hfov_deg) / 2
    return half_h, math.atan(_NOMINAL_ASPECT * math.tan(half_h))


def _room_exit(cam: np.ndarray, bearing: float, width: float, depth: float) -> tuple[float, int]:
    """Horizontal distance from the camera to the room's wall along ``bearing``, and that wall's index."""
    dx, dy = math.sin(bearing), math.cos(bearing)
    hits = []
    if abs(dx) > 1e-9:
        hits.append(((width - cam[0]) / dx, 1) if dx > 0 else (-cam[0] / dx, 0))
    if abs(dy) > 1e-9:
        hits.append(((depth - cam[1]) / dy, 3) if dy > 0 else (-cam[1] / dy, 2))
    return min(hits)


_WALL_NORMALS = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])  # inward, for walls 0..3


def _build_indoor(rng: np.random.Generator, hfov_deg: float) -> _Layout:
    half_h, half_v = _fovs(hfov_deg)
    W, D, H = rng.uniform(3.0, 8.0), rng.uniform(4.0, 9.5), rng.uniform(2.4, 3.4)
    cam = np.array([rng.uniform(0.35, 0.65) * W, rng.uniform(0.15, 0.6), rng.uniform(0.9, 1.7)])
    yaw, pitch = math.radians(rng.uniform(-25, 25)), math.radians(rng.uniform(-20, 5))
    roll = math.radians(float(np.clip(rng.normal(0, 1.5), -4, 4)))
    b = _Builder()
    up = np.array([0.0, 0.0, 1.0])
    b.prims.append(_Plane([0, 0, 0], up, [1, 0, 0], _random_material(rng, "floor"), b.instance("floor")))
    b.prims.append(_Plane([0, 0, H], -up, [1, 0, 0], _random_material(rng, "ceiling"), b.instance("ceiling")))
    wall_mat = _random_material(rng, "wall")
    accent = int(rng.integers(4)) if rng.random() < 0.4 else -1
    for k, (n, pt) in enumerate(zip(_WALL_NORMALS, ([0, 0, 0], [W, 0, 0], [0, 0, 0], [0, D, 0]))):
        mat = _random_material(rng, "wall") if k == accent else wall_mat
        b.prims.append(_Plane(pt, n, np.cross(up, n), mat, b.instance("wall")))

    # the floor enters the bottom of the nominal frame at this horizontal distance
    d_floor = cam[2] / math.tan(max(half_v - pitch, math.radians(5)))
    for _ in range(int(rng.integers(3, 10))):
        kind = str(rng.choice(["box", "table", "panel", "sphere", "cylinder"], p=[0.3, 0.15, 0.15, 0.17, 0.23]))
        for _attempt in range(4):
            bearing = yaw + rng.uniform(-0.85, 0.85) * half_h
            exit_d, wall = _room_exit(cam, bearing, W, D)
            hi = exit_d - 0.3
            lo = min(max(1.0, 0.6 * d_floor), 0.7 * hi)
            r = rng.uniform(lo, hi) if hi > lo else max(hi, 0.5)
            xy = cam[:2] + r * np.array([math.sin(bearing), math.cos(bearing)])
            wall_xy = cam[:2] + exit_d * np.array([math.sin(bearing), math.cos(bearing)])
            prims = _indoor_object(rng, kind, xy, wall_xy, wall, W, D, H, b.instance(kind))
            if b.add_object(prims, cam, 0.8):  # nothing closer than 0.8 m, so no object fills the frame
                break

    light = np.array([rng.uniform(0.2, 0.8) * W, rng.uniform(0.2, 0.8) * D, H - 0.05])
    tint = _hsv(rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.2), 1.0)
    return _Layout("indoor", b.prims, b.names, cam, _camera_rotation(yaw, pitch, roll), np.inf,
                   ambient=float(rng.uniform(0.25, 0.4)), ambient_color=np.ones(3), light_color=tint,
                   light_power=float(rng.uniform(0.8, 1.1)), light_pos=light, light_falloff=float(rng.uniform(3, 6)))


def _indoor_object(rng, kind, xy, wall_xy, wall, W, D, H, inst) -> list:
    """Primitives of one piece of furniture near ``xy`` (or on/against ``wall`` at ``wall_xy``), kept in the room."""
    mat = _random_material(rng, "object")
    n = _WALL_NORMALS[wall]
    if kind == "box":
        half = np.array([rng.uniform(0.15, 0.9), rng.uniform(0.15, 0.7), rng.uniform(0.1, 0.95)])
        if rng.random() < 0.4:  # against the wall, aligned with it
            xy = wall_xy[:2] + n[:2] * (np.abs(n[:2]) @ half[:2] + 0.01)
            yaw = 0.0
        else:
            yaw = float(rng.uniform(0, np.pi))
        ext = np.linalg.norm(half[:2]) if yaw else half[:2]
        x, y = np.clip(xy, ext + 0.01, np.array([W, D]) - ext - 0.01)
        return [_Box([x, y, half[2]], half, yaw, mat, inst)]
    if kind == "table":
        hx, hy, top = rng.uniform(0.3, 0.9), rng.uniform(0.25, 0.5), rng.uniform(0.45, 1.0)
        leg, yaw = rng.uniform(0.02, 0.04), float(rng.uniform(0, np.pi))
        ext = math.hypot(hx, hy)
        x, y = np.clip(xy, ext + 0.01, np.array([W, D]) - ext - 0.01)
        prims = [_Box([x, y, top - 0.02], [hx, hy, 0.02], yaw, mat, inst)]
        c, s = math.cos(yaw), math.sin(yaw)
        for sx in (-1, 1):
            for sy in (-1, 1):
                lx, ly = sx * (hx - leg - 0.04), sy * (hy - leg - 0.04)
                centre = [x + c * lx - s * ly, y + s * lx + c * ly, (top - 0.04) / 2]
                prims.append(_Box(centre, [leg, leg, (top - 0.04) / 2], yaw, mat, inst))
        return prims
    if kind == "panel":  # a picture, board or door on the wall
        depth_half = rng.uniform(0.01, 0.03)
        if rng.random() < 0.3:
            w_half, h_half, zc = 0.45, 1.0, 1.0
        else:
            w_half, h_half = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.6)
            zc = rng.uniform(0.9, max(0.91, H - 0.3 - h_half))
        along = abs(n[0]) < 0.5  # walls 2/3 run along x
        half = np.array([w_half, depth_half, h_half]) if along else np.array([depth_half, w_half, h_half])
        lim = np.array([W, D]) - half[:2] - 0.01
        x, y = np.clip(wall_xy[:2] + n[:2] * (depth_half + 0.005), half[:2] + 0.01, lim)
        return [_Box([x, y, min(zc, H - h_half - 0.01)], half, 0.0, mat, inst)]
    if kind == "sphere":
        r = rng.uniform(0.12, 0.5)
        z = r if rng.random() < 0.6 else rng.uniform(min(r + 0.4, H - r - 0.1), H - r - 0.1)
        x, y = np.clip(xy, r + 0.01, np.array([W, D]) - r - 0.01)
        return [_Sphere([x, y, z], r, mat, inst)]
    r = rng.uniform(0.08, 0.45)
    h = H if rng.random() < 0.25 else rng.uniform(0.3, 1.3)
    x, y = np.clip(xy, r + 0.01, np.array([W, D]) - r - 0.01)
    return [_Cylinder(x, y, r, 0.0, h, mat, inst)]


def _tree_or_pole(rng, b: _Builder, x: float, y: float, height_cap: float) -> list:
    if rng.random() < 0.55:
        inst = b.instance("tree")
        crown = min(rng.uniform(1.0, 2.8), max(0.5, height_cap / 3))
        trunk_h = min(rng.uniform(2.5, 5.0), max(1.0, height_cap - 1.6 * crown))
        return [_Cylinder(x, y, rng.uniform(0.12, 0.35), 0.0, trunk_h, _random_material(rng, "bark"), inst),
                _Sphere([x, y, trunk_h + 0.6 * crown], crown, _random_material(rng, "foliage"), inst)]
    inst = b.instance("pole")
    h = min(rng.uniform(3.0, 9.0), max(1.5, height_cap))
    mat = _random_material(rng, "object")
    prims = [_Cylinder(x, y, rng.uniform(0.05, 0.15), 0.0, h, mat, inst)]
    if rng.random() < 0.5:  # a sign board on the pole
        prims.append(_Box([x, y, h - 0.6], [rng.uniform(0.3, 0.6), 0.04, rng.uniform(0.2, 0.5)],
                          float(rng.uniform(0, np.pi)), _random_material(rng, "object"), inst))
    return prims


def _build_outdoor(rng: np.random.Generator, hfov_deg: float) -> _Layout:
    half_h, half_v = _fovs(hfov_deg)
    cam_z = rng.uniform(1.3, 2.6)
    # keep the top of the nominal frame at least 6 degrees above the horizon, so there is sky
    pitch_lo = max(math.radians(-8), math.radians(6) - half_v)
    pitch = rng.uniform(pitch_lo, max(math.radians(3), pitch_lo))
    roll = math.radians(float(np.clip(rng.normal(0, 1.0), -3, 3)))
    top_elev = half_v + pitch
    b = _Builder()
    street = rng.random() < 0.6
    if street:
        road_half = rng.uniform(3.0, 6.0)
        cam = np.array([rng.uniform(-road_half + 1, road_half - 1), 0.0, cam_z])
        yaw = math.radians(rng.uniform(-10, 10))
        ground = _road_material(rng, road_half)
    else:
        cam = np.array([0.0, 0.0, cam_z])
        yaw = rng.uniform(-np.pi, np.pi)
        ground = _random_material(rng, "ground")
    b.prims.append(_Plane([0, 0, 0], [0, 0, 1], [1, 0, 0], ground, b.instance("ground")))

    if street:
        for side in (-1, 1):
            setback, y = road_half + rng.uniform(1.5, 5.0), rng.uniform(-8, 6)
            while y < 85:
                length, depth_x, height = rng.uniform(6, 25), rng.uniform(6, 15), rng.uniform(4, 25)
                centre = [side * (setback + depth_x / 2), y + length / 2, height / 2]
                b.add_object([_Box(centre, [depth_x / 2, length / 2, height / 2], 0.0,
                                   _random_material(rng, "building"), b.instance("building"))], cam, 0.5)
                y += length + (rng.uniform(0, 3) if rng.random() < 0.7 else rng.uniform(5, 15))
            y = rng.uniform(2, 10)
            while y < 75:
                x = side * (road_half + rng.uniform(0.4, 1.2))
                b.add_object(_tree_or_pole(rng, b, x, y, 12.0), cam, 0.5)
                y += rng.uniform(8, 20)
        for _ in range(int(rng.integers(0, 5))):
            inst, mat = b.instance("car"), _random_material(rng, "object")
            x, y, yaw_c = rng.uniform(-road_half + 1, road_half - 1), rng.uniform(6, 50), rng.uniform(-0.1, 0.1)
            c, s = math.cos(yaw_c), math.sin(yaw_c)
            back = 0.3
            b.add_object([_Box([x, y, 0.45], [0.9, 2.1, 0.45], yaw_c, mat, inst),
                          _Box([x - s * back, y + c * back, 1.2], [0.8, 1.1, 0.3], yaw_c, mat, inst)], cam, 0.5)
    else:
        for _ in range(int(rng.integers(6, 15))):
            kind = str(rng.choice(["building", "tree", "boulder", "box"], p=[0.3, 0.35, 0.15, 0.2]))
            ext = {"building": rng.uniform(2, 10), "tree": 2.0, "boulder": 1.0, "box": rng.uniform(0.5, 2)}[kind]
            bearing = yaw + rng.uniform(-0.9, 0.9) * half_h
            # log-uniform distance, far enough that one object cannot fill the frame
            dist = math.exp(rng.uniform(math.log(max(4.0, 1.5 * ext + 3.0)), math.log(70.0)))
            x, y = cam[:2] + dist * np.array([math.sin(bearing), math.cos(bearing)])
            cap = cam_z + 0.7 * max(dist - ext, 1.0) * math.tan(max(top_elev, math.radians(6)))
            if kind == "tree":
                prims = _tree_or_pole(rng, b, x, y, cap)
            elif kind == "boulder":
                r = min(rng.uniform(0.3, 2.0), cap / 2)
                prims = [_Sphere([x, y, r * rng.uniform(0.3, 1.0)], r, _random_material(rng, "object"),
                                 b.instance("boulder"))]
            else:
                h_half = min(rng.uniform(2, 12) if kind == "building" else rng.uniform(0.3, 1.5), cap / 2)
                half = [ext, rng.uniform(0.5, 1.0) * ext, h_half]
                mat = _random_material(rng, "building" if kind == "building" else "object")
                prims = [_Box([x, y, h_half], half, float(rng.uniform(0, np.pi)), mat, b.instance(kind))]
            b.add_object(prims, cam, 0.5)

    el, az = math.radians(rng.uniform(20, 70)), rng.uniform(0, 2 * np.pi)
    sun = np.array([math.cos(el) * math.sin(az), math.cos(el) * math.cos(az), math.sin(el)])
    hue = rng.uniform(0.55, 0.64)
    zenith = _hsv(hue, rng.uniform(0.3, 0.7), rng.uniform(0.6, 0.95))
    horizon = _hsv(hue, rng.uniform(0.05, 0.2), rng.uniform(0.8, 0.97))
    return _Layout("outdoor", b.prims, b.names, cam, _camera_rotation(yaw, pitch, roll), MAX_OUTDOOR_DEPTH,
                   ambient=float(rng.uniform(0.3, 0.45)), ambient_color=0.6 + 0.4 * zenith,
                   light_color=np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.75, 0.95)]),
                   light_power=float(rng.uniform(0.7, 0.9)), sun=sun, sky_zenith=zenith, sky_horizon=horizon,
                   fog_dist=float(rng.uniform(80, 250)))


# --------------------------------------------------------------------------------------------------- rendering


def _background(layout: _Layout, dirs: np.ndarray) -> np.ndarray:
    if layout.sky_zenith is None:
        return np.zeros((len(dirs), 3))
    elev = np.clip(dirs[:, 2] / np.linalg.norm(dirs, axis=1), 0.0, 1.0) ** 0.6
    return layout.sky_horizon[None] + (layout.sky_zenith - layout.sky_horizon)[None] * elev[:, None]


def _shade(layout: _Layout, prims: list, casters: list, dirs, t, idx) -> np.ndarray:
    """Linear RGB in [0, 1] (before clipping) for one chunk of rays."""
    col = np.empty((len(dirs), 3))
    hit = np.nonzero(idx >= 0)[0]
    miss = idx < 0
    col[miss] = _background(layout, dirs[miss])
    if hit.size == 0:
        return col
    d, th = dirs[hit], t[hit]
    pts = layout.origin + th[:, None] * d
    normals, albedo = np.empty_like(pts), np.empty_like(pts)
    ids = idx[hit]
    order = np.argsort(ids, kind="stable")
    uniq, starts = np.unique(ids[order], return_index=True)
    for k, sel in zip(uniq, np.split(order, starts[1:])):
        n, uv = prims[k].surface(pts[sel])
        normals[sel], albedo[sel] = n, prims[k].material.albedo(uv)
    normals *= np.where((normals * d).sum(1) > 0, -1.0, 1.0)[:, None]  # face the camera

    if layout.sun is not None:
        to_light, t_max = np.broadcast_to(layout.sun, pts.shape), np.inf
        lam = np.clip(normals @ layout.sun, 0, None)
        strength = np.full(len(pts), layout.light_power)
    else:
        to_light, t_max = layout.light_pos - pts, 1.0
        dist = np.linalg.norm(to_light, axis=1)
        lam = np.clip((normals * to_light).sum(1) / dist, 0, None)
        strength = layout.light_power / (1 + (dist / layout.light_falloff) ** 2)
    lit = np.nonzero(lam > 0)[0]
    if lit.size and casters:
        shadow = _occluded(casters, (pts[lit] + 1e-3 * normals[lit]).T, np.ascontiguousarray(to_light[lit].T), t_max)
        lam[lit[shadow]] = 0.0
    light = layout.ambient * layout.ambient_color[None] + (lam * strength)[:, None] * layout.light_color[None]
    rgb = albedo * light
    if layout.sky_horizon is not None:
        # haze with distance, reaching the horizon colour at the range cut so the cut is invisible
        fog = 1 - np.exp(-th * np.linalg.norm(d, axis=1) / layout.fog_dist)
        s = np.clip((th - 0.75 * layout.max_depth) / (0.25 * layout.max_depth), 0, 1)
        fog = np.maximum(fog, s * s * (3 - 2 * s))
        rgb = rgb * (1 - fog[:, None]) + layout.sky_horizon[None] * fog[:, None]
    col[hit] = rgb
    return col


def _render(layout: _Layout, intr: Intrinsics, height: int, width: int):
    origin, rot = layout.origin, layout.rot
    fwd = rot[:, 2]
    prims = []
    for p in layout.prims:  # drop primitives entirely behind the camera or beyond range: they cannot be hit
        centre, radius = p.bound()
        z = float(fwd @ (centre - origin))
        if np.isinf(radius) or (z > -radius and z - radius < layout.max_depth):
            prims.append(p)
    casters = [p for p in layout.prims if p.casts_shadow]  # off-screen objects still cast shadows
    inst_of = np.array([p.instance for p in prims] + [-1], dtype=np.int16)

    image = np.empty((height, width, 3), dtype=np.float64)
    depth = np.zeros((height, width), dtype=np.float32)
    instance = np.full((height, width), -1, dtype=np.int16)
    xs = (np.arange(width, dtype=np.float64) - intr.cx) / intr.fx
    rows = max(1, _CHUNK_PIXELS // width)
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        ys = (np.arange(r0, r1, dtype=np.float64) - intr.cy) / intr.fy
        cam_dirs = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], 1.0), axis=-1).reshape(-1, 3)
        dirs = cam_dirs @ rot.T  # camera z-component is 1, so the hit parameter is the planar depth
        t, idx = _trace(prims, origin, np.ascontiguousarray(dirs.T))
        idx[t > layout.max_depth] = -1
        image[r0:r1] = _shade(layout, prims, casters, dirs, t, idx).reshape(r1 - r0, width, 3)
        depth[r0:r1] = np.where(idx >= 0, t, 0.0).reshape(r1 - r0, width)
        instance[r0:r1] = inst_of[idx].reshape(r1 - r0, width)
    return image, depth, instance


def _move_camera_right(layout: _Layout, shift: float, seed: int) -> None:
    """Move the camera ``shift`` metres along its x axis; ValueError when that puts it outside the room (behind a
    plane, whose normals face the original camera) or inside an object."""
    origin = layout.origin + shift * layout.rot[:, 0]
    if any(p.contains(origin, 0.0) or (np.isinf(p.bound()[1]) and (origin - p.point) @ p.normal <= 0)
           for p in layout.prims):
        raise ValueError(f"shift_right_m={shift:g} m moves the camera of {layout.kind} scene {seed} out of its "
                         "room or into an object; use a smaller baseline (a camera can stand 0.15 m from a wall).")
    layout.origin = origin


def render_scene(seed: int, height: int = 240, width: int = 320, kind: str = "indoor", hfov_deg: float = 60.0,
                 *, image_noise: float = 0.0, clutter: int = 0, shift_right_m: float = 0.0) -> Scene:
    """Render one procedural RGB-D scene.

    Args:
        seed: integer >= 0; the scene is a pure function of ``(seed, kind, hfov_deg)``.
        height, width: image size in pixels (>= 1 each); any size renders the same scene.
        kind: ``"indoor"`` (depth roughly 0.5-10 m, no missing pixels), ``"outdoor"`` (roughly 1-80 m, sky and
            beyond-range pixels are 0) or ``"random"`` (chosen by the seed; equals the scene of the chosen kind).
        hfov_deg: horizontal field of view in degrees, in [5, 150].
        image_noise: standard deviation of Gaussian pixel noise in 8-bit levels (0 = none). The noise is seeded by
            ``(seed, height, width)``, so it is reproducible but not shared across sizes.
        clutter: number of plants put into the view (thin, oblique, same-coloured leaves in front of one another;
            0 = none). They come from their own random stream, so a scene with clutter is the scene without it plus
            the plants (and their shadows).
        shift_right_m: render the same scene from a camera moved this many metres along its own x axis (to the
            right when > 0), as the right camera of a rectified stereo pair with that baseline sees it (its
            ``depth`` and ``instance`` are then that camera's; its pixel noise is drawn independently).

    Returns:
        A :class:`Scene`; ``depth`` is exact planar depth (float32 metres) consistent with ``intrinsics``.
    """
    seed = check_int("seed", seed, 0)
    height, width = check_int("height", height, 1), check_int("width", width, 1)
    kind = resolve_kind(seed, kind)
    hfov_deg, image_noise = check_view_options(hfov_deg, image_noise)
    if isinstance(shift_right_m, bool) or not isinstance(shift_right_m, (int, float, np.number)) \
            or not np.isfinite(shift_right_m):
        raise ValueError(f"shift_right_m must be a finite number of metres; received {shift_right_m!r}.")
    rng = np.random.default_rng([seed, 0 if kind == "indoor" else 1])
    layout = (_build_indoor if kind == "indoor" else _build_outdoor)(rng, hfov_deg)
    clutter = check_int("clutter", clutter, 0)
    if clutter:
        add_plants(layout, np.random.default_rng([seed, 0 if kind == "indoor" else 1, 0xC1]), clutter,
                   _fovs(hfov_deg)[0])
    if shift_right_m:
        _move_camera_right(layout, float(shift_right_m), seed)
    intr = intrinsics_from_fov(height, width, hfov_deg)
    rgb, depth, instance = _render(layout, intr, height, width)
    rgb = rgb * 255.0
    if image_noise > 0:
        stream = [seed, height, width, 2] + ([3] if shift_right_m else [])  # a second camera: its own noise
        rgb = rgb + np.random.default_rng(stream).normal(0.0, float(image_noise), rgb.shape)
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = layout.rot, layout.origin
    return Scene(image=image, depth=depth, intrinsics=intr, kind=kind, seed=seed, camera_to_world=pose,
                 instance=instance, instance_names=tuple(layout.names))
