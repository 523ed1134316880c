"""The HTTP service under load vs the offline predictor, side by side in one run.

Usage::

    python -m bench.bench_service                 # 20 s per level, clients 1, 4, 16
    python -m bench.bench_service --quick         # 8 s per level
    python -m bench.bench_service --bundle PATH --runtime onnx --threads 2

Measures, with the same bundle, runtime and threads:

1. **offline**: ``CascadePredictor.predict`` in this process on decoded 1600x256 images, at batch 1 and at
   the service's max batch size, and decode + predict; then, within each load level, offline runs at the
   better batch size, with and without decoding the JPEGs, alternate with the service windows
   (``--rounds``; the machine may be shared: alternating windows see the same background load). The
   reference is decode + predict: the offline predictor doing what the service does with the same bytes;
2. **service**: ``cascade serve`` in a subprocess on 127.0.0.1, 1, 4 and 16 concurrent keep-alive clients
   posting 1600x256 JPEGs to ``/predict`` for a fixed time: throughput, p50/p95/p99 latency, errors, the
   server's RSS and the mean merged batch size (from ``/metrics``).

Goal: at 16 clients, service throughput >= 90 % of the offline reference, with 0 errors. Uses the embedded
demo bundle, or the tiny random-weight test bundle when that is missing (said so in the output). Writes
``bench/results/service.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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


def _jpegs(n: int) -> list[bytes]:
    from cascade.synth.config import SynthConfig
    from cascade.synth.generator import encode_jpeg, generate_image

    config = SynthConfig()
    return [encode_jpeg(generate_image(7, i, config).image, config.jpeg_quality) for i in range(n)]


def _offline(predictor, jpegs: list[bytes], batch: int, seconds: float, decode: bool) -> float:
    """Images per second of ``predictor.predict`` (optionally decoding the JPEGs each time) for ``seconds``."""
    done, elapsed = _offline_run(predictor, jpegs, batch, seconds, decode)
    return done / elapsed


def _offline_run(predictor, jpegs: list[bytes], batch: int, seconds: float, decode: bool) -> tuple[int, float]:
    """Images predicted and seconds taken by a run of about ``seconds``."""
    from cascade.imageio import decode_image

    decoded = [decode_image(j) for j in jpegs]
    predictor.predict(decoded[:batch])  # warm-up
    done, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        chunk = [jpegs[(i + k) % len(jpegs)] for k in range(batch)]
        images = [decode_image(j) for j in chunk] if decode else [decoded[(i + k) % len(jpegs)] for k in range(batch)]
        predictor.predict(images)
        done, i = done + batch, i + batch
    return done, time.perf_counter() - start


def _request_bytes(port: int, jpeg: bytes, name: str) -> bytes:
    """A complete keep-alive ``POST /predict`` request with a multipart ``file`` part, built once."""
    boundary = "bench-" + "0" * 24
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    """Send one prepared request and read its whole answer; True for a 200 with a JSON prediction."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *([0-9]+)", head).group(1))
    body = await reader.readexactly(length)
    return status == 200 and body.startswith(b'{"image_id"')


