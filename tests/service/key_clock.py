"""What the services' key-expiry tests share: a clock set on an app's key ring, and the
expiry gauge as its /metrics shows it."""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from service.auth import EXTENSION as AUTH_EXTENSION


def set_clock(app: Flask, moment: str) -> None:
    """The app's key ring reads `moment` (ISO 8601) as now."""
    app.extensions[AUTH_EXTENSION].clock = lambda: datetime.fromisoformat(moment)


def at(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp()


def expiry_gauges(app: Flask) -> dict[str, float]:
    """`scantune_api_key_expiry_timestamp_seconds` by key name, as the app's /metrics says."""
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return {
        sample.labels["key"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "scantune_api_key_expiry_timestamp_seconds"
        for sample in family.samples
    }
