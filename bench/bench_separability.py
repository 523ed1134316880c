"""How separable is each synthetic defect class from clean steel at all? A learnability ceiling for the generator.

Usage::

    python -m bench.bench_separability             # 1,200 images per arm, quarter and rows/8 inputs
    python -m bench.bench_separability --full      # also the full-resolution input (about 6 min per class)
    python -m bench.bench_separability --quick     # 300 images, 4 epochs (a smoke run)

The demo classifier sees the whole 1600-wide image; this bench asks the easier question below it. Images of the
``balanced`` profile (every class on ~20% of them) are cut into 256x256 crops: for class ``c``, a positive crop
holds a random pixel of a class-``c`` region at a random place in its width, and each positive is paired with a
negative crop **at the same columns** of an image without class ``c`` (so the sheet's edge band and other
position cues cannot tell them apart). A small CNN (four 3x3 conv blocks, global max pooling), trained from
scratch on the crops of the first 70% of the images (flips only), is scored by ROC AUC on the crops of the rest.
Inputs: ``quarter`` (64x64, the demo recipe's scale), ``rows8`` (32x256: rows / 8, every column kept, as thin
vertical marks need), ``full`` (256x256). Arms: the generator as it is, and the same generator without the
look-alikes (``SynthConfig.distractors=False``). 0.5 = chance. A class that stays near chance here even at full
resolution cannot be learned from these images by any classifier; if it separates without the look-alikes,
the look-alikes are what hide it. Writes ``bench/results/separability.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.bench_classifier_probe import auc_standard_error
from cascade.constants import CLASS_IDS, CLASS_NAMES

__all__ = ["INPUTS", "main", "paired_crops", "train_and_score"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "separability.md"
CROP = 256
INPUTS: dict[str, tuple[int, int]] = {"quarter": (64, 64), "rows8": (32, 256), "full": (256, 256)}
"""Input name -> network input (height, width) of a 256x256 crop."""
TRAIN_SHARE = 0.7


def paired_crops(
    columns: np.ndarray, rng: np.random.Generator, per_image: int = 2
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Positive and negative crop places for one class, paired by column.

    Args:
        columns: ``(N, W)`` bool, per image the columns holding the class (``W >= 256``).
        rng: random generator.
        per_image: positive crops per image holding the class.

    Returns:
        ``(positives, negatives)``: equally long lists of ``(image index, x0)``; the crop is columns
        ``[x0, x0 + 256)``. Negative ``k`` is at the same ``x0`` as positive ``k``, in an image without the class.
        Empty lists when no image (or no clean image) exists.
    """
    width = columns.shape[1]
    if width < CROP:
        raise ValueError(f"images must be at least {CROP} columns wide, got {width}")
    present = columns.any(axis=1)
    clean = np.flatnonzero(~present)
    if not clean.size:
        return [], []
    positives: list[tuple[int, int]] = []
    for i in np.flatnonzero(present):
        cols = np.flatnonzero(columns[i])
        for _ in range(per_image):
            x = int(rng.choice(cols))
            x0 = int(np.clip(x - rng.integers(16, CROP - 16), 0, width - CROP))
            positives.append((int(i), x0))
    negatives = [(int(rng.choice(clean)), x0) for _, x0 in positives]
    return positives, negatives


def _net():
    from torch import nn

    def block(cin: int, cout: int, pool: bool) -> list:
        layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        return [*layers, nn.MaxPool2d(2)] if pool else layers

    layers = block(1, 16, True) + block(16, 32, True) + block(32, 64, True) + block(64, 64, False)
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 1))


def train_and_score(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, epochs: int, seed: int = 0
) -> float:
    """ROC AUC on the test crops of the small CNN trained on the train crops (``(N, h, w)`` float32 each)."""
    import torch
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x_train[:, None]), torch.from_numpy(y_train.astype(np.float32))
    order = np.arange(len(xt))
    for _ in range(epochs):
        model.train()
        rng.shuffle(order)
        for start in range(0, len(order), 32):
            idx = torch.from_numpy(order[start : start + 32])
            batch = xt[idx]
            if rng.random() < 0.5:
                batch = batch.flip(3)
            if rng.random() < 0.5:
                batch = batch.flip(2)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch)[:, 0], yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test = torch.from_numpy(x_test[:, None])
    with torch.no_grad():
        scores = torch.cat([model(test[s : s + 64])[:, 0] for s in range(0, len(test), 64)]).numpy()
    return float(roc_auc_score(y_test, scores))


