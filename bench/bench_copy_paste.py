"""Copy-paste on a rare class: does ``augment: copy_paste`` lift a class with few training images?

Usage (heavy: run it under the shared CPU lock; one data set per call, each writes its own section)::

    flock /tmp/cpu.lock python -m bench.bench_copy_paste                        # NEU-Seg (the default)
    flock /tmp/cpu.lock python -m bench.bench_copy_paste --dataset synthetic    # synthetic Severstal-like data
    python -m bench.bench_copy_paste --rare-class 1 --rare-images 30 --others 300 --seeds 0,1 --rate 1.0 --p 0.5

Set-up, the same for both data sets:

1. A reduced training set (``bench.copy_paste_data``): ``--rare-images`` images holding the rare class and
   ``--others`` without it, as a folder of symlinks under ``--work``.
   - ``neu`` (``../shared/neu-seg``, never the Severstal images): class 1 (inclusion), 30 + 300 of NEU-Seg train's
     3,129 images (a VOC folder, ``ImageSets`` rewritten); scored on NEU-Seg val, whole.
   - ``synthetic``: class 2, 9 + 300 images of ``data/demo`` (the demo bundle's training set, which holds 33 class-2
     images: its ``train`` profile boosts the rare classes, so it is cut to the real class mix's share, ~2%);
     scored on held-out synthetic sets never trained on (``cascade synth`` seed 11, ``train`` profile, and seed 12,
     ``shifted`` profile), and on the real Severstal images with complete masks (evaluation only).
2. The rare class's segmenter alone (``cascade train --stage segmenter``, ``segmenter.class_ids: [rare]``) from the
   data set's recipe (``configs/neu-seg-cpu.yaml`` with 5 epochs of 640 samples; ``configs/demo-cpu.yaml`` with its
   20 epochs for class 2, of 640 samples instead of its 64: see ``DEFAULTS``), on the rare class's positives plus
   ``--negatives`` random negatives of the reduced set (training part of the recipe's tune fold), twice per seed:
   without and with ``{name: copy_paste, p, params: {class_rates: {rare: rate}}}`` (pastes of the rare class only,
   donors = the reduced set's training part).
3. Each segmenter replaces the rare class's segmenter in ``--bundle`` (NEU-Seg: the NEU-Seg run's bundle;
   synthetic: the embedded demo bundle; classifier, other segmenters and every threshold unchanged), scored with
   ``bench.copy_paste_score``: the rare class's Dice in the cascade over every image (the bundle's gate and
   post-processing), on the images holding the class gated and ungated (segmenter alone), and (synthetic) the
   segmenter alone on every image (no gate: its false positives count), beside all-empty and the bundle's own
   segmenter. When the bundle's gate opens on none of the images holding the class, the cascade Dice cannot move
   and the verdict rests on the segmenter alone on those images; the report says which number carries it.

Writes its section of ``bench/results/copy_paste.md`` (the other data set's section is kept) after every seed, and
the raw scores to ``WORK/scores.json`` (``--report-only`` rewrites the section from them).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.copy_paste_data import eval_set_synthetic, real_severstal, reduced_kaggle, reduced_voc
from bench.copy_paste_score import bundle_with, eval_set, score
from bench.cpu_lock import lock_held

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "copy_paste.md"
SHARED = ROOT.parent / "shared"
WORK = ROOT / "runs" / "bench-copy-paste"
TITLES = {"neu": "## Copy-paste on a rare class (NEU-Seg)", "synthetic": "## Copy-paste on a rare class (synthetic)"}
DEFAULTS: dict[str, dict[str, Any]] = {
    "neu": {"recipe": "configs/neu-seg-cpu.yaml", "bundle": "runs/neu-seg/neu-seg.cascade.safetensors",
            "work": WORK, "rare_class": 1, "rare_images": 30, "negatives": 30, "epochs": 5, "min_samples": 640},
    "synthetic": {"recipe": "configs/demo-cpu.yaml", "bundle": "demo", "work": WORK / "synthetic", "rare_class": 2,
                  "rare_images": 9, "negatives": 9, "epochs": None, "min_samples": 640},
}  # fmt: skip
"""Per data set: what ``None`` command-line options stand for (epochs / min_samples None: the recipe's). Synthetic:
the demo recipe's 64 samples an epoch for class 2 (80 steps) taught neither arm anything (Dice 0 on every image
holding class 2, as for the bundle's own class-2 segmenter), so the bench uses 640 (800 steps, ~2 min a run)."""
COLUMNS = {
    "cascade": "class-{c} Dice, cascade (all {n})",
    "positives_cascade": "on the {p} with class {c}, cascade",
    "positives_alone": "same, segmenter alone",
    "all_alone": "all {n}, segmenter alone (no gate)",
    "empty": "all-empty",
}
OWN = {"neu": "the bundle's own (all 3,129 train images)", "synthetic": "the bundle's own (all of `{source}`)"}
"""The table's row for the segmenter the bundle ships, per data set."""
LEARNED = 0.05
"""Below this best segmenter-alone Dice on the images holding the class, no run learned the class at all."""
LABELS = {"cascade": "cascade Dice", "positives_cascade": "cascade Dice on the images holding the class",
          "positives_alone": "segmenter-alone Dice on the images holding the class",
          "all_alone": "segmenter-alone Dice on every image"}  # fmt: skip


def _recipe(args: argparse.Namespace, data: Path, seed: int, copy_paste: bool) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / args.recipe).read_text())
    config["name"] = f"copy-paste-{'on' if copy_paste else 'off'}-s{seed}"
    config["seed"] = seed
    config["data"]["dir"] = str(data)
    seg, rare = config["segmenter"], args.rare_class
    epochs = args.epochs or (seg.get("class_epochs") or {}).get(rare, seg["train"]["epochs"])
    seg["class_ids"] = [rare]
    if seg.get("class_epochs"):
        seg["class_epochs"] = {rare: epochs}
    seg["train"]["epochs"] = epochs
    seg["train"]["min_samples"] = args.min_samples or seg["train"]["min_samples"]
    seg["train"]["val_every"] = epochs
    if copy_paste:
        params = {"class_rates": {rare: args.rate}}
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
    config_path = run / "recipe.yaml"
    recipe = yaml.safe_dump(_recipe(args, data, seed, copy_paste), sort_keys=False)
    if weights.is_file() and not args.retrain and config_path.is_file() and config_path.read_text() == recipe:
        return run  # trained by this very recipe
    run.mkdir(parents=True, exist_ok=True)
    config_path.write_text(recipe)
    _negatives(run / "hard_negatives.csv", args.rare_class, other_ids, args.negatives, seed)
    start = time.perf_counter()
    cmd = [str(ROOT / ".venv" / "bin" / "cascade"), "train", "--config", str(config_path), "--out", str(run)]
    subprocess.run([*cmd, "--stage", "segmenter"], check=True, cwd=ROOT)
    (run / "train_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return run


def _in_training_part(run: Path, ids: list[str]) -> int:
    """How many of ``ids`` fall outside the tune fold (0) of ``run``'s ``folds.csv``: the segmenter trains on them."""
    with (run / "folds.csv").open(newline="") as f:
        fold = {r["ImageId"]: int(r["fold"]) for r in csv.DictReader(f)}
    return sum(fold.get(i, 0) != 0 for i in ids)


def _setup(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, list[str]], list[tuple[str, Any]]]:
    """``(training data folder, split, [(name, labelled set scored)])`` of ``args.dataset``."""
    from cascade.datasource import open_labelled

    shared = Path(args.shared)
    if args.dataset == "neu":
        neu = shared / "neu-seg"
        data = work / "neu-rare"
        split = reduced_voc(neu, data, args.rare_class, args.rare_images, args.others, seed=0)
        return data, split, [("NEU-Seg val", open_labelled(neu, classes="inclusion,patches,scratches").split("val"))]
    data = work / "demo-rare"
    split = reduced_kaggle(ROOT / args.source, data, args.rare_class, args.rare_images, args.others, seed=0)
    n = args.heldout_n
    sets = [
        (f"held-out synthetic, `train` profile, seed {args.heldout_seed}",
         eval_set_synthetic(work, n, args.heldout_seed, "train")),
        (f"held-out synthetic, `shifted` profile, seed {args.heldout_seed + 1}",
         eval_set_synthetic(work, n, args.heldout_seed + 1, "shifted")),
    ]  # fmt: skip
    real = real_severstal(shared)
    if real is not None:
        sets.append(("real Severstal images with complete masks (evaluation only)", real))
    return data, split, sets


