"""A bundle's class set decides the classes end to end: a 3-class bundle for 200x200 images, fed images of
other sizes, through the predictor, the submission CSV, ``cascade score`` / ``check-submission`` and the service.

Severstal (4 classes, 256x1600) stays the default profile: the last tests check that it is unchanged.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cascade import embedded
from cascade.classes import SEVERSTAL
from cascade.cli.main import app as cli
from cascade.datasource import write_mask_folder
from cascade.formats import Annotations, Layout, format_image_rows, submission_header, write_submission
from cascade.imageio import decode_image
from cascade.predictor import CascadePredictor
from cascade.results import ImagePrediction
from cascade.rle import encode_stack
from tests.fixtures.predictor import THREE_CLASS_IMAGE_SIZE, THREE_CLASSES, random_images
from tests.fixtures.service import encode_image, loader_for, make_settings, running_client

runner = CliRunner()

SHAPES: dict[str, tuple[int, int]] = {"big.png": (200, 200), "small.png": (90, 120)}
"""Image id -> ``(H, W)``: the bundle's own size and a smaller, non-square one."""


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    """``SHAPES``' images, ``(H, W, 3)`` uint8."""
    return {name: random_images(1, (*shape, 3), seed=k)[0] for k, (name, shape) in enumerate(SHAPES.items())}


