"""The registry as one client sees it: another client's private versions are not there.

A version's card records its owner and whether it is private (`models.card.ModelAccess`). For
a client that may not use it, a private version is absent everywhere, in both services: not
listed, not found (the same 404 as a name nobody published, so its existence is not told),
not loaded, not aliased, its files not served. Admin keys (and auth disabled) see everything.

What a card says of access never changes once published (a version's card is written once),
so each process reads it once per version: listings and the predict path cost a lookup, not
a read of the store per request.
"""

from __future__ import annotations

from models.card import ModelCard
from service import audit
from service.errors import NotFound
from service.registry import (
    AliasNotFound,
    AliasRecord,
    ArtifactCorrupt,
    ModelNotFound,
    Registry,
    VersionNotFound,
)


def seen_by(registry: Registry, client: str | None) -> Registry:
    """`registry` as `client` sees it; None (an admin key, or auth disabled): all of it."""
    return registry if client is None else ClientRegistry(registry, client)


class ClientRegistry(Registry):
    """Reads as `Registry` does, leaving out what `client` may not use. Writing a version
    stays with the job runner's unfiltered registry."""

    def __init__(self, base: Registry, client: str) -> None:
        super().__init__(base.store)
        self.base, self.client = base, client

    def require_visible(self, name: str, version: int) -> None:
        if not self._visible(name, version):
            if (name, version) in self.base.access_known:  # it exists: refused, not missing
                self._refused(name, version)
            raise self._absent(name, version)

    # reading, filtered
    def list_versions(self, name: str) -> list[int]:
        return [v for v in self.base.list_versions(name) if self._visible(name, v)]

    def get_card(self, name: str, version: int) -> ModelCard:
        try:
            card = self.base.get_card(name, version)
        except (ModelNotFound, VersionNotFound):
            raise self._absent(name, version) from None
        self.base.access_known[(name, version)] = card.access
        if card.access is not None and not card.access.allows(self.client):
            self._refused(name, version)
            raise self._absent(name, version)
        return card

    def aliases(self, name: str) -> dict[str, AliasRecord]:
        found = self.base.aliases(name)
        return {a: r for a, r in found.items() if self._visible(name, r.version)}

    def get_alias(self, name: str, alias: str) -> AliasRecord:
        try:
            record = self.base.get_alias(name, alias)
        except NotFound:
            record = None
        if record is not None and not self._visible(name, record.version):
            record = None  # (not audited: the version it names was not asked for)
        if record is None:
            if not self.list_versions(name):
                raise ModelNotFound(f"no model named '{name}'")
            raise AliasNotFound(f"model '{name}' has no alias '{alias}'")
        return record

    def set_alias(self, name: str, alias: str, version: int, *, actor: str) -> AliasRecord:
        self.get_card(name, version)  # a version the client cannot see cannot be aliased
        return self.base.set_alias(name, alias, version, actor=actor)

    # the card's word on access, read once per version
    def _visible(self, name: str, version: int) -> bool:
        known = self.base.access_known
        if (name, version) not in known:
            try:
                known[(name, version)] = self.base.get_card(name, version).access
            except ArtifactCorrupt:  # its owner is unknown: shown, and reading it says why
                return True
            except NotFound:
                return False
        access = known[(name, version)]
        return access is None or access.allows(self.client)

    def _refused(self, name: str, version: int) -> None:
        """Audit a client asking for a version it may not use (it is answered a 404)."""
        target = f"model/{name}/versions/{version}"
        audit.record("access_denied", client=self.client, target=target, outcome="refused")

    def _absent(self, name: str, version: int) -> NotFound:
        if not self.list_versions(name):
            return ModelNotFound(f"no model named '{name}'")
        return VersionNotFound(f"model '{name}' has no version {version}")
