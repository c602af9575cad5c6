"""Backups: create and prune backup releases (runbook: Backup Procedures)."""
from ._pending import not_yet
from .tasking import task


@task
def create(c):
    """Dump production with the nightly job's flags, gzip, verify, optionally upload as a release."""
    raise not_yet("backup.create", 3)
