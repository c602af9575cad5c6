"""Effect: gather each check's evidence from the real services, then let the pure evaluators decide.

One function per check id, each `fn(run) -> Outcome`. A missing setting or token raises ConfigError naming all
that is missing for that check; a service failure raises ServiceError; the runner (ops.checklist.run_checks)
turns both into an `error` outcome with the reason, so one dead service never stops the list.
Every check builds its own client (requests sessions are not shared between threads).
Production is only read here (size, connections, roles), in a read-only session; URLs are redacted in messages.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import evaluate, retention
from .checklist import Outcome
from .config import VAR_HINTS, Settings
from .errors import ConfigError, OpsError, VerificationFailed


@dataclass(frozen=True)
class Run:
    """What every gatherer may use: settings, the time the run started, the Invoke context and flags."""

    settings: Settings
    now: datetime
    c: Any = None
    run_restore_test: bool = False
    state_file: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def cfg(self, dotted: str, default: Any = None) -> Any:
        value = self.settings.get(dotted, default)
        return default if value is None else value


def need(settings: Settings, config: Iterable[str] = (), env: Iterable[str] = ()) -> None:
    """Raise one ConfigError naming every setting (ops.*) and environment variable this check lacks."""
    missing_cfg = [k for k in config if settings.get(k) in (None, "", [], {})]
    missing_env = [v for v in env if not settings.env_var(v)]
    if not missing_cfg and not missing_env:
        return
    names = [f"ops.{k}" for k in missing_cfg] + missing_env
    hints = []
    if missing_cfg:
        hints.append("add " + ", ".join(f"ops.{k}" for k in missing_cfg) + " to invoke.yaml (or a file for inv -f)")
    hints += [VAR_HINTS.get(v, f"export {v}=...") for v in missing_env]
    raise ConfigError("not configured: set " + ", ".join(names), hint="; ".join(hints))


def patient(settings: Settings, timeout: float) -> Settings:
    """Settings whose clients wait out a rate limit only while it fits well inside the check's timeout.

    A longer wait becomes a clear `error` saying when the limit resets, instead of a check that just times out.
    """
    cap = max(1.0, timeout / 3)
    over = {svc: {"max_wait": min(float(settings.get(f"{svc}.max_wait", 60) or 60), cap)}
            for svc in ("github", "render", "sentry")}
    return Settings.from_dict(ops=_merged(settings.ops, over), env=settings.env)


def _merged(base: Any, over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _github(run: Run) -> Any:
    from .clients.github import GitHub

    need(run.settings, ["github.repo"], ["GITHUB_TOKEN"])
    return GitHub.from_settings(run.settings)


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def _backups(run: Run) -> tuple[list[retention.Backup], list[str]]:
    releases = _github(run).releases()
    return retention.backups_from_releases(releases, run.cfg("github.backup_prefix", "backup-"))


# -- daily ------------------------------------------------------------------------------------------------

def sentry_errors(run: Run) -> Outcome:
    from .clients.sentry import Sentry

    need(run.settings, ["sentry.org", "sentry.project"], ["SENTRY_AUTH_TOKEN"])
    issues = Sentry.from_settings(run.settings).issues("is:unresolved lastSeen:-24h", stats_period="24h")
    t = run.cfg("checks.sentry", {})
    limits = {k: int(t[k]) for k in ("warn_issues", "fail_issues", "warn_events", "fail_events") if k in t}
    return evaluate.sentry_errors([i.raw for i in issues], now=run.now, **limits)


def render_service(run: Run) -> Outcome:
    from .clients.render import Render

    need(run.settings, ["render.service_id"], ["RENDER_API_KEY"])
    render = Render.from_settings(run.settings)
    try:
        service = render.get_service()
    except OpsError as exc:
        if _status(exc) != 404:
            raise
        return evaluate.render_service(None, [], service_id=run.cfg("render.service_id"))
    return evaluate.render_service(service, render.deploys(limit=10), service_id=service.get("id", ""))


def app_health(run: Run) -> Outcome:
    from .clients.app import App

    need(run.settings, ["app.health_url"])
    app = App.from_settings(run.settings)
    app.timeout = float(run.cfg("checks.app.timeout", app.timeout))
    probes = [app.probe(url) for url in [app.health_url, *app.endpoints]]
    return evaluate.app_health([{"url": p.url, "status": p.status, "ms": p.latency_ms, "error": p.error}
                                for p in probes], warn_ms=float(run.cfg("checks.app.warn_ms", 2000)))


def backup_fresh(run: Run) -> Outcome:
    backups, _ = _backups(run)
    t = run.cfg("checks.backup", {})
    return retention.backup_fresh(backups, now=run.now, max_age_hours=float(t.get("max_age_hours", 26)),
                                  shrink_fail=float(t.get("shrink_fail", 0.5)),
                                  shrink_warn=float(t.get("shrink_warn", 0.8)))


def _production(run: Run) -> str:
    need(run.settings, env=["DATABASE_URL"])
    return str(run.settings.env_var("DATABASE_URL"))


def _read_only(url: str, queries: Callable[[Any], Any]) -> Any:
    from . import pg

    with pg.connect(url, application_name="lottery-ops checks") as conn:
        conn.read_only = True   # production is only ever read here
        return queries(conn)


def _size_queries(conn: Any) -> dict[str, Any]:
    row = conn.execute(
        "SELECT current_database(), pg_database_size(current_database()),"
        " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
        " current_setting('max_connections')::int").fetchone()
    return {"database": row[0], "bytes": row[1], "connections": row[2], "max_connections": row[3]}


def db_size(run: Run) -> Outcome:
    from . import pg

    url = _production(run)
    stats = _read_only(url, _size_queries)
    key = f"db.size {pg.describe(url)}"
    state = load_state(run.state_file)
    t = run.cfg("checks.db", {})
    outcome = evaluate.db_size(stats, state.get(key), now=run.now, warn_bytes=int(float(t.get("warn_mb", 0)) * 2**20),
                               conn_warn=float(t.get("connections_warn", 0.8)),
                               conn_fail=float(t.get("connections_fail", 0.95)))
    save_state(run.state_file, {key: {"bytes": stats["bytes"], "at": run.now.isoformat()}})
    return outcome


def hosts(run: Run) -> Outcome:
    """Every configured host (ops.hosts) over SSH, at once, as one `hosts` check (`checks.hosts` per host)."""
    from . import hosts as host_checks

    return host_checks.combined(host_checks.check_hosts(run.settings))


# -- weekly -----------------------------------------------------------------------------------------------

def _runs_or_none(github: Any, workflow: str) -> list[dict[str, Any]] | None:
    try:
        return github.workflow_runs(workflow, limit=20)
    except OpsError as exc:
        if _status(exc) == 404:
            return None
        raise


def actions_workflows(run: Run) -> Outcome:
    github = _github(run)
    return evaluate.actions_workflows({wf: _runs_or_none(github, wf) for wf in run.cfg("checks.workflows", [])})


def backup_restore_test(run: Run) -> Outcome:
    if run.run_restore_test:
        return _rehearse_now(run)
    workflow = run.cfg("checks.restore_test_workflow", "restore-test.yml")
    return evaluate.restore_test_from_runs(_runs_or_none(_github(run), workflow), workflow=workflow, now=run.now,
                                           max_age_days=float(run.cfg("checks.restore_test_max_age_days", 8)))


def _rehearse_now(run: Run) -> Outcome:
    """`restore.test` (issue 3) run now: it really restores into a scratch database, checks, and drops it."""
    from . import restore

    rehearsal = getattr(restore, "test", None)
    if rehearsal is None:
        raise OpsError("restore.test is not available in this version", hint="run the check without --run-restore-test")
    body = getattr(rehearsal, "body", rehearsal)   # the task's own function: OpsErrors stay OpsErrors
    try:
        result = body(run.c)
    except VerificationFailed as exc:
        message = exc.message if "rehearsal" in exc.message else f"restore rehearsal failed: {exc.message}"
        return Outcome("backup.restore_test", "fail", message,
                       (f"hint: {exc.hint}",) if exc.hint else ())
    summary = "restore rehearsal passed just now"
    if isinstance(result, dict) and result.get("tag"):
        summary += f" ({result['tag']})"
    return Outcome("backup.restore_test", "pass", summary, ())


def dependabot_alerts(run: Run) -> Outcome:
    try:
        alerts = _github(run).dependabot_alerts(state="open")
    except OpsError as exc:
        if _status(exc) == 403 and "disabled" in str(getattr(exc, "detail", "")).lower():
            return evaluate.dependabot_alerts(None)
        raise
    return evaluate.dependabot_alerts(alerts)


def backup_trend(run: Run) -> Outcome:
    return retention.backup_trend(_backups(run)[0])


# -- monthly ----------------------------------------------------------------------------------------------

def access_collaborators(run: Run) -> Outcome:
    expected = run.cfg("access.expected", {}) or None
    return evaluate.access_collaborators(_github(run).collaborators(), expected)


def _role_queries(conn: Any) -> tuple[str, list[dict[str, Any]]]:
    user = conn.execute("SELECT current_user").fetchone()[0]
    rows = conn.execute("SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolcanlogin ORDER BY 1").fetchall()
    return user, [{"name": r[0], "superuser": r[1], "createrole": r[2]} for r in rows]


def access_db_roles(run: Run) -> Outcome:
    user, roles = _read_only(_production(run), _role_queries)
    return evaluate.access_db_roles(roles, current_user=user, listed=run.cfg("access.db_roles", []) or None,
                                    expected=run.cfg("access.provider_roles", []))


def secrets_age(run: Run) -> Outcome:
    github = _github(run)
    found = [{"scope": "repository", **s} for s in github.secrets()]
    for env in github.environments():
        found += [{"scope": f"environment {env['name']}", **s} for s in github.secrets(env["name"])]
    return evaluate.secrets_age(found, now=run.now, max_days=float(run.cfg("checks.secrets_max_days", 90)))


def backup_retention(run: Run) -> Outcome:
    backups, ignored = _backups(run)
    return retention.backup_retention(backups, ignored, now=run.now, keep_days=float(run.cfg("backup.keep_days", 14)),
                                      keep_min=int(run.cfg("backup.keep_min", 7)))


def deps_updates(run: Run) -> Outcome:
    return evaluate.deps_updates(_github(run).pulls(state="open"), now=run.now,
                                 max_days=float(run.cfg("checks.deps_max_days", 30)))


# -- the state kept between runs (db.size's previous size) -------------------------------------------------

def load_state(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}   # a damaged state file only loses the comparison
    return data if isinstance(data, dict) else {}


def save_state(path: Path | None, updates: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**load_state(path), **updates}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


GATHERERS: dict[str, Callable[[Run], Outcome]] = {
    "sentry.errors": sentry_errors, "render.service": render_service, "app.health": app_health,
    "backup.fresh": backup_fresh, "db.size": db_size, "hosts": hosts,
    "actions.workflows": actions_workflows, "backup.restore_test": backup_restore_test,
    "dependabot.alerts": dependabot_alerts, "backup.trend": backup_trend,
    "access.collaborators": access_collaborators, "access.db_roles": access_db_roles, "secrets.age": secrets_age,
    "backup.retention": backup_retention, "deps.updates": deps_updates,
}
