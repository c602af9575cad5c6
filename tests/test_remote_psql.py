"""ops.remote_psql against a real sshd on 127.0.0.1 and a real PostgreSQL: the `--via HOST` building block.

The "bastion" is this machine reached over SSH, so its processes are visible in /proc here: that is how the
tests check that the password is on no command line and that an aborted psql is really gone.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ops import pg, remote
from ops.config import Settings
from ops.errors import ConfigError, ServiceError
from ops.remote_psql import RemotePsql, remote_command, tool_command
from tests.fix_pwpg import password_role, pw_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("no_ssh_config")

SOURCE_SQL = r"""
CREATE TABLE public.players (id int PRIMARY KEY, name text NOT NULL, note text);
INSERT INTO public.players SELECT g, 'player ' || g, CASE WHEN g % 7 = 0 THEN E'tab\there\nnewline \\ back' END
  FROM generate_series(1, 5000) g;
CREATE TABLE public.tickets (id bigserial PRIMARY KEY, player_id int REFERENCES public.players, numbers int[]);
INSERT INTO public.tickets (player_id, numbers) SELECT 1 + g % 5000, ARRAY[g % 49, (g * 7) % 49]
  FROM generate_series(1, 20000) g;
CREATE SCHEMA draws;
CREATE TABLE draws.results (drawn_at timestamptz, payload jsonb);
INSERT INTO draws.results SELECT now() - g * interval '1 day', jsonb_build_object('n', g) FROM generate_series(1, 300) g;
"""


@pytest.fixture(scope="module")
def dump(pg_server, tmp_path_factory) -> bytes:
    """A plain pg_dump of a small lottery-shaped database (tabs, newlines and backslashes in COPY data)."""
    name = f"src_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(pg_server.url(name), autocommit=True) as conn:
            conn.execute(SOURCE_SQL)
        env = pg.tool_env(pg_server.url(name), os.environ)
        out = subprocess.run(pg.pg_dump_argv("pg_dump", extra=["--no-owner"]), env=env, capture_output=True,
                             check=True, timeout=120)
        return out.stdout
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def chunks(data: bytes, size: int = 64 * 1024):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def connect(sshd, tmp_path):
    return remote.connect(Settings.from_dict(ops=sshd.settings_ops(known_hosts=tmp_path / "known_hosts")), "box")


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")]


def sessions_on(url: str) -> int:
    dbname = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (dbname,)).fetchone()[0]


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def env_for(url: str) -> dict[str, str]:
    return pg.env_for(url)


# -- the pure part ----------------------------------------------------------------------------------------------------
def test_remote_command_refuses_secrets_and_single_transaction():
    with pytest.raises(ConfigError, match="PGPASSWORD"):
        remote_command({"PGHOST": "db", "PGPASSWORD": "pw"})
    with pytest.raises(ConfigError, match="PGPASSFILE"):
        remote_command({"PGPASSFILE": "/tmp/x"})
    with pytest.raises(ConfigError, match="single-transaction"):
        remote_command({"PGHOST": "db"}, args=["--single-transaction"])
    command = remote_command({"PGHOST": "db.internal", "PGDATABASE": "it's"}, password=True)
    assert "PGPASSWORD" in command and "read -r PGPASSWORD" in command  # read from stdin, never assigned inline
    assert "PGDATABASE=" in command and "ON_ERROR_STOP=1" in command


def test_tool_command_takes_the_password_from_stdin_only():
    with pytest.raises(ConfigError, match="PGPASSWORD"):
        tool_command({"PGHOST": "db", "PGPASSWORD": "s3cret"}, ["pg_dump"], password=True)
    command = tool_command({"PGHOST": "db.internal", "PGUSER": "app"}, ["pg_dump", "-w", "--clean"], password=True)
    assert "read -r PGPASSWORD" in command and "PGHOST=db.internal" in command and "exec env" in command
    assert "exec env PGHOST=db.internal PGUSER=app pg_dump -w --clean" in command
    assert "read -r" not in tool_command({"PGHOST": "db"}, ["pg_dump"])     # no password: stdin left alone


def test_a_password_with_a_line_break_is_refused():
    with pytest.raises(ConfigError, match="line break"):
        RemotePsql(object(), {"PGHOST": "db", "PGPASSWORD": "a\nb"})


# -- against sshd + PostgreSQL --------------------------------------------------------------------------------------
def test_streamed_restore_gives_the_same_row_counts_as_a_direct_one(sshd, make_db, dump, tmp_path):
    via, direct = make_db("via"), make_db("direct")
    subprocess.run(pg.psql_argv("psql", extra=["--single-transaction"]), input=dump, env=pg.tool_env(direct, os.environ),
                   check=True, capture_output=True, timeout=120)
    with connect(sshd, tmp_path) as cxn:
        result = RemotePsql(cxn, env_for(via)).run(chunks(dump))
    assert result.ok and result.committed, result.stderr
    assert result.bytes_sent == len(dump)
    counts = pg.table_counts(via)
    assert counts == pg.table_counts(direct)
    assert counts == {"draws.results": 300, "public.players": 5000, "public.tickets": 20000}
    with psycopg.connect(via) as conn:  # COPY data with tabs, newlines and backslashes arrived intact
        note = conn.execute("SELECT note FROM players WHERE id = 7").fetchone()[0]
    assert note == "tab\there\nnewline \\ back"


def _processes() -> dict[int, tuple[bytes, bytes]]:
    """pid -> (cmdline, environ) of every process we can read."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = ((entry / "cmdline").read_bytes(), (entry / "environ").read_bytes())
            except OSError:
                continue
    return found


