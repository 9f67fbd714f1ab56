"""Ray-casting building blocks of the synthetic scene generator: procedural textures, materials, primitives
(plane, box, sphere, cylinder) and nearest-hit / shadow tracing, vectorised over rays in numpy.

Split from :mod:`depthkit.data.synthetic` (which builds layouts and renders them). Every primitive's
``intersect(o, d)`` returns the ray parameter of its nearest hit (inf on a miss); for rays ``d`` built with unit
z in camera coordinates that parameter is the planar depth in metres.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

_T_EPS = 1e-6

def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point (a 64-bit integer mix)."""
    x = ix.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x ^= iy.astype(np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    x ^= np.uint64((seed * 0x165667B1 + 0x27D4EB2F) & 0xFFFFFFFFFFFFFFFF)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(32)
    return (x >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def _value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1) with unit lattice spacing."""
    ix, iy = np.floor(x), np.floor(y)
    fx, fy = x - ix, y - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a, b = _hash01(ix, iy, seed), _hash01(ix + 1, iy, seed)
    c, d = _hash01(ix, iy + 1, seed), _hash01(ix + 1, iy + 1, seed)
    return (a + (b - a) * fx) * (1 - fy) + (c + (d - c) * fx) * fy


def _fbm(x: np.ndarray, y: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    """Fractal value noise in [0, 1)."""
    out, amp, total = np.zeros_like(x), 1.0, 0.0
    for k in range(octaves):
        out += amp * _value_noise(x * 2**k, y * 2**k, seed + 101 * k)
        total += amp
        amp *= 0.5
    return out / total


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


@dataclass
class _Material:
    """A procedural albedo in [0,1] RGB as a function of surface coordinates ``uv`` (metres)."""

    pattern: str  # plain | checker | stripes | tiles | wood | noise | windows | road
    color_a: np.ndarray
    color_b: np.ndarray
    scale: float  # metres per pattern cell
    angle: float  # radians, pattern orientation
    seed: int
    detail: float = 0.15  # strength of the fine noise every pattern gets, so no surface is flat colour
    params: dict = field(default_factory=dict)

    def albedo(self, uv: np.ndarray) -> np.ndarray:
        u0, v0 = uv[:, 0], uv[:, 1]
        c, s = math.cos(self.angle), math.sin(self.angle)
        u, v = (c * u0 - s * v0) / self.scale, (s * u0 + c * v0) / self.scale
        p = self.pattern
        if p == "checker":
            m = (np.floor(u) + np.floor(v)) % 2
        elif p == "stripes":
            m = (np.floor(u) % 2) * 0.8
        elif p == "tiles":
            fu, fv = u - np.floor(u), v - np.floor(v)
            m = 0.25 * _hash01(np.floor(u), np.floor(v), self.seed)
            m = np.where((fu < 0.05) | (fv < 0.05), 1.0, m)
        elif p == "wood":
            m = 0.5 + 0.5 * np.sin(2 * np.pi * (u * 3 + 1.5 * _fbm(u * 0.5, v * 4, self.seed)))
            m *= 0.7
        elif p == "noise":
            m = _fbm(u, v, self.seed, octaves=4)
        elif p == "windows":
            # u along the facade, v up from the ground; a window per cell, some lit
            fu, fv = u0 / self.params["sx"] % 1.0, v0 / self.params["sz"] % 1.0
            win = (fu > 0.25) & (fu < 0.75) & (fv > 0.3) & (fv < 0.8) & (v0 > 0.8)
            lit = _hash01(np.floor(u0 / self.params["sx"]), np.floor(v0 / self.params["sz"]), self.seed) < 0.2
            m = np.where(win, np.where(lit, 0.45, 1.0), 0.0)
        elif p == "road":
            return self._road(u0, v0)
        else:  # plain
            m = np.zeros_like(u)
        out = self.color_a[None] * (1 - m[:, None]) + self.color_b[None] * m[:, None]
        if self.detail > 0:
            k = 4.0 / self.scale
            out = out * (1 + self.detail * (2 * _fbm(u0 * k, v0 * k, self.seed + 7) - 1))[:, None]
        return out

    def _road(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Street ground colours: asphalt with a dashed centre line and edge lines, sidewalks, then grass."""
        half, walk = self.params["road_half"], self.params["walk"]
        ax = np.abs(x)
        line = ((ax < 0.07) & (y % 6.0 < 3.0)) | (np.abs(ax - (half - 0.25)) < 0.06)
        out = np.where(line[:, None], self.color_b[None], self.color_a[None])
        out = np.where(((ax >= half) & (ax < half + walk))[:, None], self.params["walk_color"][None], out)
        out = np.where((ax >= half + walk)[:, None], self.params["grass_color"][None], out)
        grain = _fbm(x * 3.0, y * 3.0, self.seed, octaves=3)
        return out * (1 + self.detail * (2 * grain - 1))[:, None]


def _random_material(rng: np.random.Generator, role: str) -> _Material:
    seed = int(rng.integers(1 << 30))
    angle = 0.0 if rng.random() < 0.6 else float(rng.uniform(0, np.pi))
    if role == "floor":
        pattern = str(rng.choice(["tiles", "checker", "wood", "noise"]))
        if pattern == "wood":
            a = _hsv(rng.uniform(0.04, 0.11), rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.75))
            b = a * rng.uniform(0.5, 0.8)
        else:
            a = _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.4, 0.9))
            b = _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.15, 0.6))
        return _Material(pattern, a, b, float(rng.uniform(0.3, 1.0)), angle, seed)
    if role in ("wall", "ceiling"):
        pattern = "plain" if role == "ceiling" else str(rng.choice(["plain", "noise", "stripes"]))
        a = _hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.65, 0.95))
        b = a * rng.uniform(0.75, 0.92)
        return _Material(pattern, a, b, float(rng.uniform(0.15, 0.6)), 0.0, seed, detail=0.08)
    if role == "building":
        a = _hsv(rng.uniform(0, 0.15) if rng.random() < 0.6 else rng.random(), rng.uniform(0.05, 0.4),
                 rng.uniform(0.4, 0.9))
        b = _hsv(rng.uniform(0.55, 0.65), rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.35))
        params = {"sx": float(rng.uniform(1.5, 3.5)), "sz": float(rng.uniform(2.8, 3.6))}
        return _Material("windows", a, b, 1.0, 0.0, seed, detail=0.1, params=params)
    if role == "foliage":
        a = _hsv(rng.uniform(0.2, 0.35), rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.55))
        return _Material("noise", a, a * rng.uniform(0.4, 0.7), float(rng.uniform(0.2, 0.5)), 0.0, seed, 0.2)
    if role == "bark":
        a = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.45))
        return _Material("stripes", a, a * 0.6, float(rng.uniform(0.03, 0.08)), 0.0, seed, 0.2)
    if role == "ground":
        grass = _hsv(rng.uniform(0.18, 0.32), rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.55))
        dirt = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.6))
        concrete = _hsv(0.0, 0.0, rng.uniform(0.45, 0.7))
        a, b = [(grass, dirt), (dirt, grass * 0.8), (concrete, concrete * 0.7)][int(rng.integers(3))]
        return _Material("noise", a, b, float(rng.uniform(1.0, 4.0)), 0.0, seed, detail=0.25)
    # generic object: any colour, any pattern
    pattern = str(rng.choice(["plain", "checker", "stripes", "noise", "wood", "tiles"]))
    a = _hsv(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.3, 0.95))
    b = _hsv(rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.9))
    return _Material(pattern, a, b, float(rng.uniform(0.05, 0.5)), angle, seed)


