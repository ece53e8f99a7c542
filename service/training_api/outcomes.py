"""/v1/models/{name}/versions/{n}/outcomes: confirmed diagnoses reported for scans a version
classified, and how the version does on them beside its card's validation figures
(`models.outcomes`).

A client that predicts (scope `predict`) reports, once the truth is known (a radiologist's
read, a culture, a biopsy), what the version answered for a scan and what the scan turned out
to show; the scan itself never comes here, and the client's reference for it is kept only as
a salted hash. Its owner and admin keys see every client's reports; another client its own.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Annotated, Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.card import ModelCard
from service.audit import hash_uid, record
from service.auth import current_principal, require
from service.errors import Forbidden, InvalidRequest
from service.jobs.outcomes import Outcome, OutcomeFigures, Window
from service.jobs.tables import as_utc, utcnow
from service.parsing import parse_body, parse_query
from service.ratelimit import limited
from service.registry import Registry
from service.training_api.context import catalog, services
from service.training_api.metrics import observe_outcomes
from service.training_api.models import version_owner

bp = Blueprint("outcomes", __name__, url_prefix="/v1/models")
log = logging.getLogger(__name__)
SUMS_TO = 1e-3  # calibrated probabilities as the inference service answers them sum to 1
# The gauges' recent window: a version that did well for a year and badly since a new scanner
# came shows it here within weeks, where its figures since it went into service average it away.
RECENT = timedelta(days=28)


class ReportedOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: str = Field(
        min_length=1,
        max_length=256,
        description="The client's own id for the scan (a request id, an accession number with"
        " the instance): kept only as a salted hash; a second report of it replaces the first.",
    )
    label: str = Field(min_length=1, max_length=128, description="The true class, confirmed.")
    probabilities: dict[str, float] = Field(
        description="What the version answered for the scan: each class's probability."
    )
    signature: str | None = Field(
        default=None,
        max_length=80,
        pattern=r"^v1:[0-9a-f]{64}$",
        description="The predict answer's signature of these probabilities (service.signing).",
    )


class OutcomesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcomes: list[ReportedOutcome] = Field(min_length=1, max_length=1000)


class RetractBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    references: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1,
        max_length=1000,
        description="The client's references of scans it reported whose diagnosis was"
        " withdrawn (a corrected report confirms no class): their reports are deleted.",
    )


class WindowQuery(BaseModel):
    """A window of report times: how the version does lately (a new scanner, a new
    population), which every report since it went into service would hide."""

    model_config = ConfigDict(extra="forbid")

    since: datetime | None = Field(default=None, description="Reports at or after this (UTC).")
    until: datetime | None = Field(default=None, description="Reports before this (UTC).")

    @model_validator(mode="after")
    def _ordered(self) -> WindowQuery:
        """Times without an offset are UTC, as every stored time is."""
        self.since, self.until = as_utc(self.since), as_utc(self.until)
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


class OutcomesQuery(WindowQuery):
    client: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Only this client's reports (another client's: the version's owner and"
        " admin keys only): how the version does at one site.",
    )


@bp.post("/<name>/versions/<int:version>/outcomes")
@require("predict")
@limited("outcomes")  # each request writes up to 1,000 rows: a key may not flood the store
def report_outcomes(name: str, version: int) -> Response:
    card = catalog().registry.get_card(name, version)  # 404 for one the client cannot see
    body, who = parse_body(OutcomesBody), current_principal()
    _check(body, card)
    signed = _check_signatures(body, name, version)
    hashed = _hashed([o.reference for o in body.outcomes])
    outcomes = [
        Outcome(
            reference=hashed[o.reference][0], earlier=hashed[o.reference][1], label=o.label,
            probabilities={c: o.probabilities[c] for c in card.classes},
        )
        for o in body.outcomes
    ]  # fmt: skip
    replaced = services().jobs.outcomes.report(name, version, who.client, outcomes)
    record("outcomes_reported", client=who.client, target=f"model/{name}/versions/{version}",
           outcome="kept", reports=len(outcomes), replaced=replaced,
           signed=signed)  # fmt: skip
    # The gauges (and their alert) follow every client's reports; the figures take seconds at
    # 100,000 reports (bench/outcomes.py), so they are worked out after the answer.
    _observe_later(services().jobs.outcome_figures, name, version, card)
    return jsonify(
        name=name, version=version, accepted=len(outcomes), replaced=replaced, signed=signed
    )


@bp.post("/<name>/versions/<int:version>/outcomes/retract")
@require("predict")
@limited("outcomes")
def retract_outcomes(name: str, version: int) -> Response:
    """Delete the client's own reports of these scans: a diagnosis withdrawn is no outcome,
    and left in place it would keep counting against (or for) the version."""
    card = catalog().registry.get_card(name, version)  # 404 for one the client cannot see
    body, who = parse_body(RetractBody), current_principal()
    hashed = _hashed(body.references)
    references = sorted({now for now, _ in hashed.values()})
    earlier = {now: before for now, before in hashed.values() if before is not None}
    retracted = services().jobs.outcomes.retract(name, version, who.client, references, earlier)
    record("outcomes_retracted", client=who.client, target=f"model/{name}/versions/{version}",
           outcome="retracted", asked=len(references), retracted=retracted)  # fmt: skip
    if retracted:
        _observe_later(services().jobs.outcome_figures, name, version, card)
    return jsonify(
        name=name, version=version, retracted=retracted, unknown=len(references) - retracted
    )


def _hashed(references: list[str]) -> dict[str, tuple[str, str | None]]:
    """Each reference as it is kept: its hash under the audit salt, and under the salt before
    a rotation (`audit_salt_previous`; None without one)."""
    settings = services().settings
    salt, before = settings.audit_salt, settings.audit_salt_previous
    return {
        r: (hash_uid(r, salt), None if before is None or before == salt else hash_uid(r, before))
        for r in references
    }


_pending: set[tuple[str, int]] = set()  # versions whose gauges are waiting to be worked out
_guard, _serial = threading.Lock(), threading.Lock()


def _observe_later(book: OutcomeFigures, name: str, version: int, card: ModelCard) -> None:
    """Work the version's gauges out in a thread, once for any number of reports meanwhile."""
    with _guard:
        if (name, version) in _pending:
            return
        _pending.add((name, version))
    threading.Thread(target=_observe, args=(book, name, version, card), daemon=True).start()


