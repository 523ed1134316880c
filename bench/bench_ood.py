"""Out-of-distribution flags of a bundle (issue 15 item 4): how many clearly foreign inputs it flags, and how
few of its own distribution.

Usage::

    python -m bench.bench_ood                      # the demo bundle (synthetic Severstal) and NEU-Seg
    python -m bench.bench_ood --quick

For each of the two data sets the reference (``cascade.ood``) is the bundle's own when it has one, else fitted
here as the package stage would (on the training images: synthetic seed 0 for the demo, NEU-Seg ``train``);
a bundle whose reference predates the current statistics is scored twice: with its own reference and with
one fitted here, which is what ``cascade bundle refit-ood`` would store.
Scored: held-out images of the same distribution (synthetic seed 1; NEU-Seg ``val``), the other data set's
images, the held-out images inverted and heavily blurred (15-pixel box), and non-steel photos (crops of
scikit-learn's two sample photos resized to the bundle's image size), plus, for the Severstal bundle, the
real Severstal images in ``../shared/severstal-real/images`` (a measure of the synthetic-to-real gap).
Goal: >= 90% of foreign inputs flagged, <= 5% of the own held-out images. Writes ``bench/results/ood.md``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "bench" / "results" / "ood.md"


def _blur(image: np.ndarray, k: int = 15) -> np.ndarray:
    out = image.astype(np.float32)
    kernel = np.ones(k, dtype=np.float32) / k
    for axis in (0, 1):
        out = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, out)
    return out.round().astype(np.uint8)


def _photos(count: int, shape: tuple[int, int]) -> list[np.ndarray]:
    """Crops of scikit-learn's sample photos (a temple, a flower) with the bundle's aspect, resized to its size
    (so the image size alone does not give them away)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    photos = load_sample_images().images
    out = []
    for i in range(count):
        photo = photos[i % 2]
        scale = rng.uniform(0.3, 1.0) * min(photo.shape[0] / shape[0], photo.shape[1] / shape[1])
        h, w = max(8, int(shape[0] * scale)), max(8, int(shape[1] * scale))
        top, left = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
        crop = Image.fromarray(photo[top : top + h, left : left + w]).resize((shape[1], shape[0]))
        out.append(np.asarray(crop))
    return out


def _read(folder: Path, names: list[str]) -> list[np.ndarray]:
    from cascade.imageio import read_image

    return [read_image(folder / n) for n in names]


def _spaced(names: list[str], n: int) -> list[str]:
    return [names[i] for i in np.unique(np.linspace(0, len(names) - 1, min(n, len(names))).round().astype(int))]


def _neu_ids(split: str) -> list[str]:
    text = (SHARED / "neu-seg" / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    return [f"{stem}.jpg" for stem in text]


def _rates(reference: Any, sets: dict[str, list[np.ndarray]]) -> dict[str, tuple[int, float]]:
    return {
        name: (len(images), float(np.mean(reference.score(images) > reference.threshold)))
        for name, images in sets.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="images per scored set")
    parser.add_argument("--train-n", type=int, default=400, help="training images the references are fitted on")
    parser.add_argument("--quick", action="store_true", help="--n 60 --train-n 150")
    parser.add_argument("--neu-bundle", default="neu-seg", help="the NEU-Seg bundle (path or shipped name)")
    parser.add_argument("--fit", action="store_true", help="fit both references here even when the bundles have one")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.train_n = 60, 150
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from cascade.bundle import BundleError, read_manifest
    from cascade.embedded import resolve_bundle
    from cascade.ood import FEATURE_NAMES, fit_reference_on_images
    from cascade.synth import generate_dataset

    neu_dir = SHARED / "neu-seg" / "JPEGImages"
    real_dir = SHARED / "severstal-real" / "images"
    rows: dict[str, dict[str, tuple[int, float]]] = {}
    sources: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench_ood_") as tmp:
        train = generate_dataset(Path(tmp) / "train", args.train_n, 0, workers=os.cpu_count() or 1)
        held = generate_dataset(Path(tmp) / "held", args.n, 1, workers=os.cpu_count() or 1)
        synth_held = _read(held.images_dir, list(held.image_ids))
        neu_val = _read(neu_dir, _spaced(_neu_ids("val"), args.n))
        for name, bundle, own, train_dir, train_ids, foreign in (
            ("demo (synthetic Severstal)", "demo", synth_held, train.images_dir, list(train.image_ids), neu_val),
            ("neu-seg", args.neu_bundle, neu_val, neu_dir, _spaced(_neu_ids("train"), args.train_n), synth_held),
        ):
            try:
                stored = None if args.fit else read_manifest(resolve_bundle(bundle)).ood
            except (BundleError, OSError, ValueError):  # not available here: fit it as packaging would
                stored = None
            references = {}
            if stored is not None:
                references[name] = (stored, "the bundle's own reference")
            if stored is None or stored.features != FEATURE_NAMES or stored.scale_below is None:
                label = name if stored is None else f"{name}, reference refitted here"
                fitted = fit_reference_on_images(train_dir, train_ids)
                references[label] = (fitted, f"fitted here on {len(train_ids)} training images")
            shape = own[0].shape[:2]
            sets = {
                "own held-out (should not be flagged)": own,
                "the other data set": foreign,
                "own held-out, inverted": [255 - image for image in own],
                "own held-out, blurred (15 px box)": [_blur(image) for image in own[: max(20, args.n // 4)]],
                "non-steel photos": _photos(max(20, args.n // 4), shape),
            }
            if bundle == "demo" and real_dir.is_dir():
                sets["real Severstal images (synthetic-to-real gap)"] = _read(real_dir, sorted(os.listdir(real_dir)))
            for label, (reference, source) in references.items():
                rows[label], sources[label] = _rates(reference, sets), source
    text = _render(rows, sources)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {args.out}")
    return 0


def _render(rows: dict[str, dict[str, tuple[int, float]]], sources: dict[str, str]) -> str:
    lines = [
        "## Out-of-distribution flags (`bench/bench_ood.py`)\n",
        "`python -m bench.bench_ood`: share of images whose `cascade.ood` score is above the bundle's threshold "
        "(image statistics: brightness, contrast, skew, edge energy, sharpness and flatness, colourfulness, size, and "
        "since the two-sided references also polarity and fine-to-coarse energy). "
        "Goal: >= 90% of foreign inputs flagged, <= 5% of the bundle's own held-out images.\n",
    ]
    for name, rates in rows.items():
        lines += [f"**{name}** ({sources[name]}):", "", "| input | images | flagged | goal |", "|---|---:|---:|---|"]
        for what, (count, rate) in rates.items():
            goal = (
                "<= 5%" if what.startswith("own held-out (") else ("report" if "real Severstal" in what else ">= 90%")
            )
            met = (
                ""
                if goal == "report"
                else (" (met)" if (rate <= 0.05 if goal == "<= 5%" else rate >= 0.9) else " (not met)")
            )
            lines.append(f"| {what} | {count} | {100 * rate:.1f}% | {goal}{met} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
