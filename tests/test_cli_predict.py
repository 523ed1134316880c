"""Tests for cascade/cli/predict.py: ``cascade predict`` on folders and single images."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cascade.cli.main import app
from cascade.formats import Layout, read_annotations
from cascade.imageio import read_image
from cascade.scoring import errors_path, list_images, read_mask_png
from tests.fixtures.scoring import BAD_FILES, REFERENCE_BATCH, SCORE_N, TinyReference

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, ["predict", *args, "--runtime", "torch", "--threads", "1"], catch_exceptions=False)


def test_help() -> None:
    result = runner.invoke(app, ["predict", "--help"])
    assert result.exit_code == 0
    options = ("--out", "--bundle", "--batch-size", "--workers", "--masks", "--engine", "--overwrite", "--json")
    for option in (*options, "--stall-timeout"):
        assert option in result.output


def test_folder_with_unreadable_images_exits_2(
    tmp_path: Path, bad_score_dir: Path, tiny_bundle_path: Path, tiny_reference: TinyReference
) -> None:
    out = tmp_path / "sub.csv"
    args = (str(bad_score_dir), "--out", str(out), "--bundle", str(tiny_bundle_path))
    args += ("--batch-size", str(REFERENCE_BATCH))
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert f"{SCORE_N + 2}/{SCORE_N + 2} images done" in result.output
    assert "2 unreadable" in result.output
    listed = [line.split(",")[0] for line in errors_path(out).read_text().splitlines()[1:]]
    assert listed == sorted(BAD_FILES)
    assert out.read_bytes() == tiny_reference.submission
    assert errors_path(out).read_bytes() == tiny_reference.errors
    again = _invoke(*args)
    assert again.exit_code == 2 and f"{SCORE_N + 2} resumed" in again.output
    assert out.read_bytes() == tiny_reference.submission


def test_folder_refuses_foreign_output_unless_overwrite(
    tmp_path: Path, score_dir: Path, tiny_bundle_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    name = list_images(score_dir)[0]
    shutil.copy(score_dir / name, folder / name)
    out = tmp_path / "sub.csv"
    out.write_text("ImageId,ClassId,EncodedPixels\n")
    args = (str(folder), "--out", str(out), "--bundle", str(tiny_bundle_path))
    refused = _invoke(*args)
    assert refused.exit_code == 1 and "--overwrite" in refused.output
    done = _invoke(*args, "--overwrite", "--layout", "long", "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["complete"] and summary["scored"] == 1 and summary["errors"] == []
    annotations = read_annotations(out, image_ids=[name])
    assert annotations.layout is Layout.LONG and annotations.image_ids == (name,)


def test_folder_needs_out(score_dir: Path) -> None:
    result = runner.invoke(app, ["predict", str(score_dir)])
    assert result.exit_code == 2 and "--out" in result.output


def test_single_image_json(tmp_path: Path, score_dir: Path, tiny_bundle_path: Path, tiny_predictor) -> None:
    name = list_images(score_dir)[0]
    masks = tmp_path / "masks"
    result = _invoke(str(score_dir / name), "--json", "--bundle", str(tiny_bundle_path), "--masks", str(masks))
    assert result.exit_code == 0, result.output
    expected = tiny_predictor.predict([read_image(score_dir / name)], image_ids=[name])[0]
    assert json.loads(result.stdout) == expected.to_dict(include_timings=False)
    assert (read_mask_png(masks / "masks" / f"{Path(name).stem}.png") == expected.masks).all()
    assert (masks / "overlays" / f"{Path(name).stem}.jpg").is_file()


@pytest.mark.parametrize("bad", BAD_FILES)
def test_single_unreadable_image_exits_2(bad_score_dir: Path, tiny_bundle_path: Path, bad: str) -> None:
    result = _invoke(str(bad_score_dir / bad), "--json", "--bundle", str(tiny_bundle_path))
    assert result.exit_code == 2 and bad in result.output


def test_bad_choices(score_dir: Path, tmp_path: Path) -> None:
    for option, value in (("--layout", "wide"), ("--engine", "spark"), ("--actors", "3,1")):
        result = runner.invoke(app, ["predict", str(score_dir), "--out", str(tmp_path / "s.csv"), option, value])
        assert result.exit_code == 2 and "allowed" in result.output, (option, result.output)


class _StuckPredictor:
    """Every ``predict`` blocks until ``release`` is set, like a deadlocked first inference."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def predict(self, images, image_ids=None, mode="cascade"):
        self.release.wait(timeout=60)
        raise RuntimeError("released")


