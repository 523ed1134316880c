"""Stage ``pseudo_label``: label a folder of unlabelled images with the run's bundle and retrain on them.

Round ``r`` (1..``pseudo_label.rounds``) predicts the unlabelled images with the previous round's bundle (round 0
is the run itself), keeps the confident ones (:func:`select`: per class present, absent or uncertain; an image
with an uncertain class is dropped), writes them to ``RUN_DIR/pseudo_label/round<r>/`` (``pseudo_labels.csv``,
``soft_masks/`` for soft labels, ``images/`` linking labelled and kept images) and runs the whole base pipeline
(classifier, hard negatives, segmenters, tune, package, evaluate) in that folder: ``open_workspace`` adds the
pseudo-labelled images to the training part of every fold, never to a validation part.

Validation images are never pseudo-labelled: unlabelled images whose file name is a labelled image's, or whose
pixels equal a validation image's, are dropped with a warning. Each finished round leaves ``round.json``; with
``--resume`` finished rounds are skipped and an interrupted one continues stage by stage. The chosen bundle is
the round with the best validation Dice (tuned on the validation images, round 0 included, ties to the earlier
round): ``pseudo_label/summary.json`` names it and ``pseudo_label/report.md`` shows every round.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cascade.formats import list_image_ids
from cascade.imageio import read_image
from cascade.manifest import ClassParams
from cascade.postprocess import postprocess_map
from cascade.rle import encode
from training.distributed import barrier
from training.package import bundle_path
from training.paths import RunPaths
from training.pseudo_label_report import report_markdown
from training.stage_config import PseudoLabelConfig
from training.workspace import Workspace, open_workspace

__all__ = [
    "ABSENT",
    "PRESENT",
    "UNCERTAIN",
    "Decision",
    "list_unlabelled",
    "run",
    "screen_unlabelled",
    "select",
]

logger = logging.getLogger(__name__)

PRESENT, ABSENT, UNCERTAIN = 1, 0, -1
"""A class's state in one unlabelled image."""


@dataclass(frozen=True)
class Decision:
    """What :func:`select` made of one unlabelled image.

    Attributes:
        states: ``(C,)`` int8, ``PRESENT``/``ABSENT``/``UNCERTAIN`` per class.
        masks: ``(C, H, W)`` bool post-processed masks (empty for absent classes).
        mask_confidence: ``(C,)`` share of confident pixels in each present class's mask (NaN otherwise).
        kept: every class is confident, and a class is present or clean images are kept.
    """

    states: np.ndarray
    masks: np.ndarray
    mask_confidence: np.ndarray
    kept: bool


def select(
    probabilities: np.ndarray, maps: Sequence[np.ndarray], params: Sequence[ClassParams], cfg: PseudoLabelConfig
) -> Decision:
    """Decide one image's pseudo-label.

    Args:
        probabilities: ``(C,)`` the bundle's class probabilities.
        maps: per class an ``(H, W)`` segmenter probability map.
        params: per class the bundle's post-processing parameters (pixel threshold, min area).
        cfg: the thresholds (see ``PseudoLabelConfig``).
    """
    n = len(probabilities)
    states = np.full(n, UNCERTAIN, dtype=np.int8)
    masks = np.zeros((n, *np.shape(maps[0])), dtype=bool)
    confidence = np.full(n, np.nan)
    for k in range(n):
        p = float(probabilities[k])
        if p <= cfg.absent_threshold:
            states[k] = ABSENT
        elif p >= cfg.present_threshold:
            mask = postprocess_map(np.asarray(maps[k]), p, params[k])
            if mask.any():
                confidence[k] = float(np.mean(np.asarray(maps[k])[mask] >= cfg.pixel_confidence))
                if confidence[k] >= cfg.mask_confidence:
                    states[k], masks[k] = PRESENT, mask
    confident = bool((states != UNCERTAIN).all())
    kept = confident and (bool((states == PRESENT).any()) or cfg.include_clean)
    return Decision(states, masks, confidence, kept)


def list_unlabelled(folder: str | Path, max_images: int | None) -> tuple[str, ...]:
    """Image file names directly in ``folder`` (at most ``max_images``, spread evenly over the sorted list).

    Raises:
        FileNotFoundError: the folder does not exist or holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"unlabelled folder {folder} not found (pseudo_label.unlabelled / --unlabelled)")
    ids = list_image_ids(folder)
    if not ids:
        raise FileNotFoundError(f"unlabelled folder {folder} holds no images")
    if max_images is not None and max_images < len(ids):
        picks = np.unique(np.linspace(0, len(ids) - 1, max_images).round().astype(int))
        ids = tuple(ids[i] for i in picks)
    return ids


def _pixels_hash(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


def screen_unlabelled(ws: Workspace, folder: Path, image_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Drop unlabelled images that are labelled images (same file name) or validation images (same pixels).

    Returns:
        ``(kept ids, one message per dropped group)``.
    """
    labelled = set(ws.image_ids)
    _, val_ids = ws.tune_split
    same_name = [i for i in image_ids if i in labelled]
    same_val_name = [i for i in same_name if i in set(val_ids)]
    val_hashes = {_pixels_hash(read_image(ws.data.images_dir / i)) for i in val_ids}
    candidates = [i for i in image_ids if i not in labelled]
    same_pixels = [i for i in candidates if _pixels_hash(read_image(folder / i)) in val_hashes]
    messages = []
    if same_val_name:
        messages.append(
            f"dropped {len(same_val_name)} unlabelled images named like validation images (never pseudo-labelled), "
            f"e.g. {same_val_name[:3]}"
        )
    if len(same_name) > len(same_val_name):
        others = [i for i in same_name if i not in set(same_val_name)]
        messages.append(
            f"dropped {len(others)} unlabelled images named like labelled training images, e.g. {others[:3]}"
        )
    if same_pixels:
        messages.append(
            f"dropped {len(same_pixels)} unlabelled images whose pixels equal a validation image's (never "
            f"pseudo-labelled), e.g. {same_pixels[:3]}"
        )
    dropped = set(same_pixels)
    return [i for i in candidates if i not in dropped], messages


