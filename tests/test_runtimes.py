"""Tests for cascade/runtimes/: parity of every runtime against torch fp32, auto selection, threads."""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

from cascade.bundle import LoadedBundle
from cascade.export import bundle_cache_dir
from cascade.predictor import CascadePredictor
from cascade.runtimes import (
    MIN_MASK_AGREEMENT,
    PARITY_TOLERANCE,
    Outputs,
    available_runtimes,
    compare,
    cpu_supports_bf16,
    create_runtime,
    probe_batch,
    resolve_device,
    run_outputs,
    select_runtime,
)
from cascade.runtimes.torch_runtime import TorchRuntime
from tests.fixtures.predictor import SMALL_SHAPE, random_images

_NEEDS_BF16 = pytest.mark.skipif(not cpu_supports_bf16(), reason="CPU has no native bf16 (avx512_bf16/amx_bf16)")
_NEEDS_ORT = pytest.mark.skipif(find_spec("onnxruntime") is None, reason="onnxruntime not installed (extra 'export')")
_NEEDS_OV = pytest.mark.skipif(find_spec("openvino") is None, reason="openvino not installed (extra 'export')")
RUNTIMES = [
    pytest.param("onnx", marks=_NEEDS_ORT),
    pytest.param("openvino", marks=_NEEDS_OV),
    pytest.param("openvino-bf16", marks=[_NEEDS_BF16, _NEEDS_OV]),
    pytest.param("torch-bf16", marks=_NEEDS_BF16),
]


@pytest.fixture(scope="module")
def reference(confident_bundle: LoadedBundle) -> tuple[np.ndarray, Outputs]:
    """The probe batch and torch fp32 outputs on it."""
    batch = probe_batch(confident_bundle.manifest, SMALL_SHAPE)
    return batch, run_outputs(create_runtime("torch", confident_bundle), batch)


@pytest.mark.parametrize("name", RUNTIMES)
def test_runtime_parity_against_torch_fp32(
    name: str, runtime_predictors: dict[str, CascadePredictor], reference: tuple[np.ndarray, Outputs]
) -> None:
    batch, ref = reference
    runtime = runtime_predictors[name].runtime
    assert runtime.name == name
    parity = compare(ref, run_outputs(runtime, batch), precision=runtime.precision, pixel_thresholds=[0.5] * 4)
    assert parity.prob_max_abs <= PARITY_TOLERANCE[runtime.precision]
    assert parity.map_mean_abs <= PARITY_TOLERANCE[runtime.precision]
    assert parity.mask_agreement >= MIN_MASK_AGREEMENT
    assert parity.passed


@pytest.mark.parametrize("name", RUNTIMES)
def test_runtime_predictions_match_torch(
    name: str, runtime_predictors: dict[str, CascadePredictor], torch_predictor: CascadePredictor
) -> None:
    """Whole-predictor parity on a batch of mixed sizes (dynamic shapes in exported graphs)."""
    images = [*random_images(1, SMALL_SHAPE, seed=20), *random_images(1, (250, 1003, 3), seed=21)]
    ref = torch_predictor.predict(images, mode="segment_all")
    out = runtime_predictors[name].predict(images, mode="segment_all")
    tolerance = PARITY_TOLERANCE[runtime_predictors[name].runtime.precision]
    for a, b in zip(ref, out, strict=True):
        probs = np.array([c.probability for c in a.classes]) - np.array([c.probability for c in b.classes])
        assert np.abs(probs).max() <= tolerance
        assert np.mean(a.masks == b.masks) >= MIN_MASK_AGREEMENT


@_NEEDS_ORT
def test_one_256x1600_image_onnx(
    runtime_predictors: dict[str, CascadePredictor], torch_predictor: CascadePredictor
) -> None:
    image = random_images(1, (256, 1600, 3), seed=22)[0]
    a = torch_predictor.infer([image], "segment_all")
    b = runtime_predictors["onnx"].infer([image], "segment_all")
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-3)
    for cid in (1, 2, 3, 4):
        assert np.mean((a.maps[0][cid] >= 0.5) == (b.maps[0][cid] >= 0.5)) >= MIN_MASK_AGREEMENT


