"""ops.dumps, ops.psqllex, ops.dumpcheck: verifying, screening and filtering plain pg_dump streams.

Pure parts are table-driven over hand-written dumps (tests/dump_samples.py); real pg_dump output (COPY and the
three INSERT forms) is made by pg_dump in fixtures from a database full of awkward values; psql itself is the
referee for what the lexer must catch (a differential test) and for what a filtered stream restores.
"""
from __future__ import annotations

import gzip
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from ops import dumps
from ops.dumpcheck import COPY_LINE, analyze, table_key
from ops.errors import VerificationFailed
from ops.psqllex import Lexer
from tests import dump_samples as S
from tests.fix_pg import unavailable

DATA = Path(__file__).resolve().parent / "data"   # copies of ../shared/data (see data/README.md)
PAGILA17 = DATA / "pagila-schema-pg17.sql"
PAGILA15 = DATA / "pagila-schema-pg15.sql"
CHINOOK = DATA / "chinook.sql"


def inspect(data: bytes, chunk: int | None = None) -> dumps.Report:
    if chunk is None:
        return dumps.inspect([data])
    return dumps.inspect(data[i:i + chunk] for i in range(0, len(data), chunk))


def kinds(report: dumps.Report) -> set[str]:
    return {p.kind for p in report.problems}


def table(name: str = "t", columns: str = "id integer, s text", schema: str = "public") -> str:
    return S.entry(name, "TABLE", f"CREATE TABLE {schema}.{name} (\n    {columns}\n);", schema=schema)


def simple_dump(rows: list[str] | None = None, **kw: object) -> bytes:
    rows = ["1\ta", "2\tb"] if rows is None else rows
    return S.dump(table(), S.data("t", "id, s", rows), **kw)  # type: ignore[arg-type]


# -- header, footer, versions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, ok, pg_dump, server", [
    (simple_dump(), True, "17.6", "17.6"),
    (simple_dump(version="15.4", restrict=False), True, "15.4", "15.4"),
    (simple_dump(version="17.6 (Debian 17.6-1.pgdg13+1)", server="17.6 (Debian 17.6-1.pgdg13+1)"), True,
     "17.6 (Debian 17.6-1.pgdg13+1)", "17.6 (Debian 17.6-1.pgdg13+1)"),
    (simple_dump(version="17.6 (Homebrew)", server="16.10"), True, "17.6 (Homebrew)", "16.10"),
    (simple_dump(version="15beta2", server="12.11", restrict=False), True, "15beta2", "12.11"),
    (simple_dump(with_footer=False), False, "17.6", "17.6"),
    (simple_dump(with_footer=False, restrict=False), False, "17.6", "17.6"),
], ids=["17.6-restrict", "15-no-restrict", "debian-version", "homebrew-older-server", "beta", "no-footer",
        "no-footer-no-restrict"])
def test_header_footer_and_versions(data: bytes, ok: bool, pg_dump: str, server: str) -> None:
    report = inspect(data)
    assert report.ok is ok, report.problems
    assert (report.pg_dump_version, report.server_version) == (pg_dump, server)
    assert report.complete is ok
    if ok:
        assert report.tables == {"public.t": 2}
    else:
        assert kinds(report) == {"no-footer"}


@pytest.mark.parametrize("text, version", [
    ("17.6", (17, 6)), ("17.6 (Debian 17.6-1.pgdg13+1)", (17, 6)), ("16.10 (Homebrew)", (16, 10)),
    ("15beta2", (15, 0)), ("18devel", (18, 0)), ("", None), (None, None)])
def test_parse_version(text: str | None, version: tuple[int, int] | None) -> None:
    assert dumps.parse_version(text) == version


@pytest.mark.parametrize("version, knows", [
    ((17, 6), True), ((17, 5), False), ((16, 10), True), ((16, 2), False), ((15, 14), True), ((15, 13), False),
    ((14, 19), True), ((13, 22), True), ((12, 22), False), ((18, 0), True)])
def test_psql_versions_that_know_restrict(version: tuple[int, int], knows: bool) -> None:
    assert dumps.psql_knows_restrict(version) is knows


def test_verbose_dump_lines_are_fine() -> None:
    data = simple_dump().replace(b"-- Dumped by pg_dump version 17.6\n",
                                 b"-- Dumped by pg_dump version 17.6\n\n-- Started on 2025-11-13 18:33:09 UTC\n")
    data = data.replace(b"-- Name: t; Type: TABLE; Schema: public; Owner: -\n",
                        b"-- TOC entry 215 (class 1259 OID 16385)\n-- Name: t; Type: TABLE; Schema: public; Owner: -; "
                        b"Tablespace: \n")
    report = inspect(data)
    assert report.ok, report.problems
    assert [e.type for e in report.toc] == ["TABLE", "TABLE DATA"]


@pytest.mark.parametrize("mangle, kind", [
    (lambda d: d.replace(b"\\unrestrict " + S.KEY.encode(), b"\\unrestrict WRONGKEY"), "restrict"),
    (lambda d: d.replace(b"\\unrestrict " + S.KEY.encode() + b"\n\n", b""), "no-footer"),
    (lambda d: d + b"SELECT pg_catalog.setval('public.s', 1, true);\n", "no-footer"),
    (lambda d: d.replace(b"-- PostgreSQL database dump complete\n", b"-- PostgreSQL database dump\n"), "no-footer"),
    (lambda d: d.replace(b"SET row_security = off;\n", b"SET row_security = off;\n\\restrict OTHER\n"), "restrict"),
    (lambda d: d[d.index(b"-- Dumped from"):], "no-header"),
    (lambda d: b"\xef\xbb\xbf" + d, "no-header"),
], ids=["unrestrict-key-mismatch", "restrict-never-closed", "sql-after-footer", "footer-word-changed",
        "second-restrict", "header-missing", "bom"])
def test_refuses_broken_ends(mangle, kind: str) -> None:  # type: ignore[no-untyped-def]
    report = inspect(mangle(simple_dump()))
    assert kind in kinds(report), report.problems
    assert not report.ok


