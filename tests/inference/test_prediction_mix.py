"""The classes each version answers, counted, and the share its card's validation expects:
worked out from the card's operating point over the validation prevalence (binary) or its
confusion matrix (else), set as the version loads; each answer's class and confidence
counted, and nothing of the scan."""

from __future__ import annotations

from typing import Any

import pytest

from models.card import ModelCard
from service.inference.prediction_mix import expected_shares
from tests.inference.conftest import MODEL, Trained
from tests.inference.test_models import IMAGES, PREDICT, metric

SCANS = ("normal_0.png", "normal_1.png", "pneumonia_0.png", "pneumonia_1.png", "normal_0.jpg")


def card_with(card: ModelCard, **changes: Any) -> ModelCard:
    return card.model_copy(update=changes)


def test_a_binary_cards_share_is_its_operating_point_over_the_validation_prevalence(
    trained: Trained,
) -> None:
    card = trained.v1_card
    assert card.threshold is not None
    threshold = card.threshold.model_copy(
        update={"positive_class": "pneumonia", "sensitivity": 0.9, "specificity": 0.8}
    )
    dataset = card.dataset.model_copy(
        update={"class_counts": {"val": {"normal": 75, "pneumonia": 25}}}
    )
    shares = expected_shares(card_with(card, threshold=threshold, dataset=dataset))
    assert shares == pytest.approx({"pneumonia": 0.9 * 0.25 + 0.2 * 0.75, "normal": 0.625})


def test_without_an_operating_point_the_confusion_matrix_columns_say_it(
    trained: Trained,
) -> None:
    matrix = [[8, 1, 1], [2, 6, 2], [0, 0, 20]]  # rows: the truth; columns: what was answered
    three = card_with(
        trained.v1_card, classes=("a", "b", "c"), threshold=None,
        metrics={"confusion_matrix": matrix},
    )  # fmt: skip
    assert expected_shares(three) == pytest.approx({"a": 10 / 40, "b": 7 / 40, "c": 23 / 40})
    assert expected_shares(card_with(three, metrics={})) is None  # an older card: no share


def test_each_answer_is_counted_by_its_class_beside_what_the_card_expects(
    client: Any, trained: Trained
) -> None:
    before = {
        c: metric(client, "scantune_inference_predicted_total", model=MODEL, label=c)
        for c in ("normal", "pneumonia")
    }
    files = [(open(IMAGES / name, "rb"), name) for name in SCANS]  # noqa: SIM115
    answer = client.post(PREDICT, data={"file": files})
    assert answer.status_code == 200, answer.json
    answered = [p["label"] for p in answer.json["predictions"]]
    for label in ("normal", "pneumonia"):
        counted = metric(
            client, "scantune_inference_predicted_total", model=MODEL, version="1", label=label
        )
        assert counted - before[label] == answered.count(label), label
    expected = expected_shares(trained.v1_card)
    assert expected is not None and sum(expected.values()) == pytest.approx(1.0)
    for label, share in expected.items():
        shown = metric(
            client, "scantune_model_expected_share", model=MODEL, version="1", label=label
        )
        assert shown == pytest.approx(share, abs=1e-6), label
    confidence = metric(client, "scantune_inference_confidence_count", model=MODEL, version="1")
    assert confidence >= len(SCANS)
    text = client.get("/metrics").get_data(as_text=True)
    assert not any(name.split(".")[0] in text for name in SCANS)  # no file name
