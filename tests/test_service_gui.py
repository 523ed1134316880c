"""The web GUI: its API (analyse, re-post-process with the gate) and the page itself in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cascade.imageio import decode_image
from service import create_app
from tests.fixtures.browser import canvas_pixel, open_page, requires_chromium
from tests.fixtures.service import (
    encode_image,
    foreign_image,
    loader_for,
    make_settings,
    running_client,
    uvicorn_server,
)


@pytest.fixture
def gui_client(tmp_path: Path, service_predictor) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, num_samples=2, gui_cache_size=2)
    with running_client(settings, loader_for(service_predictor)) as client:
        yield client


def _strip(body: dict) -> dict:
    return {k: body[k] for k in ("image_id", "height", "width", "classes")}


def test_config_and_samples(gui_client: TestClient) -> None:
    config = gui_client.get("/gui/config").json()
    assert [c["class_id"] for c in config["classes"]] == [1, 2, 3, 4]
    assert config["classes"][0]["colour"] == [230, 25, 75]
    assert config["runtime"] == "torch"
    assert len(config["samples"]) == 2
    sample = gui_client.get(config["samples"][0]["url"])
    assert sample.status_code == 200 and sample.headers["content-type"] == "image/jpeg"
    assert decode_image(sample.content).shape == (256, 1600, 3)
    assert gui_client.get("/gui/samples/nope.jpg").status_code == 404
    assert gui_client.get("/").headers["content-type"].startswith("text/html")


def test_analyze_then_postprocess_equals_predict_with_those_params(
    gui_client: TestClient, service_predictor, service_images: list[np.ndarray]
) -> None:
    image = service_images[2]
    analysed = gui_client.post("/gui/analyze", files={"file": ("g.png", encode_image(image, "PNG"), "image/png")})
    assert analysed.status_code == 200, analysed.text
    body = analysed.json()
    assert _strip(body) == service_predictor.predict([image], ["g.png"])[0].to_dict(include_timings=False)
    assert body["segmented"] == [1, 2, 3, 4]  # segment_all: every map is there for the sliders
    assert decode_image(base64.b64decode(body["image_jpeg"])).shape == image.shape

    manifest = service_predictor.manifest
    probabilities = [c["probability"] for c in body["classes"]]
    # class 1: gate forced open, every pixel on; class 2: gate shut above its probability; class 3: other pixels
    updates = [
        {"class_id": 1, "prob_threshold": 0.0, "pixel_threshold": 0.0},
        {"class_id": 2, "prob_threshold": min(1.0, probabilities[1] + 0.01)},
        {"class_id": 3, "prob_threshold": 0.0, "pixel_threshold": 0.45},
    ]
    response = gui_client.post(f"/postprocess/{body['session_id']}", json={"classes": updates})
    assert response.status_code == 200, response.text
    params = list(manifest.classes)
    for update in updates:
        k = update["class_id"] - 1
        params[k] = dataclasses.replace(params[k], **{key: v for key, v in update.items() if key != "class_id"})
    want = service_predictor.predict([image], ["g.png"], params=params)[0]
    got = response.json()
    assert _strip(got) == want.to_dict(include_timings=False)
    assert got["classes"][0]["area"] == image.shape[0] * image.shape[1]
    assert got["classes"][1]["present"] is False
    assert got["params"][0]["prob_threshold"] == 0.0 and "image_jpeg" not in got


def test_postprocess_closes_and_reopens_a_gate(gui_client: TestClient, service_images: list[np.ndarray]) -> None:
    image = service_images[2]
    body = gui_client.post("/gui/analyze", files={"file": ("g.png", encode_image(image, "PNG"), "image/png")}).json()
    everything = {"class_id": 1, "prob_threshold": 0.0, "pixel_threshold": 0.0}
    shut = gui_client.post(f"/postprocess/{body['session_id']}", json={"classes": [{**everything, "closed": True}]})
    assert shut.status_code == 200, shut.text
    assert shut.json()["classes"][0]["present"] is False and shut.json()["params"][0]["closed"] is True
    reopened = gui_client.post(
        f"/postprocess/{body['session_id']}", json={"classes": [{**everything, "closed": False}]}
    )
    assert reopened.json()["classes"][0]["area"] == image.shape[0] * image.shape[1]


def test_postprocess_errors_and_lru_eviction(gui_client: TestClient, service_images: list[np.ndarray]) -> None:
    def analyse(name: str) -> str:
        files = {"file": (name, encode_image(service_images[0], "PNG"), "image/png")}
        return gui_client.post("/gui/analyze", files=files).json()["session_id"]

    first = analyse("1.png")
    bad_class = gui_client.post(f"/postprocess/{first}", json={"classes": [{"class_id": 9, "prob_threshold": 0.1}]})
    assert bad_class.status_code == 422 and "unknown class id 9" in bad_class.json()["detail"]
    bad_value = gui_client.post(f"/postprocess/{first}", json={"classes": [{"class_id": 1, "prob_threshold": 2}]})
    assert bad_value.status_code == 422 and "prob_threshold" in bad_value.json()["detail"]
    analyse("2.png")
    analyse("3.png")  # cache size 2: the first analysis is evicted
    gone = gui_client.post(f"/postprocess/{first}", json={"classes": []})
    assert gone.status_code == 404 and "analyse the image again" in gone.json()["detail"]
    missing = gui_client.post("/gui/analyze", data={"other": "x"})
    assert missing.status_code == 422 and "'sample'" in missing.json()["detail"]


# ---------------------------------------------------------------------------------------------- browser
browser = requires_chromium


@pytest.fixture(scope="module")
def gui_url(tmp_path_factory: pytest.TempPathFactory, service_predictor) -> Iterator[str]:
    settings = make_settings(tmp_path_factory.mktemp("gui"), num_samples=2)
    with uvicorn_server(create_app(settings, loader=loader_for(service_predictor))) as url:
        yield url


@pytest.fixture(scope="module")
def page(gui_url: str, chromium):
    context = chromium.new_context(accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gui_url)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(gui_url)
    page.wait_for_selector("body[data-state=idle]")
    yield page
    context.close()


def _pixel(page, x: int, y: int) -> list[int]:
    return canvas_pixel(page, x, y)


def _renders(page) -> int:
    return int(page.get_attribute("body", "data-renders") or 0)


def _wait_render(page, after: int) -> None:
    """Wait until the page drew a new result (more than ``after`` renders) and is idle."""
    page.wait_for_function(
        f"Number(document.body.dataset.renders) > {after} && document.body.dataset.state === 'ready'"
    )


def _set_slider(page, class_id: int, cls: str, value: float) -> None:
    renders = _renders(page)
    page.locator(f'#classes tr[data-class="{class_id}"] .{cls}').fill(str(value))
    _wait_render(page, renders)


@browser
@pytest.mark.browser
def test_gui_upload_overlay_toggle_copy_and_download(page, tmp_path: Path, service_images: list[np.ndarray]) -> None:
    image = service_images[3]
    height, width = image.shape[:2]
    upload = tmp_path / "steel.png"
    upload.write_bytes(encode_image(image, "PNG"))
    renders = _renders(page)
    page.set_input_files("#file-input", str(upload))
    _wait_render(page, renders)
    assert page.evaluate("[document.querySelector('#view').width, document.querySelector('#view').height]") == [
        width,
        height,
    ]
    assert page.inner_text("#image-id").startswith("steel.png")

    # open class 1's gate and every pixel: its overlay covers the image
    _set_slider(page, 1, "prob-threshold", 0)
    _set_slider(page, 1, "pixel-threshold", 0)
    assert page.inner_text('#classes tr[data-class="1"] .area') == str(height * width)
    for other in (2, 3, 4):  # only class 1 drawn from here on
        page.uncheck(f'#classes tr[data-class="{other}"] .toggle')
    covered = _pixel(page, width // 2, height // 2)
    page.uncheck('#classes tr[data-class="1"] .toggle')
    bare = _pixel(page, width // 2, height // 2)
    page.check('#classes tr[data-class="1"] .toggle')
    assert _pixel(page, width // 2, height // 2) == covered
    colour, opacity = (230, 25, 75), 0.5
    for channel in range(3):  # canvas = image blended with the class colour at the opacity slider's value
        assert abs(covered[channel] - (bare[channel] * (1 - opacity) + colour[channel] * opacity)) <= 2
    page.locator("#opacity").fill("0")
    assert _pixel(page, width // 2, height // 2) == bare
    page.locator("#opacity").fill("50")

    page.click('#classes tr[data-class="1"] .copy-rle')
    assert page.evaluate("navigator.clipboard.readText()") == f"1 {height * width}"

    with page.expect_download() as info:
        page.click("#download-csv")
    csv = Path(info.value.path()).read_text().splitlines()
    assert csv[0] == "ImageId_ClassId,EncodedPixels"
    assert csv[1] == f"steel.png_1,1 {height * width}"
    assert [line.split(",")[0] for line in csv[1:]] == [f"steel.png_{c}" for c in (1, 2, 3, 4)]


@browser
@pytest.mark.browser
def test_gui_sample_button_analyses_a_sample(page) -> None:
    renders = int(page.get_attribute("body", "data-renders") or 0)
    page.locator("#samples button").first.click()
    page.wait_for_function(
        f"Number(document.body.dataset.renders) > {renders} && document.body.dataset.state === 'ready'"
    )
    assert page.evaluate("document.querySelector('#view').width") == 1600
    assert page.inner_text("#image-id").endswith("(1600×256)")
    probabilities = page.locator("#classes td.prob").all_inner_texts()
    assert len(probabilities) == 4 and all(0 <= float(p) <= 1 for p in probabilities)


@pytest.fixture(scope="module")
def three_class_page(tmp_path_factory: pytest.TempPathFactory, three_class_predictor, chromium):
    """The page served with the 3-class, 200x200 bundle of ``tests.fixtures.predictor``."""
    settings = make_settings(tmp_path_factory.mktemp("gui3"), num_samples=1)
    app = create_app(settings, loader=loader_for(three_class_predictor, "embedded:three"))
    with uvicorn_server(app) as url, open_page(chromium, url, viewport={"width": 1100, "height": 760}) as page:
        yield page


@browser
@pytest.mark.browser
def test_gui_builds_legend_toggles_and_sliders_from_a_three_class_bundle(three_class_page, tmp_path: Path) -> None:
    from tests.fixtures.predictor import THREE_CLASSES

    page = three_class_page
    colours = [f"rgb({r}, {g}, {b})" for r, g, b in THREE_CLASSES.colours]
    swatch_colours = "(s) => Array.from(document.querySelectorAll(s), e => getComputedStyle(e).backgroundColor)"
    assert page.locator("#legend li").all_inner_texts() == list(THREE_CLASSES.names)
    assert page.evaluate(swatch_colours, "#legend .swatch") == colours
    assert page.evaluate(swatch_colours, "#classes .swatch") == colours
    assert [row.split("\t")[1].strip() for row in page.locator("#classes tbody tr").all_inner_texts()] == [
        f"{cid} · {name}" for cid, name in zip(THREE_CLASSES.ids, THREE_CLASSES.names, strict=True)
    ]
    for control in (".toggle", ".prob-threshold", ".pixel-threshold"):
        assert page.locator(f"#classes tbody {control}").count() == 3
    assert "3 classes" in page.inner_text("#model-info")
    view = "[document.querySelector('#view').width, document.querySelector('#view').height]"
    assert page.evaluate(view) == [200, 200]  # the bundle's image size before any image

    renders = _renders(page)
    page.locator("#samples button").first.click()
    _wait_render(page, renders)
    assert page.evaluate(view) == [200, 200]
    assert page.locator("#classes td.prob").count() == 3
    box = page.locator("#view").bounding_box()
    assert box is not None and abs(box["width"] - box["height"]) <= 2  # a square image stays square
    shot = tmp_path / "gui-three-classes.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0


def _upload(page, path: Path) -> None:
    renders = _renders(page)
    page.set_input_files("#file-input", str(path))
    _wait_render(page, renders)


@browser
@pytest.mark.browser
def test_gui_shows_no_ood_badge_without_a_reference(page, tmp_path: Path) -> None:
    # the tiny bundle has no out-of-distribution reference: even a colourful non-steel image raises no warning
    upload = tmp_path / "foreign.png"
    upload.write_bytes(encode_image(foreign_image(), "PNG"))
    _upload(page, upload)
    assert page.is_hidden("#ood-badge")
    assert page.evaluate("fetch('/gui/config').then(r => r.json()).then(c => c.ood_threshold)") is None


@browser
@pytest.mark.browser
def test_gui_outlines_fill_toggle_and_why_absent(page, tmp_path: Path, service_images: list[np.ndarray]) -> None:
    image = service_images[2]
    height, width = image.shape[:2]
    upload = tmp_path / "outline.png"
    upload.write_bytes(encode_image(image, "PNG"))
    page.uncheck("#keep-thresholds")
    _upload(page, upload)
    for class_id in (2, 3, 4):
        page.uncheck(f'#classes tr[data-class="{class_id}"] .toggle')
    page.check('#classes tr[data-class="1"] .toggle')
    _set_slider(page, 1, "prob-threshold", 0)
    _set_slider(page, 1, "pixel-threshold", 0)
    _set_slider(page, 1, "min-area", 0)
    page.check("#fill")
    page.check("#outline")
    colour = [230, 25, 75, 255]
    assert _pixel(page, 0, 0) == colour and _pixel(page, 1, height // 2) == colour  # the border, opaque
    filled = _pixel(page, width // 2, height // 2)
    page.uncheck("#fill")
    centre, border = _pixel(page, width // 2, height // 2), _pixel(page, 0, 0)
    page.uncheck('#classes tr[data-class="1"] .toggle')
    bare = _pixel(page, width // 2, height // 2)
    page.check('#classes tr[data-class="1"] .toggle')
    assert centre == bare != filled and border == colour  # outlines only: the inside shows the steel
    page.check("#fill")

    # a gate that is open but a pixel threshold nothing reaches: "not present", and the page says why
    _set_slider(page, 1, "pixel-threshold", 1)
    why = page.inner_text('#classes tr[data-class="1"] .present')
    assert why.startswith("no (gate open") and "pixel threshold 1.00" in why, why
    _set_slider(page, 1, "prob-threshold", 1)
    assert "< gate 1.00" in page.inner_text('#classes tr[data-class="1"] .present')


@browser
@pytest.mark.browser
def test_gui_min_area_slider_is_sent_and_thresholds_can_be_kept(
    page, tmp_path: Path, service_images: list[np.ndarray]
) -> None:
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    first.write_bytes(encode_image(service_images[0], "PNG"))
    second.write_bytes(encode_image(service_images[1], "PNG"))
    page.uncheck("#keep-thresholds")
    _upload(page, first)
    renders = _renders(page)
    with page.expect_request("**/postprocess/**") as request:
        page.locator('#classes tr[data-class="3"] .min-area').fill("500")
    _wait_render(page, renders)
    sent = {c["class_id"]: c for c in request.value.post_data_json["classes"]}
    assert sent[3]["min_area"] == 500
    assert page.inner_text('#classes tr[data-class="3"] .min-area + output') == "500"

    page.check("#keep-thresholds")
    renders = _renders(page)
    page.set_input_files("#file-input", str(second))
    page.wait_for_function(  # the analysis, then the post-processing under the kept thresholds
        f"Number(document.body.dataset.renders) >= {renders + 2} && document.body.dataset.state === 'ready'"
    )
    assert page.input_value('#classes tr[data-class="3"] .min-area') == "500"
    page.uncheck("#keep-thresholds")


@browser
@pytest.mark.browser
def test_gui_error_clears_the_previous_result_and_favicon(
    page, tmp_path: Path, service_images: list[np.ndarray]
) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(encode_image(service_images[4], "PNG"))
    bad.write_bytes(b"this is not an image")
    _upload(page, good)
    assert page.inner_text('#classes tr[data-class="1"] .prob') != "–"
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("body[data-state=error]")
    assert page.inner_text("#status").startswith("4")  # 415 or 422, with the server's reason
    assert set(page.locator("#classes td.prob").all_inner_texts()) == {"–"}
    assert page.is_disabled("#download-csv") and page.inner_text("#image-id") == ""
    assert _pixel(page, 10, 10) == [0, 0, 0, 0]  # the previous image is gone from the canvas
    assert page.evaluate("document.querySelector('link[rel=icon]').getAttribute('href')") == "/static/favicon.svg"
    assert page.evaluate("fetch('/static/favicon.svg').then(r => r.status)") == 200
