"""The service over time and beyond its capacity: a bounded soak, then an overload run with recovery.

Usage::

    python -m bench.bench_soak                    # soak 16 clients x 300 s, overload 128 clients
    python -m bench.bench_soak --soak-s 60 --overload-s 20     # shorter
    python -m bench.bench_soak --soak-s 0         # overload only
    python -m bench.bench_soak --quick            # soak 60 s, overload 15 s

One ``cascade serve`` subprocess (default settings: one single-threaded inference worker per core) on
127.0.0.1, the embedded demo bundle, 1600x256 JPEGs posted to ``/predict`` by the lean keep-alive clients
of ``bench.loadgen``.

1. **soak**: ``--clients`` (16) for ``--soak-s`` seconds; per 10 s window: images/s, p50/p95/p99 latency,
   errors, the server's RSS. RSS should stay flat after the first window (warm-up).
2. **overload**: ``--clients`` for 10 s (the reference throughput), ``--overload-clients`` (128, twice the
   queue) for ``--overload-s`` seconds, then ``--clients`` again for 20 s. Counts 200s, 503s (and whether
   each carried ``Retry-After``), other statuses, connection errors and client-side timeouts (60 s); per
   second after the load drops, how soon throughput is back to 90 % of the reference.

Writes ``bench/results/soak.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.loadgen import Sample, free_port, jpegs, load_average, request_bytes, run_clients, serving

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "soak.md"
WINDOW_S = 10.0


class _RssSampler:
    """The server's RSS every second, in a thread."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.process.memory_info().rss / 2**20))
            self._stop.wait(1.0)

    def at(self, start: float, end: float) -> float:
        """Highest RSS (MB) sampled in ``[start, end)``."""
        values = [rss for t, rss in self.samples if start <= t < end]
        return max(values) if values else float("nan")


def _percentiles(samples: list[Sample]) -> tuple[float, float, float]:
    ms = np.array([s.latency for s in samples if s.status == 200]) * 1000.0
    if not ms.size:
        return (float("nan"),) * 3
    return tuple(float(np.percentile(ms, q)) for q in (50, 95, 99))  # type: ignore[return-value]


def _soak(port: int, requests: list[bytes], clients: int, seconds: float, rss: _RssSampler) -> list[dict]:
    start = time.perf_counter()
    samples = asyncio.run(run_clients(port, requests, clients, seconds))
    rows = []
    for k in range(int(np.ceil(seconds / WINDOW_S))):
        lo, hi = start + k * WINDOW_S, min(start + (k + 1) * WINDOW_S, start + seconds)
        window = [s for s in samples if lo <= s.end < hi]
        p50, p95, p99 = _percentiles(window)
        rows.append(
            {
                "t": k * WINDOW_S,
                "images_per_s": sum(s.status == 200 for s in window) / max(1e-9, hi - lo),
                "p50": p50,
                "p95": p95,
                "p99": p99,
                "errors": sum(s.status != 200 for s in window),
                "rss": rss.at(lo, hi),
            }
        )
        print(
            f"  t={rows[-1]['t']:4.0f} s: {rows[-1]['images_per_s']:.1f} img/s, p95 {p95:.0f} ms, "
            f"errors {rows[-1]['errors']}, RSS {rows[-1]['rss']:.0f} MB",
            flush=True,
        )
    return rows


