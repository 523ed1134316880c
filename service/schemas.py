"""Pydantic request and response models of the HTTP API (documentation and validation at the edge)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cascade.classes import MAX_CLASS_ID

__all__ = [
    "ClassParamsUpdate",
    "ClassResult",
    "ErrorResponse",
    "GuiClass",
    "GuiConfig",
    "HealthResponse",
    "JobCreate",
    "JobStatus",
    "ModelInfo",
    "PostprocessRequest",
    "PredictionResponse",
    "ReadyResponse",
    "SampleInfo",
    "SampleTruthResponse",
    "SessionResponse",
]

_EXAMPLE_RLE = "29102 12 29346 24 29602 24 29858 24 30114 24"


class ClassResult(BaseModel):
    """The cascade's answer for one class of one image (the classes are the served bundle's)."""

    class_id: int = Field(..., ge=1, description="Class id from the bundle's manifest.", examples=[3])
    name: str = Field(..., description="Class name from the bundle's manifest.", examples=["scratches"])
    probability: float = Field(..., ge=0, le=1, description="Classifier probability.", examples=[0.93])
    present: bool = Field(..., description="True when the final mask is non-empty.", examples=[True])
    area: int = Field(..., ge=0, description="Mask pixels.", examples=[108])
    rle: str = Field(..., description="Kaggle RLE (column-major, 1-indexed); '' when absent.", examples=[_EXAMPLE_RLE])


class PredictionResponse(BaseModel):
    """One image's prediction: ``ImagePrediction.to_dict()`` plus the optional encodings asked for."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image_id": "0002cc93b.jpg",
                    "height": 256,
                    "width": 1600,
                    "classes": [
                        {"class_id": 1, "name": "pits", "probability": 0.02, "present": False, "area": 0, "rle": ""},
                        {
                            "class_id": 2,
                            "name": "vertical_marks",
                            "probability": 0.01,
                            "present": False,
                            "area": 0,
                            "rle": "",
                        },
                        {
                            "class_id": 3,
                            "name": "scratches",
                            "probability": 0.93,
                            "present": True,
                            "area": 108,
                            "rle": _EXAMPLE_RLE,
                        },
                        {
                            "class_id": 4,
                            "name": "blotches",
                            "probability": 0.04,
                            "present": False,
                            "area": 0,
                            "rle": "",
                        },
                    ],
                    "timings": {
                        "classifier": 0.041,
                        "segmenters": 0.212,
                        "decode": 0.004,
                        "queue": 0.013,
                        "request": 0.281,
                    },
                }
            ]
        }
    )

    image_id: str = Field(..., description="The upload's file name, or sha256:<16 hex> of its bytes.")
    height: int = Field(..., ge=1, description="The image's own height (any size is accepted).")
    width: int = Field(..., ge=1, description="The image's own width.")
    classes: list[ClassResult] = Field(..., description="One entry per class of the bundle, in class-id order.")
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Seconds: the predictor's stages for the batch the image ran in, plus decode, queue and request.",
    )
    ood_score: float | None = Field(
        None, description="Distance of the image from the bundle's training images (absent: the bundle has none)."
    )
    in_distribution: bool | None = Field(
        None, description="False when ood_score is above the bundle's threshold: treat the answer with suspicion."
    )
    mask_png: dict[str, str] | None = Field(
        None, description="With masks=true: class id -> base64 8-bit PNG (255 = defect), at the image's size."
    )
    overlay_png: str | None = Field(
        None, description="With overlay=true: base64 PNG of the image with the class masks drawn in colour."
    )


class ErrorResponse(BaseModel):
    """Every error answer: what was wrong and, where it helps, what is allowed."""

    detail: str = Field(..., examples=["photo.gif: unsupported image format 'GIF'; allowed: JPEG, PNG, BMP, TIFF"])


class HealthResponse(BaseModel):
    """The process is up (says nothing about the model)."""

    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    """Whether the model has loaded and the worker runs."""

    ready: bool = Field(..., examples=[True])
    status: str = Field(..., description="loading, ready, failed or stopped.", examples=["ready"])
    detail: str | None = Field(None, examples=[None])


class ModelInfo(BaseModel):
    """The served bundle: its manifest and how it runs here."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "bundle": "embedded:demo",
                    "runtime": "onnxruntime",
                    "device": "cpu",
                    "class_ids": [1, 2, 3, 4],
                    "class_names": ["pits", "vertical_marks", "scratches", "blotches"],
                    "class_colours": [[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 200, 0]],
                    "image_size": [256, 1600],
                    "thresholds": [
                        {
                            "class_id": 1,
                            "prob_threshold": 0.5,
                            "pixel_threshold": 0.5,
                            "min_area": 300,
                            "min_component_area": 0,
                            "soft_gate": False,
                            "predictable": True,
                            "closed": False,
                        }
                    ],
                    "classifier": {"arch": "timm", "name": "mobilenetv3_small_100", "kwargs": {}},
                    "segmenters": {"1": {"arch": "FPN", "name": "resnet18", "kwargs": {}}},
                    "provenance": {"dataset": "synthetic", "metrics": {"dice": 0.9}},
                    "manifest": {"format_version": 1},
                }
            ]
        }
    )

    bundle: str = Field(..., description="Path of the bundle, or embedded:<name>.")
    runtime: str
    device: str
    class_ids: list[int] = Field(..., description="The bundle's class ids, in array order.")
    class_names: list[str] = Field(..., description="One name per class id.")
    class_colours: list[tuple[int, int, int]] = Field(..., description="One display colour (RGB) per class id.")
    image_size: tuple[int, int] | None = Field(
        ...,
        description="[height, width] the bundle was made for: the manifest's, else Severstal's [256, 1600] for "
        "Severstal's classes, else null. Images of any size are accepted.",
    )
    thresholds: list[dict[str, Any]] = Field(..., description="Post-processing parameters per class.")
    classifier: dict[str, Any]
    segmenters: dict[str, dict[str, Any]]
    provenance: dict[str, Any]
    gate: dict[str, Any] | None = Field(
        None,
        description="What the gate costs and scores on its tuning images (cascade.gate_curve.gate_summary): "
        "calibration, chosen and Dice-only points (segmenter runs per image, Dice), unpredictable class ids.",
    )
    manifest: dict[str, Any] = Field(..., description="The whole manifest (BundleManifest.to_dict()).")


class JobCreate(BaseModel):
    """A folder to score, relative to the server's data root."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"folder": "test_images"}]})

    folder: str = Field(..., min_length=1, max_length=4096, description="Folder path relative to --data-root.")
    mode: Literal["cascade", "segment_all"] = "cascade"