def _road_material(rng: np.random.Generator, road_half: float) -> _Material:
    """Street ground: asphalt along the world y axis, ``road_half`` metres either side of x = 0."""
    asphalt = _hsv(0.0, 0.0, rng.uniform(0.18, 0.3))
    paint = _hsv(float(rng.choice([0.0, 0.14])), rng.uniform(0.0, 0.2), rng.uniform(0.85, 0.95))
    params = {"road_half": road_half, "walk": float(rng.uniform(1.5, 4.0)),
              "walk_color": _hsv(rng.uniform(0, 0.1), rng.uniform(0, 0.15), rng.uniform(0.5, 0.75)),
              "grass_color": _hsv(rng.uniform(0.18, 0.32), rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.5))}
    return _Material("road", asphalt, paint, 1.0, 0.0, int(rng.integers(1 << 30)), detail=0.2, params=params)


# --------------------------------------------------------------------------------------------------- primitives


class _Plane:
    """Infinite plane through ``point`` with ``normal``; uv along ``tangent`` and ``normal x tangent``."""

    casts_shadow = False

    def __init__(self, point, normal, tangent, material, instance):
        self.point, self.normal = np.asarray(point, float), np.asarray(normal, float)
        self.tangent = np.asarray(tangent, float)
        self.bitangent = np.cross(self.normal, self.tangent)
        self.material, self.instance = material, instance

    def intersect(self, o, d):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.normal @ (self.point[:, None] - o)) / (self.normal @ d)
        return np.where(np.isfinite(t) & (t > _T_EPS), t, np.inf)

    def surface(self, p):
        q = p - self.point
        return np.broadcast_to(self.normal, p.shape), np.stack([q @ self.tangent, q @ self.bitangent], 1)

    def bound(self):
        return self.point, np.inf

    def contains(self, p, margin):
        return False


