"""Decoding image inputs: the four accepted formats, and every way a file can be refused."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from PIL import Image

from fluxserve.predictors.images import MAX_IMAGE_PIXELS, ImageInputError, decode_image, sniff_image
from tests.predictors.support import image_bytes


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG (valid IHDR and CRCs) that claims ``width`` × ``height`` but holds 100 bytes of pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("GIF", "gif")])
def test_accepted_formats_decode_to_rgb(fmt: str, name: str) -> None:
    data = image_bytes((40, 30), fmt)
    assert sniff_image(data) == name
    image = decode_image(data, "input_image")
    assert (image.mode, image.size) == ("RGB", (40, 30))


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO"])
def test_other_formats_are_refused(fmt: str) -> None:
    data = image_bytes((32, 32), fmt)
    assert sniff_image(data) is None
    with pytest.raises(ImageInputError, match=r"^input_image: not a PNG, JPEG, WEBP or GIF image$"):
        decode_image(data, "input_image")


def test_text_and_empty_files_are_refused() -> None:
    assert sniff_image(b"hello, I am a text file\n") is None
    with pytest.raises(ImageInputError, match=r"^image: not a PNG, JPEG, WEBP or GIF image"):
        decode_image(b"hello, I am a text file\n", "image")
    with pytest.raises(ImageInputError, match=r"^image: the file is empty"):
        decode_image(b"", "image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_files_are_refused(fmt: str) -> None:
    data = image_bytes((256, 256), fmt)
    with pytest.raises(ImageInputError, match=rf"^input_image: the {fmt} image is damaged or truncated \(.+\)$"):
        decode_image(data[: len(data) // 2], "input_image")


def test_header_only_png_is_refused() -> None:
    with pytest.raises(ImageInputError, match=r"damaged or truncated \(cannot identify image file\)$"):
        decode_image(image_bytes((64, 64))[:30], "input_image")


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (12000, 12000), (4097, 4096), (70000, 70000)])
def test_huge_dimensions_are_refused_before_decoding(width: int, height: int) -> None:
    data = png_claiming(width, height)
    assert len(data) < 200 and sniff_image(data) == "png"
    tracemalloc.start()
    try:
        with pytest.raises(ImageInputError) as info:
            decode_image(data, "input_image")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(
        f"input_image: {width}×{height} pixels is more than the {MAX_IMAGE_PIXELS}-pixel limit"
    )
    assert peak < 5 * 1024 * 1024  # never allocated the pixels (20000² RGB would be 1.2 GB)


def test_largest_allowed_size_is_accepted() -> None:
    image = decode_image(image_bytes((4096, 4096), "JPEG"), "input_image")
    assert image.size == (4096, 4096)


def test_gif_gives_its_first_frame_and_transparency_becomes_white() -> None:
    frames = [Image.new("RGB", (16, 16), color) for color in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buffer.getvalue(), "input_image").getpixel((0, 0)) == (255, 0, 0)

    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buffer = io.BytesIO()
    clear.save(buffer, format="PNG")
    assert decode_image(buffer.getvalue(), "input_image").getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), "green")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), "input_image").size == (20, 40)
