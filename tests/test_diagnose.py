"""ops.diagnose: evidence -> findings -> a verdict ordered by what to do first (pure, table-driven)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ops import diagnose, hosts
from ops.checklist import Outcome
from ops.diagnose import CRITICAL, INFO, OK, WARN, Finding

NOW = datetime(2024, 5, 1, 14, 30, tzinfo=timezone.utc)


def at(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def deploy(did: str, status: str, minutes_ago: float = 60) -> dict:
    return {"id": did, "status": status, "createdAt": at(minutes_ago), "finishedAt": at(minutes_ago - 1),
            "commit": {"id": "abc", "message": f"commit of {did}"}}


UP = [{"url": "https://app/health", "status": 200, "ms": 40}]
DOWN = [{"url": "https://app/health", "status": 503, "ms": 40, "error": "expected 200, got 503"}]
SERVICE = {"id": "srv-1", "name": "api", "suspended": "not_suspended"}


def headline(ev: dict) -> str:
    return diagnose.verdict(diagnose.app_down(ev, now=NOW)).headline


# -- rollback target ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("deploys, expected", [
    ([deploy("d3", "build_failed", 5), deploy("d2", "live", 60), deploy("d1", "deactivated", 120)], "d2"),
    ([deploy("d3", "update_in_progress", 5), deploy("d2", "live", 60)], "d2"),
    ([deploy("d3", "live", 5), deploy("d2", "deactivated", 60), deploy("d1", "deactivated", 120)], "d2"),
    ([deploy("d3", "live", 5), deploy("d2", "build_failed", 60), deploy("d1", "deactivated", 120)], "d1"),
    ([deploy("d3", "build_failed", 5), deploy("d2", "canceled", 30), deploy("d1", "deactivated", 120)], "d1"),
    ([deploy("d1", "live", 5)], None),
    ([], None),
    ([{"cursor": "c", "deploy": deploy("d2", "build_failed", 5)}, {"cursor": "c", "deploy": deploy("d1", "live")}],
     "d1"),
], ids=["failed->serving", "in-progress->serving", "live->previous", "skip-failed", "failed+canceled",
        "nothing-earlier", "no-deploys", "wrapped-list"])
def test_rollback_target(deploys, expected):
    target = diagnose.rollback_target(deploys)
    assert (target["id"] if target else None) == expected


# -- app-down verdicts ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ev, expected", [
    ({"probes": DOWN, "service": SERVICE, "deploys": [deploy("d2", "build_failed", 28), deploy("d1", "live", 90)]},
     "deploy failed at 14:03 UTC (d2: build_failed): roll back to d1 (inv emergency.rollback)"),
    ({"probes": DOWN, "service": SERVICE, "deploys": [deploy("d2", "live", 20), deploy("d1", "deactivated", 900)]},
     "the app broke after deploy d2 went live at 14:11 UTC (19 min ago): roll back to d1 (inv emergency.rollback)"),
    ({"probes": UP, "service": SERVICE, "deploys": [{**deploy("d2", "build_in_progress", 3), "finishedAt": None},
                                                    deploy("d1", "live")]},
     "deploy in progress since 14:27 UTC (d2: build_in_progress): wait for it, then run inv emergency.app-down "
     "again; roll back (inv emergency.rollback) if it fails"),
    ({"probes": DOWN, "service": {**SERVICE, "suspended": "suspended", "suspenders": ["billing"]}, "deploys": []},
     "the Render service is suspended (by billing): resume it in the Render dashboard (billing or a person "
     "suspended it)"),
    ({"probes": DOWN, "service": SERVICE, "deploys": [deploy("d1", "live", 600)],
      "db": {"ok": False, "error": "connection refused"}},
     "database unreachable: check Supabase status and DATABASE_URL (inv emergency.db)"),
    ({"probes": DOWN, "db": {"ok": False, "error": "FATAL:  sorry, too many clients already"}},
     "too many database connections: end idle sessions (inv emergency.db --terminate-idle 5), then restart the app "
     "(inv emergency.restart) to reset its pool"),
    ({"probes": DOWN, "service": SERVICE, "deploys": [deploy("d1", "live", 600)], "db": {"ok": True},
      "logs": ["12:00 GET /", "14:20 FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"]},
     "out of memory in the app's logs: restart (inv emergency.restart), then find the leak"),
    ({"probes": DOWN, "service": SERVICE, "deploys": [deploy("d1", "live", 600)], "db": {"ok": True}},
     "the app is failing and no cause was found here: read the Render logs, then restart (inv emergency.restart)"),
    ({"probes": UP, "service": SERVICE, "deploys": [deploy("d1", "live", 600)], "db": {"ok": True}, "sentry": []},
     "no problem found"),
    ({"probes": DOWN, "service": SERVICE, "deploys": [deploy("d1", "live", 600)], "db": {"ok": True},
      "logs": ["14:20 PrismaClientInitializationError: Can't reach database server at `db.x.supabase.co`:`5432`"]},
     "the app cannot reach its database (it answers from here): check Supabase status and the DATABASE_URL set on "
     "Render"),
], ids=["deploy-failed", "broke-after-deploy", "in-progress", "suspended", "db-unreachable", "too-many-connections",
        "oom", "unknown-cause", "all-clear", "app-cannot-reach-db"])
def test_app_down_headline(ev, expected):
    assert headline(ev) == expected


def test_a_failed_deploy_while_the_previous_still_serves_is_a_warning_not_an_outage():
    ev = {"probes": UP, "service": SERVICE, "deploys": [deploy("d2", "build_failed", 10), deploy("d1", "live", 90)],
          "db": {"ok": True}}
    found = diagnose.app_down(ev, now=NOW)
    assert [f.severity for f in found if f.area == "deploy"] == [WARN]
    assert "the previous deploy d1 still serves" in diagnose.verdict(found).headline


def test_suspension_outranks_the_database_and_sentry():
    ev = {"probes": DOWN, "service": {**SERVICE, "suspended": "suspended"}, "db": {"ok": False, "error": "x"},
          "sentry": [{"title": "boom", "count": "3", "lastSeen": at(5), "firstSeen": at(5)}]}
    areas = [f.area for f in diagnose.verdict(diagnose.app_down(ev, now=NOW)).findings]
    assert areas.index("render") < areas.index("database") < areas.index("sentry")


def test_sentry_counts_only_the_last_hour_and_names_the_noisiest():
    issues = [{"title": "quiet", "count": "2", "lastSeen": at(10), "firstSeen": at(3000)},
              {"title": "KeyError: 'jackpot'", "count": "90", "lastSeen": at(2), "firstSeen": at(20)},
              {"title": "yesterday", "count": "500", "lastSeen": at(600), "firstSeen": at(3000)}]
    (finding,) = [f for f in diagnose.app_down({"sentry": issues}, now=NOW) if f.area == "sentry"]
    assert finding.summary == "2 Sentry issue(s) in the last hour, 1 new"
    assert finding.action == "start with: KeyError: 'jackpot'"
    assert "yesterday" not in " ".join(finding.details)


def test_what_could_not_be_checked_is_listed_last():
    found = diagnose.verdict(diagnose.app_down({"probes": UP, "errors": {"render.service": "not configured: set "
                                                "ops.render.service_id"}}, now=NOW)).findings
    assert found[-1].severity in (INFO, OK) or found[-1].area == "render.service"
    assert any(f.summary == "could not check render.service" and "ops.render.service_id" in f.action for f in found)


def test_failed_deploy_workflow_is_shown_with_its_link():
    run = {"name": "CI", "status": "completed", "conclusion": "failure", "run_started_at": at(15),
           "html_url": "https://github.com/o/r/actions/runs/1"}
    (f,) = [f for f in diagnose.app_down({"workflow": run}, now=NOW) if f.area == "github"]
    assert f.severity == WARN and f.summary == "CI failure at 14:15 UTC" and f.action.endswith("/actions/runs/1")


# -- database -----------------------------------------------------------------------------------------------------
BASE = {"connections": 10, "max_connections": 100, "idle_in_transaction": [], "blocked": [], "longest_queries": [],
        "statements": [], "seq_scan_tables": []}


@pytest.mark.parametrize("changes, expected", [
    ({}, "no problem found"),
    ({"connections": 97}, "too many connections: 97/100 (97%): end idle-in-transaction sessions (--terminate-idle 5); "
                          "restart the app to reset its pool"),
    ({"idle_in_transaction": [{"pid": 11, "seconds": 900, "application_name": "api"}],
      "blocked": [{"pid": 12, "blocked_by": [11], "seconds": 45, "query": "UPDATE draws"}]},
     "1 session(s) blocked for up to 45 s by pid(s) 11: end the idle transaction(s) holding the locks: "
     "inv emergency.db --terminate-idle 15"),
    ({"idle_in_transaction": [{"pid": 7, "seconds": 20, "application_name": "api"}],
      "blocked": [{"pid": 12, "blocked_by": [7], "seconds": 10, "query": "UPDATE draws"}]},
     "1 session(s) blocked for up to 10 s by pid(s) 7: end the idle transaction(s) holding the locks: "
     "inv emergency.db --terminate-idle 0"),
    ({"blocked": [{"pid": 12, "blocked_by": [7], "seconds": 10, "query": "UPDATE draws"}]},
     "1 session(s) blocked for up to 10 s by pid(s) 7: if blocker 7 is stuck: SELECT pg_cancel_backend(pid) "
     "(pg_terminate_backend if that fails)"),
    ({"idle_in_transaction": [{"pid": 11, "seconds": 420, "application_name": "api"},
                              {"pid": 13, "seconds": 30, "application_name": "psql"}]},
     "1 session(s) idle in transaction, oldest 7 min (api): end them: inv emergency.db --terminate-idle 5"),
    ({"longest_queries": [{"pid": 5, "seconds": 1800, "query": "SELECT * FROM tickets"}]},
     "1 query(ies) running over 60 s, longest 30 min (pid 5): cancel it if it is not a migration: "
     "SELECT pg_cancel_backend(5)"),
    ({"error": "cannot connect: timeout"}, "database unreachable: check Supabase status and DATABASE_URL"),
    ({"supabase": {"project": {"status": "ACTIVE_HEALTHY"},
                   "services": [{"name": "db", "status": "UNHEALTHY", "error": "timeout"}]}},
     "Supabase services unhealthy: db UNHEALTHY: see status.supabase.com; the app cannot work until they recover"),
    ({"supabase": {"project": {"status": "RESTORING"}, "services": []}},
     "Supabase project is RESTORING: see the Supabase dashboard and status.supabase.com; wait or contact support"),
], ids=["healthy", "connections", "blocked-by-idle", "blocked-by-young-idle", "blocked-by-active", "idle", "long-query", "unreachable",
        "supabase-unhealthy", "supabase-restoring"])
def test_database_headline(changes, expected):
    assert diagnose.verdict(diagnose.database({**BASE, **changes})).headline == expected


def test_missing_pg_stat_statements_and_seq_scans_are_information():
    found = diagnose.database({**BASE, "statements": None, "seq_scan_tables": [
        {"table": "public.tickets", "seq_scan": 400, "idx_scan": 0, "rows": 20000}]})
    info = {f.area: f for f in found if f.severity == INFO}
    assert info["statements"].summary == "pg_stat_statements is not installed: slow statements are unknown"
    assert info["indexes"].summary == "public.tickets: 400 sequential vs 0 index scans over 20000 rows"
    assert diagnose.verdict(found).ok


# -- hosts --------------------------------------------------------------------------------------------------------
REPORT = """### ops-hosts disk
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda         264212084 238000000  26212084      91% /
/dev/vdb          10000000   1000000   9000000      10% /srv/data dir
### ops-hosts meminfo
MemTotal:        8000000 kB
MemFree:          100000 kB
MemAvailable:     400000 kB
### ops-hosts loadavg
9.50 4.00 2.00 3/300 12345
### ops-hosts cpus
4
### ops-hosts services
nginx active
worker failed
cron
"""


def test_parse_host_report():
    facts = hosts.parse_report(REPORT)
    assert [(d["mount"], d["used_pct"]) for d in facts["disks"]] == [("/", 91.0), ("/srv/data dir", 10.0)]
    assert facts["memory"] == {"total": 8000000 * 1024, "available": 400000 * 1024}
    assert facts["load"] == {"one": 9.5, "five": 4.0, "fifteen": 2.0, "cpus": 4}
    assert facts["services"] == {"nginx": "active", "worker": "failed", "cron": "unknown (systemd not answering)"}


def test_host_findings_and_outcome():
    outcome = hosts.outcome("web1", hosts.parse_report(REPORT))
    assert outcome.id == "hosts.web1" and outcome.status == "fail"
    assert outcome.summary == "disk 91% (/), memory 5% free, load 9.50/4 CPU, 1/3 services active"
    text = "\n".join(outcome.details)
    assert "web1: / is 91% full" in text and "web1: service worker is failed" in text
    assert "only 5% memory available" in text and "load 9.5 on 4 CPU(s)" in text
    relaxed = hosts.outcome("web1", {**hosts.parse_report(REPORT), "services": {}}, disk_fail=95, mem_warn=0.01,
                            load_per_cpu=10)
    assert relaxed.status == "warn" and relaxed.details == ("web1: / is 91% full (25.0 GiB free): free space: old logs, "
                                                            "caches, images (du -xh --max-depth=1 /)",)


def test_an_unreachable_host_is_an_error_outcome():
    outcome = hosts.outcome("db1", {"error": "cannot open an SSH connection", "hint": "check the host"})
    assert (outcome.status, outcome.details) == ("error", ("hint: check the host",))


# -- security -----------------------------------------------------------------------------------------------------
def test_security_verdict_rotation_list_oldest_first():
    ev = {"outcomes": [Outcome("access.collaborators", "pass", "2 collaborators, all as expected")],
          "secrets": [{"name": "RENDER_API_KEY", "updated_at": "2024-04-01T00:00:00Z", "scope": "repository"},
                      {"name": "DATABASE_URL", "updated_at": "2023-01-01T00:00:00Z", "environment": "production",
                       "scope": "environment production"}],
          "deploy_keys": [{"title": "ci", "read_only": True}],
          "clients": [{"client": "10.1.2.3", "count": 4, "usename": "app"}, {"client": "local", "count": 1}]}
    v = diagnose.verdict(diagnose.security(ev, now=NOW))
    assert v.headline == ("2 Actions secret(s) to rotate, oldest first: change each at its source, then "
                          "inv emergency.rotate-secret DATABASE_URL --env production")
    rotation = next(f for f in v.findings if f.area == "secrets")
    assert rotation.details[0].startswith("inv emergency.rotate-secret DATABASE_URL --env production")
    assert rotation.details[1].startswith("inv emergency.rotate-secret RENDER_API_KEY   # repository")
    assert [f.area for f in v.findings if f.area == "connections"] == ["connections"]


def test_security_unexpected_access_comes_first():
    ev = {"outcomes": [Outcome("access.collaborators", "fail", "1 unexpected access grant(s)", ("mallory has admin",)),
                       Outcome("access.db_roles", "error", "not configured: set DATABASE_URL")],
          "secrets": [{"name": "X", "updated_at": "2024-01-01T00:00:00Z"}],
          "deploy_keys": [{"title": "old laptop", "read_only": False}]}
    v = diagnose.verdict(diagnose.security(ev, now=NOW))
    assert v.headline == ("1 unexpected access grant(s): remove or downgrade them: GitHub Settings > Collaborators")
    assert [f.area for f in v.findings] == ["access.collaborators", "deploy-keys", "secrets", "access.db_roles"]


# -- verdict ordering -----------------------------------------------------------------------------------------------
def test_verdict_orders_by_severity_then_priority():
    found = [Finding(INFO, "a", "info"), Finding(WARN, "b", "warn", priority=1), Finding(CRITICAL, "c", "late", "x",
             priority=90), Finding(CRITICAL, "d", "early", "do this", priority=5), Finding(OK, "e", "fine")]
    v = diagnose.verdict(found)
    assert [f.area for f in v.findings] == ["d", "c", "b", "a", "e"]
    assert v.headline == "early: do this" and not v.ok
    assert v.render().splitlines()[0] == "VERDICT: early: do this"


@pytest.mark.parametrize("line, alarming", [
    ("Out of memory: Killed process 4242 (node)", True),
    ("FATAL: remaining connection slots are reserved for non-replication superuser connections", True),
    ("Error: connect ECONNREFUSED 10.0.0.5:5432", True),
    ("GET /api/draws 200 12ms", False),
    ("room for more memory optimisations", False),
])
def test_alarming_log_lines(line, alarming):
    assert diagnose.alarming(line) is alarming
