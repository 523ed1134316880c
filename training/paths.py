"""Every file of a run folder, named once.

``RunPaths(run_dir)`` gives each stage the files it reads and writes, so no stage spells another one's file name
(``classifier/oof.csv``, ``thresholds.json``, ...). Importing this module is cheap (no torch): the CLI and the
report use it too.

Layout of a run folder::

    config.yaml  folds.csv
    classifier/fold<k>/{last.pt,best.pt,metrics.csv,done.json}  classifier/final/classifier.pt  classifier/oof.csv
    hard_negatives.csv
    segmenter/class<id>/{last.pt,best.pt,metrics.csv,done.json}
    thresholds.json  tune_scores.npz
    <package.file_name>  ood_reference.json
    evaluation.json  report.md  gallery/  heldout-seed<S>-n<N>/
    stages/<stage>.done
    pseudo_label/round<r>/  a run folder of its own per round, plus pseudo_labels.csv, soft_masks/, images/,
                            round.json; pseudo_label/summary.json, pseudo_label/report.md
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BEST_FILE", "CLASSIFIER_FILE", "DONE_FILE", "GALLERY_DIR", "LAST_FILE", "METRICS_FILE", "RunPaths"]

CLASSIFIER_FILE = "classifier.pt"
"""The final classifier's weights inside ``classifier/final/``."""
BEST_FILE = "best.pt"
"""A training loop's best (or last, with ``keep: last``) weights inside its model folder."""
LAST_FILE = "last.pt"
"""A training loop's resumable checkpoint inside its model folder."""
METRICS_FILE = "metrics.csv"
"""A training loop's per-epoch metrics inside its model folder."""
DONE_FILE = "done.json"
"""Marks a finished classifier fold or segmenter inside its model folder."""
GALLERY_DIR = "gallery"
"""The evaluation's error gallery inside the run folder."""


