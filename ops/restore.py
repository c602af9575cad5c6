"""Restores: download, verify and restore database backups (runbook: Database Restore Procedures).

Each runbook step is a task; `restore.staging` composes them: download -> verify -> guard -> confirm -> restore ->
check. The restore is one transaction that COMMITs only a complete, clean backup whose row counts match.
"""
from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tasking import task

SCHEMAS_HELP = "Schemas the restore replaces: a,b or all (default ops.restore.schemas, i.e. public)"
VIA_HELP = ("Reach the database through this bastion (a name in ops.hosts, or user@host:port): psql runs there, "
            "the dump streams to it over SSH, the guard judges the target from there")


# -- plain functions the tasks (and emergency.restore) share ------------------------------------------------------------
@dataclass(frozen=True)
class BackupFile:
    path: Path
    sha256: str
    size: int
    tag: str | None = None
    how: str = "local file"


def backup_dir(settings: Any, dest: str | None = None) -> Path:
    configured = dest or settings.get("restore.backup_dir")
    return Path(configured).expanduser() if configured else settings.state_dir / "backups"


def fetch_backup(settings: Any, tag: str | None = None, dest: str | None = None) -> BackupFile:
    """The backup release asset (latest, or `tag`) downloaded into the backup directory, checked."""
    from . import download
    from .clients.github import GitHub
    from .errors import ServiceError

    github = GitHub.from_settings(settings)
    prefix = settings.get("github.backup_prefix", "backup-")
    releases = [github.release_by_tag(tag)] if tag else github.releases()
    chosen = download.choose_backup(releases, prefix, tag)
    print(f"backup: {chosen.tag} ({chosen.name}, {chosen.size:,} bytes"
          + (", sha256 from GitHub" if chosen.digest else ", GitHub gives no digest") + ")", file=sys.stderr)
    try:
        with download.ProgressBar(f"downloading {chosen.name}", chosen.size) as bar:
            got = download.fetch(github, chosen, backup_dir(settings, dest), progress=bar)
    except ServiceError as exc:
        raise ServiceError(exc.message, hint=exc.hint or "run again: the download resumes") from None
    how = "already downloaded" if got.reused else (f"resumed from byte {got.resumed_from:,}" if got.resumed_from
                                                   else "downloaded")
    return BackupFile(got.path, got.sha256, got.size, chosen.tag, how)


def local_backup(file: str) -> BackupFile:
    from . import download
    from .errors import ConfigError

    path = Path(file).expanduser()
    download.ensure_complete(path)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file", hint="give the path of a .sql.gz backup (inv restore.download)")
    return BackupFile(path, download.file_sha256(path), path.stat().st_size)


def resolve_backup(settings: Any, tag: str | None, file: str | None, dest: str | None = None) -> BackupFile:
    from .errors import ConfigError

    if tag and file:
        raise ConfigError("--tag and --file both given", hint="use --tag to download a release, or --file for a file")
    return local_backup(file) if file else fetch_backup(settings, tag, dest)


def confirm(target: Any, backup: BackupFile, schemas: tuple[str, ...] | None) -> None:
    """Show target and backup; the operator types the database name (not "y")."""
    from .errors import GuardRefused

    scope = "every schema in the backup" if schemas is None else "schemas " + ", ".join(schemas)
    print(f"About to replace {scope} of\n  {target.redacted}\nwith\n  {backup.path.name} "
          f"({backup.size:,} bytes, sha256 {backup.sha256}{', tag ' + backup.tag if backup.tag else ''})",
          file=sys.stderr)
    if not sys.stdin.isatty():
        raise GuardRefused("confirmation needed and stdin is not a terminal",
                           hint="run it in a terminal, or pass --yes after checking the target and backup above")
    typed = input(f"Type the database name ({target.dbname}) to continue: ").strip()
    if typed != target.dbname:
        raise GuardRefused(f"confirmation failed: typed {typed!r}, expected {target.dbname!r}; nothing was changed")


def render_plan(target: Any, backup: BackupFile, result: Any) -> str:
    rep = result.report
    lines = ["plan (dry run: nothing was changed)",
             f"backup: {backup.path} ({backup.size:,} bytes, sha256 {backup.sha256}"
             + (f", tag {backup.tag}" if backup.tag else "") + ")",
             target.explain()]
    if rep is not None:
        lines.append(f"pg_dump {rep.pg_dump_version or '?'} of PostgreSQL {rep.server_version or '?'}")
        tables = result.tables
        lines.append(f"tables restored: {len(tables)} holding {sum(tables.values()):,} rows")
        width = max((len(t) for t in tables), default=0)
        lines += [f"  {name:<{width}}  {n:>12,}" for name, n in sorted(tables.items())]
    lines.append(result.render())
    return "\n".join(lines)


