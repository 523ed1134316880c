"""Stage ``tune``: per-class probability threshold, pixel threshold and min-area that maximise Kaggle Dice on
the validation images of fold ``data.tune_fold``.

The segmenters' probability maps come from ``cascade.predictor.CascadePredictor.infer`` in ``segment_all``
mode over the run's networks, so tuning sees exactly what inference computes (input scale, padding, TTA).
The gate uses the classifier's **out-of-fold** probabilities (``classifier/oof.csv``): the final classifier
may have trained on these images. The grid search itself is :mod:`training.thresholds`; maps are reduced
to per-image Dice tables batch by batch, so memory does not grow with the number of images.

With ``tune.calibrate`` a per-class temperature and bias is fitted on those probabilities first
(``cascade.calibration``) and the gate is tuned on the calibrated ones, which the bundle's predictor returns.
The gate thresholds are then chosen for Dice and cost (``tune.cost_weight``, ``tune.max_segmenter_runs_per_image``)
and a minimum recall on rare classes (``tune.min_recall``) by :mod:`training.gate_tuning`; with all three at
their defaults the choice is the Dice-only one. Classes the tuned cascade cannot predict are flagged.

With ``tune.stress`` the tuned cascade is then scored on stress images of another look (by default 200
synthetic images of the ``shifted`` profile, seed 7, apart from the seeds evaluations use), and every class
that scores below predicting nothing there is closed (``ClassParams.closed``): a class that floods sheets
unlike its training images is not shipped open (:func:`close_on_stress`).

Writes ``thresholds.json`` (chosen ``ClassParams`` per class, the validation Dice of the cascade, segment-all
and all-empty, the calibration with its ECE and AUC before/after, and the gate curve) and ``tune_scores.npz``
(the full grids, for the report's sweep plots).

Run on its own: ``cascade train --config configs/demo-cpu.yaml --stage tune [--out RUN_DIR]``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cascade.calibration import Calibration, calibrate, expected_calibration_error, fit_calibration
from cascade.formats import Annotations
from cascade.gate import gate
from cascade.gate_curve import GateCurve
from cascade.imageio import read_image
from cascade.manifest import ClassParams
from training.gate_tuning import GateChoice, choose_gates, class_options, gate_curve
from training.oof import read_oof
from training.package import in_memory_bundle
from training.stage_config import TuneConfig
from training.thresholds import ClassTuning, dice_tables, pick_best, tune_class
from training.workspace import Workspace

__all__ = [
    "CascadeTuning",
    "StressCheck",
    "close_on_stress",
    "compute_dice_tables",
    "run",
    "stress_check",
    "stress_dice",
    "tune_cascade",
]

logger = logging.getLogger(__name__)


def compute_dice_tables(
    predictor: object,
    images_dir: Path,
    image_ids: Sequence[str],
    truth_masks: object,
    pixel_thresholds: Sequence[float],
    min_areas: Sequence[int],
    batch_size: int,
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the segmenters on every image and reduce their maps to Dice tables.

    Args:
        predictor: a ``CascadePredictor``.
        images_dir: folder of the images.
        image_ids: images to use.
        truth_masks: callable ``(image_id, (H, W)) -> (C, H, W)`` bool truth.
        pixel_thresholds: pixel grid (P values).
        min_areas: min-area grid (M values).
        batch_size: images per ``infer`` call.
        show_progress: tqdm bar.

    Returns:
        ``(tables (N, C, P, M), truth_empty (N, C) bool, probabilities (N, C))`` — the probabilities are the
        predictor's own (not out-of-fold).
    """
    class_ids = predictor.manifest.class_ids  # type: ignore[attr-defined]
    tables, empty, probs = [], [], []
    starts = range(0, len(image_ids), batch_size)
    for start in tqdm(starts, desc="tuning maps", leave=False, disable=not show_progress):
        ids = list(image_ids[start : start + batch_size])
        images = [read_image(images_dir / i) for i in ids]
        raw = predictor.infer(images, mode="segment_all", image_ids=ids)  # type: ignore[attr-defined]
        truth = np.stack([truth_masks(i, image.shape[:2]) for i, image in zip(ids, images, strict=True)])
        per_class = []
        for k, class_id in enumerate(class_ids):
            maps = np.stack([raw.maps[i][class_id] for i in range(len(ids))]).astype(np.float32, copy=False)
            per_class.append(dice_tables(maps, truth[:, k], pixel_thresholds, min_areas))
        tables.append(np.stack(per_class, axis=1))
        empty.append(~truth.reshape(len(ids), len(class_ids), -1).any(axis=2))
        probs.append(raw.probabilities)
    return np.concatenate(tables), np.concatenate(empty), np.concatenate(probs)


