"""OpenCV's decoding of the files :func:`depthkit.io.read_image` and :func:`depthkit.io.read_depth` (its PNGs) read,
with a damaged PNG refused first.

OpenCV's PNG decoder prints libpng's own messages (``libpng error: Read Error``, ``libpng error: IDAT: CRC error``,
``libpng warning: tEXt: CRC error``) or its logger's on stderr for a damaged PNG; the user would see those stray lines
above depthkit's error, or beside a result. So a file that starts with the PNG signature is read once and checked
by :func:`check_png` before it is decoded from memory. Refused, with what is wrong in words:

- a file cut short, or whose first chunk is not IHDR; an IHDR that is not a valid PNG header (size, bit depth for the
  colour type, methods); a chunk type that is not four letters, a critical chunk no PNG decoder knows, a second
  IHDR, IDAT chunks that are not consecutive, a palette image without its PLTE;
- a critical chunk (IHDR, IDAT, IEND, or the PLTE of a palette image) whose CRC does not match its bytes;
- image data (the IDAT stream) that zlib cannot inflate, that stops early, that holds fewer bytes than the header's
  size needs, or whose scan lines start with an unknown filter type;
- an image of more pixels than OpenCV decodes (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2^30 unless set).

OpenCV is then given only the chunks that make the pixels (:data:`PIXEL_CHUNKS`: header, palette, transparency,
image data, end, and APNG's frames), so the metadata never reaches libpng, which warns about malformed metadata (an
ICC profile's rendering intent, a short pHYs) on stderr. Over the 6,906 PNG files on the project's machine, OpenCV
decoded the same arrays from those chunks as from the whole files. Ignored and named for the caller to warn about,
as libpng ignores them after a warning: a chunk that holds no pixels (text, colour profile, ...; the optional PLTE
of a true-colour image) whose CRC does not match (when it belongs to an APNG animation, the animation control is
left out too, so the default image is decoded), and the CRC of an empty IEND. :func:`pil_source` gives Pillow,
which refuses a whole file for one such chunk and reads the metadata, the file less those chunks.

Left to the decoder, which warns on stderr and decodes the image whole: more image data than the header needs (a
writer's bug, not damage).
The check inflates the image data without keeping it, which takes about as long as OpenCV's decode: 0.13-0.21 s
against 0.17-0.19 s for a 19 MB, 12-megapixel 16-bit PNG (one IDAT chunk or 2,323), a few milliseconds at 640x480.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np

__all__ = ["PIXEL_CHUNKS", "PNG_SIGNATURE", "PngCheck", "check_png", "decode_image_file", "pil_source"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INFLATE_STEP = 1 << 22  # at most 4 MB of inflated image data held at once while checking
_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
_APNG = (b"acTL", b"fcTL", b"fdAT")
PIXEL_CHUNKS = (b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND") + _APNG
"""The chunks OpenCV's decoder is given: those that make the pixels (transparency and APNG frames included)."""
_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # by colour type
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_IEND = b"\x00\x00\x00\x00IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


@dataclass
class PngCheck:
    """What :func:`check_png` found: ``problem`` (None, or why the file cannot be decoded, in words), ``data`` (the
    PNG bytes to decode: the file's, less the ignored chunks and, unless asked for, the metadata; the file's own
    bytes when there is a problem) and ``ignored`` (the chunks ignored, named with their byte offsets)."""

    problem: str | None
    data: bytes
    ignored: list[str] = field(default_factory=list)


def _header_problem(body: bytes) -> str | None:
    """Why an IHDR chunk's data is not a valid PNG header, or None."""
    if len(body) != 13:
        return f"its IHDR header holds {len(body)} bytes, not 13"
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    if not (0 < width < 2 ** 31 and 0 < height < 2 ** 31):
        return f"its header gives a size of {width}x{height} pixels"
    if depth not in _BIT_DEPTHS.get(colour, ()):
        return f"its header gives bit depth {depth} for colour type {colour}, which PNG does not define"
    if compression or filtering or interlace > 1:
        return (f"its header gives compression {compression}, filter {filtering} and interlace {interlace} methods; "
                "PNG defines 0, 0 and 0 or 1")
    limit = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))
    if width * height > limit:
        return (f"it is {width}x{height} pixels, more than OpenCV decodes ({limit}; the OPENCV_IO_MAX_IMAGE_PIXELS "
                "environment variable sets it)")
    return None


