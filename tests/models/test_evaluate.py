"""Metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from models import evaluate


def test_auc_of_the_textbook_example() -> None:
    y = np.array([0, 0, 1, 1])
    score = np.array([0.1, 0.4, 0.35, 0.8])
    assert evaluate.roc_auc_binary(y, score) == pytest.approx(0.75)


def test_auc_counts_ties_as_half() -> None:
    assert evaluate.roc_auc_binary(
        np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])
    ) == pytest.approx((1 + 0.5 + 1 + 1) / 4)


def test_auc_of_one_class_is_undefined() -> None:
    assert np.isnan(evaluate.roc_auc_binary(np.array([1, 1]), np.array([0.2, 0.3])))


def test_multiclass_auc_is_the_one_vs_rest_mean() -> None:
    y = np.array([0, 1, 2, 0])
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.5, 0.1, 0.4], [0.3, 0.4, 0.3]])
    # class 0: pos {0.6, 0.3} vs neg {0.2, 0.5} -> (1 + 1 + 1 + 0) / 4; class 1: 0.5 beats
    # {0.3, 0.1, 0.4} -> 1; class 2: 0.4 beats {0.1, 0.3, 0.3} -> 1
    assert evaluate.roc_auc(y, probs) == pytest.approx((0.75 + 1 + 1) / 3)


def test_confusion_matrix_and_per_class_figures() -> None:
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    cm = evaluate.confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    pc = evaluate.per_class(cm)
    assert pc["precision"].tolist() == pytest.approx([0.5, 2 / 3, 0.0])
    assert pc["recall"].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert pc["f1"].tolist() == pytest.approx([0.5, 0.8, 0.0])
    assert pc["support"].tolist() == [2, 2, 1]
    assert evaluate.balanced_accuracy(cm) == pytest.approx(0.5)


def test_ece_of_four_predictions_in_four_bins() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    assert evaluate.ece(y, probs) == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4)


def test_temperature_recovers_a_known_overconfidence() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(20000, 3))
    p = evaluate.softmax(true_logits)
    y = np.array([rng.choice(3, p=row) for row in p])
    t = evaluate.fit_temperature(y, true_logits * 2.0)
    assert t == pytest.approx(2.0, rel=0.05)
    scaled = evaluate.softmax(true_logits * 2.0, t)
    assert evaluate.ece(y, scaled) < evaluate.ece(y, evaluate.softmax(true_logits * 2.0))


def test_roc_curve_steps_through_tied_scores() -> None:
    fpr, tpr, thr = evaluate.roc_curve(np.array([0, 1, 1, 0]), np.array([0.2, 0.7, 0.7, 0.9]))
    assert thr.tolist() == [np.inf, 0.9, 0.7, 0.2]
    assert tpr.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert fpr.tolist() == [0.0, 0.5, 0.5, 1.0]


Y = np.array([0, 0, 0, 1, 1, 1])
SCORE = np.array([0.1, 0.2, 0.6, 0.4, 0.7, 0.9])


def test_youden_threshold() -> None:
    t = evaluate.choose_threshold(Y, SCORE, "youden", None, "pneumonia")
    assert (t.value, t.sensitivity, t.specificity) == pytest.approx((0.7, 2 / 3, 1.0))
    assert t.rule == "youden" and t.positive_class == "pneumonia"


def test_target_sensitivity_threshold() -> None:
    t = evaluate.choose_threshold(Y, SCORE, "sensitivity", 0.95, "pneumonia")
    assert (t.value, t.sensitivity, t.specificity) == pytest.approx((0.4, 1.0, 2 / 3))
    assert t.target == 0.95


def test_target_specificity_threshold() -> None:
    t = evaluate.choose_threshold(Y, SCORE, "specificity", 0.9, "pneumonia")
    assert (t.value, t.sensitivity, t.specificity) == pytest.approx((0.7, 2 / 3, 1.0))


def test_classification_metrics_bundle() -> None:
    logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]))
    m = evaluate.classification_metrics(np.array([0, 1, 1, 1]), logits, ["a", "b"], temperature=1.0)
    assert m["val_accuracy"] == pytest.approx(0.75)
    assert m["val_auc"] == pytest.approx(1.0)
    assert m["confusion_matrix"] == [[1, 0], [1, 2]]
    assert m["per_class"]["b"]["recall"] == pytest.approx(2 / 3)
    assert m["val_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.7])))
    assert m["val_ece"] == m["val_ece_calibrated"]
