import json
import os
import re
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest

from depthkit import io
from depthkit.geometry import Intrinsics
from depthkit.intrinsics import intrinsics_image_size
from depthkit.orientation import image_size


def test_read_image_returns_rgb_from_png_and_jpg(tmp_path):
    img = np.zeros((8, 10, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    cv2.imwrite(str(tmp_path / "a.png"), img[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "a.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), img)
    jpg = io.read_image(tmp_path / "a.jpg")
    assert jpg.dtype == np.uint8 and jpg.shape == (8, 10, 3)
    assert abs(int(jpg[..., 0].mean()) - 200) <= 2 and jpg[..., 2].mean() < 5


def test_read_image_grey_and_errors(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.full((4, 4), 7, np.uint8))
    assert io.read_image(tmp_path / "g.png").shape == (4, 4, 3)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="could not decode"):
        io.read_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        io.read_image(tmp_path / "missing.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="allowed suffixes"):
        io.read_image(tmp_path / "x.gif")


@pytest.mark.parametrize("cut", ["inside IHDR", "mid-data", "without IEND", "inside IEND"])
def test_a_truncated_png_gets_depthkit_s_error_alone(tmp_path, capfd, cut):
    """A cut-short PNG, colour or 16-bit depth, is refused with depthkit's message saying where the file ends and
    what to do, and nothing else on stderr (OpenCV's decoder printed "libpng error: Read Error" or its logger's
    "IHDR chunk shall be first" line first); whole PNGs, an empty file and a non-PNG read as before, silently."""
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "rgb.png"), rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))  # 8 kB chunks
    io.write_depth_png16(tmp_path / "d.png", rng.uniform(0.5, 60.0, (300, 400)).astype(np.float32), scale=1000)
    capfd.readouterr()
    for name, read, what in (("rgb.png", io.read_image, "image"), ("d.png", io.read_depth, "depth PNG")):
        data = (tmp_path / name).read_bytes()
        at = {"inside IHDR": 16, "mid-data": len(data) // 2, "without IEND": len(data) - 12,
              "inside IEND": len(data) - 4}[cut]
        (tmp_path / f"cut_{name}").write_bytes(data[:at])
        with pytest.raises(ValueError) as err:
            read(tmp_path / f"cut_{name}")
        message = str(err.value)
        assert message.startswith(f"could not decode {what} {tmp_path / f'cut_{name}'}: the file is a truncated or "
                                  f"damaged PNG ({at} bytes, ") and message.endswith("Copy or export it again."), message
        assert capfd.readouterr().err == ""
        assert read(tmp_path / name).shape[:2] == (300, 400)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="the file is empty, truncated or not an image"):
        io.read_image(tmp_path / "empty.png")
    cv2.imwrite(str(tmp_path / "j.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "j.png").write_bytes((tmp_path / "j.jpg").read_bytes())  # a JPEG named .png: decoded by content
    assert io.read_image(tmp_path / "j.png").shape == (8, 8, 3)
    assert capfd.readouterr().err == ""


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk of a PNG file's bytes, read by the test itself."""
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def _png_bytes(chunks, bad_crc: int | None = None) -> bytes:
    """A PNG file from (type, data) chunks, each with its CRC (the one at index ``bad_crc`` off by one)."""
    out = b"\x89PNG\r\n\x1a\n"
    for i, (kind, body) in enumerate(chunks):
        crc = (zlib.crc32(kind + body) + (i == bad_crc)) & 0xFFFFFFFF
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    return out


@pytest.mark.parametrize("damage", ["IDAT changed", "IDAT changed, CRC remade", "image data cut", "no IDAT"])
def test_a_damaged_whole_png_gets_depthkit_s_error_alone(tmp_path, capfd, damage):
    """A PNG whose chunks all run whole but whose image data is damaged (a critical chunk failing its CRC, a stream
    zlib cannot inflate, or that stops early, or none) is refused with depthkit's message saying what is wrong, and
    nothing else on stderr (OpenCV printed "libpng error: IDAT: CRC error", "... incorrect data check", "Not enough
    image data")."""
    rng = np.random.default_rng(1)
    cv2.imwrite(str(tmp_path / "rgb.png"), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    io.write_depth_png16(tmp_path / "d.png", rng.uniform(0.5, 60.0, (120, 160)).astype(np.float32), scale=1000)
    capfd.readouterr()
    for name, read, what in (("rgb.png", io.read_image, "image"), ("d.png", io.read_depth, "depth PNG")):
        chunks = _png_chunks((tmp_path / name).read_bytes())
        stream = b"".join(body for kind, body in chunks if kind == b"IDAT")
        head, end = [c for c in chunks if c[0] not in (b"IDAT", b"IEND")], [(b"IEND", b"")]
        at = 8 + sum(12 + len(body) for _, body in head)  # where the one IDAT chunk starts
        flipped = stream[:len(stream) // 2] + bytes([stream[len(stream) // 2] ^ 0x55]) + stream[len(stream) // 2 + 1:]
        data = {"IDAT changed": _png_bytes(head + [(b"IDAT", flipped)] + end, bad_crc=len(head)),
                "IDAT changed, CRC remade": _png_bytes(head + [(b"IDAT", flipped)] + end),
                "image data cut": _png_bytes(head + [(b"IDAT", stream[:len(stream) // 2])] + end),
                "no IDAT": _png_bytes(head + end)}[damage]
        said = {"IDAT changed": f"its IDAT chunk at byte {at} fails its CRC check",
                "IDAT changed, CRC remade": f"its image data does not inflate: zlib finds an incorrect data check in "
                                            f"its IDAT chunk at byte {at}",
                "image data cut": "its image data (the IDAT chunks) stops before the end of its compressed stream",
                "no IDAT": "it has no image data: no IDAT chunk"}[damage]
        (tmp_path / f"bad_{name}").write_bytes(data)
        with pytest.raises(ValueError) as err:
            read(tmp_path / f"bad_{name}")
        assert str(err.value).startswith(f"could not decode {what} {tmp_path / f'bad_{name}'}: the file is a "
                                         f"truncated or damaged PNG ({said}"), str(err.value)
        assert str(err.value).endswith("Copy or export it again.")
        assert capfd.readouterr().err == ""
        (tmp_path / f"ok_{name}").write_bytes(_png_bytes(head + [(b"IDAT", stream)] + end))
        assert read(tmp_path / f"ok_{name}").shape[:2] == (120, 160)  # the same chunks, undamaged, read
    assert capfd.readouterr().err == ""


def test_png_chunks_without_pixels_failing_their_crc_are_ignored_with_a_warning(tmp_path, capfd):
    """A chunk that holds no pixels and fails its CRC (an ancillary chunk, the optional PLTE of a true-colour image,
    an empty IEND) is ignored, as libpng would, but without libpng's stderr line: the pixels are read whole, a
    DepthkitWarning names the chunk, and a whole depth_scale text chunk or EXIF orientation beside it is still used
    (Pillow, which reads them, refuses the whole file for the bad chunk). A damaged depth_scale chunk itself is said
    to be lost, and the depth then needs its scale given."""
    from PIL import Image

    depth = np.random.default_rng(2).uniform(0.5, 60.0, (40, 50)).astype(np.float32)
    io.write_depth_png16(tmp_path / "d.png", depth, scale=1000)
    chunks = _png_chunks((tmp_path / "d.png").read_bytes())
    text = [i for i, (kind, body) in enumerate(chunks) if kind == b"tEXt" and body.startswith(b"depth_scale")]
    assert len(text) == 1 and chunks[-1] == (b"IEND", b"")
    capfd.readouterr()
    one = "{} PNG chunk outside the image that failed its CRC check ({} at byte {}); the image is whole."
    (tmp_path / "time.png").write_bytes(_png_bytes(chunks[:1] + [(b"tIME", bytes(7))] + chunks[1:], bad_crc=1))
    with pytest.warns(io.DepthkitWarning) as said:
        back = io.read_depth(tmp_path / "time.png")  # no scale given: the recorded one is used
    np.testing.assert_allclose(back, depth, atol=5e-4)
    assert [str(w.message) for w in said] == ["time.png: ignored 1 " + one.format("", "tIME", 33)[1:]]
    (tmp_path / "text.png").write_bytes(_png_bytes(chunks, bad_crc=text[0]))
    with pytest.warns(io.DepthkitWarning, match="A depth_scale recorded in a text chunk so lost is not used"):
        with pytest.raises(ValueError, match="depth-scale"):
            io.read_depth(tmp_path / "text.png")
    with pytest.warns(io.DepthkitWarning, match=r"\(tEXt at byte \d+\); the image is whole"):
        np.testing.assert_allclose(io.read_depth(tmp_path / "text.png", depth_scale=1000), depth, atol=5e-4)
    with pytest.warns(io.DepthkitWarning, match=r"\(tIME at byte 33\); the image is whole\.$"):
        assert io.read_image(tmp_path / "time.png").shape == (40, 50, 3)
    end = 8 + sum(12 + len(body) for _, body in chunks[:-1])
    (tmp_path / "iend.png").write_bytes(_png_bytes(chunks, bad_crc=len(chunks) - 1))
    with pytest.warns(io.DepthkitWarning, match=rf"\(IEND at byte {end}, CRC repaired\); the image is whole\.$"):
        np.testing.assert_allclose(io.read_depth(tmp_path / "iend.png"), depth, atol=5e-4)

    rgb = np.random.default_rng(3).integers(0, 255, (30, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    colour = _png_chunks((tmp_path / "rgb.png").read_bytes())
    assert colour[0][1][9] == 2  # a true-colour image: a PLTE is only a suggested palette
    (tmp_path / "plte.png").write_bytes(_png_bytes(colour[:1] + [(b"PLTE", bytes(6))] + colour[1:], bad_crc=1))
    with pytest.warns(io.DepthkitWarning, match=r"\(PLTE at byte 33\)"):
        np.testing.assert_array_equal(io.read_image(tmp_path / "plte.png"), rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: read rotated 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "exif.png", exif=exif)
    tagged = _png_chunks((tmp_path / "exif.png").read_bytes())
    (tmp_path / "exif_time.png").write_bytes(_png_bytes(tagged[:1] + [(b"tIME", bytes(7))] + tagged[1:], bad_crc=1))
    with pytest.warns(io.DepthkitWarning) as said:
        np.testing.assert_array_equal(io.read_image(tmp_path / "exif_time.png"), np.rot90(rgb, -1))
    assert [str(w.message).split(";")[0] for w in said] == [
        "exif_time.png: ignored 1 PNG chunk outside the image that failed its CRC check (tIME at byte 33)",
        "exif_time.png: applied its EXIF orientation 6 (rotated 90 degrees clockwise)"]
    assert capfd.readouterr().err == ""


def test_png_metadata_never_reaches_the_decoder(tmp_path, capfd):
    """Metadata chunks whose CRCs match but whose content is malformed (a pHYs of 5 bytes, a zTXt that does not
    inflate) are not given to OpenCV, which printed libpng's "pHYs: too short" / "zTXt: ..." warnings for them, nor
    are a PLTE and a tRNS that libpng would ignore (forbidden in a grey image; a tRNS of a colour image's size): the
    image reads the same as without them, with nothing on stderr and no warning (nothing in them was damaged). So do
    an IDAT after the end of the image data's stream, beyond another chunk (libpng: "Too many IDATs found"), bytes
    after that end within an IDAT ("Extra compressed data"), and a tRNS out of the bit depth's range or after the
    image data."""
    good = _grey_png()
    (tmp_path / "ok.png").write_bytes(_png_bytes(good))
    (tmp_path / "meta.png").write_bytes(_png_bytes(good[:1] + [(b"pHYs", bytes(5)), (b"zTXt", b"k\x00\x00junk"),
                                                                (b"PLTE", bytes(6)), (b"tRNS", bytes(6))] + good[1:]))
    head, idat, end = good
    (tmp_path / "stray.png").write_bytes(_png_bytes([head, idat, (b"tEXt", b"a\x00b"), (b"IDAT", b"junk"), end]))
    (tmp_path / "trns.png").write_bytes(_png_bytes([head, (b"tRNS", struct.pack(">H", 300)), idat, end]))  # > 255
    (tmp_path / "late.png").write_bytes(_png_bytes([head, idat, (b"tRNS", struct.pack(">H", 7)), end]))  # after IDAT
    (tmp_path / "tail.png").write_bytes(_png_bytes([head, (b"IDAT", idat[1] + b"junk"), end]))  # after the stream
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("meta.png", "stray.png", "trns.png", "late.png", "tail.png"):  # libpng warned for each
            np.testing.assert_array_equal(io.read_image(tmp_path / name), io.read_image(tmp_path / "ok.png"))
    assert capfd.readouterr().err == ""
    # a palette of 256 colours in a 4-bit image (libpng trims it to 16, silently) reads as OpenCV reads it
    packed = zlib.compress(b"\x00\x01\x23" * 2)  # 4x2 pixels, 4 bits each: indices 0 1 2 3 per row
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", 4, 2, 4, 3, 0, 0, 0)), (b"PLTE", bytes(range(256)) * 3),
              (b"IDAT", packed), (b"IEND", b"")]
    (tmp_path / "palette.png").write_bytes(_png_bytes(chunks))
    np.testing.assert_array_equal(io.read_image(tmp_path / "palette.png"),
                                  cv2.imread(str(tmp_path / "palette.png"))[:, :, ::-1])
    # a palette image's tRNS of more entries than its 16 usable colours: libpng ignores it after a warning
    (tmp_path / "alpha.png").write_bytes(_png_bytes(chunks[:2] + [(b"tRNS", bytes(17))] + chunks[2:]))
    from depthkit.decode import decode_image_file

    assert decode_image_file(tmp_path / "alpha.png", "image")[0].shape == (2, 4, 3)  # no alpha channel
    assert capfd.readouterr().err == ""


def test_an_out_of_range_transparent_colour_is_cut_to_the_bit_depth_as_libpng_does(tmp_path, capfd):
    """A tRNS colour with samples beyond the bit depth (0x10d8 in an 8-bit image) is used by libpng cut to the bit
    depth (0xd8), after a warning on stderr; depthkit gives OpenCV that cut colour, so the decoded RGBA is OpenCV's
    own, alpha 0 where a pixel has that colour, and nothing is printed."""
    from depthkit.decode import decode_image_file

    rows = [bytes([0x4A, 0x9E, 0xD8, 1, 2, 3]), bytes([7, 8, 9, 0x4A, 0x9E, 0xD8])]  # 2x2 RGB
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)),
              (b"tRNS", struct.pack(">3H", 0x4A, 0x9E, 0x10D8)),
              (b"IDAT", zlib.compress(b"".join(b"\x00" + r for r in rows))), (b"IEND", b"")]
    (tmp_path / "t.png").write_bytes(_png_bytes(chunks))
    capfd.readouterr()
    got, ignored = decode_image_file(tmp_path / "t.png", "image")
    assert capfd.readouterr().err == "" and ignored == []
    want = cv2.imread(str(tmp_path / "t.png"), cv2.IMREAD_UNCHANGED)
    assert "out-of-range" in capfd.readouterr().err  # OpenCV alone prints libpng's warning
    assert got.shape == (2, 2, 4) and got[:, :, 3].tolist() == [[0, 255], [255, 0]]
    np.testing.assert_array_equal(got, want)


def _jpegs() -> dict[str, bytes]:
    """Small JPEG files of four layouts (baseline colour, progressive, with restart markers, grey)."""
    rng = np.random.default_rng(5)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (48, 64, 3)).astype(np.float32), (0, 0), 2).astype(np.uint8)
    return {"baseline": cv2.imencode(".jpg", img)[1].tobytes(),
            "progressive": cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
            "restarts": cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])[1].tobytes(),
            "grey": cv2.imencode(".jpg", img[..., 0])[1].tobytes()}


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, marker, length) of each marker segment before the first scan's data, read by the test itself."""
    out, pos = [], 2
    while True:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        out.append((pos, marker, length))
        if marker == 0xDA:
            return out
        pos += 2 + length


@pytest.mark.parametrize("layout", ["baseline", "progressive", "restarts", "grey"])
def test_a_jpeg_cut_short_is_refused_by_depthkit_alone(tmp_path, capfd, layout):
    """A JPEG cut short anywhere (in a header segment, in its compressed data, just before its EOI marker) is refused
    with depthkit's message and nothing on stderr; libjpeg printed "Premature end of JPEG file" and OpenCV returned
    the image with its missing part grey. The whole file reads as OpenCV reads it. A sequential JPEG that lacks only
    its EOI (cut 1 or 2 bytes short) decodes whole, with a warning; a progressive one is refused (the scans it lacks
    cannot be told from the EOI it lacks)."""
    data = _jpegs()[layout]
    (tmp_path / "whole.jpg").write_bytes(data)
    capfd.readouterr()
    want = cv2.imread(str(tmp_path / "whole.jpg"))[..., ::-1]
    np.testing.assert_array_equal(io.read_image(tmp_path / "whole.jpg"), want)
    assert capfd.readouterr().err == ""
    scan = _jpeg_segments(data)[-1][0]
    for cut in (3, 21, scan + 5, scan + 40, (scan + len(data)) // 2, len(data) - 2, len(data) - 1):
        (tmp_path / "cut.jpg").write_bytes(data[:cut])
        if cut >= len(data) - 2 and layout != "progressive":
            with pytest.warns(io.DepthkitWarning, match=r"cut.jpg: its EOI marker \(the two bytes that close a JPEG\) "
                                                        r"is missing; the image decoded whole without it\.$"):
                np.testing.assert_array_equal(io.read_image(tmp_path / "cut.jpg"), want)
            assert capfd.readouterr().err == ""
            continue
        with pytest.raises(ValueError) as err:
            io.read_image(tmp_path / "cut.jpg")
        assert str(err.value).startswith(f"could not decode image {tmp_path / 'cut.jpg'}: the file is a truncated or "
                                         f"damaged JPEG ({cut} bytes, "), (cut, str(err.value))
        assert "cut short" in str(err.value) and str(err.value).endswith("Copy or export it again.")
        assert capfd.readouterr().err == ""


def test_a_malformed_jpeg_is_refused_with_what_is_wrong(tmp_path, capfd):
    """A JPEG whose markers do not make one (no frame header before its scan, a segment length below 2, a byte that
    is not a marker where one must start, a marker JPEG does not define, no scan before its EOI) is refused with what
    is wrong; one whose markers are in order but which libjpeg cannot decode (a bad Huffman table) is refused as a
    damaged JPEG, not as "not an image"."""
    from depthkit.decode_jpeg import check_jpeg

    data = _jpegs()["baseline"]
    segments = _jpeg_segments(data)
    sof = next(s for s in segments if s[1] == 0xC0)
    dht = next(s for s in segments if s[1] == 0xC4)
    cases = {"no SOF": (data[:sof[0]] + data[sof[0] + 2 + sof[2]:], "comes before any frame header (SOF marker)"),
             "length 1": (data[:segments[0][0] + 2] + b"\x00\x01" + data[segments[0][0] + 4:],
                          "gives its segment a length of 1 bytes (at least 2)"),
             "not a marker": (data[:segments[1][0]] + b"\x12" + data[segments[1][0] + 1:],
                              f"byte {segments[1][0]} is 0x12 where a marker (0xFF) must start"),
             "undefined marker": (data[:segments[1][0] + 1] + b"\x8c" + data[segments[1][0] + 2:],
                                  f"bytes {segments[1][0]}-{segments[1][0] + 1} are 0xFF8C, not a JPEG marker"),
             "no scan": (data[:segments[-1][0]] + b"\xff\xd9", "no scan (SOS marker) before its EOI marker")}
    assert check_jpeg(data).problem is None
    for name, (bad, said) in cases.items():
        assert said in (check_jpeg(bad).problem or ""), (name, check_jpeg(bad))
        (tmp_path / "bad.jpg").write_bytes(bad)
        with pytest.raises(ValueError, match="the file is a truncated or damaged JPEG"):
            io.read_image(tmp_path / "bad.jpg")
        assert capfd.readouterr().err == ""
    table = dht[0] + 5  # the first DHT's table class and index byte: index 32 is not one
    (tmp_path / "table.jpg").write_bytes(data[:table] + b"\x20" + data[table + 1:])
    assert check_jpeg((tmp_path / "table.jpg").read_bytes()).problem is None
    with pytest.raises(ValueError, match=r"table.jpg: the file is a damaged JPEG \(its markers are in order, but its "
                                         r"decoder, libjpeg, could not decode what they hold\)"):
        io.read_image(tmp_path / "table.jpg")
    assert capfd.readouterr().err == ""


def test_libjpeg_s_complaints_are_said_in_depthkit_s_words(tmp_path, capfd, monkeypatch):
    """What libjpeg prints on stderr while it decodes becomes depthkit's. libjpeg prints only a decode's first
    warning, so only a warning that nothing can follow is let pass: a few stray bytes before the EOI marker (some
    cameras' padding) give a DepthkitWarning and the image as OpenCV decodes it. Refused with libjpeg's words: a scan
    whose data ends before its last block ("Corrupt JPEG data: premature end of data segment"), more stray bytes,
    and an unknown JFIF revision, also when damage follows it (which libjpeg then does not print). Nothing reaches
    stderr; other text written there meanwhile is written again, unchanged."""
    from depthkit.decode_jpeg import STRAY_BYTES_ALLOWED, decode_jpeg
    from depthkit.native_stderr import native_stderr

    data = _jpegs()["baseline"]
    scan = _jpeg_segments(data)[-1][0]
    jfif = data.index(b"JFIF\x00")
    middle = (scan + len(data)) // 2
    files = {"short_scan": (data[:middle] + b"\xff\xd9", "Corrupt JPEG data: premature end of data segment"),
             "many_stray": (data[:-2] + bytes(range(1, STRAY_BYTES_ALLOWED + 9)) + data[-2:],
                            f"Corrupt JPEG data: {STRAY_BYTES_ALLOWED + 5} extraneous bytes before marker 0xd9"),
             "jfif": (data[:jfif + 5] + b"\x03" + data[jfif + 6:], "Warning: unknown JFIF revision number 3.01"),
             "jfif_and_damage": (data[:jfif + 5] + b"\x03" + data[jfif + 6:middle] + bytes(40) + data[middle + 40:],
                                 "Warning: unknown JFIF revision number 3.01")}
    for name, (bad, said) in files.items():
        (tmp_path / f"{name}.jpg").write_bytes(bad)
        capfd.readouterr()
        with pytest.raises(ValueError) as err:
            io.read_image(tmp_path / f"{name}.jpg")
        assert str(err.value).endswith(f"{name}.jpg: the file is a damaged JPEG (its decoder, libjpeg, says {said!r}: "
                                       "the image it gives may hold garbage from there on). Copy or export it again."
                                       ), str(err.value)
        assert capfd.readouterr().err == ""
    (tmp_path / "stray.jpg").write_bytes(data[:-2] + bytes(range(1, 9)) + data[-2:])  # libjpeg counts 5 of the 8
    want = cv2.imread(str(tmp_path / "stray.jpg"))[..., ::-1]  # OpenCV alone: libjpeg's line on stderr
    capfd.readouterr()
    with pytest.warns(io.DepthkitWarning, match=r"stray.jpg: its decoder, libjpeg, skipped 5 stray bytes before the "
                                                r"JPEG's end marker \(EOI\), as some cameras pad their files"):
        got = io.read_image(tmp_path / "stray.jpg")
    assert capfd.readouterr().err == ""
    np.testing.assert_array_equal(got, want)

    with native_stderr() as lines:
        os.write(2, b"one\ntwo\n")
    assert lines == ["one", "two"] and capfd.readouterr().err == ""
    real = cv2.imdecode

    def chatty(buf, flags):
        os.write(2, b"another thread's line\n")
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", chatty)
    assert decode_jpeg(data, tmp_path / "x.jpg", "image")[0].shape == (48, 64, 3)
    assert capfd.readouterr().err == "another thread's line\n"

    def failing(buf, flags):
        os.write(2, b"said before it failed\n")
        raise cv2.error("no")

    monkeypatch.setattr(cv2, "imdecode", failing)
    with pytest.raises(cv2.error):
        decode_jpeg(data, tmp_path / "x.jpg", "image")
    assert capfd.readouterr().err == "said before it failed\n"


def test_jpeg_decodes_in_threads_and_without_a_stderr(tmp_path):
    """Decodes in several threads at once each get their own libjpeg messages (stderr is taken aside one decode at a
    time), and leave stderr where it was; with stderr closed, a JPEG still reads."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)  # large enough that decodes overlap
    big = cv2.resize(rng.uniform(0, 255, (30, 40, 3)).astype(np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
    data = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    scan = _jpeg_segments(data)[-1][0]
    (tmp_path / "good.jpg").write_bytes(data)
    (tmp_path / "bad.jpg").write_bytes(data[:(scan + len(data)) // 2] + b"\xff\xd9")
    before = os.readlink("/proc/self/fd/2") if os.path.exists("/proc/self/fd/2") else None

    def read(name):
        try:
            return io.read_image(tmp_path / name).shape
        except ValueError:
            return "refused"

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(read, ["good.jpg", "bad.jpg"] * 16))
    assert got == [(480, 640, 3), "refused"] * 16
    if before is not None:
        assert os.readlink("/proc/self/fd/2") == before
    code = f"import depthkit.io as io; print(io.read_image({str(tmp_path / 'good.jpg')!r}).shape)"
    run = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: os.close(2))  # the child starts with no stderr
    assert (run.returncode, run.stdout.strip()) == (0, "(480, 640, 3)")


def test_a_tiff_s_decoder_messages_are_depthkit_s_words(tmp_path, capfd):
    """A TIFF cut short is refused with what its decoder (libtiff, through OpenCV's logger) said, and nothing on
    stderr or in Python's warnings (OpenCV printed "[ERROR:0@...] global grfmt_tiff.cpp:117 TIFF_Error ...", Pillow
    warned "Corrupt EXIF data" while the orientation was read); a whole TIFF reads silently. A logger message's
    continuation lines ("> ...") are part of it; other lines are written to stderr again."""
    from depthkit.decode import _decoder_notes

    img = np.random.default_rng(6).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "t.tif"), img, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    data = (tmp_path / "t.tif").read_bytes()
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as warned:  # recorded: an "error" filter would be caught as the failure
        warnings.simplefilter("always")                      # of the metadata read it comes from
        np.testing.assert_array_equal(io.read_image(tmp_path / "t.tif"), img[..., ::-1])
        for cut in (100, len(data) // 2, len(data) - 10):
            (tmp_path / "cut.tif").write_bytes(data[:cut])
            with pytest.raises(ValueError, match=r"cut.tif: the file is empty, truncated or not an image \(its decoder "
                                                 r"says 'TIFF_Error TIFF\w+: .*'\)\. Copy or export it again\.$"):
                io.read_image(tmp_path / "cut.tif")
    assert capfd.readouterr().err == "" and [str(w.message) for w in warned] == []
    said = ["[ERROR:0@0.033] global loadsave.cpp:612 imread_ can't read data", "> Internal imread issue:",
            ">     'ptr' must be 'true'", "", "[ WARN:0@1.5] global grfmt_tiff.cpp:120 TIFF_Warning tag 42016",
            "another thread's line"]
    with pytest.raises(ValueError, match=r"says \"imread_ can't read data Internal imread issue: 'ptr' must be "
                                         r"'true'\"; 'TIFF_Warning tag 42016'\)"):
        _decoder_notes(said, True, "x.tif", "image")
    assert capfd.readouterr().err == "another thread's line\n"
    assert _decoder_notes(said[4:5], False, "x.tif", "image") == [
        "its decoder says 'TIFF_Warning tag 42016'; the image was decoded."]


@pytest.mark.parametrize("interlace", [0, 1])
def test_image_data_past_the_image_is_left_out_with_a_warning(tmp_path, capfd, interlace):
    """A stream that inflates to more bytes than the header's image needs (a writer's bug: libpng warns "Too much
    image data" on stderr and decodes the image whole) is read as the same image, nothing on stderr, and a
    DepthkitWarning says how many bytes were left out, also when the stream is split over several IDAT chunks with
    a text chunk after them, for an interlaced 16-bit image and for an 8-bit grey one."""
    from depthkit.decode import check_png

    rng = np.random.default_rng(4)
    for name, (kind, depth, channels) in {"grey": (0, 8, 1), "rgb16": (2, 16, 3)}.items():
        h, w = 7, 9
        pixels = rng.integers(0, 2 ** depth, (h, w, channels), dtype=np.uint16 if depth == 16 else np.uint8)
        row = (">" if depth == 16 else "") + ("u2" if depth == 16 else "u1")
        passes = ([(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
                  if interlace else [(0, 0, 1, 1)])
        raw = b"".join(b"\x00" + pixels[y, x0::dx].astype(row).tobytes()
                       for x0, y0, dx, dy in passes for y in range(y0, h, dy) if x0 < w)
        head = [(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, kind, 0, 0, interlace))]
        text = [(b"tEXt", b"Comment\x00after the data")]
        whole = _png_bytes(head + [(b"IDAT", zlib.compress(raw))] + text + [(b"IEND", b"")])
        (tmp_path / f"{name}.png").write_bytes(whole)
        for extra in (1, 9, 5000):
            stream = zlib.compress(raw + bytes(extra))
            parts = [(b"IDAT", stream[i:i + 40]) for i in range(0, len(stream), 40)]
            (tmp_path / f"{name}_{extra}.png").write_bytes(_png_bytes(head + parts + text + [(b"IEND", b"")]))
            check = check_png((tmp_path / f"{name}_{extra}.png").read_bytes(), metadata=True)
            assert check.trimmed == extra and _png_chunks(check.data)[-2] == text[0]  # the chunks after it kept
            capfd.readouterr()
            with pytest.warns(io.DepthkitWarning, match=rf"{name}_{extra}.png: ignored {extra} bytes of image data "
                                                        r"past the end of the image its header describes"):
                got = io._decode_file(tmp_path / f"{name}_{extra}.png", "image")
            assert capfd.readouterr().err == ""
            want = cv2.imread(str(tmp_path / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got.reshape(h, w, -1)[..., ::-1], pixels)  # OpenCV's BGR: reversed
        assert check_png(whole).trimmed == 0
    assert capfd.readouterr().err == ""


def test_a_png_whose_data_inflates_far_past_its_image_is_checked_in_bounded_memory():
    """A 1x1 PNG whose image data inflates to 64 MB (a 64 KB file) is checked and repaired without holding what
    lies past the image: Python's allocations peak under 4 MB (the repair once held the whole inflated stream)."""
    import tracemalloc

    from depthkit.decode import check_png

    data = _png_bytes([(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)),
                       (b"IDAT", zlib.compress(b"\x00\x7f" + bytes(64 << 20), 9)), (b"IEND", b"")])
    assert len(data) < 100_000
    tracemalloc.start()
    try:
        check = check_png(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert check.problem is None and check.trimmed == 64 << 20 and peak < 4 << 20, (check, peak)
    assert cv2.imdecode(np.frombuffer(check.data, np.uint8), cv2.IMREAD_UNCHANGED).tolist() == [[0x7F]]


def test_an_apng_is_read_as_its_default_image(tmp_path, capfd):
    """An APNG is read as its default image (the IDAT's), as a decoder of still images shows it: whole, with a frame
    control that fails its CRC (ignored with a warning; OpenCV then read frame 1, grey 120), and when the IDAT image
    is not a frame of the animation (grey 10), which OpenCV's file reader shows but its in-memory decoder, which
    depthkit uses, gave as frame 0 (grey 20) when handed the animation's chunks."""
    from PIL import Image

    frames = [Image.fromarray(np.full((12, 16), v, np.uint8)) for v in (60, 120)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:], duration=100)
    chunks = _png_chunks((tmp_path / "anim.png").read_bytes())
    kinds = [kind for kind, _ in chunks]
    assert kinds.count(b"fcTL") == 2 and b"acTL" in kinds and kinds.index(b"fcTL") < kinds.index(b"IDAT")
    capfd.readouterr()
    (tmp_path / "bad.png").write_bytes(_png_bytes(chunks, bad_crc=kinds.index(b"fcTL")))
    at = 8 + sum(12 + len(body) for _, body in chunks[:kinds.index(b"fcTL")])
    with pytest.warns(io.DepthkitWarning, match=rf"\(fcTL at byte {at}\); the image is whole\.$"):
        assert (io.read_image(tmp_path / "bad.png") == 60).all()
    assert (io.read_image(tmp_path / "anim.png") == 60).all()
    def fctl(seq):  # a 4x2 frame control: sequence, size, offset, delay 1/10 s, no dispose or blend
        return b"fcTL", struct.pack(">IIIIIHHBB", seq, 4, 2, 0, 0, 1, 10, 0, 0)

    def grey(v):
        return zlib.compress(b"".join(b"\x00" + bytes([v]) * 12 for _ in range(2)))

    hidden = [(b"IHDR", struct.pack(">IIBBBBB", 4, 2, 8, 2, 0, 0, 0)), (b"acTL", struct.pack(">II", 2, 0)),
              (b"IDAT", grey(10)), fctl(0), (b"fdAT", struct.pack(">I", 1) + grey(20)), fctl(2),
              (b"fdAT", struct.pack(">I", 3) + grey(30)), (b"IEND", b"")]
    (tmp_path / "hidden.png").write_bytes(_png_bytes(hidden))
    whole = np.frombuffer((tmp_path / "hidden.png").read_bytes(), np.uint8)
    assert cv2.imdecode(whole, cv2.IMREAD_UNCHANGED)[0, 0, 0] == 20  # OpenCV's in-memory decoder: frame 0
    assert cv2.imread(str(tmp_path / "hidden.png"), cv2.IMREAD_UNCHANGED)[0, 0, 0] == 10  # its file reader: default
    assert (io.read_image(tmp_path / "hidden.png") == 10).all()
    assert capfd.readouterr().err == ""


def test_an_image_opencv_raises_on_is_a_value_error_naming_the_file(tmp_path):
    """OpenCV raises cv2.error (not None) for a header beyond its pixel limit; depthkit says it as a ValueError that
    names the file (a BMP whose header claims 40000x40000 pixels)."""
    cv2.imwrite(str(tmp_path / "s.bmp"), np.zeros((4, 4, 3), np.uint8))
    data = bytearray((tmp_path / "s.bmp").read_bytes())
    data[18:26] = struct.pack("<ii", 40000, 40000)  # BITMAPINFOHEADER width, height
    (tmp_path / "big.bmp").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"could not decode image {tmp_path / 'big.bmp'}: OpenCV refused it \(.*"
                                         r"CV_IO_MAX_IMAGE_PIXELS.*\)\. Its pixels are more than OpenCV decodes: set "
                                         r"the environment variable OPENCV_IO_MAX_IMAGE_PIXELS above its width x "
                                         r"height to decode it\.$"):
        io.read_image(tmp_path / "big.bmp")


