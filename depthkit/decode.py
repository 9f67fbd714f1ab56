"""OpenCV's decoding of the files :func:`depthkit.io.read_image` and :func:`depthkit.io.read_depth` (its PNGs) read,
with a damaged PNG refused first (a JPEG cut short too: :mod:`depthkit.decode_jpeg`).

OpenCV's PNG decoder prints libpng's own messages (``libpng error: Read Error``, ``libpng error: IDAT: CRC error``,
``libpng warning: tEXt: CRC error``) or its logger's on stderr for a damaged PNG; the user would see those stray lines
above depthkit's error, or beside a result. So a file that starts with the PNG signature is read once and checked
by :func:`check_png` before it is decoded from memory. Refused, with what is wrong in words:

- a file cut short, or whose first chunk is not IHDR; an IHDR that is not a valid PNG header (size, bit depth for the
  colour type, methods); a chunk type that is not four letters, a critical chunk no PNG decoder knows, a second
  IHDR, IDAT chunks split by another chunk before their stream ends, a palette image without its PLTE, or with two,
  or with one that is not whole colours;
- a critical chunk (IHDR, IDAT, IEND, or the PLTE of a palette image) whose CRC does not match its bytes;
- image data (the IDAT stream) that zlib cannot inflate (with the window its header gives, as libpng does), that
  stops early, that holds fewer bytes than the header's size needs, or whose scan lines start with an unknown filter
  type;
- an image wider or taller than libpng decodes (1,000,000 pixels) or of more pixels than OpenCV decodes
  (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2^30 unless set).

OpenCV is then given only the chunks that make the still image (IHDR, PLTE, tRNS, IDAT, IEND: header, palette,
transparency, image data, end), each where a decoder expects it, so nothing else reaches libpng, which warns about
malformed metadata (an ICC profile's rendering intent, a short pHYs), a misplaced or out-of-range tRNS, or a stray
IDAT on stderr. An APNG is read as its default image (the IDAT's), as a decoder of still images shows it. Over the
6,906 PNG files on the project's machine, OpenCV decoded the same arrays from those chunks as from the whole files.
Ignored and named for the caller to warn about, as libpng ignores them after a warning: a chunk that holds no part
of the still image (text, colour profile, an APNG frame, the optional PLTE of a true-colour image) whose CRC does
not match, and the CRC of an empty IEND (repaired). :func:`pil_source` gives Pillow, which refuses a whole file for
one such chunk and reads the metadata, the file less those chunks.

Bytes after the end of the image data's compressed stream are cut off (libpng warns about them and decodes the image
whole). A stream that inflates to more bytes than the header needs (a writer's bug, not damage; libpng warns "Too
much image data" and decodes the image whole) is given to the decoder compressed again without the bytes past the
image, and the bytes dropped are said. A stream whose checksum fails is refused even where libpng, which stops
inflating once it has every row, would decode it: its bytes are not what was written.

The check inflates the image data without keeping it, which takes about as long as OpenCV's decode: 0.20-0.29 s
against 0.19-0.21 s for a 19 MB, 12-megapixel 16-bit PNG (one IDAT chunk or 2,323), a few milliseconds at 640x480.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np

from depthkit.decode_jpeg import JPEG_SOI, check_jpeg, decode_jpeg
from depthkit.native_stderr import native_stderr, write_stderr

__all__ = ["PNG_SIGNATURE", "PngCheck", "check_png", "decode_image_file", "pil_source"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # by colour type
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_LIBPNG_MAX_SIDE = 1_000_000  # libpng's default user limit on width and height


@dataclass
class PngCheck:
    """What :func:`check_png` found: ``problem`` (None, or why the file cannot be decoded, in words), ``data`` (the
    PNG bytes to decode: the file's, less the ignored chunks and, unless asked for, the metadata; the file's own
    bytes when there is a problem), ``ignored`` (the chunks ignored, named with their byte offsets) and ``trimmed``
    (how many inflated bytes of image data lay past the image's end and were left out)."""

    problem: str | None
    data: bytes
    ignored: list[str] = field(default_factory=list)
    trimmed: int = 0


def _pixel_limit() -> int:
    """OpenCV's limit on an image's pixels: ``OPENCV_IO_MAX_IMAGE_PIXELS`` (a count, or with a K/KB, M/MB or G/GB
    suffix in powers of 1024), 2^30 unless set or when it does not parse."""
    text = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]B?)?\s*", text)
    if not match:
        return 1 << 30
    return int(match.group(1)) << (10 * " KMG".index(match.group(2)[0]) if match.group(2) else 0)


