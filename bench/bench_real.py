"""Quality on real steel: the NEU-Seg bundle on NEU-Seg val, the demo bundle on the real Severstal images.

Usage::

    python -m bench.bench_real                         # both sections, data from ../shared
    python -m bench.bench_real --shared /path/to/shared --neu-bundle runs/neu-seg/neu-seg.cascade.safetensors

Sections (each skipped with a reason when its data is absent):

- **NEU-Seg val** (894 real hot-rolled steel images, 200x200, 3 classes; the split the recipe tunes on):
  Kaggle-style mean Dice over every (image, class) pair (empty-vs-empty = 1), per class, for the cascade,
  ``segment_all`` and two non-learned baselines — all-empty, and a dark/bright-pixel threshold rule fitted
  per class on NEU-Seg train (``threshold_baseline``) — the classifier's ROC AUC, the share of (image, class)
  pairs the gate sends to a segmenter, and images/s of ``cascade predict``'s predictor on this machine.
- **Severstal** (the demo bundle, trained on synthetic data only): Dice on 200 held-out synthetic images and on
  the 37 real 1600x256 images with complete masks (15 of them clean), each beside all-empty and a threshold
  rule fitted on synthetic training images.

Writes ``bench/results/real.md``. NEU-Seg: Northeastern University surface defect segmentation database
(academic data; cite it). Severstal images are Kaggle competition data: evaluation only, never trained on.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cascade.datasource import LabelledSet
    from training.evaluation import Evaluation

__all__ = [
    "ThresholdRule",
    "against_empty",
    "area_only_scores",
    "dice_bounds",
    "fit_threshold_rule",
    "gain_interval",
    "main",
    "pair_weight",
    "real_severstal_line",
    "real_severstal_scores",
    "score_real_severstal",
    "threshold_dice",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "real.md"
SHARED = ROOT.parent / "shared"
PROB_GRID, PIXEL_GRID, AREA_GRID = (0.0, 0.5), (0.5,), (0,)


@dataclass(frozen=True)
class ThresholdRule:
    """A non-learned baseline for one class: pixels with ``sign * (gray - median) / MAD >= k`` after a 5x5 blur,
    kept when their area is at least ``min_area``; ``k``, ``sign`` and ``min_area`` are picked on training images."""

    k: float
    sign: int
    min_area: int

    def predict(self, gray: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 -> ``(H, W)`` bool."""
        return self.apply(_deviation(gray))

    def apply(self, z: np.ndarray) -> np.ndarray:
        """The rule on a precomputed ``_deviation`` map."""
        mask = self.sign * z >= self.k
        return mask if int(mask.sum()) >= self.min_area else np.zeros_like(mask)


def _deviation(gray: np.ndarray) -> np.ndarray:
    import cv2

    g = cv2.blur(gray.astype(np.float32), (5, 5))
    med = float(np.median(g))
    return (g - med) / (float(np.median(np.abs(g - med))) + 1.0)


def _gray(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2).astype(np.uint8) if image.ndim == 3 else image


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def fit_threshold_rule(images: list[np.ndarray], truths: list[np.ndarray], image_px: int) -> ThresholdRule:
    """Grid-search ``k``, ``sign`` and ``min_area`` (as shares of the image) for mean Dice on the given images."""
    maps = [_deviation(_gray(im)) for im in images]
    best, best_rule = -1.0, ThresholdRule(99.0, 1, 0)
    for sign in (-1, 1):
        for k in (2.0, 3.0, 4.0, 6.0, 8.0):
            for share in (0.0, 0.01, 0.03, 0.06):
                rule = ThresholdRule(k, sign, int(share * image_px))
                score = float(np.mean([_dice(rule.apply(z), t) for z, t in zip(maps, truths, strict=True)]))
                if score > best:
                    best, best_rule = score, rule
    return best_rule


def threshold_dice(rules: dict[int, ThresholdRule], images: list[np.ndarray], truth: np.ndarray) -> np.ndarray:
    """``(N, C)`` Dice of the threshold rules (one per class id, in order) against ``(N, C, H, W)`` truth."""
    out = np.zeros(truth.shape[:2])
    for i, image in enumerate(images):
        z = _deviation(_gray(image))
        for k, rule in enumerate(rules.values()):
            out[i, k] = _dice(rule.apply(z), truth[i, k])
    return out


