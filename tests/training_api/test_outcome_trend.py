"""A version's outcomes period by period: each period's shares against a textbook Wilson
interval, weeks from Monday and calendar months (across a year's end), the default window,
the figures below the card's named in the period they fell, who sees whose reports."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from models.card import ModelAccess
from tests.training_api.conftest import publish_version
from tests.training_api.test_outcomes import CLAIMED, CUT, card, date_reports, outcome, said, url
from tests.training_api.test_security import as_, make_app

__all__ = ["make_app"]


@pytest.fixture
def shared(make_app: Callable[..., Flask], training_env: Path) -> tuple[Flask, Any, Any]:
    """A version of ci's with a threshold and intervals, the app, and two clients' keys that
    report on it: radiology's PACS and a gateway (another site)."""
    publish_version(training_env / "artifacts", "chest-xray", 1, access=ModelAccess(owner="ci"),
                    threshold=CUT, estimates=CLAIMED)  # fmt: skip
    app = make_app()
    pacs, gateway = as_(app, "radiology-pacs"), as_(app, "gateway")
    return app, pacs, gateway


def test_a_periods_shares_have_wilson_intervals_at_the_cards_threshold() -> None:
    from models.outcomes import period_figures

    truth = ["pneumonia"] * 10 + ["normal"] * 4
    scores = [0.9] * 7 + [0.1] * 3 + [0.2, 0.3, 0.35, 0.8]  # 7 of 10 found; 3 of 4 cleared
    figures = period_figures(card(threshold=CUT, estimates=CLAIMED), truth, map(said, scores))
    assert figures["reports"] == 14
    sensitivity = figures["sensitivity"]
    assert sensitivity["value"] == pytest.approx(0.7) and sensitivity["images"] == 10
    # 7 of 10: Wilson's 95% interval as tabulated (Newcombe 1998): 0.3968 to 0.8922
    assert sensitivity["low"] == pytest.approx(0.3968, abs=1e-4)
    assert sensitivity["high"] == pytest.approx(0.8922, abs=1e-4)
    assert figures["specificity"]["value"] == pytest.approx(0.75)
    assert figures["accuracy"]["value"] == pytest.approx(10 / 14)
    assert figures["below_validation"] == ["sensitivity"]  # 0.892 < the card's 0.90
    assert "auc" not in figures
    normal_only = period_figures(card(threshold=CUT), ["normal"], [said(0.1)])
    assert normal_only["sensitivity"] is None and normal_only["specificity"]["value"] == 1.0
    three = card(classes=("a", "b", "c"))
    argmax = period_figures(three, ["a", "c"], [{"a": 0.5, "b": 0.3, "c": 0.2}] * 2)
    assert argmax["accuracy"]["value"] == 0.5 and argmax["sensitivity"] is None


def test_periods_start_on_mondays_and_first_days_across_a_years_end() -> None:
    from models.outcomes import back, period_start

    sunday = datetime(2027, 1, 3, 23, 59, tzinfo=UTC)
    assert period_start(sunday, "week") == datetime(2026, 12, 28, tzinfo=UTC)  # a Monday
    assert period_start(sunday, "month") == datetime(2027, 1, 1, tzinfo=UTC)
    assert back(datetime(2027, 1, 1, tzinfo=UTC), "month", 1) == datetime(2026, 12, 1, tzinfo=UTC)
    assert back(datetime(2026, 12, 1, tzinfo=UTC), "month", -1) == datetime(2027, 1, 1, tzinfo=UTC)
    assert back(datetime(2027, 1, 1, tzinfo=UTC), "month", 25) == datetime(2024, 12, 1, tzinfo=UTC)
    assert back(datetime(2026, 12, 28, tzinfo=UTC), "week", 2) == datetime(2026, 12, 14, tzinfo=UTC)


def test_a_period_the_window_cuts_is_partial_and_a_whole_one_is_not() -> None:
    from models.outcomes import mark_partial

    def week(day: int) -> dict[str, Any]:
        start = datetime(2026, 11, day, tzinfo=UTC)
        return {"start": start.isoformat(), "end": (start + timedelta(weeks=1)).isoformat()}

    weeks = [week(2), week(9), week(16)]
    now = datetime(2026, 11, 30, tzinfo=UTC)  # the last week (16 to 23) ended: whole
    marked = mark_partial(weeks, datetime(2026, 11, 2, tzinfo=UTC), None, now)
    assert [p["partial"] for p in marked] == [False, False, False]
    since_inside = datetime(2026, 11, 3, 12, tzinfo=UTC)
    until_inside = datetime(2026, 11, 20, tzinfo=UTC)
    marked = mark_partial(weeks, since_inside, until_inside, now)
    assert [p["partial"] for p in marked] == [True, False, True]
    thursday = datetime(2026, 11, 19, tzinfo=UTC)  # in the last week
    under_way = mark_partial(weeks, datetime(2026, 11, 2, tzinfo=UTC), None, thursday)
    assert [p["partial"] for p in under_way] == [False, False, True]
    assert "partial" not in weeks[0]  # the kept periods are not changed


