"""Export a bundle's networks to ONNX and OpenVINO IR, and cache the exports per bundle.

An export directory is self-describing: ``classifier.<ext>``, ``segmenter_<id>.<ext>`` and
``manifest.json`` (the bundle's manifest, its provenance extended with an ``export`` entry giving the
format and the I/O contract). Every exported network takes ``image``: ``(N, 3, H, W)`` float32,
normalised with the manifest's ``normalization`` and padded to its ``input_policy.stride``, with
dynamic N, H and W, and returns ``probs``: *probabilities* (sigmoid included), ``(N, 4)`` for the
classifier and ``(N, 1, H, W)`` for a segmenter.

Runtimes export once per bundle: ``cached_export`` keeps the files under
``<cache root>/<first 16 hex of the bundle fingerprint>/<format>/``, the root being ``$CASCADE_CACHE_DIR``
or ``~/.cache/steel-cascade``. The fingerprint is a sha256 over the model specs and every weight, so a
retrained or fine-tuned bundle never reuses a stale export.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from cascade.bundle import LoadedBundle, load_bundle
from cascade.manifest import BundleManifest

__all__ = [
    "EXPORT_FORMATS",
    "ONNX_OPSET",
    "bundle_cache_dir",
    "bundle_fingerprint",
    "cache_root",
    "cached_export",
    "export_model_onnx",
    "export_onnx",
    "export_openvino",
    "load_export",
]

logger = logging.getLogger(__name__)

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "openvino")
"""Formats ``cascade export`` writes."""

ONNX_OPSET: int = 17
"""ONNX opset of exported models."""

_EXT = {"onnx": ".onnx", "openvino": ".xml"}
_SAMPLE_SHAPE = (1, 3, 64, 64)  # small: tracing runs the network; all axes but C are dynamic


class _Probabilities(nn.Module):
    """``sigmoid(model(x))``: exported graphs return probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(image))


def _as_bundle(bundle: LoadedBundle | str | Path) -> LoadedBundle:
    return bundle if isinstance(bundle, LoadedBundle) else load_bundle(bundle)


def _networks(bundle: LoadedBundle) -> dict[str, nn.Module]:
    return {"classifier": bundle.classifier} | {f"segmenter_{cid}": m for cid, m in bundle.segmenters.items()}


def export_model_onnx(model: nn.Module, path: str | Path, *, opset: int = ONNX_OPSET) -> Path:
    """Export one network (plus sigmoid) to ONNX with dynamic batch, height and width.

    Args:
        model: maps ``(N, 3, H, W)`` to logits ``(N, C)`` or ``(N, C, H, W)``; left in its train/eval state.
        path: destination ``.onnx`` file.
        opset: ONNX opset version.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    device = next(model.parameters(), torch.empty(0)).device
    wrapper = _Probabilities(model).eval()
    sample = torch.zeros(_SAMPLE_SHAPE, device=device)
    with torch.inference_mode():
        spatial = wrapper(sample).dim() == 4
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python-level shape checks
            torch.onnx.export(
                wrapper,
                (sample,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=["probs"],
                dynamic_axes={"image": axes, "probs": axes if spatial else {0: "batch"}},
            )
    finally:
        model.train(was_training)
    return path


def _export_manifest(manifest: BundleManifest, fmt: str, files: dict[str, Path], out_dir: Path) -> Path:
    export = {
        "format": fmt,
        "files": {key: path.name for key, path in files.items()},
        "input": {"name": "image", "shape": ["N", 3, "H", "W"], "dtype": "float32", "normalized": True},
        "output": {"name": "probs", "activation": "sigmoid"},
        "opset": ONNX_OPSET,
        "torch": torch.__version__,
    }
    described = dataclasses.replace(manifest, provenance={**manifest.provenance, "export": export})
    path = out_dir / "manifest.json"
    path.write_text(described.to_json() + "\n", encoding="utf-8")
    return path


def export_onnx(
    bundle: LoadedBundle | str | Path,
    out_dir: str | Path,
    *,
    opset: int = ONNX_OPSET,
    on_network: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write ``classifier.onnx``, ``segmenter_<id>.onnx`` and ``manifest.json`` into ``out_dir``.

    Args:
        bundle: a loaded bundle, or the path of one.
        out_dir: destination directory (created).
        opset: ONNX opset version.
        on_network: called with each network's key once it is written (progress bars).

    Returns:
        ``"classifier"``, ``"segmenter_<id>"``, ``"manifest"`` -> written path.
    """
    bundle = _as_bundle(bundle)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for key, module in _networks(bundle).items():
        files[key] = export_model_onnx(module, out_dir / f"{key}.onnx", opset=opset)
        if on_network is not None:
            on_network(key)
    files["manifest"] = _export_manifest(bundle.manifest, "onnx", files, out_dir)
    logger.info("exported %d ONNX networks to %s", len(files) - 1, out_dir)
    return files


