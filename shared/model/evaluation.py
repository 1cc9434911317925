"""Held-out metrics and the decision threshold, as plain numbers a model card can hold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

_DIGITS = 4


def best_f1_threshold(labels: Sequence[int] | np.ndarray, probabilities: np.ndarray) -> float:
    """The probability cut that maximises F1 on these (out-of-fold) predictions."""
    precision, recall, thresholds = precision_recall_curve(labels, probabilities)
    # The last precision/recall pair has no threshold: it is the "predict nothing" point.
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def classification_metrics(
    labels: Sequence[int] | np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, float | int]:
    y = np.asarray(labels, dtype=int)
    predicted = probabilities >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    tn = int(np.sum(~predicted & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "roc_auc": round(float(roc_auc_score(y, probabilities)), _DIGITS),
        "average_precision": round(float(average_precision_score(y, probabilities)), _DIGITS),
        "precision": round(precision, _DIGITS),
        "recall": round(recall, _DIGITS),
        "f1": round(f1, _DIGITS),
        "accuracy": round((tp + tn) / len(y), _DIGITS),
        "ads": len(y),
        "violations": int(y.sum()),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "true_negatives": tn,
    }


def format_metrics(metrics: dict[str, float | int]) -> str:
    """One line for a terminal: the figures a reviewer looks at first."""
    keys = ("roc_auc", "average_precision", "precision", "recall", "f1", "accuracy", "ads")
    return "  ".join(f"{key}={metrics[key]}" for key in keys if key in metrics)
