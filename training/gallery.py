"""Error gallery of an evaluation: the worst images by Dice and every false-positive clean image, drawn.

Each case is one PNG: a header (why it is there, image id, size, mean Dice), then image, ground truth and the
cascade's prediction side by side (stacked when the image is more than twice as wide as high, like Severstal's
256x1600), masks filled lightly in their class colours with a solid outline and a dark halo so outlines stay
readable on bright and dark steel, and a legend that is also the image's table: per class its colour, id and
name, the classifier probability against the gate threshold, truth and predicted areas (pixels of the original
image) and the class's Dice. Images are scaled for display so a panel is about ``PANEL_HEIGHT`` high
(``WIDE_PANEL_WIDTH`` wide for wide images), whatever their size; the class set comes from the bundle.

Chosen cases (``select_cases``): the ``worst`` lowest mean Dice among images with at least one true defect
(perfect images are never "worst"), and every clean image (no defect of any class) on which the cascade
predicted a mask. ``write_gallery`` writes ``worst-NN-<id>.png``, ``clean-fp-NN-<id>.png``, ``index.md``
(tables and the images) and ``gallery.json`` into its folder; the evaluation report links it
(``gallery_section``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from cascade.classes import ClassSet
from cascade.formats import Annotations
from cascade.imageio import read_image
from cascade.metric import dice_pairs
from training.paths import GALLERY_DIR

__all__ = [
    "GALLERY_DIR",
    "PANEL_HEIGHT",
    "WIDE_PANEL_WIDTH",
    "WORST_IMAGES",
    "GalleryCase",
    "draw_case",
    "gallery_section",
    "select_cases",
    "write_gallery",
]

WORST_IMAGES = 12
"""Worst images drawn by default."""
PANEL_HEIGHT = 360
"""Display height (px) of a panel of a square-ish image."""
WIDE_PANEL_WIDTH = 1200
"""Display width (px) of a panel of an image more than twice as wide as high (panels are then stacked)."""
_FILL_ALPHA = 0.28
_OUTLINE_PX = 2
_HALO = (15, 15, 15)
_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)
_FONT_SIZE = 16
_PAD = 10
_KIND_TITLES = {"worst": "worst Dice", "clean_fp": "false positive on a clean image"}


@dataclass(frozen=True)
class GalleryCase:
    """One drawn image of the gallery.

    Attributes:
        image_id: file name of the image.
        kind: ``"worst"`` or ``"clean_fp"``.
        rank: 1-based position within its kind.
        dice: mean Dice of the image over the classes.
        per_class_dice: class id (as text) -> Dice of that class on this image.
        probabilities: class id (as text) -> classifier probability.
        truth_area: class id (as text) -> true mask pixels.
        pred_area: class id (as text) -> predicted mask pixels.
        file: PNG name inside the gallery folder.
    """

    image_id: str
    kind: str
    rank: int
    dice: float
    per_class_dice: dict[str, float]
    probabilities: dict[str, float]
    truth_area: dict[str, int]
    pred_area: dict[str, int]
    file: str


def select_cases(image_dice: np.ndarray, labels: np.ndarray, worst: int = WORST_IMAGES) -> list[tuple[str, int, int]]:
    """``(kind, rank, image index)`` of the images to draw: worst defective images first, then clean false positives.

    Args:
        image_dice: ``(N, C)`` Dice of every (image, class) pair (1.0 where both masks are empty).
        labels: ``(N, C)`` bool truth: class present on the image.
        worst: how many of the lowest-Dice defective images to take (images at Dice 1.0 are left out).
    """
    image_dice, labels = np.asarray(image_dice, dtype=np.float64), np.asarray(labels, dtype=bool)
    if image_dice.shape != labels.shape or image_dice.ndim != 2:
        raise ValueError(f"image_dice and labels must both be (N, C); got {image_dice.shape} and {labels.shape}")
    mean = image_dice.mean(axis=1)
    defective = labels.any(axis=1)
    candidates = [i for i in np.argsort(mean, kind="stable").tolist() if defective[i] and mean[i] < 1.0]
    cases = [("worst", rank, i) for rank, i in enumerate(candidates[: max(worst, 0)], start=1)]
    clean_fp = [i for i in np.argsort(mean, kind="stable").tolist() if not defective[i] and mean[i] < 1.0]
    return cases + [("clean_fp", rank, i) for rank, i in enumerate(clean_fp, start=1)]


def _font(size: int = _FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _scaled(image: np.ndarray, masks: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    shown = cv2.resize(image, size, interpolation=interpolation)
    shown_masks = np.stack([cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in masks])
    return shown, shown_masks.astype(bool)


def _overlay(image: np.ndarray, masks: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Masks filled lightly in their colours, then outlined (solid colour, dark halo outside it)."""
    out = image.astype(np.float32)
    for mask, colour in zip(masks, colours, strict=True):
        out[mask] = out[mask] * (1 - _FILL_ALPHA) + np.float32(colour) * _FILL_ALPHA
    kernel = np.ones((3, 3), np.uint8)
    edges = []
    for mask in masks:
        m = mask.astype(np.uint8)
        inner = cv2.erode(m, kernel, iterations=_OUTLINE_PX, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        edges.append(m.astype(bool) & ~inner.astype(bool))  # outlined along the image border too
    for edge in edges:
        out[cv2.dilate(edge.astype(np.uint8), kernel).astype(bool) & ~edge] = _HALO
    for edge, colour in zip(edges, colours, strict=True):
        out[edge] = colour
    return out.astype(np.uint8)


def draw_case(
    image: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    classes: ClassSet,
    probabilities: Sequence[float],
    thresholds: Sequence[float],
    title: str,
) -> np.ndarray:
    """One gallery picture: header, image | ground truth | prediction, and the per-class legend table.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey).
        truth: ``(C, H, W)`` bool true masks, ``C`` = ``len(classes)``.
        pred: ``(C, H, W)`` bool predicted masks.
        classes: ids, names and colours, in mask order.
        probabilities: ``(C,)`` classifier probabilities.
        thresholds: ``(C,)`` gate thresholds.
        title: header line.

    Returns:
        ``(H', W', 3)`` uint8 RGB.
    """
    image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    h, w = image.shape[:2]
    if truth.shape != (len(classes), h, w) or pred.shape != truth.shape:
        raise ValueError(f"truth and pred must be ({len(classes)}, {h}, {w}); got {truth.shape} and {pred.shape}")
    wide = w > 2 * h
    scale = WIDE_PANEL_WIDTH / w if wide else PANEL_HEIGHT / h
    shown, shown_truth = _scaled(image, truth, scale)
    _, shown_pred = _scaled(image, pred, scale)
    panels = [
        ("image", shown),
        ("ground truth", _overlay(shown, shown_truth, classes.colours)),
        ("prediction (cascade)", _overlay(shown, shown_pred, classes.colours)),
    ]
    font, bold = _font(), _font(_FONT_SIZE + 2)
    line = _FONT_SIZE + 8
    ph, pw = shown.shape[:2]
    cell_w, cell_h = pw + _PAD, ph + line + _PAD
    grid_w, grid_h = (cell_w, 3 * cell_h) if wide else (3 * cell_w, cell_h)

    dice = dice_pairs(pred[None], truth[None])[0]
    headers = ("", "class", "probability / gate", "truth px", "pred px", "Dice")
    rows = [
        (f"{cid} {name}", f"{p:.3f} / {t:.2f} {_gate(p, t)}", f"{int(a.sum()):,}", f"{int(b.sum()):,}", f"{d:.3f}")
        for cid, name, p, t, a, b, d in zip(
            classes.ids, classes.names, probabilities, thresholds, truth, pred, dice, strict=True
        )
    ]
    widths = [line] + [
        max(int(font.getlength(str(r[k - 1]))) for r in [headers[1:], *rows]) + 2 * _PAD for k in range(1, 6)
    ]
    table_w, table_h = sum(widths), line * (len(rows) + 1)
    width = max(grid_w, table_w, int(bold.getlength(title))) + 2 * _PAD
    height = line + _PAD + grid_h + table_h + 2 * _PAD
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((_PAD, _PAD), title, fill=_INK, font=bold)
    top = line + 2 * _PAD
    for k, (caption, panel) in enumerate(panels):
        x, y = (_PAD, top + k * cell_h) if wide else (_PAD + k * cell_w, top)
        draw.text((x, y), caption, fill=_INK, font=font)
        canvas.paste(Image.fromarray(panel), (x, y + line))
    y = top + grid_h
    x = _PAD + widths[0]
    for k, text in enumerate(headers[1:], start=1):
        draw.text((x, y), text, fill=_INK, font=font)
        x += widths[k]
    for row, colour in zip(rows, classes.colours, strict=True):
        y += line
        draw.rectangle((_PAD, y + 2, _PAD + line - 8, y + line - 6), fill=colour, outline=_HALO)
        x = _PAD + widths[0]
        for k, text in enumerate(row, start=1):
            draw.text((x, y), text, fill=_INK, font=font)
            x += widths[k]
    return np.asarray(canvas)


def _gate(probability: float, threshold: float) -> str:
    return "open" if probability >= threshold else "shut"


def _file_name(kind: str, rank: int, image_id: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(image_id).stem)[:60]
    return f"{'worst' if kind == 'worst' else 'clean-fp'}-{rank:02d}-{stem}.png"


def write_gallery(
    out_dir: str | Path,
    bundle: str | Path,
    images_dir: Path,
    annotations: Annotations,
    image_dice: np.ndarray,
    labels: np.ndarray,
    *,
    worst: int = WORST_IMAGES,
    device: str = "cpu",
    batch_size: int = 8,
    show_progress: bool = True,
    tta: Sequence[str] | None = None,
) -> list[GalleryCase]:
    """Draw the chosen cases of an evaluation (``select_cases``) and write ``index.md`` and ``gallery.json``.

    The selected images are predicted again by the bundle (cascade mode) to draw their masks.

    Args:
        out_dir: gallery folder (created; earlier ``worst-*``/``clean-fp-*`` PNGs in it are removed).
        bundle: the evaluated bundle file or folder.
        images_dir: folder of the images.
        annotations: truth of the evaluated images, in the rows' order of ``image_dice``.
        image_dice: ``(N, C)`` per (image, class) Dice of the cascade.
        labels: ``(N, C)`` bool truth presence.
        worst: worst images to draw.
        device: torch device.
        batch_size: images per predictor call.
        show_progress: tqdm bar.
        tta: test-time augmentations overriding the bundle's, as in the evaluation drawn (None: the bundle's).
    """
    from cascade.predictor import CascadePredictor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("worst-*.png"), *out.glob("clean-fp-*.png")]:
        old.unlink()
    predictor = CascadePredictor.from_bundle(bundle, device=device, runtime="torch", tta=tta)
    manifest = predictor.manifest
    classes = manifest.class_set
    thresholds = [p.prob_threshold for p in manifest.classes]
    ids = annotations.image_ids
    chosen = select_cases(image_dice, labels, worst)
    cases = []
    bar = tqdm(total=len(chosen), desc="drawing the error gallery", leave=False, disable=not show_progress)
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start : start + batch_size]
        images = [read_image(images_dir / ids[i]) for _, _, i in batch]
        results = predictor.predict(images, image_ids=[ids[i] for _, _, i in batch], mode="cascade")
        for (kind, rank, i), image, result in zip(batch, images, results, strict=True):
            truth = annotations.masks(ids[i], image.shape[:2])
            pred = result.masks
            dice = dice_pairs(pred[None], truth[None])[0]
            probabilities = [c.probability for c in result.classes]
            h, w = image.shape[:2]
            title = f"{_KIND_TITLES[kind]} #{rank} | {ids[i]} | {w}x{h} | mean Dice {dice.mean():.3f}"
            name = _file_name(kind, rank, ids[i])
            picture = draw_case(image, truth, pred, classes, probabilities, thresholds, title)
            Image.fromarray(picture).save(out / name, optimize=True)
            keys = [str(c) for c in classes.ids]
            cases.append(
                GalleryCase(
                    ids[i], kind, rank, float(dice.mean()),
                    dict(zip(keys, map(float, dice), strict=True)),
                    dict(zip(keys, map(float, probabilities), strict=True)),
                    dict(zip(keys, (int(m.sum()) for m in truth), strict=True)),
                    dict(zip(keys, (int(m.sum()) for m in pred), strict=True)),
                    name,
                )
            )  # fmt: skip
            bar.update()
    bar.close()
    summary = {"bundle": str(bundle), "images": len(ids), "worst": worst, "cases": [asdict(c) for c in cases]}
    (out / "gallery.json").write_text(json.dumps(summary, indent=2))
    (out / "index.md").write_text(_index(cases, classes, len(ids)))
    return cases


