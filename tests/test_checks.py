"""The checklists end to end: `inv checks.*` as a subprocess, and the gatherers against real PostgreSQL and the
fake API server (states that make each check pass, warn, fail and error)."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
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


def other_superusers(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolcanlogin AND rolsuper AND rolname <> current_user")]


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
    if listed is None and status == "pass" and other_superusers(url):
        # with no list, another superuser already on a shared server (root on CI's) is a warn, per the issue
        status = "warn"
    assert out.status == status, out
    if new:
        assert any(new in d for d in out.details)


# -- against the fake API server ---------------------------------------------------------------------------------

DAY = timedelta(days=1)


def fake_one(fake_api, check_id: str, tmp_path: Path, *, env: dict | None = None, **ops) -> gather.Outcome:
    """Run one check in-process against the fake (config from fake_api.settings_ops(), tokens from env())."""
    settings = Settings.from_dict(ops=fake_api.settings_ops(audit_log=str(tmp_path / "audit.jsonl"), **ops),
                                  env=fake_api.env() if env is None else env)
    return checks.run_checklist(settings, "test", (check_id,)).outcomes[0]


def nightly_backups(fake_api, days: int, *, size: int = 4000, newest_hours: float = 6, **sizes: int) -> None:
    """`days` nightly backup releases, the newest `newest_hours` old; `sizes` overrides by index (d0=..)."""
    for d in range(days):
        made = NOW - timedelta(hours=newest_hours) - d * DAY
        data = secrets.token_bytes(sizes.get(f"d{d}", size))
        fake_api.github.add_backup(f"backup-{made:%Y%m%d_%H%M%S}", data, created_at=made)


# daily

@pytest.mark.parametrize("issues, status", [(0, "pass"), (1, "warn"), (12, "fail")],
                         ids=["quiet", "one-issue", "twelve-issues-across-pages"])
def test_sentry_errors_statuses(issues, status, fake_api, tmp_path):
    for i in range(issues):
        fake_api.sentry.add_issue(f"TypeError {i}", count=30, events_24h=3, user_count=1)
    fake_api.sentry.add_issue("old and resolved", status="resolved")
    out = fake_one(fake_api, "sentry.errors", tmp_path)
    assert out.status == status, out
    assert out.summary.startswith(f"{issues} unresolved issue(s), {3 * issues} event(s)")
    if issues:
        assert "https://sentry.io/organizations/acme/issues/" in out.details[0]
        assert len(fake_api.calls("GET", r"/issues/")) == (3 if issues == 12 else 1)   # page cap 5


def test_sentry_bad_token_is_an_error_naming_the_variable(fake_api, tmp_path):
    out = fake_one(fake_api, "sentry.errors", tmp_path, env={**fake_api.env(), "SENTRY_AUTH_TOKEN": "sntryu_wrong"})
    assert out.status == "error" and "401" in out.summary
    assert any("SENTRY_AUTH_TOKEN" in d for d in out.details)


@pytest.mark.parametrize("setup, status, words", [
    (lambda f: f.render.add_deploy("live"), "pass", "latest deploy live"),
    (lambda f: (f.render.add_deploy("live"), f.render.add_deploy("build_failed")), "fail", "build_failed"),
    (lambda f: (f.render.add_deploy("live"), f.render.service.update(suspended="suspended", suspenders=["user"])),
     "fail", "suspended"),
    (lambda f: f.render.add_deploy("update_in_progress", finished=False), "warn", "in progress"),
], ids=["live", "deploy-failed", "suspended", "deploying"])
def test_render_service_states(setup, status, words, fake_api, tmp_path):
    setup(fake_api)
    out = fake_one(fake_api, "render.service", tmp_path)
    assert out.status == status and words in out.summary, out


def test_render_unknown_service_is_a_fail(fake_api, tmp_path):
    out = fake_one(fake_api, "render.service", tmp_path, render={"service_id": "srv-doesnotexist"})
    assert out.status == "fail" and "not found" in out.summary


def test_render_5xx_after_retries_is_an_error(fake_api, tmp_path):
    fake_api.fail(r"/render/", 503, times=None)
    out = fake_one(fake_api, "render.service", tmp_path)
    assert out.status == "error" and "503" in out.summary
    assert len(fake_api.calls("GET", r"/services/")) == 3   # the first try and 2 retries (settings_ops)


def test_a_transient_5xx_is_retried_and_passes(fake_api, tmp_path):
    fake_api.render.add_deploy("live")
    fake_api.fail(r"/services/", 502, times=1)
    assert fake_one(fake_api, "render.service", tmp_path).status == "pass"


@pytest.mark.parametrize("setup, status", [
    (lambda f: None, "pass"),
    (lambda f: f.app.set("/health", status=500), "fail"),
    (lambda f: f.app.set("/api/draws/latest", status=404), "fail"),
    (lambda f: f.app.down("/health"), "fail"),
], ids=["healthy", "health-500", "endpoint-404", "health-down"])
def test_app_health_states(setup, status, fake_api, tmp_path):
    setup(fake_api)
    out = fake_one(fake_api, "app.health", tmp_path)
    assert out.status == status, out
    assert len(out.details) == 3 and all(" ms" in d for d in out.details)


def test_app_health_slow_endpoint_warns(fake_api, tmp_path):
    fake_api.app.set("/health", delay=0.3)
    out = fake_one(fake_api, "app.health", tmp_path, checks={"app": {"warn_ms": 200}})
    assert out.status == "warn" and "slower than 200 ms" in out.summary


def test_app_health_timeout_is_a_fail_with_the_reason(fake_api, tmp_path):
    fake_api.app.set("/health", delay=3)
    out = fake_one(fake_api, "app.health", tmp_path, checks={"app": {"timeout": 0.5}})
    assert out.status == "fail" and "timed out after 0.5 s" in out.details[0]


@pytest.mark.parametrize("newest_hours, d0, status", [(6, 4000, "pass"), (30, 4000, "fail"), (6, 1500, "fail"),
                                                      (6, 3000, "warn")],
                         ids=["fresh", "too-old", "shrank-by-more-than-half", "shrank-a-little"])
def test_backup_fresh_states(newest_hours, d0, status, fake_api, tmp_path):
    nightly_backups(fake_api, 8, newest_hours=newest_hours, d0=d0)   # 8 > page cap: two pages
    fake_api.github.add_release("v1.2.0", created_at=NOW)            # not a backup: ignored
    out = fake_one(fake_api, "backup.fresh", tmp_path)
    assert out.status == status, out


def test_backup_fresh_rate_limited_is_an_error_saying_when_it_resets(fake_api, tmp_path):
    nightly_backups(fake_api, 2)
    fake_api.rate_limit(r"/releases", kind="primary", reset_in=3600, times=None)
    started = time.monotonic()
    out = fake_one(fake_api, "backup.fresh", tmp_path)
    assert out.status == "error" and "rate limit" in out.summary and "resets at" in out.summary
    assert len(fake_api.calls("GET", r"/releases")) == 1    # no hammering: one call, then give up
    assert time.monotonic() - started < 5


def test_backup_fresh_waits_out_a_short_secondary_rate_limit(fake_api, tmp_path):
    nightly_backups(fake_api, 2)
    fake_api.rate_limit(r"/releases", kind="secondary", retry_after=1, times=1)
    out = fake_one(fake_api, "backup.fresh", tmp_path)
    assert out.status == "pass", out
    first, second = fake_api.calls("GET", r"/releases")[:2]
    assert second.at - first.at >= 0.9


# weekly

def test_actions_workflows_states_and_links(fake_api, tmp_path):
    gh = fake_api.github
    gh.add_run("database-backup.yml", created_at=NOW - 2 * DAY)
    gh.add_run("database-backup.yml", created_at=NOW - DAY)
    gh.add_run("restore-test.yml", conclusion="failure", created_at=NOW - DAY)
    gh.add_run("ci.yml", created_at=NOW - DAY)
    gh.add_run("ci.yml", status="in_progress", created_at=NOW)
    out = fake_one(fake_api, "actions.workflows", tmp_path)      # health-check.yml has no runs: 404
    assert out.status == "fail", out
    assert out.summary == "1 of 4 workflow(s) failed"
    failed = next(d for d in out.details if d.startswith("restore-test.yml"))
    assert "failure" in failed and "/actions/runs/" in failed
    assert any(d.startswith("health-check.yml: no such workflow") for d in out.details)


def test_actions_workflows_all_green(fake_api, tmp_path):
    for wf in ("database-backup.yml", "restore-test.yml", "ci.yml", "health-check.yml"):
        fake_api.github.add_run(wf, created_at=NOW - DAY)
    assert fake_one(fake_api, "actions.workflows", tmp_path).status == "pass"


@pytest.mark.parametrize("conclusion, age, status", [("success", DAY, "pass"), ("failure", DAY, "fail"),
                                                     ("success", 12 * DAY, "warn")],
                         ids=["passed", "failed", "stale"])
def test_restore_test_from_the_workflow(conclusion, age, status, fake_api, tmp_path):
    fake_api.github.add_run("restore-test.yml", conclusion=conclusion, created_at=NOW - age)
    assert fake_one(fake_api, "backup.restore_test", tmp_path).status == status


@pytest.mark.parametrize("severities, status", [([], "pass"), (["low", "medium"], "warn"),
                                                (["low"] * 6 + ["critical"], "fail")],
                         ids=["none", "low-and-medium", "critical-on-the-second-page"])
def test_dependabot_alerts_states(severities, status, fake_api, tmp_path):
    for sev in severities:
        fake_api.github.add_alert(sev)
    fake_api.github.add_alert("critical", state="fixed")
    out = fake_one(fake_api, "dependabot.alerts", tmp_path)
    assert out.status == status, out
    assert out.summary.startswith(f"{len(severities)} open alert(s)")


def test_dependabot_disabled_is_a_warn_not_an_auth_error(fake_api, tmp_path):
    fake_api.github.dependabot_enabled = False
    out = fake_one(fake_api, "dependabot.alerts", tmp_path)
    assert out.status == "warn" and "disabled" in out.summary


def test_backup_trend_charts_every_page(fake_api, tmp_path):
    nightly_backups(fake_api, 12)
    out = fake_one(fake_api, "backup.trend", tmp_path)
    assert out.status == "pass" and out.summary.startswith("12 backups")
    assert sum("█" in d for d in out.details) == 12


# monthly

@pytest.mark.parametrize("people, expected, status", [
    ({"owner": "admin", "ci-bot": "write"}, {"owner": "admin", "ci-bot": "write"}, "pass"),
    ({"owner": "admin", "ci-bot": "admin"}, {"owner": "admin", "ci-bot": "write"}, "fail"),
    ({"owner": "admin", "mallory": "read"}, {"owner": "admin"}, "fail"),
    ({"owner": "admin"}, {}, "warn"),
], ids=["as-expected", "more-than-expected", "unexpected-person", "no-config"])
def test_access_collaborators_states(people, expected, status, fake_api, tmp_path):
    for login, role in people.items():
        fake_api.github.add_collaborator(login, role)
    out = fake_one(fake_api, "access.collaborators", tmp_path, access={"expected": expected})
    assert out.status == status, out


def test_secrets_age_covers_repository_and_environment_secrets(fake_api, tmp_path):
    fake_api.github.add_secret("DATABASE_URL", updated_at=NOW - 10 * DAY)
    fake_api.github.add_secret("RENDER_API_KEY", updated_at=NOW - 120 * DAY)
    fake_api.github.add_secret("DEPLOY_KEY", updated_at=NOW - 200 * DAY, environment="production")
    out = fake_one(fake_api, "secrets.age", tmp_path)
    assert out.status == "warn" and out.summary == "2 of 3 secret(s) older than 90 days"
    assert out.details[0].startswith("environment production: DEPLOY_KEY")
    assert out.details[1].startswith("repository: RENDER_API_KEY")


def test_backup_retention_says_what_prune_would_delete(fake_api, tmp_path):
    nightly_backups(fake_api, 18)
    out = fake_one(fake_api, "backup.retention", tmp_path)
    assert out.status == "warn" and "backup.prune would delete 4" in out.summary


def test_deps_updates_flags_old_dependabot_pull_requests(fake_api, tmp_path):
    fake_api.github.add_pull("Bump lodash", created_at=NOW - 45 * DAY)
    fake_api.github.add_pull("Bump axios", created_at=NOW - 2 * DAY)
    fake_api.github.add_pull("Feature work", user="alice", created_at=NOW - 90 * DAY)
    out = fake_one(fake_api, "deps.updates", tmp_path)
    assert out.status == "warn" and out.summary.startswith("1 of 2 Dependabot pull request(s)")
    assert "Bump lodash" in out.details[0]


# whole checklists, concurrency, notify

def healthy(fake_api) -> None:
    fake_api.render.add_deploy("live")
    nightly_backups(fake_api, 3)


def test_a_dead_service_is_an_error_and_the_rest_still_run(fake_api, make_db, tmp_path):
    healthy(fake_api)
    fake_api.drop(r"^/render/", times=None)
    settings = Settings.from_dict(ops=fake_api.settings_ops(audit_log=str(tmp_path / "a.jsonl")),
                                  env={**fake_api.env(), "DATABASE_URL": make_db("app")})
    report = checks.run_checklist(settings, "daily", checks.DAILY)
    statuses = {o.id: o.status for o in report.outcomes}
    assert statuses == {"sentry.errors": "pass", "render.service": "error", "app.health": "pass",
                        "backup.fresh": "pass", "db.size": "pass"}
    render = next(o for o in report.outcomes if o.id == "render.service")
    assert "closed the connection" in render.summary or "could not be reached" in render.summary


def test_a_hanging_service_costs_one_timeout(fake_api, tmp_path):
    healthy(fake_api)
    fake_api.slow(r"^/sentry/", seconds=30, times=None)
    settings = Settings.from_dict(ops=fake_api.settings_ops(audit_log=str(tmp_path / "a.jsonl"),
                                                            checks={"timeout": 1.5}), env=fake_api.env())
    started = time.monotonic()
    report = checks.run_checklist(settings, "daily", ("sentry.errors", "render.service", "app.health"))
    assert time.monotonic() - started < 5
    assert [o.status for o in report.outcomes] == ["error", "pass", "pass"]
    assert report.outcomes[0].summary == "no answer within 1.5 s"


def write_config(fake_api, tmp_path: Path, **ops) -> Path:
    import yaml

    path = tmp_path / "ops.yaml"
    path.write_text(yaml.safe_dump({"ops": fake_api.settings_ops(**ops)}))
    return path


def test_inv_checks_daily_json_against_the_fake(fake_api, make_db, tmp_path):
    healthy(fake_api)
    fake_api.sentry.add_issue("KeyError: 'draw'", count=5)
    fake_api.app.set("/health", status=503)
    db = make_db("app")
    result = inv("-f", str(write_config(fake_api, tmp_path)), "checks.daily", "--json",
                 env={**fake_api.env(), "DATABASE_URL": db}, home=tmp_path)
    doc = json.loads(result.stdout)
    assert {c["id"]: c["status"] for c in doc["checks"]} == {
        "sentry.errors": "warn", "render.service": "pass", "app.health": "fail", "backup.fresh": "pass",
        "db.size": "pass"}
    assert doc["status"] == "fail" and result.returncode == 1
    assert "app.health" in result.stderr and "Traceback" not in result.stderr
    for secret in [*fake_api.env().values(), db.split("@")[0]]:
        assert secret not in result.stdout + result.stderr


def test_inv_checks_daily_exit_0_when_only_warnings(fake_api, make_db, tmp_path):
    healthy(fake_api)
    fake_api.sentry.add_issue("a warning-level nuisance", count=1)
    result = inv("-f", str(write_config(fake_api, tmp_path)), "checks.daily",
                 env={**fake_api.env(), "DATABASE_URL": make_db("app")}, home=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "⚠️" in result.stdout and "overall: ⚠️ warn" in result.stdout


def test_notify_opens_one_issue_then_comments_on_it(fake_api, tmp_path):
    fake_api.app.set("/health", status=500)
    config = write_config(fake_api, tmp_path, checks={"timeout": 10})
    for _ in range(2):
        result = inv("-f", str(config), "checks.daily", "--notify", env=fake_api.env(), home=tmp_path)
        assert result.returncode == 1
    issues = [i for i in fake_api.github.issues if i["title"] == "Health check failed: daily"]
    assert len(issues) == 1
    assert {lab["name"] for lab in issues[0]["labels"]} == {"ops", "automated"}
    assert "| ❌ | `app.health` | fail |" in issues[0]["body"]
    assert len(fake_api.github.comments.get(issues[0]["number"], [])) == 1
    assert "opened #" in result.stderr or "commented on #" in result.stderr


def test_notify_stays_quiet_when_nothing_failed(fake_api, tmp_path):
    settings = Settings.from_dict(ops=fake_api.settings_ops(audit_log=str(tmp_path / "a.jsonl")), env=fake_api.env())
    report = checks.run_checklist(settings, "daily", ("app.health",))
    assert report.exit_code == 0
    assert fake_api.calls("POST", r"/issues") == []


# backup.prune

def prune_setup(fake_api) -> None:
    nightly_backups(fake_api, 20)
    fake_api.github.add_release("v1.0.0", created_at=NOW - 400 * DAY)
    fake_api.github.add_release("backup-manual-before-migration", created_at=NOW - 100 * DAY)


def test_prune_dry_run_lists_and_changes_nothing(fake_api, tmp_path):
    prune_setup(fake_api)
    result = inv("-f", str(write_config(fake_api, tmp_path)), "backup.prune", "--dry-run", env=fake_api.env(),
                 home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("would delete backup-") == 6
    assert "left alone, not named like a backup: backup-manual-before-migration, v1.0.0" in result.stdout
    assert [c for c in fake_api.requests if c.method != "GET"] == []


def test_prune_deletes_old_releases_and_their_tags_only(fake_api, tmp_path):
    prune_setup(fake_api)
    before = {r["tag_name"] for r in fake_api.github.releases}
    result = inv("-f", str(write_config(fake_api, tmp_path)), "backup.prune", "--keep-days", "14", "--keep-min", "7",
                 env=fake_api.env(), home=tmp_path)
    assert result.returncode == 0, result.stderr
    after = {r["tag_name"] for r in fake_api.github.releases}
    gone = before - after
    assert len(gone) == 6 and all(t.startswith("backup-2") for t in gone)
    assert {"v1.0.0", "backup-manual-before-migration"} <= after
    assert gone.isdisjoint(fake_api.github.tags)                       # tags deleted too
    assert len(fake_api.calls("DELETE", r"/git/refs/tags/backup-")) == 6
    audit_log = (tmp_path / "state" / "lottery-ops" / "audit.jsonl").read_text()
    assert '"action": "backup.prune"' in audit_log


def test_prune_keeps_the_newest_even_when_all_are_old(fake_api, tmp_path):
    nightly_backups(fake_api, 9, newest_hours=24 * 30)
    result = inv("-f", str(write_config(fake_api, tmp_path)), "backup.prune", "--keep-min", "7", env=fake_api.env(),
                 home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(fake_api.github.releases) == 7


def test_a_rate_limit_longer_than_the_check_allows_is_reported_not_waited_for(fake_api, tmp_path):
    nightly_backups(fake_api, 2)
    fake_api.rate_limit(r"/releases", kind="secondary", retry_after=5, times=None)
    started = time.monotonic()
    out = fake_one(fake_api, "backup.fresh", tmp_path, checks={"timeout": 6}, github={"max_wait": 60})
    assert time.monotonic() - started < 4
    assert out.status == "error" and "rate limit" in out.summary, out


def real_backup(url: str) -> bytes:
    """pg_dump with the nightly job's flags, gzip -9: what the nightly workflow publishes."""
    import gzip

    from ops import pg

    dump = subprocess.run(["pg_dump", "-w", "--no-owner", "--no-privileges", "--clean", "--if-exists"],
                          env=pg.tool_env(url, os.environ), capture_output=True, check=True, timeout=120).stdout
    return gzip.compress(dump, 9)


