"""Outbound requests the service makes on a caller's behalf (webhooks), made safe.

A URL's host is resolved once; every address it resolves to must be a public one unless the
host is allow-listed (loopback, private, link-local, shared, reserved and cloud metadata
addresses are refused), and the request then goes to the address that was checked, so a
name that resolves differently a moment later (DNS rebinding) cannot redirect it. TLS still
verifies the certificate against the host name, with the public CAs (certifi) and any the
operator adds (`SCANTUNE_WEBHOOK_CA_PEM`, an internal CA). Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3

# Cloud instance metadata: always refused unless named in the allow-list itself.
METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("169.254.170.2"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("168.63.129.16"),
}


class TargetRefused(ValueError):
    """The URL may not be called; the message says why without naming what answered."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    address: str
    path: str


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and ip not in METADATA and not ip.is_multicast


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise TargetRefused(f"{host} does not resolve") from None
    return sorted({str(info[4][0]) for info in infos})


def check_target(url: str, allowed_hosts: list[str]) -> Target:
    """The address to call for `url`, or TargetRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("only http and https URLs with a host can be called")
    host = parts.hostname.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if host in {h.lower() for h in allowed_hosts}:
        try:
            addresses = resolve(host, port)
        except TargetRefused:  # allowed: its name may resolve only where the job runs
            addresses = [host]
    else:
        addresses = resolve(host, port)
        if not addresses or not all(_public(a) for a in addresses):
            raise TargetRefused(
                f"{host} is a loopback, private, link-local or metadata address; allow it with"
                " SCANTUNE_WEBHOOK_ALLOWED_HOSTS"
            )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, addresses[0], path)


def tls_context(extra_ca_pem: str | None = None) -> ssl.SSLContext:
    """Certificates verified against certifi's CAs plus `extra_ca_pem`'s; ValueError when that
    text holds no loadable certificate."""
    context = ssl.create_default_context(cafile=certifi.where())
    if extra_ca_pem:
        if "-----BEGIN CERTIFICATE-----" not in extra_ca_pem:
            raise ValueError("no '-----BEGIN CERTIFICATE-----' block")
        try:
            context.load_verify_locations(cadata=extra_ca_pem)
        except ssl.SSLError as exc:
            raise ValueError(exc.reason or "unreadable certificate") from None
    return context


def post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    extra_ca_pem: str | None = None,
) -> int:
    """POST to the checked address (never another), no redirects; the status code."""
    pool: urllib3.HTTPConnectionPool
    timeout = urllib3.Timeout(total=timeout_s)
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=timeout,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ssl_context=tls_context(extra_ca_pem),
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            target.address, target.port, timeout=timeout, retries=False
        )
    default_port = 443 if target.scheme == "https" else 80
    host = target.host if target.port == default_port else f"{target.host}:{target.port}"
    with pool:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": host},
            redirect=False,
            retries=False,
            preload_content=False,
        )
        response.drain_conn()
        return int(response.status)
