"""The DICOM page's purge block in a real browser (Chromium, Playwright) over the dashboard
stack of `test_dashboard`: a purge made with "Block it" shows its study blocked and counts the
instances sent again, an operator sees no Release, and an admin releases the block through
the shared confirm step, after which the study comes in again; a purge made with "Block it"
unticked blocks nothing: the study sent again comes in; the release form's Close sends
nothing and gives the focus back to the Release that opened it. And the page's series list
pages back: "Older series" appends the node's next pages, none twice, even clicked twice or
while the list is drawn again, and hands the focus to the rows it appended when it goes; a
study is fetched from the PACS by its accession number."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
import requests
from pydicom.uid import generate_uid

from tests.dicom_node.parts import make_study, store_in_pacs, wait_until
from tests.training_api.test_dashboard import (
    ADMIN,
    OPERATOR,
    _api,
    axe,
    browser,
    focused,
    sign_in,
    stack,
    stow,
)

__all__ = ["browser", "stack"]  # the fixtures this module uses
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def ask_purge(page: Any, study_uid: str, reason: str, *, block: bool) -> str:
    """Fill in the purge form and ask; the confirm step's question."""
    page.fill("#pg-study", study_uid)
    page.fill("#pg-reason", reason)
    page.set_checked("#pg-block", block)
    page.get_by_role("button", name="Purge…", exact=True).click()
    text: str = page.get_by_test_id("purge-confirm").inner_text()
    return text


def confirm_purge(page: Any) -> str:
    """Say yes to the purge asked; its id, as the page says it was recorded."""
    page.get_by_role("button", name="Purge the study", exact=True).click()
    page.wait_for_selector("[data-testid=purge-said]:has-text('recorded')")
    said: str = page.get_by_test_id("purge-said").inner_text()
    return said.split()[1]


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
    asked = ask_purge(page, study_uid, "the patient declined AI processing", block=True)
    assert "dropped, and it is not fetched, until the purge is released" in asked
    purge_id = confirm_purge(page)
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
    asked = ask_purge(page, study_uid, "sent by mistake: another site's study", block=False)
    assert "Not blocked: instances of it sent again come in as a new arrival." in asked
    purge_id = confirm_purge(page)
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


def test_the_release_form_s_close_sends_nothing_and_gives_the_focus_back(
    stack: dict[str, str], browser: Any
) -> None:
    url, node = stack["url"], stack["node"]
    made = requests.post(
        f"{node}/v1/purges", timeout=10, headers={"Authorization": f"Bearer {ADMIN}"},
        json={"study_instance_uid": generate_uid(), "reason": "sent by mistake", "block": True},
    )  # fmt: skip
    assert made.status_code == 202, made.text
    purge_id = str(made.json()["id"])
    context = browser.new_context()
    page = context.new_page()
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    sign_in(page, f"{url}/ui/dicom", ADMIN)
    row = page.locator(f"[data-testid=purge-row][data-id='{purge_id}']")
    row.get_by_test_id("purge-release").click()
    form, confirm = page.get_by_test_id("release-form"), page.get_by_test_id("release-confirm")
    page.fill("#rl-reason", "not yet: the consent is being checked")
    page.get_by_role("button", name="Close", exact=True).click()
    assert form.is_hidden()
    assert focused(page, "purge-row") == (purge_id, "purge-release")
    with page.expect_request("**/ui/api/purges?*"):  # the list is drawn again: the focus stays
        pass
    page.wait_for_timeout(300)  # its answer drawn
    assert focused(page, "purge-row") == (purge_id, "purge-release")
    axe(page)

    row.get_by_test_id("purge-release").click()  # opened again: empty, asked once more, closed
    assert page.input_value("#rl-reason") == ""
    page.fill("#rl-reason", "not yet")
    page.get_by_role("button", name="Release…", exact=True).click()
    confirm.wait_for()
    page.get_by_role("button", name="Close", exact=True).click()
    assert form.is_hidden() and confirm.is_hidden()
    assert focused(page, "purge-row") == (purge_id, "purge-release")
    assert posted == []  # nothing sent: the purge still blocks its study
    view = _api(node, f"/v1/purges/{purge_id}")
    assert (view["blocked"], view["released_at"]) == (True, None)
    context.close()


def _series_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#series tbody [data-testid=series-row]", "rows => rows.map(r => r.dataset.id)"
    )


