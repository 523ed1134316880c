"""The HTTP API with the tiny bundle: health, readiness, model, predict in every format, batch CSV, metrics."""

from __future__ import annotations

import base64
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cascade.formats import read_annotations
from service import create_app
from tests.fixtures.service import encode_image, loader_for, make_settings, running_client


@pytest.fixture
def client(tmp_path: Path, service_predictor) -> Iterator[TestClient]:
    """A ready app serving the tiny bundle."""
    with running_client(make_settings(tmp_path / "state"), loader_for(service_predictor)) as c:
        yield c


def _expected(predictor, image: np.ndarray, image_id: str) -> dict:
    return predictor.predict([image], [image_id])[0].to_dict(include_timings=False)


def _without_timings(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "timings"}


def test_readyz_is_503_until_the_model_loaded_while_healthz_answers(tmp_path: Path, service_predictor) -> None:
    release = threading.Event()

    def _slow_loader(settings):
        release.wait(30)
        return service_predictor, "slow"

    app = create_app(make_settings(tmp_path), loader=_slow_loader)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        loading = client.get("/readyz")
        assert loading.status_code == 503
        assert loading.json()["status"] == "loading"
        assert client.post("/predict", content=b"x", headers={"content-type": "image/png"}).status_code == 503
        release.set()
        assert app.state.cascade.wait_loaded(60)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True, "status": "ready", "detail": None}


def test_failed_load_keeps_readyz_503_with_the_reason(tmp_path: Path) -> None:
    def _broken(settings):
        raise FileNotFoundError("no bundle at /nowhere")

    app = create_app(make_settings(tmp_path), loader=_broken)
    with TestClient(app) as client:
        app.state.cascade.wait_loaded(30)
        body = client.get("/readyz").json()
        assert body["status"] == "failed" and "no bundle at /nowhere" in body["detail"]
        assert client.get("/healthz").status_code == 200


def test_model_returns_the_manifest(client: TestClient, service_predictor) -> None:
    body = client.get("/model").json()
    manifest = service_predictor.manifest
    assert body["manifest"] == manifest.to_dict()
    assert body["class_names"] == list(manifest.class_names)
    assert body["runtime"] == "torch" and body["device"] == "cpu"
    assert [t["prob_threshold"] for t in body["thresholds"]] == [c.prob_threshold for c in manifest.classes]
    assert body["segmenters"]["1"]["arch"] == "FPN"


@pytest.mark.parametrize(
    ("fmt", "mode", "media"),
    [
        ("JPEG", "RGB", "image/jpeg"),
        ("PNG", "L", "image/png"),
        ("PNG", "RGBA", "image/png"),
        ("PNG", "I;16", "image/png"),
        ("BMP", "RGB", "image/bmp"),
        ("TIFF", "RGB", "image/tiff"),
    ],
)
def test_predict_equals_the_predictor_for_every_format(
    client: TestClient, service_predictor, service_images: list[np.ndarray], fmt: str, mode: str, media: str
) -> None:
    from cascade.imageio import decode_image

    rgb = service_images[0]
    if mode == "L":
        source = rgb[:, :, 0]
    elif mode == "RGBA":
        source = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    elif mode == "I;16":
        source = rgb[:, :, 0].astype(np.uint16) * 257
    else:
        source = rgb
    data = encode_image(source, fmt)
    name = f"steel.{fmt.lower()}"
    response = client.post("/predict", files={"file": (name, data, media)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert _without_timings(body) == _expected(service_predictor, decode_image(data), name)
    assert {"decode", "inference", "request", "classifier"} <= body["timings"].keys()


def test_predict_masks_and_overlay_encode_the_masks(
    client: TestClient, service_predictor, service_images: list[np.ndarray]
) -> None:
    image = service_images[1]
    response = client.post(
        "/predict", params={"masks": "true", "overlay": "true"}, files={"file": ("m.png", encode_image(image, "PNG"))}
    )
    assert response.status_code == 200
    body = response.json()
    prediction = service_predictor.predict([image], ["m.png"])[0]
    for cls in prediction.classes:
        png = Image.open(io.BytesIO(base64.b64decode(body["mask_png"][str(cls.class_id)])))
        assert png.size == (image.shape[1], image.shape[0])
        np.testing.assert_array_equal(np.asarray(png) > 0, cls.mask)
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["overlay_png"]))))
    assert overlay.shape == image.shape
    masked = prediction.masks.any(axis=0)
    np.testing.assert_array_equal(overlay[~masked], image[~masked])
    if masked.any():
        assert not np.array_equal(overlay[masked], image[masked])


