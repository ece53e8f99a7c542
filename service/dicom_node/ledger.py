"""What the node did with each series, for the person who answers "did study X get its
result, and if not, why?": the queue's series and deliveries as plain dictionaries, newest
first. Reads only; what changes the queue is `WorkQueue`'s."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from service.dicom_node.queue import chosen_destinations
from service.dicom_node.tables import DeliveryRow, InstanceRow, SeriesRow
from service.jobs.store import as_utc
from service.paging import newest_page


class SeriesLedger:
    def __init__(self, engine: Engine, sources: Mapping[str, str] | None = None) -> None:
        """`sources`: the node's sources' names by AE title, to name the PACS a series came
        from (the one that sent it: a source sends what it is asked for under its own AE
        title), which is where it can be fetched again."""
        self.engine, self.sources = engine, dict(sources or {})

    def page(
        self,
        *,
        state: str | None = None,
        study_instance_uid: str | None = None,
        model: str | None = None,
        version: int | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Series newest first; pass the returned cursor for the next page (None: no more).
        `model` and `version`: those its route sent to the model, and that version classified
        (a recalled version's results)."""
        query = select(SeriesRow)
        if state is not None:
            query = query.where(SeriesRow.state == state)
        if study_instance_uid is not None:
            query = query.where(SeriesRow.study_uid == study_instance_uid)
        if model is not None:
            query = query.where(SeriesRow.model == model)
        if version is not None:
            query = query.where(SeriesRow.version == version)
        with Session(self.engine) as session:
            rows, next_cursor = newest_page(session, query, SeriesRow.id, "series", cursor, limit)
            return self._views(session, rows), next_cursor

    def get(self, series_id: int) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.get(SeriesRow, series_id)
            return self._views(session, [row])[0] if row is not None else None

    def _views(self, session: Session, rows: list[SeriesRow]) -> list[dict[str, Any]]:
        views = _views(session, rows)
        for view, row in zip(views, rows, strict=True):
            view["source"] = self.sources.get(row.calling_ae)
        return views


def _views(session: Session, rows: list[SeriesRow]) -> list[dict[str, Any]]:
    ids = [row.id for row in rows]
    counts = dict(
        session.execute(
            select(InstanceRow.series_id, func.count())
            .where(InstanceRow.series_id.in_(ids))
            .group_by(InstanceRow.series_id)
        ).all()
    )
    deliveries: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for d in session.scalars(
        select(DeliveryRow).where(DeliveryRow.series_id.in_(ids)).order_by(DeliveryRow.id)
    ):
        deliveries[d.series_id].append(
            {
                "destination": d.destination,
                "state": d.state,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "next_attempt_at": iso_time(d.next_attempt_at) if d.state == "pending" else None,
                "delivered_at": iso_time(d.delivered_at),
            }
        )
    return [_view(row, int(counts.get(row.id, 0)), deliveries[row.id]) for row in rows]


def _view(row: SeriesRow, instances: int, deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row.id,
        "study_instance_uid": row.study_uid,
        "series_instance_uid": row.series_uid,
        "generation": row.generation,
        "state": row.state,
        "calling_ae": row.calling_ae,
        "model": row.model,
        "alias": row.alias,
        "version": row.version,
        "destinations": chosen_destinations(row),
        "instances": instances,
        "result_sop_instance_uid": row.result_uid,
        "attempts": row.attempts,
        "last_error": row.last_error or None,
        "created_at": iso_time(row.created_at),
        "last_instance_at": iso_time(row.last_instance_at),
        "finished_at": iso_time(row.finished_at),
        "deliveries": deliveries,
    }


def iso_time(value: datetime | None) -> str | None:
    """A stored time as ISO 8601 in UTC (None stays None)."""
    at = as_utc(value)
    return at.isoformat() if at is not None else None
