"""Pure: the Markdown incident record of one emergency restore, built from its audit log entries.

The record is what the runbook's "document the incident" step asks for: a timeline (every step with its time,
outcome and detail), the backup, the approver and the reason, the results of the post-restore checks, where the
snapshot of production is, and a short list of what is left to write by hand. It is built only from audit entries
(`ops.audit` already redacted them), so it holds nothing the audit log does not.

Entries of one run carry `details.run`; the approval's `emergency.token_used` entry is matched by its nonce.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FINAL = "emergency.restore"
STEP_PREFIX = "emergency.restore."
TOKEN_USED = "emergency.token_used"


def _details(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    details = entry.get("details")
    return details if isinstance(details, Mapping) else {}


def run_entries(entries: Iterable[Mapping[str, Any]], run: str) -> list[Mapping[str, Any]]:
    """The entries of run `run`, plus the approval consumed by it (matched by nonce), in log order."""
    entries = list(entries)
    mine = [e for e in entries if _details(e).get("run") == run]
    nonces = {_details(e).get("nonce") for e in mine} - {None, ""}
    return [e for e in entries if e in mine or (e.get("action") == TOKEN_USED and _details(e).get("nonce") in nonces)]


def runs(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """Run ids of emergency restores in the log, oldest first."""
    seen: list[str] = []
    for e in entries:
        run = _details(e).get("run")
        if str(e.get("action", "")).startswith(FINAL) and isinstance(run, str) and run not in seen:
            seen.append(run)
    return seen


def cell(value: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    text = "" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def render(entries: Iterable[Mapping[str, Any]], run: str) -> str:
    """Markdown for run `run` (an empty run gives a record saying so, never an exception)."""
    mine = run_entries(entries, run)
    steps = [e for e in mine if str(e.get("action", "")).startswith(STEP_PREFIX)]
    final = next((e for e in reversed(mine) if e.get("action") == FINAL), None)
    used = next((e for e in mine if e.get("action") == TOKEN_USED), None)
    fd = _details(final) if final else {}
    first = mine[0] if mine else {}
    ctx = {**_details(first), **fd}

    lines = [f"# Incident record: emergency production restore ({run})", ""]
    if not mine:
        return "\n".join(lines + ["No audit entries for this run.", ""])
    lines += [
        f"- **Result:** {fd.get('verdict') or 'unfinished (no final entry: the run was interrupted)'}"
        + (f" (exit status {fd['exit_code']})" if "exit_code" in fd else ""),
        f"- **Production state:** {fd.get('state', 'unknown')}",
        f"- **Target:** {cell(first.get('target'))}",
        f"- **Operator:** {cell(first.get('user'))} on {cell(first.get('host'))}",
        f"- **Started:** {cell(first.get('time'))}",
        f"- **Finished:** {cell(final.get('time')) if final else '-'}",
        f"- **Backup:** {cell(ctx.get('tag'))}, sha256 `{cell(ctx.get('sha256'))}`",
        f"- **Approver:** {cell(ctx.get('approver') or '?')} (key {cell(ctx.get('key_id'))}), "
        f"approval nonce `{cell(ctx.get('nonce'))}`"
        + (", used (single use recorded)" if used else ""),
        f"- **Reason given by the approver:** {cell(ctx.get('reason') or _details(used or {}).get('reason') or '-')}",
    ]
    if fd.get("dry_run"):
        lines.append("- **Dry run:** nothing was changed")
    if ctx.get("skip_rehearsal"):
        lines.append(f"- **Rehearsal skipped:** {cell(ctx['skip_rehearsal'])}")
    if fd.get("snapshot"):
        lines.append(f"- **Snapshot of production before the restore:** `{cell(fd['snapshot'])}` "
                     f"(sha256 `{cell(fd.get('snapshot_sha256'))}`)")
    lines += ["", "## Timeline", "", "| time (UTC) | step | outcome | seconds | detail |", "|---|---|---|---|---|"]
    for e in mine:
        d = _details(e)
        step = d.get("title") or e.get("action")
        seconds = d.get("seconds")
        lines.append(f"| {cell(e.get('time'))} | {cell(step)} | {cell(e.get('outcome'))} | "
                     f"{'' if seconds is None else f'{float(seconds):.1f}'} | {cell(d.get('detail'))} |")
    discard = fd.get("discard") or []
    if discard:
        lines += ["", "## What the restore replaced", "", "| table | rows in production before | rows in backup |",
                  "|---|---|---|"]
        for row in discard:
            if isinstance(row, Mapping):
                now, bk = row.get("now"), row.get("backup")
                lines.append(f"| {cell(row.get('table'))} | {'-' if now is None else now} | "
                             f"{'-' if bk is None else bk} |")
    checks = fd.get("checks") or []
    if checks:
        lines += ["", "## Post-restore checks", "", "| check | result | detail |", "|---|---|---|"]
        for c in checks:
            ok = c.get("ok") if isinstance(c, Mapping) else None
            mark = "PASS" if ok is True else "FAIL" if ok is False else "not run"
            lines.append(f"| {cell(c.get('name'))} | {mark} | {cell(c.get('detail'))} |")
    if fd.get("message"):
        lines += ["", "## State of production and how to undo", "", "```", str(fd["message"]), "```"]
    lines += ["", "## To complete by hand", "",
              "- [ ] Root cause: what made the restore necessary",
              "- [ ] Data lost between the backup and the restore (see the discard table in the timeline)",
              "- [ ] Who was told, and when (status page, users)",
              "- [ ] Follow-up actions and owners", ""]
    return "\n".join(lines)
