"""Clutter for the procedural scenes of :mod:`depthkit.data.synthetic`: plants with thin, oblique leaves.

``render_scene(..., clutter=N)`` calls :func:`add_plants` after the scene's own layout is built, with a random stream
of its own, so a scene with plants is the scene without them plus the plants (and their shadows). Why plants: on a
real frame (Middlebury Aloe) the default's refiner went wrong at thin, slanted leaves in front of other leaves of
the same colour, a shape the rest of the generator does not make (checkpoints/README.md, session 13).
"""

from __future__ import annotations

import math

import numpy as np

from depthkit.data._raycast import _Box, _Cylinder, _random_material, _trace

__all__ = ["add_plants"]


def _plant(rng: np.random.Generator, x: float, y: float, scale: float, inst: int) -> list:
    """A plant at ``(x, y)`` on the floor: sometimes a pot, then 6-18 thin flat leaves of one material fanning up
    and out at 15-80 degrees, each turned about its own axis — thin, oblique, same-coloured structures in front of
    one another, which the rest of the generator does not make (its boxes only turn about the vertical)."""
    prims, z0 = [], 0.0
    if rng.random() < 0.6:
        radius, height = rng.uniform(0.1, 0.2) * scale, rng.uniform(0.15, 0.35) * scale
        prims.append(_Cylinder(x, y, radius, 0.0, height, _random_material(rng, "object"), inst))
        z0 = height
    leaf = _random_material(rng, "foliage" if rng.random() < 0.7 else "object")
    up = np.array([0.0, 0.0, 1.0])
    for _ in range(int(rng.integers(6, 19))):
        length, width = rng.uniform(0.3, 0.8) * scale, rng.uniform(0.03, 0.08) * scale
        az, el, roll = rng.uniform(0, 2 * np.pi), math.radians(rng.uniform(15, 80)), rng.uniform(0, np.pi)
        axis = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        u = np.cross(axis, up)
        u /= np.linalg.norm(u)
        across = math.cos(roll) * u + math.sin(roll) * np.cross(axis, u)
        rot = np.column_stack([across, np.cross(axis, across), axis])  # columns: width, thickness, length
        start = np.array([x, y, z0 + rng.uniform(0.0, 0.08) * scale])
        prims.append(_Box(start + axis * length / 2, [width / 2, 0.004 * scale, length / 2], 0.0, leaf, inst,
                          rot=rot))
    return prims


def add_plants(layout, rng: np.random.Generator, count: int, half_h: float) -> None:
    """Put ``count`` plants (:func:`_plant`) into the view of ``layout`` (a ``depthkit.data.synthetic._Layout``; its
    ``prims`` and ``names`` grow; ``half_h``: half the horizontal field of view, radians): each on a bearing inside it,
    between ~1 m (indoor; 2 m outdoor) and the first surface the bearing meets 0.4 m above the floor (at most 4 m
    indoor, 12 m outdoor), indoor plants 0.6-1.4x, outdoor 1-3x the base size; none within 0.5 m of the camera."""
    fwd = layout.rot[:, 2]
    heading = math.atan2(fwd[0], fwd[1])  # world x right, y forward
    indoor = layout.kind == "indoor"
    near, cap = (1.0, 4.0) if indoor else (2.0, 12.0)
    for _ in range(count):
        bearing = heading + rng.uniform(-0.8, 0.8) * half_h
        ray = np.array([math.sin(bearing), math.cos(bearing), 0.0])
        origin = np.array([layout.origin[0], layout.origin[1], 0.4])
        hit = float(_trace(layout.prims, origin, ray[:, None])[0][0])
        far = min(hit, cap) - 0.5
        r = rng.uniform(near, max(near + 0.1, far))
        scale = rng.uniform(0.6, 1.4) if indoor else rng.uniform(1.0, 3.0)
        prims = _plant(rng, layout.origin[0] + r * ray[0], layout.origin[1] + r * ray[1], scale, len(layout.names))
        if not any(p.contains(layout.origin, 0.5) for p in prims):
            layout.names.append("plant")
            layout.prims.extend(prims)
