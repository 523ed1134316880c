"""Typed results of the cascade predictor."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ClassPrediction", "ImagePrediction"]


@dataclass(frozen=True)
class ClassPrediction:
    """The cascade's answer for one class of one image.

    Attributes:
        class_id: 1-based class id.
        name: class name from the bundle.
        probability: classifier probability that the class is present.
        present: True when the final mask is non-empty.
        area: number of mask pixels.
        rle: Kaggle run-length encoding of ``mask`` ('' when empty).
        mask: ``(H, W)`` bool mask at the input image's size.
        colour: display colour (RGB) from the bundle.
    """

    class_id: int
    name: str
    probability: float
    present: bool
    area: int
    rle: str
    mask: np.ndarray = field(repr=False, compare=False)
    colour: tuple[int, int, int] = (128, 128, 128)


@dataclass(frozen=True)
class ImagePrediction:
    """The cascade's answer for one image.

    Attributes:
        image_id: caller's id for the image (file name for folders).
        height: input image height.
        width: input image width.
        classes: one ``ClassPrediction`` per class, in class-id order.
        timings: seconds spent per stage for the batch this image was in.
        ood_score: distance of the image from the bundle's training images (``cascade.ood``); None when the
            bundle has no reference.
        in_distribution: False when ``ood_score`` is above the bundle's threshold (None without a reference).
    """

    image_id: str
    height: int
    width: int
    classes: tuple[ClassPrediction, ...]
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    ood_score: float | None = None
    in_distribution: bool | None = None

    @property
    def rles(self) -> list[str]:
        """The RLE strings in class-id order."""
        return [c.rle for c in self.classes]

    @property
    def class_ids(self) -> tuple[int, ...]:
        """The class ids, in order."""
        return tuple(c.class_id for c in self.classes)

    @property
    def colours(self) -> tuple[tuple[int, int, int], ...]:
        """The classes' display colours, in order."""
        return tuple(c.colour for c in self.classes)

    def to_dict(self, *, include_timings: bool = True) -> dict:
        """JSON-ready dict: the one shape shared by the service, the CLI and the library.

        Masks are not included (they are large); callers add encodings of them when asked.
        """
        out: dict = {
            "image_id": self.image_id,
            "height": self.height,
            "width": self.width,
            "classes": [
                {
                    "class_id": c.class_id,
                    "name": c.name,
                    "probability": round(float(c.probability), 6),
                    "present": bool(c.present),
                    "area": int(c.area),
                    "rle": c.rle,
                }
                for c in self.classes
            ],
        }
        if self.ood_score is not None:
            out["ood_score"] = round(float(self.ood_score), 4)
            out["in_distribution"] = bool(self.in_distribution)
        if include_timings:
            out["timings"] = {k: round(float(v), 6) for k, v in self.timings.items()}
        return out

    @property
    def masks(self) -> np.ndarray:
        """Stacked masks ``(C, H, W)`` bool."""
        return np.stack([c.mask for c in self.classes])
