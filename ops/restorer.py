"""Effect: the restore engine. Streams a checked backup into one database in one transaction, all or nothing.

    target = guard.require(settings, url, action="restore.staging")      # always first: the guard
    plan = RestorePlan(backup=path, schemas=("public",), lock_timeout="30s")
    result = restore_stream(target, plan)                                # RestoreResult; .committed, .steps, ...
    result.raise_for_failure()                                           # OpsError with a hint, if it failed

One pass: the .gz is decompressed, screened, counted and filtered by `ops.dumps.DumpReader` while psql reads it.
psql runs with `-X -q -v ON_ERROR_STOP=1` and no --single-transaction (which would COMMIT whatever it read when its
input ends, even a truncated dump): the engine sends `BEGIN;` itself, and `COMMIT;` only after the reader reached
the end of a complete, clean dump and every table's row count inside the transaction equals the backup's. Anything
else (a refused statement, a gzip error, Ctrl-C, a failed count) kills psql, so the server rolls back.

Inside the transaction, before the dump: `lock_timeout` (config `ops.restore.lock_timeout`; the dump's own
`SET lock_timeout = 0;` is rewritten to it), and an advisory transaction lock so two restores of one database cannot
overlap. Nothing of the engine's own stays in the target: no table, no function, no setting. A watcher connection
names the sessions that block the restore when it gives up on a lock. ANALYZE runs after the commit.

`runner` lets the same stream go to another psql with the same `run(chunks) -> PsqlResult` contract (the
`--via HOST` path: `ops.remote_psql.RemotePsql`).
"""
from __future__ import annotations

import functools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import dumps, pg
from .localpsql import MIN_PSQL, LocalPsql
from .restoresql import (BUSY_MESSAGE, COUNT_MESSAGE, LOCK_TIMEOUT_MESSAGE, PreambleEditor,
                         count_check_sql, describe_session, ends_with_footer, normalise_schemas, parse_duration_ms,
                         prologue, psql_errors, recent_checks)
from .errors import EXIT_INTERRUPTED, ConfigError, OpsError, ServiceError, VerificationFailed
from .redact import redact_text
from .remote_psql import PsqlResult



