"""Sandbox: try backups and restores on this machine, no account needed (`inv sandbox.demo`).

The sandbox server is `$OPS_SANDBOX_URL` if set (a server URL whose user may create databases), else a PostgreSQL
answering on 127.0.0.1:5432 as user postgres, else a throwaway cluster made with initdb under the state directory
(run as user postgres when we are root). It holds two databases: `sandbox_lottery`, seeded like the lottery
backend's (Prisma models "User", "Ticket", "Transaction"...), standing in for production, and `sandbox_staging`.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tasking import task

SOURCE_DB, STAGING_DB = "sandbox_lottery", "sandbox_staging"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parent.parent

# A lottery-shaped schema, the way Prisma names things: quoted mixed-case tables and columns, an enum, arrays,
# JSON, bytea, a partitioned table, and text that trips naive tools (tabs, newlines, backslashes, a `\.` line,
# ERROR/FATAL words, a value that looks like pg_dump's footer). {users} scales it (tickets 10x, transactions 5x).
SEED_SQL = r"""
CREATE TYPE "TicketStatus" AS ENUM ('ACTIVE', 'WON', 'LOST');
CREATE TABLE "User" (
    id text PRIMARY KEY, email text NOT NULL UNIQUE, "displayName" text, avatar bytea, settings jsonb,
    "createdAt" timestamptz NOT NULL DEFAULT now());
CREATE TABLE "Draw" (id serial PRIMARY KEY, "drawnAt" timestamptz NOT NULL, numbers int[] NOT NULL);
CREATE TABLE "Ticket" (
    id bigserial PRIMARY KEY, "userId" text NOT NULL REFERENCES "User"(id), "drawId" int REFERENCES "Draw"(id),
    numbers int[] NOT NULL, status "TicketStatus" NOT NULL DEFAULT 'ACTIVE', meta jsonb,
    "createdAt" timestamptz NOT NULL DEFAULT now());
CREATE INDEX "Ticket_userId_idx" ON "Ticket" ("userId");
CREATE TABLE "Transaction" (
    id bigserial, "userId" text NOT NULL, amount numeric(12, 2) NOT NULL, currency char(3) NOT NULL DEFAULT 'EUR',
    error text, "createdAt" timestamptz NOT NULL, PRIMARY KEY (id, "createdAt")) PARTITION BY RANGE ("createdAt");
CREATE TABLE "Transaction_2025" PARTITION OF "Transaction" FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE "Transaction_2026" PARTITION OF "Transaction" FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE "Transaction_other" PARTITION OF "Transaction" DEFAULT;
CREATE INDEX "Transaction_userId_idx" ON "Transaction" ("userId");
CREATE TABLE _prisma_migrations (id varchar(36) PRIMARY KEY, migration_name varchar(255) NOT NULL,
    finished_at timestamptz, applied_steps_count int NOT NULL DEFAULT 0, logs text);

INSERT INTO "User" (id, email, "displayName", avatar, settings, "createdAt")
SELECT 'usr_' || g, 'player' || g || '@example.com',
       CASE g % 5 WHEN 0 THEN E'Tab\there' WHEN 1 THEN E'Line\nbreak' WHEN 2 THEN 'Ünïcødé 🎲'
                  WHEN 3 THEN E'back\\slash' ELSE NULL END,
       CASE WHEN g % 3 = 0 THEN decode(md5(g::text), 'hex') END,
       jsonb_build_object('lang', CASE WHEN g % 2 = 0 THEN 'en' ELSE 'ru' END, 'notify', g % 4 = 0,
                          'tags', jsonb_build_array('a', g)),
       timestamptz '2025-01-01' + g * interval '13 minutes'
FROM generate_series(1, {users}) g;
INSERT INTO "Draw" ("drawnAt", numbers)
SELECT timestamptz '2025-01-01' + g * interval '1 day', ARRAY[g % 49 + 1, (g * 7) % 49 + 1, (g * 13) % 49 + 1]
FROM generate_series(1, 400) g;
INSERT INTO "Ticket" ("userId", "drawId", numbers, status, meta, "createdAt")
SELECT 'usr_' || (1 + g % {users}), 1 + g % 400, ARRAY[g % 49 + 1, (g * 3) % 49 + 1, (g * 11) % 49 + 1],
       (ARRAY['ACTIVE', 'WON', 'LOST'])[1 + g % 3]::"TicketStatus",
       CASE WHEN g % 10 = 0 THEN jsonb_build_object('promo', 'X' || g, 'note', E'quote " and \\ backslash') END,
       timestamptz '2025-01-01' + g * interval '1 minute'