@pytest.mark.parametrize("cut_after, message", [
    (b"2\tb\n", "ends inside the COPY data of public.t (after 2 rows)"),
    (b"2\tb", "ends inside the COPY data of public.t (after 1 rows), in the middle of a line"),
    (b"CREATE TABLE public.t (\n", "ends inside a statement that starts at line"),
    (b"-- PostgreSQL database dump complete\n--\n\n", "without the \\unrestrict line"),
    (b"COPY public.t (id, s) FROM stdin;\n", "ends inside the COPY data of public.t (after 0 rows)"),
], ids=["after-a-row", "mid-row", "mid-statement", "before-unrestrict", "right-after-copy"])
def test_truncation_is_named(cut_after: bytes, message: str) -> None:
    data = simple_dump()
    cut = data[:data.index(cut_after) + len(cut_after)]
    for chunk in (None, 7):
        report = inspect(cut, chunk)
        assert not report.ok and message in str(report.problems[0]), report.problems


def test_empty_stream() -> None:
    report = dumps.inspect([])
    assert kinds(report) == {"empty"}


# -- data that must not confuse it -----------------------------------------------------------------------------------
TRICKY_VALUES = ["-- PostgreSQL database dump complete", "ERROR: card declined", "FATAL: too many connections",
                 "\\.", "line1\nline2", "tab\there", "back\\slash", "\\! rm -rf ~", "COPY public.t (id) FROM stdin;",
                 "-- Name: x; Type: TABLE; Schema: public; Owner: -", "\\unrestrict " + S.KEY, "carriage\rreturn",
                 "'; DROP TABLE t; --", "$$ $a$ E'\\'", "\\N", ""]


def test_data_that_looks_like_sql_footer_or_errors_is_data() -> None:
    rows = [f"{i}\t{S.copy_escape(v)}" for i, v in enumerate(TRICKY_VALUES)]
    for chunk in (None, 1, 3, 64):
        report = inspect(simple_dump(rows), chunk)
        assert report.ok, report.problems
        assert report.tables == {"public.t": len(TRICKY_VALUES)}


def test_empty_table_and_zero_column_copy() -> None:
    data = S.dump(table(), S.data("t", "id, s", []),
                  S.entry("nocols", "TABLE", "CREATE TABLE public.nocols (\n);"),
                  "--\n-- Data for Name: nocols; Type: TABLE DATA; Schema: public; Owner: -\n--\n\n"
                  "COPY public.nocols  FROM stdin;\n\n\n\\.\n\n\n")
    report = inspect(data)
    assert report.ok, report.problems
    assert report.tables == {"public.t": 0, "public.nocols": 2}


@pytest.mark.parametrize("copy_name, key", [
    ('public."User"', "public.User"), ('public."a""b"', 'public.a"b'), ("auth.users", "auth.users"),
    ('"My Schema"."Tab le"', "My Schema.Tab le"), ('public."ünï"', "public.ünï")])
def test_table_names_are_unquoted_as_the_toc_writes_them(copy_name: str, key: str) -> None:
    assert table_key(copy_name.encode()) == key
    assert COPY_LINE.fullmatch(f"COPY {copy_name} (id, \"select\") FROM stdin;\n".encode())


def test_long_copy_lines_pass_in_pieces() -> None:
    big = "x" * 300_000
    data = simple_dump([f"1\t{big}", "2\tb", f"3\t{big}\\\\."])
    for chunk in (None, 4096, 65537):
        report = inspect(data, chunk)
        assert report.ok and report.tables == {"public.t": 3}, report.problems
        out = b"".join(dumps.DumpReader(dumps.Plan(scope=None)).filter(
            data[i:i + (chunk or len(data))] for i in range(0, len(data), chunk or len(data))))
        assert out == data


@pytest.mark.parametrize("data, kind", [
    (simple_dump().replace(b"\n", b"\r\n"), "crlf"),
    (simple_dump(["1\ta\r", "2\tb"]), "crlf"),
    (simple_dump(["1\ta", "\\.\r", "\\! id", "2\tb"]), "crlf"),
    (simple_dump(["1\ta\x00b"]), "nul"),
    (simple_dump().replace(b"SET row_security = off;\n", b"SET row_security = off; -- x\x00\n"), "nul"),
], ids=["crlf-file", "cr-in-copy-data", "cr-terminator-trick", "nul-in-data", "nul-in-sql"])
def test_crlf_and_nul(data: bytes, kind: str) -> None:
    report = inspect(data)
    assert kind in kinds(report), report.problems


# -- injections: refused, and never passed on --------------------------------------------------------------------------
def with_sql(sql_text: str, where: str = "after-data") -> bytes:
    if where == "after-data":
        return S.dump(table(), S.data("t", "id, s", ["1\ta"]), S.entry("x", "TABLE", sql_text))
    return S.dump(S.entry("x", "TABLE", sql_text), table(), S.data("t", "id, s", ["1\ta"]))


