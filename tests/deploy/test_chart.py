"""The Helm chart: renders, validates against Kubernetes' schemas, and stays in step with the code.

Rendering is offline (helm-python-sdk runs Helm v4's engine in-process); validation uses
kubernetes-validate's bundled OpenAPI schemas, strict (unknown fields are errors). The settings
tests import `TrainingSettings` / `InferenceSettings` and build them from the environment the
chart gives each pod, so a renamed setting or a malformed JSON value fails here, not in a pod.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from service.config import ApiKey, InferenceSettings, TrainingSettings
from service.jobs.stops import JOB_CREATED_ENV, job_created_at
from tests.conftest import HospitalCA
from tests.deploy.conftest import CHART, NAMESPACE, REPO, Manifest

try:  # only the validation tests need it; the rest run without
    import kubernetes_validate
except ImportError:
    kubernetes_validate = None

Render = Callable[[dict[str, Any]], list[Manifest]]


def _ci_values(name: str) -> dict[str, Any]:
    """A value set from helm/scantune/ci/ (where chart-testing looks for them too)."""
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return values


MINIMAL = _ci_values("minimal")
PRODUCTION = _ci_values("production")

VARIANTS: dict[str, dict[str, Any]] = {
    **{
        path.name.removesuffix("-values.yaml"): _ci_values(path.name.removesuffix("-values.yaml"))
        for path in sorted((CHART / "ci").glob("*-values.yaml"))
    },
    "local-launcher": {
        "config": {"artifactUri": "file:///app/var/artifacts"},
        "secrets": {"databaseUrl": "sqlite:////app/var/scantune.db"},
        "api": {"launcher": "local", "replicaCount": 1},
    },
    "existing-secrets": {
        "config": {"artifactUri": "s3://scantune/models"},
        "secrets": {"create": False, "existingSecret": "scantune-prod"},
        "trainer": {"envSecret": "scantune-job-env-prod"},
    },
    "fixed-replicas": {**MINIMAL, "inference": {"autoscaling": {"enabled": False}}},
}

# Variables the chart may set that are not scantune settings (read by boto3 or matplotlib).
OTHER_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "MPLCONFIGDIR"}
# Read-only S3 keys kept in the Secret for inference, which receives them as AWS_*.
OTHER_ENV |= {"INFERENCE_AWS_ACCESS_KEY_ID", "INFERENCE_AWS_SECRET_ACCESS_KEY"}


def _min_kube_version() -> str:
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    match = re.match(r">=\s*(\d+\.\d+\.\d+)", constraint)
    assert match, f"kubeVersion {constraint!r} should state a minimum"
    return match.group(1)


KUBE_VERSIONS = [
    _min_kube_version(),
    kubernetes_validate.utils.latest_version() if kubernetes_validate else "latest",
]


# -- helpers over rendered manifests ---------------------------------------------------------


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment(manifests: list[Manifest], component: str) -> Manifest:
    return next(
        d
        for d in find(manifests, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )


def namespace_of(manifest: Manifest) -> str:
    return manifest["metadata"].get("namespace", NAMESPACE)


def secret_data(manifests: list[Manifest], name: str) -> dict[str, str] | None:
    """A rendered Secret's data, or None when the Secret is expected to exist already."""
    found = find(manifests, "Secret", name)
    return dict(found[0]["stringData"]) if found else None


