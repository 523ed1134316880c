"""Tests for training/retune.py: a bundle's gate re-tuned on labelled images, weights untouched."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cascade.bundle import load_bundle, read_manifest, weights_summary
from cascade.calibration import calibrate
from cascade.formats import Annotations
from training.config import TuneConfig
from training.retune import recorded_tune_config, retune_bundle

CONFIG = TuneConfig(prob_thresholds=(0.2, 0.4, 0.6), pixel_thresholds=(0.4, 0.6), min_areas=(0, 50), batch_size=8)


@pytest.mark.parametrize("budget", [None, 1.0])
def test_retune_writes_the_tuned_gate_and_keeps_the_weights(
    tiny_bundle_path: Path, synth_dir: Path, synth_annotations: Annotations, tmp_path: Path, budget: float | None
) -> None:
    config = dataclasses.replace(CONFIG, max_segmenter_runs_per_image=budget, min_positives=1)
    out, tuned = retune_bundle(
        tiny_bundle_path, synth_dir / "train_images", synth_annotations, config, tmp_path / "re.cascade.safetensors",
        description="synthetic test set", show_progress=False,
    )  # fmt: skip
    manifest = read_manifest(out)
    assert manifest.gate_curve == tuned.curve and manifest.calibration == tuned.calibration
    assert [p.prob_threshold for p in manifest.classes] == list(tuned.curve.chosen.prob_thresholds)
    assert manifest.provenance["retuned"]["images"] == 24
    assert manifest.provenance["retuned"]["data"] == "synthetic test set"
    if budget is not None:
        assert tuned.curve.chosen.runs_per_image <= budget
    before, after = load_bundle(tiny_bundle_path), load_bundle(out)
    for name, tensor in before.classifier.state_dict().items():
        assert torch.equal(tensor, after.classifier.state_dict()[name])
    assert weights_summary(out) == weights_summary(tiny_bundle_path)  # same precision stored


def test_retuned_bundle_runs_and_returns_calibrated_probabilities(
    tiny_bundle_path: Path, synth_dir: Path, synth_annotations: Annotations, tmp_path: Path
) -> None:
    from cascade.imageio import read_image
    from cascade.predictor import CascadePredictor

    out, tuned = retune_bundle(
        tiny_bundle_path, synth_dir / "train_images", synth_annotations, CONFIG, tmp_path / "re",
        show_progress=False,
    )  # fmt: skip
    images = [read_image(synth_dir / "train_images" / i) for i in synth_annotations.image_ids[:3]]
    plain = CascadePredictor.from_bundle(tiny_bundle_path, device="cpu", runtime="torch").infer(images)
    raw = CascadePredictor.from_bundle(out, device="cpu", runtime="torch").infer(images)
    np.testing.assert_allclose(raw.probabilities, calibrate(plain.probabilities, tuned.calibration), atol=1e-6)


def test_recorded_tune_config_reads_the_bundles_grids(tiny_manifest) -> None:
    assert recorded_tune_config(tiny_manifest) == TuneConfig()
    recorded = dataclasses.replace(
        tiny_manifest, provenance={"config": {"tune": {"min_areas": [0, 7], "batch_size": 2, "unknown": 1}}}
    )
    assert recorded_tune_config(recorded).min_areas == (0, 7)


def test_retune_keeps_half_precision_next_to_integer_tensors(
    tiny_bundle_path: Path, synth_dir: Path, synth_annotations: Annotations, tmp_path: Path
) -> None:
    """A float16 bundle whose networks also hold integer tensors (BatchNorm's counters) stays float16."""
    from cascade.bundle import save_bundle

    loaded = load_bundle(tiny_bundle_path)
    half = save_bundle(tmp_path / "half.cascade.safetensors", loaded.manifest, loaded.classifier, loaded.segmenters,
                       dtype=torch.float16)  # fmt: skip
    dtypes = {d for entry in weights_summary(half).values() for d in entry["dtypes"]}
    assert "F16" in dtypes and "I64" in dtypes  # the case that used to be written back as float32
    out, _ = retune_bundle(
        half, synth_dir / "train_images", synth_annotations, dataclasses.replace(CONFIG, min_positives=1),
        tmp_path / "re.cascade.safetensors", description="synthetic test set", show_progress=False,
    )  # fmt: skip
    assert weights_summary(out) == weights_summary(half)
    assert out.stat().st_size < 1.1 * half.stat().st_size
