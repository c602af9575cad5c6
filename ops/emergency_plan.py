"""Pure: the decisions of `inv emergency.restore` over plain data (no I/O; stdlib only).

What the restore will discard, the plan shown before confirmation, whether this backup was rehearsed, which
post-restore checks passed, what state production is in when something fails (and how to get the snapshot
back), the verdict, and the exit status. `ops.emergency_restore` gathers the data and acts; this decides.
"""
from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from . import retention

# The runbook's seven steps, with the extra ones the issue adds; keys are used in the audit log.
STEPS: tuple[tuple[str, str], ...] = (
    ("approval", "0  approval and guard"),
    ("preflight", "0b preflight: client tools, Render, the app, Sentry"),
    ("download", "1  download and verify the backup"),
    ("fit", "1a check the backup fits production (nothing in scope left out)"),
    ("rehearsal", "1b rehearsal in a scratch database on staging"),
    ("snapshot", "2  snapshot production (pg_dump, verified, kept locally)"),
    ("confirm", "2b plan and confirmation (type the database name)"),
    ("consume", "2c use the approval (single use)"),
    ("notify", "   notify stakeholders (GitHub issue)"),
    ("maintenance", "3  maintenance mode"),
    ("sessions", "4a end the sessions still connected"),
    ("restore", "4  restore into production (one transaction)"),
    ("verify", "5  verify row counts and recent data"),
    ("resume", "6  leave maintenance, wait for health 200"),
    ("postcheck", "7  post-restore verification"),
)
TITLES = dict(STEPS)
PASSED = ("pass", "passed", "ok", "success", "succeeded")


