"""Fold ensembles: the K fold classifiers of a run as one averaging network (``models.ensemble.EnsembleMean``).

The recipe switch ``classifier.ensemble: {folds: all | [0, 2], average: logits | probabilities}`` makes the
package stage ship them instead of ``classifier/final``; ``pack_ensemble`` does the same to a bundle
already written from a run (keeping its thresholds), which is how ``bench/bench_ensemble.py`` compares
a single classifier with the ensemble without retraining.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from cascade.bundle import LoadedBundle
from cascade.manifest import ModelSpec
from models.ensemble import EnsembleMean
from training.config import PipelineConfig
from training.loop import load_checkpoint
from training.paths import CLASSIFIER_FILE, RunPaths

__all__ = ["classifier_spec", "ensemble_folds", "load_classifier", "pack_ensemble"]


def ensemble_folds(config: PipelineConfig) -> tuple[int, ...]:
    """Fold indices of the classifiers the bundle averages (``classifier.ensemble``); ``()`` ships ``final`` alone."""
    ensemble = config.classifier.ensemble
    if ensemble is None:
        return ()
    return tuple(range(config.data.n_folds)) if ensemble.folds == "all" else tuple(ensemble.folds)


def classifier_spec(config: PipelineConfig) -> ModelSpec:
    """The bundle's classifier spec: one network, or ``members`` = the number of ensembled folds."""
    clf = config.classifier
    spec = ModelSpec(arch="timm", name=clf.backbone, kwargs=clf.kwargs)
    folds = ensemble_folds(config)
    if clf.ensemble is None or not folds:
        return spec
    return dataclasses.replace(spec, members=len(folds), average=clf.ensemble.average)


def load_classifier(network: nn.Module, run_dir: str | Path, folder: str) -> nn.Module:
    """``network`` with the weights of ``RUN_DIR/classifier/<folder>/classifier.pt`` (``final`` or ``fold<k>``).

    Raises:
        FileNotFoundError: the classifier stage has not written that file.
    """
    path = RunPaths(Path(run_dir)).classifier_dir / folder / CLASSIFIER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (run the 'classifier' stage first)")
    network.load_state_dict(load_checkpoint(path)["model"])
    return network.eval()


def pack_ensemble(bundle: LoadedBundle, run_dir: str | Path, folds: Sequence[int], average: str) -> LoadedBundle:
    """``bundle`` with its classifier replaced by the average of the run's fold classifiers.

    Everything else (segmenters, thresholds, calibration) is kept; the provenance gains an ``ensemble`` entry.

    Args:
        bundle: a bundle written from the run in ``run_dir`` (single classifier or already an ensemble).
        run_dir: the training run folder holding ``classifier/fold<k>/classifier.pt``.
        folds: two or more fold indices.
        average: ``"logits"`` or ``"probabilities"``.

    Raises:
        ValueError: fewer than two or repeated folds, or an unknown ``average``.
        FileNotFoundError: a fold's classifier is missing.
    """
    folds = tuple(folds)
    if len(folds) < 2 or len(set(folds)) != len(folds):
        raise ValueError(f"folds must be two or more distinct fold indices, got {list(folds)}")
    current = bundle.classifier
    template = current.members[0] if isinstance(current, EnsembleMean) else current
    members = [load_classifier(copy.deepcopy(template), run_dir, f"fold{k}") for k in folds]
    classifier = EnsembleMean(members, average).eval()
    manifest = bundle.manifest
    spec = dataclasses.replace(manifest.classifier, members=len(folds), average=average)
    provenance = dict(manifest.provenance) | {"ensemble": {"folds": list(folds), "average": average}}
    manifest = dataclasses.replace(manifest, classifier=spec, provenance=provenance)
    return LoadedBundle(manifest, classifier, dict(bundle.segmenters), bundle.path)
