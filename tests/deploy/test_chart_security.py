"""The chart's security objects (issue 24): NetworkPolicies, the jobs' own restricted
namespace and GPU quota, read-only storage credentials for inference, and the limits both
services and the job pods receive. Rendering and validation are test_chart.py's helpers."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from service.config import InferenceSettings, TrainingSettings
from tests.deploy.test_chart import (
    MINIMAL,
    PRODUCTION,
    Render,
    container_env,
    deployment,
    find,
    namespace_of,
    one,
    settings_from,
)

METADATA = ipaddress.ip_address("169.254.169.254")


def policy(manifests: list[dict[str, Any]], component: str) -> dict[str, Any]:
    [found] = [
        p
        for p in find(manifests, "NetworkPolicy")
        if p["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


def egress_ports(rules: list[dict[str, Any]]) -> set[int]:
    return {p["port"] for r in rules if "to" in r for p in r.get("ports", [])}


@pytest.mark.parametrize("component", ["api", "inference", "trainer"])
def test_network_policies_deny_by_default_and_never_reach_the_metadata_address(
    render: Render, component: str
) -> None:
    manifests = render(PRODUCTION)
    found = policy(manifests, component)
    spec = found["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    for rule in spec["egress"]:
        if "to" not in rule:  # DNS only
            assert {p["port"] for p in rule["ports"]} == {53}
            continue
        for peer in rule["to"]:
            if "podSelector" in peer:  # the release's own pods (checked below)
                assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "rel"
                continue
            block = peer["ipBlock"]
            excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
            assert any(METADATA in net for net in excepted), block
    if component == "trainer":
        assert namespace_of(found) == PRODUCTION["trainer"]["namespace"]
        from service.jobs.launchers.kubernetes import APP_LABEL, APP_NAME

        assert spec["podSelector"]["matchLabels"] == {APP_LABEL: APP_NAME}
        assert spec["ingress"] == []  # nothing calls a job pod
    else:
        pod_labels = deployment(manifests, component)["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
        [ingress] = spec["ingress"]
        port = PRODUCTION.get(component, {}).get("service", {}).get("port") or (
            8000 if component == "api" else 8001
        )
        assert ingress["ports"] == [{"protocol": "TCP", "port": port}]
        outside = [p for p in ingress["from"] if "podSelector" not in p]  # own pods: below
        assert outside == PRODUCTION["networkPolicy"]["ingressFrom"]


def _selects(peer: dict[str, Any], component: str) -> bool:
    labels = peer.get("podSelector", {}).get("matchLabels", {})
    return labels.get("app.kubernetes.io/component") == component


def test_the_release_s_own_calls_pass_its_policies(render: Render) -> None:
    """The dashboard relays to inference (Try a scan) and to the DICOM node (its page); the
    node calls inference. With ingressFrom set (the ingress controller only), inference must
    still take its own release's callers, and the API may leave for both."""
    node = {**PRODUCTION, "dicomNode": {**PRODUCTION.get("dicomNode", {}), "enabled": True}}
    for values, callers in ((PRODUCTION, {"api"}), (node, {"api", "dicom"})):
        manifests = render(values)
        [ingress] = policy(manifests, "inference")["spec"]["ingress"]
        own = {c for c in ("api", "dicom") if any(_selects(p, c) for p in ingress["from"])}
        assert own == callers
        assert ingress["ports"] == [{"protocol": "TCP", "port": 8001}]
        egress = policy(manifests, "api")["spec"]["egress"]
        reach = {
            (component, port["port"])
            for rule in egress
            for component in ("inference", "dicom")
            if any(_selects(p, component) for p in rule.get("to", []))
            for port in rule["ports"]
        }
        expected = {("inference", 8001)} | ({("dicom", 8002)} if "dicom" in callers else set())
        assert reach == expected
        config = one(manifests, "ConfigMap", "rel-scantune-api")["data"]
        assert ("SCANTUNE_DICOM_NODE_URL" in config) == ("dicom" in callers)
    open_to_all = render(
        {**node, "networkPolicy": {**PRODUCTION["networkPolicy"], "ingressFrom": []}}
    )
    [ingress] = policy(open_to_all, "inference")["spec"]["ingress"]
    assert "from" not in ingress  # no ingressFrom: any source, the release's own among them


