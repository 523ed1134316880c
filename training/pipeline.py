"""The training pipeline: one registry of stages (:data:`STAGES`), run in order, each reading the previous ones'
files from the run folder (:class:`training.paths.RunPaths`).

``classifier`` -> ``hard_negatives`` -> ``segmenter`` -> ``tune`` -> ``package`` -> ``evaluate`` ->
``pseudo_label`` (only with an unlabelled folder). The training stages run on every process under ``torchrun``
(DDP); the others run on rank 0 while the rest wait at a barrier. A finished stage leaves
``RUN_DIR/stages/<stage>.done``; with ``resume`` finished stages are skipped and an interrupted training stage
continues from its last checkpoint.

Entry point: ``cascade train`` (``training.cli``; all stages or those of ``--stage``). Importing this module is
cheap (no torch): ``cascade --help`` lists the stages from here, and each stage module loads when its stage runs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from training.config import PipelineConfig
from training.paths import RunPaths
from training.recipe import config_to_dict

if TYPE_CHECKING:
    from training.distributed import DistContext
    from training.workspace import Workspace

__all__ = [
    "BASE_STAGES",
    "STAGES",
    "STAGE_NAMES",
    "PipelineResult",
    "Stage",
    "parse_overrides",
    "run_pipeline",
    "run_stages",
    "stage",
]

logger = logging.getLogger(__name__)


# --- the stages' runners: each loads its module when it runs ----------------------------------------------------
def _classifier(ws: Workspace, resume: bool) -> Any:
    from training import train_classifier

    return train_classifier.run(ws, resume)


def _hard_negatives(ws: Workspace, resume: bool) -> Any:
    from training import mine_hard_negatives

    return mine_hard_negatives.run(ws, resume)


def _segmenter(ws: Workspace, resume: bool) -> Any:
    from training import train_segmenter

    return train_segmenter.run(ws, resume)


def _tune(ws: Workspace, resume: bool) -> Any:
    from training import tune_thresholds

    return tune_thresholds.run(ws, resume)


def _package(ws: Workspace, resume: bool) -> Any:
    from training import package

    return package.run(ws, resume)


def _evaluate(ws: Workspace, resume: bool) -> Any:
    from training import evaluate

    return evaluate.run(ws, resume)


def _pseudo_label(ws: Workspace, resume: bool) -> Any:
    """Rounds of pseudo-labelling; each round is a run folder of its own through :data:`BASE_STAGES`."""
    from training import pseudo_label

    return pseudo_label.run(ws, resume, lambda round_ws: run_stages(round_ws, BASE_STAGES, resume=True))


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes:
        name: the name ``--stage`` takes.
        run: ``run(workspace, resume)``.
        all_ranks: runs on every DDP process (training stages); else on rank 0 while the others wait.
        reads: run-folder files it needs (each written by an earlier stage).
        writes: run-folder files it leaves.
        summary: one line for ``--help`` and the docs.
        optional: runs by default only when :attr:`enabled` says so for the recipe.
    """

    name: str
    run: Callable[[Workspace, bool], Any]
    all_ranks: bool
    reads: tuple[Callable[[RunPaths], Path], ...]
    writes: tuple[Callable[[RunPaths], Path], ...]
    summary: str
    optional: bool = False

    def enabled(self, config: PipelineConfig) -> bool:
        """Whether a run of every stage (no ``--stage``) includes this one."""
        return not self.optional or config.pseudo_label.unlabelled is not None


STAGES: tuple[Stage, ...] = (
    Stage("classifier", _classifier, True, (), (lambda p: p.oof_csv, lambda p: p.classifier_weights),
          "multi-label classifier over K folds: out-of-fold probabilities and the final classifier"),
    Stage("hard_negatives", _hard_negatives, False, (lambda p: p.oof_csv,), (lambda p: p.hard_negatives_csv,),
          "per class, clean images with a high out-of-fold probability"),
    Stage("segmenter", _segmenter, True, (lambda p: p.hard_negatives_csv,), (lambda p: p.segmenter_dir,),
          "one binary segmenter per class on its positives and hard negatives"),
    Stage("tune", _tune, False, (lambda p: p.oof_csv, lambda p: p.segmenter_dir),
          (lambda p: p.thresholds_json, lambda p: p.tune_scores_npz),
          "per-class probability, pixel and min-area thresholds, calibration and gate on validation"),
    Stage("package", _package, False, (lambda p: p.classifier_weights, lambda p: p.thresholds_json),
          (lambda p: p.ood_reference_json,), "the bundle with its provenance"),
    Stage("evaluate", _evaluate, False, (lambda p: p.thresholds_json,),
          (lambda p: p.evaluation_json, lambda p: p.report_md), "held-out Dice and report.md"),
    Stage("pseudo_label", _pseudo_label, True, (lambda p: p.thresholds_json,),
          (lambda p: p.pseudo_summary_json, lambda p: p.pseudo_report_md),
          "rounds of retraining on labelled + confidently pseudo-labelled unlabelled images", optional=True),
)  # fmt: skip
"""The pipeline's stages, in the order they run."""

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
"""Names of :data:`STAGES`, in order."""

BASE_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if not s.optional)
"""The stages that train, tune, package and evaluate one model (what a pseudo-labelling round runs)."""


def stage(name: str) -> Stage:
    """The stage called ``name``.

    Raises:
        ValueError: an unknown name (the message lists the stages).
    """
    for s in STAGES:
        if s.name == name:
            return s
    raise ValueError(f"unknown stage {name!r}; allowed: {list(STAGE_NAMES)}")


