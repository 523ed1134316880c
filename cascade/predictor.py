"""The cascade predictor: image -> preprocess -> classifier -> gate -> segmenters -> postprocess -> RLE.

The classifier runs on the whole batch; then each class's segmenter runs, batched, on exactly the
images whose gate passed for that class and never on the others (``mode="segment_all"`` opens every
gate). Images may differ in size: ``cascade.preprocess`` groups them by padded shape (or tiles them),
and every probability map comes back at its image's input size. Test-time augmentation (``tta``:
``"hflip"``/``"vflip"``) averages the classifier's probabilities and the segmenters' maps over the
flipped inputs. A bundle with a ``calibration`` has the classifier's probabilities calibrated
(``cascade.calibration``) before the gate: its thresholds, and every probability returned, are calibrated.

``infer`` + ``postprocess`` split the work so post-processing alone can re-run with other
``ClassParams`` (GUI sliders); ``predict`` does both. A predictor is not thread-safe: give each thread
its own, or serialise calls (the service's single inference worker does).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from cascade.bundle import LoadedBundle, load_bundle
from cascade.calibration import calibrate
from cascade.constants import IMAGE_SHAPE
from cascade.gate import check_mode, check_params, gate
from cascade.manifest import TTA_OPS, BundleManifest, ClassParams
from cascade.postprocess import postprocess_map
from cascade.preprocess import as_image_list, plan_inputs
from cascade.results import ClassPrediction, ImagePrediction
from cascade.rle import encode
from cascade.runtimes import Runtime, RuntimeReport, create_runtime, resolve_device, select_runtime

__all__ = ["CascadePredictor", "Predictor", "PredictorStats", "RawOutput"]

logger = logging.getLogger(__name__)

_FLIP_AXIS = {"hflip": -1, "vflip": -2}


class Predictor(Protocol):
    """What the service's worker and the folder scorers ask of a predictor (``CascadePredictor`` has it)."""

    def predict(
        self,
        images: Sequence[np.ndarray],
        image_ids: Sequence[str] | None = None,
        mode: str = "cascade",
        params: Sequence[ClassParams] | None = None,
    ) -> list[ImagePrediction]:
        """Predict a batch of ``(H, W, 3)`` uint8 images (``params``: per-class parameters other than the
        bundle's; the folder scorers never pass them)."""
        ...


@dataclass(frozen=True)
class RawOutput:
    """Network outputs of one batch, before post-processing.

    Attributes:
        image_ids: one id per image.
        shapes: input ``(H, W)`` per image.
        probabilities: ``(N, C)`` float32 classifier probabilities (TTA-averaged), ``C`` = the bundle's classes.
        segmented: ``(N, C)`` bool, True where the class's segmenter ran on the image.
        maps: per image, class id -> ``(H, W)`` segmenter probabilities at the input size
            (only for segmented classes).
        mode: ``"cascade"`` or ``"segment_all"``.
        timings: seconds per stage (``preprocess``, ``classifier``, ``segmenters``, ``segmenter_<id>``).
        uncalibrated: ``(N, C)`` the classifier's probabilities before the bundle's calibration (None when the
            bundle has none: ``probabilities`` are then the raw ones).
        ood_scores: ``(N,)`` out-of-distribution scores (``cascade.ood``; None when the bundle has no reference).
    """

    image_ids: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]
    probabilities: np.ndarray
    segmented: np.ndarray
    maps: tuple[dict[int, np.ndarray], ...]
    mode: str
    timings: dict[str, float] = field(default_factory=dict)
    uncalibrated: np.ndarray | None = None
    ood_scores: np.ndarray | None = None


@dataclass
class PredictorStats:
    """Cumulative counters since creation (or ``reset``), read by tests and the service metrics.

    Attributes:
        calls: ``infer`` calls.
        images: images seen by the classifier.
        segmenter_images: class id -> images sent to that class's segmenter.
        segmenter_batches: class id -> runtime calls of that segmenter (one per shape group and chunk).
    """

    calls: int = 0
    images: int = 0
    segmenter_images: dict[int, int] = field(default_factory=dict)
    segmenter_batches: dict[int, int] = field(default_factory=dict)

    def reset(self) -> None:
        """Zero every counter."""
        self.calls = self.images = 0
        self.segmenter_images = dict.fromkeys(self.segmenter_images, 0)
        self.segmenter_batches = dict.fromkeys(self.segmenter_batches, 0)


