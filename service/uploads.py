"""Taking uploads apart safely: body size limits, multipart parsing, type checks, zips and decoding.

Every check happens before an image reaches the inference worker, and decoding runs in the threadpool,
so nothing a client sends can block the event loop or kill the worker:

- body larger than ``max_upload_mb`` -> 413, from the ``Content-Length`` header at once, else by counting
  bytes as they arrive (``BodyLimitMiddleware``);
- more files than ``max_files`` (multipart parts or zip members) -> 413;
- a part whose declared type is not an image, or bytes that are no JPEG/PNG/BMP/TIFF -> 415;
- empty, truncated or corrupt images, bad zips -> 422 saying why;
- images above ``max_image_pixels`` (decompression bombs) and zips expanding too far -> 413.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cascade.imageio import ImageDecodeError, decode_image
from service.errors import ServiceError

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "IMAGE_SUFFIXES",
    "BodyLimitMiddleware",
    "Upload",
    "decode_upload",
    "expand_zip",
    "is_zip",
    "read_form",
    "read_single_upload",
    "read_uploads",
    "upload_name",
]

IMAGE_MEDIA_TYPES: tuple[str, ...] = (
    "image/jpeg",
    "image/pjpeg",
    "image/png",
    "image/bmp",
    "image/x-bmp",
    "image/x-ms-bmp",
    "image/tiff",
    "image/tiff-fx",
)
"""Declared part types accepted as images (``application/octet-stream`` or none also pass: the bytes decide)."""

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
"""File suffixes picked from zips."""

_ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-zip")
_NEUTRAL_TYPES = ("", "application/octet-stream", "binary/octet-stream")
_ZIP_EXPANSION = 4  # a zip may expand to this many times the body limit


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name (image id) and bytes."""

    name: str
    data: bytes


