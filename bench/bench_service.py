"""The HTTP service under load vs the local folder engine, side by side in one run.

Usage::

    python -m bench.bench_service                 # 20 s per level, clients 1, 4, 16
    python -m bench.bench_service --quick         # 8 s per level
    python -m bench.bench_service --workers 2 --threads 1 --runtime openvino-bf16

Measures, with the same bundle and runtime, on the same 1600x256 JPEGs:

1. **folder engine** (the reference): ``cascade.scoring.score_folder`` as ``cascade predict DIR`` runs it on
   CPU, two (one per core) single-threaded predictors side by side with decoding in threads, on a folder
   holding copies of the JPEGs; images/s from the start of the call to the last row written;
2. **service**: ``cascade serve`` in a subprocess on 127.0.0.1 (``--workers`` inference workers, default
   the server's: one single-threaded predictor per core), 1, 4 and 16 concurrent keep-alive clients posting
   the JPEGs to ``/predict`` for a fixed time: throughput, p50/p95/p99 latency, errors, the server's RSS and
   the mean merged batch size (from ``/metrics``).

Within each load level, folder-engine runs alternate with the service windows (``--rounds``), so both see
the same background load on a shared machine. Goal: at 16 clients, served images/s >= 90 % of the folder
engine's, with 0 errors. Uses the embedded demo bundle, or the tiny random-weight test bundle when that is
missing (said so in the output). Writes ``bench/results/service.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from bench.loadgen import free_port, jpegs, load_average, request_bytes, run_clients, serving

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "service.md"
GOAL = 0.9


def _bundle(requested: str | None, workdir: Path) -> tuple[Path, str]:
    """The bundle to measure and how to describe it."""
    if requested:
        return Path(requested), f"`{requested}`"
    from cascade.embedded import embedded_bundle_exists, embedded_bundle_path

    if embedded_bundle_exists():
        return embedded_bundle_path(), "the embedded demo bundle"
    from tests.fixtures.models import make_tiny_bundle

    path = make_tiny_bundle(workdir / "tiny.cascade.safetensors")
    return path, "the **tiny random-weight test bundle** (the embedded demo bundle is not built yet)"


def _folder(images: list[bytes], root: Path, copies: int) -> Path:
    """A folder holding ``copies`` hard links of every JPEG (distinct names, the same bytes)."""
    source = root / "jpegs"
    source.mkdir(parents=True, exist_ok=True)
    folder = root / "folder"
    folder.mkdir(exist_ok=True)
    for i, data in enumerate(images):
        original = source / f"{i:03d}.jpg"
        original.write_bytes(data)
        for c in range(copies):
            os.link(original, folder / f"{c:04d}_{i:03d}.jpg")
    return folder


def _folder_engine(predictors: list, folder: Path, out: Path) -> tuple[int, float]:
    """Images scored and seconds taken by ``score_folder`` over ``folder`` (as ``cascade predict DIR`` does)."""
    from cascade.scoring import ScoreOptions, score_folder

    start = time.perf_counter()
    summary = score_folder(folder, out, predictors, options=ScoreOptions(batch_size=4, resume=False), workers=2)
    elapsed = time.perf_counter() - start
    if summary.failed:
        raise RuntimeError(f"the folder engine failed on {summary.failed} images")
    return summary.scored, elapsed


def _cpu(process) -> float:
    """User + system CPU seconds of a process, all its threads."""
    times = process.cpu_times()
    return times.user + times.system


def _level(
    url: str,
    port: int,
    server,
    predictors: list,
    folder: Path,
    requests: list[bytes],
    clients: int,
    seconds: float,
    rounds: int,
) -> dict:
    """One load level: ``rounds`` folder-engine runs alternating with service windows of ``seconds / rounds``."""
    latencies: list[float] = []
    errors = 0
    service_s = 0.0
    folder_images, folder_s = 0, 0.0
    folder_cpu = service_cpu = 0.0
    me = psutil.Process()
    before = _batch_stats(url)
    for r in range(rounds):
        cpu0 = _cpu(me)
        done, elapsed = _folder_engine(predictors, folder, folder.parent / f"submission_{clients}_{r}.csv")
        folder_cpu += _cpu(me) - cpu0
        folder_images, folder_s = folder_images + done, folder_s + elapsed
        started, cpu0 = time.perf_counter(), _cpu(me) + _cpu(server)
        samples = asyncio.run(run_clients(port, requests, clients, seconds / rounds))
        service_cpu += _cpu(me) + _cpu(server) - cpu0  # the server's and the load generator's
        service_s += max(s.end for s in samples) - started if samples else seconds / rounds
        latencies += [s.latency for s in samples if s.status == 200]
        errors += sum(s.status != 200 for s in samples)
    after = _batch_stats(url)
    ms = np.array(latencies) * 1000.0
    return {
        "clients": clients,
        "images_per_s": len(latencies) / service_s,
        "folder": folder_images / folder_s,
        "folder_cpu_ms": 1000.0 * folder_cpu / max(1, folder_images),
        "service_cpu_ms": 1000.0 * service_cpu / max(1, len(latencies)),
        "p50": float(np.percentile(ms, 50)) if ms.size else float("nan"),
        "p95": float(np.percentile(ms, 95)) if ms.size else float("nan"),
        "p99": float(np.percentile(ms, 99)) if ms.size else float("nan"),
        "requests": len(latencies),
        "errors": errors,
        "mean_batch": (after[0] - before[0]) / max(1.0, after[1] - before[1]),
    }


def _warm_up(url: str, images: list[bytes]) -> None:
    """A few requests before measuring (first-call costs of the runtime and the server)."""
    import httpx

    with httpx.Client(base_url=url, timeout=300) as client:
        for j in images[:3]:
            client.post("/predict", files={"file": ("warm-up.jpg", j, "image/jpeg")}).raise_for_status()


def _batch_stats(url: str) -> tuple[float, float]:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text

    def value(name: str) -> float:
        match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    return value("cascade_batch_size_sum"), value("cascade_batch_size_count")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle to serve (default: embedded demo bundle, else the tiny test bundle)")
    parser.add_argument("--runtime", default="auto", help="runtime for both sides (auto: the predictor's choice)")
    parser.add_argument("--workers", type=int, default=None, help="the server's --workers (default: its own)")
    parser.add_argument("--threads", type=int, default=None, help="the server's --threads (default: its own)")
    parser.add_argument("--predictors", type=int, default=None, help="folder-engine predictors (default: one per core)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per level and side")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-batch-size", type=int, default=4, help="the service's --max-batch-size")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of folder engine and service per level")
    parser.add_argument("--images", type=int, default=16, help="distinct JPEGs")
    parser.add_argument("--quick", action="store_true", help="8 s per level")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seconds = 8.0 if args.quick else args.seconds
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from cascade.predictor import CascadePredictor

    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    count = args.predictors or cores
    with tempfile.TemporaryDirectory(prefix="bench_service_") as tmp:
        workdir = Path(tmp)
        bundle, described = _bundle(args.bundle, workdir)
        print(f"bundle: {bundle} ({described})", flush=True)
        images = jpegs(args.images)
        predictors = [  # built one after another, as cascade predict does
            CascadePredictor.from_bundle(bundle, device="cpu", runtime=args.runtime, threads=1) for _ in range(count)
        ]
        runtime = predictors[0].runtime_name
        print(f"runtime {runtime}; folder engine: {count} predictors x 1 thread; calibrating ...", flush=True)
        probe = _folder(images, workdir / "probe", 2)
        done, elapsed = _folder_engine(predictors, probe, workdir / "probe.csv")
        window = seconds / args.rounds
        copies = max(1, round(done / elapsed * window / len(images)))
        folder = _folder(images, workdir / "engine", copies)
        print(f"folder engine ~{done / elapsed:.1f} img/s; windows of {copies * len(images)} images", flush=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        requests = [request_bytes(port, j, f"{i}.jpg") for i, j in enumerate(images)]
        extra = ["--runtime", runtime, "--max-batch-size", str(args.max_batch_size), "--queue-size", "256"]
        extra += ["--workers", str(args.workers)] if args.workers else []
        extra += ["--threads", str(args.threads)] if args.threads else []
        rows = []
        with serving(port, workdir / "state", *extra, bundle=str(bundle)) as proc:
            server = psutil.Process(proc.pid)
            workers = _server_workers(url)
            _warm_up(url, images)
            for clients in args.clients:
                row = _level(url, port, server, predictors, folder, requests, clients, seconds, args.rounds)
                row["rss_mb"] = server.memory_info().rss / 2**20
                rows.append(row)
                print(
                    f"{clients:3d} clients: {row['images_per_s']:.2f} img/s ({row['images_per_s'] / row['folder']:.0%}"
                    f" of the folder engine's {row['folder']:.2f}), p50 {row['p50']:.0f} ms, "
                    f"p95 {row['p95']:.0f} ms, errors {row['errors']}, batch {row['mean_batch']:.2f}, CPU ms/image "
                    f"{row['service_cpu_ms']:.1f} served vs {row['folder_cpu_ms']:.1f} folder",
                    flush=True,
                )
    setup = {
        "load_before": load_before,
        "described": described,
        "runtime": runtime,
        "predictors": count,
        "workers": workers,
        "max_batch": args.max_batch_size,
        "seconds": seconds,
        "rounds": args.rounds,
        "images": len(images),
        "window_images": copies * len(images),
    }
    _write(args.out, setup, rows)
    print(f"wrote {args.out}")
    return 0


def _server_workers(url: str) -> str:
    """The server's inference workers, from ``/metrics`` (``?`` when it does not say)."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    match = re.search(r"^cascade_inference_workers ([0-9.]+)$", text, re.MULTILINE)
    return str(int(float(match.group(1)))) if match else "?"


