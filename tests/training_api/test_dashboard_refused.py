"""The DICOM page's controls for what a destination refused, in a real browser (Chromium,
Playwright) over the dashboard's stack (`test_dashboard.run_stack`), its node sending to an
HL7 receiver (hl7apy's MLLP server, `tests.dicom_node.test_hl7.Receiver`) that answers as each
test scripts it, and classifying with a really trained model:

- a recall's withdrawal the RIS refused (commit reject, CR): an operator sees no "Send again";
  an admin's makes it due at once, the node sends it again, and once the RIS is mended it is
  done;
- a series whose result the RIS refused: an operator sees no "Send now"; an admin's sends the
  result again and the series is done;
- "Send again" keeps a keyboard user's place: the page's refresh gives the focus back to it,
  not to the row's first button, and once pressed its row shows the node's answer at once,
  which a refresh asked for before the press does not draw over."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from service.registry import Registry
from service.storage import open_store
from tests.dicom_node.parts import make_study, wait_until
from tests.dicom_node.test_hl7 import Receiver
from tests.inference.conftest import Trained, publish
from tests.inference.conftest import trained as trained  # the fixture
from tests.training_api.test_dashboard import (
    ADMIN,
    OPERATOR,
    _api,
    axe,
    browser,
    focused,
    run_stack,
    sign_in,
    stow,
)

__all__ = ["browser", "trained"]  # the fixtures this module uses
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECALLED, RESENT = "chest-xray-recalled", "chest-xray-resent"  # CR series, DX series
HANDS = "hand-xray-recalled"  # series of the hand: a version of its own to recall
SLACK_S = 30.0


@pytest.fixture(scope="module")
def ris() -> Iterator[Receiver]:
    """The node's one destination; it accepts (AA) until a test scripts other answers."""
    receiver = Receiver(["AA"])
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, trained: Trained, ris: Receiver
) -> Iterator[dict[str, str]]:
    """The dashboard's stack, its node sending every result to `ris` and keeping each a day
    for a recall to withdraw; series of the hand go to HANDS, other CR series to RECALLED, DX
    series to RESENT (the trained model, published as each, `staging` its version 1)."""
    node = {
        "SCANTUNE_DICOM_DESTINATIONS": json.dumps(
            [{"hl7": {"host": "127.0.0.1", "port": ris.port}}]
        ),
        "SCANTUNE_DICOM_RECALL_KEEP_H": "24",
        "SCANTUNE_DICOM_ROUTES": json.dumps(
            [
                {"model": HANDS, "alias": "staging", "body_part": "HAND"},
                {"model": RECALLED, "alias": "staging", "modality": "CR"},
                {"model": RESENT, "alias": "staging", "modality": "DX"},
            ]
        ),
    }
    for running in run_stack(tmp_path_factory.mktemp("dashboard-refused"), node):
        registry = Registry(open_store(Path(running["artifacts"]).as_uri()))
        for name in (RECALLED, RESENT, HANDS):
            publish(registry, trained, 1, name)
            registry.set_alias(name, "staging", 1, actor="test")
        yield running


def answering(ris: Receiver, *codes: str) -> None:
    """The RIS answers `codes` in turn from now on, the last one thereafter."""
    with ris.lock:
        ris.answers = list(codes)


def answered(ris: Receiver) -> list[str]:
    with ris.lock:
        return [r.answered for r in ris.received]


def series_of(node: str, study_uid: str, state: str) -> dict[str, Any] | None:
    found = _api(node, f"/v1/series?study_instance_uid={study_uid}")["items"]
    return found[0] if found and found[0]["state"] == state else None


def recall_at_the_node(node: str, model: str, reason: str) -> int:
    """Recall the model's version 1 through the node's API (an admin key); its id."""
    made = requests.post(
        f"{node}/v1/recalls", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10,
        json={"model": model, "version": 1, "reason": reason},
    )  # fmt: skip
    assert made.status_code == 202, made.text
    return int(made.json()["id"])


def next_try(node: str, recall_id: int) -> datetime | None:
    """When the node's worker next sends the recall's one withdrawal, as its API says: none
    unless it is pending."""
    [withdrawal] = _api(node, f"/v1/recalls/{recall_id}")["open"]
    due = withdrawal["next_attempt_at"]
    return None if due is None else datetime.fromisoformat(due)


