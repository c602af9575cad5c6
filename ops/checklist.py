"""Pure: checklist records, the worst status, renderers (table, JSON, Markdown) and a concurrent runner.

A health check is data, not an exception: every check ends as an `Outcome` with one of four statuses.

    pass   checked, all good                        ✅
    warn   checked, worth a look                    ⚠️
    fail   checked, something is wrong              ❌
    error  could not check (config, token, outage)  ❓

`worst()` orders them pass < warn < error < fail: a failure someone saw outranks one nobody could look at.
The exit status is 0 for pass and warn, 1 for fail and error (`exit_code`).
Only the stdlib and `ops.redact` are imported here; rich is imported inside `render_table`.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .redact import redact_text

STATUSES = ("pass", "warn", "fail", "error")
_RANK = {"pass": 0, "warn": 1, "error": 2, "fail": 3}
ICONS = {"pass": "✅", "warn": "⚠️", "fail": "❌", "error": "❓"}
STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "error": "magenta"}


@dataclass(frozen=True)
class Outcome:
    """What one check found: `details` are the evidence, one line each (links, counts, a small chart)."""

    id: str
    status: str
    summary: str
    details: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in _RANK:
            raise ValueError(f"unknown status {self.status!r} for check {self.id}")
        object.__setattr__(self, "details", tuple(self.details))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "summary": self.summary, "details": list(self.details)}


@dataclass(frozen=True)
class Check:
    """One box of the runbook's checklist: `run()` gathers and decides, returning an Outcome.

    `run` may raise: the runner turns any exception into an `error` outcome with the reason.
    """

    id: str
    title: str
    run: Callable[[], Outcome]
    timeout: float = 60.0


@dataclass(frozen=True)
class Report:
    title: str
    outcomes: tuple[Outcome, ...]
    generated_at: datetime | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def status(self) -> str:
        return worst(o.status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        return exit_code(self.status)


def worst(statuses: Iterable[str]) -> str:
    """The worst of the statuses (pass < warn < error < fail); `pass` for none."""
    return max(statuses, key=_RANK.__getitem__, default="pass")


def exit_code(status: str) -> int:
    return 0 if status in ("pass", "warn") else 1


# -- the runner ---------------------------------------------------------------------------------------------

def _outcome_of_exception(check_id: str, exc: BaseException) -> Outcome:
    message = getattr(exc, "message", None)
    hint = getattr(exc, "hint", None)
    if message is None:  # not an OpsError: a bug or a library error that escaped an adapter
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Outcome(check_id, "error", message, (f"hint: {hint}",) if hint else ())


def _call(check: Check, future: Future[Outcome]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(check.run())
    except BaseException as exc:  # noqa: BLE001 - every failure of a check is data
        future.set_exception(exc)


def redact_outcome(outcome: Outcome, secrets: Sequence[str] = ()) -> Outcome:
    return Outcome(outcome.id, outcome.status, redact_text(outcome.summary, tuple(secrets)),
                   tuple(redact_text(d, tuple(secrets)) for d in outcome.details))


def run_checks(checks: Sequence[Check], *, secrets: Sequence[str] = (),
               clock: Callable[[], float] = time.monotonic) -> list[Outcome]:
    """Run every check at once, each in its own thread, and wait for each at most its own timeout.

    A check that raises becomes `error` with the reason (and hint); one that does not answer in time becomes
    `error` saying so, and the others still report. Threads are daemons, so a hung check cannot keep the
    process alive after the report is printed. Every outcome is redacted with `secrets` before it is returned.
    """
    started = clock()
    futures: list[Future[Outcome]] = []
    for check in checks:
        future: Future[Outcome] = Future()
        threading.Thread(target=_call, args=(check, future), name=f"check:{check.id}", daemon=True).start()
        futures.append(future)
    outcomes = []
    for check, future in zip(checks, futures):
        remaining = max(0.0, started + check.timeout - clock())
        try:
            outcome = future.result(timeout=remaining)
            if outcome.id != check.id:
                outcome = Outcome(check.id, outcome.status, outcome.summary, outcome.details)
        except FutureTimeout:
            outcome = Outcome(check.id, "error", f"no answer within {check.timeout:g} s",
                              ("hint: the service may be down or slow; raise ops.checks.timeout if it is just slow",))
        except BaseException as exc:  # noqa: BLE001
            outcome = _outcome_of_exception(check.id, exc)
        outcomes.append(redact_outcome(outcome, secrets))
    return outcomes


# -- rendering ----------------------------------------------------------------------------------------------

def to_json(outcomes: Sequence[Outcome]) -> str:
    """`{"checks": [{"id", "status", "summary", "details"}], "status": worst}`"""
    doc = {"checks": [o.to_dict() for o in outcomes], "status": worst(o.status for o in outcomes)}
    return json.dumps(doc, indent=2, ensure_ascii=False)


def build_table(outcomes: Sequence[Outcome], title: str = "") -> Any:
    """The checklist as a rich Table: icon, check id, status, and the summary with its evidence below."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None, show_lines=True)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail")
    for o in outcomes:
        detail = Text(o.summary, style="bold")
        for line in o.details:
            detail.append("\n" + line, style="default")
        table.add_row(ICONS[o.status], o.id, Text(o.status, style=STYLES[o.status]), detail)
    overall = worst(o.status for o in outcomes)
    table.caption = f"overall: {ICONS[overall]} {overall}"
    return table


def render_table(outcomes: Sequence[Outcome], title: str = "", *, width: int = 120) -> str:
    """The rich table as plain text (no colour), for tests and for output that is not a terminal."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, highlight=False).print(build_table(outcomes, title))
    return buffer.getvalue()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    """A Markdown report a person can paste into a GitHub issue: a summary table, then the evidence."""
    when = f" ({report.generated_at:%Y-%m-%d %H:%M} UTC)" if report.generated_at else ""
    lines = [f"## {report.title}{when}", "",
             f"Overall: {ICONS[report.status]} **{report.status}**", "",
             "| | Check | Status | Summary |", "|---|---|---|---|"]
    for o in report.outcomes:
        lines.append(f"| {ICONS[o.status]} | `{o.id}` | {o.status} | {_md_cell(o.summary)} |")
    for o in report.outcomes:
        if o.details:
            lines += ["", f"### {ICONS[o.status]} `{o.id}`", "", *_md_details(o.details)]
    lines += [f"> {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def _md_details(details: Sequence[str]) -> list[str]:
    """Evidence lines as bullets; runs of chart or column-aligned lines as a fenced block, spacing kept."""
    out: list[str] = []
    fenced = False
    for line in details:
        pre = _looks_preformatted(line)
        if pre != fenced:
            out.append("```")
            fenced = pre
        out.append(line if pre else f"- {line}")
    if fenced:
        out.append("```")
    return out


def _looks_preformatted(line: str) -> bool:
    # charts and aligned columns must keep their spacing
    return "█" in line or "▏" in line or "  " in line.strip()
