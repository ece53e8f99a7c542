"""The Dockerfile, read as data: targets, what each installs, and that its commands exist.

Nothing here builds an image (that takes minutes and a registry); the build itself is checked
by hand with `buildah bud` (see the Dockerfile's header).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.cli import build_parser
from service.commands.serve import SERVICES
from service.config import TrainingSettings
from tests.deploy.conftest import CHART, REPO

TARGETS = {"api": "training", "trainer": None, "inference": "inference"}
TORCH = {"torch", "torchvision", "timm"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for key, rest in self.instructions if key == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: dict[str, Stage]

    def lineage(self, name: str) -> list[Stage]:
        """The stage and every stage it is built from or copies from, parents first."""
        seen: list[Stage] = []

        def visit(stage_name: str) -> None:
            stage = self.stages.get(stage_name)
            if stage is None or stage in seen:
                return
            visit(stage.base)
            for copy in stage.all("COPY"):
                match = re.search(r"--from=(\S+)", copy)
                if match:
                    visit(match.group(1))
            seen.append(stage)

        visit(name)
        return seen

    def inherited(self, name: str, keyword: str) -> str | None:
        """The value of USER/CMD/... a target ends up with, following FROM (not COPY --from)."""
        stage: Stage | None = self.stages[name]
        while stage is not None:
            value = stage.last(keyword)
            if value is not None:
                return value
            stage = self.stages.get(stage.base)
        return None

    def env(self, name: str) -> dict[str, str]:
        chain = []
        stage: Stage | None = self.stages[name]
        while stage is not None:
            chain.append(stage)
            stage = self.stages.get(stage.base)
        env: dict[str, str] = {}
        for stage in reversed(chain):
            for rest in stage.all("ENV"):
                env.update(item.split("=", 1) for item in shlex.split(rest))
        return env


def logical_lines(text: str) -> list[str]:
    """Instructions with backslash continuations joined and comment lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "Dockerfile ends inside a continuation"
    return lines


