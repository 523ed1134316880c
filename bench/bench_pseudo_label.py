"""Pseudo-labelling (``cascade train --stage pseudo_label``): validation Dice of round 0 (labelled data only) vs
rounds 1-2 (labelled + pseudo-labelled), per class, with the all-empty baseline beside every number.

Usage (heavy: one dataset per call, each under the shared CPU lock)::

    flock /tmp/cpu.lock python -m bench.bench_pseudo_label --dataset neu
    flock /tmp/cpu.lock python -m bench.bench_pseudo_label --dataset synth
    python -m bench.bench_pseudo_label --report-only        # rewrite the results file from the finished runs

- **NEU-Seg** (``../shared/neu-seg``, VOC layout, 3 classes, 200x200): ``LABELLED_SHARE`` of the train split keeps
  its masks (a VOC folder of links with its own ``ImageSets``), the rest of train is copied as plain JPEGs into an
  "unlabelled" folder, of which ``pseudo_label.max_images`` are used; validation = ``VAL_IMAGES`` images of the val
  split (never pseudo-labelled: the stage drops unlabelled images equal to them). Recipe: configs/neu-seg-cpu.yaml
  with the overrides in ``NEU_OVERRIDES`` (half-size input, fewer epochs).
- **Synthetic**: ``cascade synth --profile train`` sets (labelled: ``SYNTH_LABELLED`` images, seed 0; unlabelled:
  ``SYNTH_UNLABELLED`` images, seed 1, masks discarded); recipe configs/demo-cpu.yaml with ``SYNTH_OVERRIDES``.

Each run is ``run_pipeline`` of every stage with the unlabelled folder (the base run = round 0, then the rounds).
Writes ``bench/results/pseudo_label.md`` from each run's ``pseudo_label/summary.json`` and stage markers.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.cpu_lock import lock_held

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "pseudo_label.md"
NEU = ROOT.parent / "shared" / "neu-seg"
LABELLED_SHARE = 0.15
VAL_IMAGES = 300
SYNTH_LABELLED = 120
LIFT = 0.005
"""A class counts as lifted when its best pseudo-labelled round beats round 0 by more than this validation Dice."""
SYNTH_UNLABELLED = 160
PSEUDO = {"rounds": 2, "present_threshold": 0.9, "absent_threshold": 0.1, "pixel_confidence": 0.8,
          "mask_confidence": 0.6, "soft": False, "include_clean": True}  # fmt: skip
NEU_OVERRIDES: dict[str, Any] = {
    "input.scale": 0.5,  # 200x200 -> 100x100, padded to 128x128
    "classifier.parallel_folds": 2,
    "classifier.train.epochs": 3,
    "classifier.train.val_every": 3,
    "segmenter.crop": {"height": 96, "width": 96, "non_empty_p": 0.7},
    "segmenter.train.epochs": 3,
    "segmenter.train.val_every": 3,
    "pseudo_label.max_images": 400,
    **{f"pseudo_label.{k}": v for k, v in PSEUDO.items()},
}
SYNTH_OVERRIDES: dict[str, Any] = {
    "classifier.train.epochs": 5,
    "classifier.train.val_every": 5,
    "classifier.train.scheduler": {"name": "onecycle", "warmup_epochs": 1},
    "segmenter.train.epochs": 4,
    "segmenter.class_epochs": {3: 6},
    "segmenter.train.min_samples": 32,
    "evaluate.synth_n": 0,  # validation = the tune fold (also what picks the round)
    "pseudo_label.max_images": SYNTH_UNLABELLED,
    **{f"pseudo_label.{k}": v for k, v in PSEUDO.items()},
}


def _neu_data(work: Path) -> tuple[Path, Path]:
    """``(labelled VOC folder, unlabelled JPEG folder)`` carved from NEU-Seg."""
    labelled, unlabelled = work / "neu-labelled", work / "neu-unlabelled"
    if (labelled / "ImageSets").is_dir() and unlabelled.is_dir():
        return labelled, unlabelled
    sets = NEU / "ImageSets" / "Segmentation"
    train = sets.joinpath("train.txt").read_text().split()
    val = sets.joinpath("val.txt").read_text().split()
    rng = random.Random(0)
    rng.shuffle(train)
    keep = sorted(train[: round(LABELLED_SHARE * len(train))])
    rest = sorted(train[len(keep) :])
    val = sorted(rng.sample(val, VAL_IMAGES))
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (labelled / sub).mkdir(parents=True, exist_ok=True)
    for name in keep + val:
        for sub, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
            target = labelled / sub / f"{name}{suffix}"
            if not target.exists():
                os.symlink((NEU / sub / f"{name}{suffix}").resolve(), target)
    (labelled / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(keep) + "\n")
    (labelled / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val) + "\n")
    unlabelled.mkdir(parents=True, exist_ok=True)
    for name in rest:  # plain JPEG files, as a line's camera would leave them
        shutil.copyfile(NEU / "JPEGImages" / f"{name}.jpg", unlabelled / f"u{name}.jpg")
    return labelled, unlabelled


def _synth_data(work: Path) -> tuple[Path, Path]:
    """``(labelled synthetic folder, unlabelled JPEG folder)`` from ``cascade synth --profile train``."""
    from cascade.synth import generate_dataset, synth_config

    labelled, source, unlabelled = work / "synth-labelled", work / "synth-unlabelled-src", work / "synth-unlabelled"
    if not (labelled / "train.csv").is_file():
        generate_dataset(labelled, SYNTH_LABELLED, 0, config=synth_config("train"), overwrite=True)
    if not unlabelled.is_dir():
        generate_dataset(source, SYNTH_UNLABELLED, 1, config=synth_config("train"), overwrite=True)
        unlabelled.mkdir(parents=True)
        for image in sorted((source / "train_images").iterdir()):
            shutil.copyfile(image, unlabelled / f"u{image.name}")  # the masks stay behind
    return labelled, unlabelled


def _run(name: str, work: Path) -> Path:
    from training.pipeline import run_pipeline
    from training.recipe import load_config

    if name == "neu":
        data, unlabelled = _neu_data(work)
        overrides = {**NEU_OVERRIDES, "data.dir": str(data)}
        recipe = ROOT / "configs" / "neu-seg-cpu.yaml"
    else:
        data, unlabelled = _synth_data(work)
        overrides = {**SYNTH_OVERRIDES, "data.dir": str(data)}
        recipe = ROOT / "configs" / "demo-cpu.yaml"
    overrides["pseudo_label.unlabelled"] = str(unlabelled)
    config = load_config(recipe, overrides)
    run_dir = work / f"run-{name}"
    started = time.perf_counter()
    locked = lock_held()
    run_pipeline(config, run_dir, resume=True)
    meta = {
        "recipe": str(recipe.relative_to(ROOT)),
        "overrides": overrides,
        "wall_seconds": time.perf_counter() - started,
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "lock": "yes" if locked else "no",
    }
    (run_dir / "bench_meta.json").write_text(json.dumps(meta, indent=2))
    return run_dir


def _stage_minutes(run_dir: Path) -> float:
    total = 0.0
    for marker in [*run_dir.glob("stages/*.done"), *run_dir.glob("pseudo_label/round*/stages/*.done")]:
        if marker.name != "pseudo_label.done":
            total += json.loads(marker.read_text())["seconds"]
    return total / 60


def _oof_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    path = run_dir / "classifier" / "oof.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _positives(run_dir: Path) -> tuple[dict[str, int], int]:
    """Labelled training images per class and in all (the out-of-fold table's labels, without the tune fold 0)."""
    rows = [r for r in _oof_rows(run_dir) if r.get("fold") != "0"]
    keys = [k.removeprefix("label_") for k in (rows[0] if rows else {}) if k.startswith("label_")]
    return {c: sum(r[f"label_{c}"] == "1" for r in rows) for c in keys}, len(rows)


def _section(title: str, run_dir: Path) -> list[str]:
    summary_path = run_dir / "pseudo_label" / "summary.json"
    if not summary_path.is_file():
        dataset = run_dir.name.removeprefix("run-")
        return [
            f"### {title}",
            "",
            f"Not measured yet (`{run_dir.name}` has no pseudo_label/summary.json): "
            f"`flock /tmp/cpu.lock python -m bench.bench_pseudo_label --dataset {dataset}`.",
            "",
        ]
    summary = json.loads(summary_path.read_text())
    meta = json.loads((run_dir / "bench_meta.json").read_text()) if (run_dir / "bench_meta.json").is_file() else {}
    report = (run_dir / "pseudo_label" / "report.md").read_text().split("\n", 2)[2]
    rounds = summary["rounds"]
    base = rounds[0]["validation"]["per_class"]
    lifts = []
    for c in base:
        best = max(r["validation"]["per_class"][c]["cascade"] for r in rounds[1:])
        lifts.append(
            f"class {c}: best round {best:.4f} vs round 0 {base[c]['cascade']:.4f} ({best - base[c]['cascade']:+.4f})"
        )
    positives, n_labelled = _positives(run_dir)
    rare = min(positives, key=positives.get) if positives else None
    gains = {c: max(r["validation"]["per_class"][c]["cascade"] for r in rounds[1:]) - base[c]["cascade"] for c in base}
    lifted = [c for c, g in gains.items() if g > LIFT]
    if not lifted:
        verdict = f"Pseudo-labelling lifted no class by more than {LIFT} validation Dice (rare class included)."
    else:
        verdict = f"Classes lifted by more than {LIFT}: {', '.join(lifted)}."
    if rare is not None:
        verdict += (
            f" The rarest labelled class is {rare} ({positives[rare]} of {n_labelled} labelled "
            f"images; per class {positives}): {'lifted' if rare in lifted else 'not lifted'} ({gains[rare]:+.4f})."
        )
    verdict += f" Chosen bundle: round {summary['chosen_round']}."
    if positives and max(positives.values()) < 1.5 * min(positives.values()):
        verdict += " The classes are about equally frequent here: none is rare."
    settings = ", ".join(f"{k}={v}" for k, v in meta.get("overrides", {}).items() if k != "pseudo_label.unlabelled")
    return [
        f"### {title}",
        "",
        f"Recipe `{meta.get('recipe', '?')}` with {settings}.",
        f"Training time of all rounds (stage markers): {_stage_minutes(run_dir):.1f} min; wall "
        f"{meta.get('wall_seconds', float('nan')) / 60:.1f} min; CPU lock held: {meta.get('lock', '?')}.",
        "",
        "Per class, best pseudo-labelled round vs round 0 (validation Dice): " + "; ".join(lifts) + ".",
        "",
        f"**{verdict}**",
        "",
        report.replace("\n## ", "\n#### "),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("neu", "synth"), help="Run this measurement (heavy).")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-pseudo-label", help="Data and runs.")
    parser.add_argument("--report-only", action="store_true", help="Only rewrite the results file.")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.dataset and not args.report_only:
        _run(args.dataset, args.work)
    lines = [
        "## Pseudo-labelling: round 0 (labelled only) vs rounds 1-2 (labelled + pseudo-labelled)",
        "",
        f"`python -m bench.bench_pseudo_label` on {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}. Validation Dice = Kaggle Dice of the tuned cascade on the validation images "
        "(NEU-Seg: a subset of the val split; synthetic: the tune fold), the numbers that pick the round; all-empty "
        "= predicting nothing. The same validation images tune the thresholds and pick the round, so the chosen "
        "round's margin is optimistic: on a few hundred images, gains under ~0.01 are within that noise. The "
        "held-out table is the evaluate stage's (NEU-Seg: the same val images, scored through the bundle). "
        "Pseudo-label thresholds: " + ", ".join(f"{k}={v}" for k, v in PSEUDO.items()) + ".",
        "",
        *_section(
            f"NEU-Seg: {LABELLED_SHARE:.0%} of train labelled, the rest unlabelled, {VAL_IMAGES} val images",
            args.work / "run-neu",
        ),
        *_section(
            f"Synthetic (profile train): {SYNTH_LABELLED} labelled, {SYNTH_UNLABELLED} unlabelled",
            args.work / "run-synth",
        ),
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
