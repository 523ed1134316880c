"""Tests for cascade.synth: determinism, image format, masks, statistics and the ``synth`` command."""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cascade.cli.main import app
from cascade.constants import CLASS_IDS, IMAGE_HEIGHT, IMAGE_SHAPE, IMAGE_WIDTH
from cascade.imageio import read_image
from cascade.rle import decode
from cascade.synth import (
    SynthConfig,
    format_stats,
    generate_dataset,
    generate_image,
    image_ids,
    real_stats,
    reference_stats,
    stats_from_areas,
    synth_config,
    synth_stats,
)
from cascade.synth.config import PROFILES, TEXTURES
from cascade.synth.discriminator import discriminator_auc
from cascade.synth.realism import IMAGE_STAT_NAMES, folder_image_stats, image_stats
from cascade.synth.reference import AREA_PERCENTILES, REAL_AREA_KNOTS, REAL_IMAGE_STATS
from cascade.synth.shapes import SHAPES_FILE, build_shape_table, draw_layout, shape_table
from tests.fixtures.data import SYNTH_N
from tests.fixtures.processes import children, survivors_of_killing


def _digests(root: Path) -> dict[str, str]:
    files = sorted(root.rglob("*"))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_image_ids_are_kaggle_like_distinct_and_seeded() -> None:
    ids = image_ids(5, 500)
    assert len(set(ids)) == 500
    assert all(re.fullmatch(r"[0-9a-f]{9}\.jpg", name) for name in ids)
    assert image_ids(5, 500) == ids
    assert image_ids(5, 10) == ids[:10]
    assert not set(image_ids(6, 500)) & set(ids[:50])


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", 5, seed=7)
    b = generate_dataset(tmp_path / "b", 5, seed=7)
    c = generate_dataset(tmp_path / "c", 5, seed=8)
    assert a.image_ids == b.image_ids
    assert _digests(a.root) == _digests(b.root)
    assert len(_digests(a.root)) == 6  # 5 images + train.csv
    assert set(_digests(c.root).values()).isdisjoint(v for k, v in _digests(a.root).items() if k.endswith(".jpg"))


def test_refuses_to_mix_sets_unless_overwrite(tmp_path: Path) -> None:
    generate_dataset(tmp_path, 3, seed=1)
    generate_dataset(tmp_path, 3, seed=1)  # the same set again: nothing foreign
    with pytest.raises(FileExistsError, match="another set"):
        generate_dataset(tmp_path, 2, seed=2)
    written = generate_dataset(tmp_path, 2, seed=2, overwrite=True)
    assert sorted(p.name for p in written.images_dir.iterdir()) == sorted(written.image_ids)


def test_workers_write_the_same_files_as_one_process(tmp_path: Path) -> None:
    one = generate_dataset(tmp_path / "one", 6, seed=3)
    two = generate_dataset(tmp_path / "two", 6, seed=3, workers=2)
    assert _digests(one.root) == _digests(two.root)


def test_images_are_1600x256_three_channel_grayscale(synth_dir: Path, synth_image_ids: tuple[str, ...]) -> None:
    files = sorted((synth_dir / "train_images").iterdir())
    assert [p.name for p in files] == sorted(synth_image_ids)
    assert len(files) == SYNTH_N
    for path in files[:6]:
        with Image.open(path) as img:
            assert img.format == "JPEG"
            assert img.size == (IMAGE_WIDTH, IMAGE_HEIGHT)
            assert img.mode == "RGB"
        rgb = read_image(path).astype(np.int16)
        assert rgb.shape == (*IMAGE_SHAPE, 3)
        assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 2
        assert np.abs(rgb[..., 0] - rgb[..., 2]).max() <= 2
        assert rgb.std() > 5  # textured, not flat