def _inputs(images: np.ndarray, places: list[tuple[int, int]], size: tuple[int, int]) -> np.ndarray:
    """The crops at ``places``, resized to ``size`` (area averaging) and standardised per crop."""
    import cv2

    out = np.stack(
        [cv2.resize(images[i, :, x0 : x0 + CROP], size[::-1], interpolation=cv2.INTER_AREA) for i, x0 in places]
    ).astype(np.float32)
    out -= out.mean(axis=(1, 2), keepdims=True)
    out /= out.std(axis=(1, 2), keepdims=True) + 1.0
    return out


def _arm(n: int, seed: int, distractors: bool, inputs: list[str], epochs: int) -> dict[tuple[int, str], tuple]:
    """``{(class id, input): (AUC, test positives, seconds)}`` for one generator arm."""
    from cascade.synth import generate_image, synth_config

    config = replace(synth_config("balanced"), distractors=distractors)
    drawn = [generate_image(seed, i, config) for i in range(n)]
    images = np.stack([d.image for d in drawn])
    columns = np.stack([d.masks.any(axis=1) for d in drawn])  # (N, classes, W)
    split = int(TRAIN_SHARE * n)
    results: dict[tuple[int, str], tuple] = {}
    for class_id in range(1, columns.shape[1] + 1):
        rng = np.random.default_rng([seed, class_id])
        train_pos, train_neg = paired_crops(columns[:split, class_id - 1], rng)
        test_pos, test_neg = paired_crops(columns[split:, class_id - 1], rng)
        test_pos = [(i + split, x0) for i, x0 in test_pos]
        test_neg = [(i + split, x0) for i, x0 in test_neg]
        if not train_pos or not test_pos:
            continue
        y_train = np.r_[np.ones(len(train_pos)), np.zeros(len(train_neg))]
        y_test = np.r_[np.ones(len(test_pos)), np.zeros(len(test_neg))]
        for name in inputs:
            size = INPUTS[name]
            t0 = time.perf_counter()
            auc = train_and_score(
                _inputs(images, train_pos + train_neg, size), y_train,
                _inputs(images, test_pos + test_neg, size), y_test, epochs,
            )  # fmt: skip
            results[(class_id, name)] = (auc, len(test_pos), time.perf_counter() - t0)
            state = "on" if distractors else "off"
            print(f"  look-alikes {state}, class {class_id}, {name}: AUC {auc:.3f}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the bench and write its markdown section."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1200, help="images per arm (balanced profile)")
    parser.add_argument("--seed", type=int, default=11, help="generator seed (apart from training's 0)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--full", action="store_true", help="also the full-resolution 256x256 input (slow)")
    parser.add_argument("--quick", action="store_true", help="300 images, 4 epochs: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.epochs = 300, 4
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    inputs = ["quarter", "rows8"] + (["full"] if args.full else [])
    arms = {on: _arm(args.n, args.seed, on, inputs, args.epochs) for on in (True, False)}
    lines = [
        "## Separability of each synthetic class from clean steel (a learnability ceiling)",
        "",
        f"`python -m bench.bench_separability{' --full' if args.full else ''}{' --quick' if args.quick else ''}`: "
        f"{args.n} `balanced`-profile images per arm (seed {args.seed}), 256x256 crops, each positive paired with a "
        f"negative at the same columns of an image without the class; a small CNN from scratch ({args.epochs} "
        f"epochs, flips only) trained on the crops of the first {TRAIN_SHARE:.0%} of the images, ROC AUC on the "
        "rest. 0.5 = chance. Look-alikes off: the same generator with `distractors=False`.",
        "",
        "| class | input | AUC, look-alikes on | AUC, look-alikes off | test positives (and as many negatives) |",
        "|---|---|---:|---:|---:|",
    ]
    if args.quick:
        lines[2:2] = ["**`--quick`: a smoke run, not the measurement.**", ""]
    for class_id, class_name in zip(CLASS_IDS, CLASS_NAMES, strict=True):
        for name in inputs:
            on, off = arms[True].get((class_id, name)), arms[False].get((class_id, name))
            if on is None or off is None:
                continue
            lines.append(f"| {class_id} {class_name.replace('_', ' ')} | {name} {INPUTS[name][0]}x{INPUTS[name][1]} | "
                         f"{on[0]:.3f} | {off[0]:.3f} | {on[1]} |")  # fmt: skip
    seconds = sum(r[2] for arm in arms.values() for r in arm.values())
    counts = [r[1] for arm in arms.values() for r in arm.values()]
    if counts:
        fewest = min(counts)
        noise = 2 * auc_standard_error(0.7, fewest, fewest)
        lines += ["", f"Noise: an AUC near 0.7 on {fewest} positives and as many negatives is uncertain by about "
                      f"{noise:.2f} (two Hanley-McNeil standard errors)."]  # fmt: skip
    lines += ["", f"Training and scoring took {seconds:.0f} s in all ({os.cpu_count()} threads).", ""]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"{text}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
