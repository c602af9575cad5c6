"""Guard: decide whether a database target is production, and refuse production outside the emergency path.

Every task that writes to a database calls `require()` first. A target is production when it reaches the
database `DATABASE_URL` points to (compared as libpq would connect, not as strings), when it matches
`ops.production.identities`, when a host or database name says so, or when the database itself carries the
marker `ops.environment = 'production'` (set with `inv guard.mark production URL`). Production passes only with
`emergency=True`, which only the `emergency` collection's tasks pass, and an approval that verifies for this very
target. There is no override flag. A target the guard cannot understand is refused.
"""
from __future__ import annotations

import getpass
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import urls
from .config import Settings
from .errors import ConfigError, GuardRefused
from .redact import redact_url
from .tasking import task

MARKER_SETTING = "ops.environment"
ENVIRONMENTS = ("production", "staging")
SCRATCH_PREFIX = "ops_scratch_"
Approval = Callable[["Target"], object]  # raises GuardRefused when the token does not fit


@dataclass(frozen=True)
class Target:
    """A judged database target. `conninfo` and `env` carry the password: never print them."""

    url: str
    redacted: str
    identity: str
    dbname: str
    user: str
    endpoints: tuple[str, ...]
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()
    marker: str | None = None
    error: str | None = None
    conninfo: str = field(default="", repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_production(self) -> bool:
        return bool(self.reasons)

    @property
    def refused(self) -> bool:
        return self.is_production or self.error is not None

    def explain(self) -> str:
        lines = [f"target: {self.redacted}"]
        if self.error:
            lines.append(f"verdict: REFUSED, the guard cannot judge it: {self.error}")
        else:
            lines.append(f"database: {self.dbname} as {self.user} on {', '.join(self.endpoints)}")
            lines.append(f"identity: {self.identity}")
            lines.append("marker: " + (repr(self.marker) if self.marker else "none"))
            if self.is_production:
                lines.append("verdict: PRODUCTION, refused outside the emergency path, because")
                lines += [f"  - {r}" for r in self.reasons]
            else:
                lines.append("verdict: not production: allowed")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- effects: name resolution, this machine's addresses, service files, the in-database marker --------------------
@lru_cache(maxsize=256)
def resolve(name: str) -> frozenset[str]:
    """Every address `name` resolves to; empty when it does not resolve (then it is compared by name)."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


@lru_cache(maxsize=1)
def local_addresses() -> frozenset[str]:
    """Addresses of this machine's own interfaces (connecting to them reaches a local server)."""
    found: set[str] = set(resolve(socket.gethostname()))
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(urls.canonical_ip(":".join(raw[i:i + 4] for i in range(0, 32, 4))) or "")
    except OSError:
        pass
    try:  # IPv4 local addresses: the "/32 host LOCAL" leaves of the routing trie
        previous = ""
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            if "/32 host LOCAL" in line and previous:
                found.add(previous)
            parts = line.strip().split()
            previous = parts[1] if len(parts) == 2 and parts[0] in ("|--", "+--") else previous
    except OSError:
        pass
    return frozenset(a for a in found if a)


def service_definitions(env: Mapping[str, str]) -> dict[str, dict[str, str] | str]:
    """Connection services from the user's and the system's pg_service.conf, the user's file winning, each read
    the way libpq reads it (`urls.parse_service_file`); a service libpq would reject is a str saying why."""
    from psycopg import pq

    home = env.get("HOME") or str(Path.home())
    files = [Path(env["PGSERVICEFILE"]) if env.get("PGSERVICEFILE") else Path(home) / ".pg_service.conf"]
    sysconf = env.get("PGSYSCONFDIR") or "/etc/postgresql-common"
    files.append(Path(sysconf) / "pg_service.conf")
    keywords = [d.keyword.decode() for d in pq.Conninfo.get_defaults()]
    services: dict[str, dict[str, str] | str] = {}
    for path in files:
        if not path.is_file():
            continue
        try:
            text = path.read_bytes().decode("utf-8", "replace")
        except OSError as exc:
            raise urls.TargetError(f"cannot read service file {path}: {exc.strerror}") from None
        for name, found in urls.parse_service_file(text, keywords).items():
            services.setdefault(name, found)
    return services


@dataclass(frozen=True)
class Vantage:
    """Where connections are made from. This machine by default; a bastion for `--via HOST`, where names are
    resolved, `localhost` means the bastion, and the marker is read through its psql."""

    resolve: Callable[[str], frozenset[str]]
    local_addresses: Callable[[], frozenset[str]]
    read_marker: Callable[[str, Mapping[str, str]], str | None]
    name: str = "this machine"


def _local_marker(conninfo: str, pg_env: Mapping[str, str]) -> str | None:
    return read_marker(conninfo)


def here() -> Vantage:
    return Vantage(resolve, local_addresses, _local_marker)


def identify(url: str, env: Mapping[str, str], vantage: Vantage | None = None) -> urls.Identity:
    v = vantage or here()
    return urls.identify(url, env=env, services=service_definitions(env), os_user=_os_user(env),
                         resolve=v.resolve, local_addresses=v.local_addresses())


def _os_user(env: Mapping[str, str]) -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry: libpq would fail the same way
        return env.get("USER", "")


# Every name qualified: a search_path putting another schema before pg_catalog (a database setting, `options` in
# the URL) must not let look-alike tables or functions answer.
MARKER_QUERY = """
SELECT (SELECT pg_catalog.split_part(cfg, '=', 2)
          FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS cfg
         WHERE s.setrole OPERATOR(pg_catalog.=) 0
           AND s.setdatabase OPERATOR(pg_catalog.=) (
                 SELECT d.oid FROM pg_catalog.pg_database d
                  WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
           AND pg_catalog.lower(pg_catalog.split_part(cfg, '=', 1)) OPERATOR(pg_catalog.=) %(name)s::pg_catalog.text
         LIMIT 1),
       pg_catalog.current_setting(%(name)s::pg_catalog.text, true)
"""


def read_marker(conninfo: str, timeout: int = 5) -> str | None:
    """The database's `ops.environment` marker; None when unset. Raises when the database is unreachable.

    The database-level setting is read from the catalog, because the session's own value can be overridden
    by the connection (`options=-c ops.environment=staging`); production in either place wins."""
    import psycopg

    with psycopg.connect(conninfo, connect_timeout=timeout, autocommit=True) as conn:
        row = conn.execute(MARKER_QUERY, {"name": MARKER_SETTING}).fetchone()
    values = [v.strip().strip("'\"").lower() for v in (row or ()) if v]
    if "production" in values:
        return "production"
    return values[0] if values else None


# -- judging ---------------------------------------------------------------------------------------------------------
def _rules(settings: Settings, env: Mapping[str, str], vantage: Vantage) -> list[urls.ProductionRule]:
    rules = []
    for item in settings.get("production.identities") or []:
        if isinstance(item, str):
            item = {"host": item}
        if not isinstance(item, Mapping) or not item.get("host"):
            raise ConfigError(f"ops.production.identities entry {item!r} has no host",
                              hint="write entries as {host: H} or {host: H, user: U}")
        host = str(item["host"])
        port = str(item.get("port", "*"))
        ep = urls._endpoint(host, "", port if port != "*" else urls.DEFAULT_PORT, vantage.resolve,
                            vantage.local_addresses())
        if port == "*":
            ep = urls.Endpoint(ep.name, ep.addresses, "*", ep.local)
        rules.append(urls.ProductionRule(ep, item.get("user"), item.get("dbname")))
    return rules


def judge(settings: Settings, url: str, *, read_db_marker: bool = True, vantage: Vantage | None = None) -> Target:
    """What the guard thinks of `url`: never raises; `Target.refused` says whether writes would be refused.

    `vantage` is where the connection would be made from (default: here; `--via` passes the bastion's)."""
    env = settings.env
    vantage = vantage or here()
    redacted = redact_url(url or "")
    try:
        ident = identify(url, env, vantage)
    except urls.TargetError as exc:
        return Target(url, _shown_unparsed(url or ""), "", "", "", (), (), error=_safe_error(str(exc), url or ""))
    notes: list[str] = []
    production = None
    prod_url = settings.env_var("DATABASE_URL")
    if prod_url is None:
        notes.append("DATABASE_URL is not set: production is recognised only by ops.production.identities, "
                     "names and the database's own marker")
    else:
        try:
            production = identify(prod_url, env, vantage)
        except urls.TargetError as exc:
            return Target(url, redacted, ident.key(), ident.dbname, ident.user, (), (),
                          error=f"DATABASE_URL cannot be understood ({_safe_error(str(exc), prod_url)}), so "
                                "production cannot be told apart")
    try:
        reasons = urls.production_reasons(ident, production=production, rules=_rules(settings, env, vantage),
                                          tokens=settings.get("production.name_tokens") or [])
    except ConfigError as exc:
        return Target(url, redacted, ident.key(), ident.dbname, ident.user, (), (), error=exc.message)
    conninfo, pg_env = _connection(ident.params)
    marker = None
    if read_db_marker:
        try:
            marker = vantage.read_marker(conninfo, pg_env)
        except Exception as exc:  # unreachable: judged by the URL alone
            notes.append(f"the database's marker could not be read from {vantage.name} ({type(exc).__name__}); "
                         "judged by its URL alone")
        if marker == "production":
            reasons.append(f"the database is marked production ({MARKER_SETTING} = 'production')")
        elif marker and marker not in ENVIRONMENTS:
            notes.append(f"unknown marker {marker!r}")
    return Target(url, redacted, ident.key(), ident.dbname, ident.user,
                  tuple(e.describe() for e in ident.endpoints), tuple(reasons), tuple(notes), marker,
                  conninfo=conninfo, env=pg_env)


def _safe_error(message: str, url: str) -> str:
    """A TargetError's message without any piece of the password: libpq and the guard quote the part they could
    not read, and in a URL with a password written wrongly that part is the password or a piece of it."""
    from .redact import passwords_in, redact_text

    if "@" in url or "password" in url.lower():
        message = re.sub(r'"[^"]*"|\'[^\']*\'', "'***'", message)
    return redact_text(message, passwords_in(url))


def _shown_unparsed(url: str) -> str:
    """How to show a target the guard could not read: redacted, and a key=value string cut after `password=` (where
    its quoting went wrong the rest may be the password)."""
    if "://" in url:
        return redact_url(url)
    return re.sub(r"(?is)(\bpassword\s*=).*", r"\1*** ...", redact_url(url))


def _connection(params: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """A conninfo naming every part explicitly (so PG* variables cannot redirect it after judging), and the
    environment to give psql/pg_dump: every part that has a PG* variable (where to connect, and the TLS, channel
    binding and authentication demands that protect the password), the password only there. Not the client
    encoding: psql reads a dump's first lines before its `SET client_encoding`, and the dump checker reads them
    as an ASCII-safe encoding, which every server encoding is."""
    from psycopg.conninfo import make_conninfo

    from .pg import PG_ENV

    conninfo = make_conninfo("", **dict(params))
    pg_env = {var: params[key] for key, var in PG_ENV.items() if params.get(key) and key != "client_encoding"}
    return conninfo, pg_env


def require(settings: Settings, url: str, *, action: str, emergency: bool = False,
            approval: Approval | None = None, read_marker: bool = True, vantage: Vantage | None = None) -> Target:
    """Judge `url` for a write by `action`; return the Target, or raise GuardRefused (exit 3) with the reason."""
    target = judge(settings, url, read_db_marker=read_marker, vantage=vantage)
    if target.error:
        raise GuardRefused(f"{action}: refused {target.redacted}: {target.error}",
                           hint="give the target as one postgresql:// URL; `inv guard.check URL` explains")
    if not target.is_production:
        return target
    why = "; ".join(target.reasons)
    if not emergency:
        raise GuardRefused(f"{action}: refused: {target.redacted} is production ({why})",
                           hint="this task never writes to production; the emergency path is `inv emergency.restore`")
    if approval is None:
        raise GuardRefused(f"{action}: production needs a signed approval token ({why})",
                           hint="ask an approver to run `inv emergency.approve --tag TAG` and pass it with --approve")
    approval(target)  # raises GuardRefused naming what is wrong with the token
    return target


def require_scratch(settings: Settings, server_url: str, dbname: str, *, action: str,
                    vantage: Vantage | None = None) -> Target:
    """Allow creating/dropping a scratch database the tool names itself, on a non-production target's server."""
    if not dbname.startswith(SCRATCH_PREFIX):
        raise GuardRefused(f"{action}: {dbname!r} is not a scratch database name (prefix {SCRATCH_PREFIX})")
    require(settings, server_url, action=action, vantage=vantage)  # reached through a non-production target
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(server_url)
    params["dbname"] = dbname
    return require(settings, make_conninfo("", **params), action=action, read_marker=False, vantage=vantage)


def mark(settings: Settings, environment: str, url: str) -> Target:
    """Store `environment` in the database as `ops.environment` (ALTER DATABASE ... SET)."""
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment {environment!r}", hint="use `production` or `staging`")
    target = judge(settings, url)
    if target.error:
        raise GuardRefused(f"guard.mark: refused {target.redacted}: {target.error}")
    if environment != "production" and target.is_production:
        raise GuardRefused(f"guard.mark: {target.redacted} is production ({'; '.join(target.reasons)}); "
                           f"it cannot be marked {environment}")
    import psycopg
    from psycopg import sql

    with psycopg.connect(target.conninfo, connect_timeout=10, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(target.dbname), sql.SQL(MARKER_SETTING), sql.Literal(environment)))
    return judge(settings, url)


# -- tasks -----------------------------------------------------------------------------------------------------------
@task(name="check", help={"url": "Database URL or key=value conninfo to judge (quote it)"})
def check_task(c: Any, url: str) -> None:
    """Tell what the guard thinks of a database target and why; exit 3 if production or refused."""
    settings = Settings.from_context(c)
    target = judge(settings, url)
    print(target.explain())
    if target.refused:
        raise GuardRefused("refused: writes to this target are refused outside the emergency path"
                           if not target.error else f"refused: {target.error}")


@task(name="mark", help={"env": "production or staging", "url": "Database URL to mark"})
def mark_task(c: Any, env: str, url: str) -> None:
    """Store the environment inside the database itself (a second line of defence that survives restores)."""
    settings = Settings.from_context(c)
    try:
        target = mark(settings, env, url)
    except GuardRefused:
        raise
    except Exception as exc:
        from .errors import ServiceError
        raise ServiceError(f"could not mark {redact_url(url)}: {type(exc).__name__}: {exc}",
                           hint="the role must own the database (or be superuser) to ALTER DATABASE ... SET") from None
    print(f"marked {target.redacted} as {target.marker}")