class JobStatus(BaseModel):
    """A folder job's progress."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "4f1c0d7a2b9e4c55a1f0e3d2c1b0a998",
                    "folder": "test_images",
                    "mode": "cascade",
                    "state": "running",
                    "total": 5506,
                    "done": 1200,
                    "failed": 1,
                    "created": "2025-01-01T12:00:00+00:00",
                    "updated": "2025-01-01T12:04:10+00:00",
                    "error": None,
                    "errors": [{"file": "bad.jpg", "reason": "cannot decode image: image file is truncated"}],
                }
            ]
        }
    )

    id: str
    folder: str
    mode: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    total: int = Field(..., ge=0, description="Images in the folder (0 until the job has listed it).")
    done: int = Field(..., ge=0, description="Images finished, failures included.")
    failed: int = Field(..., ge=0, description="Images that could not be read or predicted.")
    created: str
    updated: str
    error: str | None = Field(None, description="Why the job failed, when it did.")
    errors: list[dict[str, str]] = Field(default_factory=list, description="Unreadable images: file and reason.")


class SampleInfo(BaseModel):
    """A sample image the GUI offers, with the classes its labels hold when it has labels."""

    name: str = Field(..., examples=["sample-1.jpg"])
    url: str = Field(..., examples=["/gui/samples/sample-1.jpg"])
    classes: list[int] | None = Field(
        None,
        description="Class ids the sample's labels hold ([] = labelled clean); null when the sample has no labels.",
        examples=[[3]],
    )
    truth_url: str | None = Field(
        None, description="Its ground-truth masks (GET), when labelled.", examples=["/gui/samples/sample-1.jpg/truth"]
    )


class SampleTruthResponse(BaseModel):
    """The labelled masks of one sample, in the served bundle's classes."""

    name: str = Field(..., examples=["sample-1.jpg"])
    height: int = Field(..., ge=1)
    width: int = Field(..., ge=1)
    classes: list[int] = Field(..., description="Class ids with a non-empty mask.", examples=[[3]])
    mask_png: dict[str, str] = Field(
        ..., description="Class id -> base64 8-bit PNG (255 = defect), one per class of the bundle, at image size."
    )


class SessionResponse(PredictionResponse):
    """A GUI analysis: the prediction, its masks and what the threshold sliders start from."""

    session_id: str = Field(..., description="Key of the cached raw output for POST /postprocess/{session_id}.")
    params: list[dict[str, Any]] = Field(..., description="Post-processing parameters per class in effect.")
    segmented: list[int] = Field(
        ..., description="Class ids that have a segmenter probability map (the gate can only open for these)."
    )
    image_jpeg: str | None = Field(
        None, description="From /gui/analyze only: base64 JPEG of the decoded image, as the page shows it."
    )


class GuiClass(BaseModel):
    """One class as the GUI shows it (legend, toggle, sliders), from the bundle's manifest."""

    class_id: int = Field(..., examples=[1])
    name: str = Field(..., examples=["pits"])
    colour: tuple[int, int, int] = Field(..., description="Overlay colour (RGB).", examples=[(230, 25, 75)])
    params: dict[str, Any] = Field(..., description="The bundle's post-processing parameters of the class.")


class GuiConfig(BaseModel):
    """What the GUI page needs to start: the model, its classes and the samples."""

    bundle: str
    runtime: str
    device: str
    classes: list[GuiClass] = Field(..., description="The bundle's classes, in class-id order.")
    image_size: tuple[int, int] | None = Field(
        None, description="[height, width] the bundle was made for (as in /model): the view's initial shape."
    )
    samples: list[SampleInfo]
    ood_threshold: float | None = Field(
        None,
        description="The bundle's out-of-distribution threshold: an analysis whose ood_score is above it is flagged "
        "(null: the bundle has no reference, and no image is flagged).",
    )


class ClassParamsUpdate(BaseModel):
    """New post-processing parameters for one class; omitted fields keep their value."""

    model_config = ConfigDict(extra="forbid")

    class_id: int = Field(..., ge=1, examples=[3])
    prob_threshold: float | None = Field(None, ge=0, le=1, examples=[0.4])
    pixel_threshold: float | None = Field(None, ge=0, le=1, examples=[0.5])
    min_area: int | None = Field(None, ge=0)
    min_component_area: int | None = Field(None, ge=0)
    soft_gate: bool | None = None
    closed: bool | None = Field(
        None, description="false reopens a gate that tuning closed (the class is then gated by prob_threshold)."
    )


class PostprocessRequest(BaseModel):
    """Re-run post-processing of a cached GUI analysis with other per-class parameters."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"classes": [{"class_id": 3, "prob_threshold": 0.4, "pixel_threshold": 0.6}]}]},
    )

    classes: list[ClassParamsUpdate] = Field(default_factory=list, max_length=MAX_CLASS_ID)
