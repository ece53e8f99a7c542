"""Building the node: its services once, the HTTP app over them, the SCP and worker beside."""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask
from sqlalchemy import text

from service.config import DicomNodeSettings
from service.dicom_node.classify import InferenceClient
from service.dicom_node.delivery import Sender, sender_for
from service.dicom_node.intake import Intake
from service.dicom_node.moves import Arrivals
from service.dicom_node.order_book import OrderBook
from service.dicom_node.order_fetcher import OrderFetcher
from service.dicom_node.orders import OrderListener
from service.dicom_node.outcome_book import OutcomeBook
from service.dicom_node.outcome_reports import OutcomeReports
from service.dicom_node.queue import WorkQueue
from service.dicom_node.redact import use_salt
from service.dicom_node.registry_watch import RegistryWatch
from service.dicom_node.retrieval_jobs import RetrievalJobs
from service.dicom_node.retrieve import Retriever
from service.dicom_node.routing import Router
from service.dicom_node.scp import CallerList, HostList, StorageSCP
from service.dicom_node.spool import Spool
from service.dicom_node.worker import Worker
from service.jobs.database import make_engine, migrate

EXTENSION = "scantune.dicom"
SEND_TIMEOUT_S = 30.0


@dataclass
class NodeServices:
    settings: DicomNodeSettings
    queue: WorkQueue
    intake: Intake
    worker: Worker
    scp: StorageSCP
    retriever: Retriever
    orders: OrderBook
    retrieval_jobs: RetrievalJobs
    order_listener: OrderListener | None = None  # with SCANTUNE_DICOM_HL7_PORT
    order_fetcher: OrderFetcher | None = None
    registry_watch: RegistryWatch | None = None  # with SCANTUNE_DICOM_FOLLOW_WITHDRAWALS
    hl7_port: int | None = None  # once listening
    dicom_port: int | None = None  # once listening
    dicom_tls_port: int | None = None  # once listening, when TLS has a port of its own


def build_services(settings: DicomNodeSettings) -> NodeServices:
    use_salt(settings.audit_salt)  # of the UID hashes in logs and audit records
    engine = make_engine(settings.database_url)
    migrate(engine)
    queue = WorkQueue(engine)
    spool = Spool(settings.dicom_spool_dir)
    client = InferenceClient(
        settings.inference_url, settings.dicom_inference_api_key, settings.dicom_inference_timeout_s
    )
    client_tls = (
        settings.dicom_client_tls()
        if any(d.uses_tls for d in settings.dicom_destinations)
        or any(s.tls for s in settings.dicom_sources)
        else None
    )
    https = settings.dicom_https_tls()
    senders: dict[str, Sender] = {
        d.key: sender_for(
            d, settings.dicom_ae_title, SEND_TIMEOUT_S, client_tls, https, settings.dicom_uid_root
        )
        for d in settings.dicom_destinations
    }
    worker = Worker(settings, queue, spool, client, senders)
    blocks = worker.purges.blocks  # the studies purges block: not taken in, not fetched
    router = Router(settings.dicom_routes, settings.dicom_destinations)
    intake = Intake(router, spool, queue, blocks)
    if settings.dicom_outcome_codes:
        worker.outcomes = OutcomeReports(
            OutcomeBook(engine), settings.dicom_outcome_codes, settings.training_url,
            settings.dicom_training_api_key, timedelta(hours=settings.dicom_outcome_wait_h),
            worker.backoff,
        )  # fmt: skip
    arrivals = Arrivals()  # what the SCP takes in of each C-MOVE, for the retriever
    callers = CallerList(settings.dicom_allowed_callers)
    scp = StorageSCP(settings.dicom_ae_title, callers, intake, arrivals)
    retriever = Retriever(
        settings.dicom_ae_title,
        settings.dicom_retrieve_timeout_s,
        client_tls,
        blocks.blocking,
        cancel_grace_s=settings.dicom_retrieve_cancel_grace_s,
        arrivals=arrivals,
    )
    from service.dicom_node.retrievals import audited  # the view's own count and record

    jobs = RetrievalJobs(engine, retriever, on_done=audited)
    node = NodeServices(settings, queue, intake, worker, scp, retriever, OrderBook(engine), jobs)
    if settings.dicom_follow_withdrawals:
        node.registry_watch = RegistryWatch(
            worker.recalls, settings.training_url, settings.dicom_training_api_key,
            settings.dicom_withdrawal_check_s,
        )  # fmt: skip
    if settings.dicom_hl7_port is not None:
        hosts = HostList(settings.dicom_hl7_allowed_hosts)
        field = settings.dicom_order_accession_field
        tls = settings.dicom_server_tls() if settings.dicom_hl7_tls else None
        source = settings.source(str(settings.dicom_order_source))  # none: reports only
        orders = node.orders if source is not None else None
        node.order_listener = OrderListener(orders, hosts, field, tls, reports=worker.outcomes)
        if source is not None:
            node.order_fetcher = OrderFetcher(
                node.orders, retriever, source,
                wait_h=settings.dicom_order_wait_h, backoff=worker.backoff,
            )  # fmt: skip
    return node


