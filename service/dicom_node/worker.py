"""The queue worker: classifies series once they fall quiet, delivers their results with
back-off, applies purges and recalls and withdraws a recalled version's results, and deletes
what is delivered or past the retention limit. One thread per node."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from service.config import DicomNodeSettings
from service.dicom_node import metrics
from service.dicom_node.classify import Classification, InferenceClient, Rejected, Unavailable
from service.dicom_node.delivery import NotDelivered, Sender
from service.dicom_node.delivery import Rejected as DeliveryRejected
from service.dicom_node.maps import build_maps, read_maps
from service.dicom_node.purges import PurgeBook
from service.dicom_node.queue import Due, WorkQueue, chosen_destinations
from service.dicom_node.recalls import DueWithdrawal, RecallBook
from service.dicom_node.redact import uid_hash
from service.dicom_node.report import build_report, result_uids
from service.dicom_node.routing import Router
from service.dicom_node.spool import Spool, maps_file
from service.dicom_node.tables import SeriesRow
from service.jobs.store import utcnow

if TYPE_CHECKING:
    from pydicom import Dataset

    from service.dicom_node.outcome_reports import OutcomeReports

log = logging.getLogger("scantune.dicom")
RECALL_SWEEP_S = 60.0  # kept results and withdrawals age in hours: not every round


class Worker:
    def __init__(
        self,
        settings: DicomNodeSettings,
        queue: WorkQueue,
        spool: Spool,
        client: InferenceClient,
        senders: dict[str, Sender],
    ) -> None:
        self.settings, self.queue, self.spool = settings, queue, spool
        self.client, self.senders = client, senders
        self.router = Router(settings.dicom_routes, settings.dicom_destinations)
        self.recalls = RecallBook(queue.engine, queue.lock)
        salts = [settings.audit_salt, settings.audit_salt_previous]  # previous: while rotating
        self.purges = PurgeBook(queue.engine, queue.lock, [s for s in salts if s is not None])
        self.outcomes: OutcomeReports | None = None  # with dicom_outcome_codes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Classification waits on inference: a few series at once keep its workers busy.
        self._slots = threading.Semaphore(settings.dicom_classify_concurrency)
        self._pool = ThreadPoolExecutor(
            settings.dicom_classify_concurrency, thread_name_prefix="dicom-classify"
        )
        self.poll_s = min(0.5, settings.dicom_series_quiet_s / 4)
        self._recalls_swept_at = float("-inf")

    def start(self) -> None:
        recovered = self.queue.recover()
        if recovered:
            log.info("%d series cut short by a restart will be classified again", recovered)
        self.sweep_leftovers()
        self._thread = threading.Thread(target=self._run, name="dicom-queue", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(Exception):  # the last drops counted; lost if it is away
            self.purges.blocks.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception as exc:  # e.g. the database away for a moment: carry on
                log.error("queue step failed: %s", type(exc).__name__)
                busy = False
            if not busy:
                self._stop.wait(self.poll_s)

    def step(self) -> bool:
        """One round: read the purges' blocks again when due (and write the instances they
        dropped), apply new purges (before anything of their studies is claimed or sent),
        expire, start classifying the quiet series there are free slots for (one of a study
        a purge blocks is purged instead: `_classify_in_slot`), apply new recalls, attempt the
        due deliveries (none of a version recalled, unless its recall was lifted) and
        withdrawals (a lifted recall's go on)."""
        self.purges.blocks.refresh(due_only=True)
        self.purges.apply_new(self.spool.delete, self.outcomes.book if self.outcomes else None)
        self.expire()
        started = 0
        while self._slots.acquire(blocking=False):
            row = self.queue.claim_quiet(self.settings.dicom_series_quiet_s)
            if row is None:
                self._slots.release()
                break
            self._pool.submit(self._classify_in_slot, row)
            started += 1
        for series_id in self.recalls.apply_new():
            self.clean(series_id, keep_result=self.recalls.pending(series_id))
        due = self.queue.due_deliveries()
        held = self.recalls.held({item.series_id for item in due})
        if held:  # classified as (or after) their version was recalled: never sent
            self.recalls.apply_to(held)
        for item in due:
            if item.series_id not in held:
                self.deliver(item)
        withdrawals = self.recalls.due()
        for withdrawal in withdrawals:
            self.withdraw(withdrawal)
        self.observe()
        return started > 0 or bool(due) or bool(withdrawals)

    def _classify_in_slot(self, row: SeriesRow) -> None:
        try:
            book = self.outcomes.book if self.outcomes else None
            if self.purges.caught(row, self.spool.delete, book):  # came as it was purged
                log.info("series %s of a blocked study purged", uid_hash(row.series_uid))
                return
            self.classify(row)
        except Exception as exc:  # e.g. the spool or database away for a moment
            log.error("classification of a series stopped: %s", type(exc).__name__)
            # Still away: `recover` puts the series back in line on the next start.
            with contextlib.suppress(Exception):
                self.queue.retry_later(row.id, type(exc).__name__, self.backoff(row.attempts))
        finally:
            self._slots.release()

    def observe(self) -> None:
        stats = self.queue.stats()
        metrics.QUEUE_DEPTH.set(stats.depth)
        metrics.OLDEST_PENDING.set(stats.oldest_age_s)

    # --- classification ----------------------------------------------------------------------

    def classify(self, row: SeriesRow) -> None:
        from pydicom import dcmread

        instances = self.queue.instances(row.id)
        files = [self.spool.read(i.file) for i in instances if i.file]
        if not files or len(files) != len(instances):
            return self._fail(row, "instance files are missing from the spool")
        chosen = chosen_destinations(row)  # None: the route named none, so every one
        targets = list(self.senders) if chosen is None else chosen
        maps = any(self.senders[t].attention_maps for t in targets if t in self.senders)
        try:
            found = self.client.classify(str(row.model), row.alias, files, explain=maps)
            sources = [dcmread(io.BytesIO(f), stop_before_pixels=True) for f in files]
            version = int(found.model["version"])
            sops = [i.sop_instance_uid for i in instances]
            root = self.settings.dicom_uid_root
            uids = result_uids(
                root, row.study_uid, row.series_uid, str(row.model), version, sops, row.generation
            )
            sr = build_report(sources, found, uids, root, self.settings.result_disclaimer)
        except Unavailable as exc:
            return self._later(row, str(exc))
        except Exception as exc:  # Rejected, or sources the report cannot reference
            reason = str(exc) if isinstance(exc, Rejected) else type(exc).__name__
            return self._fail(row, reason)
        name = self.spool.write(sr, ".sr.dcm")
        if maps:  # before the row names the SR: a crash in between leaves leftovers, swept
            self.write_maps(name, files, sources, found, row.generation)
        answered = {str(p["label"]) for p in found.predictions}
        classes = {str(c) for p in found.predictions for c in p["probabilities"]}
        skipped = self.router.not_wanted(targets, answered, classes)
        targets = [t for t in targets if t not in skipped]
        if not self.queue.classified(row.id, uids[1], name, targets, skipped, version):
            return self._discard(row, name)
        for key in skipped:
            metrics.DELIVERY_SKIPPED.labels(self.senders[key].kind).inc()
        metrics.CLASSIFIED.inc()
        self.remember(row.id, sources, found)
        log.info(
            "series %s classified by %s v%s: result %s for %d instance(s)",
            uid_hash(row.series_uid), row.model, version, uid_hash(uids[1]), len(files),
        )  # fmt: skip
        if not targets:
            self.clean(row.id)

    def remember(self, series_id: int, sources: Sequence[Dataset], found: Classification) -> None:
        """Keep the scans for their outcomes (with `dicom_outcome_codes`); forget them at once
        should their study have been purged since the result was queued."""
        if self.outcomes is None:
            return
        try:
            self.outcomes.remember(sources, found)
            sops = [str(source.SOPInstanceUID) for source in sources]
            self.purges.forget_late_outcomes(series_id, sops, self.outcomes.book)
        except Exception as exc:  # the result still goes; its outcome will not be known
            log.error("classified scans not kept for outcomes: %s", type(exc).__name__)

    def _discard(self, row: SeriesRow, result_file: str) -> None:
        """The series' study was purged while it was classified: its result goes nowhere."""
        self.spool.delete(result_file)
        self.spool.delete(maps_file(result_file))
        log.info("series %s purged while classified: its result deleted", uid_hash(row.series_uid))

    def write_maps(
        self,
        result_file: str,
        files: Sequence[bytes],
        sources: Sequence[Dataset],
        found: Classification,
        generation: int = 1,
    ) -> None:
        root, disclaimer = self.settings.dicom_uid_root, self.settings.result_disclaimer
        try:
            bundle = build_maps(files, sources, found, root, disclaimer, generation)
        except Exception as exc:  # the SR still goes; the maps are the extra
            log.error("attention maps not made: %s", type(exc).__name__)
            return
        if bundle is not None:
            self.spool.write(bundle, name=maps_file(result_file))

    def _later(self, row: SeriesRow, reason: str) -> None:
        attempts = self.queue.retry_later(row.id, reason, self.backoff(row.attempts))
        metrics.CLASSIFY_FAILURES.labels("false").inc()
        log.warning("series %s: %s; retry %d later", uid_hash(row.series_uid), reason, attempts)

    def _fail(self, row: SeriesRow, reason: str) -> None:
        self.queue.finish(row.id, "failed", reason)
        self.clean(row.id)
        metrics.CLASSIFY_FAILURES.labels("true").inc()
        log.error("series %s not classified: %s", uid_hash(row.series_uid), reason)

    # --- delivery ----------------------------------------------------------------------------

    def deliver(self, due: Due) -> None:
        sender = self.senders.get(due.destination)
        if sender is None:  # the destination left the settings: nothing to send it to
            self.queue.delivery_failed(due.delivery_id, "destination not configured", 3600)
            return
        try:
            maps = read_maps(self.spool, due.result_file) if sender.attention_maps else []
            sender.send(self.spool.read(due.result_file), maps)
        except DeliveryRejected as exc:  # retrying cannot help: kept for a person to resend
            self.queue.delivery_rejected(due.delivery_id, str(exc))
            metrics.DELIVERY_REJECTED.labels(sender.kind).inc()
            log.error("delivery to %s rejected: %s; not retried", sender.kind, exc)
            return
        except Exception as exc:
            reason = str(exc) if isinstance(exc, NotDelivered) else type(exc).__name__
            delay = self.backoff(due.attempts)
            self.queue.delivery_failed(due.delivery_id, reason, delay)
            metrics.DELIVERY_FAILURES.labels(sender.kind).inc()
            log.warning("delivery to %s failed: %s; retry in %.0f s", sender.kind, reason, delay)
            return
        metrics.DELIVERED.labels(sender.kind).inc()
        if self.queue.delivered(due.delivery_id) == "done":  # a rejected one keeps its files
            self.clean(due.series_id, keep_result=self.settings.dicom_recall_keep_h > 0)

    def withdraw(self, due: DueWithdrawal) -> None:
        """Withdraw a recalled version's result from one destination it went to."""
        sender = self.senders.get(due.destination)
        if sender is None:
            self.recalls.failed(due.withdrawal_id, "destination not configured", 3600)
            return
        try:
            maps = read_maps(self.spool, due.result_file) if sender.attention_maps else []
            sender.withdraw(self.spool.read(due.result_file), maps, due.reason)
        except DeliveryRejected as exc:
            settled = self.recalls.ended(due.withdrawal_id, "rejected", str(exc))
            metrics.WITHDRAWALS.labels(sender.kind, "rejected").inc()
            log.error("withdrawal at %s rejected: %s; not retried", sender.kind, exc)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, NotDelivered) else type(exc).__name__
            delay = self.backoff(due.attempts)
            self.recalls.failed(due.withdrawal_id, reason, delay)
            metrics.WITHDRAWALS.labels(sender.kind, "failed").inc()
            log.warning("withdrawal at %s failed: %s; retry in %.0f s", sender.kind, reason, delay)
            return
        else:
            settled = self.recalls.ended(due.withdrawal_id, "done")
            metrics.WITHDRAWALS.labels(sender.kind, "done").inc()
        if settled:  # nothing left to withdraw: the result goes
            self.clean(due.series_id)

    def backoff(self, attempts: int) -> float:
        first, most = self.settings.dicom_retry_first_s, self.settings.dicom_retry_max_s
        return float(min(most, first * 2 ** min(attempts, 30)))

    # --- housekeeping ------------------------------------------------------------------------

    def clean(self, series_id: int, *, keep_result: bool = False) -> None:
        """Delete the series' instance files and its result file: it is delivered (or ended);
        `keep_result` keeps the result (and its maps) for a recall to withdraw."""
        for instance in self.queue.instances(series_id):
            self.spool.delete(instance.file)
        if keep_result:
            self.queue.forget_files(series_id, keep_result=True)
            return
        result_file = self.queue.series(series_id).result_file
        self.spool.delete(result_file)
        if result_file:
            self.spool.delete(maps_file(result_file))
        self.queue.forget_files(series_id)

    def expire(self) -> None:
        cutoff = utcnow() - timedelta(hours=self.settings.dicom_retention_h)
        for series_id in self.queue.older_than(cutoff):
            self.queue.finish(series_id, "expired", "past the retention limit")
            self.clean(series_id)
            metrics.EXPIRED.inc()
            log.error("a series was deleted undelivered at the retention limit")
        for series_id in self.queue.rejected_kept(cutoff):  # no longer kept for a resend
            self.clean(series_id)
        if time.monotonic() - self._recalls_swept_at >= RECALL_SWEEP_S:
            self._recalls_swept_at = time.monotonic()
            self.sweep_recalls(cutoff)

    def sweep_recalls(self, cutoff: datetime) -> None:
        """Withdrawals past the retention limit `cutoff` end expired; results no longer kept
        for a recall (or a retry) are deleted."""
        for series_id in self.recalls.expire(cutoff) + self.recalls.refused_kept(cutoff):
            self.clean(series_id)  # nothing left to withdraw, or no longer kept to retry
        kept_h = self.settings.dicom_recall_keep_h
        for series_id in self.recalls.kept_past(utcnow() - timedelta(hours=kept_h)):
            self.clean(series_id)  # no longer kept for a recall

    def sweep_leftovers(self) -> None:
        """Files a crash left behind: partial writes, and files written but never queued."""
        for partial in self.spool.partials():
            partial.unlink(missing_ok=True)
        cutoff = time.time() - 60  # a file being written now is not yet in a row
        for name in self.spool.names() - self.queue.files():
            path = self.spool.path(name)
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
