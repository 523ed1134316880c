"""Stage ``tune``: per-class probability threshold, pixel threshold and min-area that maximise Kaggle Dice on
the validation images of fold ``data.tune_fold``.

The segmenters' probability maps come from ``cascade.predictor.CascadePredictor.infer`` in ``segment_all``
mode over the run's networks, so tuning sees exactly what inference computes (input scale, padding, TTA).
The gate uses the classifier's **out-of-fold** probabilities (``classifier/oof.csv``): the final classifier
may have trained on these images. The grid search itself is :mod:`training.thresholds`; maps are reduced
to per-image Dice tables batch by batch, so memory does not grow with the number of images.

Writes ``thresholds.json`` (chosen ``ClassParams`` per class and the validation Dice of the cascade,
segment-all and all-empty) and ``tune_scores.npz`` (the full grids, for the report's sweep plots).

Run on its own: ``python -m training.tune_thresholds --config configs/demo-cpu.yaml [--out RUN_DIR]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cascade.imageio import read_image
from cascade.manifest import ClassParams
from training.oof import read_oof
from training.package import in_memory_bundle
from training.thresholds import ClassTuning, dice_tables, tune_class
from training.workspace import Workspace

__all__ = ["compute_dice_tables", "main", "run"]

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


def run(ws: Workspace, resume: bool = False) -> Path:
    """Stage entry point: tune every class and write ``thresholds.json`` and ``tune_scores.npz``."""
    from cascade.predictor import CascadePredictor

    del resume
    config = ws.config
    grid = config.tune
    _, val_ids = ws.tune_split
    oof = read_oof(ws.run_dir / "classifier" / "oof.csv").select(val_ids)
    predictor = CascadePredictor(
        in_memory_bundle(ws), device=str(ws.ctx.device), runtime="torch", tta=config.package.tta
    )
    tables, empty, _ = compute_dice_tables(
        predictor, ws.store.images_dir, val_ids, ws.annotations.masks, grid.pixel_thresholds, grid.min_areas,
        grid.batch_size, ws.ctx.is_main,
    )  # fmt: skip
    results: dict[int, ClassTuning] = {}
    for k, class_id in enumerate(ws.class_ids):
        results[class_id] = tune_class(
            oof.probabilities[:, k], tables[:, k], empty[:, k], grid.prob_thresholds, grid.pixel_thresholds,
            grid.min_areas, grid.tolerance,
        )  # fmt: skip
        r = results[class_id]
        logger.info(
            "class %d: prob>=%.2f pixel>=%.2f min_area=%d -> dice %.4f (segment_all %.4f, empty %.4f)",
            class_id, r.prob_threshold, r.pixel_threshold, r.min_area, r.dice, r.dice_segment_all, r.dice_empty,
        )  # fmt: skip
    validation = {
        "images": len(val_ids),
        "dice_cascade": float(np.mean([r.dice for r in results.values()])),
        "dice_segment_all": float(np.mean([r.dice_segment_all for r in results.values()])),
        "dice_empty": float(np.mean([r.dice_empty for r in results.values()])),
        "per_class": {str(c): {"cascade": r.dice, "segment_all": r.dice_segment_all, "empty": r.dice_empty}
                      for c, r in results.items()},
    }  # fmt: skip
    record = {
        "classes": {
            str(c): {
                "params": {
                    "prob_threshold": r.prob_threshold,
                    "pixel_threshold": r.pixel_threshold,
                    "min_area": r.min_area,
                }
            }
            for c, r in results.items()
        },
        "validation": validation,
        "grid": {
            "prob_thresholds": sorted({0.0, *grid.prob_thresholds}),
            "pixel_thresholds": list(grid.pixel_thresholds),
            "min_areas": list(grid.min_areas),
        },
    }
    path = ws.run_dir / "thresholds.json"
    path.write_text(json.dumps(record, indent=2))
    np.savez_compressed(ws.run_dir / "tune_scores.npz", **{f"class{c}": r.scores for c, r in results.items()})
    for class_id in ws.class_ids:  # validate what we wrote
        ClassParams(**record["classes"][str(class_id)]["params"])
    logger.info(
        "tuned on %d validation images: cascade %.4f, segment_all %.4f, all-empty %.4f",
        len(val_ids), validation["dice_cascade"], validation["dice_segment_all"], validation["dice_empty"],
    )  # fmt: skip
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m training.tune_thresholds``."""
    from training.pipeline import run_stage_cli

    run_stage_cli("tune", argv, __doc__)


if __name__ == "__main__":
    main()
