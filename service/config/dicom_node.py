"""Settings of the DICOM node (`scantune serve dicom`)."""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import Field, model_validator

from service.config.common import DEFAULT_VAR, CommonSettings
from service.dicom_node.peers import DicomCaller, DicomDestination, DicomRoute, DicomSource
from service.hospital.hl7_orders import AccessionField
from service.hospital.results import DEFAULT_DISCLAIMER


class DicomNodeSettings(CommonSettings):
    """The DICOM node: Storage SCP, STOW-RS, the durable work queue and result delivery."""

    database_url: str = Field(
        default=f"sqlite:///{(DEFAULT_VAR / 'scantune.db').resolve()}",
        description="The work queue's database: the job store's (SQLAlchemy URL).",
    )
    dicom_ae_title: str = Field(
        default="SCANTUNE", min_length=1, max_length=16, description="The node's AE title."
    )
    dicom_port: int = Field(default=11112, ge=0, le=65535, description="DICOM (DIMSE) port.")
    dicom_bind_host: str = Field(
        default="127.0.0.1", description="Address the DICOM port binds; 0.0.0.0 to open it."
    )
    dicom_tls_cert_file: Path | None = Field(
        default=None,
        description="The node's certificate (PEM, chain included): with the key, the DICOM port"
        " speaks TLS only. Default none: plain DICOM (keep the port on the hospital network).",
    )
    dicom_tls_key_file: Path | None = Field(
        default=None, description="The private key (PEM) of dicom_tls_cert_file."
    )
    dicom_tls_ca_file: Path | None = Field(
        default=None,
        description="CA certificates (PEM): callers must present a certificate they signed"
        " (mutual TLS), and TLS destinations' certificates are checked against them.",
    )
    dicom_https_ca_file: Path | None = Field(
        default=None,
        description="CA certificates (PEM) trusted for HTTPS beside the public ones (certifi):"
        " STOW-RS destinations and OAuth token endpoints signed by a hospital CA.",
    )
    dicom_tls_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="With a certificate: a second port for TLS (DICOM's is 2762), and"
        " dicom_port stays plain for modalities without TLS. Default none: one port, TLS only.",
    )
    dicom_allowed_callers: list[DicomCaller] = Field(
        default_factory=list,
        description='JSON list of {"ae_title", "host"} that may associate; empty: nobody.',
    )
    dicom_routes: list[DicomRoute] = Field(
        default_factory=list,
        description="JSON list of routing rules; a series no rule matches is dropped, counted.",
    )
    dicom_destinations: list[DicomDestination] = Field(
        default_factory=list, description="JSON list of where each result (the SR) is sent."
    )
    dicom_sources: list[DicomSource] = Field(
        default_factory=list,
        description='JSON list of {"name", "ae_title", "host", "port"}: PACSs the node may ask'
        " for a study (POST /v1/retrievals); empty: none.",
    )
    dicom_retrieve_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest silence from a source during a retrieval: no answer and no instance"
        " of its C-MOVE (then the node aborts the association and the retrieval fails); also"
        " the longest wait for the association and each C-FIND answer.",
    )
    dicom_retrieve_cancel_grace_s: float = Field(
        default=15.0,
        gt=0,
        description="How long a source has to answer a cancelled retrieval's C-CANCEL; then the"
        " node aborts the association (what came is kept).",
    )
    dicom_hl7_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="MLLP port taking the RIS's orders (HL7 ORM^O01 or OMI^O23); none: no orders.",
    )
    dicom_hl7_tls: bool = Field(
        default=False,
        description="MLLP over TLS on the HL7 port, with the node's certificate (and, given"
        " dicom_tls_ca_file, senders must present a certificate it signed).",
    )
    dicom_hl7_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Addresses (or host names) that may send orders; empty: nobody.",
    )
    dicom_order_source: str | None = Field(
        default=None,
        description="The source (a dicom_sources name) ordered exams come from; none, with"
        " dicom_outcome_codes: the HL7 port takes reports only.",
    )
    dicom_order_accession_field: AccessionField = Field(
        default="OBR-18", description="Where orders carry the accession number."
    )
    dicom_order_wait_h: float = Field(
        default=24.0, gt=0, description="How long an order waits for its exam to reach the PACS."
    )
    dicom_outcome_codes: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description='JSON {model: {class: ["CODE" or "SYSTEM|CODE", ...]}}: the coded findings of'
        " the RIS's final reports (HL7 ORU^R01 on the HL7 port) that confirm each class; the"
        " scans those models classify are reported to the training service with the class"
        " their exam's report confirms. Empty: no outcomes followed.",
    )
    dicom_outcome_wait_h: float = Field(
        default=2160.0,
        gt=0,
        description="How long a classified scan waits for its exam's final report (or a"
        " correction of it) before it is forgotten.",
    )
    training_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The training service, which takes confirmed outcomes.",
    )
    dicom_training_api_key: str | None = Field(
        default=None, description="The node's API key (scope predict) for the training service."
    )
    dicom_series_quiet_s: float = Field(
        default=5.0, gt=0, description="A series is complete after this long without a new one."
    )
    dicom_spool_dir: Path = Field(
        default=(DEFAULT_VAR / "dicom").resolve(),
        description="Received instances and results until delivered (encrypt the volume).",
    )
    dicom_retention_h: float = Field(
        default=72.0, gt=0, description="Undelivered work older than this is deleted, counted."
    )
    dicom_recall_keep_h: float = Field(
        default=0.0,
        ge=0,
        description="How long a delivered result (its SR and maps, never the scans) is kept so"
        " that a recall can withdraw it from where it went; 0: deleted once delivered, and a"
        " recall lists what it cannot withdraw. Keeping results keeps patient data: opt in.",
    )
    dicom_follow_withdrawals: bool = Field(
        default=False,
        description="Recall at the node each version withdrawn at the registry (asked of"
        " training_url every dicom_withdrawal_check_s with dicom_training_api_key: scope read"
        " and read access to the models), so its results are withdrawn where they went; and"
        " lift the recalls it made of versions put back in service there.",
    )
    dicom_withdrawal_check_s: float = Field(
        default=300.0, gt=0, description="How often the registry is asked about withdrawals."
    )
    dicom_retry_first_s: float = Field(
        default=2.0, gt=0, description="First retry delay of a failed step; doubles each time."
    )
    dicom_retry_max_s: float = Field(
        default=300.0, gt=0, description="Longest delay between retries of a failed step."
    )
    dicom_uid_root: str | None = Field(
        default=None,
        pattern=r"^[12](\.(0|[1-9][0-9]*))+$",
        max_length=24,
        description="UID root of the results (as for inference's SRs); none: 2.25 UIDs.",
    )
    result_disclaimer: str = Field(
        default=DEFAULT_DISCLAIMER,
        max_length=1024,
        description="Statement in every SR that the result is automated (as for inference).",
    )
    dicom_classify_concurrency: int = Field(
        default=2, ge=1, description="Series classified at once (requests to inference)."
    )
    inference_url: str = Field(
        default="http://127.0.0.1:8001", description="The inference service that classifies."
    )
    dicom_inference_api_key: str | None = Field(
        default=None, description="The node's own API key (scope predict) for inference."
    )
    dicom_inference_timeout_s: float = Field(
        default=60.0, gt=0, description="Time limit of one classification request."
    )

    def source(self, name: str) -> DicomSource | None:
        """The source of that name in dicom_sources, if any."""
        return next((s for s in self.dicom_sources if s.name == name), None)

    @model_validator(mode="after")
    def _peer_names_agree(self) -> DicomNodeSettings:
        """Each destination is one place (its key and name given once), each source name is
        one PACS, and a route names only destinations there are: a typo would otherwise send
        results nowhere."""
        keys = [d.key for d in self.dicom_destinations]
        names = [d.name for d in self.dicom_destinations if d.name is not None]
        sources = [s.name for s in self.dicom_sources]
        for where, kind, values in (
            ("dicom_destinations", "address", keys),
            ("dicom_destinations", "name", names),
            ("dicom_sources", "name", sources),
        ):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"{where}: {kind} {twice[0]!r} given twice")
        reports_only = self.dicom_outcome_codes and self.dicom_order_source is None
        orders = self.dicom_hl7_port is not None and not reports_only
        if orders and self.dicom_order_source not in sources:
            raise ValueError(
                "dicom_hl7_port takes orders for exams fetched from dicom_order_source, which"
                f" must name one of dicom_sources (it is {self.dicom_order_source!r});"
                " without it, only the RIS's reports are taken (dicom_outcome_codes)"
            )
        if self.dicom_outcome_codes and self.dicom_hl7_port is None:
            raise ValueError(
                "dicom_outcome_codes are matched in the RIS's reports, which come on"
                " dicom_hl7_port: set it"
            )
        for model, classes in self.dicom_outcome_codes.items():
            codes = [c for entries in classes.values() for c in set(entries)]
            twice = sorted({c for c in codes if codes.count(c) > 1})
            if twice or not all(classes.values()):
                raise ValueError(
                    f"dicom_outcome_codes[{model!r}]: " + (f"code {twice[0]!r} confirms two"
                    " classes" if twice else "each class needs at least one code")
                )  # fmt: skip
        for number, route in enumerate(self.dicom_routes):
            unknown = [n for n in route.destinations or () if n not in names]
            if unknown:
                raise ValueError(
                    f"dicom_routes[{number}] names destination {unknown[0]!r}, which no entry"
                    " of dicom_destinations is named"
                )
        return self

    @model_validator(mode="after")
    def _tls_loads(self) -> DicomNodeSettings:
        """A half-given or unreadable TLS setting stops the node at start, saying which: the
        contexts the node will build are built once here."""
        if (self.dicom_tls_cert_file is None) != (self.dicom_tls_key_file is None):
            raise ValueError("dicom_tls_cert_file and dicom_tls_key_file go together")
        if self.dicom_tls_port is not None and self.dicom_tls_cert_file is None:
            raise ValueError("dicom_tls_port needs dicom_tls_cert_file and dicom_tls_key_file")
        if self.dicom_hl7_tls and self.dicom_tls_cert_file is None:
            raise ValueError("dicom_hl7_tls needs dicom_tls_cert_file and dicom_tls_key_file")
        if self.dicom_tls_port == self.dicom_port != 0:
            raise ValueError("dicom_tls_port must differ from dicom_port")
        self.dicom_server_tls()
        self.dicom_client_tls()
        self.dicom_https_tls()
        return self

    def dicom_listeners(self) -> list[tuple[int, ssl.SSLContext | None]]:
        """The ports to listen on, each with its TLS context (None: plain DICOM)."""
        secured = self.dicom_server_tls()
        if secured is None or self.dicom_tls_port is None:
            return [(self.dicom_port, secured)]
        return [(self.dicom_port, None), (self.dicom_tls_port, secured)]

    def dicom_server_tls(self) -> ssl.SSLContext | None:
        """The TLS context of the node's TLS port, or None for plain DICOM."""
        from service.dicom_node import tls

        if self.dicom_tls_cert_file is None or self.dicom_tls_key_file is None:
            return None
        return tls.server_context(
            self.dicom_tls_cert_file, self.dicom_tls_key_file, self.dicom_tls_ca_file
        )

    def dicom_https_tls(self) -> ssl.SSLContext | None:
        """The context HTTPS destinations and token endpoints are checked with; None: requests'
        own (certifi, or REQUESTS_CA_BUNDLE)."""
        from service.jobs.egress import tls_context

        if self.dicom_https_ca_file is None:
            return None
        try:
            pem = self.dicom_https_ca_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"dicom_https_ca_file does not load ({type(exc).__name__})") from None
        try:
            return tls_context(pem)
        except ValueError as exc:
            raise ValueError(f"dicom_https_ca_file does not load ({exc})") from None

    def dicom_client_tls(self) -> ssl.SSLContext:
        """The context for destinations marked `tls`."""
        from service.dicom_node import tls

        return tls.client_context(
            self.dicom_tls_ca_file, self.dicom_tls_cert_file, self.dicom_tls_key_file
        )