@pytest.fixture
def images_dir(tmp_path: Path, images: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, image in images.items():
        (folder / name).write_bytes(encode_image(image, "PNG"))
    return folder


@pytest.fixture(scope="module")
def predictions(three_class_predictor: CascadePredictor, images: dict[str, np.ndarray]) -> list[ImagePrediction]:
    return three_class_predictor.predict(list(images.values()), list(images))


def _truth_masks(shape: tuple[int, int], k: int) -> np.ndarray:
    """``(3, H, W)`` true masks: class 1 a block, class 2 a block on the second image only, class 3 empty."""
    height, width = shape
    masks = np.zeros((3, height, width), dtype=bool)
    masks[0, height // 4 : height // 2, width // 3 : 2 * width // 3] = True
    if k == 1:
        masks[1, : height // 3, : width // 4] = True
    return masks


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# ---------------------------------------------------------------------------------------------- predictor and CSV
def test_predictor_answers_the_bundles_classes_at_each_images_own_size(predictions: list[ImagePrediction]) -> None:
    for prediction, (name, shape) in zip(predictions, SHAPES.items(), strict=True):
        assert (prediction.image_id, prediction.height, prediction.width) == (name, *shape)
        assert prediction.class_ids == THREE_CLASSES.ids
        assert [c.name for c in prediction.classes] == list(THREE_CLASSES.names)
        assert prediction.colours == THREE_CLASSES.colours
        assert prediction.masks.shape == (3, *shape)
        assert prediction.classes[1].rle == ""  # its gate is shut (prob_threshold 1)
    assert any(c.rle for p in predictions for c in p.classes), "every mask empty: the round trip would test nothing"


def test_submission_has_three_rows_per_image(tmp_path: Path, predictions: list[ImagePrediction]) -> None:
    path = tmp_path / "pred.csv"
    write_submission(path, [(p.image_id, p.rles) for p in predictions], class_ids=THREE_CLASSES.ids)
    text = path.read_text()
    rows = _csv_rows(text)
    assert rows[0] == ["ImageId_ClassId", "EncodedPixels"]
    assert [r[0] for r in rows[1:]] == [f"{name}_{cid}" for name in SHAPES for cid in (1, 2, 3)]
    lines = "".join(format_image_rows(p.image_id, p.rles, Layout.IMAGE_CLASS, p.class_ids) for p in predictions)
    assert text == submission_header(Layout.IMAGE_CLASS) + lines


# ---------------------------------------------------------------------------------------------- cascade score / check
@pytest.fixture
def scored(tmp_path: Path, images_dir: Path, predictions: list[ImagePrediction]) -> dict[str, object]:
    """The predictions as a submission, the truth as a mask folder, and the Dice computed directly."""
    pred_csv = tmp_path / "pred.csv"
    write_submission(pred_csv, [(p.image_id, p.rles) for p in predictions], class_ids=THREE_CLASSES.ids)
    truth = {name: _truth_masks(shape, k) for k, (name, shape) in enumerate(SHAPES.items())}
    annotations = Annotations(
        tuple(SHAPES),
        {name: tuple(encode_stack(masks)) for name, masks in truth.items()},
        Layout.IMAGE_CLASS,
        THREE_CLASSES.ids,
        SHAPES,
    )
    truth_dir = write_mask_folder(tmp_path / "truth", images_dir, annotations, THREE_CLASSES)
    pairs = np.array([[_dice(p.masks[k], truth[p.image_id][k]) for k in range(3)] for p in predictions])
    return {"pred": pred_csv, "truth": truth_dir, "pairs": pairs}


def test_cascade_score_of_a_mask_folder_equals_the_dice_computed_directly(
    scored: dict[str, object], images_dir: Path
) -> None:
    pairs = scored["pairs"]
    assert 0.0 < pairs.mean() < 1.0  # hits and misses: a score that cannot be confused with a trivial one
    args = ["score", str(scored["truth"]), str(scored["pred"]), "--images", str(images_dir)]
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["class_ids"] == [1, 2, 3]
    assert report["class_names"] == ["inclusion", "patches", "scratches"]
    assert report["n_images"] == 2
    assert report["mean"] == pytest.approx(pairs.mean())
    assert report["per_class"] == pytest.approx(list(pairs.mean(axis=0)))
    table = runner.invoke(cli, args)
    assert table.exit_code == 0 and "scratches" in table.output and "pits" not in table.output


def test_check_submission_takes_classes_from_the_bundle_and_sizes_from_the_images(
    tmp_path: Path, scored: dict[str, object], images_dir: Path, three_class_bundle_path: Path
) -> None:
    pred = Path(scored["pred"])
    ok = runner.invoke(
        cli, ["check-submission", str(pred), "--bundle", str(three_class_bundle_path), "--images", str(images_dir)]
    )
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output and "3 rows each" in ok.output and "classes [1, 2, 3]" in ok.output

    # the Severstal default expects a 4th row per image
    severstal = runner.invoke(cli, ["check-submission", str(pred), "--images", str(images_dir)])
    assert severstal.exit_code == 1 and "[missing_row]" in severstal.output

    # a run that fits 200x200 but not the small image's own 90x120
    height, width = SHAPES["small.png"]
    rows = _csv_rows(pred.read_text())
    rows = [[r[0], f"{height * width - 10} 20"] if r[0] == "small.png_1" else r for r in rows]
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(",".join(r) + "\n" for r in rows))
    caught = runner.invoke(
        cli, ["check-submission", str(bad), "--bundle", str(three_class_bundle_path), "--images", str(images_dir)]
    )
    assert caught.exit_code == 1, caught.output
    problems = [line for line in caught.output.splitlines() if "[rle_" in line]
    assert len(problems) == 1 and "small.png" in problems[0], caught.output
    ids = tmp_path / "ids.txt"
    ids.write_text("big.png\nsmall.png\n")
    one_size = ["--bundle", str(three_class_bundle_path), "--ids", str(ids), "--height", "200", "--width", "200"]
    assert runner.invoke(cli, ["check-submission", str(bad), *one_size]).exit_code == 0  # fits 200x200


# ---------------------------------------------------------------------------------------------- service
@pytest.fixture
def client(tmp_path: Path, three_class_predictor: CascadePredictor, images_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "state", num_samples=1, data_root=images_dir.parent)
    with running_client(settings, loader_for(three_class_predictor, "embedded:three")) as c:
        yield c


def test_service_json_model_and_gui_config_carry_the_bundles_classes(
    client: TestClient, three_class_predictor: CascadePredictor, images: dict[str, np.ndarray]
) -> None:
    image = images["small.png"]
    body = client.post("/predict", files={"file": ("small.png", encode_image(image, "PNG"), "image/png")}).json()
    assert [c["name"] for c in body["classes"]] == ["inclusion", "patches", "scratches"]
    assert (body["height"], body["width"]) == SHAPES["small.png"]
    want = three_class_predictor.predict([image], ["small.png"])[0].to_dict(include_timings=False)
    assert {k: v for k, v in body.items() if k != "timings"} == want
    files = {"file": ("small.png", encode_image(image, "PNG"), "image/png")}
    encoded = client.post("/predict?masks=true&overlay=true", files=files).json()
    assert sorted(encoded["mask_png"]) == ["1", "2", "3"]
    assert decode_image(base64.b64decode(encoded["overlay_png"])).shape == (*SHAPES["small.png"], 3)

    model = client.get("/model").json()
    assert model["bundle"] == "embedded:three"
    assert model["class_ids"] == [1, 2, 3]
    assert model["class_names"] == list(THREE_CLASSES.names)
    assert model["class_colours"] == [list(c) for c in THREE_CLASSES.colours]
    assert model["image_size"] == list(THREE_CLASS_IMAGE_SIZE)
    assert len(model["thresholds"]) == 3 and model["thresholds"][1]["prob_threshold"] == 1.0

    config = client.get("/gui/config").json()
    assert [(c["class_id"], c["name"], tuple(c["colour"])) for c in config["classes"]] == list(
        zip(THREE_CLASSES.ids, THREE_CLASSES.names, THREE_CLASSES.colours, strict=True)
    )
    assert config["image_size"] == list(THREE_CLASS_IMAGE_SIZE)
    sample = client.get(config["samples"][0]["url"])  # synthetic samples are cut to the bundle's size
    assert decode_image(sample.content).shape == (*THREE_CLASS_IMAGE_SIZE, 3)


def test_service_batch_csv_metrics_and_postprocess_use_the_bundles_classes(
    client: TestClient, three_class_predictor: CascadePredictor, images: dict[str, np.ndarray]
) -> None:
    files = [("files", (name, encode_image(image, "PNG"), "image/png")) for name, image in images.items()]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    predictions = three_class_predictor.predict(list(images.values()), list(images))
    lines = "".join(format_image_rows(p.image_id, p.rles, Layout.IMAGE_CLASS, p.class_ids) for p in predictions)
    assert response.text == submission_header(Layout.IMAGE_CLASS) + lines
    assert len(_csv_rows(response.text)) == 1 + 3 * len(images)

    text = client.get("/metrics").text
    for cid, name in zip(THREE_CLASSES.ids, THREE_CLASSES.names, strict=True):  # every class's series, from the start
        assert f'cascade_class_positives_total{{class_id="{cid}",name="{name}"}}' in text
    assert 'class_id="4"' not in text and "pits" not in text

    analysed = client.post("/gui/analyze", data={"sample": client.get("/gui/samples").json()[0]["name"]}).json()
    assert analysed["segmented"] == [1, 2, 3] and sorted(analysed["mask_png"]) == ["1", "2", "3"]
    update = client.post(
        f"/postprocess/{analysed['session_id']}", json={"classes": [{"class_id": 2, "prob_threshold": 0}]}
    )
    assert update.status_code == 200 and update.json()["params"][1]["prob_threshold"] == 0.0
    unknown = client.post(f"/postprocess/{analysed['session_id']}", json={"classes": [{"class_id": 4, "min_area": 1}]})
    assert unknown.status_code == 422 and "valid ids are [1, 2, 3]" in unknown.json()["detail"]


def test_folder_job_writes_three_rows_per_image(client: TestClient, images_dir: Path) -> None:
    # the job's predictor proxy passes the served manifest on, so score_folder learns the bundle's classes
    job = client.post("/jobs", json={"folder": images_dir.name}).json()
    deadline = time.monotonic() + 120
    while (status := client.get(f"/jobs/{job['id']}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["state"] == "done" and status["failed"] == 0, status
    rows = _csv_rows(client.get(f"/jobs/{job['id']}/submission.csv").text)
    assert [r[0] for r in rows[1:]] == [f"{name}_{cid}" for name in sorted(SHAPES) for cid in (1, 2, 3)]


def test_serve_accepts_a_shipped_bundle_name(
    tmp_path: Path, three_class_bundle_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from service import ServiceSettings
    from service.state import bundle_label, default_loader

    shipped = tmp_path / "data"
    shipped.mkdir()
    shutil.copy(three_class_bundle_path, shipped / "three.cascade.safetensors")
    monkeypatch.setenv(embedded.BUNDLES_DIR_ENV, str(shipped))
    assert "three" in embedded.embedded_bundle_names()

    for spec in ("three", "embedded:three"):
        predictor, label = default_loader(make_settings(tmp_path / "state", bundle=spec))
        assert label == "embedded:three" and predictor.manifest.class_names == THREE_CLASSES.names
    assert ServiceSettings(bundle=three_class_bundle_path).bundle == str(three_class_bundle_path)
    assert bundle_label(three_class_bundle_path) == str(three_class_bundle_path)

    served: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(kwargs))
    result = runner.invoke(cli, ["serve", "--bundle", "three", "--port", "0", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "serving embedded:three (3 classes: inclusion, patches, scratches)" in result.output
    assert served["port"] == 0
    missing = runner.invoke(cli, ["serve", "--bundle", "nope", "--state-dir", str(tmp_path / "s")])
    assert missing.exit_code == 2


# ---------------------------------------------------------------------------------------------- Severstal default
def test_severstal_default_is_unchanged(tmp_path: Path, service_predictor, images: dict[str, np.ndarray]) -> None:
    with running_client(make_settings(tmp_path / "state"), loader_for(service_predictor)) as client:
        model = client.get("/model").json()
        assert model["class_names"] == list(SEVERSTAL.names)
        assert model["class_colours"] == [list(c) for c in SEVERSTAL.colours]
        assert model["image_size"] == [256, 1600]
        assert client.get("/gui/config").json()["image_size"] == [256, 1600]
        image = images["small.png"]
        body = client.post("/predict", files={"file": ("s.png", encode_image(image, "PNG"), "image/png")}).json()
        assert [c["name"] for c in body["classes"]] == ["pits", "vertical_marks", "scratches", "blotches"]
        csv_text = client.post("/predict/batch", files=[("files", ("s.png", encode_image(image, "PNG")))]).text
        assert [r[0] for r in _csv_rows(csv_text)[1:]] == [f"s.png_{cid}" for cid in (1, 2, 3, 4)]