INJECTIONS = [
    ("\\! id", "meta-command"),
    ("SELECT 1; \\! id", "meta-command"),
    ("CREATE TABLE public.x (\n    a integer \\! id\n);", "meta-command"),
    ("\\copy public.t from program 'id'", "meta-command"),
    ("\\o |cat > /tmp/pwned", "meta-command"),
    ("\\set x `id`", "meta-command"),
    ("\\unrestrict `touch /tmp/pwned`", "meta-command"),
    ("\\restrict abc; \\! id", "meta-command"),
    ("\\connect other", "meta-command"),
    ("COMMENT ON TABLE public.t IS E'it\\'s'; \\! id", "meta-command"),
    ("COMMENT ON TABLE public.t IS E'x\\'' \\! id';", "meta-command"),
    ("-- a comment\r\\! id", "meta-command"),
    ("/* outer /* inner */ still comment */ \\! id", "meta-command"),
    ("COMMENT ON TABLE public.t IS $a$ body $a$; \\! id", "meta-command"),
    ("SELECT :'LAST_ERROR_MESSAGE';", "psql-variable"),
    ("COMMENT ON TABLE public.t IS :ENCODING;", "psql-variable"),
    ("SELECT 1E'\\' \\! id';", "ambiguous-literal"),
    ("COPY public.t (id) FROM PROGRAM 'id';", "copy-form"),
    ("COPY public.t TO '/tmp/x';", "copy-form"),
    ("COPY public.t (id, s) FROM '/etc/passwd';", "copy-form"),
    ("COPY public.t (id, s) FROM stdin WITH (FORMAT csv);\n1,a\n\\.", "copy-form"),
    ("COPY (SELECT 1) TO PROGRAM 'id';", "copy-form"),
    ("SELECT pg_catalog.lo_import('/etc/passwd');", "server-function"),
    ("SELECT lo_export(16400, '/tmp/x');", "server-function"),
    ("SELECT pg_read_file('/etc/passwd');", "server-function"),
    ("SELECT count(*) FROM pg_ls_dir('.');", "server-function"),
    ("CREATE TABLE public.x AS SELECT pg_read_binary_file('/etc/passwd') AS b;", "server-function"),
    ("CREATE MATERIALIZED VIEW public.v AS SELECT pg_ls_dir('.') AS f WITH NO DATA;", "server-function"),
    ("ALTER TABLE ONLY public.t ALTER COLUMN s SET DEFAULT pg_read_file('/etc/passwd');", "server-function"),
    ("INSERT INTO public.t VALUES (1, pg_read_file('/etc/passwd'));", "server-function"),
    ("INSERT INTO public.t VALUES (1, public.evil());", "statement-kind"),
    ("CREATE FUNCTION public.f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN COPY public.t TO PROGRAM 'id'; END $$;",
     "server-function"),
    ("CREATE FUNCTION public.f() RETURNS text LANGUAGE plpython3u AS $$ import os $$;", "untrusted-language"),
    ("CREATE FUNCTION public.f(text) RETURNS text LANGUAGE internal AS 'pg_read_file_off';", "untrusted-language"),
    ("DO $$ BEGIN PERFORM 1; END $$;", "statement-kind"),
    ("SELECT public.evil();", "statement-kind"),
    ("SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);", "setting"),
    ("SET standard_conforming_strings = off;", "setting"),
    ("SET client_encoding = 'SJIS';", "setting"),
    ("ALTER SYSTEM SET archive_command = 'id';", "statement-kind"),
    ("CREATE ROLE evil SUPERUSER LOGIN;", "statement-kind"),
    ("ALTER ROLE postgres PASSWORD 'x';", "statement-kind"),
    ("CREATE DATABASE other;", "statement-kind"),
    ("DROP TABLE IF EXISTS auth.users CASCADE;", "statement-kind"),
    ("COMMIT;", "transaction"),
    ("TRUNCATE public.t;", "statement-kind"),
    ("LOAD 'plpgsql';", "statement-kind"),
]


@pytest.mark.parametrize("sql_text, kind", INJECTIONS, ids=[f"{k}:{s[:30]}" for s, k in INJECTIONS])
def test_injections_are_refused(sql_text: str, kind: str) -> None:
    for where in ("after-data", "before-data"):
        report = inspect(with_sql(sql_text, where))
        assert kind in kinds(report), (where, report.problems)
        assert not report.ok


@pytest.mark.parametrize("sql_text, kind", INJECTIONS, ids=[f"{k}:{s[:30]}" for s, k in INJECTIONS])
def test_filter_stops_before_sending_an_injection(sql_text: str, kind: str) -> None:
    data = with_sql(sql_text)
    reader = dumps.DumpReader(dumps.Plan(scope=None))
    sent = []
    with pytest.raises(VerificationFailed) as exc:
        for piece in reader.filter(data[i:i + 50] for i in range(0, len(data), 50)):
            sent.append(piece)
    assert "refused" in str(exc.value) and exc.value.hint
    marker = sql_text.split("\n")[0].encode()
    assert marker not in b"".join(sent)
    assert reader.report.problems[0].kind == kind


@pytest.mark.parametrize("sql_text", [
    "CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $$ SELECT pg_read_file('/etc/hostname') $$;",
    "CREATE FUNCTION public.f() RETURNS text LANGUAGE plpgsql AS $body$ BEGIN RAISE NOTICE '\\! id'; "
    "RETURN 'x'; END $body$;",
    "COMMENT ON TABLE public.t IS 'backslash \\! and \\copy in a standard string';",
    "COMMENT ON TABLE public.t IS E'escaped \\' quote and \\\\! bang';",
    "COMMENT ON TABLE public.t IS 'first part'\n'\\! continued';",
    'CREATE TABLE public."we\\ird" (\n    "col\\umn" integer\n);',
    "CREATE VIEW public.v AS\n SELECT (ARRAY[1, 2, 3])[1:2] AS a;",
    "CREATE TABLE public.x (\n    a integer /* block \\! comment */\n);",
    "CREATE FUNCTION public.g() RETURNS integer\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT 1;\n SELECT 2;\nEND;",
], ids=["file-fn-in-body", "backslash-in-body", "std-string", "e-string", "continued-string", "quoted-ident",
        "array-slice", "block-comment", "sql-standard-body"])
def test_legitimate_sql_is_not_flagged(sql_text: str) -> None:
    report = inspect(with_sql(sql_text))
    assert report.ok, report.problems


def test_backslash_in_a_string_before_standard_conforming_strings_is_ambiguous() -> None:
    data = simple_dump().replace(b"SET statement_timeout = 0;\n", b"SET application_name = 'a\\';\n")
    assert "ambiguous-literal" in kinds(inspect(data))


def test_copy_or_insert_outside_table_data_is_refused() -> None:
    data = S.dump(table(), "COPY public.t (id, s) FROM stdin;\n1\ta\n\\.\n\n")
    assert "copy-form" in kinds(inspect(data))


# -- the lexer agrees with psql ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, statements, alarms", [
    ("SELECT 1; SELECT 2;\n", 2, 0),
    ("SELECT ';' || \"a;b\" || $$;$$ || $x$ $$ ; $x$;\n", 1, 0),
    ("SELECT E'\\';' ;\n", 1, 0),
    ("SELECT 'a\\'; SELECT ';';\n", 2, 0),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 1 END; END;\n",
     1, 0),
    ("SELECT (1;\n2);\n", 1, 0),
    ("SELECT 1 -- ; not the end\n;\n", 1, 0),
    ("SELECT 1 /* ; /* ; */ ; */;\n", 1, 0),
    ("SELECT $a$ $b$ ; $a$, $1, a$b$c;\n", 1, 0),
    ("SELECT x$a$; \\echo hi\n", 1, 1),
    ("SELECT 'x' -- c\n'\\';\n", 1, 0),
], ids=["two", "quotes", "e-string", "std-string", "begin-atomic", "parens", "line-comment", "nested-comment",
        "dollar-tags", "ident-with-dollar", "continuation"])
