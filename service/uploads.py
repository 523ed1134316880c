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

import asyncio
import hashlib
import io
import json
import zipfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cascade.imageio import ImageDecodeError, ImageHeader, decode_image, probe_image
from service.errors import ServiceError
from service.limits import ImageLimits

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "IMAGE_SUFFIXES",
    "BodyLimitMiddleware",
    "Upload",
    "close_form",
    "decode_upload",
    "expand_zip",
    "is_zip",
    "probe_upload",
    "read_form",
    "read_single_upload",
    "read_uploads",
    "upload_name",
    "zip_member_name",
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


class _BodyTimeoutError(ServiceError):
    def __init__(self, timeout: float) -> None:
        super().__init__(408, f"the request body stalled: no data for {timeout:g} s (--body-timeout)")


class BodyLimitMiddleware:
    """Refuse request bodies above ``max_bytes`` (by ``Content-Length`` before reading, else while reading) and
    bodies that stall for more than ``timeout_s`` between two chunks (408; slow clients holding a request)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

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
        body_done = False

        async def _receive() -> Message:
            nonlocal received, body_done
            if body_done or self.timeout_s is None:  # after the body: waiting for a disconnect, no deadline
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), self.timeout_s)
                except TimeoutError as err:
                    raise _BodyTimeoutError(self.timeout_s) from err
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise _BodyTooLargeError(self.max_bytes)
            return message

        async def _send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        except (_BodyTooLargeError, _BodyTimeoutError) as err:  # raised where no handler rendered it
            if started:
                raise
            await _send_json(send, err.status_code, err.detail)


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def read_form(request: Request, *, max_files: int, allow_urlencoded: bool = False) -> FormData:
    """Parse a ``multipart/form-data`` body, mapping parser complaints to 413 / 415 / 422.

    A multipart body must end with its closing boundary (``--BOUNDARY--``): a body cut short otherwise parses
    as fewer (or no) files, and the client would be told the wrong reason.

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
    if media_type != "multipart/form-data":
        try:
            return await request.form(max_files=max_files, max_fields=64, max_part_size=64 * 1024)
        except HTTPException as err:
            raise ServiceError(422, f"malformed form body: {err.detail}") from err
    closing = b"--" + _boundary(request) + b"--"
    tail = bytearray()
    keep = len(closing) + _EPILOGUE

    async def _stream() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            tail.extend(chunk)
            del tail[:-keep]
            yield chunk
        if closing not in tail:  # raised inside the parser, which then closes the files it spooled
            raise ServiceError(
                422,
                "malformed multipart body: it ends without its closing boundary (--BOUNDARY--); the upload was cut "
                "short or the client does not finish its multipart body",
            )

    parser = MultiPartParser(request.headers, _stream(), max_files=max_files, max_fields=64, max_part_size=64 * 1024)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        if "Too many files" in err.message:
            raise ServiceError(413, f"too many files: at most {max_files} per request (--max-files)") from err
        raise ServiceError(422, f"malformed multipart body: {err.message}") from err
    request.state.upload_form = form  # closed (spooled files deleted) by ``close_form`` when the request ends
    return form


_EPILOGUE = 1024  # bytes a client may send after the closing boundary


async def close_form(request: Request) -> AsyncIterator[None]:
    """Route dependency: once the answer is sent, close the form ``read_form`` parsed (its spooled files go).

    Starlette closes only forms it parsed itself, so without this every upload left a temporary file to the
    garbage collector (a ``ResourceWarning``).
    """
    try:
        yield
    finally:
        form: FormData | None = getattr(request.state, "upload_form", None)
        if form is not None:
            await form.close()


def _boundary(request: Request) -> bytes:
    try:
        from python_multipart.multipart import parse_options_header
    except ImportError:  # python-multipart < 0.0.13
        from multipart.multipart import parse_options_header  # type: ignore[no-redef]

    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise ServiceError(422, "malformed multipart body: the Content-Type header has no boundary parameter")
    return boundary


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


_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_ZIP_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 93: "Zstandard"}
_ZIP_CHUNK = 1 << 16
_ZIP_MAX_ENTRIES_EXTRA = 64  # entries beyond max_files (folders, hidden files) a zip may list


def _zip_entry_count(data: bytes) -> int | None:
    """Entries a zip's end record declares, read before ``zipfile`` builds an object for each (None: no record)."""
    tail = data[-(22 + 0xFFFF) :]
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    count = int.from_bytes(tail[at + 10 : at + 12], "little")
    return None if count == 0xFFFF else count  # 0xFFFF: a zip64 count, checked by zipfile itself


def zip_member_name(filename: str) -> str:
    """The image id of a zip member: its base name, whether the zip used ``/`` or ``\\`` (``C:\\win\\x.jpg``)."""
    return PureWindowsPath(PurePosixPath(filename).name).name


