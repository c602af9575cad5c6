"""Incident recipes against the fake APIs, a real PostgreSQL with induced situations, and a real sshd.

Tasks are called as plain functions with an Invoke Context (what `inv` does after parsing); a few run as
`inv ...` subprocesses where stdin and the terminal matter.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import invoke
import psycopg
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

from ops import audit, diagnose, guard, incident, pgdiag, tokens
from ops.config import Settings
from tests.fix_pg import free_port, needs

ROOT = Path(__file__).resolve().parent.parent


def ctx(ops: dict) -> invoke.Context:
    return invoke.Context(invoke.Config(overrides={"ops": ops}))


def ago(**delta: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(**delta)


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def world(fake_api, make_db, tmp_path, monkeypatch):
    """Everything healthy: the app answers, a live deploy from yesterday, CI green, the database reachable."""
    db_url = make_db("app")
    for name, value in fake_api.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", db_url)
    state = tmp_path / "state"
    ops = fake_api.settings_ops(audit_log=str(state / "audit.jsonl"),
                                incident={"recheck_timeout": 0.5, "timeout": 20})
    live = fake_api.render.add_deploy("live", created_at=ago(hours=30), message="Add jackpot banner")
    fake_api.github.add_run("ci.yml", conclusion="success", created_at=ago(hours=30))
    return SimpleNamespace(api=fake_api, ops=ops, c=ctx(ops), db=db_url, state=state, live=live,
                           settings=lambda: Settings.from_context(ctx(ops)))


def run(task, *args, **kwargs) -> int:
    """Call a task; its exit status (0, or the code of the Exit it raised)."""
    try:
        task(*args, **kwargs)
    except invoke.Exit as exc:
        return exc.code
    return 0


# -- app-down ---------------------------------------------------------------------------------------------------------
def test_app_down_all_clear(world, capsys):
    assert run(incident.app_down, world.c) == 0
    out = capsys.readouterr().out
    assert "VERDICT: no problem found: the app answers, the deploy is live" in out
    for check in ("app.health", "render.service", "db.reachable", "sentry.recent", "github.deploy", "render.logs",
                  "supabase.health"):
        assert check in out
    assert (world.state / "diagnosis" / "app-down.md").read_text().count("VERDICT") == 1


def test_app_down_names_the_failed_deploy_and_suggests_rollback(world, capsys):
    failed = world.api.render.add_deploy("build_failed", created_at=ago(minutes=12))
    world.api.app.set("/health", status=503)
    with pytest.raises(invoke.Exit) as stop:
        incident.app_down(world.c)
    out = capsys.readouterr().out
    when = diagnose.hhmm(failed["finishedAt"], datetime.now(timezone.utc))
    expected = (f"deploy failed at {when} ({failed['id']}: build_failed): "
                f"roll back to {world.live['id']} (inv emergency.rollback)")
    assert f"VERDICT: {expected}" in out
    assert (stop.value.code, stop.value.message) == (1, f"app-down: {expected}")  # one line on stderr, exit 1


def test_app_down_deploy_in_progress(world, capsys):
    busy = world.api.render.add_deploy("update_in_progress", created_at=ago(minutes=3), finished=False)
    assert run(incident.app_down, world.c) == 0
    assert f"VERDICT: deploy in progress since" in capsys.readouterr().out
    assert busy["id"] in (world.state / "diagnosis" / "app-down.md").read_text()


def test_app_down_suspended_service(world, capsys):
    world.api.render.service.update(suspended="suspended", suspenders=["billing"])
    world.api.app.down()
    assert run(incident.app_down, world.c) == 1
    assert "VERDICT: the Render service is suspended (by billing): resume it" in capsys.readouterr().out


def test_app_down_database_unreachable(world, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:Sekr1t-pw@127.0.0.1:{free_port()}/lottery")
    world.api.app.set("/health", status=500)
    assert run(incident.app_down, world.c) == 1
    out = capsys.readouterr().out
    assert "VERDICT: database unreachable: check Supabase status and DATABASE_URL (inv emergency.db)" in out
    assert "Sekr1t-pw" not in out and "Sekr1t-pw" not in (world.state / "diagnosis" / "app-down.md").read_text()


def test_app_down_sentry_issues_of_the_last_hour(world, capsys):
    world.api.sentry.add_issue("ZeroDivisionError in payout", count=40, last_seen=ago(minutes=5),
                               first_seen=ago(minutes=30))
    world.api.sentry.add_issue("Old timeout", count=900, last_seen=ago(hours=5))
    run(incident.app_down, world.c)
    out = capsys.readouterr().out
    assert "1 unresolved issue(s) seen in the last hour" in out
    assert "ZeroDivisionError in payout" in out and "Old timeout" not in out
    (call,) = world.api.calls("GET", r"/issues/?$")
    assert "lastSeen:-1h" in call.arg("query")


def test_app_down_out_of_memory_in_render_logs(world, capsys):
    world.api.render.add_log("GET /api/draws/latest 200 12ms")
    world.api.render.add_log("<--- JS stacktrace ---> FATAL ERROR: JavaScript heap out of memory", level="error")
    world.api.app.set("/health", status=502)
    assert run(incident.app_down, world.c) == 1
    out = capsys.readouterr().out
    assert "VERDICT: out of memory in the app's logs: restart (inv emergency.restart), then find the leak" in out
    assert "heap out of memory" in out  # the log line itself is shown


def test_app_down_with_nothing_configured_says_what_to_set(tmp_path, capsys):
    assert run(incident.app_down, ctx({"audit_log": str(tmp_path / "audit.jsonl")})) == 0
    out = capsys.readouterr().out
    assert "Traceback" not in out
    assert "ops.app.health_url" in out and "RENDER_API_KEY" in out and "DATABASE_URL" in out
    assert "VERDICT: no problem found: the app answers, the deploy is live in what could be checked; could not " \
           "check app.health, render.service" in out


# -- rollback and restart -----------------------------------------------------------------------------------------
def test_rollback_dry_run_sends_nothing(world, capsys):
    bad = world.api.render.add_deploy("live", created_at=ago(minutes=20), message="Break the draw")
    assert run(incident.rollback, world.c, dry_run=True) == 0
    out = capsys.readouterr().out
    assert f"from {bad['id']} (live) to {world.live['id']}" in out and "Add jackpot banner" in out
    assert "dry run: would POST" in out and out.rstrip().endswith("(not sent)")
    assert world.api.calls("POST") == [] and len(world.api.render.deploys[world.api.render.service_id]) == 2


def test_rollback_after_confirmation(world, capsys, monkeypatch):
    world.api.render.add_deploy("build_failed", created_at=ago(minutes=10))
    world.api.render.new_deploy_status = "live"
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert run(incident.rollback, world.c) == 0
    (call,) = world.api.calls("POST", r"/rollback$")
    assert json.loads(call.body) == {"deployId": world.live["id"]}
    out = capsys.readouterr().out
    assert "rollback requested: new deploy dep-" in out and "is live" in out and "auto-deploy stays on" in out
    (entry,) = [e for e in audit.entries(world.settings()) if e["action"] == "emergency.rollback"]
    assert entry["details"]["deploy"] == world.live["id"]


def test_rollback_declined_changes_nothing(world, capsys, monkeypatch):
    world.api.render.add_deploy("live", created_at=ago(minutes=20))
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert run(incident.rollback, world.c) == 1
    assert world.api.calls("POST") == []


def test_rollback_to_a_named_deploy(world, monkeypatch):
    older = world.api.render.add_deploy("deactivated", created_at=ago(days=3))
    world.api.render.add_deploy("live", created_at=ago(minutes=20))
    assert run(incident.rollback, world.c, deploy=older["id"], yes=True) == 0
    (call,) = world.api.calls("POST", r"/rollback$")
    assert json.loads(call.body) == {"deployId": older["id"]}


def test_restart_dry_run_and_confirmed(world, capsys, monkeypatch):
    assert run(incident.restart, world.c, dry_run=True) == 0
    assert world.api.render.restarts == 0 and world.api.calls("POST") == []
    assert "dry run: would POST" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))
    assert run(incident.restart, world.c) == 0
    assert world.api.render.restarts == 1
    assert "health: 200" in capsys.readouterr().out
    assert [e["action"] for e in audit.entries(world.settings())] == ["emergency.restart"]


# -- db: induced situations on a real server --------------------------------------------------------------------------
@pytest.fixture
def make_stuck():
    """make_stuck(url): a session idle in a transaction holding a row lock, and a second session blocked on it."""
    made = []

    def make(url: str) -> SimpleNamespace:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS draws (id int PRIMARY KEY, status text)")
            conn.execute("INSERT INTO draws VALUES (1, 'open') ON CONFLICT DO NOTHING")
        holder = psycopg.connect(url, application_name="stuck-worker")
        holder.execute("UPDATE draws SET status = 'closing' WHERE id = 1")  # transaction left open
        waiter = psycopg.connect(url, autocommit=True, application_name="api")
        outcome: list[object] = []

        def blocked_update():
            try:
                outcome.append(waiter.execute("UPDATE draws SET status = 'closed' WHERE id = 1").rowcount)
            except psycopg.Error as exc:
                outcome.append(exc)

        thread = threading.Thread(target=blocked_update, daemon=True)
        thread.start()
        s = SimpleNamespace(url=url, holder=holder, waiter=waiter, thread=thread, outcome=outcome,
                            holder_pid=holder.info.backend_pid, waiter_pid=waiter.info.backend_pid)
        assert wait_until(lambda: s.waiter_pid in [b["pid"] for b in pgdiag.diagnose(url)["blocked"]])
        made.append(s)
        return s

    yield make
    for s in made:
        for conn in (s.holder, s.waiter):
            try:
                conn.close()
            except Exception:
                pass
        s.thread.join(10)


def alive(url: str, pid: int) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 1


def test_db_shows_idle_in_transaction_and_who_blocks_whom(world, make_db, make_stuck, capsys):
    stuck = make_stuck(make_db("staging"))
    ops = {**world.ops, "incident": {"idle_minutes": 0}}
    assert run(incident.db, ctx(ops), url=stuck.url) == 0
    out = capsys.readouterr().out
    assert f"VERDICT: 1 session(s) blocked for up to" in out
    assert (f"by pid(s) {stuck.holder_pid}: end the idle transaction(s) holding the locks: inv emergency.db "
            "--terminate-idle 0") in out
    idle = out.split("Idle in transaction")[1].split("\n\n")[0]
    assert f"pid {stuck.holder_pid}" in idle and "stuck-worker" in idle and "UPDATE draws SET status = 'closing'" in idle
    blocked = out.split("Blocked sessions")[1].split("\n\n")[0]
    assert f"pid {stuck.waiter_pid} waits" in blocked and f"[{stuck.holder_pid}]" in blocked
    assert f"blocker pid {stuck.holder_pid} (idle in transaction" in blocked
    assert "(not production)" in out
    assert alive(stuck.url, stuck.holder_pid)  # a diagnosis changes nothing


def test_terminate_idle_dry_run_then_confirmed(world, make_db, make_stuck, capsys, monkeypatch):
    stuck = make_stuck(make_db("staging"))
    assert run(incident.db, world.c, url=stuck.url, terminate_idle="0", dry_run=True) == 0
    assert "dry run: would end 1 session(s)" in capsys.readouterr().out
    assert alive(stuck.url, stuck.holder_pid) and stuck.thread.is_alive()
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert run(incident.db, world.c, url=stuck.url, terminate_idle="0") == 0
    out = capsys.readouterr().out
    assert f"ended 1 session(s): {stuck.holder_pid}; 0 still idle in transaction" in out
    stuck.thread.join(10)
    assert stuck.outcome == [1]  # the blocked update went through once the lock holder was gone
    assert not alive(stuck.url, stuck.holder_pid)
    (entry,) = [e for e in audit.entries(world.settings()) if e["action"] == "emergency.terminate-idle"]
    assert entry["details"]["pids"] == [stuck.holder_pid] and entry["details"]["production"] is False


def test_terminate_idle_leaves_younger_sessions_alone(world, make_db, make_stuck, capsys):
    stuck = make_stuck(make_db("staging"))
    assert run(incident.db, world.c, url=stuck.url, terminate_idle="30", yes=True) == 0
    assert "idle in transaction for 30+ min" in capsys.readouterr().out
    assert alive(stuck.url, stuck.holder_pid)


def test_terminate_idle_on_production_needs_an_approval_token(world, make_stuck, tmp_path, capsys):
    stuck = make_stuck(world.db)  # DATABASE_URL: production
    assert run(incident.db, world.c, terminate_idle="0", yes=True) == 3
    assert alive(stuck.url, stuck.holder_pid)

    key = Ed25519PrivateKey.generate()
    ops = {**world.ops, "approval": {"public_keys": [tokens.format_public_key(tokens.raw_public(key), "alice")]}}
    settings = Settings.from_context(ctx(ops))
    params = {"target": guard.judge(settings, world.db, read_db_marker=False).identity, "minutes": "0"}
    token = tokens.mint(key, "terminate-idle", params, "10m", "end the stuck worker", now=time.time())
    wrong = tokens.mint(key, "restore", {"target": params["target"], "tag": "backup-x", "sha256": "0" * 64}, "10m",
                        "", now=time.time())
    assert run(incident.db, ctx(ops), terminate_idle="0", approve=wrong, yes=True) == 3
    assert run(incident.db, ctx(ops), terminate_idle="0", approve=token, dry_run=True) == 0
    assert alive(stuck.url, stuck.holder_pid)  # a dry run neither ends sessions nor uses the approval
    assert run(incident.db, ctx(ops), terminate_idle="0", approve=token, yes=True) == 0
    assert not alive(stuck.url, stuck.holder_pid)
    again = make_stuck(world.db)
    with pytest.raises(invoke.Exit) as refused:  # single use
        incident.db(ctx(ops), terminate_idle="0", approve=token, yes=True)
    assert refused.value.code == 3 and "replayed" in refused.value.message
    assert alive(again.url, again.holder_pid)


def test_terminate_idle_approval_for_30_minutes_does_not_allow_5(world, make_stuck, capsys):
    stuck = make_stuck(world.db)  # DATABASE_URL: production
    key = Ed25519PrivateKey.generate()
    ops = {**world.ops, "approval": {"public_keys": [tokens.format_public_key(tokens.raw_public(key), "alice")]}}
    identity = guard.judge(Settings.from_context(ctx(ops)), world.db, read_db_marker=False).identity
    token = tokens.mint(key, "terminate-idle", {"target": identity, "minutes": "30"}, "10m", "", now=time.time())
    with pytest.raises(invoke.Exit) as refused:
        incident.db(ctx(ops), terminate_idle="5", approve=token, yes=True)
    assert refused.value.code == 3 and "wrong-params" in refused.value.message
    assert "minutes='30'" in refused.value.message and "'5'" in refused.value.message
    with pytest.raises(invoke.Exit) as refused:
        incident.db(ctx(ops), terminate_idle="0", approve=token, yes=True)
    assert refused.value.code == 3
    assert alive(stuck.url, stuck.holder_pid)
    # the approved age passes the guard (the stuck session is younger than 30 minutes: nothing to end)
    assert run(incident.db, ctx(ops), terminate_idle="30", approve=token, yes=True) == 0
    assert "idle in transaction for 30+ min" in capsys.readouterr().out
    assert alive(stuck.url, stuck.holder_pid)


def test_db_finds_sequential_scan_heavy_tables_and_missing_statements(world, make_db, capsys):
    url = make_db("staging")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tickets (id int, player_id int, numbers int[])")
        conn.execute("INSERT INTO tickets SELECT g, g % 5000, ARRAY[g % 49] FROM generate_series(1, 20000) g")
        conn.execute("CREATE TABLE players (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO players SELECT g, 'p' || g FROM generate_series(1, 20000) g")
        conn.execute("ANALYZE")
    with psycopg.connect(url, autocommit=True) as conn:
        for n in range(15):
            conn.execute("SELECT count(*) FROM tickets WHERE player_id = %s", (n,))
            conn.execute("SELECT name FROM players WHERE id = %s", (n,))
    assert wait_until(lambda: [t["table"] for t in pgdiag.diagnose(url)["seq_scan_tables"]] == ["public.tickets"])
    assert run(incident.db, world.c, url=url) == 0
    out = capsys.readouterr().out
    section = out.split("Sequential-scan-heavy tables (missing-index candidates)")[1].split("\n\n")[0]
    assert "public.tickets:" in section and "20000 rows" in section and "players" not in section
    assert "Slowest statements: pg_stat_statements is not installed" in out
    assert "public.tickets" in out.split("Size: ")[1]


def test_db_with_pg_stat_statements_not_preloaded_says_so(world, make_db, capsys):
    url = make_db("staging")
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        except psycopg.Error:
            needs("the pg_stat_statements extension", "install postgresql-contrib")
        preloaded = "pg_stat_statements" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    run(incident.db, world.c, url=url)
    out = capsys.readouterr().out
    section = out.split("Slowest statements (pg_stat_statements, by mean time)")[1].split("\n\n")[0]
    if not preloaded:
        assert "shared_preload_libraries" in section


def test_db_reports_supabase_health(world, make_db, capsys):
    world.api.supabase.health["db"] = "UNHEALTHY"
    assert run(incident.db, world.c, url=make_db("staging")) == 0
    out = capsys.readouterr().out
    assert "VERDICT: Supabase services unhealthy: db UNHEALTHY" in out
    assert "db: UNHEALTHY (db is unhealthy)" in out


def test_db_that_cannot_be_reached(world, capsys):
    url = f"postgresql://app:Sekr1t-pw@127.0.0.1:{free_port()}/lottery"
    assert run(incident.db, world.c, url=url) == 0
    out = capsys.readouterr().out
    assert "VERDICT: database unreachable: check Supabase status and DATABASE_URL" in out
    assert "Sekr1t-pw" not in out


# -- security and rotate-secret ---------------------------------------------------------------------------------------
def test_security_lists_secrets_access_keys_and_roles(world, capsys):
    gh = world.api.github
    gh.add_secret("DATABASE_URL", updated_at=ago(days=400))
    gh.add_secret("RENDER_API_KEY", updated_at=ago(days=10))
    gh.add_environment("production")
    gh.add_secret("SUPABASE_SERVICE_KEY", environment="production", updated_at=ago(days=200))
    gh.add_collaborator("owner", "admin")
    gh.add_collaborator("mallory", "admin")
    gh.add_deploy_key("old laptop", read_only=False)
    gh.add_deploy_key("ci", read_only=True)
    ops = {**world.ops, "access": {"expected": {"owner": "admin"}}}
    assert run(incident.security, ctx(ops)) == 0
    out = capsys.readouterr().out
    assert "VERDICT: 1 unexpected access grant(s): remove or downgrade them" in out
    assert "mallory has admin but is not in ops.access.expected" in out
    assert "1 deploy key(s) can push: old laptop" in out
    rotation = [line.strip() for line in out.splitlines() if line.strip().startswith("inv emergency.rotate-secret")]
    assert [r.split("   #")[0] for r in rotation] == [
        "inv emergency.rotate-secret DATABASE_URL", "inv emergency.rotate-secret SUPABASE_SERVICE_KEY --env production",
        "inv emergency.rotate-secret RENDER_API_KEY"]
    assert "access.db_roles" in out and "postgres" in out  # login roles of the real database
    assert "Database connections by client address" in out


def test_rotate_secret_reads_stdin_and_seals_it_for_the_repository_key(world, capsys, monkeypatch):
    world.api.github.add_secret("DATABASE_URL", updated_at=ago(days=400), value="old")
    new_value = "postgresql://app:N3w-pa55@db.example/lottery"
    monkeypatch.setattr(sys, "stdin", io.StringIO(new_value + "\n"))
    assert run(incident.rotate_secret, world.c, "database_url", yes=True) == 0
    assert world.api.github.secret_value("DATABASE_URL") == new_value  # the fake decrypted the sealed box
    (put,) = world.api.calls("PUT", r"/actions/secrets/DATABASE_URL$")
    assert "N3w-pa55" not in put.body.decode() and set(json.loads(put.body)) == {"encrypted_value", "key_id"}
    out = capsys.readouterr()
    assert "DATABASE_URL updated in acme/lottery-backend" in out.out
    assert "N3w-pa55" not in out.out + out.err + world.settings().audit_log.read_text()


def test_rotate_secret_for_an_environment_and_in_a_dry_run(world, capsys, monkeypatch):
    gh = world.api.github
    gh.add_environment("production")
    gh.add_secret("SUPABASE_SERVICE_KEY", environment="production", value="old")
    monkeypatch.setattr(sys, "stdin", io.StringIO("brand-new"))
    assert run(incident.rotate_secret, world.c, "SUPABASE_SERVICE_KEY", env="production", dry_run=True) == 0
    assert world.api.calls("PUT") == [] and gh.secret_value("SUPABASE_SERVICE_KEY", "production") == "old"
    assert "dry run: would PUT" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("brand-new"))
    assert run(incident.rotate_secret, world.c, "SUPABASE_SERVICE_KEY", env="production", yes=True) == 0
    assert gh.secret_value("SUPABASE_SERVICE_KEY", "production") == "brand-new"


@pytest.mark.parametrize("name, stdin, message", [
    ("DATABASE_URL", "", "no value on stdin"),
    ("GITHUB_TOKEN", "x", "is not a valid Actions secret name"),
    ("9LIVES", "x", "is not a valid Actions secret name"),
])
def test_rotate_secret_refusals(world, capsys, monkeypatch, name, stdin, message):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert run(incident.rotate_secret, world.c, name, yes=True) == 1
    assert world.api.calls("PUT") == []


# -- block-ip -------------------------------------------------------------------------------------------------------
def test_block_ip_at_cloudflare_v4_and_v6_then_unblock(world, capsys):
    cf = world.api.cloudflare
    assert run(incident.block_ip, world.c, "198.51.100.4", yes=True) == 0
    assert run(incident.block_ip, world.c, "2001:db8::1", yes=True) == 0
    assert sorted((r["configuration"]["target"], r["configuration"]["value"]) for r in cf.rules) == [
        ("ip", "198.51.100.4"), ("ip6", "2001:db8::1")]
    assert run(incident.block_ip, world.c, "198.51.100.4", yes=True) == 0  # again: one rule still
    assert len(cf.rules) == 2
    posts = len(world.api.calls("POST"))
    assert run(incident.block_ip, world.c, "2001:db8::1", unblock=True, dry_run=True) == 0
    assert world.api.calls("DELETE") == [] and len(cf.rules) == 2 and len(world.api.calls("POST")) == posts
    assert run(incident.block_ip, world.c, "2001:db8::1", unblock=True, yes=True) == 0
    assert [r["configuration"]["value"] for r in cf.rules] == ["198.51.100.4"]
    out = capsys.readouterr().out
    assert "Cloudflare: blocked (rule" in out and "target ip6)" in out and "Cloudflare: removed" in out
    assert [e["action"] for e in audit.entries(world.settings())] == [
        "emergency.block-ip", "emergency.block-ip", "emergency.block-ip", "emergency.unblock-ip"]


def test_block_ip_dry_run_sends_nothing(world, capsys):
    assert run(incident.block_ip, world.c, "203.0.113.0/24", dry_run=True) == 0
    assert world.api.calls("POST") == [] and world.api.cloudflare.rules == []
    assert "dry run: would POST" in capsys.readouterr().out


def test_block_ip_refuses_what_is_not_an_address(world):
    assert run(incident.block_ip, world.c, "198.51.100.4; rm -rf /", yes=True) == 1
    assert world.api.calls("POST") == []


FAKE_FIREWALL = r"""#!/bin/sh
# a harmless iptables: records its arguments, keeps its "rules" in a file
dir=$(dirname "$0"); tool=$(basename "$0")
echo "$tool $*" >> "$dir/calls"
op=$1; shift
touch "$dir/rules"
case "$op" in
  -C) grep -qxF -- "$tool $*" "$dir/rules" ;;
  -I) echo "$tool $*" >> "$dir/rules" ;;
  -D) grep -qxF -- "$tool $*" "$dir/rules" || { echo "$tool: Bad rule" >&2; exit 1; }
      grep -vxF -- "$tool $*" "$dir/rules" > "$dir/rules.new"; mv "$dir/rules.new" "$dir/rules" ;;
  *) exit 2 ;;
