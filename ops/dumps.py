"""Read plain pg_dump backups (.sql.gz or .sql) in one streaming pass: check, count, screen and filter.

    with dumps.open_backup(path) as stream:          # effect: the file, decompressed as it is read
        report = dumps.inspect(stream)               # verify: header, footer, COPY/INSERT row counts, needs

    reader = dumps.DumpReader(plan)                  # restore: the same checks while feeding psql
    for piece in reader.filter(stream):              # raises VerificationFailed before sending anything refused
        psql.stdin.write(piece)
    # reaching here means the stream was complete and clean: let psql COMMIT (close stdin); on any exception, kill it

Everything here is pure (bytes in, bytes and a `Report` out) except `open_backup`. Memory stays constant: COPY data is
counted and passed on in whole chunks (bytes.find/count, no per-row Python), SQL outside COPY goes through a
psql-faithful lexer (`ops.psqllex`) and a statement screen (`ops.dumpcheck`). A `Plan` (what the target has, which
schemas to restore, how the SQL is executed) makes the reader leave out whole TOC entries that cannot or must not be
restored, with their --clean DROP statements, and apply the few known harmless version adaptations; everything left
out or adapted is listed in the report.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import dumpcheck
from .dumpcheck import DropTarget, Facts
from .errors import VerificationFailed
from .psqllex import INITIAL, Lexer, Statement

CHUNK = 1 << 20
HOLD_LIMIT = 64 << 20         # pre-data held back so --clean DROPs can be judged with the whole schema known
LONG_LINE = 1 << 16           # a COPY line longer than this is passed on before its end arrives
MAX_PROBLEMS = 100

FOOTER = b"-- PostgreSQL database dump complete\n"
_RESTRICT_LINE = re.compile(rb"\\(restrict|unrestrict) ([A-Za-z0-9]{1,256})\n")
_TOC_LINE = re.compile(rb"-- (Data for )?Name: (.*); Type: (.*); Schema: (.*); Owner: ([^;\n]*)(?:; Tablespace: .*)?\n")
_DUMPED = re.compile(rb"-- Dumped (from database|by pg_dump) version (.+)\n")
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?")

DATA_TYPES = frozenset({"TABLE DATA", "SEQUENCE SET", "BLOB", "BLOBS", "BLOB DATA", "LARGE OBJECT",
                        "LARGE OBJECTS", "MATERIALIZED VIEW DATA"})
LARGE_OBJECT_TYPES = frozenset({"BLOB", "BLOBS", "BLOB DATA", "BLOB METADATA", "LARGE OBJECT", "LARGE OBJECTS"})
# Entries that define an object other entries can depend on (a left-out one takes its dependents along).
DEFINING_TYPES = frozenset({"TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "TYPE", "DOMAIN", "FUNCTION",
                            "PROCEDURE", "AGGREGATE", "FOREIGN TABLE", "COLLATION", "TEXT SEARCH CONFIGURATION",
                            "TEXT SEARCH DICTIONARY", "OPERATOR", "CAST", "SERVER", "FOREIGN DATA WRAPPER"})
POST_DATA_TYPES = frozenset({"CONSTRAINT", "FK CONSTRAINT", "INDEX", "INDEX ATTACH", "TRIGGER", "POLICY",
                             "ROW SECURITY", "RULE", "EVENT TRIGGER", "PUBLICATION", "PUBLICATION TABLE",
                             "PUBLICATION TABLES IN SCHEMA", "STATISTICS", "CHECK CONSTRAINT", "DEFAULT ACL"})
# psql learned \restrict in these minor releases (CVE-2025-8714); older ones stop at "invalid command \restrict".
RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}

_SECURITY = frozenset({"meta-command", "psql-variable", "ambiguous-literal", "copy-form", "server-function",
                       "statement-kind", "setting", "untrusted-language", "transaction", "nul", "restrict"})
SUPERUSER_HINT = ("restore as a role that is not a superuser (it owns the schemas it restores; README, \"Restore as a "
                  "non-superuser role\"): the server then refuses what these routines could do")
_HINTS = {
    "security": "pg_dump does not write this: the file was altered or is not a plain pg_dump backup. Do not restore "
                "it; take another backup (inv restore.download --tag ...)",
    "download": "download it again (inv restore.download), or pick an older backup",
    "format": "restore.verify reads plain pg_dump SQL files (.sql or .sql.gz), as written by the nightly backup job",
    "cut": "this restore cannot leave out part of a line; restore it with --schemas all or fix the plan",
}


# -- records -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    line: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message

    @property
    def hint(self) -> str:
        if self.kind in _SECURITY:
            return _HINTS["security"]
        if self.kind == "superuser-code":
            return SUPERUSER_HINT
        if self.kind in ("unreadable", "empty", "gzip", "no-footer", "truncated", "crlf"):
            return _HINTS["download"]
        return _HINTS["cut"] if self.kind == "cut" else _HINTS["format"]


@dataclass(frozen=True)
class TocEntry:
    """One `-- Name: X; Type: T; Schema: S; Owner: O` comment (`data`: a `-- Data for Name:` one)."""

    name: str
    type: str
    schema: str
    owner: str
    line: int
    data: bool = False

    @property
    def qualified(self) -> str:
        return self.name if self.schema == "-" else f"{self.schema}.{self.name}"


@dataclass
class LeftOut:
    """An object (or a --clean DROP of one) the filter did not send, and why. `out_of_scope`: left out only because
    the restore's scope excludes it (it stays as it is on the target); otherwise it could not be restored there."""

    name: str
    type: str
    schema: str
    reason: str
    rows: int | None = None
    out_of_scope: bool = False


