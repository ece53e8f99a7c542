"""The registry as one client sees it: another client's private versions are not there.

A version's card records its owner and whether it is private (`models.card.ModelAccess`). For
a client that may not use it, a private version is absent everywhere, in both services: not
listed, not found (the same 404 as a name nobody published, so its existence is not told),
not loaded, not aliased, its files not served. Admin keys (and auth disabled) see everything.

Who may use a version is the card's word until its owner or an admin changes it
(`Registry.set_access`); each process reads the card's word once and a change at most every
`access_recheck_s` (`Registry.access_of`): listings and the predict path cost a lookup, not a
read of the store per request, and sharing or revoking reaches every process within that.
"""

from __future__ import annotations

from models.card import ModelAccess, ModelCard
from service import audit
from service.errors import NotFound
from service.registry import (
    AccessRecord,
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
            if self.base.access_seen(name, version):  # it exists: refused, not missing
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
        access = self.base.access_of(name, version, card)
        if access is not None and not access.allows(self.client):
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

    # who may use a version: the base registry's, whose word each process keeps
    def access_of(
        self, name: str, version: int, card: ModelCard | None = None
    ) -> ModelAccess | None:
        return self.base.access_of(name, version, card)

    def access_seen(self, name: str, version: int) -> bool:
        return self.base.access_seen(name, version)

    def access_record(self, name: str, version: int) -> AccessRecord | None:
        self.get_card(name, version)
        return self.base.access_record(name, version)

    def set_access(
        self, name: str, version: int, *, private: bool, clients: list[str], owner: str, actor: str
    ) -> AccessRecord:
        self.get_card(name, version)  # a version the client cannot see cannot be shared
        return self.base.set_access(
            name, version, private=private, clients=clients, owner=owner, actor=actor
        )

    def _visible(self, name: str, version: int) -> bool:
        try:
            access = self.base.access_of(name, version)
        except ArtifactCorrupt:  # its owner is unknown: shown, and reading it says why
            return True
        except NotFound:
            return False
        return access is None or access.allows(self.client)

    def _refused(self, name: str, version: int) -> None:
        """Audit a client asking for a version it may not use (it is answered a 404)."""
        target = f"model/{name}/versions/{version}"
        audit.record("access_denied", client=self.client, target=target, outcome="refused")

    def _absent(self, name: str, version: int) -> NotFound:
        if not self.list_versions(name):
            return ModelNotFound(f"no model named '{name}'")
        return VersionNotFound(f"model '{name}' has no version {version}")
