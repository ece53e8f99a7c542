"""The folder of received instances and made results, until their result is delivered.

Files are named by a random token, never by a UID or a patient attribute, and written
atomically (temporary name, fsync, rename): a file the queue names is always whole. The
folder holds patient data: put it on an encrypted volume (docs/dicom-node.md).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def maps_file(result_file: str) -> str:
    """The name of the attention maps (`service.dicom_node.maps`) of the series whose SR is
    `result_file`: named after it, so no row needs to name them."""
    return f"{result_file.removesuffix('.sr.dcm')}.maps.zip"


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def write(self, data: bytes, suffix: str = ".dcm", *, name: str | None = None) -> str:
        """Store `data` durably (under `name`, else a new random one); returns its name."""
        name = name or f"{secrets.token_hex(16)}{suffix}"
        self.path(name)  # a name, not a path
        partial = self.root / f".{name}.part"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.root / name)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return name

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError("not a spool file name")
        return self.root / name

    def delete(self, name: str | None) -> None:
        if name:
            self.path(name).unlink(missing_ok=True)

    def names(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if not p.name.startswith(".")}

    def partials(self) -> list[Path]:
        return [p for p in self.root.iterdir() if p.name.endswith(".part")]