def test_the_dicom_node_admits_modalities_and_the_api_and_never_calls_the_metadata_address(
    render: Render,
) -> None:
    tls = {"secretName": "node-tls", "port": 2762}
    orders = {"enabled": True, "source": "pacs"}
    sources = [{"name": "pacs", "ae_title": "PACS", "host": "pacs", "port": 104}]
    node = {**PRODUCTION, "dicomNode": {"enabled": True, "tls": tls, "orders": orders,
                                        "sources": sources}}  # fmt: skip
    spec = policy(render(node), "dicom")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    dimse, http = spec["ingress"]
    assert [p["port"] for p in dimse["ports"]] == [11112, 2762, 2575]  # DICOM, TLS, the RIS
    assert "from" not in dimse  # modalities are outside: the node's allow-list decides
    assert http["ports"] == [{"protocol": "TCP", "port": 8002}]
    assert [p for p in http["from"] if not _selects(p, "api")] == PRODUCTION["networkPolicy"][
        "ingressFrom"
    ]
    assert any(_selects(p, "api") for p in http["from"])
    blocks = [p["ipBlock"] for r in spec["egress"] for p in r.get("to", []) if "ipBlock" in p]
    assert blocks and all(
        any(METADATA in ipaddress.ip_network(e) for e in b.get("except", [])) for b in blocks
    )
    assert any(
        _selects(p, "inference") and r["ports"] == [{"protocol": "TCP", "port": 8001}]
        for r in spec["egress"]
        for p in r.get("to", [])
    )
    assert not [
        p for p in find(render(PRODUCTION), "NetworkPolicy") if "dicom" in p["metadata"]["name"]
    ]