def test_an_interlaced_png_is_sized_pass_by_pass(tmp_path, capfd):
    """An Adam7 (interlaced) 8-bit grey 5x3 image holds 22 bytes of image data, counted by hand pass by pass (scan
    lines of 1 + width bytes: 2 + 2 + 0 + 2 + 4 + 2x3 + 6), not the 18 of three 6-byte rows: 22 read silently,
    21 are refused saying so."""
    ihdr = (b"IHDR", struct.pack(">IIBBBBB", 5, 3, 8, 0, 0, 0, 1))
    (tmp_path / "ok.png").write_bytes(_png_bytes([ihdr, (b"IDAT", zlib.compress(bytes(22))), (b"IEND", b"")]))
    (tmp_path / "short.png").write_bytes(_png_bytes([ihdr, (b"IDAT", zlib.compress(bytes(21))), (b"IEND", b"")]))
    capfd.readouterr()
    assert (io.read_image(tmp_path / "ok.png") == 0).all() and io.read_image(tmp_path / "ok.png").shape == (3, 5, 3)
    with pytest.raises(ValueError, match="its image data holds 21 bytes where its header's size needs 22"):
        io.read_image(tmp_path / "short.png")
    assert capfd.readouterr().err == ""


def _zlib_window(stream: bytes, window: int) -> bytes:
    """A zlib stream whose header claims a ``window``-byte window (256-32768), its check bits remade."""
    cmf = ((window.bit_length() - 9) << 4) | 8
    flg = stream[1] & 0xE0
    return bytes([cmf, flg | (31 - ((cmf << 8 | flg) % 31)) % 31]) + stream[2:]