class _BodyTooLargeError(ServiceError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {_mib(limit)} (--max-upload-mb)")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


class BodyLimitMiddleware:
    """Refuse request bodies above ``max_bytes``: by ``Content-Length`` before reading, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(send, 400, f"bad Content-Length header {length.decode('latin-1')!r}")
                return
            if declared > self.max_bytes:
                await _send_json(send, 413, str(_BodyTooLargeError(self.max_bytes)))
                return
        received = 0
        started = False

        async def _receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLargeError(self.max_bytes)
            return message

        async def _send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        except _BodyTooLargeError as err:  # raised where no handler rendered it
            if started:
                raise
            await _send_json(send, 413, err.detail)


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def read_form(request: Request, *, max_files: int, allow_urlencoded: bool = False) -> FormData:
    """Parse a ``multipart/form-data`` body, mapping parser complaints to 413 / 415 / 422.

    Args:
        allow_urlencoded: also accept ``application/x-www-form-urlencoded`` (forms without files).
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    accepted = ("multipart/form-data", "application/x-www-form-urlencoded") if allow_urlencoded else ()
    if media_type != "multipart/form-data" and media_type not in accepted:
        raise ServiceError(
            415,
            f"unsupported request content type {media_type or 'none'!r}; send multipart/form-data "
            "(or, for /predict, the image itself as image/jpeg, image/png, image/bmp or image/tiff)",
        )
    try:
        return await request.form(max_files=max_files, max_fields=64, max_part_size=64 * 1024)
    except HTTPException as err:
        if "Too many files" in str(err.detail):
            raise ServiceError(413, f"too many files: at most {max_files} per request (--max-files)") from err
        raise ServiceError(422, f"malformed multipart body: {err.detail}") from err


def upload_name(filename: str | None, data: bytes) -> str:
    """The image id of an upload: its base file name, or ``sha256:<16 hex>`` of the bytes when it has none."""
    name = PureWindowsPath(PurePosixPath(filename or "").name).name.strip()
    if not name or name in (".", ".."):
        return f"sha256:{hashlib.sha256(data).hexdigest()[:16]}"
    return name[:255]


def _check_part_type(part: UploadFile, *, allow_zip: bool) -> None:
    declared = (part.content_type or "").split(";")[0].strip().lower()
    allowed = IMAGE_MEDIA_TYPES + (_ZIP_TYPES if allow_zip else ())
    if declared in _NEUTRAL_TYPES or declared in allowed:
        return
    kinds = "JPEG, PNG, BMP or TIFF images" + (" or a zip of them" if allow_zip else "")
    raise ServiceError(415, f"{part.filename or 'upload'}: unsupported media type {declared!r}; send {kinds}")


def read_uploads(form: FormData, *, allow_zip: bool) -> list[UploadFile]:
    """The file parts of a form, type-checked (415 for declared non-image types)."""
    parts = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    for part in parts:
        _check_part_type(part, allow_zip=allow_zip)
    return parts


def is_zip(part: UploadFile, head: bytes) -> bool:
    """True when a part is a zip: by declared type, ``.zip`` name or the ``PK`` magic."""
    declared = (part.content_type or "").split(";")[0].strip().lower()
    name = (part.filename or "").lower()
    return declared in _ZIP_TYPES or name.endswith(".zip") or head.startswith(b"PK\x03\x04")


def expand_zip(data: bytes, *, name: str, max_files: int, max_bytes: int) -> list[Upload]:
    """The images inside a zip (by suffix; folders flattened; hidden and ``__MACOSX`` entries skipped).

    Args:
        max_files: most images allowed (413 beyond).
        max_bytes: the body limit; the zip may expand to ``4 * max_bytes`` in total (413 beyond).

    Raises:
        ServiceError: 422 for a bad zip, duplicate or missing images; 413 for too many or too large members.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as err:
        raise ServiceError(422, f"{name}: not a readable zip file ({err})") from err
    with archive:
        members = []
        for info in archive.infolist():
            base = PurePosixPath(info.filename).name
            if info.is_dir() or info.filename.startswith("__MACOSX/") or base.startswith("."):
                continue
            if PurePosixPath(base).suffix.lower() in IMAGE_SUFFIXES:
                members.append((base, info))
        if not members:
            raise ServiceError(422, f"{name}: the zip holds no images (suffixes {', '.join(IMAGE_SUFFIXES)})")
        if len(members) > max_files:
            raise ServiceError(413, f"{name}: {len(members)} images, more than the limit of {max_files} (--max-files)")
        expanded = sum(info.file_size for _, info in members)
        if expanded > _ZIP_EXPANSION * max_bytes:
            raise ServiceError(
                413, f"{name}: images expand to {_mib(expanded)}, more than {_mib(_ZIP_EXPANSION * max_bytes)}"
            )
        out: list[Upload] = []
        for base, info in members:
            try:
                out.append(Upload(base, archive.read(info)))
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as err:
                raise ServiceError(422, f"{name}: cannot read {info.filename!r} ({err})") from err
    return out


async def decode_upload(upload: Upload, *, max_pixels: int) -> np.ndarray:
    """Decode in the threadpool: ``(H, W, 3)`` uint8 RGB, or a ``ServiceError`` (413 / 415 / 422) saying why."""
    try:
        return await run_in_threadpool(decode_image, upload.data, max_pixels=max_pixels, name=upload.name)
    except ImageDecodeError as err:
        if err.unsupported:
            raise ServiceError(415, str(err)) from err
        if "decompression bomb" in str(err):
            raise ServiceError(413, f"{err} (--max-image-pixels)") from err
        raise ServiceError(422, str(err)) from err


async def read_single_upload(request: Request, *, max_files: int) -> Upload:
    """The one image of a ``/predict`` request: a multipart file part, or a raw ``image/*`` body.

    Raises:
        ServiceError: 415 for other content types, 422 for no file or more than one.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in IMAGE_MEDIA_TYPES or media_type == "application/octet-stream":
        data = await request.body()
        return Upload(upload_name(request.query_params.get("image_id"), data), data)
    form = await read_form(request, max_files=max_files)
    parts = read_uploads(form, allow_zip=False)
    if len(parts) != 1:
        raise ServiceError(
            422, f"send exactly one image as a multipart file part named 'file' (got {len(parts)} files)"
        )
    data = await parts[0].read()
    return Upload(upload_name(parts[0].filename, data), data)
