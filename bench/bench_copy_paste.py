"""Copy-paste on a rare class: does ``augment: copy_paste`` lift a class with few training images on NEU-Seg?

Usage (heavy: run it under the shared CPU lock)::

    flock /tmp/cpu.lock python -m bench.bench_copy_paste
    python -m bench.bench_copy_paste --rare-class 1 --rare-images 30 --others 300 --seeds 0,1 --rate 1.0 --p 0.5

Set-up (all on NEU-Seg, ``../shared/neu-seg``; never the Severstal images):

1. A reduced training split: ``--rare-images`` train images holding the rare class (default class 1, inclusion)
   and ``--others`` train images without it, written as a VOC folder of symlinks (``ImageSets`` rewritten) under
   ``--work``; the val split is NEU-Seg val, whole.
2. The rare class's segmenter alone (``cascade train --stage segmenter``, ``segmenter.class_ids: [rare]``) from the
   recipe ``configs/neu-seg-cpu.yaml`` (pretrained EfficientNet-Lite0 Unet, bf16, 160x160 crops), on the rare
   class's positives plus ``--negatives`` random negatives of the reduced split, ``min_samples`` samples an epoch,
   twice per seed: without and with ``{name: copy_paste, p, params: {class_rates: {rare: rate}}}`` (pastes of the
   rare class only, donors = the reduced split).
3. Each segmenter replaces the rare class's segmenter in the NEU-Seg bundle of ``--bundle`` (its classifier, the
   other segmenters and every threshold unchanged) and scores NEU-Seg val through ``CascadePredictor``: the rare
   class's Dice in the cascade over all 894 images (that bundle's gate and post-processing), and on the val images
   holding the class, gated and ungated (segmenter alone), beside all-empty and the bundle's own segmenter
   (trained on all 3,129 train images).

Writes ``bench/results/copy_paste.md``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.cpu_lock import lock_held

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "copy_paste.md"
SHARED = ROOT.parent / "shared"
RECIPE = ROOT / "configs" / "neu-seg-cpu.yaml"


def _reduced_voc(neu: Path, out: Path, rare: int, n_rare: int, n_others: int, seed: int) -> dict[str, Any]:
    """A VOC folder of symlinks to ``neu`` whose train split keeps ``n_rare`` images with class ``rare``."""
    from cascade.datasource import open_labelled

    labelled = open_labelled(neu, classes="inclusion,patches,scratches").split("train")
    k = labelled.classes.index(rare)
    ids = list(labelled.image_ids)
    has = dict(zip(ids, labelled.annotations.labels()[:, k], strict=True))
    rng = random.Random(seed)
    rare_ids = rng.sample([i for i in ids if has[i]], n_rare)
    other_ids = rng.sample([i for i in ids if not has[i]], n_others)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("JPEGImages", "SegmentationClass"):
        link = out / name
        if not link.exists():
            link.symlink_to((neu / name).resolve(), target_is_directory=True)
    sets = out / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    stems = sorted(Path(i).stem for i in rare_ids + other_ids)
    (sets / "train.txt").write_text("\n".join(stems) + "\n")
    (sets / "val.txt").write_text((neu / "ImageSets" / "Segmentation" / "val.txt").read_text())
    return {"rare_ids": rare_ids, "other_ids": other_ids}


def _recipe(args: argparse.Namespace, data: Path, seed: int, copy_paste: bool) -> dict[str, Any]:
    config = yaml.safe_load(RECIPE.read_text())
    config["name"] = f"copy-paste-{'on' if copy_paste else 'off'}-s{seed}"
    config["seed"] = seed
    config["data"]["dir"] = str(data)
    seg = config["segmenter"]
    seg["class_ids"] = [args.rare_class]
    seg["train"]["epochs"] = args.epochs
    seg["train"]["min_samples"] = args.min_samples
    seg["train"]["val_every"] = args.epochs
    if copy_paste:
        params = {"class_rates": {args.rare_class: args.rate}}
        config["augment"] = [{"name": "copy_paste", "p": args.p, "params": params}, *config["augment"]]
    return config


def _negatives(path: Path, rare: int, other_ids: list[str], n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "ClassId", "probability", "kind"])
        writer.writerows((i, rare, "0.000000", "random") for i in rng.sample(other_ids, n))


def _train(args: argparse.Namespace, data: Path, other_ids: list[str], seed: int, copy_paste: bool) -> Path:
    run = Path(args.work) / f"seed{seed}-{'copy_paste' if copy_paste else 'plain'}"
    weights = run / "segmenter" / f"class{args.rare_class}" / "best.pt"
    if weights.is_file() and not args.retrain:
        return run
    run.mkdir(parents=True, exist_ok=True)
    config_path = run / "recipe.yaml"
    config_path.write_text(yaml.safe_dump(_recipe(args, data, seed, copy_paste), sort_keys=False))
    _negatives(run / "hard_negatives.csv", args.rare_class, other_ids, args.negatives, seed)
    start = time.perf_counter()
    cmd = [str(ROOT / ".venv" / "bin" / "cascade"), "train", "--config", str(config_path), "--out", str(run)]
    subprocess.run([*cmd, "--stage", "segmenter"], check=True, cwd=ROOT)
    (run / "train_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return run


def _bundle_with(base: Path, run: Path, rare: int, work: Path) -> Path:
    import torch

    from cascade.bundle import load_bundle, save_bundle
    from training.loop import load_checkpoint

    bundle = load_bundle(base)
    segmenters = dict(bundle.segmenters)
    segmenters[rare].load_state_dict(load_checkpoint(run / "segmenter" / f"class{rare}" / "best.pt")["model"])
    path = work / f"{run.name}.cascade.safetensors"
    save_bundle(path, bundle.manifest, bundle.classifier, segmenters, dtype=torch.float16)
    return path


@dataclass(frozen=True)
class ValSet:
    """NEU-Seg val in memory: images, the rare class's truth, and the gate of the bundle's classifier on it."""

    images: list[np.ndarray]
    truth: np.ndarray  # (N, H, W) bool, the rare class
    probabilities: np.ndarray  # (N,) the rare class's (calibrated) classifier probability
    class_index: int


def _closed_params(manifest: Any, open_index: int | None) -> list[Any]:
    """The manifest's class parameters with every gate shut (``prob_threshold`` 1) but ``open_index``'s (0)."""
    return [
        dataclasses.replace(c, prob_threshold=0.0 if k == open_index else 1.0) for k, c in enumerate(manifest.classes)
    ]


def _val_set(bundle: Path, labelled: Any, rare: int) -> ValSet:
    """Read val once and run the bundle's classifier on it (every segmenter gate shut)."""
    from cascade.imageio import read_image
    from cascade.predictor import CascadePredictor

    predictor = CascadePredictor.from_bundle(bundle, device="cpu", runtime="torch")
    k = predictor.manifest.class_index(rare)
    ids = labelled.image_ids
    images = [read_image(labelled.images_dir / i) for i in ids]
    truth = np.stack([labelled.annotations.masks(i, im.shape[:2])[k] for i, im in zip(ids, images, strict=True)])
    params = _closed_params(predictor.manifest, None)
    probs = [predictor.infer(images[i : i + 32], params=params).probabilities[:, k] for i in range(0, len(ids), 32)]
    return ValSet(images, truth.astype(bool), np.concatenate(probs), k)


