"""The outcomes clients report for scans a version classified (`model_outcomes`): kept per
client under a salted hash of the client's own reference for the scan, so a report sent again
for the same scan (a corrected diagnosis) replaces the first instead of counting twice."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, distinct, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.errors import Conflict
from service.jobs.tables import OutcomeRow, as_utc, utcnow

if TYPE_CHECKING:
    from models.card import ModelCard
    from models.outcomes import Bucket


@dataclass(frozen=True)
class Outcome:
    reference: str  # already hashed
    label: str
    probabilities: dict[str, float]
    earlier: str | None = None  # its hash under the salt before a rotation, if one is given


def _hashes(outcomes: Sequence[Outcome]) -> set[str]:
    return {o.reference for o in outcomes} | {o.earlier for o in outcomes if o.earlier}


@dataclass(frozen=True)
class Window:
    """A window's reports in brief: a report kept in it, or a correction (a later
    `reported_at`), changes it, so figures worked out on the same window stand."""

    count: int
    clients: int
    first_at: datetime | None
    last_at: datetime | None


@dataclass(frozen=True)
class Reported:
    labels: list[str]
    probabilities: list[dict[str, float]]
    times: list[datetime]  # when each was reported (UTC), where asked; else empty
    clients: int
    first_at: datetime | None
    last_at: datetime | None
    reporters: list[str] = field(default_factory=list)  # each one's client, where asked

    def by_client(self) -> dict[str, tuple[list[str], list[dict[str, float]]]]:
        """Each client's outcomes apart (read with `reporters`): labels and probabilities."""
        apart: dict[str, tuple[list[str], list[dict[str, float]]]] = {}
        for client, label, answer in zip(self.reporters, self.labels, self.probabilities,
                                         strict=True):  # fmt: skip
            labels, answers = apart.setdefault(client, ([], []))
            labels.append(label)
            answers.append(answer)
        return apart