def create_app(settings: DicomNodeSettings | None = None, *, start: bool = True) -> Flask:
    """The node's HTTP app; with `start`, the SCP and the queue worker run beside it."""
    from service.dicom_node import (
        operations,
        orders_api,
        outcomes_api,
        purges_api,
        recalls_api,
        retrievals,
        stow,
    )
    from service.logs import configure_logging
    from service.web import add_readiness_check, create_base_app

    settings = settings or DicomNodeSettings()
    configure_logging(settings)  # JSON lines as the other services write, DICOM libraries held
    if any(d.attention_maps for d in settings.dicom_destinations):
        from models import scans

        scans.configure(decoders=1)  # maps decode scans: GDCM only in its sealed helper
    node = build_services(settings)
    app = create_base_app(__name__, settings, service="dicom")
    app.extensions[EXTENSION] = node
    app.register_blueprint(stow.bp)
    app.register_blueprint(operations.bp)
    app.register_blueprint(retrievals.bp)
    app.register_blueprint(orders_api.bp)
    app.register_blueprint(outcomes_api.bp)
    app.register_blueprint(recalls_api.bp)
    app.register_blueprint(purges_api.bp)
    app.extensions.setdefault("scantune.metrics_hooks", []).append(node.worker.observe)
    add_readiness_check(app, "database", lambda: _ping(node.queue))
    add_readiness_check(app, "dicom", lambda: _listening(node))
    if node.order_listener is not None:
        add_readiness_check(app, "hl7", lambda: _taking_orders(node))
    if start:
        start_node(node)
    return app


def start_node(node: NodeServices) -> None:
    # highdicom's import takes a second or more: at start, not in the first series' latency.
    import highdicom  # noqa: F401

    import service.hospital.sr  # noqa: F401

    settings = node.settings
    ports = []
    for port, tls in settings.dicom_listeners():
        ports.append(node.scp.start(settings.dicom_bind_host, port, tls))
        logging.getLogger("scantune.dicom").info(
            "DICOM node %s listening on %s:%d (%s)",
            settings.dicom_ae_title, settings.dicom_bind_host, ports[-1],
            "TLS" if tls else "plain DICOM",
        )  # fmt: skip
    node.dicom_port = ports[0]
    node.dicom_tls_port = ports[1] if len(ports) > 1 else None
    if node.retrieval_jobs.recover():
        logging.getLogger("scantune.dicom").warning("retrievals cut short by a stop: failed")
    node.worker.start()
    if node.worker.outcomes is not None:
        node.worker.outcomes.start()
    if node.registry_watch is not None:
        node.registry_watch.start()
    if node.order_listener is not None:
        node.hl7_port = node.order_listener.start(
            settings.dicom_bind_host, int(settings.dicom_hl7_port or 0)
        )
        if node.order_fetcher is not None:
            node.order_fetcher.start()
        logging.getLogger("scantune.dicom").info(
            "HL7 %s taken on %s:%d", "orders" if node.order_fetcher else "reports",
            settings.dicom_bind_host, node.hl7_port,
        )  # fmt: skip
    atexit.register(stop_node, node)


def stop_node(node: NodeServices) -> None:
    node.scp.stop()
    node.retrieval_jobs.stop()
    if node.order_listener is not None:
        node.order_listener.stop()
    if node.order_fetcher is not None:
        node.order_fetcher.stop()
    if node.worker.outcomes is not None:
        node.worker.outcomes.stop()
    if node.registry_watch is not None:
        node.registry_watch.stop()
    node.worker.stop()


def _ping(queue: WorkQueue) -> None:
    with queue.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _taking_orders(node: NodeServices) -> None:
    if node.order_listener is None or not node.order_listener.listening:
        raise RuntimeError("the HL7 order listener is not listening")


def _listening(node: NodeServices) -> None:
    if node.dicom_port is None or not node.scp.listening:
        raise RuntimeError("the Storage SCP is not listening")
