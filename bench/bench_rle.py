"""RLE codec: ``cascade.rle`` side by side with the common Kaggle kernel snippet and pycocotools.

Usage::

    python -m bench.bench_rle            # 15 repeats per measurement
    python -m bench.bench_rle --quick    # 5 repeats

Masks (256x1600): a *typical* one, the real class-3 mask of median area in
``../shared/severstal-real/annotations-1000.csv`` (a synthetic blob when that file is absent), and the
*worst case*, a checkerboard (409,600 runs of one pixel). Every figure is the median over repeats of the
per-call CPU time (``time.process_time``, so other jobs on the shared machine disturb it less).
``cascade.rle`` starts from the ``(H, W)`` bool mask and returns Kaggle's text; pycocotools is given the
Fortran-ordered uint8 array it needs (conversion not timed) and returns its own compressed counts.

End to end: the shipped demo bundle scores the real Severstal images (``../shared/severstal-real/images``) with
``score_folder`` (one single-threaded torch predictor, batches of 4), in ``cascade`` mode and in
``segment_all`` mode (every class segmented: the most masks to encode); the time spent in ``cascade.rle.encode``
is measured inside the run and reported as a share of the run's CPU time.
Writes ``bench/results/rle.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from cascade import rle
from cascade.constants import IMAGE_SHAPE

__all__ = ["kaggle_mask2rle", "kaggle_rle2mask", "main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "rle.md"
REAL_CSV = ROOT.parent / "shared" / "severstal-real" / "annotations-1000.csv"
REAL_IMAGES = ROOT.parent / "shared" / "severstal-real" / "images"
ENCODE_SHARE_GOAL = 0.01  # RLE encoding's share of folder-scoring CPU time
DECISION = (
    "Decision (issue 13, item 3): the hand-written numpy digit formatter (115 lines of `cascade/rle.py`, last "
    'shipped in commit 5a643dd) went; `encode` joins the numbers with `" ".join(map(str, ...))`. Measured '
    "under the CPU lock before removing it, scoring the {images} real images with the demo bundle: "
    "{comparison}. The edges, not the digits, cost the time of a real mask."
)
COMPARISON = "__COMPARISON__"


def kaggle_mask2rle(img: np.ndarray) -> str:
    """The encoder copied across Severstal kernels."""
    pixels = img.T.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def kaggle_rle2mask(mask_rle: str, shape: tuple[int, int] = IMAGE_SHAPE) -> np.ndarray:
    """The decoder copied across Severstal kernels (a Python loop over runs)."""
    s = mask_rle.split()
    starts, lengths = (np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2]))
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends, strict=True):
        img[lo:hi] = 1
    return img.reshape(shape[1], shape[0]).T


def _typical_mask() -> tuple[np.ndarray, str]:
    if REAL_CSV.is_file():
        with REAL_CSV.open(newline="") as f:
            texts = [row["EncodedPixels"] for row in csv.DictReader(f) if row["ClassId"] == "3"]
        texts.sort(key=rle.rle_area)
        text = texts[len(texts) // 2]
        return np.ascontiguousarray(rle.decode(text)), "typical (real class-3 mask of median area)"
    rows, cols = np.ogrid[: IMAGE_SHAPE[0], : IMAGE_SHAPE[1]]
    blob = ((rows - 128) / 60.0) ** 2 + ((cols - 700) / 90.0) ** 2 < 1
    return blob, "typical (synthetic elliptic blob; real slice absent)"


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    timer = timeit.Timer(fn, timer=time.process_time)
    number, _ = timer.autorange()  # enough calls per repeat for >= 0.2 s
    number = max(1, number // 4)
    return float(np.median(timer.repeat(repeat=repeats, number=number))) / number * 1e3


def _check_agreement(mask: np.ndarray, coco_mask) -> str:
    text = rle.encode(mask)
    if text != kaggle_mask2rle(mask):
        raise RuntimeError("cascade.rle.encode disagrees with the Kaggle snippet")
    if not np.array_equal(rle.decode(text), mask) or not np.array_equal(kaggle_rle2mask(text), mask):
        raise RuntimeError("a decoder does not reproduce the mask")
    coco = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    if not np.array_equal(coco_mask.decode(coco).astype(bool), mask):
        raise RuntimeError("pycocotools does not reproduce the mask")
    return text


def _folder_share(folder: Path, mode: str) -> dict[str, float]:
    """Score ``folder`` with the demo bundle, timing ``cascade.rle.encode`` inside the run."""
    import cascade.predictor as predictor_module
    from cascade.predictor import CascadePredictor
    from cascade.scoring import ScoreOptions, score_folder

    spent = {"encode_s": 0.0, "masks": 0, "runs": 0}
    encode = rle.encode

    def timed_encode(mask: np.ndarray) -> str:
        start = time.perf_counter()
        text = encode(mask)
        spent["encode_s"] += time.perf_counter() - start
        spent["masks"] += 1
        spent["runs"] += (text.count(" ") + 1) // 2 if text else 0
        return text

    predictor = CascadePredictor.from_bundle(None, device="cpu", runtime="torch", threads=1)
    predictor_module.encode = timed_encode
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cpu, wall = time.process_time(), time.perf_counter()
            options = ScoreOptions(batch_size=4, mode=mode, resume=False, fsync=False)
            summary = score_folder(folder, Path(tmp) / "s.csv", predictor, options=options, workers=1)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        predictor_module.encode = encode
    return {"images": summary.scored, "cpu_s": cpu, "wall_s": wall, **spent}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write ``bench/results/rle.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 15")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else 15
    from pycocotools import mask as coco_mask

    load_before = os.getloadavg()[0]
    typical, typical_label = _typical_mask()
    board = (np.indices(IMAGE_SHAPE).sum(axis=0) % 2).astype(bool)
    rows = []
    results: dict[tuple[str, str], list[float]] = {}  # (op, "typical" | "worst") -> ours, kaggle, pycocotools
    for which, label, mask in (("typical", typical_label, typical), ("worst", "worst case (checkerboard)", board)):
        text = _check_agreement(mask, coco_mask)
        fortran = np.asfortranarray(mask.astype(np.uint8))
        coco = coco_mask.encode(fortran)
        runs = len(text.split()) // 2
        contenders = {
            "encode": (partial(rle.encode, mask), partial(kaggle_mask2rle, mask), partial(coco_mask.encode, fortran)),
            "decode": (partial(rle.decode, text), partial(kaggle_rle2mask, text), partial(coco_mask.decode, coco)),
        }
        for op, fns in contenders.items():
            times = [_median_ms(fn, repeats) for fn in fns]
            results[op, which] = times
            rows.append(
                f"| {op} | {label}, {runs:,} runs | {times[0]:.3f} | {times[1]:.3f} | {times[2]:.3f} "
                f"| {times[1] / times[0]:.1f}x | {times[2] / times[0]:.2f}x |"
            )
            print(rows[-1], flush=True)
    beats_coco = [results[op, "typical"][0] <= results[op, "typical"][2] for op in ("encode", "decode")]
    worst_encode = results["encode", "worst"][0]
    folder_rows, shares, images = [], [], 0
    if REAL_IMAGES.is_dir():
        for mode in ("cascade", "segment_all"):
            run = _folder_share(REAL_IMAGES, mode)
            images = int(run["images"])
            shares.append(run["encode_s"] / run["cpu_s"])
            folder_rows.append(
                f"| {mode} | {images} | {run['masks']:,} | {run['runs']:,} | {run['cpu_s']:.2f} | {run['wall_s']:.2f} "
                f"| {run['encode_s'] * 1e3:.1f} | {shares[-1]:.3%} |"
            )
            print(folder_rows[-1], flush=True)
    lines = [
        "## RLE codec (`cascade.rle`)",
        "",
        f"`python -m bench.bench_rle{' --quick' if args.quick else ''}`: median CPU time per call over {repeats} "
        "repeats (`time.process_time`), 256x1600 masks. `cascade.rle` goes from the `(H, W)` bool mask to Kaggle's "
        "text and back; the Kaggle snippet is the `mask2rle`/`rle2mask` pair copied across Severstal kernels; "
        "pycocotools gets a Fortran-ordered uint8 array (conversion not timed) and its own compressed counts. "
        "Ratios are speed-ups of `cascade.rle` (higher is better). Load average during the run: "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (the machine is shared; CPU time is less "
        "disturbed than wall time, not immune).",
        "",
        "| op | mask | ours ms | kaggle snippet ms | pycocotools ms | kaggle / ours | pycocotools / ours |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Goals:",
        f"- at least as fast as pycocotools on the typical mask: encode {'met' if beats_coco[0] else 'NOT met'}, "
        f"decode {'met' if beats_coco[1] else 'NOT met'}",
        f"- RLE encoding under {ENCODE_SHARE_GOAL:.0%} of folder-scoring CPU time: "
        + (
            f"{max(shares):.3%} at most ({'met' if max(shares) < ENCODE_SHARE_GOAL else 'NOT met'})"
            if shares
            else "not measured (no real images)"
        ),
        f"- worst-case encode: {worst_encode:.1f} ms (a checkerboard; no goal: predictions are post-processed blobs)",
        "",
    ]
    if folder_rows:
        lines += [
            "### End to end: folder scoring",
            "",
            "`score_folder` over the real Severstal images with the demo bundle (one single-threaded torch "
            "predictor, batches of 4); encode ms is the time spent in `cascade.rle.encode` during the run.",
            "",
            "| mode | images | masks encoded | runs | scoring CPU s | scoring wall s | encode ms | encode share |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *folder_rows,
            "",
            DECISION.format(images=images, comparison=COMPARISON),
            "",
        ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines[-4:]))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
