"""Pure: map what the incident recipes found to a verdict, ordered by what to do first.

The runbook's "Emergency Response Procedures" are lists of places to look; its "common issues" say what each
finding means. Here each gatherer's evidence (plain dicts, shaped like the services' answers) becomes `Finding`s:
what was seen, and the one thing to do about it. `verdict()` sorts them, most urgent first, and its headline is
what a tired person should do now:

    deploy failed at 14:02 UTC: roll back (inv emergency.rollback)
    database unreachable: check Supabase status and DATABASE_URL
    out of memory: restart (inv emergency.restart)

Only the stdlib and other pure modules are imported; everything is table-tested in tests/test_diagnose.py.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

# Render's deploy states (the checks' evaluator owns the classification; reuse it, don't copy it)
from .evaluate import DEPLOY_BUSY, DEPLOY_FAILED
from .retention import human_age, parse_time

CRITICAL, WARN, INFO, OK = "critical", "warn", "info", "ok"
_SEVERITY_RANK = {CRITICAL: 0, WARN: 1, INFO: 2, OK: 3}
ICONS = {CRITICAL: "❌", WARN: "⚠️", INFO: "ℹ️", OK: "✅"}


@dataclass(frozen=True)
class Finding:
    """One thing seen, and what to do about it. Lower `priority` goes first within a severity."""

    severity: str
    area: str
    summary: str
    action: str = ""
    priority: int = 50
    details: tuple[str, ...] = ()

    def line(self) -> str:
        return f"{self.summary}: {self.action}" if self.action else self.summary


@dataclass(frozen=True)
class Verdict:
    findings: tuple[Finding, ...]
    headline: str
    ok: bool = field(default=False)

    def render(self) -> str:
        """The verdict block: the headline, then every finding in the order to act on them."""
        lines = [f"VERDICT: {self.headline}"]
        for n, f in enumerate(self.findings, 1):
            lines.append(f"  {n}. {ICONS[f.severity]} {f.line()}")
            lines += [f"       {d}" for d in f.details]
        return "\n".join(lines)


def verdict(findings: Iterable[Finding], *, all_clear: str = "no problem found") -> Verdict:
    ordered = tuple(sorted(findings, key=lambda f: (_SEVERITY_RANK[f.severity], f.priority)))
    urgent = [f for f in ordered if f.severity in (CRITICAL, WARN)]
    unchecked = [f.area for f in ordered if f.summary.startswith("could not check")]
    if not urgent and unchecked:
        return Verdict(ordered, f"{all_clear} in what could be checked; could not check {', '.join(unchecked)}")
    if not urgent:
        return Verdict(ordered, all_clear, ok=True)
    return Verdict(ordered, urgent[0].line(), ok=False)


def hhmm(value: str | None, now: datetime) -> str:
    """'2024-05-01T14:02:11.5Z' -> '14:02 UTC' (with the date when it is not the day of `now`, in UTC)."""
    if not value:
        return "?"
    try:
        when = parse_time(value).astimezone(timezone.utc)
    except ValueError:
        return value
    same_day = when.date() == now.astimezone(timezone.utc).date()
    return when.strftime("%H:%M UTC") if same_day else when.strftime("%Y-%m-%d %H:%M UTC")


def _unwrap(items: Sequence[Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    return [i[key] if isinstance(i.get(key), Mapping) else i for i in items]


# -- app-down ------------------------------------------------------------------------------------------------------
def rollback_target(deploys: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The deploy to go back to (deploys newest first): when the newest deploy failed or is still in progress, the
    one still serving (live); when the newest is live (and suspected bad), the newest deactivated one before it."""
    items = _unwrap(deploys, "deploy")
    if not items:
        return None
    newest = items[0]
    if newest.get("status") in DEPLOY_FAILED | DEPLOY_BUSY:
        return next((d for d in items[1:] if d.get("status") == "live"), None) or \
            next((d for d in items[1:] if d.get("status") == "deactivated"), None)
    if newest.get("status") == "live":
        return next((d for d in items[1:] if d.get("status") == "deactivated"), None)
    return next((d for d in items if d.get("status") == "live"), None)


