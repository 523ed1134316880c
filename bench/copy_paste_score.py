"""Scoring of ``bench.bench_copy_paste``: a class's segmenter swapped into a bundle, its Dice in the cascade and alone.

``eval_set`` reads a labelled set once and runs the bundle's classifier on it (the gate is the classifier's, the
same for every swapped segmenter); ``score`` then runs one bundle's segmenter of the class where it matters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EvalSet", "bundle_with", "eval_set", "score"]


def bundle_with(base: Path, weights: Path, class_id: int, out: Path) -> Path:
    """A copy of bundle ``base`` at ``out`` whose class ``class_id`` segmenter has the checkpoint ``weights``
    (classifier, other segmenters and every threshold unchanged)."""
    import torch

    from cascade.bundle import load_bundle, save_bundle
    from training.loop import load_checkpoint

    bundle = load_bundle(base)
    segmenters = dict(bundle.segmenters)
    segmenters[class_id].load_state_dict(load_checkpoint(weights)["model"])
    save_bundle(out, bundle.manifest, bundle.classifier, segmenters, dtype=torch.float16)
    return out


@dataclass(frozen=True)
class EvalSet:
    """A labelled set in memory: images, one class's truth, and the gate of the bundle's classifier on it."""

    name: str
    images: list[np.ndarray]
    truth: np.ndarray  # (N, H, W) bool, the class
    probabilities: np.ndarray  # (N,) the class's (calibrated) classifier probability
    class_index: int


def _closed_params(manifest: Any, open_index: int | None) -> list[Any]:
    """The manifest's class parameters with every gate shut (``prob_threshold`` 1) but ``open_index``'s (0)."""
    return [
        dataclasses.replace(c, prob_threshold=0.0 if k == open_index else 1.0) for k, c in enumerate(manifest.classes)
    ]


def eval_set(name: str, bundle: Path, labelled: Any, class_id: int) -> EvalSet:
    """Read ``labelled`` once and run ``bundle``'s classifier on it (every segmenter gate shut)."""
    from cascade.imageio import read_image
    from cascade.predictor import CascadePredictor

    predictor = CascadePredictor.from_bundle(bundle, device="cpu", runtime="torch")
    k = predictor.manifest.class_index(class_id)
    ids = labelled.image_ids
    images = [read_image(labelled.images_dir / i) for i in ids]
    truth = np.stack([labelled.annotations.masks(i, im.shape[:2])[k] for i, im in zip(ids, images, strict=True)])
    params = _closed_params(predictor.manifest, None)
    probs = [predictor.infer(images[i : i + 32], params=params).probabilities[:, k] for i in range(0, len(ids), 32)]
    return EvalSet(name, images, truth.astype(bool), np.concatenate(probs), k)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def score(bundle: Path, val: EvalSet, ungated: bool = False) -> dict[str, float]:
    """The class's Dice with ``bundle``'s segmenter and post-processing (pixel threshold, min area).

    Returns ``cascade`` (the bundle's gate, over every image), ``positives_cascade`` and ``positives_alone`` (on
    the images holding the class, gated and ungated), ``empty`` (all-empty over every image), counts, and with
    ``ungated`` also ``all_alone``: the segmenter on every image, no gate (its false positives count).

    Without ``ungated`` only images the gate passes or that hold the class are segmented: on the others the
    cascade predicts nothing and the truth is empty (Dice 1), whatever the segmenter.
    """
    from cascade.metric import dice_pairs
    from cascade.postprocess import postprocess_map
    from cascade.predictor import CascadePredictor

    predictor = CascadePredictor.from_bundle(bundle, device="cpu", runtime="torch")
    k = val.class_index
    cid = predictor.manifest.class_ids[k]
    params = predictor.manifest.classes[k]
    gate = val.probabilities >= params.prob_threshold
    positives = val.truth.reshape(len(val.truth), -1).any(axis=1)
    rows = np.arange(len(val.truth)) if ungated else np.flatnonzero(gate | positives)
    run_params = _closed_params(predictor.manifest, k)
    cascade_dice = np.ones(len(val.truth))
    alone = np.ones(len(val.truth))
    for start in range(0, len(rows), 16):
        batch = rows[start : start + 16]
        raw = predictor.infer([val.images[i] for i in batch], params=run_params)
        for j, i in enumerate(batch):
            pred = postprocess_map(raw.maps[j][cid], float(val.probabilities[i]), params)
            truth = val.truth[i][None, None]
            alone[i] = dice_pairs(pred[None, None], truth)[0, 0]
            cascade_dice[i] = alone[i] if gate[i] else dice_pairs(np.zeros_like(truth), truth)[0, 0]
    result = {
        "cascade": float(cascade_dice.mean()),
        "positives_cascade": _mean(cascade_dice[positives]),
        "positives_alone": _mean(alone[positives]),
        "empty": float(np.mean(~positives)),
        "n_positive": int(positives.sum()),
        "images": len(positives),
        "gated": int(gate.sum()),
        "gated_positives": int((gate & positives).sum()),
        "segmented": len(rows),
    }
    if ungated:
        result["all_alone"] = float(alone.mean())
    return result
