"""Pure: one evaluator per health check, over plain data shaped like the services' JSON answers.

Each function takes what the adapters gathered (lists and dicts as the APIs return them), thresholds and `now`,
and returns an `Outcome`. Nothing here does I/O, so every rule is table-tested in tests/test_checklist.py.
The backup checks (`backup.fresh`, `backup.trend`, `backup.retention`) live in ops/retention.py.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from .checklist import Outcome, worst
from .retention import human_age, human_size, parse_time

# -- daily ------------------------------------------------------------------------------------------------

def _events_24h(issue: Mapping[str, Any]) -> int:
    points = (issue.get("stats") or {}).get("24h")
    if points:
        return sum(int(n) for _, n in points)
    return int(issue.get("count") or 0)  # Sentry sends count as a string


def sentry_errors(issues: Sequence[Mapping[str, Any]], *, now: datetime, warn_issues: int = 1,
                  fail_issues: int = 10, warn_events: int = 100, fail_events: int = 1000, top: int = 5) -> Outcome:
    """`sentry.errors`: unresolved issues seen in the last 24 h, their events, the worst few with links."""
    since = now - timedelta(hours=24)
    recent = [i for i in issues if i.get("status", "unresolved") == "unresolved"
              and (not i.get("lastSeen") or parse_time(i["lastSeen"]) >= since)]
    events = sum(_events_24h(i) for i in recent)
    worst = sorted(recent, key=_events_24h, reverse=True)[:top]
    details = tuple(f"{_events_24h(i)} events, {i.get('userCount', 0)} users: {i.get('title', '?')} "
                    f"({i.get('shortId', i.get('id'))}) {i.get('permalink', '')}".rstrip() for i in worst)
    summary = f"{len(recent)} unresolved issue(s), {events} event(s) in the last 24 h"
    if len(recent) >= fail_issues or events >= fail_events:
        status = "fail"
    elif len(recent) >= warn_issues or events >= warn_events:
        status = "warn"
    else:
        status = "pass"
    return Outcome("sentry.errors", status, summary, details)


DEPLOY_FAILED = {"build_failed", "update_failed", "canceled", "pre_deploy_failed"}
DEPLOY_BUSY = {"created", "queued", "build_in_progress", "update_in_progress", "pre_deploy_in_progress"}


def _unwrap(items: Sequence[Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    """Render lists come as `[{"cursor": ..., key: {...}}]`; accept both wrapped and bare items."""
    return [item[key] if key in item and isinstance(item[key], Mapping) else item for item in items]


def render_service(service: Mapping[str, Any] | None, deploys: Sequence[Mapping[str, Any]], *,
                   service_id: str) -> Outcome:
    """`render.service`: the service exists, is not suspended, and its latest deploy is live."""
    if service is None:
        return Outcome("render.service", "fail", f"Render service {service_id} not found",
                       ("hint: check ops.render.service_id and that RENDER_API_KEY belongs to the right owner",))
    name = service.get("name", service_id)
    details = [service.get("dashboardUrl", "")]
    if service.get("suspended") == "suspended":
        by = ", ".join(service.get("suspenders") or []) or "unknown"
        return Outcome("render.service", "fail", f"{name} is suspended (by {by})", tuple(filter(None, details)))
    maintenance = bool(((service.get("serviceDetails") or {}).get("maintenanceMode") or {}).get("enabled"))
    if maintenance:
        details.append("maintenance mode is on")
    items = _unwrap(deploys, "deploy")
    if not items:
        return Outcome("render.service", "warn", f"{name} is running but has no deploys", tuple(filter(None, details)))
    latest = items[0]
    commit = (latest.get("commit") or {}).get("message", "").splitlines()[:1]
    details.insert(0, f"latest deploy {latest.get('id')}: {latest.get('status')}, "
                      f"{latest.get('finishedAt') or latest.get('createdAt') or '?'}"
                      + (f" ({commit[0]})" if commit else ""))
    status = latest.get("status")
    if status in DEPLOY_FAILED:
        live = next((d for d in items if d.get("status") == "live"), None)
        if live:
            details.append(f"still serving the previous deploy {live.get('id')}")
        return Outcome("render.service", "fail", f"{name}: latest deploy {status}", tuple(filter(None, details)))
    if status in DEPLOY_BUSY:
        return Outcome("render.service", "warn", f"{name}: a deploy is in progress ({status})",
                       tuple(filter(None, details)))
    if status != "live":
        return Outcome("render.service", "warn", f"{name}: latest deploy is {status}", tuple(filter(None, details)))
    if maintenance:
        return Outcome("render.service", "warn", f"{name}: latest deploy live, maintenance mode on",
                       tuple(filter(None, details)))
    return Outcome("render.service", "pass", f"{name} is up, latest deploy live", tuple(filter(None, details)))


def app_health(probes: Sequence[Mapping[str, Any]], *, warn_ms: float = 2000) -> Outcome:
    """`app.health`: each probe `{"url", "status": int|None, "ms": float, "error": str|None}` answered 200."""
    if not probes:
        return Outcome("app.health", "error", "nothing to probe", ("hint: set ops.app.health_url",))
    bad = [p for p in probes if p.get("status") != 200]
    slow = [p for p in probes if p.get("status") == 200 and float(p.get("ms") or 0) > warn_ms]
    details = tuple(f"{p['url']}: {p.get('status') or p.get('error') or 'no answer'}, {float(p.get('ms') or 0):.0f} ms"
                    for p in probes)
    if bad:
        return Outcome("app.health", "fail", f"{len(bad)} of {len(probes)} endpoint(s) not healthy", details)
    if slow:
        return Outcome("app.health", "warn", f"{len(slow)} endpoint(s) slower than {warn_ms:g} ms", details)
    top = max(float(p.get("ms") or 0) for p in probes)
    return Outcome("app.health", "pass", f"{len(probes)} endpoint(s) answer 200 (slowest {top:.0f} ms)", details)


def db_size(stats: Mapping[str, Any], previous: Mapping[str, Any] | None, *, now: datetime,
            warn_bytes: int = 0, conn_warn: float = 0.8, conn_fail: float = 0.95) -> Outcome:
    """`db.size`: size, change since the previous run, connections against max_connections.

    `stats` is `{"database", "bytes", "connections", "max_connections"}`; `previous` is what the last run
    stored (`{"bytes", "at"}`) or None. `warn_bytes` (0: off) is a plan limit worth warning about.
    """
    size, used, limit = int(stats["bytes"]), int(stats["connections"]), int(stats["max_connections"])
    share = used / limit if limit else 0.0
    summary = f"{stats.get('database', 'database')}: {human_size(size)}, {used}/{limit} connections ({share:.0%})"
    details = []
    if previous and previous.get("bytes") is not None:
        change = size - int(previous["bytes"])
        since = human_age(now - parse_time(previous["at"])) if previous.get("at") else "?"
        details.append(f"{'+' if change >= 0 else '-'}{human_size(abs(change))} since the previous run ({since} ago)")
    else:
        details.append("first run: no previous size to compare with")
    status = "pass"
    if warn_bytes and size >= warn_bytes:
        status = "warn"
        details.append(f"size is over the warning level {human_size(warn_bytes)}")
    if share >= conn_fail:
        status = "fail"
    elif share >= conn_warn:
        status = "warn" if status == "pass" else status
    return Outcome("db.size", status, summary, tuple(details))


# -- weekly -----------------------------------------------------------------------------------------------

_RUN_FAILED = {"failure", "timed_out", "startup_failure", "action_required"}


def _latest_completed(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((r for r in runs if r.get("status") == "completed"), None)


def actions_workflows(runs_by_workflow: Mapping[str, Sequence[Mapping[str, Any]] | None]) -> Outcome:
    """`actions.workflows`: the latest completed run of each workflow succeeded. None means no such workflow."""
    statuses, details = [], []
    for name, runs in runs_by_workflow.items():
        if runs is None:
            statuses.append("warn")
            details.append(f"{name}: no such workflow (remove it from ops.checks.workflows, or add it)")
            continue
        run = _latest_completed(runs)
        if run is None:
            statuses.append("warn")
            details.append(f"{name}: no completed run yet")
            continue
        conclusion = run.get("conclusion")
        when = run.get("run_started_at") or run.get("created_at") or "?"
        line = f"{name}: {conclusion} ({when})"
        if conclusion in _RUN_FAILED:
            statuses.append("fail")
            line += f" {run.get('html_url', '')}"
        elif conclusion != "success":
            statuses.append("warn")
        else:
            statuses.append("pass")
        details.append(line.rstrip())
    status = worst(statuses)
    failed = statuses.count("fail")
    summary = (f"{failed} of {len(statuses)} workflow(s) failed" if failed
               else f"{statuses.count('pass')} of {len(statuses)} workflow(s) succeeded")
    return Outcome("actions.workflows", status if statuses else "warn",
                   summary if statuses else "no workflows configured (ops.checks.workflows)", tuple(details))


def restore_test_from_runs(runs: Sequence[Mapping[str, Any]] | None, *, workflow: str, now: datetime,
                           max_age_days: float = 8) -> Outcome:
    """`backup.restore_test` from the rehearsal workflow's runs: the last one passed, and recently."""
    if runs is None:
        return Outcome("backup.restore_test", "fail", f"no restore rehearsal workflow {workflow}",
                       ("hint: ship examples/workflows/restore-test.yml, or run with --run-restore-test",))
    run = _latest_completed(runs)
    if run is None:
        return Outcome("backup.restore_test", "fail", f"{workflow} has never completed a run",
                       ("hint: run it by hand, or run this check with --run-restore-test",))
    when = parse_time(run.get("run_started_at") or run["created_at"])
    details = (f"{workflow} run {run.get('run_number', run.get('id'))}: {run.get('conclusion')}, "
               f"{human_age(now - when)} ago", str(run.get("html_url", "")))
    if run.get("conclusion") != "success":
        return Outcome("backup.restore_test", "fail",
                       f"the last restore rehearsal did not pass ({run.get('conclusion')})",
                       tuple(filter(None, details)))
    if now - when > timedelta(days=max_age_days):
        return Outcome("backup.restore_test", "warn", f"the last restore rehearsal passed {human_age(now - when)} ago",
                       tuple(filter(None, details)))
    return Outcome("backup.restore_test", "pass", "the last restore rehearsal passed", tuple(filter(None, details)))