_OOM = re.compile(r"out of memory|\boom\b|oomkill|heap out of memory|memory limit|exceeded memory|killed process|"
                  r"cannot allocate memory|ran out of memory", re.IGNORECASE)
_DB_DOWN = re.compile(r"ECONNREFUSED \S+:(5432|6543)\b|can't reach database server|\bP1001\b|could not connect to server|"
                      r"connection terminated unexpectedly|ENOTFOUND \S*(supabase|postgres|pooler)", re.IGNORECASE)
_TOO_MANY = re.compile(r"too many connections|remaining connection slots are reserved|too many clients",
                       re.IGNORECASE)


def _healthy(probes: Sequence[Mapping[str, Any]]) -> bool | None:
    if not probes:
        return None
    return all(p.get("status") == 200 for p in probes)


def app_down(ev: Mapping[str, Any], *, now: datetime, recent_deploy: timedelta = timedelta(hours=2)) -> list[Finding]:
    """Findings for `inv emergency.app-down`. `ev` holds what could be gathered; a missing key was not checked:

    probes: [{"url", "status": int|None, "ms", "error", "body"}]   service: Render service dict or None
    deploys: Render deploys, newest first                          db: {"ok": bool, "error": str}
    sentry: Sentry issues (lastSeen filtered to the window here)   workflow: latest deploy workflow run or None
    logs: [str] Render log lines                                   errors: {source: message} for what failed
    """
    out: list[Finding] = []
    probes = ev.get("probes") or []
    healthy = _healthy(probes)
    bad = [p for p in probes if p.get("status") != 200]
    if healthy is False:
        out.append(Finding(CRITICAL, "app", f"{len(bad)} of {len(probes)} endpoint(s) failing", "", priority=90,
                           details=tuple(f"{p['url']}: {p.get('status') or p.get('error') or 'no answer'}"
                                         for p in bad)))
    out += _render_findings(ev, healthy, now, recent_deploy)
    db = ev.get("db")
    if db is not None and not db.get("ok"):
        error = str(db.get("error") or "")
        if _TOO_MANY.search(error):
            out.append(Finding(CRITICAL, "database", "too many database connections",
                               "end idle sessions (inv emergency.db --terminate-idle 5), then restart the app "
                               "(inv emergency.restart) to reset its pool", priority=30, details=(error[:200],)))
        else:
            out.append(Finding(CRITICAL, "database", "database unreachable",
                               "check Supabase status and DATABASE_URL (inv emergency.db)", priority=20,
                               details=(error[:200],) if error else ()))
    oom = [line for line in ev.get("logs") or [] if _OOM.search(line)]
    if oom:
        out.append(Finding(CRITICAL if healthy is not True else WARN, "memory", "out of memory in the app's logs",
                           "restart (inv emergency.restart), then find the leak", priority=25,
                           details=tuple(line[:160] for line in oom[-3:])))
    db_down = [line for line in ev.get("logs") or [] if _DB_DOWN.search(line)]
    if db_down and not (db is not None and not db.get("ok")):
        out.append(Finding(CRITICAL if healthy is not True else WARN, "database",
                           "the app cannot reach its database" + (" (it answers from here)" if db else ""),
                           "check Supabase status and the DATABASE_URL set on Render", priority=21,
                           details=tuple(line[:160] for line in db_down[-2:])))
    too_many = [line for line in ev.get("logs") or [] if _TOO_MANY.search(line)]
    if too_many and not (db is not None and not db.get("ok") and _TOO_MANY.search(str(db.get("error")))):
        out.append(Finding(WARN, "database", "the app hits the connection limit",
                           "inv emergency.db to see who holds connections", priority=35,
                           details=tuple(line[:160] for line in too_many[-2:])))
    out += _sentry_findings(ev.get("sentry"), now)
    out += _workflow_findings(ev.get("workflow"), now)
    for source, message in (ev.get("errors") or {}).items():
        out.append(Finding(INFO, source, f"could not check {source}", str(message).splitlines()[0][:200], priority=95))
    if healthy is False and not [f for f in out if f.severity == CRITICAL and f.area != "app"]:
        out.append(Finding(CRITICAL, "app", "the app is failing and no cause was found here",
                           "read the Render logs, then restart (inv emergency.restart)", priority=60))
    if healthy is True and not [f for f in out if f.severity in (CRITICAL, WARN)]:
        out.append(Finding(OK, "app", f"all {len(probes)} endpoint(s) answer 200"))
    return out


