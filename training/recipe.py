"""Reading a recipe: YAML (or a plain dict) into the frozen :class:`training.config.PipelineConfig`, strictly.

Unknown keys raise ``ValueError`` naming the key and listing the allowed ones, values of the wrong type
name the expected type, and choices are checked, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from cascade.classes import MAX_CLASS_ID
from cascade.manifest import ENSEMBLE_AVERAGES
from training.config import PipelineConfig, TuneConfig

__all__ = ["config_from_dict", "config_to_dict", "load_config"]


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` (dataclasses, tuples, unions, primitives)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return config_from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"{where}: {value!r} does not match {tp}: {'; '.join(errors)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(tp)
        if key_type is int:  # JSON/YAML round trips may turn integer keys into strings
            value = {int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k: v for k, v in value.items()}
        return {
            _convert(key_type, k, f"{where} key"): _convert(value_type, v, f"{where}[{k!r}]") for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ValueError(f"{where}: unsupported config type {tp}")


def config_from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build the frozen dataclass ``cls`` from a plain dict, strictly.

    Raises:
        ValueError: unknown key (the message lists the allowed ones) or a value of the wrong type.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {names}")
    kwargs = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-ready dict of a config dataclass (tuples become lists)."""

    def _plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [_plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): _plain(v) for k, v in value.items()}
        return value

    return _plain(config)


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


def _validate(config: PipelineConfig) -> None:
    """Check values that types alone cannot (choices, ranges)."""
    _check_choice("device", config.device, ("auto", "cpu", "cuda"))
    _check_choice("input.mode", config.input.mode, ("pad", "tile"))
    _check_choice("classifier.final", config.classifier.final, ("refit", "fold"))
    for section, train in (("classifier", config.classifier.train), ("segmenter", config.segmenter.train)):
        _check_choice(f"{section}.train.optimizer.name", train.optimizer.name, ("adamw", "radam"))
        _check_choice(f"{section}.train.scheduler.name", train.scheduler.name, ("cosine", "onecycle", "constant"))
        _check_choice(f"{section}.train.keep", train.keep, ("best", "last"))
        if train.epochs < 1 or train.batch_size < 1:
            raise ValueError(
                f"{section}.train: epochs and batch_size must be >= 1, got {train.epochs}, {train.batch_size}"
            )
    if not 0 < config.input.scale <= 1:
        raise ValueError(f"input.scale={config.input.scale} must be in (0, 1]")
    if not 0 <= config.tune.tolerance < 1:
        raise ValueError(f"tune.tolerance={config.tune.tolerance} must be in [0, 1)")
    _check_tune(config.tune)
    _check_ensemble(config)
    if config.classifier.parallel_folds < 1:
        raise ValueError(f"classifier.parallel_folds={config.classifier.parallel_folds} must be >= 1")
    if config.data.n_folds < 2:
        raise ValueError(f"data.n_folds={config.data.n_folds} must be >= 2")
    if not 0 <= config.data.tune_fold < config.data.n_folds:
        raise ValueError(f"data.tune_fold={config.data.tune_fold} must be in [0, {config.data.n_folds - 1}]")
    for key in ("class_ids", "class_epochs", "class_kwargs"):
        bad = sorted(c for c in getattr(config.segmenter, key) if not 1 <= c <= MAX_CLASS_ID)
        if bad:
            raise ValueError(f"segmenter.{key} has invalid class ids {bad}; allowed: 1..{MAX_CLASS_ID}")
    _check_choice("data.mask_encoding", config.data.mask_encoding, ("auto", "index", "bits"))
    if config.data.val_split is not None and config.data.val_split == config.data.train_split:
        raise ValueError(f"data.val_split and data.train_split are both {config.data.val_split!r}")
    bad_tta = sorted(set(config.package.tta) - {"hflip", "vflip"})
    if bad_tta:
        raise ValueError(f"package.tta has unknown entries {bad_tta}; allowed: ['hflip', 'vflip']")
