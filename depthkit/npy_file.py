"""Reading a depth ``.npy`` file with errors that say what the file is: numpy takes any file without the ``.npy``
signature for a pickle and says so, which misleads when it is text, another format or cut short."""
from __future__ import annotations

from pathlib import Path

import numpy as np

NPY_MAGIC = b"\x93NUMPY"
"""The first bytes of every ``.npy`` file (numpy.lib.format)."""
_ADVICE = "Save the depth as an HxW numeric array (float32 metres, 0 = missing) with numpy.save"


def load_npy_depth(path: Path) -> np.ndarray:
    """The array in ``.npy`` file ``path`` (any shape and dtype; pickles are never loaded). ``ValueError`` naming
    the file when it is not a ``.npy`` file, cut short, holds Python objects, or is otherwise unreadable."""
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    # a file that starts like a pickle (protocol >= 2) goes on to numpy, whose words for it are right
    if head and head != NPY_MAGIC and not head.startswith(b"\x80"):
        what_it_is = (f"it is cut short ({len(head)} bytes, inside the .npy signature)" if NPY_MAGIC.startswith(head)
                      else f"it is not a .npy file (it starts with {head!r}, not the .npy signature {NPY_MAGIC!r})")
        raise ValueError(f"could not read depth array {path}: {what_it_is}. {_ADVICE}, or give a 16-bit PNG with "
                         "--depth-scale.")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for corrupt files
        if "pickle" in str(exc) or "Object arrays" in str(exc):  # numpy's two wordings for dtype=object
            raise ValueError(f"could not read depth array {path}: it holds Python objects (a pickle), which "
                             f"depthkit does not load. {_ADVICE}.") from exc
        raise ValueError(f"could not read depth array {path} ({str(exc).rstrip('.')}); expected an HxW numeric "
                         "array (float32 metres, 0 = missing) saved with numpy.save.") from exc