def _overload(port: int, requests: list[bytes], clients: int, heavy: int, seconds: float) -> dict:
    before = asyncio.run(run_clients(port, requests, clients, 10.0))
    reference = sum(s.status == 200 for s in before) / 10.0
    print(f"  reference: {reference:.1f} img/s at {clients} clients", flush=True)
    during = asyncio.run(run_clients(port, requests, heavy, seconds))
    print(f"  overload: {Counter(s.status for s in during)}", flush=True)
    recovery_start = time.perf_counter()
    after = asyncio.run(run_clients(port, requests, clients, 20.0))
    per_second = [
        sum(1 for s in after if s.status == 200 and recovery_start + k <= s.end < recovery_start + k + 1)
        for k in range(20)
    ]
    back = next((k + 1 for k in range(20) if per_second[k] >= 0.9 * reference), None)
    refused = [s for s in during if s.status == 503]
    return {
        "reference": reference,
        "heavy": heavy,
        "seconds": seconds,
        "statuses": Counter(s.status for s in during),
        "ok_per_s": sum(s.status == 200 for s in during) / seconds,
        "p50": _percentiles(during)[0],
        "p95": _percentiles(during)[1],
        "p99": _percentiles(during)[2],
        "refusal_ms": float(np.percentile([s.latency for s in refused], 95) * 1000) if refused else float("nan"),
        "retry_after": sum(s.retry_after is not None for s in refused),
        "refused": len(refused),
        "per_second_after": per_second,
        "back_after_s": back,
        "after_errors": sum(s.status != 200 for s in after),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle to serve (default: the embedded demo bundle)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--soak-s", type=float, default=300.0, help="soak duration (0: skip)")
    parser.add_argument("--overload-clients", type=int, default=128)
    parser.add_argument("--overload-s", type=float, default=30.0, help="overload duration (0: skip)")
    parser.add_argument("--quick", action="store_true", help="soak 60 s, overload 15 s")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.soak_s, args.overload_s = min(args.soak_s, 60.0), min(args.overload_s, 15.0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    images = jpegs(16)
    port = free_port()
    requests = [request_bytes(port, j, f"{i}.jpg") for i, j in enumerate(images)]
    soak: list[dict] = []
    overload: dict | None = None
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench_soak_") as tmp,
        serving(port, Path(tmp) / "state", bundle=args.bundle) as proc,
    ):
        asyncio.run(run_clients(port, requests, args.clients, 5.0))  # warm-up
        with _RssSampler(proc.pid) as rss:
            if args.soak_s > 0:
                print(f"soak: {args.clients} clients x {args.soak_s:g} s", flush=True)
                soak = _soak(port, requests, args.clients, args.soak_s, rss)
            if args.overload_s > 0:
                print(f"overload: {args.overload_clients} clients x {args.overload_s:g} s", flush=True)
                overload = _overload(port, requests, args.clients, args.overload_clients, args.overload_s)
                overload["rss"] = max(r for _, r in rss.samples)
        alive = proc.poll() is None
    _write(args.out, args, soak, overload, alive, load_before)
    print(f"wrote {args.out}")
    return 0


def _write(
    out: Path,
    args: argparse.Namespace,
    soak: list[dict],
    overload: dict | None,
    alive: bool,
    load_before: tuple[float, float, float],
) -> None:
    lines = [
        "## Soak and overload\n",
        f"`python -m bench.bench_soak` — `cascade serve` with its defaults (one single-threaded inference worker "
        f"per core, queue 64), the embedded demo bundle, 1600x256 JPEGs posted to `/predict` by keep-alive "
        f"clients on the same machine ({os.cpu_count()} cores). {load_average(load_before)}\n",
    ]
    if soak:
        first, rest = soak[0], soak[1:] or soak
        total_errors = sum(r["errors"] for r in soak)
        requests = sum(r["images_per_s"] * WINDOW_S for r in soak)
        lines += [
            f"### Soak: {args.clients} clients, {args.soak_s:g} s\n",
            "| t s | images/s | p50 ms | p95 ms | p99 ms | errors | server RSS MB |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *[
                f"| {r['t']:.0f} | {r['images_per_s']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} "
                f"| {r['errors']} | {r['rss']:.0f} |"
                for r in soak
            ],
            "",
            f"{requests:,.0f} requests, {total_errors} errors. RSS after the first window: "
            f"{rest[0]['rss']:.0f} -> {soak[-1]['rss']:.0f} MB (first window {first['rss']:.0f} MB); "
            f"throughput {min(r['images_per_s'] for r in rest):.1f}-{max(r['images_per_s'] for r in rest):.1f} "
            "images/s per window.\n",
        ]
    if overload is not None:
        statuses = overload["statuses"]
        others = {k: v for k, v in statuses.items() if k not in (200, 503)}
        lines += [
            f"### Overload: {overload['heavy']} clients for {overload['seconds']:g} s, then {args.clients} again\n",
            "| | value |",
            "|---|---:|",
            f"| reference before, {args.clients} clients | {overload['reference']:.1f} images/s |",
            f"| answered 200 during overload | {statuses.get(200, 0)} ({overload['ok_per_s']:.1f}/s) |",
            f"| p50 / p95 / p99 of those 200s | {overload['p50']:.0f} / {overload['p95']:.0f} / "
            f"{overload['p99']:.0f} ms |",
            f"| answered 503 | {overload['refused']} ({overload['retry_after']} with Retry-After) |",
            f"| p95 time to a 503 | {overload['refusal_ms']:.0f} ms |",
            f"| other statuses, connection errors (0), client timeouts (-1) | {others or 'none'} |",
            f"| images/s in each second after the load dropped | {', '.join(map(str, overload['per_second_after']))} |",
            f"| back to >= 90 % of the reference after | {overload['back_after_s']} s |",
            f"| errors after the load dropped | {overload['after_errors']} |",
            f"| server peak RSS over the whole run | {overload['rss']:.0f} MB |",
            f"| server alive at the end | {'yes' if alive else '**no**'} |",
            "",
        ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
