"""The restore engine and the `restore` tasks against real PostgreSQL, with real pg_dump backups.

Backups are made the way the nightly job makes them (`pg_dump --no-owner --no-privileges --clean --if-exists |
gzip -9`) inside fixtures; the third-party files in tests/data (pagila, chinook; copied from ../shared/data) and a Supabase-shaped dump
(tests/dump_samples.py) cover what we cannot make here. "Unchanged" is checked with row counts and a checksum of
every row, before and after.
"""
from __future__ import annotations

import gzip
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from invoke import Config, Context, Exit
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ops import dumps, guard, pg, restore, restorer, restoresql, sandbox
from ops.config import Settings
from ops.errors import ConfigError, VerificationFailed

from . import dump_samples as ds

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"   # copies of ../shared/data (see tests/data/README.md)
FLAGS = ["--no-owner", "--no-privileges", "--clean", "--if-exists"]
WEIRD = 'we"ird\'Name'        # a table name with both quote characters


# -- helpers ----------------------------------------------------------------------------------------------------------
def make_backup(url: str, path: Path, *, pg_dump: str = "pg_dump", gz: bool = True) -> Path:
    """A backup made the real way: pg_dump with the nightly flags, piped through gzip -9."""
    env = pg.tool_env(url, os.environ)
    dump = subprocess.run([pg_dump, "-w", *FLAGS], env=env, capture_output=True, check=True, timeout=300).stdout
    path.write_bytes(gzip.compress(dump, 9) if gz else dump)
    return path


def counts(url: str, schemas=("public",)) -> dict[str, int]:
    return pg.table_counts(url, list(schemas) if schemas else None)


def checksums(url: str, schemas=("public",)) -> dict[str, str]:
    """md5 over every row of every table (text form, sorted): equal only if every value is equal."""
    with psycopg.connect(url) as conn:
        tables = conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                              "c.relnamespace WHERE c.relkind = 'r' AND n.nspname = ANY(%s)", (list(schemas),)).fetchall()
        out = {}
        for s, t in tables:
            q = sql.SQL("SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {} x").format(
                sql.Identifier(s, t))
            out[f"{s}.{t}"] = conn.execute(q).fetchone()[0]
        return out


def state(url: str) -> tuple[dict[str, int], dict[str, str]]:
    return counts(url), checksums(url)


