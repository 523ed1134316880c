"""The embedded demo bundle's promise on synthetic data, checked the way a user would: held-out sets of the
``shifted`` profile (every look setting outside the training ranges; never trained on) over three seeds, scored
through ``cascade predict`` and the Kaggle metric, next to the non-learned rules baseline of
``bench/bench_quality.py`` tuned on training images (slow: a few minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.bench_quality import RulesBaseline, fit_rules
from cascade.cli.main import app
from cascade.embedded import embedded_bundle_exists
from cascade.formats import read_annotations
from cascade.imageio import read_image
from cascade.metric import score_annotations
from cascade.synth import generate_dataset, synth_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not embedded_bundle_exists(), reason="no embedded demo bundle in this checkout"),
]

SEEDS, HELD_OUT_N, FIT_N, MARGIN = (1, 2, 3), 60, 60, 0.01


def _truth(root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    images = root / "train_images"
    annotations = read_annotations(root / "train.csv", images_dir=images)
    grays = [read_image(images / i)[..., 0] for i in annotations.image_ids]
    truth = np.stack([annotations.masks(i, g.shape) for i, g in zip(annotations.image_ids, grays, strict=True)])
    return grays, truth


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> RulesBaseline:
    """The rules baseline tuned on training images (the demo set's seed 0 and profile)."""
    root = tmp_path_factory.mktemp("fit")
    generate_dataset(root, FIT_N, 0, config=synth_config("train"), workers=2)
    return fit_rules(*_truth(root))


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def _score(root: Path, tmp_path: Path, mode: str) -> float:
    out = tmp_path / f"{root.name}-{mode}.csv"
    result = CliRunner().invoke(
        app,
        ["predict", str(root / "train_images"), "--out", str(out), "--runtime", "torch", "--mode", mode],
    )
    assert result.exit_code == 0, result.output
    truth = read_annotations(root / "train.csv", images_dir=root / "train_images")
    return score_annotations(truth, read_annotations(out)).mean


def test_embedded_bundle_on_shifted_data_against_the_rules(
    rules: RulesBaseline, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    scores: dict[str, list[float]] = {"cascade": [], "segment_all": [], "rules": [], "empty": []}
    for seed in SEEDS:
        root = tmp_path_factory.mktemp(f"shifted{seed}")
        generate_dataset(root, HELD_OUT_N, seed, config=synth_config("shifted"), workers=2)
        scores["cascade"].append(_score(root, tmp_path, "cascade"))
        scores["segment_all"].append(_score(root, tmp_path, "segment_all"))
        grays, truth = _truth(root)
        predicted = [rules.predict(g) for g in grays]
        scores["rules"].append(float(np.mean([[_dice(p, t) for p, t in zip(pr, tr, strict=True)]
                                              for pr, tr in zip(predicted, truth, strict=True)])))  # fmt: skip
        scores["empty"].append(float(np.mean(~truth.reshape(*truth.shape[:2], -1).any(axis=2))))
    mean = {name: float(np.mean(values)) for name, values in scores.items()}
    assert mean["cascade"] >= mean["segment_all"], mean
    assert mean["cascade"] >= mean["rules"] + MARGIN, mean
    assert mean["cascade"] >= mean["empty"] + MARGIN, mean  # the rules score below all-empty on this data
