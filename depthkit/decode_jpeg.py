"""A JPEG file's structure checked before OpenCV decodes it (:func:`check_jpeg`), and libjpeg's complaints while it
decodes in depthkit's words (:func:`decode_jpeg`).

libjpeg decodes a JPEG cut short as far as its data goes and fills the rest of the image with grey, after printing
``Premature end of JPEG file`` on stderr; OpenCV then returns that image as if it were whole. So a file that starts
with a JPEG's SOI marker (bytes ``FF D8``) has its markers walked first, and is refused, with what is wrong in words,
when:

- a marker segment's length runs past the end of the file, or the file ends before the EOI marker (``FF D9``) that
  closes a JPEG — except a sequential (not progressive) JPEG that ends in its scan's data: it is decoded with the EOI
  added, and refused as cut short only if libjpeg then finds its data short (a writer that left out only the EOI
  gives a whole image);
- a marker segment's length is below 2 (its own two bytes), a byte where a marker must start is not ``FF``, or a
  marker is not one JPEG defines (``FF 02``-``FF BF``);
- it has no frame header (SOF) before its first scan (SOS), or no scan before its EOI.

Bytes after the EOI are ignored, as decoders do. A JPEG has no checksum: a changed byte inside its compressed data
is found only by decoding it. :func:`decode_jpeg` therefore decodes with what is written on stderr (file descriptor
2) taken aside (:func:`~depthkit.native_stderr.native_stderr`), and turns libjpeg's warnings into depthkit's words.
libjpeg prints only the first warning of a decode and counts the others, so a warning that might be harmless could
hide damage after it:

- a few stray bytes (at most :data:`STRAY_BYTES_ALLOWED`) before the EOI marker — some cameras' padding, after which
  nothing is decoded — give a :class:`~depthkit.io.DepthkitWarning` and the image;
- every other warning (``Corrupt JPEG data: ...``, more stray bytes or stray bytes before another marker, ``Premature
  end of JPEG file``, an unknown JFIF revision or Adobe colour transform, ...) refuses the file, with libjpeg's words;
- a JPEG that libjpeg cannot decode at all is refused as a damaged JPEG;
- anything else written on stderr meanwhile (another thread's output) is written to stderr again, unchanged.

The walk reads the file's bytes once and finds the scans' ends with numpy (27 ms for a 12-megapixel progressive
photo).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

from depthkit.native_stderr import native_stderr, write_stderr

__all__ = ["JPEG_SOI", "STRAY_BYTES_ALLOWED", "JpegCheck", "check_jpeg", "decode_jpeg"]

JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
STRAY_BYTES_ALLOWED = 16
"""Stray bytes before the EOI marker that libjpeg skips (a camera's padding) and depthkit accepts, with a warning."""
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (DHT, JPG and DAC share the range)
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_NO_LENGTH = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}  # RSTn, TEM, SOI: a marker without a segment


@dataclass
class JpegCheck:
    """What :func:`check_jpeg` found: ``problem`` (None, or why the file cannot be decoded, in words) and
    ``ends_in_scan`` (the file ends in the data of a sequential JPEG's scan: whole if only its EOI is missing)."""

    problem: str | None
    ends_in_scan: bool = False


def _marker_ends(data: np.ndarray) -> np.ndarray:
    """The offsets of every ``FF`` that starts a marker inside compressed data (not followed by a stuffed ``00``, a
    restart marker ``D0``-``D7`` or another fill ``FF``), ascending."""
    ff = np.flatnonzero(data[:-1] == 0xFF)
    follower = data[ff + 1]
    return ff[(follower != 0) & ((follower < 0xD0) | (follower > 0xD7)) & (follower != 0xFF)]