@dataclass
class CheckReport:
    """restore.check: every table of the backup (in scope) against the database, then the recent-data queries."""

    tables: dict[str, tuple[int, int | None]] = field(default_factory=dict)   # name -> (backup, database)
    recent: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "recent": self.recent,
                "tables": {k: {"backup": b, "database": d, "ok": b == d} for k, (b, d) in self.tables.items()}}

    def render(self) -> str:
        width = max((len(t) for t in self.tables), default=0)
        out = [f"{'OK' if ok else 'MISMATCH':<8} {name:<{width}}  backup {b:>10,}  database "
               + (f"{d:>10,}" if d is not None else "   missing")
               for name, (b, d) in sorted(self.tables.items()) for ok in [b == d]]
        for r in self.recent:
            out.append(f"{'OK' if not r.get('error') else 'FAILED':<8} recent {r['table']}: "
                       + (r.get("error") or f"{r['rows']:,} rows, newest {r['newest']}"))
        out.append("check passed" if self.ok else f"check FAILED: {len(self.problems)} problem(s)")
        return "\n".join(out)


def check_database(conninfo: str, expected: dict[str, int], schemas: tuple[str, ...] | None,
                   recent: list[Any], *, counts: bool = True, db: Any = None) -> CheckReport:
    """Compare row counts (tables the backup does not hold are ignored) and run the recent-data queries.
    `db`: where the database is reached from (ops.via; default this machine)."""
    from .restoresql import split_table
    from .via import Direct

    db = db or Direct(None)
    report = CheckReport()
    if counts:
        actual = db.table_counts(conninfo, schemas)
        for name, rows in sorted(expected.items()):
            if schemas is not None and split_table(name)[0] not in schemas:
                continue
            report.tables[name] = (rows, actual.get(name))
            if actual.get(name) != rows:
                got = actual.get(name)
                report.problems.append(f"{name}: the backup holds {rows:,} rows, the database "
                                       + (f"{got:,}" if got is not None else "has no such table"))
    report.recent = db.recent_data(conninfo, recent)
    report.problems += [f"recent data {r['table']}: {r['error']}" for r in report.recent if r.get("error")]
    return report


@dataclass
class Rehearsal:
    passed: bool
    summary: str
    seconds: float
    tables: dict[str, int]
    result: Any = None
    check: CheckReport | None = None

    @property
    def interrupted(self) -> bool:
        """Ctrl-C stopped the restore (the scratch database was dropped all the same)."""
        from .restorer import RestoreInterrupted

        return self.result is not None and isinstance(self.result.error, RestoreInterrupted)


def rehearse(settings: Any, path: Path, *, tag: str | None = None, sha256: str | None = None,
             url: str | None = None, schemas: Any = None, create_roles: bool = False, db: Any = None) -> Rehearsal:
    """restore.test: restore into a scratch database made for it on the staging server (or `url`), check it, drop it
    whatever happened, and record the outcome in the audit log (action restore.test, with the SHA-256).
    `schemas` as the --schemas flag gives it (None: the configured scope); `db`: where the server is reached from
    (ops.via: this machine by default, or a bastion)."""
    from . import audit, download, guard, restorer
    from .errors import OpsError
    from .via import Direct

    db = db or Direct(settings)
    server_url = url or settings.require_env("STAGING_DATABASE_URL", "restore.test rehearses on the staging server")
    sha256 = sha256 or download.file_sha256(path)
    db.find_psql()
    server = guard.require(settings, server_url, action="restore.test", vantage=db.vantage)
    name = f"{guard.SCRATCH_PREFIX}{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
    scratch = guard.require_scratch(settings, server_url, name, action="restore.test", vantage=db.vantage)
    started = time.monotonic()
    result = check = None
    problems: list[str] = []
    db.create_database(server.conninfo, name)
    try:
        plan = restorer.plan_from_settings(settings, path, schemas=restorer.configured_scope(settings, schemas),
                                           create_roles=create_roles, sha256=sha256, tag=tag)
        result = db.restore_stream(scratch, plan)
        problems += result.problems
        if result.committed:
            check = check_database(scratch.conninfo, result.tables, plan.schemas,
                                   settings.get("verify.recent") or [], db=db)
            problems += check.problems
    except OpsError as exc:
        problems.append(exc.message)
    finally:
        db.drop_database(server.conninfo, name)
    seconds = time.monotonic() - started
    tables = result.tables if result is not None else {}
    passed = bool(result is not None and result.committed and not problems)
    summary = (f"{len(tables)} tables, {sum(tables.values()):,} rows restored and checked in {seconds:.1f} s"
               if passed else f"failed after {seconds:.1f} s: {problems[0] if problems else 'no result'}")
    audit.record(settings, "restore.test", target=scratch.redacted, outcome="pass" if passed else "fail",
                 passed=passed, tag=tag, sha256=sha256, backup=path.name, duration_s=round(seconds, 3),
                 tables=tables, problems=problems[:20], scratch=name,
                 **({"via": db.name} if db.remote else {}))
    return Rehearsal(passed, summary, seconds, tables, result, check)


