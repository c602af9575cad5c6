"""The guard against a real PostgreSQL server: the marker, `require`, and `inv guard.check|mark` as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ops import guard
from ops.config import Settings
from ops.errors import GuardRefused

ROOT = Path(__file__).resolve().parent.parent


def with_password(url: str, password: str = "Sup3r-Secret-pw") -> str:
    params = conninfo_to_dict(url)
    params["password"] = password
    return make_conninfo("", **params)


def respell(url: str, **changes: str) -> str:
    params = conninfo_to_dict(url)
    params.update(changes)
    return make_conninfo("", **params)


def inv(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k not in ("DATABASE_URL",)}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def prod_and_staging(make_db):
    return make_db("lottery"), make_db("stage")


def test_check_refuses_production_spellings_and_never_prints_the_password(prod_and_staging, tmp_path):
    prod, staging = prod_and_staging
    params = conninfo_to_dict(prod)
    env = {"DATABASE_URL": with_password(prod)}
    port = params.get("port", "5432")
    spellings = [
        prod,
        f"postgres://someone:Sup3r-Secret-pw@localhost:{port}/{params['dbname']}",
        f"postgresql://[::1]:{port}/{params['dbname']}?connect_timeout=2",
        f"host=127.0.0.1 port={port} dbname={params['dbname']} password=Sup3r-Secret-pw",
        f"postgresql:///{params['dbname']}?host=LOCALHOST.&port={port}",
        f"postgresql://staging.invalid:{port},127.0.0.1:{port}/{params['dbname']}",
        f"host=staging.invalid hostaddr=127.0.0.1 port={port} dbname={params['dbname']}",
    ]
    for spelling in spellings:
        result = inv("guard.check", spelling, env=env)
        assert result.returncode == 3, (spelling, result.stdout, result.stderr)
        assert "PRODUCTION" in result.stdout
        assert "Sup3r-Secret-pw" not in result.stdout + result.stderr
    ok = inv("guard.check", with_password(staging), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "not production" in ok.stdout and "Sup3r-Secret-pw" not in ok.stdout + ok.stderr


def test_env_defaults_fill_the_parts_a_url_leaves_out(prod_and_staging):
    prod, _ = prod_and_staging
    params = conninfo_to_dict(prod)
    env = {"DATABASE_URL": prod, "PGHOST": params.get("host", "127.0.0.1"), "PGPORT": params.get("port", "5432"),
           "PGDATABASE": params["dbname"]}
    assert inv("guard.check", "postgresql://", env=env).returncode == 3
    assert inv("guard.check", f"dbname={params['dbname']}", env=env).returncode == 3


def test_unreachable_staging_is_allowed_with_a_note():
    result = inv("guard.check", "postgresql://u:pw12345@127.0.0.1:1/staging_db?connect_timeout=2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "could not be read" in result.stdout and "pw12345" not in result.stdout + result.stderr


def test_unparseable_target_is_refused_with_the_reason():
    result = inv("guard.check", "postgresql://h/d?bogus=1")
    assert result.returncode == 3
    assert "cannot parse" in result.stdout


def test_marker_makes_a_database_production_however_it_is_spelled(make_db):
    url = make_db("other")
    assert inv("guard.check", url).returncode == 0
    marked = inv("guard.mark", "production", url)
    assert marked.returncode == 0, marked.stderr
    result = inv("guard.check", url)
    assert result.returncode == 3 and "marked production" in result.stdout
    # a session option cannot talk the guard out of it
    sneaky = respell(url, options="-c ops.environment=staging")
    assert inv("guard.check", sneaky).returncode == 3
    # and a production database cannot be re-marked as staging
    again = inv("guard.mark", "staging", url)
    assert again.returncode == 3


def test_staging_marker_is_shown_and_allowed(make_db):
    url = make_db("stage")
    assert inv("guard.mark", "staging", url).returncode == 0
    result = inv("guard.check", url)
    assert result.returncode == 0 and "'staging'" in result.stdout


def test_require_refuses_production_without_the_emergency_path(prod_and_staging):
    prod, staging = prod_and_staging
    settings = Settings.from_dict(env={"DATABASE_URL": prod})
    assert guard.require(settings, staging, action="test").dbname == conninfo_to_dict(staging)["dbname"]
    with pytest.raises(GuardRefused, match="is production"):
        guard.require(settings, prod, action="test")
    with pytest.raises(GuardRefused, match="approval"):
        guard.require(settings, prod, action="test", emergency=True)

    def bad(target):
        raise GuardRefused("token expired")

    with pytest.raises(GuardRefused, match="expired"):
        guard.require(settings, prod, action="test", emergency=True, approval=bad)
    seen = []
    target = guard.require(settings, prod, action="test", emergency=True, approval=seen.append)
    assert seen == [target] and target.is_production
    # an approval is worth nothing without the emergency flag
    with pytest.raises(GuardRefused):
        guard.require(settings, prod, action="test", approval=seen.append)


def test_target_conninfo_pins_every_part_against_env_redirection(prod_and_staging, monkeypatch):
    prod, staging = prod_and_staging
    settings = Settings.from_dict(env={"DATABASE_URL": prod})
    target = guard.require(settings, staging, action="test")
    monkeypatch.setenv("PGDATABASE", conninfo_to_dict(prod)["dbname"])
    with psycopg.connect(target.conninfo) as conn:
        assert conn.info.dbname == target.dbname


def test_scratch_databases_are_allowed_only_with_the_prefix_on_a_non_production_server(prod_and_staging):
    prod, staging = prod_and_staging
    settings = Settings.from_dict(env={"DATABASE_URL": prod})
    target = guard.require_scratch(settings, staging, "ops_scratch_abc", action="restore.test")
    assert target.dbname == "ops_scratch_abc"
    with pytest.raises(GuardRefused):
        guard.require_scratch(settings, staging, "lottery", action="restore.test")
    with pytest.raises(GuardRefused):
        guard.require_scratch(settings, prod, "ops_scratch_abc", action="restore.test")


def test_production_identities_config(make_db, tmp_path):
    url = make_db("plain")
    params = conninfo_to_dict(url)
    cfg = tmp_path / "prod.yaml"
    cfg.write_text(f"ops:\n  production:\n    identities:\n      - {{host: localhost, user: {params.get('user', 'postgres')}}}\n")
    assert inv("-f", str(cfg), "guard.check", url).returncode == 3
    cfg.write_text("ops:\n  production:\n    identities:\n      - {host: localhost, user: somebody_else}\n")
    assert inv("-f", str(cfg), "guard.check", url).returncode == 0


def test_a_bastion_vantage_judges_names_as_the_bastion_sees_them(make_db):
    """Through `--via`, `localhost` is the bastion and names resolve there: an alias that only the bastion
    knows for the production address is still production."""
    prod = make_db("lottery")
    params = conninfo_to_dict(prod)
    settings = Settings.from_dict(env={"DATABASE_URL": "postgresql://app@10.20.30.40:5432/" + params["dbname"]})
    seen = []

    def bastion_resolve(name):
        return frozenset({"10.20.30.40"}) if name == "db.bastion-only.internal" else frozenset()

    def bastion_marker(conninfo, env):
        seen.append(conninfo)
        return "staging"

    vantage = guard.Vantage(bastion_resolve, lambda: frozenset({"10.20.30.99"}), bastion_marker, "bastion")
    alias = f"postgresql://db.bastion-only.internal/{params['dbname']}"
    with pytest.raises(GuardRefused):
        guard.require(settings, alias, action="restore.staging", vantage=vantage)
    assert not guard.judge(settings, alias).is_production       # from here the alias does not resolve
    target = guard.require(settings, "postgresql://127.0.0.1/other_db", action="restore.staging", vantage=vantage)
    assert target.marker == "staging" and seen