FROM generate_series(1, {users} * 10) g;
INSERT INTO "Transaction" ("userId", amount, currency, error, "createdAt")
SELECT 'usr_' || (1 + g % {users}), round((g % 1000) * 1.37, 2), 'EUR',
       CASE g % 8 WHEN 0 THEN 'ERROR: insufficient funds' WHEN 1 THEN E'FATAL:\tpayment provider\ttimeout'
                  WHEN 2 THEN E'ERROR: card declined\nretry at 12:00' WHEN 3 THEN E'C:\\wallet\\new'
                  WHEN 4 THEN E'\\.' WHEN 5 THEN '-- PostgreSQL database dump complete' ELSE NULL END,
       timestamptz '2025-06-01' + g * interval '7 minutes'
FROM generate_series(1, {users} * 5) g;
INSERT INTO _prisma_migrations (id, migration_name, finished_at, applied_steps_count, logs)
VALUES ('0b7f2d4e-0000-4000-8000-000000000001', '20250101000000_init', '2025-01-01', 1, NULL),
       ('0b7f2d4e-0000-4000-8000-000000000002', '20250601000000_transactions', '2025-06-01', 1,
        E'ERROR: relation "Transaction" already exists\nFATAL: rolled back');
"""
RECENT = [{"table": '"User"', "column": '"createdAt"'}, {"table": '"Ticket"', "column": '"createdAt"'},
          {"table": 'public."Transaction"', "column": '"createdAt"'}]


def seed(conninfo: str, users: int = 2000) -> None:
    """Create the lottery-shaped schema and rows in an empty database."""
    from . import pg

    with pg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SEED_SQL.replace("{users}", str(int(users))))  # type: ignore[call-overload]


@dataclass
class Server:
    admin_url: str
    how: str
    cluster: Any = None

    def url(self, dbname: str) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = dbname
        if "://" not in self.admin_url:
            return make_conninfo("", **params)
        from urllib.parse import quote, urlsplit, urlunsplit

        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + quote(dbname), parts.query, ""))


def cluster_dir(settings: Any) -> Path:
    """Where a throwaway cluster lives: under the state directory if the server's user can reach it, else /var/tmp."""
    from .cluster import SERVER_USER, reachable_by

    preferred = settings.state_dir / "sandbox" / "pg"
    user = SERVER_USER if os.geteuid() == 0 else None
    preferred.parent.mkdir(parents=True, exist_ok=True)
    if user is None or reachable_by(user, preferred.parent):
        return preferred
    import hashlib

    tag = hashlib.sha256(str(preferred).encode()).hexdigest()[:8]   # one per state directory
    return Path(tempfile.gettempdir()) / f"lottery-ops-sandbox-{os.geteuid()}-{tag}" / "pg"


def answers(url: str) -> bool:
    from . import pg
    from .errors import ServiceError

    try:
        with pg.connect(url, connect_timeout=3):
            return True
    except ServiceError:
        return False


def find_server(settings: Any, local_url: str = LOCAL_URL) -> Server:
    """$OPS_SANDBOX_URL, else `local_url` (127.0.0.1:5432) if it answers, else a throwaway initdb cluster (started,
    kept for the next run)."""
    from . import cluster
    from .errors import ConfigError

    url = settings.env_var("OPS_SANDBOX_URL")
    if url:
        return Server(url, "$OPS_SANDBOX_URL")
    if answers(local_url):
        return Server(local_url, f"the PostgreSQL answering at {local_url}")
    bin_dir = cluster.find_bin_dir(settings.env, env_var="OPS_SANDBOX_PG_BIN")
    if bin_dir is None:
        raise ConfigError("no PostgreSQL server to use: OPS_SANDBOX_URL is not set, nothing answers on "
                          "127.0.0.1:5432, and initdb/pg_ctl/postgres are not installed",
                          hint="apt install postgresql (or brew install postgresql), or export OPS_SANDBOX_URL="
                               "postgresql://user:pass@host:5432/postgres")
    box = cluster.Cluster(bin_dir, workdir=cluster_dir(settings), keep=True)
    try:
        box.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"could not start a throwaway cluster with {bin_dir}: {exc}",
                          hint="export OPS_SANDBOX_URL=postgresql://... to use another server") from None
    return Server(box.url(), f"a throwaway cluster in {box.workdir} ({bin_dir})", box)


def recreate(server: Server, dbname: str) -> str:
    from . import pg

    pg.drop_database(server.admin_url, dbname)
    pg.create_database(server.admin_url, dbname)
    return server.url(dbname)


def write_config(home: Path) -> Path:
    """The sandbox's own Invoke config (its audit log, the recent-data queries), passed as INVOKE_RUNTIME_CONFIG."""
    import json

    home.mkdir(parents=True, exist_ok=True)
    path = home / "sandbox.json"
    path.write_text(json.dumps({"ops": {"audit_log": str(home / "audit.jsonl"), "verify": {"recent": RECENT},
                                        "restore": {"backup_dir": str(home / "backups")}}}, indent=2))
    return path