class _Box:
    """Box with half sizes ``half`` (x, y, z), centred at ``center``, rotated by ``yaw`` about the world z axis, or
    oriented by ``rot`` (3x3 rotation whose columns are the box's axes in the world; then ``yaw`` is ignored)."""

    casts_shadow = True
    _UV_AXES = ((1, 2), (0, 2), (0, 1))

    def __init__(self, center, half, yaw, material, instance, rot=None):
        c, s = math.cos(yaw), math.sin(yaw)
        self.rot = (np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) if rot is None  # columns: box axes
                    else np.asarray(rot, float))
        self.center, self.half = np.asarray(center, float), np.asarray(half, float)
        self.material, self.instance = material, instance

    def intersect(self, o, d):
        ol, dl = self.rot.T @ (o - self.center[:, None]), self.rot.T @ d
        tmin, tmax = np.full(d.shape[1], -np.inf), np.full(d.shape[1], np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):  # slab method, one axis at a time (faster than reducing over a length-3 axis)
                inv = 1.0 / np.where(np.abs(dl[k]) < 1e-12, 1e-12, dl[k])
                t1, t2 = (-self.half[k] - ol[k]) * inv, (self.half[k] - ol[k]) * inv
                tmin, tmax = np.maximum(tmin, np.minimum(t1, t2)), np.minimum(tmax, np.maximum(t1, t2))
        return np.where((tmax >= tmin) & (tmin > _T_EPS), tmin, np.inf)

    def surface(self, p):
        pl = (p - self.center) @ self.rot
        axis = np.argmax(np.abs(pl) / self.half, axis=1)
        n_local = np.zeros_like(pl)
        rows = np.arange(len(p))
        n_local[rows, axis] = np.sign(pl[rows, axis])
        q = pl + self.half  # non-negative face coordinates; z measured up from the box's base
        uv = np.empty((len(p), 2))
        for k, (a, b) in enumerate(self._UV_AXES):
            m = axis == k
            uv[m, 0], uv[m, 1] = q[m, a], q[m, b]
        return n_local @ self.rot.T, uv

    def bound(self):
        return self.center, float(np.linalg.norm(self.half))

    def contains(self, p, margin):
        return bool(np.all(np.abs((p - self.center) @ self.rot) < self.half + margin))


class _Sphere:
    casts_shadow = True

    def __init__(self, center, radius, material, instance):
        self.center, self.radius = np.asarray(center, float), float(radius)
        self.material, self.instance = material, instance

    def intersect(self, o, d):
        oc = o - self.center[:, None]
        a = (d * d).sum(0)
        b = (d * oc).sum(0)
        c = (oc * oc).sum(0) - self.radius**2
        disc = b * b - a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / a
        return np.where((disc >= 0) & (t > _T_EPS), t, np.inf)

    def surface(self, p):
        n = (p - self.center) / self.radius
        u = np.arctan2(n[:, 1], n[:, 0]) * self.radius
        v = np.arccos(np.clip(n[:, 2], -1, 1)) * self.radius
        return n, np.stack([u, v], 1)

    def bound(self):
        return self.center, self.radius

    def contains(self, p, margin):
        return bool(np.linalg.norm(p - self.center) < self.radius + margin)


