"""CLI commands ``cascade score`` (Kaggle Dice of a submission) and ``cascade check-submission``.

The class set comes from ``--classes`` (a class file or comma-separated names), else ``--bundle`` (its
manifest), else the truth data set's own classes, else Severstal's four. Image sizes (RLE is relative to
each image's own height and width) come from ``--images DIR`` (file headers), else the truth data set,
else ``--height``/``--width``, else Severstal's 256x1600 for Severstal's classes (unchecked otherwise).

Exit codes: 0 success (``check-submission``: no problems); 1 the submission has problems; 2 bad input
(unreadable or malformed file, bad command line).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer

from cascade.classes import SEVERSTAL, ClassSet
from cascade.constants import IMAGE_SHAPE

__all__ = ["register"]

EXIT_PROBLEMS, EXIT_BAD_INPUT = 1, 2
_LAYOUTS = {"image_class": "IMAGE_CLASS", "long": "LONG"}
_PROGRESS_FROM = 2000  # images; below this scoring takes well under a few seconds


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _image_list(images: Path | None, ids: Path | None) -> tuple[str, ...] | None:
    from cascade.formats import list_image_ids, read_id_list

    if images is not None and ids is not None:
        raise _fail("give --images or --ids, not both")
    if images is not None:
        found = list_image_ids(images)
        if not found:
            raise _fail(f"no image files in {images}")
        return found
    return read_id_list(ids) if ids is not None else None


def _class_set(classes: str | None, bundle: str | None) -> ClassSet | None:
    """The class set named on the command line (``--classes`` or ``--bundle``), or None."""
    if classes is not None and bundle is not None:
        raise _fail("give --classes or --bundle, not both")
    try:
        if classes is not None:
            from cascade.classes import parse_class_spec, read_class_file

            return read_class_file(classes) if Path(classes).is_file() else parse_class_spec(classes, "--classes")
        if bundle is not None:
            from cascade.bundle import BundleError, read_manifest
            from cascade.embedded import resolve_bundle

            try:
                return read_manifest(resolve_bundle(bundle)).class_set
            except BundleError as exc:
                raise _fail(str(exc)) from exc
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    return None


def _sizes(images: Path | None, image_ids: tuple[str, ...] | None, height: int | None) -> dict[str, tuple[int, int]]:
    """Each image's size from its file header; nothing when --height/--width fix one size for all."""
    if images is None or image_ids is None or height is not None:
        return {}
    from cascade.imageio import ImageDecodeError, read_image_sizes

    try:
        return read_image_sizes(images, image_ids)
    except ImageDecodeError as exc:
        raise _fail(str(exc)) from exc


def _default_shape(height: int | None, width: int | None, class_set: ClassSet) -> tuple[int, int] | None:
    if (height is None) != (width is None):
        raise _fail("give both --height and --width, or neither")
    if height is not None and width is not None:
        return (height, width)
    return IMAGE_SHAPE if class_set.ids == SEVERSTAL.ids else None


_CLASSES_HELP = "Class file (YAML/JSON) or comma-separated class names (ids 1, 2, ...); default: see above."
_BUNDLE_HELP = "Take the class set from this bundle (a path or a shipped name such as neu-seg)."


