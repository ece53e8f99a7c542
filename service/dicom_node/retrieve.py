"""Fetching a study the PACS already holds (DICOM Query/Retrieve, C-MOVE as SCU): a prior to
classify, or a study sent before the node was set up.

The node asks a source in `SCANTUNE_DICOM_SOURCES` to move the study (or one series of it) to
the node's own AE title. The source sends the instances back over C-STORE on associations of
its own, so they come in like any other: the source must be an allowed caller, and its
instances are routed, kept, classified and delivered as if it had sent them unasked. C-MOVE
rather than C-GET because every PACS implements it and the node already is a Storage SCP;
the source must know the node's AE title and address (as Orthanc's `DicomModalities` does).

A study a purge blocks (`purge_blocks`) is not fetched: asked by its UID, the retrieval is
refused before the source is asked (`Blocked`); found by an accession number, it is left out
(not moved, not named in the answer), and the retrieval is refused when nothing else is left.
"""

from __future__ import annotations

import functools
import itertools
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from service.dicom_node.moves import Arrivals, MoveWatch
from service.dicom_node.peers import DicomSource
from service.dicom_node.redact import uid_hash

log = logging.getLogger("scantune.dicom")

PENDING = (0xFF00, 0xFF01)
SUCCESS, WARNING, CANCELLED = 0x0000, 0xB000, 0xFE00
# What a C-MOVE's final status means (PS3.4 C.4.2.1.5), in words a person can act on.
FAILURES = {
    0xA701: "it is out of resources (it could not work out the matches)",
    0xA801: "it does not know the move destination: add the node's AE title, address and"
    " DICOM port to its list of DICOM peers",
    0xA900: "it refused the request's identifier",
    CANCELLED: "it cancelled the retrieval",
}
# Series of these modalities hold no image (reports, key objects, presentation states,
# segmentations, RT objects): not fetched. A PACS moving a study sends every series, and
# Orthanc fails the whole C-MOVE (0xC000, nothing sent) when the node refuses one instance's
# SOP class, as it does the node's own SR stored back into the study.
NOT_IMAGES = frozenset(
    {"SR", "KO", "PR", "DOC", "REG", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "ECG"}
)
UNANSWERED = (
    "the source did not answer the C-CANCEL in time: the association was aborted; the counts"
    " are what reached the node"
)


class RetrieveFailed(Exception):
    """The source could not be reached or refused; the text names no patient data."""


class NotHeld(Exception):
    """The source holds no such study (or series): its C-FIND matched nothing."""


class Blocked(RetrieveFailed):
    """What was asked is a study a purge blocks (or only such studies): not fetched."""

    def __init__(self, purge_id: int, accession: bool = False) -> None:
        what = "every study of that accession number is" if accession else "the study is"
        super().__init__(
            f"{what} blocked at the node by purge {purge_id}: not fetched (an admin ends the"
            f" block with POST /v1/purges/{purge_id}/release)"
        )
        self.purge_id = purge_id


@dataclass(frozen=True)
class Asked:
    """What to fetch: a study (or one series of it), or the studies of an accession number."""

    study_uid: str | None = None
    series_uid: str | None = None
    accession: str | None = None


@dataclass(frozen=True)
class Retrieved:
    """The studies fetched, and what the source reported of its sub-operations (one per
    instance it sent)."""

    studies: list[str]
    completed: int
    failed: int
    warning: int
    cancelled: bool = False  # asked to stop before the source had sent everything
    aborted: bool = False  # cancelled, and no final answer came: the counts are the node's

    @property
    def instances(self) -> int:
        return self.completed + self.failed + self.warning

    def problem(self, source: str) -> tuple[str, str] | None:
        """Why the retrieval is not done, as (outcome, text): cancelled (the text, if any, says
        why the counts are the node's), or it brought nothing to classify (found with no
        instances to send is as good as not there); None when it is done."""
        if self.cancelled:
            return "cancelled", UNANSWERED if self.aborted else ""
        if self.instances == 0:
            return "not_found", f"source '{source}' holds no instances of it"
        if self.completed + self.warning == 0:  # a source may report its failures as a warning
            return "failed", (
                f"source '{source}' could send none of the {self.failed} instances: it must"
                " be in SCANTUNE_DICOM_ALLOWED_CALLERS and know the node's address"
            )
        return None


