"""Tests for the stress check after tuning (``tune.stress``): per-class Dice of the tuned cascade on stress
images, closing the classes below all-empty, and the tune stage writing, packaging and honouring the closure.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cascade.bundle import load_bundle, read_manifest
from cascade.classes import SEVERSTAL
from cascade.datasource import open_labelled
from cascade.formats import Annotations
from cascade.manifest import ClassParams
from tests.fixtures.training import tiny_config
from training.config import TuneConfig
from training.evaluate import evaluate_bundle
from training.pipeline import PipelineResult, run_pipeline
from training.retune import retune_bundle
from training.stage_config import StressConfig
from training.tune_thresholds import close_on_stress, stress_dice, tune_cascade

PIXELS, AREAS = (0.4, 0.6), (0, 50)


def test_stress_dice_gates_and_scores_shut_pairs_as_all_empty() -> None:
    # 4 images, 2 classes; class 1 positive on images 0-1, class 2 on none
    empty = np.array([[False, True], [False, True], [True, True], [True, True]])
    tables = np.zeros((4, 2, 2, 2))
    tables[:, 0, 1, 0] = [0.8, 0.6, 0.0, 1.0]  # class 1 at pixel 0.6, min-area 0
    tables[:, 1, 0, 1] = [0.0, 1.0, 0.0, 1.0]  # class 2 at pixel 0.4, min-area 50: false alarms on 0 and 2
    probabilities = np.array([[0.9, 0.9], [0.2, 0.1], [0.9, 0.9], [0.9, 0.1]])
    params = (ClassParams(0.5, 0.6, 0), ClassParams(0.5, 0.4, 50))
    cascade, all_empty = stress_dice(probabilities, tables, empty, params, PIXELS, AREAS)
    # class 1: images 0, 2, 3 open (0.8, 0.0, 1.0), image 1 shut on a positive (0); class 2: 0, 2 open (0, 0)
    np.testing.assert_allclose(cascade, [(0.8 + 0 + 0.0 + 1.0) / 4, (0.0 + 1 + 0.0 + 1) / 4])
    np.testing.assert_allclose(all_empty, [0.5, 1.0])
    closed = (params[0], ClassParams(0.5, 0.4, 50, closed=True))
    np.testing.assert_allclose(stress_dice(probabilities, tables, empty, closed, PIXELS, AREAS)[0][1], 1.0)


def _tuned():
    rng = np.random.default_rng(0)
    empty = rng.random((60, 3)) < 0.6
    tables = np.where(~empty[:, :, None, None], 0.7, 0.0) * np.ones((60, 3, 2, 2))
    probabilities = np.where(empty, 0.2, 0.8) + rng.normal(0, 0.05, (60, 3))
    config = TuneConfig(prob_thresholds=(0.5,), pixel_thresholds=PIXELS, min_areas=AREAS, calibrate=False)
    return tune_cascade(probabilities, tables, empty, (1, 2, 3), config)


@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_close_on_stress_closes_the_classes_below_all_empty_by_more_than_margin(margin: float) -> None:
    tuned = _tuned()
    cascade, empty = np.array([0.90, 0.86, 0.70]), np.array([0.90, 0.90, 0.90])
    closed_tuning, closed = close_on_stress(tuned, cascade, empty, (1, 2, 3), margin)
    want = (2, 3) if margin == 0.0 else (3,)
    assert closed == want
    for k, class_id in enumerate((1, 2, 3)):
        params, note = closed_tuning.params[k], closed_tuning.curve.classes[k].note
        assert params.closed is (class_id in want) and params.predictable is (class_id not in want)
        assert ("stress images" in note) is (class_id in want)
        # everything but the closure is the tuning's own
        assert (params.prob_threshold, params.pixel_threshold, params.min_area) == (
            tuned.params[k].prob_threshold, tuned.params[k].pixel_threshold, tuned.params[k].min_area,
        )  # fmt: skip


def test_stress_config_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="unknown synth profile 'bright'"):
        StressConfig(profile="bright")
    with pytest.raises(ValueError, match="n must be >= 1"):
        StressConfig(n=0)
    with pytest.raises(ValueError, match="margin"):
        StressConfig(margin=1.5)


def _clean_copy(synth_dir: Path, out: Path) -> Path:
    """The images of ``synth_dir`` with every mask removed: any prediction there is a false alarm."""
    shutil.copytree(synth_dir / "train_images", out / "train_images")
    (out / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")
    return out


def test_tune_stage_closes_the_classes_that_flood_the_stress_images(
    tiny_run: PipelineResult, synth_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir, ignore=shutil.ignore_patterns("heldout-*", "gallery"))
    stress = _clean_copy(synth_dir, tmp_path / "stress")
    # every gate open (0.0) and a min-area of 0: the random tiny segmenters mark something on the clean images
    config = tiny_config(synth_dir, run_dir, **{"tune.prob_thresholds": [0.0], "tune.min_areas": [0],
                                                "tune.stress": {"data": str(stress)}})  # fmt: skip
    result = run_pipeline(config, run_dir, stages=["tune", "package"])
    record = json.loads((run_dir / "thresholds.json").read_text())["stress"]
    assert record["images"] == 24 and record["empty"] == [1.0] * 4
    want = [c for c, d in zip((1, 2, 3, 4), record["cascade"], strict=True) if d < 1.0]
    assert want and record["closed"] == want
    manifest = load_bundle(result.bundle).manifest
    assert [c for c, p in zip(manifest.class_ids, manifest.classes, strict=True) if p.closed] == want
    # the packaged bundle on the stress images: closed classes answer "absent" everywhere, the others score
    # what the check measured
    data = open_labelled(stress, classes=SEVERSTAL)
    scored = evaluate_bundle(result.bundle, data.images_dir, data.annotations, grid=((0.0,), (0.5,), (0,)),
                             show_progress=False)  # fmt: skip
    gate = scored.gate_metrics()["per_class"]
    for k, class_id in enumerate(manifest.class_ids):
        expected = 1.0 if class_id in want else record["cascade"][k]
        assert scored.cascade.per_class[k] == pytest.approx(expected, abs=1e-6)
        # the evaluation's gate statistics count what the predictor ran: no segmenter runs for a closed class
        assert gate[str(class_id)]["pass_rate"] == (0.0 if class_id in want else 1.0)


def test_retune_with_stress_images_closes_and_a_later_retune_keeps_them_closed(
    tiny_bundle_path: Path, synth_dir: Path, synth_annotations: Annotations, tmp_path: Path
) -> None:
    stress = open_labelled(_clean_copy(synth_dir, tmp_path / "stress"), classes=SEVERSTAL)
    config = TuneConfig(prob_thresholds=(0.0,), pixel_thresholds=(0.4,), min_areas=(0,), batch_size=8)
    images = synth_dir / "train_images"
    out, _ = retune_bundle(
        tiny_bundle_path, images, synth_annotations, config, tmp_path / "a.cascade.safetensors", show_progress=False,
        stress=(stress.images_dir, stress.annotations, "clean copies"),
    )  # fmt: skip
    record = read_manifest(out).provenance["retuned"]["stress"]
    closed = [c for c, d in zip((1, 2, 3, 4), record["cascade"], strict=True) if d < 1.0]
    assert closed and record["closed"] == closed and record["source"] == "clean copies"
    assert [c for c, p in zip((1, 2, 3, 4), read_manifest(out).classes, strict=True) if p.closed] == closed
    # re-tuned again without stress images: the closed gates stay closed
    again, _ = retune_bundle(out, images, synth_annotations, config, tmp_path / "b.cascade.safetensors",
                             show_progress=False)  # fmt: skip
    params = read_manifest(again).classes
    assert [c for c, p in zip((1, 2, 3, 4), params, strict=True) if p.closed] == closed
    assert not any(p.predictable for c, p in zip((1, 2, 3, 4), params, strict=True) if c in closed)
