"""The inference service: a FastAPI app serving one cascade bundle (see ``service.app.create_app``)."""

from __future__ import annotations

from service.app import create_app
from service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
