"""Effect: read-only diagnosis queries for `inv emergency.db`, and the one write it offers (`terminate_idle`).

`diagnose()` runs in a read-only transaction with short statement and lock timeouts, so a diagnosis can never
make an incident worse. It returns plain data (dicts, lists) that `ops.diagnose.database()` judges.

`terminate_idle()` ends sessions idle in a transaction for longer than N minutes, in the target database only.
The caller has already asked the guard (production only with an approval token for `terminate-idle`) and the
operator; with `dry_run=True` it only lists what it would end, and never calls pg_terminate_backend.
"""
from __future__ import annotations

from typing import Any

from . import pg

STATEMENT_TIMEOUT = "10s"
SEQ_SCAN_MIN_ROWS = 10_000
EXCERPT = 200

CONNECTIONS = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
"""
BY_STATE = """
SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity
 WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC, 1
"""
BY_CLIENT = """
SELECT coalesce(usename, '?'), coalesce(nullif(application_name, ''), '?'),
       coalesce(host(client_addr), 'local'), count(*),
       count(*) FILTER (WHERE state LIKE 'idle in transaction%')
  FROM pg_stat_activity WHERE backend_type = 'client backend'
 GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3 LIMIT 20
"""
IDLE_IN_TRANSACTION = """
SELECT pid, datname, usename, application_name, host(client_addr),
       extract(epoch FROM now() - state_change)::float8, left(query, %(excerpt)s), state
  FROM pg_stat_activity
 WHERE state IN ('idle in transaction', 'idle in transaction (aborted)') AND pid <> pg_backend_pid()
 ORDER BY state_change
"""
LONGEST = """
SELECT pid, datname, usename, application_name, extract(epoch FROM now() - query_start)::float8,
       wait_event_type, wait_event, left(query, %(excerpt)s)
  FROM pg_stat_activity
 WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend'
 ORDER BY query_start LIMIT 10
"""
BLOCKED = """
SELECT pid, pg_blocking_pids(pid), datname, usename, application_name,
       extract(epoch FROM now() - coalesce(query_start, state_change))::float8, wait_event_type,
       left(query, %(excerpt)s)
  FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0 ORDER BY query_start
"""
SESSIONS = """
SELECT pid, state, usename, application_name, host(client_addr),
       extract(epoch FROM now() - coalesce(xact_start, backend_start))::float8, left(query, %(excerpt)s)
  FROM pg_stat_activity WHERE pid = ANY(%(pids)s)
"""
SEQ_SCANS = """
SELECT * FROM (
  SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.relname) AS name, s.seq_scan,
         coalesce(s.idx_scan, 0) AS idx_scan, s.seq_tup_read,
         CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint ELSE s.n_live_tup END AS estimate
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
   WHERE s.seq_scan > 10 AND s.seq_scan > 10 * coalesce(s.idx_scan, 0)) t
 WHERE estimate >= %(min_rows)s
 ORDER BY seq_tup_read DESC LIMIT 10
"""
SIZES = "SELECT current_database(), pg_database_size(current_database())"
LARGEST = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_total_relation_size(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%' AND NOT c.relispartition
 ORDER BY 2 DESC LIMIT 10
"""
HAS_STATEMENTS = """
SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'pg_stat_statements'
"""
ROLES = """
SELECT rolname, rolsuper, rolcreaterole, rolcanlogin, rolreplication, rolbypassrls
  FROM pg_roles WHERE rolcanlogin ORDER BY rolname
"""


def diagnose(conninfo: str, *, seq_min_rows: int = SEQ_SCAN_MIN_ROWS) -> dict[str, Any]:
    """Everything `inv emergency.db` shows, read-only. Raises ServiceError (password-free) when unreachable."""
    with pg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        conn.execute("SET lock_timeout = '2s'")
        conn.read_only = True
        conn.autocommit = False
        with conn.transaction():
            out = _gather(conn, seq_min_rows)
    return out


def _gather(conn: Any, seq_min_rows: int) -> dict[str, Any]:
    q = {"excerpt": EXCERPT}
    limit, reserved, used = conn.execute(CONNECTIONS).fetchone()
    out: dict[str, Any] = {"server_version": conn.info.server_version, "max_connections": limit,
                           "reserved_connections": reserved, "connections": used, "user": conn.info.user}
    out["by_state"] = {state: n for state, n in conn.execute(BY_STATE)}
    out["by_client"] = [{"usename": u, "application_name": a, "client": c, "count": n, "idle_in_transaction": i}
                        for u, a, c, n, i in conn.execute(BY_CLIENT)]
    out["idle_in_transaction"] = [
        {"pid": pid, "datname": db, "usename": u, "application_name": a, "client": c or "local", "seconds": s,
         "query": qt or "", "state": st}
        for pid, db, u, a, c, s, qt, st in conn.execute(IDLE_IN_TRANSACTION, q)]
    out["longest_queries"] = [
        {"pid": pid, "datname": db, "usename": u, "application_name": a, "seconds": s or 0.0,
         "wait": f"{wt}:{we}" if wt else "", "query": qt or ""}
        for pid, db, u, a, s, wt, we, qt in conn.execute(LONGEST, q)]
    out["blocked"] = [
        {"pid": pid, "blocked_by": list(by), "datname": db, "usename": u, "application_name": a,
         "seconds": s or 0.0, "wait": wt or "", "query": qt or ""}
        for pid, by, db, u, a, s, wt, qt in conn.execute(BLOCKED, q)]
    blockers = sorted({p for b in out["blocked"] for p in b["blocked_by"]})
    out["blocking"] = [
        {"pid": pid, "state": st, "usename": u, "application_name": a, "client": c or "local", "seconds": s or 0.0,
         "query": qt or ""}
        for pid, st, u, a, c, s, qt in conn.execute(SESSIONS, q | {"pids": blockers})] if blockers else []
    out["statements"] = _statements(conn)
    out["seq_scan_tables"] = [{"table": t, "seq_scan": s, "idx_scan": i, "seq_tup_read": r, "rows": n}
                              for t, s, i, r, n in conn.execute(SEQ_SCANS, {"min_rows": seq_min_rows})]
    out["database"], out["database_bytes"] = conn.execute(SIZES).fetchone()
    out["largest_tables"] = [{"table": t, "bytes": b} for t, b in conn.execute(LARGEST)]
    return out


