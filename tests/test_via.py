"""`--via HOST` against a real sshd on 127.0.0.1 (the "bastion") and real PostgreSQL.

The bastion is this machine reached over SSH, so what it does is visible here: its processes in /proc (to show the
password is on no command line), and the database it reaches is the one the tests can also reach directly (to
compare a restore through the bastion with a direct one, row for row).
"""
from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import invoke
import psycopg
import pytest
from invoke import Config, Context
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ops import audit, guard, pg, restore, restorer, sandbox, via
from ops.config import Settings
from ops.errors import ConfigError, GuardRefused
from tests.fix_pwpg import password_role, pw_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("no_ssh_config")
FLAGS = ["--no-owner", "--no-privileges", "--clean", "--if-exists"]


# -- helpers ----------------------------------------------------------------------------------------------------------
def make_backup(url: str, path: Path) -> Path:
    env = pg.tool_env(url, os.environ)
    dump = subprocess.run(["pg_dump", "-w", *FLAGS], env=env, capture_output=True, check=True, timeout=300).stdout
    path.write_bytes(gzip.compress(dump, 6))
    return path


def checksums(url: str) -> dict[str, str]:
    """md5 over every row of every public table: equal only if every value is equal."""
    with psycopg.connect(url) as conn:
        tables = conn.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE c.relkind = 'r' AND n.nspname = 'public'").fetchall()
        return {t: conn.execute(sql.SQL("SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                                        "FROM {} x").format(sql.Identifier("public", t))).fetchone()[0]
                for (t,) in tables}


def ops_for(sshd, tmp_path: Path, **extra) -> dict:
    return {"audit_log": str(tmp_path / "audit.jsonl"), **sshd.settings_ops(known_hosts=tmp_path / "known_hosts"),
            "restore": {"lock_timeout": "5s", "backup_dir": str(tmp_path / "backups")}, **extra}


def ctx(ops: dict) -> Context:
    return Context(Config(overrides={"ops": ops}))


def exit_code(fn, *args, **kwargs) -> int:
    try:
        fn(*args, **kwargs)
    except invoke.Exit as exc:
        return exc.code
    return 0


@contextlib.contextmanager
def unreachable_from_here(*urls: str, prefixes: tuple[str, ...] = ()):
    """Inside the block, this process cannot reach these databases (nor any whose name starts with a prefix):
    psycopg and a local psql or pg_dump refuse them, as on a laptop where only the bastion reaches the database.
    (The bastion, a separate sshd process, is unaffected.) Yields the list of attempts, which should stay empty."""
    names = {conninfo_to_dict(u)["dbname"] for u in urls}
    blocked = lambda name: bool(name) and (name in names or name.startswith(prefixes or ("\0",)))  # noqa: E731
    real_connect, real_popen = psycopg.connect, subprocess.Popen
    attempts: list[str] = []

    def connect(conninfo: str = "", **kw):
        name = kw.get("dbname") or conninfo_to_dict(conninfo).get("dbname")
        if blocked(name):
            attempts.append(f"psycopg -> {name}")
            raise psycopg.OperationalError(f"{name} is unreachable from here (only the bastion reaches it)")
        return real_connect(conninfo, **kw)

    class Popen(real_popen):
        def __init__(self, args, *a, **kw):
            tool, name = Path(str(list(args)[0])).name, (kw.get("env") or {}).get("PGDATABASE")
            if tool in ("psql", "pg_dump") and blocked(name):
                attempts.append(f"{tool} -> {name}")
                raise OSError(f"{name} is unreachable from here (only the bastion reaches it)")
            super().__init__(args, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(psycopg, "connect", connect)
        mp.setattr(subprocess, "Popen", Popen)
        yield attempts


@pytest.fixture(scope="module")
def lottery(pg_server, tmp_path_factory):
    """A lottery-shaped source database (the sandbox's seed) and its backup, made with pg_dump | gzip."""
    name = f"viasrc_{os.urandom(4).hex()}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = pg_server.url(name)
    try:
        sandbox.seed(url, users=300)
        path = make_backup(url, tmp_path_factory.mktemp("via") / "backup_20250101_020000.sql.gz")
        yield type("Source", (), {"url": url, "path": path, "counts": pg.table_counts(url, ["public"]),
                                  "sums": checksums(url)})
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def bastion(sshd, tmp_path):
    settings = Settings.from_dict(ops=ops_for(sshd, tmp_path))
    with via.reach(settings, "box") as db:
        yield db


# -- pure -------------------------------------------------------------------------------------------------------------
def test_bind_writes_parameters_as_sql_literals():
    assert via.bind("SELECT %s, %s, 100%%", ["it's", None]) == "SELECT 'it''s', NULL, 100%"
    assert via.bind("x = ANY(%(s)s::text[]) AND y = %(n)s", {"s": ["a", "b"], "n": 5}) == \
        "x = ANY('{a,b}'::text[]) AND y = 5"
    with pytest.raises(ConfigError):
        via.bind("SELECT %(missing)s", {})


def test_json_rows_keeps_every_column_in_order():
    assert via.json_rows('[{"?column?":1,"?column?":"a","x":[1,2]}, \n {"?column?":2,"?column?":null,"x":[]}]') \
        == [[1, "a", [1, 2]], [2, None, []]]
    assert via.json_rows("") == []


def test_parse_addresses_reads_ip_hostname_and_getent_but_not_broadcasts():
    text = "\n".join([
        "## ip",
        "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever",
        "2: eth0    inet 10.0.4.7/24 brd 10.0.4.255 scope global eth0\\       valid_lft forever",
        "2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever",
        "## hostname", "10.0.4.7 192.168.9.9 ",
        "## getent", "10.0.4.7       STREAM bastion", "10.0.4.7       DGRAM",
    ])
    assert via.parse_addresses(text) == frozenset({"127.0.0.1", "10.0.4.7", "fe80::1", "192.168.9.9"})


# -- the bastion answers as this machine would ------------------------------------------------------------------------
def test_bastion_queries_match_the_direct_ones(bastion, lottery, make_db):
    direct = via.Direct(None)
    empty = make_db("empty")
    assert bastion.server_version(lottery.url) == direct.server_version(lottery.url)
    for url, schemas in ((lottery.url, None), (lottery.url, ("public",)), (lottery.url, ("nope",)), (empty, None)):
        assert bastion.table_counts(url, schemas) == direct.table_counts(url, schemas)
    recent = [{"table": '"Ticket"', "column": '"createdAt"'}, {"table": "no_such", "column": "x"},
              {"table": '"Ticket"', "column": "no_such_column"}, {"table": "not a name!", "column": "x"}]
    got, want = bastion.recent_data(lottery.url, recent), direct.recent_data(lottery.url, recent)
    assert [sorted(g) for g in got] == [sorted(w) for w in want]
    assert [(g.get("rows"), g.get("newest"), bool(g.get("error"))) for g in got] == \
        [(w.get("rows"), w.get("newest"), bool(w.get("error"))) for w in want]
    assert 'column "no_such_column" does not exist' in got[2]["error"]
    target = guard.judge(Settings.from_dict(), lottery.url)
    caps, local = bastion.capabilities(target), restorer.capabilities(target, restorer.RestorePlan(lottery.path))
    assert replace(caps, free_bytes=local.free_bytes, psql=local.psql) == local
    assert bastion.find_psql()[1] == local.psql_version


def test_bastion_vantage_resolves_and_reads_the_marker_there(bastion, make_db):
    url = make_db("marked")
    v = bastion.vantage
    assert "127.0.0.1" in v.local_addresses() and "127.0.0.1" in v.resolve("localhost")
    assert v.read_marker("", pg.env_for(url)) is None
    guard.mark(Settings.from_dict(), "production", url)
    target = guard.judge(Settings.from_dict(), url, vantage=v)
    assert target.marker == "production" and target.is_production
    assert "the bastion 127.0.0.1" in v.name


# -- restore.staging --via --------------------------------------------------------------------------------------------
def test_restore_through_via_gives_the_same_rows_as_a_direct_one(sshd, lottery, make_db, tmp_path, monkeypatch,
                                                                  capsys):
    ops = ops_for(sshd, tmp_path)
    direct_db, via_db = make_db("staging_direct"), make_db("staging_via")
    monkeypatch.setenv("STAGING_DATABASE_URL", direct_db)
    restore.staging(ctx(ops), file=str(lottery.path), yes=True)
    monkeypatch.setenv("STAGING_DATABASE_URL", via_db)
    capsys.readouterr()
    with unreachable_from_here(via_db) as attempts:
        restore.staging(ctx(ops), file=str(lottery.path), yes=True, via="box")
    assert attempts == []
    out = capsys.readouterr().out
    assert pg.table_counts(via_db, ["public"]) == pg.table_counts(direct_db, ["public"]) == lottery.counts
    assert checksums(via_db) == checksums(direct_db) == lottery.sums
    assert "through the bastion 127.0.0.1" in out
    assert "psql on the bastion 127.0.0.1: psql exited 0 after" in out     # psql's exit status, reported
    assert "analyze" in out and "on the bastion" in out
    with psycopg.connect(via_db) as conn:   # ANALYZE ran there: the planner has statistics
        assert conn.execute("SELECT count(*) FROM pg_stats WHERE schemaname = 'public'").fetchone()[0] > 0
    entry = [e for e in audit.entries(Settings.from_dict(ops=ops)) if e["action"] == "restore.staging"][-1]
    assert entry["outcome"] == "ok" and entry["details"]["via"] == "the bastion 127.0.0.1"


def test_a_failing_restore_through_via_reports_psql_and_changes_nothing(sshd, lottery, make_db, tmp_path,
                                                                        monkeypatch, capsys):
    target = make_db("staging_fail")
    with psycopg.connect(target, autocommit=True) as conn:   # out of scope, depends on a table the restore drops
        conn.execute('CREATE TABLE public."User" (id int); INSERT INTO public."User" VALUES (1);'
                     'CREATE SCHEMA reports; CREATE VIEW reports.v AS SELECT id FROM public."User"')
    before = checksums(target)
    monkeypatch.setenv("STAGING_DATABASE_URL", target)
    with unreachable_from_here(target):
        assert exit_code(restore.staging, ctx(ops_for(sshd, tmp_path)), file=str(lottery.path), yes=True,
                         via="box") == 1
    out = capsys.readouterr().out
    assert "psql on the bastion 127.0.0.1: psql exited 3" in out and "ERROR:" in out
    assert checksums(target) == before


def test_a_dry_run_through_via_sends_nothing(sshd, lottery, make_db, tmp_path, monkeypatch, capsys):
    target = make_db("staging_dry")
    monkeypatch.setenv("STAGING_DATABASE_URL", target)
    restore.staging(ctx(ops_for(sshd, tmp_path)), file=str(lottery.path), dry_run=True, via="box")
    assert "plan (dry run: nothing was changed)" in capsys.readouterr().out
    assert pg.table_counts(target) == {}


def test_a_production_target_through_via_exits_3_and_touches_nothing(sshd, lottery, production_url, make_db,
                                                                     tmp_path, monkeypatch, capsys):
    ops = ops_for(sshd, tmp_path)
    with psycopg.connect(production_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE keep (x int); INSERT INTO keep VALUES (1), (2)")
    marked = make_db("stg")               # a harmless name, but marked production inside the database
    guard.mark(Settings.from_dict(), "production", marked)
    for url, why in ((production_url, "contains 'production'"), (marked, "marked production")):
        before = pg.table_counts(url)
        monkeypatch.setenv("STAGING_DATABASE_URL", url)
        with pytest.raises(invoke.Exit) as refused, unreachable_from_here(url):
            restore.staging(ctx(ops), file=str(lottery.path), yes=True, via="box")
        assert refused.value.code == 3 and why in refused.value.message
        assert pg.table_counts(url) == before
    assert not [e for e in audit.entries(Settings.from_dict(ops=ops)) if e["action"] == "restore.staging"]


def test_an_alias_only_the_bastion_resolves_is_still_caught(sshd, make_db, tmp_path):
    """`db-primary.internal` means nothing here, but on the bastion it is production's host. (Simulated: the
    bastion's real vantage, with its resolver taught that one name.)"""
    prod = make_db("app")                                  # DATABASE_URL: production, by identity
    params = psycopg.conninfo.conninfo_to_dict(prod)
    alias = f"postgresql://{params['user']}@db-primary.internal:{params['port']}/{params['dbname']}"
    settings = Settings.from_dict(ops=ops_for(sshd, tmp_path), env={"DATABASE_URL": prod})
    here = guard.judge(settings, alias, read_db_marker=False)
    assert not here.is_production                       # from here: an unknown name, another server
    with via.reach(settings, "box") as db:
        real = db.vantage

        def resolve(name: str) -> frozenset[str]:
            return real.resolve(params["host"]) if name == "db-primary.internal" else real.resolve(name)

        bastion_view = replace(real, resolve=resolve)
        with pytest.raises(GuardRefused) as refused:
            guard.require(settings, alias, action="restore.staging", vantage=bastion_view)
    assert refused.value.exit_code == 3 and "DATABASE_URL points to" in refused.value.message


def test_restore_test_through_via_rehearses_there_and_drops_the_scratch(sshd, lottery, pg_server, tmp_path,
                                                                        monkeypatch, capsys):
    ops = ops_for(sshd, tmp_path)
    monkeypatch.setenv("STAGING_DATABASE_URL", pg_server.url("postgres"))
    with unreachable_from_here(prefixes=(guard.SCRATCH_PREFIX,)) as attempts:
        restore.test(ctx(ops), file=str(lottery.path), via="box")
    assert attempts == []
    assert "PASSED" in capsys.readouterr().out
    (entry,) = [e for e in audit.entries(Settings.from_dict(ops=ops)) if e["action"] == "restore.test"]
    assert entry["details"]["passed"] and entry["details"]["via"] == "the bastion 127.0.0.1"
    assert entry["details"]["tables"] == lottery.counts
    with psycopg.connect(pg_server.admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                            (entry["details"]["scratch"],)).fetchone()[0] == 0


# -- the password -----------------------------------------------------------------------------------------------------
class ProcessWatch(threading.Thread):
    """Looks at every process on the "bastion" (this machine) until stopped: command lines holding `secret`, and the
    names of processes that hold it in their environment as PGPASSWORD."""

    def __init__(self, secret: str):
        super().__init__(daemon=True)
        self.secret = secret.encode()
        self.stopped = threading.Event()
        self.on_command_line: list[bytes] = []
        self.in_environment: set[bytes] = set()

    def run(self) -> None:
        while not self.stopped.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmd, env = (entry / "cmdline").read_bytes(), (entry / "environ").read_bytes()
                except OSError:
                    continue
                if self.secret in cmd:
                    self.on_command_line.append(cmd)
                if b"PGPASSWORD=" + self.secret + b"\0" in env + b"\0":
                    self.in_environment.add(Path(cmd.split(b"\0")[0].decode(errors="replace")).name.encode())

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


def test_the_password_is_on_no_remote_command_line(sshd, lottery, password_role, tmp_path, monkeypatch, capsys):
    url, password = password_role
    monkeypatch.setenv("STAGING_DATABASE_URL", url)
    settings = Settings.from_dict(ops=ops_for(sshd, tmp_path))
    watch = ProcessWatch(password)
    watch.start()
    try:
        with unreachable_from_here(url) as attempts:
            restore.staging(ctx(ops_for(sshd, tmp_path)), file=str(lottery.path), yes=True, via="box")
            with via.reach(settings, "box") as db:     # and the snapshot path: pg_dump there, the file here
                made = db.dump_to(guard.judge(settings, url, vantage=db.vantage), tmp_path / "snap.sql.gz")
    finally:
        watch.stop()
    assert attempts == [] and watch.on_command_line == []
    assert {b"psql", b"pg_dump"} <= watch.in_environment       # delivered, through the environment only
    assert pg.table_counts(url, ["public"]) == lottery.counts  # a scram login that needed the password worked
    assert made.report.ok and made.report.tables == lottery.counts
    out = capsys.readouterr()
    assert password not in out.out + out.err
    assert password not in Path(settings.audit_log).read_text()


# -- emergency.restore --via ------------------------------------------------------------------------------------------
from tests.test_emergency_restore import assert_no_secret, assert_resumed, run, state_of  # noqa: E402
from tests.test_emergency_restore import world  # noqa: E402,F401  (fixture)


def via_settings(world, sshd) -> Settings:
    return Settings.from_dict(ops={**world.settings.ops, **sshd.settings_ops(known_hosts=world.tmp / "known_hosts")},
                              env=world.settings.env)


def test_emergency_restore_through_via_end_to_end(world, sshd):
    """Everything through the bastion: the guard, the rehearsal on staging, the snapshot (pg_dump there, the file
    here), the discard table, ending sessions, the restore, the checks."""
    settings = via_settings(world, sshd)
    staging = settings.env_var("STAGING_DATABASE_URL")
    with psycopg.connect(world.prod, autocommit=True) as lingering:   # a session the restore must end first
        lingering.execute("SELECT 1")
        with unreachable_from_here(world.prod, staging, prefixes=(guard.SCRATCH_PREFIX,)) as attempts:
            ran = run(world, settings=settings, via="box")
    assert ran.code == 0, ran.output
    assert attempts == []
    assert state_of(world.prod) == world.backup_state          # the same result as a direct emergency restore
    assert_resumed(world)
    out = ran.output
    assert "judged from the bastion 127.0.0.1" in out and "reached on the bastion 127.0.0.1" in out
    assert "5 more rows now than in the backup" in out         # production's counts, asked through the bastion
    assert "rehearsed now on staging: passed" in out
    assert "ended 1 session(s)" in out
    snap = ran.recipe.snapshot
    assert snap.path.is_file() and snap.path.with_name(snap.path.name + ".sha256").is_file()
    assert b'COPY public."User"' in gzip.decompress(snap.path.read_bytes())
    test_entry = [e for e in audit.entries(settings) if e["action"] == "restore.test"][-1]
    assert test_entry["details"]["via"] == "the bastion 127.0.0.1" and test_entry["details"]["passed"]
    assert_no_secret(world, out, settings.audit_log.read_text())


def test_emergency_restore_through_via_without_approval_is_refused(world, sshd):
    ran = run(world, None, settings=via_settings(world, sshd), via="box")
    assert ran.code == 3 and "signed approval" in ran.output
    assert state_of(world.prod) == world.prod_state and world.fake.calls("POST") == []


def test_emergency_approve_via_names_production_as_the_bastion_sees_it(world, sshd, monkeypatch, capsys):
    from ops import emergency, tokens

    settings = via_settings(world, sshd)
    for name, value in settings.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPS_APPROVER_KEY", str(world.key_file))
    emergency.approve(ctx(dict(settings.ops)), action="terminate-idle", minutes="5", via="box")
    token = capsys.readouterr().out.strip()
    with via.reach(settings, "box") as db:
        seen = guard.judge(settings, world.prod, read_db_marker=False, vantage=db.vantage).identity
    assert tokens.peek(token)["params"] == {"target": seen, "minutes": "5"}
