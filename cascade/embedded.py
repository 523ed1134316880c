"""The embedded demo bundle shipped as package data (``cascade/data/demo.cascade.safetensors``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cascade.bundle import BundleError

__all__ = ["EMBEDDED_BUNDLE_FILE", "embedded_bundle_exists", "embedded_bundle_path", "resolve_bundle"]

EMBEDDED_BUNDLE_FILE = "demo.cascade.safetensors"
"""File name of the demo bundle inside the ``cascade/data`` package directory."""


def _candidate() -> Path:
    return Path(str(resources.files("cascade").joinpath("data", EMBEDDED_BUNDLE_FILE)))


def embedded_bundle_exists() -> bool:
    """Whether the demo bundle is present in the installed package."""
    return _candidate().is_file()


def embedded_bundle_path() -> Path:
    """Path of the demo bundle.

    Raises:
        BundleError: the bundle has not been built (run ``make retrain``).
    """
    path = _candidate()
    if not path.is_file():
        raise BundleError(
            f"the embedded demo bundle is missing at {path}; run `make retrain` to train it, "
            "or pass the path of a bundle explicitly"
        )
    return path


def resolve_bundle(path: str | Path | None) -> Path:
    """``path`` as a ``Path``, or the embedded demo bundle when ``path`` is None.

    Raises:
        BundleError: ``path`` is None and the demo bundle is missing.
    """
    return embedded_bundle_path() if path is None else Path(path)