@dataclass(frozen=True)
class CascadeTuning:
    """Tuning result of every class.

    Attributes:
        classes: class id -> chosen thresholds, their Dice and the whole grid.
        params: the chosen ``ClassParams`` per class, in class order (``predictable`` set).
        calibration: one ``Calibration`` per class (``()`` without calibration).
        calibration_report: ECE and ROC AUC per class before/after calibration (``{}`` without it).
        curve: the gate's cost/score curve, chosen and Dice-only points.
    """

    classes: dict[int, ClassTuning]
    params: tuple[ClassParams, ...]
    calibration: tuple[Calibration, ...]
    calibration_report: dict[str, Any]
    curve: GateCurve


def _auc(probabilities: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probabilities)) if 0 < labels.sum() < len(labels) else None


def _calibrate(probabilities: np.ndarray, labels: np.ndarray, class_ids: Sequence[int]) -> tuple[tuple, dict]:
    calibrations = tuple(fit_calibration(probabilities[:, k], labels[:, k]) for k in range(len(class_ids)))
    calibrated = calibrate(probabilities, calibrations)
    report: dict[str, Any] = {
        "ece_before": expected_calibration_error(probabilities, labels),
        "ece_after": expected_calibration_error(calibrated, labels),
        "classes": {},
    }
    for k, class_id in enumerate(class_ids):
        before, after, y = probabilities[:, k], calibrated[:, k], labels[:, k]
        report["classes"][str(class_id)] = {
            **calibrations[k].to_dict(),
            "ece_before": expected_calibration_error(before, y),
            "ece_after": expected_calibration_error(after, y),
            "auc_before": _auc(before, y),
            "auc_after": _auc(after, y),
        }
    return calibrations, report


def _dice_only_index(tuning: ClassTuning, admissible: np.ndarray, gates: Sequence[float], tolerance: float) -> int:
    """Gate index of the Dice-only choice: today's plateau centre over the admissible thresholds."""
    index = list(gates).index(tuning.prob_threshold)
    if admissible[index]:
        return index
    allowed = np.flatnonzero(admissible)
    return int(allowed[pick_best(tuning.scores[allowed], max(tolerance, 1e-9))[0]])