def keep_observing(book: OutcomeFigures, registry: Registry, every_s: float = 3600.0) -> None:
    """Work out every version's gauges as the process starts, then every `every_s`: the
    recent window moves with the clock, so a bad month ages out of it (and its alert stops)
    though no one reports on the version any more."""
    while True:
        observe_reported(book, registry)
        time.sleep(every_s)


def observe_reported(book: OutcomeFigures, registry: Registry) -> None:
    """Work out the gauges of every version with reported outcomes, as a process starts: a
    gauge is the process's own, so a restarted service would otherwise show none (and the
    chart's alert would stop firing) until the version's next report."""
    try:
        versions = book.store.versions()
    except Exception:  # the database away at start: the gauges wait for the next report
        log.warning("outcome gauges not worked out at start", exc_info=True)
        return
    for name, version in versions:
        try:
            card = registry.get_card(name, version)
        except Exception:  # a version deleted from the store since: no gauges for it
            log.warning("outcome gauges of %s v%d: no card", name, version)
            continue
        _observe(book, name, version, card)


def _observe(book: OutcomeFigures, name: str, version: int, card: ModelCard) -> None:
    from models.outcomes import period_figures, reported_figures

    with _serial:  # one at a time, each reading the store when it runs: the last read wins
        with _guard:
            _pending.discard((name, version))  # a report from now on asks for another run
        try:
            _, figures = book.of(name, version, card, None)
            # the recent window moves with the clock: read afresh, not kept in the cache
            since = utcnow() - RECENT  # one read: every client's, and each client's apart
            found = book.store.reported(name, version, None, since, reporters=True)
            recent = reported_figures(card, found.labels, found.probabilities)
            by_client = {
                client: period_figures(card, labels, answers)
                for client, (labels, answers) in found.by_client().items()
            }
            observe_outcomes(name, version, figures, recent, by_client)
        except Exception:  # the reports are kept; only the gauges wait for the next one
            log.warning("outcome gauges of %s v%d not updated", name, version, exc_info=True)


@bp.get("/<name>/versions/<int:version>/outcomes")
@require("read")
def get_outcomes(name: str, version: int) -> Response:
    """The version's figures on the reported outcomes: every client's for its owner and admin
    keys, the key's own client's for another."""
    card = catalog().registry.get_card(name, version)  # 404 for one the client cannot see
    asked = parse_query(OutcomesQuery)
    reported_by, window, figures = seen_figures(
        name, version, card, asked.since, asked.until, asked.client
    )
    return jsonify(
        name=name,
        version=version,
        reported_by=reported_by,
        since=asked.since.isoformat() if asked.since else None,
        until=asked.until.isoformat() if asked.until else None,
        clients=window.clients,
        first_reported_at=window.first_at.isoformat() if window.first_at else None,
        last_reported_at=window.last_at.isoformat() if window.last_at else None,
        **figures,
    )


