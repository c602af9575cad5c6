"""Restores: download, verify and restore database backups (runbook: Database Restore Procedures)."""
from ._pending import not_yet
from .tasking import task


@task
def staging(c):
    """Restore the latest backup into staging: download, verify, guard, confirm, restore, check."""
    raise not_yet("restore.staging", 3)
