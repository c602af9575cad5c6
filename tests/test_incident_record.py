"""The incident record: Markdown built from one run's audit entries, nothing else (pure)."""
from __future__ import annotations

import pytest

from ops import incident_record

RUN = "20250615T030000Z-ab12"


def entry(action, outcome, time="2025-06-15T03:00:00.000+00:00", target="postgresql://app:***@db/lottery", **details):
    return {"time": time, "user": "bob", "host": "laptop", "action": action, "target": target, "outcome": outcome,
            "details": details, "prev": "0" * 64}


def a_run():
    common = {"run": RUN, "tag": "backup-20250615_020000", "sha256": "ab" * 32, "nonce": "n0nce", "key_id": "k1d",
              "approver": "alice"}
    return [
        entry("emergency.restore.other", "ok", run="another-run", nonce="other"),
        entry("emergency.restore.approval", "ok", **common, title="0 approval", detail="approved by alice",
              seconds=0.1),
        entry("emergency.token_used", "consumed", nonce="n0nce", key_id="k1d", approver="alice", reason="disk | died"),
        entry("emergency.token_used", "consumed", nonce="someone-else", reason="not ours"),
        entry("emergency.restore.restore", "ok", time="2025-06-15T03:05:00.000+00:00", **common,
              title="4 restore", detail="committed\nin one transaction", seconds=42.25),
        entry("emergency.restore", "RESTORED_CHECK_FAILED", time="2025-06-15T03:09:00.000+00:00", **common,
              verdict="production IS restored from the backup, but a check failed", exit_code=1, state="committed",
              reason="disk | died", snapshot="/var/snap/snapshot.sql.gz", snapshot_sha256="cd" * 32,
              discard=[{"table": "public.User", "now": 120, "backup": 100}],
              checks=[{"name": "health", "ok": True, "detail": "200"},
                      {"name": "Sentry: new issues", "ok": False, "detail": "2 new | issues"},
                      {"name": "endpoints", "ok": None, "detail": "not configured"}],
              message="production IS fully restored"),
    ]


def test_record_holds_the_run_and_only_the_run():
    md = incident_record.render(a_run(), RUN)
    assert md.startswith(f"# Incident record: emergency production restore ({RUN})")
    assert "another-run" not in md and "someone-else" not in md and "not ours" not in md
    assert "backup-20250615_020000" in md and "ab" * 32 in md and "alice" in md and "k1d" in md
    assert "used (single use recorded)" in md
    assert "| 2025-06-15T03:05:00.000+00:00 | 4 restore | ok | 42.2 | committed in one transaction |" in md
    assert "disk \\| died" in md and "2 new \\| issues" in md         # pipes cannot break the tables
    assert "| Sentry: new issues | FAIL |" in md and "| endpoints | not run |" in md and "| health | PASS |" in md
    assert "| public.User | 120 | 100 |" in md
    assert "/var/snap/snapshot.sql.gz" in md and "(exit status 1)" in md and "## To complete by hand" in md


def test_an_interrupted_run_says_it_is_unfinished():
    md = incident_record.render(a_run()[:3], RUN)
    assert "unfinished (no final entry" in md and "## Timeline" in md


def test_an_unknown_run_gives_a_record_not_an_exception():
    assert "No audit entries for this run." in incident_record.render(a_run(), "nope")


def test_runs_lists_emergency_restores_once_in_order():
    assert incident_record.runs(a_run()) == ["another-run", RUN]


@pytest.mark.parametrize("value, shown", [
    (None, ""), ("a|b", "a\\|b"), ("two\nlines", "two lines"), (3, "3"),
], ids=["none", "pipe", "newline", "int"])
def test_cell(value, shown):
    assert incident_record.cell(value) == shown
