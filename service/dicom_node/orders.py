"""Orders from the RIS: an MLLP listener (`SCANTUNE_DICOM_HL7_PORT`) that takes HL7 v2
orders (ORM^O01, OMI^O23) from the senders in `SCANTUNE_DICOM_HL7_ALLOWED_HOSTS`, keeps each
order in the order book and only then answers AA; the order fetcher then has the order source
send the exam's studies (C-MOVE by accession number), which are classified and delivered like
any.

With outcomes followed (`SCANTUNE_DICOM_OUTCOME_CODES`), the RIS's reports (ORU^R01) are
taken too, for `outcome_reports`; a site that only sends reports names no order source, and
its node answers orders AR. A connection from an address not allowed is closed before
a byte is read. A message that is not an order (nor a report taken) is answered AR, an order
without an accession number AE, and one the database could not keep AE too (the engine
sends it again). Several messages may come over one connection, as integration engines keep
theirs open. By hand on the standard library's socketserver: hl7apy's MLLP server reads one
message per connection and closes it, and takes no allow-list.
"""

from __future__ import annotations

import logging
import socketserver
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from service.dicom_node import metrics
from service.dicom_node.mllp import END, START
from service.dicom_node.order_book import OrderBook
from service.dicom_node.scp import HostList
from service.hospital.hl7_orders import (
    AccessionField,
    Header,
    Refused,
    build_ack,
    order_of,
    read_message,
)
from service.hospital.hl7_reports import REPORT_TYPE, Report, reports_of

if TYPE_CHECKING:
    from service.dicom_node.outcome_reports import OutcomeReports

log = logging.getLogger("scantune.dicom")
MAX_MESSAGE = 1 << 20  # an order is a few kilobytes; a megabyte is a misbehaving peer


class OrderListener:
    def __init__(
        self,
        book: OrderBook | None,
        senders: HostList,
        field: AccessionField,
        tls: ssl.SSLContext | None = None,
        timeout_s: float = 60.0,
        reports: OutcomeReports | None = None,
    ) -> None:
        self.book, self.senders, self.field, self.timeout_s = book, senders, field, timeout_s
        self.tls, self.reports = tls, reports
        self.server: socketserver.ThreadingTCPServer | None = None

    def start(self, host: str, port: int) -> int:
        """Listen in a thread of its own; returns the port (`port` 0 picks one)."""
        listener = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn = self.request
                if listener.tls is not None:
                    conn.settimeout(listener.timeout_s)
                    try:  # a plain or untrusted sender fails here, before a byte is read
                        conn = listener.tls.wrap_socket(conn, server_side=True)
                    except (OSError, ssl.SSLError) as exc:
                        metrics.ORDERS.labels("refused").inc()
                        log.warning("HL7 TLS handshake failed: %s", type(exc).__name__)
                        return
                listener.serve(conn)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = allow_reuse_address = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                if listener.senders.allows(str(client_address[0])):
                    return True
                metrics.ORDERS.labels("refused").inc()
                log.warning("HL7 connection refused: the address is not an allowed sender")
                return False

        self.server = Server((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, name="hl7-orders", daemon=True).start()
        return int(self.server.server_address[1])

    @property
    def listening(self) -> bool:
        return self.server is not None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def serve(self, conn: Any) -> None:
        """Answer each framed message on the connection until the sender closes it."""
        conn.settimeout(self.timeout_s)
        data = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:  # a timeout included: the sender went quiet
                return
            if not chunk:
                return
            data += chunk
            if len(data) > MAX_MESSAGE:
                log.warning("HL7 message too long: connection closed")
                return
            while END in data:
                frame, data = data.split(END, 1)
                start = frame.find(START)
                if start < 0:  # not MLLP
                    return
                conn.sendall(START + self.answer(frame[start + 1 :]) + END)

    def answer(self, message: bytes) -> bytes:
        """Take one message (an order, or with outcomes followed a report); its
        acknowledgement."""
        counter = metrics.ORDERS
        try:
            parsed = read_message(message)
            if parsed.kind == REPORT_TYPE and self.reports is not None:
                counter = metrics.REPORTS
                return self.report(reports_of(parsed, self.field))
            order = order_of(parsed, self.field)
            if self.book is None:
                raise Refused(
                    "AR", "orders are not taken here (no dicom_order_source): reports only",
                    order.header,
                )  # fmt: skip
        except Refused as exc:
            counter.labels("refused").inc()
            log.warning("HL7 message answered %s: %s", exc.code, exc)
            return build_ack(exc.header, exc.code, str(exc))

        book = self.book

        def take() -> list[str]:
            if order.cancels:
                return ["cancelled" if book.cancel(order.accession) else "ignored"]
            return [book.take(order.accession)]

        return self._kept(order.header, "order", order.control, take, metrics.ORDERS)

    def report(self, reports: list[Report]) -> bytes:
        """Take a message's reports, one an exam: each labels its exam's scans when it is
        final and names one class."""
        outcomes = self.reports
        assert outcomes is not None
        statuses = ",".join(r.status or "-" for r in reports)
        return self._kept(
            reports[0].header, "report", statuses,
            lambda: [outcomes.take(r) for r in reports], metrics.REPORTS,
        )  # fmt: skip

    def _kept(
        self,
        header: Header,
        what: str,
        detail: str,
        take: Callable[[], list[str]],
        counter: Counter,
    ) -> bytes:
        """AA once `take` has kept the message (what it did with each exam it names, counted
        and logged); AE when it could not (the database away: the engine sends it again,
        and what was kept of it is taken again the same way)."""
        try:
            outcomes = take()
        except Exception as exc:
            log.error("HL7 %s not kept: %s", what, type(exc).__name__)
            return build_ack(header, "AE", f"the {what} could not be kept; send it again")
        for outcome in outcomes:
            counter.labels(outcome).inc()
        log.info("HL7 %s (%s): %s", what, detail or "-", ",".join(outcomes))
        return build_ack(header, "AA")
