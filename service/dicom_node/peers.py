"""The DICOM node's peers, as settings give them: allowed callers, routing rules and result
destinations (pydantic models; `service.config.DicomNodeSettings` holds lists of them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

PEER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""What routes call a destination and retrievals a source."""


class DicomCaller(BaseModel):
    """A DICOM application entity allowed to associate: its AE title and the host it calls from."""

    ae_title: str = Field(min_length=1, max_length=16, description="Calling AE title.")
    host: str = Field(min_length=1, description="The caller's IP address (or host name).")


class DicomRoute(BaseModel):
    """Which model classifies a series, and where its result goes: every key given must
    match; the first matching wins."""

    model: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="Model name.")
    alias: str | None = Field(default=None, description="Alias; default: the service's default.")
    modality: str | None = Field(default=None, description="Modality (0008,0060), e.g. DX.")
    body_part: str | None = Field(default=None, description="Body Part Examined (0018,0015).")
    sop_class: str | None = Field(default=None, description="SOP Class UID of the instances.")
    calling_ae: str | None = Field(default=None, description="AE title that sent the series.")
    destinations: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The names of the destinations this route's results go to; default: every"
        " destination.",
    )


class DicomSource(BaseModel):
    """A PACS the node may ask for a study it holds (C-MOVE to the node's AE title)."""

    name: str = Field(pattern=PEER_NAME, description="What a retrieval names it by.")
    ae_title: str = Field(min_length=1, max_length=16, description="Its AE title (called).")
    host: str = Field(min_length=1, description="Its host.")
    port: int = Field(ge=1, le=65535, description="Its DICOM port.")
    tls: bool = Field(
        default=False,
        description="Ask over TLS: its certificate checked against SCANTUNE_DICOM_TLS_CA_FILE"
        " (or the system's CAs) and its host name.",
    )


class OAuthClient(BaseModel):
    """OAuth 2.0 client credentials (RFC 6749 section 4.4) for a STOW-RS destination, as cloud
    DICOM stores and hospital API gateways ask: a bearer token from `token_url`, renewed
    before it expires (and after a 401)."""

    token_url: str = Field(
        pattern=r"^https://", description="The token endpoint (HTTPS: the secret goes there)."
    )
    client_id: str = Field(min_length=1, description="The node's client id there.")
    client_secret_file: Path = Field(
        description="A file (a mounted secret) holding the client secret; read at each token"
        " request, so a rotated secret is picked up."
    )
    scope: str | None = Field(default=None, description="Scopes to ask for, space-separated.")


class Hl7Destination(BaseModel):
    """An HL7 v2 receiver (an integration engine, a RIS): each result goes as an ORU^R01
    over MLLP, and counts as delivered when the receiver answers AA (or CA)."""

    host: str = Field(min_length=1, description="The receiver's host.")
    port: int = Field(ge=1, le=65535, description="Its MLLP port.")
    tls: bool = Field(
        default=False,
        description="MLLP over TLS: the receiver's certificate checked against"
        " SCANTUNE_DICOM_TLS_CA_FILE (or the system's CAs) and its host name.",
    )
    receiving_application: str = Field(default="", max_length=180, description="MSH-5.")
    receiving_facility: str = Field(default="", max_length=180, description="MSH-6.")
    sending_application: str = Field(default="SCANTUNE", max_length=180, description="MSH-3.")
    sending_facility: str = Field(default="", max_length=180, description="MSH-4.")
    processing_id: Literal["P", "T", "D"] = Field(
        default="P", description="MSH-11: production, training or debugging."
    )
    attention_maps: bool = Field(
        default=False,
        description="With the findings, each classified scan under the model's class activation"
        " map, as an ED observation (a JPEG, marked not for diagnostic use).",
    )
    attention_map_max_bytes: int | None = Field(
        default=None,
        ge=4096,
        le=16_000_000,
        description="The most an attention map's OBX-5 may hold, for an engine that caps a"
        " field: a larger map goes at lower JPEG quality, then smaller, or not at all.",
    )