_SEVERITIES = ("critical", "high", "medium", "low")


def _severity(alert: Mapping[str, Any]) -> str:
    adv = alert.get("security_advisory") or {}
    vuln = alert.get("security_vulnerability") or {}
    return str(vuln.get("severity") or adv.get("severity") or "unknown").lower()


def dependabot_alerts(alerts: Sequence[Mapping[str, Any]] | None) -> Outcome:
    """`dependabot.alerts`: open alerts by severity; any critical or high fails. None: alerts disabled."""
    if alerts is None:
        return Outcome("dependabot.alerts", "warn", "Dependabot alerts are disabled for this repository",
                       ("hint: enable them in the repository's Settings > Code security",))
    opened = [a for a in alerts if a.get("state", "open") == "open"]
    counts = Counter(_severity(a) for a in opened)
    by = ", ".join(f"{counts[s]} {s}" for s in (*_SEVERITIES, "unknown") if counts[s]) or "none"
    order = {s: i for i, s in enumerate(_SEVERITIES)}
    details = tuple(
        f"{_severity(a)}: {((a.get('dependency') or {}).get('package') or {}).get('name', '?')} "
        f"{(a.get('security_advisory') or {}).get('ghsa_id', '')} {a.get('html_url', '')}".rstrip()
        for a in sorted(opened, key=lambda a: order.get(_severity(a), 9)))
    status = "fail" if counts["critical"] or counts["high"] else "warn" if opened else "pass"
    return Outcome("dependabot.alerts", status, f"{len(opened)} open alert(s): {by}", details)


