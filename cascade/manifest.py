"""The bundle manifest: everything besides the weights that a trained cascade needs to run.

Its parts (``ModelSpec``, ``Normalization``, ``InputPolicy``, ``ClassParams``) live in ``cascade.specs`` and
are importable from here too. All classes are frozen dataclasses validated in ``__post_init__``;
``to_dict()`` / ``from_dict()`` round-trip through JSON. Sequences given as lists are stored as tuples, and
free-form dicts (``ModelSpec.kwargs``, ``provenance``) are normalised through JSON so a manifest compares
equal to its own round trip. Errors are ``ValueError`` naming the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cascade.calibration import Calibration
from cascade.classes import ClassSet
from cascade.constants import CLASS_IDS, CLASS_NAMES
from cascade.gate_curve import GateCurve
from cascade.ood import OodReference
from cascade.specs import (
    ENSEMBLE_AVERAGES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_MODES,
    ClassParams,
    InputPolicy,
    ModelSpec,
    Normalization,
    check_int,
    json_normalise,
    set_frozen,
)
from cascade.typed_config import Dialect, from_dict

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

TTA_OPS: tuple[str, ...] = ("hflip", "vflip")
"""Allowed test-time augmentations."""


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
        check_int(self.format_version, "format_version", 1)
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is newer than the supported version {FORMAT_VERSION}; "
                "upgrade the cascade package"
            )
        for cid in self.class_ids:
            check_int(cid, "class_ids[]", 1)
        if isinstance(self.class_names, str):
            raise ValueError(f"class_names must be a list of names, got {self.class_names!r}")
        class_set = ClassSet(tuple(self.class_ids), tuple(self.class_names), tuple(self.class_colours))
        set_frozen(self, "class_ids", class_set.ids)
        set_frozen(self, "class_names", class_set.names)
        set_frozen(self, "class_colours", class_set.colours)
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2:
                raise ValueError(f"image_size must be [height, width], got {list(size)}")
            set_frozen(
                self, "image_size", (check_int(size[0], "image_size[0]", 1), check_int(size[1], "image_size[1]", 1))
            )
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
        set_frozen(self, "classes", classes)
        tta = (self.tta,) if isinstance(self.tta, str) else tuple(self.tta)
        bad = [t for t in tta if t not in TTA_OPS]
        if bad or len(set(tta)) != len(tta):
            raise ValueError(f"tta must be distinct values from {list(TTA_OPS)}, got {list(tta)}")
        set_frozen(self, "tta", tta)
        if not isinstance(self.provenance, Mapping):
            raise ValueError(f"provenance must be a dict, got {type(self.provenance).__name__}")
        set_frozen(self, "provenance", json_normalise(dict(self.provenance), "provenance"))
        self._check_gate()

    def _check_gate(self) -> None:
        n = len(self.class_ids)
        calibration = tuple(self.calibration)
        if calibration and (len(calibration) != n or not all(isinstance(c, Calibration) for c in calibration)):
            raise ValueError(
                f"calibration must be empty or {n} Calibrations (one per class id {list(self.class_ids)}), "
                f"got {calibration!r}"
            )
        set_frozen(self, "calibration", calibration)
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
        set_frozen(self, "segmenters", {cid: segmenters[cid] for cid in self.class_ids})

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
        """Build from ``to_dict()`` output, strictly (``cascade.typed_config``); ``ValueError`` names the missing,
        unknown or bad field by its key path."""
        if not isinstance(data, Mapping):
            raise ValueError(f"manifest must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise ValueError(
                f"format_version {version} is newer than the supported version {FORMAT_VERSION}; "
                "upgrade the cascade package"
            )
        try:
            return from_dict(cls, data, _DIALECT, required=("format_version",))
        except TypeError as err:  # a value of a type the checks did not expect
            raise ValueError(f"bad manifest: {err}") from err

    @classmethod
    def from_json(cls, text: str | bytes) -> BundleManifest:
        """Parse a JSON string; ``ValueError`` on bad JSON or a bad field."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"manifest is not valid JSON: {err}") from err
        return cls.from_dict(data)


_DIALECT = Dialect.of_fields(
    lambda path: f"manifest field '{path}'" if path else "manifest",
    bad_key="{where} has a non-integer class id key {key!r}",
    check_scalars=False,  # ModelSpec, ClassParams, ... check their own fields in __post_init__
)
"""How manifest errors read: ``manifest field 'classes[2]' has unknown field(s) ['prob_thresh']; ...``."""