def test_opencv_s_pixel_limit_is_read_as_opencv_reads_it(monkeypatch):
    """OPENCV_IO_MAX_IMAGE_PIXELS is a count or has a K/KB, M/MB or G/GB suffix (powers of 1024); unset or
    unreadable, 2^30 (a value with a suffix made every PNG fail in int())."""
    from depthkit.decode import _pixel_limit

    for text, want in (("", 1 << 30), ("5000", 5000), ("2048MB", 2048 << 20), ("3G", 3 << 30), ("x", 1 << 30)):
        monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", text)
        assert _pixel_limit() == want, text


def _grey_png(h: int = 10, w: int = 20, rows: int | None = None, depth: int = 8, colour: int = 0,
              filters: dict | None = None) -> list[tuple[bytes, bytes]]:
    """Chunks of an 8-bit grey h x w PNG built by the test (IHDR, one IDAT of ``rows`` scan lines, IEND); ``filters``
    sets the filter byte of given scan lines."""
    raw = b"".join(bytes([(filters or {}).get(r, 0)]) + bytes(range(r, r + w)) for r in range(h if rows is None
                                                                                             else rows))
    return [(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)), (b"IDAT", zlib.compress(raw)),
            (b"IEND", b"")]


@pytest.mark.parametrize("case, said", [
    ("bit depth 3", "its header gives bit depth 3 for colour type 0, which PNG does not define"),
    ("interlace 2", "its header gives compression 0, filter 0 and interlace 2 methods"),
    ("too large", "it is 40000x40000 pixels, more than OpenCV decodes"),
    ("too wide", "it is 1000001x1 pixels, wider or taller than libpng decodes (1,000,000 pixels)"),
    ("window too small", "its image data does not inflate: zlib finds an invalid distance too far back"),
    ("preset dictionary", "its image data's zlib stream asks for a preset dictionary (IDAT chunk at byte 33), which "
                          "PNG does not allow"),
    ("unknown critical", "its ABCD chunk at byte 33 is a critical chunk no PNG decoder knows"),
    ("not letters", "the chunk at byte 33 has type 'a1b2', not four letters"),
    ("second IHDR", "it has a second IHDR chunk, at byte 33"),
    ("IDAT split", "its IDAT chunks are not consecutive"),
    ("palette without PLTE", "it is a palette image without the PLTE chunk that holds its palette"),
    ("second PLTE", "it has a second PLTE chunk, at byte 813"),
    ("PLTE of 7 bytes", "its PLTE chunk holds 7 bytes, not 1-256 three-byte colours"),
    ("bad filter", "scan line 3 of its image data starts with filter type 7; PNG defines 0-4"),
    ("too few rows", "its image data holds 168 bytes where its header's size needs 210"),
])
def test_a_malformed_png_is_refused_with_what_is_wrong(tmp_path, capfd, case, said):
    """Malformed PNGs whose CRCs all match (a writer's bug or a crafted file) are refused with depthkit's message
    saying what is wrong, and nothing on stderr; OpenCV printed a libpng error for each (or raised cv2.error for a
    size it will not decode)."""
    good = _grey_png()
    head, idat, end = good
    chunks = {"bit depth 3": [(b"IHDR", head[1][:8] + bytes([3]) + head[1][9:])] + good[1:],
              "interlace 2": [(b"IHDR", head[1][:12] + bytes([2]))] + good[1:],
              "too large": [(b"IHDR", struct.pack(">II", 40000, 40000) + head[1][8:])] + good[1:],
              "too wide": [(b"IHDR", struct.pack(">II", 1000001, 1) + head[1][8:])] + good[1:],
              "window too small": [(b"IHDR", struct.pack(">IIBBBBB", 600, 4, 8, 0, 0, 0, 0)),
                                   (b"IDAT", _zlib_window(zlib.compress((b"\x00" + bytes(range(200)) * 3) * 4, 9),
                                                          256)),
                                   end],  # each row repeats the one before, 601 bytes back
              "preset dictionary": [head, (b"IDAT", bytes([0x78, 0xBB]) + bytes(4) + idat[1][2:]), end],
              "unknown critical": [head, (b"ABCD", b"x"), idat, end],
              "not letters": [head, (b"a1b2", b"x"), idat, end],
              "second IHDR": [head, head, idat, end],
              "IDAT split": [head, (b"IDAT", idat[1][:9]), (b"tEXt", b"a\x00b"), (b"IDAT", idat[1][9:]), end],
              "palette without PLTE": _grey_png(colour=3),
              "second PLTE": _grey_png(colour=3)[:1] + [(b"PLTE", bytes(768))] * 2 + _grey_png(colour=3)[1:],
              "PLTE of 7 bytes": [_grey_png(colour=3)[0], (b"PLTE", bytes(7))] + _grey_png(colour=3)[1:],
              "bad filter": _grey_png(filters={3: 7}),
              "too few rows": _grey_png(rows=8)}[case]
    (tmp_path / "x.png").write_bytes(_png_bytes(chunks))
    (tmp_path / "ok.png").write_bytes(_png_bytes(good))
    capfd.readouterr()
    with pytest.raises(ValueError) as err:
        io.read_image(tmp_path / "x.png")
    assert str(err.value).startswith(f"could not decode image {tmp_path / 'x.png'}: the file is a truncated or "
                                     f"damaged PNG ({said}"), str(err.value)
    assert capfd.readouterr().err == ""
    assert io.read_image(tmp_path / "ok.png")[:, :, 0].tolist() == [list(range(r, r + 20)) for r in range(10)]


