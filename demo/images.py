"""Test and demo images made in memory: real JPEGs/PNGs with EXIF, and deliberate fakes.

Deterministic: the same arguments (and seed) always give the same bytes. Used by the unit
tests, the demo simulator and the benchmarks; never by production code paths.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from datetime import datetime
from fractions import Fraction

import piexif
from PIL import Image

GPS_SECONDS_DENOMINATOR = 1_000_000  # ~3e-11 degree resolution: round-trips exactly enough


def _noise_image(width: int, height: int, seed: int, amount: float) -> Image.Image:
    """A smooth colour gradient blended with seeded noise (amount 0..1 drives JPEG size)."""
    rng = random.Random(seed)
    base = Image.linear_gradient("L").resize((width, height))
    tint = (rng.randrange(40, 200), rng.randrange(40, 200), rng.randrange(40, 200))
    r = base.point(lambda v: (v + tint[0]) % 256)
    g = base.transpose(Image.Transpose.ROTATE_90).resize((width, height)).point(
        lambda v: (v + tint[1]) % 256)
    b = Image.new("L", (width, height), tint[2])
    picture = Image.merge("RGB", (r, g, b))
    if amount <= 0:
        return picture
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    return Image.blend(picture, noise, min(1.0, amount))


def _dms(value: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    value = abs(value)
    degrees = int(value)
    minutes_f = (value - degrees) * 60
    minutes = int(minutes_f)
    seconds = Fraction((minutes_f - minutes) * 60).limit_denominator(GPS_SECONDS_DENOMINATOR)
    seconds = Fraction(round(seconds * GPS_SECONDS_DENOMINATOR), GPS_SECONDS_DENOMINATOR)
    return (degrees, 1), (minutes, 1), (seconds.numerator, seconds.denominator)


def exif_bytes(taken_at: datetime | None = None, gps: tuple[float, float] | None = None,
               orientation: int | None = None, make: str = "gridflow-sim") -> bytes:
    """An EXIF block (piexif) with DateTimeOriginal (+ OffsetTimeOriginal) and GPS lat/lon."""
    zeroth: dict[int, object] = {piexif.ImageIFD.Make: make.encode()}
    if orientation is not None:
        zeroth[piexif.ImageIFD.Orientation] = orientation
    exif: dict[int, object] = {}
    if taken_at is not None:
        exif[piexif.ExifIFD.DateTimeOriginal] = taken_at.strftime("%Y:%m:%d %H:%M:%S").encode()
        offset = taken_at.strftime("%z")
        if offset:
            exif[piexif.ExifIFD.OffsetTimeOriginal] = f"{offset[:3]}:{offset[3:]}".encode()
    gps_ifd: dict[int, object] = {}
    if gps is not None:
        lat, lon = gps
        gps_ifd = {
            piexif.GPSIFD.GPSVersionID: (2, 3, 0, 0),
            piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S",
            piexif.GPSIFD.GPSLatitude: _dms(lat),
            piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W",
            piexif.GPSIFD.GPSLongitude: _dms(lon),
        }
    return piexif.dump({"0th": zeroth, "Exif": exif, "GPS": gps_ifd, "1st": {}, "thumbnail": None})


def _save_jpeg(im: Image.Image, quality: int, exif: bytes) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality, exif=exif)
    return out.getvalue()


def make_jpeg(width: int = 640, height: int = 480, *, seed: int = 0,
              taken_at: datetime | None = None, gps: tuple[float, float] | None = None,
              orientation: int | None = None, quality: int = 85, noise: float = 0.15,
              target_bytes: int | None = None) -> bytes:
    """A real JPEG with EXIF. With target_bytes, the size lands within about 10% of it
    (width/height are then only the aspect ratio's starting point)."""
    exif = exif_bytes(taken_at, gps, orientation)
    if target_bytes is None:
        return _save_jpeg(_noise_image(width, height, seed, noise), quality, exif)
    return _jpeg_near(target_bytes, width, height, seed, exif)


def _jpeg_near(target: int, width: int, height: int, seed: int, exif: bytes) -> bytes:
    # Heavy noise at quality 90 costs ~1.5-2.5 bytes per pixel: size the picture from a probe.
    probe = _save_jpeg(_noise_image(128, 128, seed, 0.9), 90, b"")
    per_pixel = len(probe) / (128 * 128)
    scale = (target / per_pixel / (width * height)) ** 0.5
    w, h = max(16, int(width * scale)), max(16, int(height * scale))
    im = _noise_image(w, h, seed, 0.9)
    lo, hi, best = 20, 95, b""
    while lo <= hi:  # binary search on quality for the closest size
        q = (lo + hi) // 2
        data = _save_jpeg(im, q, exif)
        if not best or abs(len(data) - target) < abs(len(best) - target):
            best = data
        if len(data) < target:
            lo = q + 1
        else:
            hi = q - 1
    return best


def make_png(width: int = 64, height: int = 48, *, seed: int = 0, alpha: bool = False) -> bytes:
    im = _noise_image(width, height, seed, 0.3)
    if alpha:
        im = im.convert("RGBA")
        im.putalpha(128)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


# --- fakes -------------------------------------------------------------------------------


def truncated_jpeg(data: bytes | None = None, keep: float = 0.6) -> bytes:
    """A JPEG cut off part-way (an interrupted upload)."""
    data = data if data is not None else make_jpeg(320, 240, seed=7, noise=0.5)
    return data[: max(4, int(len(data) * keep))]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_pixel_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny, well-formed PNG header declaring a huge canvas (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 1024, 9)  # a sliver of the (never to be decoded) image
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int, data: bytes | None = None) -> bytes:
    """A real JPEG whose frame header (SOF) is patched to declare another size."""
    buf = bytearray(data if data is not None else make_jpeg(64, 48, seed=3))
    pos = 2
    while pos < len(buf):
        marker, length = buf[pos + 1], int.from_bytes(buf[pos + 2:pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            buf[pos + 5:pos + 9] = struct.pack(">HH", height, width)
            return bytes(buf)
        pos += 2 + length
    raise ValueError("no SOF marker found")


def text_as_jpg() -> bytes:
    """What a '.jpg' that is really a text file contains."""
    return "这不是照片 / this is not a photo, just text renamed to .jpg\n".encode()


def png_header_then_garbage(seed: int = 0, size: int = 2048) -> bytes:
    """A PNG signature followed by random bytes."""
    return b"\x89PNG\r\n\x1a\n" + random.Random(seed).randbytes(size)


def jpeg_header_then_garbage(seed: int = 0, size: int = 2048) -> bytes:
    """A JPEG signature followed by random bytes."""
    return b"\xff\xd8\xff\xe0" + random.Random(seed).randbytes(size)


def heic_header() -> bytes:
    """The first bytes of a HEIC file (an ISO-BMFF ftyp box with brand heic)."""
    return struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 64
