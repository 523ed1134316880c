"""CLI command ``cascade synth``: write a synthetic Severstal-like train set, or print a set's statistics."""

from __future__ import annotations

import os
from pathlib import Path

import typer

__all__ = ["register"]


def synth(
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory (gets train_images/ and train.csv)."),
    n: int = typer.Option(1000, "--n", "-n", min=1, help="Number of images to generate."),
    seed: int = typer.Option(0, "--seed", "-s", help="Dataset seed; the same seed gives byte-identical files."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Processes drawing images in parallel."),
    profile: str = typer.Option(
        "real",
        "--profile",
        "-p",
        help="'real' (the Severstal class mix), 'balanced' (every class on ~20%), 'train' (real mix, rare classes "
        "boosted: the demo training set) or 'shifted' (looks outside the training ranges: a test set; never train "
        "on it).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete images of another set found in OUT/train_images instead of failing."
    ),
    stats: Path | None = typer.Option(
        None,
        "--stats",
        help="Print the statistics of the set in this directory (class mix, defect areas, per-image appearance) next "
        "to the real ones (no generation).",
    ),
    real_index: Path | None = typer.Option(
        None, "--real-index", help="Real train-index.csv to compare with (default: ../shared/severstal-real)."
    ),
    real_images: Path | None = typer.Option(
        None,
        "--real-images",
        help="Folder of real images whose appearance --stats compares with (default: ../shared/severstal-real/images; "
        "the shipped summary of those 54 images when absent).",
    ),
) -> None:
    """Generate synthetic 1600x256 steel images with four defect classes, or compare a set's statistics."""
    from cascade.synth import format_stats, generate_dataset, real_stats, synth_config, synth_stats

    try:
        if stats is not None:
            print(format_stats(synth_stats(stats), real_stats(real_index)))
            print()
            print(_appearance(stats, real_images))
            return
        if out is None:
            raise typer.BadParameter("give --out DIR to generate, or --stats DIR to measure a set")
        config = synth_config(profile)
        workers = min(workers, os.cpu_count() or 1, n)
        written = generate_dataset(out, n, seed, config=config, workers=workers, progress=True, overwrite=overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    print(f"wrote {len(written.image_ids)} images to {written.images_dir} and masks to {written.annotations_path}")
    print(format_stats(synth_stats(out), real_stats(real_index)))


def _appearance(data_dir: Path, real_images: Path | None) -> str:
    """The per-image appearance table of ``data_dir/train_images`` next to the real images' (progress bar)."""
    import numpy as np
    from tqdm import tqdm

    from cascade.synth import format_image_stats, image_stats, real_image_stats
    from cascade.synth.realism import image_paths, read_gray

    paths = image_paths(data_dir / "train_images")
    rows = [image_stats(read_gray(p)) for p in tqdm(paths, desc="appearance", unit="img", disable=len(paths) < 200)]
    real, source = real_image_stats(real_images)
    return format_image_stats(np.stack(rows), real, source)


def register(app: typer.Typer) -> None:
    """Add ``synth`` to ``app``."""
    app.command("synth")(synth)