# -- monthly ----------------------------------------------------------------------------------------------

PERMISSIONS = ("read", "triage", "write", "maintain", "admin")   # lowest first
_FLAG_TO_ROLE = {"pull": "read", "triage": "triage", "push": "write", "maintain": "maintain", "admin": "admin"}


def permission_of(collaborator: Mapping[str, Any]) -> str:
    """The highest base permission: `role_name` when it is a base role, else from the `permissions` flags."""
    role = str(collaborator.get("role_name") or "").lower()
    if role in PERMISSIONS:
        return role
    flags = collaborator.get("permissions") or {}
    held = [_FLAG_TO_ROLE[f] for f, on in flags.items() if on and f in _FLAG_TO_ROLE]
    return max(held, key=PERMISSIONS.index, default="read")


def access_collaborators(collaborators: Sequence[Mapping[str, Any]], expected: Mapping[str, str] | None) -> Outcome:
    """`access.collaborators`: nobody unexpected, nobody above the permission `ops.access.expected` gives them."""
    actual = {str(c["login"]): permission_of(c) for c in collaborators}
    listing = tuple(f"{login}: {perm}" for login, perm in sorted(actual.items()))
    if not expected:
        snippet = ", ".join(f"{login}: {perm}" for login, perm in sorted(actual.items()))
        return Outcome("access.collaborators", "warn", f"{len(actual)} collaborator(s); ops.access.expected is not set",
                       (*listing, f"hint: add to invoke.yaml: ops: {{access: {{expected: {{{snippet}}}}}}}"))
    bad_values = {login: perm for login, perm in expected.items() if str(perm).lower() not in PERMISSIONS}
    if bad_values:
        return Outcome("access.collaborators", "error", "ops.access.expected has unknown permissions",
                       tuple(f"{login}: {perm!r} (use one of {', '.join(reversed(PERMISSIONS))})"
                             for login, perm in bad_values.items()))
    problems = []
    for login, perm in sorted(actual.items()):
        allowed = expected.get(login)
        if allowed is None:
            problems.append(f"{login} has {perm} but is not in ops.access.expected")
        elif PERMISSIONS.index(perm) > PERMISSIONS.index(str(allowed).lower()):
            problems.append(f"{login} has {perm}, more than the expected {allowed}")
    notes = [f"{login} is expected but is not a collaborator" for login in sorted(set(expected) - set(actual))]
    if problems:
        return Outcome("access.collaborators", "fail", f"{len(problems)} unexpected access grant(s)",
                       (*problems, *notes))
    return Outcome("access.collaborators", "pass", f"{len(actual)} collaborator(s), all as expected",
                   (*listing, *notes))


