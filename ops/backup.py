"""Backups: create and prune backup releases (runbook: Backup Procedures)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tasking import task

DUMP_FLAGS = ("--no-owner", "--no-privileges", "--clean", "--if-exists")   # the nightly job's flags


@dataclass(frozen=True)
class Made:
    path: Path
    sha256: str
    size: int
    report: Any            # ops.dumps.Report of the file as written
    seconds: float


def backup_name(now: Any = None) -> tuple[str, str]:
    """Pure: ("backup-YYYYMMDD_HHMMSS", "backup_YYYYMMDD_HHMMSS.sql.gz") for a UTC time (default now)."""
    from datetime import datetime, timezone

    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d_%H%M%S")
    return f"backup-{stamp}", f"backup_{stamp}.sql.gz"


def find_pg_dump(settings: Any, server_version: int) -> str:
    """A pg_dump at least as new as the server (older ones refuse: "server version mismatch")."""
    from . import pg

    return pg.find_tool(str(settings.get("backup.pg_dump") or "pg_dump"), pg.version_tuple(server_version)[0])


def dump_to(settings: Any, target: Any, path: Path) -> Made:
    """pg_dump `target` with the nightly flags, gzip -9, SHA-256 and verification in the same pass, into `path`
    (through `<path>.part`, renamed only when pg_dump succeeded and the dump verified). Reads only."""
    import time

    from . import pg

    started = time.monotonic()
    exe = find_pg_dump(settings, pg.server_version(target.conninfo))
    return save_dump(path, _pg_dump_output(exe, target), started=started)


def _pg_dump_output(exe: str, target: Any) -> Iterator[bytes]:
    """pg_dump's stdout, in chunks; ServiceError (stderr redacted) after the last one if pg_dump failed."""
    import os
    import subprocess
    import threading

    from . import pg
    from .errors import ServiceError
    from .redact import redact_text

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | dict(target.env)
    with subprocess.Popen(pg.pg_dump_argv(exe, extra=DUMP_FLAGS), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env) as proc:
        out, err = proc.stdout, proc.stderr
        assert out is not None and err is not None
        errors: list[bytes] = []
        drain = threading.Thread(target=lambda: errors.append(err.read()), daemon=True)
        drain.start()
        yield from iter(lambda: out.read(1 << 20), b"")
        code = proc.wait()
        drain.join(30)
        stderr = b"".join(errors).decode("utf-8", "replace")
    if code != 0:
        raise ServiceError(f"pg_dump of {target.redacted} failed (exit {code}): "
                           + redact_text(stderr.strip(), tuple(target.env.values()))[-500:],
                           hint="check that the role may read every table, and the network")


def save_dump(path: Path, chunks: Iterable[bytes], *, started: float | None = None) -> Made:
    """Write pg_dump's plain output (`chunks`, from here or from a bastion) to `path` as gzip -9, hashing and
    verifying it in the same pass; through `<path>.part`, renamed only when the chunks ended normally and the dump
    verified (an exception from `chunks` leaves nothing behind)."""
    import gzip
    import hashlib
    import os
    import time

    from . import download, dumps
    from .errors import VerificationFailed

    started = time.monotonic() if started is None else started
    part = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    reader = dumps.DumpReader()
    digest = hashlib.sha256()
    try:
        with open(part, "wb") as raw, _Hashing(raw, digest) as hashed, \
                gzip.GzipFile(filename="", mode="wb", fileobj=hashed, compresslevel=9, mtime=0) as gz:
            for chunk in chunks:
                reader.feed(chunk)
                gz.write(chunk)
        reader.finish()
        report = reader.report
        if not report.ok:
            raise VerificationFailed(f"the new backup does not verify: {report.problems[0]}",
                                     hint="look at pg_dump's output; the file was not kept")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    sha = digest.hexdigest()
    download.write_sidecar(path, sha)
    return Made(path, sha, path.stat().st_size, report, time.monotonic() - started)


class _Hashing:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, raw: Any, digest: Any):
        self.raw, self.digest = raw, digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    def __enter__(self) -> "_Hashing":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.raw.flush()


def publish(settings: Any, made: Made, tag: str) -> dict[str, Any]:
    """Upload a backup as a release `tag` with one asset, and check what GitHub stored."""
    from .clients.github import GitHub
    from .errors import ServiceError

    github = GitHub.from_settings(settings)
    rows = sum(made.report.tables.values())
    release = github.create_release(tag, name=tag, make_latest=False,
                                    body=f"Database backup made by `inv backup.create`: {len(made.report.tables)} "
                                         f"tables, {rows} rows, sha256 {made.sha256}")
    with open(made.path, "rb") as fh:
        asset = github.upload_asset(release, made.path.name, fh, content_type="application/gzip")
    stored = str(asset.get("digest") or "")
    if asset.get("size") != made.size or (stored and stored != f"sha256:{made.sha256}"):
        raise ServiceError(f"GitHub stored {asset.get('size')} bytes ({stored or 'no digest'}) for {made.path.name}, "
                           f"not {made.size} (sha256:{made.sha256})", hint="delete the release and upload again")
    return asset


@task(help={"dest": "Directory for the backup (default ops.restore.backup_dir, else <state dir>/backups)",
            "upload": "Publish it as a GitHub release backup-YYYYMMDD_HHMMSS (needs GITHUB_TOKEN with write access)"})
def create(c, dest=None, upload=False):
    """Dump $DATABASE_URL with the nightly job's flags, gzip -9, verify; --upload publishes it as a release."""
    from . import guard
    from .config import Settings
    from .errors import GuardRefused
    from .restore import backup_dir

    settings = Settings.from_context(c)
    target = guard.judge(settings, settings.require_env("DATABASE_URL", "backup.create dumps it"))
    if target.error:   # reading production is allowed; a target nobody can judge is not
        raise GuardRefused(f"backup.create: cannot understand the database URL: {target.error}")
    if upload:
        settings.require_env("GITHUB_TOKEN", "--upload creates a release")
    tag, name = backup_name()
    made = dump_to(settings, target, backup_dir(settings, dest) / name)
    print(f"{made.path}\n  {made.size:,} bytes, sha256 {made.sha256}, {len(made.report.tables)} tables, "
          f"{sum(made.report.tables.values()):,} rows, verified, {made.seconds:.1f} s")
    if upload:
        asset = publish(settings, made, tag)
        print(f"published release {tag}: {asset.get('browser_download_url') or asset.get('name')}")


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
