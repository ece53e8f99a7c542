"""Taking one instance in, from the SCP or STOW-RS alike: route it, keep it, queue it.

The order makes an acknowledgement mean "kept": the file is written and fsync'ed, then the
queue row committed, and only then does the caller answer Success. A series no rule routes is
acknowledged and dropped without a byte written; so is an instance of a study a purge blocks
(`purge_blocks`), checked first: nothing of it is written, not even an unrouted series' row.
That first check reads the blocks this process holds, which may not know yet of a purge made
elsewhere (for up to `purge_blocks.REFRESH_S`); the write checks the database too, in its own
transaction, and is refused then: rolled back, its spooled file deleted, dropped the same.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from service.dicom_node import metrics
from service.dicom_node.purge_blocks import Blocked, PurgeBlocks
from service.dicom_node.queue import InstanceMeta, Outcome, WorkQueue
from service.dicom_node.redact import uid_hash
from service.dicom_node.routing import Router
from service.dicom_node.spool import Spool

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger("scantune.dicom")

REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
Taken = Outcome | Literal["purged"]  # purged: of a study a purge blocks, dropped


class Refused(Exception):
    """An instance the node cannot take (the message names the attribute, never a value)."""


def describe(ds: Dataset, calling_ae: str) -> InstanceMeta:
    """The UIDs and routing attributes of a data set, or Refused naming what is missing."""
    missing = [keyword for keyword in REQUIRED if not str(ds.get(keyword) or "").strip()]
    if missing:
        raise Refused(f"the instance has no {', '.join(missing)}")
    return InstanceMeta(
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        modality=str(ds.get("Modality") or ""),
        body_part=str(ds.get("BodyPartExamined") or ""),
        calling_ae=calling_ae.strip(),
    )


class Intake:
    def __init__(
        self, router: Router, spool: Spool, queue: WorkQueue, blocks: PurgeBlocks | None = None
    ) -> None:
        self.router, self.spool, self.queue, self.blocks = router, spool, queue, blocks

    def accept(self, data: bytes, meta: InstanceMeta, via: str) -> Taken:
        """Keep the encoded instance `data` (a DICOM file) for classification."""
        if self._blocked(meta):
            return self._counted(via, "purged")
        try:
            return self._counted(via, self._keep(data, meta))
        except Blocked as blocked:  # a block this process had yet to read: nothing was kept
            if self.blocks is not None:  # the study's next instances are dropped at once
                self.blocks.add(blocked.study_hash, blocked.purge_id)
            self._dropped(meta, blocked.purge_id)
            return self._counted(via, "purged")

    def _keep(self, data: bytes, meta: InstanceMeta) -> Outcome:
        """Route, write and queue the instance; Blocked if the write finds its study blocked."""
        route = self.router.route(meta)
        if route is None:
            if self.queue.note_unrouted(meta, self.blocks):
                metrics.UNROUTED.inc()
                log.info("series %s matches no route: dropped", uid_hash(meta.series_uid))
            return "unrouted"
        if self.queue.is_known(meta):
            return "duplicate"
        name = self.spool.write(data)
        try:
            outcome, series_id = self.queue.add_instance(
                meta, route.model, route.alias, name, self.router.destination_keys(route),
                self.blocks,
            )  # fmt: skip
        except BaseException:  # Blocked too: the file goes with the rows rolled back
            self.spool.delete(name)
            raise
        if outcome != "stored":
            self.spool.delete(name)
        log.debug("instance %s: %s (work item %s)", uid_hash(meta.sop_instance_uid), outcome,
                  series_id)  # fmt: skip
        return outcome

    def _blocked(self, meta: InstanceMeta) -> bool:
        """Whether a purge blocks the instance's study, as this process last read the blocks
        (the drop counted with it)."""
        if self.blocks is None:
            return False
        purge_id = self.blocks.blocking(meta.study_uid)
        if purge_id is None:
            return False
        self._dropped(meta, purge_id)
        return True

    def _dropped(self, meta: InstanceMeta, purge_id: int) -> None:
        """Count the instance with the purge that blocks its study (logged once an interval)."""
        if self.blocks is not None and self.blocks.dropped(purge_id):
            log.info("study %s is blocked by purge %d: its instances are dropped",
                     uid_hash(meta.study_uid), purge_id)  # fmt: skip

    @staticmethod
    def _counted(via: str, outcome: Taken) -> Taken:
        metrics.RECEIVED.labels(via, outcome).inc()
        return outcome