def tune_cascade(
    probabilities: np.ndarray,
    tables: np.ndarray,
    truth_empty: np.ndarray,
    class_ids: Sequence[int],
    config: TuneConfig,
) -> CascadeTuning:
    """Calibrate, then choose every class's gate, pixel threshold and min-area.

    Args:
        probabilities: ``(N, C)`` out-of-fold classifier probabilities of the tuning images (uncalibrated).
        tables: ``(N, C, P, M)`` Dice tables from :func:`compute_dice_tables`.
        truth_empty: ``(N, C)`` True where a class is absent.
        class_ids: the ``C`` class ids.
        config: grids and the gate's economics (``cost_weight``, ``max_segmenter_runs_per_image``,
            ``min_recall``, ``min_positives``, ``min_positive_dice``, ``calibrate``).
    """
    labels = ~np.asarray(truth_empty, dtype=bool)
    calibration: tuple[Calibration, ...] = ()
    calibration_report: dict[str, Any] = {}
    if config.calibrate:
        calibration, calibration_report = _calibrate(np.asarray(probabilities, np.float64), labels, class_ids)
        probabilities = calibrate(np.asarray(probabilities, np.float64), calibration)
    gates = sorted({0.0, *(float(t) for t in config.prob_thresholds)})
    tunings, options = [], []
    for k in range(len(class_ids)):
        p_k, empty_k = probabilities[:, k], truth_empty[:, k]
        tuning = tune_class(
            p_k, tables[:, k], empty_k, gates, config.pixel_thresholds, config.min_areas, config.tolerance
        )
        tunings.append(tuning)
        options.append(class_options(p_k, tuning.scores, empty_k, gates, config.tolerance, config.min_recall))
    dice_only: list[tuple[int, int, int]] = []
    for tuning, o in zip(tunings, options, strict=True):
        t = _dice_only_index(tuning, o.admissible, gates, config.tolerance)
        if gates[t] == tuning.prob_threshold:  # today's choice, unchanged
            p = list(config.pixel_thresholds).index(tuning.pixel_threshold)
            m = list(config.min_areas).index(tuning.min_area)
        else:
            p, m = int(o.pixel_index[t]), int(o.area_index[t])
        dice_only.append((t, p, m))
    n = len(probabilities)

    def as_choice(points: Sequence[tuple[int, int, int]]) -> GateChoice:
        runs = sum(int(o.passed[t]) for o, (t, _, _) in zip(options, points, strict=True)) / n
        dice = float(np.mean([tu.scores[t, p, m] for tu, (t, p, m) in zip(tunings, points, strict=True)]))
        return GateChoice(tuple(t for t, _, _ in points), runs, dice)

    chosen = dice_only
    if config.cost_weight > 0 or config.max_segmenter_runs_per_image is not None:
        picked = choose_gates(options, config.cost_weight, config.max_segmenter_runs_per_image)
        chosen = [
            (t, int(o.pixel_index[t]), int(o.area_index[t])) for o, t in zip(options, picked.indices, strict=True)
        ]
    results: dict[int, ClassTuning] = {}
    params, positive_dice, notes = [], [], []
    for k, class_id in enumerate(class_ids):
        t, p, m = chosen[k]
        tuning, o = tunings[k], options[k]
        opened = probabilities[:, k] >= gates[t]
        positive = labels[:, k]
        pos_dice = float(np.mean(np.where(opened, tables[:, k, p, m], 0.0)[positive])) if positive.any() else 0.0
        note = ""
        if o.positives < config.min_positives:
            note = f"unpredictable: {o.positives} positive image(s) to tune on (< {config.min_positives})"
        elif pos_dice < config.min_positive_dice:
            note = f"unpredictable: Dice {pos_dice:.3f} on positives (< {config.min_positive_dice})"
        predictable = not note
        if predictable and not o.admissible[gates.index(tuning.prob_threshold)]:
            note = f"gate lowered to keep recall >= {config.min_recall:g}"
        results[class_id] = dataclasses.replace(
            tuning,
            prob_threshold=gates[t],
            pixel_threshold=float(config.pixel_thresholds[p]),
            min_area=int(config.min_areas[m]),
            dice=float(tuning.scores[t, p, m]),
            dice_segment_all=float(tuning.scores[0, p, m]),
        )
        r = results[class_id]
        params.append(ClassParams(r.prob_threshold, r.pixel_threshold, r.min_area, predictable=predictable))
        positive_dice.append(pos_dice)
        notes.append(note)
        if not predictable:
            logger.warning("class %d: %s", class_id, note)
    curve = gate_curve(
        options, as_choice(chosen), as_choice(dice_only), pixel_grid=config.pixel_thresholds,
        area_grid=config.min_areas, positive_dice=positive_dice, notes=notes, cost_weight=config.cost_weight,
        max_runs_per_image=config.max_segmenter_runs_per_image, min_recall=config.min_recall,
        calibrated=bool(calibration),
    )  # fmt: skip
    return CascadeTuning(results, tuple(params), calibration, calibration_report, curve)


@dataclass(frozen=True)
class StressCheck:
    """The tuned cascade on the stress images, per class, and the classes closed for it.

    Attributes:
        source: what the stress images are (profile and seed, or a folder).
        images: how many.
        cascade: the tuned cascade's mean Dice per class (before closing), in class order.
        empty: all-empty's mean Dice per class.
        margin: a class is closed when its Dice is more than this below all-empty's.
        closed: the class ids closed.
    """

    source: str
    images: int
    cascade: tuple[float, ...]
    empty: tuple[float, ...]
    margin: float
    closed: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``thresholds.json``'s ``stress``)."""
        return {**dataclasses.asdict(self), "cascade": list(self.cascade), "empty": list(self.empty),
                "closed": list(self.closed)}  # fmt: skip