def test_inference_may_reach_storage_but_not_the_job_database(render: Render) -> None:
    manifests = render(PRODUCTION)
    assert 5432 not in egress_ports(policy(manifests, "inference")["spec"]["egress"])
    assert 5432 in egress_ports(policy(manifests, "api")["spec"]["egress"])
    assert not find(render({**MINIMAL, "networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_jobs_get_a_restricted_namespace_and_a_gpu_quota(render: Render) -> None:
    manifests = render(PRODUCTION)
    namespace = one(manifests, "Namespace")
    assert namespace["metadata"]["name"] == PRODUCTION["trainer"]["namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    quota = one(manifests, "ResourceQuota")
    assert namespace_of(quota) == PRODUCTION["trainer"]["namespace"]
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "8"}
    # the API's Role lives there, not beside the API
    assert namespace_of(one(manifests, "Role")) == PRODUCTION["trainer"]["namespace"]
    plain = render(MINIMAL)
    assert not find(plain, "Namespace") and not find(plain, "ResourceQuota")


def test_inference_gets_read_only_storage_credentials(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(PRODUCTION)
    container = deployment(manifests, "inference")["spec"]["template"]["spec"]["containers"][0]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert refs["AWS_ACCESS_KEY_ID"] == "INFERENCE_AWS_ACCESS_KEY_ID"
    assert refs["AWS_SECRET_ACCESS_KEY"] == "INFERENCE_AWS_SECRET_ACCESS_KEY"
    env = container_env(manifests, container)
    assert env["AWS_ACCESS_KEY_ID"] == PRODUCTION["secrets"]["inferenceAws"]["accessKeyId"]
    assert PRODUCTION["secrets"]["aws"]["secretAccessKey"] not in env.values()
    settings = settings_from(monkeypatch, env, InferenceSettings)
    assert settings.rate_limits == PRODUCTION["config"]["rateLimits"]
    assert settings.redis_url == PRODUCTION["secrets"]["redisUrl"]
    assert settings.log_format == "json"


def test_the_api_gets_its_tenancy_and_limit_settings(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(PRODUCTION)
    container = deployment(manifests, "api")["spec"]["template"]["spec"]["containers"][0]
    settings = settings_from(monkeypatch, container_env(manifests, container), TrainingSettings)
    api = PRODUCTION["api"]
    assert settings.s3_data_prefixes == api["s3DataPrefixes"]
    assert settings.webhook_allowed_hosts == api["webhookAllowedHosts"]
    assert settings.model_grants == api["modelGrants"]
    assert settings.max_gpus_per_job == api["maxGpusPerJob"]
    assert settings.rate_limits == PRODUCTION["config"]["rateLimits"]
    assert settings.audit_salt == PRODUCTION["secrets"]["auditSalt"]
    [ci] = [key for key in settings.api_keys if key.name == "ci"]
    assert ci.owner == "ci"


def test_a_release_never_hashes_study_uids_unsalted(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(MINIMAL)  # no salt given: the Secret gets a random one
    salts = []
    for component, settings_type in (("api", TrainingSettings), ("inference", InferenceSettings)):
        container = deployment(manifests, component)["spec"]["template"]["spec"]["containers"][0]
        env = container_env(manifests, container)
        salts.append(settings_from(monkeypatch, env, settings_type).audit_salt)
    assert len(salts[0]) == 32 and salts[0] == salts[1]  # both services hash alike
    [other] = [
        s["stringData"]["SCANTUNE_AUDIT_SALT"]
        for s in find(render(MINIMAL), "Secret")
        if "SCANTUNE_AUDIT_SALT" in s["stringData"]
    ]
    assert other != salts[0]  # random per install (an upgrade keeps the Secret's own)


def test_the_salt_before_a_rotation_reaches_the_api_even_when_it_was_none(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    for previous in ("old-salt", ""):  # "": an upgrade from a release without a salt
        salts = {"auditSalt": "new-salt", "auditSaltPrevious": previous}
        values = {**MINIMAL, "secrets": {**MINIMAL.get("secrets", {}), **salts}}
        manifests = render(values)
        container = deployment(manifests, "api")["spec"]["template"]["spec"]["containers"][0]
        settings = settings_from(monkeypatch, container_env(manifests, container), TrainingSettings)
        assert (settings.audit_salt, settings.audit_salt_previous) == ("new-salt", previous)
    manifests = render(MINIMAL)  # none given: none set
    container = deployment(manifests, "api")["spec"]["template"]["spec"]["containers"][0]
    assert "SCANTUNE_AUDIT_SALT_PREVIOUS" not in container_env(manifests, container)


def test_the_dicom_node_may_be_kept_to_the_hosts_it_sends_to(render: Render) -> None:
    """dicomNode.egressTo replaces the node's any-host egress with the hospital's own rules;
    DNS and the release's inference stay reachable."""
    ports = [{"protocol": "TCP", "port": 104}, {"protocol": "TCP", "port": 443}]
    hospital = [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": ports}]
    node = {**PRODUCTION, "dicomNode": {"enabled": True, "egressTo": hospital}}
    egress = policy(render(node), "dicom")["spec"]["egress"]
    blocks = [p["ipBlock"]["cidr"] for r in egress for p in r.get("to", []) if "ipBlock" in p]
    assert blocks == ["10.20.0.0/16"]  # no 0.0.0.0/0 left
    assert hospital[0] in egress
    assert any({"protocol": "UDP", "port": 53} in r.get("ports", []) for r in egress)
    assert any(_selects(p, "inference") for r in egress for p in r.get("to", []))


def test_the_node_reaches_the_api_only_when_it_reports_outcomes(render: Render) -> None:
    sources = [{"name": "pacs", "ae_title": "PACS", "host": "pacs", "port": 104}]
    orders = {"enabled": True, "source": "pacs"}
    codes = {"chest-xray": {"pneumonia": ["RID5350"], "normal": ["RID13173"]}}
    for outcomes in (False, True):
        followed = {**orders, "outcomeCodes": codes} if outcomes else orders
        node = {"enabled": True, "orders": followed, "sources": sources}
        manifests = render({**PRODUCTION, "dicomNode": node})
        egress = policy(manifests, "dicom")["spec"]["egress"]
        to_api = [r for r in egress for p in r.get("to", []) if _selects(p, "api")]
        assert [r["ports"] for r in to_api] == ([[{"protocol": "TCP", "port": 8000}]] * outcomes)
        (api_ingress,) = policy(manifests, "api")["spec"]["ingress"]
        assert any(_selects(p, "dicom") for p in api_ingress["from"]) == outcomes
