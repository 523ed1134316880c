"""Tests for training/gate_tuning.py and cascade/gate_curve.py: cost-aware gate choice, budgets, the Pareto
frontier (checked against brute force over every threshold combination), minimum recall and the stored curve.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cascade.gate_curve import ClassGateCurve, GateCurve, GatePoint
from training.gate_tuning import ClassOptions, choose_gates, class_options, gate_curve, pareto_frontier
from training.thresholds import grid_scores

GATES = [0.0, 0.2, 0.4, 0.6, 0.8]


def _options(seed: int, n: int = 40, classes: int = 3, min_recall: float = 0.0) -> list[ClassOptions]:
    """Random but realistic classes: positives get higher probabilities; Dice tables with noise."""
    rng = np.random.default_rng(seed)
    options = []
    for k in range(classes):
        positive = rng.random(n) < (0.1 + 0.2 * k)
        probabilities = np.clip(np.where(positive, 0.6, 0.25) + rng.normal(0, 0.2, n), 0, 1)
        tables = np.where(positive[:, None, None], rng.uniform(0.3, 0.9, (n, 2, 2)), rng.uniform(0, 1, (n, 2, 2)) > 0.4)
        scores = grid_scores(probabilities, tables.astype(float), ~positive, GATES)
        options.append(class_options(probabilities, scores, ~positive, GATES, min_recall=min_recall))
    return options


def _brute(options: list[ClassOptions]) -> list[tuple[tuple[int, ...], float, float]]:
    """Every combination of admissible thresholds: (indices, runs per image, mean Dice)."""
    n = options[0].n_images
    out = []
    for combo in itertools.product(*(np.flatnonzero(o.admissible) for o in options)):
        runs = sum(int(o.passed[t]) for o, t in zip(options, combo, strict=True)) / n
        dice = float(np.mean([o.dice[t] for o, t in zip(options, combo, strict=True)]))
        out.append((tuple(int(t) for t in combo), runs, dice))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cost_weight", [0.0, 0.02, 0.1, 1.0])
def test_choose_gates_maximises_the_objective(seed: int, cost_weight: float) -> None:
    options = _options(seed)
    choice = choose_gates(options, cost_weight)
    best = max(d - cost_weight * r for _, r, d in _brute(options))
    assert choice.dice - cost_weight * choice.runs_per_image == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("budget", [0.3, 0.6, 1.0, 1.5])
def test_tuning_under_a_budget_respects_it(seed: int, budget: float) -> None:
    options = _options(seed)
    choice = choose_gates(options, 0.0, budget)
    feasible = [(r, d) for _, r, d in _brute(options) if r <= budget + 1e-12]
    if feasible:
        assert choice.runs_per_image <= budget + 1e-12
        assert choice.dice == pytest.approx(max(d for _, d in feasible), abs=1e-9)
    else:  # nothing fits: the cheapest choice
        assert choice.runs_per_image == pytest.approx(min(r for _, r, _ in _brute(options)))


def test_zero_budget_that_cannot_be_met_returns_the_cheapest(caplog: pytest.LogCaptureFixture) -> None:
    options = _options(0)
    choice = choose_gates(options, 0.0, 0.0)
    assert choice.indices == tuple(int(np.flatnonzero(o.admissible)[-1]) for o in options) or choice.runs_per_image == (
        pytest.approx(min(r for _, r, _ in _brute(options)))
    )
    assert "no gate fits the budget" in caplog.text


def test_higher_cost_weight_never_runs_more_segmenters() -> None:
    options = _options(3)
    runs = [choose_gates(options, w).runs_per_image for w in (0.0, 0.01, 0.05, 0.2, 1.0, 10.0)]
    assert runs == sorted(runs, reverse=True)
    assert runs[-1] == pytest.approx(min(r for _, r, _ in _brute(options)))


@pytest.mark.parametrize("seed", range(6))
def test_pareto_frontier_is_monotone_and_optimal(seed: int) -> None:
    options = _options(seed)
    frontier = pareto_frontier(options)
    brute = _brute(options)
    runs = [f.runs_per_image for f in frontier]
    dice = [f.dice for f in frontier]
    assert runs == sorted(runs) and len(set(runs)) == len(runs)
    assert all(b > a for a, b in itertools.pairwise(dice))
    for point in frontier:  # nothing does better for the same or fewer runs
        assert max(d for _, r, d in brute if r <= point.runs_per_image + 1e-12) == pytest.approx(point.dice)
    assert dice[-1] == pytest.approx(max(d for _, _, d in brute))


def test_frontier_is_thinned_keeping_the_ends() -> None:
    options = _options(1, n=120)
    full = pareto_frontier(options, max_points=10_000)
    thin = pareto_frontier(options, max_points=5)
    assert len(thin) <= 5 < len(full)
    assert thin[0] == full[0] and thin[-1] == full[-1]


def test_min_recall_removes_thresholds_that_miss_positives() -> None:
    probabilities = np.array([0.05, 0.1, 0.15, 0.9, 0.3, 0.2, 0.1, 0.0])  # positives: the first three are low
    positive = np.array([True, True, True, True, False, False, False, False])
    tables = np.where(positive[:, None, None], 0.8, 1.0) * np.ones((8, 1, 1))
    scores = grid_scores(probabilities, tables, ~positive, GATES)
    free = class_options(probabilities, scores, ~positive, GATES)
    constrained = class_options(probabilities, scores, ~positive, GATES, min_recall=0.75)
    assert list(free.recall) == [1.0, 0.25, 0.25, 0.25, 0.25]
    assert free.admissible.all() and list(constrained.admissible) == [True, False, False, False, False]
    # at a cost the free gate closes on the positives; the constrained one stays open for the rare class
    assert choose_gates([free], cost_weight=1.0).indices != (0,)
    assert choose_gates([constrained], cost_weight=1.0).indices == (0,)


def test_class_options_checks_the_gate_grid() -> None:
    with pytest.raises(ValueError, match="start at 0"):
        class_options(np.zeros(3), np.zeros((2, 1, 1)), np.ones(3, bool), [0.1, 0.5])
    with pytest.raises(ValueError, match="gate thresholds"):
        class_options(np.zeros(3), np.zeros((3, 1, 1)), np.ones(3, bool), [0.0, 0.5])


def _curve(seed: int = 0, **kwargs: object) -> GateCurve:
    options = _options(seed)
    chosen = choose_gates(options, 0.05)
    return gate_curve(
        options, chosen, choose_gates(options), pixel_grid=[0.4, 0.6], area_grid=[0, 50],
        positive_dice=[0.5] * 3, notes=["", "gate lowered", ""], cost_weight=0.05, max_runs_per_image=None,
        min_recall=0.0, calibrated=True, **kwargs,
    )  # fmt: skip


def test_gate_curve_round_trips_and_describes_itself() -> None:
    curve = _curve()
    again = GateCurve.from_dict(curve.to_dict())
    assert again == curve
    assert curve.chosen.runs_per_image <= curve.dice_only.runs_per_image
    assert curve.classes[0].prob_thresholds == tuple(GATES) and curve.images == 40
    lines = curve.describe((1, 2, 3), ("a", "b", "c"), curve.chosen.prob_thresholds)
    assert any("chosen:" in line for line in lines) and any("gate lowered" in line for line in lines)
    best = curve.best_within(curve.frontier[1].runs_per_image + 1e-9)
    assert best == curve.frontier[1]
    assert curve.best_within(-1.0) == curve.frontier[0]


def _class_curve(**overrides: object) -> dict:
    data = {
        "prob_thresholds": [0.0, 0.5], "dice": [0.5, 0.6], "pass_rate": [1.0, 0.3], "recall": [1.0, 0.8],
        "pixel_thresholds": [0.5, 0.5], "min_areas": [0, 10], "positives": 4, "positive_dice": 0.5, "note": "",
    }  # fmt: skip
    return data | overrides


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prob_thresholds": [0.5, 0.0]}, "strictly ascending"),
        ({"pass_rate": [0.3, 1.0]}, "pass_rate must not increase"),
        ({"recall": [1.0]}, "recall must have 2 values"),
        ({"dice": [0.5, 1.5]}, r"dice\[1\] must be a number in"),
        ({"min_areas": [0, -1]}, "min_areas"),
        ({"positives": -1}, "positives"),
    ],
)
def test_class_gate_curve_validation(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassGateCurve(**_class_curve(**overrides))


def test_gate_curve_validation() -> None:
    data = _curve().to_dict()
    bad = data | {"frontier": [{"runs_per_image": 1.0, "dice": 0.5, "prob_thresholds": [0.0] * 3}] * 2}
    with pytest.raises(ValueError, match="strictly increasing"):
        GateCurve.from_dict(bad)
    with pytest.raises(ValueError, match="3 thresholds"):
        GateCurve.from_dict(data | {"chosen": {"runs_per_image": 1.0, "dice": 0.5, "prob_thresholds": [0.0]}})
    with pytest.raises(ValueError, match="unknown field"):
        GateCurve.from_dict(data | {"extra": 1})
    with pytest.raises(ValueError, match="classes"):
        GateCurve.from_dict(data | {"classes": {}})
    with pytest.raises(ValueError, match="max_runs_per_image"):
        GateCurve.from_dict(data | {"max_runs_per_image": -1})
    assert GatePoint(0.5, 0.9, (0.1,)).to_dict() == {"runs_per_image": 0.5, "dice": 0.9, "prob_thresholds": [0.1]}


def test_describe_gate_and_summary_of_a_manifest() -> None:
    from cascade.calibration import Calibration
    from cascade.gate_curve import describe_gate, gate_summary
    from cascade.manifest import BundleManifest, ClassParams, ModelSpec

    curve = _curve()
    seg = ModelSpec("Unet", "tu-test_resnet")
    manifest = BundleManifest(
        class_ids=(1, 2, 3), class_names=("a", "b", "c"), classifier=ModelSpec("timm", "test_resnet"),
        segmenters=dict.fromkeys((1, 2, 3), seg),
        classes=[ClassParams(prob_threshold=t, predictable=k != 1) for k, t in enumerate(curve.chosen.prob_thresholds)],
        calibration=[Calibration(2.0, -0.5)] * 3, gate_curve=curve,
    )  # fmt: skip
    text = "\n".join(describe_gate(manifest))
    assert "T=2.000 b=-0.500" in text and "chosen:" in text and "Dice-only:" in text
    assert "UNPREDICTABLE classes (the bundle cannot be trusted on them): 2 b" in text
    summary = gate_summary(manifest)
    assert summary["calibrated"] and summary["unpredictable_classes"] == [2]
    assert summary["chosen"] == curve.chosen.to_dict() and summary["tuning_images"] == 40
    bare = BundleManifest(class_ids=(1,), class_names=("a",), classifier=manifest.classifier, segmenters={1: seg})
    assert "no gate curve" in "\n".join(describe_gate(bare))
    assert gate_summary(bare) | {"calibration": None} == {
        "calibrated": False, "calibration": None, "chosen": None, "dice_only": None, "tuning_images": None,
        "cost_weight": None, "max_runs_per_image": None, "unpredictable_classes": [],
    }  # fmt: skip