def test_password_reaches_psql_through_its_environment_never_a_command_line(sshd, dump, password_role, tmp_path):
    url, password = password_role
    seen: dict[str, object] = {}

    def watched():
        parts = list(chunks(dump))
        yield from parts[:2]
        # mid-stream: look at every process on the "bastion" until the remote psql shows up (it may start late)
        seen["on_command_line"], seen["in_environment"] = [], []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(n.endswith(b"psql") for n in seen["in_environment"]):
            procs = _processes()
            seen["on_command_line"] += [pid for pid, (cmd, _) in procs.items() if password.encode() in cmd]
            seen["in_environment"] = [cmd.split(b"\0")[0] for pid, (cmd, env) in procs.items()
                                      if b"PGPASSWORD=" + password.encode() + b"\0" in env + b"\0"]
            time.sleep(0.05)
        yield from parts[2:]

    with connect(sshd, tmp_path) as cxn:
        result = RemotePsql(cxn, env_for(url)).run(watched())
    assert result.ok, result.stderr
    assert seen["on_command_line"] == []
    assert any(name.endswith(b"psql") for name in seen["in_environment"])  # delivered, to psql only
    assert pg.table_counts(url)["public.tickets"] == 20000  # a scram login that needed the password worked
    assert password not in result.stdout + result.stderr


def test_a_stream_that_fails_midway_commits_nothing(sshd, make_db, dump, tmp_path):
    target = make_db("abort")

    def broken():
        parts = list(chunks(dump, 16 * 1024))
        yield from parts[: len(parts) // 2]  # well into the COPY data
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    with connect(sshd, tmp_path) as cxn:
        result = RemotePsql(cxn, env_for(target)).run(broken())
    assert result.aborted and not result.committed and not result.ok
    assert "EOFError" in result.reason
    assert 0 < result.bytes_sent < len(dump)
    assert wait_until(lambda: sessions_on(target) == 0)
    assert tables(target) == []


def test_abort_from_another_thread_kills_the_remote_psql(sshd, make_db, dump, tmp_path):
    target = make_db("kill")
    halfway = threading.Event()

    def slow():
        parts = list(chunks(dump, 16 * 1024))
        for n, part in enumerate(parts):
            if n == len(parts) // 2:
                halfway.set()
            time.sleep(0.02)
            yield part

    with connect(sshd, tmp_path) as cxn:
        streamer = RemotePsql(cxn, env_for(target))
        killer = threading.Thread(target=lambda: (halfway.wait(30), streamer.abort("operator pressed stop")))
        killer.start()
        result = streamer.run(slow())
        killer.join()
    assert result.aborted and result.reason == "operator pressed stop"
    assert result.exited is None  # killed by a signal, not a clean exit
    assert result.bytes_sent < len(dump)
    assert wait_until(lambda: sessions_on(target) == 0)
    assert tables(target) == []


def test_an_error_in_the_dump_stops_psql_and_rolls_back(sshd, make_db, dump, tmp_path):
    target = make_db("err")
    bad = dump + b"\nSELECT no_such_function();\n" + b"-- padding\n" * 50000

    with connect(sshd, tmp_path) as cxn:
        result = RemotePsql(cxn, env_for(target)).run(chunks(bad))
    assert result.exited == 3 and not result.aborted and not result.committed
    assert "no_such_function" in result.stderr
    assert tables(target) == []


def test_without_atomic_the_dump_commits_as_psql_runs_it(sshd, make_db, tmp_path):
    target = make_db("plain")
    script = b"CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (2);\nSELECT count(*) AS n FROM t;\n"
    with connect(sshd, tmp_path) as cxn:
        result = RemotePsql(cxn, env_for(target), atomic=False, args=["-A", "-t"]).run([script])
    assert result.ok and result.stdout.strip() == "2"
    assert pg.table_counts(target) == {"public.t": 2}


def test_marker_and_names_are_read_from_the_bastions_side(sshd, make_db, tmp_path):
    from ops import guard
    from ops.remote_psql import read_marker, resolve

    url = make_db("marked")
    with connect(sshd, tmp_path) as cxn:
        assert read_marker(cxn, env_for(url)) is None
        guard.mark(Settings.from_dict(), "staging", url)
        assert read_marker(cxn, env_for(url)) == "staging"
        with psycopg.connect(url, autocommit=True) as conn:  # production in the catalog wins over a session value
            conn.execute(sql.SQL("ALTER DATABASE {} SET ops.environment = 'production'").format(
                sql.Identifier(conninfo_to_dict(url)["dbname"])))
        assert read_marker(cxn, env_for(url) | {"PGOPTIONS": "-c ops.environment=staging"}) == "production"
        assert "127.0.0.1" in resolve(cxn, "localhost")
        assert resolve(cxn, "no-such-host.invalid") == frozenset()
        with pytest.raises(ServiceError, match="cannot read the database marker"):
            read_marker(cxn, env_for(url) | {"PGPORT": "1"})
