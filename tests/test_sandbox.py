"""sandbox.demo: the README's first command, end to end on a real server; and its throwaway-cluster fallback."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from invoke import Config, Context
from psycopg import sql

from ops import pg, sandbox
from ops.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def _drop(admin_url: str, *names: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_demo_seeds_backs_up_restores_and_says_how(pg_server, tmp_path):
    config = tmp_path / "invoke.json"
    config.write_text(json.dumps({"ops": {"audit_log": str(tmp_path / "state" / "audit.jsonl")}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INVOKE_"))}
    env.update(OPS_SANDBOX_URL=pg_server.admin_url, INVOKE_RUNTIME_CONFIG=str(config))
    try:
        out = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(ROOT), "sandbox.demo",
                              "--users", "150"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "sandbox server: $OPS_SANDBOX_URL" in out.stdout
        assert "sandbox_staging now holds the same rows as sandbox_lottery: yes" in out.stdout
        assert "committed" in out.stdout and "Run it yourself" in out.stdout
        backups = list((tmp_path / "state" / "sandbox" / "backups").glob("*.sql.gz"))
        assert len(backups) == 1 and re.fullmatch(r"backup_\d{8}_\d{6}\.sql\.gz", backups[0].name)
        assert f"inv restore.staging --file {backups[0]}" in out.stdout
        source, staging = pg_server.url(sandbox.SOURCE_DB), pg_server.url(sandbox.STAGING_DB)
        assert pg.table_counts(staging) == pg.table_counts(source)
        assert pg.table_counts(source)["public.Ticket"] == 1500
        audit = (tmp_path / "state" / "sandbox" / "audit.jsonl").read_text()
        assert '"action": "restore.staging"' in audit
    finally:
        _drop(pg_server.admin_url, sandbox.SOURCE_DB, sandbox.STAGING_DB)


def test_sandbox_url_wins_and_database_urls_are_derived():
    settings = Settings.from_dict(env={"OPS_SANDBOX_URL": "postgresql://u:pw@db.example:5433/postgres?sslmode=require"})
    server = sandbox.find_server(settings)
    assert server.how == "$OPS_SANDBOX_URL" and server.cluster is None
    assert server.url("sandbox_staging") == "postgresql://u:pw@db.example:5433/sandbox_staging?sslmode=require"
    assert "dbname=x" in sandbox.Server("host=h user=u dbname=postgres", "").url("x")


@pytest.mark.slow
def test_with_no_server_answering_a_throwaway_cluster_is_started_and_stop_removes_it(tmp_path, pg_bin_dir,
                                                                                     monkeypatch):
    settings = Settings.from_dict(ops={"audit_log": str(tmp_path / "audit.jsonl")},
                                  env={"OPS_SANDBOX_PG_BIN": str(pg_bin_dir)})
    server = sandbox.find_server(settings, local_url="postgresql://postgres@127.0.0.1:1/postgres")
    try:
        assert server.cluster is not None and "throwaway cluster" in server.how
        assert sandbox.answers(server.admin_url)
        again = sandbox.find_server(settings, local_url="postgresql://postgres@127.0.0.1:1/postgres")
        assert again.admin_url == server.admin_url                  # the same cluster, started once
    finally:
        monkeypatch.setenv("OPS_SANDBOX_PG_BIN", str(pg_bin_dir))
        sandbox.stop(Context(Config(overrides={"ops": {"audit_log": str(tmp_path / "audit.jsonl")}})))
    assert not sandbox.answers(server.admin_url)
    assert not (server.cluster.workdir / "data").exists()


def test_seed_has_the_shapes_the_backups_must_survive(make_db):
    url = make_db("seed")
    sandbox.seed(url, users=20)
    with psycopg.connect(url) as conn:
        kinds = dict(conn.execute("SELECT relname, relkind::text FROM pg_class WHERE relname IN "
                                  "('User', 'Transaction', 'Transaction_2025')").fetchall())
        errors = [r[0] for r in conn.execute('SELECT DISTINCT error FROM "Transaction" WHERE error IS NOT NULL')]
    assert kinds == {"User": "r", "Transaction": "p", "Transaction_2025": "r"}
    assert any("FATAL:\t" in e for e in errors) and any("\n" in e for e in errors) and "\\." in errors
