"""Checks: the daily, weekly and monthly health checklists (runbook: System Health Monitoring).

Each box of the runbook is a check with a stable id that asks the real service and ends pass, warn, fail or
error (could not check), with the evidence. Checks run concurrently, each within `ops.checks.timeout` seconds.
Exit status 0 when everything passes or warns, 1 when anything fails or could not be checked.
"""
from __future__ import annotations

import contextlib
import sys
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from . import checklist, gather
from .config import Settings
from .errors import OpsError
from .hosts import hosts_task  # noqa: F401  (inv checks.hosts)
from .tasking import task

DAILY = ("sentry.errors", "render.service", "app.health", "backup.fresh", "db.size")
WEEKLY = ("actions.workflows", "backup.restore_test", "dependabot.alerts", "backup.trend")
MONTHLY = ("access.collaborators", "access.db_roles", "secrets.age", "backup.retention", "deps.updates")


def daily_ids(settings: Settings) -> tuple[str, ...]:
    """The daily checklist, with a `hosts` row when hosts are configured (ops.hosts)."""
    return DAILY + (("hosts",) if settings.get("hosts") else ())


HELP = {
    "json": 'Print {"checks": [{"id", "status", "summary", "details"}], "status": worst} instead of the table',
    "report": "Also write a Markdown report to this file (paste it into an issue)",
    "notify": "On failure, open a GitHub issue labelled ops, automated (or comment on the open one)",
}


def run_checklist(settings: Settings, name: str, ids: tuple[str, ...], *, c: Any = None,
                  run_restore_test: bool = False, now: datetime | None = None) -> checklist.Report:
    """Run the checks `ids` concurrently and return the report (no printing; stdout of checks goes to stderr)."""
    now = now or datetime.now(timezone.utc)
    timeout = float(settings.get("checks.timeout", 60))
    run = gather.Run(gather.patient(settings, timeout), now, c, run_restore_test,
                     state_file=settings.state_dir / "checks-state.json")
    long = float(settings.get("checks.restore_test_timeout", 3600))
    checks = [checklist.Check(i, i, partial(gather.GATHERERS[i], run),
                              timeout=long if (i == "backup.restore_test" and run_restore_test) else timeout)
              for i in ids]
    with contextlib.redirect_stdout(sys.stderr):   # keep stdout for the table or the JSON
        outcomes = checklist.run_checks(checks, secrets=settings.secrets)
    return checklist.Report(f"{name.capitalize()} health checks", tuple(outcomes), generated_at=now)


def notify(settings: Settings, name: str, report: checklist.Report) -> str:
    """Open an issue listing the failures, or comment on the open one with the same title. Returns its URL."""
    from .clients.github import GitHub

    gather.need(settings, ["github.repo"], ["GITHUB_TOKEN"])
    github = GitHub.from_settings(settings)
    title = str(settings.get("checks.notify.title", "Health check failed: {checklist}")).format(checklist=name)
    labels = list(settings.get("checks.notify.labels", ["ops", "automated"]))
    body = checklist.render_markdown(report)
    run_id = settings.env_var("GITHUB_RUN_ID")
    if run_id:
        server = settings.env_var("GITHUB_SERVER_URL") or "https://github.com"
        body += f"\nRun: {server}/{settings.env_var('GITHUB_REPOSITORY')}/actions/runs/{run_id}\n"
    existing = github.find_open_issue(title, labels=labels)
    if existing:
        github.comment_issue(existing["number"], body)
        return f"commented on #{existing['number']} {existing.get('html_url', '')}".rstrip()
    created = github.create_issue(title, body, labels=labels)
    return f"opened #{created['number']} {created.get('html_url', '')}".rstrip()


def _finish(c: Any, name: str, ids: tuple[str, ...] | None, *, json: bool, report: str | None, notify_: bool,
            run_restore_test: bool = False) -> None:
    settings = Settings.from_context(c)
    ids = daily_ids(settings) if ids is None else ids
    result = run_checklist(settings, name, ids, c=c, run_restore_test=run_restore_test)
    if json:
        print(checklist.to_json(result.outcomes))
    else:
        from rich.console import Console

        Console(highlight=False).print(checklist.build_table(result.outcomes, result.title))
    if report:
        Path(report).write_text(checklist.render_markdown(result), encoding="utf-8")
        print(f"report written to {report}", file=sys.stderr)
    if notify_:
        if result.exit_code:
            print(f"notified: {notify(settings, name, result)}", file=sys.stderr)
        else:
            print("notify: nothing failed, no issue opened", file=sys.stderr)
    if result.exit_code:
        bad = [o.id for o in result.outcomes if o.status in ("fail", "error")]
        raise OpsError(f"checks.{name}: {len(bad)} check(s) failed or could not run: {', '.join(bad)}",
                       hint="see the table above; `error` rows say what to configure or which service did not answer")


@task(help=HELP)
def daily(c, json=False, report=None, notify=False):
    """Run the daily checklist: Sentry errors, Render service, app health, backup freshness, database size, and
    the configured hosts (disk, memory, load, services over SSH) when ops.hosts is set."""
    _finish(c, "daily", None, json=json, report=report, notify_=notify)


@task(help={**HELP, "run_restore_test": "Rehearse a restore now (restore.test into a scratch database) instead of "
                                        "reading the restore-test workflow's last run"})
def weekly(c, json=False, report=None, notify=False, run_restore_test=False):
    """Run the weekly checklist: workflow runs, restore rehearsal, Dependabot alerts, backup size trend."""
    _finish(c, "weekly", WEEKLY, json=json, report=report, notify_=notify, run_restore_test=run_restore_test)


@task(help=HELP)
def monthly(c, json=False, report=None, notify=False):
    """Run the monthly checklist: repository access, database roles, secret age, backup retention, dependencies."""
    _finish(c, "monthly", MONTHLY, json=json, report=report, notify_=notify)