# -- records -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestorePlan:
    """What to restore and how. `schemas=None` restores everything the backup holds (`--schemas all`)."""

    backup: Path
    schemas: tuple[str, ...] | None = ("public",)
    create_roles: bool = False
    lock_timeout: str = "30s"
    strict: bool = False            # production: anything in scope that cannot be restored refuses the restore
    analyze: bool = True
    check_counts: bool = True       # compare every table's rows inside the transaction, before COMMIT
    psql: str = "psql"
    sha256: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What the target and the local psql are (gathered before anything is sent)."""

    psql: str
    psql_version: tuple[int, int]
    server_version: int
    user: str
    superuser: bool
    roles: frozenset[str]
    extensions: frozenset[str]
    publications: frozenset[str]
    free_bytes: int | None = None
    inherited: frozenset[tuple[str, str, str]] = frozenset()   # (schema, partition, constraint) inherited
    file_roles: bool = False   # member of pg_execute_server_program / pg_{read,write}_server_files

    @property
    def server_access(self) -> bool:
        """The restoring role can reach the server's files or programs: what a dump's routines must not borrow."""
        return self.superuser or self.file_roles

    @property
    def server(self) -> tuple[int, int]:
        return pg.version_tuple(self.server_version)


@dataclass
class Step:
    name: str
    seconds: float
    outcome: str                    # ok | failed | skipped | planned
    detail: str = ""


@dataclass
class RestoreResult:
    target: str                     # redacted
    backup: str
    committed: bool = False
    dry_run: bool = False
    steps: list[Step] = field(default_factory=list)
    report: dumps.Report | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    hint: str | None = None
    psql: PsqlResult | None = None
    error: OpsError | None = None
    commit_unknown: bool = False

    @property
    def ok(self) -> bool:
        return (self.committed or self.dry_run) and not self.problems

    @property
    def tables(self) -> dict[str, int]:
        return self.report.restored_tables() if self.report is not None else {}

    @property
    def left_out(self) -> list[dumps.LeftOut]:
        return list(self.report.left_out) if self.report is not None else []

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    @property
    def committed_state(self) -> bool | None:
        """True committed, False rolled back (nothing changed), None unknown (COMMIT sent, then the link broke)."""
        if self.committed:
            return True
        return None if self.commit_unknown else False

    @property
    def summary(self) -> str:
        if self.dry_run:
            return f"dry run: {len(self.tables)} tables would be restored into {self.target}"
        if self.committed:
            return (f"{len(self.tables)} tables, {sum(self.tables.values()):,} rows restored into {self.target} "
                    f"in {self.seconds:.1f} s")
        why = self.problems[0] if self.problems else "no COMMIT"
        if self.commit_unknown:
            return f"outcome unknown ({why}): {self.target} is either fully restored or unchanged, never half"
        return f"not restored ({why}); {self.target} unchanged"

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def render(self) -> str:
        return render_result(self)

    def raise_for_failure(self) -> None:
        if self.ok:
            return
        if self.error is not None:
            raise self.error
        first = self.problems[0] if self.problems else "the restore did not commit"
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        raise VerificationFailed(f"restore into {self.target} failed: {first}{more}; nothing was changed",
                                 hint=self.hint or "read the psql output above, fix the cause, and run again")


class Runner(Protocol):
    def run(self, chunks: Iterable[bytes]) -> PsqlResult: ...


# -- pure: reading results ----------------------------------------------------------------------------------------------
def missing_on_target(requires: Mapping[str, Any], caps: Capabilities) -> list[str]:
    """Pure: what the backup needs that the target lacks (extensions, policy roles, superuser for event triggers
    and publications)."""
    missing = []
    ext = [e for e in requires.get("extensions", []) if e not in caps.extensions]
    if ext:
        missing.append("extensions not available on the target: " + ", ".join(ext))
    roles = [r for r in requires.get("roles", []) if r not in caps.roles]
    if roles:
        missing.append("roles named in policies that do not exist on the target: " + ", ".join(roles))
    if not caps.superuser:
        for key, what in (("event_triggers", "event triggers"), ("publications", "publications")):
            if requires.get(key):
                missing.append(f"{what} need a superuser ({caps.user} is not): " + ", ".join(requires[key]))
    return missing


def is_scope_only(left: dumps.LeftOut) -> bool:
    """Left out only because it lies outside the restore's scope (not a loss: the target keeps its own)."""
    return bool(left.out_of_scope)


def strict_losses(report: dumps.Report) -> list[dumps.LeftOut]:
    """In-scope objects the filter left out: a production restore refuses them."""
    return report.left_out_in_scope


def estimated_size(path: Path) -> int:
    """Uncompressed size of a .gz from its trailer (ISIZE, modulo 4 GiB, corrected upwards), or the file's size."""
    size = path.stat().st_size
    if not path.name.endswith(".gz") or size < 18:
        return size
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        isize = int.from_bytes(fh.read(4), "little")
    while isize < size:
        isize += 1 << 32
    return isize


def render_result(r: RestoreResult) -> str:
    out = []
    for s in r.steps:
        out.append(f"  {s.name:<10} {s.outcome:<8} {s.seconds:7.2f} s  {s.detail}".rstrip())
    rep = r.report
    if rep is not None:
        if rep.adaptations:
            out.append("adapted:")
            out += [f"  {a}" for a in rep.adaptations]
        lost = [lo for lo in rep.left_out if not is_scope_only(lo)]
        scoped = len(rep.left_out) - len(lost)
        if lost:
            out.append(f"left out ({len(lost)}):")
            out += [f"  {lo.type} {lo.schema}.{lo.name}: {lo.reason}" + (f" ({lo.rows:,} rows)" if lo.rows else "")
                    for lo in lost]
        if scoped:
            out.append(f"outside the restore's scope, untouched: {scoped} entries")
        if rep.roles_created:
            out.append("roles created (NOLOGIN): " + ", ".join(rep.roles_created))
    out += [f"warning: {w}" for w in r.warnings]
    if r.blockers:
        out.append("sessions blocking the restore:")
        out += [f"  {b}" for b in r.blockers]
    out += [f"problem: {p}" for p in r.problems]
    return "\n".join(out)