def test_lexer_statement_split(text: str, statements: int, alarms: int) -> None:
    lx = Lexer()
    done = []
    for n, line in enumerate(text.encode().splitlines(keepends=True), 1):
        done += lx.feed(line, n)
    assert len(done) == statements and lx.idle
    assert len(lx.alarms) == alarms


def test_insert_rows_are_counted_by_tuples() -> None:
    lx = Lexer()
    text = (b"INSERT INTO public.t (id, s) VALUES\n\t(1, 'a\nINSERT INTO public.t VALUES (99, ''fake'');'),\n"
            b"\t(2, E'b\\'),('),\n\t(3, $$)$$);\n")
    done = []
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        done += lx.feed(line, n)
    assert len(done) == 1 and done[0].insert_rows == 3
    assert analyze(done[0]).table == "public.t"


PSQL = shutil.which("psql")
FRAGMENTS = ["'", "E'", "U&'", "\"", "$a$", "$$", "--", "/*", "*/", "\n", "\r", "\\'", "\\\\", ";", "x", " ", "1"]


@pytest.fixture(scope="module")
def psql_db(pg_server):  # type: ignore[no-untyped-def]
    if PSQL is None:
        unavailable("psql is not installed (it is the referee of the lexer tests)")
    name = f"dumps_lex_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.url(name)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


MARK = "PWNED-7f3a9c"   # psql prints it only when it runs `\\echo :MARK` as a meta-command (no interpolation in strings)


def psql_runs_marker(url: str, text: str) -> bool:
    proc = subprocess.run([PSQL or "psql", "-X", "-q", "-d", url, "-v", "ON_ERROR_STOP=0", "-v", f"MARK={MARK}"],
                          input=text.encode(), capture_output=True, timeout=30)
    return MARK.encode() in proc.stdout


def lexer_alarms(text: str) -> list[str]:
    lx = Lexer()
    for n, line in enumerate(text.encode().split(b"\n"), 1):
        lx.feed(line + b"\n", n)
    return [kind for _, kind, _ in lx.alarms]


@pytest.mark.parametrize("text, runs", [
    ("SELECT E'\\'' \\echo :MARK\n;", True),                    # \' escapes a quote only in E'' strings
    ("SELECT 1 -- comment\r\\echo :MARK\n;", True),              # a -- comment ends at a bare CR
    ("SELECT E'x'\r'\\'' \\echo :MARK\n;", True),                # a CR continues an E'' string
    ("SELECT E'x'\n\r'\\'' \\echo :MARK\n;", True),             # ... also at the start of the next line
    ("SELECT E'x'\n'\\' \\echo :MARK\n';", True),                # a \n does not: psql lexes lines without it
    ("SELECT 1E'\\'\\echo :MARK\n;", True),                      # 1E' lexes differently across psql versions
    ("SELECT $a$ $b$ $a$ \\echo :MARK\n;", True),                  # only the opening tag closes a dollar quote
    ("SELECT U&'\\' \\echo :MARK\n;", True),                     # backslash is plain in U&'' strings
    ("SELECT E'x'\r'\\' \\echo :MARK\n';", False),               # continued E'' string: still inside
    ("SELECT $a$ \\echo :MARK\n$a$;", False),
], ids=["e-string", "cr-ends-comment", "cr-continues", "cr-continues-next-line", "lf-does-not-continue",
        "number-then-e", "dollar-tags", "unicode-string", "inside-continued", "inside-dollar"])
def test_lexer_flags_what_psql_runs(psql_db: str, text: str, runs: bool) -> None:
    assert psql_runs_marker(psql_db, text) is runs           # the referee: psql itself
    if runs:
        assert lexer_alarms(text), text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12), st.integers(0, 12))
def test_lexer_catches_every_meta_command_psql_runs(psql_db: str, fragments: list[str], at: int) -> None:
    """Differential: random quoting soup with a `\\echo` dropped in; if psql runs it, the lexer must refuse."""
    fragments.insert(min(at, len(fragments)), "\\echo :MARK\n")
    text = "SELECT 1;\n" + "".join(fragments) + "\n;\n"
    if psql_runs_marker(psql_db, text):
        assert lexer_alarms(text), text


# -- real pg_dump output ----------------------------------------------------------------------------------------------
TRICKY_SQL = r"""
CREATE TABLE "User" (id serial PRIMARY KEY, name text, note text);
CREATE TABLE "Transaction" (id bigint PRIMARY KEY, "error" text, payload jsonb, tags text[], raw bytea);
CREATE TABLE parted (id int, created date) PARTITION BY RANGE (created);
CREATE TABLE parted_2024 PARTITION OF parted FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE parted_2025 PARTITION OF parted FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE empty_one (x int);
CREATE FUNCTION tricky() RETURNS text LANGUAGE plpgsql AS $f$ BEGIN RETURN E'\\! id; -- \' $$'; END $f$;
CREATE VIEW user_names AS SELECT name FROM "User";
"""
TRICKY_ROWS = ["-- PostgreSQL database dump complete", "ERROR: x", "FATAL: y", "\\.", "a\nb", "tab\tin",
               "back\\slash", "\\! echo pwned", "'); DROP TABLE \"User\"; --", "$$ $x$", "E'\\''",
               "\nINSERT INTO public.t VALUES (99, 'fake');\n", "ünïcødé ✓", "cr\rlf\r\n", "", None]


