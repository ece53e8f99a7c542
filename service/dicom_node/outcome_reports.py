"""Outcomes from the RIS's final reports: the radiologist's confirmed read of an exam, matched
to the classes of the model that classified its scans, reported to the training service
(`POST /v1/models/{name}/versions/{n}/outcomes`), where it shows how the version does in
service beside its card's figures.

Opt-in: only models named in `SCANTUNE_DICOM_OUTCOME_CODES` (`{model: {class: [codes]}}`) are
followed. Each scan they classify is remembered (`outcome_book`); the RIS's ORU^R01 for its
accession number comes on the orders' HL7 port (`orders.OrderListener`); a final or corrected
report naming the codes of exactly one class labels the exam's scans (those classified
after it too: the report is kept), which are then sent, at most 1,000 a request; a later one
that confirms no class of the model (the finding struck, two classes named) retracts them
(`POST …/outcomes/retract`), for the newest final report is the exam's truth. Both go with
back-off while the training service is away, from a thread of their own (a training service
that hangs holds up no result). No scan data, UID or accession
number leaves the node: a scan is reported by a hash of its SOP Instance UID.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

import requests

from service.dicom_node import metrics
from service.dicom_node.background import Background
from service.dicom_node.outcome_book import Batch, OutcomeBook
from service.hospital.hl7_reports import Report, classes_named
from service.jobs.store import utcnow

if TYPE_CHECKING:
    from pydicom import Dataset

    from service.dicom_node.classify import Classification

log = logging.getLogger("scantune.dicom")
TIMEOUT_S = 30.0
EXPIRE_EVERY_S = 60.0
SETTLED = timedelta(days=1)  # a report's scans have come by then, or they will not
RETRIED = frozenset({408, 425, 429})  # 4xx that say "later", not "no"

Codes = Mapping[str, Mapping[str, Sequence[str]]]


class OutcomeReports(Background):
    name = "outcome-reports"

    def __init__(
        self,
        book: OutcomeBook,
        codes: Codes,
        training_url: str,
        api_key: str | None,
        wait: timedelta,
        backoff: Callable[[int], float],
    ) -> None:
        self.book, self.codes, self.wait, self.backoff = book, codes, wait, backoff
        self.url = training_url.rstrip("/")
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self._expired_at = 0.0
        super().__init__()

    def remember(self, sources: Sequence[Dataset], found: Classification) -> None:
        """Keep the scans of a series classified by a followed model, by accession number (a
        scan without one cannot be matched to a report, and is not kept)."""
        model = str(found.model["name"])
        if model not in self.codes:
            return
        by_exam: dict[str, list[tuple[str, dict[str, float], str | None]]] = {}
        for source, prediction in zip(sources, found.predictions, strict=True):
            accession = str(source.get("AccessionNumber") or "").strip()
            if accession:
                answered = dict(prediction["probabilities"])
                scan = (str(source.SOPInstanceUID), answered, prediction.get("signature"))
                by_exam.setdefault(accession, []).append(scan)
        for accession, scans in by_exam.items():
            self.book.remember(accession, model, int(found.model["version"]), scans)
            codes = self.book.report_codes(accession)
            if codes is not None:  # the exam was reported before these scans came
                self.book.label(accession, Labeller(self.codes, codes))

    def take(self, report: Report) -> str:
        """Label the exam's scans with the class the report confirms, or withdraw the label
        an earlier report gave them; what became of it. A final report naming a followed
        class is kept for scans of the exam classified later (`held`: none yet)."""
        if not report.final:
            return "not_final"
        followed = any(classes_named(classes, report.codes) for classes in self.codes.values())
        if followed:
            self.book.keep_report(report.accession, report.codes)
        else:  # nothing of it is kept, and the exam's earlier report is superseded
            self.book.drop_report(report.accession)
        if not self.book.known(report.accession):
            return "held" if followed else "unmapped"
        labeller = Labeller(self.codes, report.codes)
        labelled, withdrawn = self.book.label(report.accession, labeller)
        if labelled:
            return "labelled"
        if withdrawn:
            return "retracted"
        return "ambiguous" if labeller.ambiguous else "unmapped"

    def step(self) -> bool:
        """Send the outcomes due, forget the old; whether anything was sent."""
        if time.monotonic() - self._expired_at > EXPIRE_EVERY_S:
            self._expired_at = time.monotonic()
            dropped = self.book.forget_before(utcnow() - self.wait)
            if dropped:
                metrics.OUTCOMES.labels("expired").inc(dropped)
                log.error("%d confirmed outcomes deleted unsent at dicom_outcome_wait_h", dropped)
            held, matched = self.book.report_matches(utcnow() - SETTLED)
            metrics.EXAM_REPORTS.labels("held").set(held)
            metrics.EXAM_REPORTS.labels("matched").set(matched)
        batches = self.book.due()
        for batch in batches:
            self.send(batch)
        return bool(batches)

    def send(self, batch: Batch) -> None:
        path = f"/v1/models/{quote(batch.model)}/versions/{batch.version}/outcomes"
        if batch.retracts:
            path, body = path + "/retract", {"references": [o["reference"] for o in batch.outcomes]}
        else:
            body = {"outcomes": batch.outcomes}
        try:
            answer = self.session.post(self.url + path, json=body, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            return self._later(batch, f"training service unreachable ({type(exc).__name__})")
        if answer.ok:
            self.book.sent(batch)
            done = "retracted" if batch.retracts else "sent"
            metrics.OUTCOMES.labels(done).inc(len(batch.ids))
            log.info("%d outcomes %s for %s v%d", len(batch.ids), done, batch.model,
                     batch.version)  # fmt: skip
            return None
        why = f"training service answered {answer.status_code}: {_detail(answer)}"
        if answer.status_code >= 500 or answer.status_code in RETRIED:
            return self._later(batch, why)
        self.book.refused(batch, why)
        metrics.OUTCOMES.labels("refused").inc(len(batch.ids))
        log.error("%d outcomes for %s v%d refused: %s", len(batch.ids), batch.model,
                  batch.version, why)  # fmt: skip
        return None

    def _later(self, batch: Batch, why: str) -> None:
        delay = self.backoff(batch.attempts)
        self.book.later(batch, why, delay)
        metrics.OUTCOMES.labels("retried").inc(len(batch.ids))
        log.warning("outcomes for %s v%d not sent: %s; retry in %.0f s", batch.model,
                    batch.version, why, delay)  # fmt: skip


class Labeller:
    """The class a report's codes confirm for a model's scans (`OutcomeBook.label`): None
    when they name none of its classes, or two (`ambiguous`: a person decides)."""

    def __init__(self, codes: Codes, found: frozenset[str]) -> None:
        self.codes, self.found, self.ambiguous = codes, found, False

    def __call__(self, model: str, classes: list[str]) -> str | None:
        named = classes_named(self.codes.get(model, {}), self.found)
        if len(named) > 1:
            self.ambiguous = True
        if len(named) != 1:
            return None
        label = named.pop()
        if label not in classes:  # the site's mapping names a class the model lacks
            log.warning("dicom_outcome_codes: %r is not a class of model %s", label, model)
            return None
        return label


def _detail(answer: requests.Response) -> str:
    """The problem's detail (it names the field and rule, never scan data), else its title."""
    try:
        body = answer.json()
    except ValueError:
        return answer.reason or "no detail"
    return str(body.get("detail") or body.get("title") or "no detail")[:200]