def test_stalled_run_exits_3_with_thread_dump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stuck folder run ends with exit code 3, every thread's stack and a one-line error on stderr."""
    import cascade.cli.predict as predict_cli

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 64, 3), 40 * i, np.uint8)).save(folder / f"img_{i}.png")
    release = threading.Event()
    monkeypatch.setattr(predict_cli, "_load_predictor", lambda *args: _StuckPredictor(release))

    def _exit(code: int) -> None:  # os._exit would end pytest itself
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", _exit)
    args = ["predict", str(folder), "--out", str(tmp_path / "sub.csv"), "--parallel", "2"]
    try:
        result = runner.invoke(app, args, env={"CASCADE_STALL_TIMEOUT": "0.5"}, catch_exceptions=False)
    finally:
        release.set()
    assert result.exit_code == predict_cli.EXIT_STALLED == 3, result.output
    assert "thread dump" in result.stderr and "Thread predict_" in result.stderr and "in predict" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: folder scoring made no progress") and "resumable" in last


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's context, imported by the ray engine
def test_ray_engine_gets_the_stall_timeout(tmp_path: Path, score_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--stall-timeout`` reaches the Ray engine too (0 turns it off), whose ``StalledError`` exits 3 as well."""
    import cascade.cli.predict as predict_cli
    import cascade.scoring as scoring
    from cascade.scoring import StalledError

    calls: list[dict] = []

    def _stalled_ray(*args, **options):
        calls.append(options)
        raise StalledError("Ray folder scoring", 2.0, 1.5, "", ["a.png"], advice="an actor is stuck")

    def _exit(code: int) -> None:  # os._exit would end pytest itself
        raise SystemExit(code)

    monkeypatch.setattr(scoring, "score_folder_ray", _stalled_ray)
    monkeypatch.setattr(os, "_exit", _exit)
    args = ["predict", str(score_dir), "--out", str(tmp_path / "s.csv"), "--engine", "ray"]
    result = runner.invoke(app, [*args, "--stall-timeout", "1.5"], catch_exceptions=False)
    assert result.exit_code == predict_cli.EXIT_STALLED, result.output
    assert "still waiting for a.png: an actor is stuck" in result.stderr.strip().splitlines()[-1]
    runner.invoke(app, [*args, "--stall-timeout", "0"], catch_exceptions=False)
    assert [c["options"].stall_timeout_s for c in calls] == [1.5, None]


def test_missing_bundle_is_one_line(score_dir: Path, tmp_path: Path) -> None:
    name = list_images(score_dir)[0]
    for args in ((str(score_dir / name),), (str(score_dir), "--out", str(tmp_path / "s.csv"))):
        result = runner.invoke(app, ["predict", *args, "--bundle", "no-such-bundle"])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: bundle not found: no-such-bundle"), result.output
        assert "shipped bundles by name" in lines[0]


def test_unknown_runtime_lists_the_runtimes(score_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(score_dir), "--out", str(tmp_path / "s.csv"), "--runtime", "onnxx"])
    assert result.exit_code == 2 and "torch-bf16" in result.output and "openvino" in result.output, result.output


def test_masks_after_a_finished_run_refuse_then_overwrite(
    tmp_path: Path, score_dir: Path, tiny_bundle_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in list_images(score_dir)[:2]:
        shutil.copy(score_dir / name, folder / name)
    out, masks = tmp_path / "sub.csv", tmp_path / "masks"
    args = (str(folder), "--out", str(out), "--bundle", str(tiny_bundle_path))
    assert _invoke(*args).exit_code == 0
    refused = _invoke(*args, "--masks", str(masks))
    assert refused.exit_code == 1, refused.output
    assert "without masks" in refused.output and "--overwrite" in refused.output
    assert not masks.exists()
    done = _invoke(*args, "--masks", str(masks), "--overwrite")
    assert done.exit_code == 0, done.output
    stems = sorted(Path(n).stem for n in list_images(folder))
    assert sorted(p.stem for p in (masks / "masks").glob("*.png")) == stems
    assert sorted(p.stem for p in (masks / "overlays").glob("*.jpg")) == stems
    again = _invoke(*args, "--masks", str(masks))  # every finished image has its masks: resuming is fine
    assert again.exit_code == 0, again.output


def test_masks_refuse_images_sharing_a_stem(tmp_path: Path, score_dir: Path, tiny_bundle_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    name = list_images(score_dir)[0]
    shutil.copy(score_dir / name, folder / "a.jpg")
    Image.open(score_dir / name).save(folder / "a.png")
    result = _invoke(str(folder), "--out", str(tmp_path / "s.csv"), "--bundle", str(tiny_bundle_path), "--masks",
                     str(tmp_path / "m"))  # fmt: skip
    assert result.exit_code == 1 and "share the stem 'a'" in result.output, result.output


def test_folder_summary_counts_and_names_out_of_distribution_images(
    tmp_path: Path, score_dir: Path, tiny_bundle_path: Path
) -> None:
    bundle = tmp_path / "with_ood.cascade.safetensors"
    refit = ["bundle", "refit-ood", str(tiny_bundle_path), "--data", str(score_dir), "--out", str(bundle)]
    assert runner.invoke(app, refit).exit_code == 0
    folder = tmp_path / "images"
    shutil.copytree(score_dir, folder)
    names = list_images(score_dir)
    for name in names[:2]:  # inverted steel: out of distribution
        Image.fromarray(255 - read_image(score_dir / name)).save(folder / f"zz_inverted_{Path(name).stem}.png")
    args = (str(folder), "--out", str(tmp_path / "sub.csv"), "--bundle", str(bundle))
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    inverted = [f"zz_inverted_{Path(n).stem}.png" for n in names[:2]]
    assert f"out of distribution: 2/{SCORE_N + 2} images (25.0%), e.g. {', '.join(inverted)}:" in result.output
    summary = json.loads(_invoke(*args, "--overwrite", "--json").stdout)
    assert summary["out_of_distribution"] == {"scored": SCORE_N + 2, "flagged": 2, "examples": inverted}
    single = _invoke(str(folder / inverted[0]), "--bundle", str(bundle))
    assert "OUT OF DISTRIBUTION" in single.output
    plain = _invoke(str(folder), "--out", str(tmp_path / "plain.csv"), "--bundle", str(tiny_bundle_path))
    assert plain.exit_code == 0 and "out of distribution" not in plain.output  # no reference: no line
