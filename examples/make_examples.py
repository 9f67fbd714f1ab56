"""Regenerate the bundled example (a synthetic indoor scene with 500 random sparse points).

    python examples/make_examples.py

Writes room_rgb.png (RGB), room_sparse.npy (float32 metres, 0 = missing), room_depth_gt.npy (exact depth) and
room_intrinsics.json (pixels) beside this file.
"""

import json
from pathlib import Path

from depthkit import io
from depthkit.data.sparse import sample_random_points
from depthkit.data.synthetic import render_scene

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    scene = render_scene(seed=3, height=240, width=320, kind="indoor")
    io.write_image(HERE / "room_rgb.png", scene.image)
    io.write_depth_npy(HERE / "room_sparse.npy", sample_random_points(scene.depth, 500, seed=0))
    io.write_depth_npy(HERE / "room_depth_gt.npy", scene.depth)
    k = scene.intrinsics
    (HERE / "room_intrinsics.json").write_text(json.dumps({"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}) + "\n")
