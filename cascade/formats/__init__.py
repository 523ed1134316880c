"""Kaggle CSV formats: one definition of a row (``rows``), and on it reading annotations (``annotations``),
writing submissions (``writer``) and checking them as Kaggle would (``checker``).

Two layouts exist. ``ImageId_ClassId,EncodedPixels`` (the original train.csv and the submission format)
has a row per class and image, ``<image>_<class id>`` and a blank RLE for an absent class.
``ImageId,ClassId,EncodedPixels`` (the re-released train.csv) has positive rows only, so images without
defects are absent unless the caller lists every image (``image_ids`` or ``images_dir``).
Everything goes through the ``csv`` module; class ids are parameters (default Severstal's four).
"""

from __future__ import annotations

from cascade.formats.annotations import IMAGE_SUFFIXES, Annotations, list_image_ids, read_annotations
from cascade.formats.checker import PROBLEM_KINDS, SubmissionProblem, check_submission, read_id_list
from cascade.formats.rows import (
    ROW_ERROR_KINDS,
    AnnotationFormatError,
    Layout,
    RowError,
    csv_line,
    format_image_rows,
    layout_of,
    parse_row,
    read_header,
    split_image_class,
    submission_header,
)
from cascade.formats.writer import SubmissionWriter, write_submission

__all__ = [
    "IMAGE_SUFFIXES",
    "PROBLEM_KINDS",
    "ROW_ERROR_KINDS",
    "AnnotationFormatError",
    "Annotations",
    "Layout",
    "RowError",
    "SubmissionProblem",
    "SubmissionWriter",
    "check_submission",
    "csv_line",
    "format_image_rows",
    "layout_of",
    "list_image_ids",
    "parse_row",
    "read_annotations",
    "read_header",
    "read_id_list",
    "split_image_class",
    "submission_header",
    "write_submission",
]
