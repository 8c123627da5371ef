"""Binary classification metrics for the model card (blast = positive class)."""

from __future__ import annotations

import numpy as np


def binary_metrics(y_true: np.ndarray, p_blast: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, sensitivity, specificity, F1, weighted F1, ROC AUC, confusion matrix."""
    from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    p_blast = np.asarray(p_blast, dtype=float)
    y_pred = (p_blast >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()

    def ratio(a: float, b: float) -> float | None:
        return round(float(a) / float(b), 4) if b else None

    both_classes = len(np.unique(y_true)) == 2
    return {
        "count": int(len(y_true)),
        "blasts": int(y_true.sum()),
        "normals": int(len(y_true) - y_true.sum()),
        "threshold": threshold,
        "accuracy": ratio(tp + tn, len(y_true)),
        "precision": ratio(tp, tp + fp),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "f1": round(float(f1_score(y_true, y_pred, zero_division=0)), 4) if tp + fp + fn else None,
        "weighted_f1": round(float(f1_score(y_true, y_pred, average="weighted", zero_division=0)), 4),
        "roc_auc": round(float(roc_auc_score(y_true, p_blast)), 4) if both_classes else None,
        "confusion_matrix": {"labels": ["normal", "blast"], "rows_true_cols_predicted": [[int(tn), int(fp)], [int(fn), int(tp)]]},
    }


def agreement(p_a: np.ndarray, p_b: np.ndarray, threshold: float = 0.5) -> dict:
    """How often two models give the same label, and how far their probabilities differ."""
    a = np.asarray(p_a) >= threshold
    b = np.asarray(p_b) >= threshold
    diff = np.abs(np.asarray(p_a, float) - np.asarray(p_b, float))
    return {
        "label_agreement": round(float((a == b).mean()), 4) if len(a) else None,
        "mean_abs_prob_diff": round(float(diff.mean()), 4) if len(a) else None,
        "max_abs_prob_diff": round(float(diff.max()), 4) if len(a) else None,
    }


def triage_metrics(y_true: np.ndarray, p_blast: np.ndarray, review_low: float, review_high: float) -> dict:
    """What reaches a human: a cell is brought to the reviewer when called blast or in the review band."""
    y_true = np.asarray(y_true).astype(int)
    p_blast = np.asarray(p_blast, dtype=float)
    flagged = p_blast >= review_low
    in_band = (p_blast >= review_low) & (p_blast < review_high)
    blasts, normals = y_true == 1, y_true == 0
    return {
        "review_low": review_low, "review_high": review_high,
        "blasts_brought_to_human": round(float(flagged[blasts].mean()), 4) if blasts.any() else None,
        "normals_left_alone": round(float((~flagged)[normals].mean()), 4) if normals.any() else None,
        "share_in_review_band": round(float(in_band.mean()), 4) if len(y_true) else None,
    }
