"""Effect: PostgreSQL through psycopg, and the psql/pg_dump client tools found on PATH.

Every connection goes through `connect()`, which translates psycopg's OperationalError into a ServiceError whose
message is password-free. Secrets never go on a command line: `env_for()` turns connection parameters into the
PG* environment psql and pg_dump read, and the argv builders (pure) take no connection parameters at all.

psycopg is imported inside functions so that `inv --list` stays fast.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ServiceError
from .redact import redact_text, redact_url

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT = 10
# schemas that hold no application data
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

# libpq connection keywords and the environment variables libpq reads for them
# (https://www.postgresql.org/docs/current/libpq-envars.html)
PG_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
    "password": "PGPASSWORD", "passfile": "PGPASSFILE", "service": "PGSERVICE", "options": "PGOPTIONS",
    "application_name": "PGAPPNAME", "connect_timeout": "PGCONNECT_TIMEOUT", "client_encoding": "PGCLIENTENCODING",
    "sslmode": "PGSSLMODE", "requiressl": "PGREQUIRESSL", "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY", "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT", "sslcrl": "PGSSLCRL", "sslcrldir": "PGSSLCRLDIR", "sslsni": "PGSSLSNI",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION", "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "requirepeer": "PGREQUIREPEER", "require_auth": "PGREQUIREAUTH", "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE", "gsslib": "PGGSSLIB", "krbsrvname": "PGKRBSRVNAME",
    "gssdelegation": "PGGSSDELEGATION", "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}
# keywords with no environment variable that only tune the socket: safe to drop for a client tool
_SOCKET_ONLY = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout"}


# -- connections ---------------------------------------------------------------------------------------------------
def connect(conninfo: str, **kw: Any) -> "psycopg.Connection[Any]":
    """Open a psycopg connection (connect_timeout 10 s unless given); failures become a password-free ServiceError."""
    import psycopg

    kw.setdefault("connect_timeout", CONNECT_TIMEOUT)
    try:
        return psycopg.connect(conninfo, **kw)
    except psycopg.OperationalError as exc:
        secrets = [conninfo] + [str(kw[k]) for k in ("password", "sslpassword") if kw.get(k)]
        detail = redact_text(str(exc).strip(), secrets=secrets)
        raise ServiceError(f"cannot connect to PostgreSQL at {describe(conninfo)}: {detail}",
                           hint=connect_hint(detail)) from None


def describe(conninfo: str) -> str:
    """A password-free way to name a connection target in a message."""
    return redact_text(redact_url(conninfo), secrets=[conninfo]) or "(libpq defaults)"


def connect_hint(message: str) -> str:
    """Pure: what to do next, judging by libpq's error message."""
    text = message.lower()
    if "password authentication failed" in text or "no password supplied" in text:
        return "check the user name and password in the database URL"
    if "database" in text and "does not exist" in text:
        return "check the database name at the end of the URL (list them with: psql URL -c '\\l')"
    if "role" in text and "does not exist" in text:
        return "check the user name in the database URL"
    if "timeout" in text or "timed out" in text:
        return "the server did not answer within 10 s: check the host, the port and any firewall or VPN"
    if "could not translate host name" in text or "name or service not known" in text:
        return "check the host name in the database URL"
    return "check that the server is running and that the URL's host and port are right"


def server_version(conninfo: str) -> int:
    """The server's version number as PostgreSQL reports it, e.g. 150018 for 15.18 or 170006 for 17.6."""
    with connect(conninfo) as conn:
        return conn.info.server_version


def version_tuple(number: int) -> tuple[int, int]:
    """Pure: 150018 -> (15, 18); 90624 -> (9, 6)."""
    if number >= 100000:
        return number // 10000, number % 10000
    return number // 10000, number // 100 % 100


def database_exists(conninfo: str, name: str) -> bool:
    """Whether a database called `name` exists on the server `conninfo` reaches."""
    with connect(conninfo) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None


