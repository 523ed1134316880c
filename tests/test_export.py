"""Tests for cascade/export.py and the ``cascade export`` command."""

from __future__ import annotations

import dataclasses
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cascade.export as export_module
from cascade.bundle import LoadedBundle, load_bundle
from cascade.cli.main import app
from cascade.export import (
    bundle_cache_dir,
    bundle_fingerprint,
    cache_root,
    cached_export,
    export_model_onnx,
    load_export,
)
from cascade.manifest import BundleManifest
from cascade.predictor import CascadePredictor
from cascade.runtimes.onnx_runtime import OnnxRuntime, ort_session
from tests.fixtures.predictor import random_images

onnx = pytest.importorskip("onnx", reason="onnx not installed (extra 'export')")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed (extra 'export')")

KEYS = {"classifier", "segmenter_1", "segmenter_2", "segmenter_3", "segmenter_4"}


def test_cli_export_onnx_writes_a_self_describing_dir(tiny_bundle_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    result = CliRunner().invoke(app, ["export", "--format", "onnx", str(tiny_bundle_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest, files = load_export(out)
    assert set(files) == KEYS and all(p.suffix == ".onnx" for p in files.values())
    assert manifest.provenance["export"]["format"] == "onnx"
    assert dataclasses.replace(manifest, provenance={}) == dataclasses.replace(
        load_bundle(tiny_bundle_path).manifest, provenance={}
    )
    graph = onnx.load(str(files["segmenter_3"])).graph
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert graph.input[0].name == "image" and dims == ["batch", "", "height", "width"]


def test_export_dir_runs_without_torch_modules(
    confident_bundle: LoadedBundle, torch_predictor: CascadePredictor, predictor_cache: Path, tmp_path: Path
) -> None:
    files = export_module.export_onnx(confident_bundle, tmp_path / "exp")
    manifest, found = load_export(tmp_path / "exp")
    assert found == {k: v for k, v in files.items() if k != "manifest"}
    predictor = CascadePredictor.from_runtime(manifest, OnnxRuntime(found))
    images = random_images(2, seed=30)
    ref = torch_predictor.infer(images, "segment_all")
    out = predictor.infer(images, "segment_all")
    np.testing.assert_allclose(out.probabilities, ref.probabilities, atol=1e-4)
    np.testing.assert_allclose(out.maps[1][4], ref.maps[1][4], atol=1e-4)


def test_cli_export_rejects_unknown_format(tiny_bundle_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "-f", "tflite", str(tiny_bundle_path), "-o", str(tmp_path)])
    assert result.exit_code == 2 and "tflite" in result.output


def test_cli_export_missing_bundle(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not found" in result.output


@pytest.mark.skipif(find_spec("openvino") is None, reason="openvino not installed (extra 'export')")
def test_openvino_export_in_cache_is_complete(
    runtime_predictors: dict, confident_bundle: LoadedBundle, predictor_cache: Path
) -> None:
    runtime_predictors["openvino"]  # builds (and caches) the OpenVINO export
    files = cached_export(confident_bundle, "openvino", bundle_cache_dir(confident_bundle, predictor_cache))
    assert set(files) == KEYS
    for path in files.values():
        assert path.suffix == ".xml" and path.with_suffix(".bin").stat().st_size > 0
    manifest = BundleManifest.from_json((next(iter(files.values())).parent / "manifest.json").read_text())
    assert manifest.provenance["export"]["format"] == "openvino"


def test_cached_export_exports_once(
    confident_bundle: LoadedBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cached_export(confident_bundle, "onnx", tmp_path)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(export_module, "export_onnx", fail)
    assert cached_export(confident_bundle, "onnx", tmp_path) == first
    with pytest.raises(ValueError, match="allowed"):
        cached_export(confident_bundle, "tflite", tmp_path)


def test_fingerprint_follows_the_weights(tiny_bundle_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = load_bundle(tiny_bundle_path), load_bundle(tiny_bundle_path)
    assert bundle_fingerprint(a) == bundle_fingerprint(b)
    with torch.no_grad():
        next(b.segmenters[2].parameters()).view(-1)[0] += 1.0
    assert bundle_fingerprint(a) != bundle_fingerprint(b)
    monkeypatch.setenv("CASCADE_CACHE_DIR", "/somewhere/cache")
    assert cache_root() == Path("/somewhere/cache")
    assert bundle_cache_dir(a) == Path("/somewhere/cache") / bundle_fingerprint(a)[:16]


def test_export_keeps_train_mode_and_exports_eval_graph(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.BatchNorm2d(2))
    with torch.no_grad():
        net[1].running_mean.fill_(0.5)
    net.train()
    path = export_model_onnx(net, tmp_path / "net.onnx")
    assert net.training
    x = np.random.default_rng(0).normal(size=(2, 3, 40, 72)).astype(np.float32)
    out = ort_session(path, 1).run(None, {"image": x})[0]
    with torch.no_grad():
        expected = torch.sigmoid(net.eval()(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)
