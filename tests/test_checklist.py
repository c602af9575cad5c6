"""Pure checklist logic: statuses, renderers, the runner, each evaluator, and the prune selection."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from ops import checklist, evaluate, retention
from ops.checklist import Check, Outcome, Report
from ops.errors import ConfigError, ServiceError
from ops.retention import Backup

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=timezone.utc)


def ago(**kw: float) -> str:
    return (NOW - timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- statuses -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("statuses, worst, code", [
    ([], "pass", 0),
    (["pass"], "pass", 0),
    (["pass", "warn"], "warn", 0),
    (["warn", "error"], "error", 1),
    (["error", "fail", "warn"], "fail", 1),
    (["fail", "pass"], "fail", 1),
], ids=["empty", "pass", "warn-beats-pass", "error-beats-warn", "fail-beats-error", "fail-beats-pass"])
def test_worst_status_and_exit_code(statuses, worst, code):
    assert checklist.worst(statuses) == worst
    assert checklist.exit_code(worst) == code


def test_outcome_rejects_unknown_status():
    with pytest.raises(ValueError, match="unknown status"):
        Outcome("x", "ok", "fine")


# -- renderers ----------------------------------------------------------------------------------------------

OUTCOMES = [
    Outcome("sentry.errors", "warn", "2 unresolved issue(s)", ("3 events: KeyError https://sentry.io/i/1",)),
    Outcome("render.service", "pass", "api is up"),
    Outcome("backup.fresh", "fail", "newest backup is 30.0 h old"),
    Outcome("db.size", "error", "environment variable DATABASE_URL is not set", ("hint: export DATABASE_URL=...",)),
]


def test_json_has_exactly_the_contract_keys():
    doc = json.loads(checklist.to_json(OUTCOMES))
    assert set(doc) == {"checks", "status"}
    assert doc["status"] == "fail"
    assert [set(c) for c in doc["checks"]] == [{"id", "status", "summary", "details"}] * 4
    assert doc["checks"][0]["details"] == ["3 events: KeyError https://sentry.io/i/1"]


def test_table_shows_icon_id_status_and_evidence():
    text = checklist.render_table(OUTCOMES, "Daily checks", width=140)
    for icon, check_id in [("⚠️", "sentry.errors"), ("✅", "render.service"), ("❌", "backup.fresh"),
                           ("❓", "db.size")]:
        line = next(line for line in text.splitlines() if check_id in line)
        assert icon in line
    assert "hint: export DATABASE_URL" in text
    assert "overall" in text and "fail" in text.split("overall")[-1]


def test_markdown_report_is_a_table_then_evidence():
    chart = retention.size_chart([Backup("backup-20240601_030000", NOW, 1, "a.sql.gz", 100),
                                  Backup("backup-20240602_030000", NOW, 2, "b.sql.gz", 200)])
    outcomes = [*OUTCOMES, Outcome("backup.trend", "pass", "2 backups", tuple(chart))]
    md = checklist.render_markdown(Report("Weekly checks", tuple(outcomes), generated_at=NOW))
    assert md.startswith("## Weekly checks (2024-06-15 12:00 UTC)")
    assert "| ❌ | `backup.fresh` | fail | newest backup is 30.0 h old |" in md
    assert "- 3 events: KeyError https://sentry.io/i/1" in md
    fenced = md.split("### ✅ `backup.trend`")[1]
    assert fenced.strip().startswith("```") and "█" in fenced and fenced.strip().endswith("```")


def test_markdown_escapes_pipes_in_cells():
    md = checklist.render_markdown(Report("t", (Outcome("a.b", "pass", "x | y"),)))
    assert "x \\| y" in md


# -- runner -------------------------------------------------------------------------------------------------

def _fixed(status: str) -> Check:
    return Check(f"fixed.{status}", "t", lambda: Outcome(f"fixed.{status}", status, status))


def _raises(exc: BaseException) -> Check:
    def run() -> Outcome:
        raise exc
    return Check("raises", "t", run)


def test_runner_keeps_order_and_turns_exceptions_into_errors():
    checks = [
        _fixed("pass"),
        _raises(ConfigError("setting ops.sentry.org is not set", hint="add ops.sentry.org to invoke.yaml")),
        _fixed("warn"),
    ]
    out = checklist.run_checks(checks)
    assert [o.id for o in out] == ["fixed.pass", "raises", "fixed.warn"]
    assert out[1] == Outcome("raises", "error", "setting ops.sentry.org is not set",
                             ("hint: add ops.sentry.org to invoke.yaml",))


def test_runner_reports_a_bug_by_its_type():
    out = checklist.run_checks([_raises(KeyError("lastSeen"))])
    assert out[0].status == "error" and out[0].summary == "KeyError: 'lastSeen'"


def test_runner_redacts_reasons_and_evidence():
    url = "postgresql://app:s3cretpw@db.example.com/app"
    checks = [_raises(ServiceError(f"cannot connect to {url}")),
              Check("ok", "t", lambda: Outcome("ok", "pass", "fine", (f"token ghp_{'a' * 36}", url)))]
    out = checklist.run_checks(checks, secrets=("s3cretpw",))
    text = json.dumps([o.to_dict() for o in out])
    assert "s3cretpw" not in text and "ghp_" not in text
    assert "db.example.com" in text


def test_one_slow_check_costs_one_timeout_and_the_others_report():
    release = threading.Event()

    def slow() -> Outcome:
        release.wait(10)
        return Outcome("slow", "pass", "late")

    checks = [Check("slow", "t", slow, timeout=0.3), _fixed("pass"), _fixed("warn")]
    started = time.monotonic()
    out = checklist.run_checks(checks)
    elapsed = time.monotonic() - started
    release.set()
    assert [o.status for o in out] == ["error", "pass", "warn"]
    assert "no answer within 0.3 s" in out[0].summary
    assert elapsed < 5


def test_checks_run_concurrently():
    barrier = threading.Barrier(3, timeout=5)

    def meet(i: int) -> Check:
        return Check(f"c{i}", "t", lambda: (barrier.wait(), Outcome(f"c{i}", "pass", "met"))[1], timeout=5)

    assert [o.status for o in checklist.run_checks([meet(i) for i in range(3)])] == ["pass"] * 3


# -- backups: naming and prune selection ----------------------------------------------------------------------

def release(tag: str, hours_old: float, size: int | None = 1000, *, draft: bool = False, rid: int = 0) -> dict:
    name = tag.replace("backup-", "backup_") + ".sql.gz"
    assets = [{"name": name, "size": size, "state": "uploaded"}] if size else []
    return {"id": rid or abs(hash(tag)) % 10**6, "tag_name": tag, "created_at": ago(hours=hours_old),
            "html_url": f"https://github.com/o/r/releases/tag/{tag}", "draft": draft, "assets": assets}


def nightly(days: int, *, size: int = 1000, start_hours: float = 9) -> list[dict]:
    """`days` nightly releases, newest first, the newest `start_hours` old."""
    out = []
    for d in range(days):
        made = NOW - timedelta(hours=start_hours + 24 * d)
        out.append(release(f"backup-{made:%Y%m%d_%H%M%S}", start_hours + 24 * d, size, rid=d + 1))
    return out


def test_backups_from_releases_keeps_only_the_naming_and_sorts_newest_first():
    rels = [release("backup-20240610_030000", 24 * 5), release("v1.2.0", 1), release("backup-latest", 2),
            release("backup-20240614_030000", 33), release("backup-20241399_030000", 3),
            release("xbackup-20240612_030000", 4), release("backup-20240612_030000.bak", 4)]
    backups, ignored = retention.backups_from_releases(rels, "backup-")
    assert [b.tag for b in backups] == ["backup-20240614_030000", "backup-20240610_030000"]
    assert sorted(ignored) == sorted(["v1.2.0", "backup-latest", "backup-20241399_030000",
                                      "xbackup-20240612_030000", "backup-20240612_030000.bak"])
    assert backups[0].asset == "backup_20240614_030000.sql.gz" and backups[0].size == 1000


def test_a_release_without_created_at_is_dated_by_its_tag():
    rel = {"id": 1, "tag_name": "backup-20240601_030000", "assets": []}
    [b], _ = retention.backups_from_releases([rel], "backup-")
    assert b.created == datetime(2024, 6, 1, 3, tzinfo=timezone.utc) and b.size is None


def _tags(backups):
    return [b.tag for b in backups]


@pytest.mark.parametrize("days, keep_days, keep_min, deleted", [
    (20, 14, 7, 6),      # 20 nightly: the 6 older than 14 days go
    (14, 14, 7, 0),      # all inside the window
    (10, 3, 7, 3),       # window would delete 7, keep_min protects the newest 7
    (5, 0, 7, 0),        # keep-days 0, but only 5 exist: all protected
    (30, 0, 1, 29),      # everything but the newest
], ids=["older-than-window", "all-within-window", "keep-min-protects", "fewer-than-keep-min", "keep-only-newest"])
def test_prune_selection(days, keep_days, keep_min, deleted):
    backups, _ = retention.backups_from_releases(nightly(days), "backup-")
    plan = retention.select_prunable(backups, now=NOW, keep_days=keep_days, keep_min=keep_min)
    assert len(plan.delete) == deleted
    assert set(_tags(plan.delete)).isdisjoint(_tags(backups[:keep_min]))
    assert all(b.created < NOW - timedelta(days=keep_days) for b in plan.delete)
    assert len(plan.delete) + len(plan.keep) == days


def test_prune_never_counts_a_draft_toward_keep_min():
    rels = [release("backup-20240615_030000", 9, draft=True)] + nightly(3, start_hours=24 * 20)
    backups, _ = retention.backups_from_releases(rels, "backup-")
    plan = retention.select_prunable(backups, now=NOW, keep_days=14, keep_min=2)
    assert len(plan.delete) == 1 and not plan.delete[0].draft   # the 3rd-newest published one


@pytest.mark.parametrize("keep_days, keep_min", [(14, 0), (-1, 7)], ids=["keep-min-zero", "negative-days"])
def test_prune_refuses_a_policy_that_could_delete_everything(keep_days, keep_min):
    with pytest.raises(ConfigError):
        retention.select_prunable([], now=NOW, keep_days=keep_days, keep_min=keep_min)


# -- backup checks --------------------------------------------------------------------------------------------

def _backups(rels):
    return retention.backups_from_releases(rels, "backup-")[0]


@pytest.mark.parametrize("rels, status, words", [
    (nightly(8), "pass", "9.0 h old"),
    ([], "fail", "no backup release"),
    (nightly(8, start_hours=27), "fail", "27.0 h old"),
    ([release("backup-20240615_030000", 9, size=None)] + nightly(3, start_hours=33), "fail", "no backup asset"),
    ([release("backup-20240615_030000", 9, size=400)] + nightly(5, start_hours=33), "fail", "40% of the usual"),
    ([release("backup-20240615_030000", 9, size=700)] + nightly(5, start_hours=33), "warn", "smaller than usual"),
    ([release("backup-20240615_030000", 9, size=5000)] + nightly(5, start_hours=33), "pass", "backup-20240615"),
    (nightly(1), "pass", "9.0 h old"),
    ([release("backup-20240615_030000", 2, draft=True)] + nightly(2, start_hours=30), "fail", "30.0 h old"),
], ids=["fresh", "none", "too-old", "no-asset", "shrank-by-more-than-half", "shrank-a-little", "grew",
        "only-one", "draft-ignored"])
def test_backup_fresh(rels, status, words):
    out = retention.backup_fresh(_backups(rels), now=NOW)
    assert (out.id, out.status) == ("backup.fresh", status)
    assert words in out.summary


def test_backup_fresh_age_limit_is_configurable():
    assert retention.backup_fresh(_backups(nightly(3, start_hours=30)), now=NOW, max_age_hours=48).status == "pass"


def test_backup_trend_draws_a_chart_oldest_first():
    rels = [release(f"backup-202406{d:02d}_030000", 24 * (15 - d), size=1000 + 100 * d, rid=d) for d in range(1, 8)]
    out = retention.backup_trend(_backups(rels))
    assert out.status == "pass" and "7 backups" in out.summary
    assert out.details[0].startswith("20240601_030000") and out.details[-1].startswith("20240607_030000")
    bars = [d.split("  ")[1].strip() for d in out.details]
    assert len(bars[-1]) >= len(bars[0]) and bars[-1].startswith("█" * 30)


@pytest.mark.parametrize("sizes, status", [
    ([1000, 1000, 400, 1000], "warn"),
    ([1000, 1100, 1200], "pass"),
    ([1000], "warn"),
], ids=["sharp-drop", "steady-growth", "single-backup"])
def test_backup_trend_statuses(sizes, status):
    rels = [release(f"backup-202406{i + 1:02d}_030000", 24 * (14 - i), size=s, rid=i + 1) for i, s in enumerate(sizes)]
    assert retention.backup_trend(_backups(rels)).status == status


@pytest.mark.parametrize("rels, status, words", [
    (nightly(10), "pass", "nothing to prune"),
    (nightly(20), "warn", "would delete 6"),
    (nightly(3), "warn", "fewer than 7"),
    ([], "warn", "no backup releases"),
], ids=["within-policy", "cleanup-not-running", "too-few", "none"])
def test_backup_retention(rels, status, words):
    backups, ignored = retention.backups_from_releases(rels + [release("v1.0", 500)], "backup-")
    out = retention.backup_retention(backups, ignored, now=NOW, keep_days=14, keep_min=7)
    assert (out.status, words in out.summary) == (status, True)
    if backups:
        assert any("not named like backups" in d for d in out.details)


# -- daily ------------------------------------------------------------------------------------------------

def issue(n: int, events: int, *, seen_hours: float = 1, status: str = "unresolved") -> dict:
    return {"id": str(n), "shortId": f"API-{n}", "title": f"Error {n}", "status": status, "count": str(events * 3),
            "userCount": 2, "lastSeen": ago(hours=seen_hours), "permalink": f"https://sentry.io/o/issues/{n}/",
            "stats": {"24h": [[0.0, events // 2], [3600.0, events - events // 2]]}}


@pytest.mark.parametrize("issues, status", [
    ([], "pass"),
    ([issue(1, 5)], "warn"),
    ([issue(i, 1) for i in range(10)], "fail"),
    ([issue(1, 2000)], "fail"),
    ([issue(1, 5, seen_hours=30)], "pass"),
    ([issue(1, 5, status="resolved")], "pass"),
], ids=["quiet", "one-issue", "ten-issues", "event-storm", "seen-yesterday", "resolved"])
def test_sentry_errors(issues, status):
    assert evaluate.sentry_errors(issues, now=NOW).status == status


def test_sentry_errors_lists_the_top_issues_by_events_with_links():
    out = evaluate.sentry_errors([issue(1, 5), issue(2, 50), issue(3, 20)], now=NOW, top=2)
    assert out.summary == "3 unresolved issue(s), 75 event(s) in the last 24 h"
    assert out.details == ("50 events, 2 users: Error 2 (API-2) https://sentry.io/o/issues/2/",
                           "20 events, 2 users: Error 3 (API-3) https://sentry.io/o/issues/3/")


def test_sentry_count_string_is_used_without_stats():
    out = evaluate.sentry_errors([{"id": "1", "title": "x", "count": "7", "lastSeen": ago(hours=1)}], now=NOW)
    assert "7 event(s)" in out.summary


SERVICE = {"id": "srv-1", "name": "api", "suspended": "not_suspended", "suspenders": [],
           "dashboardUrl": "https://dashboard.render.com/web/srv-1",
           "serviceDetails": {"maintenanceMode": {"enabled": False, "uri": ""}}}


def deploy(status: str, n: int = 1) -> dict:
    return {"cursor": f"c{n}", "deploy": {"id": f"dep-{n}", "status": status, "finishedAt": ago(hours=n),
                                          "commit": {"message": f"commit {n}\nbody"}}}


@pytest.mark.parametrize("service, deploys, status, words", [
    (SERVICE, [deploy("live")], "pass", "latest deploy live"),
    (None, [], "fail", "not found"),
    ({**SERVICE, "suspended": "suspended", "suspenders": ["billing"]}, [], "fail", "suspended (by billing)"),
    (SERVICE, [deploy("build_failed", 1), deploy("live", 2)], "fail", "build_failed"),
    (SERVICE, [deploy("update_in_progress", 1), deploy("live", 2)], "warn", "in progress"),
    (SERVICE, [], "warn", "no deploys"),
    ({**SERVICE, "serviceDetails": {"maintenanceMode": {"enabled": True}}}, [deploy("live")], "warn", "maintenance"),
], ids=["live", "missing", "suspended", "deploy-failed", "deploying", "never-deployed", "maintenance-mode"])
def test_render_service(service, deploys, status, words):
    out = evaluate.render_service(service, deploys, service_id="srv-1")
    assert out.status == status and words in out.summary


def test_render_failed_deploy_names_the_one_still_serving():
    out = evaluate.render_service(SERVICE, [deploy("build_failed", 1), deploy("live", 2)], service_id="srv-1")
    assert "still serving the previous deploy dep-2" in out.details


@pytest.mark.parametrize("probes, status", [
    ([{"url": "https://a/health", "status": 200, "ms": 120}], "pass"),
    ([{"url": "https://a/health", "status": 200, "ms": 120}, {"url": "https://a/api", "status": 503, "ms": 40}],
     "fail"),
    ([{"url": "https://a/health", "status": None, "ms": 5000, "error": "timed out"}], "fail"),
    ([{"url": "https://a/health", "status": 200, "ms": 3500}], "warn"),
    ([], "error"),
], ids=["healthy", "one-endpoint-503", "no-answer", "slow", "nothing-configured"])
def test_app_health(probes, status):
    assert evaluate.app_health(probes, warn_ms=2000).status == status


def test_app_health_shows_latency_per_endpoint():
    out = evaluate.app_health([{"url": "https://a/health", "status": 200, "ms": 123.4}])
    assert out.details == ("https://a/health: 200, 123 ms",)


@pytest.mark.parametrize("stats, previous, status, words", [
    ({"database": "app", "bytes": 50 * 2**20, "connections": 10, "max_connections": 100}, None, "pass",
     "first run"),
    ({"database": "app", "bytes": 60 * 2**20, "connections": 85, "max_connections": 100},
     {"bytes": 50 * 2**20, "at": ago(days=1)}, "warn", "+10.0 MiB since the previous run (24.0 h ago)"),
    ({"database": "app", "bytes": 40 * 2**20, "connections": 97, "max_connections": 100},
     {"bytes": 50 * 2**20, "at": ago(days=3)}, "fail", "-10.0 MiB since the previous run (3.0 days ago)"),
    ({"database": "app", "bytes": 600 * 2**20, "connections": 1, "max_connections": 100}, None, "warn",
     "over the warning level"),
], ids=["first-run", "connections-high", "connections-exhausted", "over-plan-size"])
def test_db_size(stats, previous, status, words):
    out = evaluate.db_size(stats, previous, now=NOW, warn_bytes=500 * 2**20)
    assert out.status == status
    assert any(words in d for d in out.details), out.details


# -- weekly -----------------------------------------------------------------------------------------------

def run(conclusion: str | None, n: int = 1, *, status: str = "completed", hours: float = 24) -> dict:
    return {"id": n, "run_number": n, "status": status, "conclusion": conclusion, "created_at": ago(hours=hours),
            "run_started_at": ago(hours=hours), "html_url": f"https://github.com/o/r/actions/runs/{n}"}


@pytest.mark.parametrize("runs, status", [
    ({"ci.yml": [run("success")], "backup.yml": [run("success")]}, "pass"),
    ({"ci.yml": [run("failure")], "backup.yml": [run("success")]}, "fail"),
    ({"ci.yml": [run(None, 2, status="in_progress"), run("success")]}, "pass"),
    ({"ci.yml": [run("cancelled")]}, "warn"),
    ({"ci.yml": []}, "warn"),
    ({"ci.yml": None}, "warn"),
    ({"ci.yml": [run("timed_out")], "x.yml": None}, "fail"),
    ({}, "warn"),
], ids=["all-green", "one-failed", "in-progress-uses-last-completed", "cancelled", "never-ran", "no-such-workflow",
        "timed-out", "none-configured"])
def test_actions_workflows(runs, status):
    assert evaluate.actions_workflows(runs).status == status


def test_actions_workflows_links_failures():
    out = evaluate.actions_workflows({"ci.yml": [run("failure", 7)]})
    assert out.summary == "1 of 1 workflow(s) failed"
    assert "https://github.com/o/r/actions/runs/7" in out.details[0]


@pytest.mark.parametrize("runs, status", [
    ([run("success", hours=30)], "pass"),
    ([run("failure")], "fail"),
    ([run("success", hours=24 * 10)], "warn"),
    ([], "fail"),
    (None, "fail"),
], ids=["passed-recently", "failed", "stale", "never-completed", "no-workflow"])
def test_restore_test_from_runs(runs, status):
    assert evaluate.restore_test_from_runs(runs, workflow="restore-test.yml", now=NOW).status == status


def alert(severity: str, n: int = 1, state: str = "open") -> dict:
    return {"number": n, "state": state, "html_url": f"https://github.com/o/r/security/dependabot/{n}",
            "dependency": {"package": {"ecosystem": "npm", "name": f"pkg{n}"}},
            "security_advisory": {"ghsa_id": f"GHSA-{n}", "severity": severity},
            "security_vulnerability": {"severity": severity}}


@pytest.mark.parametrize("alerts, status, summary", [
    ([], "pass", "0 open alert(s): none"),
    ([alert("low"), alert("medium", 2)], "warn", "2 open alert(s): 1 medium, 1 low"),
    ([alert("high"), alert("low", 2)], "fail", "2 open alert(s): 1 high, 1 low"),
    ([alert("critical")], "fail", "1 open alert(s): 1 critical"),
    ([alert("critical", state="dismissed")], "pass", "0 open alert(s): none"),
    (None, "warn", "Dependabot alerts are disabled for this repository"),
], ids=["none", "low-and-medium", "high", "critical", "dismissed-ignored", "disabled"])
def test_dependabot_alerts(alerts, status, summary):
    out = evaluate.dependabot_alerts(alerts)
    assert (out.status, out.summary) == (status, summary)


def test_dependabot_alerts_list_the_worst_first():
    out = evaluate.dependabot_alerts([alert("low", 1), alert("critical", 2)])
    assert out.details[0].startswith("critical: pkg2 GHSA-2")


# -- monthly ------------------------------------------------------------------------------------------------

def collab(login: str, role: str | None = None, **flags: bool) -> dict:
    return {"login": login, "role_name": role, "permissions": flags}


@pytest.mark.parametrize("c, perm", [
    (collab("a", "admin"), "admin"),
    (collab("a", "Write"), "write"),
    (collab("a", "custom-auditor", pull=True, triage=True), "triage"),
    (collab("a", None, pull=True, push=True, maintain=True), "maintain"),
    (collab("a", None), "read"),
], ids=["role-name", "role-name-case", "custom-role-falls-back-to-flags", "flags-only", "nothing"])
def test_permission_of(c, perm):
    assert evaluate.permission_of(c) == perm


EXPECTED = {"owner": "admin", "ci-bot": "write"}


@pytest.mark.parametrize("people, expected, status", [
    ([collab("owner", "admin"), collab("ci-bot", "write")], EXPECTED, "pass"),
    ([collab("owner", "admin"), collab("ci-bot", "read")], EXPECTED, "pass"),
    ([collab("owner", "admin"), collab("ci-bot", "admin")], EXPECTED, "fail"),
    ([collab("owner", "admin"), collab("stranger", "read")], EXPECTED, "fail"),
    ([collab("owner", "admin")], None, "warn"),
    ([collab("owner", "admin")], {"owner": "superuser"}, "error"),
], ids=["as-expected", "less-than-expected", "more-than-expected", "unexpected-person", "no-config",
        "bad-permission-in-config"])
def test_access_collaborators(people, expected, status):
    assert evaluate.access_collaborators(people, expected).status == status


def test_access_collaborators_without_config_says_what_to_add():
    out = evaluate.access_collaborators([collab("owner", "admin"), collab("bot", "write")], None)
    assert out.details[-1] == "hint: add to invoke.yaml: ops: {access: {expected: {bot: write, owner: admin}}}"


def role(name: str, superuser: bool = False, createrole: bool = False) -> dict:
    return {"name": name, "superuser": superuser, "createrole": createrole}


@pytest.mark.parametrize("roles, listed, status", [
    ([role("app"), role("report")], ["app", "report"], "pass"),
    ([role("app"), role("report")], ["app"], "warn"),
    ([role("app"), role("intruder", superuser=True)], ["app"], "fail"),
    ([role("app"), role("supabase_admin", superuser=True)], ["app"], "warn"),
    ([role("app"), role("report")], None, "pass"),
    ([role("app"), role("supabase_admin", superuser=True)], None, "warn"),
    ([role("app"), role("intruder", superuser=True)], None, "fail"),
    ([role("app", superuser=True)], None, "pass"),
    ([role("app"), role("intruder", superuser=True)], ["app", "intruder"], "pass"),
], ids=["all-listed", "unlisted-plain", "unlisted-superuser", "provider-superuser-unlisted", "no-list-no-super",
        "no-list-provider-super", "no-list-rogue-super", "connecting-role-is-super", "listed-superuser"])
def test_access_db_roles(roles, listed, status):
    out = evaluate.access_db_roles(roles, current_user="app", listed=listed, expected=["supabase_admin"])
    assert out.status == status


@pytest.mark.parametrize("secrets, status", [
    ([{"scope": "repository", "name": "A", "updated_at": ago(days=10)}], "pass"),
    ([{"scope": "repository", "name": "A", "updated_at": ago(days=91)},
      {"scope": "environment production", "name": "B", "updated_at": ago(days=200)}], "warn"),
    ([], "pass"),
], ids=["fresh", "two-stale", "no-secrets"])
def test_secrets_age(secrets, status):
    out = evaluate.secrets_age(secrets, now=NOW)
    assert out.status == status
    if status == "warn":
        assert out.details[0].startswith("environment production: B last updated 200.0 days ago")


def pull(n: int, days: float, login: str = "dependabot[bot]") -> dict:
    return {"number": n, "title": f"Bump x {n}", "user": {"login": login}, "created_at": ago(days=days),
            "html_url": f"https://github.com/o/r/pull/{n}"}


@pytest.mark.parametrize("pulls, status, summary", [
    ([pull(1, 3), pull(2, 12)], "pass", "2 open Dependabot pull request(s)"),
    ([pull(1, 3), pull(2, 45)], "warn", "1 of 2 Dependabot pull request(s) open for over 30 days"),
    ([pull(1, 100, login="alice")], "pass", "0 open Dependabot pull request(s)"),
], ids=["recent", "one-stale", "humans-ignored"])
def test_deps_updates(pulls, status, summary):
    out = evaluate.deps_updates(pulls, now=NOW)
    assert (out.status, out.summary) == (status, summary)


def test_prune_plan_lines_say_what_goes_what_stays_and_what_is_left_alone():
    backups, ignored = retention.backups_from_releases(nightly(16) + [release("v2.0", 24 * 400)], "backup-")
    plan = retention.select_prunable(backups, now=NOW, keep_days=14, keep_min=7)
    lines = retention.render_prune_plan(plan, ignored, now=NOW, dry_run=True)
    assert lines[:2] == ["would delete " + plan.delete[0].tag + " (14.4 days old, 1000 B)",
                         "would delete " + plan.delete[1].tag + " (15.4 days old, 1000 B)"]
    assert lines[2] == f"keeping 14 backup(s), newest {backups[0].tag}, oldest {backups[13].tag}"
    assert lines[3] == "left alone, not named like a backup: v2.0"
    empty = retention.select_prunable(backups[:3], now=NOW, keep_days=14, keep_min=7)
    assert retention.render_prune_plan(empty, [], now=NOW, dry_run=False)[0].startswith("nothing to delete")