@pytest.fixture(scope="module")
def tricky_db(pg_server):  # type: ignore[no-untyped-def]
    name = f"dumps_src_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = pg_server.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TRICKY_SQL)
        for i, value in enumerate(TRICKY_ROWS):
            conn.execute('INSERT INTO "User" (name, note) VALUES (%s, %s)', (value, f"row {i}"))
            conn.execute('INSERT INTO "Transaction" VALUES (%s, %s, %s, %s, %s)',
                         (i, value, psycopg.types.json.Jsonb({"v": value}), [value, "x,y", '"q"'],
                          (value or "").encode() + b"\x00\xff"))
        conn.execute("INSERT INTO parted SELECT g, date '2024-06-01' + g FROM generate_series(1, 300) g")
    yield url
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pg_dump(url: str, *flags: str) -> bytes:
    return subprocess.run(["pg_dump", "--no-owner", "--no-privileges", "--clean", "--if-exists", *flags, "-d", url],
                           check=True, capture_output=True, timeout=120).stdout


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        names = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')").fetchall()
        return {name: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(*name.split(".", 1)))).fetchone()[0] for (name,) in names}


DUMP_FORMS = [(), ("--inserts",), ("--column-inserts",), ("--rows-per-insert=3",),
              ("--column-inserts", "--rows-per-insert=100000")]


@pytest.mark.parametrize("flags", DUMP_FORMS, ids=["copy", "inserts", "column-inserts", "rows-per-insert",
                                                   "supabase-cli-style"])
def test_real_dumps_count_every_row(tricky_db: str, flags: tuple[str, ...]) -> None:
    data = pg_dump(tricky_db, *flags)
    expected = counts(tricky_db)
    for chunk in (None, 4093):
        report = inspect(data, chunk)
        assert report.ok, report.problems
        assert report.tables == expected
    assert report.restrict_key is not None or dumps.parse_version(report.pg_dump_version) < (15, 14)
    assert {"public.User", "public.Transaction", "public.parted_2024", "public.empty_one"} <= set(report.tables)


@pytest.mark.parametrize("flags", [(), ("--rows-per-insert=3",)], ids=["copy", "rows-per-insert"])
def test_filtered_real_dump_restores_every_row(tricky_db: str, make_db, flags: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    data = pg_dump(tricky_db, *flags)
    target = make_db("dumps_dst")
    local = psql_version()
    reader = dumps.DumpReader(dumps.Plan(scope=frozenset({"public"}), psql_version=local, server_version=local))
    proc = subprocess.Popen([PSQL or "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d",
                             target], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    for piece in reader.filter(data[i:i + 65536] for i in range(0, len(data), 65536)):
        proc.stdin.write(piece)
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    assert counts(target) == counts(tricky_db) == reader.report.restored_tables()
    with psycopg.connect(target) as conn:
        names = [r[0] for r in conn.execute('SELECT name FROM "User" ORDER BY id')]
    assert names == TRICKY_ROWS


def psql_version() -> tuple[int, int]:
    out = subprocess.run([PSQL or "psql", "--version"], capture_output=True, text=True, check=True).stdout
    found = dumps.parse_version(re.search(r"\d+\.\d+", out)[0])  # type: ignore[index]
    assert found is not None
    return found


# -- files: gzip, HTML, XML, empty -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, content, message", [
    ("b.sql.gz", b"", "is empty (0 bytes)"),
    ("b.sql", b"", "is empty (0 bytes)"),
    ("b.sql.gz", b"<!DOCTYPE html>\n<html><head><title>Sign in to GitHub</title></head></html>",
     "is an HTML page, not a backup (Sign in to GitHub)"),
    ("b.sql.gz", b"<html><body>502 Bad Gateway</body></html>", "is an HTML page"),
    ("b.sql.gz", b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Request has '
                 b"expired</Message><RequestId>X</RequestId></Error>", "XML error from the storage host (AccessDenied: "
                                                                      "Request has expired)"),
    ("b.sql.gz", b'{"message": "Not Found", "documentation_url": "https://docs.github.com"}', "JSON error response"),
    ("b.sql.gz", b"--\n-- PostgreSQL database dump\n--\n", "is named .gz but is not gzip data"),
    ("b.sql", b"PGDMP\x01\x0e\x00", "custom-format archive"),
], ids=["empty-gz", "empty-sql", "html-login", "html-502", "xml-expired", "json-404", "plain-named-gz", "custom"])
def test_files_that_are_not_backups(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(VerificationFailed) as exc:
        with dumps.open_backup(path):
            pass
    assert message in exc.value.message and exc.value.hint
    report = dumps.inspect(path)
    assert not report.ok and message in str(report.problems[0])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VerificationFailed, match="does not exist"):
        with dumps.open_backup(tmp_path / "nope.sql.gz"):
            pass


def test_gzip_corruption_is_named(tmp_path: Path) -> None:
    gz = gzip.compress(simple_dump(), 9)
    bad_crc = bytearray(gz)
    bad_crc[-6] ^= 0xFF
    for content, message in ((gz[:len(gz) // 2], "gzip stream is truncated"), (bytes(bad_crc), "corrupt")):
        path = tmp_path / "b.sql.gz"
        path.write_bytes(content)
        report = dumps.inspect(path)
        assert not report.ok and message in str(report.problems[0]), report.problems


def test_plain_and_gzip_files_read_alike(tmp_path: Path) -> None:
    data = simple_dump()
    (tmp_path / "b.sql").write_bytes(data)
    (tmp_path / "b.sql.gz").write_bytes(gzip.compress(data, 9))
    for name in ("b.sql", "b.sql.gz"):
        with dumps.open_backup(tmp_path / name) as stream:
            assert b"".join(stream) == data
        assert dumps.inspect(tmp_path / name).tables == {"public.t": 2}


@pytest.fixture(scope="module")
def small_gz(tmp_path_factory) -> bytes:  # type: ignore[no-untyped-def]
    rows = [f"{i}\t{S.copy_escape(TRICKY_VALUES[i % len(TRICKY_VALUES)])}" for i in range(3000)]
    return gzip.compress(simple_dump(rows), 9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1, exclude_max=True))
def test_any_cut_of_a_gzip_backup_is_detected(tmp_path: Path, small_gz: bytes, cut: float) -> None:
    path = tmp_path / "cut.sql.gz"
    path.write_bytes(small_gz[:int(len(small_gz) * cut)])
    assert not dumps.inspect(path).ok


@settings(max_examples=80, deadline=None)
@given(cut=st.integers(0, 10_000))
def test_any_cut_of_a_plain_backup_before_its_footer_is_detected(cut: int) -> None:
    data = simple_dump([f"{i}\t{S.copy_escape(v)}" for i, v in enumerate(TRICKY_VALUES * 20)])
    end = data.index(b"-- PostgreSQL database dump complete")
    report = inspect(data[:cut % end], chunk=997)
    assert not report.ok


# -- property: COPY escaping round trip, byte-exact pass-through ----------------------------------------------------------
TEXT = st.lists(st.sampled_from(list("ab \t\n\r\\.;'\"$-E") + ["\\.", "-- PostgreSQL database dump complete",
                                                                 "\u00e9", "\\N"]), max_size=20).map("".join)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.one_of(st.none(), TEXT), max_size=30), chunk=st.integers(1, 200))
