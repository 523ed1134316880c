"""Can a small classifier see each defect class? Input resolution and global pooling, side by side.

Usage::

    python -m bench.bench_classifier_probe             # 1,200 balanced images, 12 epochs per arm
    python -m bench.bench_classifier_probe --quick     # 400 images, 4 epochs (a smoke run)

The demo classifier (``resnet10t`` as in ``configs/demo-cpu.yaml``, from scratch) is trained briefly on a
balanced synthetic set (``cascade synth --profile balanced``: every class on ~20% of the images), the first
three quarters of it, and scored by per-class ROC AUC on the last quarter. Arms, the same split and seed:

- input: ``quarter`` is the recipe's input (the image resized to 64x400); ``full`` keeps every pixel and
  folds 4x4 blocks into channels (``PixelUnshuffle(4)``: 16 grey channels at 64x400, so the network and its
  cost stay nearly the same while thin lines and small pits keep their contrast);
- pooling: timm's ``global_pool`` before the linear head: ``avg`` (the default), ``max``, ``avgmax``,
  ``catavgmax``. With average pooling a small defect is one cell of 2x13 among clean ones.

No augmentation but flips, no deep supervision: the probe asks what the input and the head let a network
learn, not what the recipe reaches. Two arms train at a time, one thread each (2 cores). Writes
``bench/results/classifier_probe.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["ARMS", "auc_standard_error", "main", "train_arm"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "classifier_probe.md"
SHARED = ROOT.parent / "shared"
ARMS: tuple[tuple[str, str], ...] = (
    ("quarter", "avg"),
    ("full", "avg"),
    ("quarter", "max"),
    ("full", "max"),
    ("quarter", "avgmax"),
    ("quarter", "catavgmax"),
)
"""(input, pooling) arms in the order they run; the first is the demo recipe's classifier input and head."""
_RESIZE = {"quarter": (4, 1), "full": (1, 4)}
_ARM_COMMAND = (sys.executable, "-m", "bench.bench_classifier_probe", "--arm")
"""input -> (resize factor, pixel-unshuffle factor)."""


def _load(data: Path) -> tuple[list[str], np.ndarray]:
    """Sorted image names of a Kaggle-CSV folder and their ``(N, 4)`` class-presence labels."""
    from cascade.formats.annotations import read_annotations

    names = sorted(p.name for p in (data / "train_images").iterdir())
    return names, read_annotations(data / "train.csv", names).labels().astype(np.float32)