def execute(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def settings_for(tmp_path: Path, env: dict[str, str] | None = None, **restore_opts) -> Settings:
    return Settings.from_dict(ops={"audit_log": str(tmp_path / "audit.jsonl"),
                                   "restore": {"lock_timeout": "2s", "backup_dir": str(tmp_path / "backups"),
                                               **restore_opts}}, env=env or {})


def target(settings: Settings, url: str) -> guard.Target:
    return guard.require(settings, url, action="test")


def rewrite(src: Path, dest: Path, edit) -> Path:
    """A copy of a .sql.gz backup with its SQL changed by edit(bytes) -> bytes."""
    dest.write_bytes(gzip.compress(edit(gzip.decompress(src.read_bytes())), 6))
    return dest


def inv_command(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """argv and environment for `inv ARGS` as a subprocess, with the audit log and backup directory in tmp_path."""
    config = tmp_path / "invoke.json"
    if not config.exists():
        config.write_text(json.dumps({"ops": {"audit_log": str(tmp_path / "audit.jsonl"),
                                              "restore": {"backup_dir": str(tmp_path / "backups")}}}))
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INVOKE_"))}
    full.update(env, INVOKE_RUNTIME_CONFIG=str(config))
    return [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args], full


def inv(args: list[str], env: dict[str, str], tmp_path: Path, **kw) -> subprocess.CompletedProcess[str]:
    argv, full = inv_command(args, env, tmp_path)
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, env=full, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


# -- fixtures ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lottery(pg_server, tmp_path_factory):
    """A lottery-shaped source database (ops.sandbox's seed plus a table named with quotes) and its real backup."""
    name = f"src_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = pg_server.url(name)
    try:
        sandbox.seed(url, users=300)
        execute(url, f'CREATE TABLE public.{restoresql.quote_ident(WEIRD)} (v text); '
                     f"INSERT INTO public.{restoresql.quote_ident(WEIRD)} VALUES (E'a\\tb'), ('ERROR'), (NULL);")
        path = make_backup(url, tmp_path_factory.mktemp("lottery") / "backup_20250101_020000.sql.gz")
        yield type("Source", (), {"url": url, "path": path, "counts": counts(url), "sums": checksums(url)})
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def restored_staging(lottery, staging_url, tmp_path):
    """Staging holding an earlier restore of the lottery backup plus a table of its own with a marker row."""
    restorer.restore(settings_for(tmp_path), target(settings_for(tmp_path), staging_url), lottery.path)
    execute(staging_url, "CREATE TABLE public.staging_only (note text); INSERT INTO public.staging_only VALUES ('keep')")
    return staging_url


# -- real backups restore whole --------------------------------------------------------------------------------------
def test_real_backup_restores_every_row_and_value(lottery, staging_url, tmp_path):
    settings = settings_for(tmp_path)
    result = restorer.restore(settings, target(settings, staging_url), lottery.path)
    assert result.committed and result.ok
    assert counts(staging_url) == lottery.counts
    assert checksums(staging_url) == lottery.sums
    assert result.tables["public.User"] == 300 and result.tables[f"public.{WEIRD}"] == 3
    assert [s.name for s in result.steps] == ["preflight", "check", "restore", "analyze"]
    with psycopg.connect(staging_url) as conn:   # ANALYZE ran: the planner knows the table's size
        assert conn.execute("SELECT reltuples FROM pg_class WHERE oid = '\"Ticket\"'::regclass").fetchone()[0] == 3000


def test_restore_over_an_earlier_restore_keeps_tables_the_backup_does_not_hold(lottery, restored_staging, tmp_path):
    execute(restored_staging, 'DELETE FROM "Ticket" WHERE id % 2 = 0; INSERT INTO "Draw" ("drawnAt", numbers) '
                              "VALUES (now(), '{1}')")
    settings = settings_for(tmp_path)
    result = restorer.restore(settings, target(settings, restored_staging), lottery.path)
    assert result.committed
    after = counts(restored_staging)
    assert after.pop("public.staging_only") == 1
    assert after == lottery.counts and checksums(restored_staging)["public.Ticket"] == lottery.sums["public.Ticket"]


def test_verify_counts_equal_the_source_and_data_words_are_not_errors(lottery):
    report = dumps.inspect(lottery.path)
    assert report.ok, report.problems
    assert report.tables == lottery.counts


def test_restore_leaves_nothing_of_its_own_in_the_target(lottery, staging_url, tmp_path):
    def catalog(url: str) -> tuple:
        with psycopg.connect(url) as conn:
            rels = conn.execute("SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text FROM pg_class c JOIN "
                                "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', "
                                "'information_schema') AND n.nspname !~ '^pg_toast' ORDER BY 1").fetchall()
            procs = conn.execute("SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = "
                                 "p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
                                 "ORDER BY 1").fetchall()
            setting = conn.execute("SELECT count(*) FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM "
                                   "pg_database WHERE datname = current_database())").fetchone()
            roles = conn.execute("SELECT count(*) FROM pg_roles").fetchone()
            return rels, procs, setting, roles

    settings = settings_for(tmp_path)
    assert restorer.restore(settings, target(settings, staging_url), lottery.path).committed
    assert catalog(staging_url) == catalog(lottery.url)


# -- third-party files and other versions ----------------------------------------------------------------------------
def _tables_in(path: Path) -> set[str]:
    text = path.read_text()
    return {line.split("Name: ")[1].split(";")[0] for line in text.splitlines()
            if line.startswith("-- Name: ") and "; Type: TABLE; Schema: public;" in line}


@pytest.mark.parametrize("name", ["pagila-schema-pg17.sql", "pagila-schema-pg15.sql"])
def test_pagila_dumps_restore_onto_this_server(name, make_db, tmp_path, pg_server):
    url = make_db("pagila")
    settings = settings_for(tmp_path)
    result = restorer.restore(settings, target(settings, url), DATA / name)
    assert result.committed, result.problems
    with psycopg.connect(url) as conn:
        found = {r[0] for r in conn.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                                            "c.relnamespace WHERE n.nspname = 'public' AND relkind IN ('r', 'p')")}
    assert _tables_in(DATA / name) <= found
    adapted = " ".join(result.report.adaptations)
    if "pg17" in name and pg_server.major < 17:
        assert "transaction_timeout" in adapted
    if "pg15" in name:
        assert "transaction_timeout" not in adapted


def test_pg17_dump_and_a_new_dump_restore_with_old_psql_16_2_onto_16_2(old_pg16, lottery, tmp_path):
    """psql 16.2 predates \\restrict (16.10) and server 16.2 lacks transaction_timeout: both adapted, said so."""
    settings = settings_for(tmp_path, psql=str(old_pg16.bin_dir / "psql"))
    for source in (lottery.path, DATA / "pagila-schema-pg17.sql"):
        name = f"old_{secrets.token_hex(3)}"
        with psycopg.connect(old_pg16.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = old_pg16.url(name)
        result = restorer.restore(settings, target(settings, url), source)
        assert result.committed, result.problems
        assert result.step("preflight").detail.startswith("psql 16.2, server 16.2")
        adapted = " ".join(result.report.adaptations)
        if source == lottery.path:
            has_restrict = b"\\restrict " in gzip.decompress(lottery.path.read_bytes())[:400]
            assert ("\\restrict" in adapted) == has_restrict
            assert counts(url) == lottery.counts and checksums(url) == lottery.sums
        else:
            assert "transaction_timeout" in adapted


def test_chinook_loaded_dumped_and_restored(make_db, staging_url, tmp_path):
    """chinook.sql is a script (CREATE DATABASE, \\c): load its body into a database, dump that, restore it."""
    source = make_db("chinook")
    body = (DATA / "chinook.sql").read_text().split("\\c chinook;", 1)[1]
    env = pg.tool_env(source, os.environ)
    subprocess.run(pg.psql_argv("psql"), input=body.encode(), env=env, check=True, capture_output=True, timeout=300)
    backup = make_backup(source, tmp_path / "backup_20250102_020000.sql.gz")
    settings = settings_for(tmp_path)
    result = restorer.restore(settings, target(settings, staging_url), backup)
    assert result.committed
    assert counts(staging_url) == counts(source) and sum(counts(source).values()) > 15000
    assert checksums(staging_url) == checksums(source)


def test_supabase_shaped_backup_restores_with_schemas_all_and_create_roles(make_db, tmp_path, pg_server):
    url = make_db("supa")
    path = tmp_path / "backup_20251113_183309.sql.gz"
    path.write_bytes(gzip.compress(ds.supabase_dump(), 9))
    with psycopg.connect(pg_server.admin_url) as conn:
        before = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
    settings = settings_for(tmp_path)
    try:
        result = restorer.restore(settings, target(settings, url), path, schemas="all", create_roles=True)
        assert result.committed, result.problems
        report = dumps.inspect(path)
        for table, rows in result.tables.items():
            assert counts(url, None).get(table) == rows, table
        lost = {lo.schema + "." + lo.name for lo in result.left_out if lo.type == "TABLE DATA"}
        assert set(report.tables) == set(result.tables) | lost      # every table arrived except the listed ones
        assert all("extension" in lo.reason for lo in result.left_out if lo.type == "TABLE DATA")
        with psycopg.connect(url) as conn:
            available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        unavailable = set(report.extensions) - available
        assert {"pg_graphql", "pg_net", "supabase_vault"} <= unavailable
        assert {lo.name for lo in result.left_out if lo.type == "EXTENSION"} == unavailable
        assert set(result.report.roles_created) == set(ds.SUPABASE_ROLES) - before
        rendered = result.render()
        assert "left out" in rendered and "roles created" in rendered
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(conninfo_to_dict(url)["dbname"])))
            for role in set(ds.SUPABASE_ROLES) - before:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_supabase_shaped_backup_in_default_scope_replaces_only_public(make_db, tmp_path):
    """On a Supabase-like staging (auth exists, its users too), the default scope leaves Supabase's schemas alone."""
    url = make_db("supa")
    execute(url, "CREATE SCHEMA auth; CREATE TABLE auth.users (id uuid PRIMARY KEY, note text); "
                 "CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql AS 'SELECT NULL::uuid'; "
                 "INSERT INTO auth.users VALUES ('0b6c7f5e-1f0a-4c52-9d6e-3f1f2f6d0a01', 'staging'), "
                 "('4f2a9c1e-7b3d-4e8f-a1c2-5d6e7f8a9b02', 'staging'), ('9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c03', 'staging')")
    path = tmp_path / "backup.sql.gz"
    path.write_bytes(gzip.compress(ds.supabase_dump(), 9))
    settings = settings_for(tmp_path)
    result = restorer.restore(settings, target(settings, url), path)   # scope: public, no --create-roles
    assert result.committed, result.problems
    assert all(t.startswith("public.") for t in result.tables)
    for table, rows in result.tables.items():
        assert counts(url).get(table) == rows
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM auth.users WHERE note = 'staging'").fetchone()[0] == 3
    assert any(lo.type == "POLICY" and "role" in lo.reason for lo in result.left_out)   # roles missing: listed
    assert "left out" in result.render()