def _load(data, ids):
    from cascade.imageio import read_image

    images = [read_image(data.images_dir / i) for i in ids]
    truth = np.stack([data.annotations.masks(i, im.shape[:2]) for i, im in zip(ids, images, strict=True)])
    return images, truth


def _fit_rules(train, n: int, seed: int = 0) -> dict[int, ThresholdRule]:
    rng = np.random.default_rng(seed)
    ids = list(rng.choice(train.image_ids, size=min(n, len(train.image_ids)), replace=False))
    images, truth = _load(train, ids)
    px = truth.shape[2] * truth.shape[3]
    return {c: fit_threshold_rule(images, list(truth[:, k]), px) for k, c in enumerate(train.classes.ids)}


def _folder_images_per_s(bundle: Path, images_dir: Path, ids: list[str], n: int = 300) -> tuple[str, float]:
    """images/s of the local folder engine as ``cascade predict DIR`` runs it: one single-thread predictor per
    core (``runtime="auto"``), batches of 4, on ``n`` of the given images (a second pass, after a warm-up pass)."""
    import tempfile

    from cascade.predictor import CascadePredictor
    from cascade.scoring import ScoreOptions, score_folder

    cores = os.cpu_count() or 1
    predictors = [CascadePredictor.from_bundle(bundle, threads=1) for _ in range(cores)]
    with tempfile.TemporaryDirectory(prefix="bench_real_") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for image_id in ids[:n]:
            (folder / image_id).symlink_to((images_dir / image_id).resolve())
        options = ScoreOptions(batch_size=4, fsync=False)
        score_folder(folder, Path(tmp) / "warm.csv", predictors, options=options)
        summary = score_folder(folder, Path(tmp) / "sub.csv", predictors, options=options)
    return predictors[0].runtime_name, summary.images_per_second


def _row(name: str, mean: float, per_class) -> str:
    return f"| {name} | **{mean:.4f}** | " + " | ".join(f"{v:.4f}" for v in per_class) + " |"


def _neu_section(shared: Path, bundle_name: str, fit_n: int) -> list[str]:
    from cascade.bundle import read_manifest
    from cascade.datasource import open_labelled
    from cascade.embedded import resolve_bundle
    from training.evaluate import evaluate_bundle

    root = shared / "neu-seg"
    lines = ["## Real steel: NEU-Seg", ""]
    if not root.is_dir():
        return [*lines, f"Skipped: {root} is absent.", ""]
    try:
        bundle = resolve_bundle(bundle_name)
        manifest = read_manifest(bundle)
    except Exception as exc:
        return [*lines, f"Skipped: bundle {bundle_name!r} unavailable ({exc}).", ""]
    data = open_labelled(root, classes=manifest.class_set)
    val, train = data.split("val"), data.split("train")
    result = evaluate_bundle(bundle, val.images_dir, val.annotations, grid=(PROB_GRID, PIXEL_GRID, AREA_GRID),
                             show_progress=False)  # fmt: skip
    images, truth = _load(val, list(val.image_ids))
    rules = _fit_rules(train, fit_n)
    rule_pairs = threshold_dice(rules, images, truth)
    runtime, rate = _folder_images_per_s(bundle, val.images_dir, list(val.image_ids))
    clf = result.classifier_metrics()
    names = manifest.class_names
    header = "| | mean | " + " | ".join(f"{c} {n}" for c, n in zip(manifest.class_ids, names, strict=True)) + " |"
    runs = result.gate.sum(axis=1).mean()
    prov = manifest.provenance
    train_s = sum((prov.get("metrics", {}).get("stage_seconds") or {}).values())
    lines += [
        f"Bundle `{bundle_name}` ({bundle.stat().st_size / 2**20:.1f} MB), trained by `configs/neu-seg-cpu.yaml` on "
        f"NEU-Seg train ({len(train.image_ids)} images) in {train_s / 60:.1f} min on this machine's 2 cores; "
        f"scored on NEU-Seg **val** ({len(val.image_ids)} images, the split the recipe tunes its thresholds on, "
        "so these numbers are not fully independent of tuning). Kaggle-style mean Dice over every "
        "(image, class) pair, empty-vs-empty = 1.",
        "",
        header,
        "|---|---|" + "---|" * len(names),
        _row("cascade", result.cascade.mean, result.cascade.per_class),
        _row("segment_all", result.segment_all.mean, result.segment_all.per_class),
        _row("threshold rule (not learned)", float(rule_pairs.mean()), rule_pairs.mean(axis=0)),
        _row("all-empty (not learned)", result.empty.mean, result.empty.per_class),
        "",
        "- Classifier ROC AUC: "
        + ", ".join(f"{c} {clf[str(c)]['auc']:.4f}" for c in manifest.class_ids)
        + f"; the gate runs {runs:.2f} segmenters per image of the {len(names)} that `segment_all` runs "
        f"(saves {len(names) - runs:.2f} per image, {100 * (1 - runs / len(names)):.0f}%).",
        f"- Speed: {rate:.1f} images/s (300 val images, 200x200 JPEGs, decoded and scored as `cascade predict DIR` "
        f"does: {os.cpu_count()} single-thread predictors, runtime `{runtime}`, batches of 4).",
        f"- Threshold rule: per class `(gray - median) / MAD` over a 5x5 blur, sign/k/min-area grid-searched on "
        f"{fit_n} NEU-Seg train images: "
        + "; ".join(f"{c}: sign {r.sign:+d}, k {r.k:g}, min area {r.min_area}" for c, r in rules.items())
        + ".",
        "",
    ]
    return lines


