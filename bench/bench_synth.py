"""Synthetic data: generation speed (one core), and how far the images are from real Severstal ones.

Usage::

    python -m bench.bench_synth            # 1,000 images for speed, 300 for realism
    python -m bench.bench_synth --quick    # 200 images for speed, 150 for realism

Speed: ``generate_dataset`` end to end (draw + JPEG + RLE + train.csv) in one process with OpenCV pinned to
one thread, split into stages, then the same set with one worker per core. Goal: >= 20 images/s on one core.

Realism: the per-image appearance statistics of ``cascade.synth.realism`` (contrast, lighting profile,
dark/bright percentiles, saturated glints, gradient and frequency energy) of synthetic images next to the 54
real images in ``../shared/severstal-real/images`` (used only to measure), and a cross-validated
real-vs-synthetic discriminator on those statistics (logistic regression and gradient-boosted trees, 5-fold
x 5 repeats): ROC AUC 0.5 = indistinguishable, 1.0 = always told apart. Goal: AUC <= 0.80. Rows: the ``real``
profile; the same generator with the real slice's class mix (its images are mostly defective); the
``shifted`` profile (a sanity check: it is meant to look different). Writes ``bench/results/synth.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

__all__ = ["AUC_BEFORE", "GOAL_AUC", "GOAL_IMAGES_PER_SECOND", "main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "synth.md"
REAL = ROOT.parent / "shared" / "severstal-real"
GOAL_IMAGES_PER_SECOND = 20.0
"""Target speed of one process."""
GOAL_AUC = 0.80
"""Target discriminator AUC (issue 10)."""
AUC_BEFORE = {"logistic": 0.999, "boosting": 0.995}
"""This benchmark's discriminator on the generator before issue 10 (commit 22683c0, 300 images, seed 0)."""