def _predict(
    bundle: Path, folder: Path, image_ids: Sequence[str], batch_size: int, device: str, show: bool
) -> Iterator[tuple[str, np.ndarray, list[np.ndarray], tuple[ClassParams, ...]]]:
    """``(image id, (C,) probabilities, per-class maps, class params)`` of every image, every segmenter run."""
    from cascade.bundle import load_bundle
    from cascade.predictor import CascadePredictor

    predictor = CascadePredictor(load_bundle(bundle), device=device, runtime="torch")
    class_ids = predictor.manifest.class_ids
    params = tuple(predictor.manifest.classes)
    for start in tqdm(range(0, len(image_ids), batch_size), desc="pseudo-labelling", leave=False, disable=not show):
        ids = list(image_ids[start : start + batch_size])
        raw = predictor.infer([read_image(folder / i) for i in ids], mode="segment_all", image_ids=ids)
        for n, image_id in enumerate(ids):
            maps = [np.asarray(raw.maps[n][c], dtype=np.float32) for c in class_ids]
            yield image_id, raw.probabilities[n], maps, params


def _link(source: Path, target: Path) -> None:
    if target.exists() or target.is_symlink():
        return
    try:
        os.symlink(source.resolve(), target)
    except OSError:  # no symlinks here: copy
        shutil.copyfile(source, target)


def _write_round_inputs(ws: Workspace, paths: RunPaths, teacher: Path, folder: Path, ids: Sequence[str]) -> dict:
    """Predict, select and write one round's pseudo-labels (``pseudo_labels.csv`` last); returns the counts."""
    cfg = ws.config.pseudo_label
    class_ids = ws.class_ids
    paths.root.mkdir(parents=True, exist_ok=True)
    images = paths.pseudo_images_dir
    images.mkdir(exist_ok=True)
    for image_id in ws.image_ids:  # labelled images (validation ones too: tuning and evaluation read them here)
        _link(ws.data.images_dir / image_id, images / image_id)
    if cfg.soft:
        paths.soft_masks_dir.mkdir(exist_ok=True)
    rows: list[list[Any]] = []
    present = np.zeros(len(class_ids), dtype=int)
    absent = np.zeros(len(class_ids), dtype=int)
    uncertain_images = 0
    predictions = _predict(teacher, folder, ids, cfg.batch_size, str(ws.ctx.device), ws.ctx.is_main)
    for image_id, probs, maps, params in predictions:
        decision = select(probs, maps, params, cfg)
        if not decision.kept:
            uncertain_images += int((decision.states == UNCERTAIN).any())
            continue
        present += decision.states == PRESENT
        absent += decision.states == ABSENT
        labels = decision.states == PRESENT
        targets = probs.astype(np.float64) if cfg.soft else labels.astype(np.float64)
        if cfg.soft:
            soft = np.stack([np.where(labels[k], maps[k], 0.0) for k in range(len(class_ids))])
            np.savez_compressed(paths.soft_masks_dir / f"{image_id}.npz", masks=np.rint(soft * 255).astype(np.uint8))
        _link(folder / image_id, images / image_id)
        row: list[Any] = [image_id, *decision.masks.shape[1:]]
        for k in range(len(class_ids)):
            row += [int(labels[k]), f"{targets[k]:.6f}", encode(decision.masks[k])]
        rows.append(row)
    counts = {
        "unlabelled": len(ids),
        "kept": len(rows),
        "clean": int(sum(1 for r in rows if not any(r[3 + 3 * k] for k in range(len(class_ids))))),
        "dropped_uncertain": uncertain_images,
        "present": {str(c): int(v) for c, v in zip(class_ids, present, strict=True)},
        "absent": {str(c): int(v) for c, v in zip(class_ids, absent, strict=True)},
    }
    logger.info("pseudo-labels of %s: %s", paths.root.name, counts)
    paths.pseudo_counts_json.write_text(json.dumps(counts, indent=2))
    tmp = paths.pseudo_labels_csv.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["ImageId", "height", "width", *(f"{n}_{c}" for c in class_ids for n in ("label", "target", "rle"))]
        )
        writer.writerows(rows)
    tmp.replace(paths.pseudo_labels_csv)  # written last: its presence makes the round's workspace read it
    return counts