def _index(cases: Sequence[GalleryCase], classes: ClassSet, n_images: int) -> str:
    keys = [str(c) for c in classes.ids]
    lines = ["# Error gallery", "", f"{n_images} images evaluated; classes: "
             + ", ".join(f"{c} {n}" for c, n in zip(classes.ids, classes.names, strict=True)) + "."]  # fmt: skip
    for kind, heading in (("worst", "Worst images by Dice"), ("clean_fp", "False positives on clean images")):
        chosen = [c for c in cases if c.kind == kind]
        lines += ["", f"## {heading} ({len(chosen)})", ""]
        if not chosen:
            lines.append("None.")
            continue
        lines += [
            "| # | image | mean Dice | " + " | ".join(f"class {k} Dice / p" for k in keys) + " |",
            "|---|---|---|" + "---|" * len(keys),
        ]
        lines += [
            f"| {c.rank} | [{c.image_id}]({c.file}) | {c.dice:.3f} | "
            + " | ".join(f"{c.per_class_dice[k]:.3f} / {c.probabilities[k]:.2f}" for k in keys)
            + " |"
            for c in chosen
        ]
        lines += ["", *(f"![{c.image_id}]({c.file})\n" for c in chosen)]
    return "\n".join(lines) + "\n"


def gallery_section(run_dir: Path, shown: int = 3) -> list[str]:
    """Lines of ``report.md`` on the gallery in ``run_dir/GALLERY_DIR`` (none when there is no gallery)."""
    path = Path(run_dir) / GALLERY_DIR / "gallery.json"
    if not path.is_file():
        return []
    cases = json.loads(path.read_text())["cases"]
    worst = [c for c in cases if c["kind"] == "worst"]
    clean_fp = [c for c in cases if c["kind"] == "clean_fp"]
    return [
        "## Error gallery",
        "",
        f"The {len(worst)} held-out images with defects and the lowest Dice, and all {len(clean_fp)} clean images "
        f"the cascade predicted a defect on: [{GALLERY_DIR}/index.md]({GALLERY_DIR}/index.md).",
        "",
        *(f"![{c['image_id']}]({GALLERY_DIR}/{c['file']})\n" for c in [*worst[:shown], *clean_fp[:1]]),
    ]
