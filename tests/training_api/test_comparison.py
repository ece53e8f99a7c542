"""A version beside another (by default production's): the figures and their differences, the
intervals side by side, whether both were measured on the same scans, what changed, and each
one's caveats; hidden where the key may not see either version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from models.card import DatasetInfo, DecisionThreshold, Estimate, ModelAccess
from tests.training_api.conftest import publish_version
from tests.training_api.test_security import as_, make_app

__all__ = ["make_app"]
URL = "/v1/models/chest-xray/versions/{}/comparison"
DATA = DatasetInfo(
    uri="/data/x.npz",
    format="npz",
    sha256="a" * 64,
    class_counts={
        "train": {"normal": 300, "pneumonia": 900},
        "val": {"normal": 50, "pneumonia": 150},
    },
    split_by="patient",
)
RECIPE = {"lr": 0.002, "seed": 0, "cv_folds": None, "augment": {"rotate_degrees": 10.0}}


def auc(value: float, low: float, high: float) -> dict[str, Estimate]:
    return {"auc": Estimate(value=value, low=low, high=high, images=200, source="validation")}


def cut(value: float) -> DecisionThreshold:
    return DecisionThreshold(positive_class="pneumonia", value=value, chosen_on="validation")


def publish(artifacts: Path, version: int, **fields: Any) -> None:
    card: dict[str, Any] = {"dataset": DATA, "recipe": RECIPE} | fields
    publish_version(artifacts, "chest-xray", version, **card)


def test_a_candidate_beside_production(client: FlaskClient, training_env: Path) -> None:
    artifacts = training_env / "artifacts"
    publish(artifacts, 1, val_auc=0.93, metrics={"val_ece_calibrated": 0.04},
            estimates=auc(0.93, 0.89, 0.96), threshold=cut(0.62))  # fmt: skip
    publish(artifacts, 2, val_auc=0.96, metrics={"val_ece_calibrated": 0.05},
            estimates=auc(0.96, 0.93, 0.98), threshold=cut(0.55),
            recipe=RECIPE | {"lr": 0.001, "augment": {"rotate_degrees": 15.0}})  # fmt: skip
    assert (
        client.put("/v1/models/chest-xray/aliases/production", json={"version": 1}).status_code
        == 200
    )

    answer: Any = client.get(URL.format(2)).get_json()

    assert (answer["version"], answer["against"]) == (2, {"version": 1, "alias": "production"})
    assert answer["same_scans"] is True and "same held-out scans" in answer["measured"]
    figures = {f["name"]: f for f in answer["figures"]}
    assert set(figures) == {"val_auc", "val_ece_calibrated"}  # those either card records
    assert figures["val_auc"]["better"] == "higher"
    assert figures["val_auc"]["difference"] == pytest.approx(0.03)
    assert figures["val_ece_calibrated"] == {"name": "val_ece_calibrated", "better": "lower",
        "version": 0.05, "against": 0.04, "difference": pytest.approx(0.01)}  # fmt: skip
    [interval] = answer["intervals"]
    assert interval["name"] == "auc" and interval["overlap"] is True  # 0.93-0.98 and 0.89-0.96
    assert (interval["version"]["low"], interval["against"]["high"]) == (0.93, 0.96)
    assert answer["threshold"]["version"]["value"] == 0.55
    assert answer["threshold"]["against"]["value"] == 0.62
    assert answer["changes"] == [
        {"setting": "recipe.augment.rotate_degrees", "version": 15.0, "against": 10.0},
        {"setting": "recipe.lr", "version": 0.001, "against": 0.002},
    ]
    assert answer["caveats"]["version"][-1]["code"] == "decision_aid"
    assert [c["code"] for c in answer["caveats"]["against"]][-1] == "decision_aid"
    # by number, the other way round: the differences turn over
    back: Any = client.get(URL.format(1), query_string={"against": "2"}).get_json()
    assert back["against"] == {"version": 2, "alias": None}
    assert {f["name"]: f["difference"] for f in back["figures"]}["val_auc"] == pytest.approx(-0.03)


def test_figures_from_other_scans_are_said_to_be(client: FlaskClient, training_env: Path) -> None:
    artifacts = training_env / "artifacts"
    publish(artifacts, 1, estimates=auc(0.97, 0.95, 0.99))
    other_data = DATA.model_copy(update={"sha256": "b" * 64, "uri": "/data/y.npz"})
    publish(artifacts, 2, dataset=other_data, estimates=auc(0.90, 0.86, 0.94))
    publish(artifacts, 3, recipe=RECIPE | {"seed": 7})

    to_other_data: Any = client.get(URL.format(2), query_string={"against": "1"}).get_json()
    assert to_other_data["same_scans"] is False
    assert to_other_data["measured"].startswith("trained on other data")
    assert [c["setting"] for c in to_other_data["changes"]] == ["dataset.sha256", "dataset.uri"]
    assert to_other_data["intervals"][0]["overlap"] is False  # 0.86-0.94 against 0.95-0.99
    reseeded: Any = client.get(URL.format(3), query_string={"against": "1"}).get_json()
    assert reseeded["same_scans"] is False
    assert reseeded["measured"] == "the same data, split with another seed: other scans"
    assert reseeded["intervals"][0]["version"] is None  # 3's card records none


def test_what_cannot_be_compared_is_refused_clearly(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish(artifacts, 1, access=ModelAccess(owner="ci"))
    publish(artifacts, 2, access=ModelAccess(owner="ci"))
    publish(artifacts, 3, access=ModelAccess(owner="ci", private=True))
    app = make_app()
    owner, other = as_(app, "ci-bot"), as_(app, "radiology-bot")
    assert (
        owner.put("/v1/models/chest-xray/aliases/production", json={"version": 2}).status_code
        == 200
    )

    itself = owner.get(URL.format(2))
    assert itself.status_code == 422
    problem = itself.get_json()
    assert "alias 'production' points to version 2" in problem["detail"]
    assert problem["errors"][0]["loc"] == "query/against"
    assert owner.get(URL.format(1), query_string={"against": "staging"}).status_code == 404
    assert owner.get(URL.format(1), query_string={"against": "9"}).status_code == 404
    assert owner.get(URL.format(1), query_string={"versus": "2"}).status_code == 422
    assert owner.get(URL.format(3), query_string={"against": "1"}).status_code == 200
    # another client sees neither side of a private version: a 404, as if it were missing
    assert other.get(URL.format(3), query_string={"against": "1"}).status_code == 404
    assert other.get(URL.format(1), query_string={"against": "3"}).status_code == 404
    assert other.get(URL.format(1), query_string={"against": "2"}).status_code == 200
