"""A lean HTTP/1.1 load generator for the service benchmarks, and the server they run against.

Clients are asyncio streams on keep-alive connections posting prepared ``/predict`` requests, so the
generator, which shares the machine's cores with the server, costs tens of microseconds per request.
Every answer is recorded as a ``Sample``: when it finished, its status, its latency and whether a 503 came
with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "Sample",
    "free_port",
    "jpegs",
    "load_average",
    "peak_rss",
    "request_bytes",
    "run_clients",
    "serving",
    "start_server",
    "wait_ready",
]

T = TypeVar("T")

_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *([0-9]+)")
_RETRY_AFTER = re.compile(rb"(?i)\r\nretry-after: *([0-9]+)")


@dataclass(frozen=True)
class Sample:
    """One answer (or failure: ``status`` 0 for a connection error, -1 for a client-side timeout)."""

    end: float
    status: int
    latency: float
    retry_after: int | None = None


def jpegs(n: int) -> list[bytes]:
    """``n`` synthetic 1600x256 steel JPEGs."""
    from cascade.synth.config import SynthConfig
    from cascade.synth.generator import encode_jpeg, generate_image

    config = SynthConfig()
    return [encode_jpeg(generate_image(7, i, config).image, config.jpeg_quality) for i in range(n)]


def request_bytes(port: int, jpeg: bytes, name: str) -> bytes:
    """A complete keep-alive ``POST /predict`` with a multipart ``file`` part."""
    boundary = "load-" + "0" * 24
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


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """Send one request, read its whole answer: ``(status, head)``."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = _LENGTH.search(head)
    if match:
        await reader.readexactly(int(match.group(1)))
    return status, head


async def run_clients(
    port: int,
    requests: list[bytes],
    clients: int,
    seconds: float,
    *,
    timeout: float = 60.0,
    honour_retry_after: bool = False,
) -> list[Sample]:
    """``clients`` concurrent connections sending ``requests`` round-robin for ``seconds``.

    Args:
        timeout: a request without an answer by then counts as a client-side timeout (status -1).
        honour_retry_after: after a 503, wait as long as its ``Retry-After`` says before the next request.
    """
    samples: list[Sample] = []
    end = time.perf_counter() + seconds

    async def _client(k: int) -> None:
        reader = writer = None
        i = k
        while time.perf_counter() < end:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
                except OSError:
                    samples.append(Sample(time.perf_counter(), 0, 0.0))
                    await asyncio.sleep(0.05)
                    continue
            t0 = time.perf_counter()
            retry = None
            try:
                status, head = await asyncio.wait_for(_exchange(reader, writer, requests[i % len(requests)]), timeout)
                match = _RETRY_AFTER.search(head)
                retry = int(match.group(1)) if match else None
                if b"connection: close" in head.lower():
                    writer.close()
                    writer = None
            except TimeoutError:
                status = -1
                writer.close()
                writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                status = 0
                writer.close()
                writer = None
            t1 = time.perf_counter()
            samples.append(Sample(t1, status, t1 - t0, retry))
            if status == 503 and honour_retry_after and retry:
                await asyncio.sleep(min(retry, max(0.0, end - time.perf_counter())))
            i += clients
        if writer is not None:
            writer.close()

    await asyncio.gather(*[_client(k) for k in range(clients)])
    return samples


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    port: int, state: Path, *extra: str, bundle: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``cascade serve`` on 127.0.0.1:``port`` in a subprocess (no GUI samples, warnings only; ``env`` added to
    this process's environment)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CASCADE_NUM_SAMPLES": "0", **(env or {})}
    command = [sys.executable, "-m", "cascade.cli.main", "serve", "--port", str(port), "--state-dir", str(state)]
    command += ["--log-level", "warning", *(["--bundle", bundle] if bundle else []), *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Block until ``/readyz`` answers 200 (``RuntimeError`` if the server exits or takes too long)."""
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


@contextmanager
def serving(
    port: int, state: Path, *extra: str, bundle: str | None = None, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """``start_server`` ready to serve (``wait_ready``) for the block; terminated (killed after 30 s) when it ends."""
    proc = start_server(port, state, *extra, bundle=bundle, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def load_average(before: tuple[float, float, float]) -> str:
    """A sentence with the load average (1, 5, 15 min) before a run and now, after it: was the machine busy?"""
    now = os.getloadavg()
    return (
        f"Load average before the run {', '.join(f'{x:.1f}' for x in before)}, after it "
        f"{', '.join(f'{x:.1f}' for x in now)} ({os.cpu_count()} cores; above the core count means other jobs "
        "competed for them)."
    )


def peak_rss(pid: int, run: Callable[[], T]) -> tuple[float, T]:
    """The highest RSS (MB) of process ``pid`` sampled every 5 ms while ``run()`` runs, and what it returned."""
    import threading

    import psutil

    process = psutil.Process(pid)
    peak = process.memory_info().rss
    done = threading.Event()

    def _sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=_sample, daemon=True)
    sampler.start()
    try:
        result = run()
    finally:
        done.set()
        sampler.join()
    return peak / 2**20, result
