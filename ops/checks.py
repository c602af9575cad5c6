"""Checks: the daily, weekly and monthly health checklists (runbook: System Health Monitoring)."""
from ._pending import not_yet
from .tasking import task


@task
def daily(c):
    """Run the daily checklist against the real services."""
    raise not_yet("checks.daily", 5)
