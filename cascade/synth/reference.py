"""Summary statistics of the real Severstal train set that the generator is calibrated against.

These few numbers were derived once from the per-image defect areas of all 12,568 real train images
(``../shared/severstal-real/train-index.csv``); no real image or mask is stored in the project.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

__all__ = [
    "AREA_PERCENTILES",
    "REAL_AREA_KNOTS",
    "REAL_AREA_MEAN",
    "REAL_COMBINATION_COUNTS",
    "REAL_IMAGE_STATS",
    "REAL_NUM_IMAGES",
]

REAL_NUM_IMAGES: Final[int] = 12_568
"""Images in the real train set."""

REAL_COMBINATION_COUNTS: Final = MappingProxyType(
    {
        "": 5902,
        "3": 4759,
        "1": 769,
        "4": 516,
        "34": 284,
        "2": 195,
        "13": 91,
        "12": 35,
        "23": 14,
        "123": 2,
        "24": 1,
    }
)
"""Real images per class combination (the present class ids as a string, ``""`` = clean)."""

AREA_PERCENTILES: Final[tuple[float, ...]] = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 100.0)
"""Percentiles at which ``REAL_AREA_KNOTS`` are given."""

REAL_AREA_KNOTS: Final[tuple[tuple[int, ...], ...]] = (
    (163, 798, 1062, 1762, 3326, 5795, 8989, 11501, 15666, 31303),
    (316, 989, 1212, 1947, 2944, 4337, 5858, 7138, 10537, 14023),
    (115, 1829, 2785, 5054, 11953, 29029, 62019, 94007, 193331, 368240),
    (491, 5115, 7090, 13114, 25357, 45221, 75187, 98530, 129924, 192780),
)
"""Per class (index ``k`` = class ``k + 1``): defect area in pixels at each of ``AREA_PERCENTILES``."""

REAL_AREA_MEAN: Final[tuple[int, int, int, int]] = (4361, 3378, 25496, 34374)
"""Per class: mean defect area in pixels over the images that have the class."""

REAL_IMAGE_STATS: Final = MappingProxyType(
    {
        "mean": (66.41, 99.43, 132.8),
        "contrast": (17.54, 30.35, 56.43),
        "p1": (2.3, 43, 73.4),
        "p5": (4, 54, 85.1),
        "p50": (61.6, 101, 131.4),
        "p95": (111.5, 156, 210),
        "p99": (132, 180, 247.1),
        "saturated_pct": (0.0001465, 0.03503, 0.871),
        "band_pct": (0, 0, 28.25),
        "rows_range": (29.2, 47.09, 85.57),
        "cols_range": (33.49, 57.45, 97.38),
        "grad_x": (3.81, 5.953, 8.019),
        "grad_y": (4.042, 6.52, 9.494),
        "grad_ratio": (0.7909, 0.9248, 1.066),
        "local_std": (4.052, 6.639, 9.71),
        "fine_energy": (3.923, 6.038, 8.167),
        "mid_energy": (2.497, 4.334, 9.959),
        "coarse_energy": (2.254, 4.169, 10.26),
        "skew": (-0.06932, 0.5911, 1.678),
    }
)
"""Per-image appearance statistics (``realism.IMAGE_STAT_NAMES``) of the 54 real images in
``../shared/severstal-real/images``: p10, p50, p90 over the images. Measured once; no pixel is stored."""