def _header_problem(body: bytes) -> str | None:
    """Why an IHDR chunk's data is not a valid PNG header (or one libpng or OpenCV refuses), or None."""
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
    if max(width, height) > _LIBPNG_MAX_SIDE:
        return f"it is {width}x{height} pixels, wider or taller than libpng decodes ({_LIBPNG_MAX_SIDE:,} pixels)"
    limit = _pixel_limit()
    if width * height > limit:
        return (f"it is {width}x{height} pixels, more than OpenCV decodes ({limit}; the OPENCV_IO_MAX_IMAGE_PIXELS "
                "environment variable sets it)")
    return None


def _filter_positions(body: bytes) -> tuple[np.ndarray, int]:
    """Offsets of the filter-type byte of every scan line in the inflated image data of the header ``body``, and the
    data's full length."""
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
    return np.concatenate(starts), at


def _transparency(body: bytes, header: bytes, palette_size: int) -> bytes | None:
    """A tRNS chunk's data as libpng uses it, or None when it ignores the chunk (after a warning): two bytes of grey
    or six of RGB, each sample cut to the bit depth (libpng warns and does so), or at most one alpha per palette
    entry (of those the bit depth can index)."""
    depth, colour = header[8], header[9]
    if colour == 3:
        return body if 1 <= len(body) <= min(palette_size, 1 << depth) else None
    if colour not in (0, 2) or len(body) != (2 if colour == 0 else 6):
        return None
    samples = struct.unpack(f">{len(body) // 2}H", body)
    return struct.pack(f">{len(samples)}H", *(v & ((1 << depth) - 1) for v in samples))


def _chunk(kind: bytes, body: bytes) -> bytes:
    """A chunk's bytes: length, type, data and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _inflate_problem(exc: zlib.error, pos: int) -> str:
    """What zlib's error ``exc`` on the IDAT chunk at byte ``pos`` means, in words."""
    if str(exc).startswith("Error 2 "):  # Z_NEED_DICT
        return (f"its image data's zlib stream asks for a preset dictionary (IDAT chunk at byte {pos}), which PNG "
                "does not allow")
    why = str(exc).rpartition(": ")[2]
    if why.startswith("in"):
        return f"its image data does not inflate: zlib finds an {why} in its IDAT chunk at byte {pos}"
    return f"its image data does not inflate: zlib says {why!r} at its IDAT chunk at byte {pos}"


