"""Tests for service/docs.py: /docs and /redoc work without internet access, with or without an API key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service import create_app
from service.docs import DOCS_ASSETS_URL, docs_assets_dir
from tests.fixtures.service import make_settings


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    if docs_assets_dir() is None:
        pytest.fail("fastapi-offline is not installed: `pip install -e '.[serve]'`")
    # no lifespan: the docs need no model; with an API key they must stay open
    return TestClient(create_app(make_settings(tmp_path, api_key="secret")))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: *["']([^"']+)["']""", html)
    urls = [u for pair in urls for u in pair if u]
    external = [u for u in urls if u.startswith(("http://", "https://", "//"))]
    assert not external, f"{page} loads from outside the service: {external}"
    assets = [u for u in urls if u.startswith(DOCS_ASSETS_URL)]
    assert assets, html
    for url in assets:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url


def test_swagger_ui_is_the_real_bundle(client: TestClient) -> None:
    js = client.get(f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js")
    assert "javascript" in js.headers["content-type"]
    assert "SwaggerUIBundle" in js.text[:2000]
    assert client.get("/docs/oauth2-redirect").status_code == 200


def test_metrics_needs_the_key_and_openapi_says_so(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": "secret"}).status_code == 200
    description = client.get("/openapi.json").json()["info"]["description"]
    assert "/metrics" in description and "needs it too" in description
