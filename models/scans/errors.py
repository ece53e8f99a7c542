"""Why a file is not a scan we decode: the one error every decoder raises (a leaf module)."""

from __future__ import annotations


class ImageDecodeError(ValueError):
    """A file is not a decodable scan; says which file and why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
