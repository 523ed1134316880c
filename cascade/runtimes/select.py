"""``runtime="auto"``: time every runtime this machine can run, keep the fastest that passes parity.

Each candidate runs the classifier and every segmenter on one probe image of the bundle's typical
size (a synthetic steel-like image, preprocessed as the predictor would): once to warm up (its
outputs are compared with torch fp32, see ``cascade.runtimes.parity``), then ``repeats`` timed runs
(the median counts). The decision and the numbers (a ``RuntimeReport``) are cached as JSON in the
bundle's cache directory under a key of the machine (CPU model and flags, device, threads, engine
versions), so later loads on the same machine skip the trials.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cascade.bundle import LoadedBundle
from cascade.constants import IMAGE_SHAPE
from cascade.manifest import BundleManifest
from cascade.preprocess import plan_inputs
from cascade.runtimes.base import Runtime, cpu_model, cpu_supports_bf16, resolve_threads
from cascade.runtimes.factory import available_runtimes, create_runtime
from cascade.runtimes.parity import Outputs, Parity, compare, run_outputs

__all__ = ["RuntimeReport", "RuntimeTrial", "machine_key", "probe_batch", "select_runtime"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeTrial:
    """One candidate's result: median ms per probe (classifier + all segmenters), parity, or the error."""

    name: str
    ms: float | None
    parity: Parity | None
    error: str | None = None

    @property
    def passed(self) -> bool:
        """Built, ran and passed parity."""
        return self.error is None and self.parity is not None and self.parity.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        parity = None if self.parity is None else self.parity.to_dict()
        return {"name": self.name, "ms": self.ms, "parity": parity, "error": self.error, "passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeTrial:
        """Inverse of ``to_dict``."""
        parity = None if data.get("parity") is None else Parity(**data["parity"])
        return cls(data["name"], data.get("ms"), parity, data.get("error"))


@dataclass(frozen=True)
class RuntimeReport:
    """Why a runtime was chosen.

    Attributes:
        chosen: the selected runtime name.
        device: device of the trials.
        threads: threads per runtime.
        probe_shape: ``(H, W)`` of the probe image.
        trials: one per candidate, in trial order.
        cached: the decision was read from the cache (the trials are the cached ones).
    """

    chosen: str
    device: str
    threads: int
    probe_shape: tuple[int, int]
    trials: tuple[RuntimeTrial, ...]
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "chosen": self.chosen,
            "device": self.device,
            "threads": self.threads,
            "probe_shape": list(self.probe_shape),
            "trials": [t.to_dict() for t in self.trials],
            "cached": self.cached,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, cached: bool = False) -> RuntimeReport:
        """Inverse of ``to_dict``."""
        trials = tuple(RuntimeTrial.from_dict(t) for t in data["trials"])
        return cls(data["chosen"], data["device"], data["threads"], tuple(data["probe_shape"]), trials, cached)

    def summary(self) -> str:
        """One line per trial: name, ms, parity numbers, verdict."""
        lines = [f"runtime {self.chosen} on {self.device} ({self.threads} threads){' [cached]' if self.cached else ''}"]
        for t in self.trials:
            if t.error is not None:
                lines.append(f"  {t.name:14s} error: {t.error}")
                continue
            p = t.parity
            lines.append(
                f"  {t.name:14s} {t.ms:9.1f} ms  prob_max_abs={p.prob_max_abs:.2e} map_mean_abs={p.map_mean_abs:.2e} "
                f"masks={p.mask_agreement:.4%} {'pass' if p.passed else 'FAIL'}"
            )
        return "\n".join(lines)


def probe_batch(manifest: BundleManifest, shape: tuple[int, int] = IMAGE_SHAPE, seed: int = 0) -> np.ndarray:
    """A synthetic steel-like image of ``shape``, preprocessed like the predictor does: ``(n, 3, Hp, Wp)``."""
    rng = np.random.default_rng(seed)
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 110 + 35 * np.sin(2 * np.pi * (xx / 97 + yy / 401)) + rng.normal(0, 12, shape)
    for _ in range(6):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, height / 6)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] -= 60
    gray = np.clip(image, 0, 255).astype(np.uint8)
    plan = plan_inputs([gray], manifest.input_policy, manifest.normalization)
    return next(iter(plan.batches()))[1]


def machine_key(device: str, threads: int) -> dict[str, Any]:
    """What a cached runtime decision depends on besides the bundle."""
    import torch

    cpu = cpu_model() or platform.processor()
    versions = {}
    for module in ("onnxruntime", "openvino"):
        with contextlib.suppress(ImportError):
            versions[module] = __import__(module).__version__
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "bf16": cpu_supports_bf16(),
        "device": device,
        "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
        "threads": threads,
        "torch": torch.__version__,
        **versions,
    }


