"""The chart's DICOM node: off by default; enabled, a valid, locked-down Deployment (one
replica, a persistent spool), a Service exposing the DICOM port, and settings the node parses."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import DicomNodeSettings
from service.dicom_node.routing import Router
from tests.deploy.conftest import Manifest
from tests.deploy.test_chart import (
    KUBE_VERSIONS,
    MINIMAL,
    Render,
    assert_restricted,
    assert_settings_fields,
    container_env,
    deployment,
    find,
    one,
    settings_from,
)
from tests.deploy.test_chart import validate as validate  # the fixture

NODE: dict[str, Any] = {
    **MINIMAL,
    "dicomNode": {
        "enabled": True,
        "allowedCallers": [{"ae_title": "ORTHANC", "host": "10.1.2.4"}],
        "sources": [{"name": "pacs", "ae_title": "ORTHANC", "host": "pacs.hospital", "port": 4242}],
        "orders": {"enabled": True, "allowedHosts": ["10.1.2.7"], "source": "pacs"},
        "routes": [
            {"model": "chest-xray", "alias": "production", "modality": "DX"},
            {"model": "chest-xray", "modality": "CR", "destinations": ["ris", "ehr"]},
        ],
        "destinations": [
            {"ae_title": "ORTHANC", "host": "pacs.hospital", "port": 4242},
            {
                "stow_url": "https://pacs.hospital/dicom-web",
                "authorization_file": "/etc/scantune/pacs/authorization",
            },
            {
                "stow_url": "https://dicom.cloud.example/v1/dicomweb",
                "oauth": {
                    "token_url": "https://login.cloud.example/oauth2/token",
                    "client_id": "scantune-node",
                    "client_secret_file": "/etc/scantune/pacs/client-secret",
                    "scope": "dicom.write",
                },
            },
            {
                "name": "ris",
                "hl7": {
                    "host": "engine.hospital",
                    "port": 6661,
                    "tls": True,
                    "receiving_application": "RIS",
                    "processing_id": "T",
                    "attention_maps": True,
                    "attention_map_max_bytes": 60000,  # the engine caps a field
                },
                "only_findings": ["pneumonia"],  # the RIS hears of positive findings only
            },
            {
                "name": "ehr",
                "fhir": {
                    "url": "https://ehr.hospital/fhir/r4",
                    "attention_maps": True,
                    "oauth": {
                        "token_url": "https://ehr.hospital/oauth2/token",
                        "client_id": "scantune-node",
                        "client_secret_file": "/etc/scantune/pacs/ehr-secret",
                    },
                },
            },
        ],
        "extraVolumes": [{"name": "pacs", "secret": {"secretName": "pacs-stow"}}],
        "extraVolumeMounts": [
            {"name": "pacs", "mountPath": "/etc/scantune/pacs", "readOnly": True}
        ],
        "inferenceApiKey": "node-key",
        "uidRoot": "1.2.826.0.1.3680043.10",
        "service": {"type": "LoadBalancer", "dicomPort": 104, "httpPort": 8002},
        "persistence": {"storageClass": "encrypted-ssd"},
    },
}


@pytest.fixture(scope="module")
def node(render: Render) -> list[Manifest]:
    return render(NODE)


def test_the_node_is_off_unless_enabled(render: Render) -> None:
    manifests = render(MINIMAL)
    labels = [m["metadata"]["labels"].get("app.kubernetes.io/component") for m in manifests]
    assert "dicom" not in labels


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_the_node_validates_against_kubernetes(
    node: list[Manifest], kube_version: str, validate: Any
) -> None:
    for manifest in node:
        validate(manifest, kube_version)


def test_one_replica_a_persistent_spool_and_a_locked_down_pod(node: list[Manifest]) -> None:
    dep = deployment(node, "dicom")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert_restricted(pod, "dicom")
    (container,) = pod["containers"]
    spool = next(m for m in container["volumeMounts"] if m["name"] == "spool")
    claim = next(v for v in pod["volumes"] if v["name"] == "spool")["persistentVolumeClaim"]
    pvc = one(node, "PersistentVolumeClaim", claim["claimName"])
    assert pvc["spec"]["storageClassName"] == "encrypted-ssd"
    env = container_env(node, container)
    assert env["SCANTUNE_DICOM_SPOOL_DIR"] == spool["mountPath"]
    secret = next(m for m in container["volumeMounts"] if m["name"] == "pacs")
    assert "/etc/scantune/pacs/authorization".startswith(secret["mountPath"])
    assert {"name": "pacs", "secret": {"secretName": "pacs-stow"}} in pod["volumes"]


def test_the_service_exposes_the_dicom_port_and_the_http_port(node: list[Manifest]) -> None:
    dep = deployment(node, "dicom")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    service = one(node, "Service", dep["metadata"]["name"])
    assert service["spec"]["type"] == "LoadBalancer"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["dicom"]["port"] == 104 and ports["http"]["port"] == 8002
    assert (ports["hl7"]["port"], ports["hl7"]["targetPort"]) == (2575, "hl7")  # the RIS's orders
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports == {"http": 8002, "dicom": 104, "hl7": 2575}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"


def test_the_node_settings_are_fields_and_parse(
    node: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    (container,) = deployment(node, "dicom")["spec"]["template"]["spec"]["containers"]
    env = container_env(node, container)
    assert_settings_fields(env, DicomNodeSettings, "dicom container")
    settings = settings_from(monkeypatch, env, DicomNodeSettings)
    assert settings.dicom_port == 104 and settings.dicom_bind_host == "0.0.0.0"
    assert [d.key for d in settings.dicom_destinations] == [
        "ORTHANC@pacs.hospital:4242",
        "https://pacs.hospital/dicom-web",
        "https://dicom.cloud.example/v1/dicomweb",
        "mllp://engine.hospital:6661/RIS",
        "https://ehr.hospital/fhir/r4",
    ]
    hl7 = settings.dicom_destinations[3].hl7
    assert hl7 is not None and hl7.tls and hl7.processing_id == "T"
    assert hl7.attention_maps and hl7.attention_map_max_bytes == 60000
    assert settings.dicom_destinations[3].only_findings == ["pneumonia"]
    oauth = settings.dicom_destinations[2].oauth
    assert oauth is not None and oauth.client_secret_file.name == "client-secret"
    fhir = settings.dicom_destinations[4].fhir
    assert fhir is not None and fhir.oauth is not None and fhir.oauth.client_id == "scantune-node"
    assert fhir.attention_maps  # the chart's schema took it (it refused maps before)
    dx, cr = settings.dicom_routes
    router = Router(settings.dicom_routes, settings.dicom_destinations)
    assert dx.modality == "DX" and router.destination_keys(dx) is None  # every destination
    assert router.destination_keys(cr) == [
        "mllp://engine.hospital:6661/RIS",
        "https://ehr.hospital/fhir/r4",
    ]  # fmt: skip
    assert [(s.name, s.ae_title, s.port) for s in settings.dicom_sources] == [
        ("pacs", "ORTHANC", 4242)
    ]
    assert settings.dicom_retrieve_timeout_s == 60
    assert settings.dicom_retrieve_cancel_grace_s == 15
    assert (settings.dicom_hl7_port, settings.dicom_hl7_allowed_hosts) == (2575, ["10.1.2.7"])
    assert (settings.dicom_order_source, settings.dicom_order_accession_field) == ("pacs", "OBR-18")
    assert settings.dicom_inference_api_key == "node-key"
    assert settings.dicom_uid_root == "1.2.826.0.1.3680043.10"
    assert settings.inference_url == "http://rel-scantune-inference:8001"
    assert settings.database_url.startswith("postgresql+psycopg://")


def test_the_container_command_is_accepted_by_the_cli(node: list[Manifest]) -> None:
    from service.cli import build_parser

    (container,) = deployment(node, "dicom")["spec"]["template"]["spec"]["containers"]
    program, *argv = container["command"] + container["args"]
    args = build_parser().parse_args(argv)
    assert (program, args.command, args.service, args.port) == ("scantune", "serve", "dicom", 8002)


def test_the_schema_refuses_half_a_destination(helm: Any, render: Render) -> None:
    bad = {**NODE, "dicomNode": {**NODE["dicomNode"], "destinations": [{"ae_title": "PACS"}]}}
    with pytest.raises(helm.HelmValuesError, match="destinations/0"):
        render(bad)
    plain_idp = {"token_url": "http://idp/token", "client_id": "n", "client_secret_file": "/s"}
    stow = {"stow_url": "https://pacs/dicom-web", "oauth": plain_idp}
    with pytest.raises(helm.HelmValuesError, match="destinations/0"):
        render({**NODE, "dicomNode": {**NODE["dicomNode"], "destinations": [stow]}})
    mixed = {"hl7": {"host": "engine", "port": 6661}, "stow_url": "https://pacs/dicom-web"}
    ehr, idp = "https://ehr/fhir", {**plain_idp, "token_url": "https://idp/token"}
    for wrong in (
        mixed,
        {"hl7": {"host": "engine", "port": 6661, "processing_id": "X"}},
        {"fhir": {"url": ehr}, "hl7": {"host": "engine", "port": 6661}},
        {"fhir": {"url": "ehr.hospital/fhir"}},
        {"fhir": {"url": ehr, "oauth": plain_idp}},
        {"fhir": {"url": ehr, "authorization_file": "/a", "oauth": idp}},  # both credentials
        {"name": "the RIS", "hl7": {"host": "engine", "port": 6661}},
        {"name": "ris", "hl7": {"host": "engine", "port": 6661}, "tls": True},
    ):
        with pytest.raises(helm.HelmValuesError, match="destinations/0"):
            render({**NODE, "dicomNode": {**NODE["dicomNode"], "destinations": [wrong]}})
    assert len(find(render(NODE), "Deployment")) == 3
    plain_node = {**NODE["dicomNode"], "orders": {"enabled": True, "source": "pacs", "tls": True}}
    with pytest.raises(helm.HelmRenderError, match=r"dicomNode\.orders\.tls needs"):
        render({**NODE, "dicomNode": plain_node})  # TLS for orders, and no certificate
    sourceless = {**NODE["dicomNode"], "orders": {"enabled": True}}  # fetched from where?
    with pytest.raises(helm.HelmRenderError, match=r"dicomNode\.orders\.source names"):
        render({**NODE, "dicomNode": sourceless})
    typo = {"model": "chest-xray", "destinations": ["pacs"]}  # no destination is named pacs
    with pytest.raises(
        helm.HelmRenderError, match=r"dicomNode.routes\[0\] names destination \"pacs\""
    ):
        render({**NODE, "dicomNode": {**NODE["dicomNode"], "routes": [typo]}})


def test_dicom_tls_mounts_the_secret_and_points_the_node_at_its_files(
    node: list[Manifest], render: Render
) -> None:
    tls = {"secretName": "dicom-node-tls", "clientCA": True}
    manifests = render({**NODE, "dicomNode": {**NODE["dicomNode"], "tls": tls}})
    pod = deployment(manifests, "dicom")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = container_env(manifests, container)
    assert_settings_fields(env, DicomNodeSettings, "dicom container")
    folder = "/etc/scantune/dicom-tls"
    assert (
        env["SCANTUNE_DICOM_TLS_CERT_FILE"],
        env["SCANTUNE_DICOM_TLS_KEY_FILE"],
        env["SCANTUNE_DICOM_TLS_CA_FILE"],
    ) == (f"{folder}/tls.crt", f"{folder}/tls.key", f"{folder}/ca.crt")
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["dicom-tls"] == {"name": "dicom-tls", "mountPath": folder, "readOnly": True}
    assert {"name": "dicom-tls", "secret": {"secretName": "dicom-node-tls"}} in pod["volumes"]
    (plain,) = deployment(node, "dicom")["spec"]["template"]["spec"]["containers"]
    assert not [k for k in container_env(node, plain) if k.startswith("SCANTUNE_DICOM_TLS")]


def test_a_hospital_ca_for_https_comes_from_a_config_map(
    node: list[Manifest], render: Render, validate: Any
) -> None:
    manifests = render({**NODE, "dicomNode": {**NODE["dicomNode"], "httpsCAConfigMap": "h-ca"}})
    for manifest in manifests:
        validate(manifest, KUBE_VERSIONS[-1])
    pod = deployment(manifests, "dicom")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = container_env(manifests, container)
    assert_settings_fields(env, DicomNodeSettings, "dicom container")
    assert env["SCANTUNE_DICOM_HTTPS_CA_FILE"] == "/etc/scantune/https-ca/ca.crt"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["https-ca"] == "/etc/scantune/https-ca"
    config_map = {"name": "h-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert {"name": "https-ca", "configMap": config_map} in pod["volumes"]
    (plain,) = deployment(node, "dicom")["spec"]["template"]["spec"]["containers"]
    assert "SCANTUNE_DICOM_HTTPS_CA_FILE" not in container_env(node, plain)


def test_a_tls_port_of_its_own_is_served_beside_the_plain_one(
    render: Render, validate: Any
) -> None:
    tls = {"secretName": "dicom-node-tls", "port": 2762}
    orders = {**NODE["dicomNode"]["orders"], "tls": True}  # the RIS's orders over TLS too
    manifests = render({**NODE, "dicomNode": {**NODE["dicomNode"], "tls": tls, "orders": orders}})
    for manifest in manifests:
        validate(manifest, KUBE_VERSIONS[-1])
    dep = deployment(manifests, "dicom")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8002,
        "dicom": 104,
        "dicom-tls": 2762,
        "hl7": 2575,
    }
    service = one(manifests, "Service", dep["metadata"]["name"])
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports["dicom-tls"] == (2762, "dicom-tls") and ports["dicom"] == (104, "dicom")
    env = container_env(manifests, container)
    assert_settings_fields(env, DicomNodeSettings, "dicom container")
    assert env["SCANTUNE_DICOM_TLS_PORT"] == "2762" and env["SCANTUNE_DICOM_HL7_TLS"] == "true"
    no_secret = render({**NODE, "dicomNode": {**NODE["dicomNode"], "tls": {"port": 2762}}})
    (plain,) = deployment(no_secret, "dicom")["spec"]["template"]["spec"]["containers"]
    assert "dicom-tls" not in {p["name"] for p in plain["ports"]}
    assert "SCANTUNE_DICOM_TLS_PORT" not in container_env(no_secret, plain)


def test_outcomes_from_the_ris_reach_the_releases_api_with_the_nodes_key(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = {"chest-xray": {"pneumonia": ["RADLEX|RID5350"], "normal": ["RID13173"]}}
    orders = {**NODE["dicomNode"]["orders"], "outcomeCodes": codes, "outcomeWaitH": 720}
    node = {**NODE["dicomNode"], "orders": orders, "trainingApiKey": "node-training-key"}
    manifests = render({**NODE, "dicomNode": node})
    (container,) = deployment(manifests, "dicom")["spec"]["template"]["spec"]["containers"]
    env = container_env(manifests, container)
    assert_settings_fields(env, DicomNodeSettings, "dicom container")
    settings = settings_from(monkeypatch, env, DicomNodeSettings)
    assert settings.dicom_outcome_codes == codes and settings.dicom_outcome_wait_h == 720
    assert settings.training_url == "http://rel-scantune-api:8000"
    assert settings.dicom_training_api_key == "node-training-key"
    assert settings.dicom_inference_api_key == "node-key"
    plain = render(NODE)  # outcomes not followed: nothing of them in the node's settings
    (container,) = deployment(plain, "dicom")["spec"]["template"]["spec"]["containers"]
    assert not {"SCANTUNE_DICOM_OUTCOME_CODES", "SCANTUNE_TRAINING_URL"} & set(
        container_env(plain, container)
    )
    # A site that only sends reports names no source: the node takes reports, no orders.
    reports_only = {**orders, "source": ""}
    manifests = render({**NODE, "dicomNode": {**node, "orders": reports_only}})
    (container,) = deployment(manifests, "dicom")["spec"]["template"]["spec"]["containers"]
    env = container_env(manifests, container)
    assert "SCANTUNE_DICOM_ORDER_SOURCE" not in env
    settings = settings_from(monkeypatch, env, DicomNodeSettings)
    assert settings.dicom_order_source is None and settings.dicom_outcome_codes == codes


def test_following_the_registrys_withdrawals_asks_the_releases_api_with_the_nodes_key(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = {**NODE["dicomNode"], "followWithdrawals": True, "withdrawalCheckS": 60,
            "recallKeepH": 720, "existingSecret": "node-secrets"}  # fmt: skip
    manifests = render({**NODE, "dicomNode": node})
    (container,) = deployment(manifests, "dicom")["spec"]["template"]["spec"]["containers"]
    env = container_env(manifests, container)
    assert_settings_fields(env, DicomNodeSettings, "dicom container")
    keys = {e["name"]: e for e in container["env"]}
    secret = keys["SCANTUNE_DICOM_TRAINING_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert secret["name"] == "node-secrets"  # the key from the site's own Secret
    env["SCANTUNE_DICOM_TRAINING_API_KEY"] = "from-the-secret"
    env["SCANTUNE_DICOM_INFERENCE_API_KEY"] = "from-the-secret"
    settings = settings_from(monkeypatch, env, DicomNodeSettings)
    assert settings.dicom_follow_withdrawals and settings.dicom_withdrawal_check_s == 60
    assert settings.dicom_recall_keep_h == 720
    assert settings.training_url == "http://rel-scantune-api:8000"
    plain = render(NODE)  # not followed, results not kept: off by default
    (container,) = deployment(plain, "dicom")["spec"]["template"]["spec"]["containers"]
    env = container_env(plain, container)
    assert "SCANTUNE_DICOM_FOLLOW_WITHDRAWALS" not in env
    assert env["SCANTUNE_DICOM_RECALL_KEEP_H"] == "0"