class _ImageData:
    """The IDAT stream inflated piece by piece and checked: zlib's own checks (with the window the stream's header
    gives, a scan line at a time, as libpng inflates it), each scan line's filter type (0-4) and the byte count the
    header needs."""

    def __init__(self, header: bytes):
        self.inflate = zlib.decompressobj(0)  # 0: the window size from the zlib header, not always 32K
        self.lines, self.needed = _filter_positions(header)
        self.seen, self.next = 0, 0
        # a scan line at a time (at least 64 bytes), as libpng inflates: zlib then finds a distance beyond the
        # window the header gives, which it lets pass when it writes a long output in one piece
        self.step = max(64, int(np.diff(np.append(self.lines, self.needed)).min()))

    def feed(self, body, pos: int) -> str | None:
        """Inflate and check one IDAT chunk's data (``body``; the chunk at byte ``pos``): None, or the problem. Sets
        ``extra``: how many of its bytes lie after the end of the compressed stream (libpng warns about them)."""
        self.extra = len(body) if self.inflate.eof else 0
        for start in range(0, len(body) if not self.inflate.eof else 0, 4096):  # small input slices: zlib copies its
            rest = body[start:start + 4096]                                       # unconsumed tail at every call
            while rest and not self.inflate.eof:
                try:
                    piece = self.inflate.decompress(rest, self.step if self.seen < self.needed else 1 << 20)
                except zlib.error as exc:
                    return _inflate_problem(exc, pos)
                rest = self.inflate.unconsumed_tail
                problem = self._check_lines(piece)
                if problem:
                    return problem
            if self.inflate.eof:
                self.extra = len(self.inflate.unused_data) + max(0, len(body) - start - 4096)
                break
        return None

    def _check_lines(self, piece: bytes) -> str | None:
        """Check the filter type of the scan lines that start in ``piece``, the next inflated bytes."""
        end = self.seen + len(piece)
        stop = int(np.searchsorted(self.lines, end, side="left"))
        at = self.lines[self.next:stop] - self.seen
        if at.size:
            kinds = np.frombuffer(piece, np.uint8)[at]
            bad = np.flatnonzero(kinds > 4)
            if bad.size:
                return (f"scan line {self.next + int(bad[0])} of its image data starts with filter type "
                        f"{int(kinds[bad[0]])}; PNG defines 0-4")
        self.next, self.seen = stop, end
        return None

    def end(self) -> str | None:
        """None when the stream ended and held every byte the header needs, else the problem. A stream cut short
        after its last row is refused too: libpng decodes some such files and fails on others."""
        if not self.inflate.eof:
            return "its image data (the IDAT chunks) stops before the end of its compressed stream"
        if self.seen < self.needed:
            return f"its image data holds {self.seen} bytes where its header's size needs {self.needed}"
        return None