@dataclass(frozen=True)
class Plan:
    """What the restore target has and how the stream will be executed; facts left as None are not checked.

    scope: schemas the restore replaces (None: every schema and database-wide object).
    available_extensions / existing_roles / existing_publications: from the target (None: assume present).
    create_roles: policies naming a missing role get `CREATE ROLE name NOLOGIN` first instead of being left out.
    superuser: whether the restoring role is a superuser (event triggers and publications need one).
    server_access: whether the restoring role can reach the server's files or programs (a superuser, or a member
        of pg_execute_server_program / pg_read_server_files / pg_write_server_files); None: same as superuser.
    executor: "psql" or "psycopg" (no meta-commands at all: \\restrict lines are always removed).
    psql_version / server_version: (major, minor) of the local psql and of the target server.
    single_transaction: the restore runs in one transaction, so the dump's own BEGIN/COMMIT are removed.
    """

    scope: frozenset[str] | None = frozenset({"public"})
    available_extensions: frozenset[str] | None = None
    existing_roles: frozenset[str] | None = None
    existing_publications: frozenset[str] | None = None
    create_roles: bool = False
    superuser: bool = True
    server_access: bool | None = None
    executor: str = "psql"
    psql_version: tuple[int, int] | None = None
    server_version: tuple[int, int] | None = None
    single_transaction: bool = True

    @property
    def keeps_restrict(self) -> bool:
        return self.executor == "psql" and (self.psql_version is None or psql_knows_restrict(self.psql_version))


def psql_knows_restrict(version: tuple[int, int]) -> bool:
    major, minor = version
    return major >= 18 or (major in RESTRICT_SINCE and minor >= RESTRICT_SINCE[major])


def parse_version(text: str | None) -> tuple[int, int] | None:
    """"17.6 (Debian 17.6-1.pgdg13+1)" -> (17, 6); "17devel" -> (17, 0)."""
    m = _VERSION.match(text or "")
    return (int(m[1]), int(m[2] or 0)) if m else None


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    pg_dump_version: str | None = None
    server_version: str | None = None
    tables: dict[str, int] = field(default_factory=dict)
    schemas: set[str] = field(default_factory=set)
    extensions: dict[str, str | None] = field(default_factory=dict)     # name -> schema
    roles: set[str] = field(default_factory=set)                        # named in policies
    owners: set[str] = field(default_factory=set)                       # named in OWNER TO (dumps with owners)
    event_triggers: list[str] = field(default_factory=list)
    publications: list[str] = field(default_factory=list)
    large_objects: int = 0
    toc: list[TocEntry] = field(default_factory=list)
    complete: bool = False                                              # footer (and \unrestrict) at the end
    restrict_key: str | None = None
    left_out: list[LeftOut] = field(default_factory=list)
    adaptations: list[str] = field(default_factory=list)
    roles_created: list[str] = field(default_factory=list)
    server_reach: list[str] = field(default_factory=list)              # routines a superuser must not run
    bytes: int = 0
    lines: int = 0
    more_problems: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def left_out_in_scope(self) -> list[LeftOut]:
        """What the restore's scope asked for but the target cannot take (a production restore must refuse)."""
        return [lo for lo in self.left_out if not lo.out_of_scope]

    @property
    def requires(self) -> dict[str, object]:
        """What the dump needs of its target database and server."""
        return {
            "schemas": sorted(self.schemas),
            "extensions": sorted(self.extensions),
            "roles": sorted(self.roles),
            "event_triggers": sorted(self.event_triggers),
            "publications": sorted(self.publications),
            "large_objects": self.large_objects,
        }

    def restored_tables(self) -> dict[str, int]:
        """Tables whose rows the filtered stream carries (left-out table data removed)."""
        gone = {f"{lo.schema}.{lo.name}" for lo in self.left_out if lo.type == "TABLE DATA"}
        return {name: rows for name, rows in self.tables.items() if name not in gone}

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "problems": [str(p) for p in self.problems], "pg_dump_version": self.pg_dump_version,
                "server_version": self.server_version, "tables": dict(self.tables), "requires": self.requires,
                "superuser_unsafe_routines": sorted(self.server_reach)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def render(self) -> str:
        rows = sum(self.tables.values())
        head = "OK: a complete pg_dump backup" if self.ok else "NOT OK"
        out = [f"{head} (pg_dump {self.pg_dump_version or '?'}, server {self.server_version or '?'}, "
               f"{self.bytes:,} bytes, {self.lines:,} lines)",
               f"tables: {len(self.tables)} holding {rows:,} rows"]
        width = max((len(t) for t in self.tables), default=0)
        out += [f"  {name:<{width}}  {count:>12,}" for name, count in sorted(self.tables.items())]
        req = self.requires
        out.append("needs of the target:")
        for key, value in req.items():
            shown = ", ".join(value) if isinstance(value, list) else str(value)
            out.append(f"  {key.replace('_', ' ')}: {shown or '-'}")
        if self.server_reach:
            out.append("restore as a non-superuser role: the restore would run routines that could reach the "
                       "server's files or programs:")
            out += [f"  {name}" for name in sorted(self.server_reach)]
        if self.adaptations:
            out.append("adapted:")
            out += [f"  {a}" for a in self.adaptations]
        if self.left_out:
            out.append(f"left out ({len(self.left_out)}):")
            out += [f"  {lo.type} {lo.name if lo.schema == '-' else lo.schema + '.' + lo.name}: {lo.reason}"
                    + (f" ({lo.rows:,} row{'s' if lo.rows != 1 else ''})" if lo.rows else "")
                    for lo in self.left_out]
        if self.problems:
            out.append("problems:")
            out += [f"  {p}" for p in self.problems]
            if self.more_problems:
                out.append(f"  ... and {self.more_problems} more")
        return "\n".join(out)


# -- opening a backup (the one effect here) ---------------------------------------------------------------------------
class BackupStream:
    """A decompressed backup: `read(n)` and iteration in chunks; gzip errors become VerificationFailed."""

    def __init__(self, raw: BinaryIO, name: str, compressed: bool):
        self.raw, self.name, self.compressed = raw, name, compressed

    def read(self, size: int = CHUNK) -> bytes:
        try:
            return self.raw.read(size)
        except EOFError:
            raise VerificationFailed(f"{self.name}: the gzip stream is truncated (it ends before gzip's end marker): "
                                     "download it again", hint=_HINTS["download"]) from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise VerificationFailed(f"{self.name}: the gzip data is corrupt ({exc}): download it again",
                                     hint=_HINTS["download"]) from None
        except Exception as exc:
            if type(exc).__module__.startswith("isal"):
                raise VerificationFailed(f"{self.name}: the gzip data is corrupt ({exc}): download it again",
                                         hint=_HINTS["download"]) from None
            raise

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.read(CHUNK)
            if not chunk:
                return
            yield chunk