def by_hand(env: dict[str, str], backup: Path, stop: bool) -> str:
    """The commands to repeat the demo by hand (URLs redacted: sandbox servers rarely have passwords anyway)."""
    from .redact import redact_url

    lines = ["Run it yourself:",
             f"  export DATABASE_URL={shlex.quote(redact_url(env['DATABASE_URL']))}   # stands in for production",
             f"  export STAGING_DATABASE_URL={shlex.quote(redact_url(env['STAGING_DATABASE_URL']))}",
             f"  export INVOKE_RUNTIME_CONFIG={shlex.quote(env['INVOKE_RUNTIME_CONFIG'])}"
             "   # sandbox audit log, recent-data queries",
             f"  inv backup.create --dest {shlex.quote(str(backup.parent))}      # pg_dump | gzip -9, verified",
             f"  inv restore.verify {shlex.quote(str(backup))}",
             f"  inv restore.staging --file {shlex.quote(str(backup))} --dry-run",
             f"  inv restore.staging --file {shlex.quote(str(backup))}          # asks you to type the name",
             f"  inv restore.check --backup {shlex.quote(str(backup))}",
             f"  inv restore.test --file {shlex.quote(str(backup))}             # rehearsal in a scratch database",
             "  inv guard.check \"$DATABASE_URL\"                                 # refused: it is 'production'"]
    if stop:
        lines.append("  inv sandbox.stop                                             # stop the throwaway cluster")
    return "\n".join(lines)


@task(help={"users": "How many users to seed (tickets 10x, transactions 5x); default 2000"})
def demo(c, users=2000):
    """Seed a lottery-shaped database, back it up the nightly job's way, restore it into a sandbox staging database."""
    from . import backup, guard, pg
    from .config import Settings
    from .errors import VerificationFailed

    settings = Settings.from_context(c)
    server = find_server(settings)
    print(f"sandbox server: {server.how}")
    # it drops, creates and seeds databases there: not on production's server reached through production itself
    # (OPS_SANDBOX_URL=$DATABASE_URL), and not over a database that is production in any way the guard knows
    for url in (server.admin_url, server.url(SOURCE_DB), server.url(STAGING_DB)):
        guard.require(settings, url, action="sandbox.demo")
    source, staging = recreate(server, SOURCE_DB), recreate(server, STAGING_DB)
    seed(source, int(users))
    print(f"seeded {SOURCE_DB}: " + ", ".join(f"{t} {n:,}" for t, n in sorted(pg.table_counts(source).items())))
    home = settings.state_dir / "sandbox"
    name = backup.backup_name()[1]
    made = backup.dump_to(settings, guard.judge(settings, source), home / "backups" / name)
    print(f"backup (pg_dump {' '.join(backup.DUMP_FLAGS)} | gzip -9): {made.path}, {made.size:,} bytes, "
          f"sha256 {made.sha256}")
    config = write_config(home)
    env = {**os.environ, "DATABASE_URL": source, "STAGING_DATABASE_URL": staging, "INVOKE_RUNTIME_CONFIG": str(config)}
    argv = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "restore.staging", "--file", str(made.path),
            "--yes"]
    print("$ inv restore.staging --file " + shlex.quote(str(made.path)) + " --yes")
    sys.stdout.flush()
    done = subprocess.run(argv, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise VerificationFailed(f"the sandbox restore failed (exit {done.returncode})",
                                 hint="read the output above; the sandbox databases are left for you to look at")
    same = pg.table_counts(source) == pg.table_counts(staging)
    print(f"{STAGING_DB} now holds the same rows as {SOURCE_DB}: {'yes' if same else 'NO'}")
    print(by_hand(env, made.path, server.cluster is not None))
    if not same:
        raise VerificationFailed("staging row counts differ from the source after the restore")


@task
def stop(c):
    """Stop the sandbox's throwaway cluster and delete it (a server from OPS_SANDBOX_URL or :5432 is left alone)."""
    from . import cluster
    from .config import Settings

    settings = Settings.from_context(c)
    workdir = cluster_dir(settings)
    bin_dir = cluster.find_bin_dir(settings.env, env_var="OPS_SANDBOX_PG_BIN")
    if not (workdir / "data").exists() or bin_dir is None:
        print("no sandbox cluster to stop")
        return
    cluster.Cluster(bin_dir, workdir=workdir, keep=False).stop()
    if workdir.parent.name.startswith("lottery-ops-sandbox-"):   # the /tmp fallback: remove its directory too
        try:
            workdir.parent.rmdir()
        except OSError:
            pass
    print(f"stopped and removed {workdir}")