def stress_dice(
    probabilities: np.ndarray,
    tables: np.ndarray,
    truth_empty: np.ndarray,
    params: Sequence[ClassParams],
    pixel_thresholds: Sequence[float],
    min_areas: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean Dice of the tuned cascade and of all-empty on scored images.

    Args:
        probabilities: ``(N, C)`` probabilities the gate compares (calibrated when the bundle calibrates).
        tables: ``(N, C, P, M)`` Dice tables from :func:`compute_dice_tables`.
        truth_empty: ``(N, C)`` True where a class is absent.
        params: the tuned ``ClassParams``; their pixel thresholds and min-areas are on the grids.
        pixel_thresholds: the ``P`` pixel thresholds of ``tables``.
        min_areas: the ``M`` min-areas of ``tables``.

    Returns:
        ``(cascade (C,), empty (C,))``: a pair whose gate stays shut scores 1 on an empty truth, else 0.
    """
    empty = np.asarray(truth_empty, dtype=bool)
    shut = empty.astype(np.float64)
    cascade = np.empty(len(params))
    gates = gate(probabilities, params)
    for k, p in enumerate(params):
        opened = gates[:, k]
        i, j = list(pixel_thresholds).index(p.pixel_threshold), list(min_areas).index(p.min_area)
        cascade[k] = float(np.mean(np.where(opened, tables[:, k, i, j], shut[:, k])))
    return cascade, shut.mean(axis=0)


def close_on_stress(
    tuned: CascadeTuning, cascade: np.ndarray, empty: np.ndarray, class_ids: Sequence[int], margin: float
) -> tuple[CascadeTuning, tuple[int, ...]]:
    """Close every class whose stress-image Dice is more than ``margin`` below all-empty's.

    A closed class's gate never opens (``ClassParams.closed``) and it is flagged unpredictable; its gate-curve
    note says why. Returns the new tuning and the class ids closed.
    """
    params, classes, closed = list(tuned.params), list(tuned.curve.classes), []
    for k, class_id in enumerate(class_ids):
        if params[k].closed or cascade[k] >= empty[k] - margin:
            continue
        params[k] = dataclasses.replace(params[k], closed=True, predictable=False)
        note = f"closed: Dice {cascade[k]:.3f} on the stress images < all-empty {empty[k]:.3f}"
        classes[k] = dataclasses.replace(classes[k], note=f"{note}; {classes[k].note}" if classes[k].note else note)
        closed.append(class_id)
        logger.warning("class %d: %s", class_id, note)
    curve = dataclasses.replace(tuned.curve, classes=tuple(classes))
    return dataclasses.replace(tuned, params=tuple(params), curve=curve), tuple(closed)


def _stress_set(ws: Workspace) -> tuple[Path, Annotations, str]:
    """``(images_dir, annotations, description)`` of the run's stress images (generated on first use)."""
    cfg = ws.config.tune.stress
    assert cfg is not None
    if cfg.data is not None:
        data = ws.open_other(cfg.data)
        return data.images_dir, data.annotations, f"{data.kind} {data.root}, {len(data.image_ids)} images"
    images, annotations = ws.synthetic_set(ws.paths.stress_dir(cfg.profile, cfg.seed, cfg.n), cfg.n, cfg.seed,
                                           cfg.profile)  # fmt: skip
    return images, annotations, f"synthetic, profile {cfg.profile}, {cfg.n} images, seed {cfg.seed}"


def stress_check(
    predictor: object,
    tuned: CascadeTuning,
    images_dir: Path,
    annotations: Annotations,
    source: str,
    config: TuneConfig,
    margin: float,
    show_progress: bool = True,
) -> tuple[CascadeTuning, StressCheck]:
    """Score the tuned cascade on stress images and close the classes that do worse than all-empty there.

    Args:
        predictor: a ``CascadePredictor`` over the tuned networks without calibration (the tuning's own is
            applied here).
        tuned: the tuning to check.
        images_dir: folder of the stress images; ``annotations`` their truth, ``source`` what they are.
        config: the grids the tuning used.
        margin: close a class more than this below all-empty.
        show_progress: tqdm bar.
    """
    class_ids = predictor.manifest.class_ids  # type: ignore[attr-defined]
    tables, empty, probabilities = compute_dice_tables(
        predictor, images_dir, annotations.image_ids, annotations.masks, config.pixel_thresholds, config.min_areas,
        config.batch_size, show_progress,
    )  # fmt: skip
    if tuned.calibration:
        probabilities = calibrate(np.asarray(probabilities, np.float64), tuned.calibration)
    cascade, empty_dice = stress_dice(probabilities, tables, empty, tuned.params, config.pixel_thresholds,
                                      config.min_areas)  # fmt: skip
    tuned, closed = close_on_stress(tuned, cascade, empty_dice, class_ids, margin)
    check = StressCheck(source, len(annotations.image_ids), tuple(map(float, cascade)),
                        tuple(map(float, empty_dice)), margin, closed)  # fmt: skip
    logger.info(
        "stress check on %s: cascade %s vs all-empty %s per class; closed %s", source,
        " ".join(f"{d:.3f}" for d in cascade), " ".join(f"{d:.3f}" for d in empty_dice), list(closed) or "none",
    )  # fmt: skip
    return tuned, check


def run(ws: Workspace, resume: bool = False) -> Path:
    """Stage entry point: tune every class and write ``thresholds.json`` and ``tune_scores.npz``."""
    from cascade.predictor import CascadePredictor

    del resume
    config = ws.config
    grid = config.tune
    _, val_ids = ws.tune_split
    oof = read_oof(ws.paths.oof_csv).select(val_ids)
    predictor = CascadePredictor(
        in_memory_bundle(ws), device=str(ws.ctx.device), runtime="torch", tta=config.package.tta
    )
    tables, empty, _ = compute_dice_tables(
        predictor, ws.store.images_dir, val_ids, ws.annotations.masks, grid.pixel_thresholds, grid.min_areas,
        grid.batch_size, ws.ctx.is_main,
    )  # fmt: skip
    tuned = tune_cascade(oof.probabilities, tables, empty, ws.class_ids, grid)
    stress = None
    if grid.stress is not None:
        images_dir, annotations, source = _stress_set(ws)
        tuned, stress = stress_check(predictor, tuned, images_dir, annotations, source, grid, grid.stress.margin,
                                     ws.ctx.is_main)  # fmt: skip
    results = {  # a closed class answers "absent" on every tuning image: it scores all-empty's Dice
        c: dataclasses.replace(r, dice=r.dice_empty) if p.closed else r
        for (c, r), p in zip(tuned.classes.items(), tuned.params, strict=True)
    }
    for class_id, r in results.items():
        logger.info(
            "class %d: prob>=%.2f pixel>=%.2f min_area=%d -> dice %.4f (segment_all %.4f, empty %.4f)",
            class_id, r.prob_threshold, r.pixel_threshold, r.min_area, r.dice, r.dice_segment_all, r.dice_empty,
        )  # fmt: skip
    curve = tuned.curve
    validation = {
        "images": len(val_ids),
        "dice_cascade": float(np.mean([r.dice for r in results.values()])),
        "dice_segment_all": float(np.mean([r.dice_segment_all for r in results.values()])),
        "dice_empty": float(np.mean([r.dice_empty for r in results.values()])),
        "runs_per_image": curve.chosen.runs_per_image,
        "dice_only": {"dice": curve.dice_only.dice, "runs_per_image": curve.dice_only.runs_per_image},
        "per_class": {str(c): {"cascade": r.dice, "segment_all": r.dice_segment_all, "empty": r.dice_empty}
                      for c, r in results.items()},
    }  # fmt: skip
    if tuned.calibration_report:
        validation["ece_before"] = tuned.calibration_report["ece_before"]
        validation["ece_after"] = tuned.calibration_report["ece_after"]
    record = {
        "classes": {
            str(c): {
                "params": {
                    "prob_threshold": p.prob_threshold,
                    "pixel_threshold": p.pixel_threshold,
                    "min_area": p.min_area,
                    "predictable": p.predictable,
                    "closed": p.closed,
                }
            }
            for c, p in zip(ws.class_ids, tuned.params, strict=True)
        },
        "validation": validation,
        "grid": {
            "prob_thresholds": sorted({0.0, *grid.prob_thresholds}),
            "pixel_thresholds": list(grid.pixel_thresholds),
            "min_areas": list(grid.min_areas),
        },
        "calibration": tuned.calibration_report or None,
        "stress": stress.to_dict() if stress is not None else None,
        "gate_curve": curve.to_dict(),
    }
    path = ws.paths.thresholds_json
    path.write_text(json.dumps(record, indent=2))
    np.savez_compressed(ws.paths.tune_scores_npz, **{f"class{c}": r.scores for c, r in results.items()})
    for class_id in ws.class_ids:  # validate what we wrote
        ClassParams(**record["classes"][str(class_id)]["params"])
    GateCurve.from_dict(record["gate_curve"])
    logger.info(
        "tuned on %d validation images: cascade %.4f at %.3f segmenter runs/image (Dice-only %.4f at %.3f), "
        "segment_all %.4f, all-empty %.4f",
        len(val_ids), validation["dice_cascade"], curve.chosen.runs_per_image, curve.dice_only.dice,
        curve.dice_only.runs_per_image, validation["dice_segment_all"], validation["dice_empty"],
    )  # fmt: skip
    return path
