"""backup.create: pg_dump of $DATABASE_URL with the nightly flags, gzip -9, SHA-256, verified; --upload to the fake GitHub."""
from __future__ import annotations

import gzip
import hashlib
import re
import secrets
import stat
from pathlib import Path

import psycopg
import pytest
from invoke import Config, Context, Exit
from psycopg import sql

from ops import backup, download, dumps, guard, pg, restorer, sandbox
from ops.config import Settings
from ops.errors import ConfigError, ServiceError


def _ctx(tmp_path: Path, **ops) -> Context:
    return Context(Config(overrides={"ops": {"audit_log": str(tmp_path / "audit.jsonl"), **ops}}))


@pytest.fixture
def production(production_url):
    """The database DATABASE_URL names: seeded like the lottery backend."""
    sandbox.seed(production_url, users=200)
    return production_url


def test_dump_to_writes_a_verified_gzip_with_its_sha256(production, tmp_path):
    settings = Settings.from_dict(env={"DATABASE_URL": production})
    made = backup.dump_to(settings, guard.judge(settings, production), tmp_path / "backup_20250101_020000.sql.gz")
    raw = made.path.read_bytes()
    assert made.sha256 == hashlib.sha256(raw).hexdigest() == download.read_sidecar(made.path)
    text = gzip.decompress(raw)
    assert text.startswith(b"--\n-- PostgreSQL database dump\n--\n")
    assert b"DROP TABLE IF EXISTS public.\"User\";" in text                     # --clean --if-exists
    assert b"OWNER TO" not in text and b"GRANT " not in text                   # --no-owner --no-privileges
    assert made.report.ok and made.report.tables == pg.table_counts(production, ["public"])
    assert dumps.inspect(made.path).tables == made.report.tables
    assert not list(tmp_path.glob("*.part"))


def test_the_backup_restores(production, staging_url, tmp_path):
    settings = Settings.from_dict(ops={"audit_log": str(tmp_path / "a.jsonl")}, env={"DATABASE_URL": production})
    made = backup.dump_to(settings, guard.judge(settings, production), tmp_path / "b.sql.gz")
    result = restorer.restore(settings, guard.require(settings, staging_url, action="test"), made.path)
    assert result.committed and pg.table_counts(staging_url) == pg.table_counts(production)


def test_create_task_reads_production_and_names_the_file_like_the_nightly_job(production, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.setenv("DATABASE_URL", production)
    backup.create(_ctx(tmp_path), dest=str(tmp_path / "out"))
    files = list((tmp_path / "out").glob("*.sql.gz"))
    assert len(files) == 1 and re.fullmatch(r"backup_\d{8}_\d{6}\.sql\.gz", files[0].name)
    out = capsys.readouterr().out
    assert "verified" in out and download.read_sidecar(files[0]) in out


def test_create_needs_database_url(tmp_path):
    with pytest.raises(Exit, match="DATABASE_URL"):
        backup.create(_ctx(tmp_path), dest=str(tmp_path))


def test_upload_publishes_a_release_with_one_asset(production, fake_api, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", production)
    monkeypatch.setenv("GITHUB_TOKEN", fake_api.github.token)
    backup.create(_ctx(tmp_path, **fake_api.settings_ops()), dest=str(tmp_path), upload=True)
    local = next(tmp_path.glob("backup_*.sql.gz"))
    [release] = fake_api.github.releases
    assert release["tag_name"] == "backup-" + local.name[len("backup_"):-len(".sql.gz")]
    [asset] = release["assets"]
    assert asset["name"] == local.name and asset["content_type"] == "application/gzip"
    assert fake_api.github.blobs[asset["id"]] == local.read_bytes()
    created = fake_api.calls("POST", r"/releases$")[0].json()
    assert created["make_latest"] == "false" and download.read_sidecar(local) in created["body"]


def test_upload_without_a_token_stops_before_dumping(production, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", production)
    with pytest.raises(Exit, match="GITHUB_TOKEN"):
        backup.create(_ctx(tmp_path), dest=str(tmp_path), upload=True)
    assert list(tmp_path.glob("*.sql.gz")) == []


def test_a_pg_dump_older_than_the_server_is_a_clear_error(production, tmp_path):
    old = tmp_path / "pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 11.22'\n")
    old.chmod(old.stat().st_mode | stat.S_IEXEC)
    settings = Settings.from_dict(ops={"backup": {"pg_dump": str(old)}}, env={})
    with pytest.raises(ConfigError) as caught:
        backup.dump_to(settings, guard.judge(settings, production), tmp_path / "b.sql.gz")
    assert "11.22" in caught.value.message and "or newer is needed" in caught.value.message
    assert "postgresql-client" in (caught.value.hint or "")


def test_a_failing_pg_dump_leaves_no_file_and_no_password_in_the_message(production, pg_server, tmp_path):
    role, password = f"reader_{secrets.token_hex(3)}", "pw-" + secrets.token_hex(6)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    try:
        url = production.replace("postgresql://postgres@", f"postgresql://{role}:{password}@")
        settings = Settings.from_dict(env={"DATABASE_URL": url})
        with pytest.raises(ServiceError) as caught:       # no SELECT on the tables: pg_dump fails part-way
            backup.dump_to(settings, guard.judge(settings, url), tmp_path / "b.sql.gz")
        assert "permission denied" in caught.value.message and password not in str(caught.value)
        assert list(tmp_path.iterdir()) == []
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