class Outcome(str, Enum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    REFUSED = "refused"
    PLANNED = "planned"     # dry run: would be done


@dataclass(frozen=True)
class StepResult:
    key: str
    outcome: Outcome
    detail: str = ""
    seconds: float = 0.0

    @property
    def title(self) -> str:
        return TITLES.get(self.key, self.key)


@dataclass(frozen=True)
class Check:
    """One post-restore check (step 7): `ok` None means not run (not configured, or skipped on purpose)."""

    name: str
    ok: bool | None
    detail: str = ""


# -- scope and counts ------------------------------------------------------------------------------------------------
def in_scope(table: str, schemas: Sequence[str] | None) -> bool:
    """`public.User` is in scope of `["public"]`; None (or "all") means every schema."""
    if schemas is None or "all" in schemas:
        return True
    return table.split(".", 1)[0] in schemas


@dataclass(frozen=True)
class DiscardRow:
    table: str
    now: int | None      # rows in production now (None: the table is not there)
    backup: int | None   # rows in the backup (None: the backup does not hold the table)

    @property
    def change(self) -> int:
        return (self.backup or 0) - (self.now or 0)

    @property
    def note(self) -> str:
        if self.backup is None:
            return "not in the backup: left as it is"
        if self.now is None:
            return "created from the backup"
        if self.now == self.backup:
            return "same count (rows are still replaced)"
        return f"{self.now - self.backup} more rows now than in the backup" if self.now > self.backup else \
            f"{self.backup - self.now} rows come back"


def discard_rows(production: Mapping[str, int], backup: Mapping[str, int],
                 schemas: Sequence[str] | None) -> list[DiscardRow]:
    """Per table in scope: production's rows now against the backup's. Every row of a table the backup holds is
    replaced by the backup's rows; tables the backup does not hold are not touched (a --clean dump drops only
    what it contains)."""
    tables = sorted(t for t in set(production) | set(backup) if in_scope(t, schemas))
    return [DiscardRow(t, production.get(t), backup.get(t)) for t in tables]


def render_discard(rows: Sequence[DiscardRow]) -> str:
    if not rows:
        return "  (no tables in scope)"
    width = max(len("table"), *(len(r.table) for r in rows))
    lines = [f"  {'table':<{width}}  {'production now':>14}  {'in backup':>10}  change"]
    for r in rows:
        now = "-" if r.now is None else str(r.now)
        bk = "-" if r.backup is None else str(r.backup)
        lines.append(f"  {r.table:<{width}}  {now:>14}  {bk:>10}  {r.note}")
    replaced = sum(r.now or 0 for r in rows if r.backup is not None)
    restored = sum(r.backup or 0 for r in rows if r.backup is not None)
    lines.append(f"  {len(rows)} tables; {replaced} rows in production are replaced by {restored} rows from the backup")
    return "\n".join(lines)


def count_mismatches(expected: Mapping[str, int], actual: Mapping[str, int],
                     schemas: Sequence[str] | None) -> list[str]:
    """Tables in scope whose row count after the restore differs from the backup's."""
    out = []
    for table in sorted(t for t in expected if in_scope(t, schemas)):
        got = actual.get(table)
        if got is None:
            out.append(f"{table}: missing after the restore (backup holds {expected[table]} rows)")
        elif got != expected[table]:
            out.append(f"{table}: {got} rows, backup holds {expected[table]}")
    return out


# -- rehearsal on record -------------------------------------------------------------------------------------------
def rehearsal_on_record(entries: Iterable[Mapping[str, Any]], sha256: str) -> Mapping[str, Any] | None:
    """The newest passing `restore.test` audit entry for a backup with this SHA-256, or None."""
    found = None
    for entry in entries:
        raw = entry.get("details")
        details: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        if entry.get("action") != "restore.test" or str(details.get("sha256", "")).lower() != sha256.lower():
            continue
        passed = details.get("passed")
        if passed is True or (passed is None and str(entry.get("outcome", "")).lower() in PASSED):
            found = entry
    return found


# -- approval help ---------------------------------------------------------------------------------------------------
def approval_help(approvers: Sequence[str], tag: str | None, database: str | None) -> str:
    """How to obtain an approval, for `inv emergency.restore` without --approve."""
    tag_arg = tag or "TAG"
    who = ("one of the configured approvers (" + ", ".join(approvers) + ")") if approvers else \
        "an approver whose public key is in ops.approval.public_keys (none is configured yet: an approver runs " \
        "`inv emergency.keygen --out ~/.config/lottery-ops/approver.key` and the printed line is added there)"
    target = f" ({database})" if database else ""
    return "\n".join([
        f"emergency.restore needs a signed approval from a second person for this production database{target}.",
        "How to get one:",
        f"  1. {who} - not you - runs, with DATABASE_URL set to production and their own private key:",
        f"       OPS_APPROVER_KEY=~/.config/lottery-ops/approver.key inv emergency.approve --tag {tag_arg} "
        "--reason \"what happened\"",
        "     (--ttl 30m by default, at most 60m; GITHUB_TOKEN lets it read the backup's SHA-256 from the release,",
        "      or it takes --file PATH of a downloaded copy). It prints one token line, valid once.",
        "  2. You pass it on:",
        f"       inv emergency.restore --approve \"$TOKEN\" --tag {tag_arg}",
        "     Start with --dry-run to see the plan: a dry run does not use the approval up.",
    ])


# -- the plan ----------------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    target: str
    dbname: str
    tag: str
    sha256: str
    backup_file: str = ""
    backup_size: int = 0
    backup_tables: int = 0
    backup_rows: int = 0
    approval: str = ""
    rehearsal: str = ""
    snapshot: str = ""
    maintenance: str = ""
    service: str = ""
    keep_suspended: bool = False
    sessions: list[str] = field(default_factory=list)
    discard: list[DiscardRow] = field(default_factory=list)
    schemas: Sequence[str] | None = ("public",)
    checks: list[str] = field(default_factory=list)
    notify: str = ""
    dry_run: bool = False


def render_plan(plan: Plan) -> str:
    scope = "all schemas" if plan.schemas is None or "all" in plan.schemas else ", ".join(plan.schemas)
    leave = "kept (--keep-suspended)" if plan.keep_suspended else "left at the end, on every exit path"
    lines = [
        ("DRY RUN - " if plan.dry_run else "") + f"Emergency restore plan for {plan.dbname}",
        f"  target:       {plan.target}",
        f"  backup:       {plan.tag}, sha256 {plan.sha256}",
    ]
    if plan.backup_file:
        lines.append(f"                {plan.backup_file} ({plan.backup_size} bytes; {plan.backup_tables} tables, "
                     f"{plan.backup_rows} rows)")
    lines += [
        f"  approval:     {plan.approval}",
        f"  rehearsal:    {plan.rehearsal}",
        f"  snapshot:     {plan.snapshot}",
        f"  maintenance:  {plan.maintenance}; {leave}",
        f"  service now:  {plan.service}",
        f"  scope:        {scope} (objects outside it are neither dropped nor created)",
        f"  notify:       {plan.notify or 'no (--notify opens a GitHub issue)'}",
        f"  sessions to end before the restore ({len(plan.sessions)}):",
        *([f"    {s}" for s in plan.sessions] or ["    none"]),
        "  what the restore replaces:",
        render_discard(plan.discard),
        "  post-restore checks:",
        *([f"    {c}" for c in plan.checks] or ["    none configured"]),
    ]
    return "\n".join(lines)


def session_line(s: Mapping[str, Any]) -> str:
    app = s.get("application_name") or "?"
    return f"pid {s.get('pid')} {s.get('usename') or '?'} from {s.get('client') or 'local'} ({app}), {s.get('state')}"


# -- the end: state of production, verdict, exit status ----------------------------------------------------------------
class RestoreState(str, Enum):
    NOT_STARTED = "not-started"   # nothing was written to production
    ROLLED_BACK = "rolled-back"   # the transaction was rolled back: production is exactly as before
    COMMITTED = "committed"       # the backup is in production
    UNKNOWN = "unknown"           # the session died around COMMIT: check before doing anything else


class Verdict(str, Enum):
    OK = "restored, every check passed"
    DRY_RUN = "dry run: nothing was changed"
    REFUSED = "refused: nothing was changed"
    NOT_STARTED = "failed before the restore started: production was not touched"
    ROLLED_BACK = "the restore failed and was rolled back: production is exactly as it was before"
    RESTORED_CHECK_FAILED = "production IS restored from the backup, but a check failed"
    UNKNOWN = "the restore's outcome is unknown"


def verdict(state: RestoreState, results: Sequence[StepResult], checks: Sequence[Check], *,
            dry_run: bool = False, refused: bool = False, error: bool = False) -> Verdict:
    """`error`: the run ended with an exception (a failure or Ctrl-C), whatever the steps recorded."""
    if refused:
        return Verdict.REFUSED
    if dry_run and not error:
        return Verdict.DRY_RUN
    if state is RestoreState.NOT_STARTED:
        return Verdict.NOT_STARTED
    if state is RestoreState.ROLLED_BACK:
        return Verdict.ROLLED_BACK
    if state is RestoreState.UNKNOWN:
        return Verdict.UNKNOWN
    failed = error or any(r.outcome is Outcome.FAILED for r in results) or any(c.ok is False for c in checks)
    return Verdict.RESTORED_CHECK_FAILED if failed else Verdict.OK


def exit_code(v: Verdict) -> int:
    return {Verdict.OK: 0, Verdict.DRY_RUN: 0, Verdict.REFUSED: 3}.get(v, 1)


def snapshot_label(now: datetime) -> str:
    return "snapshot-" + now.astimezone(timezone.utc).strftime("%Y%m%d_%H%M%S")


def undo_instructions(snapshot: str, sha256: str, label: str) -> str:
    """How to put the snapshot back: the same guarded path, with an approval bound to the snapshot's SHA-256."""
    return "\n".join([
        f"The snapshot of production taken before the restore: {snapshot} (sha256 {sha256}).",
        "To put it back (the same guarded path, a new approval bound to the snapshot):",
        f"  approver:  inv emergency.approve --tag {label} --sha256 {sha256} --reason \"undo the restore\"",
        f"  you:       inv emergency.restore --file {shlex.quote(snapshot)} --tag {label} --approve \"$TOKEN\" "
        "--skip-rehearsal \"pre-restore snapshot\"",
    ])


def state_message(state: RestoreState, *, tag: str, dbname: str, failed_step: str | None,
                  snapshot: str | None, snapshot_sha: str | None, snapshot_label_: str | None) -> str:
    """What production holds after a failure, said plainly, with where the snapshot is and how to restore it."""
    step = f" at step {' '.join(TITLES.get(failed_step, failed_step).split())}" if failed_step else ""
    if state is RestoreState.COMMITTED and failed_step is None:
        head = f"{dbname} is restored from {tag}."
        if snapshot and snapshot_sha and snapshot_label_:
            return head + "\n" + undo_instructions(snapshot, snapshot_sha, snapshot_label_)
        return head
    head = {
        RestoreState.NOT_STARTED: f"Stopped{step}, before the restore started: {dbname} was not changed.",
        RestoreState.ROLLED_BACK: f"The restore failed{step} and was rolled back: {dbname} is exactly as it was "
                                  "before (one transaction; nothing of the backup was kept).",
        RestoreState.COMMITTED: f"{dbname} IS fully restored from {tag} (the transaction committed); the failure "
                                f"came after it{step}. Do not run the restore again.",
        RestoreState.UNKNOWN: f"The restore's session ended around its COMMIT{step}: {dbname} is either fully "
                              f"restored from {tag} or exactly as before, never half. Check with "
                              "`inv restore.check --url \"$DATABASE_URL\" --backup FILE` before anything else.",
    }[state]
    lines = [head]
    if snapshot and snapshot_sha and snapshot_label_:
        lines.append(undo_instructions(snapshot, snapshot_sha, snapshot_label_))
    elif state is not RestoreState.NOT_STARTED:
        lines.append("No snapshot was recorded for this run.")
    return "\n".join(lines)


# -- summary -----------------------------------------------------------------------------------------------------------
def _mark(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "skip"}[ok]


def render_summary(results: Sequence[StepResult], checks: Sequence[Check], v: Verdict) -> str:
    width = max([len(r.title.strip()) for r in results] + [len(c.name) for c in checks] + [10])
    lines = ["Summary", f"  {'step':<{width}}  {'outcome':<8}  {'time':>7}  detail"]
    for r in results:
        lines.append(f"  {r.title.strip():<{width}}  {r.outcome.value:<8}  {r.seconds:>6.1f}s  {r.detail}")
    if checks:
        lines.append(f"  {'check':<{width}}  result")
        for c in checks:
            lines.append(f"  {c.name:<{width}}  {_mark(c.ok):<8}  {'':>7}  {c.detail}")
    lines.append(f"Result: {v.value}")
    return "\n".join(lines)


# -- Sentry window -----------------------------------------------------------------------------------------------------
def sentry_query(started: datetime, now: datetime) -> str:
    """Sentry search for issues first seen since `started` (whole minutes, rounded up, plus one for clock skew)."""
    minutes = max(1, math.ceil((now - started).total_seconds() / 60) + 1)
    return f"firstSeen:-{minutes}m"


def parse_time(text: str) -> datetime | None:
    """An API timestamp as an aware UTC datetime (retention.parse_time), or None when it is not one."""
    try:
        return retention.parse_time(text)
    except (TypeError, ValueError):
        return None


def first_seen_since(issues: Iterable[Any], started: datetime) -> list[Any]:
    """Issues (anything with `.first_seen`, ISO 8601) first seen at or after `started`."""
    out = []
    for issue in issues:
        seen = parse_time(getattr(issue, "first_seen", "") or "")
        if seen is not None and seen >= started.replace(microsecond=0):
            out.append(issue)
    return out
