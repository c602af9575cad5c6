"""Incident recipes (runbook: Emergency Response Procedures), part of the `emergency` collection.

Diagnoses look everywhere at once and end with a verdict, most urgent first:
    inv emergency.app-down      the app, Render, the database, Sentry, the deploy workflow, Render's logs
    inv emergency.db            Supabase health, connections, locks, stuck sessions, slow statements, sizes
    inv emergency.security      secrets to rotate, collaborators, deploy keys, database roles and connections
Actions (each shows its plan, asks for confirmation unless --yes, and supports --dry-run, which is enforced where
the effect happens: the HTTP clients and the database layer refuse to change anything):
    inv emergency.rollback      redeploy the last good deploy through Render's API
    inv emergency.restart       restart the Render service (the runbook's answer to "out of memory")
    inv emergency.db --terminate-idle N     end sessions idle in a transaction for N minutes
    inv emergency.rotate-secret NAME        set an Actions secret from stdin (sealed box, as GitHub requires)
    inv emergency.block-ip IP [--unblock]   Cloudflare IP Access Rules and/or the hosts' firewalls
    inv emergency.escalate --title TEXT     open a GitHub issue (production, urgent) with the latest diagnosis

Every diagnosis is also saved (redacted) under the state directory, for `escalate`.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from . import checklist, diagnose
from .config import Settings
from .errors import ConfigError, OpsError, ServiceError
from .tasking import task

def _cfg(settings: Settings, key: str) -> Any:
    """ops.incident.<key>; the defaults are in ops.config.DEFAULTS."""
    return settings.require(f"incident.{key}") if key != "recheck_timeout" else settings.get("incident.recheck_timeout", 0)


def _say(*lines: str) -> None:
    print(*lines, sep="\n", file=sys.stderr)


def confirm(question: str, *, yes: bool, tty: bool = False) -> None:
    """Ask on stdin (or on the terminal when stdin carries data); anything but y/yes stops with nothing changed."""
    if yes:
        return
    stream = sys.stdin
    if tty:
        try:
            stream = open("/dev/tty", encoding="utf-8")
        except OSError:
            raise OpsError(f"{question}: no terminal to ask on, and stdin carries the value",
                           hint="run it again with --yes once you are sure") from None
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = stream.readline()
    if answer.strip().lower() not in ("y", "yes"):
        raise OpsError("not confirmed: nothing was changed", hint="answer y to go ahead, or pass --yes")


def save_diagnosis(settings: Settings, recipe: str, text: str, now: datetime) -> Path:
    """Keep the latest output of each diagnosis (redacted, mode 0600) for `escalate`."""
    from .redact import redact_text

    folder = settings.state_dir / "diagnosis"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{recipe}.md"
    path.write_text(f"<!-- {recipe} {now.isoformat(timespec='seconds')} -->\n" + redact_text(text, settings.secrets),
                    encoding="utf-8")
    path.chmod(0o600)
    return path


def _report(title: str, now: datetime, outcomes: list[checklist.Outcome], verdict: diagnose.Verdict,
            sections: list[tuple[str, list[str]]] = ()) -> str:
    parts = [f"{title} at {now:%Y-%m-%d %H:%M} UTC"]
    if outcomes:
        parts.append(checklist.render_table(outcomes).rstrip())
    parts += [heading + ("\n" + "\n".join(f"  {line}" for line in lines) if lines else "")
              for heading, lines in sections]
    parts.append(verdict.render())
    return "\n\n".join(parts) + "\n"


def _run(settings: Settings, checks: list[tuple[str, Callable[[], checklist.Outcome]]]) -> list[checklist.Outcome]:
    timeout = float(_cfg(settings, "timeout"))
    return checklist.run_checks([checklist.Check(cid, cid, fn, timeout=timeout) for cid, fn in checks],
                                secrets=settings.secrets)


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


# -- app-down: gatherers, each fills `ev` and returns an outcome (errors become `error` outcomes) -------------------
def _app(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    from . import evaluate, gather
    from .clients.app import App

    gather.need(settings, ["app.health_url"])
    app = App.from_settings(settings)
    probes = [app.probe(url) for url in [app.health_url, *app.endpoints]]
    ev["probes"] = [{"url": p.url, "status": p.status, "ms": p.latency_ms, "error": p.error, "body": p.excerpt}
                    for p in probes]
    o = evaluate.app_health(ev["probes"], warn_ms=float(settings.get("checks.app.warn_ms", 2000)))
    bodies = tuple(f"{p.url} body: {p.excerpt[:120]}" for p in probes if p.excerpt and not p.ok)
    return checklist.Outcome(o.id, o.status, o.summary, o.details + bodies)


def _render(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    from . import evaluate, gather
    from .clients.render import Render

    gather.need(settings, ["render.service_id"], ["RENDER_API_KEY"])
    render = Render.from_settings(settings)
    try:
        ev["service"] = render.get_service()
    except OpsError as exc:
        if _status(exc) != 404:
            raise
        ev["service"] = None
        return evaluate.render_service(None, [], service_id=settings.get("render.service_id"))
    ev["deploys"] = render.deploys(limit=10)
    return evaluate.render_service(ev["service"], ev["deploys"], service_id=ev["service"].get("id", ""))


def _logs(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    from . import gather
    from .clients.render import Render

    gather.need(settings, ["render.service_id"], ["RENDER_API_KEY"])
    entries = Render.from_settings(settings).logs(limit=50)
    ev["logs"] = [f"{e.get('timestamp', '')[:19]} {e.get('message', '')}" for e in reversed(entries)]
    alarming = [line for line in ev["logs"] if diagnose.alarming(line)]
    shown = (alarming or ev["logs"])[-6:]
    return checklist.Outcome("render.logs", "warn" if alarming else "pass",
                             f"{len(ev['logs'])} recent line(s)" + (f", {len(alarming)} alarming" if alarming else ""),
                             tuple(line[:160] for line in shown))


def _database(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    import time

    from . import gather, pg

    gather.need(settings, env=["DATABASE_URL"])
    url = str(settings.env_var("DATABASE_URL"))
    started = time.perf_counter()
    try:
        with pg.connect(url, connect_timeout=5, application_name="lottery-ops app-down") as conn:
            conn.execute("SELECT 1")
    except ServiceError as exc:
        ev["db"] = {"ok": False, "error": exc.message}
        return checklist.Outcome("db.reachable", "fail", "database unreachable from here",
                                 (exc.message, f"hint: {exc.hint}"))
    ms = (time.perf_counter() - started) * 1000
    ev["db"] = {"ok": True, "ms": ms}
    return checklist.Outcome("db.reachable", "pass", f"database answers ({ms:.0f} ms)", (_where(url),))


def _where(url: str) -> str:
    """host:port/dbname of a database URL: enough to recognise it, nothing secret (the URL as a whole is)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        p = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - psycopg.ProgrammingError; the connection worked, so this is unlikely
        return "(DATABASE_URL)"
    return f"{p.get('host') or 'local socket'}:{p.get('port') or 5432}/{p.get('dbname') or '?'}"


