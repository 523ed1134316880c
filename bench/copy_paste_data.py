"""Data of ``bench.bench_copy_paste``: training sets cut down so that one class is rare, and the sets scored.

Both cut-down sets are folders of symlinks to the full data (nothing is copied): NEU-Seg's as a VOC folder whose
``ImageSets`` train split is reduced, the synthetic one as a Kaggle-CSV folder (``train_images/`` of links and the
matching rows of ``train.csv``). The images kept are drawn the same way for both (``pick_rare``).
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Any

__all__ = [
    "eval_set_synthetic", "pick_rare", "real_area_only", "real_image_labels", "real_severstal", "reduced_kaggle",
    "reduced_voc",
]  # fmt: skip


def pick_rare(labelled: Any, rare: int, n_rare: int, n_others: int, seed: int) -> dict[str, list[str]]:
    """``{"rare_ids", "other_ids", "rare_pool"}``: ``n_rare`` images of ``labelled`` holding class ``rare``,
    ``n_others`` without, and every image holding it.

    Raises:
        ValueError: fewer such images than asked for.
    """
    k = labelled.classes.index(rare)
    ids = list(labelled.image_ids)
    has = dict(zip(ids, labelled.annotations.labels()[:, k], strict=True))
    rare_pool, other_pool = [i for i in ids if has[i]], [i for i in ids if not has[i]]
    if n_rare > len(rare_pool) or n_others > len(other_pool):
        raise ValueError(
            f"{labelled.root}: asked for {n_rare} images with class {rare} and {n_others} without, "
            f"it has {len(rare_pool)} and {len(other_pool)}"
        )
    rng = random.Random(seed)
    return {"rare_ids": rng.sample(rare_pool, n_rare), "other_ids": rng.sample(other_pool, n_others),
            "rare_pool": rare_pool}  # fmt: skip


def _link(link: Path, target: Path) -> None:
    if not link.is_symlink():
        link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def reduced_voc(neu: Path, out: Path, rare: int, n_rare: int, n_others: int, seed: int) -> dict[str, list[str]]:
    """A VOC folder of symlinks to NEU-Seg ``neu`` whose train split keeps ``n_rare`` images with class ``rare`` and
    ``n_others`` without; its val split is NEU-Seg's, whole."""
    from cascade.datasource import open_labelled

    split = pick_rare(open_labelled(neu, classes="inclusion,patches,scratches").split("train"), rare, n_rare,
                      n_others, seed)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    for name in ("JPEGImages", "SegmentationClass"):
        _link(out / name, neu / name)
    sets = out / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    stems = sorted(Path(i).stem for i in split["rare_ids"] + split["other_ids"])
    (sets / "train.txt").write_text("\n".join(stems) + "\n")
    (sets / "val.txt").write_text((neu / "ImageSets" / "Segmentation" / "val.txt").read_text())
    return split


def reduced_kaggle(src: Path, out: Path, rare: int, n_rare: int, n_others: int, seed: int) -> dict[str, list[str]]:
    """A Kaggle-CSV folder of symlinks to the images of ``src`` (``train.csv`` + ``train_images/``) that keeps
    ``n_rare`` images with class ``rare`` and ``n_others`` without, with their rows of ``train.csv``."""
    from cascade.datasource import open_labelled

    labelled = open_labelled(src)
    split = pick_rare(labelled, rare, n_rare, n_others, seed)
    keep = set(split["rare_ids"] + split["other_ids"])
    images = out / "train_images"
    images.mkdir(parents=True, exist_ok=True)
    for stale in images.iterdir():
        if stale.name not in keep:
            stale.unlink()
    for image_id in sorted(keep):
        _link(images / image_id, labelled.images_dir / image_id)
    with (src / "train.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    with (out / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *(r for r in rows[1:] if r[0] in keep)])
    return split


def eval_set_synthetic(work: Path, n: int, seed: int, profile: str) -> Any:
    """A held-out synthetic set (``cascade synth --n n --seed seed --profile profile``) under ``work``, generated
    once, opened as a ``LabelledSet``."""
    from cascade.datasource import open_labelled
    from cascade.synth import generate_dataset, synth_config

    root = work / f"heldout-{profile}-n{n}-s{seed}"
    if not (root / "train.csv").is_file():
        generate_dataset(root, n, seed, config=synth_config(profile), workers=os.cpu_count() or 1, overwrite=True)
    return open_labelled(root)


def real_severstal(shared: Path) -> Any | None:
    """The real Severstal images of ``shared/severstal-real`` with complete masks (evaluation only), or None."""
    from cascade.classes import SEVERSTAL
    from cascade.datasource import open_labelled

    root = shared / "severstal-real"
    return open_labelled(root, classes=SEVERSTAL, require_masks=False) if root.is_dir() else None


def real_area_only(shared: Path) -> tuple[Path, list[str], Any] | None:
    """The real Severstal images of ``shared/severstal-real`` whose masks are not known, only their per-class areas
    (``images.csv``, ``mask_complete`` 0; evaluation only), or None when the folder is absent.

    Returns ``(images folder, image names, (N, 4) int areas of classes 1-4)``.
    """
    import numpy as np

    rows = _real_rows(shared)
    if rows is None:
        return None
    rows = [r for r in rows if r["mask_complete"] == "0"]
    areas = np.array([[int(r[f"area_{k}"]) for k in range(1, 5)] for r in rows], dtype=np.int64).reshape(-1, 4)
    return shared / "severstal-real" / "images", [r["ImageId"] for r in rows], areas


def _real_rows(shared: Path) -> list[dict[str, str]] | None:
    """The rows of ``shared/severstal-real/images.csv``, or None when it is absent."""
    path = shared / "severstal-real" / "images.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def real_image_labels(shared: Path) -> tuple[Path, list[str], list[tuple[bool, ...]]] | None:
    """Every real Severstal image of ``shared/severstal-real`` (complete masks or not) with its class presence,
    classes 1-4, from the per-class areas in ``images.csv`` (image-level labels; evaluation only), or None.

    Returns ``(images folder, image names, presence per image)``.
    """
    rows = _real_rows(shared)
    if rows is None:
        return None
    return (
        shared / "severstal-real" / "images",
        [r["ImageId"] for r in rows],
        [tuple(r[f"area_{k}"] != "0" for k in range(1, 5)) for r in rows],
    )
