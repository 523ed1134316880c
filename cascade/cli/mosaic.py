"""CLI command ``cascade mosaic``: tile a labelled set of another size and class set into training images."""

from __future__ import annotations

from pathlib import Path

import typer

from cascade.cli.common import fail

__all__ = ["register"]

EXIT_BAD_INPUT = 2


def mosaic(
    source: Path = typer.Argument(
        ...,
        exists=True,
        help="Labelled data to take tiles from: a Pascal VOC folder, a mask folder (images/ + masks/) or a Kaggle "
        "CSV (the file, or its folder).",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output folder: new or empty (gets train_images/ and train.csv), or with --append the Kaggle-CSV set "
        "to add to.",
    ),
    class_map: list[str] = typer.Option(
        ...,
        "--map",
        "-m",
        help="SOURCE=TARGET: a source class (name or id) and the target class it becomes; repeat for more. "
        "Source classes left out become background, which also teaches 'this is not a target class'.",
    ),
    split: str | None = typer.Option(
        None,
        "--split",
        help="Take tiles from this split of SOURCE only (VOC ImageSets/Segmentation/<split>.txt), e.g. NEU-Seg's "
        "train. Never a split you evaluate on: its images would leak into training.",
    ),
    source_classes: str | None = typer.Option(
        None,
        "--source-classes",
        help="SOURCE's classes: a class file or comma-separated names (ids 1, 2, ...); default: its class file or "
        "labelmap, else ids as names class_<id> (NEU-Seg ships none: inclusion,patches,scratches).",
    ),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="Target classes: a class file or comma-separated names; default: the set in OUT with --append, else "
        "Severstal's four (pits, vertical_marks, scratches, blotches). A new set of other classes gets a "
        "classes.yaml.",
    ),
    size: str | None = typer.Option(
        None,
        "--size",
        help="Mosaic size HEIGHTxWIDTH in pixels; default: that of the images in OUT with --append, else 256x1600.",
    ),
    n: int = typer.Option(100, "--n", "-n", min=1, help="Number of mosaics."),
    positive_share: float = typer.Option(
        0.5,
        "--positive-share",
        min=0.0,
        max=1.0,
        help="Share of mosaics holding 1-2 tiles with a mapped class; the others hold none.",
    ),
    tiles_per_image: int | None = typer.Option(
        None,
        "--tiles-per-image",
        min=1,
        help="Tiles side by side; default: enough of SOURCE's image size, scaled to the mosaic height, to span the "
        "width (NEU-Seg into 256x1600: 7).",
    ),
    fade: int | None = typer.Option(
        None, "--fade", min=0, help="Cross-fade width in pixels at each seam (default 24); masks cut at its middle."
    ),
    orient: str = typer.Option(
        "vertical",
        "--orient",
        help="vertical, horizontal or none: turn tiles holding a mapped class so that their masks' long side runs "
        "that way (Severstal's scratches run top to bottom); other tiles turn at random.",
    ),
    seed: int = typer.Option(0, "--seed", "-s", min=0, help="The same seed gives byte-identical files."),
    append: bool = typer.Option(
        False,
        "--append",
        help="Add to the Kaggle-CSV set in OUT (e.g. a cascade synth set) instead of refusing a non-empty folder; "
        "its rows and images are kept, names already there are refused.",
    ),
) -> None:
    """Tile real labelled images of another size and class set (e.g. NEU-Seg) into training images of this profile.

    Each mosaic lays whole SOURCE images side by side, scaled to the mosaic height, cross-faded at the seams;
    their masks of mapped classes become the mosaic's rows in OUT/train.csv (Kaggle RLE), next to the JPEGs
    in OUT/train_images/.
    """
    from cascade.classes import parse_class_spec, read_class_file
    from cascade.datasource import DataSourceError, MosaicOptions, open_labelled, parse_size, write_mosaics

    try:
        target = None
        if classes is not None:
            target = read_class_file(classes) if Path(classes).is_file() else parse_class_spec(classes, "--classes")
        options = MosaicOptions(
            class_map=tuple(class_map),
            n=n,
            size=parse_size(size) if size is not None else None,
            positive_share=positive_share,
            tiles_per_image=tiles_per_image,
            orient=orient,
            seed=seed,
            **({"fade": fade} if fade is not None else {}),
        )
        data = open_labelled(source, classes=source_classes, split=split)
        written = write_mosaics(data, out, options, target=target, append=append, progress=True)
    except (DataSourceError, ValueError, OSError) as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from exc
    height, width = written.size
    tiles = ", ".join(f"{name} {count}" for name, count in written.tiles_per_class.items())
    mapped = ", ".join(
        f"{data.classes.name(s)} -> {written.classes.name(t)} ({t})" for s, t in written.class_map.items()
    )
    print(
        f"wrote {len(written.image_ids)} mosaics ({height}x{width}, {written.tiles_per_image} tiles each) to "
        f"{written.images_dir}, rows in {written.annotations_path}: {written.positives} positive ({mapped}); "
        f"tiles used per source class: {tiles}"
    )


def register(app: typer.Typer) -> None:
    """Add ``mosaic`` to ``app``."""
    app.command("mosaic")(mosaic)
