"""Which model classifies a series, and where its result goes: the first rule of
`SCANTUNE_DICOM_ROUTES` that matches."""

from __future__ import annotations

from collections.abc import Sequence

from service.dicom_node.peers import DicomDestination, DicomRoute
from service.dicom_node.queue import InstanceMeta


class Router:
    def __init__(
        self, routes: list[DicomRoute], destinations: Sequence[DicomDestination] = ()
    ) -> None:
        self.routes = list(routes)
        self.destinations = list(destinations)

    def route(self, meta: InstanceMeta) -> DicomRoute | None:
        """The first rule whose every given key matches (code strings compared without case
        or padding, UIDs exactly), or None: the series is then dropped."""
        return next((r for r in self.routes if matches(r, meta)), None)

    def not_wanted(
        self, targets: Sequence[str], answered: set[str], classes: set[str]
    ) -> dict[str, str]:
        """The targets (destination keys) that take only findings (`only_findings`) none of
        the series' scans was answered, with why: their result is not sent there. `classes`:
        the model's, to tell a name it never answers (a typo, another model's class)."""
        only = {d.key: d.only_findings for d in self.destinations if d.only_findings}
        skipped = {}
        for key in (k for k in targets if k in only and not answered & set(only[k])):
            named = ", ".join(only[key])
            skipped[key] = (
                f"not sent: it takes only {named}, and no scan was answered so"
                if classes & set(only[key])
                else f"not sent: it takes only {named}, which the model never answers"
            )
        return skipped

    def destination_keys(self, route: DicomRoute) -> list[str] | None:
        """The keys of the destinations the route's results go to (those it names, in the
        settings' order); None: every destination there is when the result is made."""
        if route.destinations is None:
            return None
        return [d.key for d in self.destinations if d.name in route.destinations]


def matches(route: DicomRoute, meta: InstanceMeta) -> bool:
    wanted = (
        (route.modality, meta.modality, _code),
        (route.body_part, meta.body_part, _code),
        (route.calling_ae, meta.calling_ae, _code),
        (route.sop_class, meta.sop_class_uid, str.strip),
    )
    return all(want is None or norm(want) == norm(have) for want, have, norm in wanted)


def _code(value: str) -> str:
    return value.strip().upper()