def test_copy_rows_are_counted_and_passed_byte_exact(values: list[str | None], chunk: int) -> None:
    data = simple_dump([f"{i}\t{S.copy_escape(v)}" for i, v in enumerate(values)])
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    report = dumps.inspect(pieces)
    assert report.ok, report.problems
    assert report.tables == {"public.t": len(values)}
    reader = dumps.DumpReader(dumps.Plan(scope=None))
    assert b"".join(reader.filter(pieces)) == data
    assert reader.report.tables == {"public.t": len(values)}


# -- pagila: real pg_dump 17 and 15 files -------------------------------------------------------------------------------
@pytest.mark.parametrize("path, pg_dump, server, entries, timeout", [
    (PAGILA17, "17.0", "17.0", 179, True), (PAGILA15, "15beta2", "12.11", 164, False)], ids=["pg17", "pg15"])
def test_pagila_files(path: Path, pg_dump: str, server: str, entries: int, timeout: bool) -> None:
    report = dumps.inspect(path)
    assert report.ok, report.problems
    assert (report.pg_dump_version, report.server_version) == (pg_dump, server)
    assert len(report.toc) == entries and report.tables == {}
    assert report.requires == {"schemas": ["public"], "extensions": [], "roles": [], "event_triggers": [],
                               "publications": [], "large_objects": 0}
    types = {e.type for e in report.toc}
    assert {"DOMAIN", "FUNCTION", "TRIGGER", "MATERIALIZED VIEW", "TABLE ATTACH", "FK CONSTRAINT"} <= types
    assert any(e.name == "payment_p2022_01" and e.type == "TABLE" for e in report.toc)
    assert report.owners == {"postgres"}
    text = b"".join(dumps.DumpReader(dumps.Plan(scope=None, server_version=(15, 20))).filter([path.read_bytes()]))
    assert (b"SET transaction_timeout = 0;" in path.read_bytes()) is timeout
    assert b"transaction_timeout" not in text


def test_pagila_pg17_restores_on_this_server_after_adaptation(make_db) -> None:  # type: ignore[no-untyped-def]
    target = make_db("dumps_pagila")
    local = psql_version()
    reader = dumps.DumpReader(dumps.Plan(scope=None, psql_version=local, server_version=local))
    out = b"".join(reader.filter([PAGILA17.read_bytes()]))
    proc = subprocess.run([PSQL or "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", target],
                          input=out, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert any("transaction_timeout" in a for a in reader.report.adaptations)
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] >= 15


def test_chinook_script_is_not_a_pg_dump_file() -> None:
    report = dumps.inspect(CHINOOK)
    assert "no-header" in kinds(report) and "meta-command" in kinds(report)


# -- the Supabase-shaped dump ---------------------------------------------------------------------------------------------
def test_supabase_dump_is_verified_with_its_needs() -> None:
    report = inspect(S.supabase_dump())
    assert report.ok, report.problems
    assert report.tables == S.SUPABASE_ROWS
    assert report.requires == {
        "schemas": sorted(S.SUPABASE_SCHEMAS + ["public"]), "extensions": sorted(S.SUPABASE_EXTENSIONS),
        "roles": S.SUPABASE_ROLES, "event_triggers": ["issue_pg_net_access"], "publications": ["supabase_realtime"],
        "large_objects": 0}
    assert report.extensions == S.SUPABASE_EXTENSIONS
    assert report.to_dict()["tables"]["public.Transaction"] == 4
    assert set(report.to_dict()) == {"ok", "problems", "pg_dump_version", "server_version", "tables", "requires",
                                     "superuser_unsafe_routines"}


def left(report: dumps.Report) -> dict[tuple[str, str, str], str]:
    return {(lo.type, lo.schema, lo.name): lo.reason for lo in report.left_out}


PLAIN_SERVER = dict(available_extensions=frozenset({"plpgsql", "pgcrypto", "uuid-ossp", "pg_stat_statements"}),
                    existing_roles=frozenset({"postgres"}))


def test_supabase_all_schemas_on_a_plain_server_leaves_out_only_what_cannot_exist() -> None:
    plan = dumps.Plan(scope=None, create_roles=True, psql_version=(15, 20), server_version=(15, 20), **PLAIN_SERVER)
    reader = dumps.DumpReader(plan)
    out = b"".join(reader.filter([S.supabase_dump()]))
    report = reader.report
    gone = left(report)
    assert {k for k in gone if k[0] == "EXTENSION"} == {("EXTENSION", "-", n) for n in
                                                       ("pg_graphql", "pg_net", "supabase_vault")}
    assert ("TABLE DATA", "vault", "secrets") in gone and "supabase_vault" in gone[("TABLE DATA", "vault", "secrets")]
    assert ("DROP EXTENSION", "-", "pg_net") in gone
    assert all(not lo.out_of_scope for lo in report.left_out)
    assert report.restored_tables() == {k: v for k, v in S.SUPABASE_ROWS.items() if k != "vault.secrets"}
    assert sorted(report.roles_created) == S.SUPABASE_ROLES
    assert b"transaction_timeout" not in out and b"CREATE EXTENSION IF NOT EXISTS pg_net" not in out
    assert b'CREATE ROLE "authenticated" NOLOGIN;' in out
    assert b"\\restrict " + S.KEY.encode() in out and b"CREATE EVENT TRIGGER" in out
    assert out.index(b'CREATE ROLE "service_role"') < out.index(b"CREATE POLICY")
    assert b"\\! echo pwned" in out                         # data stays data