def create_database(admin_conninfo: str, name: str, *, template: str | None = None, dry_run: bool = False) -> str:
    """Create database `name` (the caller has asked the guard); return the statement. With dry_run, only return it."""
    from psycopg import sql

    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
    return _run_admin(admin_conninfo, stmt, dry_run=dry_run)


def drop_database(admin_conninfo: str, name: str, *, dry_run: bool = False) -> str:
    """Drop database `name` if it exists, ending its sessions (WITH (FORCE), PostgreSQL 13+); return the statement."""
    from psycopg import sql

    stmt = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    if dry_run:
        return _run_admin(admin_conninfo, stmt, dry_run=True)
    with connect(admin_conninfo, autocommit=True) as conn:
        if conn.info.server_version >= 130000:
            stmt = sql.SQL("{} WITH (FORCE)").format(stmt)
        text = stmt.as_string(conn)
        _execute(conn, stmt, text)
        return text


def _run_admin(admin_conninfo: str, stmt: Any, *, dry_run: bool) -> str:
    if dry_run:
        return stmt.as_string(None)
    with connect(admin_conninfo, autocommit=True) as conn:
        text = stmt.as_string(conn)
        _execute(conn, stmt, text)
        return text


def _execute(conn: Any, stmt: Any, text: str) -> None:
    import psycopg

    try:
        conn.execute(stmt)
    except psycopg.Error as exc:
        raise ServiceError(f"{text} failed: {str(exc).strip()}",
                           hint="check that the user in the URL may create databases (CREATEDB) and that "
                                "no other session holds the database") from None


def table_counts(conninfo: str, schemas: Iterable[str] | None = None) -> dict[str, int]:
    """Exact row counts, {"schema.table": n}, of every table holding rows (partitions, not their parents).

    Counts leaf tables the way a plain pg_dump writes their data (one COPY per table or partition), so the
    result compares directly with a dump's COPY counts. `schemas=None` means every non-system schema.
    All counts come from one snapshot.
    """
    from psycopg import IsolationLevel, sql

    query = """
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname <> ALL(%(system)s) AND n.nspname !~ '^pg_(toast_)?temp_'
          AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s))
        ORDER BY 1, 2"""
    wanted = list(schemas) if schemas is not None else None
    with connect(conninfo) as conn:
        conn.read_only = True
        conn.isolation_level = IsolationLevel.REPEATABLE_READ  # one snapshot for every count
        with conn.transaction():
            tables = conn.execute(query, {"system": list(SYSTEM_SCHEMAS), "schemas": wanted}).fetchall()
            if not tables:
                return {}
            parts = [sql.SQL("SELECT {}, count(*) FROM {}").format(sql.Literal(f"{s}.{t}"), sql.Identifier(s, t))
                     for s, t in tables]
            rows = conn.execute(sql.SQL(" UNION ALL ").join(parts)).fetchall()
    return {key: int(n) for key, n in rows}


# -- client tools --------------------------------------------------------------------------------------------------
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def parse_tool_version(output: str) -> tuple[int, int] | None:
    """Pure: `psql (PostgreSQL) 15.18 (Debian 15.18-1.pgdg120+1)` -> (15, 18); `17beta1` -> (17, 0)."""
    match = _VERSION.search(output)
    if not match:
        return None
    return int(match[1]), int(match[2] or 0)


def tool_version(name: str) -> tuple[int, int]:
    """(major, minor) of a PostgreSQL client tool (`psql`, `pg_dump`, or a path to one)."""
    exe = shutil.which(name)
    if exe is None:
        raise ConfigError(f"{name} is not installed (not found on PATH)", hint=install_hint(name, None))
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    version = parse_tool_version(out.stdout)
    if out.returncode != 0 or version is None:
        raise ConfigError(f"{exe} --version did not report a PostgreSQL version: {(out.stdout + out.stderr).strip()!r}",
                          hint=install_hint(name, None))
    return version


