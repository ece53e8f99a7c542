"""A version's notes as amended after publication. Limitations are often found once a version
is in service ("misses small pneumothoraces on portable films"); its owner or an admin says so
without training again. The card keeps the notes it was published with (it is immutable, its
sha256 recorded); the amended ones are in force from then on, the earlier words kept in the
record's history.

Layout: `models/<name>/notes/<n>.json` beside the model's versions, as `access/<n>.json` is.
Read when asked (the facts page, the CLI), never on the predict path: no recheck cache.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

from models.card import ModelNotes
from service.registry import HISTORY_KEPT, ArtifactCorrupt, Registry, read_record
from service.storage import ArtifactStore

log = logging.getLogger("scantune.registry")


class NotesRecord(BaseModel):
    notes: ModelNotes
    changed_by: str
    changed_at: str
    history: list[dict[str, Any]] = Field(default_factory=list)


_RECORD = TypeAdapter(NotesRecord)


class VersionNotes:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @staticmethod
    def _key(name: str, version: int) -> str:
        return f"{Registry.model_prefix(name)}/notes/{version}.json"

    def record(self, name: str, version: int) -> NotesRecord | None:
        """The amended notes (None: never amended). An unreadable record is a 503 that says so,
        never the card's notes in its place (it may have added a limitation); setting the notes
        again replaces it."""

        def unreadable(why: str) -> NotesRecord:
            raise ArtifactCorrupt(
                f"model '{name}' version {version}: its amended notes are not valid ({why});"
                " setting them again replaces them"
            )

        return read_record(self.store, self._key(name, version), _RECORD, unreadable)

    def set(self, name: str, version: int, notes: ModelNotes, *, actor: str) -> NotesRecord:
        """Replace the version's notes in force, keeping the earlier words in the history."""
        try:
            previous = self.record(name, version)
        except ArtifactCorrupt:  # replaced, its history lost
            log.warning("model %s version %s: replacing unreadable amended notes", name, version)
            previous = None
        history = []
        if previous is not None:
            past = previous.model_dump(mode="json", exclude={"history"})
            history = [*previous.history, past][-HISTORY_KEPT:]
        stamp = datetime.now(UTC).isoformat()
        record = NotesRecord(notes=notes, changed_by=actor, changed_at=stamp, history=history)
        self.store.put_bytes(self._key(name, version), record.model_dump_json().encode())
        return record