def _stages(n: int, seed: int) -> dict[str, float]:
    """Seconds per image spent drawing, JPEG-encoding, RLE-encoding and writing, over ``n`` images."""
    from cascade.rle import encode_stack
    from cascade.synth import SynthConfig, generate_image
    from cascade.synth.generator import encode_jpeg

    config = SynthConfig()
    totals = dict.fromkeys(("draw", "jpeg", "rle", "write"), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            t0 = time.perf_counter()
            synth = generate_image(seed, i, config)
            t1 = time.perf_counter()
            data = encode_jpeg(synth.image, config.jpeg_quality)
            t2 = time.perf_counter()
            encode_stack(synth.masks)
            t3 = time.perf_counter()
            (Path(tmp) / f"{i}.jpg").write_bytes(data)
            t4 = time.perf_counter()
            for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                totals[key] += dt
    return {k: v / n for k, v in totals.items()}


def _speed(n: int, seed: int) -> tuple[list[str], str]:
    from cascade.synth import format_stats, generate_dataset, real_stats, synth_stats
    from cascade.synth.noise import noise_banks
    from cascade.synth.shapes import shape_table

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    noise_banks(), shape_table()  # built once per process; not part of the per-image cost
    stages = _stages(min(n, 200), seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_dataset(Path(tmp) / "one", n, seed, progress=True)
        one = n / (time.perf_counter() - t0)
        stats = format_stats(synth_stats(Path(tmp) / "one"), real_stats())
        workers = os.cpu_count() or 1
        many = None
        if workers > 1:
            t0 = time.perf_counter()
            generate_dataset(Path(tmp) / "many", n, seed, workers=workers, progress=True)
            many = n / (time.perf_counter() - t0)
    per_image = sum(stages.values())
    lines = [
        f"Speed: {n} images of 1600x256, seed {seed}, `real` profile, written as JPEG + `train.csv`; 1-minute load "
        f"average at start {load:.1f} on {os.cpu_count()} cores (other work slows both runs).",
        "",
        "| run | images/s | goal |",
        "|---|---:|---:|",
        f"| one process, OpenCV 1 thread | {one:.1f} | >= {GOAL_IMAGES_PER_SECOND:.0f} "
        f"({'met' if one >= GOAL_IMAGES_PER_SECOND else 'NOT met'}) |",
    ]
    if many is not None:
        lines.append(f"| {workers} worker processes | {many:.1f} ({many / one:.2f}x) | |")
    lines += ["", "| stage (one process) | ms/image | share |", "|---|---:|---:|"]
    for key, seconds in stages.items():
        lines.append(f"| {key} | {1000 * seconds:.1f} | {100 * seconds / per_image:.0f}% |")
    return lines, stats


def _slice_mix() -> dict[str, int]:
    """Class combinations of the real images (areas from ``images.csv``; no pixels)."""
    from bench.copy_paste_data import real_image_labels

    _, _, presence = real_image_labels(REAL.parent)
    return dict(Counter("".join(str(k) for k, has in enumerate(row, 1) if has) for row in presence))


def _realism(n: int, seed: int) -> list[str]:
    import numpy as np

    from cascade.synth import generate_dataset, synth_config
    from cascade.synth.discriminator import DISCRIMINATORS, discriminator_auc
    from cascade.synth.realism import (
        IMAGE_STAT_NAMES,
        folder_image_stats,
        format_image_stats,
        summarize_image_stats,
    )

    images = REAL / "images"
    if not images.is_dir():
        return [f"Realism skipped: {images} is absent (the real images are only measured, never shipped)."]
    real = folder_image_stats(images)
    sets = {
        "`real` profile": synth_config("real"),
        "real slice's class mix": replace(synth_config("real"), combinations=tuple(_slice_mix().items())),
        "`shifted` profile (meant to differ)": synth_config("shifted"),
    }
    stats = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, config) in enumerate(sets.items()):
            generate_dataset(Path(tmp) / str(k), n, seed, config=config, workers=os.cpu_count() or 1)
            stats[name] = folder_image_stats(Path(tmp) / str(k) / "train_images")
    aucs = {name: {m: discriminator_auc(real, synth, m) for m in DISCRIMINATORS} for name, synth in stats.items()}
    rows = [
        f"| {name} | " + " | ".join(f"{a:.3f} ± {s:.3f}" for a, s in by_model.values()) + " |"
        for name, by_model in aucs.items()
    ]
    ours = stats["`real` profile"]
    labels = np.r_[np.ones(len(real)), np.zeros(len(ours))]
    from sklearn.metrics import roc_auc_score

    single = [(name, roc_auc_score(labels, np.r_[real[:, i], ours[:, i]])) for i, name in enumerate(IMAGE_STAT_NAMES)]
    single = sorted(((name, max(a, 1 - a)) for name, a in single), key=lambda t: -t[1])
    before = " / ".join(f"{AUC_BEFORE[m]:.3f}" for m in DISCRIMINATORS)
    worst = max(a for a, _ in aucs["`real` profile"].values())
    return [
        f"Realism: {n} synthetic images per row (seed {seed}) against the {len(real)} real Severstal images of "
        f"`../shared/severstal-real/images` (only measured). Real-vs-synthetic discriminator on the "
        f"{len(IMAGE_STAT_NAMES)} per-image statistics below, ROC AUC over 5-fold cross-validation x 5 repeats "
        "(mean ± std over repeats); 0.5 = indistinguishable.",
        "",
        "| synthetic set | " + " | ".join(f"AUC {m}" for m in DISCRIMINATORS) + " |",
        "|---|---:|---:|",
        f"| before issue 10 (generator of commit 22683c0) | {before.replace(' / ', ' | ')} |",
        *rows,
        "",
        f"Goal AUC <= {GOAL_AUC:.2f} on the `real` profile (the larger of the two): "
        f"**{'met' if worst <= GOAL_AUC else 'NOT met'}** ({worst:.3f}). "
        "Statistics that still differ most on their own (single-feature AUC): "
        + ", ".join(f"{name} {a:.2f}" for name, a in single[:5])
        + ".",
        "",
        format_image_stats(ours, summarize_image_stats(real), f"{len(real)} real images"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="images for the speed runs")
    parser.add_argument("--realism-n", type=int, default=300, help="synthetic images per realism row")
    parser.add_argument("--quick", action="store_true", help="200 images for speed, 150 for realism")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n, realism_n = (200, 150) if args.quick else (args.n, args.realism_n)

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the discriminators: one thread, as the rest of the run
    import cv2

    cv2.setNumThreads(1)
    speed, stats = _speed(n, args.seed)
    lines = [
        "## Synthetic data (`cascade synth`)",
        "",
        f"`python -m bench.bench_synth{' --quick' if args.quick else ''}`.",
        "",
        *_realism(realism_n, args.seed),
        "",
        *speed,
        "",
        "Class mix and defect areas of the generated set (synth / real train set):",
        "",
        stats,
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