def test_an_admin_sends_a_recall_s_refused_withdrawal_again(
    stack: dict[str, str], browser: Any, ris: Receiver
) -> None:
    url, node = stack["url"], stack["node"]
    answering(ris, "AA", "CR")  # takes the result, refuses its withdrawal (a message type)
    before = len(answered(ris))
    study = make_study(1)
    stow(node, study)
    wait_until(lambda: series_of(node, study[0].StudyInstanceUID, "done"), 60, "delivered")
    recall_id = recall_at_the_node(node, RECALLED, "misses pneumothorax")

    def recall(tries: int | None = None, **withdrawals: int) -> dict[str, Any] | None:
        """The node's view of the recall once its withdrawals are counted so (and the one
        open was tried `tries` times)."""
        view = _api(node, f"/v1/recalls/{recall_id}")
        counts, listed = view["withdrawals"], view["open"]
        if any(counts[state] != n for state, n in withdrawals.items()):
            return None
        return view if tries is None or [w["attempts"] for w in listed] == [tries] else None

    view = wait_until(lambda: recall(rejected=1), SLACK_S, "the withdrawal refused")
    [refused] = view["open"]
    assert (refused["state"], refused["attempts"]) == ("rejected", 1)
    assert refused["last_error"] == "HL7 ACK CR" and answered(ris)[before:] == ["AA", "CR"]
    row = f"[data-testid=recall-row][data-id='{recall_id}']"

    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", OPERATOR)  # series:read: sees it refused, may not resend
    page.locator(row).wait_for()
    assert "rejected 1" in page.locator(row).get_by_test_id("recall-to-act-on").inner_text()
    assert page.get_by_test_id("recall-retry").count() == 0
    refused_by_api = requests.post(
        f"{url}/ui/api/recalls/{recall_id}/retry", timeout=10,
        headers={"Authorization": f"Bearer {OPERATOR}"},
    )  # fmt: skip
    assert refused_by_api.status_code == 403
    context.close()

    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", ADMIN)
    page.locator(row).get_by_test_id("recall-show").click()
    withdrawal = page.locator("[data-testid=withdrawal-row][data-state=rejected]")
    withdrawal.wait_for()
    assert "(1 try)" in withdrawal.inner_text() and "HL7 ACK CR" in withdrawal.inner_text()
    again = page.locator(row).get_by_role(
        "button", name=f"Send the refused withdrawals of recall {recall_id} again", exact=True
    )
    assert again.inner_text() == "Send again"
    axe(page)

    # sent again while the RIS still refuses it: due at the click, tried at once, refused again
    assert next_try(node, recall_id) is None  # refused: not tried until sent again
    drawn = again.element_handle()
    with ris.lock:  # the RIS holds its answer to the try: the withdrawal stays pending
        clicked = datetime.now(UTC)
        again.click()
        due = wait_until(lambda: next_try(node, recall_id), SLACK_S, "the withdrawal due")
        assert clicked <= due <= datetime.now(UTC), (clicked, due)  # not after a back-off
        page.wait_for_function("button => !button.isConnected", arg=drawn)  # drawn again
        trying = page.locator("[data-testid=withdrawal-row][data-state=pending]")
        assert f"next try {due:%H:%M:%S} UTC" in trying.inner_text(timeout=10_000)
    wait_until(lambda: recall(rejected=1, tries=2), SLACK_S, "the withdrawal tried again")
    assert answered(ris)[before:] == ["AA", "CR", "CR"]
    assert page.locator("#notice").is_hidden()  # the node took it
    focused_in(page, "recall-row", recall_id)  # a keyboard user keeps their place
    assert page.evaluate("document.activeElement.dataset.testid") == "recall-show"
    listed = page.locator(f"#recall-open-{recall_id}")
    listed.get_by_text("(2 tries)").wait_for(timeout=10_000)  # the page's refresh
    again.wait_for()  # refused again: Send again is back
    axe(page)

    # the RIS mended: sent again, withdrawn
    answering(ris, "AA")
    again.click()
    view = wait_until(lambda: recall(rejected=0, done=1), SLACK_S, "the withdrawal done")
    assert view["open"] == [] and answered(ris)[before:] == ["AA", "CR", "CR", "AA"]
    listed.get_by_text("No withdrawal left open").wait_for(timeout=10_000)
    assert page.locator(row).get_by_test_id("recall-done").inner_text() == "1"
    assert page.locator(row).get_by_test_id("recall-to-act-on").inner_text() == "0"
    assert page.get_by_test_id("recall-retry").count() == 0
    axe(page)
    context.close()


