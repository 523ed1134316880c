"""Synthetic data generation speed (one core) and the generated set's statistics next to the real ones.

Usage::

    python -m bench.bench_synth            # 1,000 images
    python -m bench.bench_synth --quick    # 200 images

Runs ``generate_dataset`` end to end (draw + JPEG + RLE + train.csv) in one process with OpenCV pinned to
one thread, splits the per-image time into stages, then runs the same set with one worker per core for the
speed-up, and compares the set's statistics with the real train set. Writes ``bench/results/synth.md``.
The goal is >= 20 images/s on one core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["GOAL_IMAGES_PER_SECOND", "main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "synth.md"
GOAL_IMAGES_PER_SECOND = 20.0
"""Target speed of one process."""


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="images per run")
    parser.add_argument("--quick", action="store_true", help="200 images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = 200 if args.quick else args.n

    import cv2

    from cascade.synth import format_stats, generate_dataset, real_stats, synth_stats
    from cascade.synth.noise import noise_banks

    cv2.setNumThreads(1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    noise_banks()  # built once per process; not part of the per-image cost
    stages = _stages(min(n, 200), args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_dataset(Path(tmp) / "one", n, args.seed, progress=True)
        one = n / (time.perf_counter() - t0)
        stats = format_stats(synth_stats(Path(tmp) / "one"), real_stats())
        workers = os.cpu_count() or 1
        many = None
        if workers > 1:
            t0 = time.perf_counter()
            generate_dataset(Path(tmp) / "many", n, args.seed, workers=workers, progress=True)
            many = n / (time.perf_counter() - t0)

    per_image = sum(stages.values())
    lines = [
        "## Synthetic data (`cascade synth`)",
        "",
        f"`python -m bench.bench_synth{' --quick' if args.quick else ''}`: {n} images of 1600x256, seed {args.seed},"
        " `real` profile, written as JPEG + `train.csv`;"
        f" 1-minute load average at start {load:.1f} on {os.cpu_count()} cores (other work slows both runs).",
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
    lines += ["", "Statistics of the generated set (synth / real):", "", stats, ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