def _statements(conn: Any) -> list[dict[str, Any]] | None:
    """The slowest statements by mean time from pg_stat_statements, or None when the extension is absent."""
    from psycopg import sql

    row = conn.execute(HAS_STATEMENTS).fetchone()
    if row is None:
        return None
    newer = conn.info.server_version >= 130000  # columns were renamed in 13: total_time -> total_exec_time
    total, mean = ("total_exec_time", "mean_exec_time") if newer else ("total_time", "mean_time")
    query = sql.SQL("SELECT calls, {total}, {mean}, left(query, {n}) FROM {schema}.pg_stat_statements "
                    "ORDER BY {mean} DESC LIMIT 10").format(
        total=sql.Identifier(total), mean=sql.Identifier(mean), n=sql.Literal(EXCERPT),
        schema=sql.Identifier(row[0]))
    import psycopg

    try:
        with conn.transaction():  # a savepoint, rolled back when the view raises
            rows = conn.execute(query).fetchall()
    except psycopg.Error as exc:  # "pg_stat_statements must be loaded via shared_preload_libraries"
        return [{"error": str(exc).strip().splitlines()[0]}]
    return [{"calls": c, "total_ms": t, "mean_ms": m, "query": q} for c, t, m, q in rows]


def login_roles(conninfo: str) -> list[dict[str, Any]]:
    """Roles that can log in, with their dangerous attributes (read-only)."""
    with pg.connect(conninfo) as conn:
        conn.read_only = True
        return [{"name": n, "superuser": s, "createrole": cr, "replication": rep, "bypassrls": b}
                for n, s, cr, _login, rep, b in conn.execute(ROLES)]


def clients(conninfo: str) -> list[dict[str, Any]]:
    """Connections by role, application and client address (read-only)."""
    with pg.connect(conninfo, autocommit=True) as conn:
        return [{"usename": u, "application_name": a, "client": c, "count": n, "idle_in_transaction": i}
                for u, a, c, n, i in conn.execute(BY_CLIENT)]


def current_user(conninfo: str) -> str:
    with pg.connect(conninfo, autocommit=True) as conn:
        return str(conn.execute("SELECT current_user").fetchone()[0])


# -- the one write -------------------------------------------------------------------------------------------------
IDLE_OLDER_THAN = """
SELECT pid, usename, application_name, host(client_addr),
       extract(epoch FROM now() - state_change)::float8, left(query, %(excerpt)s)
  FROM pg_stat_activity
 WHERE state IN ('idle in transaction', 'idle in transaction (aborted)') AND pid <> pg_backend_pid()
   AND datname = current_database() AND now() - state_change >= %(minutes)s * interval '1 minute'
 ORDER BY state_change
"""


def idle_sessions(conninfo: str, minutes: float) -> list[dict[str, Any]]:
    """Sessions in this database idle in a transaction for at least `minutes` (what `terminate_idle` would end)."""
    with pg.connect(conninfo, autocommit=True) as conn:
        return _idle(conn, minutes)


def _idle(conn: Any, minutes: float) -> list[dict[str, Any]]:
    return [{"pid": pid, "usename": u, "application_name": a, "client": c or "local", "seconds": s, "query": q or ""}
            for pid, u, a, c, s, q in conn.execute(IDLE_OLDER_THAN, {"minutes": float(minutes), "excerpt": EXCERPT})]


def terminate_idle(conninfo: str, minutes: float, *, dry_run: bool) -> list[dict[str, Any]]:
    """End sessions idle in a transaction for at least `minutes` in the target database; return them, each with
    `terminated` (True, False if it had ended meanwhile, None in a dry run). A dry run never terminates."""
    if minutes < 0:
        raise ValueError("minutes must be >= 0")
    with pg.connect(conninfo, autocommit=True) as conn:
        sessions = _idle(conn, minutes)
        for s in sessions:
            if dry_run:
                s["terminated"] = None
                continue
            # re-check the state at the moment of the kill: a session that moved on is left alone
            row = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s "
                "AND state IN ('idle in transaction', 'idle in transaction (aborted)')", (s["pid"],)).fetchone()
            s["terminated"] = bool(row and row[0])
    return sessions
