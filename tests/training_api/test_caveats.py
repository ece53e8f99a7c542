"""What to keep in mind about a version: each caveat drawn from a fact on its card or in the
outcomes the key sees, as a code and a sentence, gravest first; hidden from a client that may
not see the version, like everything of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from models.card import DatasetInfo, DecisionThreshold, Estimate, IntendedUse, ModelAccess
from models.caveats import caveats
from tests.training_api.conftest import publish_version
from tests.training_api.test_model_access import RADIOLOGY_ONLY
from tests.training_api.test_outcomes import card, outcome, url
from tests.training_api.test_security import as_, make_app

__all__ = ["make_app"]
PRIOR = DecisionThreshold(positive_class="pneumonia", value=0.7, chosen_on="prior")
SMALL = {"auc": Estimate(value=0.9, low=0.8, high=0.97, images=64, source="validation")}


def codes(found: list[tuple[str, str]]) -> list[str]:
    return [code for code, _ in found]


def test_each_caveat_follows_from_a_recorded_fact() -> None:
    by_scan = DatasetInfo(uri="/d", format="csv", sha256="0" * 64, split_by="scan")
    weak = card(threshold=PRIOR, estimates=SMALL, dataset=by_scan)
    found = caveats(weak, None, {"reports": 0})
    assert codes(found) == ["no_patients", "few_scans", "untuned_threshold", "no_modality",
                            "nothing_confirmed", "decision_aid"]  # fmt: skip
    assert "rest on 64 scans" in dict(found)["few_scans"]
    by_patient = by_scan.model_copy(update={"split_by": "patient", "patients": 40,
                                            "patients_in_both": 3})  # fmt: skip
    recalled = card(dataset=by_patient, intended_use=IntendedUse(modality="CR"))
    found = caveats(
        recalled, {"reason": "misses small effusions"}, {"reports": 9, "below_validation": ["auc"]}
    )
    assert codes(found) == ["withdrawn", "patients_in_both", "below_validation", "decision_aid"]
    assert dict(found)["withdrawn"].startswith("Withdrawn: misses small effusions.")
    assert "3 patients have scans in both" in dict(found)["patients_in_both"]
    assert "(auc)" in dict(found)["below_validation"]


def test_the_api_gives_the_caveats_the_key_may_see(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    by_scan = DatasetInfo(uri="/d", format="csv", sha256="0" * 64, split_by="scan")
    publish_version(training_env / "artifacts", "chest-xray", 1, access=ModelAccess(owner="ci"),
                    threshold=PRIOR, estimates=SMALL, dataset=by_scan)  # fmt: skip
    publish_version(training_env / "artifacts", "lung-ct", 1, access=RADIOLOGY_ONLY)
    app = make_app()
    path = "/v1/models/chest-xray/versions/1/caveats"
    answer: Any = as_(app, "ci-reader").get(path).get_json()
    assert answer["name"] == "chest-xray" and answer["version"] == 1
    assert [c["code"] for c in answer["caveats"]][-2:] == ["nothing_confirmed", "decision_aid"]
    assert all(c["text"].endswith(".") for c in answer["caveats"])
    reported = as_(app, "gateway").post(url(), json={"outcomes": [outcome("A", "normal", 0.2)]})
    assert reported.status_code == 200
    owner = as_(app, "ci-reader").get(path).get_json()  # the owner sees every client's reports
    assert "nothing_confirmed" not in [c["code"] for c in owner["caveats"]]
    other = as_(app, "radiology-bot").get(path).get_json()  # another client: its own, none
    assert "nothing_confirmed" in [c["code"] for c in other["caveats"]]
    hidden = as_(app, "ci-reader").get("/v1/models/lung-ct/versions/1/caveats")
    assert hidden.status_code == 404  # another client's private version: not there
    assert as_(app, "ci-reader").get("/v1/models/chest-xray/versions/9/caveats").status_code == 404
