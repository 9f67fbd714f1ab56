"""The structure of a JPEG file checked before OpenCV decodes it (:func:`check_jpeg`).

libjpeg decodes a JPEG cut short as far as its data goes and fills the rest of the image with grey, after printing
``Premature end of JPEG file`` on stderr; OpenCV then returns that image as if it were whole. So a file that starts
with a JPEG's SOI marker (bytes ``FF D8``) has its markers walked first, and is refused, with what is wrong in words,
when:

- a marker segment's length runs past the end of the file, or the file ends before the EOI marker (``FF D9``) that
  closes a JPEG (within a segment, or within the compressed data of a scan);
- a marker segment's length is below 2 (its own two bytes), or a byte where a marker must start is not ``FF``;
- it has no frame header (SOF) before its first scan (SOS), or no scan before its EOI.

Bytes after the EOI are ignored, as decoders do. A JPEG has no checksum: a changed byte inside its compressed data
is found only by decoding it. :func:`decode_jpeg` therefore decodes with what the decoder writes on stderr (file
descriptor 2) taken aside, and turns libjpeg's complaints into depthkit's words:

- refused: ``Corrupt JPEG data: premature end of data segment`` / ``bad Huffman code`` / ``found marker ...
  instead of RST``, ``Premature end of JPEG file``, ``Inconsistent progression sequence``, ``Invalid SOS
  parameters`` (the image it returns holds garbage from the damaged byte on);
- a note for a :class:`~depthkit.io.DepthkitWarning`, the image kept: ``Corrupt JPEG data: N extraneous bytes
  before marker`` (a few such bytes are some cameras' padding; many mean damage), ``Warning: unknown JFIF
  revision``, ``Unknown Adobe color transform code``;
- anything else written there meanwhile (another thread's output) is written to stderr again, unchanged.

The walk reads the file's bytes once; it finds the scans' ends with numpy (a few milliseconds for a 12-megapixel
photo).
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
from contextlib import contextmanager

import numpy as np

__all__ = ["JPEG_SOI", "check_jpeg", "decode_jpeg", "native_stderr"]

JPEG_SOI = b"\xff\xd8"
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (DHT, JPG and DAC share the range)
_NO_LENGTH = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}  # RSTn, TEM, SOI: a marker without a segment


def _scan_end(data: np.ndarray, start: int) -> int:
    """The offset of the marker that ends the compressed data of a scan starting at ``start``: the first ``FF`` not
    followed by a stuffed ``00``, a restart marker ``D0``-``D7`` or another fill ``FF``; -1 when there is none."""
    ff = np.flatnonzero(data[start:-1] == 0xFF) + start
    follower = data[ff + 1]
    ends = ff[(follower != 0) & ((follower < 0xD0) | (follower > 0xD7)) & (follower != 0xFF)]
    return int(ends[0]) if ends.size else -1


def check_jpeg(data: bytes) -> str | None:
    """None when the JPEG file's bytes ``data`` (which start with :data:`JPEG_SOI`) are structurally whole, else
    what is wrong, in words (see the module docstring)."""
    size, pos, frame, scans = len(data), 2, False, 0
    array = None
    while True:
        while pos < size and data[pos] == 0xFF and pos + 1 < size and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 2 > size:
            return f"{size} bytes, ending before the EOI marker that closes a JPEG: the file was cut short"
        if data[pos] != 0xFF:
            return f"byte {pos} is 0x{data[pos]:02X} where a marker (0xFF) must start"
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return None if scans else "it has no image data: no scan (SOS marker) before its EOI marker"
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if pos + 4 > size:
            return f"{size} bytes, ending within its marker 0xFF{marker:02X} at byte {pos}: the file was cut short"
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            return f"its marker 0xFF{marker:02X} at byte {pos} gives its segment a length of {length} bytes (at least 2)"
        end = pos + 2 + length
        if end > size:
            return (f"{size} bytes, but its marker 0xFF{marker:02X} segment at byte {pos} runs to byte {end}: the file "
                    "was cut short")
        frame = frame or marker in _SOF
        if marker != 0xDA:  # not a scan
            pos = end
            continue
        if not frame:
            return f"its first scan (SOS at byte {pos}) comes before any frame header (SOF marker)"
        scans += 1
        array = np.frombuffer(data, np.uint8) if array is None else array
        pos = _scan_end(array, end)
        if pos < 0:
            return (f"{size} bytes, ending in the compressed data of its scan {scans} (SOS at byte {end - length - 2})"
                    " before the EOI marker that closes a JPEG: the file was cut short")


_EXTRANEOUS = re.compile(r"Corrupt JPEG data: (\d+) extraneous bytes? before marker (0x[0-9a-fA-F]+)")
_DAMAGED = re.compile(r"Corrupt JPEG data: (?!\d+ extraneous)|Premature end of JPEG file|Inconsistent progression "
                      r"sequence|Invalid SOS parameters")  # libjpeg's warnings (jerror.h) that mean a damaged image
_HARMLESS = re.compile(r"Warning: unknown JFIF revision|Unknown Adobe color transform")


@contextmanager
def native_stderr():
    """Take aside what is written on file descriptor 2 (C libraries' ``stderr``) within the block: yields a list that
    holds the text's lines once the block ends. Python's ``sys.stderr`` is flushed on entry and exit. Process-wide:
    another thread's writes on descriptor 2 meanwhile are taken aside too (:func:`decode_jpeg` writes them again)."""
    lines: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (a closed stderr): nothing to take aside
        yield lines
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())


def decode_jpeg(data: bytes, path, what: str):
    """``cv2.imdecode(data, IMREAD_UNCHANGED)`` of a JPEG file's bytes that :func:`check_jpeg` passed, with libjpeg's
    messages in depthkit's words (module docstring): ``(array or None, notes)``; a ``ValueError`` naming ``path`` as
    ``what`` when libjpeg found the data damaged."""
    import cv2

    with native_stderr() as said:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    damaged = [line for line in said if _DAMAGED.match(line)]
    other = [line for line in said if not (_DAMAGED.match(line) or _EXTRANEOUS.match(line) or _HARMLESS.match(line))]
    if other:  # not libjpeg's warnings: given back as written
        sys.stderr.write("\n".join(other) + "\n")
        sys.stderr.flush()
    if damaged:
        raise ValueError(f"could not decode {what} {path}: the file is a damaged JPEG (its decoder, libjpeg, says "
                         f"{'; '.join(repr(x) for x in damaged)}: the image would hold garbage from there on). Copy "
                         f"or export it again.")
    notes = [f"its decoder, libjpeg, found {m.group(1)} stray bytes before the JPEG marker {m.group(2)} and skipped "
             "them: a few are some cameras' padding, more mean the file was changed and its image may be damaged "
             "(check it, or copy or export it again)." for m in map(_EXTRANEOUS.match, said) if m]
    notes += [f"its decoder, libjpeg, says {line!r}; the image was decoded." for line in said if _HARMLESS.match(line)]
    return image, notes
