"""Signed predictions: a signature survives the JSON (and CSV) round trips a client makes, and
fails for another version, other probabilities or another key."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from service.signing import sign, verify

KEY = "a-signing-key-both-services-hold"
ANSWERED = {"normal": 0.2689414322376251, "pneumonia": 0.7310585975646973}  # float32 values


def test_a_signature_holds_for_exactly_what_the_version_answered() -> None:
    signature = sign(KEY, "chest-xray", 3, ANSWERED)
    assert signature.startswith("v1:") and len(signature) == 67
    over_the_wire = json.loads(json.dumps({"p": ANSWERED}))["p"]  # as a client reads it back
    assert verify(KEY, "chest-xray", 3, over_the_wire, signature)
    assert verify(KEY, "chest-xray", 3, dict(reversed(list(ANSWERED.items()))), signature)
    assert not verify(KEY, "chest-xray", 4, ANSWERED, signature)  # another version's answer
    assert not verify(KEY, "chest-xct", 3, ANSWERED, signature)
    edited = {"normal": 0.2689414322376252, "pneumonia": 0.7310585975646973}
    assert not verify(KEY, "chest-xray", 3, edited, signature)  # changed in the last digit
    assert not verify("another-key", "chest-xray", 3, ANSWERED, signature)


def test_the_outcomes_sheet_keeps_the_signature_valid_through_csv(tmp_path: Path) -> None:
    from service.commands.outcomes import read_csv
    from service.commands.predict import outcomes_sheet

    body = {"request_id": "r1", "predictions": [
        {"file": "a.dcm", "probabilities": ANSWERED,
         "signature": sign(KEY, "chest-xray", 3, ANSWERED)},
    ]}  # fmt: skip
    rows = list(csv.reader(io.StringIO(outcomes_sheet(body).decode())))
    assert rows[0] == ["file", "reference", "label", "normal", "pneumonia", "signature"]
    rows[1][2] = "pneumonia"  # the radiologist's read
    filled = io.StringIO()
    csv.writer(filled).writerows(rows)
    sheet = tmp_path / "reads.csv"
    sheet.write_text(filled.getvalue())
    [outcome] = read_csv(sheet)
    assert set(outcome["probabilities"]) == {"normal", "pneumonia"}  # not a class "signature"
    assert verify(KEY, "chest-xray", 3, outcome["probabilities"], outcome["signature"])
