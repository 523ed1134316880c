"""How well a classifier tells real from synthetic images by their appearance statistics (``realism.image_stats``).

A cross-validated ROC AUC: 0.5 means the statistics cannot tell them apart, 1.0 that they always can.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DISCRIMINATORS", "discriminator_auc"]

DISCRIMINATORS: tuple[str, ...] = ("logistic", "boosting")
"""Classifiers ``discriminator_auc`` knows: standardised logistic regression, and gradient-boosted trees."""


def _discriminator(name: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced"))
    if name == "boosting":
        return HistGradientBoostingClassifier(
            max_iter=150, learning_rate=0.05, max_leaf_nodes=8, min_samples_leaf=8, class_weight="balanced",
            random_state=seed,
        )  # fmt: skip
    raise ValueError(f"unknown discriminator {name!r}; choose one of {list(DISCRIMINATORS)}")


def discriminator_auc(
    real: np.ndarray, synth: np.ndarray, model: str = "logistic", folds: int = 5, repeats: int = 5, seed: int = 0
) -> tuple[float, float]:
    """Cross-validated ROC AUC of a classifier telling real from synthetic images by their statistics.

    0.5 means the statistics cannot tell them apart, 1.0 that they always can. Each repeat splits the images
    into ``folds`` stratified folds (a new shuffle per repeat), trains on all folds but one and scores the
    held-out one; the AUC is taken over all out-of-fold scores of the repeat.

    Args:
        real: ``(N_real, F)`` statistics of real images (``image_stats``).
        synth: ``(N_synth, F)`` statistics of synthetic images.
        model: one of ``DISCRIMINATORS``.
        folds: cross-validation folds.
        repeats: repeated shuffles.
        seed: seed of the first shuffle.

    Returns:
        Mean AUC over the repeats and its standard deviation.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    features = np.vstack([real, synth])
    labels = np.r_[np.ones(len(real)), np.zeros(len(synth))]
    aucs = []
    for r in range(repeats):
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed + r)
        scores = cross_val_predict(_discriminator(model, seed + r), features, labels, cv=cv, method="predict_proba")
        aucs.append(roc_auc_score(labels, scores[:, 1]))
    return float(np.mean(aucs)), float(np.std(aucs))