def _render_findings(ev: Mapping[str, Any], healthy: bool | None, now: datetime,
                     recent_deploy: timedelta) -> list[Finding]:
    if "service" not in ev:
        return []
    service = ev["service"]
    if service is None:
        return [Finding(CRITICAL, "render", "the Render service was not found",
                        "check ops.render.service_id and RENDER_API_KEY", priority=15)]
    if service.get("suspended") == "suspended":
        by = ", ".join(service.get("suspenders") or []) or "unknown"
        return [Finding(CRITICAL, "render", f"the Render service is suspended (by {by})",
                        "resume it in the Render dashboard (billing or a person suspended it)", priority=5)]
    deploys = _unwrap(ev.get("deploys") or [], "deploy")
    if not deploys:
        return []
    newest = deploys[0]
    status, when = newest.get("status"), newest.get("finishedAt") or newest.get("updatedAt") or newest.get("createdAt")
    target = rollback_target(deploys)
    to = f" to {target['id']}" if target else ""
    if status in DEPLOY_FAILED:
        still = next((d for d in deploys[1:] if d.get("status") == "live"), None)
        if healthy is False or still is None:
            return [Finding(CRITICAL, "deploy", f"deploy failed at {hhmm(when, now)} ({newest.get('id')}: {status})",
                            f"roll back{to} (inv emergency.rollback)", priority=10)]
        return [Finding(WARN, "deploy", f"deploy failed at {hhmm(when, now)} ({newest.get('id')}: {status}); "
                        f"the previous deploy {still.get('id')} still serves",
                        f"fix the build, or roll back{to} (inv emergency.rollback)", priority=40)]
    if status in DEPLOY_BUSY:
        started = newest.get("startedAt") or newest.get("createdAt")
        return [Finding(WARN, "deploy", f"deploy in progress since {hhmm(started, now)} ({newest.get('id')}: {status})",
                        "wait for it, then run inv emergency.app-down again; roll back "
                        "(inv emergency.rollback) if it fails", priority=12)]
    if status == "live" and healthy is False and when:
        try:
            age = now - parse_time(when)
        except ValueError:
            age = None
        if age is not None and age <= recent_deploy:
            return [Finding(CRITICAL, "deploy", f"the app broke after deploy {newest.get('id')} went live at "
                            f"{hhmm(when, now)} ({_secs(age.total_seconds())} ago)", f"roll back{to} (inv emergency.rollback)",
                            priority=11)]
    return []


def _sentry_findings(issues: Sequence[Mapping[str, Any]] | None, now: datetime,
                     window: timedelta = timedelta(hours=1)) -> list[Finding]:
    if issues is None:
        return []
    recent = [i for i in issues if i.get("lastSeen") and now - parse_time(i["lastSeen"]) <= window]
    if not recent:
        return [Finding(OK, "sentry", "no Sentry issues seen in the last hour")]
    new = [i for i in recent if i.get("firstSeen") and now - parse_time(i["firstSeen"]) <= window]
    top = sorted(recent, key=lambda i: int(i.get("count") or 0), reverse=True)[:3]
    details = tuple(f"{i.get('count', '?')} events: {i.get('title', '?')} {i.get('permalink', '')}".rstrip()
                    for i in top)
    what = f"{len(recent)} Sentry issue(s) in the last hour" + (f", {len(new)} new" if new else "")
    return [Finding(WARN, "sentry", what, f"start with: {top[0].get('title', '?')[:80]}", priority=50,
                    details=details)]


