"""The bundle manifest: everything besides the weights that a trained cascade needs to run.

All classes are frozen dataclasses validated in ``__post_init__``; ``to_dict()`` / ``from_dict()``
round-trip through JSON. Sequences given as lists are stored as tuples, and free-form dicts
(``ModelSpec.kwargs``, ``provenance``) are normalised through JSON so a manifest compares equal to
its own round trip. Errors are ``ValueError`` naming the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cascade.calibration import Calibration
from cascade.classes import ClassSet
from cascade.constants import CLASS_IDS, CLASS_NAMES
from cascade.gate_curve import GateCurve
from cascade.ood import OodReference

__all__ = [
    "CLASSIFIER_ARCHS",
    "ENSEMBLE_AVERAGES",
    "FORMAT_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_MODES",
    "TTA_OPS",
    "BundleManifest",
    "ClassParams",
    "InputPolicy",
    "ModelSpec",
    "Normalization",
]

FORMAT_VERSION: int = 1
"""Newest bundle format this code reads and the one it writes."""

CLASSIFIER_ARCHS: tuple[str, ...] = ("timm",)
"""Allowed ``ModelSpec.arch`` values for the classifier."""

INPUT_MODES: tuple[str, ...] = ("pad", "tile")
"""Allowed ``InputPolicy.mode`` values."""

TTA_OPS: tuple[str, ...] = ("hflip", "vflip")
"""Allowed test-time augmentations."""

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


def _json_normalise(value: Any, name: str) -> Any:
    """Round-trip ``value`` through JSON (tuples become lists), naming ``name`` on failure."""
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be JSON-serializable: {err}") from err


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _check_float(value: Any, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    """Return ``value`` as float if it lies in [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def _check_int(value: Any, name: str, low: int) -> int:
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
        _set(self, "kwargs", _json_normalise(dict(self.kwargs), "ModelSpec.kwargs"))
        _check_int(self.members, "ModelSpec.members", 1)
        if self.average not in ENSEMBLE_AVERAGES:
            raise ValueError(f"ModelSpec.average must be one of {list(ENSEMBLE_AVERAGES)}, got {self.average!r}")
        if self.members == 1:
            _set(self, "average", "logits")  # meaningless for one network: normalised so a spec equals its round trip

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
                _check_float(v, f"Normalization.{attr}[{i}]", 0.0 if low_open else -1e6, 1e6, low_open=low_open)
                for i, v in enumerate(values)
            )
            _set(self, attr, checked)


