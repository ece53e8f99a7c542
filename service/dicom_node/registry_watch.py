"""Following the registry's recalls (`SCANTUNE_DICOM_FOLLOW_WITHDRAWALS`): every
`dicom_withdrawal_check_s` the node asks the training service whether each version whose
results it delivered has been withdrawn (`GET …/versions/{n}/withdrawal`, the node's training
key: scope `read`, and read access to those models), and recalls at the node those that were,
with the registry's reason; the queue worker then withdraws their results where they went
(`service.dicom_node.recalls`). Opt in: it sends notices to hospital systems on a decision
taken elsewhere.

It asks too about the recalls it made itself, and lifts one whose version the registry put
back in service: the version's later results go out again, while its withdrawn results stay
withdrawn (a person restores one that should stand where it went). A recall a person made,
or lifted, is theirs: never lifted, nor made again for the same withdrawal, by the watch."""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import quote

import requests

from service.audit import record
from service.dicom_node.background import Background
from service.dicom_node.recalls import RecallBook

log = logging.getLogger("scantune.dicom")
TIMEOUT_S = 30.0
BY = "registry"
MADE_HERE = f"{BY} ("  # the requester of a recall the watch made: "registry (<who withdrew>)"
REINSTATED = "put back in service at the registry"


class RegistryWatch(Background):
    name = "registry-watch"

    def __init__(
        self, book: RecallBook, training_url: str, api_key: str | None, check_s: float
    ) -> None:
        self.book, self.url, self.poll_s = book, training_url.rstrip("/"), check_s
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        super().__init__()

    def step(self) -> bool:
        """Ask about each version with delivered results not recalled, recalling the
        withdrawn; then about each recall in force the watch made, lifting those of versions
        back in service. Always waits `poll_s` after (a round is the whole check)."""
        for model, version in self.book.unrecalled_versions():
            self._recall_if_withdrawn(model, version)
        for recall_id, model, version in self.book.made_by(MADE_HERE):
            self._lift_if_reinstated(recall_id, model, version)
        return False

    def _recall_if_withdrawn(self, model: str, version: int) -> None:
        found = self._withdrawal(model, version)
        if found is None or not found.get("withdrawn"):
            return
        lifted = self.book.lifted_at(model, version)
        if lifted is not None and not _since(found.get("set_at"), lifted):
            return  # its recall was lifted after this withdrawal: that word stands
        reason = str(found.get("reason") or "withdrawn at the registry")
        by = f"{BY} ({found.get('set_by') or 'unknown'})"
        _, new = self.book.request(model, version, reason, by)
        if new:
            record(
                "version_recalled_at_node", client=BY,
                target=f"model {model} version {version}", outcome="ok", reason=reason,
            )  # fmt: skip
            log.warning("model %s v%d withdrawn at the registry: recalled here", model,
                        version)  # fmt: skip

    def _lift_if_reinstated(self, recall_id: int, model: str, version: int) -> None:
        found = self._withdrawal(model, version)
        if found is None or found.get("withdrawn") is not False:
            return
        by = f"{BY} ({found.get('set_by') or 'unknown'})"
        if self.book.lift(recall_id, REINSTATED, by, made_by=MADE_HERE):
            record(
                "version_recall_lifted_at_node", client=BY,
                target=f"model {model} version {version}", outcome="ok", reason=REINSTATED,
            )  # fmt: skip
            log.warning("model %s v%d put back in service at the registry: recall lifted"
                        " here", model, version)  # fmt: skip

    def _withdrawal(self, model: str, version: int) -> dict[str, object] | None:
        path = f"/v1/models/{quote(model, safe='')}/versions/{version}/withdrawal"
        try:
            answer = self.session.get(self.url + path, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            log.warning("registry not reachable for recalls (%s)", type(exc).__name__)
            return None
        if answer.status_code != 200:  # 404: unknown there (or not this key's to see)
            log.warning("registry answered %d for model %s v%d's withdrawal",
                        answer.status_code, model, version)  # fmt: skip
            return None
        try:
            body = answer.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None


def _since(stamp: object, then: datetime) -> bool:
    """Whether the registry's ISO 8601 `stamp` is after `then` (False when it gives none)."""
    try:
        at = datetime.fromisoformat(str(stamp))
    except ValueError:
        return False
    return at.tzinfo is not None and at > then