def _score(bundle: Path, val: ValSet) -> dict[str, float]:
    """The rare class's Dice with ``bundle``'s segmenter: in the cascade (the bundle's gate, thresholds and
    post-processing) over every val image, and on the images holding the class gated and ungated.

    Only images the gate passes or that hold the class are segmented: on the others the cascade predicts
    nothing and the truth is empty (Dice 1), whatever the segmenter.
    """
    from cascade.metric import dice_pairs
    from cascade.postprocess import postprocess_map
    from cascade.predictor import CascadePredictor

    predictor = CascadePredictor.from_bundle(bundle, device="cpu", runtime="torch")
    k = val.class_index
    cid = predictor.manifest.class_ids[k]
    params = predictor.manifest.classes[k]
    gate = val.probabilities >= params.prob_threshold
    positives = val.truth.reshape(len(val.truth), -1).any(axis=1)
    rows = np.flatnonzero(gate | positives)
    run_params = _closed_params(predictor.manifest, k)
    cascade_dice = np.ones(len(val.truth))
    alone = np.ones(len(val.truth))
    for start in range(0, len(rows), 16):
        batch = rows[start : start + 16]
        raw = predictor.infer([val.images[i] for i in batch], params=run_params)
        for j, i in enumerate(batch):
            pred = postprocess_map(raw.maps[j][cid], float(val.probabilities[i]), params)
            truth = val.truth[i][None, None]
            alone[i] = dice_pairs(pred[None, None], truth)[0, 0]
            cascade_dice[i] = alone[i] if gate[i] else dice_pairs(np.zeros_like(truth), truth)[0, 0]
    return {
        "cascade": float(cascade_dice.mean()),
        "positives_cascade": float(cascade_dice[positives].mean()),
        "positives_alone": float(alone[positives].mean()),
        "empty": float(np.mean(~positives)),
        "n_positive": int(positives.sum()),
        "images": len(positives),
        "segmented": len(rows),
    }


