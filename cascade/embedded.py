"""Bundles shipped as package data (``cascade/data/<name>.cascade.safetensors``), resolvable by name.

``demo`` is the default (trained on synthetic Severstal-like data); ``neu-seg`` is trained on the real
NEU-Seg steel set (3 classes, 200x200). Everywhere a bundle is accepted, a name from
``embedded_bundle_names()`` stands for the shipped file; anything else is a path.

``CASCADE_BUNDLES_DIR`` names another folder to take the shipped bundles from (a site's own bundles, or a
test's tiny one), instead of the package's ``cascade/data``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from cascade.bundle_format import BundleError

__all__ = [
    "BUNDLES_DIR_ENV",
    "DEFAULT_BUNDLE",
    "EMBEDDED_BUNDLE_FILE",
    "bundles_dir",
    "embedded_bundle_exists",
    "embedded_bundle_names",
    "embedded_bundle_path",
    "resolve_bundle",
]

DEFAULT_BUNDLE = "demo"
"""Name of the bundle used when none is given."""

_SUFFIX = ".cascade.safetensors"

EMBEDDED_BUNDLE_FILE = DEFAULT_BUNDLE + _SUFFIX
"""File name of the demo bundle inside the ``cascade/data`` package directory."""


BUNDLES_DIR_ENV = "CASCADE_BUNDLES_DIR"
"""Environment variable naming the folder of shipped bundles; unset or empty: the package's ``cascade/data``."""


def bundles_dir() -> Path:
    """The folder the shipped bundles are taken from: ``$CASCADE_BUNDLES_DIR``, else ``cascade/data``."""
    override = os.environ.get(BUNDLES_DIR_ENV)
    if override:
        return Path(override)
    return Path(str(resources.files("cascade").joinpath("data")))


def _candidate(name: str = DEFAULT_BUNDLE) -> Path:
    return bundles_dir() / f"{name}{_SUFFIX}"


def embedded_bundle_names() -> tuple[str, ...]:
    """Names of the bundles shipped in the installed package, sorted."""
    folder = bundles_dir()
    if not folder.is_dir():
        return ()
    return tuple(sorted(p.name.removesuffix(_SUFFIX) for p in folder.glob(f"*{_SUFFIX}")))


def embedded_bundle_exists(name: str = DEFAULT_BUNDLE) -> bool:
    """Whether the named bundle is present in the installed package."""
    return _candidate(name).is_file()


def embedded_bundle_path(name: str = DEFAULT_BUNDLE) -> Path:
    """Path of a shipped bundle.

    Raises:
        BundleError: the bundle is not shipped (the demo bundle: run ``make retrain``).
    """
    path = _candidate(name)
    if not path.is_file():
        if name == DEFAULT_BUNDLE:
            raise BundleError(
                f"the embedded demo bundle is missing at {path}; run `make retrain` to train it, "
                "or pass the path of a bundle explicitly"
            )
        raise BundleError(f"no embedded bundle named {name!r}; shipped bundles: {list(embedded_bundle_names())}")
    return path


def resolve_bundle(path: str | Path | None) -> Path:
    """The bundle file meant by ``path``: the demo bundle for None, a shipped bundle for its name
    (``"neu-seg"``, or ``"embedded:neu-seg"``), else ``path`` itself.

    Raises:
        BundleError: None or a name and that bundle is missing.
    """
    if path is None:
        return embedded_bundle_path()
    text = str(path)
    if text.startswith("embedded:"):
        return embedded_bundle_path(text.removeprefix("embedded:").removesuffix(_SUFFIX))
    if not Path(text).exists() and "/" not in text and "\\" not in text and embedded_bundle_exists(text):
        return embedded_bundle_path(text)
    return Path(path)
