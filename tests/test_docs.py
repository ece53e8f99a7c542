"""The docs stay true: every setting documented (and none that does not exist), every
`scantune` command they quote exists, the README stays short, and its five-minute
walk-through runs as written."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import build_parser
from service.config import DicomNodeSettings, InferenceSettings, TrainingSettings

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
BENCHMARKS = REPO / "docs" / "benchmarks.md"
WALKTHROUGH = "Five minutes with scantune"
# Where `scantune ...` commands are quoted for users to run.
QUOTING = [
    README,
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "helm" / "scantune" / "README.md",
    REPO / "helm" / "scantune" / "values.yaml",
    REPO / "helm" / "scantune" / "templates" / "NOTES.txt",
    *sorted((REPO / "service" / "config").glob("*.py")),
]
# Variables the CLI and tests read directly, not settings of a service.
NOT_SETTINGS = {
    "SCANTUNE_URL",
    "SCANTUNE_INFERENCE_URL",
    "SCANTUNE_API_KEY",
    "SCANTUNE_TEST_POSTGRES_URL",
    "SCANTUNE_TEST_DATA_DIR",
}


def documented_variables(*paths: Path) -> set[str]:
    return {v for p in paths for v in re.findall(r"`(SCANTUNE_[A-Z0-9_]+)`", p.read_text())}


def known_settings() -> set[str]:
    return {
        f"SCANTUNE_{name.upper()}"
        for settings in (TrainingSettings, InferenceSettings, DicomNodeSettings)
        for name in settings.model_fields
    }


@pytest.mark.parametrize("settings", [TrainingSettings, InferenceSettings, DicomNodeSettings])
def test_every_setting_is_documented(settings: type) -> None:
    expected = {f"SCANTUNE_{name.upper()}" for name in settings.model_fields}
    missing = expected - documented_variables(CONFIGURATION)
    assert not missing, f"docs/configuration.md does not document {sorted(missing)}"


def test_the_docs_document_no_setting_that_does_not_exist() -> None:
    stale = documented_variables(README, CONFIGURATION) - known_settings() - NOT_SETTINGS
    assert not stale, f"documented settings that do not exist: {sorted(stale)}"


def test_the_readme_is_short_and_its_table_cells_one_line() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; at most 200"
    long_rows = [row for row in lines if row.startswith("|") and len(row) > 160]
    assert not long_rows, f"README table rows over 160 characters: {long_rows}"


def test_the_benchmarks_page_holds_current_figures_with_their_commands() -> None:
    text = BENCHMARKS.read_text()
    assert len(text.splitlines()) <= 300
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert len(sections) >= 5
    for section in sections:
        title = section.splitlines()[0]
        assert "```" in section, f"section {title!r} quotes no command"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_quoted_scantune_command_exists() -> None:
    """`scantune keys hash` was quoted for months and never existed."""
    top = subcommands(build_parser())
    quoted = 0
    for path in QUOTING:
        text = path.read_text()
        for match in re.finditer(r"scantune ([a-z][a-z-]*)(?: ([a-z][a-z|\\-]*))?", text):
            command, sub = match.group(1), match.group(2)
            if command not in top:
                continue  # prose ("scantune is ..."), not a command line
            quoted += 1
            choices = subcommands(top[command])
            if choices and sub:
                for name in sub.replace("\\", "").split("|"):
                    where = f"{path.relative_to(REPO)}: scantune {command} {name}"
                    assert name in choices, f"{where} does not exist"
    assert quoted >= 10


# -- the walk-through --------------------------------------------------------------------


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def fenced(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", section, flags=re.M | re.S)


def command_lines(block: str) -> list[str]:
    """Shell lines with continuations joined; comments dropped (they sit after two spaces)."""
    joined = block.replace("\\\n", " ")
    lines = [re.split(r"\s{2,}#", line)[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_walkthrough_quotes_what_the_makefile_does() -> None:
    """`make run` is `scantune up`; `make shell` puts the virtualenv's bin first on PATH."""
    makefile = (REPO / "Makefile").read_text()
    run = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    shell = re.search(r"^shell:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert run and "$(BIN)/scantune up" in run.group(1)
    assert "--data-root ../shared/data" in run.group(1)  # the walk-through's data
    assert shell and 'PATH="$(BIN):$$PATH"' in shell.group(1)
    first = command_lines(fenced(readme_section(WALKTHROUGH), "sh")[0])
    assert first == ["make run", "make shell", "export SCANTUNE_API_KEY=..."]


@pytest.mark.e2e
@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path, shared_data_dir: Path) -> None:
    """Every command of the walk-through, in order, in a checkout beside `shared/` as on a
    fresh machine. `make run` and `make shell` are stood in for by what they run (checked
    above), on free ports instead of 8000 and 8001."""
    from tests.service.running import Up

    section = readme_section(WALKTHROUGH)
    blocks = [command_lines(block) for block in fenced(section, "sh")]
    root = tmp_path / "work"
    checkout = root / "scantune"
    checkout.mkdir(parents=True)
    (root / "shared").symlink_to(shared_data_dir.parents[1])
    (checkout / "tests").symlink_to(REPO / "tests")
    (checkout / "job.yaml").write_text(fenced(section, "yaml")[0])
    (checkout / "job.json").write_text(fenced(section, "json")[0])

    up = Up(checkout, key=True, data_roots=[root / "shared" / "data"])
    up.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCANTUNE_")}
        env |= {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(REPO),
            "SCANTUNE_API_KEY": up.printed_key(),
            "SCANTUNE_URL": up.url,
            "SCANTUNE_INFERENCE_URL": up.inference_url,
        }
        ports = {"127.0.0.1:8000": up.url[7:], "127.0.0.1:8001": up.inference_url[7:]}
        for line in [line for block in blocks[1:] for line in block]:
            for default, port in ports.items():
                line = line.replace(default, port)
            done = subprocess.run(
                ["bash", "-c", line],
                cwd=checkout,
                env=env,
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            if line.startswith("curl"):
                assert '"status": 4' not in done.stdout and '"status":4' not in done.stdout, (
                    f"{line}\n{done.stdout[:2000]}"
                )
    finally:
        up.kill()
