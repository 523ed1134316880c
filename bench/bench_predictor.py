"""Cascade predictor throughput: cascade vs segment_all, and every runtime vs torch fp32, at 256x1600.

Usage::

    python -m bench.bench_predictor            # demo bundle, CPU and GPU-recipe architectures, every runtime
    python -m bench.bench_predictor --quick    # the first of those only, fewer images, one round
    python -m bench.bench_predictor --arch "mine=efficientnet_b0:Unet/resnet18"   # other architectures

Architecture sets: ``demo`` is the embedded demo bundle (trained weights, its own thresholds; skipped
when absent); ``demo-real-rates`` the same networks with the gate thresholds re-set to pass the real
class rates on the stream (the goal's condition; the tuned demo gate favours recall and passes more);
``cpu-arch`` (mobilenetv3_small_100 + FPN/resnet18) and ``gpu-recipe`` (efficientnet_b1 +
Unet/efficientnet-b3 and FPN/resnet34) have random weights: their segmenter heads are shifted so ~5% of
pixels are positive (a trained model's mostly-confident background) and their classifier thresholds are
set between the stream's probabilities so the gate passes the real per-class rates 7.1/2.0/41.0/6.4%.
A preparation step builds and saves each bundle, exports ONNX/OpenVINO (timed) and saves a stream of
synthetic 256x1600 images; then one subprocess per runtime (so peak RSS is per runtime) loads the
bundle with ``from_bundle`` and times ``predict`` over the stream in batches, in cascade and
segment_all modes, and compares its outputs with torch fp32's. A last subprocess runs
``runtime="auto"`` and reports its choice. ``--render-only`` rewrites the markdown from the last run.
Writes ``bench/results/predictor.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "predictor.md"
REAL_RATES = (0.071, 0.020, 0.410, 0.064)
"""Share of real Severstal train images holding each class (0.565 positive classes per image)."""
DEFAULT_ARCHS = (
    "demo=embedded",
    "demo-real-rates=embedded-real-rates",
    "cpu-arch=mobilenetv3_small_100:FPN/resnet18",
    "gpu-recipe=efficientnet_b1:Unet/efficientnet-b3,Unet/efficientnet-b3,FPN/resnet34,Unet/efficientnet-b3",
)
CASCADE_GOAL, RUNTIME_GOAL = 3.5, 2.5
EMBEDDED_SOURCE = (
    "embedded demo bundle as shipped, with its tuned thresholds. Tuning maximises Dice, so its gate favours "
    "recall (e.g. class 1 at probability 0.05) and passes more than the real class rates; the goal's "
    "condition, a gate passing the real rates, is the `demo-real-rates` set below"
)


def _parse_arch(text: str) -> tuple[str, str, list[tuple[str, str]]]:
    """``name=classifier:ARCH/encoder[,ARCH/encoder x4]`` -> (name, classifier, 4 segmenter specs).

    ``name=embedded`` stands for the embedded demo bundle (trained weights and thresholds),
    ``name=embedded-real-rates`` for the same with its gate passing the real class rates.
    """
    name, _, rest = text.partition("=")
    if rest in ("embedded", "embedded-real-rates"):
        return name, rest, []
    try:
        name, rest = text.split("=", 1)
        classifier, segs = rest.split(":", 1)
        specs = [tuple(s.split("/", 1)) for s in segs.split(",")]
    except ValueError as err:
        raise SystemExit(f"bad --arch {text!r}; expected name=classifier:ARCH/encoder[,ARCH/encoder x4]") from err
    if len(specs) not in (1, 4) or any(len(s) != 2 for s in specs):
        raise SystemExit(f"bad --arch {text!r}: give 1 or 4 segmenters as ARCH/encoder")
    return name, classifier, specs * (4 // len(specs))


def _stream(n: int, work: Path) -> np.ndarray:
    """``(n, 256, 1600)`` uint8 synthetic images (``cascade.synth``; noise images if it is unavailable)."""
    try:
        from cascade.imageio import read_image
        from cascade.synth import generate_dataset

        data = generate_dataset(work / "synth", n, seed=0, overwrite=True)
        return np.stack([read_image(data.images_dir / i)[:, :, 0] for i in data.image_ids])
    except ImportError:
        return np.random.default_rng(0).integers(0, 256, (n, 256, 1600), dtype=np.uint8)


def _confident_heads(bundle: object, probe: np.ndarray) -> None:
    """Shift each segmenter's last bias so ~5% of the probe's pixels are positive (random weights only)."""
    import torch

    with torch.inference_mode():
        for seg in bundle.segmenters.values():
            head = [m for m in seg.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            logits = seg.eval()(torch.from_numpy(probe)).flatten()
            head.bias -= torch.quantile(logits[:: max(1, logits.numel() // 1_000_000)], 0.95)


def _gate_at_real_rates(bundle, stream: np.ndarray):
    """``bundle`` with each class's probability threshold set between the stream's probabilities so that the
    gate passes the real per-class rates (``REAL_RATES``); the other post-processing parameters are kept."""
    from cascade.manifest import ClassParams
    from cascade.predictor import CascadePredictor

    closed = [ClassParams(prob_threshold=1.0)] * 4
    probs = CascadePredictor(bundle, device="cpu").infer(list(stream), params=closed).probabilities
    classes = []
    for k, rate in enumerate(REAL_RATES):
        ranked = np.sort(probs[:, k])[::-1]
        passing = max(1, round(rate * len(ranked)))
        low = ranked[passing] if passing < len(ranked) else ranked[-1] - 1e-3
        threshold = float(np.clip((ranked[passing - 1] + low) / 2, 0.0, 1.0))
        classes.append(dataclasses.replace(bundle.manifest.classes[k], prob_threshold=threshold))
    return dataclasses.replace(bundle, manifest=bundle.manifest.with_classes(classes))


def _prepare(name: str, classifier: str, specs: list, stream: np.ndarray, work: Path) -> dict:
    """Build, calibrate, save and export one bundle; returns facts for the report."""
    import torch

    from cascade.bundle import LoadedBundle, build_models, load_bundle, save_bundle
    from cascade.embedded import embedded_bundle_path
    from cascade.export import bundle_cache_dir, cached_export
    from cascade.manifest import BundleManifest, ModelSpec
    from cascade.runtimes import probe_batch

    path = work / name / "bundle.cascade.safetensors"
    if classifier == "embedded":
        path, bundle, source = embedded_bundle_path(), load_bundle(embedded_bundle_path()), EMBEDDED_SOURCE
    elif classifier == "embedded-real-rates":
        bundle = _gate_at_real_rates(load_bundle(embedded_bundle_path()), stream)
        save_bundle(path, bundle.manifest, bundle.classifier, bundle.segmenters)
        source = (
            "embedded demo bundle with its gate thresholds re-set so the gate passes the real class rates on this "
            "stream (weights and post-processing unchanged)"
        )
    else:
        manifest = BundleManifest(
            classifier=ModelSpec("timm", classifier),
            segmenters={k + 1: ModelSpec(a, e) for k, (a, e) in enumerate(specs)},
        )
        torch.manual_seed(0)
        bundle = LoadedBundle(manifest, *build_models(manifest), path=path)
        _confident_heads(bundle, probe_batch(manifest))
        bundle = _gate_at_real_rates(bundle, stream)
        save_bundle(path, bundle.manifest, bundle.classifier, bundle.segmenters)
        source = "random weights (heads shifted to ~5% positive pixels, thresholds calibrated to the real rates)"
    exports = {}
    for fmt in ("onnx", "openvino"):
        start = time.perf_counter()
        cached_export(bundle, fmt, bundle_cache_dir(bundle, work / "cache"))
        exports[fmt] = time.perf_counter() - start
    m = bundle.manifest
    return {
        "bundle": str(path),
        "source": source,
        "classifier": m.classifier.name,
        "segmenters": [f"{s.arch}/{s.name}" for s in m.segmenters.values()],
        "export_s": exports,
    }


def _worker(args: argparse.Namespace) -> int:
    """One runtime in its own process: time cascade and segment_all, compare with torch's outputs."""
    from cascade.predictor import CascadePredictor

    stream = np.load(args.stream)
    start = time.perf_counter()
    predictor = CascadePredictor.from_bundle(
        args.bundle, device="cpu", runtime=args.worker, threads=args.threads, cache_dir=args.cache
    )
    load_s = time.perf_counter() - start
    predictor.predict(list(stream[:1]))  # warm-up
    out: dict = {"runtime": predictor.runtime_name, "precision": predictor.runtime.precision, "load_s": load_s}
    if predictor.runtime_report is not None:
        out["auto"] = predictor.runtime_report.to_dict()
    results = []
    segment_all = 0 if args.worker == "auto" else args.segment_all_images  # auto's choice is timed on its own row
    for _ in range(args.rounds):  # modes alternate; the best round counts (shared machine)
        for mode, count in (("cascade", len(stream)), ("segment_all", segment_all)):
            if count == 0:
                continue
            predictor.stats.reset()
            wall, cpu = time.perf_counter(), time.process_time()
            preds = []
            for i in range(0, count, args.batch):
                preds += predictor.predict(list(stream[i : min(i + args.batch, count)]), mode=mode)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if mode not in out or count / wall > out[mode]["img_s"]:
                out[mode] = {
                    "images": count,
                    "img_s": count / wall,
                    "cpu_ms": 1e3 * cpu / count,
                    "segmenter_images": dict(predictor.stats.segmenter_images),
                }
            results = results or preds
    probs = np.array([[c.probability for c in r.classes] for r in results], np.float32)
    masks = np.stack([r.masks for r in results])
    ref = Path(args.reference)
    if args.worker == "torch":
        np.savez(ref, probs=probs, masks=np.packbits(masks))
    elif ref.is_file():
        saved = np.load(ref)
        ref_masks = np.unpackbits(saved["masks"], count=masks.size).reshape(masks.shape).astype(bool)
        out["prob_max_abs"] = float(np.abs(saved["probs"] - probs).max())
        out["present_agreement"] = float(np.mean(ref_masks.any(axis=(2, 3)) == masks.any(axis=(2, 3))))
        out["mask_agreement"] = float(np.mean(ref_masks == masks))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def _run_worker(runtime: str, facts: dict, work: Path, name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_predictor", "--worker", runtime, "--bundle", facts["bundle"]]
    cmd += ["--stream", str(work / "stream.npy"), "--cache", str(work / "cache"), "--batch", str(args.batch)]
    cmd += ["--segment-all-images", str(args.segment_all_images), "--rounds", str(args.rounds)]
    cmd += ["--reference", str(work / name / "torch.npz")]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    print(f"[{name}] {runtime} ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, timeout=3600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"[{name}] {runtime} failed: {tail}", flush=True)
        return {"runtime": runtime, "error": " / ".join(tail)}
    result = json.loads(lines[-1][7:])
    print(f"[{name}] {runtime}: {json.dumps({k: result.get(k) for k in ('cascade', 'segment_all')})}", flush=True)
    return result


def _speedups(row: dict, base: dict, key: str = "cascade", base_key: str = "cascade") -> str:
    """``wall / CPU`` speed-up of ``row[key]`` over ``base[base_key]`` (CPU: process time per image)."""
    a, b = row[key], base[base_key]
    return f"{a['img_s'] / b['img_s']:.2f}x / {b['cpu_ms'] / a['cpu_ms']:.2f}x"


def _section(name: str, facts: dict, rows: list[dict]) -> list[str]:
    torch_row = next((r for r in rows if r.get("runtime") == "torch" and "error" not in r), None)
    lines = [
        f"### {name}: classifier `{facts['classifier']}`, segmenters "
        + ", ".join(f"`{s}`" for s in facts["segmenters"]),
        "",
        f"Weights: {facts['source']}.{_measured(facts)} Export once: ONNX {facts['export_s']['onnx']:.1f} s, "
        f"OpenVINO IR {facts['export_s']['openvino']:.1f} s. Speed-ups are given as wall / CPU.",
        "",
        "| runtime | cascade img/s | segment_all img/s | cascade vs segment_all | cascade vs torch fp32 | CPU ms/img "
        "| prob max abs | present agreement | mask agreement | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['runtime']} | failed: {r['error']} |||||||||")
            continue
        label = f"auto -> {r['runtime']}" if "auto" in r else r["runtime"]
        s = r.get("segment_all")
        parity = [
            f"{r[k]:.2e}" if k == "prob_max_abs" else f"{r[k]:.4%}"
            for k in ("prob_max_abs", "present_agreement", "mask_agreement")
            if k in r
        ] or ["(reference)"] * 3
        s_rate = f"{s['img_s']:.2f}" if s else "-"
        lines.append(
            f"| {label} | {r['cascade']['img_s']:.2f} | {s_rate} | "
            f"{_speedups(r, r, base_key='segment_all') if s else '-'} | "
            f"{_speedups(r, torch_row) if torch_row else '-'} | {r['cascade']['cpu_ms']:.0f} | "
            f"{' | '.join(parity)} | {r['peak_rss_mb']:.0f} |"
        )
    if torch_row:
        seg, n = torch_row["cascade"]["segmenter_images"], torch_row["cascade"]["images"]
        rates = "/".join(f"{100 * v / n:.1f}" for v in seg.values())
        passing = [r for r in rows if "error" not in r and "auto" not in r and (r is torch_row or _passes(r))]
        best = max(passing, key=lambda r: r["cascade"]["img_s"])
        best_cpu = min(passing, key=lambda r: r["cascade"]["cpu_ms"])
        cascade_gain = [
            torch_row["cascade"]["img_s"] / torch_row["segment_all"]["img_s"],
            torch_row["segment_all"]["cpu_ms"] / torch_row["cascade"]["cpu_ms"],
        ]
        runtime_gain = [
            best["cascade"]["img_s"] / torch_row["cascade"]["img_s"],
            torch_row["cascade"]["cpu_ms"] / best_cpu["cascade"]["cpu_ms"],
        ]
        lines += [
            "",
            f"Gate pass rates on the stream (torch fp32): {rates}% per class, "
            f"{sum(seg.values()) / n:.3f} segmenter runs per image (real: 7.1/2.0/41.0/6.4%, 0.565).",
            f"- cascade vs segment_all (torch fp32): {cascade_gain[0]:.2f}x wall, {cascade_gain[1]:.2f}x CPU "
            f"(goal >= {CASCADE_GOAL}x: {_verdict(cascade_gain, CASCADE_GOAL)})",
            f"- best runtime within parity vs torch fp32: {best['runtime']} {runtime_gain[0]:.2f}x wall, "
            f"{best_cpu['runtime']} {runtime_gain[1]:.2f}x CPU (goal >= {RUNTIME_GOAL}x: "
            f"{_verdict(runtime_gain, RUNTIME_GOAL)})",
        ]
    auto = next((r for r in rows if "auto" in r), None)
    if auto:
        trials = ", ".join(
            f"{t['name']} {t['ms']:.0f} ms{'' if t['passed'] else ' (fails parity)'}"
            for t in auto["auto"]["trials"]
            if t["ms"] is not None
        )
        lines.append(
            f'- `runtime="auto"` chose **{auto["auto"]["chosen"]}** (its probe, wall time of classifier + 4 '
            f"segmenters on one 256x1600 image: {trials})"
        )
    return [*lines, ""]


def _verdict(gains: list[float], goal: float) -> str:
    met = [g >= goal for g in gains]
    return "met" if all(met) else ("NOT met" if not any(met) else "met on " + ("wall" if met[0] else "CPU") + " only")


def _measured(facts: dict) -> str:
    return f" Measured {facts['measured']}." if "measured" in facts else ""


def _render(run: dict) -> str:
    """The markdown section of a finished run (``results.json`` in the work dir)."""
    header = [
        "## Cascade predictor (`cascade.predictor`)",
        "",
        f"`{run['command']}`: {run['images']} synthetic 256x1600 images in batches of {run['batch']} (cascade mode; "
        f"{run['segment_all_images']} in segment_all mode), one subprocess per runtime, {run['threads']} threads, "
        f"{run['machine']}. Wall-clock images/s, best of {run['rounds']} round(s) alternating the two modes; the "
        f"machine is shared (load average {run['load'][0]:.1f} before, {run['load'][1]:.1f} after, "
        f"{run['minutes']:.0f} min), so ratios mean more than absolute rates, and CPU ms/img (process time over all "
        "threads of the run, less disturbed by other tenants but counting torch's spinning OpenMP workers) is "
        "given too. Parity columns compare each runtime's cascade-mode results with torch fp32's on the same "
        "images (present = a class's mask is non-empty). With random weights the classifier's probabilities all "
        "lie within 2e-3 of 0.5, so the calibrated thresholds sit ~1e-4 from some images' probabilities and bf16 "
        "rounding can flip a gate: that, not the segmenters, is what lowers bf16 present agreement below 100%.",
        "",
    ]
    body = [line for name, facts, rows in run["configs"] for line in _section(name, facts, rows)]
    return "\n".join(header + body)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--worker``, one runtime's part of it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="first architecture set only, 12 images, one round")
    parser.add_argument("--arch", action="append", help="name=classifier:ARCH/encoder[,x4] (repeatable)")
    parser.add_argument("--images", type=int, default=32, help="stream length for cascade mode")
    parser.add_argument("--segment-all-images", type=int, default=4, help="images timed in segment_all mode")
    parser.add_argument("--batch", type=int, default=4, help="images per predict call")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per runtime; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="threads per runtime (default: torch's)")
    parser.add_argument("--runtimes", default=None, help="comma-separated runtimes (default: all available + auto)")
    parser.add_argument("--work", type=Path, default=None, help="work dir for bundles, exports, stream")
    parser.add_argument("--render-only", action="store_true", help="rewrite the markdown from the last results.json")
    parser.add_argument(
        "--merge", action="store_true",
        help="keep the last results.json's other architecture sets, replacing only the ones run now "
        "(each set is measured side by side within itself; its section says when)",
    )  # fmt: skip
    for hidden in ("--worker", "--bundle", "--stream", "--cache", "--reference"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        return _worker(args)
    work = args.work or Path(tempfile.gettempdir()) / "cascade-bench-predictor"
    if args.render_only:
        return _write(json.loads((work / "results.json").read_text(encoding="utf-8")))
    if args.quick:
        args.images, args.segment_all_images, args.rounds = min(args.images, 12), min(args.segment_all_images, 2), 1
    from cascade.embedded import embedded_bundle_exists

    defaults = [a for a in DEFAULT_ARCHS if embedded_bundle_exists() or "=embedded" not in a]
    archs = [_parse_arch(a) for a in (args.arch or (defaults[:1] if args.quick else defaults))]
    from cascade.runtimes import available_runtimes

    runtimes = args.runtimes.split(",") if args.runtimes else [*available_runtimes("cpu"), "auto"]
    runtimes = ["torch", *[r for r in runtimes if r != "torch"]]
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "cache", ignore_errors=True)  # exports are timed, never reused from an earlier run
    load_before, started = os.getloadavg()[0], time.time()
    stream = _stream(args.images, work)
    np.save(work / "stream.npy", stream)
    command = "python -m bench.bench_predictor" + (" --quick" if args.quick else "")
    run: dict = {"command": command, "configs": [], **{k: getattr(args, k) for k in ("batch", "rounds")}}
    run.update(images=len(stream), segment_all_images=args.segment_all_images)
    for name, classifier, specs in archs:
        print(f"[{name}] preparing {classifier} + {specs} ...", flush=True)
        facts = _prepare(name, classifier, specs, stream, work)
        facts["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        for stale in (work / "cache").glob("*/runtime-*.json"):
            stale.unlink()  # auto re-runs its trials on every bench run
        run["configs"].append((name, facts, [_run_worker(r, facts, work, name, args) for r in runtimes]))
    import onnxruntime
    import openvino
    import torch

    run.update(
        load=[load_before, os.getloadavg()[0]],
        minutes=(time.time() - started) / 60,
        threads=args.threads or torch.get_num_threads(),
        machine=f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}; native bf16: "
        f"{'yes' if _bf16() else 'no'}), torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"openvino {openvino.__version__}",
    )
    previous = work / "results.json"
    if args.merge and previous.is_file():
        fresh = {name for name, _, _ in run["configs"]}
        kept = [c for c in json.loads(previous.read_text(encoding="utf-8"))["configs"] if c[0] not in fresh]
        run["configs"] = kept + run["configs"]
        order = [a.split("=", 1)[0] for a in DEFAULT_ARCHS]
        run["configs"].sort(key=lambda c: order.index(c[0]) if c[0] in order else len(order))
    previous.write_text(json.dumps(run, indent=1), encoding="utf-8")
    return _write(run)


def _write(run: dict) -> int:
    text = _render(run)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {RESULTS}")
    return 0


def _passes(row: dict) -> bool:
    """Stream parity within the runtime's bounds (probabilities and masks)."""
    from cascade.runtimes import MIN_MASK_AGREEMENT, PARITY_TOLERANCE

    return (
        row.get("prob_max_abs", 1.0) <= PARITY_TOLERANCE[row["precision"]]
        and row.get("mask_agreement", 0.0) >= MIN_MASK_AGREEMENT
    )


def _bf16() -> bool:
    from cascade.runtimes import cpu_supports_bf16

    return cpu_supports_bf16()


if __name__ == "__main__":
    raise SystemExit(main())
