"""Model names, versions and aliases over an artifact store.

Layout under the store root:

    models/<name>/versions/<n>/model.onnx, metrics.json, plots/*.png, ...
    models/<name>/versions/<n>/card.json      written last: a version exists once its card does
    models/<name>/aliases/<alias>.json        {"version", "set_by", "set_at", "history": [...]}
    models/<name>/access/<n>.json             who may use version n, when changed after publishing

Version numbers are allocated by the caller (the training service's job store guarantees
1, 2, 3... with no gaps or duplicates); the registry publishes and reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

from models.card import (
    ALIAS_PATTERN,
    CARD_FILE,
    MODEL_NAME_PATTERN,
    ONNX_FILE,
    ModelAccess,
    ModelCard,
)
from service.errors import Conflict, NotFound, ServiceError
from service.storage import ArtifactStore, ObjectNotFound

log = logging.getLogger("scantune.registry")
T = TypeVar("T")
SKIPPED_ON_PUBLISH = {CARD_FILE, "checkpoints", "history.json.tmp"}


class ModelNotFound(NotFound):
    title = "Model not found"


class VersionNotFound(NotFound):
    title = "Version not found"


class AliasNotFound(NotFound):
    title = "Alias not found"


class ArtifactCorrupt(ServiceError):
    """The stored ONNX file does not match the sha256 its card records."""

    status, title = 503, "Model artifact corrupt"


@dataclass
class AliasRecord:
    alias: str
    version: int
    set_by: str
    set_at: str
    history: list[dict[str, object]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


_ALIAS_RECORD = TypeAdapter(AliasRecord)


@dataclass
class AccessRecord:
    """Who may use a version, as changed after it was published (its card keeps what it was
    published with). `owner` never changes: it is the card's."""

    owner: str
    private: bool
    clients: list[str]
    set_by: str
    set_at: str
    history: list[dict[str, object]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def access(self) -> ModelAccess:
        return ModelAccess(owner=self.owner, private=self.private, clients=tuple(self.clients))


_ACCESS_RECORD = TypeAdapter(AccessRecord)


def read_record(
    store: ArtifactStore, key: str, adapter: TypeAdapter[T], unreadable: Callable[[str], T]
) -> T | None:
    """A JSON record of the store (None: there is none); `unreadable(why)` stands for one that
    does not validate, so the caller decides what a broken record means."""
    try:
        text = store.get_text(key)
    except ObjectNotFound:
        return None
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        return unreadable(_first_problem(exc))


HISTORY_KEPT = 50  # earlier words a record of a version keeps (access, withdrawal, notes)


def history_after(previous: Any, *, leave_out: tuple[str, ...] = ()) -> list[dict[str, object]]:
    """The history of a record replacing `previous` (a record dataclass with `set_by` and
    `history`, or None): its earlier entries and itself, the last HISTORY_KEPT. An unreadable
    one (no `set_by`) leaves none."""
    if previous is None or not previous.set_by:
        return []
    past = {k: v for k, v in asdict(previous).items() if k not in ("history", *leave_out)}
    return [*previous.history, past][-HISTORY_KEPT:]


class Recheck(Generic[T]):
    """Words on a version read from the store and trusted in this process for `seconds`: the
    predict path asks on every request and must not read the store each time, while a change
    (sharing, revoking, withdrawing) must reach every process within a bounded time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._known: dict[tuple[str, int], tuple[float, T]] = {}

    def get(self, key: tuple[str, int], read: Callable[[], T]) -> T:
        now = time.monotonic()
        cached = self._known.get(key)
        if cached is None or now - cached[0] >= self.seconds:
            cached = (now, read())
            self._known[key] = cached
        return cached[1]

    def put(self, key: tuple[str, int], value: T) -> None:
        self._known[key] = (time.monotonic(), value)


@dataclass(frozen=True)
class LoadedArtifact:
    card: ModelCard
    onnx: bytes


def _first_problem(exc: ValidationError) -> str:
    """'where: what' of a stored file's first validation error (never its value)."""
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc']) or 'the file'}: {first['msg']}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Registry:
    def __init__(self, store: ArtifactStore, *, access_recheck_s: float = 30.0) -> None:
        self.store = store
        # Who may use each version, as `service.model_access` asks on every request: the card's
        # word is read once (a card is written once; None: shared, an older card), a change
        # made since (`set_access`) is re-read at most every `access_recheck_s`, so sharing or
        # revoking reaches every process within that without a store read per request.
        self._card_access: dict[tuple[str, int], ModelAccess | None] = {}
        self._access: Recheck[ModelAccess | None] = Recheck(access_recheck_s)

    @property
    def access_recheck_s(self) -> float:
        return self._access.seconds

    @access_recheck_s.setter
    def access_recheck_s(self, seconds: float) -> None:
        self._access.seconds = seconds

    # keys
    @staticmethod
    def model_prefix(name: str) -> str:
        """Where a model's versions and aliases live. A name no model can have (a NUL byte,
        '..', a slash...) is not found, and never becomes a store key."""
        if re.fullmatch(MODEL_NAME_PATTERN, name) is None:
            raise ModelNotFound(f"no model named {name!r}")
        return f"models/{name}"

    @classmethod
    def version_prefix(cls, name: str, version: int) -> str:
        return f"{cls.model_prefix(name)}/versions/{version}"

    @classmethod
    def _alias_key(cls, name: str, alias: str) -> str:
        return f"{cls.model_prefix(name)}/aliases/{alias}.json"

    @classmethod
    def _access_key(cls, name: str, version: int) -> str:
        return f"{cls.model_prefix(name)}/access/{version}.json"

    def artifact_uris(self, name: str, version: int) -> dict[str, str]:
        prefix = self.version_prefix(name, version)
        return {
            Path(k).name if "/plots/" not in k else k[len(prefix) + 1 :]: self.store.url(k)
            for k in self.store.list_keys(prefix)
        }

    # reading
    def list_models(self) -> list[str]:
        return [n for n in self.store.list_children("models") if self.list_versions(n)]

    def list_versions(self, name: str) -> list[int]:
        """Published versions (those with a card), ascending, from one listing of the model's
        keys: on S3 one request per 1,000 files, not a request per version."""
        try:
            versions_prefix = f"{self.model_prefix(name)}/versions/"
        except ModelNotFound:
            return []
        versions = set()
        for key in self.store.list_keys(versions_prefix):
            number, _, rest = key[len(versions_prefix) :].partition("/")
            if rest == CARD_FILE and number.isdigit():
                versions.add(int(number))
        return sorted(versions)

    def get_card(self, name: str, version: int) -> ModelCard:
        try:
            text = self.store.get_text(f"{self.version_prefix(name, version)}/{CARD_FILE}")
        except ObjectNotFound:
            if not self.list_versions(name):
                raise ModelNotFound(f"no model named '{name}'") from None
            raise VersionNotFound(f"model '{name}' has no version {version}") from None
        try:
            return ModelCard.from_json(text)
        except ValidationError as exc:  # the store's fault, not the request's: never a 422
            raise ArtifactCorrupt(
                f"model '{name}' version {version}: its {CARD_FILE} is not a valid model card"
                f" ({exc.error_count()} problem(s); {_first_problem(exc)})"
            ) from None

    def aliases(self, name: str) -> dict[str, AliasRecord]:
        """The model's readable aliases. An unreadable record is left out (and logged), so
        one bad file does not take down every listing; reading that alias says why."""
        out = {}
        for child in self.store.list_children(f"{self.model_prefix(name)}/aliases"):
            if child.endswith(".json"):
                alias = child[:-5]
                try:
                    out[alias] = self.get_alias(name, alias)
                except ArtifactCorrupt as exc:
                    log.warning("%s", exc.detail)
        return out

    def get_alias(self, name: str, alias: str) -> AliasRecord:
        try:
            text = self.store.get_text(self._alias_key(name, alias))
        except ObjectNotFound:
            if not self.list_versions(name):
                raise ModelNotFound(f"no model named '{name}'") from None
            raise AliasNotFound(f"model '{name}' has no alias '{alias}'") from None
        try:
            return _ALIAS_RECORD.validate_json(text)
        except ValidationError as exc:  # the store's fault, not the request's
            raise ArtifactCorrupt(
                f"model '{name}' alias '{alias}': its record is not valid"
                f" ({_first_problem(exc)}); setting the alias again replaces it"
            ) from None

    def resolve(self, name: str, *, version: int | None = None, alias: str | None = None) -> int:
        """The version a request means: an explicit version, else the alias's target."""
        if version is not None:
            self.get_card(name, version)  # raises when absent
            return version
        if alias is None:
            raise ValueError("resolve needs a version or an alias")
        return self.get_alias(name, alias).version

    def require_visible(self, name: str, version: int) -> None:
        """Raise a 404 unless this reader may use the version. The whole registry (admin keys,
        the services' own work) hides nothing; `service.model_access` narrows it per client."""

    # who may use a version
    def access_of(
        self, name: str, version: int, card: ModelCard | None = None
    ) -> ModelAccess | None:
        """Who may use the version now (None: everyone): the record `set_access` wrote, else
        the card's word. `card`, when the caller has just read it, saves reading it again.
        Raises the registry's 404s for a version that is not there."""
        key = (name, version)

        def read() -> ModelAccess | None:
            if card is not None:
                self._card_access[key] = card.access
            elif key not in self._card_access:
                self._card_access[key] = self.get_card(name, version).access
            record = self.access_record(name, version)
            return self._card_access[key] if record is None else record.access()

        return self._access.get(key, read)

    def access_seen(self, name: str, version: int) -> bool:
        """Whether this process has read the version's card (so it exists)."""
        return (name, version) in self._card_access

    def access_record(self, name: str, version: int) -> AccessRecord | None:
        """The change to who may use the version made since it was published, if any. An
        unreadable record hides the version from everyone but its owner and admin keys (it
        may have been a revocation): setting the access again replaces it."""

        def unreadable(why: str) -> AccessRecord:
            log.warning(
                "model %s version %s: its access record is not valid (%s); private to its"
                " owner until set again", name, version, why,
            )  # fmt: skip
            card_access = self.get_card(name, version).access
            return AccessRecord(card_access.owner if card_access else "", True, [], "", "")

        key = self._access_key(name, version)
        return read_record(self.store, key, _ACCESS_RECORD, unreadable)

    def set_access(
        self, name: str, version: int, *, private: bool, clients: list[str], owner: str, actor: str
    ) -> AccessRecord:
        """Record who may use a published version from now on (the previous word kept in the
        record's history); this process sees it at once, the others within the recheck."""
        card = self.get_card(name, version)
        history = history_after(self.access_record(name, version), leave_out=("owner",))
        if card.access is not None:
            owner = card.access.owner
        record = AccessRecord(
            owner, private, sorted(set(clients)), actor, datetime.now(UTC).isoformat(), history
        )
        self.store.put_bytes(self._access_key(name, version), json.dumps(record.to_dict()).encode())
        self._card_access[(name, version)] = card.access
        self._access.put((name, version), record.access())
        return record

    def load(self, name: str, version: int) -> LoadedArtifact:
        """The card and ONNX bytes, refused when the bytes do not match the card's sha256."""
        card = self.get_card(name, version)
        try:
            onnx = self.store.get_bytes(f"{self.version_prefix(name, version)}/{card.onnx_file}")
        except ObjectNotFound:
            raise ArtifactCorrupt(
                f"model '{name}' version {version} has a card but no ONNX file"
            ) from None
        digest = sha256_bytes(onnx)
        if digest != card.onnx_sha256:
            raise ArtifactCorrupt(
                f"model '{name}' version {version}: ONNX sha256 {digest[:12]}… does not match "
                f"the card's {card.onnx_sha256[:12]}…; refusing to serve it"
            )
        return LoadedArtifact(card=card, onnx=onnx)

    # writing
    def publish(self, name: str, version: int, source_dir: Path, card: ModelCard) -> ModelCard:
        """Upload a run's outputs as `version`; the card goes last so readers never see half."""
        if self.store.exists(f"{self.version_prefix(name, version)}/{CARD_FILE}"):
            raise Conflict(f"model '{name}' version {version} is already published")
        onnx_path = source_dir / ONNX_FILE
        if hashlib.sha256(onnx_path.read_bytes()).hexdigest() != card.onnx_sha256:
            raise ArtifactCorrupt(f"{onnx_path} does not match the card's sha256; not publishing")
        prefix = self.version_prefix(name, version)
        for path in sorted(p for p in source_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(source_dir)
            if rel.parts[0] in SKIPPED_ON_PUBLISH:
                continue
            self.store.put_file(f"{prefix}/{rel.as_posix()}", path)
        final = card.model_copy(update={"name": name, "version": version})
        self.store.put_bytes(f"{prefix}/{CARD_FILE}", final.to_json().encode())
        return final

    def set_alias(self, name: str, alias: str, version: int, *, actor: str) -> AliasRecord:
        if not re.match(ALIAS_PATTERN, alias):
            raise ValueError(f"alias {alias!r} must match {ALIAS_PATTERN}")
        self.get_card(name, version)
        try:
            previous = self.get_alias(name, alias)
            history = [
                *previous.history,
                {"version": previous.version, "set_by": previous.set_by, "set_at": previous.set_at},
            ][-50:]
        except NotFound:
            history = []
        except ArtifactCorrupt:  # an unreadable record is replaced, its history lost
            log.warning("model %s alias %s: replacing an unreadable alias record", name, alias)
            history = []
        record = AliasRecord(alias, version, actor, datetime.now(UTC).isoformat(), history)
        self.store.put_bytes(self._alias_key(name, alias), json.dumps(record.to_dict()).encode())
        return record
