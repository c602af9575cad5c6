"""Pure: the SQL the restore engine adds around a dump, reading what psql and operators write, and the recent-data
checks (`recent_checks`: built and judged here, run by whoever reaches the database) (stdlib only).

The engine (ops.restorer) sends `prologue()` right after BEGIN, the dump through `PreambleEditor`, and
`count_check_sql()` before COMMIT. Nothing here touches a file, a process or a database.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import dumpcheck
from .errors import ConfigError

ADVISORY_KEY = 1869640562           # "opsr": first half of the advisory lock key; the second is the database name's hash
LOCK_TIMEOUT_MESSAGE = "canceling statement due to lock timeout"
BUSY_MESSAGE = "lottery-ops: another restore of this database is running"
COUNT_MESSAGE = "lottery-ops: row count mismatch"
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h|d)?\s*")
_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1}
FOOTER_LINE = b"-- PostgreSQL database dump complete"


def parse_duration_ms(text: str) -> int:
    """PostgreSQL-style duration -> milliseconds: "30s" -> 30000, "500ms", "2min", "1h", "0" (no limit)."""
    m = _DURATION.fullmatch(str(text))
    if not m:
        raise ConfigError(f"ops.restore.lock_timeout {text!r} is not a duration",
                          hint="write it as PostgreSQL does: 500ms, 30s, 2min")
    return int(float(m[1]) * _UNITS_MS[m[2]])


def prologue(lock_timeout_ms: int, *, check_client: bool = False) -> bytes:
    """What runs right after BEGIN: the lock timeout, the advisory lock (both end with the transaction), and on
    PostgreSQL 14+ a check that ends the server session soon after psql dies (not left running a long statement)."""
    lines = [f"SET lock_timeout = {lock_timeout_ms};",
             "DO $ops_lock$ BEGIN IF NOT pg_catalog.pg_try_advisory_xact_lock("
             f"{ADVISORY_KEY}, pg_catalog.hashtext(pg_catalog.current_database())) THEN "
             f"RAISE EXCEPTION '{BUSY_MESSAGE}'; END IF; END $ops_lock$;"]
    if check_client:
        lines.insert(1, "SET client_connection_check_interval = 1000;")
    return ("\n".join(lines) + "\n").encode()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def split_table(key: str) -> tuple[str, str]:
    """"public.User" -> ("public", "User") (pg_dump's TOC names: the schema holds no dot in practice)."""
    schema, _, name = key.partition(".")
    return (schema, name) if name else ("public", schema)


def count_check_sql(tables: Mapping[str, int]) -> bytes:
    """A DO block that raises unless every table holds exactly the rows the backup sent (runs before COMMIT)."""
    if not tables:
        return b""
    values = ",\n".join(f"({quote_literal(s)}, {quote_literal(t)}, {int(n)})"
                        for s, t, n in ((*split_table(k), v) for k, v in sorted(tables.items())))
    tag = "$ops_check_" + secrets.token_hex(4) + "$"
    body = ("DECLARE r record; found bigint; BEGIN\n"
            f"FOR r IN SELECT * FROM (VALUES\n{values}\n) AS v(s, t, n) LOOP\n"
            "EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %I.%I', r.s, r.t) INTO found;\n"
            f"IF found <> r.n THEN RAISE EXCEPTION '{COUNT_MESSAGE}: %.% holds % rows, the backup has %', "
            "r.s, r.t, found, r.n; END IF;\nEND LOOP; END")
    return f"DO {tag} {body} {tag};\n".encode()


_DROP_CONSTRAINT = re.compile(rb"ALTER TABLE IF EXISTS ONLY (?P<table>.+) DROP CONSTRAINT IF EXISTS (?P<name>.+);\n")


class PreambleEditor:
    """Edits the dump's preamble (up to its first TOC entry: the SET lines and the --clean DROP block), where
    pg_dump writes one statement per line; later bytes pass through untouched. Works on chunks of any size.

    - `SET lock_timeout = 0;` becomes our lock timeout (else the dump would wait for locks forever);
    - `ALTER TABLE IF EXISTS ONLY part DROP CONSTRAINT IF EXISTS c;` is left out when `c` is, in the target, a
      partition's constraint inherited from its partitioned parent: PostgreSQL refuses to drop it ("cannot drop
      inherited constraint"), and the dump's DROP TABLE of the partition removes it anyway. pg_dump --clean writes
      such lines for every partitioned table with a primary key, so without this a backup could be restored only
      into an empty database.
    """

    _TOC = re.compile(rb"^-- (?:Data for )?Name: ", re.M)

    def __init__(self, lock_timeout_ms: int, inherited: frozenset[tuple[str, str, str]] = frozenset()):
        self.old = b"SET lock_timeout = 0;\n"
        self.new = f"SET lock_timeout = {lock_timeout_ms};\n".encode()
        self.inherited = inherited
        self.active = True
        self.tail = b""
        self.rewritten = False
        self.skipped: list[str] = []

    def feed(self, chunk: bytes) -> bytes:
        if not self.active:
            return chunk
        data = self.tail + chunk
        m = self._TOC.search(data)
        if m is not None:
            head, rest = data[:m.start()], data[m.start():]
            self.active, self.tail = False, b""
            return self._rewrite(head) + rest
        cut = data.rfind(b"\n") + 1             # hold back a partial last line
        self.tail = data[cut:]
        return self._rewrite(data[:cut])

    def flush(self) -> bytes:
        out, self.tail = self._rewrite(self.tail), b""
        return out

    def _rewrite(self, text: bytes) -> bytes:
        out = []
        for line in text.splitlines(keepends=True):
            if line == self.old and not self.rewritten:
                self.rewritten = True
                line = self.new
            elif self.inherited and line.startswith(b"ALTER TABLE IF EXISTS ONLY "):
                m = _DROP_CONSTRAINT.fullmatch(line)
                if m is not None:
                    table = dumpcheck.table_key(m["table"])
                    schema, name = split_table(table)
                    constraint = dumpcheck.unquote(m["name"].strip())
                    if (schema, name, constraint) in self.inherited:
                        self.skipped.append(f"{table}.{constraint}")
                        continue
            out.append(line)
        return b"".join(out)


def psql_errors(stderr: str, limit: int = 8) -> list[str]:
    """The ERROR/FATAL lines psql printed (with their psql:<stdin>:N: prefix removed), first ones first."""
    found = []
    for line in stderr.splitlines():
        text = re.sub(r"^psql:[^:]*:\d+: ", "", line.strip())
        if text.startswith(("ERROR:", "FATAL:", "error:", "psql: error:")):
            found.append(text)
        if len(found) >= limit:
            break
    return found


def describe_session(row: Mapping[str, Any]) -> str:
    """One blocking session as a line an operator can act on."""
    who = f"user {row.get('usename') or '?'}"
    if row.get("application_name"):
        who += f", application {row['application_name']!r}"
    if row.get("client_addr"):
        who += f", from {row['client_addr']}"
    state = row.get("state") or "?"
    age = row.get("xact_age")
    held = f", transaction open {int(age)} s" if age is not None else ""
    query = " ".join(str(row.get("query") or "").split())[:100]
    return f"pid {row['pid']} ({who}; {state}{held}): {query}" if query else f"pid {row['pid']} ({who}; {state}{held})"


def ends_with_footer(tail: bytes) -> bool:
    """Pure: whether the last bytes of a dump are pg_dump's footer (optionally followed by `\\unrestrict KEY`)."""
    lines = tail.rstrip(b"\n").split(b"\n")
    if lines and lines[-1].startswith(b"\\unrestrict "):
        lines = lines[:-1]
        while lines and not lines[-1]:
            lines.pop()
    return lines[-3:] == [b"--", FOOTER_LINE, b"--"]


def parse_identifier(text: str) -> tuple[str, ...]:
    """Pure: an SQL name as written in config -> its parts: `public."User"` -> ("public", "User"); `users` ->
    ("users",) (unquoted names fold to lower case, as PostgreSQL does)."""
    parts, rest = [], str(text).strip()
    while rest:
        if rest.startswith('"'):
            m = re.match(r'"((?:[^"]|"")+)"', rest)
            if not m:
                raise ConfigError(f"cannot read the name {text!r}", hint='quote mixed-case names: \'"User"\'')
            parts.append(m[1].replace('""', '"'))
        else:
            m = re.match(r"[A-Za-z_][A-Za-z0-9_$]*", rest)
            if not m:
                raise ConfigError(f"cannot read the name {text!r}", hint='write names as public."User" or users')
            parts.append(m[0].lower())
        rest = rest[m.end():].strip()
        if rest.startswith("."):
            rest = rest[1:].strip()
            if not rest:
                raise ConfigError(f"cannot read the name {text!r}")
        elif rest:
            raise ConfigError(f"cannot read the name {text!r}", hint='write names as public."User" or users')
    if not parts or len(parts) > 2:
        raise ConfigError(f"cannot read the name {text!r}", hint='write names as public."User" or users')
    return tuple(parts)


def normalise_schemas(schemas: Any) -> tuple[str, ...] | None:
    """Pure: a restore scope. "a,b" / ["a", "b"] -> ("a", "b"); None, "all" or ["all"] -> None (everything)."""
    if schemas is None:
        return None
    if isinstance(schemas, str):
        schemas = [s for s in (x.strip() for x in schemas.split(",")) if s]
    items = [str(s) for s in schemas]
    if not items:
        raise ConfigError("no schema given", hint="--schemas public (default), --schemas a,b or --schemas all")
    if "all" in items:
        return None
    return tuple(dict.fromkeys(items))

RECENT_TABLE_SQL = "SELECT to_regclass(%s)::text"
RECENT_SHAPE_ERROR = "ops.verify.recent entry is not {table: NAME, column: NAME}"


def recent_checks(queries: Iterable[Mapping[str, Any]] | None,
                  one: Callable[[str, Sequence[Any] | None], Sequence[Any]],
                  refused: Callable[[Exception], str | None]) -> list[dict[str, Any]]:
    """Pure: the runbook's recent-data queries (`ops.verify.recent`: {table, column}): each passes when the table
    exists and has rows, and shows the newest value of the column. The queries are built and judged here; where the
    database is reached from decides how they run: `one(query, params)` runs a read-only query and returns its one
    row, and `refused(exc)` gives the server's error text when the count query failed because the server refused it
    (no such column, no permission), or None to let `exc` propagate."""
    out: list[dict[str, Any]] = []
    for q in queries or []:
        table, column = str(q.get("table", "")), str(q.get("column", ""))
        entry: dict[str, Any] = {"table": table, "column": column}
        out.append(entry)
        try:
            tparts, (col,) = parse_identifier(table), parse_identifier(column)
        except (ConfigError, ValueError):
            entry["error"] = RECENT_SHAPE_ERROR
            continue
        (found,) = one(RECENT_TABLE_SQL, [".".join(quote_ident(part) for part in tparts)])
        if found is None:
            entry["error"] = f"no table {table}"
            continue
        try:   # regclass text: quoted as needed by the server itself
            rows, newest = one(f"SELECT count(*), max({quote_ident(col)})::text FROM {found}", None)
        except Exception as exc:  # noqa: BLE001  (refused() decides)
            why = refused(exc)
            if why is None:
                raise
            entry["error"] = why[:200]
            continue
        entry.update(rows=int(rows), newest=newest)
        if not rows:
            entry["error"] = f"{table} has no rows"
    return out
