"""Hostile input: every kind in the corpus gets its documented answer, and none holds memory hostage.

The corpus is raw HTTP (bytes on a socket), so header floods, bodies without a closing boundary, stalled
bodies and slow headers are sent exactly as an attacker would. ``test_hostile_input_gets_its_answer`` runs
it against the app under uvicorn with ``cascade serve``'s connection limits, in a thread;
``test_hostile_input_keeps_memory_bounded`` (slow) runs it against ``cascade serve`` in a subprocess and
samples the server's RSS during and after every request.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.loadgen import peak_rss, serving
from tests.fixtures.service import encode_image, free_port, loader_for, make_settings

CLOSED = 0
"""Expected status of a connection the server closes without an answer (slow or idle clients)."""

LIMITS = {
    "max_upload_mb": 2.0,
    "max_files": 8,
    "max_image_pixels": 4_000_000,
    "max_aspect_ratio": 100.0,
    "max_network_pixels": 1_000_000,
    "max_mask_pixels": 20_000,
    "memory_budget_mb": 24.0,
    "gui_cache_mb": 0.5,
    "max_header_kb": 16,
    "header_timeout_s": 1.0,
    "body_timeout_s": 1.0,
}
"""The server's limits for the corpus (small, so that each case is cheap to send)."""

RSS_GROWTH_MB = 200


@dataclass(frozen=True)
class Case:
    """One hostile request: the bytes (pieces with a pause after each), the status and text expected."""

    kind: str
    pieces: tuple[tuple[bytes, float], ...]
    status: int
    expect: str = ""
    refuse: str | None = None  # text that must not be in the answer (a misleading message)


