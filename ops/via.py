"""Effect: where the database is reached from: this machine, or a bastion (`--via HOST`).

    with via.reach(settings, via) as db:         # via: None (this machine), or a name in ops.hosts / [user@]host[:port]
        target = guard.require(settings, url, action="restore.staging", vantage=db.vantage)
        db.find_psql()                                       # (path, version) of the psql that will run
        counts = db.table_counts(target.conninfo, ("public",))
        result = db.restore_stream(target, plan)             # the restore engine, psql where the database is

`Direct` is this machine (psycopg and the local psql/pg_dump: the engine's own defaults). `Bastion` runs everything
on the bastion over one SSH connection, because the database answers only there:
- the guard judges the target from the bastion's side (`bastion_vantage`): names resolved there (getent),
  `localhost` and the bastion's own addresses are "local", and the `ops.environment` marker is read through its psql;
- the restore runs through `ops.remote_psql.RemotePsql`: the dump is streamed into psql's stdin over the SSH
  channel, so no copy of it is ever written on the bastion, and the transaction is all or nothing as here;
- the engine's read-only questions (server version, capabilities, row counts, recent data, sessions) are psql -At
  queries there, each answered as one line of JSON; ANALYZE runs there after the commit;
- the snapshot (pg_dump) runs there and its output streams back over the channel into the local file, which is
  gzipped, hashed and verified here exactly as a local snapshot is.
The password never appears on a command line on the bastion: it is the first line sent on the channel's stdin,
read into PGPASSWORD by a tiny `sh` prologue before psql or pg_dump is exec'd (see ops.remote_psql).

This module imports fabric (through ops.remote) only when a bastion is used.
"""
from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import guard, pg, urls
from .errors import ConfigError, ServiceError
from .redact import redact_text
from .remote_psql import PID_MARK, RemotePsql, tool_command
from .restoresql import psql_errors, recent_checks

# -- the sessions connected to a database (both vantages) -------------------------------------------------------------
SESSIONS = """
SELECT pid, usename, application_name, coalesce(host(client_addr), 'local') AS client, state
  FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
 ORDER BY pid
"""
SESSION_KEYS = ("pid", "usename", "application_name", "client", "state")


def list_sessions(conninfo: str) -> list[dict[str, Any]]:
    """The other client sessions connected to the target database (poolers and realtime outlive a suspend)."""
    with pg.connect(conninfo, autocommit=True) as conn:
        return [dict(zip(SESSION_KEYS, row)) for row in conn.execute(SESSIONS).fetchall()]


def end_sessions(conninfo: str, *, dry_run: bool) -> list[dict[str, Any]]:
    """End every other client session in the target database (pg_terminate_backend, listed and ended on one
    connection, so our own never counts); refuses in a dry run. Each session comes back with `terminated`."""
    from .clients.base import DryRunRefused

    if dry_run:
        raise DryRunRefused("end the sessions connected to the database (pg_terminate_backend)")
    out = []
    with pg.connect(conninfo, autocommit=True) as conn:
        for row in conn.execute(SESSIONS).fetchall():
            s = dict(zip(SESSION_KEYS, row))
            try:
                ended = conn.execute("SELECT pg_terminate_backend(%s)", (s["pid"],)).fetchone()
                s["terminated"] = bool(ended and ended[0])
            except Exception as exc:  # psycopg.Error: not allowed to signal that backend  # noqa: BLE001
                s["terminated"], s["error"] = False, type(exc).__name__
            out.append(s)
    return out


def _psql_name(settings: Any) -> str:
    return str(settings.get("restore.psql") or "psql")


