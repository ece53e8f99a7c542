"""The Jobs page's promotion fields in a real browser (Chromium, Playwright) over the
dashboard's stack (`test_dashboard.stack`): a job submitted through the form with an alias to
promote to and a minimum validation AUC carries that gate at the service, the API's error for
a bad alias shows next to its field, and the job is cancelled from its row; a minimum
validation AUC with no alias, which would gate nothing, is refused by the form itself, by the
alias field, and nothing is sent; a running job's Cancel keeps the focus over the list's
refresh, and pressed, ends the job cancelled. And what every page's header and the audit page
do: "Forget key" leaves nothing of the key in the tab (its storage, its fields, its
requests); a sign-in that fails, however, leaves the key in no field and says why (a wrong
key, or a service that could not check it); and "Older records" appends the audit trail's next
pages, filtered as the first, none twice, keeping the focus on the rows when it goes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.training_api.test_dashboard import (
    ADMIN,
    _api,
    axe,
    browser,
    focused,
    playwright,
    sign_in,
    stack,
)

__all__ = ["browser", "stack"]  # the fixtures this module uses
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def small_job(page: Any, model: str, dataset: Path) -> None:
    """Fill in the jobs form's model, data, size and epochs: a job that trains in seconds."""
    page.fill("#f-model_name", model)
    page.fill("#f-dataset-uri", str(dataset))
    page.fill("#f-image_size", "28")
    page.fill("#f-epochs", "1")


def test_a_job_submitted_with_a_promotion_gate_carries_it_to_the_service(
    stack: dict[str, str], browser: Any, pneumonia_small_npz: Path
) -> None:
    url, model = stack["url"], "chest-xray-gated"
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/", ADMIN)
    small_job(page, model, pneumonia_small_npz)
    page.fill("#f-promote-alias", "Production")  # not an alias: the API's error, by its field
    page.fill("#f-promote-min", "0.99")
    page.get_by_role("button", name="Submit job", exact=True).click()
    page.wait_for_selector("#e-promote-alias:not(:empty)")
    assert page.get_attribute("#f-promote-alias", "aria-invalid") == "true"
    assert _api(url, "/v1/training-jobs")["items"] == []  # nothing queued
    axe(page)

    page.fill("#f-promote-alias", "production")
    page.get_by_role("button", name="Submit job", exact=True).click()
    row = page.locator(f"[data-testid=job-row]:has-text('{model}')")
    row.wait_for()
    assert page.get_attribute("#f-promote-alias", "aria-invalid") is None  # the error cleared
    job_id = row.get_attribute("data-job-id")
    promote = _api(url, f"/v1/training-jobs/{job_id}")["spec"]["promote"]
    assert (promote["alias"], promote["min"]) == ("production", {"val_auc": 0.99})

    row.get_by_role("button", name=f"Cancel job {job_id}", exact=True).click()
    page.locator(f"[data-testid=job-row][data-job-id='{job_id}'][data-status=cancelled]").wait_for()
    assert _api(url, f"/v1/training-jobs/{job_id}")["status"] == "cancelled"
    axe(page)
    context.close()


def test_a_minimum_val_auc_without_an_alias_is_refused_and_nothing_sent(
    stack: dict[str, str], browser: Any, pneumonia_small_npz: Path
) -> None:
    url, model = stack["url"], "chest-xray-ungated"
    context = browser.new_context()
    page = context.new_page()
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    sign_in(page, f"{url}/ui/", ADMIN)
    small_job(page, model, pneumonia_small_npz)
    page.fill("#f-promote-min", "0.9")  # a gate with no alias: it would gate nothing
    error = page.locator("#e-promote-alias")
    for button in ("Submit job", "Check only"):
        page.get_by_role("button", name=button, exact=True).click()
        page.wait_for_selector("#e-promote-alias:not(:empty)")
        assert "Name the alias to promote to" in error.inner_text()
        assert page.get_attribute("#f-promote-alias", "aria-invalid") == "true"
        assert page.evaluate("document.activeElement.id") == "f-promote-alias"
        assert page.get_by_test_id("form-error").is_hidden()
    axe(page)

    page.fill("#f-promote-alias", "production")  # now the service is asked (a dry run)
    page.get_by_role("button", name="Check only", exact=True).click()
    page.wait_for_selector("#notice:has-text('nothing was queued')")
    assert error.inner_text() == ""
    assert page.get_attribute("#f-promote-alias", "aria-invalid") is None
    assert [u.removeprefix(url) for u in posted] == ["/v1/training-jobs?dry_run=true"]
    assert all(j["spec"]["model_name"] != model for j in _api(url, "/v1/training-jobs")["items"])
    context.close()


