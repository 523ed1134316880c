"""Bad input gets a clear 4xx and the server stays up: sizes, types, broken images, bombs, file counts, API key."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.fixtures.service import encode_image, loader_for, make_settings, running_client

LIMIT_MB = 0.25
MAX_FILES = 3
MAX_PIXELS = 200_000


@pytest.fixture(scope="module")
def strict_client(tmp_path_factory: pytest.TempPathFactory, service_predictor) -> Iterator[TestClient]:
    """An app with small limits: 0.25 MiB bodies, 3 files, 200k-pixel images."""
    settings = make_settings(
        tmp_path_factory.mktemp("strict"), max_upload_mb=LIMIT_MB, max_files=MAX_FILES, max_image_pixels=MAX_PIXELS
    )
    with running_client(settings, loader_for(service_predictor)) as client:
        yield client


@pytest.fixture(scope="module")
def good_png(service_images: list[np.ndarray]) -> bytes:
    return encode_image(service_images[0], "PNG")


def _assert_still_serves(client: TestClient, good_png: bytes, **kwargs) -> None:
    response = client.post("/predict", files={"file": ("good.png", good_png, "image/png")}, **kwargs)
    assert response.status_code == 200, response.text
    assert response.json()["image_id"] == "good.png"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` pixels with almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _bad_requests(good_png: bytes) -> list[tuple[str, dict, int, str]]:
    big = bytes(int(LIMIT_MB * 1024 * 1024) + 1000)
    truncated = good_png[: len(good_png) // 2]
    gif = encode_image(np.zeros((8, 8), np.uint8), "GIF")
    return [
        ("too large", {"files": {"file": ("big.png", big, "image/png")}}, 413, "larger than the limit of 0.25 MiB"),
        ("declared text", {"files": {"file": ("a.txt", b"hello", "text/plain")}}, 415, "unsupported media type"),
        ("gif bytes", {"files": {"file": ("a.gif", gif, "application/octet-stream")}}, 415, "'GIF'; allowed: JPEG"),
        ("not an image", {"files": {"file": ("x.jpg", b"hello world", "image/jpeg")}}, 415, "not a recognised image"),
        ("form urlencoded", {"data": {"file": "x"}}, 415, "unsupported request content type"),
        ("json body", {"json": {"file": "x"}}, 415, "unsupported request content type"),
        ("truncated", {"files": {"file": ("cut.png", truncated, "image/png")}}, 422, "cut.png: cannot decode image"),
        ("empty", {"files": {"file": ("empty.png", b"", "image/png")}}, 422, "empty.png: empty file"),
        ("no file", {"files": {"other": (None, "text")}}, 422, "exactly one image"),
        ("two files", {"files": [("file", ("a.png", good_png)), ("file", ("b.png", good_png))]}, 422, "got 2 files"),
        ("bomb", {"files": {"file": ("bomb.png", _png_header_only(50_000, 50_000))}}, 413, "decompression bomb"),
        ("over pixels", {"files": {"file": ("wide.png", encode_image(np.zeros((300, 700), np.uint8), "PNG"))}},
         413, "more than the limit of 200000"),
        ("four files", {"files": [("file", (f"{i}.png", good_png)) for i in range(4)]}, 413, "too many files"),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(13))
def test_bad_predict_input_is_refused_clearly_and_the_server_stays_up(
    strict_client: TestClient, good_png: bytes, case: int
) -> None:
    name, kwargs, status, message = _bad_requests(good_png)[case]
    response = strict_client.post("/predict", **kwargs)
    assert response.status_code == status, f"{name}: {response.text}"
    assert message in response.json()["detail"], name
    _assert_still_serves(strict_client, good_png)


def test_body_limit_counts_bytes_without_content_length(strict_client: TestClient, good_png: bytes) -> None:
    chunk = bytes(64 * 1024)

    def _body() -> Iterator[bytes]:  # a generator body is sent chunked, without Content-Length
        yield b"\x89PNG\r\n\x1a\n"
        for _ in range(8):
            yield chunk

    response = strict_client.post("/predict", content=_body(), headers={"content-type": "image/png"})
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["detail"]
    _assert_still_serves(strict_client, good_png)


def test_batch_limits(strict_client: TestClient, good_png: bytes) -> None:
    too_many = [("files", (f"{i}.png", good_png, "image/png")) for i in range(MAX_FILES + 1)]
    response = strict_client.post("/predict/batch", files=too_many)
    assert response.status_code == 413 and "too many files" in response.json()["detail"]

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(MAX_FILES + 1):
            archive.writestr(f"{i}.png", good_png)
    response = strict_client.post("/predict/batch", files={"files": ("many.zip", buf.getvalue(), "application/zip")})
    assert response.status_code == 413 and "4 images, more than the limit of 3" in response.json()["detail"]

    response = strict_client.post("/predict/batch", files={"files": ("broken.zip", b"PK\x03\x04garbage")})
    assert response.status_code == 422 and "not a readable zip file" in response.json()["detail"]

    duplicate = [("files", ("same.png", good_png)), ("files", ("dir/same.png", good_png))]
    response = strict_client.post("/predict/batch", files=duplicate)
    assert response.status_code == 422 and "duplicate image names ['same.png']" in response.json()["detail"]

    mixed = [("files", ("ok.png", good_png)), ("files", ("bad.png", good_png[:100]))]
    response = strict_client.post("/predict/batch", files=mixed)
    assert response.status_code == 422 and "bad.png: cannot decode image" in response.json()["detail"]

    response = strict_client.post("/predict/batch", files={"note": (None, "no files")})
    assert response.status_code == 422 and "no images" in response.json()["detail"]
    ok = strict_client.post("/predict/batch", files=[("files", ("ok.png", good_png))])
    assert ok.status_code == 200 and ok.text.count("\n") == 5


def test_api_key_is_required_when_configured(tmp_path: Path, service_predictor, good_png: bytes) -> None:
    settings = make_settings(tmp_path, api_key="s3cret-key")
    with running_client(settings, loader_for(service_predictor)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/").status_code == 200  # the GUI page itself is open; its API calls are not
        missing = client.post("/predict", files={"file": ("good.png", good_png)})
        assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = client.post("/predict", files={"file": ("good.png", good_png)}, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong API key"
        bad_bearer = client.get("/model", headers={"Authorization": "Bearer nope"})
        assert bad_bearer.status_code == 401
        for path in ("/metrics", "/model", "/jobs", "/gui/config"):
            assert client.get(path).status_code == 401, path
        _assert_still_serves(client, good_png, headers={"X-API-Key": "s3cret-key"})
        _assert_still_serves(client, good_png, headers={"Authorization": "Bearer s3cret-key"})
        assert client.get("/metrics", headers={"X-API-Key": "s3cret-key"}).status_code == 200