def container_env(manifests: list[Manifest], container: Manifest) -> dict[str, str | None]:
    """The environment a container gets; None for values from Secrets the chart does not own."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(manifests, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(secret_data(manifests, source["secretRef"]["name"]) or {})
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        data = secret_data(manifests, ref["name"])
        if data is None:
            env[entry["name"]] = None
        elif ref["key"] in data:
            env[entry["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional"), f"{entry['name']}: {ref['name']} has no {ref['key']}"
    return env


# Volume types the "restricted" Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def assert_restricted(pod: Manifest, where: str) -> None:
    """The pod spec passes the "restricted" Pod Security Standard, which hospital clusters
    enforce on every namespace (the checks that concern fields our pods could set; AppArmor,
    SELinux, sysctls and /proc mounts are left at their defaults by everything we render)."""
    context = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), f"{where}: {key}"
    assert context.get("runAsUser") != 0, f"{where}: runAsUser 0"
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, f"{where}: volume {volume['name']} is {kinds}"
    for container in pod["containers"] + pod.get("initContainers", []):
        security = container.get("securityContext", {})
        merged = {**context, **security}
        assert merged.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
        assert merged.get("runAsUser", 1) != 0, f"{where}: runAsUser 0"
        seccomp = merged.get("seccompProfile", {}).get("type")
        assert seccomp in ("RuntimeDefault", "Localhost"), f"{where}: seccomp {seccomp}"
        assert security.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation"
        assert not security.get("privileged"), f"{where}: privileged"
        capabilities = security.get("capabilities", {})
        assert "ALL" in capabilities.get("drop", []), f"{where}: capabilities not dropped"
        assert set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"}, f"{where}: capabilities"
        assert not any(p.get("hostPort") for p in container.get("ports", [])), f"{where}: port"


def settings_from(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None], cls: type[Any]
) -> Any:
    """Build a settings class from exactly this environment, the way the pod would."""
    for key in list(os.environ):
        if key.startswith("SCANTUNE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if value is not None:
            monkeypatch.setenv(key, value)
    return cls()


def assert_settings_fields(env: dict[str, Any], cls: type[Any], where: str) -> None:
    fields = set(cls.model_fields)
    unknown = sorted(
        key
        for key in env
        if (key.startswith("SCANTUNE_") and key.removeprefix("SCANTUNE_").lower() not in fields)
        or (not key.startswith("SCANTUNE_") and key not in OTHER_ENV)
    )
    assert not unknown, f"{where} sets variables {cls.__name__} does not read: {unknown}"


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def variant(request: pytest.FixtureRequest, render: Render) -> tuple[str, list[Manifest]]:
    return request.param, render(VARIANTS[request.param])


# -- the chart renders and validates ---------------------------------------------------------


def test_refuses_to_render_without_the_settings_a_cluster_needs(helm: Any, render: Render) -> None:
    cases = [
        ({}, "config.artifactUri is required"),
        ({"config": {"artifactUri": "s3://b/p"}}, "secrets.databaseUrl is required"),
        (
            {**MINIMAL, "config": {"artifactUri": "file:///app/var/artifacts"}},
            "must be s3://",
        ),
        (
            {"config": {"artifactUri": "s3://b/p"}, "secrets": {"create": False}},
            "secrets.existingSecret is required",
        ),
        (
            {
                "config": {"artifactUri": "s3://b/p"},
                "secrets": {"create": False, "existingSecret": "s"},
            },
            "trainer.envSecret is required",
        ),
        (
            {**MINIMAL, "api": {"outcomesSignedOnly": True}},  # checked against what key?
            "api.outcomesSignedOnly needs secrets.predictionSigningKey",
        ),
    ]
    for values, message in cases:
        with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
            render(values)


@pytest.fixture(scope="session")
def validate() -> Iterator[Callable[[Manifest, str], str]]:
    """kubernetes-validate, strict, with its schema files parsed once instead of per manifest."""
    if kubernetes_validate is None:
        pytest.skip("kubernetes-validate is not installed; pip install kubernetes-validate")
    with pytest.MonkeyPatch.context() as patch:
        cached = functools.cache(kubernetes_validate.utils.schema_contents)
        patch.setattr(kubernetes_validate.utils, "schema_contents", cached)
        yield lambda manifest, version: kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_validates_against_kubernetes(
    variant: tuple[str, list[Manifest]],
    kube_version: str,
    validate: Callable[[Manifest, str], str],
) -> None:
    name, manifests = variant
    assert manifests, name
    for manifest in manifests:
        where = f"{name}: {manifest['kind']} {manifest['metadata']['name']}"
        try:
            checked = validate(manifest, kube_version)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} is invalid for Kubernetes {kube_version}: {exc.message}")
        assert checked == kube_version.rsplit(".", 1)[0], f"{where}: checked against {checked}"


def test_lint_is_clean(helm: Any) -> None:
    for name, values in VARIANTS.items():
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        # Helm's only info-level remark is the missing icon; anything louder is a problem.
        assert not problems, f"{name}: {problems}"


def test_expected_objects(variant: tuple[str, list[Manifest]]) -> None:
    name, manifests = variant
    kinds = sorted({m["kind"] for m in manifests})
    expected = {"ConfigMap", "Deployment", "Service", "ServiceAccount", "NetworkPolicy"}
    if name != "local-launcher":
        expected |= {"Role", "RoleBinding"}
    if name != "fixed-replicas":
        expected |= {"HorizontalPodAutoscaler"}
    assert expected <= set(kinds), f"{name}: {kinds}"
    assert len(find(manifests, "Deployment")) == 2
    names = [(m["kind"], namespace_of(m), m["metadata"]["name"]) for m in manifests]
    assert len(names) == len(set(names)), f"{name}: duplicate objects"


# -- settings: every variable is a real field, and parses -----------------------------------


def test_every_scantune_variable_is_a_settings_field(variant: tuple[str, list[Manifest]]) -> None:
    name, manifests = variant
    for component, cls in (("api", TrainingSettings), ("inference", InferenceSettings)):
        for container in deployment(manifests, component)["spec"]["template"]["spec"]["containers"]:
            env = container_env(manifests, container)
            assert_settings_fields(env, cls, f"{name}: {component} container")
    for secret in find(manifests, "Secret"):
        assert_settings_fields(secret["stringData"], TrainingSettings, f"{name}: Secret")


def test_api_settings_parse_and_carry_the_job_template(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(PRODUCTION)
    api = deployment(manifests, "api")
    pod = api["spec"]["template"]["spec"]
    settings = settings_from(
        monkeypatch, container_env(manifests, pod["containers"][0]), TrainingSettings
    )
    trainer = PRODUCTION["trainer"]
    assert settings.launcher == "kubernetes"
    assert settings.k8s_in_cluster is True
    assert settings.database_url == PRODUCTION["secrets"]["databaseUrl"]
    assert settings.artifact_uri == PRODUCTION["config"]["artifactUri"]
    assert settings.s3_endpoint_url == PRODUCTION["config"]["s3EndpointUrl"]
    assert settings.webhook_secret == PRODUCTION["secrets"]["webhookSecret"]
    assert [key.name for key in settings.api_keys] == ["ci", "pacs"]
    assert [key.expires_text for key in settings.api_keys] == ["2027-07-01T00:00:00Z", "never"]
    signing = PRODUCTION["secrets"]["predictionSigningKey"]  # the key inference signs with
    assert settings.prediction_signing_key is not None
    assert settings.prediction_signing_key.get_secret_value() == signing
    assert settings.outcomes_signed_only is True
    previous = settings.prediction_signing_key_previous  # a rotation under way
    assert previous is not None and previous.get_secret_value() == "previous-signing-key"
    assert settings.k8s_image == f"{trainer['image']['repository']}:{trainer['image']['tag']}"
    assert settings.k8s_node_selector == trainer["nodeSelector"]
    assert settings.k8s_tolerations == trainer["tolerations"]
    assert settings.k8s_gpu_resource == trainer["gpuResource"]
    # Job pods run as the same user as the chart's own pods.
    assert settings.k8s_run_as_user == pod["securityContext"]["runAsUser"]
    assert settings.k8s_run_as_group == pod["securityContext"]["runAsGroup"]
    assert settings.k8s_active_deadline_s == trainer["activeDeadlineSeconds"]
    assert settings.k8s_namespace == trainer["namespace"]
    assert str(settings.weights_dir) == trainer["weightsDir"]


def test_the_job_the_api_creates_is_valid_and_finds_what_it_needs(
    render: Render,
    monkeypatch: pytest.MonkeyPatch,
    validate: Callable[[Manifest, str], str],
) -> None:
    """Build the Job with the real launcher from the chart's settings, then check it."""
    k8s = pytest.importorskip("kubernetes", reason="the kubernetes client is in the train extra")
    from service.jobs.launchers.kubernetes import POD_WORK_DIR, KubernetesLauncher
    from service.jobs.tables import JobRow

    manifests = render(PRODUCTION)
    api = deployment(manifests, "api")["spec"]["template"]["spec"]["containers"][0]
    settings = settings_from(monkeypatch, container_env(manifests, api), TrainingSettings)
    row = JobRow(
        id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", attempts=1, spec={"resources": {"gpus": 1}}
    )
    client = k8s.client.ApiClient()
    try:
        job = client.sanitize_for_serialization(
            KubernetesLauncher(settings, api_client=client).manifest(row)
        )
    finally:
        client.close()
    for version in KUBE_VERSIONS:
        validate(job, version)

    trainer = PRODUCTION["trainer"]
    assert namespace_of(job) == trainer["namespace"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"{trainer['image']['repository']}:{trainer['image']['tag']}"
    assert container["resources"]["limits"][trainer["gpuResource"]] == "1"
    assert pod["nodeSelector"] == trainer["nodeSelector"]
    assert [t.get("tolerationSeconds") for t in pod["tolerations"]] == [None, 300]

    # Locked down like the chart's pods: "restricted", read-only root, scratch in emptyDirs.
    assert_restricted(pod, "job pod")
    api_pod = deployment(manifests, "api")["spec"]["template"]["spec"]
    assert pod["securityContext"] == api_pod["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for path in ("/tmp", POD_WORK_DIR):
        limit = {"sizeLimit": settings.job_volume_limit}  # a job cannot fill the node's disk
        assert volumes[mounts[path]] == {"name": mounts[path], "emptyDir": limit}, path

    # Everything the Job names exists in its namespace, and the API may create it there.
    here = [m for m in manifests if namespace_of(m) == namespace_of(job)]
    account = one(here, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    (env_from,) = container["envFrom"]
    secret = one(here, "Secret", env_from["secretRef"]["name"])["stringData"]
    assert "SCANTUNE_API_KEYS" not in secret, "job pods need no API keys"
    role = one(here, "Role")
    assert any("jobs" in r["resources"] and "create" in r["verbs"] for r in role["rules"])

    # The pod's environment (secret, then the launcher's explicit values) is a working runner.
    env = {**secret, **{e["name"]: e["value"] for e in container.get("env", [])}}
    # the one variable that is no setting: set per Job by the launcher, the runner's deadline clock
    assert job_created_at(env) is not None
    env.pop(JOB_CREATED_ENV)
    assert_settings_fields(env, TrainingSettings, "job pod")
    runner = settings_from(monkeypatch, env, TrainingSettings)
    assert runner.database_url == settings.database_url
    assert runner.artifact_uri == settings.artifact_uri
    assert runner.s3_endpoint_url == settings.s3_endpoint_url
    assert runner.webhook_secret == settings.webhook_secret
    assert runner.weights_dir == settings.weights_dir
    assert env["AWS_ACCESS_KEY_ID"] == PRODUCTION["secrets"]["aws"]["accessKeyId"]
    # ...and checks again, with the same limits, what the API checked at submit
    for name in ("local_data_roots", "s3_data_prefixes", "webhook_allowed_hosts", "model_grants",
                 "max_gpus_per_job"):  # fmt: skip
        assert getattr(runner, name) == getattr(settings, name), name
    assert runner.s3_data_prefixes == PRODUCTION["api"]["s3DataPrefixes"]


def test_inference_settings_parse(render: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(PRODUCTION)
    pod = deployment(manifests, "inference")["spec"]["template"]["spec"]
    env = container_env(manifests, pod["containers"][0])
    settings = settings_from(monkeypatch, env, InferenceSettings)
    values = PRODUCTION["inference"]
    assert settings.preload_models == values["preloadModels"]
    assert settings.cache_size == values["cacheSize"]
    assert settings.max_batch_size == values["maxBatchSize"]
    assert settings.providers == values["providers"]
    assert settings.artifact_uri == PRODUCTION["config"]["artifactUri"]
    assert settings.s3_region == PRODUCTION["config"]["s3Region"]
    assert [key.name for key in settings.api_keys] == ["ci", "pacs"]
    assert settings.auth_disabled is False
    assert settings.prediction_signing_key is not None  # the API's own, to check outcomes
    signing = PRODUCTION["secrets"]["predictionSigningKey"]
    assert settings.prediction_signing_key.get_secret_value() == signing
    # Least privilege: inference never sees the job store or the webhook key.
    assert "SCANTUNE_DATABASE_URL" not in env
    assert "SCANTUNE_WEBHOOK_SECRET" not in env


def test_defaults_parse(render: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(MINIMAL)
    for component, cls in (("api", TrainingSettings), ("inference", InferenceSettings)):
        container = deployment(manifests, component)["spec"]["template"]["spec"]["containers"][0]
        settings = settings_from(monkeypatch, container_env(manifests, container), cls)
        assert settings.auth_disabled is False
        assert settings.api_keys == []
        assert settings.artifact_uri == MINIMAL["config"]["artifactUri"]


def api_settings(
    render: Render, monkeypatch: pytest.MonkeyPatch, api_values: dict[str, Any]
) -> TrainingSettings:
    """The training API's settings as the chart renders them, MINIMAL plus `api_values`."""
    manifests = render({**MINIMAL, "api": {**MINIMAL.get("api", {}), **api_values}})
    container = deployment(manifests, "api")["spec"]["template"]["spec"]["containers"][0]
    return settings_from(monkeypatch, container_env(manifests, container), TrainingSettings)


def test_jobs_read_no_data_unless_the_chart_names_roots_or_prefixes(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = api_settings(render, monkeypatch, {})
    assert defaults.local_data_roots == [] and defaults.s3_data_prefixes == []
    mounted = api_settings(render, monkeypatch, {"localDataRoots": ["/mnt/scans"]})
    assert mounted.local_data_roots == [Path("/mnt/scans")]
    prefixed = api_settings(render, monkeypatch, {"s3DataPrefixes": ["s3://scans/ci/"]})
    assert prefixed.s3_data_prefixes == ["s3://scans/ci/"]


def test_webhooks_reach_no_internal_host_unless_the_chart_lists_it(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api_settings(render, monkeypatch, {}).webhook_allowed_hosts == []
    listed = api_settings(render, monkeypatch, {"webhookAllowedHosts": ["ci.example"]})
    assert listed.webhook_allowed_hosts == ["ci.example"]


def test_webhooks_trust_an_internal_ca_only_when_the_chart_gives_one(
    render: Render, monkeypatch: pytest.MonkeyPatch, hospital_ca: HospitalCA
) -> None:
    assert api_settings(render, monkeypatch, {}).webhook_ca_pem is None
    given = api_settings(render, monkeypatch, {"webhookCaPem": hospital_ca.pem})
    assert given.webhook_ca_pem == hospital_ca.pem


# -- pods: probes, commands, security --------------------------------------------------------


@pytest.mark.parametrize("component", ["api", "inference"])
def test_probes_and_ports(variant: tuple[str, list[Manifest]], component: str) -> None:
    name, manifests = variant
    dep = deployment(manifests, component)
    pod = dep["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    (port,) = container["ports"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])
    assert f"--port={port['containerPort']}" in container["args"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"

    service = one(manifests, "Service", dep["metadata"]["name"])
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in (port["name"], port["containerPort"])
    # No other Deployment's pods fall under this Service.
    for other in find(manifests, "Deployment"):
        if other is not dep:
            labels = other["spec"]["template"]["metadata"]["labels"]
            assert not service["spec"]["selector"].items() <= labels.items(), name


@pytest.mark.parametrize("component", ["api", "inference"])
def test_container_command_is_accepted_by_the_cli(render: Render, component: str) -> None:
    from service.cli import build_parser

    (container,) = deployment(render(PRODUCTION), component)["spec"]["template"]["spec"][
        "containers"
    ]
    program, *argv = container["command"] + container["args"]
    assert program == "scantune"
    args = build_parser().parse_args(argv)
    assert (args.command, args.service) == ("serve", {"api": "training"}.get(component, component))
    assert args.host == "0.0.0.0"


def test_inference_pod_runs_the_torch_free_image(render: Render) -> None:
    manifests = render(PRODUCTION)
    pod = deployment(manifests, "inference")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    repository = PRODUCTION["inference"]["image"]["repository"]
    assert container["image"] == f"{repository}:1.2.3"
    assert container["command"][:3] == ["scantune", "serve", "inference"]
    for component in ("api", "trainer"):
        assert PRODUCTION[component]["image"]["repository"] not in container["image"]
    assert pod["automountServiceAccountToken"] is False


def test_pods_are_locked_down(variant: tuple[str, list[Manifest]]) -> None:
    name, manifests = variant
    for dep in find(manifests, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert_restricted(pod, f"{name}: {dep['metadata']['name']}")
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # Writable scratch: gunicorn's and Prometheus' files in /tmp, var/ for the app.
            for path in ("/tmp", "/app/var"):
                assert "emptyDir" in volumes[mounts[path]], f"{name}: {path}"
            assert container["resources"]["requests"], name


# -- RBAC, autoscaling, disruption budget ----------------------------------------------------


def test_api_may_manage_jobs_and_read_pods_in_the_job_namespace(render: Render) -> None:
    manifests = render(PRODUCTION)
    api_pod = deployment(manifests, "api")["spec"]["template"]["spec"]
    config = one(manifests, "ConfigMap", deployment(manifests, "api")["metadata"]["name"])
    job_namespace = config["data"]["SCANTUNE_K8S_NAMESPACE"]

    role = one(manifests, "Role")
    binding = one(manifests, "RoleBinding")
    assert namespace_of(role) == namespace_of(binding) == job_namespace
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": api_pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    one(manifests, "ServiceAccount", api_pod["serviceAccountName"])
    assert api_pod["automountServiceAccountToken"] is True

    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert {"create", "get", "list", "watch", "delete"} <= granted[("batch", "jobs")]
    assert {"get", "list", "watch"} <= granted[("", "pods")]
    assert "get" in granted[("", "pods/log")]
    assert not any("*" in verbs for verbs in granted.values()), "no wildcard verbs"
    assert ("", "secrets") not in granted, "the API needs no access to Secrets"


def test_trainer_account_has_no_api_token(render: Render) -> None:
    manifests = render(PRODUCTION)
    trainer = [
        sa
        for sa in find(manifests, "ServiceAccount")
        if sa["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
    ]
    assert len(trainer) == 1
    assert namespace_of(trainer[0]) == PRODUCTION["trainer"]["namespace"]
    assert trainer[0]["automountServiceAccountToken"] is False


def test_local_launcher_gets_no_rbac(render: Render) -> None:
    manifests = render(VARIANTS["local-launcher"])
    assert not find(manifests, "Role") and not find(manifests, "RoleBinding")
    config = one(manifests, "ConfigMap", deployment(manifests, "api")["metadata"]["name"])
    assert not [key for key in config["data"] if key.startswith("SCANTUNE_K8S_")]
    assert (
        deployment(manifests, "api")["spec"]["template"]["spec"]["automountServiceAccountToken"]
        is False
    )


def test_hpa_scales_the_inference_deployment_on_cpu(render: Render) -> None:
    manifests = render(PRODUCTION)
    inference = deployment(manifests, "inference")
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": inference["metadata"]["name"],
    }
    scaling = PRODUCTION["inference"]["autoscaling"]
    assert hpa["spec"]["minReplicas"] == scaling["minReplicas"]
    assert hpa["spec"]["maxReplicas"] == scaling["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": scaling["targetCPUUtilizationPercentage"],
    }
    # The HPA owns the replica count, and CPU utilization needs a CPU request.
    assert "replicas" not in inference["spec"]
    (container,) = inference["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]

    fixed = render(VARIANTS["fixed-replicas"])
    assert not find(fixed, "HorizontalPodAutoscaler")
    assert deployment(fixed, "inference")["spec"]["replicas"] == 2


def test_pdb_covers_inference_pods_only(render: Render) -> None:
    manifests = render(PRODUCTION)
    pdb = one(manifests, "PodDisruptionBudget")
    selector = pdb["spec"]["selector"]["matchLabels"].items()
    assert (
        pdb["spec"]["minAvailable"]
        == PRODUCTION["inference"]["podDisruptionBudget"]["minAvailable"]
    )
    assert pdb["spec"]["minAvailable"] < PRODUCTION["inference"]["autoscaling"]["minReplicas"]
    labels = deployment(manifests, "inference")["spec"]["template"]["metadata"]["labels"]
    assert selector <= labels.items()
    api_labels = deployment(manifests, "api")["spec"]["template"]["metadata"]["labels"]
    assert not selector <= api_labels.items()


def test_existing_secrets_are_referenced_not_created(render: Render) -> None:
    values = VARIANTS["existing-secrets"]
    manifests = render(values)
    assert not find(manifests, "Secret")
    api = deployment(manifests, "api")["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "scantune-prod"}} in api["envFrom"]
    config = one(manifests, "ConfigMap", deployment(manifests, "api")["metadata"]["name"])
    assert config["data"]["SCANTUNE_K8S_ENV_SECRET"] == "scantune-job-env-prod"


def test_notes_warn_about_missing_api_keys(notes: Callable[[dict[str, Any]], str]) -> None:
    assert "secrets.apiKeys is empty" in notes(MINIMAL)
    production = notes(PRODUCTION)
    assert "WARNING" not in production
    assert PRODUCTION["trainer"]["namespace"] in production
    from service.jobs.launchers.kubernetes import APP_LABEL, APP_NAME

    assert f"-l {APP_LABEL}={APP_NAME}" in production, "NOTES lists the launcher's Jobs"


# -- values schema ---------------------------------------------------------------------------

# A date-time without its offset: the services refuse it too.
NAIVE_EXPIRY = {"name": "ci", "sha256": "0" * 64, "scopes": ["read"], "expires": "2027-06-30T12:00"}


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        (
            {"trainer": {"tolerations": [{"key": "gpu", "tolerationSeconds": 30}]}},
            "tolerationSeconds",
        ),
        ({"trainer": {"tolerations": [{"key": "gpu", "effect": "NoRun"}]}}, "effect"),
        ({"secrets": {"apiKeys": [{"name": "ci", "sha256": "abc", "scopes": ["read"]}]}}, "sha256"),
        (
            {"secrets": {"apiKeys": [{"name": "ci", "sha256": "0" * 64, "scopes": ["root"]}]}},
            "scopes",
        ),
        ({"secrets": {"apiKeys": [NAIVE_EXPIRY]}}, "expires.: .2027-06-30T12:00. does not match"),
        ({"api": {"launcher": "k8s"}}, "launcher"),
        ({"inferense": {"cacheSize": 8}}, "inferense"),
        ({"inference": {"cacheSize": 0}}, "cacheSize"),
        ({"config": {"artifactUri": "bucket/models"}}, "artifactUri"),
    ],
)
def test_schema_rejects_values_the_settings_would_reject(
    helm: Any, render: Render, override: dict[str, Any], complaint: str
) -> None:
    values = {**MINIMAL, **override}
    if "config" in override:
        values["config"] = override["config"]
    if "secrets" in override:
        values["secrets"] = {**MINIMAL["secrets"], **override["secrets"]}
    with pytest.raises(helm.HelmValuesError, match=complaint):
        render(values)


def test_schema_api_key_scopes_are_the_code_s() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    item = schema["properties"]["secrets"]["properties"]["apiKeys"]["items"]
    scope_type = ApiKey.model_fields["scopes"].annotation
    (literal,) = get_args(scope_type)
    assert set(item["properties"]["scopes"]["items"]["enum"]) == set(get_args(literal))
    assert item["properties"]["sha256"]["pattern"] == "^[0-9a-f]{64}$"


def test_images_default_to_the_package_version() -> None:
    """Image tags default to appVersion, so it must be the version the images are built from."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
