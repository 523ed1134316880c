"""The inference service: a FastAPI app serving one cascade bundle (see ``service.app.create_app``).

The names below load on first use (PEP 562), so ``service.cli`` (``cascade serve``'s registration, imported
at every ``cascade --help``) does not pull in FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.app import create_app
    from service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]

_LAZY = {"ServiceSettings": "service.settings", "create_app": "service.app"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'service' has no attribute {name!r}")
