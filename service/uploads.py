"""Taking uploads apart safely: multipart parsing, type checks and decoding (body limits in
``service.body_limit``, zips in ``service.zips``).

Every check happens before an image reaches the inference worker, and decoding runs in the threadpool,
so nothing a client sends can block the event loop or kill the worker:

- body larger than ``max_upload_mb`` -> 413, from the ``Content-Length`` header at once, else by counting
  bytes as they arrive (``BodyLimitMiddleware``, re-exported here);
- more files than ``max_files`` (multipart parts or zip members) -> 413;
- a part whose declared type is not an image, or bytes that are no JPEG/PNG/BMP/TIFF -> 415;
- empty, truncated or corrupt images, bad zips -> 422 saying why;
- images above ``max_image_pixels`` (decompression bombs) and zips expanding too far -> 413.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from cascade.imageio import ImageDecodeError, ImageHeader, decode_image, probe_image
from service.body_limit import BodyLimitMiddleware
from service.errors import ServiceError
from service.limits import ImageLimits

__all__ = [
    "BINARY",
    "IMAGE_MEDIA_TYPES",
    "BodyLimitMiddleware",
    "Upload",
    "close_form",
    "decode_upload",
    "is_zip",
    "multipart_body",
    "probe_upload",
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

_ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-zip")
_NEUTRAL_TYPES = ("", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name (image id) and bytes."""

    name: str
    data: bytes


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

BINARY: dict = {"type": "string", "format": "binary"}
"""OpenAPI schema of a file part (or of a raw body)."""


def multipart_body(
    parts: Mapping[str, dict], *, required: Sequence[str] = (), others: Mapping[str, dict] | None = None
) -> dict:
    """OpenAPI ``requestBody`` of a route that parses its own form (``read_form``), for ``openapi_extra``.

    Why not FastAPI's ``File``/``UploadFile`` parameters (issue 13 asked): FastAPI reads and parses the whole
    form before it runs a route's dependencies or body, so a request without a valid API key, or one arriving
    at a full queue, would be spooled in full (up to ``--max-upload-mb``) before its 401/503; and a raw
    ``image/*`` body, which ``/predict`` also accepts, cannot be declared as ``File``. The routes therefore
    authenticate and admit first, then parse (``read_form``), and describe the body here.

    Args:
        parts: form part name -> its schema (``BINARY`` for a file).
        required: the parts that must be sent.
        others: further content types the route accepts -> their schema (e.g. a raw ``image/png`` body).
    """
    schema: dict = {"type": "object", "properties": dict(parts)}
    if required:
        schema["required"] = list(required)
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}, **(others or {})}}


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


def _decode_error(err: ImageDecodeError) -> ServiceError:
    if err.unsupported:
        return ServiceError(415, str(err))
    if err.too_large:
        return ServiceError(413, f"{err} (--max-image-pixels)")
    return ServiceError(422, str(err))


_INLINE_PROBE_BYTES = 1 << 20
"""Uploads up to this size have their header read on the event loop (see ``probe_upload``)."""


async def probe_upload(upload: Upload, limits: ImageLimits, *, masks: bool = False) -> ImageHeader:
    """Read an upload's header (no pixel decoded) and check it against ``limits``: on the event loop up to
    ``_INLINE_PROBE_BYTES`` (about 50 microseconds, less than a threadpool hop costs), in the threadpool above it
    (a crafted file's marker chain takes time in proportion to its size).

    Args:
        masks: mask or overlay PNGs were asked for (``max_mask_pixels`` applies).

    Raises:
        ServiceError: 413 above a limit (pixels, aspect ratio, network pixels, mask pixels), 415 for another
            format, 422 for an unreadable or multi-frame image.
    """
    try:
        if len(upload.data) <= _INLINE_PROBE_BYTES:
            header = probe_image(upload.data, max_pixels=limits.max_pixels, name=upload.name)
        else:
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