@pytest.mark.parametrize("damage, status", [(None, "pass"), ("no-footer", "fail")],
                         ids=["good-backup", "backup-cut-short"])
def test_run_restore_test_really_rehearses(damage, status, fake_api, make_db, staging_url, pg_server, tmp_path):
    import gzip

    source = make_db("src")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute('CREATE TABLE "Draw" (id int PRIMARY KEY, numbers int[]);'
                     'INSERT INTO "Draw" SELECT g, ARRAY[g, g + 1] FROM generate_series(1, 500) g')
    data = real_backup(source)
    if damage == "no-footer":
        text = gzip.decompress(data)
        data = gzip.compress(text[: text.index(b"-- PostgreSQL database dump complete")], 9)
    fake_api.github.add_backup(f"backup-{NOW:%Y%m%d_%H%M%S}", data, created_at=NOW)
    result = inv("-f", str(write_config(fake_api, tmp_path)), "checks.weekly", "--run-restore-test", "--json",
                 env={**fake_api.env(), "STAGING_DATABASE_URL": staging_url}, home=tmp_path, timeout=300)
    doc = json.loads(result.stdout)
    rehearsal = next(c for c in doc["checks"] if c["id"] == "backup.restore_test")
    assert rehearsal["status"] == status, rehearsal
    assert "restore.test of" in result.stderr        # the rehearsal's own report went to stderr, not into the JSON
    with psycopg.connect(pg_server.admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'ops_scratch_%'").fetchone() == (0,)
