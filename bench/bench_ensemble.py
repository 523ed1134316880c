"""Fold ensembles: Dice and speed of a run's bundle with its single classifier vs the K fold classifiers averaged.

Usage (heavy: run it under the shared CPU lock)::

    flock /tmp/cpu.lock python -m bench.bench_ensemble
    python -m bench.bench_ensemble --neu-run runs/neu-seg --demo-run runs/bench-ensemble/demo-cpu --speed-images 48

For each training run (a run folder holding its bundle and ``classifier/fold<k>/classifier.pt``):

- **Quality**: ``training.evaluate.evaluate_bundle`` (torch fp32) on the run's held-out images for the bundle as
  written (its single classifier) and for ``training.ensemble.pack_ensemble`` of all its folds averaged on logits
  and on probabilities. Segmenters, thresholds and calibration are the bundle's, untouched (the gate thresholds
  were tuned on the single models' out-of-fold probabilities); the all-empty and segment_all Dice stand beside.
- **Speed**: images/s of the cascade (``CascadePredictor.predict``, batches of 8, after one warm-up batch) and of
  the classifier alone, per runtime this machine has, single vs ensemble; and each runtime's parity with torch
  fp32 on a probe batch (``cascade.runtimes.parity``: the check ``runtime="auto"`` applies).

NEU-Seg: the run trained with ``data.val_split: val``, so the held-out images are NEU-Seg val, which no fold's
classifier trained on (fold 0 trained on all of train, folds 1-2 on halves of it). Demo: the held-out images are
the run's ``heldout-*`` synthetic set (fresh seed), which no fold saw. Writes ``bench/results/ensemble.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.cpu_lock import lock_held

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ensemble.md"
SHARED = ROOT.parent / "shared"
AVERAGES = ("logits", "probabilities")
BATCH = 8
ROUNDS = 3


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run to compare: its folder, bundle file and held-out labelled data."""

    name: str
    run_dir: Path
    bundle: Path
    data: Path
    split: str | None
    single: str
    note: str
    severstal: bool = False  # also score every variant on the real Severstal images (evaluation only)


def _runs(args: argparse.Namespace) -> list[RunSpec]:
    runs = []
    if args.neu_run is not None:
        neu = Path(args.neu_run)
        runs.append(
            RunSpec(
                "NEU-Seg", neu, neu / "neu-seg.cascade.safetensors", Path(args.shared) / "neu-seg", "val",
                "fold 0's classifier (`classifier.final: fold`, trained on all of train)",
                "The gate thresholds were tuned on fold 0's own probabilities of these val images (the recipe tunes "
                "and evaluates on val), which favours the single row; folds 1 and 2 trained on half of train each.",
            )
        )  # fmt: skip
    if args.demo_run is not None:
        demo = Path(args.demo_run)
        heldout = sorted(demo.glob("heldout-*"))
        bundle = demo / "demo.cascade.safetensors"
        runs.append(
            RunSpec(
                "synthetic (demo recipe)", demo, bundle, heldout[0] if heldout else demo / "heldout-missing", None,
                _single_classifier(bundle),
                "The gate thresholds were tuned on the training images' out-of-fold probabilities; each fold's "
                "classifier trained on 2/3 of the training images.",
                severstal=True,
            )
        )  # fmt: skip
    return runs


def _single_classifier(bundle: Path) -> str:
    """What the bundle's own classifier is, from the recipe its provenance records (``classifier.final``)."""
    from cascade.bundle import read_manifest

    if not bundle.is_file():
        return "the bundle's classifier"
    final = read_manifest(bundle).provenance.get("config", {}).get("classifier", {}).get("final", "refit")
    if final == "fold":
        return "the tune fold's classifier (`classifier.final: fold`, trained on 2/3 of the images)"
    return "the refit classifier (`classifier.final: refit`, trained on all images)"


