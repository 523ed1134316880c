"""Gate economics of a bundle: Dice against segmenter runs per image and images/s, for the gate as shipped and
re-tuned for Dice only and for cost (issue 15).

Usage::

    python -m bench.bench_gate                                   # the embedded demo bundle, synthetic data
    python -m bench.bench_gate --bundle neu-seg --tune-data ../shared/neu-seg --tune-split val --halves
        # a real data set: its val split, alternate images for tuning and held-out
    python -m bench.bench_gate --write-bundle /tmp/demo-gate.cascade.safetensors

By default the tuning set (``--tune-n`` images, seed ``--tune-seed``) and the held-out set (``--n`` images,
seed ``--seed``, as ``configs/demo-cpu.yaml`` evaluates) are generated with ``cascade.synth`` (the real class
mix). The bundle's networks run once per set in segment-all mode (``training.retune.tuning_inputs``); the
gate is then re-tuned on the tuning set for every cost weight of ``--lambdas`` (``tune_cascade``: calibration,
thresholds) and scored on the held-out set from the same network outputs: mean Dice, segmenter runs per image
overall and per class against the class's positive rate, expected calibration error before/after. The cost
weight reported as chosen is the largest whose *tuning-set* Dice stays within ``--max-dice-drop`` of the
Dice-only choice. Finally the shipped gate, the Dice-only and the chosen re-tuned gates and ``segment_all``
are timed end to end (``CascadePredictor.predict``, torch runtime, images in memory, batches of 8; rounds
interleaved, median) on the first ``--stream`` held-out images. Writes ``bench/results/gate.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gate.md"
SPEEDUP_GOAL = 3.5
DICE_DROP_GOAL = 0.005
RUNS_RATIO_GOAL = 1.5


def _labelled(args: argparse.Namespace, which: str, tmp: Path, manifest: Any) -> tuple[Path, Any, str]:
    """``(images_dir, annotations, description)`` of the tuning or held-out set."""
    data, split = getattr(args, f"{which}_data"), getattr(args, f"{which}_split")
    if args.halves:
        data, split = args.tune_data, args.tune_split
    if data is not None:
        from cascade.datasource import open_labelled

        labelled = open_labelled(data, classes=manifest.class_set, split=split)
        annotations = labelled.annotations
        where = f"{labelled.kind} {data}" + (f", split {split}" if split else "")
        if args.halves:
            annotations = annotations.subset(annotations.image_ids[0 if which == "tune" else 1 :: 2])
            where += f", {'even' if which == 'tune' else 'odd'}-numbered images"
        return labelled.images_dir, annotations, f"{where} ({len(annotations.image_ids)} images)"
    from cascade.formats import read_annotations
    from cascade.synth import generate_dataset

    n, seed = (args.tune_n, args.tune_seed) if which == "tune" else (args.n, args.seed)
    root = tmp / which
    generate_dataset(root, n, seed, workers=os.cpu_count() or 1)
    images = root / "train_images"
    return images, read_annotations(root / "train.csv", images_dir=images), f"{n} synthetic images, seed {seed}"


def _score(probabilities: np.ndarray, inputs: Any, params: Any, grid: Any) -> dict[str, Any]:
    """Held-out Dice and runs of ``params`` (one ClassParams per class) from the segment-all Dice tables; a
    ``closed`` class's gate stays shut, as in the predictor."""
    from cascade.gate import gate

    dice, runs = [], []
    gates = gate(probabilities, params)
    for k, p in enumerate(params):
        opened = gates[:, k]
        table = inputs.tables[:, k, grid.pixel_thresholds.index(p.pixel_threshold), grid.min_areas.index(p.min_area)]
        dice.append(float(np.mean(np.where(opened, table, inputs.truth_empty[:, k]))))
        runs.append(float(opened.mean()))
    return {"dice": float(np.mean(dice)), "runs": float(sum(runs)), "per_class_runs": runs, "per_class_dice": dice}


