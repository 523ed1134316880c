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
   other segmenters and every threshold unchanged) and ``training.evaluate.evaluate_bundle`` scores NEU-Seg val:
   the rare class's Dice in the cascade (gated by that bundle's classifier), ungated (segment_all), on the val
   images that hold it, beside all-empty and the bundle's own segmenter (trained on all 3,129 train images).

Writes ``bench/results/copy_paste.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import random
import subprocess
import sys
import time
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


def _score(bundle: Path, labelled: Any, rare: int) -> dict[str, float]:
    from training.evaluate import evaluate_bundle

    result = evaluate_bundle(
        bundle, labelled.images_dir, labelled.annotations, grid=([0.5], [0.5], [0]), batch_size=16,
        show_progress=False,
    )  # fmt: skip
    k = list(result.cascade.class_ids).index(rare)
    positives = result.labels[:, k]
    return {
        "cascade": float(result.cascade.per_class[k]),
        "segment_all": float(result.segment_all.per_class[k]),
        "empty": float(result.empty.per_class[k]),
        "positive_images": float(result.image_dice[positives, k].mean()),
        "n_positive": int(positives.sum()),
        "cascade_mean": float(result.cascade.mean),
        "images": len(positives),
    }


def _render(args: argparse.Namespace, rows: list[dict], base: dict, facts: dict) -> str:
    rare = args.rare_class
    lines = [
        "# Copy-paste on a rare class (NEU-Seg)",
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
        f"| class-{rare} segmenter | seed | train s | class-{rare} Dice, cascade | ungated (segment_all) "
        f"| on the {base['n_positive']} positive images | all-empty |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['arm']} | {row['seed']} | {row['train_s']:.0f} | **{row['cascade']:.4f}** "
            f"| {row['segment_all']:.4f} | {row['positive_images']:.4f} | {row['empty']:.4f} |"
        )
    lines.append(
        f"| the bundle's own (all 3,129 train images) | - | - | {base['cascade']:.4f} | {base['segment_all']:.4f} "
        f"| {base['positive_images']:.4f} | {base['empty']:.4f} |"
    )
    lines.append("")
    means = {}
    for arm in ("plain", "copy_paste"):
        vals = [r for r in rows if r["arm"] == arm]
        means[arm] = {k: float(np.mean([r[k] for r in vals])) for k in ("cascade", "segment_all", "positive_images")}
    diff = {k: means["copy_paste"][k] - means["plain"][k] for k in means["plain"]}
    seeds = len([r for r in rows if r["arm"] == "plain"])
    spread = {
        arm: float(np.std([r["cascade"] for r in rows if r["arm"] == arm])) if seeds > 1 else float("nan")
        for arm in means
    }
    lines.append(
        f"Mean over {seeds} seed(s), copy-paste minus plain: cascade {diff['cascade']:+.4f} "
        f"(seed std plain {spread['plain']:.4f}, copy-paste {spread['copy_paste']:.4f}), ungated "
        f"{diff['segment_all']:+.4f}, positive images {diff['positive_images']:+.4f}."
    )
    lifted = diff["cascade"] > 0 and (seeds < 2 or diff["cascade"] > max(spread.values()))
    verdict = (
        f"**Verdict: copy-paste lifted class {rare}'s cascade Dice** by more than the seed spread."
        if lifted
        else f"**Verdict: copy-paste did not lift class {rare}'s cascade Dice** beyond the seed-to-seed spread "
        "in this set-up."
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
    base = _score(Path(args.bundle), val, args.rare_class)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for copy_paste in (False, True):
            run = _train(args, data, split["other_ids"], seed, copy_paste)
            score = _score(_bundle_with(Path(args.bundle), run, args.rare_class, work), val, args.rare_class)
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
