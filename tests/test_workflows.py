"""The example GitHub Actions workflows: valid YAML, valid against the workflow schema, and the runbook's calendar."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

WORKFLOWS = Path(__file__).resolve().parent.parent / "examples" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
LINT = YamlLintConfig("""
extends: default
rules:
  line-length: {max: 120}
  truthy: {check-keys: false}   # `on:` is how GitHub spells it
  document-start: disable
""")


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))   # YAML 1.1 reads the key `on` as true
    return doc


def steps(doc: dict) -> list[dict]:
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def commands(doc: dict) -> str:
    return "\n".join(step.get("run", "") for step in steps(doc))


def test_the_three_scheduled_workflows_exist():
    assert [p.name for p in FILES] == ["database-backup.yml", "health-check.yml", "restore-test.yml"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_yamllint_is_clean(path):
    problems = list(linter.run(path.read_text(), LINT, str(path)))
    assert problems == [], "\n".join(f"{path.name}:{p.line}:{p.column} {p.message}" for p in problems)


def test_valid_against_the_github_workflow_schema():
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                             *map(str, FILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_structure_on_jobs_steps(path):
    doc = load(path)
    assert set(doc["on"]) >= {"schedule", "workflow_dispatch"}
    for entry in doc["on"]["schedule"]:
        assert len(entry["cron"].split()) == 5
    assert doc["permissions"], "a workflow states the token permissions it needs"
    for name, job in doc["jobs"].items():
        assert job["runs-on"] and job["timeout-minutes"] > 0, name
        assert job["steps"], name
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), step


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_secrets_come_from_actions_secrets_never_from_the_file(path):
    text = path.read_text()
    doc = load(path)
    env = {k: v for job in doc["jobs"].values() for k, v in (job.get("env") or {}).items()}
    for name in ("DATABASE_URL", "GITHUB_TOKEN", "RENDER_API_KEY", "SENTRY_AUTH_TOKEN"):
        if name in env:
            assert "${{ secrets." in env[name], name
    assert "${{ secrets." not in commands(doc), "secrets go through env:, never into a command line"
    assert not re.search(r"gh[pousr]_[A-Za-z0-9]{20,}|rnd_[A-Za-z0-9]{16,}|sntry[su]_", text)


@pytest.mark.parametrize("name, command, cron", [
    ("database-backup.yml", "inv backup.create --upload", "0 3 * * *"),
    ("restore-test.yml", "inv restore.test", "0 5 * * 1"),
    ("health-check.yml", "inv checks.daily --notify", "30 6 * * *"),
], ids=["nightly-backup", "weekly-restore-test", "daily-checks"])
def test_the_runbook_calendar(name, command, cron):
    doc = load(WORKFLOWS / name)
    assert command in commands(doc)
    assert cron in [entry["cron"] for entry in doc["on"]["schedule"]]
    assert any("pip install" in step.get("run", "") for step in steps(doc))


def _task_names(collection: dict, prefix: str = "") -> set[str]:
    names = {prefix + t["name"] for t in collection["tasks"]}
    for sub in collection["collections"]:
        names |= _task_names(sub, f"{prefix}{sub['name']}.")
    return names


def test_every_inv_command_names_a_real_task():
    import json

    listed = subprocess.run([sys.executable, "-m", "invoke", "--list", "--list-format", "json"],
                            cwd=WORKFLOWS.parent.parent, capture_output=True, text=True, check=True).stdout
    tasks = _task_names(json.loads(listed))
    for path in FILES:
        for used in re.findall(r"\binv\s+\"?([a-z][\w.-]*)", commands(load(path))):
            assert used in tasks, f"{path.name}: inv {used} is not a task"
