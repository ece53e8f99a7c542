"""Class codes and intended use: from the job spec to the card, private codes by default."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from models.card import PRIVATE_CODING_SCHEME, ClassCode
from models.spec import JobSpec
from tests.service.conftest import make_run_dir


def _spec(classes: list[object]) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model_name": "chest",
            "dataset": {
                "uri": "/data/x.npz",
                "classes": classes,
                "intended_use": {"modality": "CR", "body_part": "CHEST"},
            },
        }
    )


def test_coded_and_plain_classes_mix() -> None:
    pneumonia = {"scheme": "SCT", "value": "233604007", "meaning": "Pneumonia"}
    spec = _spec(["normal", {"name": "pneumonia", "code": pneumonia}])
    assert spec.dataset.class_names == ["normal", "pneumonia"]
    assert spec.dataset.class_codes(["normal", "pneumonia"]) == (None, ClassCode(**pneumonia))
    assert spec.dataset.intended_use is not None and spec.dataset.intended_use.modality == "CR"


def test_no_code_means_none_on_the_card() -> None:
    assert _spec(["normal", "pneumonia"]).dataset.class_codes(["normal", "pneumonia"]) is None


def test_a_bad_code_is_refused() -> None:
    with pytest.raises(ValidationError, match="scheme"):
        _spec([{"name": "pneumonia", "code": {"scheme": "", "value": "1", "meaning": "x"}}])


def test_the_card_fills_private_codes(tmp_path: Path) -> None:
    trained_card = make_run_dir(tmp_path)[1]
    sct = ClassCode(scheme="SCT", value="233604007", meaning="Pneumonia")
    card = trained_card.model_copy(update={"class_codes": (None, sct)})
    codes = card.coded_classes()
    assert codes[1] == sct
    assert codes[0].scheme == PRIVATE_CODING_SCHEME and codes[0].value == card.classes[0]
    plain = trained_card.model_copy(update={"class_codes": None})
    assert all(c.scheme == PRIVATE_CODING_SCHEME for c in plain.coded_classes())