def sniff(head: bytes) -> str:
    """What the first bytes of a file look like: gzip, pgdmp, html, xml, json, empty or text."""
    if not head:
        return "empty"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:5] == b"PGDMP":
        return "pgdmp"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "html"
    if text.startswith((b"<?xml", b"<error")):
        return "xml"
    if text.startswith(b"{") and b'"message"' in text:
        return "json"
    return "text"


def describe(kind: str, head: bytes, name: str) -> str:
    """A one-line message for a file that is not a backup at all."""
    text = head.decode("utf-8", "replace")
    if kind == "empty":
        return f"{name} is empty (0 bytes): the download failed"
    if kind == "html":
        title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        return f"{name} is an HTML page, not a backup" + (f" ({title[1].strip()[:80]})" if title else "") + \
            ": an error or login page was saved in place of the download"
    if kind == "xml":
        code = re.search(r"<Code>(.*?)</Code>", text, re.S)
        msg = re.search(r"<Message>(.*?)</Message>", text, re.S)
        detail = ": ".join(m[1].strip()[:120] for m in (code, msg) if m)
        return f"{name} is an XML error from the storage host" + (f" ({detail})" if detail else "") + \
            ", not a backup: the download link had expired or was refused"
    if kind == "json":
        msg = re.search(r'"message"\s*:\s*"([^"]{0,120})', text)
        return f"{name} is a JSON error response" + (f" ({msg[1]})" if msg else "") + ", not a backup"
    if kind == "pgdmp":
        return f"{name} is a pg_dump custom-format archive, not a plain SQL dump"
    shown = head[:16]
    return f"{name} is named .gz but is not gzip data (it starts with {shown!r})"