class Moved(NamedTuple):
    """One C-MOVE's sub-operations, and how it ended."""

    completed: int
    failed: int
    warning: int
    cancelled: bool = False
    aborted: bool = False


class Retriever:
    """C-FIND, then C-MOVE to the node (`ae_title`) of each image series, on one association
    with the source. `timeout_s` bounds each wait for it (the association, each C-FIND answer)
    and, while a C-MOVE runs, its silence: neither an answer nor an instance of that C-MOVE
    (`moves.MoveWatch`); `cancel_grace_s` bounds the wait for its final answer once a C-MOVE
    is cancelled."""

    def __init__(
        self,
        ae_title: str,
        timeout_s: float,
        tls: ssl.SSLContext | None = None,
        blocked: Callable[[str], int | None] | None = None,
        cancel_grace_s: float = 15.0,
        arrivals: Arrivals | None = None,
    ) -> None:
        """`blocked`: the purge that blocks a study (`PurgeBlocks.blocking`), None if none;
        `arrivals`: what the node's Storage SCP counts of each C-MOVE as it comes."""
        self.ae_title, self.timeout_s, self.tls = ae_title, timeout_s, tls
        self.blocked = blocked or (lambda study_uid: None)
        self.cancel_grace_s = cancel_grace_s
        self.arrivals = arrivals or Arrivals()
        # Each C-MOVE its own Message ID, which a C-CANCEL names (thread-safe in CPython).
        self._message_ids = itertools.count(1)

    def retrieve(
        self, source: DicomSource, asked: Asked, cancel: threading.Event | None = None
    ) -> Retrieved:
        """Fetch what was asked. Once `cancel` is set, the C-MOVE under way is cancelled at
        once (C-CANCEL; a source without a final answer `cancel_grace_s` later is aborted) and
        no further series is asked for."""
        from pynetdicom import AE
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            StudyRootQueryRetrieveInformationModelFind as FIND,
        )
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            StudyRootQueryRetrieveInformationModelMove as MOVE,
        )

        purge_id = self.blocked(asked.study_uid) if asked.study_uid else None
        if purge_id is not None:
            raise Blocked(purge_id)
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(FIND)
        ae.add_requested_context(MOVE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        tls_args = None
        if source.tls:  # never fall back to plain DICOM unasked
            if self.tls is None:
                raise RetrieveFailed(f"source '{source.name}' wants TLS; the node has no context")
            tls_args = (self.tls, source.host)
        assoc = ae.associate(source.host, source.port, ae_title=source.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            raise RetrieveFailed(
                f"source '{source.name}' could not be reached or refused the association"
            )
        try:
            # A C-FIND first: a PACS answers a C-MOVE of a study it lacks with a failure that
            # does not say why (Orthanc's "unable to process"); no match is a clear answer.
            studies = self._unblocked(self._find(assoc, FIND, source, asked))
            wanted = [
                (uid, series)
                for uid in studies
                for series in (
                    [asked.series_uid]
                    if asked.series_uid
                    else self._image_series(assoc, FIND, source, uid)
                )
            ]
            moved: list[Moved] = []
            for uid, series in wanted:
                if cancel is not None and cancel.is_set():
                    break
                moved.append(self._move(assoc, MOVE, source, uid, series, cancel))
        finally:
            if assoc.is_established:
                assoc.release()
        return Retrieved(
            studies,
            completed=sum(m.completed for m in moved),
            failed=sum(m.failed for m in moved),
            warning=sum(m.warning for m in moved),
            cancelled=len(moved) < len(wanted) or any(m.cancelled for m in moved),
            aborted=any(m.aborted for m in moved),
        )

    def _unblocked(self, studies: list[str]) -> list[str]:
        """The studies found that no purge blocks; Blocked when none is left."""
        purges = {uid: self.blocked(uid) for uid in studies}
        left = [uid for uid, purge_id in purges.items() if purge_id is None]
        if not left:
            raise Blocked(max(p for p in purges.values() if p is not None), accession=True)
        if len(left) < len(studies):
            log.info("%d study(ies) of the accession number blocked by a purge: not fetched",
                     len(studies) - len(left))  # fmt: skip
        return left

    def _find(self, assoc: Any, model: Any, source: DicomSource, asked: Asked) -> list[str]:
        """The Study Instance UIDs the source holds of what was asked (NotHeld: none)."""
        query = _query(asked.study_uid, asked.series_uid)
        if asked.accession is not None:
            query.AccessionNumber = asked.accession
            query.StudyInstanceUID = ""  # a return key: which studies carry the number
        matches = _matches(assoc, query, model, source)
        uids = [str(m.StudyInstanceUID) for m in matches if m.get("StudyInstanceUID")]
        if asked.accession is None:
            if not matches:
                level = "series" if asked.series_uid else "study"
                raise NotHeld(f"source '{source.name}' holds no such {level}")
            return [str(asked.study_uid)]
        if not uids:
            raise NotHeld(f"source '{source.name}' holds no study of that accession number")
        return list(dict.fromkeys(uids))  # one study may match once per series it answers

    def _image_series(self, assoc: Any, model: Any, source: DicomSource, study: str) -> list[str]:
        """The study's series that hold images (by their Modality), to move one by one."""
        query = _query(study, None)
        query.QueryRetrieveLevel, query.SeriesInstanceUID, query.Modality = "SERIES", "", ""
        series = [
            str(m.SeriesInstanceUID)
            for m in _matches(assoc, query, model, source)
            if m.get("SeriesInstanceUID") and str(m.get("Modality") or "").upper() not in NOT_IMAGES
        ]
        return list(dict.fromkeys(series))

    def _move(
        self,
        assoc: Any,
        model: Any,
        source: DicomSource,
        study: str,
        series: str | None,
        cancel: threading.Event | None,
    ) -> Moved:
        """One C-MOVE of the study (or series) to the node, cancelled once `cancel` is set."""
        msg_id = next(self._message_ids) % 0xFFFF + 1  # an unsigned short, never 0
        self.arrivals.expect(msg_id, study)
        watch = MoveWatch(
            assoc, msg_id, model, cancel, self.cancel_grace_s, self.timeout_s,
            heard=functools.partial(self.arrivals.heard, msg_id, study),
        )  # fmt: skip
        # Its answers may be minutes apart, or none but the last (pending answers are
        # optional): the watch bounds the silence instead, arrivals included.
        assoc.dimse_timeout = None
        try:
            # The request goes out at this call, so a C-CANCEL of the watch always follows it.
            answers = assoc.send_c_move(_query(study, series), self.ae_title, model, msg_id=msg_id)
            with watch:
                final, reported = _final(answers, source, watch)
        finally:
            assoc.dimse_timeout = self.timeout_s
            arrived = self.arrivals.take(msg_id, study)
        if watch.silent:  # a failure, unlike a cancel's abort
            raise self._silent(source, study, arrived)
        if final is None:  # cancelled, never answered: both lower bounds of what it sent
            completed, failed, warning = (max(n) for n in zip(reported, arrived, strict=True))
            log.warning(
                "retrieval of study %s from %s: no answer to the C-CANCEL, association aborted;"
                " %d reached the node", uid_hash(study), source.name, completed + warning,
            )  # fmt: skip
            return Moved(completed, failed, warning, cancelled=True, aborted=True)
        completed, failed, warning = _counts(final)
        code = int(final.Status)
        log.info(
            "retrieval of study %s from %s: status 0x%04X, %d sent, %d failed",
            uid_hash(study), source.name, code, completed + warning, failed,
        )  # fmt: skip
        ok = code in (SUCCESS, WARNING) or (code & 0xF000) == 0xB000 or completed
        if ok or (watch.sent and code == CANCELLED):
            return Moved(completed, failed, warning, watch.sent)  # what came is classified
        if arrived[1] and not arrived[0]:  # it did send: the node refused what came
            raise RetrieveFailed(
                f"source '{source.name}' sent {arrived[1]} instance(s) and the node refused"
                " each (an instance without its study, series or SOP UIDs; the node's log"
                " says which)"
            )
        raise RetrieveFailed(f"source '{source.name}': {FAILURES.get(code) or self._unsent(code)}")

    def _silent(self, source: DicomSource, study: str, arrived: tuple[int, ...]) -> RetrieveFailed:
        """The failure of a C-MOVE whose source sent nothing, answer or instance, for the
        timeout: the watch aborted the association."""
        log.warning(
            "retrieval of study %s from %s: nothing for %g s, association aborted; %d had"
            " reached the node", uid_hash(study), source.name, self.timeout_s, sum(arrived),
        )  # fmt: skip
        return RetrieveFailed(
            f"source '{source.name}' sent nothing for {self.timeout_s:g} s (no answer, no"
            " instance): the association was aborted (SCANTUNE_DICOM_RETRIEVE_TIMEOUT_S)"
        )

    def _unsent(self, code: int) -> str:
        # Found, yet nothing sent: most often the source could not store to the node (PACSs,
        # Orthanc among them, answer that with a bare 0xC000).
        return (
            f"it has what was asked but sent none of it (status 0x{code:04X}): it must be in"
            " SCANTUNE_DICOM_ALLOWED_CALLERS (its AE title and address) and know the node as"
            f" AE title '{self.ae_title}' at the node's address and DICOM port"
        )


def _query(study: str | None, series: str | None) -> Any:
    from pydicom import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "SERIES" if series else "STUDY"
    query.StudyInstanceUID = study or ""
    if series:
        query.SeriesInstanceUID = series
    return query


def _final(answers: Any, source: DicomSource, watch: MoveWatch) -> tuple[Any, tuple[int, int, int]]:
    """A C-MOVE's final answer, and the counts its latest answer gave (pending answers may
    carry them); each answer tells the watch the source is alive. None for the final answer
    only once the watch stepped in: it aborted the association (cancelled, or the source
    silent), or the source stopped answering after the C-CANCEL."""
    final, reported = None, (0, 0, 0)
    for status, _ in answers:
        if watch.acted and (status is None or "Status" not in status):
            return None, reported  # stopped by the node: `_move` says why
        watch.answered()
        if int(_status(status, source)) not in PENDING:
            final = status
        reported = _counts(status)
    if final is None:
        raise RetrieveFailed(f"source '{source.name}' gave no final answer")
    return final, reported


def _counts(status: Any) -> tuple[int, int, int]:
    """A C-MOVE answer's (completed, failed, warning) sub-operations; 0 where it gives none."""
    completed, failed, warning = (
        int(status.get(f"NumberOf{n}Suboperations", 0) or 0)
        for n in ("Completed", "Failed", "Warning")
    )
    return completed, failed, warning


def _matches(assoc: Any, query: Any, model: Any, source: DicomSource) -> list[Any]:
    """A C-FIND's matches (one identifier per pending answer; an empty one when the source
    sent none); RetrieveFailed when it ends in anything but success."""
    from pydicom import Dataset

    found = []
    for status, identifier in assoc.send_c_find(query, model):
        code = _status(status, source)
        if code in PENDING:
            found.append(identifier if identifier is not None else Dataset())
        elif code != SUCCESS:
            raise RetrieveFailed(f"source '{source.name}' refused the query (status 0x{code:04X})")
    return found


def _status(status: Any, source: DicomSource) -> int:
    """A response's status code; RetrieveFailed when none came (no answer in time, aborted)."""
    if status is None or "Status" not in status:
        raise RetrieveFailed(f"source '{source.name}' stopped answering")
    return int(status.Status)