def _workflow_findings(run: Mapping[str, Any] | None, now: datetime) -> list[Finding]:
    if not run:
        return []
    name = run.get("name") or "deploy workflow"
    when = hhmm(run.get("run_started_at") or run.get("created_at"), now)
    if run.get("status") != "completed":
        return [Finding(INFO, "github", f"{name} is {run.get('status')} (started {when})", "", priority=70)]
    if run.get("conclusion") not in ("success", "skipped", "neutral"):
        return [Finding(WARN, "github", f"{name} {run.get('conclusion')} at {when}",
                        f"read its log: {run.get('html_url', '')}".strip(), priority=45)]
    return [Finding(INFO, "github", f"{name} succeeded at {when}", "", priority=80)]


# -- emergency.db --------------------------------------------------------------------------------------------------
def database(d: Mapping[str, Any], *, idle_minutes: float = 5, long_seconds: float = 60,
             conn_warn: float = 0.8, conn_fail: float = 0.95) -> list[Finding]:
    """Findings for `inv emergency.db` from `pgdiag.diagnose()` output (plus optional `supabase` health)."""
    out: list[Finding] = []
    out += supabase(d.get("supabase"))
    if d.get("error"):
        return out + [Finding(CRITICAL, "database", "database unreachable",
                              "check Supabase status and DATABASE_URL", priority=20, details=(str(d["error"])[:200],))]
    used, limit = int(d.get("connections") or 0), int(d.get("max_connections") or 0)
    share = used / limit if limit else 0.0
    if share >= conn_warn:
        out.append(Finding(CRITICAL if share >= conn_fail else WARN, "connections",
                           f"too many connections: {used}/{limit} ({share:.0%})",
                           "end idle-in-transaction sessions (--terminate-idle 5); restart the app to reset its pool",
                           priority=30))
    idle = [s for s in d.get("idle_in_transaction") or [] if float(s.get("seconds") or 0) >= idle_minutes * 60]
    blocking_pids = {p for b in d.get("blocked") or [] for p in b.get("blocked_by") or []}
    idle_blockers = [s for s in d.get("idle_in_transaction") or [] if s.get("pid") in blocking_pids]
    if d.get("blocked"):
        blocked = d["blocked"]
        longest = max(float(b.get("seconds") or 0) for b in blocked)
        if idle_blockers:  # pg_cancel_backend does nothing to an idle session: it must be ended
            youngest = int(min(float(s.get("seconds") or 0) for s in idle_blockers) // 60)
            action = f"end the idle transaction(s) holding the locks: inv emergency.db --terminate-idle {youngest}"
        else:
            pids = ", ".join(str(p) for p in sorted(blocking_pids))
            action = f"if blocker {pids} is stuck: SELECT pg_cancel_backend(pid) (pg_terminate_backend if that fails)"
        out.append(Finding(CRITICAL if longest >= 30 else WARN, "locks",
                           f"{len(blocked)} session(s) blocked for up to {_secs(longest)} by pid(s) "
                           f"{', '.join(str(p) for p in sorted(blocking_pids))}", action, priority=25,
                           details=tuple(f"pid {b['pid']} waits on {b.get('blocked_by')}: {b.get('query', '')[:100]}"
                                         for b in blocked[:5])))
    if idle:
        oldest = max(float(s.get("seconds") or 0) for s in idle)
        apps = sorted({s.get("application_name") or s.get("usename") or "?" for s in idle})
        out.append(Finding(WARN, "sessions", f"{len(idle)} session(s) idle in transaction, oldest {_secs(oldest)} "
                           f"({', '.join(apps)})", f"end them: inv emergency.db --terminate-idle {int(idle_minutes)}",
                           priority=35))
    long = [q for q in d.get("longest_queries") or [] if float(q.get("seconds") or 0) >= long_seconds]
    if long:
        q = long[0]
        out.append(Finding(WARN, "queries", f"{len(long)} query(ies) running over {_secs(long_seconds)}, "
                           f"longest {_secs(float(q['seconds']))} (pid {q['pid']})",
                           f"cancel it if it is not a migration: SELECT pg_cancel_backend({q['pid']})", priority=40,
                           details=tuple(f"pid {x['pid']} {_secs(float(x['seconds']))}: {x.get('query', '')[:100]}"
                                         for x in long[:3])))
    if d.get("statements") is None:
        out.append(Finding(INFO, "statements", "pg_stat_statements is not installed: slow statements are unknown",
                           "CREATE EXTENSION pg_stat_statements (Supabase: Database > Extensions)", priority=80))
    for t in (d.get("seq_scan_tables") or [])[:3]:
        out.append(Finding(INFO, "indexes", f"{t['table']}: {t['seq_scan']} sequential vs {t['idx_scan']} index "
                           f"scans over {t['rows']} rows", "a missing index? check its WHERE/JOIN columns",
                           priority=70))
    if not [f for f in out if f.severity in (CRITICAL, WARN)]:
        out.append(Finding(OK, "database", f"database answers; {used}/{limit} connections, no locks or stuck sessions"))
    return out


def supabase(health: Mapping[str, Any] | None) -> list[Finding]:
    """Findings from the Supabase project status and health (`{"project": {...}, "services": [...]}`)."""
    if not health:
        return []
    out = []
    project = health.get("project") or {}
    status = project.get("status")
    if status and status != "ACTIVE_HEALTHY":
        out.append(Finding(CRITICAL, "supabase", f"Supabase project is {status}",
                           "see the Supabase dashboard and status.supabase.com; wait or contact support", priority=8))
    sick = [s for s in health.get("services") or [] if s.get("status") not in ("ACTIVE_HEALTHY", None)]
    if sick:
        out.append(Finding(CRITICAL, "supabase", "Supabase services unhealthy: "
                           + ", ".join(f"{s.get('name')} {s.get('status')}" for s in sick),
                           "see status.supabase.com; the app cannot work until they recover", priority=9,
                           details=tuple(str(s.get("error"))[:160] for s in sick if s.get("error"))))
    if (health.get("readonly") or {}).get("enabled"):
        out.append(Finding(CRITICAL, "supabase", "the database is in read-only mode (disk nearly full?)",
                           "free or add disk in the Supabase dashboard", priority=7))
    return out


def _secs(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- hosts ---------------------------------------------------------------------------------------------------------
def host(name: str, facts: Mapping[str, Any], *, disk_warn: float = 80, disk_fail: float = 90,
         mem_warn: float = 0.10, load_per_cpu: float = 2.0) -> list[Finding]:
    """Findings for one host from `hosts.parse_report()` facts (disk, memory, load, services)."""
    out: list[Finding] = []
    if facts.get("error"):
        return [Finding(CRITICAL, name, f"{name}: unreachable over SSH", str(facts["error"])[:200], priority=10)]
    for fs in facts.get("disks") or []:
        pct = float(fs["used_pct"])
        if pct >= disk_warn:
            out.append(Finding(CRITICAL if pct >= disk_fail else WARN, name,
                               f"{name}: {fs['mount']} is {pct:.0f}% full ({fs['avail_h']} free)",
                               "free space: old logs, caches, images (du -xh --max-depth=1 " + fs["mount"] + ")",
                               priority=20))
    mem = facts.get("memory")
    if mem and mem.get("total") and mem["available"] / mem["total"] < mem_warn:
        out.append(Finding(WARN, name, f"{name}: only {mem['available'] / mem['total']:.0%} memory available",
                           "find the biggest process (ps aux --sort=-rss | head) and restart it", priority=30))
    load = facts.get("load")
    if load and load.get("cpus") and load["one"] > load_per_cpu * load["cpus"]:
        out.append(Finding(WARN, name, f"{name}: load {load['one']:.1f} on {load['cpus']} CPU(s)",
                           "see what runs: top -o %CPU", priority=40))
    for svc, state in (facts.get("services") or {}).items():
        if state != "active":
            out.append(Finding(CRITICAL, name, f"{name}: service {svc} is {state}",
                               f"journalctl -u {svc} -n 50, then systemctl restart {svc}", priority=15))
    return out


def host_status(findings: Sequence[Finding]) -> str:
    """Checklist status for one host's findings."""
    if any(f.severity == CRITICAL for f in findings):
        return "fail"
    return "warn" if any(f.severity == WARN for f in findings) else "pass"


def alarming(line: str) -> bool:
    """Pure: does a log line say out of memory, too many connections or database unreachable?"""
    return bool(_OOM.search(line) or _TOO_MANY.search(line) or _DB_DOWN.search(line))


# -- emergency.security --------------------------------------------------------------------------------------------
_SECURITY_ACTIONS = {
    "access.collaborators": "remove or downgrade them: GitHub Settings > Collaborators",
    "access.db_roles": "check who uses them, then ALTER ROLE ... NOSUPERUSER or DROP ROLE",
    "secrets.age": "rotate them (below)",
}


def security(ev: Mapping[str, Any], *, now: datetime) -> list[Finding]:
    """Findings for `inv emergency.security`. `ev`: outcomes (checklist Outcomes of the access checks),
    secrets [{"scope", "environment", "name", "updated_at"}], deploy_keys [...], clients [{"client", "usename",
    "count"}] (connections by source address)."""
    out: list[Finding] = []
    for o in ev.get("outcomes") or []:
        if o.status in ("fail", "warn"):
            out.append(Finding(CRITICAL if o.status == "fail" else WARN, o.id, o.summary,
                               _SECURITY_ACTIONS.get(o.id, ""), priority=20 if o.status == "fail" else 45,
                               details=tuple(d for d in o.details if not d.startswith("hint:"))[:6]))
        elif o.status == "error":
            out.append(Finding(INFO, o.id, f"could not check {o.id}", o.summary.splitlines()[0][:160], priority=95))
    writers = [k for k in ev.get("deploy_keys") or [] if not k.get("read_only")]
    if writers:
        out.append(Finding(WARN, "deploy-keys", f"{len(writers)} deploy key(s) can push: "
                           + ", ".join(str(k.get("title")) for k in writers),
                           "make them read-only or delete them (Settings > Deploy keys)", priority=30))
    secrets = sorted(ev.get("secrets") or [], key=lambda s: s.get("updated_at") or "")
    if secrets:
        first = secrets[0]
        out.append(Finding(WARN, "secrets", f"{len(secrets)} Actions secret(s) to rotate, oldest first",
                           "change each at its source, then " + rotate_command(first), priority=50,
                           details=tuple(f"{rotate_command(s)}   # {s.get('scope', 'repository')}, updated "
                                         f"{_age(s.get('updated_at'), now)} ago" for s in secrets)))
    remote = [c for c in ev.get("clients") or [] if c.get("client") not in ("local", "127.0.0.1", "::1")]
    if remote:
        out.append(Finding(INFO, "connections", f"database connections from {len(remote)} address(es)",
                           "anything you do not recognise: revoke that role's password", priority=70,
                           details=tuple(f"{c['client']}: {c['count']} as {c.get('usename')} "
                                         f"({c.get('application_name', '?')})" for c in remote[:10])))
    return out


def rotate_command(secret: Mapping[str, Any]) -> str:
    env = secret.get("environment")
    return f"inv emergency.rotate-secret {secret['name']}" + (f" --env {env}" if env else "")


def _age(value: str | None, now: datetime) -> str:
    try:
        return human_age(now - parse_time(value)) if value else "?"
    except ValueError:
        return "?"
