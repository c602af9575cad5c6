"""Test harness: real services on loopback, loaded as plugins (psycopg's fix_*.py layout).

  tests/fix_pg.py     PostgreSQL: pg_server, make_db, staging_url, production_url, pg_bin_dir, old_pg16
  tests/fix_http.py   the fake GitHub/Render/Sentry/... API server: fake_api
  tests/fix_sshd.py   a real sshd on 127.0.0.1: sshd, make_sshd, no_ssh_config

A plugin whose file does not exist yet is left out, so the harness works while the suite is being built.
"""
from pathlib import Path

_HERE = Path(__file__).parent

pytest_plugins = [f"tests.{name}" for name in ("fix_pg", "fix_http", "fix_sshd") if (_HERE / f"{name}.py").exists()]
