"""Per-image appearance statistics, to compare synthetic steel with real Severstal images.

``image_stats`` turns one grayscale image into a few numbers a person would look at: contrast, the
top-to-bottom and left-to-right lighting profile, dark and bright percentiles, saturated glints, the
black band past the sheet's edge, gradient energy along and across the rolling direction, and energy in
three spatial-frequency bands. ``format_image_stats`` prints a set's numbers next to the real images'
(from ``../shared/severstal-real/images`` when at hand, else from the summary in ``reference.py``);
``discriminator.discriminator_auc`` measures how well a classifier on the same numbers tells real from synthetic.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from cascade.synth.reference import REAL_IMAGE_STATS

__all__ = [
    "IMAGE_STAT_NAMES",
    "IMAGE_STAT_QUANTILES",
    "default_real_images",
    "folder_image_stats",
    "format_image_stats",
    "image_paths",
    "image_stats",
    "read_gray",
    "real_image_stats",
    "summarize_image_stats",
]

IMAGE_STAT_NAMES: tuple[str, ...] = (
    "mean",
    "contrast",
    "p1",
    "p5",
    "p50",
    "p95",
    "p99",
    "saturated_pct",
    "band_pct",
    "rows_range",
    "cols_range",
    "grad_x",
    "grad_y",
    "grad_ratio",
    "local_std",
    "fine_energy",
    "mid_energy",
    "coarse_energy",
    "skew",
)
"""What ``image_stats`` returns, in order (see ``_DESCRIPTIONS``)."""

_DESCRIPTIONS: dict[str, str] = {
    "mean": "mean gray level",
    "contrast": "std of gray levels",
    "p1": "darkest 1% (1st percentile)",
    "p5": "5th percentile",
    "p50": "median",
    "p95": "95th percentile",
    "p99": "brightest 1% (99th percentile)",
    "saturated_pct": "% of pixels >= 250 (glints)",
    "band_pct": "% of pixels < 20 (band past the sheet)",
    "rows_range": "top-to-bottom lighting: range of row means",
    "cols_range": "left-to-right lighting: range of 32-column means",
    "grad_x": "mean |d/dx| (across rolling)",
    "grad_y": "mean |d/dy| (along rolling)",
    "grad_ratio": "grad_x / grad_y",
    "local_std": "median 9x9 local std (sheet only)",
    "fine_energy": "std of detail < 2 px",
    "mid_energy": "std of detail 2-8 px",
    "coarse_energy": "std of detail 8-32 px",
    "skew": "skewness of gray levels (sheet only)",
}

IMAGE_STAT_QUANTILES: tuple[int, ...] = (10, 50, 90)
"""Percentiles over images that the tables report per statistic."""

_BAND_LEVEL = 20


def _percentiles(hist: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Percentiles (lower nearest rank) of uint8 gray levels given their ``(256,)`` histogram."""
    cdf = np.cumsum(hist)
    return [float(np.searchsorted(cdf, q / 100.0 * (cdf[-1] - 1), side="right")) for q in qs]


def _moments(hist: np.ndarray) -> tuple[float, float, float]:
    """Mean, standard deviation and skewness of gray levels given their ``(256,)`` histogram."""
    levels = np.arange(256, dtype=np.float64)
    p = hist / max(hist.sum(), 1)
    mean = float(p @ levels)
    centred = levels - mean
    var = float(p @ centred**2)
    sd = np.sqrt(var) + 1e-6
    return mean, float(np.sqrt(var)), float(p @ centred**3) / sd**3


