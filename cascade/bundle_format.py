"""The bundle's stored form, and reading it without building a network.

Two forms, chosen by the path: a single ``*.safetensors`` file whose safetensors metadata holds the
manifest JSON under ``"manifest"``, or a directory holding ``manifest.json`` + ``weights.safetensors``.
Weight keys are prefixed ``classifier.`` and ``segmenter.<class_id>.``. This module names those files and
keys, defines ``BundleError`` and reads what a bundle stores (its manifest, its safetensors metadata, a
summary of its weights); :mod:`cascade.bundle` builds networks from a manifest and saves and loads them, and
re-exports everything public here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cascade.manifest import BundleManifest

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_KEY",
    "WEIGHTS_FILE",
    "BundleError",
    "is_file_bundle_path",
    "read_manifest",
    "safetensors_metadata",
    "segmenter_prefix",
    "weights_path",
    "weights_summary",
]

MANIFEST_KEY = "manifest"
"""safetensors metadata key holding the manifest JSON in the single-file form."""
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"


class BundleError(RuntimeError):
    """A bundle is missing, corrupt, incompatible or does not fit its manifest."""


def is_file_bundle_path(path: str | Path) -> bool:
    """True when ``path`` names the single-file form (``*.safetensors``), False for a directory."""
    return Path(path).suffix == ".safetensors"


def segmenter_prefix(class_id: int) -> str:
    """Weight-key prefix of class ``class_id``'s segmenter (the classifier's is ``classifier.``)."""
    return f"segmenter.{class_id}."


def weights_path(path: Path) -> Path:
    """The safetensors file of bundle ``path`` (the file itself, or the directory's ``weights.safetensors``)."""
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise BundleError(f"bundle directory {path} has no {WEIGHTS_FILE}")
        return weights
    if path.is_file():
        return path
    raise BundleError(f"bundle not found: {path} (expected a *.safetensors file or a directory with {MANIFEST_FILE})")


def safetensors_metadata(path: Path, bundle: Path) -> dict[str, str]:
    """The metadata of safetensors file ``path``; a corrupt header raises ``BundleError`` naming ``bundle``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # SafetensorError, OSError: a corrupt or truncated header
        raise BundleError(f"bundle {bundle} is corrupt or not a safetensors file ({path.name}: {err})") from err


def read_manifest(path: str | Path) -> BundleManifest:
    """Read only the manifest of a bundle (file or directory form).

    Raises:
        BundleError: missing path, unreadable file, missing/bad manifest JSON, or a newer format_version.
    """
    path = Path(path)
    weights = weights_path(path)
    if path.is_dir():
        manifest_file = path / MANIFEST_FILE
        if not manifest_file.is_file():
            raise BundleError(f"bundle directory {path} has no {MANIFEST_FILE}")
        try:
            text = manifest_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise BundleError(f"cannot read {manifest_file}: {err}") from err
    else:
        metadata = safetensors_metadata(weights, path)
        if MANIFEST_KEY not in metadata:
            raise BundleError(
                f"{path} is a safetensors file without a '{MANIFEST_KEY}' metadata entry: not a cascade bundle"
            )
        text = metadata[MANIFEST_KEY]
    try:
        return BundleManifest.from_json(text)
    except ValueError as err:
        raise BundleError(f"bundle {path} has a bad manifest: {err}") from err


def weights_summary(path: str | Path) -> dict[str, dict[str, Any]]:
    """Per network (``classifier``, ``segmenter.<id>``): ``tensors``, ``numel`` and stored ``dtypes`` (e.g. ``F16``)."""
    from safetensors import safe_open

    path = Path(path)
    weights = weights_path(path)
    safetensors_metadata(weights, path)
    tensors: dict[str, int] = {}
    numel: dict[str, int] = {}
    dtypes: dict[str, set[str]] = {}
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
            group = "classifier" if key.startswith("classifier.") else ".".join(key.split(".", 2)[:2])
            info = handle.get_slice(key)
            tensors[group] = tensors.get(group, 0) + 1
            numel[group] = numel.get(group, 0) + math.prod(info.get_shape())
            dtypes.setdefault(group, set()).add(info.get_dtype())
    return {g: {"tensors": tensors[g], "numel": numel[g], "dtypes": sorted(dtypes[g])} for g in tensors}
