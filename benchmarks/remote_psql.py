"""Benchmark a restore streamed through `ops.remote_psql` (psql on a "bastion" over SSH) against a direct psql.

    python benchmarks/remote_psql.py                 # a ~100 MB plain dump, 3 runs each
    python benchmarks/remote_psql.py --rows 200000   # smaller
    OPS_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/remote_psql.py

The bastion is this machine over a throwaway sshd on 127.0.0.1 (tests/fix_sshd.start_sshd), so the figure is the
overhead of the SSH channel and of our Python pump, not of a network. Prints seconds and MB/s of each path (median)
and their ratio (target: the SSH path within 1.5x of the direct one). Databases ops_bench_* are dropped afterwards.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from ops import pg, remote  # noqa: E402
from ops.config import Settings  # noqa: E402
from ops.remote_psql import RemotePsql  # noqa: E402
from tests.fix_sshd import keygen, start_sshd  # noqa: E402


def url_for(server: str, dbname: str) -> str:
    return make_conninfo("", **(conninfo_to_dict(server) | {"dbname": dbname}))


def admin(server: str, statement: sql.Composable) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(statement)


def make_dump(server: str, rows: int) -> bytes:
    name = f"ops_bench_src_{secrets.token_hex(3)}"
    admin(server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(url_for(server, name), autocommit=True) as conn:
            conn.execute("CREATE TABLE tickets (id bigint PRIMARY KEY, player_id int, numbers int[], note text)")
            conn.execute("INSERT INTO tickets SELECT g, g %% 50000, ARRAY[g %% 49, g %% 47, g %% 43], md5(g::text) "
                         "|| repeat('x', 40) FROM generate_series(1, %s) g", (rows,))
        return subprocess.run(pg.pg_dump_argv("pg_dump", extra=["--no-owner"]), env=pg.tool_env(url_for(server, name),
                              os.environ), capture_output=True, check=True).stdout
    finally:
        admin(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def fresh(server: str) -> str:
    name = f"ops_bench_{secrets.token_hex(4)}"
    admin(server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def chunks(data: bytes, size: int = 1 << 20):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = os.environ.get("OPS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    dump = make_dump(server, args.rows)
    mb = len(dump) / 2**20
    print(f"dump: {mb:.1f} MB, {args.rows} rows")
    work = Path(tempfile.mkdtemp(prefix="ops-bench-sshd-"))
    sshd = start_sshd(work, keygen(work / "client_key"))
    settings = Settings.from_dict(ops=sshd.settings_ops("bastion", known_hosts=work / "known_hosts"))
    made: list[str] = []
    direct, via = [], []
    try:
        for _ in range(args.runs):
            name = fresh(server)
            made.append(name)
            started = time.perf_counter()
            subprocess.run(pg.psql_argv("psql", extra=["--single-transaction"]), input=dump, check=True,
                           capture_output=True, env=pg.tool_env(url_for(server, name), os.environ))
            direct.append(time.perf_counter() - started)
            name = fresh(server)
            made.append(name)
            with remote.connect(settings, "bastion") as cxn:
                started = time.perf_counter()
                result = RemotePsql(cxn, pg.env_for(url_for(server, name))).run(chunks(dump))
                via.append(time.perf_counter() - started)
            if not result.ok:
                raise SystemExit(f"remote psql failed: {result.describe()}\n{result.stderr}")
    finally:
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)
        for name in made:
            admin(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    d, v = statistics.median(direct), statistics.median(via)
    print(f"direct psql:      {d:6.2f} s  {mb / d:6.1f} MB/s")
    print(f"remote_psql (ssh): {v:6.2f} s  {mb / v:6.1f} MB/s")
    print(f"ratio ssh/direct: {v / d:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