def image_stats(gray: np.ndarray) -> np.ndarray:
    """Appearance statistics of one image (about 10 ms for 1600x256).

    Args:
        gray: ``(H, W)`` uint8 gray levels (an RGB ``(H, W, 3)`` image is averaged to gray).

    Returns:
        ``(len(IMAGE_STAT_NAMES),)`` float64, in the order of ``IMAGE_STAT_NAMES``.
    """
    if gray.ndim == 3:
        gray = gray.mean(axis=2).astype(np.uint8)
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 image, got shape {gray.shape} and dtype {gray.dtype}")
    hist = np.bincount(gray.ravel(), minlength=256)
    mean, contrast, _ = _moments(hist)
    # Columns that are the sheet (not the black band past its edge); profiles and texture use only them.
    col_means = cv2.reduce(gray, 0, cv2.REDUCE_AVG, dtype=cv2.CV_32F)[0]
    sheet_cols = col_means >= _BAND_LEVEL * 1.5
    sheet_u8 = gray if sheet_cols.all() or sheet_cols.sum() < 32 else np.ascontiguousarray(gray[:, sheet_cols])
    cols = col_means[sheet_cols] if sheet_cols.sum() >= 32 else col_means
    sheet = sheet_u8.astype(np.float32)
    rows = cv2.blur(cv2.reduce(sheet, 1, cv2.REDUCE_AVG).T, (9, 1))[0]
    blocks = cols[: cols.size // 32 * 32].reshape(-1, 32).mean(axis=1)
    gx = cv2.mean(cv2.absdiff(sheet_u8[:, 1:], sheet_u8[:, :-1]))[0]
    gy = cv2.mean(cv2.absdiff(sheet_u8[1:], sheet_u8[:-1]))[0]
    mean9 = cv2.blur(sheet, (9, 9))
    local_var = cv2.blur(sheet * sheet, (9, 9)) - mean9 * mean9
    local_std = np.sqrt(np.maximum(local_var[::4, ::4], 0.0))
    b1 = cv2.GaussianBlur(sheet, (0, 0), 1.0)
    half = cv2.resize(b1, (b1.shape[1] // 2, b1.shape[0] // 2), interpolation=cv2.INTER_AREA)
    b2 = cv2.GaussianBlur(half, (0, 0), 1.9)  # sigma ~4 px at full size
    b3 = cv2.GaussianBlur(b2, (0, 0), 7.7)  # sigma ~16 px at full size
    return np.asarray(
        [
            mean,
            contrast,
            *_percentiles(hist, (1, 5, 50, 95, 99)),
            100.0 * hist[250:].sum() / gray.size,
            100.0 * hist[:_BAND_LEVEL].sum() / gray.size,
            float(rows.max() - rows.min()),
            float(blocks.max() - blocks.min()) if blocks.size else 0.0,
            gx,
            gy,
            gx / (gy + 1e-6),
            float(np.median(local_std)),
            float(cv2.meanStdDev(sheet - b1)[1][0, 0]),
            float(cv2.meanStdDev(half - b2)[1][0, 0]),
            float(cv2.meanStdDev(b2 - b3)[1][0, 0]),
            _moments(np.bincount(sheet_u8.ravel(), minlength=256))[2],
        ],
        dtype=np.float64,
    )


def read_gray(path: str | Path) -> np.ndarray:
    """Decode an image file as ``(H, W)`` uint8 gray levels."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError(f"cannot decode image {path}")
    return gray


def image_paths(folder: str | Path) -> list[Path]:
    """The ``.jpg``/``.jpeg``/``.png`` files of a folder, sorted.

    Raises:
        FileNotFoundError: not a folder, or no images in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise FileNotFoundError(f"no images found in {folder}")
    return paths


def folder_image_stats(images: str | Path | Iterable[str | Path], limit: int | None = None) -> np.ndarray:
    """``image_stats`` of every ``.jpg``/``.png`` in a folder (sorted), or of the given files.

    Args:
        images: a folder, or image paths.
        limit: at most this many images (the first ones).

    Returns:
        ``(N, len(IMAGE_STAT_NAMES))`` float64.
    """
    paths = image_paths(images) if isinstance(images, str | Path) else [Path(p) for p in images]
    paths = paths[:limit] if limit is not None else paths
    if not paths:
        raise FileNotFoundError("no images given")
    return np.stack([image_stats(read_gray(p)) for p in paths])


def default_real_images() -> Path:
    """The real slice's ``images/`` folder at ``../shared/severstal-real`` (beside the checkout or the cwd)."""
    candidates = [
        base / "shared" / "severstal-real" / "images"
        for base in (Path(__file__).resolve().parents[3], Path.cwd().resolve().parent)
    ]
    return next((p for p in candidates if p.is_dir()), candidates[0])


def summarize_image_stats(stats: np.ndarray) -> np.ndarray:
    """``(F, len(IMAGE_STAT_QUANTILES))`` percentiles over images of an ``(N, F)`` statistics table."""
    return np.percentile(np.asarray(stats), IMAGE_STAT_QUANTILES, axis=0).T


@functools.cache
def _folder_summary(folder: str) -> tuple[np.ndarray, int]:
    stats = folder_image_stats(folder)
    return summarize_image_stats(stats), len(stats)


def real_image_stats(images_dir: str | Path | None = None) -> tuple[np.ndarray, str]:
    """Summary of the real images' statistics and where it comes from.

    Args:
        images_dir: a folder of real images; default ``default_real_images()``, falling back to the summary
            constants ``reference.REAL_IMAGE_STATS`` when that folder is absent.

    Returns:
        ``(F, 3)`` p10/p50/p90 per statistic, and a description of the source.
    """
    folder = Path(images_dir) if images_dir is not None else default_real_images()
    if folder.is_dir():
        summary, count = _folder_summary(str(folder.resolve()))  # measured once per process
        return summary.copy(), f"{count} real images ({folder})"
    if images_dir is not None:
        raise FileNotFoundError(f"real images folder {folder} not found")
    table = np.asarray([REAL_IMAGE_STATS[name] for name in IMAGE_STAT_NAMES], dtype=np.float64)
    return table, "54 real Severstal images (summary constants)"


def format_image_stats(
    synth: np.ndarray, real: np.ndarray | None = None, real_source: str = "real", names: Sequence[str] | None = None
) -> str:
    """A markdown table of per-image statistics: p10 / p50 / p90 over the set, the real images' alongside.

    Args:
        synth: ``(N, F)`` statistics of the set.
        real: ``(F, 3)`` summary of the real images (``real_image_stats``), or ``None``.
        real_source: description of ``real``.
        names: statistic names (default ``IMAGE_STAT_NAMES``).
    """
    names = tuple(names or IMAGE_STAT_NAMES)
    summary = summarize_image_stats(synth)
    q = "/".join(f"p{p}" for p in IMAGE_STAT_QUANTILES)
    lines = [
        f"Per-image appearance, {q} over {len(synth)} images" + (f" vs {real_source}" if real is not None else ""),
        "",
        f"| statistic | what | set {q} |" + (f" real {q} |" if real is not None else ""),
        "|---|---|---|" + ("---|" if real is not None else ""),
    ]
    for i, name in enumerate(names):
        cells = [name, _DESCRIPTIONS.get(name, ""), " / ".join(_fmt(v) for v in summary[i])]
        if real is not None:
            cells.append(" / ".join(_fmt(v) for v in real[i]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
