"""Re-tune the gate of a trained bundle on labelled images it has not trained on, without retraining.

The bundle's own classifier gives the probabilities (fine on images it never saw: they are then as honest
as out-of-fold ones) and its segmenters the Dice tables; :func:`training.tune_thresholds.tune_cascade`
then fits the calibration and picks every class's gate threshold, pixel threshold and min-area for the
given ``TuneConfig`` (Dice only, a cost weight, a budget of segmenter runs per image, a minimum recall).
The new bundle keeps the weights (and their stored precision) and gets the new ``ClassParams``,
``calibration`` and ``gate_curve``; its provenance records the re-tuning.

Run::

    python -m training.retune --bundle demo --data data/tune --cost-weight 0.01 --out demo-retuned.cascade.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cascade.bundle import LoadedBundle, load_bundle, save_bundle, weights_summary
from cascade.formats import Annotations
from cascade.manifest import BundleManifest
from training.stage_config import TuneConfig
from training.tune_thresholds import CascadeTuning, compute_dice_tables, stress_check, tune_cascade

__all__ = [
    "TuningInputs", "main", "recorded_tune_config", "retune_bundle", "retuned_manifest", "stored_precision",
    "tuning_inputs",
]  # fmt: skip

logger = logging.getLogger(__name__)

_STORED = {"F16": torch.float16, "BF16": torch.bfloat16}


def stored_precision(bundle_path: str | Path) -> torch.dtype | None:
    """The reduced floating-point precision a bundle's weights are stored in (float16/bfloat16), None for float32
    or mixed; integer tensors (BatchNorm's ``num_batches_tracked``) are stored as they are whatever the precision,
    so they do not count. Pass it to ``save_bundle`` to write a rewritten bundle as the original was."""
    dtypes = {d for entry in weights_summary(bundle_path).values() for d in entry["dtypes"]}
    floats = {d for d in dtypes if d.startswith(("F", "BF"))}
    return _STORED.get(floats.pop()) if len(floats) == 1 else None


@dataclass(frozen=True)
class TuningInputs:
    """What tuning needs from a bundle run on labelled images.

    Attributes:
        probabilities: ``(N, C)`` uncalibrated classifier probabilities.
        tables: ``(N, C, P, M)`` Dice tables over the pixel-threshold and min-area grids.
        truth_empty: ``(N, C)`` True where a class is absent.
    """

    probabilities: np.ndarray
    tables: np.ndarray
    truth_empty: np.ndarray


def tuning_inputs(
    bundle: LoadedBundle,
    images_dir: Path,
    annotations: Annotations,
    config: TuneConfig,
    *,
    device: str = "cpu",
    show_progress: bool = True,
) -> TuningInputs:
    """Run a bundle's networks (segment-all, its calibration off) on annotated images and reduce them to tables."""
    predictor = _raw_predictor(bundle, annotations, device)
    tables, empty, probabilities = compute_dice_tables(
        predictor, images_dir, annotations.image_ids, annotations.masks, config.pixel_thresholds, config.min_areas,
        config.batch_size, show_progress,
    )  # fmt: skip
    return TuningInputs(probabilities, tables, empty)


def _raw_predictor(bundle: LoadedBundle, annotations: Annotations, device: str) -> object:
    """A torch ``CascadePredictor`` over the bundle with its calibration off, after checking the data's classes."""
    from cascade.predictor import CascadePredictor

    if tuple(annotations.class_ids) != bundle.manifest.class_ids:
        raise ValueError(
            f"the tuning data has classes {list(annotations.class_ids)}, the bundle {list(bundle.manifest.class_ids)}"
        )
    raw_bundle = dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, calibration=()))
    return CascadePredictor(raw_bundle, device=device, runtime="torch")


def recorded_tune_config(manifest: BundleManifest) -> TuneConfig:
    """The ``tune`` section of the recipe recorded in the bundle's provenance (its grids), else the defaults."""
    from training.recipe import config_from_dict

    recorded = manifest.provenance.get("config", {}).get("tune")
    if not isinstance(recorded, dict):
        return TuneConfig()
    known = {f.name for f in dataclasses.fields(TuneConfig)}
    return config_from_dict(TuneConfig, {k: v for k, v in recorded.items() if k in known}, "provenance.config.tune")


def retuned_manifest(manifest: BundleManifest, tuned: CascadeTuning, note: dict[str, object]) -> BundleManifest:
    """``manifest`` with the tuned gate: thresholds (other ``ClassParams`` fields kept), calibration, gate curve.

    A class the bundle had closed stays closed (and unpredictable); the re-tuning's stress check may close more.
    """
    classes = tuple(
        dataclasses.replace(
            old,
            prob_threshold=new.prob_threshold,
            pixel_threshold=new.pixel_threshold,
            min_area=new.min_area,
            predictable=new.predictable and not old.closed,
            closed=old.closed or new.closed,
        )
        for old, new in zip(manifest.classes, tuned.params, strict=True)
    )
    provenance = {**manifest.provenance, "retuned": note}
    return dataclasses.replace(
        manifest, classes=classes, calibration=tuned.calibration, gate_curve=tuned.curve, provenance=provenance
    )