def test_supabase_public_scope_as_non_superuser() -> None:
    plan = dumps.Plan(scope=frozenset({"public"}), superuser=False, existing_publications=frozenset(),
                      executor="psycopg", server_version=(17, 6), **PLAIN_SERVER)
    reader = dumps.DumpReader(plan)
    out = b"".join(reader.filter([S.supabase_dump()]))
    gone = left(reader.report)
    assert reader.report.restored_tables() == {k: v for k, v in S.SUPABASE_ROWS.items() if k.startswith("public.")}
    for key in [("SCHEMA", "-", "auth"), ("TABLE", "auth", "users"), ("DROP TABLE", "auth", "users"),
                ("DROP SCHEMA", "-", "vault"), ("EVENT TRIGGER", "-", "issue_pg_net_access"),
                ("PUBLICATION", "-", "supabase_realtime"), ("DROP EVENT TRIGGER", "-", "issue_pg_net_access"),
                ("PUBLICATION TABLE", "public", "supabase_realtime messages"),
                ("POLICY", "public", "messages Anyone reads messages")]:
        assert key in gone, key
    assert "missing on the target" in gone[("POLICY", "public", "profiles Users read own profile")]
    in_scope = {(lo.type, lo.name) for lo in reader.report.left_out_in_scope}
    assert in_scope == {("POLICY", "Transaction Service role manages transactions"),
                        ("POLICY", "messages Anyone reads messages"), ("POLICY", "profiles Users read own profile"),
                        ("PUBLICATION TABLE", "supabase_realtime messages")}
    assert b"DROP TABLE IF EXISTS public.profiles;" in out and b"auth.users" in out   # the FK to auth stays
    assert b"DROP TABLE IF EXISTS auth.users" not in out and b"CREATE SCHEMA" not in out
    assert b"\\restrict" not in out and b"\\unrestrict" not in out
    assert b"transaction_timeout" in out                        # a 17 server knows it
    assert any("psycopg" in a for a in reader.report.adaptations)


def test_unavailable_extension_takes_its_dependents_along() -> None:
    parts = [S.entry("vector", "EXTENSION", "CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA ai;", schema="-"),
             S.entry("docs", "TABLE", "CREATE TABLE public.docs (\n    id integer,\n    embedding ai.vector(3)\n);"),
             table(),
             S.data("docs", "id, embedding", ["1\t[1,2,3]"]), S.data("t", "id, s", ["1\ta"]),
             S.entry("docs docs_pkey", "CONSTRAINT", "ALTER TABLE ONLY public.docs\n    ADD CONSTRAINT docs_pkey "
                     "PRIMARY KEY (id);"),
             S.entry("docs_idx", "INDEX", "CREATE INDEX docs_idx ON public.docs USING btree (id);")]
    data = S.dump("DROP INDEX IF EXISTS public.docs_idx;\nDROP TABLE IF EXISTS public.docs;\n"
                  "DROP TABLE IF EXISTS public.t;\n", *parts)
    reader = dumps.DumpReader(dumps.Plan(scope=None, available_extensions=frozenset({"plpgsql"})))
    out = b"".join(reader.filter([data]))
    gone = left(reader.report)
    assert {("EXTENSION", "-", "vector"), ("TABLE", "public", "docs"), ("TABLE DATA", "public", "docs"),
            ("CONSTRAINT", "public", "docs docs_pkey"), ("INDEX", "public", "docs_idx"),
            ("DROP TABLE", "public", "docs")} <= set(gone)
    assert "ai.vector" in gone[("TABLE", "public", "docs")]
    assert b"public.docs" not in out.replace(b"DROP INDEX IF EXISTS public.docs_idx;", b"")
    assert reader.report.restored_tables() == {"public.t": 1}


@pytest.mark.parametrize("plan, restrict_kept", [
    (dumps.Plan(scope=None, psql_version=(15, 20)), True),
    (dumps.Plan(scope=None, psql_version=(16, 2)), False),
    (dumps.Plan(scope=None, executor="psycopg"), False),
    (dumps.Plan(scope=None), True)], ids=["psql-15.20", "psql-16.2", "psycopg", "unknown"])
def test_restrict_lines_follow_the_client(plan: dumps.Plan, restrict_kept: bool) -> None:
    reader = dumps.DumpReader(plan)
    out = b"".join(reader.filter([simple_dump()]))
    assert (b"\\restrict " in out and b"\\unrestrict " in out) is restrict_kept
    assert bool(reader.report.adaptations) is not restrict_kept


def test_large_object_transactions_are_removed_in_a_single_transaction() -> None:
    blobs = ("--\n-- Name: 16400; Type: BLOB; Schema: -; Owner: -\n--\n\nSELECT pg_catalog.lo_create('16400');\n\n\n"
             "--\n-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -\n--\n\nBEGIN;\n\n"
             "SELECT pg_catalog.lo_open('16400', 131072);\nSELECT pg_catalog.lowrite(0, '\\x6869');\n"
             "SELECT pg_catalog.lo_close(0);\n\nCOMMIT;\n\n")
    data = S.dump(table(), S.data("t", "id, s", ["1\ta"]), blobs)
    report = inspect(data)
    assert report.ok and report.large_objects == 1, report.problems
    one = dumps.DumpReader(dumps.Plan(scope=frozenset({"public"})))
    out = b"".join(one.filter([data]))
    assert b"BEGIN;" not in out and b"COMMIT;" not in out and b"lowrite" in out
    many = dumps.DumpReader(dumps.Plan(scope=None, single_transaction=False))
    assert b"BEGIN;" in b"".join(many.filter([data]))


def test_statement_sharing_a_line_with_one_to_cut_is_refused() -> None:
    data = simple_dump().replace(b"SET transaction_timeout = 0;\n", b"SET transaction_timeout = 0; SET a = 1;\n")
    reader = dumps.DumpReader(dumps.Plan(scope=None, server_version=(15, 0)))
    with pytest.raises(VerificationFailed, match="shares its line"):
        b"".join(reader.filter([data]))


