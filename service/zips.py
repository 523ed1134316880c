"""Zips of images sent to ``/predict/batch``: expanded with their memory bounded, whatever their headers claim."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import PurePosixPath, PureWindowsPath

from service.errors import ServiceError
from service.uploads import Upload

__all__ = ["IMAGE_SUFFIXES", "expand_zip", "zip_member_name"]

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
"""File suffixes picked from zips."""

_ZIP_EXPANSION = 4  # a zip may expand to this many times the body limit
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_ZIP_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 93: "Zstandard"}
_ZIP_CHUNK = 1 << 16
_ZIP_MAX_ENTRIES_EXTRA = 64  # entries beyond max_files (folders, hidden files) a zip may list


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


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