# -- effects: the target ----------------------------------------------------------------------------------------------
CAPS_SQL = """
SELECT current_setting('server_version_num')::int, current_user,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       ARRAY(SELECT rolname FROM pg_roles),
       ARRAY(SELECT name FROM pg_available_extensions),
       ARRAY(SELECT pubname FROM pg_publication),
       (SELECT setting FROM pg_settings WHERE name = 'data_directory'),
       inet_server_addr()::text,
       ARRAY(SELECT ARRAY[n.nspname::text, c.relname::text, con.conname::text] FROM pg_constraint con
             JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE con.coninhcount > 0 AND NOT con.conislocal AND c.relispartition),
       EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
               WHERE r.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')
                 AND pg_catalog.pg_has_role(current_user, r.oid, 'USAGE'))
"""


@functools.lru_cache(maxsize=8)
def find_psql(psql: str = "psql") -> tuple[str, tuple[int, int]]:
    """The psql to use and its version; ConfigError (names found/needed/how to install) if missing or too old.
    Asked once per process (the task checks it before downloading, the engine uses the answer)."""
    exe = pg.find_tool(psql, MIN_PSQL)
    return exe, pg.tool_version(exe)


def capabilities(target: Any, plan: RestorePlan) -> Capabilities:
    """Ask the target what it has (read-only), and check the local psql."""
    exe, version = find_psql(plan.psql)
    with pg.connect(target.conninfo) as conn:
        row = conn.execute(CAPS_SQL).fetchone()
    assert row is not None
    server, user, superuser, roles, extensions, pubs, datadir, addr, inherited, file_roles = row
    return Capabilities(psql=exe, psql_version=version, server_version=int(server), user=str(user),
                        superuser=bool(superuser), roles=frozenset(roles), extensions=frozenset(extensions),
                        publications=frozenset(pubs), free_bytes=_local_free_bytes(datadir, addr),
                        inherited=frozenset(tuple(x) for x in inherited), file_roles=bool(file_roles))


def _local_free_bytes(datadir: str | None, addr: str | None) -> int | None:
    """Free space of the server's data directory, when the server runs on this machine and says where it is."""
    if not datadir:
        return None
    from .guard import local_addresses

    local = addr is None or addr.split("/")[0] in local_addresses() or addr.startswith(("127.", "::1"))
    if not local or not os.path.isdir(datadir):
        return None
    st = os.statvfs(datadir)
    return st.f_bavail * st.f_frsize


def dumps_plan(plan: RestorePlan, caps: Capabilities) -> dumps.Plan:
    return dumps.Plan(scope=frozenset(plan.schemas) if plan.schemas is not None else None,
                      available_extensions=caps.extensions, existing_roles=caps.roles,
                      existing_publications=caps.publications, create_roles=plan.create_roles,
                      superuser=caps.superuser, server_access=caps.server_access, executor="psql",
                      psql_version=caps.psql_version,
                      server_version=caps.server, single_transaction=True)


def precheck(path: Path, progress: Callable[[int], None] | None = None, sink: Any = None) -> int:
    """Before anything touches the database: the whole gzip stream decompresses (CRC and length), and the dump ends
    with pg_dump's footer. Fast (ISA-L, no parsing); the full screening happens while streaming. Returns the size;
    `sink.write` receives the decompressed bytes (restore.extract)."""
    tail = b""
    total = 0
    with dumps.open_backup(path) as stream:
        for chunk in stream:
            total += len(chunk)
            tail = (tail + chunk[-4096:])[-4096:]
            if sink is not None:
                sink.write(chunk)
            if progress:
                progress(total)
    if not ends_with_footer(tail):
        raise VerificationFailed(f"{path.name}: the dump does not end with pg_dump's `-- PostgreSQL database dump "
                                 "complete` footer: it was cut short", hint="download it again, or pick another backup")
    return total


def extract(src: Path, out: Path | None = None) -> Path:
    """restore.extract: decompress `src` to `out` (default: without .gz) through `<out>.part`, renamed only when the
    gzip stream was whole and the dump ends with its footer."""
    if not src.name.endswith(".gz"):
        raise ConfigError(f"{src.name} is not a .gz file", hint="restore.extract decompresses .sql.gz backups")
    dest = out or src.with_name(src.name[:-3])
    part = dest.with_name(dest.name + ".part")
    try:
        with open(part, "wb") as fh:
            precheck(src, sink=fh)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def dry_filter(path: Path, dplan: dumps.Plan) -> dumps.Report:
    """The filter's verdict without sending anything: what would be left out or adapted, or the first refusal."""
    reader = dumps.DumpReader(dplan)
    with dumps.open_backup(path) as stream:
        for _ in reader.filter(stream):
            pass
    return reader.report