def _render(args: argparse.Namespace, rows: list[dict], base: dict, facts: dict) -> str:
    rare = args.rare_class
    lines = [
        "## Copy-paste on a rare class (NEU-Seg)",
        "",
        f"`python -m bench.bench_copy_paste` ({facts['started']} UTC, {os.cpu_count()} cores shared with other jobs; "
        + ("under `flock /tmp/cpu.lock`" if facts["locked"] else "NOT under the shared CPU lock")
        + f"; {facts['minutes']:.1f} min).",
        "",
        f"Rare class {rare} ({facts['rare_name']}): the train split reduced to {args.rare_images} images holding it "
        f"and {args.others} without it (of 3,129); the class-{rare} segmenter alone "
        f"(recipe `configs/neu-seg-cpu.yaml`, "
        f"pretrained EfficientNet-Lite0 Unet, bf16, 160x160 crops) on its {args.rare_images} positives plus "
        f"{args.negatives} random negatives, {args.epochs} epochs of {args.min_samples} samples (batch 16). "
        f"Copy-paste: `{{name: copy_paste, p: {args.p}, params: {{class_rates: {{{rare}: {args.rate}}}}}}}` before "
        "the crop, donors the reduced split. Scored on NEU-Seg val "
        f"({base['images']} images, {base['n_positive']} with class {rare}) inside the bundle `{args.bundle}` "
        f"(its classifier gates, its thresholds and other segmenters unchanged).",
        "",
        f"| class-{rare} segmenter | seed | train s | class-{rare} Dice, cascade (all {base['images']}) "
        f"| on the {base['n_positive']} with class {rare}, cascade | same, segmenter alone | all-empty |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['arm']} | {row['seed']} | {row['train_s']:.0f} | **{row['cascade']:.4f}** "
            f"| {row['positives_cascade']:.4f} | {row['positives_alone']:.4f} | {row['empty']:.4f} |"
        )
    lines.append(
        f"| the bundle's own (all 3,129 train images) | - | - | {base['cascade']:.4f} "
        f"| {base['positives_cascade']:.4f} | {base['positives_alone']:.4f} | {base['empty']:.4f} |"
    )
    lines.append("")
    keys = ("cascade", "positives_cascade", "positives_alone")
    means = {}
    for arm in ("plain", "copy_paste"):
        vals = [r for r in rows if r["arm"] == arm]
        means[arm] = {k: float(np.mean([r[k] for r in vals])) if vals else float("nan") for k in keys}
    diff = {k: means["copy_paste"][k] - means["plain"][k] for k in keys}
    seeds = sorted({r["seed"] for r in rows if r["arm"] == "copy_paste"})
    paired = [
        next(r["cascade"] for r in rows if r["arm"] == "copy_paste" and r["seed"] == seed)
        - next(r["cascade"] for r in rows if r["arm"] == "plain" and r["seed"] == seed)
        for seed in seeds
    ]
    spread = float(np.std([r["cascade"] for r in rows if r["arm"] == "plain"])) if len(seeds) > 1 else float("nan")
    lines.append(
        f"Mean over {len(seeds)} seed(s), copy-paste minus plain: cascade {diff['cascade']:+.4f} "
        f"(per seed {', '.join(f'{d:+.4f}' for d in paired)}; seed std of plain {spread:.4f}), positives cascade "
        f"{diff['positives_cascade']:+.4f}, positives segmenter alone {diff['positives_alone']:+.4f}."
    )
    lifted = len(seeds) > 1 and all(d > 0 for d in paired) and diff["cascade"] > spread
    if lifted:
        verdict = f"**Verdict: copy-paste lifted class {rare}'s cascade Dice** on every seed, by more than the spread."
    elif len(seeds) < 2:
        verdict = f"**Verdict: one seed only: no conclusion on class {rare}** (no seed spread to compare with)."
    else:
        verdict = (
            f"**Verdict: copy-paste did not lift class {rare}'s cascade Dice** consistently (not on every seed, or "
            "not beyond the seed-to-seed spread) in this set-up."
        )
    lines += ["", verdict, ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(SHARED), help="folder holding neu-seg/")
    parser.add_argument("--bundle", default="runs/neu-seg/neu-seg.cascade.safetensors", help="NEU-Seg bundle")
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-copy-paste"))
    parser.add_argument("--rare-class", type=int, default=1)
    parser.add_argument("--rare-images", type=int, default=30)
    parser.add_argument("--others", type=int, default=300)
    parser.add_argument("--negatives", type=int, default=30, help="random negatives in the segmenter's list")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--min-samples", type=int, default=640, help="samples per epoch")
    parser.add_argument("--p", type=float, default=0.5, help="copy_paste probability")
    parser.add_argument("--rate", type=float, default=1.0, help="class_rates of the rare class")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--retrain", action="store_true", help="retrain even when weights exist")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cascade.datasource import open_labelled

    locked = lock_held()
    started = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    work = Path(args.work)
    neu = Path(args.shared) / "neu-seg"
    data = work / "neu-rare"
    split = _reduced_voc(neu, data, args.rare_class, args.rare_images, args.others, seed=0)
    (work / "split.json").write_text(json.dumps(split, indent=1))
    val = open_labelled(neu, classes="inclusion,patches,scratches").split("val")
    values = _val_set(Path(args.bundle), val, args.rare_class)
    base = _score(Path(args.bundle), values)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for copy_paste in (False, True):
            run = _train(args, data, split["other_ids"], seed, copy_paste)
            score = _score(_bundle_with(Path(args.bundle), run, args.rare_class, work), values)
            seconds = float((run / "train_seconds.txt").read_text())
            rows.append({"arm": "copy_paste" if copy_paste else "plain", "seed": seed, "train_s": seconds, **score})
            print(json.dumps(rows[-1]), file=sys.stderr)
        facts = {
            "started": started,
            "locked": locked,
            "minutes": (time.perf_counter() - t0) / 60,
            "rare_name": val.classes.names[val.classes.index(args.rare_class)],
        }
        Path(args.out).write_text(_render(args, rows, base, facts))  # after every seed: a partial run still reports
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
