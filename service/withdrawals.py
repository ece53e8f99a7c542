"""Withdrawn model versions: a recall. A version found unsafe is withdrawn by its owner or an
admin, with the reason; from then on neither service predicts with it (410 Gone with the
reason, by number or through an alias still pointing at it, so a caller learns why instead
of silently getting another model), no alias may be moved onto it, and the listings say so.
Its card, files and evaluation stay readable: what was withdrawn, and why, is evidence.
An admin may put it back in service; every change is kept in the record's history.

Layout: `models/<name>/withdrawn/<n>.json` beside the model's versions. Each process re-reads
a version's record at most every `access_recheck_s` (the predict path asks on every request
and must not read the store each time), so a withdrawal stops every process within that.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from pydantic import TypeAdapter

from service.errors import ServiceError
from service.registry import Recheck, Registry, history_after, read_record
from service.storage import ArtifactStore

log = logging.getLogger("scantune.registry")


class VersionWithdrawn(ServiceError):
    status, title = 410, "Model version withdrawn"


@dataclass
class WithdrawalRecord:
    withdrawn: bool
    reason: str
    set_by: str
    set_at: str
    history: list[dict[str, object]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


_RECORD = TypeAdapter(WithdrawalRecord)


class Withdrawals:
    def __init__(self, store: ArtifactStore, recheck_s: float = 30.0) -> None:
        self.store = store
        self._known: Recheck[WithdrawalRecord | None] = Recheck(recheck_s)

    @staticmethod
    def _key(name: str, version: int) -> str:
        return f"{Registry.model_prefix(name)}/withdrawn/{version}.json"

    def record(self, name: str, version: int) -> WithdrawalRecord | None:
        """The version's record as stored now (None: never withdrawn). An unreadable one
        counts as withdrawn (it may have been a recall); setting it again replaces it."""

        def unreadable(why: str) -> WithdrawalRecord:
            log.warning("model %s version %s: its withdrawal record is not valid (%s)",
                        name, version, why)  # fmt: skip
            return WithdrawalRecord(True, "its withdrawal record is unreadable", "", "")

        return read_record(self.store, self._key(name, version), _RECORD, unreadable)

    def current(self, name: str, version: int) -> WithdrawalRecord | None:
        """The record if the version is withdrawn, as this process last read it (at most
        `recheck_s` ago); None when it is in service."""
        found = self._known.get((name, version), lambda: self.record(name, version))
        return found if found is not None and found.withdrawn else None

    def require_in_service(self, name: str, version: int) -> None:
        """Raise 410 Gone, with the reason, for a withdrawn version."""
        found = self.current(name, version)
        if found is not None:
            raise VersionWithdrawn(
                f"model '{name}' version {version} was withdrawn: {found.reason}"
                " (ask for another version, or move the alias)"
            )

    def set(
        self, name: str, version: int, *, withdrawn: bool, reason: str, actor: str
    ) -> WithdrawalRecord:
        """Withdraw the version (or put it back), keeping the earlier word in the history."""
        history = history_after(self.record(name, version))
        stamp = datetime.now(UTC).isoformat()
        record = WithdrawalRecord(withdrawn, reason, actor, stamp, history)
        self.store.put_bytes(self._key(name, version), json.dumps(record.to_dict()).encode())
        self._known.put((name, version), record)
        return record