# -- this machine -----------------------------------------------------------------------------------------------------
class Direct:
    """The database as reached from this machine: the functions the tasks used before `--via` existed."""

    remote = False
    name = "this machine"
    vantage: guard.Vantage | None = None     # the guard's default: here

    def __init__(self, settings: Any):
        self.settings = settings

    def find_psql(self) -> tuple[str, tuple[int, int]]:
        from . import restorer

        return restorer.find_psql(_psql_name(self.settings))

    def find_pg_dump(self, server_version: int) -> tuple[str, tuple[int, int]]:
        from . import backup

        exe = backup.find_pg_dump(self.settings, server_version)
        return exe, pg.tool_version(exe)

    def server_version(self, conninfo: str) -> int:
        return pg.server_version(conninfo)

    def table_counts(self, conninfo: str, schemas: Iterable[str] | None = None) -> dict[str, int]:
        return pg.table_counts(conninfo, schemas)

    def recent_data(self, conninfo: str, queries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        from . import restorer

        return restorer.recent_data(conninfo, queries)

    def list_sessions(self, conninfo: str) -> list[dict[str, Any]]:
        return list_sessions(conninfo)

    def end_sessions(self, conninfo: str, *, dry_run: bool) -> list[dict[str, Any]]:
        return end_sessions(conninfo, dry_run=dry_run)

    def create_database(self, admin_conninfo: str, name: str) -> None:
        pg.create_database(admin_conninfo, name)

    def drop_database(self, admin_conninfo: str, name: str) -> None:
        pg.drop_database(admin_conninfo, name)

    def dump_to(self, target: Any, path: Path) -> Any:
        from . import backup

        return backup.dump_to(self.settings, target, path)

    def restore_stream(self, target: Any, plan: Any, *, dry_run: bool = False, progress: Any = None) -> Any:
        from . import restorer

        return restorer.restore_stream(target, plan, dry_run=dry_run, progress=progress)

    def restore(self, target: Any, backup: Path, **kw: Any) -> Any:
        from . import restorer

        return restorer.restore(self.settings, target, backup, **kw)


# -- a bastion --------------------------------------------------------------------------------------------------------
class QueryFailed(ServiceError):
    """psql on the bastion stopped with an error; `.error` is its first ERROR line, without the prefix."""

    def __init__(self, message: str, *, error: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.error = error


_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")


def bind(query: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> str:
    """Pure: a psycopg-style query (`%s`, `%(name)s`, `%%`) with its parameters written in as SQL literals
    (psycopg's own quoting), for psql, which takes no parameters."""
    from psycopg import sql

    positional = list(params) if isinstance(params, Sequence) and not isinstance(params, str) else None
    named = params if isinstance(params, Mapping) else {}
    used = iter(positional or [])

    def literal(m: re.Match[str]) -> str:
        if m[0] == "%%":
            return "%"
        try:
            value = named[m[1]] if m[1] else next(used)
        except (KeyError, StopIteration):
            raise ConfigError(f"query parameter {m[0]!r} has no value") from None
        return sql.Literal(value).as_string(None)

    return _PLACEHOLDER.sub(literal, query)


def json_rows(text: str) -> list[list[Any]]:
    """Pure: psql's output of `SELECT coalesce(json_agg(q), '[]') FROM (...) q` -> rows as lists, columns in order
    (json keeps duplicate and unnamed columns: `?column?` twice is two values)."""
    if not text.strip():
        return []
    rows = json.loads(text, object_pairs_hook=lambda pairs: [v for _, v in pairs])
    return [list(r) for r in rows]


CONNECT_TIMEOUT = str(pg.CONNECT_TIMEOUT)    # for psql on the bastion, unless the URL sets connect_timeout
ADDRESSES_SCRIPT = ("echo '## ip'; ip -o addr show 2>/dev/null; echo '## hostname'; hostname -I 2>/dev/null; "
                    "echo '## getent'; getent ahosts \"$(hostname)\" 2>/dev/null; true")


def parse_addresses(text: str) -> frozenset[str]:
    """Pure: the bastion's own addresses from `ip -o addr`, `hostname -I` and `getent ahosts $(hostname)`."""
    found: set[str] = set()
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        words = line.split()
        if section == "ip":
            candidates = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("inet", "inet6")]
        elif section == "hostname":
            candidates = words
        else:
            candidates = words[:1]
        for word in candidates:
            ip = urls.canonical_ip(word.split("/", 1)[0])
            if ip:
                found.add(ip)
    return frozenset(found)


def bastion_vantage(cxn: Any, *, psql: str = "psql", name: str | None = None) -> guard.Vantage:
    """The guard's view from the bastion at the other end of `cxn`: names resolved there, its own addresses local,
    the marker read through its psql. Answers are cached for the life of the Vantage."""
    from . import remote_psql

    resolved: dict[str, frozenset[str]] = {}
    addresses: list[frozenset[str]] = []

    def resolve(host: str) -> frozenset[str]:
        if host not in resolved:
            resolved[host] = remote_psql.resolve(cxn, host)
        return resolved[host]

    def local_addresses() -> frozenset[str]:
        if not addresses:
            result = cxn.run(ADDRESSES_SCRIPT, hide=True, warn=True, in_stream=False)
            addresses.append(parse_addresses(result.stdout))
        return addresses[0]

    def read_marker(conninfo: str, pg_env: Mapping[str, str]) -> str | None:
        return remote_psql.read_marker(cxn, {"PGCONNECT_TIMEOUT": CONNECT_TIMEOUT, **pg_env}, psql=psql)

    return guard.Vantage(resolve, local_addresses, read_marker, name or f"the bastion {cxn.host}")


COUNTS_SCRIPT = """BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT 'SELECT coalesce(json_agg(q), ''[]'') FROM ('
       || coalesce(string_agg(format('SELECT %%L AS t, count(*) AS n FROM %%I.%%I',
                                     n.nspname || '.' || c.relname, n.nspname, c.relname), ' UNION ALL '
                              ORDER BY n.nspname, c.relname),
                   'SELECT NULL::text AS t, 0::bigint AS n WHERE false')
       || ') AS q'
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname <> ALL(%(system)s::text[]) AND n.nspname !~ '^pg_(toast_)?temp_'
   AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
\\gexec
COMMIT;
"""
ANALYZE_SCRIPT = """SELECT 'ANALYZE ' || string_agg(format('%%I.%%I', a.nspname, a.relname), ', ')
  FROM ({analyze}) AS a
\\gexec
"""


class Bastion:
    """The database as reached from a bastion over one SSH connection (Fabric). Use it through `reach()`."""

    remote = True

    def __init__(self, settings: Any, cxn: Any):
        self.settings = settings
        self.cxn = cxn
        self.psql = _psql_name(settings)
        self.name = f"the bastion {cxn.host}"
        self.vantage = bastion_vantage(cxn, psql=self.psql, name=self.name)
        self._psql_version: tuple[int, int] | None = None

    # -- plumbing ------------------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Connect now (and keep the connection alive through long downloads)."""
        self.cxn.open()
        transport = self.cxn.client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)

    def _env(self, conninfo_or_env: str | Mapping[str, str]) -> dict[str, str]:
        env = dict(conninfo_or_env) if isinstance(conninfo_or_env, Mapping) else pg.env_for(conninfo_or_env)
        return {"PGCONNECT_TIMEOUT": CONNECT_TIMEOUT, **env}   # an unreachable database fails in 10 s, not minutes

    def psql_script(self, conninfo: str | Mapping[str, str], script: str, *, what: str = "a query") -> str:
        """Run `script` with psql on the bastion (unaligned, tuples only, stop at the first error); its stdout.
        ServiceError with psql's error and exit status when it fails."""
        env = self._env(conninfo)
        result = RemotePsql(self.cxn, env, psql=self.psql, atomic=False, args=["-A", "-t"]).run([script.encode()])
        if not result.ok:
            lines = psql_errors(result.stderr) or [line for line in result.stderr.splitlines() if line.strip()][-1:]
            error = redact_text(lines[0] if lines else "no output", (env.get("PGPASSWORD") or "",))
            raise QueryFailed(f"psql on {self.name} failed running {what} (exit {result.exited}): {error}",
                              error=re.sub(r"^(ERROR|FATAL):\s+", "", error),
                              hint="check that the database answers from the bastion: "
                                   f"ssh {self.cxn.host} and run psql there")
        return result.stdout

    def query(self, conninfo: str | Mapping[str, str], query: str, params: Any = None, *,
              read_only: bool = True, what: str = "a query") -> list[list[Any]]:
        """Rows of a query run on the bastion by psql, as lists of JSON values (numbers, text, arrays, null)."""
        body = bind(query, params).strip().rstrip(";")
        script = ("SET default_transaction_read_only = on;\n" if read_only else "") + \
            f"SELECT coalesce(json_agg(q), '[]') FROM (\n{body}\n) AS q;\n"
        return json_rows(self.psql_script(conninfo, script, what=what))

    def _tool_version(self, tool: str) -> tuple[int, int] | None:
        result = self.cxn.run(f"{shlex.quote(tool)} --version", hide=True, warn=True, in_stream=False)
        return pg.parse_tool_version(result.stdout) if result.ok else None

    # -- client tools --------------------------------------------------------------------------------------------------
    def find_psql(self) -> tuple[str, tuple[int, int]]:
        from .localpsql import MIN_PSQL

        if self._psql_version is None:
            self.open()
            found = self._tool_version(self.psql)
            if found is None:
                raise ConfigError(f"{self.psql} is not installed on {self.name} (or not on its PATH)",
                                  hint=pg.install_hint("psql", MIN_PSQL) + " (on the bastion)")
            if found < MIN_PSQL:
                raise ConfigError(f"psql on {self.name} is version {found[0]}.{found[1]}, but "
                                  f"{MIN_PSQL[0]}.{MIN_PSQL[1]} or newer is needed",
                                  hint=pg.install_hint("psql", MIN_PSQL) + " (on the bastion)")
            self._psql_version = found
        return self.psql, self._psql_version

    def find_pg_dump(self, server_version: int) -> tuple[str, tuple[int, int]]:
        exe = str(self.settings.get("backup.pg_dump") or "pg_dump")
        needed = pg.version_tuple(server_version)[0]
        found = self._tool_version(exe)
        if found is None or found[0] < needed:
            what = "is not installed" if found is None else f"is version {found[0]}.{found[1]}"
            raise ConfigError(f"pg_dump on {self.name} {what}; the server is {needed}, so pg_dump {needed} or newer "
                              "is needed there", hint=pg.install_hint("pg_dump", needed) + " (on the bastion)")
        return exe, found

    # -- read-only questions -------------------------------------------------------------------------------------------
    def server_version(self, conninfo: str) -> int:
        ((number,),) = self.query(conninfo, "SELECT current_setting('server_version_num')::int",
                                  what="the server version")
        return int(number)

    def capabilities(self, target: Any) -> Any:
        """restorer.Capabilities as the bastion's psql and the server answer them."""
        from .restorer import CAPS_SQL, Capabilities

        exe, version = self.find_psql()
        ((server, user, superuser, roles, extensions, pubs, _datadir, _addr, inherited, file_roles),) = self.query(
            target.conninfo, CAPS_SQL, what="the server's capabilities")
        return Capabilities(psql=exe, psql_version=version, server_version=int(server), user=str(user),
                            superuser=bool(superuser), roles=frozenset(roles or ()),
                            extensions=frozenset(extensions or ()), publications=frozenset(pubs or ()),
                            free_bytes=None, inherited=frozenset(tuple(x) for x in inherited or ()),
                            file_roles=bool(file_roles))

    def table_counts(self, conninfo: str, schemas: Iterable[str] | None = None) -> dict[str, int]:
        """pg.table_counts from the bastion: exact counts of every table, one snapshot, one psql session."""
        wanted = list(schemas) if schemas is not None else None
        script = bind(COUNTS_SCRIPT, {"system": list(pg.SYSTEM_SCHEMAS), "schemas": wanted})
        return {str(t): int(n) for t, n in json_rows(self.psql_script(conninfo, script, what="row counts"))}

    def recent_data(self, conninfo: str, queries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """restorer.recent_data from the bastion: the same checks (`restoresql.recent_checks`), run by its psql."""
        def one(query: str, params: Sequence[Any] | None) -> Sequence[Any]:
            (row,) = self.query(conninfo, query, params, what="a recent-data query")   # always one row
            return row

        return recent_checks(queries, one, lambda exc: exc.error if isinstance(exc, QueryFailed) else None)

    def list_sessions(self, conninfo: str) -> list[dict[str, Any]]:
        return [dict(zip(SESSION_KEYS, row)) for row in self.query(conninfo, SESSIONS, what="the sessions")]

    # -- changes -------------------------------------------------------------------------------------------------------
    def end_sessions(self, conninfo: str, *, dry_run: bool) -> list[dict[str, Any]]:
        from .clients.base import DryRunRefused

        if dry_run:
            raise DryRunRefused("end the sessions connected to the database (pg_terminate_backend)")
        out = []
        for s in self.list_sessions(conninfo):
            try:
                ((ended,),) = self.query(conninfo, "SELECT pg_terminate_backend(%s)", [s["pid"]], read_only=False,
                                         what="pg_terminate_backend")
                s["terminated"] = bool(ended)
            except QueryFailed:
                s["terminated"], s["error"] = False, "QueryFailed"
            out.append(s)
        return out

    def create_database(self, admin_conninfo: str, name: str) -> None:
        from psycopg import sql

        self.psql_script(admin_conninfo, sql.SQL("CREATE DATABASE {};\n").format(sql.Identifier(name)).as_string(None),
                         what=f"CREATE DATABASE {name}")

    def drop_database(self, admin_conninfo: str, name: str) -> None:
        from psycopg import sql

        force = " WITH (FORCE)" if self.server_version(admin_conninfo) >= 130000 else ""
        stmt = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)).as_string(None)
        self.psql_script(admin_conninfo, f"{stmt}{force};\n", what=f"DROP DATABASE {name}")

    def analyze(self, conninfo: str, schemas: tuple[str, ...] | None) -> str:
        """restorer.analyze on the bastion (one psql session); the analyze step's detail (restorer.Analyzer)."""
        from .restorer import ANALYZE_SQL

        inner = bind(ANALYZE_SQL, {"schemas": list(schemas) if schemas is not None else None}).replace("%", "%%")
        self.psql_script(conninfo, bind(ANALYZE_SCRIPT.format(analyze=inner.strip())), what="ANALYZE")
        return f"on {self.name}"

    # -- the restore ---------------------------------------------------------------------------------------------------
    def _engine(self, target: Any) -> dict[str, Any]:
        """What the restore engine takes to work through the bastion: capabilities asked there, the stream sent to
        psql there, no watcher from here (the database does not answer here), ANALYZE there after the commit."""
        caps = self.capabilities(target)
        app = f"lottery-ops restore {secrets.token_hex(4)}"
        runner = RemotePsql(self.cxn, {**self._env(dict(target.env)), "PGAPPNAME": app}, psql=caps.psql)
        return {"caps": caps, "runner": runner, "watch": False, "analyzer": self.analyze}

    def restore_stream(self, target: Any, plan: Any, *, dry_run: bool = False, progress: Any = None) -> Any:
        """restorer.restore_stream with psql on the bastion."""
        from . import restorer

        return restorer.restore_stream(target, plan, dry_run=dry_run, progress=progress, **self._engine(target))

    def restore(self, target: Any, backup: Path, **kw: Any) -> Any:
        """restorer.restore through the bastion: the RestoreResult, or RestoreFailed unless it committed."""
        from . import restorer

        return restorer.restore(self.settings, target, backup, **kw, **self._engine(target))

    # -- the snapshot --------------------------------------------------------------------------------------------------
    def dump_to(self, target: Any, path: Path) -> Any:
        """backup.dump_to with pg_dump on the bastion: its output streams back over the channel into `path` here
        (gzip, SHA-256 and verification as for a local dump); nothing is written on the bastion."""
        from . import backup

        started = time.monotonic()
        exe, _ = self.find_pg_dump(self.server_version(target.conninfo))
        argv = pg.pg_dump_argv(exe, extra=backup.DUMP_FLAGS)
        return backup.save_dump(path, self._stream_out(target, argv, what="pg_dump"), started=started)

    def _stream_out(self, target: Any, argv: list[str], *, what: str) -> Iterator[bytes]:
        """Run `argv` on the bastion with the target's PG* environment (the password over stdin) and yield its
        stdout; ServiceError (with its stderr, redacted) when it exits non-zero."""
        env = self._env(dict(target.env))
        password = env.pop("PGPASSWORD", None)
        command = tool_command(env, argv, password=password is not None)
        self.open()
        chan = self.cxn.client.get_transport().open_session(timeout=30)
        try:
            chan.exec_command(command)
            if password is not None:
                chan.sendall(password.encode() + b"\n")
            chan.shutdown_write()
            errors = bytearray()
            drain = threading.Thread(target=_drain, args=(chan.recv_stderr, errors), daemon=True)
            drain.start()
            for data in iter(lambda: chan.recv(1 << 20), b""):
                yield data
            code = chan.recv_exit_status()
            drain.join(30)
        finally:
            chan.close()
        if code != 0:
            text = bytes(errors).decode("utf-8", "replace")
            if text.startswith(PID_MARK.decode()):
                text = text.split("\n", 1)[1] if "\n" in text else ""
            raise ServiceError(f"{what} of {target.redacted} on {self.name} failed (exit {code}): "
                               + redact_text(text.strip(), (password,) if password else ())[-500:],
                               hint="check that the role may read every table, and that the database answers "
                                    "from the bastion")


def _drain(recv: Any, into: bytearray) -> None:
    for data in iter(lambda: recv(65536), b""):
        into += data


@contextlib.contextmanager
def reach(settings: Any, via: str | None) -> Iterator[Direct | Bastion]:
    """This machine (`via` None or empty), or the bastion `via` (a name in ops.hosts, or [user@]host[:port]),
    connected for the duration of the block."""
    if not via:
        yield Direct(settings)
        return
    from . import remote

    with remote.connect(settings, via) as cxn:
        yield Bastion(settings, cxn)
