"""Stage ``package``: the trained networks, the tuned thresholds and their provenance as one bundle
(``cascade.bundle.save_bundle``), plus installing it as the package's embedded demo bundle.

Provenance records the dataset (folder, image count, class counts), the validation metrics of the tuning
stage (``evaluate`` adds the held-out ones), the code version, the date and the whole configuration.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cascade import __version__
from cascade.bundle import LoadedBundle, save_bundle
from cascade.calibration import Calibration
from cascade.classes import SEVERSTAL, ClassSet
from cascade.constants import CLASS_IDS
from cascade.gate_curve import GateCurve
from cascade.manifest import BundleManifest, ClassParams, InputPolicy, ModelSpec, Normalization
from cascade.ood import OodReference, fit_reference_on_images
from models.ensemble import EnsembleMean
from training.config import PipelineConfig
from training.ensemble import classifier_spec, ensemble_folds, load_classifier
from training.loop import load_checkpoint
from training.paths import RunPaths
from training.recipe import config_to_dict
from training.workspace import Workspace, build_classifier, build_segmenter

__all__ = [
    "EMBEDDED_MAX_BYTES",
    "build_manifest",
    "bundle_path",
    "in_memory_bundle",
    "install_embedded",
    "load_trained",
    "make_provenance",
    "ood_reference",
    "read_class_params",
    "read_gate",
    "run",
    "write_bundle",
]

logger = logging.getLogger(__name__)

EMBEDDED_MAX_BYTES: int = 20 * 1024 * 1024
"""Largest embedded demo bundle accepted (the package ships it)."""


def bundle_path(config: PipelineConfig, run_dir: str | Path) -> Path:
    """Where the run's bundle is written."""
    return RunPaths(Path(run_dir)).bundle(config.package.file_name)


def build_manifest(
    config: PipelineConfig,
    class_set: ClassSet = SEVERSTAL,
    classes: Sequence[ClassParams] | None = None,
    provenance: Mapping[str, Any] | None = None,
    image_size: tuple[int, int] | None = None,
    calibration: Sequence[Calibration] = (),
    gate_curve: GateCurve | None = None,
    ood: OodReference | None = None,
) -> BundleManifest:
    """The bundle manifest of a configuration for ``class_set`` (default ``ClassParams`` when ``classes`` is None,
    no calibration, gate curve or out-of-distribution reference unless given)."""
    inp = config.input
    seg = config.segmenter
    return BundleManifest(
        class_ids=class_set.ids,
        class_names=class_set.names,
        class_colours=class_set.colours,
        image_size=image_size,
        classifier=classifier_spec(config),
        segmenters={c: ModelSpec(arch=seg.arch, name=seg.encoder, kwargs=seg.kwargs_for(c)) for c in class_set.ids},
        normalization=Normalization(mean=inp.mean, std=inp.std),
        input_policy=InputPolicy(mode=inp.mode, stride=inp.stride, scale=inp.scale, scale_x=inp.scale_x),
        classes=tuple(classes) if classes is not None else tuple(ClassParams() for _ in class_set.ids),
        tta=config.package.tta,
        provenance=dict(provenance or {}),
        calibration=tuple(calibration),
        gate_curve=gate_curve,
        ood=ood,
    )


def load_trained(ws: Workspace) -> tuple[nn.Module, dict[int, nn.Module]]:
    """The classifier and the per-class segmenters from the run folder (eval mode, CPU).

    The classifier is ``classifier/final``'s, or with ``classifier.ensemble`` an ``EnsembleMean`` of the listed
    folds' classifiers (``classifier/fold<k>``).

    Raises:
        FileNotFoundError: a stage's weights are missing (the message names the stage to run).
    """
    run_dir = ws.run_dir
    n_classes = len(ws.class_ids)
    folds = ensemble_folds(ws.config)
    if folds:
        members = [load_classifier(build_classifier(ws.config, n_classes), run_dir, f"fold{k}") for k in folds]
        classifier: nn.Module = EnsembleMean(members, classifier_spec(ws.config).average)
    else:
        classifier = load_classifier(build_classifier(ws.config, n_classes), run_dir, "final")
    segmenters: dict[int, nn.Module] = {}
    for class_id in ws.class_ids:
        path = ws.paths.segmenter_weights(class_id)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found (run the 'segmenter' stage with class {class_id} in segmenter.class_ids)"
            )
        segmenters[class_id] = build_segmenter(ws.config, class_id)
        segmenters[class_id].load_state_dict(load_checkpoint(path)["model"])
    return classifier.eval(), {cid: m.eval() for cid, m in segmenters.items()}


def read_class_params(
    run_dir: str | Path, class_ids: Sequence[int] = CLASS_IDS
) -> tuple[tuple[ClassParams, ...], dict[str, Any]]:
    """Tuned ``ClassParams`` and validation metrics from ``thresholds.json``.

    Raises:
        FileNotFoundError: the tuning stage has not run.
    """
    path = RunPaths(Path(run_dir)).thresholds_json
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (run the 'tune' stage first)")
    record = json.loads(path.read_text())
    missing = [c for c in class_ids if str(c) not in record["classes"]]
    if missing:
        raise ValueError(f"{path} has no thresholds for classes {missing}; rerun the 'tune' stage")
    classes = tuple(ClassParams(**record["classes"][str(c)]["params"]) for c in class_ids)
    return classes, record["validation"]