class Watcher(threading.Thread):
    """Polls for the sessions that block our psql (found by its application_name), while it runs."""

    def __init__(self, conninfo: str, app: str, interval: float):
        super().__init__(daemon=True)
        self.conninfo, self.app, self.interval = conninfo, app, interval
        self.stopped = threading.Event()
        self.blockers: list[str] = []
        self.backend_pid: int | None = None

    def run(self) -> None:
        try:
            with pg.connect(self.conninfo, autocommit=True) as conn:
                while not self.stopped.wait(self.interval):
                    rows = conn.execute(BLOCKERS_SQL, {"app": self.app}).fetchall()
                    if rows:
                        self.blockers = [describe_session(_row(r)) for r in rows]
                    if self.backend_pid is None:
                        found = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                             (self.app,)).fetchone()
                        self.backend_pid = found[0] if found else None
        except Exception:  # the watcher only adds detail; the restore does not depend on it
            return

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


BLOCKERS_SQL = """
SELECT b.pid, b.usename, b.application_name, b.client_addr::text, b.state,
       extract(epoch FROM now() - b.xact_start), left(b.query, 200)
FROM pg_stat_activity w CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS x(pid)
JOIN pg_stat_activity b ON b.pid = x.pid
WHERE w.application_name = %(app)s
"""
HOLDERS_SQL = """
SELECT DISTINCT a.pid, a.usename, a.application_name, a.client_addr::text, a.state,
       extract(epoch FROM now() - a.xact_start), left(a.query, 200)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.pid <> pg_backend_pid() AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s))
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def _row(r: Any) -> dict[str, Any]:
    keys = ("pid", "usename", "application_name", "client_addr", "state", "xact_age", "query")
    return dict(zip(keys, r))


def recent_data(conninfo: str, queries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The runbook's recent-data queries (`ops.verify.recent`: {table, column}; `restoresql.recent_checks`) run
    from here on one read-only connection: each passes when the table exists and has rows. Read-only."""
    queries = list(queries or [])
    if not queries:
        return []
    with pg.connect(conninfo, autocommit=True) as conn:
        conn.read_only = True

        def one(query: str, params: Sequence[Any] | None) -> Sequence[Any]:
            row = conn.execute(query, params).fetchone()
            assert row is not None     # a function call or an aggregate: always one row
            return row

        return recent_checks(queries, one, _first_line)


def _first_line(exc: Exception) -> str:
    """A psycopg error's first line (no such column, no permission): the server's own words."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def lock_holders(conninfo: str, schemas: tuple[str, ...] | None) -> list[str]:
    """Sessions holding locks on tables in the restore's scope (asked after a lock timeout)."""
    try:
        with pg.connect(conninfo, autocommit=True) as conn:
            rows = conn.execute(HOLDERS_SQL, {"schemas": list(schemas) if schemas is not None else None}).fetchall()
    except Exception:
        return []
    return [describe_session(_row(r)) for r in rows]


ANALYZE_SQL = """
SELECT n.nspname, c.relname,
       CASE c.relkind WHEN 'p' THEN (SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM pg_partition_tree(c.oid))
                      ELSE pg_relation_size(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_namespace rn ON rn.oid = (SELECT relnamespace FROM pg_class WHERE oid = coalesce(pg_partition_root(c.oid), c.oid))
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_)' AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s))
  -- a partition whose root is analyzed too is covered by it (ANALYZE of a partitioned table does its partitions)
  AND NOT (c.relispartition AND (%(schemas)s::text[] IS NULL OR rn.nspname = ANY(%(schemas)s)))
ORDER BY 3 DESC, 1, 2
"""