def test_train_csv_is_kaggle_long_layout_with_valid_masks(synth_dir: Path) -> None:
    header = (synth_dir / "train.csv").read_text().splitlines()[0]
    assert header == "ImageId,ClassId,EncodedPixels"
    rows = _rows(synth_dir / "train.csv")
    names = {p.name for p in (synth_dir / "train_images").iterdir()}
    assert rows
    keys = [(r["ImageId"], int(r["ClassId"])) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    per_image: dict[str, np.ndarray] = {}
    for row in rows:
        assert row["ImageId"] in names
        assert int(row["ClassId"]) in CLASS_IDS
        mask = decode(row["EncodedPixels"], IMAGE_SHAPE)  # strict: raises past H*W
        assert mask.sum() >= 100
        seen = per_image.setdefault(row["ImageId"], np.zeros(IMAGE_SHAPE, dtype=bool))
        assert not (seen & mask).any(), "classes of one image must not overlap"
        seen |= mask
    present = {int(r["ClassId"]) for r in rows}
    assert present == set(CLASS_IDS)
    assert len(per_image) < SYNTH_N  # some images are clean


def test_files_match_generate_image(synth_dir: Path, synth_image_ids: tuple[str, ...]) -> None:
    from tests.fixtures.data import SYNTH_SEED

    rows = _rows(synth_dir / "train.csv")
    for index in (0, 1, 2, 3):
        name = synth_image_ids[index]
        synth = generate_image(SYNTH_SEED, index, synth_config("balanced"))
        decoded = read_image(synth_dir / "train_images" / name)[..., 0].astype(np.int16)
        assert np.abs(decoded - synth.image).mean() < 3.0  # JPEG quality 92 of a grainy image
        for row in (r for r in rows if r["ImageId"] == name):
            k = int(row["ClassId"]) - 1
            np.testing.assert_array_equal(decode(row["EncodedPixels"], IMAGE_SHAPE), synth.masks[k])


def test_defects_stay_on_the_sheet_and_band_is_dark() -> None:
    config = SynthConfig(combinations={"3": 1, "4": 1, "1": 1}, edge_band_prob=1.0)
    for index in range(6):
        synth = generate_image(11, index, config)
        x0, x1 = synth.sheet
        assert (x0 > 0) != (x1 < IMAGE_WIDTH)
        assert synth.masks.any()
        assert not synth.masks[:, :, :x0].any() and not synth.masks[:, :, x1:].any()
        band = synth.image[:, :x0] if x0 > 0 else synth.image[:, x1:]
        assert band.mean() < 25


def test_clean_images_have_no_masks_and_defects_are_visible() -> None:
    clean = generate_image(2, 0, SynthConfig(combinations={"": 1}))
    assert not clean.masks.any()
    for combo in ("1", "2", "3", "4"):
        config = SynthConfig(combinations={combo: 1}, distractors=False, edge_band_prob=0.0)
        synth = generate_image(2, 0, config)
        mask = synth.masks[int(combo) - 1]
        assert mask.any() and synth.masks.sum() == mask.sum()
        # The defect must stand out from the surface around it (mean or texture differ).
        inside = synth.image[mask].astype(float)
        ring = synth.image[_ring(mask)].astype(float)
        assert abs(inside.mean() - ring.mean()) + abs(inside.std() - ring.std()) > 5, combo


def _ring(mask: np.ndarray, width: int = 12) -> np.ndarray:
    import cv2

    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * width + 1, 2 * width + 1), np.uint8)).astype(bool)
    return grown & ~mask


def test_real_layouts_follow_real_areas_and_stay_on_the_sheet() -> None:
    rng = np.random.default_rng(0)
    for class_id in CLASS_IDS:
        areas = np.asarray([draw_layout(rng, class_id, (0, IMAGE_WIDTH), False).sum() for _ in range(300)])
        knots = REAL_AREA_KNOTS[class_id - 1]
        for p in (25.0, 50.0, 75.0):
            expected = knots[AREA_PERCENTILES.index(p)]
            assert 0.7 < np.percentile(areas, p) / expected < 1.4, (class_id, p)
    for _ in range(50):  # a narrow sheet with the band on the left: masks stay on [lo, hi), often touching lo
        mask = draw_layout(rng, 3, (400, 900), True)
        assert not mask[:, :400].any() and not mask[:, 900:].any()
    touching = sum(draw_layout(rng, 1, (400, 1600), True)[:, 400].any() for _ in range(100))
    assert touching >= 15  # defects touch the sheet's edge, as in the real data
    with pytest.raises(ValueError, match="allowed"):
        draw_layout(rng, 5, (0, IMAGE_WIDTH), False)


def test_a_layout_within_one_column_of_the_sheet_width_is_placed_not_refused() -> None:
    # A layout 100 columns wide (stretched x0.8-1.25) on sheets 80-125 columns wide: every span between "fits
    # with room" and "wider than the sheet" occurs, the one-column gap between them included (it used to raise
    # "high - low < 0", e.g. generate_image(11, 407) of the balanced profile without look-alikes).
    rle = " ".join(f"{c * 256 + 1} 10" for c in range(100))  # columns 0-99, rows 0-9
    table = build_shape_table([("a.jpg", 2, rle)])
    rng = np.random.default_rng(0)
    for _ in range(60):
        for hi in range(80, 126):
            mask = draw_layout(rng, 2, (0, hi), False, table=table, shape=(16, 200))
            assert mask[:, :hi].any() and not mask[:, hi:].any()