def expand_zip(data: bytes, *, name: str, max_files: int, max_bytes: int) -> list[Upload]:
    """The images inside a zip (by suffix; folders flattened; hidden and ``__MACOSX`` entries skipped).

    Members are read in chunks with a running byte count, so the memory a zip costs is bounded by what it is
    allowed to expand to, whatever sizes its headers declare: a member yielding more bytes than it declares
    fails its CRC check, and the total may not exceed ``4 * max_bytes``. Only stored and deflate members are
    read (bzip2 and LZMA decompress without an output bound in Python's ``zipfile``).

    Args:
        max_files: most images allowed (413 beyond).
        max_bytes: the body limit; the zip may expand to ``4 * max_bytes`` in total (413 beyond).

    Raises:
        ServiceError: 422 for a bad zip, duplicate or missing images, encrypted or corrupt members; 413 for too
            many entries or members expanding too far; 415 for members compressed with another method.
    """
    entries = _zip_entry_count(data)
    if entries is not None and entries > max_files + _ZIP_MAX_ENTRIES_EXTRA:
        raise ServiceError(413, f"{name}: {entries} entries, more than the limit of {max_files} (--max-files)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as err:
        raise ServiceError(422, f"{name}: not a readable zip file ({err})") from err
    budget = _ZIP_EXPANSION * max_bytes
    with archive:
        infos = archive.infolist()
        if len(infos) > max_files + _ZIP_MAX_ENTRIES_EXTRA:
            raise ServiceError(413, f"{name}: {len(infos)} entries, more than the limit of {max_files} (--max-files)")
        members = []
        for info in infos:
            base = zip_member_name(info.filename)
            if info.is_dir() or info.filename.startswith("__MACOSX/") or not base or base.startswith("."):
                continue
            if PurePosixPath(base).suffix.lower() in IMAGE_SUFFIXES:
                members.append((base, info))
        if not members:
            raise ServiceError(422, f"{name}: the zip holds no images (suffixes {', '.join(IMAGE_SUFFIXES)})")
        if len(members) > max_files:
            raise ServiceError(413, f"{name}: {len(members)} images, more than the limit of {max_files} (--max-files)")
        for _, info in members:
            if info.compress_type not in _ZIP_METHODS:
                method = _ZIP_METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
                raise ServiceError(
                    415,
                    f"{name}: {info.filename!r} is compressed with {method}; only stored and deflate members are "
                    "accepted (the zip tool's default)",
                )
            if info.flag_bits & 0x1:
                raise ServiceError(422, f"{name}: {info.filename!r} is encrypted; send an unencrypted zip")
        expanded = sum(info.file_size for _, info in members)
        if expanded > budget:
            raise ServiceError(413, f"{name}: images expand to {_mib(expanded)}, more than {_mib(budget)}")
        out: list[Upload] = []
        total = 0
        for base, info in members:
            try:
                content, total = _read_member(archive, info, total, budget)
            except _ZipBudgetError as err:
                raise ServiceError(413, f"{name}: {info.filename!r} expands beyond {_mib(budget)} in total") from err
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, zlib.error) as err:
                raise ServiceError(422, f"{name}: cannot read {info.filename!r} ({err})") from err
            out.append(Upload(base, content))
    return out


class _ZipBudgetError(Exception):
    pass


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, total: int, budget: int) -> tuple[bytes, int]:
    """One member's bytes, read in chunks; ``_ZipBudgetError`` once ``total`` would pass ``budget``."""
    chunks: list[bytes] = []
    with archive.open(info) as member:  # stops at the declared size; the CRC check then catches a lie
        while chunk := member.read(_ZIP_CHUNK):
            total += len(chunk)
            if total > budget:
                raise _ZipBudgetError
            chunks.append(chunk)
    return b"".join(chunks), total


def _decode_error(err: ImageDecodeError) -> ServiceError:
    if err.unsupported:
        return ServiceError(415, str(err))
    if err.too_large:
        return ServiceError(413, f"{err} (--max-image-pixels)")
    return ServiceError(422, str(err))


async def probe_upload(upload: Upload, limits: ImageLimits, *, masks: bool = False) -> ImageHeader:
    """Read an upload's header (in the threadpool; no pixel decoded) and check it against ``limits``.

    Args:
        masks: mask or overlay PNGs were asked for (``max_mask_pixels`` applies).

    Raises:
        ServiceError: 413 above a limit (pixels, aspect ratio, network pixels, mask pixels), 415 for another
            format, 422 for an unreadable or multi-frame image.
    """
    try:
        header = await run_in_threadpool(probe_image, upload.data, max_pixels=limits.max_pixels, name=upload.name)
    except ImageDecodeError as err:
        raise _decode_error(err) from err
    limits.check(header, upload.name, masks=masks)
    return header


async def decode_upload(upload: Upload, *, max_pixels: int) -> np.ndarray:
    """Decode in the threadpool: ``(H, W, 3)`` uint8 RGB, or a ``ServiceError`` (413 / 415 / 422) saying why."""
    try:
        return await run_in_threadpool(decode_image, upload.data, max_pixels=max_pixels, name=upload.name)
    except ImageDecodeError as err:
        raise _decode_error(err) from err


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