def parse(text: str) -> Dockerfile:
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match and match.group(2), f"every stage is named: {line}"
            stage = stages[match.group(2)] = Stage(match.group(2), match.group(1))
        elif stage is None:
            assert keyword == "ARG", f"only ARG may come before the first FROM: {line}"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stage.instructions.append((keyword, rest))
    return Dockerfile(args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse((REPO / "Dockerfile").read_text())


def shell_commands(run: str) -> list[list[str]]:
    """A RUN step's shell commands as word lists: quotes respected, split at && ; and |."""
    lexer = shlex.shlex(run.replace("${", "{"), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", ";", "||", "|"}:
            commands.append([])
        elif not (token.startswith("--mount=") and not commands[-1]):
            commands[-1].append(token)
    return [c for c in commands if c]


def pip_installs(dockerfile: Dockerfile, target: str) -> list[str]:
    """Every `pip install` argument (not option) in the RUN steps a target is built from."""
    installed: list[str] = []
    for stage in dockerfile.lineage(target):
        for run in stage.all("RUN"):
            for words in shell_commands(run):
                if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
                    installed += [w for w in words[2:] if not w.startswith(("-", "{", "$"))]
    return installed


def exec_form(value: str | None) -> list[str]:
    assert value is not None
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"use the exec form: {value}"
    return parsed


# -- targets and base ------------------------------------------------------------------------


def test_three_targets_from_one_pinned_base(dockerfile: Dockerfile) -> None:
    assert set(TARGETS) <= set(dockerfile.stages)
    assert dockerfile.args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    for stage in dockerfile.stages.values():
        assert stage.base in dockerfile.stages or stage.base == "${PYTHON_IMAGE}", stage.name
    for target in TARGETS:
        assert dockerfile.lineage(target)[0].base == "${PYTHON_IMAGE}"
        env = dockerfile.env(target)
        assert env["PYTHONDONTWRITEBYTECODE"] == "1", target
        assert env["PYTHONUNBUFFERED"] == "1", target


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_runs_as_the_chart_user_not_root(dockerfile: Dockerfile, target: str) -> None:
    user = dockerfile.inherited(target, "USER")
    assert user is not None, f"{target} sets no USER"
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{target}: numeric non-root uid, got {user}"
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert f"runAsUser: {uid}" in helpers, "the chart's runAsUser must match the image's uid"
    # The app's writable folder exists and belongs to that user under a read-only root.
    assert dockerfile.inherited(target, "WORKDIR") == "/app"
    runs = " ".join(run for stage in dockerfile.lineage(target) for run in stage.all("RUN"))
    assert "mkdir -p /app/var" in runs and "chown scantune:scantune /app/var" in runs


def test_job_pods_run_as_the_trainer_image_user(dockerfile: Dockerfile) -> None:
    """The launcher's defaults and the chart's trainer values are the trainer image's user."""
    user = dockerfile.inherited("trainer", "USER")
    assert user is not None
    uid, gid = (int(part) for part in user.split(":"))
    settings = TrainingSettings.model_fields
    assert (settings["k8s_run_as_user"].default, settings["k8s_run_as_group"].default) == (uid, gid)
    trainer = yaml.safe_load((CHART / "values.yaml").read_text())["trainer"]
    assert (trainer["runAsUser"], trainer["runAsGroup"]) == (uid, gid)


# -- what each target installs ---------------------------------------------------------------


def test_inference_installs_only_the_serve_extra(dockerfile: Dockerfile) -> None:
    installed = pip_installs(dockerfile, "inference")
    assert ".[serve]" in installed
    assert set(installed) <= {".[serve]", "."}, installed
    runs = " ".join(run for stage in dockerfile.lineage("inference") for run in stage.all("RUN"))
    assert not [name for name in TORCH | {"[train]"} if name in runs.replace("'torch'", "")]
    assert "find_spec('torch') is not None" in runs, "the build proves torch is absent"


def test_serve_extra_never_pulls_torch() -> None:
    """Walk the installed dependency graph of scantune[serve]: torch is not reachable."""
    reached: set[str] = set()
    pending = [("scantune", frozenset({"serve"}))]
    while pending:
        name, extras = pending.pop()
        key = canonicalize_name(name)
        if key in reached:
            continue
        reached.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # an optional platform dependency not installed here
        for line in requires:
            req = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in environments):
                pending.append((req.name, frozenset(req.extras)))
    assert "onnxruntime" in reached
    assert not reached & TORCH, sorted(reached & TORCH)


def test_serve_extra_is_what_pyproject_says() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    serve = [Requirement(r).name for r in pyproject["project"]["optional-dependencies"]["serve"]]
    core = [Requirement(r).name for r in pyproject["project"]["dependencies"]]
    assert "onnxruntime" in serve
    assert not (set(serve) | set(core)) & TORCH


def test_trainer_installs_the_train_extra(dockerfile: Dockerfile) -> None:
    installed = pip_installs(dockerfile, "trainer")
    assert ".[train]" in installed
    assert set(installed) <= {".[train]", "."}, installed


def test_api_installs_the_api_extra_without_torch(dockerfile: Dockerfile) -> None:
    """The control plane (kubernetes launcher) ships no torch: the `api` extra only."""
    installed = pip_installs(dockerfile, "api")
    assert ".[api]" in installed
    assert set(installed) <= {".[api]", "."}, installed
    runs = " ".join(run for stage in dockerfile.lineage("api") for run in stage.all("RUN"))
    assert "find_spec('torch') is not None" in runs, "the build proves torch is absent"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    api = {Requirement(r).name for r in pyproject["project"]["optional-dependencies"]["api"]}
    assert "kubernetes" in api and not api & TORCH


def test_trainer_runs_the_job_runner(dockerfile: Dockerfile) -> None:
    entrypoint = exec_form(dockerfile.inherited("trainer", "ENTRYPOINT"))
    assert entrypoint == ["python", "-m", "service.jobs.runner"]
    assert dockerfile.inherited("trainer", "HEALTHCHECK") == "NONE"
    spec = importlib.util.find_spec("service.jobs.runner")
    assert spec is not None and spec.origin is not None, "service/jobs/runner.py is missing"
    with open(spec.origin) as file:
        source = ast.parse(file.read())
    main = [n for n in source.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert main, "python -m service.jobs.runner needs a __main__ block"


# -- the services' commands, ports and health checks ----------------------------------------


@pytest.mark.parametrize("target", ["api", "inference"])
def test_service_command_port_and_healthcheck(dockerfile: Dockerfile, target: str) -> None:
    service = TARGETS[target]
    assert service is not None
    port = SERVICES[service].port
    assert dockerfile.inherited(target, "EXPOSE") == str(port)

    program, *argv = exec_form(dockerfile.inherited(target, "CMD"))
    assert program == "scantune"
    args = build_parser().parse_args(argv)
    assert (args.command, args.service, args.host) == ("serve", service, "0.0.0.0")
    assert args.port in (None, port)

    healthcheck = dockerfile.inherited(target, "HEALTHCHECK")
    assert healthcheck is not None and f"http://127.0.0.1:{port}/healthz" in healthcheck


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_gunicorn_app_factories_exist(service: str) -> None:
    """`scantune serve` runs gunicorn on "module:create_app()": the module defines it."""
    module, _, call = SERVICES[service].app.partition(":")
    assert call == "create_app()"
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{module} is missing"
    with open(spec.origin) as file:
        tree = ast.parse(file.read())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    imported = {
        a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names
    }
    assert "create_app" in defined | imported, f"{module} has no create_app"


def test_console_script_is_the_cli() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["scantune"] == "service.cli:main"


# -- build context ---------------------------------------------------------------------------


def test_copies_only_what_dockerignore_lets_in(dockerfile: Dockerfile) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore starts by excluding everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for path in allowed:
        assert (REPO / path).exists(), f".dockerignore lets in {path}, which does not exist"
    for stage in dockerfile.stages.values():
        for copy in stage.all("COPY"):
            words = [w for w in shlex.split(copy) if not w.startswith("--")]
            if "--from=" in copy:
                continue
            for source in words[:-1]:
                assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
    for heavy in ("**/*.onnx", "**/*.pth", "**/__pycache__"):
        assert heavy in patterns


def test_nothing_is_downloaded_at_run_time(dockerfile: Dockerfile) -> None:
    text = (REPO / "Dockerfile").read_text()
    for tool in ("curl ", "wget ", "torch.hub", "load_state_dict_from_url"):
        assert tool not in text
    for target in TARGETS:
        for keyword in ("CMD", "ENTRYPOINT"):
            value = dockerfile.inherited(target, keyword) or ""
            assert "pip" not in value and "http" not in value, (target, keyword)
