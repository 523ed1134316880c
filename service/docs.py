"""The API docs (Swagger UI at ``/docs``, ReDoc at ``/redoc``) served from this service, not from a CDN.

FastAPI's own docs pages load their scripts and styles from a CDN, so on an air-gapped plant network they
stay blank. The ``fastapi-offline`` package (in the ``[serve]`` extra) ships those files; they are mounted
at ``/docs-assets`` and the pages point there. Without the package the pages fall back to the CDN (logged).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_ASSETS_URL", "docs_assets_dir", "install_docs"]

logger = logging.getLogger(__name__)

DOCS_ASSETS_URL = "/docs-assets"
"""Where the Swagger UI and ReDoc files are served."""

_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def docs_assets_dir() -> Path | None:
    """The folder of the installed ``fastapi-offline`` package holding the docs' files, or None."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if all((folder / name).is_file() for name in _FILES) else None


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add the docs pages to an app built with ``docs_url=None, redoc_url=None``.

    Args:
        app: the service.
        docs_url: path of the Swagger UI page (its OAuth2 redirect is ``<docs_url>/oauth2-redirect``).
        redoc_url: path of the ReDoc page.
    """
    assets = docs_assets_dir()
    local: dict[str, str] = {}
    redoc_local: dict[str, str] = {}
    if assets is None:
        logger.warning("fastapi-offline is not installed: /docs and /redoc load Swagger UI and ReDoc from a CDN")
    else:
        app.mount(DOCS_ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")
        local = {
            "swagger_js_url": f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            "swagger_css_url": f"{DOCS_ASSETS_URL}/swagger-ui.css",
            "swagger_favicon_url": f"{DOCS_ASSETS_URL}/favicon.png",
        }
        redoc_local = {"redoc_js_url": f"{DOCS_ASSETS_URL}/redoc.standalone.js",
                       "redoc_favicon_url": f"{DOCS_ASSETS_URL}/favicon.png"}  # fmt: skip
    oauth2_url = f"{docs_url}/oauth2-redirect"
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - API docs", oauth2_redirect_url=oauth2_url, **local
        )

    @app.get(oauth2_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url, title=f"{app.title} - ReDoc", with_google_fonts=False, **redoc_local
        )
