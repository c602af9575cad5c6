"""`inv emergency.restore` end to end: real PostgreSQL ("production", "staging", a source the backup is dumped
from), the fake GitHub/Render/Sentry/app, real pg_dump/psql. Failures are injected at each step; after every one
the app must be out of maintenance (asserted on the fake Render's request records) and production either fully
restored or exactly as it was (per-table counts and an md5 checksum of every row)."""
from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

from ops import approval, audit, emergency_restore, incident_record, tokens
from ops.config import Settings
from ops.emergency_restore import Options, Recipe
from ops.errors import OpsError

ROOT = Path(__file__).resolve().parent.parent
TAG = "backup-20250615_020000"
PASSWORD = "Pw-hunter2-Prod-Secret"          # trust auth ignores it; it must never be printed
SUSPEND, RESUME = r"/suspend$", r"/resume$"

SCHEMA = """
CREATE TABLE "User" (id serial PRIMARY KEY, email text NOT NULL UNIQUE, "createdAt" timestamptz NOT NULL);
CREATE TABLE ticket (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES "User"(id), numbers int[], note text);
CREATE TABLE audit_log (id serial PRIMARY KEY, what text);
"""


def seed(url: str, users: int, tickets: int, audit_rows: int, *, day: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("""INSERT INTO "User" (email, "createdAt")
                        SELECT 'u' || i || '@example.com', %s::timestamptz + i * interval '1 minute'
                          FROM generate_series(1, %s) i""", (day, users))
        conn.execute("""INSERT INTO ticket (user_id, numbers, note)
                        SELECT 1 + i %% %s, ARRAY[i, i + 1], E'ERROR\\tFATAL\\nline ' || i || ' \\\\ done'
                          FROM generate_series(1, %s) i""", (users, tickets))
        conn.execute("INSERT INTO audit_log (what) SELECT 'x' || i FROM generate_series(1, %s) i", (audit_rows,))


def dump_backup(url: str) -> bytes:
    """The nightly job's way: pg_dump --no-owner --no-privileges --clean --if-exists | gzip -9."""
    from ops import pg

    env = pg.tool_env(url, os.environ)
    out = subprocess.run(["pg_dump", "-w", "--no-owner", "--no-privileges", "--clean", "--if-exists"],
                         env=env, capture_output=True, check=True)
    return gzip.compress(out.stdout, compresslevel=9)


def state_of(url: str) -> dict[str, tuple[int, str]]:
    """Per table in public: (rows, md5 of every row in order): equal before and after means unchanged."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1").fetchall()]
        out = {}
        for t in tables:
            q = sql.SQL("SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {} x")
            out[t] = tuple(conn.execute(q.format(sql.Identifier("public", t))).fetchone())
        return out


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


@dataclass
class World:
    settings: Settings
    prod: str                 # production URL (with the password)
    dbname: str
    sha: str
    key: Ed25519PrivateKey
    key_file: Path
    tmp: Path
    fake: Any
    backup_state: dict
    prod_state: dict

    def token(self, *, tag=TAG, sha=None, ttl="30m", key=None, target=None, now=None, action="restore"):
        params = {"target": target or approval.production_identity(self.settings), "tag": tag,
                  "sha256": sha or self.sha}
        return tokens.mint(key or self.key, action, params, ttl, "disk died", time.time() if now is None else now)

    def secrets(self) -> list[str]:
        return [PASSWORD, *self.fake.env().values()]


@pytest.fixture
def world(tmp_path, fake_api, make_db) -> World:
    source, prod, staging = make_db("source"), make_db("production"), make_db("staging")
    seed(source, 20, 40, 0, day="2025-06-14")
    data = dump_backup(source)
    backup_state = state_of(source)
    seed(prod, 25, 50, 3, day="2025-06-14")               # production moved on since the backup
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("""UPDATE "User" SET email = 'changed@example.com' WHERE id = 2""")
    fake_api.github.add_backup(TAG, data)
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "alice.key"
    key_file.write_bytes(approval.private_key_bytes(key))
    key_file.chmod(0o600)
    ops = fake_api.settings_ops()
    ops |= {
        "audit_log": str(tmp_path / "state" / "audit.jsonl"),
        "approval": {"public_keys": [tokens.format_public_key(tokens.raw_public(key), "alice")]},
        "verify": {"recent": [{"table": '"User"', "column": '"createdAt"'}]},
        "restore": {"schemas": ["public"], "lock_timeout": "5s", "backup_dir": str(tmp_path / "backups")},
        "emergency": {"snapshot_dir": str(tmp_path / "snapshots"), "record_dir": str(tmp_path / "incidents"),
                      "health_timeout": 2, "health_interval": 0.05},
    }
    env = {**fake_api.env(), "DATABASE_URL": with_password(prod), "STAGING_DATABASE_URL": staging}
    settings = Settings.from_dict(ops=ops, env=env)
    return World(settings, with_password(prod), prod.rsplit("/", 1)[1], hashlib.sha256(data).hexdigest(), key,
                 key_file, tmp_path, fake_api, backup_state, state_of(prod))


@dataclass
class Ran:
    code: int
    output: str
    recipe: Recipe
    error: OpsError | None


def run(world: World, token: str | None = "default", *, settings: Settings | None = None, ask=None, now=None,
        **opts) -> Ran:
    lines: list[str] = []
    opts.setdefault("confirm", world.dbname)
    opts.setdefault("tag", TAG)
    token = world.token() if token == "default" else token
    extra = {"now": now} if now is not None else {}
    recipe = Recipe(settings or world.settings, Options(approve=token, **opts), out=lines.append, ask=ask, **extra)
    try:
        recipe.run()
        code, error = 0, None
    except OpsError as exc:
        code, error = exc.exit_code, exc
        lines.append(str(exc))
    return Ran(code, "\n".join(lines), recipe, error)


def posts(fake, path) -> int:
    return len(fake.calls("POST", path))


def assert_no_secret(world: World, *texts: str) -> None:
    for text in texts:
        for secret in world.secrets():
            assert secret not in text


def assert_resumed(world: World) -> None:
    assert world.fake.render.service["suspended"] == "not_suspended"
    assert posts(world.fake, RESUME) == posts(world.fake, SUSPEND) >= 1


def record_of(ran: Ran) -> str:
    assert ran.recipe.record_path is not None and ran.recipe.record_path.is_file()
    assert f"incident record: {ran.recipe.record_path}" in ran.output
    return ran.recipe.record_path.read_text()


# -- the happy path ---------------------------------------------------------------------------------------------------
def test_happy_path_restores_production_and_records_everything(world):
    world.fake.github.add_backup("backup-20250614_020000", b"not this one")
    ran = run(world, skip_rehearsal=None)
    assert ran.code == 0, ran.output
    assert state_of(world.prod) == world.backup_state            # production now holds exactly the backup
    assert_resumed(world)
    assert posts(world.fake, SUSPEND) == 1
    out = ran.output
    for title in ("0  approval and guard", "1  download and verify", "1b rehearsal", "2  snapshot production",
                  "3  maintenance mode", "4a end the sessions", "4  restore into production", "5  verify",
                  "6  leave maintenance", "7  post-restore verification"):
        assert f"[{title}" in out
    assert "Result: restored, every check passed" in out
    assert "20 more rows now than in the backup" not in out and "5 more rows now than in the backup" in out
    # the rehearsal ran on staging (none was on record) and is now on record
    assert any(e["action"] == "restore.test" and e["details"]["sha256"] == world.sha and e["outcome"] == "pass"
               for e in audit.entries(world.settings))
    # the snapshot holds production as it was, and is a verified backup
    snap = ran.recipe.snapshot
    assert snap.path.is_file() and f"snapshot: {snap.path}" in out
    assert b'COPY public."User"' in gzip.decompress(snap.path.read_bytes()) or b"COPY public.\"User\"" in \
        gzip.decompress(snap.path.read_bytes())
    # audit: every step, the approval used once, the chain intact
    entries = audit.entries(world.settings)
    actions = [e["action"] for e in entries]
    assert actions.count(approval.USED) == 1 and audit.verify(world.settings) == []
    final = [e for e in entries if e["action"] == "emergency.restore"][-1]
    assert final["outcome"] == "OK" and final["details"]["exit_code"] == 0
    assert final["details"]["approver"] == "alice" and final["details"]["nonce"]
    assert final["target"] and PASSWORD not in final["target"]
    record = record_of(ran)
    assert "restored, every check passed" in record and TAG in record and "alice" in record
    assert "| public.User | 25 | 20 |" in record
    assert_no_secret(world, out, world.settings.audit_log.read_text(), record)


def test_a_rehearsal_on_record_is_not_run_again(world):
    audit.record(world.settings, "restore.test", target="scratch", outcome="pass", passed=True, sha256=world.sha)
    ran = run(world)
    assert ran.code == 0, ran.output
    assert "a passing restore.test of this SHA-256 is on record" in ran.output
    assert [e["action"] for e in audit.entries(world.settings)].count("restore.test") == 1


def test_skip_rehearsal_is_recorded_with_its_reason(world):
    ran = run(world, skip_rehearsal="staging is down too")
    assert ran.code == 0, ran.output
    steps = [e for e in audit.entries(world.settings) if e["action"] == "emergency.restore.rehearsal"]
    assert steps[0]["outcome"] == "skipped" and "staging is down too" in steps[0]["details"]["detail"]
    assert "Rehearsal skipped:** staging is down too" in record_of(ran)


def test_interactive_confirmation_and_a_wrong_name_refuses(world):
    asked = []
    ran = run(world, confirm=None, skip_rehearsal="test", ask=lambda prompt: asked.append(prompt) or "lottery")
    assert ran.code == 3 and "typed 'lottery'" in ran.output and world.dbname in asked[0]
    assert state_of(world.prod) == world.prod_state and posts(world.fake, SUSPEND) == 0
    assert approval.USED not in [e["action"] for e in audit.entries(world.settings)]   # the approval is still good
    again = run(world, confirm=None, skip_rehearsal="test", ask=lambda prompt: world.dbname)
    assert again.code == 0, again.output


def test_notify_opens_an_issue_then_comments_and_closes_it(world):
    ran = run(world, notify=True, skip_rehearsal="test")
    assert ran.code == 0, ran.output
    created = world.fake.calls("POST", r"/issues$")
    assert len(created) == 1 and sorted(created[0].json()["labels"]) == ["incident", "production"]
    assert world.fake.calls("POST", r"/issues/\d+/comments$") and world.fake.calls("PATCH", r"/issues/\d+$")
    issue = world.fake.github.issues[-1]
    assert issue["state"] == "closed" and issue["state_reason"] == "completed"
    bodies = [c.body.decode() for c in world.fake.calls(origin="api") if c.method in ("POST", "PATCH")]
    assert_no_secret(world, *bodies)


def test_notify_on_a_failed_run_comments_the_outcome_and_leaves_the_issue_open(world):
    world.fake.app.set("/health", status=503)
    ran = run(world, notify=True, skip_rehearsal="test")
    assert ran.code == 1, ran.output
    [comment] = world.fake.calls("POST", r"/issues/\d+/comments$")
    assert "a check failed" in comment.json()["body"]
    assert not world.fake.calls("PATCH", r"/issues/\d+$")         # not closed, "not planned" or otherwise
    assert world.fake.github.issues[-1]["state"] == "open"
    assert "left open" in ran.output


def test_maintenance_page_mode(world):
    ran = run(world, maintenance="page", skip_rehearsal="test")
    assert ran.code == 0, ran.output
    patches = world.fake.calls("PATCH", r"/services/[^/]+$")
    assert [p.json()["serviceDetails"]["maintenanceMode"]["enabled"] for p in patches] == [True, False]
    assert posts(world.fake, SUSPEND) == 0


def test_keep_suspended_leaves_the_app_suspended_and_says_so(world):
    ran = run(world, keep_suspended=True, skip_rehearsal="test")
    assert ran.code == 0, ran.output
    assert world.fake.render.service["suspended"] == "suspended" and posts(world.fake, RESUME) == 0
    assert "--keep-suspended" in ran.output and "/resume" in ran.output


def test_sessions_still_connected_are_shown_then_ended_so_the_restore_is_not_blocked(world):
    pooler = psycopg.connect(world.prod, application_name="pgbouncer")
    pooler.execute('SELECT count(*) FROM "User"')            # idle in transaction, holding a lock on "User"
    try:
        ran = run(world, skip_rehearsal="test")
    finally:
        try:
            pooler.close()
        except psycopg.Error:
            pass
    assert ran.code == 0, ran.output
    plan = ran.output.split("sessions to end before the restore (1):")[1]
    assert "(pgbouncer), idle in transaction" in plan.splitlines()[1]
    assert "ended 1 session(s): pid" in ran.output and "could not end" not in ran.output
    assert state_of(world.prod) == world.backup_state


def test_the_snapshot_puts_production_back(world):
    from datetime import datetime, timezone

    same_second = datetime.now(timezone.utc)
    first = run(world, skip_rehearsal="test", now=lambda: same_second)
    assert first.code == 0 and state_of(world.prod) == world.backup_state
    snap = first.recipe.snapshot
    token = world.token(tag=snap.label, sha=snap.sha256)      # what the printed instructions ask the approver for
    undo = run(world, token, tag=snap.label, file=str(snap.path), skip_rehearsal="pre-restore snapshot",
               now=lambda: same_second)                       # both runs in one second: snapshots must not collide
    assert undo.code == 0, undo.output
    assert state_of(world.prod) == world.prod_state           # exactly as before the first restore


# -- dry run -----------------------------------------------------------------------------------------------------------
def test_dry_run_checks_everything_changes_nothing_and_keeps_the_approval(world):
    token = world.token()
    ran = run(world, token, dry_run=True, confirm=None)
    assert ran.code == 0, ran.output
    assert "DRY RUN - Emergency restore plan" in ran.output and "production now" in ran.output
    assert state_of(world.prod) == world.prod_state
    assert world.fake.calls("POST") == [] and world.fake.calls("PATCH") == [] and world.fake.calls("PUT") == []
    assert world.fake.calls("GET", r"/services/")                      # Render was reached
    assert not (world.tmp / "snapshots").exists() or not any((world.tmp / "snapshots").iterdir())
    assert approval.USED not in [e["action"] for e in audit.entries(world.settings)]
    assert run(world, token, skip_rehearsal="test").code == 0          # the same approval still works


# -- refusals: exit 3, nothing touched ---------------------------------------------------------------------------------
def _other_key(world):
    return Ed25519PrivateKey.generate()


REFUSALS = {
    "no-token": lambda w: None,
    "expired": lambda w: w.token(ttl="1s", now=time.time() - 120),
    "wrong-target": lambda w: w.token(target="postgres@db.example.com:5432/lottery"),
    "wrong-tag": lambda w: w.token(tag="backup-20250614_020000"),
    "wrong-sha256": lambda w: w.token(sha="cd" * 32),
    "bad-signature": lambda w: w.token()[:-6] + ("AAAAAA" if not w.token().endswith("AAAAAA") else "BBBBBB"),
    "unknown-key": lambda w: w.token(key=_other_key(w)),
    "malformed": lambda w: "opsapprove1.not-a-token",
    "wrong-action": lambda w: tokens.mint(w.key, "terminate-idle",
                                          {"target": approval.production_identity(w.settings), "minutes": "5"},
                                          "30m", "", time.time()),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_exits_3_and_touches_nothing(world, case):
    ran = run(world, REFUSALS[case](world), skip_rehearsal="test")
    assert ran.code == 3, ran.output
    assert state_of(world.prod) == world.prod_state
    assert world.fake.calls("POST") == [] and world.fake.calls("PATCH") == []
    assert not (world.tmp / "snapshots").exists()
    assert approval.USED not in [e["action"] for e in audit.entries(world.settings)]
    assert "Result: refused: nothing was changed" in ran.output
    assert_no_secret(world, ran.output, world.settings.audit_log.read_text())


def test_no_token_explains_how_to_get_one(world):
    ran = run(world, None)
    assert ran.code == 3
    assert "one of the configured approvers (alice) - not you" in ran.output
    assert f"inv emergency.approve --tag {TAG}" in ran.output and "OPS_APPROVER_KEY=" in ran.output


def test_replayed_token_is_refused(world):
    token = world.token()
    assert run(world, token, skip_rehearsal="test").code == 0
    state = state_of(world.prod)
    calls = len(world.fake.calls("POST"))
    again = run(world, token, skip_rehearsal="test")
    assert again.code == 3 and "replayed" in again.output
    assert state_of(world.prod) == state and len(world.fake.calls("POST")) == calls


def test_self_approval_is_refused(world):
    settings = Settings.from_dict(ops=dict(world.settings.ops),
                                  env={**world.settings.env, "OPS_APPROVER_KEY": str(world.key_file)})
    ran = run(world, settings=settings, skip_rehearsal="test")
    assert ran.code == 3 and "self-approved" in ran.output and world.fake.calls("POST") == []


# -- failures injected at each step: the app comes back, production is whole -------------------------------------------
def test_download_failure_stops_before_anything(world):
    world.fake.fail(r"/releases/assets/", status=500, times=None)
    ran = run(world, skip_rehearsal="test")
    assert ran.code == 1 and "before the restore started" in ran.output
    assert posts(world.fake, SUSPEND) == 0 and state_of(world.prod) == world.prod_state


def test_snapshot_failure_means_no_restore(world):
    (world.tmp / "snapshots").write_text("a file where the snapshot directory should be")
    ran = run(world, skip_rehearsal="test")
    assert ran.code == 1 and "cannot create the snapshot directory" in ran.output
    assert posts(world.fake, SUSPEND) == 0 and state_of(world.prod) == world.prod_state
    assert approval.USED not in [e["action"] for e in audit.entries(world.settings)]


def test_suspend_failure_resumes_and_leaves_production_alone(world):
    world.fake.fail(SUSPEND, status=503, times=None, method="POST")
    ran = run(world, skip_rehearsal="test")
    assert ran.code == 1, ran.output
    assert posts(world.fake, RESUME) == 1 and world.fake.render.service["suspended"] == "not_suspended"
    assert state_of(world.prod) == world.prod_state and "was not changed" in ran.output


def test_render_5xx_then_success(world):
    world.fake.fail(SUSPEND, status=502, times=2, method="POST")
    world.fake.fail(RESUME, status=500, times=1, method="POST")
    world.fake.fail(r"/services/[^/]+$", status=503, times=1, method="GET")
    ran = run(world, skip_rehearsal="test")
    assert ran.code == 0, ran.output
    assert posts(world.fake, SUSPEND) == 3 and posts(world.fake, RESUME) == 2
    assert state_of(world.prod) == world.backup_state


def test_suspend_never_confirming_fails_clearly_and_resumes(world):
    world.fake.render.suspend_after_polls = None
    settings = Settings.from_dict(ops={**world.settings.ops,
                                       "render": {**world.settings.ops["render"], "poll_timeout": 0.5}},
                                  env=world.settings.env)
    ran = run(world, settings=settings, skip_rehearsal="test")
    assert ran.code == 1 and "did not show the service suspended within 0.5 s" in ran.output
    assert posts(world.fake, RESUME) == 1 and world.fake.render.service["suspended"] == "not_suspended"
    assert state_of(world.prod) == world.prod_state


def test_restore_failure_rolls_back_resumes_and_says_how_to_undo(world):
    with psycopg.connect(world.prod, autocommit=True) as conn:   # out of scope, depends on a table in scope:
        conn.execute('CREATE SCHEMA reports; CREATE VIEW reports.emails AS SELECT email FROM public."User"')
    before = state_of(world.prod)
    ran = run(world, skip_rehearsal="test")
    assert ran.code == 1, ran.output
    assert state_of(world.prod) == before                          # exactly as before: one transaction
    assert_resumed(world)
    assert "rolled back" in ran.output and "exactly as it was before" in ran.output
    snap = ran.recipe.snapshot
    assert str(snap.path) in ran.output and f"--sha256 {snap.sha256}" in ran.output
    assert "inv emergency.restore --file" in ran.output
    final = [e for e in audit.entries(world.settings) if e["action"] == "emergency.restore"][-1]
    assert final["details"]["state"] == "rolled-back"
    record = record_of(ran)
    assert "rolled back" in record
    assert_no_secret(world, ran.output, world.settings.audit_log.read_text(), record)


def test_verify_failure_after_commit_says_production_is_restored(world):
    settings = Settings.from_dict(ops={**world.settings.ops, "verify": {"recent": [
        {"table": '"User"', "column": '"createdAt"'}, {"table": "audit_log", "column": "id"}]}},
        env=world.settings.env)
    ran = run(world, settings=settings, skip_rehearsal="test")
    assert ran.code == 1, ran.output
    assert state_of(world.prod) == world.backup_state               # it did commit
    assert_resumed(world)
    assert "IS fully restored" in ran.output and "Do not run the restore again" in ran.output
    assert "audit_log has no rows" in ran.output


def test_health_failure_after_restore_is_exit_1_with_data_restored(world):
    world.fake.app.set("/health", status=503)
    ran = run(world, skip_rehearsal="test")
    assert ran.code == 1, ran.output
    assert state_of(world.prod) == world.backup_state
    assert_resumed(world)
    assert "production IS restored from the backup, but a check failed" in ran.output
    assert "FAIL" in ran.output.split("Summary")[-1]


def test_new_sentry_issue_after_the_restore_fails_a_post_check(world):
    from datetime import datetime, timedelta, timezone

    world.fake.sentry.add_issue("TypeError: draw is undefined", first_seen=datetime.now(timezone.utc)
                                + timedelta(seconds=5))
    world.fake.sentry.add_issue("Old problem", first_seen=datetime.now(timezone.utc) - timedelta(days=3))
    ran = run(world, skip_rehearsal="test")
    assert ran.code == 1 and "1 first seen since the restore" in ran.output and "Old problem" not in ran.output


def test_ctrl_c_during_the_restore_still_resumes(world):
    def out(line):
        if line.startswith("[4  restore"):
            raise KeyboardInterrupt
        lines.append(line)

    lines: list[str] = []
    recipe = Recipe(world.settings, Options(approve=world.token(), tag=TAG, confirm=world.dbname,
                                            skip_rehearsal="test"), out=out)
    with pytest.raises(OpsError, match="interrupted"):
        recipe.run()
    assert_resumed(world)
    assert state_of(world.prod) == world.prod_state


def test_ctrl_c_in_the_middle_of_the_restore_leaves_production_whole_and_resumes(world):
    """A real SIGINT while the server is in the big table's COPY (BEGIN and the backup's DROP TABLEs already ran):
    psql is killed before COMMIT, so production is exactly as before and the run says so (rolled back, not
    "unknown"); the app is resumed; the run fails (exit 1)."""
    import signal
    import threading

    with psycopg.connect(world.prod, autocommit=True) as conn:       # a big backup makes a long restore
        conn.execute("INSERT INTO audit_log (what) SELECT repeat('y', 100) || i FROM generate_series(1, 300000) i")
    big = dump_backup(world.prod)
    with psycopg.connect(world.prod, autocommit=True) as conn:
        conn.execute("DELETE FROM audit_log WHERE id > 1000")
    before = state_of(world.prod)
    tag = "backup-20250616_020000"
    world.fake.github.add_backup(tag, big)
    main = threading.main_thread().ident
    lines: list[str] = []
    done, sent = threading.Event(), threading.Event()

    def interrupt_in_copy():
        with psycopg.connect(world.prod, autocommit=True) as watch:
            while not done.wait(0.01):
                if watch.execute("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'lottery-ops restore %' "
                                 "AND state = 'active' AND query LIKE 'COPY public.audit_log%'").fetchone():
                    signal.pthread_kill(main, signal.SIGINT)
                    sent.set()
                    return

    def out(line):
        lines.append(line)
        if line.startswith("[4  restore"):
            threading.Thread(target=interrupt_in_copy, daemon=True).start()

    token = world.token(tag=tag, sha=hashlib.sha256(big).hexdigest())
    recipe = Recipe(world.settings, Options(approve=token, tag=tag, confirm=world.dbname, skip_rehearsal="test"),
                    out=out)
    try:
        with pytest.raises(OpsError) as info:
            recipe.run()
    finally:
        done.set()
    assert sent.is_set(), "the restore never reached the big table's COPY"
    assert info.value.exit_code == 1
    assert state_of(world.prod) == before
    assert_resumed(world)
    step = next(e for e in audit.entries(world.settings) if e["action"] == "emergency.restore.restore")
    assert step["outcome"] == "failed" and "interrupted (Ctrl-C) before COMMIT" in step["details"]["detail"]
    assert recipe.state.value == "rolled-back"
    text = "\n".join(lines)
    assert "rolled back" in text and "is exactly as it was before" in text and "never half" not in text


# -- the CLI -----------------------------------------------------------------------------------------------------------
def inv(*args: str, env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=300)


def test_cli_end_to_end_and_audit_verify(world):
    config = world.tmp / "ops.yaml"
    config.write_text(yaml.safe_dump({"ops": dict(world.settings.ops)}))
    env = dict(world.settings.env)
    refused = inv("-f", str(config), "emergency.restore", env=env, home=world.tmp)
    assert refused.returncode == 3 and "emergency.approve --tag" in refused.stderr
    token = world.token()
    done = inv("-f", str(config), "emergency.restore", "--approve", token, "--confirm", world.dbname,
               "--skip-rehearsal", "cli test", env=env, home=world.tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "incident record:" in done.stdout and "Result: restored, every check passed" in done.stdout
    assert state_of(world.prod) == world.backup_state
    assert_no_secret(world, done.stdout, done.stderr, refused.stdout, refused.stderr)
    assert token not in done.stdout + done.stderr + world.settings.audit_log.read_text()
    ok = inv("-f", str(config), "emergency.audit", "--verify", env=env, home=world.tmp)
    assert ok.returncode == 0 and "hash chain intact" in ok.stdout
    record = Path(done.stdout.split("incident record: ")[1].split()[0])
    run_id = record.name.removeprefix("emergency-restore-").removesuffix(".md")
    written = record.read_text()
    record.unlink()
    again = inv("-f", str(config), "emergency.audit", "--record", run_id, env=env, home=world.tmp)
    assert again.returncode == 0 and again.stdout.strip() == str(record) and record.read_text() == written
    shown = inv("-f", str(config), "emergency.audit", "--run", run_id, env=env, home=world.tmp)
    assert shown.returncode == 0 and '"emergency.restore.restore"' in shown.stdout
    assert_no_secret(world, written, shown.stdout)
    assert token not in written
    log = world.settings.audit_log
    lines = log.read_text().splitlines()
    lines[2] = lines[2].replace('"outcome": "ok"', '"outcome": "OK!"', 1) if '"outcome": "ok"' in lines[2] else \
        lines[2].replace('"user": "', '"user": "x', 1)
    log.write_text("\n".join(lines) + "\n")
    broken = inv("-f", str(config), "emergency.audit", "--verify", env=env, home=world.tmp)
    assert broken.returncode == 1 and "not intact" in broken.stderr


def test_a_dry_run_leaves_a_record_saying_so(world):
    ran = run(world, dry_run=True, confirm=None)
    md = record_of(ran)
    assert md == incident_record.render(audit.entries(world.settings), ran.recipe.run_id)
    assert "Dry run:** nothing was changed" in md and world.sha in md and "dry run: nothing was changed" in md
