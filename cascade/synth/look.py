"""One image's look, drawn from a ``SynthConfig``'s ranges: gray level, lighting, contrast, texture, plate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cascade.synth.config import SynthConfig

__all__ = ["Look", "sample_look"]


@dataclass(frozen=True)
class Look:
    """Per-image appearance settings.

    Attributes:
        level: median gray level of the sheet.
        ramp: brightness of the bottom row over the top row.
        ramp_gamma: shape of the ramp (1 = linear, < 1 brightens early and flattens).
        across: amplitude of the smooth left-to-right light variation (a factor, e.g. 0.1 = ±10%).
        contrast: texture amplitude factor.
        defect_contrast: defect amplitude factor.
        texture: surface texture name (``config.TEXTURES``).
        plate: ``""`` (plain sheet), ``"diamond"`` or ``"lentil"``.
        blur: Gaussian blur sigma of the camera (0 = sharp).
        reencode: JPEG quality of an extra compression (0 = none).
    """

    level: float
    ramp: float
    ramp_gamma: float
    across: float
    contrast: float
    defect_contrast: float
    texture: str
    plate: str
    blur: float
    reencode: int


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def sample_look(rng: np.random.Generator, config: SynthConfig) -> Look:
    """Draw one image's ``Look`` from ``config``'s ranges."""
    plate = ""
    if rng.random() < config.plate_prob:
        plate = "diamond" if rng.random() < 0.5 else "lentil"
    reencode = 0
    if rng.random() < config.reencode_prob:
        reencode = int(rng.integers(int(config.reencode_quality[0]), int(config.reencode_quality[1]) + 1))
    return Look(
        level=float(rng.uniform(*config.level)),
        ramp=_log_uniform(rng, *config.ramp),
        ramp_gamma=float(rng.uniform(0.55, 1.3)),
        across=float(rng.uniform(0.04, 0.22)),
        contrast=_log_uniform(rng, *config.contrast),
        defect_contrast=_log_uniform(rng, *config.defect_contrast),
        texture=config.texture,
        plate=plate,
        blur=float(rng.uniform(0.3, 0.7)) if rng.random() < 0.1 else 0.0,
        reencode=reencode,
    )
