"""The checklists end to end: `inv checks.*` as a subprocess, and the gatherers against real PostgreSQL and the
fake API server (states that make each check pass, warn, fail and error)."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ops import checks, gather
from ops.config import Settings

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(timezone.utc)


def inv(*args: str, env: dict[str, str] | None = None, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `inv ...` from the project root with a clean environment: only PATH, a private HOME, and `env`."""
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "LANG": "C.UTF-8",
            "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def run_one(check_id: str, ops: dict | None = None, env: dict | None = None, *, tmp_path: Path,
            **flags) -> gather.Outcome:
    settings = Settings.from_dict(ops={"audit_log": str(tmp_path / "audit.jsonl"), **(ops or {})}, env=env or {})
    report = checks.run_checklist(settings, "test", (check_id,), **flags)
    return report.outcomes[0]


# -- nothing configured ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("checklist, ids", [("daily", checks.DAILY), ("weekly", checks.WEEKLY),
                                            ("monthly", checks.MONTHLY)])
def test_fresh_configuration_prints_a_table_of_errors_naming_what_to_set(checklist, ids, tmp_path):
    result = inv(f"checks.{checklist}", home=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    for check_id in ids:
        row = next(line for line in result.stdout.splitlines() if check_id in line)
        assert "❓" in row and "error" in row
    assert "not configured: set" in result.stdout
    for name in {"daily": ["SENTRY_AUTH_TOKEN", "ops.sentry.org", "RENDER_API_KEY", "ops.render.service_id",
                           "ops.app.health_url", "GITHUB_TOKEN", "DATABASE_URL"],
                 "weekly": ["GITHUB_TOKEN"], "monthly": ["GITHUB_TOKEN", "DATABASE_URL"]}[checklist]:
        assert name in result.stdout
    assert f"checks.{checklist}: {len(ids)} check(s) failed or could not run" in result.stderr


def test_fresh_configuration_json_is_the_contract(tmp_path):
    result = inv("checks.daily", "--json", home=tmp_path)
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["status"] == "error"
    assert [c["id"] for c in doc["checks"]] == list(checks.DAILY)
    assert all(set(c) == {"id", "status", "summary", "details"} and c["status"] == "error" for c in doc["checks"])
    sentry = doc["checks"][0]
    assert sentry["summary"] == "not configured: set ops.sentry.org, ops.sentry.project, SENTRY_AUTH_TOKEN"


def test_report_file_is_markdown(tmp_path):
    report = tmp_path / "report.md"
    result = inv("checks.monthly", "--report", str(report), home=tmp_path)
    assert result.returncode == 1
    text = report.read_text()
    assert text.startswith("## Monthly health checks")
    assert "| ❓ | `access.collaborators` | error | not configured: set GITHUB_TOKEN |" in text


def test_links_are_built_from_configuration(tmp_path):
    result = inv("links", env={"INVOKE_OPS_RENDER_SERVICE_ID": "srv-abc", "INVOKE_OPS_SENTRY_ORG": "acme",
                               "INVOKE_OPS_SENTRY_PROJECT": "api"}, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "https://dashboard.render.com/web/srv-abc" in result.stdout
    assert "https://sentry.io/organizations/acme/projects/api/" in result.stdout
    assert "https://github.com/Gor93rus/lottery-backend/releases" in result.stdout
    assert "(not set: ops.app.health_url)" in result.stdout


def test_prune_refuses_keep_min_zero_before_any_network(tmp_path):
    result = inv("backup.prune", "--keep-min", "0", "--dry-run", home=tmp_path)
    assert result.returncode == 1
    assert "keep-min must be at least 1" in result.stderr and "Traceback" not in result.stderr


# -- database checks against real PostgreSQL ---------------------------------------------------------------------

@pytest.fixture
def login_role(pg_server):
    """Factory: a uniquely named login role on the test server (roles are cluster-wide), dropped after."""
    made: list[str] = []

    def make(*, superuser: bool = False) -> str:
        name = f"ops_t_{secrets.token_hex(4)}"
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN" + (" SUPERUSER" if superuser else "")).format(
                sql.Identifier(name)))
        made.append(name)
        return name

    yield make
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def login_roles(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin")]


def test_db_size_reports_size_connections_and_change_since_last_run(make_db, tmp_path):
    url = make_db("app")
    env = {"DATABASE_URL": url}
    first = run_one("db.size", env=env, tmp_path=tmp_path)
    assert first.status == "pass", first
    assert "connections" in first.summary and "first run" in first.details[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g")
    second = run_one("db.size", env=env, tmp_path=tmp_path)
    assert second.status == "pass"
    assert second.details[0].startswith("+") and "since the previous run" in second.details[0]


def test_db_size_warns_when_connections_are_near_max(make_db, tmp_path):
    out = run_one("db.size", {"checks": {"db": {"connections_warn": 0.0000001}}}, {"DATABASE_URL": make_db("app")},
                  tmp_path=tmp_path)
    assert out.status == "warn"


def test_production_is_read_in_a_read_only_session(make_db):
    url = make_db("production")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        gather._read_only(url, lambda conn: conn.execute("CREATE TABLE written_by_a_check ()"))
    assert gather._read_only(url, gather._size_queries)["bytes"] > 0


def test_unreachable_database_is_an_error_without_the_password(tmp_path):
    url = "postgresql://app:Sup3rSecretPw@127.0.0.1:1/app"
    for check_id in ("db.size", "access.db_roles"):
        out = run_one(check_id, env={"DATABASE_URL": url}, tmp_path=tmp_path)
        assert out.status == "error"
        assert "cannot connect" in out.summary
        assert "Sup3rSecretPw" not in json.dumps(out.to_dict())


@pytest.mark.parametrize("extra, listed, status", [
    (None, "all", "pass"),
    ("plain", "all-but-new", "warn"),
    ("superuser", "all-but-new", "fail"),
    ("superuser", None, "fail"),
    ("plain", None, "pass"),
], ids=["all-listed", "unlisted-plain-role", "unlisted-superuser", "no-list-rogue-superuser", "no-list-plain-role"])
def test_access_db_roles_against_a_real_server(extra, listed, status, make_db, login_role, tmp_path):
    url = make_db("app")
    existing = login_roles(url)
    new = login_role(superuser=extra == "superuser") if extra else None
    roles = {"all": existing + ([new] if new else []), "all-but-new": existing, None: None}[listed]
    # roles already on the (shared) test server are declared provider roles, so the verdict depends only on the
    # role this test made
    out = run_one("access.db_roles", {"access": {"db_roles": roles or [], "provider_roles": existing}},
                  {"DATABASE_URL": url}, tmp_path=tmp_path)
    assert out.status == status, out
    if new:
        assert any(new in d for d in out.details)
