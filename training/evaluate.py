"""Stage ``evaluate``: score the written bundle on held-out images and write ``report.md`` with plots.

Held-out images are, by ``evaluate``: a data folder (``data``), a synthetic set generated for the run
(``synth_n`` images with ``synth_seed``, written to ``RUN_DIR/heldout-seed<S>-n<N>``), or else the tuning fold's
validation images (then the numbers are not independent of the tuning). The bundle file itself is loaded
(fp16 storage included) and run through ``CascadePredictor`` once in ``segment_all`` mode; the cascade's
masks are the same maps post-processed behind the gate, so both modes are scored on identical network
outputs. Reported: Kaggle Dice overall and per class for the cascade, segment-all and the all-empty
baseline; classifier ROC AUC and F1 per class (scikit-learn); the gate's confusion matrices; the share of
(image, class) pairs the gate sends to a segmenter, its segmenter runs per image against each class's
positive rate, the images/s those runs allow on this machine, and the expected calibration error of the
probabilities before and after the bundle's calibration. Afterwards the held-out metrics are added to the
bundle's provenance.

Run on its own: ``cascade train --config configs/demo-cpu.yaml --stage evaluate [--out RUN_DIR]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cascade.formats import Annotations
from cascade.gate import gate
from cascade.imageio import read_image
from cascade.metric import DiceReport, dice_pairs
from training.evaluation import Evaluation
from training.gallery import write_gallery
from training.package import bundle_path, read_class_params, write_bundle
from training.report import write_report
from training.thresholds import dice_tables, grid_scores
from training.workspace import Workspace

__all__ = ["Evaluation", "evaluate_bundle", "heldout_set", "run"]

logger = logging.getLogger(__name__)


def heldout_set(ws: Workspace) -> tuple[Path, Annotations, str]:
    """``(images_dir, annotations, description)`` of the held-out images the configuration names."""
    cfg = ws.config.evaluate
    if cfg.data is not None:
        data = ws.open_other(cfg.data)
        if cfg.split is not None:
            data = data.split(cfg.split)
        where = f"{data.kind} {data.root}" + (f", split {cfg.split}" if cfg.split else "")
        return data.images_dir, data.annotations, f"{where}, {len(data.image_ids)} images"
    if cfg.synth_n > 0:
        root = ws.paths.heldout_dir(cfg.synth_seed, cfg.synth_n)
        images, annotations = ws.synthetic_set(root, cfg.synth_n, cfg.synth_seed)
        return images, annotations, f"synthetic, {cfg.synth_n} images, seed {cfg.synth_seed}"
    _, val_ids = ws.tune_split
    if ws.config.data.val_split is not None:
        where = f"split {ws.config.data.val_split!r} of {ws.data_dir}, {len(val_ids)} images (also used for tuning)"
    else:
        where = f"validation fold {ws.config.data.tune_fold} of the training data (also used for tuning)"
    return ws.store.images_dir, ws.annotations.subset(val_ids), where


def evaluate_bundle(
    path: str | Path,
    images_dir: Path,
    annotations: Annotations,
    *,
    grid: tuple[Sequence[float], Sequence[float], Sequence[int]],
    batch_size: int = 8,
    device: str = "cpu",
    show_progress: bool = True,
    tta: Sequence[str] | None = None,
) -> Evaluation:
    """Score a bundle file on annotated images.

    Args:
        path: bundle file or folder.
        images_dir: folder of the images.
        annotations: truth of every image to score.
        grid: ``(prob_thresholds, pixel_thresholds, min_areas)`` for the held-out sweep grids.
        batch_size: images per predictor call.
        device: torch device.
        show_progress: tqdm bar.
        tta: test-time augmentations overriding the bundle's (``()``: none); None keeps the bundle's.
    """
    from cascade.predictor import CascadePredictor

    predictor = CascadePredictor.from_bundle(path, device=device, runtime="torch", tta=tta)
    class_ids = predictor.manifest.class_ids
    if tuple(annotations.class_ids) != class_ids:
        raise ValueError(f"the held-out data has classes {list(annotations.class_ids)}, the bundle {list(class_ids)}")
    prob_grid, pixel_grid, area_grid = grid
    pairs: dict[str, list[np.ndarray]] = {"cascade": [], "segment_all": [], "empty": []}
    probs, labels, gates, tables, uncalibrated, ood = [], [], [], [], [], []
    seconds: dict[str, float] = {}
    ids = annotations.image_ids
    for start in tqdm(range(0, len(ids), batch_size), desc="evaluating", leave=False, disable=not show_progress):
        batch_ids = list(ids[start : start + batch_size])
        images = [read_image(images_dir / i) for i in batch_ids]
        truth = np.stack([annotations.masks(i, im.shape[:2]) for i, im in zip(batch_ids, images, strict=True)])
        raw = predictor.infer(images, mode="segment_all", image_ids=batch_ids)
        for mode in ("cascade", "segment_all"):
            results = predictor.postprocess(raw, mode=mode)
            pairs[mode].append(dice_pairs(np.stack([r.masks for r in results]), truth))
        post = results[0].timings  # segment-all: every (image, class) pair post-processed and encoded
        seconds["postprocess"] = seconds.get("postprocess", 0.0) + post["postprocess"] + post["encode"]
        pairs["empty"].append(dice_pairs(np.zeros_like(truth), truth))
        gates.append(gate(raw.probabilities, predictor.manifest.classes))  # a closed class's gate stays shut
        probs.append(raw.probabilities)
        if raw.uncalibrated is not None:
            uncalibrated.append(raw.uncalibrated)
        if raw.ood_scores is not None:
            ood.append(raw.ood_scores)
        for key, value in raw.timings.items():
            key = "classifier" if key == "preprocess" else key
            if key == "classifier" or key.startswith("segmenter_"):
                seconds[key] = seconds.get(key, 0.0) + value
        labels.append(truth.reshape(len(batch_ids), len(class_ids), -1).any(axis=2))
        tables.append(
            np.stack(
                [
                    dice_tables(
                        np.stack([raw.maps[i][c] for i in range(len(batch_ids))]), truth[:, k], pixel_grid, area_grid
                    )
                    for k, c in enumerate(class_ids)
                ],
                axis=1,
            )
        )
    all_tables, all_probs, all_labels = np.concatenate(tables), np.concatenate(probs), np.concatenate(labels)
    scores = {
        c: grid_scores(all_probs[:, k], all_tables[:, k], ~all_labels[:, k], prob_grid) for k, c in enumerate(class_ids)
    }
    names = predictor.manifest.class_names
    return Evaluation(
        cascade=DiceReport.from_pairs(np.concatenate(pairs["cascade"]), class_ids, names),
        segment_all=DiceReport.from_pairs(np.concatenate(pairs["segment_all"]), class_ids, names),
        empty=DiceReport.from_pairs(np.concatenate(pairs["empty"]), class_ids, names),
        probabilities=all_probs,
        labels=all_labels,
        gate=np.concatenate(gates),
        grid_scores=scores,
        uncalibrated=np.concatenate(uncalibrated) if uncalibrated else None,
        seconds_per_image=_per_image(seconds, len(ids), class_ids),
        ood_scores=np.concatenate(ood) if ood else None,
        ood_threshold=predictor.manifest.ood.threshold if predictor.manifest.ood is not None else None,
        image_dice=np.concatenate(pairs["cascade"]),
    )


def _per_image(seconds: dict[str, float], n_images: int, class_ids: Sequence[int]) -> dict[str, float]:
    """Seconds per image by network; post-processing is shared evenly by the segmenters."""
    if not n_images:
        return {}
    post = seconds.pop("postprocess", 0.0) / len(class_ids)
    return {k: (v + (post if k.startswith("segmenter_") else 0.0)) / n_images for k, v in seconds.items()}


def run(ws: Workspace, resume: bool = False) -> Path:
    """Stage entry point: evaluate the bundle, write ``evaluation.json`` and ``report.md``, update provenance."""
    del resume
    path = bundle_path(ws.config, ws.run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (run the 'package' stage first)")
    thresholds = json.loads(ws.paths.thresholds_json.read_text())
    grid = thresholds["grid"]
    images_dir, annotations, description = heldout_set(ws)
    result = evaluate_bundle(
        path, images_dir, annotations, grid=(grid["prob_thresholds"], grid["pixel_thresholds"], grid["min_areas"]),
        batch_size=ws.config.evaluate.batch_size, device=str(ws.ctx.device), show_progress=ws.ctx.is_main,
    )  # fmt: skip
    summary = {"data": description, **result.to_dict()}
    ws.paths.evaluation_json.write_text(json.dumps(summary, indent=2))
    classes, validation = read_class_params(ws.run_dir, ws.class_ids)
    write_gallery(
        ws.paths.gallery_dir, path, images_dir, annotations, result.image_dice, result.labels,
        device=str(ws.ctx.device), show_progress=ws.ctx.is_main,
    )  # fmt: skip
    report = write_report(ws.run_dir, ws.config, summary, validation, classes, result, thresholds)
    write_bundle(ws, {"validation": validation, "heldout": summary, "stage_seconds": ws.paths.stage_seconds()})
    logger.info(
        "held-out (%s): cascade %.4f, segment_all %.4f, all-empty %.4f",
        description, result.cascade.mean, result.segment_all.mean, result.empty.mean,
    )  # fmt: skip
    return report