def _gray(path: Path, factor: int) -> np.ndarray:
    """A grey image, shrunk by ``factor`` (area interpolation, as the predictor resizes) when above 1."""
    import cv2

    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError(f"cannot read image {path}")
    if factor > 1:
        gray = cv2.resize(gray, (gray.shape[1] // factor, gray.shape[0] // factor), interpolation=cv2.INTER_AREA)
    return gray


def _aucs(labels: np.ndarray, probs: np.ndarray) -> list[float]:
    """Per-class ROC AUC; NaN for a class that is never or always present."""
    from sklearn.metrics import roc_auc_score

    return [
        float(roc_auc_score(labels[:, c], probs[:, c])) if 0 < labels[:, c].sum() < len(labels) else float("nan")
        for c in range(labels.shape[1])
    ]


def train_arm(
    data: Path, arm: str, pool: str, epochs: int, seed: int = 0, shared: Path | None = None
) -> tuple[list[float], list[float], float]:
    """Train one arm on the first 3/4 of ``data``; return its per-class ROC AUC on the rest, on the real Severstal
    images of ``shared`` (image-level labels, evaluation only; NaN without them), and the training seconds."""
    import timm
    import torch
    from torch import nn

    from bench.copy_paste_data import real_image_labels

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    factor, unshuffle = _RESIZE[arm]
    names, labels = _load(data)
    x_all = np.stack([_gray(data / "train_images" / name, factor) for name in names])
    cut = len(names) * 3 // 4
    train, val = np.arange(cut), np.arange(cut, len(names))
    mean, std = float(x_all[train].mean()), float(x_all[train].std())
    net = timm.create_model(
        "resnet10t", num_classes=4, in_chans=unshuffle**2, channels=[32, 64, 128, 256], stem_width=24,
        global_pool=pool,
    )  # fmt: skip
    model = (nn.Sequential(nn.PixelUnshuffle(unshuffle), net) if unshuffle > 1 else net).to(
        memory_format=torch.channels_last
    )
    batch = 16
    steps = epochs * (len(train) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    loss_fn = nn.BCEWithLogitsLoss()

    def tensor(ids: np.ndarray, flip: bool, source: np.ndarray = x_all) -> torch.Tensor:
        x = source[ids].astype(np.float32)
        if flip:
            for k in range(len(x)):
                if rng.random() < 0.5:
                    x[k] = x[k, :, ::-1]
                if rng.random() < 0.5:
                    x[k] = x[k, ::-1, :]
        out = (torch.from_numpy(np.ascontiguousarray(x))[:, None] - mean) / std
        return out.contiguous(memory_format=torch.channels_last)

    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = rng.permutation(train)
        for b in range(len(train) // batch):
            ids = order[b * batch : (b + 1) * batch]
            loss = loss_fn(model(tensor(ids, True)), torch.from_numpy(labels[ids]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - start
    model.eval()

    def predict(source: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            batches = [np.arange(b, min(b + 32, len(source))) for b in range(0, len(source), 32)]
            return np.concatenate([torch.sigmoid(model(tensor(ids, False, source))).numpy() for ids in batches])

    aucs = _aucs(labels[val], predict(x_all[val]))
    real = real_image_labels(shared) if shared is not None else None
    if real is None:
        return aucs, [float("nan")] * 4, seconds
    folder, real_names, presence = real
    x_real = np.stack([_gray(folder / name, factor) for name in real_names])
    return aucs, _aucs(np.array(presence, dtype=np.float32), predict(x_real)), seconds


def _real_table(
    results: dict[tuple[str, str], tuple[list[float], list[float], float]],
    real: tuple[Path, list[str], list[tuple[bool, ...]]] | None,
    shared: Path,
) -> list[str]:
    """The same arms on the real Severstal images: per-class ROC AUC with its noise at the real counts."""
    if real is None:
        return [f"Real Severstal images: not scored ({shared / 'severstal-real' / 'images.csv'} is absent).", ""]
    presence = np.array(real[2], dtype=bool)
    positives, n = presence.sum(axis=0), len(presence)
    noise = [
        f"{2 * auc_standard_error(0.7, int(p), n - int(p)):.2f}" if 3 <= p <= n - 3 else "too few"
        for p in positives
    ]  # fmt: skip
    return [
        f"The same classifiers on the {n} real Severstal images of `../shared/severstal-real` (evaluation only; "
        "image-level labels from the per-class areas in `images.csv`, complete masks or not; positives per class: "
        f"{', '.join(str(int(p)) for p in positives)}). One arm's AUC is uncertain by about "
        f"{' / '.join(noise)} (two standard errors near 0.7); a class with fewer than 3 positives has no usable AUC.",
        "",
        "| input | pooling | 1 pits | 2 vertical marks | 3 scratches | 4 blotches |",
        "|---|---|---|---|---|---|",
        *(
            f"| {arm} | {pool} | "
            + " | ".join(
                "n/a" if np.isnan(a) or q == "too few" else f"{a:.3f}" for a, q in zip(real_aucs, noise, strict=True)
            )
            + " |"
            for (arm, pool), (_, real_aucs, _) in results.items()
        ),
        "",
    ]


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley-McNeil (1982) standard error of a ROC AUC estimated from ``positives`` and ``negatives``."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    return float(np.sqrt(var / max(positives * negatives, 1)))


def _child(argv: list[str]) -> int:
    data, arm, pool, epochs, shared = Path(argv[0]), argv[1], argv[2], int(argv[3]), Path(argv[4])
    aucs, real, seconds = train_arm(data, arm, pool, epochs, shared=shared)
    print("RESULT", " ".join(f"{a:.4f}" for a in [*aucs, *real]), f"{seconds:.1f}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run every arm, two at a time, and write the results table."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--arm":
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="400 images, 4 epochs")
    parser.add_argument("--n", type=int, default=None, help="balanced synthetic images (default 1,200)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per arm (default 12)")
    parser.add_argument("--seed", type=int, default=7, help="synthetic data seed")
    parser.add_argument("--shared", type=Path, default=SHARED, help="folder holding severstal-real/ (evaluation only)")
    args = parser.parse_args(argv)
    n = args.n or (400 if args.quick else 1200)
    epochs = args.epochs or (4 if args.quick else 12)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.copy_paste_data import real_image_labels
    from bench.cpu_lock import lock_held
    from cascade.runtimes import cpu_model, cpu_supports_bf16
    from cascade.synth import generate_dataset
    from cascade.synth.config import synth_config

    results: dict[tuple[str, str], tuple[list[float], list[float], float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "balanced"
        generate_dataset(data, n, seed=args.seed, config=synth_config("balanced"), workers=2)
        for first in range(0, len(ARMS), 2):
            pair = ARMS[first : first + 2]
            procs = [
                subprocess.Popen(
                    [*_ARM_COMMAND, str(data), arm, pool, str(epochs), str(args.shared)],
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
                for arm, pool in pair
            ]
            for (arm, pool), proc in zip(pair, procs, strict=True):
                out, _ = proc.communicate()
                line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
                if proc.returncode != 0 or line is None:
                    raise SystemExit(f"arm {arm}/{pool} failed (exit {proc.returncode})")
                values = [float(v) for v in line.split()[1:]]
                results[(arm, pool)] = (values[:4], values[4:8], values[8])
                print(
                    f"{arm:>8} {pool:>10}  AUC " + " ".join(f"{v:.3f}" for v in values[:4])
                    + "  real " + " ".join(f"{v:.3f}" for v in values[4:8]) + f"  {values[8]:.0f} s"
                )  # fmt: skip
        _, labels = _load(data)
    held = labels[n * 3 // 4 :]
    positives = held.sum(axis=0).astype(int)
    noise = 2 * max(auc_standard_error(0.7, int(p), len(held) - int(p)) for p in positives) * np.sqrt(2)
    lines = [
        "## Classifier probe: input resolution and pooling",
        "",
        f"`resnet10t` (the demo recipe's classifier) from scratch, {epochs} epochs, on {n * 3 // 4} balanced synthetic "
        f"images (seed {args.seed}); per-class ROC AUC on the other {len(held)} (positives per class: "
        f"{', '.join(str(int(p)) for p in positives)}); flips only, no deep supervision; "
        f"two arms at a time, one thread each; {cpu_model()}, native bf16: {'yes' if cpu_supports_bf16() else 'no'}"
        f"{', CPU lock held' if lock_held() else ''}. 0.5 = chance; two arms differing by less than {noise:.2f} "
        "differ by noise (two standard errors of an AUC difference near 0.7, Hanley-McNeil, at these counts).",
        "",
        "| input | pooling | 1 pits | 2 vertical marks | 3 scratches | 4 blotches | seconds |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {arm} | {pool} | " + " | ".join(f"{a:.3f}" for a in aucs) + f" | {seconds:.0f} |"
            for (arm, pool), (aucs, _, seconds) in results.items()
        ),
        "",
        *_real_table(results, real_image_labels(args.shared), args.shared),
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