class CascadePredictor:
    """Runs a bundle's cascade on batches of images.

    Args:
        bundle: a loaded bundle (its modules are moved to ``device``; an fp32 torch runtime calls them as
            they are, switching them to eval mode only during each call).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:i]"``.
        runtime: a name from ``cascade.runtimes.RUNTIME_NAMES`` or ``"auto"`` (fastest passing parity).
        threads: intra-op threads for the runtime (default: torch's thread count).
        tta: test-time augmentations overriding the manifest's (``()`` turns TTA off).
        cache_dir: root of the export/decision cache (default ``$CASCADE_CACHE_DIR`` or ``~/.cache/steel-cascade``).
        max_batch: largest number of network inputs per runtime call, bounding activation memory on big
            batches (default: 4 on CPU, where larger batches are not cheaper per image, 16 on CUDA).
        map_dtype: dtype of the probability maps kept in ``RawOutput`` (``np.float16`` halves memory).
        probe_shape: ``(H, W)`` of the probe image used by ``runtime="auto"`` (default: the bundle's
            ``image_size``, else Severstal's 256x1600).
    """

    def __init__(
        self,
        bundle: LoadedBundle,
        *,
        device: str = "auto",
        runtime: str = "torch",
        threads: int | None = None,
        tta: Sequence[str] | None = None,
        cache_dir: str | Path | None = None,
        max_batch: int | None = None,
        map_dtype: type = np.float32,
        probe_shape: tuple[int, int] | None = None,
    ) -> None:
        device = resolve_device(device)
        if probe_shape is None:
            probe_shape = bundle.manifest.image_size or IMAGE_SHAPE
        report: RuntimeReport | None = None
        needs_cache = runtime == "auto" or not runtime.startswith("torch")
        bundle_cache = None
        if needs_cache:
            from cascade.export import bundle_cache_dir

            bundle_cache = bundle_cache_dir(bundle, cache_dir)
        if runtime == "auto":
            built, report = select_runtime(
                bundle, device=device, threads=threads, cache_dir=bundle_cache, probe_shape=probe_shape
            )
        else:
            built = create_runtime(runtime, bundle, device=device, threads=threads, cache_dir=bundle_cache)
        self._setup(bundle.manifest, built, tta=tta, max_batch=max_batch, map_dtype=map_dtype, report=report)

    def _setup(
        self,
        manifest: BundleManifest,
        runtime: Runtime,
        *,
        tta: Sequence[str] | None,
        max_batch: int | None,
        map_dtype: type,
        report: RuntimeReport | None,
    ) -> None:
        tta = manifest.tta if tta is None else ((tta,) if isinstance(tta, str) else tuple(tta))
        if max_batch is None:
            max_batch = 16 if runtime.device.startswith("cuda") else 4
        if bad := [t for t in tta if t not in TTA_OPS]:
            raise ValueError(f"unknown tta {bad}; allowed: {list(TTA_OPS)}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer or None, got {max_batch!r}")
        if np.dtype(map_dtype) not in (np.float16, np.float32):
            raise ValueError(f"map_dtype must be float16 or float32, got {map_dtype!r}")
        self.manifest = manifest
        self.tta: tuple[str, ...] = tta
        self.max_batch: int = max_batch
        self.map_dtype = np.dtype(map_dtype)
        self.runtime = runtime
        self.runtime_report = report
        self.stats = PredictorStats(
            segmenter_images=dict.fromkeys(manifest.class_ids, 0),
            segmenter_batches=dict.fromkeys(manifest.class_ids, 0),
        )

    @classmethod
    def from_bundle(
        cls,
        path: str | Path | None = None,
        device: str = "auto",
        runtime: str = "auto",
        threads: int | None = None,
        tta: Sequence[str] | None = None,
        **kwargs: object,
    ) -> CascadePredictor:
        """Load a bundle file/directory (the embedded demo bundle when ``path`` is None) into a predictor.

        Keyword arguments beyond these are those of the constructor (``cache_dir``, ``max_batch``...).
        """
        from cascade.embedded import resolve_bundle

        bundle = load_bundle(resolve_bundle(path), device=resolve_device(device))
        return cls(bundle, device=device, runtime=runtime, threads=threads, tta=tta, **kwargs)

    @classmethod
    def from_runtime(
        cls,
        manifest: BundleManifest,
        runtime: Runtime,
        *,
        tta: Sequence[str] | None = None,
        max_batch: int | None = None,
        map_dtype: type = np.float32,
    ) -> CascadePredictor:
        """A predictor over an already built runtime (e.g. ONNX files of ``cascade.export.load_export``)."""
        predictor = cls.__new__(cls)
        predictor._setup(manifest, runtime, tta=tta, max_batch=max_batch, map_dtype=map_dtype, report=None)
        return predictor

    @property
    def runtime_name(self) -> str:
        """Name of the runtime in use (e.g. ``"onnx"``)."""
        return self.runtime.name

    @property
    def device(self) -> str:
        """Device the networks run on."""
        return self.runtime.device

    # ------------------------------------------------------------------------------------------ inference
    def _tta_classify(self, batch: np.ndarray) -> np.ndarray:
        total = self.runtime.classify(batch).astype(np.float32)
        for op in self.tta:
            total += self.runtime.classify(np.flip(batch, _FLIP_AXIS[op]))
        return total / (1 + len(self.tta))

    def _tta_segment(self, class_id: int, batch: np.ndarray) -> np.ndarray:
        total = self.runtime.segment(class_id, batch).astype(np.float32)
        for op in self.tta:
            total += np.flip(self.runtime.segment(class_id, np.flip(batch, _FLIP_AXIS[op])), _FLIP_AXIS[op])
        return total / (1 + len(self.tta))

    def infer(
        self,
        images: Sequence[np.ndarray],
        mode: str = "cascade",
        image_ids: Sequence[str] | None = None,
        params: Sequence[ClassParams] | None = None,
    ) -> RawOutput:
        """Run the networks: classifier on all images, each segmenter on the images its gate passes.

        Args:
            images: ``(H, W)`` or ``(H, W, 3)`` uint8 arrays, any sizes.
            mode: ``"cascade"`` or ``"segment_all"``.
            image_ids: one id per image (default ``image_<i>``).
            params: one ``ClassParams`` per class whose ``prob_threshold`` gates (default: the manifest's).

        Raises:
            ValueError: bad images (shape/dtype named), mode, ids or params.
        """
        check_mode(mode)
        params = check_params(self.manifest.classes if params is None else params, self.manifest.num_classes)
        images = as_image_list(images)
        ids = self._image_ids(image_ids, len(images))
        timings: dict[str, float] = {}
        start = time.perf_counter()
        plan = plan_inputs(images, self.manifest.input_policy, self.manifest.normalization)
        timings["preprocess"] = time.perf_counter() - start
        reference = getattr(self.manifest, "ood", None)
        ood_scores = None
        if reference is not None:
            start = time.perf_counter()
            ood_scores = reference.score(images)
            timings["ood"] = time.perf_counter() - start

        start = time.perf_counter()
        unit_probs = np.zeros((len(plan.units), len(self.manifest.class_ids)), dtype=np.float32)
        for units, batch in plan.batches(max_batch=self.max_batch):
            unit_probs[units] = self._tta_classify(batch)
        probabilities = plan.reduce_max(unit_probs) if plan.units else unit_probs[:0]
        uncalibrated = None
        calibration = getattr(self.manifest, "calibration", ())  # () also for manifests of older code in-process
        if calibration:
            uncalibrated, probabilities = probabilities, calibrate(probabilities, calibration)
        timings["classifier"] = time.perf_counter() - start

        segmented = gate(probabilities, params, mode)
        maps: tuple[dict[int, np.ndarray], ...] = tuple({} for _ in images)
        timings["segmenters"] = 0.0
        for k, cid in enumerate(self.manifest.class_ids):
            start = time.perf_counter()
            chosen = np.flatnonzero(segmented[:, k])
            unit_maps: dict[int, np.ndarray] = {}
            for units, batch in plan.batches(chosen, max_batch=self.max_batch) if chosen.size else ():
                for u, unit_map in zip(units.tolist(), self._tta_segment(cid, batch), strict=True):
                    unit_maps[u] = unit_map
                self.stats.segmenter_batches[cid] += 1
            for i in chosen.tolist():
                maps[i][cid] = plan.assemble(i, unit_maps).astype(self.map_dtype, copy=False)
            self.stats.segmenter_images[cid] += int(chosen.size)
            timings[f"segmenter_{cid}"] = time.perf_counter() - start
            timings["segmenters"] += timings[f"segmenter_{cid}"]
        self.stats.calls += 1
        self.stats.images += len(images)
        return RawOutput(
            tuple(ids), tuple(plan.shapes), probabilities, segmented, maps, mode, timings, uncalibrated, ood_scores
        )

    @staticmethod
    def _image_ids(image_ids: Sequence[str] | None, count: int) -> list[str]:
        if image_ids is None:
            return [f"image_{i}" for i in range(count)]
        ids = [str(i) for i in image_ids]
        if len(ids) != count:
            raise ValueError(f"got {len(ids)} image_ids for {count} images; pass one id per image")
        return ids

    # ------------------------------------------------------------------------------------------ postprocess
    def postprocess(
        self, raw: RawOutput, params: Sequence[ClassParams] | None = None, mode: str | None = None
    ) -> list[ImagePrediction]:
        """Turn network outputs into per-image predictions (masks at input size + RLE).

        Args:
            raw: output of ``infer``.
            params: one ``ClassParams`` per class (default: the manifest's).
            mode: gate applied here (default ``raw.mode``); in ``"cascade"`` a class is absent unless
                ``probability >= prob_threshold`` *and* its map was computed (``raw.segmented``), so
                run ``infer`` with ``"segment_all"`` to explore lower probability thresholds.
        """
        params = check_params(self.manifest.classes if params is None else params, self.manifest.num_classes)
        mode = check_mode(raw.mode if mode is None else mode)
        passed = gate(raw.probabilities, params, mode) & raw.segmented
        post_s = encode_s = 0.0
        results = []
        for i, (image_id, (height, width)) in enumerate(zip(raw.image_ids, raw.shapes, strict=True)):
            classes = []
            manifest = self.manifest
            for k, (cid, name, colour) in enumerate(
                zip(manifest.class_ids, manifest.class_names, manifest.class_colours, strict=True)
            ):
                probability = float(raw.probabilities[i, k])
                start = time.perf_counter()
                if passed[i, k]:
                    mask = postprocess_map(raw.maps[i][cid], probability, params[k])
                else:
                    mask = np.zeros((height, width), dtype=bool)
                area = int(np.count_nonzero(mask))
                mid = time.perf_counter()
                rle = encode(mask) if area else ""
                post_s, encode_s = post_s + mid - start, encode_s + time.perf_counter() - mid
                classes.append(ClassPrediction(cid, name, probability, area > 0, area, rle, mask, colour))
            prediction = ImagePrediction(image_id, height, width, tuple(classes))
            if raw.ood_scores is not None:
                score = float(raw.ood_scores[i])
                prediction = dataclasses.replace(
                    prediction, ood_score=score, in_distribution=score <= manifest.ood.threshold
                )
            results.append(prediction)
        timings = {**raw.timings, "postprocess": post_s, "encode": encode_s}
        timings["total"] = sum(v for key, v in timings.items() if not key.startswith("segmenter_"))
        for result in results:
            result.timings.update(timings)
        return results

    def predict(
        self,
        images: Sequence[np.ndarray],
        image_ids: Sequence[str] | None = None,
        mode: str = "cascade",
        params: Sequence[ClassParams] | None = None,
    ) -> list[ImagePrediction]:
        """``postprocess(infer(images, mode, image_ids, params), params)``: one ``ImagePrediction`` per image."""
        return self.postprocess(self.infer(images, mode, image_ids, params), params)
