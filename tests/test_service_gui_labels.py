"""What the web page says about an image beyond the prediction: which classes a sample's labels hold, its
ground truth (``service/samples.py``, ``GET /gui/samples/{name}/truth``, the dashed outlines) and the
out-of-distribution warning (``ood_score`` / ``in_distribution`` from ``/gui/analyze``, the badge)."""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cascade.classes import SEVERSTAL
from cascade.imageio import decode_image
from cascade.rle import encode
from service import create_app
from service.samples import SampleStore
from tests.fixtures.browser import canvas_pixel, open_page, requires_chromium
from tests.fixtures.predictor import THREE_CLASSES
from tests.fixtures.service import (
    SMALL_SHAPE,
    encode_image,
    foreign_image,
    loader_for,
    make_settings,
    running_client,
    uvicorn_server,
)

BOX = (slice(20, 60), slice(100, 200))
"""Class 2's labelled rectangle in ``a.png``: rows 20-59, columns 100-199."""


def _box_mask(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(SMALL_SHAPE, dtype=bool)
    mask[rows, cols] = True
    return mask


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory: pytest.TempPathFactory, service_images: list[np.ndarray]) -> Path:
    """A Kaggle-CSV folder: ``a.png`` holds class 2 (``BOX``), ``b.png`` is clean, ``c.png`` holds class 3."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "train_images").mkdir()
    for name, image in zip(("a.png", "b.png", "c.png"), service_images, strict=False):
        (root / "train_images" / name).write_bytes(encode_image(image, "PNG"))
    rows = [("a.png", 2, encode(_box_mask(*BOX))), ("c.png", 3, encode(_box_mask(slice(80, 90), slice(10, 30))))]
    (root / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n" + "".join(f"{i},{c},{r}\n" for i, c, r in rows))
    return root


@pytest.fixture(scope="module")
def ood_predictor(tiny_bundle_path: Path, service_images: list[np.ndarray]):
    """The tiny bundle with an out-of-distribution reference fitted on ``service_images``."""
    from cascade.bundle import load_bundle
    from cascade.ood import fit_reference, image_features
    from cascade.predictor import CascadePredictor

    reference = fit_reference(np.stack([image_features(image) for image in service_images]))
    bundle = load_bundle(tiny_bundle_path)
    bundle = dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, ood=reference))
    return CascadePredictor(bundle, device="cpu", runtime="torch")


# ---------------------------------------------------------------------------------------------- the store
def test_a_kaggle_csv_folder_gives_samples_with_their_classes(labelled_dir: Path) -> None:
    for folder in (labelled_dir / "train_images", labelled_dir):  # the images folder, or the CSV's folder
        store = SampleStore.from_dir(folder, classes=SEVERSTAL)
        assert store.names() == ["a.png", "b.png", "c.png"]
        assert [store.truth(n).present for n in store.names()] == [(2,), (), (3,)]
    truth = store.truth("a.png")
    assert truth.shape == SMALL_SHAPE and truth.class_ids == (1, 2, 3, 4)
    assert np.array_equal(truth.masks()[1], _box_mask(*BOX)) and not truth.masks()[[0, 2, 3]].any()
    # a limit keeps the first image of every class before the rest: b.png (clean) gives way to c.png
    assert SampleStore.from_dir(labelled_dir / "train_images", limit=2).names() == ["a.png", "c.png"]


def test_voc_plain_and_unfitting_folders(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    voc = tmp_path / "voc"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClass").mkdir()
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(voc / "JPEGImages" / "x.jpg")
    index = np.zeros((40, 50), np.uint8)
    index[5:15, 5:25] = 3
    Image.fromarray(index).save(voc / "SegmentationClass" / "x.png")
    store = SampleStore.from_dir(voc, classes=THREE_CLASSES)
    assert store.names() == ["x.jpg"] and store.truth("x.jpg").present == (3,)

    plain = SampleStore.from_dir(voc / "JPEGImages")  # images only: offered without labels
    assert plain.names() == ["x.jpg"] and plain.truth("x.jpg") is None

    bad = tmp_path / "bad"
    (bad / "train_images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad / "train_images" / "y.png")
    (bad / "train.csv").write_text("ImageId,ClassId,EncodedPixels\ny.png,7,1 3\n")  # class 7: not Severstal's
    with caplog.at_level(logging.WARNING, logger="service.samples"):
        store = SampleStore.from_dir(bad / "train_images", classes=SEVERSTAL)
    assert store.names() == ["y.png"] and store.truth("y.png") is None
    assert "without ground truth" in caplog.text


def test_synthetic_samples_carry_the_generator_masks_for_severstal_classes_only() -> None:
    store = SampleStore.synthetic(2, classes=SEVERSTAL)
    truths = [store.truth(n) for n in store.names()]
    assert all(t is not None and t.shape == (256, 1600) for t in truths)
    assert any(t.present for t in truths)  # samples showing a defect are preferred
    cut = SampleStore.synthetic(1, size=(200, 200), classes=THREE_CLASSES)  # another class set: no labels
    assert len(cut.names()) == 1 and cut.truth(cut.names()[0]) is None


# ---------------------------------------------------------------------------------------------- the API
@pytest.fixture
def labelled_client(tmp_path: Path, labelled_dir: Path, ood_predictor) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, samples_dir=labelled_dir / "train_images")
    with running_client(settings, loader_for(ood_predictor)) as client:
        yield client


def test_config_lists_classes_per_sample_and_serves_the_truth(labelled_client: TestClient, ood_predictor) -> None:
    config = labelled_client.get("/gui/config").json()
    assert [(s["name"], s["classes"]) for s in config["samples"]] == [("a.png", [2]), ("b.png", []), ("c.png", [3])]
    assert config["ood_threshold"] == pytest.approx(ood_predictor.manifest.ood.threshold)
    truth = labelled_client.get(config["samples"][0]["truth_url"])
    assert truth.status_code == 200, truth.text
    body = truth.json()
    assert (body["height"], body["width"], body["classes"]) == (*SMALL_SHAPE, [2])
    masks = {cid: decode_image(base64.b64decode(png))[..., 0] > 127 for cid, png in body["mask_png"].items()}
    assert sorted(masks) == ["1", "2", "3", "4"]
    assert np.array_equal(masks["2"], _box_mask(*BOX)) and not masks["1"].any()
    missing = labelled_client.get("/gui/samples/nope.png/truth")
    assert missing.status_code == 404 and "no sample named" in missing.json()["detail"]


def test_unlabelled_samples_have_no_truth(tmp_path: Path, labelled_dir: Path, service_predictor) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "p.png").write_bytes((labelled_dir / "train_images" / "a.png").read_bytes())
    settings = make_settings(tmp_path, samples_dir=plain)
    with running_client(settings, loader_for(service_predictor)) as client:
        config = client.get("/gui/config").json()
        assert config["samples"] == [{"name": "p.png", "url": "/gui/samples/p.png", "classes": None, "truth_url": None}]
        assert config["ood_threshold"] is None  # the tiny bundle has no reference
        gone = client.get("/gui/samples/p.png/truth")
        assert gone.status_code == 404 and "has no labels" in gone.json()["detail"]
        body = client.post("/gui/analyze", data={"sample": "p.png"}).json()
        assert body.get("ood_score") is None and body.get("in_distribution") is None


def test_gui_analyze_and_postprocess_carry_the_ood_fields(
    labelled_client: TestClient, ood_predictor, service_images: list[np.ndarray]
) -> None:
    threshold = ood_predictor.manifest.ood.threshold
    steel = labelled_client.post("/gui/analyze", files={"file": ("s.png", encode_image(service_images[4], "PNG"))})
    assert steel.status_code == 200, steel.text
    assert steel.json()["in_distribution"] is True and steel.json()["ood_score"] <= threshold
    foreign = labelled_client.post("/gui/analyze", files={"file": ("f.png", encode_image(foreign_image(), "PNG"))})
    body = foreign.json()
    assert body["in_distribution"] is False and body["ood_score"] > threshold
    again = labelled_client.post(f"/postprocess/{body['session_id']}", json={"classes": []}).json()
    assert (again["ood_score"], again["in_distribution"]) == (body["ood_score"], False)
    schema = labelled_client.get("/openapi.json").json()["components"]["schemas"]["SessionResponse"]["properties"]
    assert {"ood_score", "in_distribution"} <= set(schema)


# ---------------------------------------------------------------------------------------------- the page
@pytest.fixture(scope="module")
def labelled_page(tmp_path_factory: pytest.TempPathFactory, labelled_dir: Path, ood_predictor, chromium):
    """The page served with the OOD-aware tiny bundle and the labelled samples."""
    settings = make_settings(tmp_path_factory.mktemp("gui-labels"), samples_dir=labelled_dir / "train_images")
    app = create_app(settings, loader=loader_for(ood_predictor))
    with uvicorn_server(app) as url, open_page(chromium, url, viewport={"width": 1200, "height": 900}) as page:
        yield page


def _wait_render(page, action) -> None:
    renders = int(page.get_attribute("body", "data-renders") or 0)
    action()
    page.wait_for_function(
        f"Number(document.body.dataset.renders) > {renders} && document.body.dataset.state === 'ready'"
    )


@requires_chromium
@pytest.mark.browser
def test_sample_buttons_say_which_classes_they_hold(labelled_page) -> None:
    page = labelled_page
    assert page.locator("#samples .sample-name").all_inner_texts() == ["a.png", "b.png", "c.png"]
    assert page.locator("#samples .sample-classes").all_inner_texts() == ["vertical_marks", "clean", "scratches"]
    swatch = "document.querySelector('#samples .chip[data-class=\"2\"] .swatch').style.background"
    assert page.evaluate(swatch) == "rgb(60, 180, 75)"
    assert page.get_attribute("#samples button[data-sample='a.png']", "title") == "a.png: labelled vertical_marks"


@requires_chromium
@pytest.mark.browser
def test_ground_truth_toggle_draws_dashed_outlines(labelled_page, tmp_path: Path, service_images) -> None:
    page = labelled_page
    _wait_render(page, lambda: page.click("#samples button[data-sample='a.png']"))
    assert "Labelled: vertical_marks." in page.inner_text("#status")
    page.uncheck("#fill")
    page.uncheck("#outline")  # no prediction drawn: the canvas shows the image, then the ground truth
    assert page.is_enabled("#truth") and not page.is_checked("#truth")
    top, left = BOX[0].start, BOX[1].start
    corner, dash_gap, inside = (left, top), (left + 6, top), (left + 50, top + 20)  # gap: (x + y) // 6 odd
    bare = {p: canvas_pixel(page, *p) for p in (corner, dash_gap, inside)}
    page.check("#truth")
    assert canvas_pixel(page, *corner) == [60, 180, 75, 255]  # class 2's colour on its border
    assert canvas_pixel(page, *dash_gap) == [255, 255, 255, 255]  # the white dash: not the prediction's look
    assert canvas_pixel(page, *inside) == bare[inside]  # outline only
    assert bare[corner] != [60, 180, 75, 255]
    page.uncheck('#classes tr[data-class="2"] .toggle')  # the class toggles hide its ground truth too
    assert canvas_pixel(page, *corner) == bare[corner]
    page.check('#classes tr[data-class="2"] .toggle')
    page.screenshot(path=str(tmp_path / "gui-ground-truth.png"), full_page=True)

    upload = tmp_path / "upload.png"  # an uploaded image has no labels: the toggle is off and disabled
    upload.write_bytes(encode_image(service_images[0], "PNG"))
    _wait_render(page, lambda: page.set_input_files("#file-input", str(upload)))
    assert page.is_disabled("#truth") and "Labelled" not in page.inner_text("#status")
    assert canvas_pixel(page, *corner) != [60, 180, 75, 255]
    page.check("#fill")
    page.check("#outline")


@requires_chromium
@pytest.mark.browser
def test_ood_badge_for_a_foreign_image_only(labelled_page, tmp_path: Path, service_images, ood_predictor) -> None:
    page = labelled_page
    steel, foreign = tmp_path / "steel.png", tmp_path / "foreign.png"
    steel.write_bytes(encode_image(service_images[5], "PNG"))
    foreign.write_bytes(encode_image(foreign_image(), "PNG"))
    _wait_render(page, lambda: page.set_input_files("#file-input", str(steel)))
    assert page.is_hidden("#ood-badge")
    _wait_render(page, lambda: page.set_input_files("#file-input", str(foreign)))
    assert page.is_visible("#ood-badge")
    text = page.inner_text("#ood-badge")
    assert "does not look like the images this model was trained on" in text and "suspicion" in text
    threshold = ood_predictor.manifest.ood.threshold
    assert f"> threshold {threshold:.2f}" in text and "out-of-distribution score" in text
    page.screenshot(path=str(tmp_path / "gui-ood.png"), full_page=True)
    _wait_render(page, lambda: page.set_input_files("#file-input", str(steel)))
    assert page.is_hidden("#ood-badge")  # the next, in-distribution image clears it
