"""The bundle: the one artefact a trained cascade becomes, saved and loaded without unpickling.

Two forms, chosen by the path: a single ``*.safetensors`` file whose safetensors metadata holds the
manifest JSON under ``"manifest"``, or a directory holding ``manifest.json`` + ``weights.safetensors``.
Weight keys are prefixed ``classifier.`` and ``segmenter.<class_id>.``. Every problem with a bundle
(missing, corrupt, too new, unknown architecture, weights not fitting) is a ``BundleError`` naming
the path and the problem.

This module builds the networks a manifest describes, checks that weights fit them, and saves and loads
them; the stored form itself (file names, ``BundleError``, reading the manifest and a weights summary
without building a network) is :mod:`cascade.bundle_format`, whose public names are re-exported here.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cascade.bundle_format import (
    MANIFEST_FILE,
    MANIFEST_KEY,
    WEIGHTS_FILE,
    BundleError,
    is_file_bundle_path,
    read_manifest,
    safetensors_metadata,
    segmenter_prefix,
    weights_path,
    weights_summary,
)
from cascade.device import resolve_device
from cascade.manifest import BundleManifest, ModelSpec

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_KEY",
    "WEIGHTS_FILE",
    "BundleError",
    "LoadedBundle",
    "build_models",
    "is_file_bundle_path",
    "load_bundle",
    "read_manifest",
    "replace_manifest",
    "save_bundle",
    "weights_summary",
]

logger = logging.getLogger(__name__)

_STORE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_LISTED = 5


@dataclass(frozen=True)
class LoadedBundle:
    """A loaded bundle: manifest plus ready networks in eval mode.

    Attributes:
        manifest: the bundle's manifest.
        classifier: images ``(N, 3, H, W)`` -> logits ``(N, 4)`` (an ``EnsembleMean`` of the fold classifiers
            when ``manifest.classifier.members`` > 1: its logits are already averaged).
        segmenters: class id -> network mapping images ``(N, 3, H, W)`` to logits ``(N, 1, H, W)``.
        path: where the bundle was loaded from.
    """

    manifest: BundleManifest
    classifier: nn.Module
    segmenters: dict[int, nn.Module]
    path: Path


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain module behind ``torch.compile`` / ``DataParallel`` wrappers."""
    while True:
        inner = getattr(module, "_orig_mod", None) or (
            module.module if isinstance(module, nn.DataParallel | nn.parallel.DistributedDataParallel) else None
        )
        if inner is None:
            return module
        module = inner