# -- refusals before anything touches the database ----------------------------------------------------------------------
def _damage(kind: str, good: Path, tmp: Path) -> Path:
    raw = good.read_bytes()
    sql_bytes = gzip.decompress(raw)
    out = tmp / f"backup_{kind}.sql.gz"
    if kind == "truncated-gzip":
        out.write_bytes(raw[: len(raw) * 2 // 3])
    elif kind == "corrupt-gzip":
        mid = len(raw) // 2
        out.write_bytes(raw[:mid] + bytes(b ^ 0x5A for b in raw[mid:mid + 64]) + raw[mid + 64:])
    elif kind == "empty":
        out.write_bytes(b"")
    elif kind == "html":
        out = tmp / "backup_html.sql.gz"
        out.write_bytes(b"<!DOCTYPE html><html><head><title>Sign in to GitHub</title></head><body></body></html>")
    elif kind == "no-footer":
        out.write_bytes(gzip.compress(sql_bytes[:sql_bytes.rindex(b"-- PostgreSQL database dump complete")], 9))
    elif kind == "cut-in-copy":
        cut = sql_bytes.index(b"usr_150")
        out = tmp / "backup_cut.sql"
        out.write_bytes(sql_bytes[:cut])
    return out


@pytest.mark.parametrize("kind", ["truncated-gzip", "corrupt-gzip", "empty", "html", "no-footer", "cut-in-copy"])
def test_damaged_backups_are_refused_before_anything_is_sent(kind, lottery, restored_staging, tmp_path):
    bad = _damage(kind, lottery.path, tmp_path)
    before = state(restored_staging)
    settings = settings_for(tmp_path)
    with pytest.raises(restorer.RestoreFailed) as caught:
        restorer.restore(settings, target(settings, restored_staging), bad)
    result = caught.value.result
    assert result.psql is None                         # psql never started: nothing was sent to the database
    assert result.step("check").outcome == "failed" and caught.value.committed is False
    assert caught.value.hint
    assert state(restored_staging) == before


def test_a_statement_failing_mid_dump_leaves_staging_exactly_as_it_was(lottery, restored_staging, tmp_path):
    def inject(text: bytes) -> bytes:
        at = text.index(b"-- Data for Name: User;")
        return text[:at] + b"SELECT pg_catalog.setval('public.no_such_sequence', 1, false);\n\n" + text[at:]

    bad = rewrite(lottery.path, tmp_path / "backup_fails.sql.gz", inject)
    assert dumps.inspect(bad).ok                       # a well-formed dump: it fails only on the server
    before = state(restored_staging)
    settings = settings_for(tmp_path)
    with pytest.raises(restorer.RestoreFailed) as caught:
        restorer.restore(settings, target(settings, restored_staging), bad)
    assert "no_such_sequence" in str(caught.value) and caught.value.committed is False
    assert caught.value.result.psql.bytes_sent > 100_000      # it failed part-way, with data already sent
    assert state(restored_staging) == before


def test_a_count_mismatch_inside_the_transaction_rolls_back(lottery, staging_url, tmp_path):
    """A dump without --clean loaded over a table that already holds rows: counts differ, nothing is committed."""
    def no_clean(text: bytes) -> bytes:
        return text.replace(b"CREATE TABLE public._prisma_migrations", b"CREATE TABLE IF NOT EXISTS "
                                                                         b"public._prisma_migrations")
    execute(staging_url, "CREATE TABLE public._prisma_migrations (id varchar(36), migration_name varchar(255) NOT NULL,"
                         " finished_at timestamptz, applied_steps_count int NOT NULL DEFAULT 0, logs text); "
                         "INSERT INTO public._prisma_migrations (id, migration_name) VALUES ('mine', 'mine')")
    settings = settings_for(tmp_path)
    bad = rewrite(lottery.path, tmp_path / "backup_noclean.sql.gz",
                  lambda t: no_clean(t.replace(b"DROP TABLE IF EXISTS public._prisma_migrations;\n", b"")))
    before = state(staging_url)
    with pytest.raises(restorer.RestoreFailed) as caught:
        restorer.restore(settings, target(settings, staging_url), bad)
    assert "_prisma_migrations holds 3 rows, the backup has 2" in str(caught.value)
    assert state(staging_url) == before


# -- the stream, psql and the session ---------------------------------------------------------------------------------
def test_a_stream_that_fails_kills_psql_and_nothing_is_committed(staging_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | pg.env_for(staging_url)

    def chunks():
        yield b"CREATE TABLE public.half (a int);\nCOPY public.half (a) FROM stdin;\n1\n2\n"
        raise VerificationFailed("the gzip stream is truncated")

    result = restorer.LocalPsql(env).run(chunks())
    assert result.aborted and not result.committed and "truncated" in result.reason
    assert "public.half" not in counts(staging_url)


def test_ctrl_c_while_streaming_kills_psql_and_is_raised(staging_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | pg.env_for(staging_url)

    def chunks():
        yield b"CREATE TABLE public.half (a int);\n"
        raise KeyboardInterrupt

    runner = restorer.LocalPsql(env)
    with pytest.raises(KeyboardInterrupt):
        runner.run(chunks())
    assert runner.commit_sent is False                 # the caller may say: rolled back, nothing changed
    assert "public.half" not in counts(staging_url)


def test_ctrl_c_after_commit_was_written_says_so(staging_url):
    """SIGINT while psql still works on what it was sent (COMMIT already in its input): psql is killed, the
    KeyboardInterrupt is raised, and `commit_sent` tells the caller the outcome was not read."""
    import signal
    import threading

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | pg.env_for(staging_url)
    runner = restorer.LocalPsql(env)
    timer = threading.Timer(1.0, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run([b"CREATE TABLE public.late (a int);\nSELECT pg_sleep(30);\n"])
    finally:
        timer.cancel()
    assert runner.commit_sent is True
    assert "public.late" not in counts(staging_url)     # here psql died in pg_sleep, before it reached COMMIT


def test_ctrl_c_in_the_stream_is_a_restore_interrupted_with_nothing_changed(lottery, restored_staging, tmp_path):
    before = state(restored_staging)
    settings = settings_for(tmp_path)

    def progress(done):
        if done > 20_000:                             # well past BEGIN and the first DROP TABLEs
            raise KeyboardInterrupt

    with pytest.raises(restorer.RestoreInterrupted) as caught:
        restorer.restore(settings, target(settings, restored_staging), lottery.path, progress=progress)
    err = caught.value
    assert err.committed is False and err.exit_code == 130
    assert "interrupted (Ctrl-C) before COMMIT" in err.message and "exactly as before" in err.message
    assert err.result.step("restore").outcome == "failed" and "not restored" in err.result.summary
    assert state(restored_staging) == before


def test_ctrl_c_once_commit_was_sent_is_unknown_not_rolled_back(lottery, restored_staging, tmp_path):
    """A runner interrupted after it sent COMMIT (a test double of the Runner protocol): the engine says unknown."""
    class InterruptedAfterCommit:
        commit_sent = False

        def run(self, chunks):
            for _ in chunks:
                pass
            self.commit_sent = True
            raise KeyboardInterrupt

    settings = settings_for(tmp_path)
    with pytest.raises(restorer.RestoreInterrupted) as caught:
        restorer.restore(settings, target(settings, restored_staging), lottery.path, runner=InterruptedAfterCommit())
    assert caught.value.committed is None and "never half" in caught.value.message
    assert "inv restore.check" in caught.value.hint and "outcome unknown" in caught.value.result.summary


@pytest.fixture(scope="module")
def big_backup(lottery, pg_server, tmp_path_factory):
    """The lottery backup plus a 500,000-row table whose COPY comes after every lottery table's: a Ctrl-C can land
    in it after the backup's DROP TABLEs of every lottery table ran in the transaction."""
    name = f"big_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    source, tmp = pg_server.url(name), tmp_path_factory.mktemp("big")
    try:
        settings = settings_for(tmp)
        restorer.restore(settings, target(settings, source), lottery.path)
        execute(source, "CREATE TABLE public.zz_big (id int, note text); INSERT INTO public.zz_big "
                        "SELECT i, repeat('x', 100) || i FROM generate_series(1, 500000) i")
        dump = subprocess.run(["pg_dump", "-w", *FLAGS], env=pg.tool_env(source, os.environ), capture_output=True,
                              check=True, timeout=300).stdout
        assert dump.index(b"COPY public.zz_big") > dump.index(b'COPY public."Ticket"')
        big = tmp / "backup_20250103_020000.sql.gz"
        big.write_bytes(gzip.compress(dump, 1))
        yield big
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def sigint_in_big_copy(args: list[str], env: dict[str, str], tmp_path: Path, watch_url: str,
                       database: str) -> tuple[int, str, str]:
    """Run `inv ARGS` and send it SIGINT (a real Ctrl-C) once our psql is in the big table's COPY in a database
    named like `database` (polled, not timed). Returns the exit status, stdout and stderr."""
    import signal
    import time

    argv, full = inv_command(args, env, tmp_path)
    proc = subprocess.Popen(argv, env=full, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with psycopg.connect(watch_url, autocommit=True) as watch:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if watch.execute("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s AND state = 'active' "
                                 "AND query LIKE %s AND datname LIKE %s",
                                 ("lottery-ops restore %", "COPY public.zz_big%", database)).fetchone():
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the restore never reached the big table's COPY")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def test_sigint_to_restore_staging_mid_stream_leaves_staging_exactly_as_before(big_backup, restored_staging, tmp_path):
    """A real Ctrl-C (SIGINT to `inv restore.staging`) while psql is in the middle of a big backup's COPY, after the
    backup's DROP TABLEs of every lottery table ran in the transaction: psql is killed before COMMIT, the server
    rolls back, staging is unchanged (counts and checksums), the exit status is 130 and the message says so."""
    before = state(restored_staging)
    dbname = conninfo_to_dict(restored_staging)["dbname"]
    code, out, err = sigint_in_big_copy(["restore.staging", "--file", str(big_backup), "--yes"],
                                        {"STAGING_DATABASE_URL": restored_staging}, tmp_path, restored_staging, dbname)
    assert code == 130, out + err
    assert "interrupted (Ctrl-C) before COMMIT" in err and "rolled the transaction back" in err
    assert f"{dbname} is exactly as before" in err
    assert "Traceback" not in err
    assert state(restored_staging) == before
    entry = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert entry["action"] == "restore.staging" and entry["outcome"] == "failed"
    assert entry["details"]["problems"] == ["interrupted (Ctrl-C) before COMMIT"]


def test_sigint_to_restore_test_drops_the_scratch_database_then_exits_130(big_backup, staging_url, pg_server,
                                                                          tmp_path):
    """A real Ctrl-C to `inv restore.test` mid-COPY: the rehearsal reports the interruption as its failure, drops
    its scratch database, records the outcome, and only then ends with the interruption's exit status, 130."""
    code, out, err = sigint_in_big_copy(["restore.test", "--file", str(big_backup)],
                                        {"STAGING_DATABASE_URL": staging_url}, tmp_path, pg_server.admin_url,
                                        "ops_scratch_%")
    assert code == 130, out + err
    assert "FAILED" in out and "interrupted (Ctrl-C) before COMMIT" in out
    assert "restore rehearsal failed" in err and "interrupted (Ctrl-C) before COMMIT" in err
    assert "the scratch database was dropped" in err and "Traceback" not in err
    entry = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert entry["action"] == "restore.test" and entry["outcome"] == "fail"
    assert entry["details"]["problems"] == ["interrupted (Ctrl-C) before COMMIT"]
    with psycopg.connect(pg_server.admin_url) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (entry["details"]["scratch"],)).fetchone() is None


def test_psql_never_gets_single_transaction(staging_url):
    with pytest.raises(ConfigError, match="single-transaction"):
        restorer.LocalPsql({}, args=["--single-transaction"])


def test_a_lock_held_elsewhere_times_out_and_the_blocker_is_named(lottery, restored_staging, tmp_path):
    before = state(restored_staging)
    settings = settings_for(tmp_path, lock_timeout="1s")
    with psycopg.connect(restored_staging, application_name="report-writer") as blocker:
        blocker.execute('LOCK TABLE public."Ticket" IN ACCESS SHARE MODE')
        pid = blocker.info.backend_pid
        with pytest.raises(restorer.RestoreFailed) as caught:
            restorer.restore(settings, target(settings, restored_staging), lottery.path)
    message = str(caught.value)
    assert "lock" in message and f"pid {pid}" in message and "report-writer" in message
    assert "pg_terminate_backend" in (caught.value.hint or "")
    assert any(f"pid {pid}" in b for b in caught.value.result.blockers)
    assert state(restored_staging) == before


def test_two_restores_of_one_database_cannot_overlap(lottery, restored_staging, tmp_path):
    before = state(restored_staging)
    settings = settings_for(tmp_path)
    dbname = conninfo_to_dict(restored_staging)["dbname"]
    with psycopg.connect(restored_staging, autocommit=True) as other:   # what a running restore holds
        other.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (restoresql.ADVISORY_KEY, dbname))
        with pytest.raises(restorer.RestoreFailed, match="another restore"):
            restorer.restore(settings, target(settings, restored_staging), lottery.path)
    assert state(restored_staging) == before


def test_dry_run_runs_every_check_and_sends_nothing(lottery, restored_staging, tmp_path):
    before = state(restored_staging)
    settings = settings_for(tmp_path)
    result = restorer.restore(settings, target(settings, restored_staging), lottery.path, dry_run=True)
    assert result.dry_run and result.psql is None and result.tables == lottery.counts
    assert [s.name for s in result.steps] == ["preflight", "check", "filter", "restore"]
    assert result.step("restore").outcome == "planned"
    assert state(restored_staging) == before


def test_production_mode_refuses_what_it_would_have_to_leave_out(make_db, tmp_path):
    url = make_db("supa")
    path = tmp_path / "backup.sql.gz"
    path.write_bytes(gzip.compress(ds.supabase_dump(), 9))
    execute(url, "CREATE TABLE public.sentinel (v int); INSERT INTO public.sentinel VALUES (1)")
    settings = settings_for(tmp_path)
    with pytest.raises(restorer.RestoreFailed, match="cannot be restored here"):   # policies' roles are missing
        restorer.restore(settings, target(settings, url), path, production=True)
    assert counts(url) == {"public.sentinel": 1}


# -- a backup must not be able to run anything ----------------------------------------------------------------------------
INJECTIONS = {
    "shell-line": "\\! touch {marker}",
    "shell-mid-line": "SELECT 1; \\! touch {marker}",
    "unrestrict-backquote": "\\unrestrict `touch {marker}`",
    "copy-program": "COPY public.t (a) FROM PROGRAM 'touch {marker}';",
    "copy-to-program": "COPY public.t TO PROGRAM 'touch {marker}';",
    "meta-copy-program": "\\copy public.t from program 'touch {marker}'",
    "output-pipe": "\\o |touch {marker}",
    "lo-import": "SELECT pg_catalog.lo_import('/etc/hostname');",
    "read-file": "SELECT pg_catalog.pg_read_file('/etc/hostname');",
    "function-with-program": "CREATE FUNCTION public.f() RETURNS void LANGUAGE plpgsql AS $$BEGIN "
                             "EXECUTE 'COPY public.t FROM PROGRAM ''touch {marker}'''; END$$;\nSELECT public.f();",
}


@pytest.mark.parametrize("kind", sorted(INJECTIONS))
def test_injected_backups_are_refused_and_nothing_runs(kind, staging_url, tmp_path):
    marker = Path("/tmp") / f"ops-pwned-{secrets.token_hex(6)}"
    bad = INJECTIONS[kind].format(marker=marker)
    dump = ds.dump(ds.entry("t", "TABLE", "CREATE TABLE public.t (a integer);"),
                   ds.data("t", "a", ["1", "2"]), ds.entry("f", "FUNCTION", bad))
    path = tmp_path / "backup_tampered.sql.gz"
    path.write_bytes(gzip.compress(dump))
    execute(staging_url, "CREATE TABLE public.sentinel (v int); INSERT INTO public.sentinel VALUES (1)")
    settings = settings_for(tmp_path)
    try:
        with pytest.raises(restorer.RestoreFailed) as caught:
            restorer.restore(settings, target(settings, staging_url), path)
        assert "refused" in str(caught.value) and not caught.value.committed
        assert not marker.exists()
        assert counts(staging_url) == {"public.sentinel": 1}
    finally:
        marker.unlink(missing_ok=True)


# -- the tasks --------------------------------------------------------------------------------------------------------
def test_staging_task_restores_checks_and_records(lottery, staging_url, tmp_path):
    out = inv(["restore.staging", "--file", str(lottery.path), "--yes"],
              {"STAGING_DATABASE_URL": with_password(staging_url, "s3cret-pw")}, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "committed" in out.stdout and "compared before COMMIT" in out.stdout
    assert "s3cret-pw" not in out.stdout + out.stderr
    assert counts(staging_url) == lottery.counts
    entry = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert entry["action"] == "restore.staging" and entry["outcome"] == "ok"
    assert entry["details"]["tables"] == lottery.counts


def test_staging_task_refuses_production_with_exit_3_and_touches_nothing(lottery, production_url, tmp_path):
    execute(production_url, "CREATE TABLE public.sentinel (v int); INSERT INTO public.sentinel VALUES (1)")
    out = inv(["restore.staging", "--file", str(lottery.path), "--yes"],
              {"STAGING_DATABASE_URL": production_url}, tmp_path)
    assert out.returncode == 3, out.stderr
    assert "production" in out.stderr
    assert counts(production_url) == {"public.sentinel": 1}


def test_staging_task_refuses_the_database_url_itself(lottery, staging_url, tmp_path):
    execute(staging_url, "CREATE TABLE public.sentinel (v int)")
    out = inv(["restore.staging", "--file", str(lottery.path), "--yes", "--dry-run"],
              {"STAGING_DATABASE_URL": staging_url, "DATABASE_URL": staging_url}, tmp_path)
    assert out.returncode == 3
    assert counts(staging_url) == {"public.sentinel": 0}


def test_staging_dry_run_prints_the_plan_and_changes_nothing(lottery, restored_staging, tmp_path):
    before = state(restored_staging)
    out = inv(["restore.staging", "--file", str(lottery.path), "--dry-run"],
              {"STAGING_DATABASE_URL": with_password(restored_staging, "pw-in-url")}, tmp_path)
    assert out.returncode == 0, out.stderr
    for expected in ("dry run", "public.Ticket", "3,000", "verdict: not production", lottery.path.name, "sha256"):
        assert expected in out.stdout
    assert "pw-in-url" not in out.stdout + out.stderr and ":***@" in out.stdout
    assert state(restored_staging) == before


def test_staging_asks_for_confirmation_and_a_non_terminal_cannot_give_it(lottery, restored_staging, tmp_path):
    before = state(restored_staging)
    out = inv(["restore.staging", "--file", str(lottery.path)], {"STAGING_DATABASE_URL": restored_staging}, tmp_path)
    assert out.returncode == 3
    assert lottery.path.name in out.stderr and conninfo_to_dict(restored_staging)["dbname"] in out.stderr
    assert "--yes" in out.stderr
    assert state(restored_staging) == before


def _ctx(tmp_path: Path, **ops) -> Context:
    base = {"audit_log": str(tmp_path / "audit.jsonl"), **ops}
    return Context(Config(overrides={"ops": base}))


def test_missing_psql_is_a_clear_error_before_any_download(fake_api, tmp_path, monkeypatch, staging_url):
    fake_api.github.add_backup("backup-20250101_020000", b"not used")
    monkeypatch.setenv("STAGING_DATABASE_URL", staging_url)
    monkeypatch.setenv("GITHUB_TOKEN", fake_api.github.token)
    c = _ctx(tmp_path, **fake_api.settings_ops(), restore={"psql": str(tmp_path / "no" / "psql")})
    with pytest.raises(Exit) as caught:
        restore.staging(c, yes=True)
    assert "psql is not installed" in str(caught.value.message) and "apt install postgresql-client" in \
        str(caught.value.message)
    assert not fake_api.calls(path=r"/releases")


def test_too_old_psql_names_the_versions(tmp_path, monkeypatch, staging_url):
    old = tmp_path / "psql"
    old.write_text("#!/bin/sh\necho 'psql (PostgreSQL) 12.3'\n")
    old.chmod(old.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("STAGING_DATABASE_URL", staging_url)
    with pytest.raises(Exit) as caught:
        restore.staging(_ctx(tmp_path, restore={"psql": str(old)}), file=str(tmp_path / "x.sql.gz"), yes=True)
    assert "12.3" in str(caught.value.message) and "13.0 or newer" in str(caught.value.message)


def test_verify_task_json(lottery, tmp_path):
    out = inv(["restore.verify", str(lottery.path), "--json"], {}, tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["problems"] == [] and report["tables"] == lottery.counts
    assert report["pg_dump_version"] and report["server_version"]


def test_verify_task_fails_on_a_damaged_backup(lottery, tmp_path):
    out = inv(["restore.verify", str(_damage("no-footer", lottery.path, tmp_path))], {}, tmp_path)
    assert out.returncode == 1 and "footer" in out.stderr and "hint:" in out.stderr


def test_extract_writes_the_sql_and_refuses_a_damaged_gzip(lottery, tmp_path):
    dest = restorer.extract(lottery.path, tmp_path / "out.sql")
    assert dest.read_bytes() == gzip.decompress(lottery.path.read_bytes())
    bad = _damage("truncated-gzip", lottery.path, tmp_path)
    with pytest.raises(VerificationFailed):
        restorer.extract(bad, tmp_path / "bad.sql")
    assert not (tmp_path / "bad.sql").exists() and not (tmp_path / "bad.sql.part").exists()


def test_check_compares_counts_ignores_other_tables_and_runs_recent_queries(lottery, restored_staging, tmp_path):
    recent = [{"table": '"User"', "column": '"createdAt"'}, {"table": 'public."Transaction"', "column": '"createdAt"'}]
    good = restore.check_database(restored_staging, lottery.counts, ("public",), recent)
    assert good.ok, good.problems
    assert "public.staging_only" not in good.tables
    assert good.recent[0]["rows"] == 300 and good.recent[0]["newest"].startswith("2025-01-03")
    execute(restored_staging, 'DELETE FROM "Transaction" WHERE id = 1')
    bad = restore.check_database(restored_staging, lottery.counts, ("public",),
                                 recent + [{"table": '"Missing"', "column": "id"}])
    assert any("Transaction_2025" in p for p in bad.problems)
    assert any("no table" in p for p in bad.problems)
    out = inv(["restore.check", "--backup", str(lottery.path)], {"STAGING_DATABASE_URL": restored_staging}, tmp_path)
    assert out.returncode == 1 and "MISMATCH" in out.stdout


def test_rehearsal_restores_into_a_scratch_database_drops_it_and_records_the_result(lottery, staging_url, tmp_path,
                                                                                      pg_server):
    from ops import audit, emergency_plan

    settings = settings_for(tmp_path, env={"STAGING_DATABASE_URL": staging_url})
    got = restore.rehearse(settings, lottery.path, tag="backup-20250101_020000")
    assert got.passed, got.summary
    assert got.tables == lottery.counts
    sha = restorer_sha(lottery.path)
    failing = rewrite(lottery.path, tmp_path / "backup_bad.sql.gz",
                      lambda t: t.replace(b"-- Data for Name: User;", b"SELECT pg_catalog.setval('public.nope', 1, "
                                                                       b"false);\n\n-- Data for Name: User;", 1))
    bad = restore.rehearse(settings, failing)
    assert not bad.passed and "nope" in bad.summary
    with psycopg.connect(pg_server.admin_url) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'ops_scratch_%'").fetchall()
    assert left == []
    entries = [e for e in audit.entries(settings) if e["action"] == "restore.test"]
    assert [e["outcome"] for e in entries] == ["pass", "fail"]
    assert entries[0]["details"]["sha256"] == sha and entries[0]["details"]["tables"] == lottery.counts
    assert entries[0]["details"]["tag"] == "backup-20250101_020000" and entries[0]["details"]["duration_s"] > 0
    assert emergency_plan.rehearsal_on_record(entries, sha) == entries[0]     # what emergency.restore looks for
    assert emergency_plan.rehearsal_on_record(entries, restorer_sha(failing)) is None


def restorer_sha(path: Path) -> str:
    from ops import download

    return download.sha256_file(path)


# -- pure pieces -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, ms", [("30s", 30000), ("500ms", 500), ("2min", 120000), ("1h", 3600000), ("0", 0),
                                      (" 1.5s ", 1500)])
def test_parse_duration(text, ms):
    assert restoresql.parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["30 seconds", "1;DROP", "", "-1s"])
def test_parse_duration_refuses_anything_else(bad):
    with pytest.raises(ConfigError):
        restoresql.parse_duration_ms(bad)


def test_count_check_quotes_every_name():
    text = restoresql.count_check_sql({"public.User": 3, f"public.{WEIRD}": 1, "my schema.t": 0}).decode()
    assert "('public', 'we\"ird''Name', 1)" in text and "('my schema', 't', 0)" in text
    assert restoresql.count_check_sql({}) == b""


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_preamble_editor_rewrites_lock_timeout_only_before_the_first_entry(size):
    text = (ds.header() + ds.PRELUDE + ds.entry("t", "TABLE", "CREATE TABLE public.t (a text);")
            + ds.data("t", "a", ["SET lock_timeout = 0;"]) + ds.footer()).encode()
    editor = restoresql.PreambleEditor(1500)
    out = b"".join(editor.feed(text[i:i + size]) for i in range(0, len(text), size)) + editor.flush()
    assert out.count(b"SET lock_timeout = 1500;\n") == 1
    assert out.replace(b"SET lock_timeout = 1500;\n", b"SET lock_timeout = 0;\n", 1) == text


@pytest.mark.parametrize("tail, ok", [
    (b"x\n--\n-- PostgreSQL database dump complete\n--\n\n", True),
    (b"--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n\n", True),
    (b"--\n-- PostgreSQL database dump complete\n--\n\nSELECT 1;\n", False),
    (b"COPY x\n", False),
    (b"", False),
])
def test_ends_with_footer(tail, ok):
    assert restoresql.ends_with_footer(tail) is ok


@pytest.mark.parametrize("given, expected", [(None, None), ("a,b", ("a", "b")), ("all", None), (["all"], None),
                                             (["auth", "public"], ("auth", "public")), ("a, a", ("a",))])
def test_normalise_schemas(given, expected):
    assert restoresql.normalise_schemas(given) == expected


@pytest.mark.parametrize("flag, configured, expected", [
    (None, None, ("public",)), (None, ["app", "public"], ("app", "public")), ("all", ["app"], None),
    ("x", ["app"], ("x",)), (restorer.CONFIGURED, ["app"], ("app",))])
def test_scope_from_flag_and_config(flag, configured, expected):
    settings = Settings.from_dict(ops={"restore": {"schemas": configured}} if configured else {})
    assert restorer.configured_scope(settings, flag) == expected


@pytest.mark.parametrize("text, parts", [('"User"', ("User",)), ('public."User"', ("public", "User")),
                                         ("Users", ("users",)), ('"a""b"', ('a"b',)), (' s . "T" ', ("s", "T"))])
def test_parse_identifier(text, parts):
    assert restoresql.parse_identifier(text) == parts


@pytest.mark.parametrize("bad", ['"User', "a.b.c", "1abc", "x; drop", ""])
def test_parse_identifier_refuses(bad):
    with pytest.raises(ConfigError):
        restoresql.parse_identifier(bad)


def test_psql_errors_keeps_error_lines():
    stderr = ("psql:<stdin>:12: ERROR:  relation \"x\" does not exist\nLINE 1: ...\nNOTICE: skipping\n"
              "psql:<stdin>:30: error: invalid command \\restrict\n")
    assert restoresql.psql_errors(stderr) == ['ERROR:  relation "x" does not exist', "error: invalid command \\restrict"]


def test_recent_checks_build_the_queries_and_judge_the_answers():
    """The pure part of the recent-data checks, run by a stand-in for the database that answers from a table."""
    class Refused(Exception):
        pass

    asked = []

    def one(query, params):
        asked.append((query, params))
        if query == restoresql.RECENT_TABLE_SQL:
            return [{'"User"': '"User"', '"Empty"': '"Empty"'}.get(params[0])]
        if '"nope"' in query:
            raise Refused('column "nope" does not exist')
        if '"Boom"' in query:
            raise RuntimeError("the link dropped")
        return (0, None) if '"Empty"' in query else (3, "2025-01-03")

    entries = [{"table": '"User"', "column": '"createdAt"'}, {"table": "missing", "column": "x"},
               {"table": '"User"', "column": "nope"}, {"table": '"Empty"', "column": "id"},
               {"table": "not a name!", "column": "x"}]
    got = restoresql.recent_checks(entries, one, lambda exc: str(exc) if isinstance(exc, Refused) else None)
    assert got == [{"table": '"User"', "column": '"createdAt"', "rows": 3, "newest": "2025-01-03"},
                   {"table": "missing", "column": "x", "error": "no table missing"},
                   {"table": '"User"', "column": "nope", "error": 'column "nope" does not exist'},
                   {"table": '"Empty"', "column": "id", "rows": 0, "newest": None, "error": '"Empty" has no rows'},
                   {"table": "not a name!", "column": "x", "error": restoresql.RECENT_SHAPE_ERROR}]
    assert ('SELECT count(*), max("createdAt")::text FROM "User"', None) in asked
    assert (restoresql.RECENT_TABLE_SQL, ['"missing"']) in asked
    assert restoresql.recent_checks(None, one, lambda exc: None) == []
    with pytest.raises(RuntimeError):       # not a refusal: it propagates
        restoresql.recent_checks([{"table": '"User"', "column": '"Boom"'}], one, lambda exc: None)


def test_missing_on_target_lists_what_the_backup_needs():
    caps = restorer.Capabilities("psql", (15, 20), 150020, "app", False, frozenset({"app"}),
                                 frozenset({"plpgsql", "pgcrypto"}), frozenset())
    need = {"extensions": ["pgcrypto", "pg_net"], "roles": ["anon"], "event_triggers": ["t"], "publications": []}
    missing = restorer.missing_on_target(need, caps)
    assert missing == ["extensions not available on the target: pg_net",
                       "roles named in policies that do not exist on the target: anon",
                       "event triggers need a superuser (app is not): t"]


def test_estimated_size_reads_the_gzip_trailer(tmp_path):
    data = b"x" * 100_000
    path = tmp_path / "a.sql.gz"
    path.write_bytes(gzip.compress(data))
    assert restorer.estimated_size(path) == 100_000


def test_result_summary_and_failure(tmp_path):
    r = restorer.RestoreResult(target="postgresql://u@h/db", backup="b.sql.gz", problems=["boom"])
    assert "unchanged" in r.summary and not r.ok
    with pytest.raises(VerificationFailed, match="boom"):
        r.raise_for_failure()


# -- the same engine through psql on a bastion (the --via building block) ---------------------------------------------
@pytest.mark.usefixtures("no_ssh_config")
@pytest.mark.parametrize("fail", [False, True], ids=["commits", "fails-mid-dump-unchanged"])
def test_the_engine_streams_through_a_remote_psql_over_ssh(fail, lottery, restored_staging, sshd, tmp_path):
    from ops import remote
    from ops.remote_psql import RemotePsql

    settings = settings_for(tmp_path)
    t = target(settings, restored_staging)
    backup = lottery.path
    if fail:
        backup = rewrite(lottery.path, tmp_path / "backup_fails.sql.gz", lambda text: text.replace(
            b"-- Data for Name: User;", b"SELECT pg_catalog.setval('public.gone', 1, false);\n\n-- Data for Name: User;"))
    execute(restored_staging, 'DELETE FROM "Ticket" WHERE id % 3 = 0')
    before = state(restored_staging)
    ssh = Settings.from_dict(ops=sshd.settings_ops(known_hosts=tmp_path / "known_hosts"))
    with remote.connect(ssh, "box") as cxn:
        runner = RemotePsql(cxn, {**t.env, "PGAPPNAME": "lottery-ops restore via"})
        result = restorer.restore_stream(t, restorer.plan_from_settings(settings, backup), runner=runner)
    if fail:
        assert not result.committed and any("gone" in p for p in result.problems)
        assert state(restored_staging) == before
    else:
        assert result.committed, result.problems
        assert counts(restored_staging) == {**lottery.counts, "public.staging_only": 1}


# -- from a release: download -> verify -> guard -> restore -> check ------------------------------------------------
def test_staging_from_the_latest_release(lottery, staging_url, production_url, fake_api, tmp_path, monkeypatch,
                                         capsys):
    fake_api.github.add_backup("backup-20250101_020000", b"an older backup, never fetched")
    fake_api.github.add_backup("backup-20250102_020000", lottery.path.read_bytes())
    monkeypatch.setenv("GITHUB_TOKEN", fake_api.github.token)
    ops = {**fake_api.settings_ops(), "restore": {"backup_dir": str(tmp_path / "backups")},
           "verify": {"recent": [{"table": '"User"', "column": '"createdAt"'}]}}
    monkeypatch.setenv("STAGING_DATABASE_URL", production_url)
    with pytest.raises(Exit) as refused:                      # the guard first: nothing downloaded for production
        restore.staging(_ctx(tmp_path, **ops), yes=True)
    assert refused.value.code == 3 and not fake_api.calls(path=r"/releases")
    monkeypatch.setenv("STAGING_DATABASE_URL", staging_url)
    restore.staging(_ctx(tmp_path, **ops), yes=True)
    out = capsys.readouterr().out
    assert "committed" in out and "newest 2025-01-03" in out
    assert counts(staging_url) == lottery.counts
    got = tmp_path / "backups" / "backup_20250102_020000.sql.gz"
    assert got.read_bytes() == lottery.path.read_bytes() and (tmp_path / "backups" / (got.name + ".sha256")).exists()
    entry = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert entry["details"]["tag"] == "backup-20250102_020000"
    assert entry["details"]["sha256"] == restorer_sha(lottery.path)


def test_restore_test_task_from_a_release_records_the_tag(lottery, staging_url, fake_api, tmp_path, monkeypatch):
    from ops import audit

    fake_api.github.add_backup("backup-20250102_020000", lottery.path.read_bytes())
    monkeypatch.setenv("GITHUB_TOKEN", fake_api.github.token)
    monkeypatch.setenv("STAGING_DATABASE_URL", staging_url)
    c = _ctx(tmp_path, **fake_api.settings_ops(), restore={"backup_dir": str(tmp_path / "b")})
    restore.test(c, tag="backup-20250102_020000")
    [entry] = [e for e in audit.entries(settings_for(tmp_path)) if e["action"] == "restore.test"]
    assert entry["outcome"] == "pass" and entry["details"]["tag"] == "backup-20250102_020000"