def _nothing_of_the_key(page: Any, key: str) -> None:
    """The key in none of the tab's storage, cookies, fields or markup."""
    stored = page.evaluate("[JSON.stringify(sessionStorage), JSON.stringify(localStorage)]")
    assert all(key not in s for s in stored), stored
    assert page.context.cookies() == []
    fields = page.eval_on_selector_all("input, textarea", "all => all.map(f => f.value)")
    assert all(key not in f for f in fields)
    assert key not in page.content()


def test_forget_key_leaves_nothing_of_the_key_in_the_tab(
    stack: dict[str, str], browser: Any
) -> None:
    url = stack["url"]
    refused = requests.get(f"{url}/v1/audit", headers={"Authorization": "Bearer x"}, timeout=10)
    assert refused.status_code == 401  # a record on the trail, for the key to see
    context = browser.new_context()
    page = context.new_page()
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    sign_in(page, f"{url}/ui/", ADMIN)
    page.goto(f"{url}/ui/audit")  # another page of the tab: the key goes with it
    page.get_by_test_id("audit-row").first.wait_for()
    assert page.evaluate("sessionStorage.getItem('scantune.apiKey')") == ADMIN
    assert (f"{url}/v1/audit?limit=50", f"Bearer {ADMIN}") in sent  # what is watched is seen
    page.get_by_test_id("api-key").fill(ADMIN)  # typed again, not used: forgotten all the same

    sent.clear()
    page.get_by_role("button", name="Forget key", exact=True).click()
    page.wait_for_selector("#notice:has-text('Type your API key')")  # asked to sign in again
    assert page.inner_text("#who") == "" and page.is_hidden("#forget-key")
    assert page.get_by_test_id("audit-row").count() == 0  # nothing the key saw stays shown
    _nothing_of_the_key(page, ADMIN)
    # The page's own API call, as any control would make it: sent with no key, refused.
    status = page.evaluate(
        """async () => {
          const { api } = await import("/ui/static/common.js");
          try { await api("/ui/api/whoami"); return 200; } catch (err) { return err.status; }
        }"""
    )
    assert status == 401
    assert any(u == f"{url}/ui/api/whoami" for u, _ in sent)
    page.reload()  # and after a reload, and back on the page before
    page.wait_for_selector("#notice:has-text('Type your API key')")
    page.go_back()
    page.wait_for_selector("#notice:has-text('Type your API key')")
    assert page.url == f"{url}/ui/" and page.get_by_test_id("job-row").count() == 0
    _nothing_of_the_key(page, ADMIN)
    assert [u for u, auth in sent if auth] == []  # no request carried it after Forget
    axe(page)
    context.close()


def test_cancel_keeps_the_focus_over_the_refresh_and_ends_a_running_job(
    stack: dict[str, str], browser: Any, pneumonia_small_npz: Path
) -> None:
    url, model = stack["url"], "chest-xray-cancelled"
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/", ADMIN)
    small_job(page, model, pneumonia_small_npz)
    page.fill("#f-image_size", "128")  # a job that runs long enough to be cancelled running
    page.fill("#f-epochs", "30")
    page.get_by_role("button", name="Submit job", exact=True).click()
    row = page.locator(f"[data-testid=job-row]:has-text('{model}')")
    row.wait_for()
    job_id = row.get_attribute("data-job-id")
    running = page.locator(f"[data-testid=job-row][data-job-id='{job_id}'][data-status=running]")
    running.wait_for(timeout=60_000)
    cancel = running.get_by_role("button", name=f"Cancel job {job_id}", exact=True)
    cancel.focus()  # a keyboard user on the row's second control, after the job's link
    for _ in range(2):  # the list refreshed (every 2 s), drawn before the next is asked for
        with page.expect_request("**/v1/training-jobs?limit=50", timeout=10_000):
            pass
    assert focused(page, "job-row") == (job_id, "cancel-job")

    page.keyboard.press("Enter")
    page.locator(f"[data-testid=job-row][data-job-id='{job_id}'][data-status=cancelled]").wait_for(
        timeout=10_000
    )
    assert focused(page, "job-row") == (job_id, "job-link")  # its Cancel went: the row's first
    view = _api(url, f"/v1/training-jobs/{job_id}")
    assert view["status"] == "cancelled", view
    page.wait_for_timeout(3_000)  # its runner stopped: the job stays cancelled
    assert _api(url, f"/v1/training-jobs/{job_id}")["status"] == "cancelled"
    assert page.get_by_test_id("cancel-job").count() == 0
    axe(page)
    context.close()


def _whoami_answers(page: Any, status: int) -> None:
    """The page's sign-in (`GET /ui/api/whoami`) answered with `status`, or failing (0)."""

    def answer(route: Any) -> None:
        if not status:
            route.abort()  # the fetch fails: nothing answers
            return
        problem = {"title": "Service Unavailable", "status": status, "detail": "down for now"}
        route.fulfill(
            status=status, content_type="application/problem+json", body=json.dumps(problem)
        )

    page.unroute("**/ui/api/whoami")
    page.route("**/ui/api/whoami", answer)