def test_shape_table_is_small_outlines_with_every_class(tmp_path: Path) -> None:
    assert SHAPES_FILE.stat().st_size < 200_000
    table = shape_table()
    assert {int(c) for c in table.class_ids} == set(CLASS_IDS)
    assert all(len(p) >= 3 for p in table.polygons(0))
    # Built from RLE rows: a 2-run rectangle becomes one 4-corner polygon; excluded images are left out.
    rle = "257 10 513 10 769 10 1025 10"  # columns 1-4 (0-based), rows 0-9
    built = build_shape_table([("a.jpg", 2, rle), ("b.jpg", 2, rle)], exclude=["b.jpg"])
    assert list(built.class_ids) == [2]
    (poly,) = built.polygons(0)
    assert len(poly) == 4 and set(poly[:, 0]) == {1, 4} and set(poly[:, 1]) == {0, 9}
    built.save(tmp_path / "t.npz")
    assert np.array_equal(shape_table(str(tmp_path / "t.npz")).points, built.points)


def test_generated_statistics_are_close_to_real() -> None:
    n = 200
    areas = np.stack([generate_image(99, i).masks.sum(axis=(1, 2)) for i in range(n)])
    synth = stats_from_areas(areas, "synth")
    real = real_stats()
    assert abs(synth.clean_share - real.clean_share) < 0.1
    assert abs(synth.positives_per_image - real.positives_per_image) < 0.12
    assert 0.0 < synth.multi_label_share < 0.12
    tolerance = (0.05, 0.03, 0.1, 0.05)
    for k in range(4):
        assert abs(synth.class_share[k] - real.class_share[k]) < tolerance[k], k
        if synth.class_share[k] * n >= 8:
            ratio = synth.area_quantiles[k][2] / real.area_quantiles[k][2]
            assert 0.5 < ratio < 2.0, (k, ratio)


def test_synth_stats_of_a_folder(synth_dir: Path) -> None:
    stats = synth_stats(synth_dir)
    rows = _rows(synth_dir / "train.csv")
    assert stats.num_images == SYNTH_N
    assert stats.clean_share == pytest.approx(1 - len({r["ImageId"] for r in rows}) / SYNTH_N)
    assert stats.positives_per_image == pytest.approx(len(rows) / SYNTH_N)
    assert all(share > 0 for share in stats.class_share)
    table = format_stats(stats, real_stats())
    assert "clean share" in table and table.count("\n| ") >= 8
    with pytest.raises(FileNotFoundError, match="not a synthetic set"):
        synth_stats(synth_dir / "train_images")


def test_real_stats_from_index_match_the_constants(real_dir: Path) -> None:
    from_index = real_stats(real_dir / "train-index.csv")
    constants = reference_stats()
    assert from_index.num_images == constants.num_images
    assert from_index.clean_share == pytest.approx(constants.clean_share)
    assert from_index.positives_per_image == pytest.approx(constants.positives_per_image)
    np.testing.assert_allclose(from_index.class_share, constants.class_share)
    np.testing.assert_allclose(from_index.area_quantiles, constants.area_quantiles, rtol=1e-3)
    np.testing.assert_allclose(from_index.area_mean, constants.area_mean, rtol=1e-3)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="bad class combination"):
        SynthConfig(combinations={"15": 1})
    with pytest.raises(ValueError, match="sum to 0"):
        SynthConfig(combinations={"1": 0})
    with pytest.raises(ValueError, match="balanced"):
        synth_config("uniform")
    with pytest.raises(ValueError, match="n must be"):
        generate_dataset("/nonexistent-never-written", 0)


def test_cli_synth_writes_a_set_and_prints_stats(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "set"
    result = runner.invoke(app, ["synth", "--out", str(out), "--n", "3", "--seed", "4", "--profile", "balanced"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "train_images").glob("*.jpg"))) == 3
    assert "clean share" in result.output
    result = runner.invoke(app, ["synth", "--stats", str(out)])
    assert result.exit_code == 0, result.output
    assert "area p50" in result.output
    result = runner.invoke(app, ["synth", "--out", str(out), "--profile", "nope"])
    assert result.exit_code == 2
    assert "balanced" in result.output


def test_image_stats_measure_what_they_say() -> None:
    ramp = np.repeat(np.linspace(60, 140, IMAGE_HEIGHT)[:, None], IMAGE_WIDTH, axis=1).astype(np.uint8)
    stats = dict(zip(IMAGE_STAT_NAMES, image_stats(ramp), strict=True))
    assert stats["rows_range"] == pytest.approx(80, abs=2)
    assert stats["cols_range"] == pytest.approx(0, abs=0.5)
    assert stats["saturated_pct"] == 0 and stats["band_pct"] == 0
    assert stats["grad_x"] == 0 and stats["fine_energy"] < 0.5
    banded = ramp.copy()
    banded[:, :400] = 5  # a quarter of the image past the sheet's edge
    banded[10, 500:520] = 255  # 20 saturated pixels
    stats = dict(zip(IMAGE_STAT_NAMES, image_stats(banded), strict=True))
    assert stats["band_pct"] == pytest.approx(25.0)
    assert stats["saturated_pct"] == pytest.approx(100 * 20 / ramp.size)
    assert stats["rows_range"] == pytest.approx(80, abs=2)  # profiles use the sheet's columns only
    with pytest.raises(ValueError, match="uint8"):
        image_stats(ramp.astype(np.float32))
    assert set(REAL_IMAGE_STATS) == set(IMAGE_STAT_NAMES)


