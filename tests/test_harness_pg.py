"""ops.pg against a real PostgreSQL server, and the database fixtures themselves."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys

import psycopg
import pytest

from ops import pg
from ops.errors import ConfigError, ServiceError
from tests.fix_pg import ROOT, Cluster, free_port, unavailable


def names_on(server_url: str) -> set[str]:
    with psycopg.connect(server_url) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture
def must_be_gone_after(pg_server):
    """Names of databases that must not exist once the test's other fixtures are torn down (set up first, so
    torn down last)."""
    names: set[str] = set()
    yield names
    assert not names & names_on(pg_server.admin_url), "make_db left databases behind"


def test_make_db_gives_fresh_databases_that_are_dropped_after(must_be_gone_after, pg_server, make_db):
    first, second = make_db(), make_db("other")
    assert first != second
    with psycopg.connect(first) as conn:
        assert conn.info.dbname.startswith("t_")
        in_public = "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        assert conn.execute(in_public).fetchone() == (0,)
    psycopg.connect(second)  # left open on purpose: the drop must not wait for it
    created = {psycopg.conninfo.conninfo_to_dict(u)["dbname"] for u in (first, second)}
    assert created <= names_on(pg_server.admin_url)
    must_be_gone_after.update(created)


def test_staging_and_production_are_two_databases_on_one_server(staging_url, production_url):
    staging = psycopg.conninfo.conninfo_to_dict(staging_url)
    production = psycopg.conninfo.conninfo_to_dict(production_url)
    assert staging["dbname"].startswith("staging_") and production["dbname"].startswith("production_")
    assert (staging["host"], staging["port"]) == (production["host"], production["port"])
    for url in (staging_url, production_url):
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE t (id int)")  # writable, independent databases


def test_secrets_and_libpq_defaults_are_kept_out_of_tests(tmp_path):
    """Run a test session whose environment is full of leaks; inside a test, none may be seen."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.fix_pg"]\n')
    (tmp_path / "test_inner.py").write_text(
        "import os\n"
        "def test_inner():\n"
        "    assert os.environ['KEEP_ME'] == 'yes'\n"
        "    assert [k for k in os.environ if k.startswith(('PG', 'INVOKE_')) or k.endswith(('_TOKEN', '_KEY', "
        "'DATABASE_URL', 'proxy', 'PROXY'))] == []\n")
    leaks = {"PGHOST": "prod.example", "PGPASSWORD": "pw", "PGSERVICE": "prod", "DATABASE_URL": "postgresql://prod",
             "STAGING_DATABASE_URL": "postgresql://s", "GITHUB_TOKEN": "ghp_x", "RENDER_API_KEY": "rnd_x",
             "SENTRY_AUTH_TOKEN": "s", "https_proxy": "http://proxy:3128", "HTTP_PROXY": "http://proxy:3128",
             "INVOKE_OPS_GITHUB_REPO": "someone/else", "KEEP_ME": "yes"}
    inherited = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("OPS_TEST_")}
    env = inherited | leaks | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout


# -- connections ---------------------------------------------------------------------------------------------------
def test_server_version_matches_the_server(pg_server):
    number = pg.server_version(pg_server.admin_url)
    assert number == pg_server.version
    assert pg.version_tuple(number)[0] == pg_server.major >= 13


@pytest.mark.parametrize(("number", "expected"), [(150018, (15, 18)), (170006, (17, 6)), (90624, (9, 6))],
                         ids=["15.18", "17.6", "9.6.24"])
def test_version_tuple(number, expected):
    assert pg.version_tuple(number) == expected


def test_unreachable_server_is_a_service_error_without_the_password():
    port = free_port()  # nothing listens there
    url = f"postgresql://app:s3cr%40tPassw0rd@127.0.0.1:{port}/appdb"
    with pytest.raises(ServiceError) as info:
        pg.connect(url, connect_timeout=3)
    text = str(info.value)
    assert "s3cr" not in text and "Passw0rd" not in text
    assert f"127.0.0.1:{port}" in text and "app:***@" in text
    assert info.value.hint and "running" in info.value.hint


def test_wrong_database_name_gets_a_hint_naming_the_database(pg_server):
    with pytest.raises(ServiceError) as info:
        pg.connect(pg_server.url("no_such_db_here"))
    assert "no_such_db_here" in str(info.value)
    assert "database name" in info.value.hint


