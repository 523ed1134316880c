"""Tests of training.config and training.recipe: shipped recipes parse, strict keys and types, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.config import PipelineConfig
from training.recipe import config_from_dict, config_to_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["demo-cpu.yaml", "demo-balanced-cpu.yaml", "severstal-gpu.yaml"])
def test_shipped_recipes_load(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.segmenter.class_ids == (1, 2, 3, 4)
    assert config_from_dict(PipelineConfig, config_to_dict(config)) == config


def test_demo_recipe_fits_the_embedded_budget() -> None:
    from models import create_classifier, create_segmenter

    config = load_config(CONFIGS / "demo-cpu.yaml")
    classifier = create_classifier(config.classifier.backbone, **config.classifier.kwargs)
    segmenter = create_segmenter(config.segmenter.arch, config.segmenter.encoder, **config.segmenter.kwargs)
    params = sum(p.numel() for p in classifier.parameters()) + 4 * sum(p.numel() for p in segmenter.parameters())
    assert params * 2 <= 19.5 * 2**20  # float16 storage of the classifier and four segmenters


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_names_it_and_lists_the_allowed(tmp_path: Path) -> None:
    path = _write(tmp_path, {"classifier": {"backbon": "resnet18"}})
    with pytest.raises(ValueError, match=r"backbon.*allowed: \['backbone'"):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seed": "zero"}, "expected an integer"),
        ({"classifier": {"train": {"epochs": 1.5}}}, "expected an integer"),
        ({"input": {"mean": [0.5, 0.5]}}, "expected 3 values"),
        ({"device": "tpu"}, r"allowed: \['auto', 'cpu', 'cuda'\]"),
        ({"classifier": {"final": "ensemble"}}, r"allowed: \['refit', 'fold'\]"),
        ({"segmenter": {"train": {"scheduler": {"name": "step"}}}}, "allowed"),
        ({"segmenter": {"class_ids": [1, 9]}}, r"invalid class ids \[9\]"),
        ({"segmenter": {"class_epochs": {12: 3}}}, r"invalid class ids \[12\]"),
        ({"segmenter": {"class_epochs": {3: "many"}}}, "expected an integer"),
        ({"segmenter": {"class_kwargs": {0: {}}}}, r"class_kwargs has invalid class ids \[0\]"),
        ({"segmenter": {"train": {"keep": "first"}}}, r"allowed: \['best', 'last'\]"),
        ({"data": {"n_folds": 3, "tune_fold": 3}}, "tune_fold"),
        ({"input": {"scale": 1.5}}, "scale"),
        ({"package": {"tta": ["rot90"]}}, "rot90"),
        ({"classifier": {"parallel_folds": 0}}, r"classifier\.parallel_folds=0 must be >= 1"),
        ({"segmenter": {"parallel_classes": 0}}, r"segmenter\.parallel_classes=0 must be >= 1"),
        ({"segmenter": {"parallel_classes": -2}}, r"segmenter\.parallel_classes=-2 must be >= 1"),
    ],
)
def test_bad_values_raise(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(_write(tmp_path, data))


def test_overrides_and_types(tmp_path: Path) -> None:
    path = _write(tmp_path, {"classifier": {"pretrained": "weights/r34.safetensors"}, "input": {"scale": 1}})
    config = load_config(path, {"classifier.train.epochs": 3, "data.dir": "elsewhere", "data.limit": 10})
    assert config.classifier.train.epochs == 3
    assert config.classifier.pretrained == "weights/r34.safetensors"
    assert config.input.scale == 1.0 and isinstance(config.input.scale, float)
    assert (config.data.dir, config.data.limit) == ("elsewhere", 10)
    assert config.input.scale_x is None
    assert load_config(path, {"input.scale_x": 0.5}).input.scale_x == 0.5
    with pytest.raises(ValueError, match=r"input: InputPolicy\.scale_x"):
        load_config(path, {"input.scale_x": 2.0})


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")