def _filter_positions(body: bytes) -> np.ndarray:
    """Offsets of the filter-type byte of every scan line in the inflated image data of the header ``body``, plus
    the data's full length as the last entry."""
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
    bits = depth * _CHANNELS[colour]
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    starts, at = [], 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx) if width > x0 else 0, -(-(height - y0) // dy) if height > y0 else 0
        if w and h:  # an empty pass has no scan lines at all
            line = 1 + (w * bits + 7) // 8
            starts.append(at + line * np.arange(h, dtype=np.int64))
            at += line * h
    return np.concatenate(starts + [np.array([at], np.int64)])


def _usable(kind: bytes, length: int, header: bytes, palette_size: int) -> bool:
    """Whether a PLTE or tRNS chunk whose CRC matches is one libpng uses (it warns about and ignores the others: a
    PLTE in a grey image or of a length that is not whole colours, a tRNS of the wrong size for the colour type);
    any other chunk is."""
    if kind == b"PLTE":
        return header[9] in (2, 3, 6) and length % 3 == 0 and 3 <= length <= 768
    if kind == b"tRNS":
        return {0: length == 2, 2: length == 6, 3: 1 <= length <= palette_size}.get(header[9], False)
    return True


class _ImageData:
    """The IDAT stream inflated piece by piece and checked: zlib's own checks, each scan line's filter type (0-4)
    and the byte count the header needs."""

    def __init__(self, header: bytes):
        self.inflate, self.lines = zlib.decompressobj(), _filter_positions(header)
        self.needed, self.seen, self.next = int(self.lines[-1]), 0, 0

    def feed(self, body, pos: int) -> str | None:
        rest = bytes(body)
        while rest and not self.inflate.eof:
            try:
                piece = self.inflate.decompress(rest, _INFLATE_STEP)
            except zlib.error as exc:
                why = str(exc).rpartition(": ")[2]
                return (f"its image data does not inflate: zlib finds an {why} in its IDAT chunk at byte {pos}"
                        if why.startswith("in") else f"its image data does not inflate: zlib says {why!r} at its "
                        f"IDAT chunk at byte {pos}")
            rest = self.inflate.unconsumed_tail
            end = self.seen + len(piece)
            stop = int(np.searchsorted(self.lines, end, side="left"))
            at = self.lines[self.next:stop] - self.seen
            if at.size:
                kinds = np.frombuffer(piece, np.uint8)[at]
                if (kinds > 4).any():
                    line = self.next + int(np.argmax(kinds > 4))
                    return (f"scan line {line} of its image data starts with filter type {int(kinds.max())}; PNG "
                            "defines 0-4")
            self.next, self.seen = stop, end
        return None

    def end(self) -> str | None:
        if not self.inflate.eof:
            return "its image data (the IDAT chunks) stops before the end of its compressed stream"
        if self.seen < self.needed:
            return f"its image data holds {self.seen} bytes where its header's size needs {self.needed}"
        return None


def check_png(data: bytes, inflate: bool = True, metadata: bool = False) -> PngCheck:
    """Walk the chunks of a PNG file's bytes ``data`` (which start with :data:`PNG_SIGNATURE`) from IHDR to IEND,
    checking each chunk's type, length and CRC, and (``inflate``) the image data; bytes after IEND are ignored, as
    decoders do. See the module docstring for what is refused and what is ignored.

    The bytes returned hold the chunks that make the pixels (:data:`PIXEL_CHUNKS`), and with ``metadata`` every other
    chunk too, less the ignored ones. With ``inflate=False`` only the chunks are walked (for a reader of the
    metadata: a tenth of the time)."""
    size, pos, last, header = len(data), len(PNG_SIGNATURE), None, None
    image, idat, idat_done, palette, palette_size = None, False, False, False, 0
    kept, ignored = [], []  # the bytes of each chunk passed on; the names of those ignored
    while True:
        if pos + 8 > size:  # a chunk: 4-byte length, 4-byte type, data, 4-byte CRC
            after = f"after its {last.decode('latin-1')} chunk" if last else "right after its signature"
            return PngCheck(f"{size} bytes, ending {after} without the IEND chunk that closes a PNG", data)
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        if not kind.isalpha():
            return PngCheck(f"the chunk at byte {pos} has type {name!r}, not four letters", data)
        if last is None and kind != b"IHDR":
            return PngCheck(f"its first chunk is {name!r}, not the IHDR header a PNG starts with", data)
        end = pos + 12 + length
        if end > size:
            return PngCheck(f"{size} bytes, but its {name} chunk at byte {pos} runs to byte {end}", data)
        body = memoryview(data)[pos + 8:end - 4]
        crc_ok = zlib.crc32(body, zlib.crc32(kind)) == struct.unpack_from(">I", data, end - 4)[0]
        critical = not kind[0] & 0x20  # the case of a chunk type's first letter: upper = critical
        if critical and kind not in _CRITICAL:
            return PngCheck(f"its {name} chunk at byte {pos} is a critical chunk no PNG decoder knows", data)
        needed = critical and not (kind == b"PLTE" and header[9] != 3) and not (kind == b"IEND" and not length)
        if not crc_ok and needed:
            return PngCheck(f"its {name} chunk at byte {pos} fails its CRC check: its bytes were changed after it "
                            "was written", data)
        if not crc_ok:
            ignored.append(f"{name} at byte {pos}")
        if kind == b"IEND":
            kept.append((kind, pos, _IEND))  # an empty IEND whose CRC failed is given the right one
        elif crc_ok and (metadata or kind in PIXEL_CHUNKS) and _usable(kind, length, header, palette_size):
            kept.append((kind, pos, data[pos:end]))
        if kind == b"IHDR":
            if last is not None:
                return PngCheck(f"it has a second IHDR chunk, at byte {pos}", data)
            problem = _header_problem(bytes(body))
            if problem:
                return PngCheck(problem, data)
            header = bytes(body)
        if kind == b"PLTE" and header[9] == 3 and not (length % 3 == 0 and 3 <= length <= 3 << header[8]):
            return PngCheck(f"its PLTE chunk holds {length} bytes, not the 1-{1 << header[8]} three-byte colours "
                            f"its bit depth {header[8]} allows", data)
        palette |= kind == b"PLTE" and crc_ok
        palette_size = length // 3 if kind == b"PLTE" and crc_ok else palette_size
        if kind == b"IDAT":
            if idat_done:
                return PngCheck(f"its IDAT chunks are not consecutive (another chunk comes before the one at byte "
                                f"{pos})", data)
            if not idat and header[9] == 3 and not palette:
                return PngCheck("it is a palette image without the PLTE chunk that holds its palette", data)
            idat = True
            if inflate:
                image = image or _ImageData(header)
                problem = image.feed(body, pos)
                if problem:
                    return PngCheck(problem, data)
        else:
            idat_done = idat
        if kind == b"IEND":
            if not idat:
                return PngCheck("it has no image data: no IDAT chunk", data)
            problem = image.end() if image is not None else None
            if problem:
                return PngCheck(problem, data)
            break
        pos, last = end, kind
    if any(part.split()[0].encode() in _APNG for part in ignored):  # the default image, not a broken animation
        for at in [at for kind, at, _ in kept if kind == b"acTL"]:
            ignored.append(f"acTL at byte {at} (the animation: its default image is read)")
        kept = [chunk for chunk in kept if chunk[0] != b"acTL"]
    return PngCheck(None, PNG_SIGNATURE + b"".join(chunk for _, _, chunk in kept), ignored)


def pil_source(path):
    """What to give Pillow to read ``path``'s metadata (EXIF orientation, text chunks, size): the path itself, or for
    a PNG with chunks :func:`check_png` ignores, its bytes without them (Pillow refuses the whole file for one)."""
    with open(path, "rb") as f:
        if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            return path
    check = check_png(Path(path).read_bytes(), inflate=False, metadata=True)
    return BytesIO(check.data) if check.problem is None and check.ignored else path


def decode_image_file(path: Path, what: str) -> tuple[np.ndarray | None, list[str]]:
    """Decode the image file at ``path`` as ``cv2.imread(path, IMREAD_UNCHANGED)`` does (HxW or HxWxC, OpenCV's BGR
    order and dtype; None when OpenCV cannot decode it), with a PNG checked first by :func:`check_png`.

    Returns the array and the PNG chunks ignored (empty for other files), for the caller to warn about. A damaged
    PNG, and any file OpenCV raises on, is a ``ValueError`` naming it as ``what`` (``image``, ``depth PNG``) instead,
    before OpenCV prints on stderr.
    """
    import cv2

    with open(path, "rb") as f:
        is_png = f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    try:
        if not is_png:
            return cv2.imread(str(path), cv2.IMREAD_UNCHANGED), []
        check = check_png(Path(path).read_bytes())
        if check.problem is not None:
            raise ValueError(f"could not decode {what} {path}: the file is a truncated or damaged PNG "
                             f"({check.problem}). Copy or export it again.")
        return cv2.imdecode(np.frombuffer(check.data, np.uint8), cv2.IMREAD_UNCHANGED), check.ignored
    except cv2.error as exc:
        said = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"could not decode {what} {path}: OpenCV refused it ({said}).") from None