# -- databases -----------------------------------------------------------------------------------------------------
def test_create_and_drop_database_with_an_awkward_name(pg_server):
    name = 'Ops "Scratch"; DROP TABLE x'
    admin = pg_server.admin_url
    assert not pg.database_exists(admin, name)
    stmt = pg.create_database(admin, name)
    try:
        assert stmt == 'CREATE DATABASE "Ops ""Scratch""; DROP TABLE x"'
        assert pg.database_exists(admin, name)
        assert name in names_on(admin)
    finally:
        holder = psycopg.connect(pg_server.url(name))  # an open session must not block the drop
        dropped = pg.drop_database(admin, name)
    assert dropped.endswith("WITH (FORCE)")
    assert not pg.database_exists(admin, name)
    assert holder.closed or holder.broken or _session_dead(holder)
    holder.close()


def _session_dead(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_dry_run_changes_nothing(pg_server):
    name = "ops_scratch_dry"
    assert pg.create_database(pg_server.admin_url, name, dry_run=True) == 'CREATE DATABASE "ops_scratch_dry"'
    assert not pg.database_exists(pg_server.admin_url, name)
    assert pg.drop_database(pg_server.admin_url, "postgres", dry_run=True).startswith("DROP DATABASE IF EXISTS")
    assert pg.database_exists(pg_server.admin_url, "postgres")


def test_create_existing_database_is_a_service_error(pg_server, make_db):
    url = make_db()
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with pytest.raises(ServiceError, match="already exists"):
        pg.create_database(pg_server.admin_url, name)


# -- table counts --------------------------------------------------------------------------------------------------
SCHEMA = """
CREATE TABLE "User" (id serial PRIMARY KEY, "createdAt" timestamptz DEFAULT now());
CREATE TABLE lottery (id int);
CREATE SCHEMA "Audit";
CREATE TABLE "Audit"."Event Log" (id int);
CREATE TABLE "Audit"."we.ird""name" (id int);
CREATE TABLE ticket (id int, drawn date) PARTITION BY RANGE (drawn);
CREATE TABLE ticket_2024 PARTITION OF ticket FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE ticket_2025 PARTITION OF ticket FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE VIEW recent AS SELECT * FROM "User";
CREATE MATERIALIZED VIEW counted AS SELECT count(*) FROM lottery;
CREATE TEMP TABLE scratch (id int);
INSERT INTO "User" DEFAULT VALUES; INSERT INTO "User" DEFAULT VALUES; INSERT INTO "User" DEFAULT VALUES;
INSERT INTO "Audit"."Event Log" SELECT generate_series(1, 5);
INSERT INTO "Audit"."we.ird""name" VALUES (1);
INSERT INTO ticket SELECT i, date '2024-06-01' + i FROM generate_series(0, 299) i;
INSERT INTO scratch VALUES (1);
"""


def test_table_counts_are_exact_and_quote_mixed_case_names(make_db):
    url = make_db()
    with psycopg.connect(url) as conn:
        conn.execute(SCHEMA)
        conn.commit()
        # counts are exact (count(*)), not the planner's estimates, and run in their own session
        assert pg.table_counts(url) == {
            "Audit.Event Log": 5,
            'Audit.we.ird"name': 1,
            "public.User": 3,
            "public.lottery": 0,
            "public.ticket_2024": 214,  # partitions, not the partitioned parent (as pg_dump writes COPY blocks)
            "public.ticket_2025": 86,
        }
    assert pg.table_counts(url, schemas=["Audit"]) == {"Audit.Event Log": 5, 'Audit.we.ird"name': 1}
    assert pg.table_counts(url, schemas=["nope"]) == {}


def test_table_counts_of_an_empty_database(make_db):
    assert pg.table_counts(make_db()) == {}


# -- client tools --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("output", "expected"), [
    ("psql (PostgreSQL) 15.18 (Debian 15.18-1.pgdg120+1)\n", (15, 18)),
    ("pg_dump (PostgreSQL) 17.6\n", (17, 6)),
    ("psql (PostgreSQL) 18beta1\n", (18, 0)),
    ("pg_dump (PostgreSQL) 9.6.24\n", (9, 6)),
    ("bash: psql: command not found", None),
], ids=["debian", "plain", "beta", "old", "garbage"])
def test_parse_tool_version(output, expected):
    assert pg.parse_tool_version(output) == expected


@pytest.mark.parametrize("tool", ["psql", "pg_dump"])
def test_tool_version_matches_the_binary(tool):
    if not shutil.which(tool):
        unavailable(f"{tool} not on PATH")
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = pg.tool_version(tool)
    assert f") {major}.{minor}" in out


