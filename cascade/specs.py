"""The parts of a bundle manifest: how to build a network (``ModelSpec``), normalise and feed images
(``Normalization``, ``InputPolicy``) and post-process a class (``ClassParams``).

Frozen dataclasses validated in ``__post_init__``; errors are ``ValueError`` naming the field and what is
allowed. ``check_float`` / ``check_int`` / ``json_normalise`` are the checks they share with the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ENSEMBLE_AVERAGES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_MODES",
    "ClassParams",
    "InputPolicy",
    "ModelSpec",
    "Normalization",
    "check_float",
    "check_int",
    "json_normalise",
    "scaled_size",
    "set_frozen",
]

INPUT_MODES: tuple[str, ...] = ("pad", "tile")
"""Allowed ``InputPolicy.mode`` values."""

ENSEMBLE_AVERAGES: tuple[str, ...] = ("logits", "probabilities")
"""Allowed ``ModelSpec.average`` values (how an ensemble's members are averaged)."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _json_default(value: Any) -> Any:
    """Make numpy scalars/arrays, paths and tuples-in-sets JSON-friendly."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_normalise(value: Any, name: str) -> Any:
    """Round-trip ``value`` through JSON (tuples become lists), naming ``name`` on failure."""
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be JSON-serializable: {err}") from err


def set_frozen(obj: object, name: str, value: Any) -> None:
    """Set a field of a frozen dataclass (in its ``__post_init__``)."""
    object.__setattr__(obj, name, value)


def check_float(value: Any, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    """Return ``value`` as float if it lies in [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def check_int(value: Any, name: str, low: int) -> int:
    """Return ``value`` if it is an int >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class ModelSpec:
    """How to build one network: a factory family, a model name and keyword arguments.

    Attributes:
        arch: ``"timm"`` for the classifier; an smp architecture (``"Unet"``, ``"FPN"``, ...) for a segmenter.
        name: timm backbone name (classifier) or smp encoder name (segmenter).
        kwargs: extra JSON-serializable keyword arguments for the factory.
        members: how many networks of this spec form an ensemble (e.g. the K fold classifiers); 1 is one
            network. An ensemble is one module (``models.ensemble.EnsembleMean``) whose output averages its
            members', so runtimes and exports see a single network.
        average: how an ensemble averages, one of ``ENSEMBLE_AVERAGES``: ``"logits"`` (mean logit) or
            ``"probabilities"`` (mean sigmoid, returned as its logit); ignored when ``members`` is 1.
    """

    arch: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    members: int = 1
    average: str = "logits"

    def __post_init__(self) -> None:
        for attr in ("arch", "name"):
            value = getattr(self, attr)
            if not isinstance(value, str) or not value:
                raise ValueError(f"ModelSpec.{attr} must be a non-empty string, got {value!r}")
        if not isinstance(self.kwargs, Mapping):
            raise ValueError(f"ModelSpec.kwargs must be a dict, got {type(self.kwargs).__name__}")
        bad = [k for k in self.kwargs if not isinstance(k, str)]
        if bad:
            raise ValueError(f"ModelSpec.kwargs keys must be strings, got {bad!r}")
        set_frozen(self, "kwargs", json_normalise(dict(self.kwargs), "ModelSpec.kwargs"))
        check_int(self.members, "ModelSpec.members", 1)
        if self.average not in ENSEMBLE_AVERAGES:
            raise ValueError(f"ModelSpec.average must be one of {list(ENSEMBLE_AVERAGES)}, got {self.average!r}")
        if self.members == 1:
            set_frozen(
                self, "average", "logits"
            )  # meaningless for one network: normalised so a spec equals its round trip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``members``/``average`` only for an ensemble, so single-network specs read as before)."""
        ensemble = {"members": self.members, "average": self.average} if self.members > 1 else {}
        return {"arch": self.arch, "name": self.name, "kwargs": dict(self.kwargs), **ensemble}


@dataclass(frozen=True)
class Normalization:
    """Per-channel normalisation applied to RGB/255: ``(x / 255 - mean) / std``."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for attr in ("mean", "std"):
            values = getattr(self, attr)
            if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != 3:
                raise ValueError(f"Normalization.{attr} must be 3 numbers (r, g, b), got {values!r}")
            low_open = attr == "std"
            checked = tuple(
                check_float(v, f"Normalization.{attr}[{i}]", 0.0 if low_open else -1e6, 1e6, low_open=low_open)
                for i, v in enumerate(values)
            )
            set_frozen(self, attr, checked)


@dataclass(frozen=True)
class InputPolicy:
    """How images of any size are fed to the networks.

    Attributes:
        mode: ``"pad"`` pads H and W up to a multiple of ``stride``; ``"tile"`` runs overlapping tiles of
            ``tile_width`` columns and stitches the probabilities.
        stride: output stride the networks need (sizes are padded to a multiple of it).
        scale: in (0, 1]; < 1 runs the networks on a resized image and resizes probabilities back.
        scale_x: in (0, 1], the horizontal factor when it differs from ``scale`` (None: ``scale`` both ways).
            Line-scan defects run along the rolling (vertical) direction, so e.g. ``scale=0.125, scale_x=0.5``
            keeps four times the cross-direction detail of ``scale=0.25`` at the same network cost.
        tile_width: tile width in pixels (a multiple of ``stride``); required for ``"tile"``.
        tile_overlap: columns shared by neighbouring tiles, in [0, tile_width).
    """

    mode: str = "pad"
    stride: int = 32
    scale: float = 1.0
    tile_width: int | None = None
    tile_overlap: int = 0
    scale_x: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in INPUT_MODES:
            raise ValueError(f"InputPolicy.mode must be one of {list(INPUT_MODES)}, got {self.mode!r}")
        check_int(self.stride, "InputPolicy.stride", 1)
        set_frozen(self, "scale", check_float(self.scale, "InputPolicy.scale", 0.0, 1.0, low_open=True))
        if self.scale_x is not None:
            set_frozen(self, "scale_x", check_float(self.scale_x, "InputPolicy.scale_x", 0.0, 1.0, low_open=True))
        check_int(self.tile_overlap, "InputPolicy.tile_overlap", 0)
        if self.tile_width is None:
            if self.mode == "tile":
                raise ValueError("InputPolicy.tile_width is required when mode is 'tile'")
            return
        check_int(self.tile_width, "InputPolicy.tile_width", 1)
        if self.tile_width % self.stride:
            raise ValueError(
                f"InputPolicy.tile_width must be a multiple of stride {self.stride}, got {self.tile_width}"
            )
        if self.tile_overlap >= self.tile_width:
            raise ValueError(
                f"InputPolicy.tile_overlap must be in [0, tile_width={self.tile_width}), got {self.tile_overlap}"
            )

    def net_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` the networks see for a ``height`` x ``width`` image: resized by ``scale`` (rows) and
        ``scale_x`` (columns), before padding or tiling."""
        return scaled_size(height, width, self.scale, self.scale_x)


def scaled_size(height: int, width: int, scale: float, scale_x: float | None = None) -> tuple[int, int]:
    """``(height, width)`` resized by ``scale`` (rows) and ``scale_x`` (columns; None: ``scale``), each side
    rounded and at least 1; factors >= 1 leave a side as it is."""
    sx = scale if scale_x is None else scale_x
    h = height if scale >= 1.0 else max(1, round(height * scale))
    w = width if sx >= 1.0 else max(1, round(width * sx))
    return h, w


@dataclass(frozen=True)
class ClassParams:
    """Post-processing parameters of one class.

    Attributes:
        prob_threshold: classifier probability in [0, 1] at or above which the gate opens.
        pixel_threshold: segmenter probability in [0, 1] at or above which a pixel is on.
        min_area: masks with fewer pixels are dropped (class called absent).
        min_component_area: connected components with fewer pixels are removed first.
        soft_gate: scale the min-area floor by the classifier's confidence,
            ``min_area * 2 * (1 - probability)`` (see ``cascade.postprocess``); the gate itself stays.
        predictable: False when tuning found the bundle cannot predict the class (too few positive tuning
            images, or the tuned cascade misses them); the parameters still apply, the flag warns.
        closed: the gate never opens, whatever the probability: the class is always answered absent and its
            segmenter never runs. Tuning closes a class that does worse than predicting nothing on its stress
            set (``tune.stress``: images of another look, such as the ``shifted`` synthetic profile).
    """

    prob_threshold: float = 0.5
    pixel_threshold: float = 0.5
    min_area: int = 0
    min_component_area: int = 0
    soft_gate: bool = False
    predictable: bool = True
    closed: bool = False

    def __post_init__(self) -> None:
        for attr in ("prob_threshold", "pixel_threshold"):
            set_frozen(self, attr, check_float(getattr(self, attr), f"ClassParams.{attr}", 0.0, 1.0))
        for attr in ("min_area", "min_component_area"):
            check_int(getattr(self, attr), f"ClassParams.{attr}", 0)
        for attr in ("soft_gate", "predictable", "closed"):
            if not isinstance(getattr(self, attr), bool):
                raise ValueError(f"ClassParams.{attr} must be true or false, got {getattr(self, attr)!r}")
