"""Reading a recipe: YAML (or a plain dict) into the frozen :class:`training.config.PipelineConfig`, strictly.

Unknown keys raise ``ValueError`` naming the key and listing the allowed ones, values of the wrong type
name the expected type, and choices are checked, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cascade.classes import MAX_CLASS_ID
from cascade.datasource import MASK_ENCODINGS
from cascade.manifest import ENSEMBLE_AVERAGES, INPUT_MODES, TTA_OPS, InputPolicy, Normalization
from cascade.typed_config import Dialect, from_dict, to_dict
from training.config import InputConfig, PipelineConfig, TuneConfig

__all__ = ["config_from_dict", "config_to_dict", "load_config"]


def config_from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build the frozen dataclass ``cls`` from a plain dict, strictly (``cascade.typed_config``).

    Args:
        where: how errors name the document (a file name); keys follow as ``where.section.key``.

    Raises:
        ValueError: unknown key (the message lists the allowed ones) or a value of the wrong type.
    """
    return from_dict(cls, data, Dialect(name=lambda path: f"{where}.{path}" if path else where))


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-ready dict of a config dataclass (tuples become lists)."""
    return to_dict(config)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read a recipe YAML file into a :class:`PipelineConfig`.

    Args:
        path: YAML file.
        overrides: dotted keys set after reading, e.g. ``{"data.dir": "data/demo", "classifier.train.epochs": 1}``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown keys, wrong types or invalid values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {dotted!r}: {key!r} is not a section")
        node[leaf] = value
    config = config_from_dict(PipelineConfig, data, where=path.name)
    _validate(config)
    return config


def _check_choice(where: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{where}={value!r} is not valid; allowed: {list(allowed)}")


def _check_tune(tune: TuneConfig) -> None:
    if tune.cost_weight < 0:
        raise ValueError(f"tune.cost_weight={tune.cost_weight} must be >= 0 (0 tunes for Dice alone)")
    budget = tune.max_segmenter_runs_per_image
    if budget is not None and budget < 0:
        raise ValueError(f"tune.max_segmenter_runs_per_image={budget} must be >= 0 or null (no budget)")
    for key in ("min_recall", "min_positive_dice"):
        if not 0 <= getattr(tune, key) <= 1:
            raise ValueError(f"tune.{key}={getattr(tune, key)} must be in [0, 1]")
    if tune.min_positives < 0:
        raise ValueError(f"tune.min_positives={tune.min_positives} must be >= 0")
    bad = sorted(t for t in tune.prob_thresholds if not 0 <= t <= 1)
    if bad:
        raise ValueError(f"tune.prob_thresholds has values outside [0, 1]: {bad}")


def _check_ensemble(config: PipelineConfig) -> None:
    ensemble = config.classifier.ensemble
    if ensemble is None:
        return
    _check_choice("classifier.ensemble.average", ensemble.average, ENSEMBLE_AVERAGES)
    n_folds = config.data.n_folds
    folds = ensemble.folds
    if isinstance(folds, str):
        _check_choice("classifier.ensemble.folds", folds, ("all",))
        return
    bad = sorted(k for k in folds if not 0 <= k < n_folds)
    if bad or len(set(folds)) != len(folds) or len(folds) < 2:
        raise ValueError(
            f"classifier.ensemble.folds={list(folds)} must be 'all' or two or more distinct fold indices "
            f"in [0, {n_folds - 1}] (data.n_folds={n_folds})"
        )


def _check_input(inp: InputConfig) -> None:
    """The bundle's own rules (``InputPolicy``, ``Normalization``) applied to the recipe's input section."""
    _check_choice("input.mode", inp.mode, INPUT_MODES)
    try:
        Normalization(mean=inp.mean, std=inp.std)
        # its mode 'tile' also needs a tile width, not a recipe key
        InputPolicy(stride=inp.stride, scale=inp.scale, scale_x=inp.scale_x)
    except ValueError as err:
        raise ValueError(f"input: {err}") from err


def _validate(config: PipelineConfig) -> None:
    """Check values that types alone cannot (choices, ranges)."""
    _check_choice("device", config.device, ("auto", "cpu", "cuda"))
    _check_choice("classifier.final", config.classifier.final, ("refit", "fold"))
    for section, train in (("classifier", config.classifier.train), ("segmenter", config.segmenter.train)):
        _check_choice(f"{section}.train.optimizer.name", train.optimizer.name, ("adamw", "radam"))
        _check_choice(f"{section}.train.scheduler.name", train.scheduler.name, ("cosine", "onecycle", "constant"))
        _check_choice(f"{section}.train.keep", train.keep, ("best", "last"))
        if train.epochs < 1 or train.batch_size < 1:
            raise ValueError(
                f"{section}.train: epochs and batch_size must be >= 1, got {train.epochs}, {train.batch_size}"
            )
    _check_input(config.input)
    if not 0 <= config.tune.tolerance < 1:
        raise ValueError(f"tune.tolerance={config.tune.tolerance} must be in [0, 1)")
    _check_tune(config.tune)
    _check_ensemble(config)
    for key, processes in (
        ("classifier.parallel_folds", config.classifier.parallel_folds),
        ("segmenter.parallel_classes", config.segmenter.parallel_classes),
    ):
        if processes < 1:
            raise ValueError(f"{key}={processes} must be >= 1")
    if config.data.n_folds < 2:
        raise ValueError(f"data.n_folds={config.data.n_folds} must be >= 2")
    if not 0 <= config.data.tune_fold < config.data.n_folds:
        raise ValueError(f"data.tune_fold={config.data.tune_fold} must be in [0, {config.data.n_folds - 1}]")
    for key in ("class_ids", "class_epochs", "class_kwargs"):
        bad = sorted(c for c in getattr(config.segmenter, key) if not 1 <= c <= MAX_CLASS_ID)
        if bad:
            raise ValueError(f"segmenter.{key} has invalid class ids {bad}; allowed: 1..{MAX_CLASS_ID}")
    _check_choice("data.mask_encoding", config.data.mask_encoding, MASK_ENCODINGS)
    if config.data.val_split is not None and config.data.val_split == config.data.train_split:
        raise ValueError(f"data.val_split and data.train_split are both {config.data.val_split!r}")
    bad_tta = sorted(set(config.package.tta) - set(TTA_OPS))
    if bad_tta:
        raise ValueError(f"package.tta has unknown entries {bad_tta}; allowed: {list(TTA_OPS)}")
