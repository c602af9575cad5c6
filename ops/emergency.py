"""Emergencies: approved production restore and incident diagnosis (runbook: Emergency Procedures)."""
from ._pending import not_yet
from .tasking import task


@task
def restore(c):
    """Restore production from a backup, with a signed two-person approval."""
    raise not_yet("emergency.restore", 4)
