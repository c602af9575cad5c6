"""Backups: create and prune backup releases (runbook: Backup Procedures)."""
from ._pending import not_yet
from .tasking import task


@task
def create(c):
    """Dump production with the nightly job's flags, gzip, verify, optionally upload as a release."""
    raise not_yet("backup.create", 3)


# -- prune (issue 5) ------------------------------------------------------------------------------------------------

@task(help={"keep_days": "Delete backup releases older than this many days (default ops.backup.keep_days, 14)",
            "keep_min": "Never delete the newest this many backups, whatever their age (default 7)",
            "dry_run": "Print what would be deleted and change nothing"})
def prune(c, keep_days=None, keep_min=None, dry_run=False):
    """Delete old backup releases and their tags, keeping the newest; only releases named backup-YYYYMMDD_HHMMSS."""
    from datetime import datetime, timezone

    from . import audit, gather, retention
    from .clients.github import GitHub
    from .config import Settings
    from .errors import ServiceError

    settings = Settings.from_context(c)
    keep_days = float(keep_days if keep_days is not None else settings.get("backup.keep_days", 14))
    keep_min = int(keep_min if keep_min is not None else settings.get("backup.keep_min", 7))
    retention.check_policy(keep_days=keep_days, keep_min=keep_min)
    gather.need(settings, ["github.repo"], [] if dry_run else ["GITHUB_TOKEN"])
    github = GitHub.from_settings(settings, dry_run=dry_run)
    prefix = settings.get("github.backup_prefix", "backup-")
    now = datetime.now(timezone.utc)
    backups, ignored = retention.backups_from_releases(github.releases(), prefix)
    plan = retention.select_prunable(backups, now=now, keep_days=keep_days, keep_min=keep_min)
    print("\n".join(retention.render_prune_plan(plan, ignored, now=now, dry_run=dry_run)))
    if dry_run or not plan.delete:
        return
    deleted: list[str] = []
    try:
        for backup in plan.delete:
            github.delete_release(backup.release_id)
            github.delete_tag(backup.tag)   # deleting a release leaves its tag behind
            deleted.append(backup.tag)
            print(f"deleted {backup.tag}")
    finally:
        audit.record(settings, "backup.prune", target=settings.get("github.repo"),
                     outcome="ok" if len(deleted) == len(plan.delete) else "partial",
                     deleted=deleted, keep_days=keep_days, keep_min=keep_min)
    still = {b.tag for b in retention.backups_from_releases(github.releases(), prefix)[0]} & set(deleted)
    if still:
        raise ServiceError(f"GitHub still lists {', '.join(sorted(still))} after deleting them",
                           hint="look at the releases page, then run inv backup.prune --dry-run")