def _compare(rows: list[dict], name: str, key: str) -> dict[str, Any]:
    """Copy-paste minus plain on ``key`` of eval set ``name``: mean difference, per seed, seed std of plain."""
    value = {(r["arm"], r["seed"]): r["scores"][name][key] for r in rows}
    seeds = sorted({s for arm, s in value if arm == "copy_paste" and ("plain", s) in value})
    paired = [value["copy_paste", s] - value["plain", s] for s in seeds]
    plain = [value["plain", s] for s in seeds]
    return {
        "diff": float(np.mean(paired)) if paired else float("nan"),
        "paired": paired,
        "spread": float(np.std(plain)) if len(seeds) > 1 else float("nan"),
        "seeds": len(seeds),
    }


def _verdict(rows: list[dict], name: str, key: str, rare: int) -> str:
    c = _compare(rows, name, key)
    what = f"class {rare}'s {LABELS[key]} ({name})"
    if c["seeds"] < 2:
        return f"**Verdict: one seed only: no conclusion on {what}** (no seed spread to compare with)."
    if all(d > 0 for d in c["paired"]) and c["diff"] > c["spread"]:
        return f"**Verdict: copy-paste lifted {what}** on every seed, by more than the seed-to-seed spread."
    return (
        f"**Verdict: copy-paste did not lift {what}** consistently (not on every seed, or not beyond the "
        "seed-to-seed spread) in this set-up."
    )