# -- tasks ---------------------------------------------------------------------------------------------------------------
@task(help={"tag": "Backup release tag (default: the newest backup-* release)",
            "dest": "Directory to download into (default ops.restore.backup_dir, else <state dir>/backups)"})
def download(c, tag=None, dest=None):
    """Download a backup release asset: resumable, retried, size and SHA-256 checked, .sha256 written beside it."""
    from .config import Settings

    got = fetch_backup(Settings.from_context(c), tag, dest)
    print(f"{got.path}\n  {got.how}: {got.size:,} bytes, sha256 {got.sha256}, tag {got.tag}")


@task(help={"file": "Backup file (.sql.gz)", "out": "Where to write the SQL (default: FILE without .gz)"})
def extract(c, file, out=None):
    """Decompress a .sql.gz backup (runbook step 2), checking gzip's CRC and length and pg_dump's footer."""
    from . import restorer

    dest = restorer.extract(Path(file).expanduser(), Path(out).expanduser() if out else None)
    print(f"{dest} ({dest.stat().st_size:,} bytes): gzip stream whole, pg_dump footer present")


@task(help={"file": "Backup file (.sql.gz or .sql)", "json": "Print the report as JSON"})
def verify(c, file, json=False):
    """Check that a backup is whole and harmless, count every table's rows, and list what it needs of a target."""
    from . import dumps
    from .errors import VerificationFailed

    report = dumps.inspect(Path(file).expanduser())
    print(report.to_json() if json else report.render())
    if not report.ok:
        first = report.problems[0]
        raise VerificationFailed(f"{Path(file).name} is not a complete, clean pg_dump backup: {first}", hint=first.hint)


@task(help={"url": "Database to check (default $STAGING_DATABASE_URL)",
            "backup": "Backup file whose counts to expect (default: the newest in the backup directory)",
            "schemas": SCHEMAS_HELP, "json": "Print the result as JSON"})
def check(c, url=None, backup=None, schemas=None, json=False):
    """Check a restore: every table of the backup holds exactly its rows in the database; recent-data queries."""
    import json as _json

    from . import dumps, guard, restorer
    from .config import Settings
    from .errors import VerificationFailed

    settings = Settings.from_context(c)
    target = guard.judge(settings, url or settings.require_env("STAGING_DATABASE_URL"))
    path = local_backup(backup).path if backup else newest_backup(backup_dir(settings))
    report = dumps.inspect(path)
    if not report.ok:
        raise VerificationFailed(f"{path.name} does not verify: {report.problems[0]}", hint=report.problems[0].hint)
    scope = restorer.configured_scope(settings, schemas)
    result = check_database(target.conninfo, report.tables, scope, settings.get("verify.recent") or [])
    print(_json.dumps(result.to_dict(), indent=2, default=str) if json else
          f"{target.redacted} against {path.name}\n{result.render()}")
    if not result.ok:
        raise VerificationFailed(f"restore check failed: {result.problems[0]}",
                                 hint="restore again (inv restore.staging --file ...) or look at the table named")


@task(help={"tag": "Backup release tag (default: the newest)", "file": "Restore this local file instead",
            "yes": "Do not ask for confirmation (the guard still decides)", "dry_run": "Print the plan; change nothing",
            "schemas": SCHEMAS_HELP, "create_roles": "Create roles that policies name and staging lacks (NOLOGIN)",
            "dest": "Download directory", "via": VIA_HELP})
