"""The pure parts of ``bench/bench_recipe_time.py``: the arms' config overrides, the segmenter order, the data
command from the recipe header, the load warning, the end-to-end totals and the results table (nothing timed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.bench_recipe_time import (
    QUICK_OVERRIDES,
    StageRun,
    arm_order,
    arm_overrides,
    data_commands,
    load_warnings,
    render,
    totals,
)
from training.pipeline import parse_overrides
from training.recipe import load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo-cpu.yaml"
QUIET = (0.1, 0.2, 0.3)


def _run(stage: str, arm: int | None, wall: float, *, rnd: int = 0, load: float = 0.1, counted: bool = True,
         recorded: float | None = None) -> StageRun:  # fmt: skip
    recorded = wall - 3.0 if recorded is None else recorded
    return StageRun(stage, arm, rnd, wall, recorded, (load, 0.2, 0.3), QUIET, 0.0, counted)


def _runs(load: float = 0.1) -> list[StageRun]:
    return [
        _run("classifier", None, 120.0, load=load),
        _run("hard_negatives", None, 6.0),
        _run("segmenter", 1, 360.0, rnd=1),
        _run("segmenter", 2, 190.0, rnd=1),
        _run("tune", 2, 15.0),
        _run("package", 2, 5.0),
        _run("evaluate", 2, 30.0),
        _run("tune", 1, 99.0, counted=False),
    ]


def _quality() -> dict:
    def validation(shift: float) -> dict:
        per_class = {str(c): {"cascade": 0.9 + shift, "segment_all": 0.6 + shift, "empty": 0.85} for c in (1, 2, 3, 4)}
        return {"images": 134, "dice_cascade": 0.9 + shift, "dice_segment_all": 0.6 + shift, "per_class": per_class}

    return {
        "segmenter_dice": {1: {1: 0.1, 2: 0.2, 3: 0.6, 4: 0.4}, 2: {1: 0.11, 2: 0.2, 3: 0.61, 4: 0.39}},
        "validation": {1: validation(0.0), 2: validation(0.004)},
        "heldout": {"data": "synthetic, 200 images, seed 1", "dice_cascade": 0.89, "dice_empty": 0.85,
                    "dice_segment_all": 0.56},
        "real": {"images": 37, "dice_cascade": 0.8404, "dice_empty": 0.8446, "dice_segment_all": 0.5711},
    }  # fmt: skip


def _meta(**kw) -> dict:
    meta = {"config": "demo-cpu.yaml", "command": "python -m bench.bench_recipe_time", "started": "2026-01-01 00:00",
            "cpus": "2 CPUs (AMD EPYC; native bf16: no)", "locked": True, "data_note": "`data/demo`", "quick": False,
            "order": "round 1: parallel_classes 1 then parallel_classes 2", "settle": 150.0}  # fmt: skip
    return {**meta, **kw}


@pytest.mark.parametrize("workers", [1, 2])
def test_arm_overrides_set_parallel_classes_and_nothing_else(workers: int) -> None:
    config = load_config(DEMO, parse_overrides(arm_overrides(workers)))
    recipe = load_config(DEMO)
    assert config.segmenter.parallel_classes == workers
    assert config.segmenter.train == recipe.segmenter.train
    assert config.classifier == recipe.classifier


def test_quick_overrides_shorten_every_network() -> None:
    config = load_config(DEMO, parse_overrides(QUICK_OVERRIDES))
    assert config.classifier.train.epochs == 2
    assert config.segmenter.train.epochs == 2
    assert not config.segmenter.class_epochs  # the recipe's 60 epochs for scratches are gone too


def test_arm_order_alternates_starting_sequential() -> None:
    assert arm_order(1) == [(1, 2)]
    assert arm_order(3) == [(1, 2), (2, 1), (1, 2)]


def test_data_commands_come_from_the_recipe_header(tmp_path: Path) -> None:
    assert data_commands(DEMO, Path("elsewhere")) == [
        ["synth", "--out", "elsewhere", "--n", "400", "--seed", "0", "--profile", "train"]
    ]  # fmt: skip
    # the shipped demo recipe: a synth command, then a mosaic command continued over two comment lines
    assert data_commands(DEMO.parent / "demo-neu-mix-cpu.yaml", Path("mix")) == [
        ["synth", "--out", "mix", "--n", "1600", "--seed", "0", "--profile", "train"],
        ["mosaic", "../shared/neu-seg", "--split", "train", "--source-classes", "inclusion,patches,scratches",
         "--map", "scratches=scratches", "--n", "400", "--tiles-per-image", "6", "--out", "mix", "--append"],
    ]  # fmt: skip
    bare = tmp_path / "bare.yaml"
    bare.write_text("# a recipe that says nothing of its data (`cascade train --config bare.yaml`)\nname: bare\n")
    with pytest.raises(ValueError, match="cascade synth"):
        data_commands(bare, Path("x"))


def test_load_warning_only_above_the_limit() -> None:
    assert load_warnings(_runs(load=0.5)) == []
    warnings = load_warnings(_runs(load=1.7))
    assert len(warnings) == 1
    assert "WARNING" in warnings[0] and "1.70" in warnings[0] and "`classifier`" in warnings[0]


def test_totals_count_each_arm_once_and_skip_the_quality_check() -> None:
    wall = totals(_runs())
    assert wall[2] == pytest.approx(120 + 6 + 190 + 15 + 5 + 30)
    assert wall[1] == pytest.approx(120 + 6 + 360 + 15 + 5 + 30)
    assert totals(_runs(), "recorded")[2] == pytest.approx(wall[2] - 6 * 3.0)
    rounds = [*_runs(), _run("segmenter", 2, 210.0, rnd=2), _run("segmenter", 2, 170.0, rnd=3)]
    assert totals(rounds)[2] == pytest.approx(wall[2])  # median of 190, 210, 170
    assert math.isnan(totals([r for r in _runs() if r.stage != "evaluate"])[2])


def test_render_table_ratio_quality_and_verdict() -> None:
    text = render(_runs(), _quality(), _meta())
    assert "| segmenter, parallel_classes 1 (round 1) | 360.0 | 357.0 | 0 | 0.10 / 0.20 / 0.30 |" in text
    assert "| tune, parallel_classes 1 (quality check) | 99.0 |" in text
    assert f"**{(120 + 6 + 190 + 50) / 60:.1f} min**" in text
    assert "**1.89x**" in text  # 360 / 190
    assert "| 3 | 0.6000 | 0.6100 | 0.6000 | 0.6040 | 0.9000 | 0.9040 |" in text
    assert "| mean | 0.3250 | 0.3275 | 0.6000 | 0.6040 | 0.9000 | 0.9040 |" in text
    assert "**the same up to noise**" in text
    assert "meets the <= 20 min goal" in text and "WARNING" not in text


def test_render_flags_contention_quick_and_a_quality_gap() -> None:
    quality = _quality()
    quality["validation"][2]["dice_cascade"] = 0.8
    slow = [*_runs(load=2.3)[:2], _run("segmenter", 1, 2400.0, rnd=1), *_runs()[3:]]
    text = render(slow, quality, _meta())
    assert "- **WARNING: contended.**" in text and "the cores were contended" in text
    assert "**not the same**" in text
    assert "meets the <= 20 min goal of issue 10 - but the cores were contended" in text  # parallel arm: 6.1 min
    late = [*_runs()[:3], _run("segmenter", 2, 1100.0, rnd=1), *_runs()[4:]]
    text = render(late, _quality(), _meta())
    assert "misses the <= 20 min goal of issue 10 on a quiet machine with this CPU (above)" in text
    text = render(_runs(), _quality(), _meta(quick=True))
    assert "NOT the recipe" in text and "Verdict: none" in text


def test_render_puts_the_real_images_next_to_the_synthetic_numbers() -> None:
    text = render(_runs(), _quality(), _meta())
    assert "Real Severstal images (parallel_classes 2 bundle, 37 images" in text
    assert "cascade 0.8404, all-empty 0.8446, segment_all 0.5711: **ties predicting nothing** (within one" in text
    absent = render(_runs(), {**_quality(), "real": None}, _meta())
    assert "Real Severstal images: not scored" in absent and "is absent" in absent