def check_png(data: bytes, inflate: bool = True, metadata: bool = False) -> PngCheck:
    """Walk the chunks of a PNG file's bytes ``data`` (which start with :data:`PNG_SIGNATURE`) from IHDR to IEND,
    checking each chunk's type, length and CRC, and (``inflate``) the image data; bytes after IEND are ignored, as
    decoders do. See the module docstring for what is refused and what is ignored.

    The bytes returned hold the chunks of the still image (IHDR, PLTE, tRNS, IDAT, IEND, as a decoder uses them),
    and with ``metadata`` every other chunk too, less the ignored ones. With ``inflate=False`` only the chunks are
    walked (for a reader of the metadata: a tenth of the time)."""
    size, pos, last, header, view = len(data), len(PNG_SIGNATURE), None, None, memoryview(data)
    image, idat, idat_done, plte, trns, palette_size = None, False, False, False, False, 0
    kept, ignored = [], []  # the bytes of each chunk passed on; the names of those ignored
    idats, trimmed = [], 0  # where the IDAT chunks passed on are in kept; inflated bytes past the image, left out
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
        body = view[pos + 8:end - 4]
        crc_ok = zlib.crc32(body, zlib.crc32(kind)) == struct.unpack_from(">I", data, end - 4)[0]
        critical = not kind[0] & 0x20  # the case of a chunk type's first letter: upper = critical
        if critical and kind not in _CRITICAL:
            return PngCheck(f"its {name} chunk at byte {pos} is a critical chunk no PNG decoder knows", data)
        palette_image = header is not None and header[9] == 3
        needed = critical and not (kind == b"PLTE" and not palette_image) and not (kind == b"IEND" and not length)
        if not crc_ok and needed:
            return PngCheck(f"its {name} chunk at byte {pos} fails its CRC check: its bytes were changed after it "
                            "was written", data)
        if not crc_ok:
            ignored.append(f"{name} at byte {pos}" + (", CRC repaired" if kind == b"IEND" else ""))
        if kind == b"IHDR":
            if last is not None:
                return PngCheck(f"it has a second IHDR chunk, at byte {pos}", data)
            problem = _header_problem(bytes(body))
            if problem:
                return PngCheck(problem, data)
            header = bytes(body)
            kept.append(view[pos:end])
        elif kind == b"PLTE" and palette_image:
            if plte:
                return PngCheck(f"it has a second PLTE chunk, at byte {pos}", data)
            if not (length % 3 == 0 and 3 <= length <= 768):
                return PngCheck(f"its PLTE chunk holds {length} bytes, not 1-256 three-byte colours", data)
            plte, palette_size = True, length // 3
            kept.append(view[pos:end])
        elif kind == b"PLTE":  # a true-colour image's suggested palette: used only where libpng would
            if crc_ok and header[9] in (2, 6) and not (plte or trns or idat) and length % 3 == 0 and 3 <= length <= 768:
                plte = True
                kept.append(view[pos:end])
        elif kind == b"tRNS":
            used = _transparency(bytes(body), header, palette_size) if crc_ok and not (trns or idat) else None
            if used is not None:
                trns = True
                kept.append(view[pos:end] if used == body else _chunk(kind, used))
        elif kind == b"IDAT":
            if not idat and palette_image and not plte:
                return PngCheck("it is a palette image without the PLTE chunk that holds its palette", data)
            if idat_done and image is not None and image.inflate.eof:
                pos, last = end, kind  # a stray IDAT after the whole stream: libpng warns and ignores it
                continue
            if idat_done:
                return PngCheck(f"its IDAT chunks are not consecutive (another chunk comes before the one at byte "
                                f"{pos})", data)
            idat = True
            if inflate:
                image = image or _ImageData(header)
                problem = image.feed(body, pos)
                if problem:
                    return PngCheck(problem, data)
            extra = image.extra if inflate else 0
            if extra < length:  # bytes after the stream's end are cut off, and an IDAT wholly after it left out
                idats.append(len(kept))
                kept.append(_chunk(kind, bytes(body[:length - extra])) if extra else view[pos:end])
        elif kind == b"IEND":
            if not idat:
                return PngCheck("it has no image data: no IDAT chunk", data)
            problem = image.end() if image is not None else None
            if problem:
                return PngCheck(problem, data)
            if image is not None and image.seen > image.needed:  # compressed again without the bytes past the image
                trimmed = image.seen - image.needed
                stream = b"".join(bytes(kept[i][8:-4]) for i in idats)
                pixels = zlib.decompressobj(0).decompress(stream, image.needed)  # no more than the image's bytes
                kept[idats[0]:idats[-1] + 1] = [_chunk(b"IDAT", zlib.compress(pixels, 1))]
            kept.append(_chunk(b"IEND", b""))  # an empty IEND whose CRC failed is given the right one
            break
        elif crc_ok and metadata:
            kept.append(view[pos:end])
        idat_done = idat_done or (idat and kind != b"IDAT")
        pos, last = end, kind
    return PngCheck(None, PNG_SIGNATURE + b"".join(kept), ignored, trimmed)


def pil_source(path):
    """What to give Pillow to read ``path``'s metadata (EXIF orientation, text chunks, size): the path itself, or for
    a PNG with chunks :func:`check_png` ignores, its bytes without them (Pillow refuses the whole file for one)."""
    with open(path, "rb") as f:
        if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            return path
    check = check_png(Path(path).read_bytes(), inflate=False, metadata=True)
    return BytesIO(check.data) if check.problem is None and check.ignored else path


def _notes(check: PngCheck, what: str) -> list[str]:
    """What a caller should warn about a PNG that :func:`check_png` passed: sentences (none when nothing was left
    out)."""
    notes = []
    if check.ignored:
        many = len(check.ignored) > 1
        notes.append(f"ignored {len(check.ignored)} PNG chunk{'s' if many else ''} outside the image that failed "
                     f"{'their' if many else 'its'} CRC check ({'; '.join(check.ignored)}); the image is whole.")
        if what == "depth PNG" and any(d.split()[0] in ("tEXt", "iTXt", "zTXt") for d in check.ignored):
            notes.append("A depth_scale recorded in a text chunk so lost is not used: give the file's scale "
                         "(--depth-scale) if it had one.")
    if check.trimmed:
        notes.append(f"ignored {check.trimmed} bytes of image data past the end of the image its header describes "
                     "(a writer's bug); the image is whole.")
    return notes