def retune_bundle(
    bundle_path: str | Path,
    images_dir: Path,
    annotations: Annotations,
    config: TuneConfig,
    out: str | Path,
    *,
    description: str = "",
    device: str = "cpu",
    show_progress: bool = True,
    stress: tuple[Path, Annotations, str] | None = None,
    stress_margin: float = 0.0,
) -> tuple[Path, CascadeTuning]:
    """Re-tune a bundle's gate on annotated images and write the result as a new bundle.

    Args:
        bundle_path: the bundle (file or folder).
        images_dir: folder of the tuning images.
        annotations: their truth (the bundle's classes).
        config: grids and the gate's economics.
        out: the new bundle (``*.safetensors`` or a folder).
        description: what the tuning images are (recorded in the provenance).
        device: torch device.
        show_progress: tqdm bar.
        stress: ``(images_dir, annotations, description)`` of stress images: close the classes the re-tuned
            cascade scores below all-empty on (``training.tune_thresholds.stress_check``); None: no check.
        stress_margin: close a class more than this below all-empty on the stress images.
    """
    bundle = load_bundle(bundle_path, device=device)
    inputs = tuning_inputs(bundle, images_dir, annotations, config, device=device, show_progress=show_progress)
    tuned = tune_cascade(inputs.probabilities, inputs.tables, inputs.truth_empty, bundle.manifest.class_ids, config)
    check = None
    if stress is not None:
        stress_images, stress_annotations, source = stress
        predictor = _raw_predictor(bundle, stress_annotations, device)
        tuned, check = stress_check(predictor, tuned, stress_images, stress_annotations, source, config,
                                    stress_margin, show_progress)  # fmt: skip
    note = {
        "data": description or str(images_dir),
        "images": len(annotations.image_ids),
        "cost_weight": config.cost_weight,
        "max_segmenter_runs_per_image": config.max_segmenter_runs_per_image,
        "min_recall": config.min_recall,
        "calibrate": config.calibrate,
        "from": str(bundle_path),
        "stress": check.to_dict() if check is not None else None,
    }
    manifest = retuned_manifest(bundle.manifest, tuned, note)
    path = save_bundle(out, manifest, bundle.classifier, bundle.segmenters, dtype=stored_precision(bundle_path))
    logger.info(
        "re-tuned %s on %d images: %.3f segmenter runs/image, Dice %.4f (Dice-only %.3f runs, %.4f) -> %s",
        bundle_path, len(annotations.image_ids), tuned.curve.chosen.runs_per_image, tuned.curve.chosen.dice,
        tuned.curve.dice_only.runs_per_image, tuned.curve.dice_only.dice, path,
    )  # fmt: skip
    return path, tuned


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.retune``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="bundle file/folder or a shipped bundle's name")
    parser.add_argument("--data", type=Path, required=True, help="labelled images the bundle did not train on")
    parser.add_argument("--out", type=Path, required=True, help="the re-tuned bundle to write")
    parser.add_argument("--split", default=None, help="use only this split of --data (e.g. VOC val)")
    parser.add_argument("--cost-weight", type=float, default=0.0, help="lambda of Dice - lambda * runs per image")
    parser.add_argument("--max-runs", type=float, default=None, help="budget of segmenter runs per image")
    parser.add_argument("--min-recall", type=float, default=0.0, help="smallest gate recall per class")
    parser.add_argument("--no-calibrate", action="store_true", help="keep the raw probabilities")
    parser.add_argument("--tolerance", type=float, default=0.0, help="tune.tolerance")
    parser.add_argument(
        "--stress", type=Path, default=None,
        help="labelled stress images of another look (e.g. cascade synth --profile shifted --seed 7): close every "
        "class the re-tuned cascade scores below all-empty on",
    )  # fmt: skip
    parser.add_argument("--stress-margin", type=float, default=0.0, help="close a class more than this below")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from cascade.bundle import read_manifest
    from cascade.datasource import open_labelled
    from cascade.embedded import resolve_bundle

    bundle = resolve_bundle(args.bundle)
    manifest = read_manifest(bundle)
    data = open_labelled(args.data, classes=manifest.class_set, split=args.split)
    config = dataclasses.replace(
        recorded_tune_config(manifest), cost_weight=args.cost_weight, max_segmenter_runs_per_image=args.max_runs,
        min_recall=args.min_recall, calibrate=not args.no_calibrate, tolerance=args.tolerance,
    )  # fmt: skip
    stress = None
    if args.stress is not None:
        other = open_labelled(args.stress, classes=manifest.class_set)
        stress = (other.images_dir, other.annotations, f"{other.kind} {other.root}, {len(other.image_ids)} images")
    retune_bundle(
        bundle, data.images_dir, data.annotations, config, args.out, description=f"{data.kind} {data.root}",
        stress=stress, stress_margin=args.stress_margin,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
