"""Effect: fetch a backup release asset to a local file, whole and checked (runbook: restore step 1).

    backup = choose_backup(github.releases(), prefix, tag)       # pure: which release and which asset
    done = fetch(github, backup, dest_dir)                       # effect: resumable download, checks, sidecar

The download goes to `<name>.part` and is renamed only when complete, after its size matched the release metadata
and its SHA-256 matched the asset's `digest` (when GitHub gives one). An interrupted download is resumed with
`Range` (the GitHub client retries and backs off); a later run resumes a `.part` left behind. The SHA-256 is
written beside the file as `<name>.sha256` (sha256sum format), which later steps and the audit log use.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ServiceError, VerificationFailed

Progress = Callable[[int, "int | None"], None]
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
BACKUP_SUFFIXES = (".sql.gz", ".sql")


@dataclass(frozen=True)
class Backup:
    """One backup release asset, as the release metadata describes it."""

    tag: str
    name: str
    size: int
    digest: str | None      # hex SHA-256 from the asset's `digest`, when GitHub gives one
    created_at: str
    asset: Mapping[str, Any]


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size: int
    tag: str | None = None
    reused: bool = False    # the file was already there, complete and matching
    resumed_from: int = 0   # bytes of an earlier partial download kept


# -- pure: which backup ----------------------------------------------------------------------------------------------
def parse_digest(value: Any) -> str | None:
    """`"sha256:<64 hex>"` -> hex; None/absent -> None; anything else is a ValueError (never silently skipped)."""
    if value in (None, ""):
        return None
    text = str(value)
    algo, _, hexdigest = text.partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
        raise ValueError(f"unsupported asset digest {text!r}")
    return hexdigest.lower()


def safe_name(name: str) -> str:
    """The asset name as a local file name: a plain base name ending in .sql.gz or .sql (never a path)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if not _SAFE_NAME.fullmatch(base) or not base.endswith(BACKUP_SUFFIXES):
        raise VerificationFailed(f"release asset name {name!r} is not a backup file name",
                                 hint="backup assets are named backup_YYYYMMDD_HHMMSS.sql.gz")
    return base


def pick_asset(release: Mapping[str, Any]) -> Mapping[str, Any]:
    """The backup asset of a release: the one `.sql.gz` (or `.sql`) asset, preferring `backup_*`."""
    assets = [a for a in release.get("assets") or [] if str(a.get("name", "")).endswith(BACKUP_SUFFIXES)
              and a.get("state", "uploaded") == "uploaded"]
    named = [a for a in assets if str(a["name"]).startswith("backup_")]
    chosen = named or assets
    tag = release.get("tag_name")
    if not chosen:
        names = ", ".join(str(a.get("name")) for a in release.get("assets") or []) or "none"
        raise VerificationFailed(f"release {tag} has no backup asset (.sql.gz); its assets: {names}",
                                 hint="pick another backup with --tag, or look at the backup workflow's last run")
    if len(chosen) > 1:
        raise VerificationFailed(f"release {tag} has several backup assets: {', '.join(a['name'] for a in chosen)}",
                                 hint="download the one you mean from the release page and use --file")
    return chosen[0]


def choose_backup(releases: Iterable[Mapping[str, Any]], prefix: str, tag: str | None = None) -> Backup:
    """The release tagged `tag`, or the newest (by `created_at`) non-draft release tagged `prefix...`."""
    candidates = [r for r in releases if not r.get("draft") and str(r.get("tag_name", "")).startswith(prefix)]
    if tag is not None:
        matching = [r for r in candidates if r.get("tag_name") == tag]
        if not matching:
            raise VerificationFailed(f"no published backup release tagged {tag!r}",
                                     hint=f"list them with `inv restore.download --help`; tags look like "
                                          f"{prefix}YYYYMMDD_HHMMSS")
        release = matching[0]
    else:
        if not candidates:
            raise VerificationFailed(f"no published release tagged {prefix}* was found",
                                     hint="check ops.github.repo and ops.github.backup_prefix, and that the nightly "
                                          "backup workflow has run")
        release = max(candidates, key=lambda r: str(r.get("created_at") or ""))
    asset = pick_asset(release)
    try:
        digest = parse_digest(asset.get("digest"))
    except ValueError as exc:
        raise VerificationFailed(f"release {release.get('tag_name')}: {exc}") from None
    return Backup(tag=str(release["tag_name"]), name=safe_name(str(asset["name"])), size=int(asset["size"]),
                  digest=digest, created_at=str(release.get("created_at") or ""), asset=asset)