def seen_figures(
    name: str,
    version: int,
    card: ModelCard,
    since: datetime | None = None,
    until: datetime | None = None,
    asked: str | None = None,
) -> tuple[str, Window, dict[str, Any]]:
    """Who reported the outcomes the request's key sees (one client's where `asked`), in
    brief, and their figures."""
    client = reporting_client(name, card, asked)
    window, figures = services().jobs.outcome_figures.of(name, version, card, client, since, until)
    return (client or "every client"), window, figures


def reporting_client(name: str, card: ModelCard, asked: str | None = None) -> str | None:
    """Whose reports the request's key sees: every client's (None) for the version's owner
    and admin keys, the key's own client's for another; `asked`, one client's, which only
    they may see of another client (Forbidden)."""
    who, every = current_principal(), sees_every_client(name, card)  # the owner: maybe a query
    if asked is not None and asked != who.client and not every:
        raise Forbidden("only the version's owner or an admin key sees another client's reports")
    if asked is not None:
        return asked
    return None if every else who.client


def sees_every_client(name: str, card: ModelCard) -> bool:
    """Whether the request's key is the version's owner's or an admin's."""
    who = current_principal()
    recorded = card.access.owner if card.access else None  # an owner never changes
    return who.admin or who.client == version_owner({"name": name, "owner": recorded})


def _check(body: OutcomesBody, card: ModelCard) -> None:
    """Each outcome names one of the card's classes and gives every class's probability
    (summing to 1), and each scan once: a 422 that says which field of which outcome."""
    classes, errors, seen = set(card.classes), [], set()
    for i, o in enumerate(body.outcomes):
        where = f"body/outcomes/{i}"
        if o.label not in classes:
            errors.append((f"{where}/label", f"not a class of the model: {sorted(classes)}"))
        if set(o.probabilities) != classes:
            errors.append((f"{where}/probabilities", f"give each class's: {sorted(classes)}"))
        elif any(not 0 <= p <= 1 for p in o.probabilities.values()):
            errors.append((f"{where}/probabilities", "each between 0 and 1"))
        elif abs(sum(o.probabilities.values()) - 1) > SUMS_TO:
            errors.append((f"{where}/probabilities", "they must sum to 1"))
        if o.reference in seen:
            errors.append((f"{where}/reference", "this scan is reported twice in the request"))
        seen.add(o.reference)
    if errors:
        summary = "; ".join(f"{loc}: {msg}" for loc, msg in errors[:5])
        raise InvalidRequest(
            f"{len(errors)} invalid field(s): {summary}",
            errors=[{"loc": loc, "msg": msg, "type": "value_error"} for loc, msg in errors],
        )


def _check_signatures(body: OutcomesBody, name: str, version: int) -> int:
    """With a signing key, each signature given must be that of the outcome's probabilities
    answered by this version (under the key, or the previous one while a rotation is under
    way), and with `outcomes_signed_only` each outcome needs one: a 422 naming the outcomes
    that fail. How many were checked (none without a key)."""
    settings = services().settings
    if settings.prediction_signing_key is None:
        return 0
    from service.signing import verify

    keys = [k.get_secret_value() for k in (settings.prediction_signing_key,
            settings.prediction_signing_key_previous) if k is not None]  # fmt: skip
    errors: list[dict[str, str]] = []
    for i, o in enumerate(body.outcomes):
        where = f"body/outcomes/{i}/signature"
        if o.signature is None:
            if settings.outcomes_signed_only:
                errors.append({"loc": where, "msg": "required: the predict answer's signature",
                               "type": "missing"})  # fmt: skip
        elif not any(verify(k, name, version, o.probabilities, o.signature) for k in keys):
            errors.append({"loc": where, "type": "signature",
                           "msg": f"not what version {version} of {name} answered (another"
                                  " version's answer, or probabilities changed)"})  # fmt: skip
    if errors:
        raise InvalidRequest(f"{len(errors)} outcome(s) not signed by this version", errors=errors)
    return sum(o.signature is not None for o in body.outcomes)
