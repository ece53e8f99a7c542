"""Checkpoints kept in the artifact store, for runners whose work dir dies with them.

A Kubernetes pod's disk goes with the pod, so its runner copies `checkpoints/` to
`jobs/<id>/checkpoints/` in the artifact store after each epoch, and a resumed pod copies
them back before training. Local runners keep them in the work dir and need none of this.
"""

from __future__ import annotations

import logging
from pathlib import Path

from service.storage import ArtifactStore, ObjectNotFound, StoreError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


def store_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/{CHECKPOINT_DIR}"


class CheckpointSync:
    def __init__(self, store: ArtifactStore, job_id: str, out_dir: Path) -> None:
        self.store, self.job_id = store, job_id
        self.local = out_dir / CHECKPOINT_DIR
        self._sent: dict[str, float] = {}

    def restore(self) -> int:
        """Copy the stored checkpoints into the work dir; returns how many files came back."""
        prefix = store_prefix(self.job_id)
        count = 0
        for key in self.store.list_keys(prefix):
            name = key[len(prefix) + 1 :]
            target = self.local / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.write_bytes(self.store.get_bytes(key))
            except ObjectNotFound:
                continue
            self._sent[name] = target.stat().st_mtime
            count += 1
        return count

    def push(self) -> int:
        """Upload checkpoint files changed since the last push; errors are logged, not raised."""
        if not self.local.is_dir():
            return 0
        count = 0
        for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
            name = path.relative_to(self.local).as_posix()
            if name.endswith(".partial") or self._sent.get(name) == path.stat().st_mtime:
                continue
            try:
                self.store.put_file(f"{store_prefix(self.job_id)}/{name}", path)
            except StoreError:
                log.warning("could not upload checkpoint %s; a resume may start earlier", name)
                continue
            self._sent[name] = path.stat().st_mtime
            count += 1
        return count

    def discard(self) -> None:
        self.store.delete_prefix(store_prefix(self.job_id))
