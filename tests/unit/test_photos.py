"""Photos: real images pass with their EXIF facts; fakes, bombs and broken uploads are refused."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from demo import images
from gridflow.core import photos
from gridflow.core.photos import PhotoRejected, inspect_photo, make_thumbnail, strip_exif

CST = timezone(timedelta(hours=8))
TAKEN = datetime(2026, 11, 23, 9, 30, 5, tzinfo=CST)
WHERE = (32.2012345, 110.0456789)


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return images.make_jpeg(640, 480, seed=1, taken_at=TAKEN, gps=WHERE)


def rejected(data: bytes, **kw: int) -> PhotoRejected:
    with pytest.raises(PhotoRejected) as err:
        inspect_photo(data, kw.get("max_bytes", 10 * 1024 * 1024),
                      kw.get("max_pixels", 40_000_000))
    assert err.value.message_zh and err.value.message_en
    return err.value


# --- real photos ---------------------------------------------------------------------------


def test_jpeg_facts(jpeg: bytes) -> None:
    info = inspect_photo(jpeg, 10_000_000, 40_000_000)
    assert (info.content_type, info.width, info.height) == ("image/jpeg", 640, 480)
    assert info.size == len(jpeg)
    assert info.sha256 == hashlib.sha256(jpeg).hexdigest()


def test_exif_capture_time_and_gps_read_back_as_written(jpeg: bytes) -> None:
    info = inspect_photo(jpeg)
    assert info.taken_at == TAKEN
    assert info.taken_at_raw == "2026:11:23 09:30:05"
    assert info.gps_lat == pytest.approx(WHERE[0], abs=1e-9)
    assert info.gps_lon == pytest.approx(WHERE[1], abs=1e-9)


def test_southern_and_western_hemispheres() -> None:
    info = inspect_photo(images.make_jpeg(32, 32, gps=(-33.8688, -70.6693)))
    assert info.gps_lat == pytest.approx(-33.8688, abs=1e-9)
    assert info.gps_lon == pytest.approx(-70.6693, abs=1e-9)


def test_capture_time_without_offset_assumes_china_time() -> None:
    naive_taken = datetime(2026, 11, 23, 9, 30)
    info = inspect_photo(images.make_jpeg(32, 32, taken_at=naive_taken))
    assert info.taken_at == datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
    other = inspect_photo(images.make_jpeg(32, 32, taken_at=naive_taken), assume_tz=UTC)
    assert other.taken_at == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def test_photo_without_exif() -> None:
    info = inspect_photo(images.make_png(40, 30))
    assert info.content_type == "image/png" and (info.width, info.height) == (40, 30)
    assert info.taken_at is None and info.gps_lat is None and info.gps_lon is None


# --- refusals --------------------------------------------------------------------------------


def test_pixel_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    bomb = images.png_pixel_bomb(30_000, 30_000)
    assert len(bomb) < 200
    assert rejected(bomb).code == "pixel_bomb"
    # below Pillow's own bomb threshold but above ours: our header check refuses it
    assert rejected(images.jpeg_declaring(8000, 8000)).code == "pixel_bomb"
    assert rejected(images.png_pixel_bomb(7000, 7000)).code == "pixel_bomb"


def test_max_pixels_is_ours_to_set(jpeg: bytes) -> None:
    assert rejected(jpeg, max_pixels=100_000).code == "pixel_bomb"
    assert inspect_photo(jpeg, max_pixels=640 * 480).width == 640


def test_over_max_bytes(jpeg: bytes) -> None:
    err = rejected(jpeg, max_bytes=len(jpeg) - 1)
    assert err.code == "too_large"


def test_truncated_upload() -> None:
    assert rejected(images.truncated_jpeg()).code == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def _scan_start(jpeg: bytes) -> int:
    return jpeg.index(b"\xff\xda")  # SOS: entropy-coded data follows its header


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_truncated_in_the_middle_of_its_scan_data(progressive: bool) -> None:
    jpeg = images.make_jpeg(1600, 1200, seed=8, noise=0.3)
    if progressive:
        out = io.BytesIO()
        Image.open(io.BytesIO(jpeg)).save(out, "JPEG", quality=85, progressive=True)
        jpeg = out.getvalue()
    sos = _scan_start(jpeg)
    cut = jpeg[: sos + (len(jpeg) - sos) // 2]
    assert rejected(cut).code == "truncated"
    with pytest.raises(PhotoRejected) as err:
        photos.inspect_with_thumbnail(cut)
    assert err.value.code == "truncated"
    with pytest.raises(PhotoRejected):
        make_thumbnail(cut)


def test_reduced_decode_refuses_exactly_what_a_full_decode_refuses() -> None:
    """The check decodes a JPEG at 1/8 scale; libjpeg still reads every entropy-coded segment,
    so each cut-off or bit-flipped file fails (or passes) as it does at full resolution."""
    import random

    def full_decode_ok(data: bytes) -> bool:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
            return True
        except Exception:  # noqa: BLE001
            return False

    def ours_ok(data: bytes) -> bool:
        try:
            inspect_photo(data)
            return True
        except PhotoRejected:
            return False

    rng = random.Random(5)
    jpeg = images.make_jpeg(320, 240, seed=7, noise=0.5)
    sos = _scan_start(jpeg)
    cases = [jpeg[:cut] for cut in range(sos, len(jpeg) + 1, 97)] + [jpeg[:-1], jpeg[:-2]]
    for _ in range(150):
        flipped = bytearray(jpeg)
        flipped[rng.randrange(sos, len(jpeg))] ^= 1 << rng.randrange(8)
        cases.append(bytes(flipped))
    refused = 0
    for data in cases:
        assert ours_ok(data) == full_decode_ok(data)
        refused += not ours_ok(data)
    assert refused > 10


def test_check_decodes_a_jpeg_at_reduced_scale_and_reports_its_real_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        decoded.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    info = inspect_photo(images.make_jpeg(1600, 1200, seed=2))
    assert (info.width, info.height) == (1600, 1200)
    assert decoded == [(200, 150)]


def test_inspect_with_thumbnail_is_inspect_plus_thumbnail(jpeg: bytes) -> None:
    info, thumb = photos.inspect_with_thumbnail(jpeg)
    assert info == inspect_photo(jpeg)
    assert thumb == make_thumbnail(jpeg)
    assert max(inspect_photo(thumb).width, inspect_photo(thumb).height) == 320
    sha = hashlib.sha256(jpeg).hexdigest()
    assert photos.inspect_with_thumbnail(jpeg, sha256=sha)[0] == info


def test_truncated_png() -> None:
    png = images.make_png(200, 200, seed=2)
    assert rejected(png[: len(png) // 2]).code in {"truncated", "corrupt"}


@pytest.mark.parametrize("fake, code", [
    (images.text_as_jpg(), "not_image"),
    (b"GIF89a" + b"\x00" * 100, "not_image"),
    (images.png_header_then_garbage(), "corrupt"),
    (images.jpeg_header_then_garbage(), None),
    (b"", "empty"),
])
def test_fakes(fake: bytes, code: str | None) -> None:
    err = rejected(fake)
    assert err.code == code or (code is None and err.code in {"corrupt", "truncated"})


def test_png_with_damaged_pixel_data_is_refused() -> None:
    png = bytearray(images.make_png(64, 64, seed=4))
    idat = png.index(b"IDAT")
    png[idat + 40] ^= 0xFF  # flip a byte inside the compressed pixels
    assert rejected(bytes(png)).code in {"corrupt", "truncated"}


def test_heic_is_refused_clearly_without_a_decoder() -> None:
    if photos.heif_supported():
        pytest.skip("a HEIF plugin is installed")
    err = rejected(images.heic_header())
    assert err.code == "heic_unsupported"
    assert "HEIC" in err.message_zh


def test_pillow_global_limits_are_untouched() -> None:
    before = Image.MAX_IMAGE_PIXELS
    rejected(images.png_pixel_bomb())
    assert Image.MAX_IMAGE_PIXELS == before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- thumbnails and stripping ------------------------------------------------------------------


def test_thumbnail_is_small_jpeg_without_exif(jpeg: bytes) -> None:
    thumb = make_thumbnail(jpeg)
    info = inspect_photo(thumb)
    assert info.content_type == "image/jpeg"
    assert max(info.width, info.height) == 320
    assert b"Exif\x00\x00" not in thumb
    assert info.gps_lat is None and info.taken_at is None


def test_thumbnail_is_upright_and_never_upscaled() -> None:
    sideways = images.make_jpeg(64, 32, orientation=6)  # camera held upright, stored sideways
    info = inspect_photo(make_thumbnail(sideways))
    assert (info.width, info.height) == (32, 64)


def test_thumbnail_of_transparent_png() -> None:
    thumb = make_thumbnail(images.make_png(400, 200, alpha=True), max_side=100)
    assert inspect_photo(thumb).width == 100


def test_thumbnail_refuses_bombs() -> None:
    with pytest.raises(PhotoRejected) as err:
        make_thumbnail(images.png_pixel_bomb())
    assert err.value.code == "pixel_bomb"


def test_strip_exif_removes_gps_and_keeps_pixels(jpeg: bytes) -> None:
    clean = strip_exif(jpeg)
    assert b"Exif\x00\x00" not in clean
    info = inspect_photo(clean)
    assert info.gps_lat is None and info.taken_at is None
    with Image.open(io.BytesIO(jpeg)) as a, Image.open(io.BytesIO(clean)) as b:
        assert a.tobytes() == b.tobytes()  # lossless: image data copied as is


def test_strip_exif_turns_a_sideways_photo_upright() -> None:
    clean = strip_exif(images.make_jpeg(64, 32, orientation=6, gps=WHERE))
    info = inspect_photo(clean)
    assert (info.width, info.height) == (32, 64) and info.gps_lat is None


def test_strip_exif_png_text_chunks() -> None:
    im = Image.new("RGB", (8, 8), "red")
    out = io.BytesIO()
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Comment", "张三 13900001111")
    im.save(out, "PNG", pnginfo=meta)
    clean = strip_exif(out.getvalue())
    assert b"13900001111" not in clean
    assert inspect_photo(clean).width == 8


# --- hashing --------------------------------------------------------------------------------------


def test_streaming_hash_matches(jpeg: bytes) -> None:
    chunks = [jpeg[i:i + 4096] for i in range(0, len(jpeg), 4096)]
    assert photos.sha256_stream(chunks) == (hashlib.sha256(jpeg).hexdigest(), len(jpeg))
    reader = photos.HashingReader(io.BytesIO(jpeg))
    while reader.read(1000):
        pass
    assert (reader.sha256, reader.size) == (hashlib.sha256(jpeg).hexdigest(), len(jpeg))


def test_hashing_reader_refuses_too_much(jpeg: bytes) -> None:
    reader = photos.HashingReader(io.BytesIO(jpeg), max_bytes=1000)
    with pytest.raises(PhotoRejected) as err:
        reader.read()
    assert err.value.code == "too_large"


# --- the generators themselves ------------------------------------------------------------------


def test_generated_jpeg_is_deterministic_and_sized() -> None:
    a = images.make_jpeg(target_bytes=300_000, seed=9, taken_at=TAKEN, gps=WHERE)
    assert a == images.make_jpeg(target_bytes=300_000, seed=9, taken_at=TAKEN, gps=WHERE)
    assert abs(len(a) - 300_000) < 30_000
    assert a != images.make_jpeg(target_bytes=300_000, seed=10, taken_at=TAKEN, gps=WHERE)
    assert inspect_photo(a).gps_lat == pytest.approx(WHERE[0], abs=1e-9)
