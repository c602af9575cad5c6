"""The emergency restore's pure decisions: discard table, rehearsal on record, verdict, exit status, messages."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from ops import emergency_plan as ep
from ops.emergency_plan import Check, Outcome, RestoreState, StepResult, Verdict

SHA = "ab" * 32


@pytest.mark.parametrize("table, schemas, inside", [
    ("public.User", ["public"], True),
    ("auth.users", ["public"], False),
    ("auth.users", None, True),
    ("auth.users", ["all"], True),
    ("app.Draw", ["public", "app"], True),
    ("public.a.b", ["public"], True),
], ids=["public", "supabase-schema", "none-means-all", "all", "several", "dotted-name"])
def test_in_scope(table, schemas, inside):
    assert ep.in_scope(table, schemas) is inside


def test_discard_rows_compare_production_with_the_backup_in_scope():
    production = {"public.User": 120, "public.Draw": 10, "public.Audit": 5, "auth.users": 9}
    backup = {"public.User": 100, "public.Draw": 10, "public.Ticket": 7, "auth.users": 3}
    rows = ep.discard_rows(production, backup, ["public"])
    assert [(r.table, r.now, r.backup) for r in rows] == [
        ("public.Audit", 5, None), ("public.Draw", 10, 10), ("public.Ticket", None, 7), ("public.User", 120, 100)]
    notes = {r.table: r.note for r in rows}
    assert notes == {"public.Audit": "not in the backup: left as it is",
                     "public.Draw": "same count (rows are still replaced)",
                     "public.Ticket": "created from the backup", "public.User": "20 more rows now than in the backup"}
    text = ep.render_discard(rows)
    assert "auth.users" not in text and "4 tables; 130 rows in production are replaced by 117 rows" in text


@pytest.mark.parametrize("expected, actual, problems", [
    ({"public.a": 1}, {"public.a": 1, "public.extra": 5}, []),
    ({"public.a": 1}, {"public.a": 2}, ["public.a: 2 rows, backup holds 1"]),
    ({"public.a": 1}, {}, ["public.a: missing after the restore (backup holds 1 rows)"]),
    ({"auth.x": 1}, {}, []),
], ids=["equal", "differs", "missing", "out-of-scope"])
def test_count_mismatches(expected, actual, problems):
    assert ep.count_mismatches(expected, actual, ["public"]) == problems


def test_rehearsal_on_record_needs_a_pass_of_this_very_sha():
    entries = [
        {"action": "restore.test", "outcome": "pass", "details": {"sha256": "cd" * 32}},
        {"action": "restore.test", "outcome": "fail", "details": {"sha256": SHA}},
        {"action": "restore.staging", "outcome": "ok", "details": {"sha256": SHA}},
    ]
    assert ep.rehearsal_on_record(entries, SHA) is None
    entries.append({"action": "restore.test", "outcome": "ok", "time": "t1", "details": {"sha256": SHA.upper()}})
    entries.append({"action": "restore.test", "outcome": "done", "time": "t2", "details": {"sha256": SHA,
                                                                                          "passed": True}})
    entries.append({"action": "restore.test", "outcome": "ok", "time": "t3", "details": {"sha256": SHA,
                                                                                        "passed": False}})
    assert ep.rehearsal_on_record(entries, SHA)["time"] == "t2"


def test_approval_help_says_who_runs_what_with_which_key():
    text = ep.approval_help(["alice", "carol"], "backup-20250615_020000", "lottery")
    assert "one of the configured approvers (alice, carol) - not you" in text
    assert "OPS_APPROVER_KEY=" in text and "inv emergency.approve --tag backup-20250615_020000" in text
    assert 'inv emergency.restore --approve "$TOKEN" --tag backup-20250615_020000' in text and "--dry-run" in text
    assert "none is configured yet" in ep.approval_help([], None, None)


OK = StepResult("restore", Outcome.OK)
FAILED = StepResult("verify", Outcome.FAILED, "counts differ")


@pytest.mark.parametrize("state, results, checks, kw, expected, code", [
    (RestoreState.COMMITTED, [OK], [Check("health", True)], {}, Verdict.OK, 0),
    (RestoreState.COMMITTED, [OK], [Check("sentry", None)], {}, Verdict.OK, 0),
    (RestoreState.COMMITTED, [OK, FAILED], [], {}, Verdict.RESTORED_CHECK_FAILED, 1),
    (RestoreState.COMMITTED, [OK], [Check("health", False)], {}, Verdict.RESTORED_CHECK_FAILED, 1),
    (RestoreState.ROLLED_BACK, [FAILED], [], {}, Verdict.ROLLED_BACK, 1),
    (RestoreState.NOT_STARTED, [], [], {}, Verdict.NOT_STARTED, 1),
    (RestoreState.UNKNOWN, [], [], {}, Verdict.UNKNOWN, 1),
    (RestoreState.NOT_STARTED, [], [], {"dry_run": True}, Verdict.DRY_RUN, 0),
    (RestoreState.NOT_STARTED, [], [], {"dry_run": True, "error": True}, Verdict.NOT_STARTED, 1),
    (RestoreState.COMMITTED, [OK], [Check("health", True)], {"error": True}, Verdict.RESTORED_CHECK_FAILED, 1),
    (RestoreState.NOT_STARTED, [], [], {"refused": True}, Verdict.REFUSED, 3),
    (RestoreState.NOT_STARTED, [], [], {"refused": True, "dry_run": True}, Verdict.REFUSED, 3),
], ids=["all-good", "skipped-check-is-not-failure", "step-failed", "check-failed", "rolled-back", "not-started",
        "unknown", "dry-run", "dry-run-failed", "interrupted-after-commit", "refused", "refused-dry-run"])
def test_verdict_and_exit_code(state, results, checks, kw, expected, code):
    v = ep.verdict(state, results, checks, **kw)
    assert v is expected and ep.exit_code(v) == code


@pytest.mark.parametrize("state, says", [
    (RestoreState.NOT_STARTED, "before the restore started: lottery was not changed"),
    (RestoreState.ROLLED_BACK, "rolled back: lottery is exactly as it was before"),
    (RestoreState.COMMITTED, "lottery IS fully restored from backup-1"),
    (RestoreState.UNKNOWN, "either fully restored from backup-1 or exactly as before, never half"),
], ids=[s.value for s in RestoreState])
def test_state_message_says_which_and_how_to_undo(state, says):
    text = ep.state_message(state, tag="backup-1", dbname="lottery", failed_step="verify",
                            snapshot="/snaps/s.sql.gz", snapshot_sha=SHA, snapshot_label_="snapshot-20250615_030000")
    assert says in text and "/snaps/s.sql.gz" in text and f"--sha256 {SHA}" in text
    assert "inv emergency.restore --file /snaps/s.sql.gz --tag snapshot-20250615_030000" in text
    assert "at step 5 verify row counts and recent data" in text


def test_state_message_after_success_only_says_how_to_undo():
    text = ep.state_message(RestoreState.COMMITTED, tag="backup-1", dbname="lottery", failed_step=None,
                            snapshot="/s.sql.gz", snapshot_sha=SHA, snapshot_label_="snapshot-1")
    assert text.startswith("lottery is restored from backup-1.") and "failure" not in text and "/s.sql.gz" in text


def test_state_message_without_snapshot():
    text = ep.state_message(RestoreState.NOT_STARTED, tag="t", dbname="d", failed_step="snapshot", snapshot=None,
                            snapshot_sha=None, snapshot_label_=None)
    assert "was not changed" in text and "No snapshot" not in text


def test_sentry_query_rounds_up_and_adds_a_minute():
    start = datetime(2025, 6, 15, 3, 0, tzinfo=timezone.utc)
    assert ep.sentry_query(start, start + timedelta(seconds=61)) == "firstSeen:-3m"
    assert ep.sentry_query(start, start) == "firstSeen:-1m"


@dataclass
class Issue:
    first_seen: str


def test_first_seen_since_filters_by_time():
    start = datetime(2025, 6, 15, 3, 0, 30, 500, tzinfo=timezone.utc)
    issues = [Issue("2025-06-15T03:00:30Z"), Issue("2025-06-15T02:59:59Z"), Issue("garbage"), Issue("")]
    assert ep.first_seen_since(issues, start) == [issues[0]]


def test_plan_and_summary_render():
    plan = ep.Plan(target="postgresql://app:***@db/lottery", dbname="lottery", tag="backup-1", sha256=SHA,
                   sessions=["pid 7 app from 10.0.0.1 (pgbouncer), idle"], keep_suspended=True, dry_run=True,
                   discard=ep.discard_rows({"public.a": 2}, {"public.a": 1}, ["public"]))
    text = ep.render_plan(plan)
    assert text.startswith("DRY RUN - Emergency restore plan for lottery") and "pid 7" in text
    assert "kept (--keep-suspended)" in text and "1 more rows now" in text
    summary = ep.render_summary([OK, FAILED], [Check("health", True, "200")], Verdict.RESTORED_CHECK_FAILED)
    assert "FAIL" not in summary.split("check")[0] and "failed" in summary and "PASS" in summary
    assert summary.endswith("Result: production IS restored from the backup, but a check failed")


def test_snapshot_label_is_utc():
    when = datetime(2025, 6, 15, 5, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    assert ep.snapshot_label(when) == "snapshot-20250615_030001"