def find_tool(name: str, min_version: int | tuple[int, int] | None = None) -> str:
    """The path of client tool `name` on PATH; ConfigError if it is missing or older than `min_version`."""
    exe = shutil.which(name)
    if exe is None:
        raise ConfigError(f"{name} is not installed (not found on PATH)", hint=install_hint(name, min_version))
    if min_version is not None:
        needed = (min_version, 0) if isinstance(min_version, int) else tuple(min_version)
        found = tool_version(exe)
        if found < needed:
            raise ConfigError(f"{exe} is version {_fmt(found)}, but {_fmt(needed)} or newer is needed",
                              hint=install_hint(name, min_version))
    return exe


def install_hint(name: str, min_version: int | tuple[int, int] | None) -> str:
    """Pure: how to install a recent enough client tool."""
    major = (min_version if isinstance(min_version, int) else min_version[0]) if min_version else 17
    return (f"install the PostgreSQL {major} client tools: `apt install postgresql-client-{major}` "
            f"(Debian/Ubuntu, from apt.postgresql.org) or `brew install libpq` (macOS), "
            f"then put the directory holding {name} first on PATH")


def _fmt(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


# -- environment and argv for psql / pg_dump (pure) --------------------------------------------------------------
def env_for(target: str | Mapping[str, Any]) -> dict[str, str]:
    """The PG* environment that makes psql/pg_dump reach `target` (a conninfo/URL or a dict of libpq keywords).

    Pass it as the subprocess environment (on top of os.environ) and give the tool no connection arguments,
    so no password ever appears on a command line. Unknown keywords are refused rather than silently dropped.
    """
    if isinstance(target, str):
        from psycopg.conninfo import conninfo_to_dict

        try:
            params: Mapping[str, Any] = conninfo_to_dict(target)
        except Exception as exc:  # psycopg.ProgrammingError: libpq's parse error
            raise ConfigError(f"cannot parse the connection string {describe(target)}: "
                              f"{redact_text(str(exc), secrets=[target])}",
                              hint="write it as postgresql://user:password@host:port/dbname") from None
    else:
        params = target
    env: dict[str, str] = {}
    for key, value in params.items():
        if value is None or key in _SOCKET_ONLY:
            continue
        if key not in PG_ENV:
            raise ConfigError(f"connection parameter {key!r} cannot be passed to psql or pg_dump safely",
                              hint="remove it from the database URL")
        env[PG_ENV[key]] = str(value)
    return env


def tool_env(target: str | Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """Pure: `base` (the caller's environment) without any inherited PG* variable, plus `env_for(target)`, so the
    operator's own PGHOST/PGSERVICE/... cannot redirect a tool to another database."""
    env = {k: v for k, v in base.items() if not k.startswith("PG")}
    return env | env_for(target)


def psql_argv(psql: str = "psql", *, file: str | None = None, command: str | None = None,
              on_error_stop: bool = True, extra: Iterable[str] = ()) -> list[str]:
    """Pure: a psql command line with no connection parameters (they go in `env_for()`): -X, quiet, no password
    prompt, and ON_ERROR_STOP unless told otherwise."""
    argv = [psql, "-X", "-q", "-w", "-v", f"ON_ERROR_STOP={int(on_error_stop)}"]
    if command is not None:
        argv += ["-c", command]
    if file is not None:
        argv += ["-f", file]
    return argv + list(extra)


def pg_dump_argv(pg_dump: str = "pg_dump", *, file: str | None = None, schemas: Iterable[str] = (),
                 extra: Iterable[str] = ()) -> list[str]:
    """Pure: a plain-format pg_dump command line with no connection parameters (they go in `env_for()`)."""
    argv = [pg_dump, "-w", "--format=plain"]
    argv += [f"--schema={s}" for s in schemas]
    if file is not None:
        argv += ["--file", file]
    return argv + list(extra)
