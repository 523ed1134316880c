"""Run every benchmark and assemble ``BENCHMARKS.md`` from their result sections.

Usage::

    python -m bench.run_all            # run all benchmarks, then assemble
    python -m bench.run_all --only rle synth
    python -m bench.run_all --assemble-only

Each ``bench/bench_<name>.py`` writes ``bench/results/<name>.md``; this script runs them one after
another (never side by side, so they do not compete for the two cores) and joins the sections.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

__all__ = ["BENCHMARKS", "assemble", "main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BENCHMARKS: tuple[str, ...] = (
    "real",
    "quality",
    "gate",
    "ood",
    "rle",
    "synth",
    "predictor",
    "folder",
    "service",
    "soak",
    "shapes",
    "coldstart",
    "recipe_time",
    "classifier_probe",
    "separability",
)
"""Benchmark names in the order they run and appear in BENCHMARKS.md."""


def _machine() -> str:
    from cascade.runtimes import cpu_model, cpu_supports_bf16

    bf16 = "yes" if cpu_supports_bf16() else "no"
    python = f"Python {platform.python_version()}, {platform.system()}"
    return f"{cpu_model() or 'unknown CPU'}, {os.cpu_count()} cores, native bf16: {bf16}, {python}"


def assemble(out: Path = ROOT / "BENCHMARKS.md") -> Path:
    """Join ``bench/results/*.md`` into ``out`` in the order of ``BENCHMARKS``."""
    parts = [
        "# Benchmarks\n",
        f"Assembled {date.today().isoformat()} on {_machine()}, by `make bench` (`python -m bench.run_all`). "
        "Each section is rewritten by its own `bench/bench_<name>.py` when that bench runs, with ratios measured "
        "side by side in one run, possibly on another 2-core machine: CPU models differ between them, and with "
        "them native bf16 (AMX / AVX512-BF16), which makes training and bf16 inference several times faster; "
        "the predictor and recipe-time sections name the CPU they ran on.\n",
    ]
    names = [n for n in BENCHMARKS if (RESULTS / f"{n}.md").is_file()]
    names += sorted(p.stem for p in RESULTS.glob("*.md") if p.stem not in BENCHMARKS)
    for name in names:
        parts.append((RESULTS / f"{name}.md").read_text().strip() + "\n")
    out.write_text("\n".join(parts))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these benchmarks")
    parser.add_argument("--assemble-only", action="store_true", help="only rebuild BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    args = parser.parse_args(argv)
    failed = []
    if not args.assemble_only:
        for name in args.only or BENCHMARKS:
            cmd = [sys.executable, "-m", f"bench.bench_{name}"] + (["--quick"] if args.quick else [])
            print(f"== {' '.join(cmd)}", flush=True)
            if subprocess.call(cmd, cwd=ROOT) != 0:
                failed.append(name)
    print(f"wrote {assemble()}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