def test_a_sign_in_that_fails_leaves_the_key_in_no_field_and_says_why(
    stack: dict[str, str], browser: Any
) -> None:
    url = stack["url"]
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{url}/ui/")
    notice = page.locator("#notice")
    use_key = page.get_by_role("button", name="Use key", exact=True)
    tried = [
        (503, ADMIN, "could not be checked: the service is unavailable (it answered HTTP 503)"),
        (0, ADMIN, "could not be checked: the service could not be reached"),
        (None, "not-the-key-0123456789", "That API key is not valid; type another."),
    ]
    for status, key, said in tried:
        if status is None:
            page.unroute("**/ui/api/whoami")  # the service itself: the key is wrong
        else:
            _whoami_answers(page, status)
        page.get_by_test_id("api-key").fill(key)
        use_key.click()
        playwright.expect(notice).to_contain_text(said, timeout=10_000)
        assert ("Try again" in notice.inner_text()) == (status is not None)
        _nothing_of_the_key(page, key)  # in no field, nor kept: it was not taken
        assert page.inner_text("#who") == "" and page.is_hidden("#forget-key")
    axe(page)

    sign_in(page, f"{url}/ui/", ADMIN)
    assert page.input_value("#api-key") == ""
    # Signed in, then the service down a moment: the next page says so and keeps the key,
    # which the page after uses.
    _whoami_answers(page, 503)
    page.goto(f"{url}/ui/models")
    playwright.expect(notice).to_contain_text("could not be checked", timeout=10_000)
    assert page.evaluate("sessionStorage.getItem('scantune.apiKey')") == ADMIN
    page.unroute("**/ui/api/whoami")
    page.reload()
    page.wait_for_selector("#who:has-text('signed in as admin')")
    context.close()


def _audit_rows(page: Any) -> list[tuple[str, ...]]:
    return [
        tuple(cells)
        for cells in page.eval_on_selector_all(
            "#audit tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
        )
    ]


def _as_shown(r: dict[str, Any]) -> tuple[str, ...]:
    """An audit record as a row of the page shows it (its first six cells)."""
    at = r["at"][:19].replace("T", " ")
    request = r["request_id"] or "\N{EN DASH}"
    return (at, r["client"], r["action"], r["target"], r["outcome"], request)


def test_older_records_page_back_through_the_filtered_audit_trail(
    stack: dict[str, str], browser: Any
) -> None:
    url = stack["url"]
    for _ in range(110):  # refused keys, each on the trail: three pages of 50 with the filter
        refused = requests.get(
            f"{url}/v1/training-jobs", headers={"Authorization": "Bearer not-a-key"}, timeout=10
        )
        assert refused.status_code == 401
    pages: list[list[tuple[str, ...]]] = []
    cursor = ""
    while cursor is not None:
        answer = _api(url, f"/v1/audit?limit=50&action=key_refused{cursor}")
        pages.append([_as_shown(r) for r in answer["items"]])
        cursor = answer["next_cursor"] and f"&cursor={answer['next_cursor']}"
    assert len(pages) >= 3 and all(len(p) == 50 for p in pages[:-1])
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/audit", ADMIN)
    page.get_by_test_id("audit-row").first.wait_for()
    page.select_option("#a-action", "key_refused")
    page.get_by_role("button", name="Filter", exact=True).click()
    older = page.locator("#audit-older")
    page.locator("#audit tbody tr[data-action=key_refused]").nth(49).wait_for()
    assert [r[:6] for r in _audit_rows(page)] == pages[0]

    shown = 50
    for number, expected in enumerate(pages[1:-1], start=2):  # more after: Older stays, focused
        older.click()
        page.locator("#audit tbody tr").nth(shown + len(expected) - 1).wait_for()
        shown += len(expected)
        assert [r[:6] for r in _audit_rows(page)] == [r for p in pages[:number] for r in p]
        assert older.is_visible() and page.evaluate("document.activeElement.id") == "audit-older"
    older.dblclick()  # the last page, clicked twice: appended once, and Older goes
    page.locator("#audit tbody tr").nth(shown + len(pages[-1]) - 1).wait_for()
    page.wait_for_timeout(500)  # a second copy would be in by now
    assert [r[:6] for r in _audit_rows(page)] == [r for p in pages for r in p]
    assert older.is_hidden()
    focused = page.evaluate(  # on the first row the last page appended, not lost to the page
        "[...document.querySelectorAll('#audit tbody tr')]"
        ".indexOf(document.activeElement.closest('tr'))"
    )
    assert focused == shown
    axe(page)
    context.close()