# ---------------------------------------------------------------------------------------------- save
def _tensors(
    manifest: BundleManifest, classifier: nn.Module, segmenters: Mapping[int, nn.Module], dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    if set(segmenters) != set(manifest.class_ids):
        raise ValueError(
            f"segmenters must have one network per class id {list(manifest.class_ids)}, got {sorted(segmenters)}"
        )
    groups = {"classifier.": _unwrap(classifier)} | {
        segmenter_prefix(cid): _unwrap(segmenters[cid]) for cid in manifest.class_ids
    }
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in groups.items():
        for key, value in module.state_dict().items():
            value = value.detach().to("cpu")
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            tensors[prefix + key] = value.contiguous().clone()
    return tensors


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # safetensors creates files 0600; a bundle is meant to be read by other users (a service)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_bundle(
    path: str | Path,
    manifest: BundleManifest,
    classifier: nn.Module,
    segmenters: Mapping[int, nn.Module],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a bundle; ``*.safetensors`` gives the single-file form, any other path a directory.

    Args:
        path: destination file (``*.safetensors``) or directory (created if needed).
        manifest: what to store alongside the weights.
        classifier: network built from ``manifest.classifier``.
        segmenters: class id -> network built from ``manifest.segmenters[class_id]``.
        dtype: store floating weights as this dtype (``torch.float16`` halves the size); loading converts back.

    Returns:
        The path written.

    Raises:
        ValueError: segmenters do not match the manifest's class ids, or an unsupported ``dtype``.
        BundleError: the networks' weights do not fit the manifest's model specs.
    """
    from safetensors.torch import save_file

    if dtype is not None and dtype not in _STORE_DTYPES:
        raise ValueError(f"dtype must be None or one of {[str(d) for d in _STORE_DTYPES]}, got {dtype!r}")
    path = Path(path)
    tensors = _tensors(manifest, classifier, segmenters, dtype)
    _check_fits(tensors, _expected_shapes(manifest), path, verb="saving")
    text = manifest.to_json()
    store = str(dtype or "native").removeprefix("torch.")
    if is_file_bundle_path(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {MANIFEST_KEY: text, "format": "pt", "store_dtype": store}
        _atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    else:
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": "pt", "store_dtype": store}
        _atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        _atomic_write(path / MANIFEST_FILE, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    logger.info("saved bundle %s (%d tensors, store dtype %s)", path, len(tensors), store)
    return path


def replace_manifest(path: str | Path, manifest: BundleManifest, out: str | Path | None = None) -> Path:
    """Write a bundle with another manifest and the very same weight tensors (keys, dtypes and values).

    Used to refresh a stored summary (e.g. the out-of-distribution reference) without retraining or converting
    the weights.

    Args:
        path: the bundle to copy (file or directory form).
        manifest: the new manifest; its model specs must fit the weights.
        out: where to write (default: over ``path``, atomically); its form follows the path as in ``save_bundle``.

    Raises:
        BundleError: ``path`` is not a readable bundle, or the weights do not fit ``manifest``.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = Path(path)
    out = path if out is None else Path(out)
    weights = weights_path(path)
    meta = safetensors_metadata(weights, path)
    with safe_open(str(weights), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a Mapping
    _check_fits(tensors, _expected_shapes(manifest), out, verb="saving")
    text = manifest.to_json()
    if is_file_bundle_path(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta | {MANIFEST_KEY: text}))
    else:
        out.mkdir(parents=True, exist_ok=True)
        meta.pop(MANIFEST_KEY, None)
        _atomic_write(out / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        _atomic_write(out / MANIFEST_FILE, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    logger.info("wrote bundle %s with a new manifest (%d tensors copied from %s)", out, len(tensors), path)
    return out


# ---------------------------------------------------------------------------------------------- load
def _build(spec: ModelSpec, num_classes: int, what: str, bundle: Path) -> nn.Module:
    """The network of ``spec``; an ``EnsembleMean`` of ``spec.members`` of them when ``members`` > 1."""
    from models import EnsembleMean, create_classifier, create_segmenter

    kwargs = dict(spec.kwargs)
    try:
        if what == "classifier":
            kwargs.setdefault("num_classes", num_classes)
            networks = [create_classifier(spec.name, pretrained=False, **kwargs) for _ in range(spec.members)]
        else:
            networks = [create_segmenter(spec.arch, spec.name, pretrained=False, **kwargs) for _ in range(spec.members)]
    except (ValueError, TypeError, KeyError, RuntimeError) as err:
        raise BundleError(f"bundle {bundle}: cannot build {what} from spec {spec.to_dict()}: {err}") from err
    return networks[0] if spec.members == 1 else EnsembleMean(networks, spec.average)


def build_models(
    manifest: BundleManifest, *, bundle: str | Path = "<manifest>", share_init: bool = False
) -> tuple[nn.Module, dict[int, nn.Module]]:
    """Randomly initialised classifier and segmenters as the manifest's specs describe them.

    Args:
        manifest: the specs to build.
        bundle: path named in error messages.
        share_init: build each distinct segmenter spec once and deep-copy it for the other classes
            (faster when weights are loaded next; the copies start with identical weights).
    """
    bundle = Path(bundle)
    classifier = _build(manifest.classifier, len(manifest.class_ids), "classifier", bundle)
    built: dict[str, nn.Module] = {}
    segmenters: dict[int, nn.Module] = {}
    for cid, spec in manifest.segmenters.items():
        key = json.dumps(spec.to_dict(), sort_keys=True)
        if share_init and key in built:
            segmenters[cid] = copy.deepcopy(built[key])
        else:
            segmenters[cid] = built[key] = _build(spec, 1, f"segmenter {cid}", bundle)
    return classifier, segmenters


@functools.lru_cache(maxsize=32)
def _spec_shapes(spec_json: str, num_classes: int, what: str) -> dict[str, tuple[int, ...]]:
    """Parameter/buffer shapes of the network a spec describes (built once, on the 'meta' device when possible)."""
    spec = ModelSpec(**json.loads(spec_json))
    try:
        with torch.device("meta"):
            module = _build(spec, num_classes, what, Path("<manifest>"))
    except BundleError as err:
        if not isinstance(err.__cause__, RuntimeError | NotImplementedError):
            raise
        module = _build(spec, num_classes, what, Path("<manifest>"))  # constructors calling .item() need real data
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _expected_shapes(manifest: BundleManifest) -> dict[str, dict[str, tuple[int, ...]]]:
    """Weight-key prefix -> expected shapes, for every network of the manifest."""
    num_classes = len(manifest.class_ids)
    specs = {"classifier.": (manifest.classifier, num_classes, "classifier")} | {
        segmenter_prefix(cid): (spec, 1, f"segmenter {cid}") for cid, spec in manifest.segmenters.items()
    }
    return {
        prefix: _spec_shapes(json.dumps(spec.to_dict(), sort_keys=True), n, what)
        for prefix, (spec, n, what) in specs.items()
    }


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"{keys[:_MAX_LISTED]}{more}"


def _fit_problems(
    prefix: str, expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, torch.Tensor]
) -> list[str]:
    stored = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    problems = []
    if missing := set(expected) - set(stored):
        problems.append(f"missing weights {_listed(prefix + k for k in missing)}")
    if unexpected := set(stored) - set(expected):
        problems.append(f"unexpected weights {_listed(prefix + k for k in unexpected)}")
    wrong = [
        f"{prefix}{k}: stored {tuple(stored[k].shape)} vs model {tuple(expected[k])}"
        for k in sorted(set(stored) & set(expected))
        if tuple(stored[k].shape) != tuple(expected[k])
    ]
    if wrong:
        problems.append(f"shape mismatch {wrong[:_MAX_LISTED]}")
    return problems


def _check_fits(
    tensors: Mapping[str, torch.Tensor], expected: Mapping[str, Mapping[str, tuple[int, ...]]], path: Path, *, verb: str
) -> None:
    """Raise ``BundleError`` unless ``tensors`` hold exactly the ``expected`` shapes under each key prefix."""
    problems = []
    for prefix, shapes in expected.items():
        problems += _fit_problems(prefix, shapes, tensors)
    if stray := [k for k in tensors if not any(k.startswith(p) for p in expected)]:
        problems.append(f"weights of no network {_listed(stray)}")
    if problems:
        raise BundleError(
            f"{verb} bundle {path}: weights do not match the manifest's architectures: " + "; ".join(problems)
        )


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> LoadedBundle:
    """Load a bundle (file or directory form) into networks in eval mode on ``device`` (``"auto"``: cuda if available).

    Floating weights stored in fp16/bf16 are converted back to the networks' fp32.

    Raises:
        BundleError: missing, corrupt, incompatible, or weights not fitting the manifest.
    """
    from safetensors.torch import load_file

    path = Path(path)
    device = resolve_device(str(device))
    manifest = read_manifest(path)
    weights = weights_path(path)
    try:
        tensors = load_file(str(weights), device="cpu")
    except Exception as err:  # SafetensorError / OSError on truncated data
        raise BundleError(f"bundle {path} is corrupt: cannot read weights from {weights.name}: {err}") from err
    classifier, segmenters = build_models(manifest, bundle=path, share_init=True)
    groups = {"classifier.": classifier} | {segmenter_prefix(cid): m for cid, m in segmenters.items()}
    _check_fits(tensors, {prefix: _shapes(m) for prefix, m in groups.items()}, path, verb="loading")
    for prefix, module in groups.items():
        own = module.state_dict()
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        state = {k: v.to(own[k].dtype) for k, v in state.items()}
        module.load_state_dict(state, strict=True)
        module.to(device).eval()
    logger.info(
        "loaded bundle %s (%s x%d, %d segmenters) on %s",
        path,
        manifest.classifier.name,
        manifest.classifier.members,
        len(segmenters),
        device,
    )
    return LoadedBundle(manifest=manifest, classifier=classifier, segmenters=segmenters, path=path)