# -- effects: files ---------------------------------------------------------------------------------------------------
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_sidecar(path: Path, sha256: str) -> Path:
    side = sidecar(path)
    tmp = side.with_name(side.name + ".part")
    tmp.write_text(f"{sha256}  {path.name}\n")
    os.replace(tmp, side)
    return side


def read_sidecar(path: Path) -> str | None:
    """The SHA-256 recorded beside `path`, if any (first word of `<name>.sha256`)."""
    side = sidecar(path)
    try:
        word = side.read_text().split()[0].lower()
    except (OSError, IndexError):
        return None
    return word if re.fullmatch(r"[0-9a-f]{64}", word) else None


def file_sha256(path: Path) -> str:
    """The file's SHA-256, trusting the sidecar only when it is newer than the file."""
    recorded = read_sidecar(path)
    if recorded and sidecar(path).stat().st_mtime >= path.stat().st_mtime:
        return recorded
    return sha256_file(path)


def fetch(github: Any, backup: Backup, dest: Path, *, progress: Progress | None = None,
          attempts: int = 5) -> Downloaded:
    """Download `backup` into directory `dest` (resuming a `.part` left there); check size and digest."""
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / backup.name
    if final.exists() and final.stat().st_size == backup.size:
        sha = sha256_file(final)
        if backup.digest is None or sha == backup.digest:
            write_sidecar(final, sha)
            return Downloaded(final, sha, backup.size, backup.tag, reused=True)
    part = final.with_name(final.name + ".part")
    for restart in (False, True):
        offset = part.stat().st_size if part.exists() and not restart else 0
        if offset > backup.size:
            offset = 0
        with open(part, "r+b" if offset else "wb") as fh:
            size = github.download_asset(dict(backup.asset), fh, offset=offset, attempts=attempts, progress=progress)
            fh.flush()
            os.fsync(fh.fileno())
        if size != backup.size:
            part.unlink(missing_ok=True)
            raise VerificationFailed(f"{backup.name}: downloaded {size} bytes, the release says {backup.size}",
                                     hint="download it again; if it persists the release asset is damaged")
        sha = sha256_file(part)
        if backup.digest is None or sha == backup.digest:
            os.replace(part, final)
            write_sidecar(final, sha)
            return Downloaded(final, sha, size, backup.tag, resumed_from=offset)
        if not offset:  # a fresh download that does not match: the asset itself is wrong
            break
    part.unlink(missing_ok=True)
    raise VerificationFailed(f"{backup.name}: SHA-256 {sha} does not match the release's digest {backup.digest}",
                             hint="the file was damaged in transit or the asset was replaced; download it again, "
                                  "and if it persists do not restore it")


# -- progress -------------------------------------------------------------------------------------------------------
def interactive(environ: Mapping[str, str] | None = None, stream: Any = None) -> bool:
    """A progress bar only on a terminal and outside CI."""
    env = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    ci = env.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return not ci and hasattr(stream, "isatty") and stream.isatty()


class ProgressBar:
    """A rich progress bar with rate and ETA on a terminal; silent otherwise. Use as a context manager."""

    def __init__(self, description: str, total: int | None, *, enabled: bool | None = None):
        self.enabled = interactive() if enabled is None else enabled
        self.description, self.total = description, total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> "ProgressBar":
        if self.enabled:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), TimeRemainingColumn(), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def __call__(self, done: int, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total or self.total)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def ensure_complete(path: Path) -> None:
    """Refuse a path that is a partial download."""
    if path.name.endswith(".part"):
        raise ServiceError(f"{path} is an unfinished download", hint="run inv restore.download again to finish it")