def _write(out: Path, setup: dict, rows: list[dict]) -> None:
    top = max(rows, key=lambda r: r["clients"]) if rows else None
    lines = [
        "## Service under load\n",
        f"`python -m bench.bench_service` — {setup['described']}, runtime `{setup['runtime']}`, "
        f"{setup['seconds']:g} s per level and side, {setup['images']} distinct 1600x256 JPEGs. "
        f"{load_average(setup['load_before'])}\n",
        f"- **folder engine** (the reference): `score_folder` as `cascade predict DIR` runs it, "
        f"{setup['predictors']} single-threaded predictors side by side, batch 4, decoding in 2 threads, on "
        f"{setup['window_images']} hard links of the JPEGs per run;",
        f"- **service**: `cascade serve` in its own process, {setup['workers']} inference workers "
        f"(single-threaded predictors), max batch {setup['max_batch']}, the JPEGs posted to `/predict` by "
        "concurrent keep-alive clients on 127.0.0.1 (the load generator, a lean asyncio HTTP client with "
        "prepared requests, runs in the benchmark's process, on the same cores).\n",
        f"Each level alternates {setup['rounds']} folder-engine runs with service windows, so both see the same "
        "background load on this shared machine. CPU ms per image counts every thread: the benchmark process "
        "(the folder engine) for the folder engine; the server and the load generator for the service. Their "
        "ratio is the throughput ratio to expect when both have the cores to themselves, and it does not depend "
        "on how the scheduler shares busy cores among processes with different numbers of threads. RSS is the "
        "server's after the level.\n",
        "| clients | served images/s | folder engine images/s | ratio | CPU ms/image served | CPU ms/image "
        "folder | CPU ratio | p50 ms | p95 ms | p99 ms | requests | errors | mean batch | RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['clients']} | {r['images_per_s']:.2f} | {r['folder']:.2f} | {r['images_per_s'] / r['folder']:.0%} "
            f"| {r['service_cpu_ms']:.1f} | {r['folder_cpu_ms']:.1f} | {r['folder_cpu_ms'] / r['service_cpu_ms']:.0%} "
            f"| {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {r['requests']} | {r['errors']} "
            f"| {r['mean_batch']:.2f} | {r['rss_mb']:.0f} |"
            for r in rows
        ],
        "",
    ]
    if top is not None:
        ratio = top["images_per_s"] / top["folder"]
        met = ratio >= GOAL and top["errors"] == 0
        cpu_ratio = top["folder_cpu_ms"] / top["service_cpu_ms"]
        lines.append(
            f"Goal (at {top['clients']} clients, served images/s >= {GOAL:.0%} of the folder engine's on the same "
            f"JPEGs, 0 errors): **{'met' if met else 'not met'}** ({ratio:.0%}, p95 {top['p95']:.0f} ms, "
            f"{top['errors']} errors; CPU per image {cpu_ratio:.0%} of the folder engine's efficiency).\n"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