@dataclass(frozen=True)
class RunPaths:
    """The files of the run folder ``root``.

    Attributes:
        root: the run folder.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # --- the run and its data -------------------------------------------------------------------------------
    @property
    def config_yaml(self) -> Path:
        """The recipe as run (written by the pipeline)."""
        return self.root / "config.yaml"

    @property
    def folds_csv(self) -> Path:
        """``ImageId,fold`` of every labelled image."""
        return self.root / "folds.csv"

    # --- classifier -----------------------------------------------------------------------------------------
    @property
    def classifier_dir(self) -> Path:
        """Folder of the classifier stage (one sub-folder per fold, ``final/``, ``oof.csv``)."""
        return self.root / "classifier"

    def classifier_fold_dir(self, fold: int) -> Path:
        """Model folder of one classifier fold."""
        return self.classifier_dir / f"fold{fold}"

    def classifier_fold_done(self, fold: int) -> Path:
        """Marks a finished classifier fold (best epoch and its validation probabilities)."""
        return self.classifier_fold_dir(fold) / DONE_FILE

    @property
    def classifier_final_dir(self) -> Path:
        """Model folder of the refit classifier."""
        return self.classifier_dir / "final"

    @property
    def classifier_weights(self) -> Path:
        """The classifier the bundle ships."""
        return self.classifier_final_dir / CLASSIFIER_FILE

    @property
    def oof_csv(self) -> Path:
        """Out-of-fold classifier probabilities of every labelled image."""
        return self.classifier_dir / "oof.csv"

    # --- hard negatives and segmenters ----------------------------------------------------------------------
    @property
    def hard_negatives_csv(self) -> Path:
        """Mined hard negatives, ``ImageId,ClassId,probability,kind``."""
        return self.root / "hard_negatives.csv"

    @property
    def segmenter_dir(self) -> Path:
        """Folder of the segmenter stage (one sub-folder per class)."""
        return self.root / "segmenter"

    def segmenter_class_dir(self, class_id: int) -> Path:
        """Model folder of one class's segmenter."""
        return self.segmenter_dir / f"class{class_id}"

    def segmenter_weights(self, class_id: int) -> Path:
        """The segmenter of ``class_id`` the bundle ships."""
        return self.segmenter_class_dir(class_id) / BEST_FILE

    def segmenter_done(self, class_id: int) -> Path:
        """Marks a finished segmenter (its training summary)."""
        return self.segmenter_class_dir(class_id) / DONE_FILE

    # --- tuning, packaging, evaluation ----------------------------------------------------------------------
    @property
    def thresholds_json(self) -> Path:
        """Tuned per-class parameters, calibration, gate curve and validation metrics."""
        return self.root / "thresholds.json"

    @property
    def tune_scores_npz(self) -> Path:
        """Validation Dice over the tuning grid, one ``class<id>`` array each."""
        return self.root / "tune_scores.npz"

    @property
    def ood_reference_json(self) -> Path:
        """The out-of-distribution reference fitted on the training images."""
        return self.root / "ood_reference.json"

    def bundle(self, file_name: str) -> Path:
        """The bundle written by the package stage (``package.file_name``)."""
        return self.root / file_name

    @property
    def evaluation_json(self) -> Path:
        """Held-out Dice of the cascade and its baselines."""
        return self.root / "evaluation.json"

    @property
    def report_md(self) -> Path:
        """The evaluation report."""
        return self.root / "report.md"

    @property
    def gallery_dir(self) -> Path:
        """The evaluation's error gallery."""
        return self.root / GALLERY_DIR

    def heldout_dir(self, seed: int, n: int) -> Path:
        """Synthetic held-out images generated for the run (``evaluate.synth_n``)."""
        return self.root / f"heldout-seed{seed}-n{n}"

    def stress_dir(self, profile: str, seed: int, n: int) -> Path:
        """Synthetic stress images generated for the run's stress check (``tune.stress``)."""
        return self.root / f"stress-{profile}-seed{seed}-n{n}"

    # --- stage markers --------------------------------------------------------------------------------------
    @property
    def stages_dir(self) -> Path:
        """Folder of the stage markers."""
        return self.root / "stages"

    def stage_marker(self, stage: str) -> Path:
        """Left by a finished stage (its seconds)."""
        return self.stages_dir / f"{stage}.done"

    def stage_seconds(self) -> dict[str, float]:
        """Seconds each finished stage took (from its marker), in the order they finished."""
        markers = sorted(self.stages_dir.glob("*.done"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        out = {}
        for marker in markers:
            try:
                out[marker.name.removesuffix(".done")] = round(float(json.loads(marker.read_text())["seconds"]), 1)
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    # --- pseudo-labelling -----------------------------------------------------------------------------------
    @property
    def pseudo_label_dir(self) -> Path:
        """Folder of the pseudo_label stage."""
        return self.root / "pseudo_label"

    def pseudo_round_dir(self, round_: int) -> Path:
        """Run folder of pseudo-labelling round ``round_`` (>= 1; round 0 is the run folder itself)."""
        return self.pseudo_label_dir / f"round{round_}"

    @property
    def pseudo_labels_csv(self) -> Path:
        """In a round's folder: the pseudo-labels it trains on (one row per kept image); its presence makes the
        round's workspace add them to the training data."""
        return self.root / "pseudo_labels.csv"

    @property
    def soft_masks_dir(self) -> Path:
        """In a round's folder: soft pseudo-label masks (``<image id>.npz``, ``(C, H, W)`` uint8 probability x 255)."""
        return self.root / "soft_masks"

    @property
    def pseudo_images_dir(self) -> Path:
        """In a round's folder: links to the labelled images and to the kept unlabelled ones."""
        return self.root / "images"

    @property
    def pseudo_counts_json(self) -> Path:
        """In a round's folder: how many unlabelled images it kept, per class present and absent."""
        return self.root / "counts.json"

    @property
    def round_json(self) -> Path:
        """In a round's folder: its summary (validation Dice, pseudo-label counts); marks the round finished."""
        return self.root / "round.json"

    @property
    def pseudo_summary_json(self) -> Path:
        """Every round's validation Dice and the chosen round."""
        return self.pseudo_label_dir / "summary.json"

    @property
    def pseudo_report_md(self) -> Path:
        """The pseudo-labelling report."""
        return self.pseudo_label_dir / "report.md"