def _sentry(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    from . import gather
    from .clients.sentry import Sentry

    gather.need(settings, ["sentry.org", "sentry.project"], ["SENTRY_AUTH_TOKEN"])
    issues = Sentry.from_settings(settings).issues("is:unresolved lastSeen:-1h", stats_period="24h")
    ev["sentry"] = [i.raw for i in issues]
    top = sorted(issues, key=lambda i: i.count, reverse=True)[:3]
    return checklist.Outcome("sentry.recent", "warn" if issues else "pass",
                             f"{len(issues)} unresolved issue(s) seen in the last hour",
                             tuple(f"{i.count} events: {i.title} {i.permalink}".rstrip() for i in top))


def _workflow(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    from . import gather
    from .clients.github import GitHub

    gather.need(settings, ["github.repo"])
    workflow = str(_cfg(settings, "deploy_workflow"))
    try:
        run = GitHub.from_settings(settings).latest_run(workflow)
    except OpsError as exc:
        if _status(exc) != 404:
            raise
        return checklist.Outcome("github.deploy", "warn", f"no workflow {workflow} in {settings.get('github.repo')}",
                                 ("hint: set ops.incident.deploy_workflow to the deploy workflow's file name",))
    ev["workflow"] = run
    if run is None:
        return checklist.Outcome("github.deploy", "warn", f"{workflow} has no runs")
    when = diagnose.hhmm(run.get("run_started_at") or run.get("created_at"), datetime.now(timezone.utc))
    state = run.get("conclusion") or run.get("status")
    status = "pass" if state in ("success", "skipped", "neutral") else (
        "warn" if run.get("status") != "completed" else "fail")
    return checklist.Outcome("github.deploy", status, f"{workflow}: {state} ({when})", (run.get("html_url", ""),))


def _supabase(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    from .clients.supabase import Supabase

    client = Supabase.from_settings(settings)
    health = {"project": client.project(), "services": client.health()}
    try:
        health["readonly"] = client.readonly()
    except OpsError:
        pass  # older projects or tokens without the scope: the rest still tells
    ev["supabase"] = health
    found = diagnose.supabase(health)
    status = "fail" if any(f.severity == diagnose.CRITICAL for f in found) else "pass"
    services = ", ".join(f"{s.get('name')} {s.get('status')}" for s in health["services"])
    return checklist.Outcome("supabase.health", status, f"project {health['project'].get('status')}", (services,))


def supabase_configured(settings: Settings) -> bool:
    return bool(settings.get("supabase.project_ref") and settings.env_var("SUPABASE_ACCESS_TOKEN"))


def app_down_report(settings: Settings, now: datetime | None = None) -> tuple[str, diagnose.Verdict]:
    """Gather everything at once, decide, and return the report text and the verdict."""
    now = now or datetime.now(timezone.utc)
    ev: dict[str, Any] = {}
    checks: list[tuple[str, Callable[[], checklist.Outcome]]] = [
        ("app.health", partial(_app, settings, ev)), ("render.service", partial(_render, settings, ev)),
        ("db.reachable", partial(_database, settings, ev)), ("sentry.recent", partial(_sentry, settings, ev)),
        ("github.deploy", partial(_workflow, settings, ev)), ("render.logs", partial(_logs, settings, ev))]
    if supabase_configured(settings):
        checks.append(("supabase.health", partial(_supabase, settings, ev)))
    outcomes = _run(settings, checks)
    evidence = dict(ev)
    evidence["errors"] = {o.id: o.summary for o in outcomes if o.status == "error"}
    findings = diagnose.app_down(evidence, now=now,
                                 recent_deploy=_hours(float(_cfg(settings, "recent_deploy_hours"))))
    findings += diagnose.supabase(evidence.get("supabase"))
    verdict = diagnose.verdict(findings, all_clear="no problem found: the app answers, the deploy is live")
    return _report("emergency.app-down", now, outcomes, verdict), verdict


def _hours(n: float) -> Any:
    from datetime import timedelta

    return timedelta(hours=n)


@task(name="app-down")
def app_down(c):
    """Diagnose a down or failing app: health, Render, database, Sentry, deploy workflow, logs; print a verdict."""
    settings = Settings.from_context(c)
    now = datetime.now(timezone.utc)
    text, verdict = app_down_report(settings, now)
    print(text, end="")
    save_diagnosis(settings, "app-down", text, now)
    if any(f.severity == diagnose.CRITICAL for f in verdict.findings):
        raise OpsError(f"app-down: {verdict.headline}")


# -- rollback and restart --------------------------------------------------------------------------------------------
def _recheck_deploy(render: Any, deploy_id: str, timeout: float) -> str:
    if timeout <= 0:
        return "not waiting for it (ops.incident.recheck_timeout is 0)"
    try:
        final = render.wait_until(lambda: render.deploy(deploy_id),
                                  lambda d: d.get("status") not in diagnose.DEPLOY_BUSY,
                                  timeout=timeout, interval=min(5.0, max(timeout / 20, 0.05)), what="the deploy")
    except ServiceError:
        return f"still in progress after {timeout:g} s: watch it in the Render dashboard, then inv emergency.app-down"
    return f"deploy {deploy_id} is {final.get('status')}"


@task(help={"deploy": "Deploy to go back to (dep-...; default: the last good one)",
            "dry_run": "Show the plan and what would be sent; send nothing",
            "yes": "Do not ask for confirmation"})
def rollback(c, deploy=None, dry_run=False, yes=False):
    """Roll the Render service back to the last good deploy (confirm first)."""
    from . import audit
    from .clients.base import DryRunRefused
    from .clients.render import Render

    settings = Settings.from_context(c)
    render = Render.from_settings(settings, dry_run=dry_run)
    deploys = render.deploys(limit=20)
    target = next((d for d in deploys if d.get("id") == deploy), None) if deploy else diagnose.rollback_target(deploys)
    if deploy and target is None:
        target = render.deploy(deploy)  # older than the last 20: ask for it directly (404 if it does not exist)
    if target is None:
        raise OpsError("no earlier good deploy to roll back to", hint="pick one in the Render dashboard: --deploy dep-...")
    current = deploys[0] if deploys else {}
    message = ((target.get("commit") or {}).get("message") or "").splitlines()[:1]
    print(f"rollback: {render.service_id} from {current.get('id', '?')} ({current.get('status', '?')}) "
          f"to {target['id']} ({target.get('status')}, {diagnose.hhmm(target.get('finishedAt') or target.get('createdAt'), datetime.now(timezone.utc))}"
          + (f": {message[0]}" if message else "") + ")")
    if dry_run:
        try:
            render.rollback(target["id"])
        except DryRunRefused as exc:
            print(exc.message)
        return
    confirm(f"Roll back {render.service_id} to {target['id']}?", yes=yes)
    new = render.rollback(target["id"]) or {}
    audit.record(settings, "emergency.rollback", target=render.service_id, outcome="requested",
                 deploy=target["id"], new_deploy=new.get("id"))
    print(f"rollback requested: new deploy {new.get('id', '?')}")
    if new.get("id"):
        print(_recheck_deploy(render, new["id"], float(_cfg(settings, "recheck_timeout"))))
    print("note: auto-deploy stays on after an API rollback; the next push redeploys the bad code unless you turn "
          "it off in the service's settings")


@task(help={"dry_run": "Show the plan and what would be sent; send nothing", "yes": "Do not ask for confirmation"})
def restart(c, dry_run=False, yes=False):
    """Restart the Render service (the runbook's answer to "out of memory"; confirm first)."""
    from . import audit
    from .clients.app import App
    from .clients.base import DryRunRefused
    from .clients.render import Render

    settings = Settings.from_context(c)
    render = Render.from_settings(settings, dry_run=dry_run)
    service = render.get_service()
    print(f"restart: {service.get('name', render.service_id)} ({render.service_id}); every instance restarts, "
          "requests in flight may fail")
    if dry_run:
        try:
            render.restart()
        except DryRunRefused as exc:
            print(exc.message)
        return
    confirm(f"Restart {service.get('name', render.service_id)}?", yes=yes)
    render.restart()
    audit.record(settings, "emergency.restart", target=render.service_id, outcome="requested")
    print("restart requested (Render restarts asynchronously)")
    app = App.from_settings(settings)
    timeout = float(_cfg(settings, "recheck_timeout"))
    if app.health_url and timeout > 0:
        probe = app.wait_healthy(timeout=timeout, interval=min(3.0, max(timeout / 20, 0.05)))
        print(f"health: {probe.status or probe.error} ({probe.latency_ms:.0f} ms)" if probe.ok
              else f"health still failing after {timeout:g} s: {probe.error}; run inv emergency.app-down")


# -- db ------------------------------------------------------------------------------------------------------------
def _db_sections(d: dict[str, Any]) -> list[tuple[str, list[str]]]:
    from .retention import human_size

    if d.get("error"):
        return [("Database", [str(d["error"])])]
    sb = d.get("supabase")
    sections = []
    if sb:
        lines = [f"project: {(sb.get('project') or {}).get('status', '?')}"]
        lines += [f"{s.get('name')}: {s.get('status')}" + (f" ({s.get('error')})" if s.get("error") else "")
                  for s in sb.get("services") or []]
        if sb.get("readonly") is not None:
            lines.append(f"read-only mode: {'ON' if sb['readonly'].get('enabled') else 'off'}")
        sections.append(("Supabase", lines))
    elif d.get("supabase_error"):
        sections.append(("Supabase", [d["supabase_error"]]))
    used, limit = d["connections"], d["max_connections"]
    sections.append((f"Connections: {used}/{limit} ({used / limit:.0%}), by state: "
                     + ", ".join(f"{k} {v}" for k, v in d["by_state"].items()),
                     [f"{c['count']:>4}  {c['usename']} from {c['client']} ({c['application_name']})"
                      + (f", {c['idle_in_transaction']} idle in transaction" if c["idle_in_transaction"] else "")
                      for c in d["by_client"]]))
    sections.append(("Idle in transaction" + ("" if d["idle_in_transaction"] else ": none"),
                     [f"pid {s['pid']} {diagnose._secs(s['seconds'])} {s['usename']}@{s['client']} "
                      f"({s['application_name'] or '?'}, {s['datname']}): {s['query'][:80]}"
                      for s in d["idle_in_transaction"]]))
    sections.append(("Longest-running queries" + ("" if d["longest_queries"] else ": none"),
                     [f"pid {q['pid']} {diagnose._secs(q['seconds'])} {q['usename']} {q['wait']}: {q['query'][:80]}"
                      for q in d["longest_queries"][:5]]))
    sections.append(("Blocked sessions" + ("" if d["blocked"] else ": none"),
                     [f"pid {b['pid']} waits {diagnose._secs(b['seconds'])} on {b['blocked_by']}: {b['query'][:80]}"
                      for b in d["blocked"]]
                     + [f"blocker pid {b['pid']} ({b['state']}, {b['usename']}@{b['client']}): {b['query'][:80]}"
                        for b in d["blocking"]]))
    statements = d["statements"]
    if statements is None:
        sections.append(("Slowest statements: pg_stat_statements is not installed", []))
    else:
        sections.append(("Slowest statements (pg_stat_statements, by mean time)",
                         [s["error"] if "error" in s else
                          f"{s['mean_ms']:.1f} ms x {s['calls']}: {' '.join(s['query'].split())[:90]}"
                          for s in statements[:5]]))
    sections.append(("Sequential-scan-heavy tables (missing-index candidates)" + (
        "" if d["seq_scan_tables"] else ": none"),
        [f"{t['table']}: {t['seq_scan']} seq / {t['idx_scan']} index scans, {t['rows']} rows"
         for t in d["seq_scan_tables"]]))
    sections.append((f"Size: {d['database']} {human_size(d['database_bytes'])}",
                     [f"{human_size(t['bytes']):>10}  {t['table']}" for t in d["largest_tables"][:5]]))
    return sections


def db_report(settings: Settings, url: str, now: datetime | None = None) -> tuple[str, diagnose.Verdict]:
    from . import guard, pgdiag

    now = now or datetime.now(timezone.utc)
    target = guard.judge(settings, url)
    d: dict[str, Any]
    try:
        d = pgdiag.diagnose(target.conninfo or url)
    except OpsError as exc:
        d = {"error": exc.message}
    if supabase_configured(settings):
        ev: dict[str, Any] = {}
        try:
            _supabase(settings, ev)
            d["supabase"] = ev["supabase"]
        except OpsError as exc:
            d["supabase_error"] = f"could not ask Supabase: {exc.message}"
    findings = diagnose.database(d, idle_minutes=float(_cfg(settings, "idle_minutes")),
                                 long_seconds=float(_cfg(settings, "long_query_seconds")))
    verdict = diagnose.verdict(findings, all_clear="no problem found in the database")
    kind = "production" if target.is_production else "not production"
    title = f"emergency.db: {target.redacted} ({kind})"
    return _report(title, now, [], verdict, _db_sections(d)), verdict


def _terminate_idle(settings: Settings, url: str, minutes: float, token: str | None, dry_run: bool,
                    yes: bool) -> None:
    from . import approval, audit, guard, pgdiag, tokens

    checker = None
    if token:
        # the approval binds the target (added by the checker, as the guard resolves it) and these minutes:
        # a token for --minutes 30 does not end sessions idle for 5
        checker = approval.approval_checker(settings, token, "terminate-idle",
                                            {"minutes": tokens.minutes_param(minutes)})
    target = guard.require(settings, url, action="emergency.terminate-idle", emergency=True, approval=checker)
    sessions = pgdiag.idle_sessions(target.conninfo, minutes)
    print(f"\nidle in transaction for {minutes:g}+ min on {target.redacted}: {len(sessions)}")
    for s in sessions:
        print(f"  pid {s['pid']} {diagnose._secs(s['seconds'])} {s['usename']}@{s['client']} "
              f"({s['application_name'] or '?'}): {s['query'][:80]}")
    if not sessions:
        return
    if dry_run:
        pgdiag.terminate_idle(target.conninfo, minutes, dry_run=True)
        print(f"dry run: would end {len(sessions)} session(s) (pg_terminate_backend); nothing was done")
        return
    confirm(f"End {len(sessions)} session(s) on {target.redacted}?", yes=yes)
    if checker is not None and checker.approval is not None:
        approval.consume(settings, checker.approval, target=target.redacted)
    ended = pgdiag.terminate_idle(target.conninfo, minutes, dry_run=False)
    done = [s["pid"] for s in ended if s["terminated"]]
    audit.record(settings, "emergency.terminate-idle", target=target.redacted, outcome="done", minutes=minutes,
                 pids=done, production=target.is_production)
    left = pgdiag.idle_sessions(target.conninfo, minutes)
    print(f"ended {len(done)} session(s): {', '.join(map(str, done)) or 'none'}; "
          f"{len(left)} still idle in transaction for {minutes:g}+ min")


@task(help={"url": "Database URL to diagnose (default: DATABASE_URL)",
            "terminate_idle": "End sessions idle in a transaction for at least this many minutes (asks first)",
            "approve": "Approval token for --terminate-idle on production (inv emergency.approve --action terminate-idle)",
            "dry_run": "With --terminate-idle: list what would be ended, end nothing",
            "yes": "Do not ask for confirmation"})
def db(c, url=None, terminate_idle=None, approve=None, dry_run=False, yes=False):
    """Diagnose the database: Supabase health, connections, locks, idle transactions, slow statements, sizes."""
    settings = Settings.from_context(c)
    url = url or settings.require_env("DATABASE_URL", "the database to diagnose; or pass --url")
    now = datetime.now(timezone.utc)
    text, verdict = db_report(settings, url, now)
    print(text, end="")
    save_diagnosis(settings, "db", text, now)
    if terminate_idle is not None:
        try:
            minutes = float(terminate_idle)
        except ValueError:
            raise ConfigError(f"--terminate-idle {terminate_idle!r} is not a number of minutes",
                              hint="e.g. --terminate-idle 5") from None
        if minutes < 0:
            raise ConfigError("--terminate-idle must be 0 or more minutes")
        _terminate_idle(settings, url, minutes, approve, dry_run, yes)


# -- security ------------------------------------------------------------------------------------------------------
def _secrets(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    from . import evaluate, gather
    from .clients.github import GitHub

    gather.need(settings, ["github.repo"], ["GITHUB_TOKEN"])
    github = GitHub.from_settings(settings)
    found = [{"scope": "repository", "environment": None, **s} for s in github.secrets()]
    for env in github.environments():
        found += [{"scope": f"environment {env['name']}", "environment": env["name"], **s}
                  for s in github.secrets(env["name"])]
    ev["secrets"] = found
    now = datetime.now(timezone.utc)
    return evaluate.secrets_age(found, now=now, max_days=float(settings.get("checks.secrets_max_days", 90)))


def _collaborators(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    from . import evaluate, gather
    from .clients.github import GitHub

    gather.need(settings, ["github.repo"], ["GITHUB_TOKEN"])
    people = GitHub.from_settings(settings).collaborators()
    return evaluate.access_collaborators(people, settings.get("access.expected") or None)


def _deploy_keys(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    from . import gather
    from .clients.github import GitHub

    gather.need(settings, ["github.repo"], ["GITHUB_TOKEN"])
    keys = GitHub.from_settings(settings).deploy_keys()
    ev["deploy_keys"] = keys
    writers = [k for k in keys if not k.get("read_only")]
    return checklist.Outcome("github.deploy_keys", "warn" if writers else "pass",
                             f"{len(keys)} deploy key(s), {len(writers)} with write access",
                             tuple(f"{k.get('title')}: {'read-only' if k.get('read_only') else 'WRITE'}, added "
                                   f"{str(k.get('created_at', '?'))[:10]}" for k in keys))


def _roles(settings: Settings, ev: dict[str, Any]) -> checklist.Outcome:
    from . import evaluate, gather, pgdiag

    gather.need(settings, env=["DATABASE_URL"])
    url = str(settings.env_var("DATABASE_URL"))
    roles = pgdiag.login_roles(url)
    ev["clients"] = pgdiag.clients(url)
    user = pgdiag.current_user(url)
    return evaluate.access_db_roles(roles, current_user=user, listed=settings.get("access.db_roles") or None,
                                    expected=settings.get("access.provider_roles") or [])


def security_report(settings: Settings, now: datetime | None = None) -> tuple[str, diagnose.Verdict]:
    now = now or datetime.now(timezone.utc)
    ev: dict[str, Any] = {}
    outcomes = _run(settings, [("secrets.age", partial(_secrets, settings, ev)),
                               ("access.collaborators", partial(_collaborators, settings, ev)),
                               ("github.deploy_keys", partial(_deploy_keys, settings, ev)),
                               ("access.db_roles", partial(_roles, settings, ev))])
    evidence = dict(ev) | {"outcomes": outcomes}
    verdict = diagnose.verdict(diagnose.security(evidence, now=now), all_clear="nothing found to act on")
    sections = [("Database connections by client address",
                 [f"{c['count']:>4}  {c['client']} as {c['usename']} ({c['application_name']})"
                  for c in evidence.get("clients") or []])] if evidence.get("clients") else []
    return _report("emergency.security", now, outcomes, verdict, sections), verdict


@task
def security(c):
    """List what to check and rotate after a suspected breach: secrets, collaborators, deploy keys, DB roles."""
    settings = Settings.from_context(c)
    now = datetime.now(timezone.utc)
    text, _ = security_report(settings, now)
    print(text, end="")
    save_diagnosis(settings, "security", text, now)


# -- rotate-secret ---------------------------------------------------------------------------------------------------
def secret_name(name: str) -> str:
    """Pure: GitHub's rule for secret names (letters, digits, _; no leading digit; not GITHUB_*)."""
    import re

    upper = name.strip().upper()
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", upper) or upper.startswith("GITHUB_"):
        raise ConfigError(f"{name!r} is not a valid Actions secret name",
                          hint="letters, digits and _, not starting with a digit or GITHUB_")
    return upper


def read_value(stdin: Any) -> str:
    """The new value from stdin: one trailing newline dropped; refused when empty. A terminal gets a hidden prompt."""
    if stdin.isatty():
        import getpass

        value = getpass.getpass("new value (hidden): ")
    else:
        value = stdin.read()
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
    if not value:
        raise ConfigError("no value on stdin", hint="pipe it in: inv emergency.rotate-secret NAME < file "
                                                    "(never as an argument: it would land in shell history)")
    return value


@task(name="rotate-secret",
      help={"name": "Actions secret to set (e.g. DATABASE_URL)", "env": "An environment's secret instead of the "
            "repository's", "dry_run": "Encrypt, but send nothing", "yes": "Do not ask for confirmation"})
def rotate_secret(c, name, env=None, dry_run=False, yes=False):
    """Set a new value for an Actions secret, read from stdin (never an argument), sealed with the repo key."""
    from . import audit
    from .clients.base import DryRunRefused
    from .clients.github import GitHub

    settings = Settings.from_context(c)
    name = secret_name(name)
    value = read_value(sys.stdin)
    github = GitHub.from_settings(settings, dry_run=dry_run)
    if not dry_run:
        settings.require_env("GITHUB_TOKEN", "setting a secret needs a token with Secrets write access")
    existing = next((s for s in github.secrets(env) if s.get("name") == name), None)
    where = f"{github.repo}" + (f" environment {env}" if env else "")
    print(f"rotate-secret: {'update' if existing else 'create'} {name} in {where}"
          + (f" (last updated {existing.get('updated_at')})" if existing else "") + f"; new value: {len(value)} chars")
    if dry_run:
        try:
            github.set_secret(name, value, environment=env)
        except DryRunRefused as exc:
            print(exc.message)
        return
    confirm(f"Set {name} in {where}?", yes=yes, tty=True)
    result = github.set_secret(name, value, environment=env)
    audit.record(settings, "emergency.rotate-secret", target=where, outcome=result, name=name)
    print(f"{name} {result} in {where}. Make sure the same value is set where it is used (Render, Supabase), "
          "and that the old one is revoked at its source.")


# -- block-ip ------------------------------------------------------------------------------------------------------
@task(name="block-ip",
      help={"ip": "Address or network to block (IPv4 or IPv6, e.g. 198.51.100.4, 2001:db8::1, 203.0.113.0/24)",
            "unblock": "Remove the block instead", "note": "Why (stored with the Cloudflare rule)",
            "dry_run": "Show what would change; change nothing", "yes": "Do not ask for confirmation"})
def block_ip(c, ip, unblock=False, note=None, dry_run=False, yes=False):
    """Block an address at Cloudflare (zone configured) and on the hosts' firewalls (hosts configured)."""
    import getpass

    from . import audit, firewall, remote
    from .clients.base import DryRunRefused
    from .clients.cloudflare import Cloudflare

    settings = Settings.from_context(c)
    net = firewall.parse(ip)
    address = firewall.shown(net)
    verb = "unblock" if unblock else "block"
    use_cf = bool(settings.get("cloudflare.zone_id"))
    hosts = firewall.firewall_hosts(settings) if settings.get("hosts") else []
    if not use_cf and not hosts:
        raise ConfigError(f"nowhere to {verb} {address}: no Cloudflare zone and no hosts are configured",
                          hint="set ops.cloudflare.zone_id (and CLOUDFLARE_API_TOKEN), and/or ops.hosts")
    plan = ([f"Cloudflare zone {settings.get('cloudflare.zone_id')}"] if use_cf else []) + [f"host {h}" for h in hosts]
    print(f"block-ip: {verb} {address} (IPv{net.version}) at: {', '.join(plan)}")
    if not dry_run:
        confirm(f"{verb.capitalize()} {address} at {len(plan)} place(s)?", yes=yes)
    results: list[str] = []
    failed = 0
    if use_cf:
        try:
            cf = Cloudflare.from_settings(settings, dry_run=dry_run)
            if unblock:
                deleted = cf.unblock_ip(address)
                results.append(f"Cloudflare: {'removed ' + ', '.join(deleted) if deleted else 'was not blocked'}")
            else:
                why = note or f"lottery-ops block-ip by {getpass.getuser()}"
                rule = cf.block_ip(address, notes=why)
                results.append(f"Cloudflare: blocked (rule {rule.get('id')}, target "
                               f"{(rule.get('configuration') or {}).get('target')})")
        except DryRunRefused as exc:
            results.append(f"Cloudflare: {exc.message}")
        except OpsError as exc:
            failed += 1
            results.append(f"Cloudflare: FAILED: {exc}")
    for name in hosts:
        try:
            with remote.connect(settings, name, config=c.config) as cxn:
                results.append(f"host {name}: " + firewall.apply(cxn, net, unblock=unblock, dry_run=dry_run,
                                                                 **firewall.options(settings, net)))
        except OpsError as exc:
            failed += 1
            results.append(f"host {name}: FAILED: {exc}")
    print("\n".join(results))
    if not dry_run:
        audit.record(settings, f"emergency.{verb}-ip", target=address, outcome="failed" if failed else "done",
                     results=results)
    if failed:
        raise OpsError(f"{verb} {address} failed at {failed} of {len(plan)} place(s)", hint="see the lines above")


# -- escalate ------------------------------------------------------------------------------------------------------
def latest_diagnoses(settings: Settings, now: datetime, max_age_hours: float) -> list[tuple[str, str]]:
    """Saved diagnoses younger than `max_age_hours`, newest first: [(recipe, text)]."""
    folder = settings.state_dir / "diagnosis"
    found = []
    for path in sorted(folder.glob("*.md")) if folder.is_dir() else []:
        text = path.read_text(encoding="utf-8", errors="replace")
        first, _, body = text.partition("\n")
        try:
            when = datetime.fromisoformat(first.split()[2])
        except (IndexError, ValueError):
            continue
        if (now - when).total_seconds() <= max_age_hours * 3600:
            found.append((when, path.stem, body))
    return [(recipe, body) for _, recipe, body in sorted(found, reverse=True)]


def incident_record(settings: Settings, record: str | None) -> tuple[str, str] | None:
    """The incident record to attach: --record FILE, else the newest one emergency.restore wrote
    (in ops.emergency.record_dir, by default the state directory's incidents/)."""
    if record:
        path = Path(record).expanduser()
        if not path.is_file():
            raise ConfigError(f"incident record {path} does not exist")
        return str(path), path.read_text(encoding="utf-8", errors="replace")
    configured = settings.get("emergency.record_dir")
    folder = Path(configured).expanduser() if configured else settings.state_dir / "incidents"
    files = sorted(folder.glob("*.md"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return (str(files[-1]), files[-1].read_text(encoding="utf-8", errors="replace")) if files else None


def escalation_body(settings: Settings, now: datetime, record: str | None = None) -> str:
    import getpass
    import socket

    from .redact import redact_text

    parts = [f"Escalated by {getpass.getuser()}@{socket.gethostname()} at {now:%Y-%m-%d %H:%M} UTC "
             "with `inv emergency.escalate`."]
    diagnoses = latest_diagnoses(settings, now, float(_cfg(settings, "diagnosis_max_age_hours")))
    if not diagnoses:
        parts.append("No diagnosis was run recently on this machine: run `inv emergency.app-down` and add its output.")
    for recipe, text in diagnoses:
        parts.append(f"## Latest diagnosis: `inv emergency.{recipe}`\n\n```\n{text.rstrip()}\n```")
    found = incident_record(settings, record)
    if found:
        parts.append(f"## Incident record ({Path(found[0]).name})\n\n{found[1].rstrip()}")
    return redact_text("\n\n".join(parts) + "\n", settings.secrets)


@task(help={"title": "Issue title: what is wrong, in a few words",
            "record": "Incident record file to attach (default: the newest one written by emergency.restore)",
            "dry_run": "Print the issue; do not open it"})
def escalate(c, title, record=None, dry_run=False):
    """Open a GitHub issue labelled production + urgent with the latest diagnosis (asks nothing: it only tells)."""
    from . import audit
    from .clients.base import DryRunRefused
    from .clients.github import GitHub

    settings = Settings.from_context(c)
    if not title.strip():
        raise ConfigError("--title is empty", hint='--title "app down since 14:02, deploy failed"')
    now = datetime.now(timezone.utc)
    body = escalation_body(settings, now, record)
    github = GitHub.from_settings(settings, dry_run=dry_run)
    labels = list(settings.get("incident.escalate_labels") or ["production", "urgent"])
    if dry_run:
        print(f"title: {title}\nlabels: {', '.join(labels)}\n\n{body}", end="")
        try:
            github.create_issue(title, body, labels=labels)
        except DryRunRefused as exc:
            print(exc.message)
        return
    settings.require_env("GITHUB_TOKEN", "opening an issue needs a token")
    issue = github.create_issue(title, body, labels=labels)
    got = {label.get("name") for label in issue.get("labels") or []}
    audit.record(settings, "emergency.escalate", target=github.repo, outcome="opened", issue=issue.get("number"))
    print(f"opened {issue.get('html_url')}")
    if not set(labels) <= got:
        _say(f"warning: GitHub dropped labels {', '.join(sorted(set(labels) - got))} "
             "(the token lacks push access); add them by hand")