def analyze(conninfo: str, schemas: tuple[str, ...] | None, workers: int = 2) -> int:
    """ANALYZE every table, partitioned parent and materialized view in scope (dumps carry no planner statistics;
    autovacuum never analyzes partitioned parents). Spread over `workers` connections, biggest first. Returns the
    number of relations analyzed."""
    from concurrent.futures import ThreadPoolExecutor

    from psycopg import sql

    with pg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(ANALYZE_SQL, {"schemas": list(schemas) if schemas is not None else None}).fetchall()
    queues: list[list[tuple[str, str]]] = [[] for _ in range(max(1, min(workers, len(rows))))]
    loads = [0] * len(queues)
    for schema, name, size in rows:                      # longest first, each to the least loaded connection
        i = loads.index(min(loads))
        queues[i].append((schema, name))
        loads[i] += int(size or 0) + 1

    def run(queue: list[tuple[str, str]]) -> None:
        with pg.connect(conninfo, autocommit=True) as c:
            c.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(sql.Identifier(s, t) for s, t in queue)))

    with ThreadPoolExecutor(len(queues)) as pool:
        list(pool.map(run, [q for q in queues if q]))
    return len(rows)


Analyzer = Callable[[str, tuple[str, ...] | None], str]   # (conninfo, schemas) -> the analyze step's detail


def analyze_here(conninfo: str, schemas: tuple[str, ...] | None) -> str:
    """The engine's default ANALYZE after the commit: from this machine (`analyze`); the step's detail."""
    return f"{analyze(conninfo, schemas)} tables"


# -- effects: local psql ------------------------------------------------------------------------------------------------
def psql_env(target: Any, app: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for psql: the caller's without PG* variables, the target's PG* (password included, never on
    a command line), and our application_name (how the watcher finds our session)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("PG")}
    env.update(target.env)
    env["PGAPPNAME"] = app
    return env


def restore_stream(target: Any, plan: RestorePlan, *, dry_run: bool = False,
                   progress: Callable[[int], None] | None = None, runner: Runner | None = None,
                   caps: Capabilities | None = None, watch: bool = True,
                   analyzer: Analyzer | None = None) -> RestoreResult:
    """Restore `plan.backup` into `target` (a guard.Target: the caller has asked the guard) in one transaction.

    Raises only for what must stop everything before it starts (no psql, target unreachable, bad settings);
    every outcome of the stream itself is in the returned RestoreResult (`.committed`, `.problems`, `.steps`).
    Where the database is reached from another machine (ops.via): `runner` (its psql), `caps` (asked there),
    `watch=False` (no watcher connection from here), `analyzer` (ANALYZE there; default `analyze_here`)."""
    result = RestoreResult(target=target.redacted, backup=plan.backup.name, dry_run=dry_run)
    timeout_ms = parse_duration_ms(plan.lock_timeout)
    t0 = time.monotonic()
    caps = caps or capabilities(target, plan)
    result.steps.append(Step("preflight", time.monotonic() - t0, "ok",
                             f"psql {caps.psql_version[0]}.{caps.psql_version[1]}, server "
                             f"{caps.server[0]}.{caps.server[1]}, as {caps.user}"
                             + (" (superuser)" if caps.superuser else "")))
    size = estimated_size(plan.backup)
    if caps.free_bytes is not None and caps.free_bytes < size:
        result.warnings.append(f"the server's disk has {caps.free_bytes / 1e9:.1f} GB free and the backup holds "
                               f"{size / 1e9:.1f} GB of SQL: the restore may run out of space")
    dplan = dumps_plan(plan, caps)
    try:
        if not _timed(result, "check", lambda: precheck(plan.backup), "gzip stream whole, footer present"):
            return result
    except KeyboardInterrupt:
        if dry_run:
            raise
        return _interrupted(result, target, commit_sent=False, started=t0, sent=False)
    if dry_run:
        reader_ok = _timed(result, "filter", lambda: setattr(result, "report", dry_filter(plan.backup, dplan)),
                           "screened and filtered; nothing sent")
        if reader_ok and plan.strict:
            _refuse_losses(result)
        result.steps.append(Step("restore", 0.0, "planned", f"into {target.redacted}"))
        return result
    app = f"lottery-ops restore {secrets.token_hex(4)}"
    reader = dumps.DumpReader(dplan)
    result.report = reader.report
    failure: list[BaseException] = []
    stream = _stream(plan, reader, PreambleEditor(timeout_ms, caps.inherited), progress, failure,
                     check_client=caps.server_version >= 140000)
    runner = runner or LocalPsql(psql_env(target, app), psql=caps.psql)
    watcher = Watcher(target.conninfo, app, max(0.05, min(1.0, timeout_ms / 4000))) if watch else None
    if watcher:
        watcher.start()
    t1 = time.monotonic()
    try:
        psql = runner.run(stream)
    except KeyboardInterrupt:     # the runner stopped psql; whether COMMIT had gone out decides what we can say
        return _interrupted(result, target, commit_sent=bool(getattr(runner, "commit_sent", False)), started=t1)
    finally:
        stream.close()
        if watcher:
            watcher.stop()
    result.psql = psql
    result.committed = psql.committed
    if failure and not isinstance(failure[0], (OpsError, KeyboardInterrupt)) and not psql.committed:
        bug = failure[0]                      # a bug, not a bad backup: show its traceback, say nothing was committed
        setattr(bug, "committed", False)
        raise bug
    result.commit_unknown = bool(getattr(runner, "commit_sent", False)) and not psql.committed \
        and psql.exited not in (0, 1, 3)
    _interpret(result, psql, failure, watcher, target, plan)
    detail = (f"{len(result.tables)} tables, {sum(result.tables.values()):,} rows, committed" if psql.committed
              else "rolled back: nothing changed")
    result.steps.append(Step("restore", time.monotonic() - t1, "ok" if psql.committed else "failed", detail))
    if psql.committed and plan.analyze:
        t2 = time.monotonic()
        try:
            detail = (analyzer or analyze_here)(target.conninfo, plan.schemas)
            result.steps.append(Step("analyze", time.monotonic() - t2, "ok", detail))
        except (Exception, KeyboardInterrupt) as exc:  # committed: missing statistics are a warning, not a failure
            why = ("interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt)
                   else getattr(exc, "message", None) or str(exc).strip().splitlines()[0])
            result.steps.append(Step("analyze", time.monotonic() - t2, "failed", why))
            result.warnings.append(f"ANALYZE failed ({why}): run it by hand")
    return result


