"""Decoding images from files or bytes into the ``(H, W, 3)`` uint8 RGB arrays the cascade takes.

Handles grayscale, RGB, RGBA (alpha dropped), palette, 16-bit and float images, and refuses with an
``ImageDecodeError`` that says why: truncated files, decompression bombs, images with more than one frame
(multi-page TIFFs, animated PNGs: which frame is meant is not for the decoder to guess) and float images
holding NaN or infinity (they have no defined grey level).

EXIF orientation is ignored on purpose: pixels are used as stored, the way line-scan cameras write them and
the way Kaggle's RLE masks index them (a rotated image would no longer match its masks).
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "ImageDecodeError",
    "ImageHeader",
    "decode_image",
    "probe_image",
    "read_image",
    "read_image_size",
    "read_image_sizes",
    "to_rgb",
]

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "TIFF")
"""Pillow format names the cascade accepts."""

DEFAULT_MAX_PIXELS: int = 40_000_000
"""Largest image (in pixels) decoded by default; larger ones are refused as possible decompression bombs."""


class ImageDecodeError(ValueError):
    """An image could not be decoded; the message says why.

    Attributes:
        unsupported: the format is not one of ``SUPPORTED_FORMATS``.
        too_large: the image has more pixels than allowed (a possible decompression bomb).
    """

    def __init__(self, message: str, *, unsupported: bool = False, too_large: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported
        self.too_large = too_large


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, before any pixel is decoded."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        """``width * height``."""
        return self.width * self.height


def to_rgb(array: np.ndarray) -> np.ndarray:
    """Convert a decoded image array to uint8 RGB.

    Args:
        array: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8, uint16, int32 or float.

    Returns:
        ``(H, W, 3)`` uint8 array.
    """
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageDecodeError(f"unsupported image array shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            scale = 255.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 1.0
            array = np.clip(np.nan_to_num(array) * scale, 0, 255).astype(np.uint8)
        else:
            maxval = 65535 if array.dtype.itemsize >= 2 and array.max(initial=0) > 255 else 255
            array = (array.astype(np.float32) * (255.0 / maxval) + 0.5).clip(0, 255).astype(np.uint8)
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def probe_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image") -> ImageHeader:
    """Read an image's header only (format and size; no pixel is decoded) and apply the checks ``decode_image`` does.

    Raises:
        ImageDecodeError: empty, unsupported, multi-frame, too large or unreadable data.
    """
    with _opened(data, max_pixels, name) as img:
        return ImageHeader(str(img.format), *img.size)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes to RGB.

    Args:
        data: the encoded file (JPEG, PNG, BMP or TIFF), one frame.
        max_pixels: refuse images with more pixels than this (decompression bombs).
        name: shown in error messages.

    Returns:
        ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ImageDecodeError: empty, unsupported, truncated, too large, multi-frame, non-finite or otherwise
            undecodable data.
    """
    with _opened(data, max_pixels, name) as img:
        try:
            img.load()
            return _pil_to_rgb(img, name)
        except ImageDecodeError:
            raise
        except OSError as exc:  # truncated or corrupt data
            raise ImageDecodeError(f"{name}: cannot decode image: {exc}") from exc
        except (ValueError, SyntaxError, MemoryError) as exc:
            raise ImageDecodeError(f"{name}: cannot decode image: {exc}") from exc


_BOMB_SIZE = re.compile(r"Image size \(([0-9]+) pixels\)")


def _too_large(name: str, pixels: int | None, max_pixels: int) -> ImageDecodeError:
    size = f"{pixels} pixels, " if pixels is not None else ""
    return ImageDecodeError(
        f"{name}: {size}more than the limit of {max_pixels} pixels (refused as a possible decompression bomb)",
        too_large=True,
    )


@contextmanager
def _opened(data: bytes, max_pixels: int, name: str) -> Iterator[Image.Image]:
    """The opened (not yet loaded) single-frame image of ``data``, its format and size checked."""
    if not data:
        raise ImageDecodeError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in SUPPORTED_FORMATS:
                    raise ImageDecodeError(
                        f"{name}: unsupported image format {img.format!r}; allowed: {', '.join(SUPPORTED_FORMATS)}",
                        unsupported=True,
                    )
                width, height = img.size
                if width * height > max_pixels:
                    raise _too_large(f"{name} ({width}x{height})", width * height, max_pixels)
                if getattr(img, "is_animated", False):  # looks at the second frame only, never counts them all
                    raise ImageDecodeError(
                        f"{name}: a {img.format} with more than one frame; send one image per file (only "
                        "single-frame images are accepted, so no frame is silently dropped)"
                    )
                yield img
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"{name}: not a recognised image; allowed: {', '.join(SUPPORTED_FORMATS)}", unsupported=True
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # Pillow's own, larger limit
        match = _BOMB_SIZE.search(str(exc))
        raise _too_large(name, int(match.group(1)) if match else None, max_pixels) from exc
    except OSError as exc:  # truncated or corrupt data
        raise ImageDecodeError(f"{name}: cannot decode image: {exc}") from exc
    except (ValueError, SyntaxError, MemoryError, EOFError) as exc:
        raise ImageDecodeError(f"{name}: cannot decode image: {exc}") from exc


def _pil_to_rgb(img: Image.Image, name: str) -> np.ndarray:
    if img.mode in ("RGB", "L"):
        return to_rgb(np.asarray(img))
    if img.mode in ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "1", "RGBX"):
        return to_rgb(np.asarray(img.convert("RGB")))
    # 16-bit and 32-bit grayscale ("I;16", "I;16B", "I", "F") and the like.
    array = np.asarray(img)
    if np.issubdtype(array.dtype, np.floating):
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ImageDecodeError(
                f"{name}: {bad} of {array.size} pixels are NaN or infinite; a float image needs finite values "
                "(refused: they have no grey level, and one infinity would turn the whole image black)"
            )
    return to_rgb(array)


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    Raises:
        ImageDecodeError: when the file cannot be read or decoded.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    return decode_image(data, max_pixels=max_pixels, name=str(path))


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (nothing is decoded).

    Raises:
        ImageDecodeError: not a readable image.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageDecodeError(f"{path}: not a readable image ({exc})") from exc
    return int(height), int(width)


def read_image_sizes(images_dir: str | Path, image_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``image id -> (H, W)`` for files ``images_dir / image_id`` (headers only, in a small thread pool).

    Raises:
        ImageDecodeError: an unreadable image, named.
    """
    from concurrent.futures import ThreadPoolExecutor

    folder = Path(images_dir)
    with ThreadPoolExecutor(max_workers=4) as pool:
        sizes = list(pool.map(lambda i: read_image_size(folder / i), image_ids))
    return dict(zip(image_ids, sizes, strict=True))
