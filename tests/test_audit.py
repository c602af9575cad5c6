"""The audit log: hash-chained, append-only, secret-free."""
from __future__ import annotations

import json
import threading

from ops import audit
from ops.config import Settings


def make_settings(tmp_path, **env):
    return Settings.from_dict({"audit_log": str(tmp_path / "audit.jsonl")}, env=env)


def test_entries_chain_and_verify(tmp_path):
    s = make_settings(tmp_path)
    for i in range(3):
        audit.record(s, "restore.test", outcome="pass", target="postgresql://u:***@h/db", n=i)
    assert [e["details"]["n"] for e in audit.entries(s)] == [0, 1, 2]
    assert audit.verify(s) == []


def test_an_edit_or_removal_is_detected(tmp_path):
    s = make_settings(tmp_path)
    for i in range(4):
        audit.record(s, "step", outcome="ok", n=i)
    lines = s.audit_log.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["outcome"] = "failed"
    s.audit_log.write_text("\n".join([lines[0], json.dumps(edited, sort_keys=True), *lines[2:]]) + "\n")
    assert any("entry 3" in p for p in audit.verify(s))
    s.audit_log.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    assert audit.verify(s)


def test_secrets_never_reach_the_log(tmp_path):
    s = make_settings(tmp_path, DATABASE_URL="postgresql://app:hunter2-secret@db/prod", GITHUB_TOKEN="ghp_" + "a" * 36)
    audit.record(s, "emergency.restore", outcome="ok", target="postgresql://app:hunter2-secret@db/prod",
                 note="token ghp_" + "a" * 36, url="host=db password=hunter2-secret")
    text = s.audit_log.read_text()
    assert "hunter2-secret" not in text and "a" * 36 not in text


def test_concurrent_appends_keep_one_chain(tmp_path):
    s = make_settings(tmp_path)
    threads = [threading.Thread(target=lambda i=i: audit.record(s, "x", outcome="ok", i=i)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(audit.entries(s)) == 20 and audit.verify(s) == []
