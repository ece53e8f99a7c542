"""The dashboard in a real browser: Debian's Chromium driven by Playwright against the training
and inference services and the DICOM node under gunicorn, with a real tiny training job.
axe-core checks every page; screenshots of each page go to docs/screenshots/."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from models.card import ModelAccess, ModelNotes
from service.auth import hash_key
from service.dicom_node.mllp import exchange
from service.hospital.hl7v2 import parse_ack
from service.scopes import SCOPE_NAMES
from tests.conftest import DATA, REPO, data_roots, free_port, wait_for_port
from tests.dicom_node.parts import PACS_AE, Orthanc, make_study, store_in_pacs
from tests.dicom_node.test_app import encoded, multipart
from tests.hospital.test_hl7_orders import orm
from tests.hospital.test_hl7_reports import oru
from tests.training_api.conftest import publish_version

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
# The README's screenshots are refreshed only when asked (SCANTUNE_UPDATE_SCREENSHOTS=1), so
# a test run leaves the checkout as it was; otherwise they go to a temporary folder.
SHOTS = (
    REPO / "docs" / "screenshots"
    if os.environ.get("SCANTUNE_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "scantune-screenshots"
)
ADMIN = "dash-admin-key-0123456789"
READER = "dash-reader-key-0123456789"
OPERATOR = "dash-operator-key-0123456789"  # sees the DICOM node's series, may not recall
MODEL = "chest-xray-dash"
JOB_TIMEOUT_S = 420

if shutil.which(CHROMIUM) is None:
    pytest.skip(f"Chromium is not installed at {CHROMIUM}", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def keys_setting() -> str:
    keys = [
        (ADMIN, "admin", list(SCOPE_NAMES)),
        (READER, "reader", ["read", "predict"]),
        (OPERATOR, "operator", ["series:read"]),
    ]
    return json.dumps([{"name": n, "sha256": hash_key(k), "scopes": s} for k, n, s in keys])


def start(
    app: str, env: dict[str, str], log: Path, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
            "--workers", "1", "--threads", "4", "--timeout", "120", app,
        ],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for_port(port, timeout=60, proc=proc)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    yield from run_stack(tmp_path_factory.mktemp("dashboard"))


def run_stack(tmp: Path, node_settings: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Inference, the DICOM node (classifying with the dashboard's model through it, fetching
    studies from Orthanc), then training (forwarding Try a scan and the DICOM page), on one
    local artifact store in `tmp`; `node_settings` (environment variables) replace the node's
    own, for a module whose tests need other destinations or routes."""
    base = {
        **os.environ,
        "SCANTUNE_ARTIFACT_URI": (tmp / "artifacts").as_uri(),
        "SCANTUNE_API_KEYS": keys_setting(),
        # each worker re-reads who may use a version at every request: a change made
        # through one worker shows on the next page, whichever worker serves it
        "SCANTUNE_ACCESS_RECHECK_S": "0",
        # inference signs what it answers; training takes only outcomes signed so (Try's Report)
        "SCANTUNE_PREDICTION_SIGNING_KEY": "prediction-signing-key-of-the-dashboard-test",
    }
    base.pop("SCANTUNE_AUTH_DISABLED", None)
    (tmp / "artifacts").mkdir()
    inference_env = {**base, "PROMETHEUS_MULTIPROC_DIR": str(tmp / "m-inf")}
    (tmp / "m-inf").mkdir()
    inference, inference_url = start("service.inference:create_app()", inference_env, tmp / "i.log")
    (tmp / "m-node").mkdir()
    down = free_port()  # nothing listens there
    node_dicom_port, hl7_port, training_port = free_port(), free_port(), free_port()
    pacs = Orthanc(tmp / "orthanc", node_dicom_port).start()
    node_env = {
        **base,
        "SCANTUNE_DATABASE_URL": f"sqlite:///{tmp / 'node.db'}",
        "SCANTUNE_DICOM_SPOOL_DIR": str(tmp / "spool"),
        "SCANTUNE_DICOM_PORT": str(node_dicom_port),
        "SCANTUNE_DICOM_SOURCES": json.dumps(
            [{"name": "pacs", "ae_title": PACS_AE, "host": "127.0.0.1", "port": pacs.dicom_port}]
        ),
        "SCANTUNE_DICOM_ALLOWED_CALLERS": json.dumps([{"ae_title": PACS_AE, "host": "127.0.0.1"}]),
        "SCANTUNE_DICOM_HL7_PORT": str(hl7_port),  # the RIS's orders
        "SCANTUNE_DICOM_HL7_ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
        "SCANTUNE_DICOM_ORDER_SOURCE": "pacs",
        # the RIS's reports of the dashboard model's exams confirm its classes ("0", "1")
        "SCANTUNE_DICOM_OUTCOME_CODES": json.dumps({MODEL: {"1": ["RID5350"], "0": ["RID13173"]}}),
        "SCANTUNE_TRAINING_URL": f"http://127.0.0.1:{training_port}",
        "SCANTUNE_DICOM_TRAINING_API_KEY": ADMIN,
        "SCANTUNE_INFERENCE_URL": inference_url,
        "SCANTUNE_DICOM_INFERENCE_API_KEY": ADMIN,
        "SCANTUNE_DICOM_ROUTES": json.dumps([{"model": MODEL, "alias": "staging"}]),
        # An HL7 receiver that is down: results wait, retried after a long back-off.
        "SCANTUNE_DICOM_DESTINATIONS": json.dumps([{"hl7": {"host": "127.0.0.1", "port": down}}]),
        "SCANTUNE_DICOM_SERIES_QUIET_S": "0.5",
        "SCANTUNE_DICOM_RETRY_FIRST_S": "300",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "m-node"),
        **(node_settings or {}),
    }
    try:
        node, node_url = start("service.dicom_node.app:create_app()", node_env, tmp / "n.log")
    except Exception:
        stop(inference)
        pacs.stop()
        raise
    training_env = {
        **base,
        "SCANTUNE_DATABASE_URL": f"sqlite:///{tmp / 'jobs.db'}",
        "SCANTUNE_WORK_DIR": str(tmp / "work"),
        "SCANTUNE_INFERENCE_URL": inference_url,
        "SCANTUNE_DICOM_NODE_URL": node_url,
        "SCANTUNE_LOCAL_DATA_ROOTS": data_roots(tmp),  # pytest's folders: none by default
        "SCANTUNE_SUPERVISOR_INTERVAL_S": "0.5",
        "SCANTUNE_HEARTBEAT_INTERVAL_S": "1",
        "SCANTUNE_OUTCOMES_SIGNED_ONLY": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "m-train"),
    }
    (tmp / "m-train").mkdir()
    try:
        training, url = start(
            "service.training_api:create_app()", training_env, tmp / "t.log", training_port
        )
    except Exception:
        stop(node)
        stop(inference)
        pacs.stop()
        raise
    try:
        yield {
            "url": url,
            "inference": inference_url,
            "node": node_url,
            "pacs": pacs.url,
            "hl7_port": str(hl7_port),
            "ris_port": str(down),
            "artifacts": str(tmp / "artifacts"),
        }
    finally:
        stop(training)
        stop(node)
        stop(inference)
        pacs.stop()
        print((tmp / "t.log").read_text(errors="replace")[-4000:])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def axe(page: Any) -> None:
    """No serious or critical accessibility violation on the page as it stands."""
    script = os.environ.get(
        "SCANTUNE_TEST_AXE_JS",
        "/root/.cache/scantune/axe-core-4.10.3/node_modules/axe-core/axe.min.js",
    )
    if not Path(script).is_file():
        pytest.fail(f"axe-core not found at {script} (set SCANTUNE_TEST_AXE_JS)")
    # Injected through the DevTools protocol, which the page's CSP does not govern.
    page.evaluate(Path(script).read_text())
    result = page.evaluate("async () => await axe.run(document)")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"{page.url}: " + "; ".join(bad)


def shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1100, "height": 900})
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def stow(node: str, study: list[Any]) -> None:
    """Send a study to the DICOM node by STOW-RS, as a PACS would (an admin key)."""
    body, kind = multipart(*(encoded(ds) for ds in study))
    answer = requests.post(
        f"{node}/dicomweb/studies", data=body, timeout=30,
        headers={"Content-Type": kind, "Authorization": f"Bearer {ADMIN}"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text


def focused(page: Any, row_testid: str) -> tuple[str | None, str | None]:
    """The row (its data-id) the focus is in, and the focused control's test id."""
    return tuple(page.evaluate(
        """(testid) => {
          const at = document.activeElement;
          const row = at.closest(`[data-testid=${testid}]`);
          return [row?.dataset.id ?? null, at.dataset.testid ?? null];
        }""", row_testid,
    ))  # fmt: skip


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url)
    page.get_by_test_id("api-key").fill(key)
    page.get_by_role("button", name="Use key").click()
    page.wait_for_selector("#who:has-text('signed in as')")


class _AcceptingRis(socketserver.BaseRequestHandler):
    """An HL7 receiver that accepts (AA) every message the node sends it over MLLP."""

    def handle(self) -> None:
        data = b""
        while True:
            while b"\x1c\r" not in data:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                data += chunk
            message, _, data = data.partition(b"\x1c\r")
            segments = message.lstrip(b"\x0b").decode(errors="replace").split("\r")
            control = next(s for s in segments if s.startswith("MSH")).split("|")[9]
            ack = f"MSH|^~\\&|RIS||NODE||20240101000000||ACK^R01^ACK|A{control[:19]}|P|2.5.1\r"
            self.request.sendall(b"\x0b" + f"{ack}MSA|AA|{control}\r".encode() + b"\x1c\r")


def ris_up(port: int) -> socketserver.ThreadingTCPServer:
    """The RIS the node's results wait for, up at last on its port (shut it down after)."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), _AcceptingRis)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def recall_from_the_page(page: Any, model: str, version: int, reason: str) -> None:
    """Fill in "Recall a version's results" and confirm it."""
    page.fill("#rc-model", model)
    page.fill("#rc-version", str(version))
    page.fill("#rc-reason", reason)
    page.get_by_role("button", name="Recall…", exact=True).click()
    page.get_by_test_id("recall-confirm").wait_for()
    page.get_by_role("button", name="Recall and withdraw", exact=True).click()


def test_dashboard_end_to_end(
    stack: dict[str, str], browser: Any, pneumonia_small_npz: Path, tmp_path: Path
) -> None:
    url = stack["url"]
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{url}/ui/")
    assert "script-src 'self'" in page.evaluate(
        "async () => (await fetch('/ui/')).headers.get('content-security-policy')"
    )
    axe(page)
    sign_in(page, f"{url}/ui/", ADMIN)
    assert page.evaluate("document.cookie") == ""
    assert ADMIN not in page.url

    # a bad job: the API's field error shows next to the field
    page.fill("#f-dataset-uri", str(pneumonia_small_npz))
    page.fill("#f-model_name", MODEL)
    page.fill("#f-image_size", "28")
    page.fill("#f-epochs", "0")
    page.fill("#f-notes-limitations", "not tested on children\n" + "x" * 301)
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_selector("#e-epochs:not(:empty)")
    assert "greater than or equal to 1" in page.inner_text("#e-epochs")
    assert page.get_attribute("#f-epochs", "aria-invalid") == "true"
    assert "at most 300 characters" in page.inner_text("#e-notes-limitations")  # its 2nd line
    axe(page)

    # a good one, through the form; at 128 px an epoch outlasts the page's 2 s refresh, so
    # the curve is seen growing (a fast machine ran an epoch at 64 px in under 2 s)
    page.fill("#f-image_size", "128")
    page.fill("#f-epochs", "3")
    page.fill("#f-notes-purpose", "a second read of chest films")
    page.fill("#f-notes-limitations", " not tested on children\n\nportable films are few ")
    page.get_by_role("button", name="Check only", exact=True).click()  # the API's dry run
    said = page.locator("#notice:has-text('would accept this job')")
    said.wait_for()
    accepted = f"for {MODEL} (a new model, yours once published); nothing was queued"
    assert accepted in said.inner_text()
    assert page.get_attribute("#f-epochs", "aria-invalid") is None  # the last error cleared
    assert _api(url, "/v1/training-jobs")["items"] == []
    page.get_by_role("button", name="Submit job").click()
    row = page.get_by_test_id("job-row").first
    row.wait_for()
    assert MODEL in row.inner_text() and "efficientnet_lite0" in row.inner_text()
    job_id = row.get_attribute("data-job-id")
    shoot(page, "jobs")

    # a second one, private to the key's client, waits queued behind it (one job at a time
    # here): cancel it from its row
    page.fill("#f-model_name", f"{MODEL}-spare")
    page.check("#f-access-private")
    page.get_by_role("button", name="Submit job").click()
    spare = page.locator(f"[data-testid=job-row]:has-text('{MODEL}-spare')")
    spare.wait_for()
    spare_id = spare.get_attribute("data-job-id")
    assert _api(url, f"/v1/training-jobs/{spare_id}")["spec"]["access"] == {
        "private": True,
        "clients": [],
    }
    spare.get_by_role("button", name="Cancel").click()
    page.wait_for_selector(
        f"[data-testid=job-row][data-status=cancelled]:has-text('{MODEL}-spare')"
    )

    # the job page: the learning curve grows until the job succeeds
    page.goto(f"{url}/ui/jobs/{job_id}")
    seen: list[int] = []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        status = _text(page, "[data-testid=job-status]")
        if status.startswith(("succeeded", "failed", "cancelled")):
            break
        assert time.monotonic() < deadline, f"job still {status}"
        points = int(page.get_attribute("[data-testid=learning-curve]", "data-points") or 0)
        if not seen or seen[-1] != points:
            seen.append(points)
        time.sleep(0.25)
    status = _text(page, "[data-testid=job-status]")
    assert status.startswith("succeeded"), page.inner_text("#log")
    owner = _api(url, f"/v1/training-jobs/{job_id}")["client"]
    assert _text(page, "[data-testid=job-client]") == owner
    page.wait_for_selector("[data-testid=confusion-matrix] table")
    final = int(page.get_attribute("[data-testid=learning-curve]", "data-points") or 0)
    assert final == 3
    assert any(0 < n < final for n in seen) and seen == sorted(seen), seen  # it grew
    assert page.get_attribute("[data-testid=learning-curve]", "data-best-epoch")

    # the confusion matrix counts every validation image once
    counts = [int(c) for c in page.eval_on_selector_all(
        "[data-testid=confusion-matrix] td", "cells => cells.map(c => c.dataset.count)"
    )]  # fmt: skip
    card = _api(url, f"/v1/models/{MODEL}/versions/1")["card"]
    assert sum(counts) == sum(card["dataset"]["class_counts"]["val"].values())
    assert "threshold" in page.inner_text("[data-testid=confusion-matrix]")
    assert "sensitivity" in page.inner_text("[data-testid=threshold]")
    assert "Split scan by scan" in page.inner_text("[data-testid=split]")  # npz: no patients
    page.wait_for_selector("#roc canvas")
    page.wait_for_selector("#calibration canvas")
    assert page.inner_text("[data-testid=model-card]").strip().startswith("{")
    page.wait_for_selector("[data-testid=in-service]:has-text('No outcome reported yet')")
    axe(page)
    shoot(page, "job")

    # models: move an alias
    page.goto(f"{url}/ui/models")
    form = page.get_by_test_id("alias-form").first
    form.wait_for()
    form.get_by_test_id("alias-name").fill("staging")
    form.get_by_role("button", name="Move").click()
    page.wait_for_selector("[data-testid=aliases]:has-text('staging')")
    assert _api(url, f"/v1/models/{MODEL}/aliases/staging")["version"] == 1

    # version 1 classifies scans on the inference service; their read diagnoses are reported
    reads = []
    for name in ("normal_0", "normal_1", "pneumonia_0", "pneumonia_1"):
        with (DATA / "images" / f"{name}.png").open("rb") as scan:
            said = requests.post(
                f"{stack['inference']}/v1/models/{MODEL}:predict?version=1",
                files={"file": ("scan.png", scan, "image/png")},
                headers={"Authorization": f"Bearer {READER}"}, timeout=30,
            )  # fmt: skip
        assert said.status_code == 200, said.text
        answered = said.json()["predictions"][0]
        truth = card["classes"][name.startswith("pneumonia")]  # PneumoniaMNIST: 0 normal
        reads.append({"reference": f"read-{name}", "label": truth,
                      "probabilities": answered["probabilities"],
                      "signature": answered["signature"]})  # fmt: skip
    reported = requests.post(
        f"{url}/v1/models/{MODEL}/versions/1/outcomes", json={"outcomes": reads},
        headers={"Authorization": f"Bearer {READER}"}, timeout=10,
    )  # fmt: skip
    assert reported.status_code == 200, reported.text

    # two versions side by side (a stand-in second version: one real training is enough)
    publish_version(Path(stack["artifacts"]), MODEL, 2, val_auc=0.5)
    page.reload()
    model = page.locator(f"[data-testid=model][data-model='{MODEL}']")
    model.get_by_test_id("compare-pick").nth(0).check()
    model.get_by_test_id("compare-pick").nth(1).check()
    compare = page.get_by_test_id("compare")
    compare.locator("table").wait_for()
    # rows are newest first, so v2 was picked first
    assert compare.locator("thead th").all_inner_texts() == ["metric", "v2", "v1", "difference"]
    auc_row = compare.locator("tr:has(th:text-is('val_auc'))").inner_text().split()
    assert auc_row[1] == "0.5000" and float(auc_row[3]) == pytest.approx(float(auc_row[2]) - 0.5)
    # and how each does on the outcomes reported for it: v1's four reads, none for v2
    counted = compare.locator("[data-testid=reported]:has(th:text-is('reported outcomes'))")
    counted.wait_for()
    assert counted.locator("td").all_inner_texts()[:2] == ["0 from every client",
                                                           "4 from every client"]  # fmt: skip
    figures = _api(url, f"/v1/models/{MODEL}/versions/1/outcomes")
    accuracy = compare.locator("[data-testid=reported]:has(th:text-is('reported accuracy'))")
    assert (
        accuracy.locator("td")
        .nth(1)
        .inner_text()
        .startswith(f"{figures['accuracy']['value']:.3f} (")
    )
    axe(page)
    shoot(page, "models")

    # version 1's facts, for the people who decide whether it is used
    model.get_by_test_id("facts-link").last.click()
    page.wait_for_selector("[data-testid=facts-caveats] li")
    assert f"{MODEL} version 1" in page.inner_text("h1")
    assert "staging" in page.inner_text("[data-testid=facts-status]")
    estimates = page.inner_text("[data-testid=facts-estimates]")
    auc = card["estimates"]["auc"]
    assert f"{auc['value']:.3f} (95% interval {auc['low']:.3f} to {auc['high']:.3f})" in estimates
    assert "4 reported outcomes" in page.inner_text("[data-testid=facts-service]")
    site = page.get_by_test_id("client-row")  # the admin key sees each client apart
    site.first.wait_for()
    assert site.count() == 1 and site.first.locator("td").first.inner_text() == "4"
    series_link = page.get_by_test_id("facts-series").get_attribute("href")
    assert series_link == f"/ui/dicom?model={MODEL}&version=1"
    trend = page.get_by_test_id("trend-row")  # all four reported this week, then this month
    trend.first.wait_for()
    assert trend.count() == 1 and trend.first.locator("td").first.inner_text() == "4"
    assert page.locator("[data-testid=trend-chart] canvas").count() == 1
    page.select_option("#trend-bucket", "month")
    page.wait_for_selector("[data-testid=trend] caption:has-text('by month')")
    assert trend.first.locator("th").inner_text().endswith("-01 (part)")  # under way
    caveats = page.inner_text("[data-testid=facts-caveats]")
    assert "named no patients" in caveats and "a clinician reads every scan" in caveats
    assert f"rest on {auc['images']} scans" in caveats  # a small validation split: wide
    notes = page.get_by_test_id("facts-notes")  # the team's words, from the form
    assert notes.locator("li").all_inner_texts() == [
        "not tested on children",
        "portable films are few",
    ]
    assert "a second read of chest films" in notes.inner_text()
    profile = card["input_profile"]  # the per-scan input check the job's card records
    flagged = f"flags {100 * profile['flagged_train']:.1f}% of them"
    assert flagged in page.inner_text("[data-testid=facts-data]")
    axe(page)
    shoot(page, "facts")

    # the audit trail: the alias move and the job, newest first, filtered by action
    page.goto(f"{url}/ui/audit")
    page.get_by_test_id("audit-row").first.wait_for()
    actions = page.eval_on_selector_all(
        "[data-testid=audit-row]", "rows => rows.map(r => r.dataset.action)"
    )
    assert actions[:2] == ["outcomes_reported", "alias_moved"], actions
    assert "job_submitted" in actions, actions
    assert f"model/{MODEL}" in page.get_by_test_id("audit-row").first.inner_text()
    axe(page)
    shoot(page, "audit")
    page.select_option("#a-action", "job_cancelled")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=audit-row]')]"
        ".every(r => r.dataset.action === 'job_cancelled')"
    )
    assert page.get_by_test_id("audit-row").count() == 1  # the spare job's cancellation

    # try a scan: prediction and heatmap, forwarded to the inference service
    page.goto(f"{url}/ui/try")
    page.wait_for_selector(f"#try-model option[value='{MODEL}']", state="attached")
    page.select_option("#try-version", "version=1")
    page.get_by_test_id("scan-input").set_input_files(str(DATA / "images" / "pneumonia_0.png"))
    page.get_by_role("button", name="Classify").click()
    page.get_by_test_id("prediction").locator("table").wait_for()
    text = page.inner_text("[data-testid=prediction]")
    assert all(c in text for c in card["classes"]) and "Predicted:" in text
    cam = page.get_attribute("#cam-image", "src") or ""
    assert cam.startswith("data:image/png;base64,")
    assert page.is_visible("[data-testid=heatmap]")
    checked = page.get_by_test_id("input-check")  # what the card's input profile says of it
    assert checked.get_attribute("data-typical") in ("true", "false")
    assert "limit" in checked.inner_text()
    # the diagnosis confirmed: reported as an outcome of version 1 (four were reported above)
    page.select_option("#outcome-label", card["classes"][1])
    page.get_by_role("button", name="Report", exact=True).click()
    said = "[data-testid=outcome-said]:has-text('Reported: version 1 has 5 reported outcomes')"
    page.wait_for_selector(said)
    page.select_option("#outcome-label", card["classes"][0])  # a second read corrects it
    page.get_by_role("button", name="Report", exact=True).click()
    page.wait_for_selector("[data-testid=outcome-said]:has-text('Corrected: version 1 has 5')")
    page.get_by_test_id("outcome-retract").click()  # the read itself withdrawn: no outcome
    page.wait_for_selector("[data-testid=outcome-said]:has-text('Withdrawn: version 1 has 4')")
    assert page.get_by_test_id("outcome-retract").is_hidden()
    page.get_by_role("button", name="Report", exact=True).click()  # and confirmed after all
    page.wait_for_selector("[data-testid=outcome-said]:has-text('Reported: version 1 has 5')")
    axe(page)
    shoot(page, "try")
    # a blank frame is answered all the same, and said to be unlike the training scans
    blank = tmp_path / "blank.png"
    Image.new("L", (256, 256)).save(blank)
    page.get_by_test_id("scan-input").set_input_files(str(blank))
    page.get_by_role("button", name="Classify").click()
    unlike = page.locator("[data-testid=input-check][data-typical=false]")
    unlike.wait_for()
    assert "unlike those the model was trained on" in unlike.inner_text()
    assert "Predicted:" in page.inner_text("[data-testid=predicted-label]")
    axe(page)
    # the job's page now shows its version in service beside its validation figures
    page.goto(f"{url}/ui/jobs/{job_id}")
    service = page.get_by_test_id("in-service")
    service.locator("text=5 reported outcomes from every client").wait_for()
    figures = _api(url, f"/v1/models/{MODEL}/versions/1/outcomes")
    accuracy = service.locator("tr:has(th:text-is('accuracy')) td").first.inner_text()
    assert accuracy.startswith(f"{figures['accuracy']['value']:.3f} (")
    axe(page)

    # the DICOM node: a study sent by STOW-RS is classified with the model (alias staging),
    # and its result waits for an HL7 receiver that is down; Send now tries it again at once
    study = make_study(2)
    stow(stack["node"], study)
    page.goto(f"{url}/ui/dicom")
    row = page.locator("[data-testid=series-row][data-state=delivering]")
    row.wait_for(timeout=90_000)  # the quiet period, classification, the page's refresh
    assert study[0].StudyInstanceUID in row.inner_text() and MODEL in row.inner_text()
    delivery = row.get_by_test_id("delivery")
    delivery.locator("text=last error: MLLP failed").wait_for()
    assert delivery.get_attribute("data-state") == "pending"
    assert "1 failed try" in delivery.inner_text()
    axe(page)
    shoot(page, "dicom")
    row.get_by_test_id("send-now").click()  # the back-off is 5 minutes: this is the retry
    page.wait_for_selector("[data-testid=delivery]:has-text('2 failed tries')", timeout=30_000)
    page.select_option("#s-state", "failed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_selector("#series:has-text('No series matches.')")

    # a study the PACS holds, fetched from the page: the list then shows that study's series
    prior = make_study(2)
    store_in_pacs(stack["pacs"], prior)
    page.fill("#r-source", "pacs")
    page.fill("#r-study", prior[0].StudyInstanceUID)
    with page.expect_request(lambda r: "/ui/api/retrievals/" in r.url):  # it asks how it goes
        page.get_by_role("button", name="Fetch", exact=True).click()
    page.wait_for_selector("[data-testid=retrieved]:has-text('pacs sent 2 instances.')")
    fetched = page.locator("[data-testid=series-row]")
    fetched.first.wait_for()
    assert fetched.count() == 1 and prior[0].StudyInstanceUID in fetched.inner_text()
    assert page.input_value("#s-study") == prior[0].StudyInstanceUID
    fetch = page.locator("[data-testid=fetch-row][data-state=done]")
    fetch.wait_for()  # the key's recent fetches, newest first
    assert fetch.count() == 1 and prior[0].StudyInstanceUID in fetch.inner_text()
    assert fetch.get_by_test_id("fetch-sent").inner_text() == "2"
    assert fetch.get_by_test_id("cancel-fetch").count() == 0  # nothing to stop once done
    # a large study fetched, then cancelled from the list: the PACS stops sending
    large = make_study(120, series=4)
    store_in_pacs(stack["pacs"], large)
    page.fill("#r-study", large[0].StudyInstanceUID)
    page.get_by_role("button", name="Fetch", exact=True).click()
    going = page.locator("[data-testid=fetch-row][data-state=running]")
    going.get_by_test_id("cancel-fetch").click()
    page.wait_for_selector("[data-testid=retrieved]:has-text('Cancelled: pacs sent')")
    stopped = page.locator("[data-testid=fetch-row][data-state=cancelled]")
    assert stopped.count() == 1 and large[0].StudyInstanceUID in stopped.inner_text()
    assert int(stopped.get_by_test_id("fetch-sent").inner_text()) < len(large)
    # the RIS orders an exam by its accession number: the page lists the order, then fetched
    ordered = make_study(1)
    ordered[0].AccessionNumber = "RIS-DASH"
    store_in_pacs(stack["pacs"], ordered)
    ack = exchange("127.0.0.1", int(stack["hl7_port"]), orm(obr18="RIS-DASH"), timeout_s=30)
    assert parse_ack(ack).code == "AA"
    page.locator("[data-testid=order-row][data-state=fetched]").wait_for(timeout=30_000)
    assert ordered[0].StudyInstanceUID in page.inner_text("[data-testid=orders]")
    # its scan classified, the node waits for the RIS's report; the signed read goes to training
    exam = "[data-testid=outcome-row]:has-text('RIS-DASH')"
    page.locator(f"{exam}[data-state=waiting]").wait_for(timeout=30_000)
    read = oru("F", ("CWE|RID5350^pneumonia^RADLEX",), "RIS-DASH")
    assert parse_ack(exchange("127.0.0.1", int(stack["hl7_port"]), read, timeout_s=30)).code == "AA"
    sent = page.locator(f"{exam}[data-state=sent]")
    sent.wait_for(timeout=30_000)
    assert f"{MODEL} v1" in sent.inner_text() and sent.locator("td").last.inner_text() == "1"
    # the RIS reports an exam whose study the PACS has not sent: it waits, listed
    early = oru("F", ("CWE|RID13173^normal^RADLEX",), "RIS-EARLY")
    assert (
        parse_ack(exchange("127.0.0.1", int(stack["hl7_port"]), early, timeout_s=30)).code == "AA"
    )
    held = page.locator("[data-testid=held-report-row]")
    held.first.wait_for(timeout=30_000)
    assert held.count() == 1 and "RIS-EARLY" in held.inner_text()
    assert held.locator("td").last.inner_text() == f"{MODEL}: 0"  # its classes are 0 and 1
    page.fill("#r-source", "archive")  # a source the node does not have: it says which it has
    page.get_by_role("button", name="Fetch", exact=True).click()
    page.wait_for_selector("#notice:has-text('the sources: pacs')")
    assert page.locator("[data-testid=fetch-row]").count() == 2  # a refused one is not kept

    # the version recalled: a fetched series fails; once it is back in service, "Fetch again"
    # fills the form in and the same instances are classified in a new work item
    def recall(withdrawn: bool) -> None:
        answer = requests.put(
            f"{url}/v1/models/{MODEL}/versions/1/withdrawal", timeout=10,
            json={"withdrawn": withdrawn, "reason": "a dashboard test's recall"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text

    recall(True)
    lost = make_study(1)
    store_in_pacs(stack["pacs"], lost)
    page.fill("#r-source", "pacs")
    page.fill("#r-study", lost[0].StudyInstanceUID)
    page.get_by_role("button", name="Fetch", exact=True).click()
    page.wait_for_selector("[data-testid=retrieved]:has-text('pacs sent 1 instance.')")
    failed = page.locator("[data-testid=series-row][data-state=failed]")
    failed.wait_for(timeout=60_000)  # the quiet period, the 410, the page's refresh
    assert "withdrawn" in failed.inner_text()
    assert page.get_by_test_id("fetch-again").count() == 1  # only the failed series has one
    recall(False)
    page.fill("#r-source", "")
    failed.get_by_test_id("fetch-again").click()
    assert page.input_value("#r-study") == lost[0].StudyInstanceUID
    assert page.input_value("#r-series") == lost[0].SeriesInstanceUID
    assert page.evaluate("document.activeElement.id") == "r-source"
    assert page.input_value("#r-source") == "pacs"  # the source that sent it, filled in
    assert "from pacs that sent it" in page.inner_text("[data-testid=retrieved]")
    page.get_by_role("button", name="Fetch", exact=True).click()
    page.wait_for_selector("[data-testid=retrieved]:has-text('pacs sent 1 instance.')")
    page.locator("[data-testid=series-row][data-state=delivering]").wait_for(timeout=60_000)
    assert page.locator("[data-testid=series-row]").count() == 2  # the failed one, then anew
    # the facts page's link: the series version 1 classified (what a recall needs), none of v2
    page.goto(f"{url}/ui/dicom?model={MODEL}&version=1")
    page.get_by_test_id("series-row").first.wait_for()
    models = page.locator("[data-testid=series-row] td:nth-child(4)").all_inner_texts()
    assert models and all(m.startswith(f"{MODEL} v1") for m in models), models
    assert page.locator("[data-testid=series-row][data-state=failed]").count() == 0  # unclassified
    assert page.input_value("#s-version") == "1"
    assert (page.input_value("#rc-model"), page.input_value("#rc-version")) == (MODEL, "1")
    page.fill("#s-version", "2")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_selector("#series:has-text('No series matches')")
    axe(page)

    # the RIS up at last: one series' result delivered (and deleted then: the node keeps no
    # result for a recall by default), then version 1 recalled from the page: that
    # withdrawal is not_kept, for a person to make; the other results are stopped unsent
    ris = ris_up(int(stack["ris_port"]))
    try:
        page.goto(f"{url}/ui/dicom?model={MODEL}&version=1")
        going = page.locator("[data-testid=series-row][data-state=delivering]").first
        series_id = going.get_attribute("data-id")
        going.get_by_test_id("send-now").click()
        done = page.locator(f"[data-testid=series-row][data-id='{series_id}'][data-state=done]")
        done.wait_for(timeout=30_000)
        recall_from_the_page(page, MODEL, 1, "misses pneumothorax on portable films")
        page.wait_for_selector(f"[data-testid=recalled]:has-text('{MODEL} v1')")
        row = page.locator(f"[data-testid=recall-row][data-state=applied]:has-text('{MODEL} v1')")
        row.wait_for(timeout=30_000)  # the worker applies it, the page's refresh shows it
    finally:
        ris.shutdown()
        ris.server_close()
    recall_id = row.get_attribute("data-id")
    node = requests.get(
        f"{stack['node']}/v1/recalls/{recall_id}", timeout=10,
        headers={"Authorization": f"Bearer {ADMIN}"},
    ).json()  # fmt: skip
    assert node["withdrawals"]["not_kept"] >= 1 and node["stopped"] >= 1, node
    cells = {t: row.get_by_test_id(t).inner_text() for t in ("recall-series", "recall-stopped")}
    assert cells == {"recall-series": str(node["series"]), "recall-stopped": str(node["stopped"])}
    to_act = row.get_by_test_id("recall-to-act-on").inner_text()
    assert to_act.startswith(str(node["withdrawals"]["not_kept"])) and "not_kept" in to_act
    assert "admin" in row.inner_text() and "misses pneumothorax" in row.inner_text()
    row.get_by_test_id("recall-show").click()
    kept_not = page.locator(
        f"[data-testid=withdrawal-row][data-state=not_kept]:has(th:text-is('{series_id}'))"
    )
    kept_not.wait_for()
    assert f"mllp://127.0.0.1:{stack['ris_port']}/" in kept_not.inner_text()  # the RIS
    shown = row.get_by_test_id("recall-show")  # drawn again, expanded
    assert shown.get_attribute("aria-expanded") == "true" and shown.inner_text() == "Hide"
    axe(page)
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()


def test_the_dicom_page_recalls_a_version_only_for_an_admin_at_the_node(
    stack: dict[str, str], browser: Any
) -> None:
    url, model, reason = stack["url"], "knee-xray-recalled", "wrong laterality on some films"
    mine = f"[data-testid=recall-row]:has(th:text-is('{model} v4'))"
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", OPERATOR)  # series:read: sees the recalls and the form
    page.get_by_test_id("recall-form").wait_for()
    page.fill("#rc-model", model)
    page.fill("#rc-version", "4")
    page.fill("#rc-reason", reason)
    page.get_by_role("button", name="Recall…", exact=True).click()
    confirm = page.get_by_test_id("recall-confirm")
    assert f"Recall {model} version 4?" in confirm.inner_text() and reason in confirm.inner_text()
    assert page.evaluate("document.activeElement.id") == "recall-yes"
    axe(page)
    page.get_by_role("button", name="Cancel", exact=True).click()  # nothing is sent
    assert confirm.is_hidden()
    recall_from_the_page(page, model, 4, reason)
    refused = page.get_by_test_id("recall-error")
    refused.wait_for()
    assert "lacks the scope 'admin'" in refused.inner_text()  # the node's own detail
    assert page.locator(mine).count() == 0
    axe(page)
    context.close()

    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", ADMIN)
    recall_from_the_page(page, model, 4, reason)
    said = "[data-testid=recalled]"
    page.wait_for_selector(f"{said}:has-text('{model} v4')")
    row = page.locator(mine)
    row.wait_for()  # the table drawn again at once
    assert page.input_value("#rc-model") == ""  # the form emptied for the next one
    page.wait_for_function("() => document.activeElement.textContent === 'Recall…'")
    assert page.get_by_test_id("recall-error").is_hidden()
    cells = [row.get_by_test_id(t).inner_text() for t in
             ("recall-series", "recall-stopped", "recall-done", "recall-pending",
              "recall-to-act-on")]  # fmt: skip
    assert cells == ["0", "0", "0", "0", "0"]  # the node classified nothing with it
    assert row.get_by_test_id("recall-retry").count() == 0  # nothing refused to send again
    assert reason in row.inner_text() and "admin" in row.inner_text()
    row.get_by_test_id("recall-show").click()
    page.locator("[data-testid=recall-open]:has-text('No withdrawal left open')").wait_for()
    axe(page)
    recall_from_the_page(page, model, 4, "another reason")  # the first recall stands
    page.wait_for_selector(f"{said}:has-text('recalled before')")
    assert reason in page.inner_text(said) and page.locator(mine).count() == 1
    context.close()


def test_the_dicom_page_lifts_a_recall_for_an_admin_once_told_why(
    stack: dict[str, str], browser: Any
) -> None:
    url, model = stack["url"], "knee-xray-lifted"
    admin = {"Authorization": f"Bearer {ADMIN}"}

    def recalled(version: int) -> int:
        made = requests.post(
            f"{stack['node']}/v1/recalls", headers=admin, timeout=10,
            json={"model": model, "version": version, "reason": "wrong laterality"},
        )  # fmt: skip
        assert made.status_code == 202, made.text
        return int(made.json()["id"])

    first, second = recalled(2), recalled(3)
    mine = f"[data-testid=recall-row]:has(th:text-is('{model} v2'))"
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", OPERATOR)  # series:read: sees it, may not lift it
    page.locator(mine).wait_for()
    assert page.locator(mine).get_by_test_id("recall-lift").count() == 0
    context.close()

    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", ADMIN)
    row = page.locator(mine)
    lift = row.get_by_role("button", name=f"Lift recall {first} of {model} v2", exact=True)
    lift.click()
    confirm = page.get_by_test_id("lift-confirm")
    said = confirm.inner_text()
    assert f"Lift recall {first} of {model} version 2?" in said and "stay recalled" in said
    assert page.evaluate("document.activeElement.id") == "lift-reason"
    axe(page)
    page.get_by_role("button", name="Cancel", exact=True).click()  # nothing is sent
    assert confirm.is_hidden()
    assert page.evaluate("document.activeElement.dataset.testid") == "recall-lift"
    assert _api(stack["node"], f"/v1/recalls/{first}")["state"] != "lifted"
    lift.click()
    page.get_by_role("button", name="Lift the recall", exact=True).click()  # no reason yet
    assert confirm.is_visible() and _api(stack["node"], f"/v1/recalls/{first}")["lifted_at"] is None
    reason = "recalled by mistake: the laterality was right"
    page.fill("#lift-reason", reason)
    page.get_by_role("button", name="Lift the recall", exact=True).click()
    page.wait_for_selector(f"[data-testid=lifted]:has-text('Recall {first}: {model} v2 lifted')")
    row = page.locator(f"{mine}[data-state=lifted]")
    row.wait_for()
    assert row.get_by_test_id("recall-lifted").inner_text().endswith(f"by admin: {reason}")
    assert row.get_by_test_id("recall-lift").count() == 0 and confirm.is_hidden()
    node = _api(stack["node"], f"/v1/recalls/{first}")
    assert (node["state"], node["lifted_by"], node["lift_reason"]) == ("lifted", "admin", reason)
    axe(page)

    # lifted elsewhere while the form was open: the node's refusal shows in the form
    other = page.locator(f"[data-testid=recall-row]:has(th:text-is('{model} v3'))")
    other.get_by_test_id("recall-lift").click()
    page.fill("#lift-reason", reason)
    answer = requests.post(f"{stack['node']}/v1/recalls/{second}/lift", headers=admin,
                           json={"reason": "by the API"}, timeout=10)  # fmt: skip
    assert answer.status_code == 200, answer.text
    page.get_by_role("button", name="Lift the recall", exact=True).click()
    refused = page.get_by_test_id("lift-error")
    refused.wait_for()
    assert f"recall {second} was lifted already" in refused.inner_text()
    context.close()


def test_the_dicom_page_purges_a_study_for_an_admin_once_confirmed(
    stack: dict[str, str], browser: Any
) -> None:
    url = stack["url"]
    study = make_study(2)
    study_uid = study[0].StudyInstanceUID
    stow(stack["node"], study)
    before = len(_api(stack["node"], "/v1/purges")["items"])
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", OPERATOR)  # series:read: sees the purges, not the form
    page.get_by_test_id("purges-section").wait_for()
    assert page.get_by_test_id("purge-form").is_hidden()
    context.close()

    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/dicom", ADMIN)
    page.wait_for_selector(f"[data-testid=series-row]:has-text('{study_uid}')")
    page.fill("#pg-study", study_uid)
    page.fill("#pg-reason", "   ")  # only blanks: the node refuses it, the page says why
    page.get_by_role("button", name="Purge…", exact=True).click()
    confirm = page.get_by_test_id("purge-confirm")
    assert "This cannot be undone" in confirm.inner_text() and study_uid not in confirm.inner_text()
    assert page.evaluate("document.activeElement.id") == "purge-yes"
    axe(page)
    page.get_by_role("button", name="Cancel", exact=True).click()  # nothing is sent
    assert confirm.is_hidden() and len(_api(stack["node"], "/v1/purges")["items"]) == before
    page.get_by_role("button", name="Purge…", exact=True).click()
    page.get_by_role("button", name="Purge the study", exact=True).click()
    refused = page.get_by_test_id("purge-error")
    refused.wait_for()
    assert "reason" in refused.inner_text()
    assert len(_api(stack["node"], "/v1/purges")["items"]) == before

    reason = "sent by mistake: the patient declined AI processing"
    page.fill("#pg-reason", reason)
    page.get_by_role("button", name="Purge…", exact=True).click()
    page.get_by_role("button", name="Purge the study", exact=True).click()
    said = page.get_by_test_id("purge-said")
    page.wait_for_selector("[data-testid=purge-said]:has-text('recorded')")
    assert page.input_value("#pg-study") == "" and refused.is_hidden()
    purge_id = said.inner_text().split()[1]
    row = page.locator(f"[data-testid=purge-row][data-id='{purge_id}'][data-state=done]")
    row.wait_for(timeout=15_000)  # the worker applies it, the page's refresh shows it
    assert reason in row.inner_text() and "admin" in row.inner_text()
    assert row.get_by_test_id("purge-series").inner_text().startswith("1 (")
    assert row.get_by_test_id("purge-sent").inner_text() == "none"  # the RIS is down
    # The series table drawn again: the study shows nowhere. (A function, not an expression:
    # the page's CSP refuses an expression evaluated again at each poll.)
    page.wait_for_function(
        "(uid) => !document.body.innerText.includes(uid)", arg=study_uid, timeout=15_000
    )
    node = _api(stack["node"], f"/v1/purges/{purge_id}")
    assert (node["state"], node["requested_by"], node["reason"]) == ("done", "admin", reason)
    shown = row.get_by_test_id("purge-deleted").inner_text()  # as the node counted them
    assert shown.startswith(
        f"{node['instances_deleted']} instance files, {node['results_deleted']}"
    )
    axe(page)
    context.close()


def test_the_facts_page_gives_the_teams_own_words_as_text(
    stack: dict[str, str], browser: Any
) -> None:
    url, artifacts = stack["url"], Path(stack["artifacts"])
    said = ModelNotes(
        purpose="A <b>second read</b> of adult PA chest films & nothing else",
        limitations=("not tested on children", "portable AP films underrepresented"),
        contact="radiology-ai@hospital.example",
    )
    publish_version(artifacts, "knee-notes", 1, notes=said)
    publish_version(artifacts, "knee-notes", 2)  # said nothing
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/models/knee-notes/versions/1", ADMIN)
    box = page.get_by_test_id("facts-notes")
    box.locator("li").first.wait_for()
    assert box.locator("dd").first.inner_text() == said.purpose  # text, never markup
    assert box.locator("b").count() == 0
    assert box.locator("li").all_inner_texts() == list(said.limitations)
    assert "radiology-ai@hospital.example" in box.inner_text()
    assert page.get_by_test_id("facts-notes-amended").is_hidden()  # as published
    axe(page)
    page.goto(f"{url}/ui/models/knee-notes/versions/2")
    page.get_by_test_id("facts-caveats").locator("li").first.wait_for()
    assert page.locator("#facts-notes-box").is_hidden()

    # a limitation found in service, added through the API: the page shows the words in force
    found_later = [*said.limitations, "misses small pneumothoraces on portable films"]
    amended = requests.put(
        f"{url}/v1/models/knee-notes/versions/1/notes",
        json={**said.model_dump(mode="json"), "limitations": found_later},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert amended.status_code == 200, amended.text
    page.goto(f"{url}/ui/models/knee-notes/versions/1")
    box.locator("li").nth(2).wait_for()
    assert box.locator("li").all_inner_texts() == found_later
    assert box.locator("dd").first.inner_text() == said.purpose
    when = amended.json()["changed_at"][:10]
    assert page.get_by_test_id("facts-notes-amended").inner_text() == f"Amended {when} by admin."
    axe(page)
    context.close()


def test_a_key_without_models_write_sees_no_alias_control_and_is_refused(
    stack: dict[str, str], browser: Any
) -> None:
    url, artifacts = stack["url"], Path(stack["artifacts"])
    publish_version(artifacts, "stand-in", 1)
    # another client's private versions: one shared with the reader's client, one not
    with_reader = ModelAccess(owner="radiology", private=True, clients=("reader",))
    publish_version(artifacts, "stand-in", 2, access=with_reader)
    publish_version(artifacts, "stand-in", 3, access=ModelAccess(owner="radiology", private=True))
    publish_version(artifacts, "brain-ct", 1, access=ModelAccess(owner="radiology", private=True))
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/models", READER)
    page.get_by_test_id("version-row").first.wait_for()
    assert page.get_by_test_id("alias-form").count() == 0
    assert page.get_by_test_id("access-form").count() == 0
    assert page.locator("[data-testid=model][data-model=brain-ct]").count() == 0
    stand_in = page.locator("[data-testid=model][data-model=stand-in]")
    rows = stand_in.get_by_test_id("version-row")
    assert [rows.nth(i).get_attribute("data-version") for i in range(rows.count())] == ["2", "1"]
    access = [c.inner_text() for c in stand_in.get_by_test_id("access").all()]
    assert access == ["private: radiology, reader", "shared"]
    refused = requests.put(
        f"{url}/v1/models/stand-in/aliases/production",
        json={"version": 1},
        headers={"Authorization": f"Bearer {READER}"},
        timeout=10,
    )
    assert refused.status_code == 403
    page.goto(f"{url}/ui/")
    page.wait_for_selector("#who:has-text('reader')")
    assert page.is_hidden("#submit-section")
    page.goto(f"{url}/ui/audit")
    page.wait_for_selector("#notice:has-text('admin scope')")
    assert page.is_hidden("[data-testid=audit-filter]")
    assert page.get_by_test_id("audit-row").count() == 0
    page.goto(f"{url}/ui/dicom")
    page.wait_for_selector("#notice:has-text('series:read scope')")
    assert page.is_hidden("[data-testid=series-filter]")
    refused = requests.get(
        f"{url}/ui/api/series", headers={"Authorization": f"Bearer {READER}"}, timeout=10
    )
    assert refused.status_code == 403 and "series:read" in refused.json()["detail"]
    context.close()


def test_an_admin_shares_a_private_version_with_a_client_and_takes_it_back(
    stack: dict[str, str], browser: Any
) -> None:
    url, artifacts = stack["url"], Path(stack["artifacts"])
    publish_version(artifacts, "lung-ct", 1, access=ModelAccess(owner="radiology", private=True))

    def reader_sees() -> int:
        headers = {"Authorization": f"Bearer {READER}"}
        url_of_version = f"{url}/v1/models/lung-ct/versions/1"
        return requests.get(url_of_version, headers=headers, timeout=10).status_code

    assert reader_sees() == 404
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{url}/ui/models", ADMIN)
    model = page.locator("[data-testid=model][data-model=lung-ct]")
    form = model.get_by_test_id("access-form")
    form.wait_for()
    form.get_by_test_id("access-mode").select_option("private")
    form.get_by_test_id("access-clients").fill("reader, gateway")
    form.get_by_role("button", name="Set access").click()
    page.wait_for_selector("#notice:has-text('lung-ct version 1: private')")
    cell = model.get_by_test_id("access")
    cell.filter(has_text="private: radiology, gateway, reader").wait_for()
    assert reader_sees() == 200
    axe(page)

    form = model.get_by_test_id("access-form")  # the page was drawn again
    form.get_by_test_id("access-mode").select_option("shared")
    form.get_by_test_id("access-clients").fill("reader")
    form.get_by_role("button", name="Set access").click()
    page.wait_for_selector("#notice:has-text('private version only')")  # the API's 422
    form.get_by_test_id("access-mode").select_option("private")
    form.get_by_test_id("access-clients").fill("")
    form.get_by_role("button", name="Set access").click()
    playwright.expect(model.get_by_test_id("access")).to_have_text("private: radiology")
    assert reader_sees() == 404
    # a recall from the page shows on the version's row, with its reason; then put back
    reason = "misses effusions on portable films"
    recall = model.get_by_test_id("withdraw-form")
    recall.get_by_role("button", name="Withdraw").click()  # no reason: the browser asks one
    assert model.get_by_test_id("withdrawn").count() == 0
    recall.get_by_test_id("withdraw-reason").fill(reason)
    recall.get_by_role("button", name="Withdraw").click()
    withdrawn = model.get_by_test_id("withdrawn")
    withdrawn.wait_for()
    assert withdrawn.inner_text().split("\n") == ["withdrawn", reason]
    assert _api(url, "/v1/models/lung-ct/versions/1/withdrawal")["withdrawn"] is True
    axe(page)
    recall = model.get_by_test_id("withdraw-form")  # the page was drawn again
    recall.get_by_test_id("withdraw-reason").fill("a labelling error, not the model")
    recall.get_by_role("button", name="Put back").click()
    page.wait_for_selector("#notice:has-text('lung-ct version 1: back in service')")
    playwright.expect(model.get_by_test_id("withdrawn")).to_have_count(0)
    changes = _api(url, "/v1/audit?action=access_changed")["items"]
    assert [c["target"] for c in changes[:2]] == ["model/lung-ct/versions/1/access"] * 2
    context.close()


def test_predict_for_a_misspelt_model_lists_the_served_ones(
    stack: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    publish_version(Path(stack["artifacts"]), "knee-mri", 1)
    scan = str(DATA / "images" / "pneumonia_0.png")
    argv = ["predict", "--model", "knee-mr", "--url", stack["inference"], "--api-key", READER]
    assert main([*argv, scan]) == 5
    err = capsys.readouterr().err
    assert "404" in err and "did you mean knee-mri?" in err


def _text(page: Any, selector: str) -> str:
    found = page.query_selector(selector)
    return found.inner_text() if found else ""


def _api(url: str, path: str) -> Any:
    response = requests.get(
        f"{url}{path}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    response.raise_for_status()
    return response.json()
