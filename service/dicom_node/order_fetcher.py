"""The order fetcher: a thread that has the order source send the studies of each waiting
order (C-FIND by accession number, then C-MOVE to the node), retried with back-off while the
exam is not in the PACS yet (a RIS often orders before the images exist) or the source is
away, until `SCANTUNE_DICOM_ORDER_WAIT_H` after the order came. A thread of its own, so a
slow PACS never holds up the queue worker's deliveries. A study a purge blocks is not
fetched: an order that finds only such studies ends fetched with none, saying why."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from service.dicom_node import metrics
from service.dicom_node.background import Background
from service.dicom_node.order_book import DueOrder, OrderBook
from service.dicom_node.peers import DicomSource
from service.dicom_node.retrieve import Asked, Blocked, NotHeld, RetrieveFailed, Retriever
from service.jobs.store import utcnow

log = logging.getLogger("scantune.dicom")


class OrderFetcher(Background):
    name = "hl7-order-fetcher"

    def __init__(
        self,
        book: OrderBook,
        retriever: Retriever,
        source: DicomSource,
        *,
        wait_h: float,
        backoff: Callable[[int], float],
    ) -> None:
        """`backoff`: the delay after so many failed tries (the queue worker's, so orders and
        deliveries are retried alike)."""
        self.book, self.retriever, self.source = book, retriever, source
        self.wait, self.backoff = timedelta(hours=wait_h), backoff
        self.poll_s = min(1.0, backoff(0))
        super().__init__()

    def step(self) -> bool:
        due = self.book.due()
        for order in due:
            self.fetch(order)
        return bool(due)

    def fetch(self, order: DueOrder) -> None:
        """One try at an order: fetched, tried again later, or expired past the wait."""
        try:
            found = self.retriever.retrieve(self.source, Asked(accession=order.accession))
        except Blocked as exc:
            self.book.blocked(order.id, str(exc))
            metrics.ORDERS.labels("blocked").inc()
            log.info("HL7 order %d: its studies are blocked by purge %d", order.id, exc.purge_id)
            return
        except (NotHeld, RetrieveFailed) as exc:
            why = str(exc) if isinstance(exc, RetrieveFailed) else "not in the PACS yet"
            if utcnow() - order.created_at >= self.wait:
                self.book.expired(order.id, why)
                metrics.ORDERS.labels("expired").inc()
                log.error("HL7 order %d expired unfetched: %s", order.id, why)
                return
            delay = self.backoff(order.attempts)
            self.book.later(order.id, why, delay)
            log.info("HL7 order %d not fetched (%s); again in %.0f s", order.id, why, delay)
            return
        self.book.fetched(order.id, found.studies)
        metrics.ORDERS.labels("fetched").inc()
        log.info(
            "HL7 order %d: %d study(ies), %d instance(s) sent, %d failed",
            order.id, len(found.studies), found.completed + found.warning, found.failed,
        )  # fmt: skip
