"""Attacks on the guard, the dump checker and the secrets, each one found working once and then fixed.

Every test here is an attempt that used to succeed: a spelling of production `inv guard.check` let through while
psql reached production, a backup that ran a program on the database server, a secret that reached the output.
The referee is always the real thing: psql (or libpq through psycopg) connecting, a real restore, a file on disk.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

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
