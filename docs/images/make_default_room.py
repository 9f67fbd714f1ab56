"""Regenerate ``docs/images/default_room.png`` (the README's picture): the bundled example's RGB, the embedded
default's completion, and completion + the shipped sharpener, as colour maps with legends.

Usage (from the repository root): ``python docs/images/make_default_room.py``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main() -> Path:
    from depthkit import Pipeline
    from depthkit.io import colorize, read_depth, read_image, write_image

    image = read_image(ROOT / "examples" / "room_rgb.png")
    sparse = read_depth(ROOT / "examples" / "room_sparse.npy")
    out = Pipeline(stages=("complete", "sharpen"))(image, sparse)  # one run: both stages' maps
    panels = [image, colorize(out.stages["complete"].depth), colorize(out.depth)]
    return write_image(ROOT / "docs" / "images" / "default_room.png", np.concatenate(panels, axis=1))


if __name__ == "__main__":
    print(main())
