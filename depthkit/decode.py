"""OpenCV's decoding of the files :func:`depthkit.io.read_image` and :func:`depthkit.io.read_depth` (its PNGs) read,
with a cut-short PNG refused first.

OpenCV's PNG decoder prints libpng's own error (``libpng error: Read Error``) or its logger's on stderr for a PNG
cut short, before returning nothing; the user would see that stray line above depthkit's error. So a file that
starts with the PNG signature has its chunks walked first (8 bytes read per chunk, the data skipped: 11 ms for a
27 MB, 12-megapixel PNG of 3,300 chunks, which OpenCV decodes in 230 ms) and is refused with a ``ValueError`` saying
where it ends, unless its IHDR chunk comes first and its IEND chunk is whole. Damage inside a whole file (a bad
checksum) is left to the decoder.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["PNG_SIGNATURE", "decode_image_file", "png_cut_short"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_cut_short(path) -> str | None:
    """Why the PNG file at ``path`` is cut short or has no IHDR chunk first, in words; None when its chunks run whole
    from IHDR to IEND, and for a file that does not start with the PNG signature (the decoder decides those)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            return None
        pos, last = len(PNG_SIGNATURE), None
        while True:
            head = f.read(8)  # a chunk: 4-byte length, 4-byte type, data, 4-byte CRC
            if len(head) < 8:
                after = f"after its {last.decode('latin-1')} chunk" if last else "right after its signature"
                return f"{size} bytes, ending {after} without the IEND chunk that closes a PNG"
            length, kind = struct.unpack(">I4s", head)
            if last is None and kind != b"IHDR":
                return f"its first chunk is {kind.decode('latin-1')!r}, not the IHDR header a PNG starts with"
            end = pos + 12 + length
            if end > size:
                return f"{size} bytes, but its {kind.decode('latin-1')} chunk at byte {pos} runs to byte {end}"
            if kind == b"IEND":
                return None
            f.seek(end)
            pos, last = end, kind


def decode_image_file(path: Path, what: str) -> np.ndarray | None:
    """``cv2.imread(path, IMREAD_UNCHANGED)`` (HxW or HxWxC, OpenCV's BGR order and dtype), or None when OpenCV
    cannot decode the file; a cut-short PNG (:func:`png_cut_short`) raises ``ValueError`` naming it as ``what``
    (``image``, ``depth PNG``) instead, before OpenCV prints on stderr."""
    import cv2

    cut = png_cut_short(path)
    if cut is not None:
        raise ValueError(f"could not decode {what} {path}: the file is a truncated or damaged PNG ({cut}). Copy or "
                         "export it again.")
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