class OutcomeStore:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def report(self, model: str, version: int, client: str, outcomes: Sequence[Outcome]) -> int:
        """Keep `outcomes` (each reference once) in one transaction; how many replaced an
        earlier report of the same scan. A report kept under the outcome's `earlier` hash (the
        salt before a rotation) is that scan's too: it is replaced, and re-keyed."""
        now = utcnow()
        try:
            with self._sessions.begin() as session:
                kept = self._kept(session, model, version, client, _hashes(outcomes))
                replaced = 0
                for outcome in outcomes:
                    row = kept.get(outcome.reference)
                    before = kept.get(outcome.earlier) if outcome.earlier else None
                    if row is None and before is not None:
                        row, before = before, None  # re-keyed under the current salt
                        row.reference = outcome.reference
                    if before is not None:  # reported under both salts: one report is kept
                        session.delete(before)
                    if row is None:
                        row = OutcomeRow(
                            model_name=model, version=version, client=client,
                            reference=outcome.reference,
                        )  # fmt: skip
                        session.add(row)
                    else:
                        replaced += 1
                    row.label, row.probabilities = outcome.label, outcome.probabilities
                    row.reported_at = now
        except IntegrityError:  # the same scans reported at the same moment by another call
            raise Conflict(
                "another report of the same scans arrived meanwhile: send again"
            ) from None
        return replaced

    def retract(
        self,
        model: str,
        version: int,
        client: str,
        references: Sequence[str],
        earlier: Mapping[str, str] | None = None,
    ) -> int:
        """Delete the client's reports of these scans (hashed references; `earlier`: each
        one's hash under the salt before a rotation, deleted too): the diagnosis they gave was
        withdrawn (a corrected report that confirms no class). How many of the scans had a
        report; one never reported, or already retracted, is no error (a retry is safe)."""
        earlier = earlier or {}
        hashes = set(references) | set(earlier.values())
        with self._sessions.begin() as session:
            kept = self._kept(session, model, version, client, hashes)
            found = [r for r in references if r in kept or earlier.get(r) in kept]
            for row in kept.values():
                session.delete(row)
        return len(found)

    @staticmethod
    def _kept(
        session: Session, model: str, version: int, client: str, hashes: Iterable[str]
    ) -> dict[str, OutcomeRow]:
        """The client's reports of the version kept under any of `hashes`, by hash."""
        query = select(OutcomeRow).where(
            OutcomeRow.model_name == model,
            OutcomeRow.version == version,
            OutcomeRow.client == client,
            OutcomeRow.reference.in_(list(hashes)),
        )
        return {row.reference: row for row in session.scalars(query)}

    def versions(self) -> list[tuple[str, int]]:
        """The versions that have reported outcomes."""
        query = select(OutcomeRow.model_name, OutcomeRow.version).distinct()
        with self._sessions() as session:
            return [(str(m), int(v)) for m, v in session.execute(query).all()]

    def reported(
        self,
        model: str,
        version: int,
        client: str | None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        times: bool = False,
        reporters: bool = False,
        window: Window | None = None,
    ) -> Reported:
        """The version's outcomes: every client's (None), or one client's, reported at or
        after `since` and before `until`; when each was reported if `times` (a trend asks),
        and by whom if `reporters` (to see each client apart). `window`: the brief already
        read, not read again. Plain rows, not ORM objects: 100,000 objects took a second to
        build (bench/outcomes.py)."""
        where = _window(model, version, client, since, until)
        window = window or self.window(model, version, client, since, until)
        columns: list[Any] = [OutcomeRow.label, OutcomeRow.probabilities]
        if times:
            columns.append(OutcomeRow.reported_at)
        if reporters:
            columns.append(OutcomeRow.client)  # last
        with self._sessions() as session:
            found = session.execute(select(*columns).where(*where).order_by(OutcomeRow.id)).all()
        return Reported(
            [row[0] for row in found],
            [row[1] for row in found],
            [as_utc(row[2]) for row in found] if times else [],
            window.clients,
            window.first_at,
            window.last_at,
            [row[-1] for row in found] if reporters else [],
        )

    def window(
        self,
        model: str,
        version: int,
        client: str | None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Window:
        """The same reports as `reported`, in brief: one aggregate query, no rows."""
        summary = select(
            func.count(),
            func.count(distinct(OutcomeRow.client)),
            func.min(OutcomeRow.reported_at),
            func.max(OutcomeRow.reported_at),
        ).where(*_window(model, version, client, since, until))
        with self._sessions() as session:
            count, clients, first, last = session.execute(summary).one()
        return Window(int(count), int(clients), as_utc(first), as_utc(last))


def _window(
    model: str, version: int, client: str | None, since: datetime | None, until: datetime | None
) -> list[Any]:
    where = [OutcomeRow.model_name == model, OutcomeRow.version == version]
    if client is not None:
        where.append(OutcomeRow.client == client)
    if since is not None:
        where.append(OutcomeRow.reported_at >= as_utc(since).astimezone(UTC))
    if until is not None:
        where.append(OutcomeRow.reported_at < as_utc(until).astimezone(UTC))
    return where


class OutcomeFigures:
    """A version's figures, and its trend, on a window of its reports, worked out again only
    when the window's reports changed (`Window`): at 100,000 reports the rows and their
    bootstrap take seconds (bench/outcomes.py), the brief one query. Kept per process for the
    most recent `size` windows asked."""

    def __init__(self, store: OutcomeStore, size: int = 128) -> None:
        self.store, self.size = store, size
        self._kept: OrderedDict[tuple[Any, ...], tuple[Window, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def of(
        self,
        name: str,
        version: int,
        card: ModelCard,
        client: str | None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[Window, dict[str, Any]]:
        """The window in brief and the figures (`models.outcomes.reported_figures`)."""
        from models.outcomes import reported_figures

        def work_out(window: Window) -> dict[str, Any]:
            found = self.store.reported(name, version, client, since, until, window=window)
            return reported_figures(card, found.labels, found.probabilities)

        key = ("figures", name, version, card.onnx_sha256, client, since, until)
        return self._kept_or(key, name, version, client, since, until, work_out)

    def trend(
        self,
        name: str,
        version: int,
        card: ModelCard,
        client: str | None,
        bucket: Bucket,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The window's reports period by period (`models.outcomes.trend_periods`)."""
        from models.outcomes import trend_periods

        def work_out(window: Window) -> list[dict[str, Any]]:
            found = self.store.reported(
                name, version, client, since, until, times=True, window=window
            )
            return trend_periods(card, found.labels, found.probabilities, found.times, bucket)

        key = ("trend", bucket, name, version, card.onnx_sha256, client, since, until)
        return self._kept_or(key, name, version, client, since, until, work_out)[1]

    def _kept_or(
        self,
        key: tuple[Any, ...],
        name: str,
        version: int,
        client: str | None,
        since: datetime | None,
        until: datetime | None,
        work_out: Callable[[Window], Any],
    ) -> tuple[Window, Any]:
        """What `key` keeps if the window's brief is as it was, else `work_out(brief)`, kept."""
        window = self.store.window(name, version, client, since, until)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] == window:
                self._kept.move_to_end(key)
                return kept
        # Read after the brief: a report meanwhile makes the next brief differ, never stale.
        found = work_out(window)
        with self._lock:
            self._kept[key] = (window, found)
            self._kept.move_to_end(key)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return window, found
