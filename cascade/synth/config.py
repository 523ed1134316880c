"""Generator settings: a frozen ``SynthConfig`` and named profiles (``real``, ``balanced``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from cascade.constants import CLASS_IDS
from cascade.synth.reference import REAL_COMBINATION_COUNTS

__all__ = ["BALANCED_COMBINATIONS", "PROFILES", "SynthConfig", "synth_config"]

BALANCED_COMBINATIONS: Final = MappingProxyType(
    {"": 30, "1": 14, "2": 14, "3": 14, "4": 14, "34": 4, "13": 3, "12": 3, "23": 2, "24": 1, "123": 1}
)
"""Relative weights with every class on ~20% of images: for small training sets and test fixtures."""


@dataclass(frozen=True)
class SynthConfig:
    """How a synthetic set is drawn.

    Attributes:
        combinations: ``(combination, weight)`` pairs: relative weight per class combination, written as
            the present class ids (``""`` = clean, ``"34"`` = classes 3 and 4). A mapping is accepted too.
        distractors: draw defect look-alikes (faint spots and streaks, glints, smudges).
        edge_band_prob: share of images showing the black band past the sheet's edge.
        jpeg_quality: JPEG quality of the written images (1..100).
    """

    combinations: tuple[tuple[str, float], ...] = tuple(REAL_COMBINATION_COUNTS.items())
    distractors: bool = True
    edge_band_prob: float = 0.25
    jpeg_quality: int = 92

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
        if not 0.0 <= self.edge_band_prob <= 1.0:
            raise ValueError(f"edge_band_prob {self.edge_band_prob} is outside [0, 1]")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality {self.jpeg_quality} is outside 1..100")

    @property
    def combination_weights(self) -> dict[str, float]:
        """``combinations`` as a dict."""
        return dict(self.combinations)


PROFILES: Final = MappingProxyType(
    {
        "real": SynthConfig(),
        "balanced": SynthConfig(combinations=tuple(BALANCED_COMBINATIONS.items())),
    }
)
"""Named generator settings: ``real`` follows the real class mix, ``balanced`` shows every class often."""


def synth_config(profile: str) -> SynthConfig:
    """The ``SynthConfig`` of a named profile.

    Raises:
        ValueError: unknown profile (the message lists the known ones).
    """
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown synth profile {profile!r}; choose one of {sorted(PROFILES)}") from None