def score(
    truth: Path = typer.Argument(
        ...,
        exists=True,
        help="Truth: an annotations CSV (either layout), or a data set folder (Pascal VOC or images/ + masks/).",
    ),
    pred: Path = typer.Argument(..., exists=True, dir_okay=False, help="Predicted submission CSV (either layout)."),
    images: Path | None = typer.Option(
        None,
        "--images",
        exists=True,
        file_okay=False,
        help="Folder of all images: its clean images join a positive-rows-only TRUTH.",
    ),
    ids: Path | None = typer.Option(
        None, "--ids", exists=True, dir_okay=False, help="Text file of all image ids, one per line."
    ),
    height: int | None = typer.Option(None, "--height", min=1, help="Height of images of unknown size."),
    width: int | None = typer.Option(None, "--width", min=1, help="Width of images of unknown size."),
    classes: str | None = typer.Option(None, "--classes", help=_CLASSES_HELP),
    bundle: str | None = typer.Option(None, "--bundle", "-b", help=_BUNDLE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Kaggle mean Dice of PRED against TRUTH over every (image, class) pair, overall and per class.

    Images missing from PRED count as all-empty predictions; images in PRED missing from TRUTH are an error.
    A data set folder as TRUTH scores its images that have masks.
    """
    from cascade.datasource import DataSourceError, open_labelled
    from cascade.formats import Layout, read_annotations
    from cascade.metric import score_annotations

    class_set = _class_set(classes, bundle)
    image_ids = _image_list(images, ids)
    try:
        if truth.is_dir():
            data = open_labelled(truth, classes=class_set, require_masks=False)
            class_set, truth_ann = data.classes, data.annotations
            if image_ids is not None:
                missing = sorted(set(truth_ann.image_ids) - set(image_ids))
                if missing:
                    raise _fail(f"{len(missing)} truth images are not in --images/--ids, e.g. {missing[:5]}")
        else:
            class_set = class_set or SEVERSTAL
            truth_ann = read_annotations(truth, image_ids, class_ids=class_set.ids)
        shape = _default_shape(height, width, class_set)
        truth_ann = truth_ann.with_shapes(_sizes(images, truth_ann.image_ids, height))
        pred_ann = read_annotations(pred, class_ids=class_set.ids)
    except (ValueError, DataSourceError) as exc:  # AnnotationFormatError included
        raise _fail(str(exc)) from exc
    if image_ids is None and truth_ann.layout is Layout.LONG and not truth.is_dir():
        typer.echo(
            "warning: TRUTH lists positive rows only, so its clean images are not scored; "
            "pass --images or --ids to include them",
            err=True,
        )
    try:
        report = score_annotations(
            truth_ann, pred_ann, shape, progress=len(truth_ann) >= _PROGRESS_FROM, class_names=class_set.names
        )
    except ValueError as exc:
        hint = ""
        if image_ids is None and truth_ann.layout is Layout.LONG and not truth.is_dir():
            hint = "; TRUTH lists positive rows only: pass --images or --ids to include its clean images"
        raise _fail(f"{exc}{hint}") from exc
    if as_json:
        print(
            json.dumps(
                {
                    "mean": report.mean,
                    "per_class": list(report.per_class),
                    "class_ids": list(report.class_ids),
                    "class_names": list(report.class_names),
                    "n_images": report.n_images,
                }
            )
        )
    else:
        print(report.format_table())


def check_submission(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Submission CSV to check."),
    images: Path | None = typer.Option(
        None, "--images", exists=True, file_okay=False, help="Folder of the images it must cover."
    ),
    ids: Path | None = typer.Option(
        None, "--ids", exists=True, dir_okay=False, help="Text file of the image ids, one per line."
    ),
    height: int | None = typer.Option(
        None, "--height", min=1, help="Height of images of unknown size (runs must stay inside)."
    ),
    width: int | None = typer.Option(None, "--width", min=1, help="Width of images of unknown size."),
    layout: str = typer.Option(
        "image_class", "--layout", help="Expected layout: image_class (Kaggle) or long (positive rows only)."
    ),
    classes: str | None = typer.Option(None, "--classes", help=_CLASSES_HELP),
    bundle: str | None = typer.Option(None, "--bundle", "-b", help=_BUNDLE_HELP),
) -> None:
    """Report every problem Kaggle would reject in FILE, each with its line number; exit 1 if any.

    With --images every image's own size is read from its file, so runs are checked per image.
    """
    from cascade.formats import Layout
    from cascade.formats import check_submission as check

    if layout not in _LAYOUTS:
        raise typer.BadParameter(f"{layout!r}; allowed: {', '.join(_LAYOUTS)}", param_hint="--layout")
    image_ids = _image_list(images, ids)
    if image_ids is None:
        raise _fail("give --images DIR or --ids FILE: the images the submission must cover")
    class_set = _class_set(classes, bundle) or SEVERSTAL
    sizes = _sizes(images, image_ids, height)
    shape = _default_shape(height, width, class_set)
    problems = check(file, image_ids, shape, layout=Layout[_LAYOUTS[layout]], shapes=sizes, class_ids=class_set.ids)
    if not problems:
        rows = f"{len(class_set)} rows each" if layout == "image_class" else "positive rows"
        if sizes:
            valid = "for its own size"
        else:
            valid = f"for {shape[0]}x{shape[1]}" if shape else "(sizes unknown: runs not bounded)"
        which = "" if class_set.ids == SEVERSTAL.ids else f", classes {list(class_set.ids)}"
        print(f"OK: {file}: {len(image_ids)} images ({rows}{which}), every RLE valid {valid}")
        return
    for problem in problems:
        where = f"{file}:{problem.line}:" if problem.line else f"{file}:"
        print(f"{where} [{problem.kind}] {problem.message}")
    counts = ", ".join(f"{n} {kind}" for kind, n in Counter(p.kind for p in problems).most_common())
    print(f"{len(problems)} problems: {counts}")
    raise typer.Exit(EXIT_PROBLEMS)


def register(app: typer.Typer) -> None:
    """Add ``score`` and ``check-submission`` to ``app``."""
    app.command("score")(score)
    app.command("check-submission")(check_submission)