def test_raw_image_body_gets_a_content_hash_id(client: TestClient, service_images: list[np.ndarray]) -> None:
    data = encode_image(service_images[2], "PNG")
    first = client.post("/predict", content=data, headers={"content-type": "image/png"}).json()
    second = client.post("/predict", content=data, headers={"content-type": "image/png"}).json()
    assert first["image_id"].startswith("sha256:") and len(first["image_id"]) == len("sha256:") + 16
    assert _without_timings(first) == _without_timings(second)
    named = client.post("/predict?image_id=dir/x.png", content=data, headers={"content-type": "image/png"})
    assert named.json()["image_id"] == "x.png"


def _expected_csv(predictor, images: dict[str, np.ndarray]) -> dict[str, tuple[str, ...]]:
    return {name: tuple(predictor.predict([img], [name])[0].rles) for name, img in images.items()}


def test_batch_streams_a_sorted_submission(
    client: TestClient, service_predictor, service_images: list[np.ndarray], tmp_path: Path
) -> None:
    images = {"c.png": service_images[0], "a.png": service_images[1], "b.png": service_images[2]}
    files = [("files", (name, encode_image(img, "PNG"), "image/png")) for name, img in images.items()]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0] == "ImageId_ClassId,EncodedPixels"
    assert [line.split(",")[0] for line in lines[1:]] == [f"{n}_{c}" for n in sorted(images) for c in (1, 2, 3, 4)]
    out = tmp_path / "sub.csv"
    out.write_text(response.text)
    annotations = read_annotations(out)
    assert annotations.image_ids == tuple(sorted(images))
    assert dict(annotations.rles) == _expected_csv(service_predictor, images)


def test_batch_accepts_a_zip(client: TestClient, service_predictor, service_images: list[np.ndarray]) -> None:
    images = {"z2.jpg": service_images[3], "z1.bmp": service_images[4]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("nested/z2.jpg", encode_image(images["z2.jpg"], "JPEG"))
        archive.writestr("z1.bmp", encode_image(images["z1.bmp"], "BMP"))
        archive.writestr("readme.txt", "not an image")
        archive.writestr("__MACOSX/._z1.bmp", "resource fork")
    response = client.post("/predict/batch", files={"files": ("set.zip", buf.getvalue(), "application/zip")})
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == [f"{n}_{c}" for n in ("z1.bmp", "z2.jpg") for c in range(1, 5)]


def test_predict_json_equals_the_cli_json(
    client: TestClient, tiny_bundle_path: Path, service_images: list[np.ndarray], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cascade.cli.main import app

    path = tmp_path / "cli.png"
    path.write_bytes(encode_image(service_images[5], "PNG"))
    args = ["predict", str(path), "--json", "--bundle", str(tiny_bundle_path), "--runtime", "torch", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout[result.stdout.index("{") :])
    served = client.post("/predict", files={"file": ("cli.png", path.read_bytes(), "image/png")}).json()
    assert _without_timings(served) == cli


def test_metrics_expose_latency_batches_classes_and_errors(
    client: TestClient, service_predictor, service_images: list[np.ndarray]
) -> None:
    ok = client.post("/predict", files={"file": ("ok.png", encode_image(service_images[0], "PNG"))}).json()
    client.post("/predict", files={"file": ("bad.png", b"not an image", "image/png")})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'cascade_request_latency_seconds_count{method="POST",route="/predict"} 2.0' in text
    assert "cascade_batch_size_bucket" in text
    assert 'cascade_queue_depth{priority="interactive"}' in text
    assert 'cascade_images_total{priority="interactive"} 1.0' in text
    assert 'cascade_errors_total{status="415"} 1.0' in text
    for cls in ok["classes"]:
        series = f'cascade_class_positives_total{{class_id="{cls["class_id"]}",name="{cls["name"]}"}} 1.0'
        assert (series in text) == cls["present"], series
    assert "cascade_model_ready 1.0" in text


def test_openapi_documents_the_routes_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/predict/batch", "/jobs", "/jobs/{job_id}", "/model", "/healthz", "/readyz"):
        assert path in spec["paths"], path
    predict = spec["paths"]["/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert {"413", "415", "422", "503", "504"} <= predict["responses"].keys()
    assert spec["components"]["schemas"]["PredictionResponse"]["examples"]
    assert client.get("/docs").status_code == 200