def test_refusal_at_the_end_raises_after_everything_was_sent() -> None:
    reader = dumps.DumpReader(dumps.Plan(scope=None))
    sent = []
    with pytest.raises(VerificationFailed, match="footer"):
        for piece in reader.filter([simple_dump(with_footer=False)]):
            sent.append(piece)
    assert b"COPY public.t" in b"".join(sent)


def test_report_json_and_render() -> None:
    report = inspect(simple_dump(with_footer=False))
    shown = report.render()
    assert "NOT OK" in shown and "public.t" in shown and "footer" in shown
    assert '"ok": false' in report.to_json()


@pytest.mark.skipif(not os.environ.get("OPS_TEST_BIG_DUMP"), reason="set OPS_TEST_BIG_DUMP=path to check a real dump")
def test_a_real_backup_file() -> None:
    report = dumps.inspect(os.environ["OPS_TEST_BIG_DUMP"])
    assert report.ok, report.problems


@pytest.mark.parametrize("data", [S.supabase_dump(), simple_dump(["1\ta", "2\tb\\\\.", "3\t\\N"])],
                         ids=["supabase", "simple"])
def test_tagged_pieces_join_to_the_psql_stream(data: bytes) -> None:
    plan = dumps.Plan(scope=None, create_roles=True, **PLAIN_SERVER)
    stream = b"".join(dumps.DumpReader(plan).filter(data[i:i + 333] for i in range(0, len(data), 333)))
    pieces = list(dumps.DumpReader(plan).pieces(data[i:i + 333] for i in range(0, len(data), 333)))
    assert b"".join(p for _, p in pieces) == stream
    kinds_seen = [k for k, _ in pieces]
    for i, kind in enumerate(kinds_seen):
        if kind == "copy":
            assert COPY_LINE.fullmatch(pieces[i][1])
            j = i + 1
            while kinds_seen[j] == "data":
                j += 1
            assert kinds_seen[j] == "end" and pieces[j][1] == b"\\.\n"
    assert all(k != "sql-part" for k in kinds_seen)


def test_adapted_17_6_dump_restores_with_an_old_psql_and_server(old_pg16, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """psql 16.2 refuses \\restrict and server 16.2 refuses transaction_timeout; the adapted stream restores."""
    psql16 = str(old_pg16.bin_dir / "psql")
    name = f"dumps_old_{secrets.token_hex(4)}"
    with psycopg.connect(old_pg16.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = old_pg16.url(name)
    data = simple_dump(["1\ta", "2\tb\\\\."])
    argv = [psql16, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", url]
    raw = subprocess.run(argv, input=data, capture_output=True, timeout=60)
    assert raw.returncode == 3 and b"invalid command \\restrict" in raw.stderr     # the trap is real
    reader = dumps.DumpReader(dumps.Plan(scope=None, psql_version=(16, 2), server_version=(16, 2)))
    adapted = subprocess.run(argv, input=b"".join(reader.filter([data])), capture_output=True, timeout=60)
    assert adapted.returncode == 0, adapted.stderr.decode()
    assert len(reader.report.adaptations) == 2
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM public.t").fetchone()[0] == 2


def test_gzipped_html_page_is_named(tmp_path: Path) -> None:
    path = tmp_path / "b.sql.gz"
    path.write_bytes(gzip.compress(b"<!DOCTYPE html>\n<html><title>Error</title></html>\n"))
    report = dumps.inspect(path)
    assert kinds(report) >= {"no-header"} and "it is an HTML page" in str(report.problems[0])


def test_crlf_file_is_named_at_its_first_line() -> None:
    reader = dumps.DumpReader(dumps.Plan(scope=None))
    with pytest.raises(VerificationFailed, match="Windows"):
        list(reader.filter([simple_dump().replace(b"\n", b"\r\n")]))
    assert reader.report.problems[0].line == 1


def run_pieces(url: str, pieces) -> None:  # type: ignore[no-untyped-def]
    """How a psycopg executor uses DumpReader.pieces(): statements, COPY blocks, statements split over pieces."""
    with psycopg.connect(url) as conn:
        part: list[bytes] = []
        copy = None
        for kind, data in pieces:
            if kind == "sql-part":
                part.append(data)
            elif kind == "sql":
                text, part = b"".join(part) + data, []
                if text.strip():
                    conn.execute(text)
            elif kind == "copy":
                copy = conn.cursor().copy(data.decode())
                writer = copy.__enter__()
            elif kind == "data":
                writer.write(data)
            elif kind == "end" and copy is not None:
                copy.__exit__(None, None, None)
                copy = None


@pytest.mark.parametrize("flags", [(), ("--rows-per-insert=3",)], ids=["copy", "rows-per-insert"])
def test_pieces_restore_through_psycopg(tricky_db: str, make_db, flags: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    data = pg_dump(tricky_db, *flags)
    target = make_db("dumps_pieces")
    reader = dumps.DumpReader(dumps.Plan(scope=frozenset({"public"}), executor="psycopg"))
    pieces = list(reader.pieces(data[i:i + 4096] for i in range(0, len(data), 4096)))
    if flags:
        assert any(kind == "sql-part" for kind, _ in pieces)
    run_pieces(target, pieces)
    assert counts(target) == counts(tricky_db)


def test_settings_written_before_an_entry_survive_when_the_entry_above_is_cut() -> None:
    data = S.dump(table("a", schema="auth"), "SET default_tablespace = '';\n\nSET default_table_access_method = heap;\n\n",
                  table(), S.data("t", "id, s", ["1\ta"]))
    reader = dumps.DumpReader(dumps.Plan(scope=frozenset({"public"})))
    out = b"".join(reader.filter([data]))
    assert b"CREATE TABLE auth.a" not in out and b"CREATE TABLE public.t" in out
    assert out.index(b"SET default_table_access_method = heap;") < out.index(b"CREATE TABLE public.t")
    assert [lo.name for lo in reader.report.left_out] == ["a"]


def test_backslash_string_in_a_dump_that_never_sets_standard_conforming_strings() -> None:
    data = S.dump(table(), S.entry("t", "COMMENT", "COMMENT ON TABLE public.t IS 'a\\b';"),
                  prelude=S.PRELUDE.replace("SET standard_conforming_strings = on;\n", ""))
    assert "ambiguous-literal" in kinds(inspect(data))