def test_profiles_share_the_look_and_shifted_lies_outside_every_range() -> None:
    real = PROFILES["real"]
    for name in ("balanced", "train"):
        assert {f: getattr(PROFILES[name], f) for f in ("level", "ramp", "contrast", "defect_contrast")} == {
            f: getattr(real, f) for f in ("level", "ramp", "contrast", "defect_contrast")
        }
    shifted = PROFILES["shifted"]
    assert shifted.combinations == real.combinations  # the real class mix: only the look moves
    assert shifted.level[1] < real.level[0]  # darker sheets
    assert shifted.ramp[0] > real.ramp[1]  # steeper lighting ramp
    assert shifted.contrast[0] > real.contrast[1]  # more texture
    assert shifted.defect_contrast[1] < real.defect_contrast[0]  # fainter defects
    assert shifted.reencode_quality[1] < real.reencode_quality[0]  # harsher JPEG
    assert shifted.texture == "peel" != real.texture and set(TEXTURES) == {"rolled", "peel"}
    with pytest.raises(ValueError, match="texture"):
        SynthConfig(texture="plaid")
    with pytest.raises(ValueError, match="defect_contrast"):
        SynthConfig(defect_contrast=(1.0, 0.5))


def test_shifted_images_differ_as_documented() -> None:
    def measure(profile: str) -> dict[str, float]:
        rows = np.stack([image_stats(generate_image(21, i, synth_config(profile)).image) for i in range(12)])
        return dict(zip(IMAGE_STAT_NAMES, np.median(rows, axis=0), strict=True))

    real, shifted = measure("real"), measure("shifted")
    assert shifted["p50"] < 0.75 * real["p50"]  # darker
    assert shifted["coarse_energy"] > real["coarse_energy"]  # peel mottling
    assert shifted["mid_energy"] > real["mid_energy"]  # twice the texture
    a, b = generate_image(21, 0, synth_config("shifted")), generate_image(21, 0, synth_config("shifted"))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)


def test_generated_appearance_is_close_to_the_real_images(real_dir: Path, tmp_path: Path) -> None:
    """Per-image statistics of 60 synthetic images against the real slice's 54 images (skips without it)."""
    real = folder_image_stats(real_dir / "images")
    synth = np.stack([image_stats(generate_image(5, i).image) for i in range(60)])
    real_median, synth_median = np.median(real, axis=0), np.median(synth, axis=0)
    for name in ("contrast", "p1", "p50", "rows_range", "cols_range", "grad_x", "grad_y", "fine_energy"):
        k = IMAGE_STAT_NAMES.index(name)
        assert 0.75 < synth_median[k] / real_median[k] < 1.33, (name, synth_median[k], real_median[k])
    k = IMAGE_STAT_NAMES.index("saturated_pct")
    assert np.mean(synth[:, k] > 0) > 0.5  # glints saturate on most images, as on the real ones
    auc, _ = discriminator_auc(real, synth, "logistic", repeats=2)
    assert auc < 0.9, f"a logistic regression tells synthetic from real with AUC {auc:.3f}"


def test_cli_stats_prints_appearance_next_to_the_real_images(synth_dir: Path) -> None:
    result = CliRunner().invoke(app, ["synth", "--stats", str(synth_dir)])
    assert result.exit_code == 0, result.output
    assert "rows_range" in result.output and "real p10/p50/p90" in result.output


def test_discriminator_auc_separates_only_what_differs() -> None:
    rng = np.random.default_rng(0)
    same_a, same_b = rng.normal(size=(40, 3)), rng.normal(size=(80, 3))
    auc, _ = discriminator_auc(same_a, same_b, "logistic", repeats=2)
    assert 0.3 < auc < 0.7
    auc, _ = discriminator_auc(same_a + 5.0, same_b, "boosting", repeats=1)
    assert auc > 0.95
    with pytest.raises(ValueError, match="logistic"):
        discriminator_auc(same_a, same_b, "svm")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_end_when_synth_is_killed(tmp_path: Path) -> None:
    """SIGKILL to `cascade synth --workers 2` used to leave its two drawing processes asleep for hours."""
    command = [sys.executable, "-m", "cascade.cli.main", "synth", "--out", str(tmp_path / "big"), "--n", "20000"]
    parent = subprocess.Popen([*command, "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(workers := children(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) >= 2, "the pool's workers never started"
        assert not survivors_of_killing(parent, workers), "a worker outlived its killed parent"
    finally:
        parent.kill()
        parent.wait(timeout=10)
