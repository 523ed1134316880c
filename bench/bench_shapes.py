"""Per-shape memory of the engine runtimes: RSS growth over many distinct input shapes, before and after the caps.

Usage::

    python -m bench.bench_shapes            # OpenVINO (the auto-selected runtime) and ONNX Runtime
    python -m bench.bench_shapes --quick    # 60 shapes instead of 200

Each configuration runs in a fresh process with the embedded demo bundle, one thread, ``segment_all`` (every
network runs on every image), after three warm-up images of 256x1600:

- **shapes**: ``--shapes`` images of distinct sizes (128..1280 x 128..2560 pixels, network inputs 32x32 to
  320x640 at the bundle's scale 0.25), in random order; RSS growth at the peak and after ``malloc_trim``;
- **one 39.7 MP image** (6300x6300): RSS growth at the peak and after;
- **speed**: ms per image for one 256x1600 shape repeated, and for two shapes alternating (what the cap of the
  per-shape cache could cost).

"before" is the runtime as it was: OpenVINO's runtime cache at the plugin's default (5000 entries) and no
release after oversized calls (``cascade.runtimes.shapes``); "after" is the shipped configuration. Writes
``bench/results/shapes.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.loadgen import load_average

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "shapes.md"
PLUGIN_DEFAULT_CACHE = 5000


def _child(runtime: str, before: bool, cache: int | None, shapes: int) -> dict:
    """One configuration, measured in this process (a fresh one)."""
    import ctypes
    import gc

    import numpy as np
    import psutil

    import cascade.runtimes.openvino_runtime as openvino_runtime
    import cascade.runtimes.shapes as shape_caps
    from cascade.predictor import CascadePredictor

    if cache is not None:
        openvino_runtime.RUNTIME_CACHE_ENTRIES = cache
    if before:
        openvino_runtime.RUNTIME_CACHE_ENTRIES = PLUGIN_DEFAULT_CACHE
        shape_caps.RELEASE_ABOVE_PIXELS = 1 << 62
    predictor = CascadePredictor.from_bundle(None, device="cpu", runtime=runtime, threads=1)
    process = psutil.Process()
    rng = np.random.default_rng(0)

    def image(height: int, width: int) -> np.ndarray:
        return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)

    def rss() -> float:
        return process.memory_info().rss / 2**20

    def trimmed() -> float:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return rss()

    def predict(img: np.ndarray) -> None:
        predictor.predict([img], mode="segment_all")

    for _ in range(3):
        predict(image(256, 1600))
    out: dict = {"runtime": predictor.runtime_name, "cache": openvino_runtime.RUNTIME_CACHE_ENTRIES}
    a, b = image(256, 1600), image(384, 1664)
    for label, sequence in (("same_ms", [a] * 30), ("alternating_ms", [a, b] * 15)):
        start = time.perf_counter()
        for img in sequence:
            predict(img)
        out[label] = (time.perf_counter() - start) / len(sequence) * 1e3
    base = trimmed()
    sizes = [(128 * (1 + i % 10), 128 * (1 + i // 10)) for i in range(200)][:shapes]
    rng.shuffle(sizes)
    peak = base
    start = time.perf_counter()
    for height, width in sizes:
        predict(image(height, width))
        peak = max(peak, rss())
    out |= {"shapes_s": time.perf_counter() - start, "shapes_peak": peak - base, "shapes_after": trimmed() - base}
    base = trimmed()
    predict(image(6300, 6300))
    peak = rss()
    out |= {"huge_peak": peak - base, "huge_after": trimmed() - base}
    return out


def _run(runtime: str, before: bool, cache: int | None, shapes: int) -> dict:
    command = [sys.executable, "-m", "bench.bench_shapes", "--child", runtime, str(int(before)), str(cache)]
    command.append(str(shapes))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{runtime} before={before}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtimes", nargs="+", default=["auto", "onnx"])
    parser.add_argument("--shapes", type=int, default=200, help="distinct input shapes (at most 200)")
    parser.add_argument("--caches", type=int, nargs="*", default=[0], help="other OpenVINO cache sizes to try")
    parser.add_argument("--quick", action="store_true", help="60 shapes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        runtime, before, cache, shapes = args.child
        print(json.dumps(_child(runtime, before == "1", None if cache == "None" else int(cache), int(shapes))))
        return 0
    shapes = 60 if args.quick else min(200, args.shapes)
    load_before = os.getloadavg()
    rows = []
    for runtime in args.runtimes:
        configs = [("before", True, None), ("after", False, None)]
        if runtime != "onnx":
            configs += [(f"after, cache {c}", False, c) for c in args.caches]
        for label, before, cache in configs:
            row = _run(runtime, before, cache, shapes) | {"label": label}
            rows.append(row)
            print(json.dumps(row), flush=True)
    _write(args.out, rows, shapes, load_before)
    print(f"wrote {args.out}")
    return 0


def _write(out: Path, rows: list[dict], shapes: int, load_before: tuple[float, float, float]) -> None:
    lines = [
        "## Per-shape memory of the runtimes\n",
        f"`python -m bench.bench_shapes` — the embedded demo bundle, one thread, `segment_all`, each configuration "
        f"in a fresh process. {load_average(load_before)}\n",
        f"- **{shapes} shapes**: that many images of distinct sizes (network inputs 32x32 to 320x640), RSS growth "
        "at the peak and after `malloc_trim`;",
        "- **39.7 MP**: one 6300x6300 image (network input 1575x1575);",
        "- **ms/image**: one 256x1600 shape repeated, and two shapes alternating.\n",
        "*before*: OpenVINO's per-shape cache at the plugin's default (5000 entries), no release after oversized "
        "calls; *after*: as shipped (`cascade/runtimes/shapes.py`).\n",
        f"| runtime | configuration | OpenVINO cache | {shapes} shapes: peak MB | after MB | time s | 39.7 MP: peak MB "
        "| after MB | ms/image same shape | ms/image alternating |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cache = r["cache"] if "openvino" in r["runtime"] else "-"
        lines.append(
            f"| {r['runtime']} | {r['label']} | {cache} | {r['shapes_peak']:+,.0f} | {r['shapes_after']:+,.0f} | "
            f"{r['shapes_s']:.0f} | {r['huge_peak']:+,.0f} | {r['huge_after']:+,.0f} | {r['same_ms']:.1f} | "
            f"{r['alternating_ms']:.1f} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
