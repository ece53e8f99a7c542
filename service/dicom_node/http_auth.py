"""HTTP destinations' transport: HTTPS checked against the hospital's CAs, and the
Authorization header (an OAuth client-credentials token, or a secret read from a file) of a
STOW-RS or FHIR destination."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from service.dicom_node.failures import NotDelivered
from service.dicom_node.peers import OAuthClient


class ContextAdapter(HTTPAdapter):
    """HTTPS checked with a given SSL context: requests takes only a CA bundle's path, which
    would replace the public CAs instead of adding the hospital's."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.context
        super().init_poolmanager(*args, **kwargs)


def https_session(session: requests.Session, context: ssl.SSLContext | None) -> requests.Session:
    """`session`, its HTTPS peers checked against `context` (the public CAs and the
    hospital's: `SCANTUNE_DICOM_HTTPS_CA_FILE`); None leaves requests' own CAs."""
    if context is not None:
        session.mount("https://", ContextAdapter(context))
    return session


class OAuthTokens:
    """Bearer tokens by the client-credentials grant (requests-oauthlib), each kept until
    shortly before it expires. Not getting one is a failed send like any other: the queue
    tries again with back-off. Neither the secret nor a token is ever in an error's text."""

    RENEW_BEFORE_S = 30.0

    def __init__(
        self, client: OAuthClient, timeout_s: float, https: ssl.SSLContext | None = None
    ) -> None:
        self.client, self.timeout_s, self.https = client, timeout_s, https
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def bearer(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._token, lifetime = self._fetch()
                self._renew_at = (
                    time.monotonic() + lifetime - min(self.RENEW_BEFORE_S, lifetime / 2)
                )
            return self._token

    def forget(self) -> None:
        """Drop the token (the destination refused it): the next send asks for a new one."""
        with self._lock:
            self._token = None

    def _fetch(self) -> tuple[str, float]:
        from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error
        from requests.auth import HTTPBasicAuth
        from requests_oauthlib import OAuth2Session

        c = self.client
        try:
            secret = c.client_secret_file.read_text().strip()
        except OSError as exc:
            raise NotDelivered(f"OAuth client secret unreadable ({type(exc).__name__})") from None
        # The scope goes in the request body only: a server may grant less than asked (its
        # gateway then decides), which the session's own scope check would take for an error.
        session = OAuth2Session(client=BackendApplicationClient(client_id=c.client_id))
        https_session(session, self.https)
        try:
            token = session.fetch_token(
                c.token_url,
                auth=HTTPBasicAuth(c.client_id, secret),
                timeout=self.timeout_s,
                scope=c.scope,
            )
        except OAuth2Error as exc:  # the endpoint's own error code: invalid_client...
            raise NotDelivered(f"OAuth token refused ({exc.error})") from None
        except (requests.RequestException, OSError, ValueError) as exc:
            raise NotDelivered(f"OAuth token request failed ({type(exc).__name__})") from None
        finally:
            session.close()
        return str(token["access_token"]), float(token.get("expires_in") or 3600)


class Credentials:
    """The Authorization header of an HTTP destination: an OAuth bearer token, the value of a
    file read at each send (a rotated secret is picked up), or none."""

    def __init__(
        self,
        authorization_file: Path | None,
        oauth: OAuthClient | None,
        timeout_s: float,
        https: ssl.SSLContext | None,
    ) -> None:
        self.authorization_file = authorization_file
        self.tokens = OAuthTokens(oauth, timeout_s, https) if oauth else None

    def headers(self) -> dict[str, str]:
        if self.tokens is not None:
            return {"Authorization": f"Bearer {self.tokens.bearer()}"}
        if self.authorization_file is None:
            return {}
        try:
            return {"Authorization": self.authorization_file.read_text().strip()}
        except OSError as exc:
            raise NotDelivered(f"authorization file unreadable ({type(exc).__name__})") from None

    def refused(self) -> None:
        """The destination answered 401: a token revoked or expired early is asked anew."""
        if self.tokens is not None:
            self.tokens.forget()