def test_find_tool_names_the_versions_and_how_to_install(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    psql = fake_bin / "psql"
    psql.write_text("#!/bin/sh\necho 'psql (PostgreSQL) 15.18 (Debian 15.18-1.pgdg120+1)'\n")
    psql.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    assert pg.find_tool("psql", 15) == str(psql)
    assert pg.tool_version("psql") == (15, 18)
    with pytest.raises(ConfigError) as info:
        pg.find_tool("psql", 17)
    assert "15.18" in info.value.message and "17.0" in info.value.message
    assert "apt install postgresql-client-17" in info.value.hint and "brew install libpq" in info.value.hint
    with pytest.raises(ConfigError, match=r"15\.18, but 16\.3 or newer"):
        pg.find_tool("psql", (16, 3))


def test_find_tool_missing_is_a_config_error():
    with pytest.raises(ConfigError, match="not installed") as info:
        pg.find_tool("pg_dump_no_such_tool", 17)
    assert "postgresql-client-17" in info.value.hint


# -- environment for psql / pg_dump ----------------------------------------------------------------------------------
def test_env_for_carries_every_part_of_the_url():
    env = pg.env_for("postgresql://app:p%40ss@db.example:6543/lottery?sslmode=require&application_name=ops")
    assert env == {"PGHOST": "db.example", "PGPORT": "6543", "PGUSER": "app", "PGPASSWORD": "p@ss",
                   "PGDATABASE": "lottery", "PGSSLMODE": "require", "PGAPPNAME": "ops"}


def test_env_for_refuses_what_it_cannot_pass():
    with pytest.raises(ConfigError, match="replication"):
        pg.env_for({"host": "h", "replication": "database"})
    with pytest.raises(ConfigError) as info:
        pg.env_for("postgresql://app:hunter22@h:5432/db?bogus=1")
    assert "hunter22" not in str(info.value)


def test_tool_env_drops_inherited_pg_variables():
    env = pg.tool_env("host=h dbname=d", {"PATH": "/bin", "PGSERVICE": "prod", "PGHOSTADDR": "10.0.0.1"})
    assert env == {"PATH": "/bin", "PGHOST": "h", "PGDATABASE": "d"}


def test_psql_reaches_the_database_through_the_environment_alone(make_db):
    if not shutil.which("psql"):
        unavailable("psql not on PATH")
    url = make_db()
    argv = pg.psql_argv(command="SELECT current_database()", extra=["-At"])
    assert not any("postgresql://" in a or "@" in a for a in argv)
    out = subprocess.run(argv, env=pg.tool_env(url, os.environ), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == psycopg.conninfo.conninfo_to_dict(url)["dbname"]


# -- the old server ----------------------------------------------------------------------------------------------------
def test_old_pg16_is_postgresql_16_2_with_its_own_client_tools(old_pg16, monkeypatch):
    assert old_pg16.version == 160002 and old_pg16.major == 16
    assert pg.server_version(old_pg16.admin_url) == 160002
    monkeypatch.setenv("PATH", f"{old_pg16.bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert pg.tool_version("psql") == (16, 2) and pg.tool_version("pg_dump") == (16, 2)
    out = subprocess.run(pg.psql_argv(command="SELECT 41 + 1", extra=["-At"]), capture_output=True, text=True,
                         env=pg.tool_env(old_pg16.admin_url, os.environ), check=True)
    assert out.stdout.strip() == "42"


# -- the throwaway cluster (the harness's fallback when OPS_TEST_DATABASE_URL is unset and there is no Docker) ----
def test_throwaway_cluster_starts_on_loopback_and_is_removed(pg_bin_dir):
    cluster = Cluster(pg_bin_dir, label="ops-test-cluster-check")
    try:
        cluster.start()
        server = cluster.server("initdb")
        with psycopg.connect(server.admin_url) as conn:
            settings = dict(conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'listen_addresses')").fetchall())
            owner = conn.execute("SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database "
                                 "WHERE datname = 'postgres'").fetchone()[0]
        assert settings == {"fsync": "off", "listen_addresses": "127.0.0.1"} and owner == "postgres"
        if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster belongs to the postgres user
            assert pwd.getpwuid(cluster.data.stat().st_uid).pw_name == "postgres"
    finally:
        cluster.stop()
    assert not cluster.workdir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.admin_url, connect_timeout=3)
