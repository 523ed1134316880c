"""CLI commands ``cascade score`` (Kaggle Dice of a submission) and ``cascade check-submission``.

Exit codes: 0 success (``check-submission``: no problems); 1 the submission has problems; 2 bad input
(unreadable or malformed file, bad command line).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer

from cascade.constants import IMAGE_HEIGHT, IMAGE_WIDTH

__all__ = ["register"]

EXIT_PROBLEMS, EXIT_BAD_INPUT = 1, 2
_LAYOUTS = {"image_class": "IMAGE_CLASS", "long": "LONG"}
_PROGRESS_FROM = 2000  # images; below this scoring takes well under a few seconds


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _image_list(images: Path | None, ids: Path | None) -> tuple[str, ...] | None:
    from cascade.formats import list_image_ids
    from cascade.submission import read_id_list

    if images is not None and ids is not None:
        raise _fail("give --images or --ids, not both")
    if images is not None:
        found = list_image_ids(images)
        if not found:
            raise _fail(f"no image files in {images}")
        return found
    return read_id_list(ids) if ids is not None else None


def score(
    truth: Path = typer.Argument(..., exists=True, dir_okay=False, help="True annotations CSV (either layout)."),
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
    height: int = typer.Option(IMAGE_HEIGHT, "--height", min=1, help="Mask height."),
    width: int = typer.Option(IMAGE_WIDTH, "--width", min=1, help="Mask width."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Kaggle mean Dice of PRED against TRUTH over every (image, class) pair, overall and per class.

    Images missing from PRED count as all-empty predictions; images in PRED missing from TRUTH are an error.
    """
    from cascade.formats import Layout, read_annotations
    from cascade.metric import score_annotations

    shape = (height, width)
    image_ids = _image_list(images, ids)
    try:
        truth_ann = read_annotations(truth, image_ids, shape=shape)
        pred_ann = read_annotations(pred, shape=shape)
    except ValueError as exc:  # AnnotationFormatError included
        raise _fail(str(exc)) from exc
    if image_ids is None and truth_ann.layout is Layout.LONG:
        typer.echo(
            "warning: TRUTH lists positive rows only, so its clean images are not scored; "
            "pass --images or --ids to include them",
            err=True,
        )
    try:
        report = score_annotations(truth_ann, pred_ann, shape, progress=len(truth_ann) >= _PROGRESS_FROM)
    except ValueError as exc:
        hint = ""
        if image_ids is None and truth_ann.layout is Layout.LONG:
            hint = "; TRUTH lists positive rows only: pass --images or --ids to include its clean images"
        raise _fail(f"{exc}{hint}") from exc
    if as_json:
        print(json.dumps({"mean": report.mean, "per_class": list(report.per_class), "n_images": report.n_images}))
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
    height: int = typer.Option(IMAGE_HEIGHT, "--height", min=1, help="Image height (runs must stay inside)."),
    width: int = typer.Option(IMAGE_WIDTH, "--width", min=1, help="Image width."),
    layout: str = typer.Option(
        "image_class", "--layout", help="Expected layout: image_class (Kaggle) or long (positive rows only)."
    ),
) -> None:
    """Report every problem Kaggle would reject in FILE, each with its line number; exit 1 if any."""
    from cascade.formats import Layout
    from cascade.submission import check_submission as check

    if layout not in _LAYOUTS:
        raise typer.BadParameter(f"{layout!r}; allowed: {', '.join(_LAYOUTS)}", param_hint="--layout")
    image_ids = _image_list(images, ids)
    if image_ids is None:
        raise _fail("give --images DIR or --ids FILE: the images the submission must cover")
    problems = check(file, image_ids, (height, width), layout=Layout[_LAYOUTS[layout]])
    if not problems:
        rows = "4 rows each" if layout == "image_class" else "positive rows"
        print(f"OK: {file}: {len(image_ids)} images ({rows}), every RLE valid for {height}x{width}")
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