def _check_inputs(s: Stage, paths: RunPaths, earlier: Sequence[str]) -> None:
    """Raise FileNotFoundError naming the stage to run when a file ``s`` reads is missing (and not about to be
    written by one of ``earlier``, the stages of this call before it)."""
    for read in s.reads:
        path = read(paths)
        if path.exists():
            continue
        producer = next((p.name for p in STAGES if any(w(paths) == path for w in p.writes)), None)
        if producer is not None and producer in earlier:
            continue
        hint = f" (run the {producer!r} stage first)" if producer else ""
        raise FileNotFoundError(f"stage {s.name!r} needs {path}, which is not there{hint}")


@dataclass(frozen=True)
class PipelineResult:
    """What a pipeline run produced.

    Attributes:
        run_dir: the run folder.
        stages: stages that ran (skipped ones excluded).
        seconds: wall time per stage that ran.
        bundle: the bundle file when the ``package`` stage has run (the best round's after ``pseudo_label``).
        installed: the embedded bundle path when it was installed.
    """

    run_dir: Path
    stages: tuple[str, ...]
    seconds: dict[str, float]
    bundle: Path | None
    installed: Path | None


def run_stages(ws: Workspace, names: Sequence[str], *, resume: bool) -> tuple[list[str], dict[str, float]]:
    """Run ``names`` (in pipeline order) on an open workspace, leaving a marker per finished stage.

    Without ``resume`` the markers of the first chosen stage and every later one are removed first (a fresh
    run of a stage invalidates what depends on it); with it, finished stages are skipped.

    Returns:
        ``(stages that ran, seconds per stage that ran)``.
    """
    from training.distributed import barrier

    chosen = [s for s in STAGES if s.name in names]
    paths = RunPaths(ws.run_dir)
    ctx = ws.ctx
    if ctx.is_main:
        paths.stages_dir.mkdir(parents=True, exist_ok=True)
        paths.config_yaml.write_text(yaml.safe_dump(config_to_dict(ws.config), sort_keys=False))
        if not resume and chosen:
            for later in STAGES[STAGES.index(chosen[0]) :]:
                paths.stage_marker(later.name).unlink(missing_ok=True)
    barrier()
    ran: list[str] = []
    seconds: dict[str, float] = {}
    for i, s in enumerate(chosen):
        marker = paths.stage_marker(s.name)
        if resume and marker.is_file():
            logger.info("stage %s already done; skipping (resume)", s.name)
            continue
        _check_inputs(s, paths, [c.name for c in chosen[:i]])
        logger.info("stage %s: starting (%s)", s.name, ws.run_dir)
        started = time.perf_counter()
        if s.all_ranks or ctx.is_main:
            s.run(ws, resume)
        barrier()
        seconds[s.name] = time.perf_counter() - started
        if ctx.is_main:
            marker.write_text(json.dumps({"seconds": seconds[s.name]}))
        ran.append(s.name)
        logger.info("stage %s: done in %.1f s", s.name, seconds[s.name])
    return ran, seconds


def run_pipeline(
    config: PipelineConfig,
    run_dir: str | Path | None = None,
    *,
    stages: Sequence[str] | None = None,
    resume: bool = False,
    install_embedded: bool = False,
) -> PipelineResult:
    """Run the requested stages (default: every stage enabled for ``config``) into ``run_dir`` (default
    ``config.out``).

    Raises:
        ValueError: an unknown stage name, or ``pseudo_label`` without an unlabelled folder.
    """
    from training.distributed import barrier, cleanup_distributed, init_distributed
    from training.package import install_embedded as install
    from training.workspace import open_workspace

    chosen = [stage(name).name for name in stages] if stages else [s.name for s in STAGES if s.enabled(config)]
    if "pseudo_label" in chosen and config.pseudo_label.unlabelled is None:
        raise ValueError("the pseudo_label stage needs an unlabelled folder (--unlabelled, pseudo_label.unlabelled)")
    run_dir = Path(run_dir or config.out)
    ctx: DistContext = init_distributed(config.device)
    try:
        ws = open_workspace(config, run_dir, ctx)
        ran, seconds = run_stages(ws, chosen, resume=resume)
        bundle = final_bundle(config, run_dir)
        installed = None
        if install_embedded and ctx.is_main:
            if not bundle.is_file():
                raise FileNotFoundError(f"{bundle} not found; run the 'package' stage before --install-embedded")
            installed = install(bundle, config.package.embedded_name)
        barrier()
        return PipelineResult(run_dir, tuple(ran), seconds, bundle if bundle.is_file() else None, installed)
    finally:
        cleanup_distributed()


def final_bundle(config: PipelineConfig, run_dir: str | Path) -> Path:
    """The run's bundle: the best pseudo-labelling round's when that stage finished, else the package stage's."""
    paths = RunPaths(Path(run_dir))
    if paths.stage_marker("pseudo_label").is_file() and paths.pseudo_summary_json.is_file():
        chosen = json.loads(paths.pseudo_summary_json.read_text()).get("bundle")
        if chosen and Path(chosen).is_file():
            return Path(chosen)
    return paths.bundle(config.package.file_name)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["classifier.train.epochs=2", "data.limit=40"]`` -> dotted overrides (values parsed as YAML).

    Raises:
        ValueError: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like section.key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out
