"""gunicorn's access log without patient data: the request path with DICOM UIDs taken out.

The log line gives the method and path, never the query string (`service.commands.serve`).
A path may still name a study: STOW-RS to `/dicomweb/studies/{study}`. Each path segment that
is a DICOM UID (digits in three or more dot-separated components) is logged as `{uid}`. A
gunicorn logger class, as gunicorn offers no hook for the access line's atoms otherwise.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

UID_SEGMENT = re.compile(r"(?<=/)[0-9]+(?:\.[0-9]+){2,}(?=/|$)")


def redact_path(path: str) -> str:
    return UID_SEGMENT.sub("{uid}", path)


class AccessLogger(Logger):
    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        atoms["U"] = redact_path(str(atoms.get("U", "")))
        return atoms
