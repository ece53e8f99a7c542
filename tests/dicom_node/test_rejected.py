"""A destination that refuses a result for what it is: the delivery ends `rejected` at once
instead of being retried until the retention limit, the series says so, its files are kept,
and "send now" sends it again once the destination is mended. A busy destination (A7xx) is
still retried. The refusing PACS is pynetdicom's storage SCP answering scripted statuses; the
node runs under gunicorn beside Orthanc."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from service.auth import hash_key
from service.dicom_node.delivery import NotDelivered, Rejected, sender_for
from service.dicom_node.peers import DicomDestination
from tests.conftest import free_port
from tests.dicom_node.conftest import OPS_KEY
from tests.dicom_node.parts import (
    PACS_AE,
    SOURCES,
    Gunicorn,
    Orthanc,
    make_study,
    send,
    wait_until,
)
from tests.dicom_node.test_e2e import QUIET_S, SLACK_S

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ADMIN_KEY = "admin-key-for-the-node"
SR_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33")


class ScriptedPacs:
    """A storage SCP answering each C-STORE with the next status of its script (the last one
    thereafter); it keeps the SOP Instance UIDs it stored (status 0)."""

    def __init__(self, script: list[int]) -> None:
        self.script, self.answered, self.stored = list(script), [], []
        self.lock = threading.Lock()
        ae = AE(ae_title="REFUSER")
        for sop_class in (*SR_CLASSES, dcmread(SOURCES[0]).SOPClassUID):
            ae.add_supported_context(sop_class, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        self.port = free_port()
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event: Any) -> int:
        with self.lock:
            status = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            self.answered.append(status)
            if status == 0:
                self.stored.append(str(event.dataset.SOPInstanceUID))
        return status

    def set_script(self, script: list[int]) -> None:
        with self.lock:
            self.script = list(script)


@pytest.fixture
def pacs() -> Iterator[Callable[[list[int]], ScriptedPacs]]:
    made: list[ScriptedPacs] = []

    def make(script: list[int]) -> ScriptedPacs:
        made.append(ScriptedPacs(script))
        return made[-1]

    yield make
    for server in made:
        server.server.shutdown()


def test_a_refusal_about_the_data_set_is_final_and_a_busy_pacs_is_retried(
    pacs: Callable[[list[int]], ScriptedPacs], tmp_path: Path
) -> None:
    refuser = pacs([0xA900, 0xC211, 0xA700, 0x0000])
    scan = dcmread(SOURCES[0])
    scan.SOPInstanceUID = scan.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    scan.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    path = tmp_path / "result.dcm"
    scan.save_as(path, enforce_file_format=True)
    dest = DicomDestination(ae_title="REFUSER", host="127.0.0.1", port=refuser.port)
    sender = sender_for(dest, "NODE", 5)
    for status in ("0xA900", "0xC211"):  # does not match its SOP class; cannot understand
        with pytest.raises(Rejected, match=f"C-STORE refused: status {status}"):
            sender.send(path.read_bytes())
    with pytest.raises(NotDelivered, match="0xA700") as busy:  # out of resources
        sender.send(path.read_bytes())
    assert not isinstance(busy.value, Rejected)
    sender.send(path.read_bytes())
    assert refuser.stored == [scan.SOPInstanceUID]


def test_an_hl7_commit_reject_is_final_and_an_application_reject_is_retried(
    tmp_path: Path,
) -> None:
    from tests.dicom_node.test_hl7 import Receiver
    from tests.hospital.test_hl7v2 import _sources, _sr

    path = tmp_path / "result.sr.dcm"
    _sr(_sources()).save_as(path, enforce_file_format=True)
    receiver = Receiver(["CR", "AR", "AA"])
    try:
        destination = DicomDestination.model_validate({"hl7": {"host": "127.0.0.1",
                                                               "port": receiver.port}})  # fmt: skip
        sender = sender_for(destination, "NODE", 10)
        with pytest.raises(Rejected, match="HL7 ACK CR"):
            sender.send(path.read_bytes())
        with pytest.raises(NotDelivered, match="HL7 ACK AR") as refused:
            sender.send(path.read_bytes())
        assert not isinstance(refused.value, Rejected)  # also an engine's "down": retried
        sender.send(path.read_bytes())
        assert [r.answered for r in receiver.received] == ["CR", "AR", "AA"]
    finally:
        receiver.stop()


def _series(node: Gunicorn) -> list[dict[str, Any]]:
    return node.items("/v1/series", OPS_KEY)


def test_a_rejected_result_is_not_retried_and_is_sent_again_on_request(
    make_node: Callable[..., Gunicorn],
    orthanc: Orthanc,
    pacs: Callable[[list[int]], ScriptedPacs],
    tmp_path: Path,
) -> None:
    refuser = pacs([0xA900])
    keys = [
        {"name": "ops", "sha256": hash_key(OPS_KEY), "scopes": ["series:read"]},
        {"name": "admin", "sha256": hash_key(ADMIN_KEY), "scopes": ["series:read", "admin"]},
    ]
    node = make_node(
        api_keys=keys,
        dicom_destinations=[
            {"name": "pacs", "ae_title": PACS_AE, "host": "127.0.0.1", "port": orthanc.dicom_port},
            {"name": "ris", "ae_title": "REFUSER", "host": "127.0.0.1", "port": refuser.port},
        ],
    ).start()
    study = make_study(2)
    assert send(node.port_dicom, study) == [0, 0]
    rejected = wait_until(
        lambda: [s for s in _series(node) if s["state"] == "rejected"],
        QUIET_S + SLACK_S, "the series ends rejected",
    )  # fmt: skip
    (series,) = rejected
    by_destination = {d["destination"].split("@")[0]: d for d in series["deliveries"]}
    assert by_destination[PACS_AE]["state"] == "done"  # the other destination has it
    refused = by_destination["REFUSER"]
    assert (refused["state"], refused["attempts"]) == ("rejected", 1)
    assert refused["last_error"] == "C-STORE refused: status 0xA900"
    assert refused["next_attempt_at"] is None
    assert node.metric("scantune_dicom_deliveries_rejected_total", kind="dimse") == 1
    assert node.metric("scantune_dicom_delivery_failures_total", kind="dimse") == 0
    wait_until(lambda: orthanc.reports(study[0].StudyInstanceUID), SLACK_S, "the SR in Orthanc")
    spool = tmp_path / "spool"
    assert any(p.is_file() for p in spool.rglob("*")), "kept for a resend"
    assert refuser.answered == [0xA900]  # not retried, though the back-off is 0.5 s to 2 s

    refuser.set_script([0])  # the destination is mended: an admin sends the series again
    again = requests.post(
        f"{node.url}/v1/series/{series['id']}/send-now",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert again.status_code == 200, again.text
    wait_until(lambda: [s for s in _series(node) if s["state"] == "done"], SLACK_S, "delivered")
    assert refuser.stored == [series["result_sop_instance_uid"]]
    assert not any(p.is_file() for p in spool.rglob("*")), "its files deleted once delivered"
    log = node.log_text()
    assert "delivery to dimse rejected: C-STORE refused: status 0xA900; not retried" in log
    for value in (study[0].StudyInstanceUID, *(ds.SOPInstanceUID for ds in study)):
        assert value not in log