def _stream(plan: RestorePlan, reader: dumps.DumpReader, editor: PreambleEditor,
            progress: Callable[[int], None] | None, failure: list[BaseException], *,
            check_client: bool = False) -> Iterator[bytes]:
    """prologue, the filtered dump, the count check; raises (so the runner kills psql) unless complete and clean."""
    try:
        yield prologue(parse_duration_ms(plan.lock_timeout), check_client=check_client)
        with dumps.open_backup(plan.backup) as source:
            for piece in reader.filter(_counted(source, progress)):
                out = editor.feed(piece)
                if out:
                    yield out
        rest = editor.flush()
        if rest:
            yield rest
        if editor.skipped:
            reader.report.adaptations.append(
                f"left out {len(editor.skipped)} --clean DROP CONSTRAINT of partition constraints the target inherits "
                f"from their parents ({', '.join(editor.skipped[:5])}{', ...' if len(editor.skipped) > 5 else ''}): "
                "PostgreSQL refuses them, and DROP TABLE removes them")
        if plan.strict:
            lost = strict_losses(reader.report)
            if lost:
                raise VerificationFailed(f"{len(lost)} objects in the restore's scope cannot be restored here "
                                         f"(first: {lost[0].type} {lost[0].schema}.{lost[0].name}: {lost[0].reason})",
                                         hint="a production restore leaves nothing in scope out: fix the target first")
        if plan.check_counts:
            yield count_check_sql(reader.report.restored_tables())
    except GeneratorExit:          # closed by the runner after psql stopped on its own: not a stream failure
        raise
    except BaseException as exc:
        failure.append(exc)
        raise


def _counted(source: Iterable[bytes], progress: Callable[[int], None] | None) -> Iterator[bytes]:
    if progress is None:
        yield from source
        return
    done = 0
    for chunk in source:
        done += len(chunk)
        progress(done)
        yield chunk