class FhirDestination(BaseModel):
    """An EHR's FHIR R4 server: each result goes as one transaction Bundle POSTed to its base
    URL, and counts as delivered when the server answers every entry with a 2xx."""

    url: str = Field(pattern=r"^https?://", description="The FHIR server's base URL.")
    authorization_file: Path | None = Field(
        default=None,
        description="A file (a mounted secret) holding the Authorization header's value;"
        " read at each send.",
    )
    oauth: OAuthClient | None = Field(
        default=None, description="OAuth 2.0 client credentials instead of a file."
    )
    attention_maps: bool = Field(
        default=False,
        description="With the findings, each classified scan under the model's class activation"
        " map, as an image Media (PNG) the DiagnosticReport lists (marked not for diagnostic"
        " use).",
    )

    @model_validator(mode="after")
    def _one_credential(self) -> FhirDestination:
        if self.oauth is not None and self.authorization_file is not None:
            raise ValueError("give authorization_file or oauth, not both")
        return self


class DicomDestination(BaseModel):
    """Where results go: a DICOM AE (C-STORE), a DICOMweb server (STOW-RS), an HL7 v2
    receiver (ORU^R01 over MLLP) or a FHIR server (a transaction Bundle)."""

    name: str | None = Field(
        default=None,
        pattern=PEER_NAME,
        description="What routes call it (their `destinations`), e.g. pacs or ris.",
    )
    ae_title: str | None = Field(default=None, max_length=16, description="C-STORE: called AE.")
    host: str | None = Field(default=None, description="C-STORE: host.")
    port: int | None = Field(default=None, ge=1, le=65535, description="C-STORE: port.")
    tls: bool = Field(
        default=False,
        description="C-STORE over TLS: the destination's certificate checked against"
        " SCANTUNE_DICOM_TLS_CA_FILE (or the system's CAs) and its host name.",
    )
    stow_url: str | None = Field(
        default=None, pattern=r"^https?://", description="STOW-RS: the DICOMweb root URL."
    )
    authorization_file: Path | None = Field(
        default=None,
        description=(
            "STOW-RS: a file (a mounted secret) holding the Authorization header's value,"
            ' e.g. "Bearer <token>" or "Basic <base64>"; read at each send.'
        ),
    )
    oauth: OAuthClient | None = Field(
        default=None, description="STOW-RS: OAuth 2.0 client credentials instead of a file."
    )
    attention_maps: bool = Field(
        default=False,
        description="C-STORE or STOW-RS: with the SR, each classified scan under the model's"
        " class activation map, as Secondary Capture images in a series of their own (marked"
        " not for diagnostic use).",
    )
    hl7: Hl7Destination | None = Field(
        default=None, description="HL7 v2: the receiver of ORU^R01 messages (nothing else)."
    )
    fhir: FhirDestination | None = Field(
        default=None, description="FHIR R4: the server taking the results (nothing else)."
    )
    only_findings: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Class names: a series' result goes here only when one of its scans was"
        " answered one of them (a critical-finding notice to a worklist or the ward); the"
        " others are recorded as skipped. Default: every result.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> DicomDestination:
        dimse = (self.ae_title, self.host, self.port)
        nested = [name for name in ("hl7", "fhir") if getattr(self, name) is not None]
        if nested:
            others = (*dimse, self.stow_url, self.authorization_file, self.oauth)
            if (
                len(nested) > 1
                or any(v is not None for v in others)
                or self.tls
                or (self.attention_maps)
            ):
                raise ValueError(
                    f"an {nested[0]} destination takes no other key (its settings go inside it)"
                )
            return self
        if self.stow_url is None and None in dimse:
            raise ValueError(
                "give ae_title, host and port (C-STORE), stow_url (STOW-RS), hl7 (HL7 v2)"
                " or fhir (FHIR R4)"
            )
        if self.stow_url is not None and any(v is not None for v in dimse):
            raise ValueError("give either ae_title/host/port or stow_url, not both")
        if self.authorization_file is not None and self.stow_url is None:
            raise ValueError("authorization_file goes with stow_url")
        if self.oauth is not None and self.stow_url is None:
            raise ValueError("oauth goes with stow_url")
        if self.oauth is not None and self.authorization_file is not None:
            raise ValueError("give authorization_file or oauth, not both")
        if self.tls and self.stow_url is not None:
            raise ValueError("tls is for C-STORE; a STOW-RS URL says https:// itself")
        return self

    @property
    def uses_tls(self) -> bool:
        """Whether sending there needs the node's client TLS context."""
        return self.tls or (self.hl7 is not None and self.hl7.tls)

    @property
    def key(self) -> str:
        """A stable name for the destination (no credentials): what delivery rows record."""
        if self.hl7 is not None:
            return f"mllp://{self.hl7.host}:{self.hl7.port}/{self.hl7.receiving_application}"
        if self.fhir is not None:
            return self.fhir.url
        return self.stow_url or f"{self.ae_title}@{self.host}:{self.port}"
