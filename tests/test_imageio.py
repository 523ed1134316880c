"""cascade.imageio: header probing and the refusals that keep results from being silently wrong."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cascade.imageio import ImageDecodeError, ImageHeader, decode_image, probe_image


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _float_tiff(value: float) -> bytes:
    array = np.full((6, 9), 0.5, dtype=np.float32)
    array[2, 3] = value
    return _encode(Image.fromarray(array), "TIFF")


def _frames(fmt: str) -> bytes:
    first, second = Image.new("RGB", (8, 6), "black"), Image.new("RGB", (8, 6), "white")
    return _encode(first, fmt, save_all=True, append_images=[second])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_float_tiff(np.inf), "1 of 54 pixels are NaN or infinite"),
        (_float_tiff(-np.inf), "NaN or infinite"),
        (_float_tiff(np.nan), "NaN or infinite"),
        (_frames("TIFF"), "a TIFF with more than one frame"),
        (_frames("PNG"), "a PNG with more than one frame"),
        (_png_header_only(7_000, 7_000), r"49000000 pixels, more than the limit of 40000000 pixels"),
        (_png_header_only(50_000, 50_000), r"2500000000 pixels, more than the limit of 40000000 pixels"),  # Pillow's
        (b"", "empty file"),
        (b"GIF89a" + bytes(20), "not a recognised image|unsupported"),
    ],
    ids=["inf", "minus-inf", "nan", "multi-page-tiff", "apng", "bomb", "bomb-over-pillows-limit", "empty", "gif"],
)
def test_refused_images_say_why(data: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data, max_pixels=40_000_000, name="x.img")


def test_the_bomb_message_quotes_the_configured_limit_not_pillows() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_png_header_only(50_000, 50_000), max_pixels=1234, name="b.png")
    assert info.value.too_large
    assert "1234 pixels" in str(info.value) and "178956970" not in str(info.value)


def test_finite_float_and_single_frame_images_still_decode() -> None:
    image = decode_image(_float_tiff(1.0), name="ok.tif")
    assert image.shape == (6, 9, 3) and image.dtype == np.uint8 and image.max() == 255
    assert decode_image(_encode(Image.new("RGB", (8, 6)), "TIFF")).shape == (6, 8, 3)


def test_probe_reads_the_header_only() -> None:
    assert probe_image(_png_header_only(300, 20), name="h.png") == ImageHeader("PNG", 300, 20)
    assert probe_image(_png_header_only(300, 20)).pixels == 6000
    with pytest.raises(ImageDecodeError, match="more than the limit of 100 pixels"):
        probe_image(_png_header_only(300, 20), max_pixels=100)
    with pytest.raises(ImageDecodeError, match="more than one frame"):
        probe_image(_frames("TIFF"))
