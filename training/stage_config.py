"""Recipe sections of the pipeline stages that train no network: hard-negative mining (``hard_negatives``),
threshold tuning (``tune``), held-out evaluation (``evaluate``), packaging (``package``) and pseudo-labelling
(``pseudo_label``). :mod:`training.config` holds the sections that train the networks and the whole recipe,
:class:`training.config.PipelineConfig`, which nests these; import them from either module.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EvaluateConfig", "HardNegativeConfig", "PackageConfig", "PseudoLabelConfig", "StressConfig", "TuneConfig"]


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
class StressConfig:
    """The stress check after tuning: a class whose tuned cascade scores below predicting nothing on images of
    another look is closed (``ClassParams.closed``: its gate never opens), so a class that floods unfamiliar
    sheets is not shipped open. A stand-in for real images, which the recipe never sees.

    Attributes:
        data: stress images (any layout ``cascade.datasource`` reads, the run's classes); None generates
            ``n`` synthetic images of ``profile`` with ``seed`` into the run folder.
        profile: ``cascade.synth`` profile of the generated images (``shifted``: darker sheets, steeper
            lighting, more texture, fainter defects).
        n: number of generated images.
        seed: their seed (keep it apart from the seeds the evaluation uses).
        margin: close a class when its Dice is more than this below all-empty's on the stress images.
    """

    data: str | None = None
    profile: str = "shifted"
    n: int = 200
    seed: int = 7
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"tune.stress.n must be >= 1, got {self.n}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"tune.stress.margin must be in [0, 1), got {self.margin}")
        if self.data is None:
            from cascade.synth import synth_config

            synth_config(self.profile)  # unknown profile: ValueError naming the known ones


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
        stress: close the classes that score below all-empty on stress images (``StressConfig``); None: no check.
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
    stress: StressConfig | None = None


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
