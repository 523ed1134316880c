"""``pseudo_label/report.md``: the validation (and held-out) Dice of every pseudo-labelling round next to the
all-empty baseline, and how many pseudo-labels each class got (``training.pseudo_label`` writes it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["report_markdown"]


def report_markdown(summary: dict[str, Any], names: Sequence[str], class_ids: Sequence[int]) -> str:
    """``pseudo_label/report.md``: validation Dice per round next to all-empty, and the pseudo-labels per class."""
    header = " | ".join(f"{c} {n}" for c, n in zip(class_ids, names, strict=True))
    lines = [
        "# Pseudo-labelling",
        "",
        f"Unlabelled images: `{summary['unlabelled']}`. "
        f"Chosen bundle: round {summary['chosen_round']} (best validation Dice; round 0 = no pseudo-labels).",
        "",
        *(f"- {m}" for m in summary["screening"]),
        "",
        "## Validation Kaggle Dice per round (cascade / all-empty)",
        "",
        f"| round | mean | all-empty | {header} |",
        "|---|---|---|" + "---|" * len(class_ids),
    ]
    for r in summary["rounds"]:
        v = r["validation"]
        cells = " | ".join(
            f"{v['per_class'][str(c)]['cascade']:.4f} / {v['per_class'][str(c)]['empty']:.4f}" for c in class_ids
        )
        mark = " (chosen)" if r["round"] == summary["chosen_round"] else ""
        lines.append(f"| {r['round']}{mark} | {v['dice_cascade']:.4f} | {v['dice_empty']:.4f} | {cells} |")
    if any("heldout" in r for r in summary["rounds"]):
        lines += ["", "## Held-out Kaggle Dice per round (cascade / all-empty)", ""]
        lines += [f"| round | mean | all-empty | {header} |", "|---|---|---|" + "---|" * len(class_ids)]
        for r in summary["rounds"]:
            if "heldout" in r:
                h = r["heldout"]
                cells = " | ".join(
                    f"{h['per_class'][str(c)]:.4f} / {h['per_class_empty'][str(c)]:.4f}" for c in class_ids
                )
                lines.append(f"| {r['round']} | {h['dice_cascade']:.4f} | {h['dice_empty']:.4f} | {cells} |")
    lines += ["", "## Pseudo-labels per round (present per class)", ""]
    lines += [f"| round | unlabelled | kept | clean | dropped (uncertain) | {header} |"]
    lines += ["|---|---|---|---|---|" + "---|" * len(class_ids)]
    for r in summary["rounds"]:
        counts = r["pseudo_labels"]
        if counts is None:
            continue
        cells = " | ".join(str(counts["present"][str(c)]) for c in class_ids)
        lines.append(
            f"| {r['round']} | {counts['unlabelled']} | {counts['kept']} | {counts['clean']} | "
            f"{counts['dropped_uncertain']} | {cells} |"
        )
    return "\n".join(lines) + "\n"
