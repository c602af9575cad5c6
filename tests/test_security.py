"""Attacks on the guard, the dump checker and the secrets, each one found working once and then fixed.

Every test here is an attempt that used to succeed: a spelling of production `inv guard.check` let through while
psql reached production, a backup that ran a program on the database server, a secret that reached the output.
The referee is always the real thing: psql (or libpq through psycopg) connecting, a real restore, a file on disk.
"""
from __future__ import annotations

import gzip
import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ops import dumps
from ops.errors import VerificationFailed

from . import dump_samples as S
from .fix_pg import needs

ROOT = Path(__file__).resolve().parent.parent


def inv(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INVOKE_")) and k != "DATABASE_URL"}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def database_reached(conninfo: str, env: dict[str, str]) -> str:
    """The database libpq itself connects to for `conninfo` in environment `env` (in a child process, so the
    test's own environment plays no part)."""
    code = "import psycopg, sys; print(psycopg.connect(sys.argv[1]).execute('SELECT current_database()').fetchone()[0])"
    full = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | env
    out = subprocess.run([sys.executable, "-c", code, conninfo], env=full, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# -- the guard: service files are read as libpq reads them -------------------------------------------------------------
def test_service_file_read_like_libpq_first_value_and_first_section_win(make_db, tmp_path):
    """libpq takes the first value of a key and the first section of a name; configparser took the last, so
    `inv guard.check service=app` said staging while psql connected to production."""
    prod, staging = make_db("lottery"), make_db("stage")
    p, s = conninfo_to_dict(prod), conninfo_to_dict(staging)
    host, port = p.get("host", "127.0.0.1"), p.get("port", "5432")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pg_service.conf").write_text(
        f"[app]\nhost={host}\nport={port}\nuser={p.get('user', 'postgres')}\n"
        f"dbname={p['dbname']}\ndbname={s['dbname']}\n"                       # a key given twice
        f"[twice]\nhost={host}\nport={port}\nuser={p.get('user', 'postgres')}\ndbname={p['dbname']}\n"
        f"[twice]\ndbname={s['dbname']}\n")                                   # a section given twice
    env = {"HOME": str(home), "DATABASE_URL": prod}
    for service in ("app", "twice"):
        assert database_reached(f"service={service}", env) == p["dbname"]    # the referee: libpq
        result = inv("guard.check", f"service={service}", env=env)
        assert result.returncode == 3, (service, result.stdout, result.stderr)
        assert "PRODUCTION" in result.stdout


def test_service_file_lines_libpq_rejects_make_the_service_unusable():
    from ops import urls

    keywords = ["host", "port", "dbname", "user", "hostaddr"]
    text = ("host=ignored-before-any-section\n[ok]\n  host=a.example  \nhost=b.example\n# comment\n"
            "[spaced]\nhost = a.example\n[ldap]\nldap://ldap.example/dc=x?y\n[nested]\nservice=ok\n"
            "[a]b]\nport=1\n[ok]\nhost=c.example\n")
    services = urls.parse_service_file(text, keywords)
    assert services["ok"] == {"host": "a.example"}
    assert services["a"] == services["a]b"] == {"port": "1"}
    assert all(isinstance(services[name], str) for name in ("spaced", "ldap", "nested"))
    for name in ("spaced", "ldap", "nested"):
        with pytest.raises(urls.TargetError, match=f'service "{name}" cannot be used'):
            urls.resolve_params({"service": name}, {}, services, "me")
    with pytest.raises(urls.TargetError, match="servicefile"):
        urls.resolve_params({"service": "ok", "servicefile": "/elsewhere"}, {}, services, "me")


# -- a backup must not run anything on the database server ---------------------------------------------------------
# Functions a tampered source database defines, called from a CHECK constraint during the restore's COPY. Each
# leaves a file on the server's machine when it runs with a superuser's rights; pg_dump writes all of them itself.
SERVER_CODE = {
    "plpgsql-dynamic-execute": "LANGUAGE plpgsql AS $f$ BEGIN EXECUTE 'CO' || 'PY (SELECT 1) TO PRO' || 'GRAM ' "
                               "|| quote_literal('touch {marker}'); RETURN true; END $f$",
    "sql-copy-program-after-semicolon": "LANGUAGE sql AS $f$ COPY (SELECT ';') TO PROGRAM 'touch {marker}'; "
                                        "SELECT true $f$",
    "sql-lo-export": "LANGUAGE sql AS $f$ SELECT lo_from_bytea(4242, '\\x41'::bytea); "
                     "SELECT lo_export(4242, '{marker}') > 0 $f$",
}


def tampered_backup(source_url: str, body: str, path: Path) -> Path:
    """A source database whose CHECK constraint calls `body`, dumped the nightly way (the function is made
    harmless while the row goes in, then replaced: a CHECK is not checked again)."""
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION public.chk(i int) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$")
        conn.execute("CREATE TABLE public.t (id int CHECK (public.chk(id)), s text)")
        conn.execute("INSERT INTO public.t VALUES (1, 'a')")
        conn.execute(f"CREATE OR REPLACE FUNCTION public.chk(i int) RETURNS boolean {body}")
    from ops import pg
    dump = subprocess.run(["pg_dump", "-w", "--no-owner", "--no-privileges", "--clean", "--if-exists"],
                          env=pg.tool_env(source_url, os.environ), capture_output=True, check=True, timeout=120).stdout
    path.write_bytes(gzip.compress(dump, 9))
    return path


@pytest.mark.parametrize("kind", sorted(SERVER_CODE))
def test_backup_functions_cannot_run_programs_on_the_server_as_superuser(kind, make_db, tmp_path):
    marker = Path("/tmp") / f"ops-pwned-{secrets.token_hex(6)}"
    source, staging = make_db("src"), make_db("stage")
    backup = tampered_backup(source, SERVER_CODE[kind].format(marker=marker), tmp_path / "backup_evil.sql.gz")
    env = {"STAGING_DATABASE_URL": staging, "HOME": str(tmp_path),
           "INVOKE_OPS_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    try:
        verify = inv("restore.verify", "--file", str(backup), env=env)
        assert "public.chk" in verify.stdout, verify.stdout      # verify names the function among the needs
        result = inv("restore.staging", "--file", str(backup), "--yes", env=env)
        assert result.returncode != 0, result.stdout + result.stderr
        assert "superuser" in result.stdout + result.stderr
        assert not marker.exists()
        with psycopg.connect(staging) as conn:                   # nothing of the backup arrived
            assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)
    finally:
        marker.unlink(missing_ok=True)


def risky(name: str = "evil", body: str = "BEGIN EXECUTE 'SELECT 1'; RETURN true; END") -> str:
    return S.entry(f"{name}(i integer)", "FUNCTION", f"CREATE FUNCTION public.{name}(i integer) RETURNS boolean\n"
                   f"    LANGUAGE plpgsql\n    AS $$ {body} $$;")


def harmless(name: str, calls: str) -> str:
    return S.entry(f"{name}(i integer)", "FUNCTION", f"CREATE FUNCTION public.{name}(i integer) RETURNS boolean\n"
                   f"    LANGUAGE sql\n    AS $$ SELECT public.{calls}(i) $$;")


def checked_table(calls: str) -> str:
    sql = f"CREATE TABLE public.t (\n    id integer,\n    CONSTRAINT c CHECK (public.{calls}(id))\n);"
    return S.entry("t", "TABLE", sql) + S.data("t", "id", ["1"])


def refused_as_superuser(data: bytes, superuser: bool = True) -> dumps.Report:
    reader = dumps.DumpReader(dumps.Plan(scope=None, superuser=superuser))
    with pytest.raises(VerificationFailed, match="superuser"):
        b"".join(reader.filter([data]))
    return reader.report


def passes(data: bytes, superuser: bool = True) -> dumps.Report:
    reader = dumps.DumpReader(dumps.Plan(scope=None, superuser=superuser))
    b"".join(reader.filter([data]))
    return reader.report


def test_a_routine_the_restore_never_runs_may_use_dynamic_sql():
    """pagila's rewards_report() builds SQL with EXECUTE; nothing in the restore calls it, so it restores."""
    report = passes(S.dump(risky(), S.entry("t", "TABLE", "CREATE TABLE public.t (\n    id integer\n);"),
                           S.data("t", "id", ["1"])))
    assert report.server_reach == []


def test_routines_the_restore_runs_are_followed_through_other_routines_in_any_order():
    direct = S.dump(risky(), checked_table("evil"))
    through = S.dump(harmless("a", "b"), checked_table("a"), risky("b"))       # b is defined after the table
    for data in (direct, through):
        report = refused_as_superuser(data)
        assert report.problems[0].kind == "superuser-code" and "restore as a role" in report.problems[0].hint
        assert passes(data, superuser=False).server_reach                      # listed, not refused
        verified = dumps.inspect([data])
        assert verified.ok and verified.server_reach                          # verify lists it


@pytest.mark.parametrize("context", [
    "CREATE INDEX i ON public.t USING btree (public.evil(id));",
    "CREATE MATERIALIZED VIEW public.m AS\n SELECT public.evil(1) AS x\n  WITH NO DATA;",
    "CREATE TRIGGER tr BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.evil();",
    "CREATE EVENT TRIGGER e ON ddl_command_end\n   EXECUTE FUNCTION public.evil();",
    "CREATE AGGREGATE public.agg(integer) (\n    SFUNC = public.evil,\n    STYPE = integer\n);\n"
    "CREATE VIEW public.v AS\n SELECT public.agg(t.id) AS agg\n   FROM public.t;",
    "CREATE OPERATOR public.=== (\n    FUNCTION = public.evil,\n    LEFTARG = integer,\n    RIGHTARG = integer\n);",
], ids=["index", "matview", "trigger", "event-trigger", "aggregate", "operator"])
def test_every_way_the_restore_runs_a_routine_counts(context):
    refused_as_superuser(S.dump(risky(), S.entry("t", "TABLE", "CREATE TABLE public.t (\n    id integer\n);"),
                                S.entry("x", "INDEX", context)))


@pytest.mark.parametrize("body", [
    "BEGIN PERFORM lo_export(1, '/tmp/x'); RETURN true; END",
    "BEGIN COPY (SELECT 1) TO '/tmp/x'; RETURN true; END",
    "BEGIN CREATE EXTENSION file_fdw; RETURN true; END",
    "BEGIN ALTER ROLE postgres PASSWORD 'x'; RETURN true; END",
    "BEGIN PERFORM set_config('role', 'postgres', false); RETURN true; END",
    "-- " + "x" * 70000 + "\nBEGIN RETURN true; END",
], ids=["lo-export", "copy", "extension", "role", "set-config", "too-long"])
def test_what_makes_a_routine_reach_the_server(body):
    refused_as_superuser(S.dump(risky(body=body), checked_table("evil")))


def test_a_statement_too_long_to_read_whole_reaches_every_routine():
    columns = ",\n    ".join(f"c{i} integer" for i in range(2500))
    data = S.dump(risky(), S.entry("t", "TABLE", f"CREATE TABLE public.t (\n    {columns},\n"
                                                 "    CONSTRAINT c CHECK (public.evil(c1))\n);"))
    refused_as_superuser(data)


def test_sql_built_from_pieces_in_a_check_is_refused():
    check = "(query_to_xml('SELECT public.ev' || 'il()', true, true, '') IS NOT NULL)"
    sql = f"CREATE TABLE public.t (\n    id integer,\n    CONSTRAINT c CHECK ({check})\n);"
    data = S.dump(S.entry("t", "TABLE", sql))
    assert "server-function" in {p.kind for p in dumps.inspect([data]).problems}


def test_a_foreign_table_reading_a_program_is_refused(make_db, tmp_path):
    """file_fdw runs `program` for whoever reads the table: a materialized view refreshed by the restore did,
    with --schemas all, as the superuser; all of it pg_dump output."""
    marker = Path("/tmp") / f"ops-pwned-{secrets.token_hex(6)}"
    source, staging = make_db("src"), make_db("stage")
    with psycopg.connect(source, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'file_fdw'").fetchone() is None:
            needs("the file_fdw extension", "install postgresql-contrib")
        conn.execute("CREATE EXTENSION file_fdw; CREATE SERVER s FOREIGN DATA WRAPPER file_fdw")
        conn.execute("CREATE FOREIGN TABLE public.ft (x text) SERVER s OPTIONS (program 'echo hi')")
        conn.execute("CREATE MATERIALIZED VIEW public.m AS SELECT * FROM public.ft")
        conn.execute(f"ALTER FOREIGN TABLE public.ft OPTIONS (SET program 'touch {marker}')")
    from ops import pg
    dump = subprocess.run(["pg_dump", "-w", "--no-owner", "--no-privileges", "--clean", "--if-exists"],
                          env=pg.tool_env(source, os.environ), capture_output=True, check=True, timeout=120).stdout
    backup = tmp_path / "backup_fdw.sql.gz"
    backup.write_bytes(gzip.compress(dump))
    env = {"STAGING_DATABASE_URL": staging, "HOME": str(tmp_path),
           "INVOKE_OPS_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    try:
        assert inv("restore.verify", "--file", str(backup), env=env).returncode != 0
        result = inv("restore.staging", "--file", str(backup), "--yes", "--schemas", "all", env=env)
        assert result.returncode != 0, result.stdout + result.stderr
        assert "program" in result.stdout + result.stderr
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)


# -- what psql is handed is what was judged, with every protection the URL asked for -------------------------------------
def test_target_env_keeps_the_protections_the_url_asks_for():
    """psql and pg_dump get Target.env only: a URL asking for channel binding, SCRAM only, a minimum TLS version or
    a peer check lost them there, and the password went to whatever answered."""
    from ops import guard
    from ops.config import Settings

    url = ("postgresql://app:pw@staging.invalid/app?sslmode=verify-full&channel_binding=require"
           "&require_auth=scram-sha-256&ssl_min_protocol_version=TLSv1.3&gssencmode=disable&sslcrl=/x.crl"
           "&client_encoding=SJIS")
    target = guard.require(Settings.from_dict(env={}), url, action="test", read_marker=False)
    assert {k: target.env.get(k) for k in ("PGCHANNELBINDING", "PGREQUIREAUTH", "PGSSLMINPROTOCOLVERSION",
                                           "PGGSSENCMODE", "PGSSLCRL", "PGSSLMODE")} == {
        "PGCHANNELBINDING": "require", "PGREQUIREAUTH": "scram-sha-256", "PGSSLMINPROTOCOLVERSION": "TLSv1.3",
        "PGGSSENCMODE": "disable", "PGSSLCRL": "/x.crl", "PGSSLMODE": "verify-full"}
    assert "PGCLIENTENCODING" not in target.env       # psql reads the dump in the server's encoding until its SET


def test_marker_read_cannot_be_shadowed_by_objects_on_the_search_path(make_db):
    """The marker query named catalogs and functions unqualified: with public searched before pg_catalog (a
    database setting, or `options` in the URL), look-alikes in public answered 'staging'."""
    from ops import guard
    from ops.config import Settings

    url = make_db("app")
    with psycopg.connect(url, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{dbname}" SET ops.environment = \'production\'')
        conn.execute("CREATE TABLE public.pg_db_role_setting (setdatabase oid, setrole oid, setconfig text[])")
        conn.execute("CREATE FUNCTION public.current_setting(text, boolean) RETURNS text LANGUAGE sql "
                     "AS $$ SELECT 'staging'::text $$")
    shadowed = url + ("&" if "?" in url else "?") + "options=-c%20search_path%3Dpublic,pg_catalog"
    target = guard.judge(Settings.from_dict(env={}), shadowed)
    assert target.marker == "production" and target.refused, target.explain()


# -- secrets: a password written the wrong way must not be printed either ---------------------------------------------
# Passwords an operator may paste into a URL without percent-encoding them (every piece of each holds "SECRET"):
# libpq then parses a different password, a host or database holding the rest, or fails with a message quoting it.
BADLY_WRITTEN = [
    "postgresql://postgres:SECRET1/SECRET2@127.0.0.1:1/stg",
    "postgresql://postgres:SECRET1@SECRET2@127.0.0.1:1/stg",
    "postgresql://postgres:SECRET1 SECRET2@127.0.0.1:1/stg",
    "postgresql://postgres:SECRET1%zzSECRET2@127.0.0.1:1/stg",
    "postgresql://postgres:SECRET1?SECRET2@127.0.0.1:1/stg",
    "postgresql://postgres:SECRET1#SECRET2@127.0.0.1:1/stg",
    "host=127.0.0.1 port=1 dbname=stg password=SECRET1\\ SECRET2",
    "host=127.0.0.1 port=1 dbname=stg password=SECRET1 SECRET2",
    "host=127.0.0.1 port=1 dbname=stg password='SECRET1 \\' SECRET2'",
    "host=127.0.0.1 port=1 dbname=stg password=SECRET1' SECRET2",
]


@pytest.mark.parametrize("url", BADLY_WRITTEN)
def test_badly_written_passwords_are_never_printed(url, tmp_path):
    checked = inv("guard.check", url, env={"HOME": str(tmp_path)})
    assert "SECRET" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    staged = inv("restore.staging", "--file", str(tmp_path / "none.sql.gz"), "--dry-run",
                 env={"HOME": str(tmp_path), "STAGING_DATABASE_URL": url, "DATABASE_URL": url.replace("stg", "prd")})
    assert "SECRET" not in staged.stdout + staged.stderr, staged.stdout + staged.stderr


# -- every write asks the guard ----------------------------------------------------------------------------------------
def test_sandbox_demo_asks_the_guard_before_dropping_databases(make_db, pg_server, tmp_path):
    """sandbox.demo dropped, created and seeded databases on whatever server OPS_SANDBOX_URL named, production's
    included (OPS_SANDBOX_URL=$DATABASE_URL is an easy slip), without asking the guard."""
    import json

    production = make_db("lottery")
    config = tmp_path / "invoke.json"
    config.write_text(json.dumps({"ops": {"audit_log": str(tmp_path / "audit.jsonl")}}))
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        before = conn.execute("SELECT datname, oid FROM pg_database WHERE datname LIKE 'sandbox_%'").fetchall()
    out = inv("sandbox.demo", "--users", "10", env={"OPS_SANDBOX_URL": production, "DATABASE_URL": production,
                                                     "INVOKE_RUNTIME_CONFIG": str(config)})
    assert out.returncode == 3, out.stdout + out.stderr
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        after = conn.execute("SELECT datname, oid FROM pg_database WHERE datname LIKE 'sandbox_%'").fetchall()
    assert sorted(after) == sorted(before)


# -- the dump lexer against psql: meta-commands it missed ---------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "SELECT 1;\n1e--\\echo :MARK\n;\n",                       # psql 15 reads `1e-` as one (bad) number: no comment
    "SELECT 1;\n1.5E+-\\echo :MARK\n;\n",
    "SELECT 1;\n:case$a$n'$b$'': $1$a$\\echo :MARK\n--\n;\n",  # `:case` is one token (a psql variable), then $a$
    "SELECT 1;\n:x$$'$$\\echo :MARK\n;\n",
    "SELECT 1;\n1_$$*/\\echo :MARK\n'''*/\f1\n;\n",           # `1_$$` is one token: no dollar quote
    "SELECT 1;\nE+*\n1_$\u00e9$\\echo :MARK\n)/*1_e'$a$\n;\n",
    "SELECT 1;\n1e$$ \\echo :MARK\n;\n",
], ids=["number-e-minus", "number-e-plus", "variable-then-dollar", "variable-then-empty-dollar", "number-underscore",
        "number-underscore-unicode-tag", "number-e-dollar"])
def test_lexer_sees_the_meta_commands_psql_runs(text, make_db):
    """Found by a differential fuzz against psql 15: each ran `\\echo` while the lexer saw no backslash command."""
    from tests.test_dumps import MARK, lexer_alarms

    proc = subprocess.run(["psql", "-X", "-q", "-d", make_db("lex"), "-v", "ON_ERROR_STOP=0", "-v", f"MARK={MARK}"],
                          input=text.encode(), capture_output=True, timeout=30)
    assert MARK.encode() in proc.stdout                     # the referee: psql runs it
    assert {"meta-command", "ambiguous-literal"} & set(lexer_alarms(text))


def test_writes_into_the_system_catalogs_are_refused():
    """With `SET allow_system_table_mods = on` (a superuser may) a COPY into pg_catalog.pg_authid makes a superuser
    role on the staging server; only the row count check stopped it, by luck (pg_authid was not empty)."""
    table = S.entry("t", "TABLE", "CREATE TABLE public.t (\n    id integer\n);")
    cols = "oid, rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls"
    row = "990001\tevil_admin\tt\tt\tt\tt\tt\tf\tf"
    catalog_copy = S.data("pg_authid", cols, [row], schema="pg_catalog")
    catalog_insert = S.entry("pg_authid", "TABLE DATA", "INSERT INTO pg_catalog.pg_authid (oid, rolname) VALUES "
                                                        "(990001, 'evil_admin');", schema="pg_catalog")
    for data in (S.dump(table, "SET allow_system_table_mods = on;\n\n"),
                 S.dump(table, "SET dynamic_library_path = '/tmp';\n\n"),
                 S.dump(table, catalog_copy), S.dump(table, catalog_insert),
                 S.dump(table, S.data("columns", "x", ["1"], schema="information_schema"))):
        report = dumps.inspect([data])
        assert not report.ok, data.decode()[-400:]
        with pytest.raises(VerificationFailed):
            b"".join(dumps.DumpReader(dumps.Plan(scope=None)).filter([data]))


def test_a_role_that_can_run_server_programs_counts_as_reaching_the_server():
    data = S.dump(risky() + checked_table("evil"))
    reader = dumps.DumpReader(dumps.Plan(scope=None, superuser=False, server_access=True))
    with pytest.raises(VerificationFailed, match="superuser"):
        b"".join(reader.filter([data]))
    assert passes(data, superuser=False).ok


def test_backup_functions_cannot_borrow_pg_execute_server_program(make_db, tmp_path):
    """A restoring role that is not superuser but may run server programs is held to the superuser rule."""
    marker = Path("/tmp") / f"ops-pwned-{secrets.token_hex(6)}"
    source, staging = make_db("src"), make_db("stage")
    role = f"ops_prog_{secrets.token_hex(4)}"
    params = conninfo_to_dict(staging)
    with psycopg.connect(staging, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw-prog-1234'").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT pg_execute_server_program TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(params["dbname"]),
                                                                       sql.Identifier(role)))
    try:
        backup = tampered_backup(source, SERVER_CODE["plpgsql-dynamic-execute"].format(marker=marker),
                                 tmp_path / "backup_evil.sql.gz")
        as_role = make_conninfo("", **{**params, "user": role, "password": "pw-prog-1234"})
        env = {"STAGING_DATABASE_URL": as_role, "HOME": str(tmp_path),
               "INVOKE_OPS_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
        result = inv("restore.staging", "--file", str(backup), "--yes", env=env)
        assert result.returncode != 0, result.stdout + result.stderr
        assert "superuser" in result.stdout + result.stderr
        assert not marker.exists()
        with psycopg.connect(staging) as conn:
            assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)
    finally:
        marker.unlink(missing_ok=True)
        with psycopg.connect(staging, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(params["dbname"])))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
