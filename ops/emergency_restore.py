"""Emergency production restore (runbook: Emergency Production Restore), and the audit log it writes.

    inv emergency.restore --approve TOKEN [--tag TAG | --file FILE] [--confirm DBNAME] [--dry-run]
                          [--maintenance suspend|page] [--keep-suspended] [--skip-rehearsal REASON] [--notify]
                          [--via BASTION]
    inv emergency.audit [--verify] [--run RUN] [--record RUN]

The recipe, in order, each step printed with its outcome and timing and recorded in the audit log:
  0  approval and guard: a signed, scoped, single-use token from a second person (ops.approval, ops.tokens)
  0b preflight: psql/pg_dump present, Render, GitHub, the app and Sentry reachable
  1  download and verify the backup; the approval is checked again against its real SHA-256
  1b rehearsal: a passing `restore.test` of this SHA-256 on record, or one now into a scratch database on staging
  2  snapshot of production (pg_dump with the backup flags, verified, kept locally): no snapshot, no restore
  2b the plan: what the restore replaces per table and which sessions it ends; the operator types the database name
  3  maintenance mode (suspend or the maintenance page), polled until Render shows it
  4  end the sessions still connected, then restore atomically within the restore scope
  5  verify: row counts equal the backup's, recent-data queries answer
  6  leave maintenance (on every exit path, unless --keep-suspended), then wait for the health URL to answer 200
  7  post-restore verification: health, critical endpoints, new Sentry issues, newest rows; a summary table
Exit status 0: restored and every check passed; 1: anything failed (the message says what production holds
and how to put the snapshot back); 3: refused (nothing was changed).

`--via BASTION` is for a production database that answers only from a bastion (ops.via): the guard judges it from
there, the snapshot's pg_dump and the restore's psql run there over SSH (the dump streams to psql, the snapshot
streams back here; nothing is left on the bastion), and every count and check is asked there. The rehearsal on
staging goes through the same bastion.

`--dry-run` runs every check (token, guard, download, verify, API reachability) and prints the plan: no
suspend, no snapshot, no restore, and the approval is not used up. It is enforced where the effects are: the
HTTP clients are built with dry_run=True (they refuse POST/PUT/PATCH/DELETE) and the database writers refuse.
"""
from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from . import emergency_plan as ep
from .config import Settings
from .emergency_plan import Check, Outcome, RestoreState, StepResult, Verdict
from .errors import ConfigError, GuardRefused, OpsError, ServiceError, VerificationFailed
from .tasking import task

DEFAULT_HEALTH_TIMEOUT = 300.0
DEFAULT_HEALTH_INTERVAL = 5.0
ISSUE_LABELS = ("production", "incident")
PLACEHOLDER_SHA = "0" * 64


def _cfg(settings: Settings, key: str, default: Any) -> Any:
    value = settings.get(f"emergency.{key}")
    return default if value in (None, "") else value


@dataclass
class Options:
    approve: str | None = None
    tag: str | None = None
    file: str | None = None
    confirm: str | None = None
    dry_run: bool = False
    keep_suspended: bool = False
    maintenance: str = "suspend"
    skip_rehearsal: str | None = None
    notify: bool = False
    dest: str | None = None
    schemas: list[str] | None = None
    via: str | None = None           # a bastion (ops.hosts name or [user@]host[:port]): the database answers there


@dataclass
class Backup:
    tag: str
    path: Path
    sha256: str
    size: int
    report: Any                      # ops.dumps.Report

    @property
    def tables(self) -> dict[str, int]:
        return dict(self.report.restored_tables() if hasattr(self.report, "restored_tables") else self.report.tables)


@dataclass
class Snapshot:
    path: Path
    sha256: str
    label: str


@dataclass(frozen=True)
class Done:
    """What a step function returns: its detail line, optionally another outcome than OK, and a value."""

    detail: str = ""
    outcome: Outcome = Outcome.OK
    value: Any = None