def score_real_severstal(bundle: str | Path, shared: Path = SHARED) -> tuple[LabelledSet, Evaluation] | None:
    """A Severstal-profile bundle on the real Severstal images with complete masks (``shared/severstal-real``,
    evaluation only): ``(LabelledSet, training.evaluate.Evaluation)``, or None when the folder is absent."""
    from bench.copy_paste_data import real_severstal
    from training.evaluate import evaluate_bundle

    data = real_severstal(shared)
    if data is None:
        return None
    grid = (PROB_GRID, PIXEL_GRID, AREA_GRID)
    return data, evaluate_bundle(bundle, data.images_dir, data.annotations, grid=grid, show_progress=False)


def gain_interval(
    cascade_pairs: np.ndarray, empty_pairs: np.ndarray, rounds: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean Dice gain over all-empty, resampling images with replacement.

    Args:
        cascade_pairs: ``(N, C)`` Dice of the cascade on every (image, class) pair.
        empty_pairs: ``(N, C)`` Dice of predicting nothing (1 on an empty pair, 0 on a positive one).
        rounds: bootstrap resamples.
        seed: seed of the resampling.
        level: coverage of the interval.

    Returns:
        ``(low, high)``: the interval's ends.
    """
    cascade_pairs, empty_pairs = np.asarray(cascade_pairs, np.float64), np.asarray(empty_pairs, np.float64)
    if cascade_pairs.shape != empty_pairs.shape or cascade_pairs.ndim != 2 or not len(cascade_pairs):
        raise ValueError(
            f"cascade and empty pairs must be the same non-empty (N, C) array, got {cascade_pairs.shape} and "
            f"{empty_pairs.shape}"
        )
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    per_image = (cascade_pairs - empty_pairs).mean(axis=1)
    rng = np.random.default_rng(seed)
    means = per_image[rng.integers(0, len(per_image), size=(rounds, len(per_image)))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def real_gain_interval(result: Evaluation) -> tuple[float, float]:
    """``gain_interval`` of an evaluation on the real images (its per-pair Dice against all-empty's)."""
    if result.image_dice is None:
        raise ValueError("the evaluation has no per-pair Dice (image_dice)")
    return gain_interval(result.image_dice, (~result.labels).astype(np.float64))


def dice_bounds(pred_area: np.ndarray, true_area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the Kaggle Dice of (image, class) pairs whose true mask is unknown, only its area.

    A pair is exact when either area is 0 (1 when both are, else 0); when both are positive its Dice lies in
    ``[0, 2 min(p, t) / (p + t)]`` (the overlap is at most the smaller area).

    Args:
        pred_area: predicted mask areas, any shape.
        true_area: true mask areas, the same shape.

    Returns:
        ``(low, high)``: float arrays of that shape.
    """
    pred, true = np.asarray(pred_area, np.float64), np.asarray(true_area, np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"predicted and true areas differ in shape: {pred.shape} and {true.shape}")
    if (pred < 0).any() or (true < 0).any():
        raise ValueError("areas must be >= 0")
    both = (pred > 0) & (true > 0)
    low = ((pred == 0) & (true == 0)).astype(np.float64)
    high = low.copy()
    high[both] = 2.0 * np.minimum(pred, true)[both] / (pred + true)[both]
    return low, high


def area_only_scores(
    bundle: str | Path, rules: dict[int, ThresholdRule] | None = None, shared: Path = SHARED
) -> dict[str, object] | None:
    """A Severstal-profile bundle on the real images whose masks are unknown, only their per-class areas
    (``bench.copy_paste_data.real_area_only``; evaluation only), or None when there are none.

    Returns ``{"images", "true_area", "<arm>_area", "<arm>_low", "<arm>_high"}`` for the arms ``cascade``,
    ``segment_all``, ``empty`` and (with ``rules``) ``rule``: ``(N, 4)`` predicted areas and per-pair Dice bounds
    (``dice_bounds``).
    """
    from bench.copy_paste_data import real_area_only
    from cascade.imageio import read_image
    from cascade.predictor import CascadePredictor

    found = real_area_only(shared)
    if found is None or not found[1]:
        return None
    folder, ids, true_area = found
    predictor = CascadePredictor.from_bundle(bundle, threads=os.cpu_count() or 1)
    areas: dict[str, list[list[int]]] = {"cascade": [], "segment_all": [], "rule": []}
    for image_id in ids:
        image = read_image(folder / image_id)
        raw = predictor.infer([image], "segment_all", [image_id])  # every map once; each gate applied below
        for mode in ("cascade", "segment_all"):
            (pred,) = predictor.postprocess(raw, mode=mode)
            areas[mode].append([c.area for c in pred.classes])
        if rules is not None:
            z = _deviation(_gray(image))
            areas["rule"].append([int(rule.apply(z).sum()) for rule in rules.values()])
    preds = {arm: np.array(rows, dtype=np.int64) for arm, rows in areas.items() if rows}
    preds["empty"] = np.zeros_like(true_area)
    out: dict[str, object] = {"images": ids, "true_area": true_area}
    for arm, pred in preds.items():
        out[f"{arm}_area"] = pred
        out[f"{arm}_low"], out[f"{arm}_high"] = dice_bounds(pred, true_area)
    return out


def real_severstal_scores(bundle: str | Path, shared: Path = SHARED) -> dict[str, float] | None:
    """``score_real_severstal`` in brief: ``images``, the means of the cascade, all-empty and segment_all, and the
    bootstrap 95% interval of the cascade's gain over all-empty (``gain_low``, ``gain_high``)."""
    scored = score_real_severstal(bundle, shared)
    if scored is None:
        return None
    data, result = scored
    low, high = real_gain_interval(result)
    return {
        "images": len(data.image_ids),
        "dice_cascade": result.cascade.mean,
        "dice_empty": result.empty.mean,
        "dice_segment_all": result.segment_all.mean,
        "gain_low": low,
        "gain_high": high,
    }


def real_severstal_line(scores: dict[str, float] | None, what: str) -> str:
    """One sentence putting ``what`` (a bundle) on the real Severstal images next to all-empty, for benches that
    report synthetic numbers (never shown alone), or saying why it is missing."""
    if scores is None:
        return f"Real Severstal images: not scored ({SHARED / 'severstal-real'} is absent)."
    images = int(scores["images"])
    side = against_empty(scores["dice_cascade"], scores["dice_empty"], images)
    tie = f" (within one (image, class) pair's weight, {pair_weight(images):.4f})" if side == "ties" else ""
    interval = (
        f"; bootstrap 95% interval of the gain over the images [{scores['gain_low']:+.4f}, {scores['gain_high']:+.4f}]"
        if "gain_low" in scores
        else ""
    )
    return (
        f"Real Severstal images ({what}, {images} images with complete masks, never trained on): cascade "
        f"{scores['dice_cascade']:.4f}, all-empty {scores['dice_empty']:.4f}, segment_all "
        f"{scores['dice_segment_all']:.4f}: **{side} predicting nothing**{tie}{interval}."
    )


def trained_on(provenance: dict) -> str:
    """What a bundle's provenance says it learned from: "recipe `R`, trained on N images of `DIR`"."""
    dataset = provenance.get("dataset") or {}
    return (
        f"recipe `{provenance.get('recipe', '?')}`, trained on {dataset.get('images', '?')} images of "
        f"`{dataset.get('dir', '?')}`"
    )


def pair_weight(images: int) -> float:
    """The weight of one (image, class) pair in the mean Dice of ``images`` Severstal images."""
    from cascade.classes import SEVERSTAL

    return 1.0 / (images * len(SEVERSTAL.ids))


def against_empty(cascade: float, empty: float, images: int) -> str:
    """``"below"``, ``"ties"`` or ``"above"`` predicting nothing: a gain within one pair's weight is a tie."""
    gain, pair = cascade - empty, pair_weight(images)
    return "below" if gain < -pair else "ties" if gain <= pair else "above"


def _bounds_row(name: str, low: np.ndarray, high: np.ndarray) -> str:
    def cell(lo: float, hi: float) -> str:
        return f"{lo:.4f}" if hi - lo < 5e-5 else f"{lo:.4f}-{hi:.4f}"

    per_class = " | ".join(cell(lo, hi) for lo, hi in zip(low.mean(axis=0), high.mean(axis=0), strict=True))
    return f"| {name} | **{cell(float(low.mean()), float(high.mean()))}** | {per_class} |"


def _area_only_lines(scores: dict, header: str, exact: np.ndarray, exact_empty: np.ndarray) -> list[str]:
    """The ``area_only_scores`` table, what the cascade marks and opens there, and the bounds over every real image
    (``exact``/``exact_empty``: the cascade's and all-empty's per-pair Dice on the images with complete masks)."""
    true = scores["true_area"] > 0
    rows = [
        _bounds_row("**real**, areas only: demo cascade", scores["cascade_low"], scores["cascade_high"]),
        _bounds_row("**real**, areas only: demo segment_all", scores["segment_all_low"], scores["segment_all_high"]),
    ]
    if "rule_low" in scores:
        rows.append(_bounds_row("**real**, areas only: threshold rule (not learned)", scores["rule_low"],
                                scores["rule_high"]))  # fmt: skip
    rows.append(_bounds_row("**real**, areas only: all-empty (not learned)", scores["empty_low"], scores["empty_high"]))
    marked = (scores["cascade_area"] > 0) & true
    opened = (scores["cascade_area"] > 0) & ~true
    per_class = ", ".join(
        f"class {k + 1} {int(marked[:, k].sum())} of {int(true[:, k].sum())}"
        for k in range(true.shape[1])
        if true[:, k].any()
    )
    n = len(scores["images"])
    lines = [
        f"#### {n} more real images: areas only",
        "",
        f"The same bundle on the {n} other real Severstal images, whose masks are not known, only their per-class "
        "areas (`images.csv`). A pair is exact when the prediction or the truth is empty; when both are not, its Dice "
        "lies between 0 and 2 min(p, t) / (p + t), so each cell gives the range the unknown masks allow.",
        "",
        header,
        "|---|---|" + "---|" * true.shape[1],
        *rows,
        "",
        f"The cascade marks {int(marked.sum())} of the {int(true.sum())} defect pairs ({per_class}) and wrongly opens "
        f"{int(opened.sum())} of the {int((~true).sum())} empty pairs.",
    ]
    total = exact.size + scores["cascade_low"].size
    low = (exact.sum() + scores["cascade_low"].sum()) / total
    high = (exact.sum() + scores["cascade_high"].sum()) / total
    empty = (exact_empty.sum() + scores["empty_low"].sum()) / total
    lines.append(f"Over all {len(exact) + n} real images: cascade {low:.4f}-{high:.4f}, all-empty {empty:.4f}.")
    return [*lines, ""]


def _severstal_section(shared: Path, fit_n: int) -> list[str]:
    """The demo bundle on held-out synthetic steel and on the real Severstal images, each beside all-empty and a
    threshold rule fitted on synthetic training images (the rule is not learned from real data either)."""
    import tempfile

    from cascade.bundle_format import read_manifest
    from cascade.classes import SEVERSTAL
    from cascade.datasource import open_labelled
    from cascade.embedded import resolve_bundle
    from cascade.synth import generate_dataset
    from training.evaluate import evaluate_bundle

    root = shared / "severstal-real"
    lines = ["## Real steel: Severstal images (demo bundle)", ""]
    bundle = resolve_bundle(None)
    with tempfile.TemporaryDirectory(prefix="bench_real_synth_") as tmp:
        fit_root, held_root = Path(tmp) / "fit", Path(tmp) / "held"
        generate_dataset(fit_root, fit_n, 0, workers=os.cpu_count() or 1)  # the demo set's seed: its training data
        generate_dataset(held_root, 200, 1, workers=os.cpu_count() or 1)  # bench_quality's held-out set
        rules = _fit_rules(open_labelled(fit_root), fit_n)
        held = open_labelled(held_root)
        synth = evaluate_bundle(bundle, held.images_dir, held.annotations, grid=(PROB_GRID, PIXEL_GRID, AREA_GRID),
                                show_progress=False)  # fmt: skip
        images, truth = _load(held, list(held.image_ids))
        synth_rule = threshold_dice(rules, images, truth)
    header = "| | mean | " + " | ".join(f"{c} {n}" for c, n in zip(SEVERSTAL.ids, SEVERSTAL.names, strict=True)) + " |"
    rows = [
        _row("synthetic held-out: demo cascade", synth.cascade.mean, synth.cascade.per_class),
        _row("synthetic held-out: threshold rule (not learned)", float(synth_rule.mean()), synth_rule.mean(axis=0)),
        _row("synthetic held-out: all-empty (not learned)", synth.empty.mean, synth.empty.per_class),
    ]
    scored = score_real_severstal(bundle, shared)
    if scored is None:
        return [*lines, header, "|---|---|" + "---|" * 4, *rows, "", f"Real images skipped: {root} is absent.", ""]
    data, real = scored
    images, truth = _load(data, list(data.image_ids))
    real_rule = threshold_dice(rules, images, truth)
    clean = int((~truth.reshape(len(images), -1).any(axis=1)).sum())
    rows += [
        _row("**real** Severstal: demo cascade", real.cascade.mean, real.cascade.per_class),
        _row("**real** Severstal: demo segment_all", real.segment_all.mean, real.segment_all.per_class),
        _row("**real** Severstal: threshold rule (not learned)", float(real_rule.mean()), real_rule.mean(axis=0)),
        _row("**real** Severstal: all-empty (not learned)", real.empty.mean, real.empty.per_class),
    ]
    gain, pair = real.cascade.mean - real.empty.mean, pair_weight(len(images))
    side = against_empty(real.cascade.mean, real.empty.mean, len(images))
    low, high = real_gain_interval(real)
    if side == "below":
        verdict = (
            "The demo bundle scores **below predicting nothing** on real Severstal images: it has learned the "
            "synthetic generator, not real steel."
        )
    elif side == "ties":
        verdict = (
            f"The demo bundle **ties predicting nothing** on real Severstal images ({gain:+.4f}, within one (image, "
            f"class) pair's weight, {pair:.4f}): it has not learned real steel."
        )
    else:
        verdict = f"The demo bundle beats predicting nothing on real Severstal images by {gain:+.4f}."
    firm = "excludes" if low > 0.0 or high < 0.0 else "includes"
    verdict += (
        f" Bootstrap 95% interval of the gain over the {len(images)} images: [{low:+.4f}, {high:+.4f}] ({firm} "
        f"zero; one (image, class) pair weighs {pair:.4f})."
    )
    source = trained_on(read_manifest(bundle).provenance or {})
    lines += [
        f"The embedded demo bundle ({source}) on 200 held-out synthetic images (seed 1) "
        f"and on the {len(images)} real Severstal images with complete masks ({clean} of them clean), 1600x256; the "
        f"threshold rule is fitted per class on {fit_n} synthetic training images (seed 0). The real images are "
        "evaluation only: never trained or fitted on.",
        "",
        header,
        "|---|---|" + "---|" * 4,
        *rows,
        "",
        verdict,
        "",
    ]
    area_only = area_only_scores(bundle, rules, shared)
    if area_only is not None:
        lines += _area_only_lines(area_only, header, real.image_dice, (~real.labels).astype(np.float64))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder")
    parser.add_argument("--neu-bundle", default="neu-seg", help="NEU-Seg bundle: a path or a shipped name")
    parser.add_argument("--fit-n", type=int, default=300, help="NEU-Seg train images the threshold rule is fitted on")
    parser.add_argument("--quick", action="store_true", help="fit the threshold rule on 60 images")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lines = [
        "## Quality on real steel",
        "",
        "`python -m bench.bench_real`. Synthetic numbers elsewhere in this file say nothing about real steel on "
        "their own; these are the real-data numbers beside them.",
        "",
    ]
    lines += _neu_section(args.shared, args.neu_bundle, 60 if args.quick else args.fit_n)
    lines += _severstal_section(args.shared, 40 if args.quick else 100)
    text = "\n".join(lines).replace("## Real steel", "### Real steel")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