def _folds(run_dir: Path) -> list[int]:
    return sorted(int(p.parent.name[4:]) for p in (run_dir / "classifier").glob("fold*/classifier.pt"))


def _store_dtype(path: Path) -> Any:
    import torch

    from cascade.bundle import weights_summary

    dtypes = weights_summary(path)["classifier"]["dtypes"]
    return torch.float16 if dtypes == ["F16"] else None


def _variants(spec: RunSpec, work: Path) -> dict[str, Path]:
    """Bundle files to compare: the run's own and one ensemble per averaging, written under ``work``."""
    from cascade.bundle import load_bundle, save_bundle
    from training.ensemble import pack_ensemble

    base = load_bundle(spec.bundle)
    folds = _folds(spec.run_dir)
    dtype = _store_dtype(spec.bundle)
    out = {"single": spec.bundle}
    for average in AVERAGES:
        packed = pack_ensemble(base, spec.run_dir, folds, average)
        path = work / f"{spec.bundle.name.split('.')[0]}-ensemble{len(folds)}-{average}.cascade.safetensors"
        save_bundle(path, packed.manifest, packed.classifier, packed.segmenters, dtype=dtype)
        out[f"ensemble of {len(folds)} ({average})"] = path
    return out


def _labelled(spec: RunSpec) -> Any:
    from cascade.bundle import read_manifest
    from cascade.datasource import open_labelled

    labelled = open_labelled(spec.data, classes=read_manifest(spec.bundle).class_set)
    return labelled.split(spec.split) if spec.split else labelled


def _quality(path: Path, labelled: Any) -> dict[str, Any]:
    from training.evaluate import evaluate_bundle

    start = time.perf_counter()
    result = evaluate_bundle(
        path, labelled.images_dir, labelled.annotations, grid=([0.5], [0.5], [0]), batch_size=16, show_progress=False
    )
    summary = result.to_dict()
    summary["seconds"] = time.perf_counter() - start
    return summary


def _real(path: Path, shared: Path) -> dict[str, Any] | None:
    """``path`` on the real Severstal images with complete masks (evaluation only), or None without them."""
    from bench.bench_real import score_real_severstal

    scored = score_real_severstal(path, shared)
    if scored is None:
        return None
    data, result = scored
    return {"images": len(data.image_ids), **result.to_dict()}