@dataclass
class Recipe:
    """One run of the emergency restore: its options, what it learned, what it did, and the audit trail."""

    settings: Settings
    opts: Options
    out: Callable[[str], None] = print
    ask: Callable[[str], str] | None = None
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    run_id: str = ""
    results: list[StepResult] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    state: RestoreState = RestoreState.NOT_STARTED
    target: Any = None               # guard.Target
    approval: Any = None             # tokens.Approval
    backup: Backup | None = None
    snapshot: Snapshot | None = None
    discard: list[ep.DiscardRow] = field(default_factory=list)
    issue: int | None = None
    restore_started_at: datetime | None = None
    maint: Any = None                # maintenance.Maintenance (built in the preflight)
    service_state: str = ""
    failed_step: str | None = None
    refused: bool = False
    record_path: Path | None = None
    db: Any = None                   # ops.via: Direct (this machine) or Bastion (--via), set for the run

    def __post_init__(self) -> None:
        if not self.run_id:
            self.run_id = f"{self.now():%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"

    # -- context -----------------------------------------------------------------------------------------------------
    @property
    def tag(self) -> str:
        return self.backup.tag if self.backup else (self.opts.tag or "")

    @property
    def schemas(self) -> tuple[str, ...] | None:
        """The restore's scope, as the restore engine reads it: --schemas, else ops.restore.schemas; None = all."""
        from . import restorer

        return restorer.configured_scope(self.settings, self.opts.schemas or restorer.CONFIGURED)

    def context(self) -> dict[str, Any]:
        """What every audit entry of this run carries (never the token, never a password)."""
        a = self.approval
        return {"run": self.run_id, "tag": self.tag or None, "sha256": self.backup.sha256 if self.backup else None,
                "nonce": a.nonce if a else None, "key_id": a.key_id if a else None,
                "approver": a.approver if a else None, "dry_run": self.opts.dry_run}

    def audit(self, action: str, outcome: str, **details: Any) -> None:
        from . import audit

        audit.record(self.settings, action, target=self.target.redacted if self.target else None, outcome=outcome,
                     **{**self.context(), **details})

    # -- steps -------------------------------------------------------------------------------------------------------
    def record(self, key: str, outcome: Outcome, detail: str, started: float) -> StepResult:
        detail = detail.splitlines()[0] if detail else ""   # one line; the full message is printed once, at the end
        result = StepResult(key, outcome, detail, time.monotonic() - started)
        self.results.append(result)
        self.out(f"    {outcome.value} ({result.seconds:.1f} s){': ' + detail if detail else ''}")
        self.audit(f"emergency.restore.{key}", outcome.value, title=" ".join(result.title.split()), detail=detail,
                   seconds=round(result.seconds, 3))
        if outcome in (Outcome.FAILED, Outcome.REFUSED) and self.failed_step is None:
            self.failed_step = key
        return result

    def step(self, key: str, fn: Callable[[], Done | str]) -> Any:
        """Run one step: print its title, run `fn` (-> Done or a detail line), print and audit the outcome;
        return the Done's value."""
        self.out(f"[{ep.TITLES[key].strip()}]")
        started = time.monotonic()
        try:
            got = fn()
        except GuardRefused as exc:
            self.record(key, Outcome.REFUSED, exc.message, started)
            raise
        except OpsError as exc:
            self.record(key, Outcome.FAILED, exc.message, started)
            raise
        except KeyboardInterrupt:
            self.record(key, Outcome.FAILED, "interrupted (Ctrl-C)", started)
            raise
        done = got if isinstance(got, Done) else Done(got or "")
        self.record(key, done.outcome, done.detail, started)
        return done.value

    # -- the whole run -------------------------------------------------------------------------------------------------
    def run(self) -> Verdict:
        from . import via

        error: BaseException | None = None
        try:
            with via.reach(self.settings, self.opts.via) as self.db:
                self._run()
        except GuardRefused as exc:
            self.refused, error = True, exc
        except (OpsError, KeyboardInterrupt) as exc:
            error = exc
        except Exception as exc:    # a bug: still say what production holds and record it, then show the traceback
            self._finish(ep.verdict(self.state, self.results, self.checks, error=True), exc)
            raise
        v = ep.verdict(self.state, self.results, self.checks, dry_run=self.opts.dry_run, refused=self.refused,
                       error=error is not None)
        self._finish(v, error)
        if ep.exit_code(v) == 0:
            return v
        if isinstance(error, GuardRefused):
            raise error
        raise self._failure(v, error)

    def _run(self) -> None:
        self.step("approval", self._approve)
        self.step("preflight", self._preflight)
        self.step("download", self._download)
        self.step("fit", self._fit)
        self.step("rehearsal", self._rehearsal)
        self.step("snapshot", self._take_snapshot)
        self.step("confirm", self._plan_and_confirm)
        if self.opts.dry_run:
            self.out("dry run: stopping here; nothing was suspended, snapshot, restored, and the approval was not used")
            return
        self.step("consume", self._use_approval)
        if self.opts.notify:
            self._notify_start()
        self._maintained_restore()

    # -- 0: approval and guard -----------------------------------------------------------------------------------------
    def _approve(self) -> Done:
        from . import approval as approvals
        from . import guard, tokens

        url = self.settings.env_var("DATABASE_URL")
        if not self.opts.approve:
            approvers = [k.comment or k.key_id for k in approvals.public_keys(self.settings)]
            dbname = guard.judge(self.settings, url, read_db_marker=False).dbname if url else None
            raise GuardRefused(ep.approval_help(approvers, self.opts.tag, dbname),
                               hint="nothing was changed; come back with --approve TOKEN")
        url = self.settings.require_env("DATABASE_URL", "the emergency restore restores the production database")
        claimed = (tokens.peek(self.opts.approve) or {}).get("params") or {}
        if not isinstance(claimed, Mapping):
            claimed = {}
        if not self.opts.tag:
            self.opts.tag = str(claimed.get("tag") or "") or None
        if not self.opts.tag:
            raise GuardRefused("no backup named: give --tag TAG (the approval names none)",
                               hint="the approver's `inv emergency.approve --tag TAG` binds the backup")
        # Checked now against the SHA-256 the token claims, so a bad token stops before any download; checked
        # again against the real SHA-256 once the backup is here, and once more right before it is used.
        sha = str(claimed.get("sha256") or PLACEHOLDER_SHA)
        check = approvals.approval_checker(self.settings, self.opts.approve, "restore",
                                           {"tag": self.opts.tag, "sha256": sha})
        self.target = guard.require(self.settings, url, action="emergency.restore", emergency=True,
                                    approval=cast(Any, check), vantage=self.db.vantage)
        a = self.approval = check.approval
        assert a is not None    # the guard called the checker on this production target, or raised
        return Done(f"{self.target.dbname}: approved by {a.approver or '?'} (key {a.key_id}), nonce {a.nonce}, "
                    f"expires {_iso(a.expires_at)}; reason: {a.reason or '-'}"
                    + (f"; judged from {self.db.name}" if self.db.remote else ""))

    def _recheck(self, sha256: str) -> Any:
        from . import approval as approvals
        from . import guard

        check = approvals.approval_checker(self.settings, self.opts.approve or "", "restore",
                                           {"tag": self.tag, "sha256": sha256})
        guard.require(self.settings, self.target.url, action="emergency.restore", emergency=True,
                      approval=cast(Any, check), vantage=self.db.vantage)
        return check

    def _use_approval(self) -> Done:
        from . import approval as approvals

        assert self.backup is not None
        check = self._recheck(self.backup.sha256)       # still valid: not expired, not used meanwhile
        approvals.consume(self.settings, check.approval, target=self.target.redacted)
        self.approval = check.approval
        return Done(f"approval {check.approval.nonce} used (single use, recorded in the audit log)")

    # -- 0b: preflight -------------------------------------------------------------------------------------------------
    def _preflight(self) -> Done:
        from . import maintenance, pg
        from .clients.render import Render

        server = self.db.server_version(self.target.conninfo)
        psql, psql_version = self.db.find_psql()
        pg_dump, pg_dump_version = self.db.find_pg_dump(server)   # at least the server's major: the snapshot
        tools = [f"psql {'.'.join(map(str, psql_version))}",
                 f"pg_dump {'.'.join(map(str, pg_dump_version))}",
                 "server {}.{}".format(*pg.version_tuple(server))]
        if self.db.remote:
            tools[-1] += f" (psql, pg_dump and the database reached on {self.db.name})"
        health_url = self.settings.get("app.health_url")
        if not health_url:
            raise ConfigError("setting ops.app.health_url is not set (step 6 waits for it to answer 200)",
                              hint="add the app's health URL under ops: app: health_url")
        self.maint = self._maintenance(Render.from_settings(self.settings, dry_run=self.opts.dry_run))
        self.service_state = maintenance.describe(self.maint.service())
        probe = self._app().probe(health_url)
        sentry = "not configured (skipped at the end)"
        if self._sentry_configured():
            self._sentry().issues(limit=1)
            sentry = "reachable"
        return Done(f"{', '.join(tools)}; Render: {self.service_state}; health now: "
                    f"{probe.status or probe.error}; Sentry: {sentry}")

    def _maintenance(self, render: Any) -> Any:
        from . import maintenance

        return maintenance.Maintenance(render, self.opts.maintenance)

    def _app(self) -> Any:
        from .clients.app import App

        return App.from_settings(self.settings)

    def _sentry_configured(self) -> bool:
        return bool(self.settings.get("sentry.org") and self.settings.get("sentry.project")
                    and self.settings.env_var("SENTRY_AUTH_TOKEN"))

    def _sentry(self) -> Any:
        from .clients.sentry import Sentry

        return Sentry.from_settings(self.settings, dry_run=self.opts.dry_run)

    # -- 1: download and verify ----------------------------------------------------------------------------------------
    def _download(self) -> Done:
        from . import download, dumps

        if self.opts.file:
            path = Path(self.opts.file).expanduser()
            download.ensure_complete(path)
            if not path.is_file():
                raise ConfigError(f"{path} is not a file", hint="give the path of a .sql.gz backup or snapshot")
            sha, size, how = download.sha256_file(path), path.stat().st_size, "local file"
        else:
            from .clients.github import GitHub

            github = GitHub.from_settings(self.settings, dry_run=self.opts.dry_run)
            prefix = self.settings.get("github.backup_prefix", "backup-")
            chosen = download.choose_backup([github.release_by_tag(self.tag)], prefix, self.tag)
            got = download.fetch(github, chosen, self._backup_dir())
            path, sha, size = got.path, got.sha256, got.size
            how = "already here" if got.reused else "downloaded"
        report = dumps.inspect(path)
        if not report.ok:
            raise VerificationFailed(f"{path.name} failed verification: {report.problems[0]}",
                                     hint=report.problems[0].hint)
        self.backup = Backup(self.opts.tag or "", path, sha, size, report)
        self._recheck(sha)   # the approval must name this very file: wrong-backup (exit 3) otherwise
        rows = sum(self.backup.tables.values())
        return Done(f"{how}: {path} ({size} bytes, sha256 {sha}); verified: pg_dump "
                    f"{report.pg_dump_version or '?'}, {len(self.backup.tables)} tables, {rows} rows; "
                    "the approval names this file")

    def _fit(self) -> Done:
        """The restore engine's dry pass against production (read-only): the whole stream screened and filtered,
        and nothing in scope may be left out (a production restore is never partial)."""
        from . import restorer

        try:
            result = self._engine(dry_run=True)
        except restorer.RestoreFailed as exc:
            raise VerificationFailed(f"the backup cannot be restored into production as it is: {exc.message}",
                                     hint=exc.hint or "nothing was changed; fix the target or pick another "
                                                      "backup") from None
        adapted = result.report.adaptations if result.report is not None else []
        return Done(f"every object in scope can be restored; {len(result.left_out)} entries outside the scope stay "
                    "untouched" + ("; adapted: " + "; ".join(adapted) if adapted else ""))

    def _engine(self, *, dry_run: bool) -> Any:
        assert self.backup is not None
        return self.db.restore(self.target, self.backup.path, schemas=self.schemas, dry_run=dry_run,
                               production=True, sha256=self.backup.sha256, tag=self.tag)

    def _backup_dir(self) -> Path:
        configured = self.opts.dest or self.settings.get("restore.backup_dir")
        return Path(configured).expanduser() if configured else self.settings.state_dir / "backups"

    # -- 1b: rehearsal -------------------------------------------------------------------------------------------------
    def _rehearsal(self) -> Done:
        from . import audit

        assert self.backup is not None
        entry = ep.rehearsal_on_record(audit.entries(self.settings), self.backup.sha256)
        if entry is not None:
            return Done(f"a passing restore.test of this SHA-256 is on record ({entry.get('time')}, "
                        f"{entry.get('user')})")
        if self.opts.skip_rehearsal:
            return Done(f"none on record; skipped on purpose: {self.opts.skip_rehearsal}", Outcome.SKIPPED)
        if self.opts.dry_run:
            return Done("none on record: a real run rehearses into a scratch database on staging first",
                        Outcome.PLANNED)
        return Done(self._rehearse())

    def _rehearse(self) -> str:
        """`restore.test` (issue 3) of this very file into a scratch database on the staging server."""
        from . import restore as restore_tasks

        assert self.backup is not None
        result = restore_tasks.rehearse(self.settings, self.backup.path, tag=self.tag, sha256=self.backup.sha256,
                                        schemas=self.opts.schemas, db=self.db)
        if not result.passed:
            raise VerificationFailed(f"the rehearsal on staging failed: {result.summary}",
                                     hint="production was not touched; read the rehearsal report, or pick another "
                                          "backup (--skip-rehearsal REASON skips it, on the record)")
        return f"rehearsed now on staging: passed ({result.summary})"

    # -- 2: snapshot ---------------------------------------------------------------------------------------------------
    def _snapshot_dir(self) -> Path:
        configured = _cfg(self.settings, "snapshot_dir", "")
        return Path(configured).expanduser() if configured else self.settings.state_dir / "snapshots"

    def _take_snapshot(self) -> Done:
        """pg_dump of production with the backup flags, gzip, verified (issue 3's backup.create machinery)."""
        label = ep.snapshot_label(self.now())
        # unique per run (two runs in one second must not share a file) and never overwritten: the file being
        # restored with --file may itself be an earlier snapshot
        path = self._snapshot_dir() / f"{label}_{self.target.dbname}_{self.run_id.rsplit('-', 1)[-1]}.sql.gz"
        if path.exists():
            raise ConfigError(f"{path} already exists; refusing to overwrite a snapshot",
                              hint="run again (the name changes each run) or move the old file away")
        if self.opts.dry_run:
            return Done(f"would write {path} (pg_dump with the backup flags, verified)", Outcome.PLANNED)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create the snapshot directory {path.parent}: {exc.strerror}",
                              hint="set ops.emergency.snapshot_dir to a writable directory with room for a dump "
                                   "of production") from None
        made = self.db.dump_to(self.target, path)       # pg_dump here, or on the bastion streaming back here
        self.snapshot = Snapshot(Path(made.path), made.sha256, label)
        self.out(f"    snapshot: {made.path}")
        return Done(f"{made.path} ({made.size} bytes, sha256 {made.sha256}), verified")

    # -- 2b: plan and confirmation -------------------------------------------------------------------------------------
    def _plan_and_confirm(self) -> Done:
        assert self.backup is not None
        now_counts = self.db.table_counts(self.target.conninfo, self.schemas)
        self.discard = ep.discard_rows(now_counts, self.backup.tables, self.schemas)
        sessions = self.db.list_sessions(self.target.conninfo)
        plan = ep.Plan(
            target=self.target.redacted, dbname=self.target.dbname, tag=self.tag, sha256=self.backup.sha256,
            backup_file=str(self.backup.path), backup_size=self.backup.size, backup_tables=len(self.backup.tables),
            backup_rows=sum(self.backup.tables.values()), approval=self.results[0].detail,
            rehearsal=next((r.detail for r in self.results if r.key == "rehearsal"), ""),
            snapshot=next((r.detail for r in self.results if r.key == "snapshot"), ""),
            maintenance=self.opts.maintenance, service=self.service_state, keep_suspended=self.opts.keep_suspended,
            sessions=[ep.session_line(s) for s in sessions], discard=self.discard, schemas=self.schemas,
            checks=self._check_list(), notify="GitHub issue (labels production, incident)" if self.opts.notify else "",
            dry_run=self.opts.dry_run)
        self.out(ep.render_plan(plan))
        summary = (f"{len(self.discard)} tables in scope, {len(sessions)} sessions to end; "
                   f"rows now {sum(r.now or 0 for r in self.discard)}, in backup "
                   f"{sum(r.backup or 0 for r in self.discard)}")
        typed = self.opts.confirm
        if typed is None:
            if self.opts.dry_run:
                return Done(f"plan shown; a real run asks to type {self.target.dbname!r}; {summary}", Outcome.PLANNED)
            typed = self._ask_dbname()
        if typed != self.target.dbname:
            raise GuardRefused(f"confirmation does not match: typed {typed!r}, the database is "
                               f"{self.target.dbname!r}; nothing was restored",
                               hint=f"type the database name exactly, or pass --confirm {self.target.dbname}")
        return Done(f"confirmed: {typed!r} typed; {summary}")

    def _ask_dbname(self) -> str:
        prompt = f"Type the database name ({self.target.dbname}) to restore it from {self.tag}: "
        if self.ask is not None:
            return self.ask(prompt).strip()
        if not sys.stdin.isatty():
            raise GuardRefused("not confirmed: no terminal to ask on",
                               hint=f"pass --confirm {self.target.dbname} for a non-interactive run")
        print(prompt, end="", file=sys.stderr, flush=True)
        return sys.stdin.readline().strip()

    def _check_list(self) -> list[str]:
        s = self.settings
        recent = s.get("verify.recent") or []
        return [f"health: {s.get('app.health_url') or 'not configured'}",
                f"endpoints: {len(s.get('app.endpoints') or [])} configured",
                "Sentry: new issues since the restore started" + ("" if self._sentry_configured()
                                                                   else " (not configured: skipped)"),
                f"recent data: {len(recent)} queries"]

    # -- 3..6: maintenance, sessions, restore, verify, leave -----------------------------------------------------------
    def _maintained_restore(self) -> None:
        from . import maintenance

        m = self.maint
        self.out(f"[{ep.TITLES['maintenance'].strip()}]")
        started = time.monotonic()
        entered = False
        try:
            with maintenance.maintained(m, keep=self.opts.keep_suspended, report=self._left):
                entered = True
                self.record("maintenance", Outcome.OK, m.entered.detail if m.entered else "", started)
                self.step("sessions", self._end_sessions)
                self.step("restore", self._restore)
                self.step("verify", self._verify)
        except (OpsError, KeyboardInterrupt) as exc:
            if not entered:
                self.record("maintenance", Outcome.FAILED, getattr(exc, "message", "interrupted (Ctrl-C)"), started)
            if m.left is not None and m.left.ok and not self.opts.keep_suspended:
                self._health(quick=True)
            raise
        if not self.opts.keep_suspended:
            self._health()
        self._post_checks()

    def _left(self, outcome: Any) -> None:
        self.out(f"[{ep.TITLES['resume'].strip()}]")
        self.results.append(StepResult("resume", Outcome.OK if outcome.ok else Outcome.FAILED, outcome.detail,
                                       outcome.seconds))
        self.out(f"    {'ok' if outcome.ok else 'FAILED'} ({outcome.seconds:.1f} s): {outcome.detail}")
        self.audit("emergency.restore.resume", "ok" if outcome.ok else "failed", title="6 leave maintenance",
                   detail=outcome.detail, seconds=round(outcome.seconds, 3))
        if not outcome.ok and self.failed_step is None:
            self.failed_step = "resume"

    def _end_sessions(self) -> str:
        ended = self.db.end_sessions(self.target.conninfo, dry_run=self.opts.dry_run)
        done = [s for s in ended if s.get("terminated")]
        missed = [s for s in ended if not s.get("terminated")]
        text = f"ended {len(done)} session(s)" + (": " + "; ".join(ep.session_line(s) for s in done) if done else "")
        if missed:
            text += f"; could not end {len(missed)}: " + ", ".join(ep.session_line(s) for s in missed)
        return text

    def _restore(self) -> str:
        """The atomic restore (issue 3's engine): one transaction, row counts checked inside it, COMMIT only when the
        stream was whole and clean; anything else kills psql and the server rolls back."""
        from . import restorer

        self.restore_started_at = self.now()
        # Ctrl-C: the engine kills psql and raises RestoreInterrupted, committed=False before COMMIT went out
        # (rolled back), None after it (UNKNOWN: "fully restored or exactly as before, never half").
        self.state = RestoreState.UNKNOWN
        try:
            result = self._engine(dry_run=self.opts.dry_run)
        except restorer.RestoreFailed as exc:
            self.state = (RestoreState.COMMITTED if exc.committed is True else RestoreState.ROLLED_BACK
                          if exc.committed is False else RestoreState.UNKNOWN)
            raise
        except OpsError:
            self.state = RestoreState.ROLLED_BACK    # raised before anything was sent
            raise
        self.state = RestoreState.COMMITTED
        for w in result.warnings:
            self.out(f"    warning: {w}")
        return f"committed: {result.summary}"

    def _verify(self) -> str:
        """Step 5, after the COMMIT: every table in scope holds the backup's rows; the recent-data queries answer."""
        from . import restore as restore_tasks

        assert self.backup is not None
        report = restore_tasks.check_database(self.target.conninfo, self.backup.tables, self.schemas,
                                              self.settings.get("verify.recent") or [], db=self.db)
        if not report.ok:
            raise VerificationFailed("after the restore: " + "; ".join(report.problems[:5]),
                                     hint="production holds the restored data (it committed); compare with the "
                                          "backup's report (inv restore.verify FILE)")
        recent = ", ".join(f"{r['table']} newest {r['newest']}" for r in report.recent) or "no recent-data queries"
        return f"{len(report.tables)} tables hold the backup's row counts; {recent}"

    # -- 6 and 7: health and post-restore checks -----------------------------------------------------------------------
    def _health(self, quick: bool = False) -> None:
        timeout = float(_cfg(self.settings, "health_timeout", DEFAULT_HEALTH_TIMEOUT))
        interval = float(_cfg(self.settings, "health_interval", DEFAULT_HEALTH_INTERVAL))
        probe = self._app().wait_healthy(timeout=min(timeout, 30.0) if quick else timeout, interval=interval)
        detail = f"{probe.status} in {probe.latency_ms:.0f} ms" if probe.ok else f"not healthy: {probe.error}"
        self.checks.append(Check("health (after leaving maintenance)", probe.ok, detail))
        self.out(f"    health: {'200' if probe.ok else detail}")

    def _post_checks(self) -> None:
        self.out(f"[{ep.TITLES['postcheck'].strip()}]")
        started = time.monotonic()
        if self.opts.keep_suspended:
            self.checks.append(Check("health and endpoints", None, "skipped: the service is kept suspended"))
        else:
            for probe in self._app().check_endpoints():
                self.checks.append(Check(f"endpoint {probe.url}", probe.ok,
                                         f"{probe.status} in {probe.latency_ms:.0f} ms" if probe.ok else probe.error))
        self.checks.append(self._sentry_check())
        for r in self.db.recent_data(self.target.conninfo, self.settings.get("verify.recent") or []):
            self.checks.append(Check(f"newest row of {r['table']}", not r.get("error"),
                                     r.get("error") or f"{r['rows']} rows, newest {r['newest']}"))
        failed = [c for c in self.checks if c.ok is False]
        self.record("postcheck", Outcome.FAILED if failed else Outcome.OK,
                    f"{len(self.checks) - len(failed)} of {len(self.checks)} checks passed or skipped", started)

    def _sentry_check(self) -> Check:
        if not self._sentry_configured():
            return Check("Sentry: new issues", None, "not configured (ops.sentry.org/project, SENTRY_AUTH_TOKEN)")
        since = self.restore_started_at or self.now()
        try:
            issues = self._sentry().issues(ep.sentry_query(since, self.now()), stats_period="")
        except OpsError as exc:
            return Check("Sentry: new issues", False, f"could not ask Sentry: {exc.message}")
        new = ep.first_seen_since(issues, since)
        if not new:
            return Check("Sentry: new issues", True, f"none first seen since {since:%H:%M:%S} UTC")
        return Check("Sentry: new issues", False, f"{len(new)} first seen since the restore: "
                     + "; ".join(f"{i.short_id} {i.title}" for i in new[:5]))

    # -- notify --------------------------------------------------------------------------------------------------------
    def _github(self) -> Any:
        from .clients.github import GitHub

        return GitHub.from_settings(self.settings, dry_run=self.opts.dry_run)

    def _notify_start(self) -> None:
        def open_issue() -> str:
            a = self.approval
            body = "\n".join([
                f"An emergency restore of the production database `{self.target.dbname}` is starting.",
                "", f"- backup: `{self.tag}` (sha256 `{self.backup.sha256 if self.backup else '?'}`)",
                f"- approved by: {a.approver or a.key_id} (reason: {a.reason or '-'})",
                f"- run: `{self.run_id}`; the app goes into maintenance ({self.opts.maintenance}) now",
                "", "This issue is commented when the restore ends, and closed only if it succeeded."])
            issue = self._github().create_issue(f"Emergency production restore from {self.tag}", body,
                                                labels=ISSUE_LABELS)
            self.issue = int(issue["number"])
            return f"opened issue #{self.issue}"
        try:
            self.step("notify", open_issue)
        except OpsError:
            self.checks.append(Check("notify: GitHub issue", False, "could not open the issue (see above)"))

    def _notify_end(self, v: Verdict, message: str) -> None:
        if self.issue is None:
            return
        try:
            github = self._github()
            github.comment_issue(self.issue, f"**{v.value}**\n\n```\n{message}\n```")
            if v is not Verdict.OK:       # the incident is not over: the issue stays open for whoever picks it up
                self.out(f"notify: commented on issue #{self.issue}, left open (the restore did not succeed)")
                return
            github.close_issue(self.issue, reason="completed")
            self.out(f"notify: commented and closed issue #{self.issue}")
        except OpsError as exc:
            self.out(f"notify: could not comment on or close issue #{self.issue}: {exc.message}")

    # -- the end -------------------------------------------------------------------------------------------------------
    def state_text(self) -> str:
        snap = self.snapshot
        return ep.state_message(self.state, tag=self.tag, dbname=self.target.dbname if self.target else "production",
                                failed_step=self.failed_step, snapshot=str(snap.path) if snap else None,
                                snapshot_sha=snap.sha256 if snap else None,
                                snapshot_label_=snap.label if snap else None)

    def _finish(self, v: Verdict, error: BaseException | None) -> None:
        from . import audit, incident_record

        message = self.state_text() if not self.refused and not self.opts.dry_run else v.value
        if error is not None and not self.refused:
            self.out("")
            self.out(f"FAILED: {_message(error)}")
        if v is not Verdict.OK and not self.refused and not self.opts.dry_run:
            self.out(message)
        self.out(ep.render_summary(self.results, self.checks, v))
        if self.approval is None and self.refused:
            self.audit("emergency.restore", "refused", verdict=v.value, exit_code=ep.exit_code(v),
                       reason=_message(error) if error else "")
            return
        self.audit("emergency.restore", v.name, verdict=v.value, exit_code=ep.exit_code(v), state=self.state.value,
                   reason=self.approval.reason if self.approval else None,
                   skip_rehearsal=self.opts.skip_rehearsal,
                   snapshot=str(self.snapshot.path) if self.snapshot else None,
                   snapshot_sha256=self.snapshot.sha256 if self.snapshot else None,
                   discard=[{"table": r.table, "now": r.now, "backup": r.backup} for r in self.discard],
                   checks=[{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
                   message=message, issue=self.issue)
        if not self.opts.dry_run:
            self._notify_end(v, message)
        self.record_path = self._record_dir() / f"emergency-restore-{self.run_id}.md"
        self.record_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.record_path.write_text(incident_record.render(audit.entries(self.settings), self.run_id),
                                    encoding="utf-8")
        self.out(f"incident record: {self.record_path}")

    def _record_dir(self) -> Path:
        configured = _cfg(self.settings, "record_dir", "")
        return Path(configured).expanduser() if configured else self.settings.state_dir / "incidents"

    def _failure(self, v: Verdict, error: BaseException | None) -> OpsError:
        why = _message(error) if error else "a post-restore check failed (see the summary)"
        if v is Verdict.RESTORED_CHECK_FAILED:
            return VerificationFailed(f"{v.value}: {why}",
                                      hint="the data is restored: do not restore again; fix what failed "
                                           f"(record: {self.record_path})")
        return OpsError(f"{v.value}: {why}", hint=f"see the message above and the incident record {self.record_path}")


def _message(error: BaseException | None) -> str:
    if error is None:
        return ""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return getattr(error, "message", None) or str(error)


def _iso(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- tasks -------------------------------------------------------------------------------------------------------------
@task(auto_shortflags=False, help={
    "approve": "The approval token an approver made with `inv emergency.approve --tag TAG` (required)",
    "tag": "Backup release tag to restore (default: the one the approval names)",
    "file": "Restore a local .sql.gz instead of downloading (e.g. the snapshot of an earlier run)",
    "confirm": "The production database's name, typed in advance (for non-interactive runs)",
    "dry_run": "Run every check and print the plan; suspend, snapshot and restore nothing; keep the approval",
    "keep_suspended": "Leave the app in maintenance at the end (you resume it yourself)",
    "maintenance": "suspend (default: suspend the Render service) or page (Render's maintenance page)",
    "skip_rehearsal": "Skip the staging rehearsal when none is on record; give the reason (it is recorded)",
    "notify": "Open a GitHub issue (labels production, incident) at the start; comment at the end; close it on success",
    "dest": "Directory for the downloaded backup (default ops.restore.backup_dir or the state directory)",
    "schemas": "Schemas to restore, comma-separated, or 'all' (default ops.restore.schemas)",
    "via": "Reach production through this bastion (a name in ops.hosts, or user@host:port): the guard judges it "
           "from there, pg_dump and psql run there over SSH (the snapshot streams back here), nothing is left there",
})
def restore(c, approve=None, tag=None, file=None, confirm=None, dry_run=False, keep_suspended=False,
            maintenance=None, skip_rehearsal=None, notify=False, dest=None, schemas=None, via=None):
    """Restore production from a backup, with a signed two-person approval (the runbook's seven steps).

    Without --approve it explains how to get one. Every step is printed with its outcome and timing and goes into
    the audit log; an incident record (Markdown) is written at the end and its path printed.
    """
    settings = Settings.from_context(c)
    mode = maintenance or _cfg(settings, "maintenance", "suspend")
    if mode not in ("suspend", "page"):
        raise ConfigError(f"--maintenance {mode!r} is not one of suspend, page",
                          hint="--maintenance suspend (default) or --maintenance page")
    if skip_rehearsal is not None and not str(skip_rehearsal).strip():
        raise ConfigError("--skip-rehearsal needs a reason", hint='--skip-rehearsal "why it is skipped"')
    opts = Options(approve=approve, tag=tag, file=file, confirm=confirm, dry_run=bool(dry_run),
                   keep_suspended=bool(keep_suspended), maintenance=mode, skip_rehearsal=skip_rehearsal,
                   notify=bool(notify), dest=dest, via=via or None,
                   schemas=[s.strip() for s in schemas.split(",") if s.strip()] if schemas else None)
    Recipe(settings, opts).run()


@task(help={"verify": "Check the hash chain of the audit log (exit 1 if broken)",
            "run": "Show only the entries of this emergency restore run",
            "record": "Write the Markdown incident record of this run and print its path",
            "tail": "Show the last N entries (default 20)"})
def audit(c, verify=False, run=None, record=None, tail=20):
    """Show the audit log, check its hash chain, or write a run's incident record."""
    import json

    from . import audit as audit_log
    from . import incident_record

    settings = Settings.from_context(c)
    path = settings.audit_log
    entries = audit_log.entries(settings)
    if record:
        configured = _cfg(settings, "record_dir", "")
        out = (Path(configured).expanduser() if configured else settings.state_dir / "incidents") / \
            f"emergency-restore-{record}.md"
        out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        out.write_text(incident_record.render(entries, record), encoding="utf-8")
        print(out)
        return
    if verify:
        problems = audit_log.verify(settings)
        if problems:
            raise VerificationFailed(f"audit log {path} is not intact: " + "; ".join(problems[:5])
                                     + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""),
                                     hint="an entry was edited, removed or inserted; keep the file as evidence")
        print(f"audit log {path}: {len(entries)} entries, hash chain intact")
        return
    shown = [e for e in entries if run is None or (e.get("details") or {}).get("run") == run]
    for e in shown[-int(tail):] if not run else shown:
        print(json.dumps(e, sort_keys=True, ensure_ascii=False))
    if not shown:
        print(f"no entries{' for run ' + run if run else ''} in {path}", file=sys.stderr)