# ----------------------------------------------------------------------------------------------- builders
def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _pil(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _good() -> bytes:
    rng = np.random.default_rng(0)
    return encode_image(rng.integers(0, 255, (128, 320, 3), dtype=np.uint8), "PNG")


def _zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buf.getvalue()


def _patch_zip(data: bytes, *, size: int | None = None, flags: int | None = None) -> bytes:
    """Rewrite the first member's declared uncompressed size and/or flag bits in both of its headers."""
    out = bytearray(data)
    for magic, size_at, flags_at in ((b"PK\x01\x02", 24, 8), (b"PK\x03\x04", 22, 6)):
        at = out.find(magic)
        if size is not None:
            out[at + size_at : at + size_at + 4] = size.to_bytes(4, "little")
        if flags is not None:
            out[at + flags_at : at + flags_at + 2] = flags.to_bytes(2, "little")
    return bytes(out)


def _request(
    path: str,
    body: bytes = b"",
    content_type: str | None = None,
    *,
    extra: list[tuple[str, str]] | None = None,
    length: int | None = None,
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Connection: close"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _multipart(
    path: str, files: list[tuple[str, str, str, bytes]], *, close: bool = True, fields: dict[str, str] | None = None
) -> bytes:
    boundary = "hostile0boundary0" + "x" * 8
    body = b""
    for name, value in (fields or {}).items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for field, filename, ctype, data in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        body += (head + f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    if close:
        body += f"--{boundary}--\r\n".encode()
    return _request(path, body, f"multipart/form-data; boundary={boundary}")


def _one(path: str, name: str, data: bytes, ctype: str = "application/octet-stream", **kwargs) -> tuple:
    return ((_multipart(path, [("file", name, ctype, data)], **kwargs), 0.0),)


def _batch(*members: tuple[str, bytes], ctype: str = "application/zip") -> tuple:
    return ((_multipart("/predict/batch", [("files", n, ctype, d) for n, d in members]), 0.0),)


def cases() -> list[Case]:
    """The corpus (built once; a few MB of bytes)."""
    good = _good()
    float_inf = np.full((16, 16), 0.5, np.float32)
    float_inf[3, 3] = np.inf
    frames = [Image.new("RGB", (32, 16), c) for c in ("black", "white")]
    tiff2 = _pil(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    apng = _pil(frames[0], "PNG", save_all=True, append_images=frames[1:])
    lying = _patch_zip(_zip([("a.jpg", bytes(30_000_000))]), size=1000)  # 30 MB of zeros declared as 1 KB
    encrypted = _patch_zip(_zip([("a.jpg", good)]), flags=0x1)
    too_many = _zip([(f"{i}.txt", b"") for i in range(500)] + [("a.png", good)])
    declared_huge = _patch_zip(_zip([("a.png", good)]), size=0x7FFFFFFF)
    big = bytes(int(LIMITS["max_upload_mb"] * 2**20) + 1)
    return [
        # thin and huge images: refused from the header, before decoding
        Case("thin-1x400000", _one("/predict", "t.png", _pil(Image.new("L", (400_000, 1)), "PNG")), 413, "aspect"),
        Case("thin-1x40000000", _one("/predict", "t.png", _png_header_only(40_000_000, 1)), 413, "pixels"),
        Case("tall-400000x1", _one("/predict", "t.png", _png_header_only(1, 400_000)), 413, "aspect ratio"),
        Case("thin-in-zip", _batch(("z.zip", _zip([("t.png", _png_header_only(100_000, 2))]))), 413, "aspect"),
        Case(
            "bomb-png",
            _one("/predict", "b.png", _png_header_only(5_000, 5_000)),
            413,
            "more than the limit of 4000000 pixels",
        ),
        Case(
            "bomb-over-pillow-limit",
            _one("/predict", "b.png", _png_header_only(50_000, 50_000)),
            413,
            "4000000 pixels",
            refuse="178956970",
        ),
        Case("network-pixels", _one("/predict", "n.png", _png_header_only(1_000, 1_000)), 413, "network pixels"),
        Case("memory-budget", _one("/predict", "m.png", _png_header_only(1_000, 700)), 413, "--memory-budget-mb"),
        Case("masks-too-large", _one("/predict?masks=true", "k.png", good), 413, "masks and overlays"),
        Case("overlay-too-large", _one("/predict?overlay=true", "k.png", good), 413, "masks and overlays"),
        Case("gui-cache-too-small", _one("/gui/analyze", "g.png", _png_header_only(300, 300)), 413, "GUI cache"),
        # zips
        Case("zip-bzip2", _batch(("z.zip", _zip([("a.jpg", bytes(10**6))], zipfile.ZIP_BZIP2))), 415, "bzip2"),
        Case("zip-lzma", _batch(("z.zip", _zip([("a.jpg", bytes(10**6))], zipfile.ZIP_LZMA))), 415, "LZMA"),
        Case("zip-lying-size", _batch(("z.zip", lying)), 422, "CRC"),
        Case("zip-declared-huge", _batch(("z.zip", declared_huge)), 413, "expand to"),
        Case("zip-encrypted", _batch(("z.zip", encrypted)), 422, "encrypted"),
        Case("zip-many-entries", _batch(("z.zip", too_many)), 413, "entries"),
        Case("zip-windows-path", _batch(("z.zip", _zip([("C:\\win\\x.png", good)]))), 200, "\nx.png_1,"),
        Case("zip-traversal", _batch(("z.zip", _zip([("../../etc/y.png", good)]))), 200, "\ny.png_1,"),
        Case("zip-no-images", _batch(("z.zip", _zip([("a.txt", b"hello")]))), 422, "no images"),
        Case("zip-corrupt", _batch(("z.zip", b"PK\x03\x04" + bytes(100))), 422, "not a readable zip"),
        # silently wrong results, now refused
        Case("tiff-multi-frame", _one("/predict", "m.tif", tiff2), 422, "more than one frame"),
        Case("png-animated", _one("/predict", "a.png", apng), 422, "more than one frame"),
        Case("tiff-float-inf", _one("/predict", "f.tif", _pil(Image.fromarray(float_inf), "TIFF")), 422, "infinite"),
        # misleading messages
        Case(
            "gui-two-files",
            ((_multipart("/gui/analyze", [("file", "a.png", "image/png", good)] * 2), 0.0),),
            422,
            "one image per analysis",
            refuse="--max-files",
        ),
        Case(
            "multipart-no-closing-boundary",
            _one("/predict", "c.png", good, close=False),
            422,
            "closing boundary",
            refuse="got 0 files",
        ),
        Case("multipart-no-boundary", ((_request("/predict", b"x", "multipart/form-data"), 0.0),), 422, "boundary"),
        # bodies and headers
        Case(
            "body-over-limit",
            ((_request("/predict", big, "image/png"), 0.0),),
            413,
            "larger than the limit",
        ),
        Case(
            "body-length-lies-high",
            ((_request("/predict", b"", "image/png", length=10**12), 0.0),),
            413,
            "larger than the limit",
        ),
        Case("bad-content-length", ((_request("/predict", b"", "image/png", length=-1), 0.0),), 400),
        Case(
            "header-flood-one",
            ((_request("/predict", b"", "image/png", extra=[("X-Big", "a" * 1_000_000)]), 0.0),),
            431,
            "larger than the limit of 16 KiB",
        ),
        Case(
            "header-flood-many",
            ((_request("/predict", b"", "image/png", extra=[(f"X-{i}", "b" * 100) for i in range(2_000)]), 0.0),),
            431,
            "CASCADE_MAX_HEADER_KB",
        ),
        Case(
            "body-stalls",
            ((_request("/predict", good, "image/png")[:-1000], 2.5),),
            408,
            "no data for 1 s (--body-timeout)",
        ),
        Case("headers-slowloris", ((b"POST /predict HTTP/1.1\r\nHost: test\r\n", 2.5),), CLOSED),
        Case("connection-idle", ((b"", 2.5),), CLOSED),
        Case("garbage-request-line", ((b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), 0.0),), 400),
        # types, counts, broken images
        Case("unsupported-type", ((_request("/predict", b"{}", "application/json"), 0.0),), 415, "content type"),
        Case("gif", _one("/predict", "g.gif", _pil(Image.new("L", (8, 8)), "GIF")), 415),
        Case("truncated-png", _one("/predict", "t.png", good[: len(good) // 2]), 422),
        Case("empty-file", _one("/predict", "e.png", b""), 422, "empty"),
        Case("too-many-files", _batch(*[(f"{i}.png", good) for i in range(9)], ctype="image/png"), 413, "at most 8"),
        Case("duplicate-names", _batch(("a.png", good), ("sub/a.png", good), ctype="image/png"), 422, "duplicate"),
    ]


CASES = cases()


# ----------------------------------------------------------------------------------------------- the client
def send(port: int, case: Case, timeout: float = 30.0) -> tuple[int, str]:
    """Send a case's pieces and read the answer until the server closes: ``(status or CLOSED, text)``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for piece, pause in case.pieces:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):  # answered (and closed) before it read everything
                break
            time.sleep(pause)
        chunks = []
        try:
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    raw = b"".join(chunks)
    if not raw:
        return CLOSED, ""
    status = int(raw.split(b" ", 2)[1])
    return status, raw.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


def check(case: Case, status: int, text: str) -> None:
    assert status == case.status, f"{case.kind}: {status} {text[:300]}"
    assert case.expect in text, f"{case.kind}: {text[:300]}"
    if case.refuse is not None:
        assert case.refuse not in text, f"{case.kind}: {text[:300]}"


def _ids(values: list[Case]) -> list[str]:
    return [c.kind for c in values]


def test_the_corpus_covers_at_least_30_kinds() -> None:
    assert len({c.kind for c in CASES}) == len(CASES) >= 30


# ----------------------------------------------------------------------------------------------- in a thread
@pytest.fixture(scope="module")
def hostile_port(tmp_path_factory: pytest.TempPathFactory, service_predictor) -> Iterator[int]:
    """The app under uvicorn with ``cascade serve``'s configuration and the corpus limits, in a thread."""
    import uvicorn

    from service import create_app
    from service.server import uvicorn_config

    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("hostile"), port=port, workers=1, **LIMITS)
    app = create_app(settings, loader=loader_for(service_predictor))
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-hostile", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    assert app.state.cascade.wait_loaded(120)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def _good_request() -> Case:
    return Case("good", _one("/predict", "good.png", _good()), 200, '"image_id":"good.png"')


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_hostile_input_gets_its_answer(hostile_port: int, case: Case) -> None:
    status, text = send(hostile_port, case)
    check(case, status, text)
    good = _good_request()
    check(good, *send(hostile_port, good))  # and the server still serves


# ----------------------------------------------------------------------------------------------- in a subprocess
@contextmanager
def _server_process(bundle: Path, state_dir: Path) -> Iterator[tuple[int, int]]:
    """``cascade serve`` with the corpus limits: yields ``(port, pid)``."""
    port = free_port()
    env = {f"CASCADE_{k.upper()}": str(v) for k, v in LIMITS.items() if k != "body_timeout_s"}
    options = ["--runtime", "torch", "--device", "cpu", "--workers", "1", "--threads", "1"]
    options += ["--body-timeout", str(LIMITS["body_timeout_s"])]
    with serving(port, state_dir, *options, bundle=str(bundle), env=env) as proc:
        yield port, proc.pid


@pytest.mark.slow
def test_hostile_input_keeps_memory_bounded(tmp_path: Path, tiny_bundle_path: Path) -> None:
    import psutil

    with _server_process(tiny_bundle_path, tmp_path / "state") as (port, pid):
        good = _good_request()
        for _ in range(3):  # warm-up: first-call costs of the runtime and the server
            check(good, *send(port, good))
        baseline = psutil.Process(pid).memory_info().rss / 2**20
        report = []
        for case in CASES:
            peak, (status, text) = peak_rss(pid, lambda case=case: send(port, case))
            after = psutil.Process(pid).memory_info().rss / 2**20
            report.append(f"{case.kind}: {status}, peak +{peak - baseline:.0f} MB, after +{after - baseline:.0f} MB")
            check(case, status, text)
            assert peak - baseline < RSS_GROWTH_MB, "\n".join(report)
            assert after - baseline < RSS_GROWTH_MB, "\n".join(report)
        check(good, *send(port, good))
        print("\n".join(report))
