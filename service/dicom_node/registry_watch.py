"""Following the registry's recalls (`SCANTUNE_DICOM_FOLLOW_WITHDRAWALS`): every
`dicom_withdrawal_check_s` the node asks the training service whether each version whose
results it delivered has been withdrawn (`GET …/versions/{n}/withdrawal`, the node's training
key: scope `read`, and read access to those models), and recalls at the node those that were,
with the registry's reason; the queue worker then withdraws their results where they went
(`service.dicom_node.recalls`). Opt in: it sends notices to hospital systems on a decision
taken elsewhere. A version put back in service later is not un-recalled: its withdrawn
results stay withdrawn (a person sends the series again if they should stand)."""

from __future__ import annotations

import logging
from urllib.parse import quote

import requests

from service.audit import record
from service.dicom_node.background import Background
from service.dicom_node.recalls import RecallBook

log = logging.getLogger("scantune.dicom")
TIMEOUT_S = 30.0
BY = "registry"


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
        """Ask about each version with delivered results not yet recalled; recall the
        withdrawn. Always waits `poll_s` after (a round is the whole check)."""
        for model, version in self.book.unrecalled_versions():
            found = self._withdrawal(model, version)
            if found is None or not found.get("withdrawn"):
                continue
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
        return False

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