class _Cylinder:
    """Vertical (z-axis) capped cylinder: base centre ``(x, y, z0)``, top at ``z1``."""

    casts_shadow = True

    def __init__(self, x, y, radius, z0, z1, material, instance):
        self.x, self.y, self.radius, self.z0, self.z1 = float(x), float(y), float(radius), float(z0), float(z1)
        self.material, self.instance = material, instance

    def intersect(self, o, d):
        ox, oy, oz = o[0] - self.x, o[1] - self.y, o[2]
        dx, dy, dz = d[0], d[1], d[2]
        r2 = self.radius**2
        a = dx * dx + dy * dy
        b = 2 * (ox * dx + oy * dy)
        c = ox * ox + oy * oy - r2
        disc = b * b - 4 * a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = (-b - np.sqrt(disc)) / (2 * a)
            zs = oz + ts * dz
            best = np.where((disc >= 0) & (a > 1e-18) & (ts > _T_EPS) & (zs >= self.z0) & (zs <= self.z1), ts, np.inf)
            for zc in (self.z0, self.z1):
                tc = (zc - oz) / dz
                inside = (ox + tc * dx) ** 2 + (oy + tc * dy) ** 2 <= r2
                best = np.minimum(best, np.where(np.isfinite(tc) & (tc > _T_EPS) & inside, tc, np.inf))
        return best

    def surface(self, p):
        qx, qy, z = p[:, 0] - self.x, p[:, 1] - self.y, p[:, 2]
        rad = np.hypot(qx, qy)
        cap = (rad < self.radius * (1 - 1e-6)) | (np.minimum(np.abs(z - self.z0), np.abs(z - self.z1)) < 1e-9)
        n = np.stack([qx, qy, np.zeros_like(qx)], 1) / np.maximum(rad, 1e-12)[:, None]
        n[cap] = 0.0
        n[cap, 2] = np.where(z[cap] > (self.z0 + self.z1) / 2, 1.0, -1.0)
        uv = np.stack([np.arctan2(qy, qx) * self.radius, z - self.z0], 1)
        uv[cap] = np.stack([qx[cap], qy[cap]], 1)
        return n, uv

    def bound(self):
        hz = (self.z1 - self.z0) / 2
        return np.array([self.x, self.y, self.z0 + hz]), math.hypot(self.radius, hz)

    def contains(self, p, margin):
        return bool(math.hypot(p[0] - self.x, p[1] - self.y) < self.radius + margin
                    and self.z0 - margin < p[2] < self.z1 + margin)


# ---------------------------------------------------------------------------------------------------- tracing


def _candidate_hits(prim, o: np.ndarray, d: np.ndarray, dd: np.ndarray):
    """Hit parameters of ``prim`` for the rays whose line meets its bounding sphere: ``(rays, t)``.

    ``o``: 3x1 or 3xN origins, ``d``: 3xN directions, ``dd``: their squared norms. ``rays`` is None for all rays.
    The bounding-sphere test is a few cheap operations; most rays miss most objects.
    """
    centre, radius = prim.bound()
    if np.isinf(radius):
        return None, prim.intersect(o, d)
    oc = centre[:, None] - o
    b = oc[:, 0] @ d if o.shape[1] == 1 else np.einsum("ij,ij->j", d, oc)
    rays = np.nonzero(b * b >= dd * (np.einsum("ij,ij->j", oc, oc) - radius * radius))[0]
    if rays.size > d.shape[1] // 2:
        return None, prim.intersect(o, d)
    return rays, prim.intersect(o if o.shape[1] == 1 else o[:, rays], d[:, rays])


def _trace(prims: list, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit parameter (inf if none) and index into ``prims`` (-1 if none) per ray; ``dirs`` is 3xN."""
    n = dirs.shape[1]
    best, idx = np.full(n, np.inf), np.full(n, -1, dtype=np.int64)
    dd = np.einsum("ij,ij->j", dirs, dirs)
    for i, prim in enumerate(prims):
        rays, t = _candidate_hits(prim, origin[:, None], dirs, dd)
        if rays is None:
            closer = np.nonzero(t < best)[0]
            best[closer] = t[closer]
        else:
            m = t < best[rays]
            closer = rays[m]
            best[closer] = t[m]
        idx[closer] = i
    return best, idx


def _occluded(casters: list, origins: np.ndarray, dirs: np.ndarray, t_max: float) -> np.ndarray:
    """Whether each ray (3xN origins and directions) hits a caster at a parameter below ``t_max``."""
    occ = np.zeros(dirs.shape[1], dtype=bool)
    dd = np.einsum("ij,ij->j", dirs, dirs)
    for prim in casters:
        rays, t = _candidate_hits(prim, origins, dirs, dd)
        occ[slice(None) if rays is None else rays] |= t < t_max
    return occ
