"""TLS on the DICOM port and to C-STORE destinations (DICOM PS3.15 Annex B.1, IHE ATNA).

Off unless the node is given a certificate: DICOM over TLS needs certificates the site issues,
so there is no sensible default. With `SCANTUNE_DICOM_TLS_CERT_FILE` and `..._KEY_FILE` the
DICOM port speaks TLS only (a plain association is not understood); with
`SCANTUNE_DICOM_TLS_CA_FILE` too, a caller must also present a certificate that CA signed
(mutual TLS, as IHE ATNA asks) before its AE title is even looked at. Destinations marked
`"tls": true` are called over TLS, their certificate checked against that CA (or the
system's) and their host name, the node's own certificate offered when it has one.
Contexts are built by the standard library's `ssl`, which is what pynetdicom takes.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """The DICOM port's context; ValueError naming the file that does not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key)
    if ca is not None:
        _load_ca(context, ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A context for calling a TLS destination: its certificate verified (against `ca`, or the
    system's CAs) with its host name; ours offered when we have one."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        _load_ca(context, ca)
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    return context


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"the certificate {cert} and key {key} do not load: {_why(exc)}") from None


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"the CA file {ca} does not load: {_why(exc)}") from None


def _why(exc: OSError | ssl.SSLError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or type(exc).__name__)
