"""The Jobs page's promotion fields in a real browser (Chromium, Playwright) over the
dashboard's stack (`test_dashboard.stack`): a job submitted through the form with an alias to
promote to and a minimum validation AUC carries that gate at the service, the API's error for
a bad alias shows next to its field, and the job is cancelled from its row; a minimum
validation AUC with no alias, which would gate nothing, is refused by the form itself, by the
alias field, and nothing is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.training_api.test_dashboard import ADMIN, _api, axe, browser, sign_in, stack

__all__ = ["browser", "stack"]  # the fixtures this module uses
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_job_submitted_with_a_promotion_gate_carries_it_to_the_service(
    stack: dict[str, str], browser: Any, pneumonia_small_npz: Path
) -> None:
    url, model = stack["url"], "chest-xray-gated"
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/", ADMIN)
    page.fill("#f-model_name", model)
    page.fill("#f-dataset-uri", str(pneumonia_small_npz))
    page.fill("#f-image_size", "28")
    page.fill("#f-epochs", "1")
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
    page.fill("#f-model_name", model)
    page.fill("#f-dataset-uri", str(pneumonia_small_npz))
    page.fill("#f-image_size", "28")
    page.fill("#f-epochs", "1")
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
