"""The inference app's JSON stays valid JSON: the shared base app's provider is installed."""

from __future__ import annotations

from typing import Any


def test_non_finite_numbers_leave_as_null(client: Any) -> None:
    payload = {"probabilities": [float("nan"), 1.0], "logits": [float("-inf"), float("inf")]}
    text = client.application.json.dumps(payload)
    assert text == '{"probabilities": [null, 1.0], "logits": [null, null]}'  # keys keep order
