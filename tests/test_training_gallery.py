"""Tests for training/gallery.py: case selection, the drawing, the written files, ``cascade evaluate --gallery``
and the evaluate stage's gallery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cascade.classes import ClassSet
from cascade.datasource import LabelledSet, open_labelled
from tests.fixtures.predictor import THREE_CLASSES, random_images
from training.evaluate import evaluate_bundle
from training.gallery import (
    GALLERY_DIR,
    PANEL_HEIGHT,
    WIDE_PANEL_WIDTH,
    draw_case,
    select_cases,
    write_gallery,
)
from training.pipeline import PipelineResult

_SIZE = (200, 200)


@pytest.mark.parametrize(
    ("dice", "labels", "worst", "expected"),
    [
        # one defective image with a miss, one perfect, one clean false positive, one clean and right
        ([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [[1, 0], [1, 1], [0, 0], [0, 0]], 5,
         [("worst", 1, 0), ("clean_fp", 1, 2)]),
        # worst first, capped at 2; both clean false positives listed
        ([[0.9, 1.0], [0.1, 1.0], [0.5, 0.5], [0.0, 0.0], [0.0, 1.0]], [[1, 0], [1, 0], [1, 1], [0, 0], [0, 0]], 2,
         [("worst", 1, 2), ("worst", 2, 1), ("clean_fp", 1, 3), ("clean_fp", 2, 4)]),
        ([[0.0]], [[1]], 0, []),
        ([[1.0], [1.0]], [[1], [0]], 3, []),
    ],
)  # fmt: skip
def test_select_cases(dice: list, labels: list, worst: int, expected: list) -> None:
    assert select_cases(np.array(dice), np.array(labels, dtype=bool), worst) == expected


def test_select_cases_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        select_cases(np.zeros((3, 2)), np.zeros((3, 4), dtype=bool))


@pytest.mark.parametrize("shape", [(200, 200), (64, 400), (90, 60)])
def test_draw_case_puts_image_truth_and_prediction_in_class_colours(shape: tuple[int, int]) -> None:
    classes = ClassSet((2, 5), ("scratch", "pit"), ((250, 0, 0), (0, 0, 250)))
    h, w = shape
    truth = np.zeros((2, h, w), dtype=bool)
    truth[0, h // 4 : h // 2, w // 4 : w // 2] = True
    pred = np.zeros_like(truth)
    pred[1, h // 2 :, w // 2 :] = True
    picture = draw_case(np.full(shape, 128, np.uint8), truth, pred, classes, [0.9, 0.1], [0.5, 0.5], "title")
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    colours = {tuple(c) for c in np.unique(picture.reshape(-1, 3), axis=0).tolist()}
    assert {(250, 0, 0), (0, 0, 250)} <= colours  # outlines of the truth and the prediction (and legend swatches)
    if w > 2 * h:  # wide images stack their three panels
        assert picture.shape[1] < 1.5 * WIDE_PANEL_WIDTH and picture.shape[0] > 3 * h * WIDE_PANEL_WIDTH / w
    else:
        assert picture.shape[1] >= 3 * w * PANEL_HEIGHT / h
    with pytest.raises(ValueError, match="truth and pred"):
        draw_case(np.zeros(shape, np.uint8), truth[:1], pred[:1], classes, [0.9], [0.5], "title")


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory: pytest.TempPathFactory) -> LabelledSet:
    """Six 200x200 images of ``THREE_CLASSES`` (index masks): four with defects, two clean."""
    root = tmp_path_factory.mktemp("gallery-data")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for k, image in enumerate(random_images(6, (*_SIZE, 3), seed=7)):
        mask = np.zeros(_SIZE, np.uint8)
        if k < 4:
            mask[20 + 10 * k : 80 + 10 * k, 30:150] = 1 + k % 3
        Image.fromarray(image).save(root / "images" / f"img{k}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"img{k}.png")
    (root / "classes.yaml").write_text(yaml.safe_dump({**THREE_CLASSES.to_dict(), "mask_encoding": "index"}))
    return open_labelled(root)


def test_write_gallery_writes_the_expected_files(
    three_class_bundle_path: Path, mask_folder: LabelledSet, tmp_path: Path
) -> None:
    data = mask_folder
    result = evaluate_bundle(
        three_class_bundle_path, data.images_dir, data.annotations, grid=([0.5], [0.5], [0]), show_progress=False
    )
    assert result.image_dice is not None and result.image_dice.shape == (6, 3)
    out = tmp_path / "gallery"
    (out / "worst-99-stale.png").parent.mkdir()
    (out / "worst-99-stale.png").write_bytes(b"old")
    cases = write_gallery(
        out, three_class_bundle_path, data.images_dir, data.annotations, result.image_dice, result.labels,
        worst=2, show_progress=False,
    )  # fmt: skip
    expected = select_cases(result.image_dice, result.labels, 2)
    assert [(c.kind, c.rank, c.image_id) for c in cases] == [(k, r, data.image_ids[i]) for k, r, i in expected]
    # the bundle's class 1 gate is always open on random segmenters: clean images get false positives
    assert [c.kind for c in cases].count("clean_fp") >= 1
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(c.file for c in cases)
    for case in cases:
        with Image.open(out / case.file) as image:
            assert image.mode == "RGB" and image.width > 3 * _SIZE[1]
        assert set(case.probabilities) == {"1", "2", "3"}
        np.testing.assert_allclose(case.dice, result.image_dice[data.image_ids.index(case.image_id)].mean())
    index = (out / "index.md").read_text()
    assert all(f"]({c.file})" in index for c in cases) and "1 inclusion, 2 patches, 3 scratches" in index
    summary = json.loads((out / "gallery.json").read_text())
    assert summary["images"] == 6 and [c["file"] for c in summary["cases"]] == [c.file for c in cases]


def test_cascade_evaluate_gallery(three_class_bundle_path: Path, mask_folder: LabelledSet, tmp_path: Path) -> None:
    from cascade.cli.main import app

    out = tmp_path / "g"
    result = CliRunner().invoke(
        app,
        ["evaluate", str(three_class_bundle_path), "--data", str(mask_folder.root), "--limit", "4", "--gallery",
         str(out), "--json", str(tmp_path / "e.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cascade" in result.output and "all-empty" in result.output and "gallery:" in result.output
    assert json.loads((tmp_path / "e.json").read_text())["images"] == 4
    assert (out / "index.md").is_file() and (out / "gallery.json").is_file()
    bad = CliRunner().invoke(app, ["evaluate", str(three_class_bundle_path), "--data", str(tmp_path)])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_cascade_evaluate_tta_overrides_the_bundles(
    three_class_bundle_path: Path, mask_folder: LabelledSet, tmp_path: Path
) -> None:
    from cascade.cli.main import app

    def run(*tta: str) -> dict:
        out = tmp_path / f"e{len(tta)}.json"
        args = ["evaluate", str(three_class_bundle_path), "--data", str(mask_folder.root), "--json", str(out), *tta]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())

    plain, flipped = run(), run("--tta", "hflip,vflip")
    assert "tta" not in plain and flipped["tta"] == ["hflip", "vflip"] and "TTA hflip, vflip" in flipped["data"]
    direct = evaluate_bundle(
        three_class_bundle_path, mask_folder.images_dir, mask_folder.annotations, grid=([0.5], [0.5], [0]),
        show_progress=False, tta=("hflip", "vflip"),
    )  # fmt: skip
    assert flipped["cascade"]["mean"] == pytest.approx(direct.cascade.mean)
    untouched = evaluate_bundle(
        three_class_bundle_path, mask_folder.images_dir, mask_folder.annotations, grid=([0.5], [0.5], [0]),
        show_progress=False,
    )  # fmt: skip
    assert not np.allclose(direct.probabilities, untouched.probabilities)  # the flips reached the networks
    bad = CliRunner().invoke(
        app, ["evaluate", str(three_class_bundle_path), "--data", str(mask_folder.root), "--tta", "rotate90"]
    )
    assert bad.exit_code == 2 and "unknown tta ['rotate90']" in bad.output


def test_parse_tta() -> None:
    from training.cli import parse_tta

    assert parse_tta(None) is None  # the bundle's own
    assert parse_tta("none") == () and parse_tta("") == ()
    assert parse_tta(" hflip , vflip,hflip") == ("hflip", "vflip")


def test_cascade_evaluate_skips_unlabelled_images_only_when_asked(
    three_class_bundle_path: Path, mask_folder: LabelledSet, tmp_path: Path
) -> None:
    import shutil

    from cascade.cli.main import app

    root = tmp_path / "partial"
    shutil.copytree(mask_folder.root, root)
    (root / "masks" / "img5.png").unlink()
    stopped = CliRunner().invoke(app, ["evaluate", str(three_class_bundle_path), "--data", str(root)])
    assert stopped.exit_code == 2 and "image without a mask" in stopped.output and "--skip-unlabelled" in stopped.output
    json_out = tmp_path / "e.json"
    result = CliRunner().invoke(
        app,
        ["evaluate", str(three_class_bundle_path), "--data", str(root), "--skip-unlabelled", "--json", str(json_out)],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(json_out.read_text())["images"] == 5


def test_evaluate_stage_draws_the_gallery_into_the_report(tiny_run: PipelineResult) -> None:
    gallery = tiny_run.run_dir / GALLERY_DIR
    summary = json.loads((gallery / "gallery.json").read_text())
    assert all((gallery / c["file"]).is_file() for c in summary["cases"])
    assert "## Error gallery" in (tiny_run.run_dir / "report.md").read_text()
