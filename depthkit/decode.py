"""OpenCV's decoding of the files :func:`depthkit.io.read_image` and :func:`depthkit.io.read_depth` (its PNGs) read,
with a damaged PNG refused first.

OpenCV's PNG decoder prints libpng's own messages (``libpng error: Read Error``, ``libpng error: IDAT: CRC error``,
``libpng warning: tEXt: CRC error``) or its logger's on stderr for a damaged PNG; the user would see those stray lines
above depthkit's error, or beside a result. So a file that starts with the PNG signature is read once and checked
by :func:`check_png` before it is decoded from memory:

- a file cut short, or whose first chunk is not IHDR, is refused, saying where it ends;
- a critical chunk (IHDR, PLTE, IDAT, IEND, ...) whose CRC does not match its bytes is refused, saying which and
  where, and so is image data (the IDAT stream) that zlib cannot inflate or that stops before its end;
- an ancillary chunk (text, colour profile, ...) whose CRC does not match is left out of the decoded bytes, as
  libpng would discard it, and the caller is told, so it can warn.

Left to the decoder: compressed data after the end of the image data's stream (a writer's bug, not damage; libpng
warns and decodes the image whole).

The check reads every byte and inflates the image data without keeping it: for a 27 MB, 12-megapixel PNG of 3,300
chunks it costs about as much again as OpenCV's decode.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["PNG_SIGNATURE", "PngCheck", "check_png", "decode_image_file"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INFLATE_STEP = 1 << 22  # at most 4 MB of inflated image data held at once while checking


@dataclass
class PngCheck:
    """What :func:`check_png` found: ``problem`` (None, or why the file cannot be decoded, in words), ``data`` (the
    file's bytes, less any ancillary chunk that failed its CRC) and ``dropped`` (those chunks, named with their byte
    offsets)."""

    problem: str | None
    data: bytes
    dropped: list[str] = field(default_factory=list)


def _chunk_name(kind: bytes) -> str:
    return kind.decode("latin-1")


def check_png(data: bytes) -> PngCheck:
    """Walk the chunks of a PNG file's bytes ``data`` (which start with :data:`PNG_SIGNATURE`) from IHDR to IEND,
    checking each chunk's length and CRC and inflating the IDAT stream; bytes after IEND are ignored, as decoders
    do. See the module docstring for what is refused and what is dropped."""
    size, pos, last = len(data), len(PNG_SIGNATURE), None
    inflate, idat_seen = zlib.decompressobj(), False
    spans, dropped = [], []  # the ancillary chunks that failed their CRC: (start, end) byte offsets
    while True:
        if pos + 8 > size:  # a chunk: 4-byte length, 4-byte type, data, 4-byte CRC
            after = f"after its {_chunk_name(last)} chunk" if last else "right after its signature"
            return PngCheck(f"{size} bytes, ending {after} without the IEND chunk that closes a PNG", data)
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = _chunk_name(kind)
        if last is None and kind != b"IHDR":
            return PngCheck(f"its first chunk is {name!r}, not the IHDR header a PNG starts with", data)
        end = pos + 12 + length
        if end > size:
            return PngCheck(f"{size} bytes, but its {name} chunk at byte {pos} runs to byte {end}", data)
        body = memoryview(data)[pos + 8:end - 4]
        crc_ok = zlib.crc32(body, zlib.crc32(kind)) == struct.unpack_from(">I", data, end - 4)[0]
        critical = not kind[0] & 0x20  # the case of a chunk type's first letter: upper = critical
        if not crc_ok and critical:
            return PngCheck(f"its {name} chunk at byte {pos} fails its CRC check: its bytes were changed after it "
                            "was written", data)
        if not crc_ok:
            dropped.append(f"{name} at byte {pos}")
            spans.append((pos, end))
        if kind == b"IDAT":
            idat_seen = True
            try:
                rest = bytes(body)
                while rest and not inflate.eof:
                    inflate.decompress(rest, _INFLATE_STEP)
                    rest = inflate.unconsumed_tail
            except zlib.error as exc:
                why = str(exc).rpartition(": ")[2]
                return PngCheck(f"its image data does not inflate: zlib finds an {why} in its IDAT chunk at byte "
                                f"{pos}" if why.startswith("in") else f"its image data does not inflate: zlib says "
                                f"{why!r} at its IDAT chunk at byte {pos}", data)
        if kind == b"IEND":
            if not idat_seen:
                return PngCheck("it has no image data: no IDAT chunk", data)
            if not inflate.eof:
                return PngCheck("its image data (the IDAT chunks) stops before the end of its compressed stream", data)
            break
        pos, last = end, kind
    if dropped:  # rebuild without the ancillary chunks that failed their CRC
        parts, start = [], 0
        for a, b in spans:
            parts.append(data[start:a])
            start = b
        data = b"".join(parts) + data[start:]
    return PngCheck(None, data, dropped)


def decode_image_file(path: Path, what: str) -> tuple[np.ndarray | None, list[str]]:
    """Decode the image file at ``path`` as ``cv2.imread(path, IMREAD_UNCHANGED)`` does (HxW or HxWxC, OpenCV's BGR
    order and dtype; None when OpenCV cannot decode it), with a PNG checked first by :func:`check_png`.

    Returns the array and the ancillary PNG chunks left out for a failed CRC (empty for other files), for the caller
    to warn about. A damaged PNG raises ``ValueError`` naming it as ``what`` (``image``, ``depth PNG``) instead,
    before OpenCV prints on stderr.
    """
    import cv2

    with open(path, "rb") as f:
        is_png = f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    if not is_png:
        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED), []
    check = check_png(Path(path).read_bytes())
    if check.problem is not None:
        raise ValueError(f"could not decode {what} {path}: the file is a truncated or damaged PNG ({check.problem}). "
                         "Copy or export it again.")
    return cv2.imdecode(np.frombuffer(check.data, np.uint8), cv2.IMREAD_UNCHANGED), check.dropped