def _throughput(predictors: dict[str, Any], images: list[np.ndarray], rounds: int) -> dict[str, float]:
    """Images/s of ``predict`` per named (predictor, mode), rounds interleaved, median."""
    seconds: dict[str, list[float]] = {name: [] for name in predictors}
    for predictor, mode in predictors.values():  # warm-up
        predictor.predict(images[:8], mode=mode)
    for _ in range(rounds):
        for name, (predictor, mode) in predictors.items():
            start = time.perf_counter()
            for i in range(0, len(images), 8):
                predictor.predict(images[i : i + 8], mode=mode)
            seconds[name].append(time.perf_counter() - start)
    return {name: len(images) / statistics.median(values) for name, values in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=None, help="bundle path or shipped name (default: the demo bundle)")
    parser.add_argument("--tune-data", type=Path, default=None, help="labelled tuning data (default: synthetic)")
    parser.add_argument("--tune-split", default=None)
    parser.add_argument("--heldout-data", type=Path, default=None, help="labelled held-out data (default: synthetic)")
    parser.add_argument("--heldout-split", default=None)
    parser.add_argument("--halves", action="store_true", help="tune on alternate images of --tune-data, score the rest")
    parser.add_argument("--tune-n", type=int, default=400, help="synthetic tuning images")
    parser.add_argument("--tune-seed", type=int, default=2, help="synthetic tuning seed (0 trained the demo)")
    parser.add_argument("--n", type=int, default=200, help="synthetic held-out images")
    parser.add_argument("--seed", type=int, default=1, help="synthetic held-out seed")
    parser.add_argument("--lambdas", default="0,0.001,0.002,0.005,0.01,0.02,0.05", help="cost weights to tune")
    parser.add_argument("--max-dice-drop", type=float, default=DICE_DROP_GOAL, help="for the chosen cost weight")
    parser.add_argument("--min-recall", type=float, default=0.0, help="tune.min_recall")
    parser.add_argument("--stream", type=int, default=96, help="held-out images timed end to end (0: skip)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write-bundle", type=Path, default=None, help="also write the chosen re-tuned bundle")
    parser.add_argument("--quick", action="store_true", help="smaller sets (120 tuning, 80 held-out, 32 timed)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.tune_n, args.n, args.stream, args.rounds = 120, 80, 32, 3
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from bench.bench_real import real_severstal_scores
    from cascade.bundle import load_bundle, read_manifest
    from cascade.embedded import resolve_bundle

    path = resolve_bundle(args.bundle)
    bundle = load_bundle(path)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_gate_") as tmp:
        result = _run(args, path, bundle, read_manifest(path), Path(tmp))
    result["load"] = (load_before, os.getloadavg()[0])
    result["real"] = real_severstal_scores(path)  # after the timing: it is not part of it
    text = _render(args, path, result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {args.out}")
    return 0


def _run(args: argparse.Namespace, path: Path, bundle: Any, manifest: Any, tmp: Path) -> dict[str, Any]:
    from cascade.calibration import calibrate, expected_calibration_error
    from cascade.imageio import read_image
    from cascade.predictor import CascadePredictor
    from training.retune import recorded_tune_config, retuned_manifest, tuning_inputs
    from training.tune_thresholds import tune_cascade

    base = recorded_tune_config(manifest)
    shipped = manifest.classes
    grid = dataclasses.replace(  # the shipped values are scored from the same tables
        base,
        pixel_thresholds=tuple(sorted({*base.pixel_thresholds, *(p.pixel_threshold for p in shipped)})),
        min_areas=tuple(sorted({*base.min_areas, *(p.min_area for p in shipped)})),
        min_recall=args.min_recall,
    )
    sets, inputs = {}, {}
    for which in ("tune", "heldout"):
        images_dir, annotations, description = _labelled(args, which, tmp, manifest)
        start = time.perf_counter()
        inputs[which] = tuning_inputs(bundle, images_dir, annotations, grid, show_progress=False)
        seconds = time.perf_counter() - start
        sets[which] = {"description": description, "seconds": seconds, "dir": images_dir, "ids": annotations.image_ids}
    held = inputs["heldout"]
    labels = ~held.truth_empty
    shipped_probs = calibrate(held.probabilities, manifest.calibration)
    first = {"name": "shipped gate", "lambda": None, "tune": None, "manifest": manifest}
    first |= _score(shipped_probs, held, shipped, grid)
    first["ece"] = expected_calibration_error(shipped_probs, labels)
    rows: list[dict[str, Any]] = [first]
    tune = inputs["tune"]
    for weight in (float(w) for w in args.lambdas.split(",")):
        config = dataclasses.replace(grid, cost_weight=weight)
        tuned = tune_cascade(tune.probabilities, tune.tables, tune.truth_empty, manifest.class_ids, config)
        probabilities = calibrate(held.probabilities, tuned.calibration)
        note = {"data": sets["tune"]["description"], "cost_weight": weight, "bench": "bench/bench_gate.py"}
        row = {"name": f"re-tuned, λ = {weight:g}", "lambda": weight, "tune": tuned.curve.chosen}
        row["manifest"] = retuned_manifest(manifest, tuned, note)  # keeps the classes the bundle had closed
        row |= _score(probabilities, held, row["manifest"].classes, grid)
        row["ece"] = expected_calibration_error(probabilities, labels)
        rows.append(row)
    retuned = [r for r in rows if r["lambda"] is not None]
    dice_only = retuned[0]
    allowed = [r for r in retuned if r["tune"].dice >= dice_only["tune"].dice - args.max_dice_drop - 1e-12]
    chosen = max(allowed, key=lambda r: r["lambda"])
    speed: dict[str, float] = {}
    if args.stream > 0:
        images = [read_image(sets["heldout"]["dir"] / i) for i in sets["heldout"]["ids"][: args.stream]]

        def predictor(m: Any) -> Any:
            return CascadePredictor(dataclasses.replace(bundle, manifest=m), device="cpu", runtime="torch")

        gates = {
            "shipped gate": (predictor(manifest), "cascade"),
            "dice-only": (predictor(dice_only["manifest"]), "cascade"),
            "chosen": (predictor(chosen["manifest"]), "cascade"),
            "segment_all": (predictor(manifest), "segment_all"),
        }
        speed = _throughput(gates, images, args.rounds)
    if args.write_bundle is not None:
        from cascade.bundle import save_bundle
        from training.retune import stored_precision

        save_bundle(args.write_bundle, chosen["manifest"], bundle.classifier, bundle.segmenters,
                    dtype=stored_precision(path))  # fmt: skip
    open_all = [dataclasses.replace(p, prob_threshold=0.0, closed=False) for p in shipped]
    return {
        "sets": sets,
        "rows": rows,
        "chosen": chosen,
        "dice_only": dice_only,
        "speed": speed,
        "positive_rate": labels.mean(axis=0).tolist(),
        "ece_raw": expected_calibration_error(held.probabilities, labels),
        "manifest": manifest,
        "segment_all_dice": _score(held.probabilities, held, open_all, grid),
        "empty_dice": float(held.truth_empty.mean()),
    }


def _render(args: argparse.Namespace, path: Path, result: dict[str, Any]) -> str:
    from bench.bench_real import real_severstal_line

    manifest, rows, chosen, dice_only = result["manifest"], result["rows"], result["chosen"], result["dice_only"]
    sets, speed, positive = result["sets"], result["speed"], result["positive_rate"]
    lines = [
        "## Gate economics (`bench/bench_gate.py`)\n",
        f"`python -m bench.bench_gate`: bundle `{path.name}`; gate re-tuned on {sets['tune']['description']}, "
        f"scored on {sets['heldout']['description']} (the networks' outputs computed once per set; the "
        "tuning-set probabilities come from the bundle's own classifier, which never saw those images). "
        f"Chosen cost weight: the largest whose tuning-set Dice is within {args.max_dice_drop} of the Dice-only "
        f"choice (λ = {chosen['lambda']:g}). Held-out positives per image: {sum(positive):.3f}.\n",
        "| gate | tuning Dice | tuning runs/image | held-out Dice | held-out runs/image | runs / positives | ECE |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        tuned = r["tune"]
        tune_cells = f"{tuned.dice:.4f} | {tuned.runs_per_image:.3f}" if tuned else "- | -"
        ratio = r["runs"] / max(sum(positive), 1e-9)
        lines.append(
            f"| {r['name']} | {tune_cells} | {r['dice']:.4f} | {r['runs']:.3f} | {ratio:.2f}x | {r['ece']:.4f} |"
        )
    sa = result["segment_all_dice"]
    lines += [
        f"| segment_all (shipped pixel/min-area) | - | - | {sa['dice']:.4f} | {len(positive):.3f} "
        f"| {len(positive) / max(sum(positive), 1e-9):.2f}x | - |",
        f"| all-empty (not learned) | - | - | {result['empty_dice']:.4f} | 0.000 | 0.00x | - |",
        "",
        "Synthetic images above. "
        + real_severstal_line(result.get("real"), f"`{path.name}` with the shipped gate")
        + " Per class and beside the threshold rule: `bench/results/real.md`.",
        "",
        f"Held-out ECE of the raw probabilities: {result['ece_raw']:.4f}. Per class, held-out segmenter runs per "
        f"image against the class's positive rate (goal: within {RUNS_RATIO_GOAL}x):",
        "",
        "| class | positive rate | shipped | Dice-only | chosen |",
        "|---|---:|---:|---:|---:|",
    ]
    shipped = rows[0]
    for k, (cid, name) in enumerate(zip(manifest.class_ids, manifest.class_names, strict=True)):
        runs = [r["per_class_runs"][k] for r in (shipped, dice_only, chosen)]
        cells = [f"{v:.3f} ({v / positive[k]:.1f}x)" if positive[k] else f"{v:.3f}" for v in runs]
        lines.append(f"| {cid} {name} | {positive[k]:.3f} | " + " | ".join(cells) + " |")
    lines.append("")
    if speed:
        base = speed["segment_all"]
        lines += [
            f"End to end on {args.stream} held-out images (`predict`, torch runtime, batches of 8, median of "
            f"{args.rounds} interleaved rounds; 1-minute load average {result['load'][0]:.1f} before, "
            f"{result['load'][1]:.1f} after, on {os.cpu_count()} cores: other work slows every gate alike):",
            "",
            "| gate | images/s | vs segment_all |",
            "|---|---:|---:|",
            *(f"| {name} | {value:.1f} | {value / base:.2f}x |" for name, value in speed.items()),
            "",
        ]
    drop = dice_only["dice"] - chosen["dice"]
    lines += [
        "Goals (issue 15):",
        f"- held-out Dice of the chosen gate within {DICE_DROP_GOAL} of the Dice-only one: {drop:+.4f} "
        f"({'met' if drop <= DICE_DROP_GOAL else 'not met'})",
    ]
    if speed:
        ratio = speed["chosen"] / speed["segment_all"]
        lines.append(
            f"- cascade >= {SPEEDUP_GOAL}x segment_all: {ratio:.2f}x ({'met' if ratio >= SPEEDUP_GOAL else 'not met'})"
        )
    ratios = [chosen["per_class_runs"][k] / p for k, p in enumerate(positive) if p > 0]
    worst = max(ratios) if ratios else 0.0
    lines.append(
        f"- runs per image within {RUNS_RATIO_GOAL}x of each class's positive rate: worst {worst:.2f}x "
        f"({'met' if worst <= RUNS_RATIO_GOAL else 'not met'})"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