def staging(c, tag=None, file=None, yes=False, dry_run=False, schemas=None, create_roles=False, dest=None, via=None):
    """Restore a backup into staging: download, verify, guard, confirm, restore (one transaction), check."""
    from . import audit, guard, restorer
    from .config import Settings
    from .via import reach

    settings = Settings.from_context(c)
    url = settings.require_env("STAGING_DATABASE_URL", "the database restore.staging replaces")
    with reach(settings, via) as db:
        db.find_psql()                                                   # before anything is downloaded
        target = guard.require(settings, url, action="restore.staging", vantage=db.vantage)  # exit 3 on production
        backup = resolve_backup(settings, tag, file, dest)
        plan = restorer.plan_from_settings(settings, backup.path, create_roles=create_roles, sha256=backup.sha256,
                                           schemas=restorer.configured_scope(settings, schemas), tag=backup.tag)
        if dry_run:
            result = db.restore_stream(target, plan, dry_run=True)
            print(render_plan(target, backup, result))
            return result.raise_for_failure()
        if not yes:
            confirm(target, backup, plan.schemas)
        result = restore_with_progress(target, plan, db)
        print(f"restore of {backup.path.name} into {target.redacted}"
              + (f" through {db.name}" if db.remote else "") + f":\n{result.render()}")
        if db.remote:
            print(psql_report(result, db.name))
        audit.record(settings, "restore.staging", target=target.redacted, outcome="ok" if result.ok else "failed",
                     tag=backup.tag, sha256=backup.sha256, tables=result.tables, problems=result.problems[:20],
                     steps={s.name: round(s.seconds, 3) for s in result.steps},
                     **({"via": db.name} if db.remote else {}))
        result.raise_for_failure()
        finish_check(settings, target, result, db)


@task(help={"tag": "Backup release tag (default: the newest)", "file": "Rehearse this local file instead",
            "url": "Server to make the scratch database on (default: the staging server, $STAGING_DATABASE_URL)",
            "schemas": SCHEMAS_HELP, "dest": "Download directory", "via": VIA_HELP})
def test(c, tag=None, file=None, url=None, schemas=None, dest=None, via=None):
    """Rehearse a restore into a scratch database, check it, drop it; the result goes into the audit log."""
    from .config import Settings
    from .errors import VerificationFailed
    from .restorer import RestoreInterrupted
    from .via import reach

    settings = Settings.from_context(c)
    with reach(settings, via) as db:
        db.find_psql()
        backup = resolve_backup(settings, tag, file, dest)
        got = rehearse(settings, backup.path, tag=backup.tag, sha256=backup.sha256, url=url, schemas=schemas, db=db)
    if got.result is not None:
        print(got.result.render())
        if db.remote:
            print(psql_report(got.result, db.name))
    if got.check is not None:
        print(got.check.render())
    print(f"restore.test of {backup.path.name} (sha256 {backup.sha256}): {'PASSED' if got.passed else 'FAILED'}, "
          f"{got.summary}")
    if got.interrupted:      # after the cleanup: the exit status stays an interruption's (130), as restore.staging's
        raise RestoreInterrupted(f"restore rehearsal failed: {got.summary}", result=got.result,
                                 committed=got.result.error.committed,
                                 hint="the scratch database was dropped; run the rehearsal again when ready")
    if not got.passed:
        raise VerificationFailed(f"restore rehearsal failed: {got.summary}",
                                 hint="the scratch database was dropped; look at the report above")


def restore_with_progress(target: Any, plan: Any, db: Any = None) -> Any:
    from . import download, restorer
    from .via import Direct

    total = restorer.estimated_size(plan.backup)
    with download.ProgressBar(f"restoring {plan.backup.name}", total) as bar:
        return (db or Direct(None)).restore_stream(target, plan, progress=bar)


def psql_report(result: Any, where: str) -> str:
    """psql's exit status (and, when it failed, the end of its output) for a restore run on a bastion."""
    psql = result.psql
    if psql is None:
        return f"psql on {where}: not started"
    lines = [f"psql on {where}: {psql.describe()}"]
    if not psql.ok:
        tail = [line for line in psql.stderr.strip().splitlines() if line.strip()][-20:]
        lines += [f"  {line}" for line in tail]
    return "\n".join(lines)


def finish_check(settings: Any, target: Any, result: Any, db: Any = None) -> None:
    """After the commit: the counts were compared inside the transaction; now the recent-data queries."""
    from .errors import VerificationFailed

    report = check_database(target.conninfo, result.tables, None, settings.get("verify.recent") or [], counts=False,
                            db=db)
    print(f"check: {len(result.tables)} tables hold exactly the backup's rows (compared before COMMIT)")
    if report.recent:
        print(report.render())
    if not report.ok:
        raise VerificationFailed(f"restored, but a check failed: {report.problems[0]}",
                                 hint="the data is restored; see ops.verify.recent for the queries")


def newest_backup(directory: Path) -> Path:
    from .errors import ConfigError

    found = sorted(directory.glob("*.sql.gz"), key=lambda p: p.stat().st_mtime) if directory.is_dir() else []
    if not found:
        raise ConfigError(f"no backup in {directory}", hint="pass --backup FILE, or run inv restore.download")
    return found[-1]