def _wait_for_rows(page: Any, count: int) -> None:
    """Until the series table has `count` rows (the page's CSP allows no string evaluated)."""
    wait_until(lambda: page.locator("#series tbody tr").count() == count, 15, f"{count} rows")


def _node_pages(node: str, study_uid: str) -> list[list[str]]:
    """The node's series of the study, page by page, as the page asks for them (50 a page)."""
    pages: list[list[str]] = []
    cursor = ""
    while True:
        page = _api(node, f"/v1/series?study_instance_uid={study_uid}&limit=50{cursor}")
        pages.append([str(s["id"]) for s in page["items"]])
        if not page["next_cursor"]:
            return pages
        cursor = f"&cursor={page['next_cursor']}"


def test_older_series_appends_the_next_page_once_and_keeps_the_focus(
    stack: dict[str, str], browser: Any
) -> None:
    url, node = stack["url"], stack["node"]
    study = make_study(55, series=55)  # 55 series: a second page of 5
    study_uid = study[0].StudyInstanceUID
    stow(node, study)
    wait_until(
        lambda: len(_api(node, f"/v1/series?study_instance_uid={study_uid}&limit=200")["items"])
        == 55, 15, "the 55 series received",
    )  # fmt: skip
    first, second = _node_pages(node, study_uid)
    assert (len(first), len(second)) == (50, 5)
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom?study_instance_uid={study_uid}", ADMIN)
    older = page.locator("#series-older")
    older.wait_for()
    assert _series_ids(page) == first

    older.click()
    _wait_for_rows(page, 55)
    assert _series_ids(page) == first + second  # after the first page's, none twice
    assert older.is_hidden()  # no more
    assert focused(page, "series-row")[0] == second[0]  # not lost to the page
    with page.expect_request("**/ui/api/series?*"):  # drawn again, both pages: the focus stays
        pass
    page.wait_for_timeout(300)
    assert _series_ids(page) == first + second
    assert focused(page, "series-row")[0] == second[0]
    axe(page)

    # Clicked twice while the list is drawn again from its first page: each click waits its
    # turn, so the next page is appended once, after the first page's rows.
    page.get_by_role("button", name="Filter", exact=True).click()
    _wait_for_rows(page, 50)
    held: list[Any] = []

    def hold_a_redraw(route: Any) -> None:
        if "cursor=" not in route.request.url and not held:
            held.append(route)
        else:
            route.continue_()

    page.route("**/ui/api/series?*", hold_a_redraw)
    wait_until(lambda: page.wait_for_timeout(100) or held, 15, "the next redraw of the series")
    older.dblclick()
    page.wait_for_timeout(700)  # the clicks' pages would be back by now, were they asked for
    shown = _series_ids(page)
    assert len(shown) == len(set(shown)), "a page appended twice"
    held[0].continue_()
    _wait_for_rows(page, 55)
    page.wait_for_timeout(700)  # nothing more appended
    assert _series_ids(page) == first + second
    assert older.is_hidden()
    page.unroute("**/ui/api/series?*")
    context.close()


def test_a_study_is_fetched_from_the_pacs_by_its_accession_number(
    stack: dict[str, str], browser: Any
) -> None:
    url, node = stack["url"], stack["node"]
    accession = f"ACC-{uuid4().hex[:8]}"
    study = make_study(2)
    for instance in study:
        instance.AccessionNumber = accession
    study_uid = study[0].StudyInstanceUID
    store_in_pacs(stack["pacs"], study)
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", ADMIN)
    page.get_by_test_id("retrieve-form").wait_for()
    page.fill("#r-source", "pacs")
    page.fill("#r-accession", accession)  # no study UID: the PACS finds it by its number
    page.get_by_role("button", name="Fetch", exact=True).click()
    page.wait_for_selector("[data-testid=retrieved]:has-text('pacs sent 2 instances.')")
    fetched = page.locator("[data-testid=fetch-row][data-state=done]").first
    assert study_uid in fetched.inner_text()
    assert fetched.get_by_test_id("fetch-sent").inner_text() == "2"
    assert page.input_value("#s-study") == study_uid  # the list shows that study
    page.locator(f"[data-testid=series-row]:has-text('{study_uid}')").wait_for()
    [series] = _api(node, f"/v1/series?study_instance_uid={study_uid}")["items"]
    assert series["instances"] == 2
    axe(page)
    context.close()