def test_an_admin_sends_a_result_the_ris_refused_again(
    stack: dict[str, str], browser: Any, ris: Receiver
) -> None:
    url, node = stack["url"], stack["node"]
    answering(ris, "CR")  # refuses the result
    before = len(answered(ris))
    study = make_study(1, modality="DX")
    stow(node, study)
    series = wait_until(
        lambda: series_of(node, study[0].StudyInstanceUID, "rejected"), 60, "the result refused"
    )
    [delivery] = series["deliveries"]
    assert (delivery["state"], delivery["attempts"], delivery["last_error"]) == (
        "rejected", 1, "HL7 ACK CR",
    )  # fmt: skip
    row = f"[data-testid=series-row][data-id='{series['id']}']"

    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", OPERATOR)  # series:read: sees it refused, may not resend
    page.locator(f"{row}[data-state=rejected]").wait_for()
    assert "not retried" in page.locator(row).get_by_test_id("delivery").inner_text()
    assert page.get_by_test_id("send-now").count() == 0
    context.close()

    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", ADMIN)
    page.locator(f"{row}[data-state=rejected]").wait_for()
    send = page.locator(row).get_by_role(
        "button", name=f"Send series {series['id']} now", exact=True
    )
    assert send.inner_text() == "Send now"
    axe(page)
    answering(ris, "AA")  # the RIS mended
    send.click()
    focused_in(page, "series-row", series["id"])  # the button went with the redraw
    done = wait_until(
        lambda: series_of(node, study[0].StudyInstanceUID, "done"), SLACK_S, "sent again"
    )
    [delivery] = done["deliveries"]
    assert (delivery["state"], delivery["last_error"]) == ("done", None)
    assert answered(ris)[before:] == ["CR", "AA"]
    page.locator(f"{row}[data-state=done]").wait_for(timeout=10_000)  # drawn again
    assert page.locator("#notice").is_hidden()
    assert page.locator(row).get_by_test_id("send-now").count() == 0
    axe(page)
    context.close()


def test_send_again_keeps_the_focus_and_its_row_shows_the_node_s_answer_at_once(
    stack: dict[str, str], browser: Any, ris: Receiver
) -> None:
    url, node = stack["url"], stack["node"]
    answering(ris, "AA", "CR")  # takes the result, refuses its withdrawal
    study = make_study(1)
    study[0].BodyPartExamined = "HAND"  # classified by HANDS
    stow(node, study)
    wait_until(lambda: series_of(node, study[0].StudyInstanceUID, "done"), 60, "delivered")
    recall_id = recall_at_the_node(node, HANDS, "reads every hand film as normal")

    def refused() -> bool:
        return bool(_api(node, f"/v1/recalls/{recall_id}")["withdrawals"]["rejected"])

    wait_until(refused, SLACK_S, "the withdrawal refused")
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", ADMIN)
    row = page.locator(f"[data-testid=recall-row][data-id='{recall_id}']")
    again = row.get_by_role(
        "button", name=f"Send the refused withdrawals of recall {recall_id} again", exact=True
    )
    again.focus()  # a keyboard user on the row's second button, after Show
    with page.expect_request("**/ui/api/purges?*", timeout=10_000):  # the recalls refreshed
        pass
    assert focused(page, "recall-row") == (str(recall_id), "recall-retry")

    # A refresh asks for the recalls before the key is pressed, and is answered after the
    # node's answer to it: that older list is not drawn over the row the answer drew.
    answering(ris, "AA")  # the RIS mended
    held: list[tuple[Any, Any]] = []

    def hold_a_refresh(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append((route, route.fetch()))  # the list as the node has it now

    page.route("**/ui/api/recalls?limit=50", hold_a_refresh)
    wait_until(lambda: page.wait_for_timeout(100) or held, 15, "the next refresh of the recalls")
    page.keyboard.press("Enter")
    wait_until(lambda: not refused(), SLACK_S, "sent again")
    row.get_by_test_id("recall-retry").wait_for(state="detached", timeout=10_000)
    route, before = held[0]
    with page.expect_request("**/ui/api/purges?*", timeout=10_000):  # that refresh ended
        route.fulfill(response=before)
    page.unroute("**/ui/api/recalls?limit=50")
    assert row.get_by_test_id("recall-retry").count() == 0, "an older list drawn over the row"
    assert row.get_by_test_id("recall-to-act-on").inner_text() == "0"
    assert focused(page, "recall-row") == (
        str(recall_id),
        "recall-show",
    )  # its button went: the row's first
    wait_until(
        lambda: _api(node, f"/v1/recalls/{recall_id}")["withdrawals"]["done"] == 1, SLACK_S,
        "withdrawn",
    )  # fmt: skip
    row.locator("[data-testid=recall-done]:text-is('1')").wait_for(timeout=10_000)
    assert focused(page, "recall-row") == (str(recall_id), "recall-show")  # kept over the refreshes
    axe(page)
    context.close()


def focused_in(page: Any, row: str, row_id: int) -> None:
    """Wait until the focus is in the table's row `row_id` (after a control of it posted)."""
    page.wait_for_function(
        "([row, id]) => document.activeElement.closest(`[data-testid=${row}]`)?.dataset.id === id",
        arg=[row, str(row_id)],
        timeout=10_000,
    )