def _interpret(result: RestoreResult, psql: PsqlResult, failure: list[BaseException], watcher: Watcher | None,
               target: Any, plan: RestorePlan) -> None:
    """Turn psql's outcome into problems, blockers and a hint."""
    if psql.committed:
        return
    if failure:
        exc = failure[0]
        if isinstance(exc, OpsError):
            result.error = (VerificationFailed(f"restore into {target.redacted} refused, nothing changed: "
                                               f"{exc.message}", hint=exc.hint)
                            if isinstance(exc, VerificationFailed) else exc)
            result.problems.append(exc.message)
            return
        result.problems.append(f"the stream stopped: {type(exc).__name__}: {exc}")
        return
    errors = psql_errors(psql.stderr)
    text = psql.stderr
    if LOCK_TIMEOUT_MESSAGE in text:
        blockers = (watcher.blockers if watcher else []) or lock_holders(target.conninfo, plan.schemas)
        result.blockers = blockers
        result.problems.append(f"gave up waiting for a lock after {plan.lock_timeout} (lock_timeout)")
        result.hint = ("ask the sessions listed above to finish, or end them (SELECT pg_terminate_backend(pid)), "
                       "then run again; ops.restore.lock_timeout sets the wait")
        result.error = ServiceError(f"restore into {target.redacted} gave up waiting for a lock after "
                                    f"{plan.lock_timeout}; nothing changed"
                                    + (": blocked by " + "; ".join(blockers) if blockers else ""), hint=result.hint)
        return
    if BUSY_MESSAGE in text:
        result.problems.append("another restore of this database is running")
        result.error = ServiceError(f"another restore of {target.redacted} is running; nothing changed",
                                    hint="wait for it to finish (it holds an advisory lock until it ends)")
        return
    if COUNT_MESSAGE in text:
        line = next((e for e in errors if COUNT_MESSAGE in e), errors[0] if errors else COUNT_MESSAGE)
        result.problems.append(line.replace("ERROR:  ", ""))
        result.hint = "the target already held rows in a table the backup fills (a dump without --clean?)"
        return
    if errors:
        result.problems += errors
    else:
        result.problems.append(f"psql exited {psql.exited} before COMMIT" if not psql.aborted
                               else f"aborted: {psql.reason}")
    result.hint = ("psql stopped at the first error (ON_ERROR_STOP) and the transaction was rolled back; "
                   "fix the cause and run again")


def _interrupted(result: RestoreResult, target: Any, *, commit_sent: bool, started: float,
                 sent: bool = True) -> RestoreResult:
    """Ctrl-C: before COMMIT was written, psql was killed and the server rolled back (nothing changed); after it,
    the outcome was not read (committed or exactly as before, never half)."""
    result.commit_unknown = commit_sent
    where = "before COMMIT" if sent else "before anything was sent"
    if commit_sent:
        result.problems.append("interrupted (Ctrl-C) after COMMIT was sent, before psql reported the outcome")
        result.error = RestoreInterrupted(
            f"restore into {target.redacted} interrupted (Ctrl-C) after COMMIT was sent: {target.dbname} is either "
            "fully restored or exactly as before, never half", committed=None, result=result,
            hint=f"check which before anything else: inv restore.check --url URL --backup {result.backup}")
        detail = "interrupted after COMMIT was sent: outcome unknown"
    else:
        result.problems.append(f"interrupted (Ctrl-C) {where}")
        result.error = RestoreInterrupted(
            f"restore into {target.redacted} interrupted (Ctrl-C) {where}"
            + (": psql was stopped and the server rolled the transaction back" if sent else "")
            + f"; {target.dbname} is exactly as before", committed=False, result=result,
            hint="nothing was changed: run the restore again when ready")
        detail = "interrupted: rolled back, nothing changed" if sent else "interrupted: nothing sent"
    result.steps.append(Step("restore", time.monotonic() - started, "failed", detail))
    return result


def _refuse_losses(result: RestoreResult) -> None:
    lost = strict_losses(result.report) if result.report else []
    if lost:
        result.problems += [f"cannot restore in scope: {lo.type} {lo.schema}.{lo.name}: {lo.reason}" for lo in lost]
        result.hint = "a production restore leaves nothing in scope out: fix the target first"


