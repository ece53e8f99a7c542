"""The node's Prometheus metrics; labels never carry UIDs, AE titles or patient data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECEIVED = Counter(
    "scantune_dicom_instances_received_total",
    "DICOM instances received, by transport and what became of them",
    # via: dimse | stow; outcome: stored | duplicate | unrouted | refused | purged (of a study
    # a purge blocks: acknowledged, dropped)
    ["via", "outcome"],
)
PURGES = Counter(
    "scantune_dicom_purges_total",
    "Purges of a study sent by mistake, applied by the queue worker, by whether each blocks"
    " the study from then on",
    ["blocked"],  # true | false
)
UNROUTED = Counter(
    "scantune_dicom_series_unrouted_total", "Series no routing rule matched (dropped)"
)
REJECTED = Counter(
    "scantune_dicom_associations_rejected_total", "Associations refused: caller not allowed"
)
CLASSIFIED = Counter("scantune_dicom_series_classified_total", "Series classified (SR made)")
CLASSIFY_FAILURES = Counter(
    "scantune_dicom_classification_failures_total",
    "Classification attempts that failed, by whether they are retried",
    ["final"],
)
DELIVERED = Counter(
    "scantune_dicom_results_delivered_total", "Results delivered to a destination", ["kind"]
)
DELIVERY_FAILURES = Counter(
    "scantune_dicom_delivery_failures_total",
    "Delivery attempts that failed (retried with back-off)",
    ["kind"],
)
DELIVERY_SKIPPED = Counter(
    "scantune_dicom_deliveries_skipped_total",
    "Results not sent to a destination that takes only findings no scan was answered",
    ["kind"],
)
DELIVERY_REJECTED = Counter(
    "scantune_dicom_deliveries_rejected_total",
    "Deliveries a destination refused for what the result is (not retried)",
    ["kind"],
)
WITHDRAWALS = Counter(
    "scantune_dicom_withdrawals_total",
    "Tries to withdraw a recalled version's result from a destination, by outcome:"
    " done | failed (tried again) | rejected (refused: not retried)",
    ["kind", "outcome"],
)
ATTENTION_MAPS = Counter(
    "scantune_dicom_attention_maps_total",
    "Scans of series bound for a destination that takes maps, by whether one was made",
    ["outcome"],  # made | none (no map from inference, or the scan did not decode)
)
RETRIEVALS = Counter(
    "scantune_dicom_retrievals_total",
    "Studies asked of a source PACS, by outcome",
    ["outcome"],  # ok | not_found | failed | blocked (a study a purge blocks: not fetched)
)
ORDERS = Counter(
    "scantune_dicom_orders_total",
    "HL7 orders from the RIS, by what became of them",
    # queued | duplicate | cancelled | ignored | refused (at the listener); fetched | expired |
    # blocked (its studies all blocked by a purge: nothing fetched)
    ["outcome"],
)
REPORTS = Counter(
    "scantune_dicom_reports_total",
    "The RIS's reports (HL7 ORU^R01), one an exam, by what became of them",
    # labelled (the scans got the confirmed class) | retracted (a corrected report confirms no
    # class: the labels it gave are withdrawn) | unmapped (no code of a class) | ambiguous
    # (codes of two classes) | not_final | held (no scan of the exam yet: kept for those to
    # come) | refused (a message without an accession number)
    ["outcome"],
)
OUTCOMES = Counter(
    "scantune_dicom_outcomes_total",
    "Confirmed outcomes of classified scans, sent to the training service, by result",
    # sent | retracted (a withdrawn one, at the training service) | refused (a 4xx: not sent
    # again) | retried | expired (never sent)
    ["outcome"],
)
EXAM_REPORTS = Gauge(
    "scantune_dicom_exam_reports",
    "The RIS's final reports kept that came over a day ago, by whether a scan of their exam"
    " came: held (none yet) or matched",
    ["state"],
    multiprocess_mode="mostrecent",
)
EXPIRED = Counter(
    "scantune_dicom_series_expired_total", "Series deleted undelivered at the retention limit"
)
QUEUE_DEPTH = Gauge(
    "scantune_dicom_queue_depth",
    "Series received and not yet delivered everywhere",
    multiprocess_mode="mostrecent",
)
OLDEST_PENDING = Gauge(
    "scantune_dicom_oldest_pending_seconds",
    "Age of the oldest series not yet delivered everywhere (0: none)",
    multiprocess_mode="mostrecent",
)