def _cache_file(cache_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"runtime-{digest}.json"


def _time(runtime: Runtime, batch: np.ndarray, repeats: int) -> tuple[Outputs, float]:
    outputs = run_outputs(runtime, batch)  # warm-up; its outputs are the ones compared
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_outputs(runtime, batch)
        times.append((time.perf_counter() - start) * 1e3)
    return outputs, statistics.median(times)


def _cached(
    bundle: LoadedBundle, file: Path, key: dict[str, Any], **build: Any
) -> tuple[Runtime, RuntimeReport] | None:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("machine") != key:
            return None
        report = RuntimeReport.from_dict(data["report"], cached=True)
        return create_runtime(report.chosen, bundle, **build), report
    except (OSError, ValueError, KeyError, TypeError, ImportError, RuntimeError) as err:
        logger.warning("ignoring cached runtime decision %s: %s", file, err)
        return None


def select_runtime(
    bundle: LoadedBundle,
    *,
    device: str = "cpu",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    candidates: Sequence[str] | None = None,
    probe_shape: tuple[int, int] = IMAGE_SHAPE,
    repeats: int = 2,
    use_cache: bool = True,
) -> tuple[Runtime, RuntimeReport]:
    """Pick the fastest runtime that passes parity with torch fp32 on this machine.

    Args:
        bundle: the loaded bundle.
        device: resolved device (``"cpu"``, ``"cuda"``...).
        threads: threads per runtime (default: torch's thread count).
        cache_dir: the bundle's cache directory (exports and the cached decision); no caching when None.
        candidates: runtime names to try (default: ``available_runtimes(device)``).
        probe_shape: ``(H, W)`` of the probe image.
        repeats: timed runs per candidate (after one warm-up run).
        use_cache: read a cached decision when there is one for this machine.

    Returns:
        The chosen runtime (built) and the report.
    """
    threads = resolve_threads(threads)
    names = list(candidates) if candidates is not None else available_runtimes(device)
    key = {**machine_key(device, threads), "candidates": names, "probe_shape": list(probe_shape)}
    cache = None if cache_dir is None else Path(cache_dir)
    build = {"device": device, "threads": threads, "cache_dir": cache}
    if cache is not None and use_cache and (file := _cache_file(cache, key)).is_file():
        hit = _cached(bundle, file, key, **build)
        if hit is not None:
            logger.info("runtime auto: %s (cached decision for this machine)", hit[1].chosen)
            return hit
    batch = probe_batch(bundle.manifest, probe_shape)
    thresholds = [p.pixel_threshold for p in bundle.manifest.classes]
    reference = create_runtime("torch", bundle, **build)
    ref_outputs, ref_ms = _time(reference, batch, repeats)
    trials: list[RuntimeTrial] = []
    best: tuple[float, Runtime] | None = None
    for name in names:
        if name == "torch":
            trial, runtime = (
                RuntimeTrial(
                    "torch", ref_ms, compare(ref_outputs, ref_outputs, precision="fp32", pixel_thresholds=thresholds)
                ),
                reference,
            )
        else:
            try:
                runtime = create_runtime(name, bundle, **build)
                outputs, ms = _time(runtime, batch, repeats)
            except (ValueError, RuntimeError, OSError, ImportError) as err:
                logger.warning("runtime auto: %s unavailable: %s", name, err)
                trials.append(RuntimeTrial(name, None, None, f"{type(err).__name__}: {err}"))
                continue
            parity = compare(ref_outputs, outputs, precision=runtime.precision, pixel_thresholds=thresholds)
            trial = RuntimeTrial(name, ms, parity)
        trials.append(trial)
        logger.info("runtime auto: %s %.1f ms, parity %s", name, trial.ms, trial.parity)
        if trial.passed and (best is None or trial.ms < best[0]):
            if best is not None and best[1] is not reference:
                best[1].close()
            best = (trial.ms, runtime)
        elif runtime is not reference:
            runtime.close()
    chosen = best[1] if best is not None else reference
    report = RuntimeReport(chosen.name, device, threads, tuple(probe_shape), tuple(trials))
    logger.info("runtime auto chose %s\n%s", chosen.name, report.summary())
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"machine": key, "report": report.to_dict()}, indent=2)
        file = _cache_file(cache, key)
        tmp = file.with_name(f".{file.name}.{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, file)
    return chosen, report