def _fmt(value: float, bold: bool = False) -> str:
    if value != value:  # nan: no image holds the class
        return "-"
    return f"**{value:.4f}**" if bold else f"{value:.4f}"


def _table(rows: list[dict], base: dict, name: str, rare: int, key: str, own: str) -> list[str]:
    b = base[name]
    keys = [k for k in COLUMNS if k in b]
    header = [COLUMNS[k].format(c=rare, n=b["images"], p=b["n_positive"]) for k in keys]
    lines = [
        f"**{name}**: {b['images']} images, {b['n_positive']} with class {rare}; the bundle's class-{rare} gate "
        f"passes {b['gated']} of them ({b['gated_positives']} holding the class).",
        "",
        f"| class-{rare} segmenter | seed | train s | " + " | ".join(header) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for row in rows:
        s = row["scores"][name]
        cells = [_fmt(s[k], k == key) for k in keys]
        lines.append(f"| {row['arm']} | {row['seed']} | {row['train_s']:.0f} | " + " | ".join(cells) + " |")
    lines += [f"| {own} | - | - | " + " | ".join(_fmt(b[k]) for k in keys) + " |", ""]
    diffs = []
    for k in keys[:-1]:
        c = _compare(rows, name, k)
        if len({v for r in rows if (v := r["scores"][name][k]) == v}) > 1:  # a column no run moves: no difference
            spread = f"; seed std of plain {c['spread']:.4f}" if c["seeds"] > 1 else ""
            per_seed = ", ".join(f"{d:+.4f}" for d in c["paired"])
            diffs.append(f"{LABELS[k]} {c['diff']:+.4f} (per seed {per_seed}{spread})")
    if diffs:
        seeds = _compare(rows, name, keys[0])["seeds"]
        lines += [f"Mean over {seeds} seed(s), copy-paste minus plain: " + "; ".join(diffs) + ".", ""]
    return lines


def _intro(args: argparse.Namespace, facts: dict) -> list[str]:
    rare = args.rare_class
    where = "under `flock /tmp/cpu.lock`" if facts["locked"] else "NOT under the shared CPU lock"
    flag = "" if args.dataset == "neu" else f" --dataset {args.dataset}"
    cp = f"`{{name: copy_paste, p: {args.p}, params: {{class_rates: {{{rare}: {args.rate}}}}}}}`"
    lines = [
        TITLES[args.dataset],
        "",
        f"`python -m bench.bench_copy_paste{flag}` ({facts['started']} UTC, {os.cpu_count()} cores shared with other "
        f"jobs; {where}; {facts['minutes']:.1f} min for this call"
        + (
            f", which reused {facts['reused']} segmenters trained earlier by the same recipes"
            if facts["reused"]
            else ""
        )
        + ").",
        "",
    ]
    train = (
        f"the class-{rare} segmenter alone (recipe `{args.recipe}`, {facts['model']}) on the {facts['train_rare']} of "
        f"them in the training part plus random negatives ({args.negatives} drawn, {facts['train_images']} training "
        f"images in all), {facts['epochs']} epochs of {facts['min_samples']} samples ({facts['raised']}batch "
        f"{facts['batch']}). Copy-paste: {cp} before the crop, donors the reduced set's training part."
    )
    unchanged = "its classifier gates, its thresholds and other segmenters unchanged"
    if args.dataset == "neu":
        text = (
            f"Rare class {rare} ({facts['rare_name']}): the train split reduced to {args.rare_images} images holding "
            f"it and {args.others} without it (of 3,129); {train} Scored on NEU-Seg val inside the bundle "
            f"`{args.bundle}` ({unchanged})."
        )
    else:
        text = (
            f"Rare class {rare} ({facts['rare_name']}): `{args.source}` (the embedded demo bundle's training images, "
            f"{facts['source_rare']} of them with class {rare}) reduced to {args.rare_images} images holding it and "
            f"{args.others} without it; {train} Scored inside the embedded demo bundle ({unchanged}; its own "
            f"class-{rare} segmenter trained on the full set) on held-out synthetic images never trained on "
            f"({args.heldout_n} each) and on the real Severstal images (never trained or fitted on)."
        )
    lines.append(text)
    return [*lines, ""]


def _render(args: argparse.Namespace, rows: list[dict], base: dict, facts: dict) -> str:
    rare = args.rare_class
    primary = next(iter(base))
    key = "cascade" if base[primary]["gated_positives"] else "positives_alone"
    lines = _intro(args, facts)
    for name in base:
        lines += _table(rows, base, name, rare, key, OWN[args.dataset].format(source=args.source))
    if key != "cascade":
        lines += [
            f"The bundle's classifier opens class {rare}'s gate on none of the {base[primary]['n_positive']} "
            f"{primary} images holding it, so the cascade Dice is all-empty's in every arm and cannot move; the "
            f"verdict rests on the **segmenter alone on the images holding class {rare}** (bold), with the "
            "segmenter alone on every image beside it for its false positives.",
            "",
        ]
    best = max((r["scores"][primary]["positives_alone"] for r in rows), default=float("nan"))
    if best < LEARNED:
        lines += [
            f"**Neither arm learned class {rare}**: the best segmenter-alone Dice on the {primary} images holding it "
            f"is {best:.4f} over every run (the bundle's own: {base[primary]['positives_alone']:.4f}), so this set-up "
            "cannot show a lift, and copy-paste did not rescue it.",
            "",
        ]
    return "\n".join([*lines, _verdict(rows, primary, key, rare), ""]) + "\n"


def _write_section(path: Path, text: str) -> None:
    """Replace this data set's section of ``path`` (a ``## `` heading and what follows), keeping the others."""
    sections: dict[str, str] = {}
    if path.is_file():
        for part in re.split(r"(?m)^(?=## )", path.read_text()):
            if part.strip():
                sections[part.splitlines()[0]] = part.strip() + "\n"
    sections[text.splitlines()[0]] = text.strip() + "\n"
    order = list(TITLES.values())
    heads = sorted(sections, key=lambda h: order.index(h) if h in order else len(order))
    path.write_text("\n".join(sections[h] for h in heads))


def _facts(args: argparse.Namespace, run: Path, split: dict, labelled_names: Any) -> dict[str, Any]:
    config = yaml.safe_load((run / "recipe.yaml").read_text())
    seg = config["segmenter"]
    own = yaml.safe_load((ROOT / args.recipe).read_text())["segmenter"]["train"].get("min_samples")
    done = json.loads((run / "segmenter" / f"class{args.rare_class}" / "done.json").read_text())
    return {
        "model": f"{seg['arch']} on `{seg['encoder']}`, {seg['crop']['height']}x{seg['crop']['width']} crops",
        "epochs": seg["train"]["epochs"],
        "min_samples": seg["train"]["min_samples"],
        "raised": ""
        if own in (None, seg["train"]["min_samples"])
        else f"the recipe's {own}, raised: see `DEFAULTS` in the script; ",
        "batch": seg["train"]["batch_size"],
        "train_rare": _in_training_part(run, split["rare_ids"]),
        "train_images": done["train_images"],
        "source_rare": len(split["rare_pool"]),
        "rare_name": labelled_names.names[labelled_names.index(args.rare_class)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DEFAULTS), default="neu", help="NEU-Seg, or synthetic data")
    parser.add_argument("--shared", default=str(SHARED), help="folder holding neu-seg/ and severstal-real/")
    parser.add_argument("--source", default="data/demo", help="synthetic: the training data the set is cut from")
    parser.add_argument("--heldout-n", type=int, default=300, help="synthetic: images per held-out set")
    parser.add_argument("--heldout-seed", type=int, default=11, help="synthetic: held-out seed (+1: shifted)")
    parser.add_argument("--recipe", help="recipe the segmenter's settings come from (default: per data set)")
    parser.add_argument("--bundle", help="bundle the segmenter is swapped into (default: per data set)")
    parser.add_argument("--work", help="scratch folder (default: per data set, under runs/bench-copy-paste)")
    parser.add_argument("--rare-class", type=int)
    parser.add_argument("--rare-images", type=int)
    parser.add_argument("--others", type=int, default=300)
    parser.add_argument("--negatives", type=int, help="random negatives in the segmenter's list")
    parser.add_argument("--epochs", type=int, help="segmenter epochs (synthetic default: the recipe's)")
    parser.add_argument("--min-samples", type=int, help="samples per epoch (synthetic default: the recipe's)")
    parser.add_argument("--p", type=float, default=0.5, help="copy_paste probability")
    parser.add_argument("--rate", type=float, default=1.0, help="class_rates of the rare class")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument("--retrain", action="store_true", help="retrain even when weights exist")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--report-only", action="store_true", help="rewrite the section from WORK/scores.json")
    args = parser.parse_args(argv)
    for name, value in DEFAULTS[args.dataset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.report_only:
        saved = json.loads((Path(args.work) / "scores.json").read_text())
        _write_section(Path(args.out), _render(args, saved["rows"], saved["base"], saved["facts"]))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cascade.embedded import resolve_bundle

    locked = lock_held()
    started = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data, split, labelled = _setup(args, work)
    (work / "split.json").write_text(json.dumps(split, indent=1))
    bundle = resolve_bundle(args.bundle)
    ungated = args.dataset != "neu"
    sets = [eval_set(name, bundle, lab, args.rare_class) for name, lab in labelled]
    base = {s.name: score(bundle, s, ungated) for s in sets}
    rows: list[dict[str, Any]] = []
    reused, t_start = 0, time.time()
    for seed in (int(s) for s in args.seeds.split(",")):
        for copy_paste in (False, True):
            run = _train(args, data, split["other_ids"], seed, copy_paste)
            reused += (run / "train_seconds.txt").stat().st_mtime < t_start
            weights = run / "segmenter" / f"class{args.rare_class}" / "best.pt"
            swapped = bundle_with(bundle, weights, args.rare_class, work / f"{run.name}.cascade.safetensors")
            seconds = float((run / "train_seconds.txt").read_text())
            scores = {s.name: score(swapped, s, ungated) for s in sets}
            rows.append({"arm": "copy_paste" if copy_paste else "plain", "seed": seed, "train_s": seconds,
                         "scores": scores})  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr)
        facts = _facts(args, run, split, labelled[0][1].classes)
        facts.update(started=started, locked=locked, minutes=(time.perf_counter() - t0) / 60, reused=reused)
        (work / "scores.json").write_text(json.dumps({"base": base, "rows": rows, "facts": facts}, indent=1))
        _write_section(Path(args.out), _render(args, rows, base, facts))  # after every seed: a partial run reports
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