def export_openvino(
    bundle: LoadedBundle | str | Path,
    out_dir: str | Path,
    *,
    onnx_files: dict[str, Path] | None = None,
    on_network: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write OpenVINO IR (``<name>.xml`` + ``.bin``, fp32 weights) and ``manifest.json`` into ``out_dir``.

    Args:
        bundle: a loaded bundle, or the path of one.
        out_dir: destination directory (created).
        onnx_files: existing ONNX exports to convert (exported to a temporary directory when None).
        on_network: called with ``"onnx:<key>"`` / ``"openvino:<key>"`` after each step (progress bars).

    Returns:
        ``"classifier"``, ``"segmenter_<id>"``, ``"manifest"`` -> written path (``.xml`` for networks).
    """
    import openvino as ov

    bundle = _as_bundle(bundle)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cascade-onnx-") as tmp:
        step = (lambda key: on_network(f"onnx:{key}")) if on_network is not None else None
        sources = onnx_files or export_onnx(bundle, tmp, on_network=step)
        files: dict[str, Path] = {}
        for key in _networks(bundle):
            files[key] = out_dir / f"{key}.xml"
            ov.save_model(ov.convert_model(str(sources[key])), str(files[key]), compress_to_fp16=False)
            if on_network is not None:
                on_network(f"openvino:{key}")
    files["manifest"] = _export_manifest(bundle.manifest, "openvino", files, out_dir)
    logger.info("exported %d OpenVINO networks to %s", len(files) - 1, out_dir)
    return files


def load_export(out_dir: str | Path) -> tuple[BundleManifest, dict[str, Path]]:
    """Read an export directory: its manifest and ``"classifier"``/``"segmenter_<id>"`` -> network file.

    Raises:
        FileNotFoundError: no ``manifest.json`` or a listed network file is missing.
        ValueError: the manifest is not an export manifest.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{out_dir} is not an export directory: no manifest.json")
    manifest = BundleManifest.from_json(manifest_path.read_text(encoding="utf-8"))
    export = manifest.provenance.get("export")
    if not isinstance(export, dict) or export.get("format") not in EXPORT_FORMATS:
        raise ValueError(f"{manifest_path} has no provenance.export entry with a format in {list(EXPORT_FORMATS)}")
    files = {key: out_dir / name for key, name in export["files"].items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"export directory {out_dir} is missing {missing}")
    return manifest, files


def bundle_fingerprint(bundle: LoadedBundle) -> str:
    """sha256 hex digest of the model specs and every weight of ``bundle``."""
    digest = hashlib.sha256()
    specs = {"classifier": bundle.manifest.classifier.to_dict()} | {
        f"segmenter_{cid}": spec.to_dict() for cid, spec in bundle.manifest.segmenters.items()
    }
    digest.update(json.dumps(specs, sort_keys=True).encode())
    for key, module in _networks(bundle).items():
        for name, tensor in module.state_dict().items():
            digest.update(f"{key}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


def cache_root() -> Path:
    """``$CASCADE_CACHE_DIR`` or ``~/.cache/steel-cascade``."""
    env = os.environ.get("CASCADE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steel-cascade"


def bundle_cache_dir(bundle: LoadedBundle, cache_dir: str | Path | None = None) -> Path:
    """``<cache_dir or cache_root()>/<fingerprint[:16]>`` (not created)."""
    return Path(cache_dir or cache_root()) / bundle_fingerprint(bundle)[:16]


def cached_export(bundle: LoadedBundle, fmt: str, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """The bundle's exported network files in ``fmt``, exporting once into the cache.

    Concurrent processes are safe: each exports into a private temporary directory that is renamed
    into place; the loser of a race discards its copy.

    Args:
        bundle: the loaded bundle.
        fmt: one of ``EXPORT_FORMATS``.
        cache_dir: a bundle cache directory (``bundle_cache_dir(bundle)`` when None).

    Returns:
        ``"classifier"``, ``"segmenter_<id>"`` -> network file.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; allowed: {list(EXPORT_FORMATS)}")
    base = Path(cache_dir) if cache_dir is not None else bundle_cache_dir(bundle)
    final = base / fmt
    expected = {key: final / f"{key}{_EXT[fmt]}" for key in _networks(bundle)}
    if all(p.is_file() for p in expected.values()):
        return expected
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fmt}-", dir=base))
    try:
        if fmt == "onnx":
            export_onnx(bundle, tmp)
        else:
            export_openvino(bundle, tmp, onnx_files=cached_export(bundle, "onnx", base))
        if all(p.is_file() for p in expected.values()):
            return expected  # another process finished first
        if final.exists():
            shutil.rmtree(final)  # an incomplete earlier export
        os.replace(tmp, final)
    except OSError:
        if not all(p.is_file() for p in expected.values()):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("cached %s export in %s", fmt, final)
    return expected
