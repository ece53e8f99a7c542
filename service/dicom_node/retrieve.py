"""Fetching a study the PACS already holds (DICOM Query/Retrieve, C-MOVE as SCU): a prior to
classify, or a study sent before the node was set up.

The node asks a source in `SCANTUNE_DICOM_SOURCES` to move the study (or one series of it) to
the node's own AE title. The source sends the instances back over C-STORE on associations of
its own, so they come in like any other: the source must be an allowed caller, and its
instances are routed, kept, classified and delivered as if it had sent them unasked. C-MOVE
rather than C-GET because every PACS implements it and the node already is a Storage SCP;
the source must know the node's AE title and address (as Orthanc's `DicomModalities` does).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any

from service.dicom_node.peers import DicomSource
from service.dicom_node.redact import uid_hash

log = logging.getLogger("scantune.dicom")

PENDING = (0xFF00, 0xFF01)
SUCCESS, WARNING = 0x0000, 0xB000
# What a C-MOVE's final status means (PS3.4 C.4.2.1.5), in words a person can act on.
FAILURES = {
    0xA701: "it is out of resources (it could not work out the matches)",
    0xA801: "it does not know the move destination: add the node's AE title, address and"
    " DICOM port to its list of DICOM peers",
    0xA900: "it refused the request's identifier",
    0xFE00: "it cancelled the retrieval",
}


class RetrieveFailed(Exception):
    """The source could not be reached or refused; the text names no patient data."""


class NotHeld(Exception):
    """The source holds no such study (or series): its C-FIND matched nothing."""


@dataclass(frozen=True)
class Retrieved:
    """What the source reported of its sub-operations (one per instance it sent)."""

    completed: int
    failed: int
    warning: int

    @property
    def instances(self) -> int:
        return self.completed + self.failed + self.warning


class Retriever:
    """C-MOVE to the node (`ae_title`) from one source at a time; `timeout_s` bounds each wait
    for the source (an association, each pending answer while it sends)."""

    def __init__(self, ae_title: str, timeout_s: float, tls: ssl.SSLContext | None = None) -> None:
        self.ae_title, self.timeout_s, self.tls = ae_title, timeout_s, tls

    def retrieve(self, source: DicomSource, study_uid: str, series_uid: str | None) -> Retrieved:
        from pydicom import Dataset
        from pynetdicom import AE
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            StudyRootQueryRetrieveInformationModelFind as FIND,
        )
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            StudyRootQueryRetrieveInformationModelMove as MOVE,
        )

        query = Dataset()
        query.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
        query.StudyInstanceUID = study_uid
        if series_uid:
            query.SeriesInstanceUID = series_uid
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
            if not self._matches(assoc, query, FIND, source):
                raise NotHeld(
                    f"source '{source.name}' holds no such {query.QueryRetrieveLevel.lower()}"
                )
            final = None
            for status, _ in assoc.send_c_move(query, self.ae_title, MOVE):
                if status is None or "Status" not in status:  # no answer in time, or aborted
                    raise RetrieveFailed(f"source '{source.name}' stopped answering")
                if int(status.Status) not in PENDING:
                    final = status
        finally:
            if assoc.is_established:
                assoc.release()
        if final is None:
            raise RetrieveFailed(f"source '{source.name}' gave no final answer")
        found = Retrieved(
            *(int(final.get(f"NumberOf{n}Suboperations", 0) or 0)
              for n in ("Completed", "Failed", "Warning"))
        )  # fmt: skip
        code = int(final.Status)
        log.info(
            "retrieval of study %s from %s: status 0x%04X, %d sent, %d failed",
            uid_hash(study_uid), source.name, code, found.completed + found.warning, found.failed,
        )  # fmt: skip
        if code in (SUCCESS, WARNING) or (code & 0xF000) == 0xB000 or found.completed:
            return found  # what came is classified; the counts say what did not
        raise RetrieveFailed(f"source '{source.name}': {FAILURES.get(code) or self._unsent(code)}")

    def _unsent(self, code: int) -> str:
        # Found, yet nothing sent: most often the source could not store to the node (PACSs,
        # Orthanc among them, answer that with a bare 0xC000).
        return (
            f"it has what was asked but sent none of it (status 0x{code:04X}): it must be in"
            " SCANTUNE_DICOM_ALLOWED_CALLERS (its AE title and address) and know the node as"
            f" AE title '{self.ae_title}' at the node's address and DICOM port"
        )

    @staticmethod
    def _matches(assoc: Any, query: Any, model: Any, source: DicomSource) -> bool:
        """Whether the source finds the study (or series) the query names."""
        found = False
        for status, _ in assoc.send_c_find(query, model):
            if status is None or "Status" not in status:
                raise RetrieveFailed(f"source '{source.name}' stopped answering")
            code = int(status.Status)
            if code in PENDING:
                found = True
            elif code != SUCCESS:
                raise RetrieveFailed(
                    f"source '{source.name}' refused the query (status 0x{code:04X})"
                )
        return found
