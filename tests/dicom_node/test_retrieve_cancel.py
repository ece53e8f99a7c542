"""Retrievals from a source that sends no pending answers (DICOM makes them optional). The
PACS is a real Query/Retrieve SCP (pynetdicom) that moves a study to the node (under gunicorn)
one instance a second, a minute in all unless told otherwise. Cancelled, the node's C-CANCEL
must reach it at once, and the node must abort the association of a PACS that does not answer
it, ending the retrieval `cancelled` (not failed) with what came kept. Not cancelled, its
instances coming are signs of life: the retrieval timeout bounds only a silence (no answer, no
instance), after which the node aborts the association and the retrieval fails."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.conftest import free_port
from tests.dicom_node.conftest import OPS_KEY
from tests.dicom_node.parts import MODALITY_AE, Gunicorn, make_study, wait_until
from tests.dicom_node.test_retrieve import KEYS, RETRIEVE_KEY, retrieve

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
QR_AE = "QRSCP"
PACE_S = 1.0  # between two instances the PACS sends
INSTANCES = 60  # a minute of sending: a retrieval that ends sooner was cut short
PENDING = (0xFF00, 0xFF01)


class SlowPacs:
    """A Query/Retrieve SCP holding one study: it finds it (study and series level) and moves
    it to the node one instance every PACE_S, with no pending answer. Sent a C-CANCEL it
    answers Cancelled (0xFE00), or, `deaf`, sends on; aborted, it stops, as a PACS does.
    `mute_after` instances, it falls silent: nothing more sent, no answer, until aborted.
    `unseriesed`, it sends its instances without their Series Instance UID (the node refuses
    each)."""

    def __init__(
        self,
        study: list[Dataset],
        node_port: int,
        deaf: bool = False,
        mute_after: int | None = None,
        unseriesed: bool = False,
    ) -> None:
        self.study, self.node_port, self.deaf = study, node_port, deaf
        self.mute_after, self.unseriesed = mute_after, unseriesed
        self.uid = str(study[0].StudyInstanceUID)
        self.cancel_seen, self.aborted = threading.Event(), threading.Event()
        self._gone: set[Any] = set()  # its associations whose connection has closed
        self._over = threading.Event()
        ae = AE(ae_title=QR_AE)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
        for ds in study:  # for its C-STORE sub-operations to the node
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        self.port = free_port()
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_C_FIND, self._find),
                (evt.EVT_C_MOVE, self._move),
                (evt.EVT_CONN_CLOSE, lambda event: self._gone.add(event.assoc)),
                (evt.EVT_ABORTED, lambda event: self.aborted.set()),
            ],
        )

    @property
    def source(self) -> dict[str, Any]:
        return {"name": "pacs", "ae_title": QR_AE, "host": "127.0.0.1", "port": self.port}

    def stop(self) -> None:
        self._over.set()
        self.server.shutdown()

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset]]:
        asked = event.identifier
        if str(asked.StudyInstanceUID) != self.uid:
            return
        level = str(asked.QueryRetrieveLevel)
        series = [str(ds.SeriesInstanceUID) for ds in self.study] if level == "SERIES" else [""]
        for uid in dict.fromkeys(series):
            match = Dataset()
            match.QueryRetrieveLevel, match.StudyInstanceUID = level, self.uid
            if uid:
                match.SeriesInstanceUID, match.Modality = uid, "CR"
            yield 0xFF00, match

    def _move(self, event: Any) -> Iterator[Any]:
        _without_pending_answers(event.assoc)
        yield "127.0.0.1", self.node_port
        yield len(self.study)
        for sent, ds in enumerate(self.study):
            if sent == self.mute_after:
                self._hang(event)
                return
            if self._pause(event) and not self.deaf:
                yield 0xFE00, None  # its final answer: Cancelled, with what it sent
                return
            if self._over.is_set() or event.assoc in self._gone:
                return  # aborted: nothing more is sent
            yield 0xFF00, _unseriesed(ds) if self.unseriesed else ds  # a C-STORE sub-operation

    def _hang(self, event: Any) -> None:
        """Silent, as a stuck PACS is, until the association is gone."""
        while not (self._over.is_set() or event.assoc in self._gone):
            time.sleep(0.05)

    def _pause(self, event: Any) -> bool:
        """PACE_S before the next instance; whether a C-CANCEL came meanwhile."""
        deadline = time.monotonic() + PACE_S
        while time.monotonic() < deadline and not self._over.is_set():
            if event.is_cancelled:
                self.cancel_seen.set()
                return True
            time.sleep(0.05)
        return False


def _unseriesed(ds: Dataset) -> Dataset:
    sent = copy.deepcopy(ds)
    del sent.SeriesInstanceUID
    return sent


def _without_pending_answers(assoc: Any) -> None:
    """pynetdicom's C-MOVE SCP answers Pending after each sub-operation; this association's
    PACS sends only its final answer, as DICOM allows."""
    send = assoc.dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        if not (isinstance(primitive, C_MOVE) and primitive.Status in PENDING):
            send(primitive, context_id)

    assoc.dimse.send_msg = send_msg


@pytest.fixture
def slow_pacs(node_dicom_port: int) -> Iterator[Callable[..., SlowPacs]]:
    made: list[SlowPacs] = []

    def make(
        deaf: bool = False,
        instances: int = INSTANCES,
        mute_after: int | None = None,
        unseriesed: bool = False,
    ) -> SlowPacs:
        study = make_study(instances)
        made.append(SlowPacs(study, node_dicom_port, deaf, mute_after, unseriesed))
        return made[-1]

    yield make
    for pacs in made:
        pacs.stop()


class Retrieval:
    """One retrieval of the PACS's study in the background, followed over the node's API."""

    def __init__(self, node: Gunicorn, pacs: SlowPacs) -> None:
        self.node, self.uid = node, pacs.uid
        taken = retrieve(node, source="pacs", study_instance_uid=pacs.uid, wait=False)
        assert taken.status_code == 202, taken.text
        self.url = f"{node.url}/v1/retrievals/{taken.json()['id']}"

    def cancel(self) -> dict[str, Any]:
        answer = requests.post(f"{self.url}/cancel", timeout=10,
                               headers={"Authorization": f"Bearer {RETRIEVE_KEY}"})  # fmt: skip
        assert answer.status_code == 202, answer.text
        view: dict[str, Any] = answer.json()
        return view

    def ended(self) -> dict[str, Any] | None:
        view: dict[str, Any] = requests.get(
            self.url, headers={"Authorization": f"Bearer {RETRIEVE_KEY}"}, timeout=10
        ).json()
        return view if view["state"] not in ("running", "cancelling") else None

    def arrived(self) -> int:
        """The instances of the study the node holds."""
        series = self.node.items(f"/v1/series?study_instance_uid={self.uid}", OPS_KEY)
        return sum(int(s["instances"]) for s in series)


def start_node(
    make_node: Callable[..., Gunicorn], pacs: SlowPacs, grace_s: float = 15, timeout_s: float = 60
) -> Gunicorn:
    callers = [{"ae_title": ae, "host": "127.0.0.1"} for ae in (MODALITY_AE, QR_AE)]
    return make_node(
        dicom_sources=[pacs.source],
        dicom_allowed_callers=callers,
        dicom_retrieve_cancel_grace_s=grace_s,
        dicom_retrieve_timeout_s=timeout_s,
        api_keys=KEYS,
    ).start()


def test_a_pacs_that_sends_no_pending_answer_is_cancelled_at_once(
    make_node: Callable[..., Gunicorn], slow_pacs: Callable[..., SlowPacs]
) -> None:
    pacs = slow_pacs()
    node = start_node(make_node, pacs, grace_s=30)  # far longer than the cancel takes
    retrieval = Retrieval(node, pacs)
    wait_until(lambda: retrieval.arrived() >= 2, 30, "the first instances arrive")
    asked = time.monotonic()
    assert retrieval.cancel()["state"] in ("cancelling", "cancelled")
    done = wait_until(retrieval.ended, 10, "the PACS answers the C-CANCEL")
    assert time.monotonic() - asked < 10  # where the PACS would send for most of a minute
    assert pacs.cancel_seen.is_set() and not pacs.aborted.is_set()  # answered, not cut off
    assert (done["state"], done["error"]) == ("cancelled", None)
    assert 2 <= done["completed"] < INSTANCES, done  # as the PACS's final answer counts them
    assert retrieval.arrived() == done["completed"]  # what came is the node's, classified
    assert node.metric("scantune_dicom_retrievals_total", outcome="cancelled") == 1


def test_a_pacs_that_ignores_the_cancel_is_aborted_after_the_grace(
    make_node: Callable[..., Gunicorn], slow_pacs: Callable[..., SlowPacs]
) -> None:
    grace_s = 2.0
    pacs = slow_pacs(deaf=True)
    node = start_node(make_node, pacs, grace_s)
    retrieval = Retrieval(node, pacs)
    wait_until(lambda: retrieval.arrived() >= 2, 30, "the first instances arrive")
    asked = time.monotonic()
    assert retrieval.cancel()["state"] == "cancelling"  # the grace has not passed
    done = wait_until(retrieval.ended, grace_s + 5, "the node aborts the association")
    assert time.monotonic() - asked >= grace_s  # the PACS had its grace to answer
    wait_until(pacs.aborted.is_set, 10, "the PACS gets the A-ABORT")
    assert pacs.cancel_seen.is_set()  # the C-CANCEL went, and was ignored
    assert done["state"] == "cancelled", done  # not failed: the abort was the node's own
    assert "did not answer the C-CANCEL" in done["error"]  # and the counts are the node's
    came = retrieval.arrived()
    # one C-STORE may have been under way as the association was aborted
    assert 2 <= done["completed"] <= came <= done["completed"] + 1 < INSTANCES, (done, came)
    assert node.metric("scantune_dicom_retrievals_total", outcome="cancelled") == 1
    assert node.metric("scantune_dicom_retrievals_total", outcome="failed") == 0
    assert "stopped answering" not in node.log_text()


def test_a_pacs_that_sends_for_longer_than_the_timeout_without_a_word_is_alive(
    make_node: Callable[..., Gunicorn], slow_pacs: Callable[..., SlowPacs]
) -> None:
    timeout_s, instances = 4.0, 10  # its instances come a second apart: alive all along
    pacs = slow_pacs(instances=instances)
    node = start_node(make_node, pacs, timeout_s=timeout_s)
    asked = time.monotonic()
    retrieval = Retrieval(node, pacs)
    done = wait_until(retrieval.ended, 60, "the PACS has sent the study")
    assert (done["state"], done["error"]) == ("done", None), done
    assert time.monotonic() - asked >= 2 * timeout_s  # far past a wait for its next answer
    assert done["completed"] == instances and retrieval.arrived() == instances
    assert not pacs.aborted.is_set()
    assert node.metric("scantune_dicom_retrievals_total", outcome="ok") == 1
    assert "stopped answering" not in node.log_text()


def test_a_pacs_that_falls_silent_is_cut_off_after_the_timeout_and_the_retrieval_fails(
    make_node: Callable[..., Gunicorn], slow_pacs: Callable[..., SlowPacs]
) -> None:
    timeout_s, sent = 4.0, 6  # it sends for longer than the timeout, then nothing
    pacs = slow_pacs(mute_after=sent)
    node = start_node(make_node, pacs, timeout_s=timeout_s)
    retrieval = Retrieval(node, pacs)
    wait_until(lambda: retrieval.arrived() >= sent, 30, "what the PACS sends arrives")
    last = time.monotonic()  # its last instance came at most a poll ago
    done = wait_until(retrieval.ended, timeout_s + 15, "the node cuts the silent PACS off")
    assert time.monotonic() - last >= timeout_s - 1  # the silence had its full timeout
    wait_until(pacs.aborted.is_set, 10, "the PACS gets the A-ABORT")
    assert done["state"] == "failed", done  # not cancelled: the source failed
    assert "source 'pacs' sent nothing for 4 s" in done["error"], done
    assert retrieval.arrived() == sent  # what came is kept, and classified
    assert node.metric("scantune_dicom_retrievals_total", outcome="failed") == 1
    assert "stopped answering" not in node.log_text()


def test_instances_the_node_refuses_are_signs_of_life_and_the_failure_says_so(
    make_node: Callable[..., Gunicorn], slow_pacs: Callable[..., SlowPacs]
) -> None:
    """A PACS sending a study the node refuses instance by instance (no Series Instance UID)
    is still sending: not cut off as silent, and the retrieval says what it refused."""
    timeout_s, instances = 3.0, 8
    pacs = slow_pacs(instances=instances, unseriesed=True)
    node = start_node(make_node, pacs, timeout_s=timeout_s)
    done = wait_until(Retrieval(node, pacs).ended, 60, "the PACS has sent the study")
    assert done["state"] == "failed", done  # not cut off as silent: told what it refused
    assert (
        done["error"] == f"source 'pacs' sent {instances} instance(s) and the node refused"
        " each (an instance without its study, series or SOP UIDs; the node's log says which)"
    )
    assert not pacs.aborted.is_set()