async def _load(port: int, jpegs: list[bytes], clients: int, seconds: float) -> tuple[list[float], int, float]:
    """``clients`` concurrent keep-alive connections posting JPEGs for ``seconds``: latencies (s), errors, seconds.

    A lean HTTP/1.1 client on asyncio streams with the requests prepared beforehand, so the load generator,
    which shares the machine's cores with the server, costs a few tens of microseconds per request (a
    general-purpose client such as httpx spends milliseconds of CPU building multipart bodies and parsing).
    """
    requests = [_request_bytes(port, j, f"{i}.jpg") for i, j in enumerate(jpegs)]
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    end = start + seconds
    last = start

    async def _client(k: int) -> None:
        nonlocal errors, last
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
        i = k
        try:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    ok = await _post(reader, writer, requests[i % len(requests)])
                except (OSError, asyncio.IncompleteReadError, ValueError, AttributeError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
                t1 = time.perf_counter()
                last = max(last, t1)
                if ok:
                    latencies.append(t1 - t0)
                else:
                    errors += 1
                i += clients
        finally:
            writer.close()

    await asyncio.gather(*[_client(k) for k in range(clients)])
    return latencies, errors, last - start


def _level(
    url: str, port: int, predictor, jpegs: list[bytes], clients: int, ref_batch: int, seconds: float, rounds: int
) -> dict:
    """One load level, alternating ``rounds`` offline windows (predict alone, and decode + predict) with
    service windows, so all see the same background load."""
    latencies: list[float] = []
    errors = 0
    service_s = 0.0
    offline = {False: [0, 0.0], True: [0, 0.0]}  # decode? -> [images, seconds]
    before = _batch_stats(url)
    for _ in range(rounds):
        for decode in (False, True):
            done, elapsed = _offline_run(predictor, jpegs, ref_batch, seconds / rounds, decode=decode)
            offline[decode][0] += done
            offline[decode][1] += elapsed
        lat, err, elapsed = asyncio.run(_load(port, jpegs, clients, seconds / rounds))
        latencies, errors, service_s = latencies + lat, errors + err, service_s + elapsed
    after = _batch_stats(url)
    ms = np.array(latencies) * 1000.0
    return {
        "clients": clients,
        "images_per_s": len(latencies) / service_s,
        "offline": offline[True][0] / offline[True][1],
        "offline_predict": offline[False][0] / offline[False][1],
        "p50": float(np.percentile(ms, 50)) if ms.size else float("nan"),
        "p95": float(np.percentile(ms, 95)) if ms.size else float("nan"),
        "p99": float(np.percentile(ms, 99)) if ms.size else float("nan"),
        "errors": errors,
        "mean_batch": (after[0] - before[0]) / max(1.0, after[1] - before[1]),
    }


def _warm_up(url: str, jpegs: list[bytes]) -> None:
    """A few requests before measuring (first-call costs of the runtime and the server)."""
    import httpx

    with httpx.Client(base_url=url, timeout=300) as client:
        for j in jpegs[:3]:
            client.post("/predict", files={"file": ("warm-up.jpg", j, "image/jpeg")}).raise_for_status()


def _batch_stats(url: str) -> tuple[float, float]:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text

    def value(name: str) -> float:
        match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    return value("cascade_batch_size_sum"), value("cascade_batch_size_count")


def _start_server(bundle: Path, port: int, runtime: str, threads: int, max_batch: int, state: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CASCADE_NUM_SAMPLES": "0"}
    command = [
        sys.executable, "-m", "cascade.cli.main", "serve", "--bundle", str(bundle), "--port", str(port),
        "--runtime", runtime, "--threads", str(threads), "--max-batch-size", str(max_batch), "--queue-size", "256",
        "--state-dir", str(state), "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle to serve (default: embedded demo bundle, else the tiny test bundle)")
    parser.add_argument("--runtime", default="auto", help="runtime for both sides (auto: the predictor's choice)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's count)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-batch-size", type=int, default=4, help="the service's --max-batch-size")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of offline and service per level")
    parser.add_argument("--quick", action="store_true", help="8 s per level")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seconds = 8.0 if args.quick else args.seconds
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import psutil
    import torch

    from cascade.predictor import CascadePredictor

    threads = args.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_service_") as tmp:
        workdir = Path(tmp)
        bundle, described = _bundle(args.bundle, workdir)
        print(f"bundle: {bundle} ({described})", flush=True)
        jpegs = _jpegs(8)
        predictor = CascadePredictor.from_bundle(bundle, device="cpu", runtime=args.runtime, threads=threads)
        runtime = predictor.runtime_name
        print(f"runtime {runtime}, {threads} threads; offline ...", flush=True)
        offline = {
            f"predict, batch {b}": _offline(predictor, jpegs, b, seconds, decode=False)
            for b in sorted({1, args.max_batch_size})
        }
        offline[f"decode + predict, batch {args.max_batch_size}"] = _offline(
            predictor, jpegs, args.max_batch_size, seconds, decode=True
        )
        best = max((k for k in offline if k.startswith("predict")), key=offline.__getitem__)
        ref_batch = int(best.rsplit(" ", 1)[1])
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _start_server(bundle, port, runtime, threads, args.max_batch_size, workdir / "state")
        rows = []
        try:
            _wait_ready(url, proc)
            server = psutil.Process(proc.pid)
            _warm_up(url, jpegs)
            for clients in args.clients:
                row = _level(url, port, predictor, jpegs, clients, ref_batch, seconds, args.rounds)
                row["rss_mb"] = server.memory_info().rss / 2**20
                rows.append(row)
                print(
                    f"{clients:3d} clients: {row['images_per_s']:.2f} img/s ({row['images_per_s'] / row['offline']:.0%}"
                    f" of offline decode + predict {row['offline']:.2f}), p50 {row['p50']:.0f} ms, "
                    f"p95 {row['p95']:.0f} ms, errors {row['errors']}, batch {row['mean_batch']:.2f}",
                    flush=True,
                )
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    _write(args.out, described, runtime, threads, args.max_batch_size, seconds, offline, ref_batch, rows)
    print(f"wrote {args.out}")
    return 0


def _write(out: Path, described: str, runtime: str, threads: int, max_batch: int, seconds: float,
           offline: dict[str, float], ref_batch: int, rows: list[dict]) -> None:  # fmt: skip
    top = max(rows, key=lambda r: r["clients"]) if rows else None
    lines = [
        "## Service under load\n",
        f"`python -m bench.bench_service` — {described}, runtime `{runtime}`, {threads} threads, "
        f"max batch {max_batch}, {seconds:g} s per measurement, 1600x256 JPEGs posted to `/predict` by concurrent "
        f"keep-alive clients on 127.0.0.1 (server in its own process; the load generator, a lean asyncio HTTP "
        f"client with prepared requests, in the benchmark's). Load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}.\n",
        "| offline (same bundle, runtime, threads), before the server starts | images/s |",
        "|---|---:|",
        *[f"| {name} | {value:.2f} |" for name, value in offline.items()],
        "",
        f"Each load level alternates offline runs at batch {ref_batch} (the better batch above) with service "
        "windows, so all see the same background load on this shared machine. The reference is the offline "
        "predictor doing the service's work: decoding the same JPEG bytes, then `predict` (the service has to "
        "decode what it is sent; `predict` alone on pre-decoded arrays is shown too). RSS is the server's.\n",
        "| clients | images/s | offline decode + predict | ratio | offline predict only | ratio | p50 ms | p95 ms "
        "| p99 ms | errors | mean batch | RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['clients']} | {r['images_per_s']:.2f} | {r['offline']:.2f} | {r['images_per_s'] / r['offline']:.0%} "
            f"| {r['offline_predict']:.2f} | {r['images_per_s'] / r['offline_predict']:.0%} "
            f"| {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {r['errors']} | {r['mean_batch']:.2f} "
            f"| {r['rss_mb']:.0f} |"
            for r in rows
        ],
        "",
    ]
    if top is not None:
        ratio = top["images_per_s"] / top["offline"]
        met = ratio >= GOAL and top["errors"] == 0
        lines.append(
            f"Goal (at {top['clients']} clients, >= {GOAL:.0%} of the offline predictor's throughput on the same "
            f"JPEGs, 0 errors): **{'met' if met else 'not met'}** ({ratio:.0%}, {top['errors']} errors; "
            f"{top['images_per_s'] / top['offline_predict']:.0%} of `predict` alone on pre-decoded images).\n"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
