"""Training on a Pascal VOC set with its own classes and image size: the splits, the bundle, scoring it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cascade.bundle import read_manifest
from cascade.cli.main import app
from tests.fixtures.training import tiny_config
from training.pipeline import run_pipeline
from training.workspace import open_workspace

H, W = 64, 96
NAMES = ("dark_spot", "bright_patch", "line")


def _write_voc(root: Path, n: int = 24, n_val: int = 6, seed: int = 0) -> Path:
    """``n`` gray images with up to three kinds of defect, class-index masks, train/val split files."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:04d}" for i in range(n)]
    for i, stem in enumerate(ids):
        image = rng.normal(128, 6, (H, W)).clip(0, 255)
        mask = np.zeros((H, W), np.uint8)
        if i % 3 != 1:  # class 1: dark square
            y, x = rng.integers(4, H - 20), rng.integers(4, W - 20)
            image[y : y + 14, x : x + 14] -= 70
            mask[y : y + 14, x : x + 14] = 1
        if i % 2 == 0:  # class 2: bright rectangle
            y, x = rng.integers(4, H - 24), rng.integers(4, W - 30)
            image[y : y + 20, x : x + 26] += 70
            mask[y : y + 20, x : x + 26] = 2
        if i % 4 == 3:  # class 3: vertical dark line
            x = rng.integers(4, W - 6)
            image[:, x : x + 3] -= 60
            mask[:, x : x + 3] = 3
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).convert("RGB").save(root / "JPEGImages" / f"{stem}.jpg")
        Image.fromarray(mask).save(root / "SegmentationClass" / f"{stem}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[: n - n_val]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[n - n_val :]) + "\n")
    (root / "classes.yaml").write_text("classes: [" + ", ".join(NAMES) + "]\n")
    return root


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_voc(tmp_path_factory.mktemp("voc"))


def _voc_config(voc: Path, out: Path, **overrides: object):
    return tiny_config(
        voc,
        out,
        **{
            "data.train_split": "train",
            "data.val_split": "val",
            "data.n_folds": 3,
            "input.scale": 1.0,
            "segmenter.crop": {"height": 32, "width": 64, "non_empty_p": 0.8},
            "tune.min_areas": [0, 20],
            **overrides,
        },
    )


def test_val_split_is_the_tune_fold_and_never_trained_on_by_the_other_folds(voc_dir: Path, tmp_path: Path) -> None:
    from training.distributed import DistContext

    ws = open_workspace(_voc_config(voc_dir, tmp_path), tmp_path, DistContext())
    assert ws.data.kind == "voc" and ws.class_ids == (1, 2, 3) and ws.classes.names == NAMES
    assert ws.image_size == (H, W)
    train_ids, val_ids = ws.tune_split
    assert len(train_ids) == 18 and len(val_ids) == 6
    assert set(val_ids) == set(ws.data.splits["val"])
    for k, (tr, va) in enumerate(ws.folds):
        if k != 0:
            assert not set(tr) & set(val_ids) and not set(va) & set(val_ids)
    covered = sorted(i for _, va in ws.folds for i in va)
    assert covered == sorted(ws.image_ids)  # every image has exactly one out-of-fold prediction


def test_bad_split_and_class_ids_are_named(voc_dir: Path, tmp_path: Path) -> None:
    from training.distributed import DistContext

    with pytest.raises(ValueError, match=r"data.val_split='test' is not a split .*\['train', 'val'\]"):
        open_workspace(_voc_config(voc_dir, tmp_path, **{"data.val_split": "test"}), tmp_path, DistContext())
    with pytest.raises(ValueError, match=r"segmenter.class_ids \[4\] are not classes of the data"):
        open_workspace(_voc_config(voc_dir, tmp_path, **{"segmenter.class_ids": [1, 4]}), tmp_path, DistContext())


def test_pipeline_on_voc_writes_a_three_class_bundle_that_scores(voc_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_pipeline(_voc_config(voc_dir, out))
    assert result.bundle is not None
    manifest = read_manifest(result.bundle)
    assert manifest.class_ids == (1, 2, 3) and manifest.class_names == NAMES
    assert manifest.image_size == (H, W)
    dataset = manifest.provenance["dataset"]
    assert (
        dataset["kind"] == "voc" and dataset["val_split"] == "val" and dataset["split_sizes"] == {"train": 18, "val": 6}
    )
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["images"] == 6 and set(evaluation["cascade"]["per_class"]) == {"1", "2", "3"}
    assert "1 dark_spot" in (out / "report.md").read_text()

    runner = CliRunner()
    sub = tmp_path / "sub.csv"
    predicted = runner.invoke(
        app, ["predict", str(voc_dir / "JPEGImages"), "--out", str(sub), "--bundle", str(result.bundle),
              "--runtime", "torch"],
    )  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    with sub.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert len(rows) == 24 * 3 and {r[0].rsplit("_", 1)[1] for r in rows} == {"1", "2", "3"}
    scored = runner.invoke(app, ["score", str(voc_dir), str(sub), "--json"])
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.output)
    assert report["class_ids"] == [1, 2, 3] and report["class_names"] == list(NAMES) and report["n_images"] == 24
    assert 0.0 <= report["mean"] <= 1.0
    checked = runner.invoke(
        app, ["check-submission", str(sub), "--images", str(voc_dir / "JPEGImages"), "--bundle", str(result.bundle)]
    )
    assert checked.exit_code == 0, checked.output
