"""A throwaway PostgreSQL cluster where one role must log in with a password (scram-sha-256).

The shared test server (OPS_TEST_DATABASE_URL, usually trust auth) cannot show that a password really reached
psql: any login works there. This cluster, started for the module that asks for it, trusts only `postgres` and
requires a password from every other role over TCP. Import the fixtures into a test module:

    from tests.fix_pwpg import password_role, pw_server  # noqa: F401

  pw_server       module: PgServer of the cluster (admin_url as postgres, trusted; .url(dbname))
  password_role   function: (url with the password, password) of a fresh role that owns a fresh database;
                  connecting without the password is refused (checked)

No server binaries (initdb, pg_ctl): skipped, except under CI where the run stops (tests/fix_pg.unavailable).
"""
from __future__ import annotations

import secrets
import subprocess

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.fix_pg import Cluster, unavailable

# first match wins: postgres is trusted (the fixtures' admin), every other role needs its password
HBA = """\
local all postgres trust
host  all postgres 127.0.0.1/32 trust
host  all all      127.0.0.1/32 scram-sha-256
"""


@pytest.fixture(scope="module")
def pw_server(pg_bin_dir):
    try:
        cluster = Cluster(pg_bin_dir, label="ops-test-pwpg")
        cluster.init()
        (cluster.data / "pg_hba.conf").write_text(HBA)   # before the first start: never a trusting moment
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"could not start a password-auth cluster with {pg_bin_dir}: {exc}")
    try:
        server = cluster.server("initdb")
        server.warm_up(attempts=5)
        yield server
    finally:
        cluster.stop()


@pytest.fixture
def password_role(pw_server):
    """A role that must log in with a password, and a database it owns: (url with the password, password)."""
    role, password = f"via_{secrets.token_hex(3)}", "Pw-" + secrets.token_urlsafe(12)
    dbname = f"pwdb_{secrets.token_hex(4)}"
    with psycopg.connect(pw_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(role)))
    params = conninfo_to_dict(pw_server.url(dbname)) | {"user": role}
    params.pop("password", None)
    with pytest.raises(psycopg.OperationalError, match="password"):  # the rule is in force
        psycopg.connect(make_conninfo("", **params), connect_timeout=5).close()
    yield make_conninfo("", **params, password=password), password
    with psycopg.connect(pw_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