@dataclass(frozen=True)
class InputPolicy:
    """How images of any size are fed to the networks.

    Attributes:
        mode: ``"pad"`` pads H and W up to a multiple of ``stride``; ``"tile"`` runs overlapping tiles of
            ``tile_width`` columns and stitches the probabilities.
        stride: output stride the networks need (sizes are padded to a multiple of it).
        scale: in (0, 1]; < 1 runs the networks on a resized image and resizes probabilities back.
        tile_width: tile width in pixels (a multiple of ``stride``); required for ``"tile"``.
        tile_overlap: columns shared by neighbouring tiles, in [0, tile_width).
    """

    mode: str = "pad"
    stride: int = 32
    scale: float = 1.0
    tile_width: int | None = None
    tile_overlap: int = 0

    def __post_init__(self) -> None:
        if self.mode not in INPUT_MODES:
            raise ValueError(f"InputPolicy.mode must be one of {list(INPUT_MODES)}, got {self.mode!r}")
        _check_int(self.stride, "InputPolicy.stride", 1)
        _set(self, "scale", _check_float(self.scale, "InputPolicy.scale", 0.0, 1.0, low_open=True))
        _check_int(self.tile_overlap, "InputPolicy.tile_overlap", 0)
        if self.tile_width is None:
            if self.mode == "tile":
                raise ValueError("InputPolicy.tile_width is required when mode is 'tile'")
            return
        _check_int(self.tile_width, "InputPolicy.tile_width", 1)
        if self.tile_width % self.stride:
            raise ValueError(
                f"InputPolicy.tile_width must be a multiple of stride {self.stride}, got {self.tile_width}"
            )
        if self.tile_overlap >= self.tile_width:
            raise ValueError(
                f"InputPolicy.tile_overlap must be in [0, tile_width={self.tile_width}), got {self.tile_overlap}"
            )


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
    """

    prob_threshold: float = 0.5
    pixel_threshold: float = 0.5
    min_area: int = 0
    min_component_area: int = 0
    soft_gate: bool = False
    predictable: bool = True

    def __post_init__(self) -> None:
        for attr in ("prob_threshold", "pixel_threshold"):
            _set(self, attr, _check_float(getattr(self, attr), f"ClassParams.{attr}", 0.0, 1.0))
        for attr in ("min_area", "min_component_area"):
            _check_int(getattr(self, attr), f"ClassParams.{attr}", 0)
        for attr in ("soft_gate", "predictable"):
            if not isinstance(getattr(self, attr), bool):
                raise ValueError(f"ClassParams.{attr} must be true or false, got {getattr(self, attr)!r}")


def _default_classes() -> tuple[ClassParams, ...]:
    return ()


@dataclass(frozen=True, kw_only=True)
class BundleManifest:
    """Description of one trained cascade (keyword-only construction).

    Attributes:
        format_version: bundle format, 1..``FORMAT_VERSION``.
        class_ids: the class ids, in array order (default Severstal's 4).
        class_names: one name per class id.
        class_colours: one display colour (RGB) per class id (default ``cascade.classes.DEFAULT_COLOURS``).
        image_size: ``(H, W)`` of the images the bundle was trained on (informational: inputs of any size
            are accepted through ``input_policy``); None when unknown.
        classifier: spec of the multi-label classifier (``arch="timm"``).
        segmenters: one spec per class id.
        normalization: input normalisation.
        input_policy: how images of any size are fed.
        classes: post-processing parameters, one per class in ``class_ids`` order (default: defaults for each).
        tta: test-time augmentations, a subset of ``TTA_OPS``.
        provenance: dataset, metrics, code_version, created, config (free-form, JSON-serializable).
        calibration: one ``Calibration`` per class applied to the classifier's probabilities before the gate
            (``()``: none; the gate thresholds are then on raw probabilities).
        gate_curve: what the gate costs and scores on the tuning images (``cascade.gate_curve``); None when
            the bundle was tuned without it.
        ood: statistics of the training images for out-of-distribution scores (``cascade.ood``); None: no
            scores.
    """

    format_version: int = FORMAT_VERSION
    class_ids: tuple[int, ...] = CLASS_IDS
    class_names: tuple[str, ...] = CLASS_NAMES
    class_colours: tuple[tuple[int, int, int], ...] = ()
    image_size: tuple[int, int] | None = None
    classifier: ModelSpec
    segmenters: dict[int, ModelSpec]
    normalization: Normalization = field(default_factory=Normalization)
    input_policy: InputPolicy = field(default_factory=InputPolicy)
    classes: tuple[ClassParams, ...] = field(default_factory=_default_classes)
    tta: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    calibration: tuple[Calibration, ...] = ()
    gate_curve: GateCurve | None = None
    ood: OodReference | None = None

    def __post_init__(self) -> None:
        _check_int(self.format_version, "format_version", 1)
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is newer than the supported version {FORMAT_VERSION}; "
                "upgrade the cascade package"
            )
        for cid in self.class_ids:
            _check_int(cid, "class_ids[]", 1)
        if isinstance(self.class_names, str):
            raise ValueError(f"class_names must be a list of names, got {self.class_names!r}")
        class_set = ClassSet(tuple(self.class_ids), tuple(self.class_names), tuple(self.class_colours))
        _set(self, "class_ids", class_set.ids)
        _set(self, "class_names", class_set.names)
        _set(self, "class_colours", class_set.colours)
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2:
                raise ValueError(f"image_size must be [height, width], got {list(size)}")
            _set(self, "image_size", (_check_int(size[0], "image_size[0]", 1), _check_int(size[1], "image_size[1]", 1)))
        self._check_specs()
        for attr, kind in (("normalization", Normalization), ("input_policy", InputPolicy)):
            if not isinstance(getattr(self, attr), kind):
                raise ValueError(f"{attr} must be a {kind.__name__}, got {getattr(self, attr)!r}")
        classes = tuple(self.classes) or tuple(ClassParams() for _ in self.class_ids)
        n = len(self.class_ids)
        if len(classes) != n or not all(isinstance(c, ClassParams) for c in classes):
            raise ValueError(
                f"classes must be {n} ClassParams (one per class id {list(self.class_ids)}), got {classes!r}"
            )
        _set(self, "classes", classes)
        tta = (self.tta,) if isinstance(self.tta, str) else tuple(self.tta)
        bad = [t for t in tta if t not in TTA_OPS]
        if bad or len(set(tta)) != len(tta):
            raise ValueError(f"tta must be distinct values from {list(TTA_OPS)}, got {list(tta)}")
        _set(self, "tta", tta)
        if not isinstance(self.provenance, Mapping):
            raise ValueError(f"provenance must be a dict, got {type(self.provenance).__name__}")
        _set(self, "provenance", _json_normalise(dict(self.provenance), "provenance"))
        self._check_gate()

    def _check_gate(self) -> None:
        n = len(self.class_ids)
        calibration = tuple(self.calibration)
        if calibration and (len(calibration) != n or not all(isinstance(c, Calibration) for c in calibration)):
            raise ValueError(
                f"calibration must be empty or {n} Calibrations (one per class id {list(self.class_ids)}), "
                f"got {calibration!r}"
            )
        _set(self, "calibration", calibration)
        curve = self.gate_curve
        if curve is not None and (not isinstance(curve, GateCurve) or len(curve.classes) != n):
            raise ValueError(f"gate_curve must be a GateCurve with one curve per class id {list(self.class_ids)}")
        if self.ood is not None and not isinstance(self.ood, OodReference):
            raise ValueError(f"ood must be an OodReference or None, got {type(self.ood).__name__}")

    def _check_specs(self) -> None:
        if not isinstance(self.classifier, ModelSpec):
            raise ValueError(f"classifier must be a ModelSpec, got {self.classifier!r}")
        if self.classifier.arch not in CLASSIFIER_ARCHS:
            raise ValueError(f"classifier.arch must be one of {list(CLASSIFIER_ARCHS)}, got {self.classifier.arch!r}")
        if not isinstance(self.segmenters, Mapping):
            raise ValueError(f"segmenters must be a dict of class id -> ModelSpec, got {self.segmenters!r}")
        segmenters = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in self.segmenters.items()}
        if set(segmenters) != set(self.class_ids):
            raise ValueError(
                f"segmenters must have exactly one spec per class id {list(self.class_ids)}, "
                f"got keys {sorted(segmenters, key=str)}"
            )
        for cid, spec in segmenters.items():
            if not isinstance(spec, ModelSpec):
                raise ValueError(f"segmenters[{cid}] must be a ModelSpec, got {spec!r}")
        _set(self, "segmenters", {cid: segmenters[cid] for cid in self.class_ids})

    # ------------------------------------------------------------------ access / replace
    @property
    def class_set(self) -> ClassSet:
        """The bundle's classes: ids, names and display colours."""
        return ClassSet(self.class_ids, self.class_names, self.class_colours)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_ids)

    def class_index(self, class_id: int) -> int:
        """Array index of ``class_id``; ``ValueError`` listing the valid ids otherwise."""
        if class_id not in self.class_ids:
            raise ValueError(f"unknown class id {class_id!r}; valid ids are {list(self.class_ids)}")
        return self.class_ids.index(class_id)

    def class_params(self, class_id: int) -> ClassParams:
        """Post-processing parameters of ``class_id``."""
        return self.classes[self.class_index(class_id)]

    def with_classes(self, classes: Sequence[ClassParams]) -> BundleManifest:
        """Copy with every class's ``ClassParams`` replaced."""
        return dataclasses.replace(self, classes=tuple(classes))

    def with_class_params(self, class_id: int, **changes: Any) -> BundleManifest:
        """Copy with some fields of one class's ``ClassParams`` changed, e.g. ``prob_threshold=0.7``."""
        index = self.class_index(class_id)
        classes = list(self.classes)
        classes[index] = dataclasses.replace(classes[index], **changes)
        return self.with_classes(classes)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (segmenter keys become strings)."""
        return {
            "format_version": self.format_version,
            "class_ids": list(self.class_ids),
            "class_names": list(self.class_names),
            "class_colours": [list(c) for c in self.class_colours],
            **({"image_size": list(self.image_size)} if self.image_size is not None else {}),
            "classifier": self.classifier.to_dict(),
            "segmenters": {str(cid): spec.to_dict() for cid, spec in self.segmenters.items()},
            "normalization": {"mean": list(self.normalization.mean), "std": list(self.normalization.std)},
            "input_policy": dataclasses.asdict(self.input_policy),
            "classes": [dataclasses.asdict(c) for c in self.classes],
            "tta": list(self.tta),
            "provenance": dict(self.provenance),
            **({"calibration": [c.to_dict() for c in self.calibration]} if self.calibration else {}),
            **({"gate_curve": self.gate_curve.to_dict()} if self.gate_curve is not None else {}),
            **({"ood": self.ood.to_dict()} if self.ood is not None else {}),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The manifest as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BundleManifest:
        """Build from ``to_dict()`` output; ``ValueError`` names the missing or bad field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"manifest must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise ValueError(
                f"format_version {version} is newer than the supported version {FORMAT_VERSION}; "
                "upgrade the cascade package"
            )
        _check_keys(data, cls, "manifest", required=("format_version", "classifier", "segmenters"))
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k not in _NESTED}
        for key in ("class_ids", "class_names", "class_colours", "image_size"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(tuple(v) if isinstance(v, list) else v for v in kwargs[key])
        kwargs["classifier"] = _build(ModelSpec, data["classifier"], "classifier")
        segmenters = data["segmenters"]
        if not isinstance(segmenters, Mapping):
            raise ValueError(f"manifest field 'segmenters' must be an object, got {type(segmenters).__name__}")
        kwargs["segmenters"] = {}
        for key, spec in segmenters.items():
            if not str(key).isdigit():
                raise ValueError(f"manifest field 'segmenters' has a non-integer class id key {key!r}")
            kwargs["segmenters"][int(key)] = _build(ModelSpec, spec, f"segmenters.{key}")
        for name, kind in (("normalization", Normalization), ("input_policy", InputPolicy)):
            if name in data:
                kwargs[name] = _build(kind, data[name], name)
        if "classes" in data:
            if not isinstance(data["classes"], list):
                raise ValueError("manifest field 'classes' must be a list of objects, one per class id")
            kwargs["classes"] = tuple(_build(ClassParams, c, f"classes[{i}]") for i, c in enumerate(data["classes"]))
        if "calibration" in data:
            if not isinstance(data["calibration"], list):
                raise ValueError("manifest field 'calibration' must be a list of objects, one per class id")
            kwargs["calibration"] = tuple(
                _build(Calibration, c, f"calibration[{i}]") for i, c in enumerate(data["calibration"])
            )
        if data.get("gate_curve") is not None:
            try:
                kwargs["gate_curve"] = GateCurve.from_dict(data["gate_curve"])
            except ValueError as err:
                raise ValueError(f"manifest field 'gate_curve': {err}") from err
        if data.get("ood") is not None:
            try:
                kwargs["ood"] = OodReference.from_dict(data["ood"])
            except ValueError as err:
                raise ValueError(f"manifest field 'ood': {err}") from err
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(f"bad manifest: {err}") from err

    @classmethod
    def from_json(cls, text: str | bytes) -> BundleManifest:
        """Parse a JSON string; ``ValueError`` on bad JSON or a bad field."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"manifest is not valid JSON: {err}") from err
        return cls.from_dict(data)


_NESTED = ("classifier", "segmenters", "normalization", "input_policy", "classes", "calibration", "gate_curve", "ood")


def _check_keys(data: Mapping[str, Any], kind: type, where: str, required: Sequence[str] = ()) -> None:
    allowed = [f.name for f in dataclasses.fields(kind)]
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{where} is missing field(s) {missing}")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}; allowed fields are {allowed}")


def _build(kind: type, data: Any, where: str) -> Any:
    """Construct dataclass ``kind`` from a JSON object, naming ``where`` in errors."""
    if not isinstance(data, Mapping):
        raise ValueError(f"manifest field '{where}' must be an object, got {type(data).__name__}")
    required = [
        f.name
        for f in dataclasses.fields(kind)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    _check_keys(data, kind, f"manifest field '{where}'", required=required)
    try:
        return kind(**data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"manifest field '{where}': {err}") from err