def _best_of(work: Callable[[], object], rounds: int = ROUNDS) -> float:
    """Shortest wall time of ``rounds`` runs of ``work`` (other jobs on the shared cores only ever add time)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def _speed(path: Path, labelled: Any, runtime: str, n_images: int, cache: Path) -> dict[str, Any]:
    from cascade.bundle import load_bundle
    from cascade.imageio import read_image
    from cascade.predictor import CascadePredictor
    from cascade.runtimes import create_runtime
    from cascade.runtimes.parity import compare, run_outputs
    from cascade.runtimes.select import probe_batch

    bundle = load_bundle(path)
    ids = labelled.image_ids[:: max(1, len(labelled.image_ids) // n_images)][:n_images]
    images = [read_image(labelled.images_dir / i) for i in ids]
    start = time.perf_counter()
    predictor = CascadePredictor(bundle, device="cpu", runtime=runtime, cache_dir=cache)
    build = time.perf_counter() - start
    predictor.predict(images[:BATCH])  # warm-up
    cascade_s = _best_of(lambda: [predictor.predict(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])
    batch = probe_batch(bundle.manifest, bundle.manifest.image_size or images[0].shape[:2])
    batch = np.repeat(batch, BATCH, axis=0)
    predictor.runtime.classify(batch)
    repeats = max(1, n_images // BATCH)
    classify_s = _best_of(lambda: [predictor.runtime.classify(batch) for _ in range(repeats)])
    reference = create_runtime("torch", bundle, device="cpu") if runtime != "torch" else predictor.runtime
    parity = compare(
        run_outputs(reference, batch[:2]),
        run_outputs(predictor.runtime, batch[:2]),
        precision=predictor.runtime.precision,
        pixel_thresholds=[c.pixel_threshold for c in bundle.manifest.classes],
    )
    return {
        "cascade_ips": len(images) / cascade_s,
        "classifier_ips": repeats * BATCH / classify_s,
        "build_s": build,
        "parity": parity.to_dict(),
    }


def _fmt_dice(q: dict[str, Any], key: str) -> str:
    report = q[key]
    return f"{report['mean']:.4f}"


def _per_class(q: dict[str, Any], key: str = "cascade") -> str:
    return " / ".join(f"{v:.3f}" for v in q[key]["per_class"].values())


def _auc(q: dict[str, Any]) -> str:
    return " / ".join(f"{v['auc']:.4f}" for v in q["classifier"].values())


def _real_rows(real: dict[str, dict[str, Any] | None], shared: Path) -> list[str]:
    """The variants on the real Severstal images, each beside all-empty, with bench_real's tie rule."""
    from bench.bench_real import against_empty, pair_weight

    if any(q is None for q in real.values()):
        return [f"Real Severstal images: not scored ({shared / 'severstal-real'} is absent).", ""]
    images = next(iter(real.values()))["images"]
    lines = [
        f"The same variants on the {images} real Severstal images with complete masks (`../shared/severstal-real`, "
        "never trained or tuned on); a gain within one (image, class) pair's weight "
        f"({pair_weight(images):.4f}) ties all-empty:",
        "",
        "| classifier | cascade Dice | per class (1 / 2 / 3 / 4) | segment_all | all-empty | vs all-empty "
        "| classifier AUC per class | segmenter runs / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, q in real.items():
        side = against_empty(q["cascade"]["mean"], q["empty"]["mean"], images)
        lines.append(
            f"| {name} | **{_fmt_dice(q, 'cascade')}** | {_per_class(q)} | {_fmt_dice(q, 'segment_all')} "
            f"| {_fmt_dice(q, 'empty')} | {side} | {_auc(q)} | {q['gate']['runs_per_image']:.3f} |"
        )
    return [*lines, ""]


def _section(
    spec: RunSpec,
    quality: dict[str, dict],
    speed: dict[str, dict[str, dict]],
    n_speed: int,
    real: dict[str, dict[str, Any] | None],
    shared: Path,
) -> list[str]:
    labelled_n = next(iter(quality.values()))["images"]
    first = next(iter(quality.values()))
    names = " / ".join(str(c) for c in first["cascade"]["per_class"])
    lines = [
        f"### {spec.name}",
        "",
        f"Run `{spec.run_dir}`, {labelled_n} held-out images (`{spec.data}`"
        + (f", split `{spec.split}`" if spec.split else "")
        + f"). Single = {spec.single}; the ensembles average every fold's classifier. Same segmenters, "
        "thresholds and calibration in every row.",
        "",
        f"| classifier | cascade Dice | per class ({names}) | segment_all | all-empty | classifier AUC per class "
        "| segmenter runs / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, q in quality.items():
        lines.append(
            f"| {name} | **{_fmt_dice(q, 'cascade')}** | {_per_class(q)} | {_fmt_dice(q, 'segment_all')} "
            f"| {_fmt_dice(q, 'empty')} | {_auc(q)} | {q['gate']['runs_per_image']:.3f} |"
        )
    base = quality["single"]["cascade"]["mean"]
    deltas = ", ".join(f"{n}: {q['cascade']['mean'] - base:+.4f}" for n, q in quality.items() if n != "single")
    lines += ["", f"Cascade Dice change over the single classifier: {deltas}. {spec.note}", ""]
    if real:
        lines += _real_rows(real, shared)
    lines += [
        f"Speed on {n_speed} held-out images, batches of {BATCH}, {_threads()} (images/s, best of {ROUNDS} passes; "
        f"classifier alone on a probe batch of {BATCH}); parity = max |p - p_torch| of the classifier probabilities "
        'on 2 probe images and whether the runtime passes the `runtime="auto"` parity bounds.',
        "",
        "| runtime | classifier | cascade images/s | classifier images/s | export+load s | parity (max prob diff) |",
        "|---|---|---|---|---|---|",
    ]
    for runtime, rows in speed.items():
        for name, row in rows.items():
            p = row["parity"]
            verdict = "pass" if p["passed"] else "FAIL"
            lines.append(
                f"| {runtime} | {name} | {row['cascade_ips']:.1f} | {row['classifier_ips']:.1f} | {row['build_s']:.1f} "
                f"| {p['prob_max_abs']:.2e} ({verdict}) |"
            )
    lines.append("")
    return lines


def _threads() -> str:
    import torch

    return f"{torch.get_num_threads()} torch threads"


def _render(sections: list[list[str]], started: str, elapsed: float, locked: bool) -> str:
    head = [
        "## Fold ensembles: single classifier vs the K fold classifiers averaged",
        "",
        f"`python -m bench.bench_ensemble` ({started} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs; "
        + ("run under `flock /tmp/cpu.lock`" if locked else "NOT under the shared CPU lock")
        + f"; {elapsed / 60:.1f} min). Packing is `classifier.ensemble` in the recipe (package stage) or "
        "`training.ensemble.pack_ensemble` on a written bundle, as here (no retraining). Quality is torch fp32.",
        "",
    ]
    return "\n".join(head + [line for section in sections for line in section]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(SHARED), help="folder holding neu-seg/")
    parser.add_argument("--neu-run", default=str(ROOT / "runs" / "neu-seg"), help="NEU-Seg run folder ('' to skip)")
    parser.add_argument(
        "--demo-run", default=str(ROOT / "runs" / "bench-ensemble" / "demo-cpu"), help="demo run folder ('' to skip)"
    )
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-ensemble"), help="where ensemble bundles go")
    parser.add_argument("--speed-images", type=int, default=48, help="images timed per runtime and variant")
    parser.add_argument("--runtimes", default="", help="comma-separated runtimes (default: all available)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.neu_run = args.neu_run or None
    args.demo_run = args.demo_run or None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cascade.runtimes import available_runtimes

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runtimes = [r for r in args.runtimes.split(",") if r] or available_runtimes("cpu")
    locked = lock_held()
    started = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    sections = []
    for spec in _runs(args):
        if not spec.bundle.is_file() or len(_folds(spec.run_dir)) < 2 or not spec.data.exists():
            print(f"skipping {spec.name}: needs {spec.bundle}, 2+ fold classifiers and {spec.data}", file=sys.stderr)
            continue
        variants = _variants(spec, work)
        labelled = _labelled(spec)
        quality = {}
        for name, path in variants.items():
            quality[name] = _quality(path, labelled)
            print(f"{spec.name} {name}: cascade Dice {quality[name]['cascade']['mean']:.4f}", file=sys.stderr)
        real = {name: _real(path, Path(args.shared)) for name, path in variants.items()} if spec.severstal else {}
        for name, q in real.items():
            if q is not None:
                print(f"{spec.name} {name}: real Severstal Dice {q['cascade']['mean']:.4f}", file=sys.stderr)
        speed: dict[str, dict[str, dict]] = {}
        timed = {k: v for k, v in variants.items() if k == "single" or k.endswith("(logits)")}
        for runtime in runtimes:
            speed[runtime] = {}
            for name, path in timed.items():
                speed[runtime][name] = _speed(path, labelled, runtime, args.speed_images, work / "cache")
                print(f"{spec.name} {runtime} {name}: {speed[runtime][name]}", file=sys.stderr)
        sections.append(_section(spec, quality, speed, args.speed_images, real, Path(args.shared)))
    Path(args.out).write_text(_render(sections, started, time.perf_counter() - t0, locked))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
