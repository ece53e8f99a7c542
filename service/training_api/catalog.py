"""The registry as the API presents it: summaries and details assembled from cards and aliases.

Plain objects over `Registry`, no Flask: views serialize what these return.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from models.card import ModelAccess, ModelNotes
from service.errors import Conflict, InvalidRequest
from service.paging import decode_cursor, encode_cursor
from service.registry import (
    ALIAS_PATTERN,
    AliasNotFound,
    ArtifactCorrupt,
    ModelNotFound,
    Registry,
    VersionNotFound,
)
from service.version_notes import NotesRecord, VersionNotes
from service.withdrawals import Withdrawals

log = logging.getLogger(__name__)
CURSOR_KEY = "version"


class Catalog:
    def __init__(self, registry: Registry, withdrawals: Withdrawals, notes: VersionNotes) -> None:
        self.registry, self.withdrawals, self.amended = registry, withdrawals, notes

    def models(self) -> list[dict[str, Any]]:
        out = []
        for name in self.registry.list_models():
            versions = self.registry.list_versions(name)
            aliases = {a: r.version for a, r in sorted(self.registry.aliases(name).items())}
            out.append(
                {
                    "name": name,
                    "versions": versions,
                    "latest_version": versions[-1],
                    "aliases": aliases,
                }
            )
        return out

    def versions(
        self, name: str, *, limit: int, newest_first: bool = False, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of versions: those whose card reads (`items`) and those whose card does
        not (`unreadable`, with why): one broken card must not hide every other version from
        a pipeline choosing what to promote, nor be hidden itself.

        A page holds at most `limit` versions, oldest first or newest first, after the
        version `cursor` names; only its cards are read (one GET each on S3), so a model
        retrained nightly for years still lists in bounded time.
        """
        versions = self.existing_versions(name)
        if newest_first:
            versions = versions[::-1]
        if cursor is not None:
            after = decode_cursor(cursor, CURSOR_KEY)
            versions = [v for v in versions if (v < after if newest_first else v > after)]
        page = versions[:limit]
        next_cursor = encode_cursor(CURSOR_KEY, page[-1]) if len(versions) > limit else None
        by_version = self._aliases_by_version(name)
        items, unreadable = [], []
        for version in page:
            try:
                card = self.registry.get_card(name, version)
            except ArtifactCorrupt as exc:
                log.warning("%s", exc.detail)
                unreadable.append(
                    {
                        "version": version,
                        "detail": exc.detail,
                        "aliases": by_version.get(version, []),
                    }
                )
                continue
            items.append(
                {
                    "version": version,
                    "created_at": card.created_at.isoformat(),
                    "base_model": card.base_model,
                    "metrics": headline_metrics(card.metrics),
                    "aliases": by_version.get(version, []),
                    "access": _access_json(self.registry.access_of(name, version, card)),
                    "withdrawn": self._withdrawn(name, version),
                }
            )
        return {"items": items, "unreadable": unreadable, "next_cursor": next_cursor}

    def version(self, name: str, version: int) -> dict[str, Any]:
        self.existing_versions(name)
        card = self.registry.get_card(name, version)
        return {
            "name": name,
            "version": version,
            "aliases": self._aliases_by_version(name).get(version, []),
            "metrics": card.metrics,
            "artifacts": self.registry.artifact_uris(name, version),
            "card": card.model_dump(mode="json"),
            "withdrawn": self._withdrawn(name, version),
        }

    def withdrawal(self, name: str, version: int) -> dict[str, Any]:
        """Whether the version is withdrawn, why, by whom, and the earlier word."""
        self.existing_versions(name)
        self.registry.get_card(name, version)  # 404 for a version the client cannot see
        record = self.withdrawals.record(name, version)
        if record is None:
            never = {"withdrawn": False, "reason": None, "set_by": None, "set_at": None}
            return {"name": name, "version": version, **never, "history": []}
        return {"name": name, "version": version, **record.to_dict()}

    def set_withdrawal(
        self, name: str, version: int, *, withdrawn: bool, reason: str, actor: str
    ) -> dict[str, Any]:
        self.withdrawals.set(name, version, withdrawn=withdrawn, reason=reason, actor=actor)
        return self.withdrawal(name, version)

    def _withdrawn(self, name: str, version: int) -> dict[str, Any] | None:
        """A listing's word on a withdrawn version, as this process enforces it (read at most
        every `access_recheck_s`, not once per version per listing)."""
        record = self.withdrawals.current(name, version)
        if record is None:
            return None
        return {"reason": record.reason, "set_by": record.set_by, "set_at": record.set_at}

    def access(self, name: str, version: int) -> dict[str, Any]:
        """Who may use the version now, and who changed it since it was published (if anyone)."""
        self.existing_versions(name)
        card = self.registry.get_card(name, version)
        record = self.registry.access_record(name, version)
        if record is not None:
            return {"name": name, "version": version, **record.to_dict()}
        published = card.access  # None: a card from before access was recorded, shared
        return {
            "name": name,
            "version": version,
            "owner": published.owner if published else None,
            "private": published.private if published else False,
            "clients": list(published.clients) if published else [],
            "set_by": None,
            "set_at": None,
            "history": [],
        }

    def set_access(
        self, name: str, version: int, *, private: bool, clients: list[str], owner: str, actor: str
    ) -> dict[str, Any]:
        self.existing_versions(name)
        self.registry.set_access(
            name, version, private=private, clients=clients, owner=owner, actor=actor
        )
        return self.access(name, version)

    def notes(self, name: str, version: int) -> dict[str, Any]:
        """The version's notes in force: as amended since it was published, else its card's,
        else none (an empty `ModelNotes`); `source` says which."""
        self.existing_versions(name)
        card = self.registry.get_card(name, version)  # 404 for a version the client cannot see
        record = self.amended.record(name, version)
        if record is not None:
            return _amended(name, version, record)
        found = card.notes or ModelNotes()
        return {
            "name": name,
            "version": version,
            "source": "card" if card.notes is not None else "none",
            "notes": found.model_dump(mode="json"),
            "changed_by": None,
            "changed_at": None,
            "history": [],
        }

    def set_notes(
        self, name: str, version: int, notes: ModelNotes, *, actor: str
    ) -> dict[str, Any]:
        """Replace the notes in force (the card keeps those it was published with)."""
        self.existing_versions(name)
        self.registry.get_card(name, version)
        return _amended(name, version, self.amended.set(name, version, notes, actor=actor))

    def aliases(self, name: str) -> list[dict[str, Any]]:
        self.existing_versions(name)
        records = sorted(self.registry.aliases(name).items())
        return [{"name": name, **record.to_dict()} for _, record in records]

    def alias(self, name: str, alias: str) -> dict[str, Any]:
        self.existing_versions(name)
        if not re.match(ALIAS_PATTERN, alias):
            raise AliasNotFound(f"model '{name}' has no alias '{alias}'")
        return {"name": name, **self.registry.get_alias(name, alias).to_dict()}

    def set_alias(self, name: str, alias: str, version: int, *, actor: str) -> dict[str, Any]:
        """Move `alias` to `version`; 422 names the field at fault (the path or the body)."""
        self.existing_versions(name)
        if not re.match(ALIAS_PATTERN, alias):
            raise _invalid("path/alias", f"alias '{alias}' must match {ALIAS_PATTERN}", "pattern")
        try:
            self.registry.get_card(name, version)  # one the client cannot see is not there
            found = self.withdrawals.record(name, version)
            if found is not None and found.withdrawn:  # a recalled model is not promoted
                raise Conflict(f"model '{name}' version {version} is withdrawn: {found.reason}")
            record = self.registry.set_alias(name, alias, version, actor=actor)
        except VersionNotFound as exc:
            raise _invalid("body/version", exc.detail, "version_not_found") from None
        return {"name": name, **record.to_dict()}

    def existing_versions(self, name: str) -> list[int]:
        """The model's published versions; 404 when it has none (or the name cannot be one)."""
        versions = self.registry.list_versions(name)
        if not versions:
            raise ModelNotFound(f"no model named '{name}'")
        return versions

    def _aliases_by_version(self, name: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for alias, record in sorted(self.registry.aliases(name).items()):
            out.setdefault(record.version, []).append(alias)
        return out


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar figures of a card's metrics (per-class tables stay on the version page)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _access_json(access: ModelAccess | None) -> dict[str, Any] | None:
    return access.model_dump(mode="json") if access is not None else None


def _invalid(loc: str, msg: str, kind: str) -> InvalidRequest:
    return InvalidRequest(msg, errors=[{"loc": loc, "msg": msg, "type": kind}])


def _amended(name: str, version: int, record: NotesRecord) -> dict[str, Any]:
    """What `GET …/notes` answers for notes amended since publication."""
    return {"name": name, "version": version, "source": "amended",
            **record.model_dump(mode="json")}  # fmt: skip
