"""Tests for training/ensemble.py: the ``classifier.ensemble`` recipe switch, the package stage and pack_ensemble."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cascade.bundle import load_bundle
from models.ensemble import EnsembleMean
from tests.fixtures.training import tiny_config, tiny_recipe, write_recipe
from training.distributed import DistContext
from training.ensemble import classifier_spec, ensemble_folds, pack_ensemble
from training.loop import load_checkpoint
from training.package import write_bundle
from training.pipeline import PipelineResult
from training.recipe import load_config
from training.workspace import open_workspace

ENSEMBLE = "classifier.ensemble"


@pytest.mark.parametrize(
    ("ensemble", "folds", "members", "average"),
    [
        (None, (), 1, "logits"),
        ({"folds": "all"}, (0, 1, 2), 3, "logits"),
        ({"folds": [0, 2], "average": "probabilities"}, (0, 2), 2, "probabilities"),
    ],
)
def test_recipe_switch_picks_folds_and_average(tmp_path: Path, ensemble, folds, members, average) -> None:
    overrides = {"data.n_folds": 3} | ({ENSEMBLE: ensemble} if ensemble is not None else {})
    config = load_config(write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tmp_path, **overrides)))
    assert ensemble_folds(config) == folds
    spec = classifier_spec(config)
    assert (spec.members, spec.average) == (members, average)


@pytest.mark.parametrize(
    ("ensemble", "message"),
    [
        ({"folds": [0]}, r"two or more distinct fold indices in \[0, 2\]"),
        ({"folds": [0, 0]}, "two or more distinct fold indices"),
        ({"folds": [0, 3]}, r"in \[0, 2\] \(data.n_folds=3\)"),
        ({"folds": "some"}, r"classifier.ensemble.folds='some' is not valid; allowed: \['all'\]"),
        ({"average": "median"}, r"classifier.ensemble.average='median' is not valid"),
        ({"members": 3}, r"unknown key\(s\) \['members'\]"),
    ],
)
def test_bad_ensemble_recipes_raise(tmp_path: Path, ensemble, message) -> None:
    recipe = tiny_recipe(tmp_path, tmp_path, **{"data.n_folds": 3, ENSEMBLE: ensemble})
    with pytest.raises(ValueError, match=message):
        load_config(write_recipe(tmp_path / "r.yaml", recipe))


def _fold_state(run_dir: Path, fold: int) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "classifier" / f"fold{fold}" / "classifier.pt")["model"]


def test_package_stage_ships_the_fold_ensemble(tiny_run: PipelineResult, synth_dir: Path, tmp_path: Path) -> None:
    run_dir = tiny_run.run_dir
    config = tiny_config(synth_dir, run_dir, **{ENSEMBLE: {"folds": "all", "average": "probabilities"}})
    ws = open_workspace(config, run_dir, DistContext(), write_folds=False)
    path = write_bundle(ws, {"validation": {}}, path=tmp_path / "ensemble.cascade.safetensors")
    bundle = load_bundle(path)
    assert (bundle.manifest.classifier.members, bundle.manifest.classifier.average) == (2, "probabilities")
    assert isinstance(bundle.classifier, EnsembleMean)
    for k, member in enumerate(bundle.classifier.members):  # fold k's weights (stored in fp16: package.half)
        for key, value in _fold_state(run_dir, k).items():
            if value.is_floating_point():
                torch.testing.assert_close(member.state_dict()[key], value.half().float())
    single = load_bundle(tiny_run.bundle)
    assert single.manifest.classifier.members == 1 and not isinstance(single.classifier, EnsembleMean)
    assert bundle.manifest.classes == single.manifest.classes  # same tuned thresholds


def test_pack_ensemble_matches_the_package_stage(tiny_run: PipelineResult, synth_dir: Path, tmp_path: Path) -> None:
    run_dir = tiny_run.run_dir
    packed = pack_ensemble(load_bundle(tiny_run.bundle), run_dir, [0, 1], "logits")
    assert packed.manifest.provenance["ensemble"] == {"folds": [0, 1], "average": "logits"}
    assert packed.segmenters.keys() == load_bundle(tiny_run.bundle).segmenters.keys()
    x = torch.randn(2, 3, 64, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        z = torch.stack([m(x) for m in packed.classifier.members])
        torch.testing.assert_close(packed.classifier(x), z.mean(0))
    config = tiny_config(synth_dir, run_dir, **{ENSEMBLE: {"folds": [0, 1]}})
    ws = open_workspace(config, run_dir, DistContext(), write_folds=False)
    shipped = load_bundle(write_bundle(ws, {"validation": {}}, path=tmp_path / "e.cascade.safetensors"))
    with torch.inference_mode():  # the package stage stores fp16 (package.half): equal up to that rounding
        torch.testing.assert_close(shipped.classifier(x), packed.classifier(x), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(("folds", "message"), [([0], "two or more distinct"), ([0, 0], "two or more distinct")])
def test_pack_ensemble_rejects_bad_folds(tiny_run: PipelineResult, folds, message) -> None:
    with pytest.raises(ValueError, match=message):
        pack_ensemble(load_bundle(tiny_run.bundle), tiny_run.run_dir, folds, "logits")


def test_pack_ensemble_names_a_missing_fold(tiny_run: PipelineResult) -> None:
    with pytest.raises(FileNotFoundError, match=r"fold7/classifier.pt not found \(run the 'classifier' stage"):
        pack_ensemble(load_bundle(tiny_run.bundle), tiny_run.run_dir, [0, 7], "logits")