def test_depth_png16_roundtrip_is_exact_at_scale(tmp_path):
    depth = np.array([[0.0, 1.234], [65.535, 0.001]], np.float32)
    io.write_depth_png16(tmp_path / "d.png", depth, scale=1000)
    raw = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.tolist() == [[0, 1234], [65535, 1]]
    back = io.read_depth(tmp_path / "d.png", depth_scale=1000)
    np.testing.assert_allclose(back, depth, atol=1e-6)


def test_depth_png16_records_every_digit_of_its_scale(tmp_path):
    """The scale the pixels were quantised with is the one recorded: 1236.123456 written as "1236.12" (six digits)
    read back 0.52 mm off, beyond the half unit (0.40 mm) the file promises; a round scale stays "1000"."""
    from PIL import Image

    depth = np.array([[1.0, 53.0]], np.float32)
    for scale, text in ((1236.123456, "1236.123456"), (1000, "1000"), (10 / 3, repr(10 / 3))):
        io.write_depth_png16(tmp_path / "d.png", depth, scale=scale)
        assert Image.open(tmp_path / "d.png").text["depth_scale"] == text
        assert np.abs(io.read_depth(tmp_path / "d.png") - depth).max() <= 0.5 / scale + 1e-6


def test_depth_png16_refuses_overflow_and_png_needs_scale(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        io.write_depth_png16(tmp_path / "d.png", np.full((2, 2), 70.0), scale=1000)
    io.write_depth_png16(tmp_path / "k.png", np.full((2, 2), 70.0), scale=256)
    np.testing.assert_allclose(io.read_depth(tmp_path / "k.png", depth_scale=256), 70.0, atol=1 / 256)
    # a PNG depthkit wrote records its scale; a foreign one does not and needs one
    np.testing.assert_allclose(io.read_depth(tmp_path / "k.png"), 70.0, atol=1 / 256)
    cv2.imwrite(str(tmp_path / "foreign.png"), np.full((2, 2), 7000, np.uint16))
    with pytest.raises(ValueError, match="no depth scale was given"):
        io.read_depth(tmp_path / "foreign.png")


def test_npy_roundtrip_and_shape_errors(tmp_path):
    depth = np.random.default_rng(0).uniform(0, 5, (5, 6)).astype(np.float32)
    io.write_depth_npy(tmp_path / "d.npy", depth)
    np.testing.assert_array_equal(io.read_depth(tmp_path / "d.npy"), depth)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="expected HxW"):
        io.read_depth(tmp_path / "bad.npy")
    (tmp_path / "trunc.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"could not read .*; expected an HxW numeric array"):
        io.read_depth(tmp_path / "trunc.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (tmp_path / "pickled.npy").write_bytes(__import__("pickle").dumps({"depth": 1}))
    for name in ("objects.npy", "pickled.npy"):
        with pytest.raises(ValueError, match="holds Python objects .* Save the depth as an HxW numeric array"):
            io.read_depth(tmp_path / name)
    (tmp_path / "text.npy").write_text("0 0 1.5\n")  # not a .npy file at all: said so, not called a pickle
    with pytest.raises(ValueError, match=r"text.npy: it is not a .npy file \(it starts with b'0 0 1\.'"):
        io.read_depth(tmp_path / "text.npy")
    (tmp_path / "cut.npy").write_bytes(b"\x93NUM")  # cut inside the signature (numpy: "a pickle")
    with pytest.raises(ValueError, match=r"cut.npy: it is cut short \(4 bytes, inside the .npy signature\)"):
        io.read_depth(tmp_path / "cut.npy")


def test_colorize_has_legend_and_black_missing():
    depth = np.tile(np.linspace(1, 5, 64, dtype=np.float32), (48, 1))
    depth[0, 0] = 0
    rgb = io.colorize(depth)
    assert rgb.dtype == np.uint8 and rgb.shape[0] == 48 and rgb.shape[1] > 64
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert not np.array_equal(rgb[10, 1], rgb[10, 62])  # near and far get different colours
    assert io.colorize(depth, legend=False).shape == (48, 64, 3)


@pytest.mark.parametrize("kind", ["string", "json", "jsonK", "txt4", "txt9"])
def test_parse_intrinsics_forms(tmp_path, kind):
    expected = Intrinsics(500.0, 510.0, 320.0, 240.0)
    k = [[500, 0, 320], [0, 510, 240], [0, 0, 1]]
    if kind == "string":
        spec = "500,510,320,240"
    elif kind == "json":
        spec = tmp_path / "k.json"
        spec.write_text(json.dumps({"fx": 500, "fy": 510, "cx": 320, "cy": 240}))
    elif kind == "jsonK":
        spec = tmp_path / "k.json"
        spec.write_text(json.dumps({"K": k}))
    elif kind == "txt4":
        spec = tmp_path / "k.txt"
        spec.write_text("500 510 320 240\n")
    else:
        spec = tmp_path / "k.txt"
        spec.write_text("\n".join(" ".join(str(v) for v in row) for row in k))
    assert io.parse_intrinsics(spec) == expected


def test_parse_intrinsics_errors(tmp_path):
    with pytest.raises(ValueError, match="expected 4"):
        io.parse_intrinsics("1,2,3")
    with pytest.raises(ValueError, match="could not parse"):
        io.parse_intrinsics("a,b,c,d")


def test_point_cloud_written_with_open3d(tmp_path):
    depth = np.zeros((4, 5), np.float32)
    depth[1, 2] = 2.0
    depth[3, 4] = 3.0
    image = np.full((4, 5, 3), 128, np.uint8)
    path = io.write_point_cloud(tmp_path / "p.ply", depth, "10,10,2,1", image=image)
    pts = io.read_point_cloud(path)
    np.testing.assert_allclose(pts, [[0, 0, 2], [0.6, 0.6, 3]], atol=1e-6)



@pytest.mark.parametrize("depth, image, words", [
    (np.where(np.eye(4, 5) > 0, np.inf, 1.0), None, "holds 4 NaN or inf value"),
    (np.where(np.eye(4, 5) > 0, np.nan, 1.0), None, "holds 4 NaN or inf value"),
    (np.zeros((4, 5)), None, "has no pixel > 0"),
    (np.ones((4, 5, 1)), None, r"shape \(4, 5, 1\); expected HxW"),
    (np.ones((4, 5)), np.zeros((5, 4, 3), np.uint8), "image is 5x4x3 uint8; expected 4x5x3 uint8 RGB"),
    (np.ones((4, 5)), np.full((4, 5, 3), 0.5, np.float32), "image is 4x5x3 float32; expected 4x5x3 uint8"),
    (np.ones((4, 5)), np.zeros((4, 5), np.uint8), "image is 4x5 uint8; expected"),
])
def test_point_cloud_refuses_what_would_be_garbage(tmp_path, depth, image, words):
    """Points at infinity, an empty cloud, and colours from an image of another size (an IndexError before) or a
    float image (silently near-black before) are refused saying what was received; nothing is written."""
    with pytest.raises(ValueError, match=words):
        io.write_point_cloud(tmp_path / "p.ply", depth.astype(np.float32), "10,10,2,1", image=image)
    assert not (tmp_path / "p.ply").exists()


def test_integer_npy_needs_and_uses_depth_scale(tmp_path):
    mm = np.array([[0, 1500], [2250, 0]], np.uint16)
    np.save(tmp_path / "mm.npy", mm)
    with pytest.raises(ValueError, match="--depth-scale"):
        io.read_depth(tmp_path / "mm.npy")
    np.testing.assert_allclose(io.read_depth(tmp_path / "mm.npy", depth_scale=1000), mm / 1000, atol=1e-6)


def test_integer_depth_at_a_scale_that_gives_no_scene_warns_like_float_depth():
    import warnings

    mm = np.array([[0, 1500], [2250, 5000]], np.uint16)  # a median of 2250 mm
    with pytest.warns(io.UnitWarning, match=r"at depth scale 1 units per metre has median 2250 m, far beyond any "
                                            r"scene"):
        io.depth_to_metres(mm, 1)
    with pytest.warns(io.UnitWarning, match=r"median 2250000 m.* if 0\.001 is metres per unit \(as RealSense reports "
                                            r"it\), pass 1000\."):
        io.depth_to_metres(mm, 0.001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(io.depth_to_metres(mm, 1000), mm / 1000, atol=1e-6)
        io.depth_to_metres(np.array([[0, 90 * 256]], np.uint16), 256)  # 90 m: a far LiDAR return, not a unit slip


@pytest.mark.parametrize("scale, words", [(1e-300, "1.5e+303-2.25e+303 m, which float32 metres cannot hold"),
                                          (1e300, "1.5e-297-2.25e-297 m, which float32 metres cannot hold"),
                                          ("1000", "received '1000' (str)"), (True, "received True (bool)"),
                                          (None, "no depth scale was given")])
def test_a_depth_scale_that_cannot_give_metres_is_refused_naming_it(tmp_path, scale, words):
    """Not 'NaN/inf values' or 'no measured pixel' later: the scale turned sensor units into what float32 metres
    cannot hold (or is not a number at all), and the message says so."""
    mm = np.array([[0, 1500], [2250, 0]], np.uint16)
    with pytest.raises(ValueError) as err:
        io.depth_to_metres(mm, scale)
    assert words in str(err.value)


def test_a_depth_scale_other_than_the_pngs_own_is_used_and_said(tmp_path):
    import warnings

    depth = np.array([[0.0, 2.5], [4.0, 1.0]], np.float32)
    io.write_depth_png16(tmp_path / "d.png", depth, scale=1000)
    with pytest.warns(io.UnitWarning, match=r"records depth_scale 1000 .* 256 was given and is used \(depth 3.90625 "):
        got = io.read_depth(tmp_path / "d.png", depth_scale=256)
    np.testing.assert_allclose(got, depth * 1000 / 256, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(io.read_depth(tmp_path / "d.png", depth_scale=1000), depth, atol=1e-6)


def test_huge_float_depth_warns_about_units_without_a_numpy_overflow():
    import warnings

    a = np.zeros((4, 4), np.float32)
    a[0, 0] = a[1, 1] = 3e38  # their float32 mean overflows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        io.depth_to_metres(a)
    assert [type(w.message) for w in caught] == [io.UnitWarning] and "median 3" in str(caught[0].message)


def test_float_depth_in_another_unit_warns(tmp_path):
    np.save(tmp_path / "f.npy", np.full((3, 3), 2500.0, np.float32))
    with pytest.warns(io.DepthkitWarning, match="millimetres"):
        io.read_depth(tmp_path / "f.npy")


def test_png_scale_chosen_to_fit_and_recorded(tmp_path):
    depth = np.array([[0.0, 1.5], [80.0, 30.0]], np.float32)  # outdoor: beyond 65.5 m
    assert io.choose_png_scale(depth) == 256 and io.choose_png_scale(depth[:1]) == 1000
    with pytest.raises(ValueError, match="does not fit"):
        io.choose_png_scale(depth, 1000)
    io.write_depth_png16(tmp_path / "d.png", depth, scale=None)
    assert io.png_depth_scale(tmp_path / "d.png") == 256
    np.testing.assert_allclose(io.read_depth(tmp_path / "d.png"), depth, atol=1 / 512)


def test_resize_sparse_keeps_points_single_pixels():
    sparse = np.zeros((4, 6), np.float32)
    sparse[1, 2], sparse[3, 5] = 2.0, 5.0
    up = io.resize_sparse(sparse, (8, 12))
    assert (up > 0).sum() == 2 and up[3, 5] == 2.0 and up[7, 11] == 5.0
    with pytest.warns(io.DepthkitWarning, match="2 of 2 measured points .* merged .* leaving 1 point[.]"):
        down = io.resize_sparse(np.array([[3.0, 1.0], [0.0, 0.0]], np.float32), (1, 1))
    assert down.tolist() == [[1.0]]  # collision: nearest wins


@pytest.mark.parametrize("shape", [(0, 32), (-24, 32), (24.5, 32), (24,), 24, "24x32", (True, 4), (np.nan, 4)])
def test_resize_sparse_refuses_a_size_that_is_no_pixel_size(shape):
    """A size of 0 was a ZeroDivisionError, a negative one 'math domain error', one number a TypeError / IndexError,
    a fraction was truncated and the string "24x32" scattered the map to 2x4 (its characters '2' and '4') without a
    word."""
    sparse = np.zeros((48, 64), np.float32)
    sparse[5, 7] = 2.0
    with pytest.raises(ValueError, match=r"must be \(height, width\) in whole pixels >= 1 .*; received "):
        io.resize_sparse(sparse, shape)


def test_resize_sparse_takes_what_the_pipeline_takes():
    """An HxWx1 map, a masked array (masked pixels missing, whatever lies under the mask) and an image's shape, as
    Pipeline's check_sparse takes them; an empty map is a ValueError, not a ZeroDivisionError."""
    sparse = np.zeros((4, 6), np.float32)
    sparse[1, 2] = 2.0
    want = io.resize_sparse(sparse, (8, 12))
    np.testing.assert_array_equal(io.resize_sparse(sparse[..., None], (8, 12)), want)
    np.testing.assert_array_equal(io.resize_sparse(sparse, np.zeros((8, 12, 3), np.uint8).shape), want)
    masked = np.ma.masked_array(np.where(sparse > 0, sparse, 9.0), mask=sparse == 0)
    np.testing.assert_array_equal(io.resize_sparse(masked, (8, 12)), want)
    with pytest.raises(ValueError, match=r"has shape \(0, 0\); expected HxW metres \(0 = missing\), at least 1x1"):
        io.resize_sparse(np.zeros((0, 0), np.float32), (8, 12))


def test_a_pixel_centre_lands_where_exact_arithmetic_puts_it():
    """The one pixel-centre map (sparse scattering and the completer's prompt coordinates both use it) equals
    floor((r + 0.5) * H'/H) computed with exact fractions, including centres that land exactly on a pixel border,
    where floating point put them one pixel early (7 -> 122 rows: row 3's centre 3.5 * 122/7 = 61 gave 60)."""
    from fractions import Fraction

    from depthkit.complete.processor import map_to_resized as from_processor
    from depthkit.sparse_resize import map_to_resized

    assert from_processor is map_to_resized
    for (h, w), (h2, w2) in (((7, 11), (122, 30)), ((13, 10), (120, 164)), ((240, 320), (168, 252)), ((5, 5), (2, 3))):
        rows, cols = np.arange(h).repeat(w), np.tile(np.arange(w), h)
        want_r = [min(int((Fraction(2 * r + 1, 2) * Fraction(h2, h)).__floor__()), h2 - 1) for r in rows]
        want_c = [min(int((Fraction(2 * c + 1, 2) * Fraction(w2, w)).__floor__()), w2 - 1) for c in cols]
        got_r, got_c = map_to_resized(rows, cols, (h, w), (h2, w2))
        assert got_r.tolist() == want_r and got_c.tolist() == want_c and got_r.dtype == np.int64
    assert [a.tolist() for a in map_to_resized(np.array([3.0]), [5], (7, 11), (122, 30))] == [[61], [15]]
    with pytest.raises(ValueError, match=r"rows must be whole pixel indices; received float64 values such as 2\.7"):
        map_to_resized([2.7], [0], (10, 10), (20, 20))  # never truncated silently
    sparse = np.zeros((7, 11), np.float32)
    sparse[3, 5] = 2.5
    with pytest.warns(io.DepthkitWarning, match="aspect"):
        moved = io.resize_sparse(sparse, (122, 30))
    assert np.flatnonzero(moved).tolist() == [61 * 30 + 15]  # row 3.5 * 122/7 = 61, column 5.5 * 30/11 = 15


def test_resize_sparse_says_merged_points_and_aspect_unless_a_working_size():
    """Every point of a pixel shared with others counts as merged (three on one pixel: 3 of 4); the nearest is kept
    whatever the points' order; a caller that downsamples on purpose (the complete stage's working size) passes
    working_size=True and gets the same map silently."""
    import warnings

    sparse = np.zeros((4, 4), np.float32)
    sparse[0, 0], sparse[0, 1], sparse[1, 0], sparse[0, 3] = 2.0, 0.5, 7.0, 4.0
    with pytest.warns(io.DepthkitWarning, match=r"4x4 and is scattered to 1x1: 4 of 4 measured points .*leaving 1 "):
        assert io.resize_sparse(sparse, (1, 1)).tolist() == [[0.5]]
    with pytest.warns(io.DepthkitWarning, match=r"3 of 4 measured points .* \(kept: the nearest depth"):
        two = io.resize_sparse(sparse, (2, 2))  # (0, 0), (0, 1), (1, 0) -> (0, 0); (0, 3) -> (0, 1) alone
    assert two.tolist() == [[0.5, 4.0], [0.0, 0.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(io.resize_sparse(sparse, (2, 2), working_size=True), two)
        # a working size whose aspect rounding moved (17x1000 -> 5x320): the inputs match, so nothing to say
        assert io.resize_sparse(sparse, (2, 5), working_size=True).tolist() == [[2.0, 0.5, 0, 0, 4.0], [0] * 5]
    with pytest.warns(io.DepthkitWarning) as said:  # the same call from a user's inputs: both said
        io.resize_sparse(sparse, (2, 5))
    assert "aspect 1.000) and is scattered to 2x5 (aspect 2.500" in str(said[0].message)
    assert "2 of 4 measured points" in str(said[1].message) and len(said) == 2


def test_exif_orientation_is_applied_and_reported(tmp_path):
    from PIL import Image

    img = np.zeros((4, 6, 3), np.uint8)
    img[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    Image.fromarray(img).save(tmp_path / "p.png", exif=exif)
    with pytest.warns(io.DepthkitWarning, match="EXIF orientation 6"):
        upright = io.read_image(tmp_path / "p.png")
    assert upright.shape == (6, 4, 3) and upright[0, -1].min() == 255  # top-left went to top-right


def test_a_pil_image_of_a_sideways_photo_is_read_upright_as_its_file_is(tmp_path):
    """Pipeline(...)(Image.open(path), sparse) sees the pixels Pipeline(...)(path, sparse) sees: the EXIF orientation
    is applied (and said) for a PIL image too; one already turned with exif_transpose is taken as it is, silently."""
    import warnings

    from PIL import Image, ImageOps

    from depthkit.pipeline import check_image

    img = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    for tag in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = tag
        Image.fromarray(img).save(tmp_path / "p.png", exif=exif)
        with pytest.warns(io.DepthkitWarning, match=f"the PIL image: applied its EXIF orientation {tag}"):
            from_pil = check_image(Image.open(tmp_path / "p.png"))
        np.testing.assert_array_equal(from_pil, np.rot90(img, {3: 2, 6: -1, 8: 1}[tag]))  # as viewers show it
        with pytest.warns(io.DepthkitWarning, match=f"p.png: applied its EXIF orientation {tag}"):
            np.testing.assert_array_equal(check_image(tmp_path / "p.png"), from_pil)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(check_image(ImageOps.exif_transpose(Image.open(tmp_path / "p.png"))),
                                          from_pil)


@pytest.mark.parametrize("chunk", ["0", "nan", "-1000", "inf"])
def test_a_depth_png_recording_no_scale_is_refused_naming_the_file_and_chunk(tmp_path, chunk):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("depth_scale", chunk)
    Image.fromarray(np.array([[0, 1500], [2250, 0]], np.uint16)).save(tmp_path / "d.png", pnginfo=info)
    with pytest.raises(ValueError, match=rf"depth PNG .*d\.png records depth_scale {re.escape(chunk)} in its text "
                                         r"chunk, which is no scale .* --depth-scale"):
        io.read_depth(tmp_path / "d.png")
    with warnings.catch_warnings():  # no "records depth_scale 0, but 1000 was given": a given scale is just used
        warnings.simplefilter("error")
        got = io.read_depth(tmp_path / "d.png", depth_scale=1000)
    np.testing.assert_allclose(got, [[0, 1.5], [2.25, 0]], atol=1e-6)


def test_resize_sparse_takes_the_depth_scale_its_integer_error_asks_for():
    mm = np.zeros((4, 6), np.uint16)
    mm[1, 2] = 1500
    with pytest.raises(ValueError, match="depth_scale=... in Python"):
        io.resize_sparse(mm, (8, 12))
    out = io.resize_sparse(mm, (8, 12), depth_scale=1000)
    assert out.shape == (8, 12) and out[out > 0].tolist() == [1.5]


def test_legend_marks_clipping_and_scales_with_height():
    assert io.legend_labels(1, 2, 2, clipped_low=True, clipped_high=True) == ["<= 1.00 m", ">= 2.00 m"]
    assert io.legend_labels(0.5, 80, 5) == ["0.50 m", "20.38 m", "40.25 m", "60.12 m", "80.00 m"]
    # a millimetre-scale scene: ticks that differ must read differently, not all "0.00 m"
    assert io.legend_labels(0.0018, 0.0052, 5) == ["0.0018 m", "0.0027 m", "0.0035 m", "0.0043 m", "0.0052 m"]
    assert io.legend_labels(3, 3, 3) == ["3.00 m"] * 3
    assert io.legend_labels(0, float("inf"), 3)[-1] == "inf m"  # an unbounded end: labelled, no OverflowError
    depth = np.linspace(0.5, 80, 1080 * 64, dtype=np.float32).reshape(1080, 64)
    small = io.colorize(depth[:120]).shape[1] - 64
    assert io.colorize(depth).shape[1] - 64 > 2 * small  # 1080p legend text is larger, not a fixed 72 px


def test_preload_libusb_lets_open3d_import():
    import subprocess
    import sys

    code = "import depthkit.io as i; i.preload_libusb(); import open3d; print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "ok", res.stderr[-2000:]


def test_a_depth_scale_given_with_float_depth_is_not_applied_and_said(tmp_path):
    """One scale serves every input of a call (an integer sparse PNG and a float depth map), so float depth is read
    as metres whatever the scale, and a warning says the scale was not applied to it; integer input is scaled."""
    np.save(tmp_path / "cm.npy", np.full((3, 3), 2.5, np.float32))
    with pytest.warns(io.UnitWarning, match=r"cm.npy holds floats, read as metres: the depth scale 100 .* not applied"):
        assert io.read_depth(tmp_path / "cm.npy", depth_scale=100).max() == np.float32(2.5)
    with pytest.warns(io.UnitWarning) as said:  # floats with a scale: not applied, and their size said
        io.depth_to_metres(np.full((3, 3), 2500.0, np.float32), 1000)
    assert [("not applied" in str(w.message), "looks like millimetres" in str(w.message)) for w in said] == [
        (True, False), (False, True)], [str(w.message) for w in said]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # integer input with its scale, and float input without one: no warning
        assert io.depth_to_metres(np.full((3, 3), 2500, np.uint16), 1000).max() == np.float32(2.5)
        io.depth_to_metres(np.full((3, 3), 2.5, np.float32))


def test_resize_sparse_across_aspect_ratios_is_said():
    import warnings

    sparse = np.zeros((60, 120), np.float32)
    sparse[10, 20] = 2.0
    with pytest.warns(io.DepthkitWarning, match=r"60x120 \(aspect 2.000\) and is scattered to 60x80 \(aspect 1.333\)"):
        io.resize_sparse(sparse, (60, 80))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        io.resize_sparse(sparse, (120, 240))  # same aspect: silent



def test_resize_sparse_refuses_a_map_turned_sideways_against_the_image():
    """A 48x64 map to a 64x48 image (a photo read upright by its EXIF tag, the map as stored): no resizing gives that,
    so it is refused, not scattered stretched one way and squeezed the other. A real resize to another aspect still
    only warns, and a model's working size is not checked."""
    sparse = np.zeros((48, 64), np.float32)
    sparse[10, 20] = 2.0
    with pytest.raises(ValueError, match=r"48x64 \(HxW, aspect 1.333\) and is to be scattered to 64x48 .*EXIF"):
        io.resize_sparse(sparse, (64, 48))
    with pytest.raises(ValueError, match="turned sideways"):
        io.resize_sparse(sparse, (128, 96, 3))  # sideways and twice the size
    with pytest.warns(io.DepthkitWarning, match="aspect"):
        io.resize_sparse(sparse, (64, 60))
    assert io.resize_sparse(sparse, (64, 48), working_size=True).shape == (64, 48)


def test_resize_sparse_refuses_what_check_sparse_refuses():
    from depthkit.pipeline import check_sparse

    for bad, words in ((np.nan, "NaN/inf"), (-2.0, "negative")):
        small = np.zeros((4, 6), np.float32)
        small[1, 2], small[2, 3] = 2.0, bad
        with pytest.raises(ValueError) as same_size:
            check_sparse(small, small.shape)
        with pytest.raises(ValueError) as resized:
            io.resize_sparse(small, (8, 12))
        assert str(resized.value) == str(same_size.value) and words in str(resized.value)


@pytest.mark.parametrize("content, words", [
    ('{"fx": null, "fy": 50, "cx": 32, "cy": 24}', "key 'fx' is null"),
    ('{"fx": [50], "fy": 50, "cx": 32, "cy": 24}', "key 'fx' is [50]"),
    ('{"fx": 50, "fy": "abc", "cx": 32, "cy": 24}', "key 'fy' is \"abc\""),
    ('{"fx": true, "fy": 50, "cx": 32, "cy": 24}', "key 'fx' is true"),
    ('{"K": "abc"}', "key 'K' is \"abc\""),
    ('{"K": [[50, 0, 32], [0, null, 24], [0, 0, 1]]}', "key 'K'[1][1] is null"),
    ('{"fx": NaN, "fy": 50, "cx": 32, "cy": 24}', "must be finite"),
    ('{"K": [[50, 0, 0], [0, 50, 0], [32, 24, 1]]}', "It looks transposed"),
    ('{"K": [[50, 0, 32], [0, 50, 24], [1, 2, 3]]}', "is not a pinhole matrix"),
    ('{"K": [[50, 0, 32], [0, 50, 24], [0, 0, 2]]}', "is not a pinhole matrix"),
    ('{"K": [[50, 3, 32], [0, 50, 24], [0, 0, 1]]}', "skew not supported"),
    ('{"K": [[277, 277], [159.5, 119.5]]}', "(shape (2, 2)); expected a 3x3 matrix"),
    ('{"K": [277, 277, 159.5, 119.5]}', "(shape (4,)); expected a 3x3 matrix"),
    ('{"fx": 50, "fy": 50, "cx": 32}', "has keys ['cx', 'fx', 'fy']: missing cy"),
    ('[50, 50, 32, 24]', "holds a list, not an object"),
])
def test_intrinsics_json_with_bad_values_names_file_and_key(tmp_path, content, words):
    path = tmp_path / "cam.json"
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        io.parse_intrinsics(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_intrinsics_file_not_utf8_and_python_sequences(tmp_path):
    path = tmp_path / "cam.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"cam.json is not UTF-8 text"):
        io.parse_intrinsics(path)
    with pytest.raises(ValueError, match=r"intrinsics\[0\] is null"):
        io.parse_intrinsics([None, 50, 32, 24])
    assert io.parse_intrinsics(np.array([50, 51, 32, 24])) == Intrinsics(50.0, 51.0, 32.0, 24.0)




def test_intrinsics_json_with_keys_and_k_that_disagree_is_refused(tmp_path):
    """fx, fy, cx, cy keys and a 'K' in one file: the same camera is read; different ones are refused (neither is
    silently dropped)."""
    keys = {"fx": 60.0, "fy": 61.0, "cx": 47.5, "cy": 31.5}
    same = [[60.0, 0, 47.5], [0, 61.0, 31.5], [0, 0, 1]]
    (tmp_path / "same.json").write_text(json.dumps({**keys, "K": same}))
    assert io.parse_intrinsics(tmp_path / "same.json") == io.parse_intrinsics("60,61,47.5,31.5")
    other = [[120.0, 0, 95.5], [0, 122.0, 63.5], [0, 0, 1]]  # the same camera at twice the size
    (tmp_path / "both.json").write_text(json.dumps({**keys, "K": other}))
    with pytest.raises(ValueError, match=r"both.json has keys fx, fy, cx, cy = 60, 61, 47.5, 31.5 and a 'K' whose "
                                         r"fx, fy, cx, cy are 120, 122, 95.5, 63.5: they disagree"):
        io.parse_intrinsics(tmp_path / "both.json")


def test_intrinsics_files_saved_with_a_bom_are_read(tmp_path):
    """A UTF-8 byte-order mark (what Windows Notepad writes) is not part of the text: JSON, its size keys and TXT."""
    (tmp_path / "cam.json").write_bytes(b"\xef\xbb\xbf" + b'{"fx": 50, "fy": 51, "cx": 32, "cy": 24, "width": 64, '
                                        b'"height": 48}')
    (tmp_path / "cam.txt").write_bytes(b"\xef\xbb\xbf50 51 32 24\n")
    for name in ("cam.json", "cam.txt"):
        assert io.parse_intrinsics(tmp_path / name) == Intrinsics(50.0, 51.0, 32.0, 24.0)
    assert intrinsics_image_size(str(tmp_path / "cam.json")) == (48, 64)


def test_png_scale_must_be_finite_keep_valid_pixels_and_suggests_one_that_fits(tmp_path):
    depth = np.array([[0.0, 1.5], [4.0, 2.0]], np.float32)
    with pytest.raises(ValueError, match="finite number > 0"):
        io.choose_png_scale(depth, float("inf"))
    with pytest.raises(ValueError, match=r"3 of 3 valid pixel\(s\) .* round to 0.*--png-scale \(e.g. 10000, which "
                                         r"fits 0-6.5535 m\), or leave it out"):
        io.choose_png_scale(depth, 1e-9)
    assert io.choose_png_scale(depth, 1.0) == 1.0  # coarse, but every valid pixel stays non-zero
    with pytest.raises(ValueError, match=r"even at 1 unit per metre .*: 1 of 3 valid pixel\(s\) lie beyond it, and the "
                                         r"median is 3 m. Pass --png-scale 0.5 "):
        io.choose_png_scale(np.array([[2.0, 1e5, 3.0, 0.0]]))
    with pytest.raises(ValueError, match=r"e.g. 0.5 fits 0-131070 m"):
        io.choose_png_scale(np.array([[2.0, 1e5]]), 1000)
    assert io.choose_png_scale(np.array([[2.0, 1e5]]), 0.5) == 0.5
    # automatic: 1000 would store 0.4 mm as 0, so the finest scale that fits (10000 for 5 m) keeps it
    assert io.choose_png_scale(np.array([[0.0004, 5.0]])) == 10000
    io.write_depth_png16(tmp_path / "k.png", np.array([[0.0004, 5.0]]), scale=None)
    assert io.read_depth(tmp_path / "k.png")[0, 0] == pytest.approx(0.0004)
    with pytest.warns(io.DepthkitWarning, match=r"d.png: 1 valid pixel\(s\) below 0.0005 m .*no 16-bit scale holds"):
        io.write_depth_png16(tmp_path / "d.png", np.array([[1e-6, 5.0]]), scale=None)  # none keeps it: 1000, said


def test_fitting_png_scale_just_above_a_power_of_ten():
    """65535 / 65.535...01 is a hair under 1000, where log10 rounds to 3: the decade below is tried (was
    StopIteration)."""
    import math

    from depthkit.png_scale import fitting_png_scale

    for top in (65.53500000000001, 655.3500000000001, 65.535, 2.0, 1e5):
        scale = fitting_png_scale(top)
        e = math.floor(math.log10(scale) + 1e-9)
        finer = {1: 2, 2: 5, 5: 10}[round(scale / 10**e)] * 10**e  # the next round scale up
        assert top * scale <= 65535 < top * finer  # it fits, and the next finer one does not


def test_check_output_parent_and_strict_json(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt is a file, not a folder"):
        io.check_output_parent(tmp_path / "notes.txt" / "sub" / "m.json")
    io.check_output_parent(tmp_path / "new" / "sub" / "m.json")  # missing folders are fine
    text = json.dumps(io.strict_json({"a": [float("nan"), 1.0], "b": float("inf")}), allow_nan=False)
    assert json.loads(text) == {"a": [None, 1.0], "b": None}
    # numpy values (a benchmark's timings): numbers and lists, NaN still null
    text = json.dumps(io.strict_json({"s": np.float32(1.5), "n": np.float32("nan"), "i": np.int64(3),
                                      "a": np.array([1.0, np.inf])}), allow_nan=False)
    assert json.loads(text) == {"s": 1.5, "n": None, "i": 3, "a": [1.0, None]}


def test_float_depth_no_unit_explains_is_said_as_not_depth():
    """A median of 3e38 'metres' (raw bytes read as floats) is not called millimetres; 2,500 still is, and 1e6 (the
    bound: 1 km as millimetres) too."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        io.depth_to_metres(np.full((3, 3), 3e38, np.float32))
    text = " ".join(str(w.message) for w in caught)
    assert "median 3e+38 'metres': no common depth unit explains that" in text and "looks like millimetres" not in text
    for median in (2500.0, 1.0e6):
        with pytest.warns(io.UnitWarning, match="looks like millimetres"):
            io.depth_to_metres(np.full((3, 3), median, np.float32))


@pytest.mark.parametrize("tag", [3, 6, 8])
def test_a_tiff_with_an_orientation_tag_is_read_upright(tmp_path, tag, monkeypatch):
    """OpenCV turns some TIFF orientations itself and cannot decode the others; either way read_image gives the
    upright image (computed here by numpy from the stored one) and says so, like any EXIF-tagged photo; its header
    size is not trusted for the folder check (None), an untagged TIFF's is."""
    from PIL import Image

    stored = np.random.default_rng(tag).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "t.tif", tiffinfo={0x0112: tag})
    expected = {3: stored[::-1, ::-1], 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}[tag]
    with pytest.warns(io.DepthkitWarning, match=f"EXIF orientation {tag}"):
        np.testing.assert_array_equal(io.read_image(tmp_path / "t.tif"), expected)
    assert image_size(tmp_path / "t.tif") is None
    Image.fromarray(stored).save(tmp_path / "plain.tif")
    assert image_size(tmp_path / "plain.tif") == (20, 30) == io.read_image(tmp_path / "plain.tif").shape[:2]
    grey = stored[..., 0]
    Image.fromarray(grey).save(tmp_path / "g.tif", tiffinfo={0x0112: tag})
    try:  # a grey one reads upright, or (stored sideways: Pillow 13 gives it the stored size) is refused
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            got = io.read_image(tmp_path / "g.tif")[..., 1]
    except ValueError as err:
        assert tag != 3 and "could not be decoded upright here" in str(err) and "Save it upright" in str(err)
    else:
        np.testing.assert_array_equal(got, {3: grey[::-1, ::-1], 6: np.rot90(grey, -1), 8: np.rot90(grey, 1)}[tag])
        assert any(f"EXIF orientation {tag}" in str(w.message) for w in said)
    if tag == 3:  # a Pillow that leaves the pixels as stored (and the tag in place) while loading: turned here
        import PIL.ImageOps

        monkeypatch.setattr(PIL.ImageOps, "exif_transpose", lambda im, in_place=False: None if in_place else im)
        with pytest.warns(io.DepthkitWarning):
            np.testing.assert_array_equal(io.read_image(tmp_path / "t.tif"), expected)


def test_writes_are_atomic_and_a_folder_in_the_way_is_named(tmp_path, monkeypatch):
    """Each writer replaces its file in one step: a write that fails leaves the previous file whole and no hidden
    temporary beside it; a folder where the file should go is refused with a message that says so, and nothing is
    left behind either."""
    depth = np.full((4, 5), 2.5, np.float32)
    io.write_depth_npy(tmp_path / "d.npy", depth)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.write_depth_npy(tmp_path / "d.npy", depth * 2)
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), depth)
    writers = {"a.npy": lambda p: io.write_depth_npy(p, depth),
               "a.png": lambda p: io.write_depth_png16(p, depth, scale=1000),
               "a_color.png": lambda p: io.write_image(p, np.zeros((4, 5, 3), np.uint8))}
    for name, write in writers.items():
        (tmp_path / "in_the_way" / name).mkdir(parents=True)
        with pytest.raises(IsADirectoryError, match="a folder of that name is in the way"):
            write(tmp_path / "in_the_way" / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "in_the_way"]
    assert sorted(p.name for p in (tmp_path / "in_the_way").iterdir()) == sorted(writers)
