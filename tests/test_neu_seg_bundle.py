"""The shipped ``neu-seg`` bundle (trained on real NEU-Seg steel): resolvable by name everywhere, and what it
promises on NEU-Seg val (slow; skipped when ``../shared/neu-seg`` is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade.cli.main import app
from cascade.embedded import embedded_bundle_exists

NEU_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "neu-seg"
NAMES = ("inclusion", "patches", "scratches")

pytestmark = pytest.mark.skipif(not embedded_bundle_exists("neu-seg"), reason="no shipped neu-seg bundle")


@pytest.fixture(scope="module")
def neu_dir() -> Path:
    if not (NEU_DIR / "ImageSets" / "Segmentation" / "val.txt").is_file():
        pytest.skip(f"NEU-Seg not found at {NEU_DIR}")
    return NEU_DIR


def test_neu_seg_resolves_by_name_in_the_library_and_the_cli() -> None:
    from cascade.predictor import CascadePredictor

    predictor = CascadePredictor.from_bundle("neu-seg", runtime="torch")
    manifest = predictor.manifest
    assert manifest.class_ids == (1, 2, 3) and manifest.class_names == NAMES
    assert manifest.image_size == (200, 200)
    dataset = manifest.provenance["dataset"]
    assert dataset["kind"] == "voc" and dataset["val_split"] == "val"
    assert manifest.provenance["metrics"]["stage_seconds"]  # training time is recorded
    info = CliRunner().invoke(app, ["bundle", "info", "neu-seg", "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["class_names"] == list(NAMES)


def test_neu_seg_bundle_fits_the_package_size_limit() -> None:
    from cascade.embedded import embedded_bundle_path

    assert embedded_bundle_path("neu-seg").stat().st_size <= 20 * 2**20


def test_cascade_predict_with_neu_seg_writes_three_rows_per_image(neu_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    ids = (neu_dir / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:6]
    for i in ids:
        (images / f"{i}.jpg").symlink_to(neu_dir / "JPEGImages" / f"{i}.jpg")
    out = tmp_path / "sub.csv"
    result = CliRunner().invoke(app, ["predict", str(images), "--out", str(out), "--bundle", "neu-seg",
                                      "--runtime", "torch"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = out.read_text().splitlines()
    assert rows[0] == "ImageId_ClassId,EncodedPixels" and len(rows) == 1 + 3 * len(ids)


@pytest.mark.slow
def test_neu_seg_beats_the_baselines_on_val(neu_dir: Path) -> None:
    from cascade.datasource import open_labelled
    from cascade.embedded import resolve_bundle
    from training.evaluate import evaluate_bundle

    bundle = resolve_bundle("neu-seg")
    val = open_labelled(neu_dir, classes=",".join(NAMES), split="val")
    result = evaluate_bundle(bundle, val.images_dir, val.annotations, grid=((0.0, 0.5), (0.5,), (0,)),
                             show_progress=False)  # fmt: skip
    assert result.cascade.mean >= result.empty.mean + 0.2, (result.cascade.mean, result.empty.mean)
    assert result.cascade.mean >= result.segment_all.mean - 0.005
