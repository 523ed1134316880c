"""Cold start of two predictors in one process (issue 14): hangs and warm-up cost, with and without the serial warm-up.

Usage::

    python -m bench.bench_coldstart               # 15 cold processes with the serial warm-up, 15 without
    python -m bench.bench_coldstart --runs 5      # fewer
    python -m bench.bench_coldstart --quick       # --runs 4

Each run is a fresh process doing what ``cascade predict DIR`` does on a cold start on 2 cores: it builds
two single-thread predictors of the bundle (``--runtime``; default ``openvino-bf16`` where the CPU has
native bf16, the runtime ``auto`` picks there, else ``openvino``) one after the other, then starts both
predictor threads at the same moment, each on one 1600x256 image in ``segment_all`` mode, so every
network's first call happens on both threads at once. A run still going after ``--timeout`` seconds is
a hang (killed). "Without" switches the serial warm-up and first-call lock off
(``cascade.runtimes.warmup.set_serial_warmup(False)``), which is the code before the fix. Runs alternate
between the two conditions so machine load hits both alike. Writes ``bench/results/coldstart.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "coldstart.md"

logger = logging.getLogger(__name__)


def _child(bundle: str | None, cache: str, runtime: str, serial: bool) -> int:
    """One cold run: print a JSON line with build, warm-up and first-predict times (ms)."""
    import threading

    import numpy as np

    from cascade.predictor import CascadePredictor
    from cascade.runtimes.warmup import set_serial_warmup

    set_serial_warmup(serial)
    build_ms = []
    predictors = []
    for _ in range(2):
        start = time.perf_counter()
        predictors.append(
            CascadePredictor.from_bundle(bundle, device="cpu", runtime=runtime, threads=1, cache_dir=cache)
        )
        build_ms.append((time.perf_counter() - start) * 1e3)
    image = np.random.default_rng(0).integers(0, 255, (256, 1600, 3), dtype=np.uint8)
    barrier = threading.Barrier(2)
    first_ms: list[float] = []

    def first_predict(predictor: CascadePredictor) -> None:
        barrier.wait()
        start = time.perf_counter()
        predictor.predict([image], mode="segment_all")
        first_ms.append((time.perf_counter() - start) * 1e3)

    threads = [threading.Thread(target=first_predict, args=(p,), name=f"predict_{i}") for i, p in enumerate(predictors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    warmup_ms = [p.runtime.warmup_ms for p in predictors]
    names = [p.runtime_name for p in predictors]
    print(json.dumps({"runtime": names, "build_ms": build_ms, "warmup_ms": warmup_ms, "first_ms": first_ms}))
    return 0


def _run(args: argparse.Namespace, serial: bool) -> dict:
    """One cold process; ``{"hang": True}`` when it outlives ``args.timeout``."""
    cmd = [sys.executable, "-m", "bench.bench_coldstart", "--child", "on" if serial else "off"]
    cmd += ["--runtime", args.runtime, "--cache", str(args.cache)] + (
        ["--bundle", str(args.bundle)] if args.bundle else []
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"hang": True, "wall_s": time.perf_counter() - start}
    if done.returncode != 0:
        return {"hang": False, "error": done.stderr.strip().splitlines()[-1:], "wall_s": time.perf_counter() - start}
    return {"hang": False, **json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - start}


def _median(runs: list[dict], key: str) -> str:
    values = [v for r in runs if key in r for v in r[key]]
    return f"{statistics.median(values):.1f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="cold processes per condition")
    parser.add_argument("--quick", action="store_true", help="--runs 4")
    parser.add_argument("--runtime", default=None, help="default: openvino-bf16 with native bf16, else openvino")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle (default: the embedded demo)")
    parser.add_argument("--cache", type=Path, default=None, help="export cache root (default: cascade's)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds after which a run counts as hung")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        return _child(
            None if args.bundle is None else str(args.bundle), str(args.cache), args.runtime, args.child == "on"
        )
    if args.quick:
        args.runs = 4

    from cascade.bundle import load_bundle
    from cascade.embedded import resolve_bundle
    from cascade.export import bundle_cache_dir, cache_root, cached_export
    from cascade.runtimes import cpu_supports_bf16

    args.runtime = args.runtime or ("openvino-bf16" if cpu_supports_bf16() else "openvino")
    args.cache = args.cache or cache_root()
    bundle_path = resolve_bundle(args.bundle)
    bundle = load_bundle(bundle_path)
    fmt = "onnx" if args.runtime == "onnx" else "openvino"
    cached_export(bundle, fmt, bundle_cache_dir(bundle, args.cache))  # export once, outside the timed runs
    results: dict[bool, list[dict]] = {True: [], False: []}
    for i in range(args.runs):
        for serial in (True, False):
            run = _run(args, serial)
            results[serial].append(run)
            state = "HANG" if run["hang"] else ("error" if "error" in run else "ok")
            condition = "with" if serial else "without"
            print(f"run {i + 1}/{args.runs} {condition} serial warm-up: {state} ({run['wall_s']:.1f} s)", flush=True)
    rows = []
    for serial, label in ((False, "without (before the fix)"), (True, "with serial warm-up (the fix)")):
        runs = results[serial]
        hangs = sum(r["hang"] for r in runs)
        errors = sum("error" in r for r in runs)
        rows.append(
            f"| {label} | {hangs}/{len(runs)} | {errors} | {_median(runs, 'warmup_ms')} | {_median(runs, 'build_ms')} "
            f"| {_median(runs, 'first_ms')} |"
        )
    lines = [
        "## Cold start of two predictors (`cascade predict` on 2 cores, issue 14)",
        "",
        f"`python -m bench.bench_coldstart --runs {args.runs}`: {args.runs} fresh processes per condition, "
        f"alternating. Each builds two single-thread `{args.runtime}` predictors of `{bundle_path.name}` one after "
        "the other, then calls both at the same moment on one 1600x256 image (`segment_all`: every network's first "
        f"call on both threads at once). A run not finished after {args.timeout:.0f} s is a hang. Times are "
        "medians over predictors (ms): the serial warm-up inside construction, the whole construction, and the "
        "first concurrent predict.",
        "",
        "| serial warm-up | hangs | errors | warm-up ms | build ms | first predict ms |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