def check_jpeg(data: bytes) -> JpegCheck:
    """Walk the markers of a JPEG file's bytes ``data`` (which start with :data:`JPEG_SOI`) to its EOI; see the
    module docstring for what is refused."""
    size, pos, frame, progressive, scans, ends = len(data), 2, False, False, 0, None
    cut = "the file was cut short"
    while True:
        while pos + 1 < size and data[pos] == 0xFF and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 2 > size:
            return JpegCheck(f"{size} bytes, ending before the EOI marker that closes a JPEG: {cut}")
        if data[pos] != 0xFF:
            return JpegCheck(f"byte {pos} is 0x{data[pos]:02X} where a marker (0xFF) must start")
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return JpegCheck(None if scans else "it has no image data: no scan (SOS marker) before its EOI marker")
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if marker < 0xC0:
            return JpegCheck(f"bytes {pos}-{pos + 1} are 0xFF{marker:02X}, not a JPEG marker")
        if pos + 4 > size:
            return JpegCheck(f"{size} bytes, ending within its marker 0xFF{marker:02X} at byte {pos}: {cut}")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            return JpegCheck(f"its marker 0xFF{marker:02X} at byte {pos} gives its segment a length of {length} "
                             "bytes (at least 2)")
        end = pos + 2 + length
        if end > size:
            return JpegCheck(f"{size} bytes, but its marker 0xFF{marker:02X} segment at byte {pos} runs to byte "
                             f"{end}: {cut}")
        if marker in _SOF:
            frame, progressive = True, progressive or marker in _PROGRESSIVE
        if marker != 0xDA:  # not a scan
            pos = end
            continue
        if not frame:
            return JpegCheck(f"its first scan (SOS at byte {pos}) comes before any frame header (SOF marker)")
        scans += 1
        ends = _marker_ends(np.frombuffer(data, np.uint8)) if ends is None else ends
        at = int(np.searchsorted(ends, end))
        if at == ends.size:
            return JpegCheck(f"{size} bytes, ending in the compressed data of its scan {scans} (SOS at byte {pos}) "
                             f"before the EOI marker that closes a JPEG: {cut}", ends_in_scan=not progressive)
        pos = int(ends[at])


_EXTRANEOUS = re.compile(r"Corrupt JPEG data: (\d+) extraneous bytes? before marker 0x(d9|D9)$")
_LIBJPEG_WARNINGS = re.compile(r"Corrupt JPEG data|Premature end of JPEG file|Inconsistent progression sequence|"
                               r"Invalid SOS parameters|Warning: unknown JFIF revision|Unknown Adobe color transform|"
                               r"Application transferred too many scanlines")  # jerror.h's warnings (JWRN_*)


def decode_jpeg(data: bytes, path, what: str, check: JpegCheck | None = None):
    """``cv2.imdecode(data, IMREAD_UNCHANGED)`` of a JPEG file's bytes that :func:`check_jpeg` passed (or, with
    ``check.ends_in_scan``, refused only for a missing EOI), with libjpeg's warnings in depthkit's words (module
    docstring): ``(array, notes)``; a ``ValueError`` naming ``path`` as ``what`` when the file is damaged."""
    import cv2

    eoi_added = check is not None and check.ends_in_scan
    error = None
    with native_stderr() as said:
        try:
            image = cv2.imdecode(np.frombuffer(data + JPEG_EOI if eoi_added else data, np.uint8),
                                 cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:  # raised after the lines taken aside are given back
            error = exc
    ours = [line for line in said if _LIBJPEG_WARNINGS.match(line)]
    write_stderr([line for line in said if not _LIBJPEG_WARNINGS.match(line)])  # not libjpeg's: as written
    if error is not None:
        raise error
    stray = _EXTRANEOUS.match(ours[0]) if len(ours) == 1 else None
    if eoi_added and (ours or image is None):
        raise ValueError(f"could not decode {what} {path}: the file is a truncated or damaged JPEG ({check.problem}). "
                         "Copy or export it again.")
    if image is None:
        raise ValueError(f"could not decode {what} {path}: the file is a damaged JPEG (its markers are in order, but "
                         "its decoder, libjpeg, could not decode what they hold). Copy or export it again.")
    if ours and not (stray and int(stray.group(1)) <= STRAY_BYTES_ALLOWED):
        raise ValueError(f"could not decode {what} {path}: the file is a damaged JPEG (its decoder, libjpeg, says "
                         f"{ours[0]!r}: the image it gives may hold garbage from there on). Copy or export it again.")
    notes = []
    if stray:
        notes.append(f"its decoder, libjpeg, skipped {stray.group(1)} stray bytes before the JPEG's end marker (EOI), "
                     "as some cameras pad their files; the image is whole.")
    if eoi_added:
        notes.append("its EOI marker (the two bytes that close a JPEG) is missing; the image decoded whole without "
                     "it.")
    return image, notes