def _round_metrics(paths: RunPaths, bundle: Path) -> dict[str, Any]:
    """Validation Dice (``thresholds.json``) and held-out Dice (``evaluation.json``, when written) of a run."""
    validation = json.loads(paths.thresholds_json.read_text())["validation"]
    out: dict[str, Any] = {
        "bundle": str(bundle),
        "validation": {
            "dice_cascade": validation["dice_cascade"],
            "dice_empty": validation["dice_empty"],
            "per_class": {
                c: {"cascade": v["cascade"], "empty": v["empty"]} for c, v in validation["per_class"].items()
            },
        },
    }
    if paths.evaluation_json.is_file():
        heldout = json.loads(paths.evaluation_json.read_text())
        out["heldout"] = {
            "data": heldout.get("data"),
            "dice_cascade": heldout["dice_cascade"],
            "dice_empty": heldout["dice_empty"],
            "per_class": heldout["cascade"]["per_class"],
            "per_class_empty": heldout["empty"]["per_class"],
        }
    return out


def run(ws: Workspace, resume: bool, run_round: Callable[[Workspace], object]) -> Path:
    """Stage entry point: every round, then ``summary.json`` and ``report.md``.

    Args:
        ws: the base run's workspace (its bundle is round 0).
        resume: skip finished rounds and continue an interrupted one; without it the rounds start afresh.
        run_round: runs the base stages in a round's workspace (``training.pipeline`` passes
            ``run_stages(..., BASE_STAGES, resume=True)``).

    Returns:
        ``pseudo_label/summary.json``.
    """
    cfg = ws.config.pseudo_label
    if cfg.unlabelled is None:
        raise ValueError(
            "the pseudo_label stage needs an unlabelled folder: --unlabelled DIR or pseudo_label.unlabelled"
        )
    base = ws.paths
    teacher = bundle_path(ws.config, ws.run_dir)
    if not teacher.is_file():
        raise FileNotFoundError(f"{teacher} not found (run the 'package' stage first)")
    if ws.ctx.is_main and not resume and base.pseudo_label_dir.exists():
        shutil.rmtree(base.pseudo_label_dir)
    barrier()
    folder = Path(cfg.unlabelled)
    ids, messages = screen_unlabelled(ws, folder, list_unlabelled(folder, cfg.max_images))
    for message in messages:
        logger.warning("pseudo_label: %s", message)
    if not ids:
        raise ValueError(f"no unlabelled image of {folder} is left to pseudo-label: {'; '.join(messages)}")
    rounds: list[dict[str, Any]] = [{"round": 0, "pseudo_labels": None, **_round_metrics(base, teacher)}]
    for r in range(1, cfg.rounds + 1):
        paths = RunPaths(base.pseudo_round_dir(r))
        if paths.round_json.is_file():
            logger.info("pseudo-labelling round %d already done; skipping", r)
            record = json.loads(paths.round_json.read_text())
        else:
            if not paths.pseudo_labels_csv.is_file() and ws.ctx.is_main:
                _write_round_inputs(ws, paths, teacher, folder, ids)
            barrier()
            if heldout := _shared_heldout(ws, paths):
                logger.info("round %d evaluates on %s", r, heldout)
            run_round(open_workspace(ws.config, paths.root, ws.ctx))
            counts = json.loads(paths.pseudo_counts_json.read_text())
            record = {"round": r, "pseudo_labels": counts, **_round_metrics(paths, bundle_path(ws.config, paths.root))}
            if ws.ctx.is_main:
                paths.round_json.write_text(json.dumps(record, indent=2))
        rounds.append(record)
        teacher = Path(record["bundle"])
    best = max(rounds, key=lambda x: (x["validation"]["dice_cascade"], -x["round"]))
    summary = {"unlabelled": str(folder), "screening": messages, "rounds": rounds, "chosen_round": best["round"],
               "bundle": best["bundle"], "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}  # fmt: skip
    if ws.ctx.is_main:
        base.pseudo_label_dir.mkdir(parents=True, exist_ok=True)
        base.pseudo_summary_json.write_text(json.dumps(summary, indent=2))
        base.pseudo_report_md.write_text(report_markdown(summary, ws.classes.names, ws.class_ids))
    logger.info(
        "pseudo-labelling: chose round %d (validation Dice %.4f)", best["round"], best["validation"]["dice_cascade"]
    )
    return base.pseudo_summary_json


def _shared_heldout(ws: Workspace, paths: RunPaths) -> Path | None:
    """Link the base run's generated synthetic held-out set into a round folder (so it is not generated again)."""
    cfg = ws.config.evaluate
    if cfg.data is not None or cfg.synth_n <= 0:
        return None
    source = ws.paths.heldout_dir(cfg.synth_seed, cfg.synth_n)
    target = paths.heldout_dir(cfg.synth_seed, cfg.synth_n)
    if source.is_dir() and ws.ctx.is_main:
        _link(source, target)
    return target if source.is_dir() else None