esac
"""


@pytest.fixture
def firewall_host(sshd, tmp_path, world, no_ssh_config):
    fw = tmp_path / "fw"
    fw.mkdir()
    for name in ("fake-iptables", "fake-ip6tables"):
        (fw / name).write_text(FAKE_FIREWALL)
        (fw / name).chmod(0o755)
    ops = {**world.ops, **sshd.settings_ops("web1", known_hosts=tmp_path / "known_hosts"),
           "cloudflare": {"zone_id": ""},
           "firewall": {"v4": str(fw / "fake-iptables"), "v6": str(fw / "fake-ip6tables")}}
    return SimpleNamespace(c=ctx(ops), dir=fw, calls=lambda: (fw / "calls").read_text().splitlines()
                           if (fw / "calls").exists() else [],
                           rules=lambda: (fw / "rules").read_text().splitlines() if (fw / "rules").exists() else [])


def test_block_ip_on_a_host_firewall_over_ssh(firewall_host, world, capsys):
    spec = "INPUT -s {} -m comment --comment lottery-ops block-ip -j DROP"
    assert run(incident.block_ip, firewall_host.c, "203.0.113.9", yes=True) == 0
    assert firewall_host.rules() == ["fake-iptables " + spec.format("203.0.113.9")]
    assert run(incident.block_ip, firewall_host.c, "203.0.113.9", yes=True) == 0  # already there: not added twice
    assert run(incident.block_ip, firewall_host.c, "2001:db8::7", yes=True) == 0
    assert firewall_host.rules() == ["fake-iptables " + spec.format("203.0.113.9"),
                                     "fake-ip6tables " + spec.format("2001:db8::7")]
    calls = len(firewall_host.calls())
    assert run(incident.block_ip, firewall_host.c, "203.0.113.9", unblock=True, dry_run=True) == 0
    assert [c.split()[1] for c in firewall_host.calls()[calls:]] == ["-C"]  # only the read-only check
    assert run(incident.block_ip, firewall_host.c, "203.0.113.9", unblock=True, yes=True) == 0
    assert firewall_host.rules() == ["fake-ip6tables " + spec.format("2001:db8::7")]
    out = capsys.readouterr().out
    assert "host web1: blocked 203.0.113.9" in out and "host web1: 203.0.113.9 is already blocked there" in out
    assert "host web1: dry run: would run `" in out and "host web1: unblocked 203.0.113.9" in out
    assert world.api.calls("POST") == []  # no Cloudflare zone: only the host


def test_block_ip_reports_a_host_that_fails_and_still_does_the_rest(firewall_host, world, capsys):
    ops = dict(firewall_host.c.config.ops)
    ops = {**yaml.safe_load(yaml.safe_dump(_plain(ops))), "cloudflare": world.ops["cloudflare"],
           "firewall": {"v4": "/nonexistent/iptables", "v6": "/nonexistent/ip6tables"}}
    assert run(incident.block_ip, ctx(ops), "198.51.100.77", yes=True) == 1
    out = capsys.readouterr().out
    assert "host web1: FAILED" in out and "install it or set ops.firewall.v4/v6" in out
    assert [r["configuration"]["value"] for r in world.api.cloudflare.rules] == ["198.51.100.77"]


def _plain(value):
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- escalate -------------------------------------------------------------------------------------------------------
def test_escalate_opens_an_urgent_issue_with_the_latest_diagnosis(world, capsys):
    world.api.render.add_deploy("build_failed", created_at=ago(minutes=12))
    world.api.app.set("/health", status=503)
    run(incident.app_down, world.c)
    record = world.state / "incidents" / "2024-05-01-restore.md"
    record.parent.mkdir(parents=True)
    record.write_text("# Incident 2024-05-01\n\n- 14:10 restore started\n")
    capsys.readouterr()
    assert run(incident.escalate, world.c, title="App down: deploy failed") == 0
    (issue,) = [i for i in world.api.github.issues if i["title"] == "App down: deploy failed"]
    assert {label["name"] for label in issue["labels"]} == {"production", "urgent"}
    assert "## Latest diagnosis: `inv emergency.app-down`" in issue["body"]
    assert "VERDICT: deploy failed at" in issue["body"] and "roll back to" in issue["body"]
    assert "## Incident record (2024-05-01-restore.md)" in issue["body"] and "14:10 restore started" in issue["body"]
    for secret in world.api.env().values():
        assert secret not in issue["body"]
    assert f"opened {issue['html_url']}" in capsys.readouterr().out


def test_escalate_finds_the_record_where_emergency_restore_writes_it(world, tmp_path, capsys):
    records = tmp_path / "records"
    records.mkdir()
    (records / "emergency-restore-old.md").write_text("# old incident\n")
    os.utime(records / "emergency-restore-old.md", (1, 1))
    (records / "emergency-restore-new.md").write_text("# Restore of production from backup-20240501\n")
    ops = {**world.ops, "emergency": {"record_dir": str(records)}}
    assert run(incident.escalate, ctx(ops), title="Restored production", dry_run=True) == 0
    out = capsys.readouterr().out
    assert "## Incident record (emergency-restore-new.md)" in out and "old incident" not in out


def test_escalate_dry_run_and_without_a_diagnosis(world, capsys):
    assert run(incident.escalate, world.c, title="Payments failing", dry_run=True) == 0
    out = capsys.readouterr().out
    assert "labels: production, urgent" in out and "No diagnosis was run recently on this machine" in out
    assert world.api.calls("POST") == [] and world.api.github.issues == []


# -- as the operator runs them ----------------------------------------------------------------------------------------
def inv(*args: str, env: dict, stdin: str = "", cwd: Path = ROOT, new_session: bool = False):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INVOKE_"))} | env
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=full, input=stdin, text=True,
                          capture_output=True, timeout=120, start_new_session=new_session)


@pytest.fixture
def cli(world, tmp_path):
    config = tmp_path / "ops.yaml"
    config.write_text(yaml.safe_dump({"ops": world.ops}))
    env = world.api.env() | {"DATABASE_URL": world.db, "NO_PROXY": "127.0.0.1,localhost"}
    return SimpleNamespace(config=str(config), env=env)


def test_cli_restart_asks_on_stdin(cli, world):
    declined = inv("-f", cli.config, "emergency.restart", env=cli.env, stdin="no\n")
    assert declined.returncode == 1 and "not confirmed: nothing was changed" in declined.stderr
    assert world.api.render.restarts == 0
    done = inv("-f", cli.config, "emergency.restart", env=cli.env, stdin="y\n")
    assert done.returncode == 0, done.stderr
    assert world.api.render.restarts == 1 and "restart requested" in done.stdout


def test_cli_rotate_secret_without_a_terminal_needs_yes(cli, world):
    result = inv("-f", cli.config, "emergency.rotate-secret", "API_SECRET", env=cli.env, stdin="v4lue\n",
                 new_session=True)
    assert result.returncode == 1 and "run it again with --yes" in result.stderr
    assert world.api.calls("PUT") == []
    result = inv("-f", cli.config, "emergency.rotate-secret", "API_SECRET", "--yes", env=cli.env, stdin="v4lue\n",
                 new_session=True)
    assert result.returncode == 0, result.stderr
    assert world.api.github.secret_value("API_SECRET") == "v4lue"


def test_cli_app_down_exit_status_and_no_secrets(cli, world):
    world.api.app.down()
    result = inv("-f", cli.config, "emergency.app-down", env=cli.env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "VERDICT:" in result.stdout
    for secret in world.api.env().values():
        assert secret not in result.stdout + result.stderr
