"""Audit log: an append-only JSON-lines file, each entry chained to the previous one by its SHA-256.

One entry per action: time, user, host, action, target (redacted), outcome, and details. Editing or deleting
an entry breaks the chain, which `verify()` reports. Secrets never go in: every string is redacted on the way.
"""
from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import OpsError
from .redact import redact_text

GENESIS = "0" * 64


def _digest(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def _clean(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {str(k): _clean(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, secrets) for v in value]
    return value


def record(settings: Settings, action: str, *, outcome: str, target: str | None = None, **details: Any) -> dict:
    """Append one entry and return it. `target` should already be a redacted description; it is redacted again."""
    path = settings.audit_log
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        user = getpass.getuser()
    except Exception:
        user = os.environ.get("USER", "?")
    entry = {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "user": user, "host": socket.gethostname(), "action": action,
        "target": target, "outcome": outcome, "details": details,
    }
    entry = _clean(entry, settings.secrets)
    with open(path, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two tasks appending at once still make one chain
        fh.seek(0)
        last = None
        for line in fh:
            if line.strip():
                last = line.rstrip("\n")
        entry["prev"] = _digest(last) if last is not None else GENESIS
        fh.seek(0, os.SEEK_END)
        fh.write(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return entry


def entries(settings: Settings) -> list[dict]:
    path = settings.audit_log
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise OpsError(f"audit log {path} line {n} is not JSON", hint="inv emergency.audit --verify") from None
    return out


def verify_lines(lines: list[str]) -> list[str]:
    """Pure: the problems in a chain of JSON lines (empty list when intact)."""
    problems = []
    prev = GENESIS
    for n, line in enumerate((l for l in lines if l.strip()), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"entry {n} is not JSON")
            prev = _digest(line)
            continue
        if entry.get("prev") != prev:
            problems.append(f"entry {n} ({entry.get('action')}, {entry.get('time')}) does not follow entry {n - 1}: "
                            "an entry before it was edited, removed or inserted")
        prev = _digest(line)
    return problems


def verify(settings: Settings) -> list[str]:
    path: Path = settings.audit_log
    if not path.exists():
        return []
    return verify_lines(path.read_text(encoding="utf-8").splitlines())