@contextmanager
def open_backup(path: str | os.PathLike[str]) -> Iterator[BackupStream]:
    """Open a .sql.gz (ISA-L when the isal package is there, else zlib) or .sql backup for one streaming read.
    Refuses, with its own message, a missing or empty file, an HTML page, an XML or JSON error body, a custom-format
    archive, and a .gz that is not gzip data."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        raise VerificationFailed(f"{p} does not exist", hint="download it first: inv restore.download") from None
    except OSError as exc:
        raise VerificationFailed(f"{p} cannot be read: {exc.strerror or exc}", hint=_HINTS["download"]) from None
    kind = sniff(head)
    if kind in ("empty", "html", "xml", "json", "pgdmp") or (p.suffix == ".gz" and kind != "gzip"):
        raise VerificationFailed(describe(kind, head, p.name), hint=_HINTS["download"])
    raw = _open_gzip(p) if kind == "gzip" else open(p, "rb")
    try:
        yield BackupStream(raw, p.name, kind == "gzip")
    finally:
        raw.close()


def _open_gzip(p: Path) -> BinaryIO:
    try:
        from isal import igzip_threaded          # decompresses in a thread of its own, outside the GIL
        return igzip_threaded.open(p, "rb", threads=1)  # type: ignore[no-untyped-call, no-any-return]
    except ImportError:
        pass
    try:
        from isal import igzip
        return igzip.open(p, "rb")  # type: ignore[no-untyped-call, no-any-return]
    except ImportError:
        return gzip.open(p, "rb")  # type: ignore[return-value]


# -- the reader --------------------------------------------------------------------------------------------------------
class _Refused(Exception):
    """Internal: a problem while filtering; turned into VerificationFailed at the API edge."""


@dataclass
class _Copy:
    table: str
    keep: bool
    line: int
    left: LeftOut | None = None
    rows: int = 0
    midline: bool = False


_Item = tuple[str, "bytes | memoryview"]     # (piece kind, data)
Piece = tuple[str, bytes]
"""Output with its meaning, for executors that are not psql: ("sql", statements ending at a statement boundary),
("sql-part", the start of a statement that later pieces complete), ("copy", a `COPY ... FROM stdin;` line),
("data", COPY data lines), ("end", the `\\.` line ending COPY data). Joined, the data is exactly what psql gets."""


@dataclass
class _Deferred:
    """A --clean DROP held until the schema is known."""

    target: DropTarget
    lines: list[bytes]


class DumpReader:
    """One pass over a plain pg_dump stream. Without a plan it only checks and counts (verify); with a plan it also
    returns, from `feed`, the bytes to send to the target, and stops at the first problem (raising
    VerificationFailed before the offending bytes are returned)."""

    def __init__(self, plan: Plan | None = None):
        self.plan = plan
        self.report = Report()
        self._filter = plan is not None
        self._lx = Lexer()
        self._n = 0                                    # lines read
        self._carry: list[bytes] = []
        self._carry_len = 0
        self._copy: _Copy | None = None
        self._out: list[_Item] = []
        self._hold: list[_Item | _Deferred] | None = [] if self._filter else None
        self._hold_size = 0
        self._entry: TocEntry | None = None
        self._entry_keep: bool | None = True
        self._entry_buf: list[_Item] = []
        self._entry_statements = 0
        self._entry_left: LeftOut | None = None
        self._entry_filled = False                     # a TABLE DATA entry held a COPY or an INSERT
        self._stmt_lines: list[bytes] = []
        self._actions: list[object] = []
        self._header = 0                              # 0 nothing, 1 "--", 2 "-- PostgreSQL database dump"
        self._statements = 0
        self._footer_at: int | None = None
        self._unrestricted = False
        self._std_on = False
        self._ext_left_out: dict[str, str | None] = {}
        self._ext_kept: dict[str, str | None] = {}
        self._cut: set[tuple[str, str]] = set()
        self._pub_kept: dict[str, bool] = {}
        self._created_roles: set[str] = set()
        self._adapted: set[str] = set()
        self._routine_words: dict[str, set[str]] = {}   # routine name -> words of its body (see _track_code)
        self._risky: dict[str, tuple[str, list[str], int]] = {}
        self._reached: set[str] = set()
        self._reach_all = False
        self._reported: set[str] = set()

    # -- public API ----------------------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        """Read the next piece of the (decompressed) dump; returns the bytes to send on (b"" when only checking)."""
        self._guarded(self._feed, chunk)
        return self._take()

    def finish(self) -> bytes:
        """End of input: final checks, and the output still held back. With a plan, raises VerificationFailed
        unless the dump was complete and clean."""
        self._guarded(self._finish, None)
        return self._take()

    def filter(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """feed() every chunk, then finish(); yields what to send. Exhausting it means complete and clean."""
        for chunk in chunks:
            out = self.feed(chunk)
            if out:
                yield out
        out = self.finish()
        if out:
            yield out

    def pieces(self, chunks: Iterable[bytes]) -> Iterator[Piece]:
        """Like filter(), with each piece tagged (see `Piece`) for executing through psycopg instead of psql."""
        for chunk in chunks:
            self._guarded(self._feed, chunk)
            yield from self._take_pieces()
        self._guarded(self._finish, None)
        yield from self._take_pieces()

    def fail(self, kind: str, message: str) -> None:
        """Record a problem found outside the reader (a gzip error, an interrupted read)."""
        try:
            self._problem(kind, message, line=None)
        except _Refused:
            self._raise()

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _guarded(self, step, arg) -> None:  # type: ignore[no-untyped-def]
        try:
            if arg is None:
                step()
            else:
                step(arg)
        except _Refused:
            self._out.clear()
            self._raise()
        if step == self._finish and self._filter and self.report.problems:
            self._out.clear()
            self._raise()

    def _raise(self) -> None:
        first = self.report.problems[0]
        raise VerificationFailed(f"the backup was refused: {first}", hint=first.hint)

    def _take(self) -> bytes:
        if not self._out:
            return b""
        out = b"".join(data for _, data in self._out)
        self._out.clear()
        return out

    def _take_pieces(self) -> list[Piece]:
        runs: list[tuple[str, list[bytes | memoryview]]] = []
        for kind, data in self._out:
            last = runs[-1][0] if runs else ""
            sql_run = kind in ("sql", "sql-part") and last in ("sql", "sql-part")
            if sql_run or (kind == "data" and last == "data"):
                runs[-1] = (kind, runs[-1][1])            # a run of SQL takes the kind of its last piece
                runs[-1][1].append(data)
            else:
                runs.append((kind, [data]))
        self._out.clear()
        return [(kind, b"".join(parts)) for kind, parts in runs]

    def _problem(self, kind: str, message: str, line: int | None = -1) -> None:
        rep = self.report
        if len(rep.problems) >= MAX_PROBLEMS:
            rep.more_problems += 1
        else:
            rep.problems.append(Problem(self._n if line == -1 else line, kind, message))
        if self._filter:
            raise _Refused()

    def _emit(self, data: bytes | memoryview, kind: str = "sql") -> None:
        if self._hold is not None:
            self._hold.append((kind, data))
            self._hold_size += len(data)
            if self._hold_size > HOLD_LIMIT:
                self._release()
        else:
            self._out.append((kind, data))

    def _entry_out(self, data: bytes, kind: str = "sql") -> None:
        if self._entry_keep is None:
            self._entry_buf.append((kind, data))
        elif self._entry_keep:
            self._emit(data, kind)

    # -- splitting the input into lines and COPY data ------------------------------------------------------------
    def _feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.report.bytes += len(chunk)
        if b"\0" in chunk:
            self._problem("nul", "the dump holds a NUL byte, which pg_dump never writes (psql would cut the line "
                                 "there)", line=self._n + chunk.count(b"\n", 0, chunk.index(b"\0")) + 1)
        pos = 0
        if self._copy is not None and self._copy.midline and not self._carry:
            nl = chunk.find(b"\n")
            if nl < 0:
                self._copy_piece(chunk)
                return
        if self._carry:
            nl = chunk.find(b"\n")
            if nl < 0:
                self._carry.append(chunk)
                self._carry_len += len(chunk)
                if self._copy is not None and self._carry_len > LONG_LINE:
                    self._copy_piece(b"".join(self._carry))
                    self._carry, self._carry_len = [], 0
                return
            line = b"".join(self._carry) + chunk[:nl + 1]
            self._carry, self._carry_len = [], 0
            self._lines(line, 0, len(line))
            pos = nl + 1
        last = chunk.rfind(b"\n")
        if last >= pos:
            self._lines(chunk, pos, last + 1)
            pos = last + 1
        if pos < len(chunk):
            rest = chunk[pos:]
            self._carry, self._carry_len = [rest], len(rest)

    def _lines(self, buf: bytes, pos: int, end: int) -> None:
        """buf[pos:end] is whole lines."""
        while pos < end:
            if self._copy is not None:
                pos = self._copy_data(buf, pos, end)
            else:
                nl = buf.index(b"\n", pos)
                self._line(buf[pos:nl + 1])
                pos = nl + 1

    def _copy_piece(self, data: bytes) -> None:
        """Part of a long COPY line whose end has not arrived yet."""
        c = self._copy
        assert c is not None
        if b"\r" in data:
            self._problem("crlf", f"a carriage return in the COPY data of {c.table}: pg_dump escapes them, so the "
                                  "file was converted to Windows line endings or altered", line=self._n + 1)
        c.midline = True
        if c.keep:
            self._emit(data, "data")

    def _copy_data(self, buf: bytes, pos: int, end: int) -> int:
        c = self._copy
        assert c is not None
        done = False
        if c.midline:                                   # the rest of a long line
            stop = buf.index(b"\n", pos) + 1
            rows, c.midline = 1, False
        elif buf.startswith(b"\\.\n", pos):
            stop, rows, done = pos + 3, 0, True
        else:
            idx = buf.find(b"\n\\.\n", pos, end)
            if idx >= 0:
                stop, done = idx + 4, True
                rows = buf.count(b"\n", pos, idx + 1)
            else:
                stop = end
                rows = buf.count(b"\n", pos, end)
        if buf.find(b"\r", pos, stop) >= 0:
            at = self._n + buf.count(b"\n", pos, buf.index(b"\r", pos, stop)) + 1
            self._problem("crlf", f"a carriage return in the COPY data of {c.table}: pg_dump escapes them, so the "
                                  "file was converted to Windows line endings or altered", line=at)
        c.rows += rows
        self._n += rows + done
        if c.keep:
            if done:
                if stop - 3 > pos:
                    self._emit(memoryview(buf)[pos:stop - 3], "data")
                self._emit(memoryview(buf)[stop - 3:stop], "end")
            else:
                self._emit(memoryview(buf)[pos:stop], "data")
        if done:
            self._end_copy()
        return stop

    def _end_copy(self) -> None:
        c = self._copy
        assert c is not None
        self.report.tables[c.table] = self.report.tables.get(c.table, 0) + c.rows
        if c.left is not None:
            c.left.rows = c.rows
        self._copy = None

    # -- SQL lines -----------------------------------------------------------------------------------------------
    def _line(self, line: bytes) -> None:
        self._n += 1
        n = self._n
        if n <= 2 or self._header < 2:
            self._check_header(n, line)
        if self._footer_at is not None and line.strip() and line != b"--\n" \
                and not line.startswith(b"\\unrestrict "):
            self._footer_at = None                       # something after the footer: it was not the end
        lx = self._lx
        if lx.idle:
            if line == b"\n":
                self._entry_out(line)
                return
            if line[:2] == b"--" and b"\r" not in line:
                self._comment(line)
                return
            if line[:1] == b"\\":
                self._backslash(line)
                return
        stmts = lx.feed(line, n)
        if lx.alarms:
            alarms, lx.alarms = lx.alarms, []
            for at, kind, message in alarms:
                self._problem(kind, message, line=at)
        if lx.backslash_in_string and not self._std_on:
            lx.backslash_in_string = False
            self._problem("ambiguous-literal", "a quoted string with a backslash before `SET "
                                               "standard_conforming_strings = on`: psql reads it by the server's "
                                               "setting, which may differ")
        if line.endswith(b"\r\n") and lx.state == INITIAL:
            self._problem("crlf", "the line ends with CRLF: the file was converted to Windows line endings (psql "
                                  "reads a carriage return as a line break)")
        actions = [self._statement(st, line) for st in stmts]
        if self._filter:
            self._output(line, actions)

    def _output(self, line: bytes, actions: list[object]) -> None:
        """Decide the fate of the lines of the statements that just ended (whole lines only)."""
        lx = self._lx
        if not self._stmt_lines and not actions and lx.idle:
            self._entry_out(line)                        # only whitespace or comments
            return
        self._stmt_lines.append(line)
        self._actions += actions
        if not lx.idle:
            if lx.first_word == "insert" and not self._actions:   # stream long INSERTs instead of holding them
                for held in self._stmt_lines:
                    self._entry_out(held, "sql-part")
                self._stmt_lines = []
            return
        lines, acts = self._stmt_lines, self._actions
        self._stmt_lines, self._actions = [], []
        if acts and all(a == "always" for a in acts):
            for held in lines:
                self._emit(held)
        elif all(a in ("keep", "always") for a in acts):
            kind = "copy" if self._copy is not None else "sql"
            for held in lines:
                self._entry_out(held, kind)
        elif all(a == "drop" for a in acts):
            return
        elif len(acts) == 1 and isinstance(acts[0], DropTarget):
            self._defer(acts[0], lines)
        else:
            self._problem("cut", "a statement to leave out shares its line with another statement")

    def _check_header(self, n: int, line: bytes) -> None:
        if self._header == 0 and n == 1 and line == b"--\n":
            self._header = 1
        elif self._header == 1 and n == 2 and line == b"-- PostgreSQL database dump\n":
            self._header = 2
        elif n <= 2 and self._header != 3 and line.endswith(b"\r\n") and line[:2] == b"--":
            self._header = 3
            self._problem("crlf", "the file has Windows (CRLF) line endings: it was converted after pg_dump wrote "
                                  "it, and psql would read it differently")
        elif n <= 2 and self._header != 3:
            kind = sniff(line)
            what = {"html": "an HTML page", "xml": "an XML document", "json": "a JSON document",
                    "gzip": "gzip data (compressed twice?)", "pgdmp": "a custom-format archive"}.get(kind)
            self._header = 3
            self._problem("no-header", "not a pg_dump file: " + (f"it is {what}" if what else
                                       "it does not start with pg_dump's `-- PostgreSQL database dump` header"))

    def _comment(self, line: bytes) -> None:
        if line.startswith((b"-- Name: ", b"-- Data for Name: ")):
            m = _TOC_LINE.fullmatch(line)
            if m is not None:
                self._toc(m)
        elif line == FOOTER:
            self._footer_at = self._n
            self._end_entry()                            # the footer belongs to no entry
            self._entry = None
        elif line.startswith(b"-- Dumped ") and self._statements == 0:
            m = _DUMPED.fullmatch(line)
            if m is not None:
                version = m[2].decode("utf-8", "replace").strip()
                if m[1] == b"by pg_dump":
                    self.report.pg_dump_version = version
                else:
                    self.report.server_version = version
        self._entry_out(line)

    def _backslash(self, line: bytes) -> None:
        m = _RESTRICT_LINE.fullmatch(line)
        rep = self.report
        if m is None:
            shown = line.rstrip(b"\r\n")[:60].decode("utf-8", "replace")
            self._problem("meta-command", f"psql would run the backslash command `{shown}`")
            return
        key = m[2].decode()
        if m[1] == b"restrict":
            if rep.restrict_key is not None or self._statements:
                self._problem("restrict", "\\restrict appears again or after the first statement; pg_dump writes it "
                                          "once, in the header")
            rep.restrict_key = key
        else:
            if rep.restrict_key is None or key != rep.restrict_key:
                self._problem("restrict", "\\unrestrict does not match the \\restrict key of the header")
            elif self._footer_at is None:
                self._problem("restrict", "\\unrestrict before the end of the dump")
            self._unrestricted = True
        if self._filter:
            assert self.plan is not None
            if self.plan.keeps_restrict:
                self._emit(line)
            else:
                self._adapt("removed the \\restrict/\\unrestrict lines: "
                            + ("statements are executed through psycopg" if self.plan.executor != "psql" else
                               f"psql {self.plan.psql_version[0]}.{self.plan.psql_version[1]} does not know them"  # type: ignore[index]
                               ))

    # -- code the restore itself would run -------------------------------------------------------------------
    def _track_code(self, entry: TocEntry | None, facts: Facts, line: int) -> None:
        """Follow which routines the restore would run (a CHECK constraint, a generated column, an index, a
        materialized view, a trigger or an event trigger names them, or a routine they run names them) and refuse,
        when the restoring role is a superuser, any such routine that could reach the server's files or programs
        (`Facts.server_reach`): it would run with the superuser's rights before anything could stop it. Names are
        matched as words, without schema or arguments, so the estimate errs towards refusing."""
        if self._entry_keep is False:
            return                                       # left out: not restored, never runs
        if facts.routine is not None:
            name = facts.routine
            self._routine_words.setdefault(name, set()).update(facts.words)
            if facts.server_reach and name not in self._risky:
                shown = entry.qualified if entry is not None else f"{name} (line {line})"
                self._risky[name] = (shown, facts.server_reach, line)
            if name in self._reached:
                self._reach(facts.words)
        else:
            self._reach_all = self._reach_all or facts.reach_all
            self._reach(facts.words)
        for name, (shown, reasons, at) in list(self._risky.items()):
            if name in self._reported or not (self._reach_all or name in self._reached):
                continue
            self._reported.add(name)
            self.report.server_reach.append(shown)
            if self._filter and self.plan is not None and (
                    self.plan.superuser if self.plan.server_access is None else self.plan.server_access):
                self._problem("superuser-code", f"the restore would run {shown} with the restoring superuser's "
                                                f"rights, and it could reach the server's files or programs "
                                                f"({'; '.join(reasons)})", line=at)

    def _reach(self, words: Iterable[str]) -> None:
        todo = [w for w in words if w not in self._reached]
        while todo:
            word = todo.pop()
            if word in self._reached:
                continue
            self._reached.add(word)
            todo += [w for w in self._routine_words.get(word, ()) if w not in self._reached]

    def _adapt(self, text: str) -> None:
        if text not in self._adapted:
            self._adapted.add(text)
            self.report.adaptations.append(text)

    # -- statements ----------------------------------------------------------------------------------------------
    def _statement(self, st: Statement, line: bytes) -> object:
        """Check one statement; returns what to do with its lines: "keep", "drop" or a DropTarget to judge later."""
        self._statements += 1
        if self._header < 2 and self._header != 3:
            self._header = 3
            self._problem("no-header", "not a pg_dump file: it does not start with pg_dump's header")
        whole = line if st.first_line == st.last_line and st.starts_line and st.ends_line else None
        facts = dumpcheck.analyze(st, whole)
        for kind, message in facts.problems:
            self._problem(kind, message, line=st.first_line)
        entry = self._entry
        self._entry_statements += 1
        if facts.kind == "set" and facts.setting is not None:
            if facts.setting[0] == "standard_conforming_strings":
                self._std_on = self._lx.fast = facts.setting[1].lower() == "on"
            if facts.setting[0] == "transaction_timeout" and self._filter:
                sv = self.plan.server_version if self.plan else None
                if sv is not None and sv[0] < 17:
                    self._adapt(f"removed `SET transaction_timeout = 0;` (new in PostgreSQL 17; the target runs "
                                f"{sv[0]}.{sv[1]})")
                    return "drop"
            if self._filter and entry is not None:
                # pg_dump writes the SETs an entry needs (default_tablespace, default_table_access_method) just
                # before that entry's TOC comment, so they must survive when the entry above is left out.
                return "always"
        elif facts.extension is not None:
            self.report.extensions[facts.extension[0]] = facts.extension[1]
        elif facts.policy_roles:
            self.report.roles.update(facts.policy_roles)
        elif facts.owner is not None:
            self.report.owners.add(facts.owner)
        elif facts.schema_created:
            self.report.schemas.add(facts.schema_created)
        elif facts.large_objects:
            self.report.large_objects += facts.large_objects
        elif facts.transaction_control:
            if entry is None or entry.type not in LARGE_OBJECT_TYPES:
                self._problem("transaction", f"{facts.kind.upper()} outside large-object data: it would end the "
                                             "restore's transaction part-way", line=st.first_line)
            elif self._filter and self.plan is not None and self.plan.single_transaction:
                self._adapt("removed BEGIN/COMMIT around large-object data (the restore runs in one transaction)")
                return "drop"
        elif facts.kind in ("copy", "insert") and facts.table is not None:
            self._entry_filled = True
            if entry is None or entry.type != "TABLE DATA":
                self._problem("copy-form" if facts.kind == "copy" else "statement-kind",
                              f"{facts.kind.upper()} into {facts.table} outside a TABLE DATA entry",
                              line=st.first_line)
            if facts.kind == "insert":
                self.report.tables[facts.table] = self.report.tables.get(facts.table, 0) + facts.rows
        if self._filter:
            if self._entry_keep is None:
                self._decide(st, facts)
        if facts.routine is not None or facts.words:
            self._track_code(entry, facts, st.first_line)
        if self._filter:
            if facts.table is not None and entry is not None and facts.table != entry.qualified:
                schema = facts.table.partition(".")[0]
                scope = self.plan.scope if self.plan else None
                if scope is not None and schema not in scope:
                    self._problem("copy-form", f"{facts.kind.upper()} into {facts.table}, outside the restore's "
                                               f"scope, under the TOC entry of {entry.qualified}", line=st.first_line)
        if facts.enters_copy:
            table = facts.table or "?"
            left = self._entry_left if self._entry_keep is False else None
            self._copy = _Copy(table, self._entry_keep is not False, st.first_line, left)
            self.report.tables.setdefault(table, 0)
        if self._filter and entry is None and facts.drop is not None:
            return facts.drop
        return "keep"

    # -- TOC entries and the plan ------------------------------------------------------------------------------
    def _toc(self, m: re.Match[bytes]) -> None:
        dec = [g.decode("utf-8", "replace") for g in m.groups()[1:]]
        entry = TocEntry(dec[0], dec[1], dec[2], dec[3].strip(), self._n, bool(m[1]))
        rep = self.report
        self._end_entry()
        rep.toc.append(entry)
        self._entry, self._entry_statements, self._entry_filled = entry, 0, False
        if entry.schema != "-":
            rep.schemas.add(entry.schema)
        if entry.type == "SCHEMA":
            rep.schemas.add(entry.name)
        elif entry.type == "EVENT TRIGGER":
            rep.event_triggers.append(entry.name)
        elif entry.type == "PUBLICATION":
            rep.publications.append(entry.name)
        if not self._filter:
            return
        if self._hold is not None and (entry.type in DATA_TYPES or entry.type in POST_DATA_TYPES):
            self._release()
        if entry.type in DATA_TYPES:                    # decided by name: their rows stream through
            self._decide(None, None)
        else:                                           # decided on their first statement
            self._entry_keep, self._entry_buf = None, []

    def _end_entry(self) -> None:
        entry = self._entry
        if entry is not None and entry.type == "TABLE DATA" and not self._entry_filled:
            self.report.tables.setdefault(entry.qualified, 0)      # an empty table in an INSERT-form dump
        if self._filter:
            self._close_entry()

    def _close_entry(self) -> None:
        if self._entry_keep is None:
            self._decide(None, None)
        self._entry_keep, self._entry_buf = True, []

    def _decide(self, st: Statement | None, facts: Facts | None) -> None:
        entry = self._entry
        assert entry is not None and self.plan is not None
        reason, scope_only = self._judge(entry, st, facts)
        self._entry_left = None
        if reason is None:
            self._entry_keep = True
            if entry.type == "POLICY" and facts is not None:
                self._create_roles(facts.policy_roles)
            for kind, held in self._entry_buf:
                self._emit(held, kind)
        else:
            self._entry_keep = False
            self._entry_left = LeftOut(entry.name, entry.type, entry.schema, reason, out_of_scope=scope_only)
            self.report.left_out.append(self._entry_left)
            if not scope_only and entry.type in DEFINING_TYPES:
                self._cut.add((entry.schema, entry.name.split("(")[0]))
        self._entry_buf = []

    def _judge(self, e: TocEntry, st: Statement | None, facts: Facts | None) -> tuple[str | None, bool]:
        """(reason to leave the entry out or None, whether the reason is only the restore's scope)."""
        plan = self.plan
        assert plan is not None
        ext = facts.extension if facts is not None else None
        if e.type == "EXTENSION" and ext is not None:
            return self._judge_extension(ext[0], ext[1])
        if plan.scope is not None:
            reason = self._scope_reason(e)
            if reason is not None:
                if e.type == "PUBLICATION":
                    self._pub_kept[e.name] = False
                return reason, True
        if e.type in ("EVENT TRIGGER", "PUBLICATION") or e.name.startswith(("EVENT TRIGGER ", "PUBLICATION ")):
            if not plan.superuser:
                if e.type == "PUBLICATION":
                    self._pub_kept[e.name] = False
                return f"a {e.type.lower()} needs a superuser, and the restoring role is not one", False
            if e.type == "PUBLICATION":
                self._pub_kept[e.name] = True
        if e.type == "PUBLICATION TABLE":
            pub = e.name.split(" ")[0]
            if not self._publication_there(pub):
                return f"publication {pub} is not restored and does not exist on the target", False
        if e.type == "COMMENT" and e.name.startswith("EXTENSION "):
            name = e.name[len("EXTENSION "):]
            if name in self._ext_left_out:
                return f"extension {name} is left out", False
        dead = self._dead_schemas()
        if e.schema in dead:
            return f"schema {e.schema} belongs to extension {self._owner_of(e.schema)}, which is left out", False
        if e.type in DATA_TYPES and (e.schema, e.name) in self._cut:
            return "the object it fills was left out", False
        if st is not None:
            for schema, name in dumpcheck.qualified_refs(st):
                if schema in dead:
                    return (f"uses {schema}.{name} of extension {self._owner_of(schema)}, which is left out"), False
                if (schema, name) in self._cut and (schema, name) != (e.schema, e.name):
                    return f"depends on {schema}.{name}, which is left out", False
        if e.type == "POLICY" and facts is not None and plan.existing_roles is not None and not plan.create_roles:
            missing = [r for r in facts.policy_roles if r not in plan.existing_roles]
            if missing:
                return f"names role(s) {', '.join(missing)}, missing on the target (--create-roles makes them)", False
        return None, False

    def _judge_extension(self, name: str, schema: str | None) -> tuple[str | None, bool]:
        plan = self.plan
        assert plan is not None
        if plan.scope is not None and (schema is None or schema not in plan.scope):
            return f"extension in schema {schema or '?'}, outside the restore's scope", True
        if plan.available_extensions is not None and name not in plan.available_extensions:
            self._ext_left_out[name] = schema
            return f"extension {name} is not available on the target", False
        self._ext_kept[name] = schema
        return None, False

    def _scope_reason(self, e: TocEntry) -> str | None:
        scope = self.plan.scope if self.plan else None
        assert scope is not None
        if e.schema != "-":
            schema = e.schema
        elif e.type == "SCHEMA":
            schema = e.name
        elif e.name.startswith("SCHEMA "):
            schema = e.name[len("SCHEMA "):]
        elif e.name.startswith("EXTENSION "):
            name = e.name[len("EXTENSION "):]
            if name in self._ext_kept or name in self._ext_left_out:
                return None
            return "its extension is outside the restore's scope"
        elif e.type in LARGE_OBJECT_TYPES:
            return None
        else:
            return f"database-wide {e.type.lower()}, outside the restore's scope ({', '.join(sorted(scope))})"
        if schema not in scope:
            return f"schema {schema} is outside the restore's scope"
        return None

    def _publication_there(self, pub: str) -> bool:
        if self._pub_kept.get(pub):
            return True
        plan = self.plan
        assert plan is not None
        if not plan.superuser and pub not in (plan.existing_publications or ()):
            return False
        return plan.existing_publications is None or pub in plan.existing_publications

    def _dead_schemas(self) -> set[str]:
        if not self._ext_left_out:
            return set()
        kept = set(self._ext_kept.values())
        return {s for s in self._ext_left_out.values() if s and s not in kept and s not in ("public", "pg_catalog")}

    def _owner_of(self, schema: str) -> str:
        return next((n for n, s in self._ext_left_out.items() if s == schema), "?")

    def _create_roles(self, roles: list[str]) -> None:
        plan = self.plan
        assert plan is not None
        if not plan.create_roles or plan.existing_roles is None:
            return
        for role in roles:
            if role not in plan.existing_roles and role not in self._created_roles:
                self._created_roles.add(role)
                self.report.roles_created.append(role)
                quoted = '"' + role.replace('"', '""') + '"'
                self._emit(f"CREATE ROLE {quoted} NOLOGIN;\n".encode())
                self._adapt("created missing policy roles as NOLOGIN (--create-roles)")

    def _defer(self, target: DropTarget, lines: list[bytes]) -> None:
        if self._hold is not None:
            self._hold.append(_Deferred(target, lines))
        else:
            self._judge_drop_now(target, lines)

    def _judge_drop_now(self, target: DropTarget, lines: list[bytes]) -> None:
        reason = self._judge_drop(target)
        if reason is None:
            for held in lines:
                self._emit(held)
        else:
            self.report.left_out.append(LeftOut(target.name, f"DROP {target.kind.upper()}", target.schema or "-",
                                                reason, out_of_scope="scope" in reason))

    def _judge_drop(self, d: DropTarget) -> str | None:
        plan = self.plan
        assert plan is not None
        scope = plan.scope
        if d.kind == "schema":
            return None if scope is None or d.name in scope else f"schema {d.name} is outside the restore's scope"
        if d.kind == "extension":
            if d.name in self._ext_left_out:
                return f"extension {d.name} is left out"
            if d.name not in self._ext_kept:
                return f"extension {d.name} is outside the restore's scope"
            return None
        if d.kind in ("event trigger", "publication"):
            if scope is not None:
                return f"database-wide {d.kind}, outside the restore's scope"
            if not plan.superuser:
                return f"a {d.kind} needs a superuser, and the restoring role is not one"
            return None
        if d.kind == "publication table" and not self._publication_there(d.name):
            return f"publication {d.name} is not restored and does not exist on the target"
        schema = d.on[0] if d.on is not None else d.schema
        if scope is not None and schema is not None and schema not in scope:
            return f"schema {schema} is outside the restore's scope"
        if schema in self._dead_schemas():
            return f"schema {schema} belongs to a left-out extension"
        if (d.schema or "", d.name) in self._cut or (d.on is not None and (d.on[0] or "", d.on[1]) in self._cut):
            return "its object is left out"
        return None

    def _release(self) -> None:
        held, self._hold, self._hold_size = self._hold or [], None, 0
        for item in held:
            if isinstance(item, _Deferred):
                self._judge_drop_now(item.target, item.lines)
            else:
                self._out.append(item)

    # -- the end -------------------------------------------------------------------------------------------------
    def _finish(self) -> None:
        if self._carry:
            line, self._carry, self._carry_len = b"".join(self._carry), [], 0
            if self._copy is not None:
                self._problem("truncated", f"the dump ends inside the COPY data of {self._copy.table} (after "
                                           f"{self._copy.rows} rows), in the middle of a line: it was cut short")
                return
            self._lines(line + b"\n", 0, len(line) + 1)
        rep = self.report
        rep.lines = self._n
        if self._n == 0:
            self._problem("empty", "the backup holds no data at all (it decompresses to nothing)", line=None)
            return
        if self._copy is not None:
            self._problem("truncated", f"the dump ends inside the COPY data of {self._copy.table} (after "
                                       f"{self._copy.rows} rows): it was cut short", line=None)
            return
        if not self._lx.idle:
            st = self._lx.stmt
            self._problem("truncated", "the dump ends inside a statement"
                          + (f" that starts at line {st.first_line}" if st else "") + ": it was cut short", line=None)
            return
        if self._footer_at is None:
            self._problem("no-footer", "the dump has no `-- PostgreSQL database dump complete` footer at its end: it "
                                       "was cut short", line=None)
            return
        if rep.restrict_key is not None and not self._unrestricted:
            self._problem("no-footer", "the dump ends without the \\unrestrict line that closes its \\restrict: it "
                                       "was cut short", line=None)
            return
        rep.complete = True
        self._end_entry()
        if self._filter and self._hold is not None:
            self._release()


def inspect(source: str | os.PathLike[str] | Iterable[bytes]) -> Report:
    """Verify a backup (a path, an open BackupStream or any iterable of bytes) in one pass; never raises for a bad
    backup: everything wrong is in `report.problems`."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with open_backup(source) as stream:
                return inspect(stream)
        except VerificationFailed as exc:
            report = Report()
            report.problems.append(Problem(None, "unreadable", exc.message))
            return report
    reader = DumpReader()
    try:
        for chunk in source:
            reader.feed(chunk)
    except VerificationFailed as exc:
        reader.report.lines = reader._n
        reader.fail("gzip", exc.message)
        return reader.report
    reader.finish()
    return reader.report