def read_gate(
    run_dir: str | Path, class_ids: Sequence[int] = CLASS_IDS
) -> tuple[tuple[Calibration, ...], GateCurve | None]:
    """The calibration (``()`` when none) and the gate curve (None when none) from ``thresholds.json``.

    Files written before either existed give ``((), None)``.
    """
    record = json.loads(RunPaths(Path(run_dir)).thresholds_json.read_text())
    calibration: tuple[Calibration, ...] = ()
    if record.get("calibration"):
        per_class = record["calibration"]["classes"]
        calibration = tuple(Calibration(per_class[str(c)]["temperature"], per_class[str(c)]["bias"]) for c in class_ids)
    curve = record.get("gate_curve")
    return calibration, GateCurve.from_dict(curve) if curve else None


def ood_reference(ws: Workspace) -> OodReference:
    """The out-of-distribution reference of the images the shipped networks trained on (the tune fold's training
    part), fitted once and kept in ``RUN_DIR/ood_reference.json``."""
    path = ws.paths.ood_reference_json
    if path.is_file():
        return OodReference.from_dict(json.loads(path.read_text()))
    train_ids, _ = ws.tune_split
    reference = fit_reference_on_images(ws.store.images_dir, train_ids, show_progress=ws.ctx.is_main)
    path.write_text(json.dumps(reference.to_dict(), indent=1))
    logger.info(
        "out-of-distribution reference fitted on %d images: threshold %.3f", reference.images, reference.threshold
    )
    return reference


def in_memory_bundle(ws: Workspace, classes: Sequence[ClassParams] | None = None) -> LoadedBundle:
    """A ``LoadedBundle`` of the run's networks without writing a file (for tuning)."""
    classifier, segmenters = load_trained(ws)
    manifest = build_manifest(ws.config, ws.classes, classes, image_size=ws.image_size)
    return LoadedBundle(manifest, classifier, segmenters, ws.run_dir)


def _dataset_record(ws: Workspace) -> dict[str, Any]:
    data = ws.config.data
    return {
        "dir": str(ws.data_dir),
        "kind": ws.data.kind,
        "annotations": data.annotations if ws.data.kind == "kaggle-csv" else None,
        "images": len(ws.image_ids),
        "classes": ws.classes.to_dict()["classes"],
        "class_counts": list(ws.annotations.class_counts()),
        "image_size": list(ws.image_size) if ws.image_size else None,
        "train_split": data.train_split,
        "val_split": data.val_split,
        "split_sizes": {name: len(ids) for name, ids in ws.data.splits.items()},
        "n_folds": data.n_folds,
        "tune_fold": data.tune_fold,
    }


def _git_commit() -> str | None:
    """Short git commit of the source tree, or None when unavailable."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def make_provenance(
    *,
    dataset: Any = None,
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Provenance dict for a new bundle: dataset, metrics, code_version (+ git commit), created, config.

    Args:
        dataset: description of the training data (path, name, sizes...).
        metrics: validation metrics, e.g. ``{"dice": 0.91}``.
        config: the training configuration.
        **extra: further JSON-serializable entries.
    """

    commit = _git_commit()
    version = __version__ + (f"+g{commit}" if commit else "")
    return {
        "dataset": dataset,
        "metrics": dict(metrics or {}),
        "code_version": version,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": dict(config or {}),
        **extra,
    }


def write_bundle(ws: Workspace, metrics: Mapping[str, Any], path: Path | None = None) -> Path:
    """Save the run's bundle with the tuned thresholds and ``metrics`` in its provenance."""
    classes, _ = read_class_params(ws.run_dir, ws.class_ids)
    calibration, curve = read_gate(ws.run_dir, ws.class_ids)
    classifier, segmenters = load_trained(ws)
    provenance = make_provenance(
        dataset=_dataset_record(ws), metrics=metrics, config=config_to_dict(ws.config), recipe=ws.config.name
    )
    manifest = build_manifest(
        ws.config, ws.classes, classes, provenance, ws.image_size, calibration, curve, ood_reference(ws)
    )
    path = path or bundle_path(ws.config, ws.run_dir)
    save_bundle(path, manifest, classifier, segmenters, dtype=torch.float16 if ws.config.package.half else None)
    logger.info("bundle written to %s (%.1f MB)", path, path.stat().st_size / 2**20)
    return path


def run(ws: Workspace, resume: bool = False) -> Path:
    """Stage entry point: write the bundle with the validation metrics of the tuning stage."""
    del resume
    _, validation = read_class_params(ws.run_dir, ws.class_ids)
    return write_bundle(ws, {"validation": validation})


def install_embedded(path: str | Path, name: str = "demo") -> Path:
    """Copy a bundle file to ``cascade/data/<name>.cascade.safetensors`` (a bundle the package ships by name).

    Raises:
        ValueError: the bundle is not a single ``*.safetensors`` file, or is larger than ``EMBEDDED_MAX_BYTES``.
    """
    import cascade
    from cascade.bundle import read_manifest

    path = Path(path)
    if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
        raise ValueError(f"embedded bundle name {name!r} must be letters, digits, '-' or '_'")
    if path.suffix != ".safetensors" or not path.is_file():
        raise ValueError(f"only a single-file bundle (*.safetensors) can be embedded, got {path}")
    size = path.stat().st_size
    if size > EMBEDDED_MAX_BYTES:
        raise ValueError(f"bundle {path} is {size / 2**20:.1f} MB; the embedded bundle must be <= 20 MB")
    read_manifest(path)
    target = Path(cascade.__file__).resolve().parent / "data" / f"{name}.cascade.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(path, tmp)
    tmp.replace(target)
    logger.info("installed %s as the embedded bundle %r: %s", path, name, target)
    return target