def access_db_roles(roles: Sequence[Mapping[str, Any]], *, current_user: str, listed: Sequence[str] | None,
                    expected: Sequence[str] = ()) -> Outcome:
    """`access.db_roles`: login roles (`{"name", "superuser", "createrole"}`) compared with `ops.access.db_roles`.

    Pass when each is listed (or, with no list, when no login role but the connecting one is superuser); warn
    listing the others; fail only for a superuser that is neither listed nor expected (the connecting role and
    the provider's own roles, `ops.access.provider_roles`).
    """
    def describe(r: Mapping[str, Any]) -> str:
        flags = [f for f in ("superuser", "createrole") if r.get(f)]
        return f"{r['name']}" + (f" ({', '.join(flags)})" if flags else "")

    known = set(listed or ()) | {current_user}
    trusted = set(expected) | {current_user}
    if listed:
        others = [r for r in roles if r["name"] not in known]
    else:
        others = [r for r in roles if r["name"] != current_user and r.get("superuser")]
    rogue = [r for r in others if r.get("superuser") and r["name"] not in trusted]
    listing = tuple(describe(r) for r in roles)
    hint = () if listed else ("hint: list the roles you expect in ops.access.db_roles",)
    if rogue:
        return Outcome("access.db_roles", "fail",
                       f"unexpected superuser login role(s): {', '.join(r['name'] for r in rogue)}", (*listing, *hint))
    if others:
        what = "not in ops.access.db_roles" if listed else "superuser besides the connecting role"
        return Outcome("access.db_roles", "warn", f"{len(others)} login role(s) {what}: "
                       + ", ".join(describe(r) for r in others), (*listing, *hint))
    return Outcome("access.db_roles", "pass", f"{len(roles)} login role(s), all expected", (*listing, *hint))


def secrets_age(secrets: Sequence[Mapping[str, Any]], *, now: datetime, max_days: float = 90) -> Outcome:
    """`secrets.age`: Actions secrets (`{"scope", "name", "updated_at"}`) not rotated for more than `max_days`."""
    old = [s for s in secrets if now - parse_time(s["updated_at"]) > timedelta(days=max_days)]
    details = tuple(f"{s['scope']}: {s['name']} last updated {human_age(now - parse_time(s['updated_at']))} ago"
                    for s in sorted(old, key=lambda s: s["updated_at"]))
    if old:
        return Outcome("secrets.age", "warn", f"{len(old)} of {len(secrets)} secret(s) older than {max_days:g} days",
                       (*details, "hint: rotate them, then update the Actions secret"))
    return Outcome("secrets.age", "pass", f"{len(secrets)} secret(s), none older than {max_days:g} days", ())


def deps_updates(pulls: Sequence[Mapping[str, Any]], *, now: datetime, max_days: float = 30) -> Outcome:
    """`deps.updates`: open Dependabot pull requests and their age; any older than `max_days` is a warn."""
    bot = [p for p in pulls if ((p.get("user") or {}).get("login") or "") == "dependabot[bot]"]
    ages = {p["number"]: now - parse_time(p["created_at"]) for p in bot}
    details = tuple(f"#{p['number']} {p.get('title', '')} ({human_age(ages[p['number']])} old) {p.get('html_url', '')}"
                    .rstrip() for p in sorted(bot, key=lambda p: ages[p["number"]], reverse=True))
    stale = [n for n, age in ages.items() if age > timedelta(days=max_days)]
    if stale:
        return Outcome("deps.updates", "warn",
                       f"{len(stale)} of {len(bot)} Dependabot pull request(s) open for over {max_days:g} days",
                       details)
    return Outcome("deps.updates", "pass", f"{len(bot)} open Dependabot pull request(s)", details)
