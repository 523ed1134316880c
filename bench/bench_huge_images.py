"""Huge images through the service: does the memory budget hold when 39.7 MP uploads arrive at once?

Usage::

    python -m bench.bench_huge_images              # 4 at once, 3 rounds
    python -m bench.bench_huge_images --at-once 8 --rounds 2

``cascade serve`` with its defaults (the embedded demo bundle) in its own process. Each 6300x6300 grey PNG
(39.7 MP, about 50 KB: a decompression bomb's ratio) is posted to ``/predict``:

- once with ``masks=true&overlay=true`` (refused with 413 by ``--max-mask-pixels`` before any pixel is decoded);
- ``--at-once`` copies at the same time, ``--rounds`` times: the statuses, the wall time, the server's RSS
  growth at its peak (sampled every 5 ms) and one second after, and whether the growth stays bounded from
  round to round (before the memory budget, one such image cost +1.5 GB and four at once +3.9 GB).

Writes ``bench/results/huge_images.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.loadgen import free_port, load_average, peak_rss, serving

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "huge_images.md"
SIDE = 6300


def _png(side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(url: str, data: bytes, query: str = "") -> int:
    import httpx

    files = {"file": ("huge.png", data, "image/png")}
    return httpx.post(f"{url}/predict{query}", files=files, timeout=600).status_code


def _peak_mb(pid: int, run: Callable[[], object]) -> tuple[float, float]:
    """RSS (MB) of ``pid`` before ``run()`` and its highest value while it runs."""
    import psutil

    base = psutil.Process(pid).memory_info().rss / 2**20
    peak, _ = peak_rss(pid, run)
    return base, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at-once", type=int, default=4, help="concurrent huge uploads per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import psutil

    load = psutil.getloadavg()
    data = _png(SIDE)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_huge_") as tmp, serving(port, Path(tmp)) as proc:
        server = psutil.Process(proc.pid)
        start_mb = server.memory_info().rss / 2**20
        statuses: list[int] = []
        base, peak = _peak_mb(proc.pid, lambda: statuses.append(_post(url, data, "?masks=true&overlay=true")))
        rows.append(f"| 1, masks + overlay | {statuses} | - | +{peak - base:.0f} | - |")
        first_base = server.memory_info().rss / 2**20
        for r in range(args.rounds):
            statuses = []

            def burst(out: list[int] = statuses) -> None:
                threads = [threading.Thread(target=lambda: out.append(_post(url, data))) for _ in range(args.at_once)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()

            started = time.perf_counter()
            base, peak = _peak_mb(proc.pid, burst)
            elapsed = time.perf_counter() - started
            time.sleep(1.0)
            after = server.memory_info().rss / 2**20
            rows.append(
                f"| {args.at_once} at once, round {r + 1} | {sorted(statuses)} | {elapsed:.1f} | "
                f"+{peak - first_base:.0f} | +{after - first_base:.0f} |"
            )
            print(rows[-1], flush=True)
        alive = proc.poll() is None
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Huge images through the service",
        "",
        f"`python -m bench.bench_huge_images --at-once {args.at_once} --rounds {args.rounds}` ({stamp}). "
        f"`cascade serve` with its defaults and the embedded demo bundle; a {SIDE}x{SIDE} grey PNG "
        f"({SIDE * SIDE / 1e6:.1f} MP, {len(data) / 1024:.0f} KB) posted to `/predict`. Server RSS at start "
        f"{start_mb:.0f} MB; growth is against the RSS before the first burst. {load_average(load)}",
        "",
        "| requests | statuses | seconds | RSS peak growth MB | RSS growth 1 s after MB |",
        "|---|---|---:|---:|---:|",
        *rows,
        "",
        f"Server alive afterwards: {'yes' if alive else '**no**'}. Before the memory budget (issue 14), one such "
        "image with masks and overlay peaked at +1.5 GB and four at once at +3.9 GB.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
