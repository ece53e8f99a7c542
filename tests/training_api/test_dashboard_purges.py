"""The DICOM page's purge block in a real browser (Chromium, Playwright) over the dashboard
stack of `test_dashboard`: a purge made with "Block it" shows its study blocked and counts the
instances sent again, an operator sees no Release, and an admin releases the block through
the shared confirm step, after which the study comes in again; a purge made with "Block it"
unticked blocks nothing: the study sent again comes in."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.dicom_node.parts import make_study, wait_until
from tests.training_api.test_dashboard import (
    ADMIN,
    OPERATOR,
    _api,
    axe,
    browser,
    sign_in,
    stack,
    stow,
)

__all__ = ["browser", "stack"]  # the fixtures this module uses
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_dicom_page_shows_a_purge_s_block_and_an_admin_releases_it_once_confirmed(
    stack: dict[str, str], browser: Any
) -> None:
    url, node = stack["url"], stack["node"]
    study = make_study(2)
    study_uid = study[0].StudyInstanceUID
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", ADMIN)
    page.get_by_test_id("purge-form").wait_for()
    assert page.is_checked("#pg-block")  # blocking is the default
    page.fill("#pg-study", study_uid)
    page.fill("#pg-reason", "the patient declined AI processing")
    page.get_by_role("button", name="Purge…", exact=True).click()
    assert "dropped, and it is not fetched, until the purge is released" in (
        page.get_by_test_id("purge-confirm").inner_text()
    )
    page.get_by_role("button", name="Purge the study", exact=True).click()
    page.wait_for_selector("[data-testid=purge-said]:has-text('recorded')")
    purge_id = page.get_by_test_id("purge-said").inner_text().split()[1]
    row = page.locator(f"[data-testid=purge-row][data-id='{purge_id}']")
    assert row.get_attribute("data-blocked") == "true"
    assert row.get_by_test_id("purge-block").inner_text().startswith("blocked")

    stow(node, study)  # sent again: acknowledged, dropped, counted
    assert _api(node, f"/v1/series?study_instance_uid={study_uid}")["items"] == []
    page.wait_for_selector(  # the page's refresh shows the count
        f"[data-testid=purge-row][data-id='{purge_id}'] [data-testid=purge-block]"
        ":has-text('2 instances sent again dropped')", timeout=15_000,
    )  # fmt: skip
    axe(page)

    row.get_by_test_id("purge-release").click()
    form = page.get_by_test_id("release-form")
    assert f"Purge {purge_id} (" in page.get_by_test_id("release-what").inner_text()
    assert page.evaluate("document.activeElement.id") == "rl-reason"
    page.fill("#rl-reason", "purged in error: the consent was on file")
    page.get_by_role("button", name="Release…", exact=True).click()
    confirm = page.get_by_test_id("release-confirm")
    assert "come in and are classified and delivered as a new arrival" in confirm.inner_text()
    assert page.evaluate("document.activeElement.id") == "release-yes"
    axe(page)
    page.get_by_role("button", name="Cancel", exact=True).click()  # nothing is sent
    assert confirm.is_hidden() and _api(node, f"/v1/purges/{purge_id}")["blocked"] is True
    page.get_by_role("button", name="Release…", exact=True).click()
    page.get_by_role("button", name="Release the block", exact=True).click()
    page.wait_for_selector("[data-testid=release-said]:has-text('released')")
    assert form.is_hidden()
    released = page.locator(f"[data-testid=purge-row][data-id='{purge_id}'][data-blocked=false]")
    released.wait_for()
    shown = released.get_by_test_id("purge-block").inner_text()
    assert shown.startswith("released") and "purged in error" in shown and "admin" in shown
    assert released.get_by_test_id("purge-release").count() == 0
    view = _api(node, f"/v1/purges/{purge_id}")
    assert (view["blocked"], view["released_by"]) == (False, "admin")
    axe(page)
    context.close()

    stow(node, study)  # let in again: a new arrival
    wait_until(
        lambda: _api(node, f"/v1/series?study_instance_uid={study_uid}")["items"], 15,
        "the study received again",
    )  # fmt: skip

    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", OPERATOR)  # series:read: sees the blocks, no Release
    page.get_by_test_id("purge-row").first.wait_for()
    assert page.get_by_test_id("purge-release").count() == 0
    context.close()


def test_a_purge_made_with_block_it_unticked_lets_the_study_in_again(
    stack: dict[str, str], browser: Any
) -> None:
    url, node = stack["url"], stack["node"]
    study = make_study(2)
    study_uid = study[0].StudyInstanceUID
    stow(node, study)
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", ADMIN)
    page.wait_for_selector(f"[data-testid=series-row]:has-text('{study_uid}')")
    page.fill("#pg-study", study_uid)
    page.fill("#pg-reason", "sent by mistake: another site's study")
    page.uncheck("#pg-block")
    page.get_by_role("button", name="Purge…", exact=True).click()
    assert "Not blocked: instances of it sent again come in as a new arrival." in (
        page.get_by_test_id("purge-confirm").inner_text()
    )
    page.get_by_role("button", name="Purge the study", exact=True).click()
    page.wait_for_selector("[data-testid=purge-said]:has-text('recorded')")
    purge_id = page.get_by_test_id("purge-said").inner_text().split()[1]
    row = page.locator(f"[data-testid=purge-row][data-id='{purge_id}'][data-state=done]")
    row.wait_for(timeout=15_000)  # applied: what came before it is gone
    assert row.get_attribute("data-blocked") == "false"
    assert row.get_by_test_id("purge-block").inner_text().startswith("none")
    assert row.get_by_test_id("purge-release").count() == 0  # nothing to release
    view = _api(node, f"/v1/purges/{purge_id}")
    assert (view["state"], view["blocked"], view["released_at"]) == ("done", False, None)
    assert view["series"] == 1
    assert _api(node, f"/v1/series?study_instance_uid={study_uid}")["items"] == []
    released = requests.post(
        f"{node}/v1/purges/{purge_id}/release", json={"reason": "x"}, timeout=10,
        headers={"Authorization": f"Bearer {ADMIN}"},
    )  # fmt: skip
    assert released.status_code == 409, released.text  # it blocks nothing
    axe(page)
    context.close()

    stow(node, study)  # sent again: not dropped, a new arrival
    wait_until(
        lambda: _api(node, f"/v1/series?study_instance_uid={study_uid}")["items"], 15,
        "the study received again",
    )  # fmt: skip
    assert _api(node, f"/v1/purges/{purge_id}")["dropped_after"]["count"] == 0