def test_the_trend_shows_the_week_a_version_began_to_miss_findings(
    shared: tuple[Flask, Any, Any],
) -> None:
    app, pacs, gateway = shared
    good = [outcome(f"G{i}", "pneumonia" if i % 2 else "normal", 0.9 if i % 2 else 0.1)
            for i in range(20)]  # fmt: skip
    missed = [outcome(f"M{i}", "pneumonia", 0.2) for i in range(12)]  # a new scanner
    old = [outcome("OLD", "pneumonia", 0.9)]
    for who, reports in ((pacs, good), (pacs, missed), (pacs, old), (gateway, missed[:3])):
        assert who.post(url(), json={"outcomes": reports}).status_code == 200
    this_monday = _monday()
    when = {
        "G": this_monday - timedelta(weeks=2, hours=-30),
        "M": this_monday + timedelta(hours=1),
        "OLD": this_monday - timedelta(weeks=40),
    }
    date_reports(app, when)

    trend = pacs.get(url() + "/trend")
    assert trend.status_code == 200, trend.get_json()
    body = trend.get_json()
    assert (body["bucket"], body["reported_by"], body["decision"], body["threshold"]) == (
        "week",
        "radiology",
        "threshold",
        0.4,
    )
    assert body["since"] == (this_monday - timedelta(weeks=25)).isoformat()  # half a year
    first, last = body["periods"]  # the week between had no report; OLD is before the window
    assert first["start"] == (this_monday - timedelta(weeks=2)).isoformat()
    assert first["end"] == (this_monday - timedelta(weeks=1)).isoformat()
    assert (first["reports"], first["accuracy"]["value"], first["below_validation"]) == (
        20,
        1.0,
        [],
    )
    assert last["start"] == this_monday.isoformat()
    assert (last["reports"], last["sensitivity"]["value"], last["specificity"]) == (12, 0.0, None)
    assert last["below_validation"] == ["sensitivity"]
    assert set(body["validation"]) == {"sensitivity", "specificity"}  # the card's, to draw beside
    assert (first["partial"], last["partial"]) == (False, True)  # this week is under way
    cut = (this_monday - timedelta(weeks=2, days=-1)).isoformat().replace("+00:00", "Z")
    cut_in = pacs.get(f"{url()}/trend?since={cut}").get_json()["periods"]
    assert [(p["reports"], p["partial"]) for p in cut_in] == [(20, True), (12, True)]

    every = as_(app, "ops").get(url() + "/trend?bucket=month&since=2020-01-01").get_json()
    assert every["reported_by"] == "every client"
    assert sum(p["reports"] for p in every["periods"]) == 20 + 12 + 1 + 3
    assert all(p["start"].endswith("-01T00:00:00+00:00") for p in every["periods"])
    own = gateway.get(url() + "/trend").get_json()
    assert [p["reports"] for p in own["periods"]] == [3]

    for bad, loc in [
        ("bucket=day", "query/bucket"),
        ("since=yesterday", "query/since"),
        ("since=2026-02-01&until=2026-01-01", "query"),
        ("by=week", "query/by"),
    ]:
        refused = pacs.get(f"{url()}/trend?{bad}")
        assert refused.status_code == 422, (bad, refused.get_json())
        assert any(e["loc"].startswith(loc) for e in refused.get_json()["errors"]), bad
    assert pacs.get(url(version=9) + "/trend").status_code == 404


def _monday() -> datetime:
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return now - timedelta(days=now.weekday())


def test_the_owner_sees_each_site_apart_and_a_site_only_its_own(
    shared: tuple[Flask, Any, Any],
) -> None:
    app, pacs, gateway = shared
    right = [outcome(f"R{i}", "pneumonia", 0.9) for i in range(8)]
    missed = [outcome(f"M{i}", "pneumonia", 0.1) for i in range(5)]  # the gateway's site
    assert pacs.post(url(), json={"outcomes": right}).status_code == 200
    assert gateway.post(url(), json={"outcomes": missed}).status_code == 200

    sites = as_(app, "ci-reader").get(url() + "/clients")  # the version's owner
    assert sites.status_code == 200, sites.get_json()
    body = sites.get_json()
    assert [(c["client"], c["reports"]) for c in body["clients"]] == [
        ("radiology", 8), ("gateway", 5)
    ]  # fmt: skip
    radiology, gateway_site = body["clients"]
    assert radiology["sensitivity"]["value"] == 1.0 and radiology["below_validation"] == []
    assert gateway_site["sensitivity"]["value"] == 0.0
    assert gateway_site["below_validation"] == ["sensitivity"]
    assert set(body["validation"]) == {"sensitivity", "specificity"}
    assert as_(app, "ops").get(url() + "/clients").status_code == 200  # an admin
    refused = pacs.get(url() + "/clients")
    assert refused.status_code == 403 and "owner or an admin" in refused.get_json()["detail"]

    # one site's figures and trend: the owner may ask for any, a site for its own only
    owner = as_(app, "ci-reader")
    one = owner.get(url() + "?client=gateway").get_json()
    assert (one["reported_by"], one["reports"]) == ("gateway", 5)
    week = owner.get(url() + "/trend?client=radiology").get_json()
    assert week["reported_by"] == "radiology" and week["periods"][0]["reports"] == 8
    assert pacs.get(url() + "?client=radiology").get_json()["reports"] == 8  # its own
    other = pacs.get(url() + "?client=gateway")
    assert other.status_code == 403 and "another client's reports" in other.get_json()["detail"]
    assert pacs.get(url() + "/trend?client=gateway").status_code == 403
    assert owner.get(url() + "/clients?client=gateway").status_code == 422  # all or none
