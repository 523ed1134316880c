"""The training pipeline: the stages in order, each reading the previous ones' files from the run folder.

``classifier`` -> ``hard_negatives`` -> ``segmenter`` -> ``tune`` -> ``package`` -> ``evaluate``.
The two training stages run on every process under ``torchrun`` (DDP); the others run on rank 0 while
the rest wait at a barrier. A finished stage leaves ``RUN_DIR/stages/<stage>.done``; with ``resume``
finished stages are skipped and an interrupted training stage continues from its last checkpoint.

Entry points: ``cascade train`` (all or some stages) and ``python -m training.<stage module>`` (one stage,
through :func:`run_stage_cli`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from training.config import STAGES, PipelineConfig
from training.distributed import barrier, cleanup_distributed, init_distributed
from training.recipe import config_to_dict, load_config
from training.workspace import Workspace, open_workspace

__all__ = ["PipelineResult", "parse_overrides", "run_pipeline", "run_stage_cli"]

logger = logging.getLogger(__name__)

_ALL_RANKS = ("classifier", "segmenter")
_MODULES = {
    "classifier": "train_classifier",
    "hard_negatives": "mine_hard_negatives",
    "segmenter": "train_segmenter",
    "tune": "tune_thresholds",
    "package": "package",
    "evaluate": "evaluate",
}


def _stage_runner(stage: str) -> Callable[[Workspace, bool], Any]:
    from training import evaluate, mine_hard_negatives, package, train_classifier, train_segmenter, tune_thresholds

    runners: dict[str, Callable[[Workspace, bool], Any]] = {
        "classifier": train_classifier.run,
        "hard_negatives": lambda ws, _resume: mine_hard_negatives.run(ws.config, ws.run_dir),
        "segmenter": train_segmenter.run,
        "tune": tune_thresholds.run,
        "package": package.run,
        "evaluate": evaluate.run,
    }
    return runners[stage]


@dataclass(frozen=True)
class PipelineResult:
    """What a pipeline run produced.

    Attributes:
        run_dir: the run folder.
        stages: stages that ran (skipped ones excluded).
        seconds: wall time per stage that ran.
        bundle: the bundle file when the ``package`` stage has run.
        installed: the embedded bundle path when it was installed.
    """

    run_dir: Path
    stages: tuple[str, ...]
    seconds: dict[str, float]
    bundle: Path | None
    installed: Path | None


def run_pipeline(
    config: PipelineConfig,
    run_dir: str | Path | None = None,
    *,
    stages: Sequence[str] | None = None,
    resume: bool = False,
    install_embedded: bool = False,
) -> PipelineResult:
    """Run the requested stages (default all) of ``config`` into ``run_dir`` (default ``config.out``).

    Raises:
        ValueError: an unknown stage name.
    """
    from training.package import bundle_path
    from training.package import install_embedded as install

    chosen = tuple(stages or STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; allowed: {list(STAGES)}")
    chosen = tuple(s for s in STAGES if s in chosen)
    run_dir = Path(run_dir or config.out)
    ctx = init_distributed(config.device)
    try:
        ws = open_workspace(config, run_dir, ctx)
        marks = run_dir / "stages"
        if ctx.is_main:
            marks.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
            if not resume:  # a fresh run of a stage invalidates its mark and those of the stages after it
                first = STAGES.index(chosen[0]) if chosen else len(STAGES)
                for stage in STAGES[first:]:
                    (marks / f"{stage}.done").unlink(missing_ok=True)
        barrier()
        ran: list[str] = []
        seconds: dict[str, float] = {}
        for stage in chosen:
            if resume and (marks / f"{stage}.done").is_file():
                logger.info("stage %s already done; skipping (resume)", stage)
                continue
            logger.info("stage %s: starting", stage)
            started = time.perf_counter()
            if stage in _ALL_RANKS or ctx.is_main:
                _stage_runner(stage)(ws, resume)
            barrier()
            seconds[stage] = time.perf_counter() - started
            if ctx.is_main:
                (marks / f"{stage}.done").write_text(json.dumps({"seconds": seconds[stage]}))
            ran.append(stage)
            logger.info("stage %s: done in %.1f s", stage, seconds[stage])
        bundle = bundle_path(config, run_dir)
        installed = None
        if install_embedded and ctx.is_main:
            if not bundle.is_file():
                raise FileNotFoundError(f"{bundle} not found; run the 'package' stage before --install-embedded")
            installed = install(bundle, config.package.embedded_name)
        barrier()
        return PipelineResult(run_dir, tuple(ran), seconds, bundle if bundle.is_file() else None, installed)
    finally:
        cleanup_distributed()


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


def run_stage_cli(stage: str, argv: Sequence[str] | None, description: str | None) -> None:
    """Command line of ``python -m training.<module>``: run one stage of a configuration."""
    parser = argparse.ArgumentParser(
        prog=f"python -m training.{_MODULES[stage]}",
        description=description,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--config", required=True, type=Path, help="recipe YAML, e.g. configs/demo-cpu.yaml")
    parser.add_argument("--data", type=Path, help="training data folder (overrides data.dir)")
    parser.add_argument("--out", type=Path, help="run folder (default: the config's 'out')")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set classifier.train.epochs=2")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = parse_overrides(args.overrides)
    if args.data is not None:
        overrides["data.dir"] = str(args.data)
    config = load_config(args.config, overrides)
    result = run_pipeline(config, args.out, stages=[stage], resume=args.resume)
    print(f"stage {stage} finished in {sum(result.seconds.values()):.1f} s; run folder {result.run_dir}")