def _timed(result: RestoreResult, name: str, fn: Callable[[], Any], detail: str) -> bool:
    """Run one step; record its time and outcome. An OpsError ends the restore (recorded, not raised)."""
    t = time.monotonic()
    try:
        fn()
    except OpsError as exc:
        result.steps.append(Step(name, time.monotonic() - t, "failed", exc.message))
        result.problems.append(exc.message)
        result.error = exc
        return False
    result.steps.append(Step(name, time.monotonic() - t, "ok", detail))
    return True


def redacted_stderr(psql: PsqlResult, secrets_: Iterable[str] = ()) -> str:
    return redact_text(psql.stderr, tuple(secrets_))


# -- the entry point other sections use -------------------------------------------------------------------------------
class RestoreFailed(VerificationFailed):
    """The restore did not commit (or its outcome is unknown). `.committed`: False, or None when unknown;
    `.result`: the RestoreResult with steps, problems and psql's output."""

    def __init__(self, message: str, *, hint: str | None = None, result: RestoreResult | None = None,
                 committed: bool | None = False):
        super().__init__(message, hint=hint)
        self.result, self.committed = result, committed


class RestoreInterrupted(RestoreFailed):
    """Ctrl-C during the restore: `.committed` False (psql killed before COMMIT: nothing changed) or None (after
    COMMIT was sent: unknown). The exit status stays an interruption's (130)."""

    exit_code = EXIT_INTERRUPTED


CONFIGURED = "configured"   # schemas=CONFIGURED: the scope in ops.restore.schemas (default: public)


def configured_scope(settings: Any, schemas: Any = CONFIGURED) -> tuple[str, ...] | None:
    """The restore's scope: `schemas` as given (None or "all": everything), or, for None from a command-line flag
    (`flag=None` means "not given") or CONFIGURED, the configured `ops.restore.schemas`."""
    if schemas is None or schemas == CONFIGURED:
        schemas = settings.get("restore.schemas") or ["public"]
    return normalise_schemas(schemas)


def plan_from_settings(settings: Any, backup: Path, *, schemas: Any = CONFIGURED, create_roles: bool = False,
                       production: bool = False, sha256: str | None = None, tag: str | None = None) -> RestorePlan:
    """A RestorePlan with the configured lock timeout and psql. `schemas`: a scope (None = everything), or
    CONFIGURED for `ops.restore.schemas`."""
    scope = configured_scope(settings) if schemas == CONFIGURED else normalise_schemas(schemas)
    return RestorePlan(backup=Path(backup), schemas=scope, create_roles=create_roles,
                       lock_timeout=str(settings.get("restore.lock_timeout") or "30s"), strict=production,
                       psql=str(settings.get("restore.psql") or "psql"), sha256=sha256, tag=tag)


def restore(settings: Any, target: Any, backup: Path, *, schemas: Any = CONFIGURED, dry_run: bool = False,
            production: bool = False, create_roles: bool = False, progress: Callable[[int], None] | None = None,
            runner: Runner | None = None, sha256: str | None = None, tag: str | None = None,
            caps: Capabilities | None = None, watch: bool = True, analyzer: Analyzer | None = None) -> RestoreResult:
    """Restore `backup` into `target` (already passed by the guard) and raise RestoreFailed unless it committed.

    `schemas`: the scope: a list or "a,b", None or "all" for everything, CONFIGURED (default) for
    `ops.restore.schemas`. `production=True`: nothing in scope may be left out (refused, never a partial restore).
    `dry_run=True`: every check and the filter run, nothing is sent. Returns the RestoreResult (`.summary`: one line).
    `runner`, `caps`, `watch`, `analyzer`: as for `restore_stream` (a bastion's, ops.via)."""
    plan = plan_from_settings(settings, backup, schemas=schemas, create_roles=create_roles, production=production,
                              sha256=sha256, tag=tag)
    result = restore_stream(target, plan, dry_run=dry_run, progress=progress, runner=runner, caps=caps, watch=watch,
                            analyzer=analyzer)
    if not result.ok:
        error = result.error
        if isinstance(error, RestoreFailed):
            raise error
        raise RestoreFailed(error.message if error else f"restore into {result.target} failed: "
                            + ("; ".join(result.problems[:3]) or "it did not commit"),
                            hint=(error.hint if error else None) or result.hint, result=result,
                            committed=result.committed_state)
    return result
