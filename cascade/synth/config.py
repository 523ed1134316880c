"""Generator settings: a frozen ``SynthConfig`` and named profiles (``real``, ``balanced``, ``train``, ``shifted``).

``SynthConfig`` says which classes an image has (``combinations``) and the ranges its look is drawn from
(``Look`` ranges: gray level, top-to-bottom lighting ramp, texture contrast, defect contrast, surface
texture, patterned plate, JPEG re-encoding). The ``real``, ``balanced`` and ``train`` profiles share the
calibrated look ranges (measured on real Severstal images) and differ only in the class mix. ``shifted``
draws every look setting *outside* those ranges — darker sheets, a steeper lighting ramp, twice the texture,
fainter defects, an orange-peel texture never seen otherwise — and is a held-out test set: never train on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

from cascade.constants import CLASS_IDS
from cascade.synth.reference import REAL_COMBINATION_COUNTS

__all__ = ["BALANCED_COMBINATIONS", "PROFILES", "TEXTURES", "TRAIN_COMBINATIONS", "SynthConfig", "synth_config"]

BALANCED_COMBINATIONS: Final = MappingProxyType(
    {"": 30, "1": 14, "2": 14, "3": 14, "4": 14, "34": 4, "13": 3, "12": 3, "23": 2, "24": 1, "123": 1}
)
"""Relative weights with every class on ~20% of images: for small training sets and test fixtures."""

TRAIN_COMBINATIONS: Final = MappingProxyType(
    {"": 5902, "3": 3000, "1": 1300, "4": 900, "34": 284, "2": 1000, "13": 91, "12": 35, "23": 14, "123": 2, "24": 1}
)
"""The real mix with the rare classes sampled more often (class 2 ~8% of images instead of 2%, class 1 ~11%,
class 4 ~9%; still ~47% clean): class-balanced sampling for a small training set, as the demo recipe uses."""

TEXTURES: tuple[str, ...] = ("rolled", "peel")
"""Surface textures: ``rolled`` (streaks along the rolling direction, as on the real sheets) and ``peel``
(isotropic orange-peel mottling, only in the ``shifted`` profile)."""

Range = tuple[float, float]


@dataclass(frozen=True)
class SynthConfig:
    """How a synthetic set is drawn.

    Attributes:
        combinations: ``(combination, weight)`` pairs: relative weight per class combination, written as
            the present class ids (``""`` = clean, ``"34"`` = classes 3 and 4). A mapping is accepted too.
        distractors: draw defect look-alikes (stains, oil blobs, glints, specks, long lines, roll marks).
        edge_band_prob: share of images showing the black band past the sheet's edge.
        jpeg_quality: JPEG quality of the written images (1..100).
        level: range of the sheet's median gray level.
        ramp: range of the bottom-to-top brightness ratio (the real camera lights the bottom more).
        contrast: range of the texture amplitude factor (1 = calibrated real contrast).
        defect_contrast: range of the defect amplitude factor.
        texture: surface texture, one of ``TEXTURES``.
        plate_prob: share of images of patterned (diamond or lentil) plate.
        reencode_prob: share of images JPEG-compressed once more before writing (a camera's compression).
        reencode_quality: range of that JPEG quality.
    """

    combinations: tuple[tuple[str, float], ...] = tuple(REAL_COMBINATION_COUNTS.items())
    distractors: bool = True
    edge_band_prob: float = 0.25
    jpeg_quality: int = 92
    level: Range = (58.0, 140.0)
    ramp: Range = (1.25, 2.6)
    contrast: Range = (0.85, 1.4)
    defect_contrast: Range = (0.45, 1.3)
    texture: str = "rolled"
    plate_prob: float = 0.07
    reencode_prob: float = 0.4
    reencode_quality: Range = (65.0, 95.0)

    def __post_init__(self) -> None:
        if isinstance(self.combinations, Mapping):
            object.__setattr__(self, "combinations", tuple(self.combinations.items()))
        allowed = set("".join(str(c) for c in CLASS_IDS))
        for combo, weight in self.combinations:
            if not set(combo) <= allowed or len(set(combo)) != len(combo):
                raise ValueError(f"bad class combination {combo!r}; use distinct digits from {sorted(allowed)}")
            if weight < 0:
                raise ValueError(f"combination {combo!r} has negative weight {weight}; weights must be >= 0")
        if sum(weight for _, weight in self.combinations) <= 0:
            raise ValueError("combination weights sum to 0; give at least one positive weight")
        for name in ("edge_band_prob", "plate_prob", "reencode_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} {getattr(self, name)} is outside [0, 1]")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality {self.jpeg_quality} is outside 1..100")
        if self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; choose one of {list(TEXTURES)}")
        for name in ("level", "ramp", "contrast", "defect_contrast", "reencode_quality"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} range {(lo, hi)} must satisfy 0 < low <= high")
        if not 1 <= self.reencode_quality[0] <= self.reencode_quality[1] <= 100:
            raise ValueError(f"reencode_quality {self.reencode_quality} is outside 1..100")

    @property
    def combination_weights(self) -> dict[str, float]:
        """``combinations`` as a dict."""
        return dict(self.combinations)


_REAL = SynthConfig()

PROFILES: Final = MappingProxyType(
    {
        "real": _REAL,
        "balanced": replace(_REAL, combinations=tuple(BALANCED_COMBINATIONS.items())),
        "train": replace(_REAL, combinations=tuple(TRAIN_COMBINATIONS.items())),
        "shifted": replace(
            _REAL,
            level=(36.0, 55.0),
            ramp=(2.7, 3.4),
            contrast=(1.5, 1.9),
            defect_contrast=(0.32, 0.44),
            texture="peel",
            plate_prob=0.0,
            reencode_prob=1.0,
            reencode_quality=(40.0, 58.0),
        ),
    }
)
"""Named generator settings: ``real`` follows the real class mix, ``balanced`` shows every class often,
``train`` is the real mix with rare classes boosted (the demo training set), and ``shifted`` has the real
class mix with every look setting outside the ranges of the others (a held-out test set; never train on it)."""


def synth_config(profile: str) -> SynthConfig:
    """The ``SynthConfig`` of a named profile.

    Raises:
        ValueError: unknown profile (the message lists the known ones).
    """
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown synth profile {profile!r}; choose one of {sorted(PROFILES)}") from None