_OPENCV_LOG = re.compile(r"^\[\s*(?:ERROR|WARN|INFO|DEBUG|VERBOSE|FATAL)[^\]]*\]\s+(?:global\s+)?\S+:\d+\s+(.*)$")
"""A line of OpenCV's logger (``[ERROR:0@4.740] global grfmt_tiff.cpp:117 TIFF_Error ...``): group 1 is the text."""


def _decoder_notes(said: list[str], failed: bool, path, what: str) -> list[str]:
    """What OpenCV's logger printed (``said``, the lines on file descriptor 2) while it decoded ``path`` (a file
    other than PNG or JPEG, e.g. a TIFF's libtiff messages) in depthkit's words: a ``ValueError`` when the decode
    ``failed``, else notes to warn with. Other lines (not the logger's) are written to stderr again."""
    ours, other, last = [], [], None
    for line in said:  # a logger line, the lines of its message after it ("> ..." or blank), or another's
        m = _OPENCV_LOG.match(line)
        if m:
            ours.append(m.group(1).strip())
            last = ours
        elif last is ours and line.startswith(">"):
            ours[-1] += " " + line.lstrip("> ").strip()
        elif not (last is ours and not line.strip()):
            other.append(line)
            last = other
    write_stderr(other)
    if failed and ours:
        raise ValueError(f"could not decode {what} {path}: the file is empty, truncated or not an image (its "
                         f"decoder says {'; '.join(repr(x) for x in ours)}). Copy or export it again.")
    return [f"its decoder says {'; '.join(repr(x) for x in ours)}; the image was decoded."] if ours else []


def decode_image_file(path: Path, what: str) -> tuple[np.ndarray | None, list[str]]:
    """Decode the image file at ``path`` as ``cv2.imread(path, IMREAD_UNCHANGED)`` does (HxW or HxWxC, OpenCV's BGR
    order and dtype; None when OpenCV cannot decode it), with a PNG checked first by :func:`check_png` and a JPEG by
    :func:`~depthkit.decode_jpeg.check_jpeg`.

    Returns the array and what to warn about (sentences: PNG chunks or image data left out, what a decoder said
    about an image it decoded; empty for a whole file). A damaged PNG or JPEG, a file whose decoder failed saying
    why, and any file OpenCV raises on, is a ``ValueError`` naming it as ``what`` (``image``, ``depth PNG``)
    instead, before anything reaches stderr.
    """
    import cv2

    with open(path, "rb") as f:
        start = f.read(len(PNG_SIGNATURE))
    try:
        if start.startswith(JPEG_SOI):
            data = Path(path).read_bytes()
            check = check_jpeg(data)
            if check.problem is not None and not check.ends_in_scan:
                raise ValueError(f"could not decode {what} {path}: the file is a truncated or damaged JPEG "
                                 f"({check.problem}). Copy or export it again.")
            return decode_jpeg(data, path, what, check)
        if start != PNG_SIGNATURE:
            with native_stderr() as said:
                image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            return image, _decoder_notes(said, image is None, path, what)
        check = check_png(Path(path).read_bytes())
        if check.problem is not None:
            raise ValueError(f"could not decode {what} {path}: the file is a truncated or damaged PNG "
                             f"({check.problem}). Copy or export it again.")
        return cv2.imdecode(np.frombuffer(check.data, np.uint8), cv2.IMREAD_UNCHANGED), _notes(check, what)
    except cv2.error as exc:
        said = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        limit = (" Its pixels are more than OpenCV decodes: set the environment variable OPENCV_IO_MAX_IMAGE_PIXELS "
                 "above its width x height to decode it." if "CV_IO_MAX_IMAGE_PIXELS" in said else "")
        raise ValueError(f"could not decode {what} {path}: OpenCV refused it ({said}).{limit}") from None