def test_auto_picks_a_passing_runtime_and_caches_the_decision(
    confident_bundle: LoadedBundle, predictor_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = bundle_cache_dir(confident_bundle, predictor_cache)  # shares the exports of the other tests
    caplog.set_level("INFO", logger="cascade.runtimes.select")
    kwargs = {"cache_dir": cache, "probe_shape": SMALL_SHAPE, "repeats": 1}
    runtime, report = select_runtime(confident_bundle, use_cache=False, **kwargs)
    assert [t.name for t in report.trials] == available_runtimes("cpu")
    chosen = next(t for t in report.trials if t.name == report.chosen)
    assert runtime.name == report.chosen and chosen.passed and not report.cached
    assert chosen.ms == min(t.ms for t in report.trials if t.passed)
    assert f"chose {report.chosen}" in caplog.text
    assert report.chosen in report.summary()
    files = list(cache.glob("runtime-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["report"]["chosen"] == report.chosen
    again, cached = select_runtime(confident_bundle, **kwargs)
    assert cached.cached and again.name == report.chosen and cached.trials == report.trials


def test_predictor_auto_reports_its_runtime(confident_bundle: LoadedBundle, predictor_cache: Path) -> None:
    predictor = CascadePredictor(
        confident_bundle, device="auto", runtime="auto", cache_dir=predictor_cache, probe_shape=SMALL_SHAPE
    )
    assert predictor.runtime_report is not None
    assert predictor.runtime_name == predictor.runtime_report.chosen
    assert len(predictor.predict(random_images(1))) == 1


def test_auto_skips_failing_candidates(confident_bundle: LoadedBundle) -> None:
    """A candidate that cannot be built is reported with its error, never chosen."""
    runtime, report = select_runtime(
        confident_bundle, candidates=["torch", "torch-fp16"], probe_shape=(64, 64), repeats=1
    )
    assert runtime.name == "torch"
    failed = report.trials[1]
    assert failed.name == "torch-fp16" and not failed.passed and "CUDA" in failed.error


def test_compare_bounds() -> None:
    maps = {1: np.array([[[0.2, 0.7], [0.9, 0.1]]], np.float32)}
    ref = Outputs(np.array([[0.5, 0.5, 0.5, 0.5]], np.float32), maps)
    assert compare(ref, ref, precision="fp32", pixel_thresholds=[0.5]).passed
    shifted = Outputs(ref.probabilities + 5e-3, maps)
    assert not compare(ref, shifted, precision="fp32", pixel_thresholds=[0.5]).passed
    assert compare(ref, shifted, precision="bf16", pixel_thresholds=[0.5]).passed
    flipped = Outputs(ref.probabilities, {1: maps[1] * np.array([1, 0.5], np.float32)})  # 0.7 -> 0.35: one flip
    parity = compare(ref, flipped, precision="bf16", pixel_thresholds=[0.5])
    assert parity.mask_agreement == 0.75 and not parity.passed


@_NEEDS_ORT
@_NEEDS_OV
def test_threads_are_passed_to_every_engine(runtime_predictors: dict[str, CascadePredictor]) -> None:
    onnx = runtime_predictors["onnx"].runtime
    assert onnx._classifier.get_session_options().intra_op_num_threads == onnx.threads
    assert onnx._classifier.get_session_options().inter_op_num_threads == 1
    ov = runtime_predictors["openvino"].runtime
    assert ov._config["INFERENCE_NUM_THREADS"] == ov.threads and ov._config["INFERENCE_PRECISION_HINT"] == "f32"


def test_torch_threads_setting(confident_bundle: LoadedBundle) -> None:
    before = torch.get_num_threads()
    try:
        runtime = create_runtime("torch", confident_bundle, threads=1)
        assert torch.get_num_threads() == 1 and runtime.threads == 1
    finally:
        torch.set_num_threads(before)


def test_torch_runtime_keeps_the_callers_train_mode() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    net.train()
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    out = TorchRuntime(net, {}).classify(x)
    assert net.training
    with torch.no_grad():
        expected = torch.sigmoid(net.eval()(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "device", "match"),
    [("tensorrt", "cpu", "unknown runtime"), ("torch-fp16", "cpu", "CUDA"), ("onnx", "cuda", "CPU only")],
)
def test_create_runtime_errors(confident_bundle: LoadedBundle, name: str, device: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_runtime(name, confident_bundle, device=device)


def test_resolve_device() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="allowed"):
        resolve_device("gpu")
