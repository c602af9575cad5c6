"""Pure: backup releases as data, what `backup.prune` may delete, and the backup checks (fresh, trend, retention).

The nightly job publishes one release per backup, tagged `backup-YYYYMMDD_HHMMSS` (the prefix is
`ops.github.backup_prefix`) with one `.sql.gz` asset. Anything not named that way is never touched.
"""
from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .checklist import Outcome
from .errors import ConfigError

TAG_TIME = "%Y%m%d_%H%M%S"


@dataclass(frozen=True)
class Backup:
    """One backup release: its tag, when it was made, and its `.sql.gz` asset (None when it has none)."""

    tag: str
    created: datetime
    release_id: int
    asset: str | None = None
    size: int | None = None
    url: str = ""
    draft: bool = False


@dataclass(frozen=True)
class PrunePlan:
    delete: tuple[Backup, ...]
    keep: tuple[Backup, ...]
    cutoff: datetime


def parse_time(value: str) -> datetime:
    """An API timestamp (`2024-05-01T03:00:00Z`, with or without microseconds) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def tag_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + r"(\d{8}_\d{6})\Z")


def _backup_asset(assets: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for asset in assets:
        if str(asset.get("name", "")).endswith(".sql.gz") and asset.get("state", "uploaded") == "uploaded":
            return asset
    return None


def backups_from_releases(releases: Sequence[Mapping[str, Any]], prefix: str) -> tuple[list[Backup], list[str]]:
    """The releases named like backups, newest first, and the tags of all other releases (left alone)."""
    pattern = tag_pattern(prefix)
    backups, ignored = [], []
    for rel in releases:
        tag = str(rel.get("tag_name", ""))
        match = pattern.match(tag)
        try:
            stamp = datetime.strptime(match[1], TAG_TIME).replace(tzinfo=timezone.utc) if match else None
        except ValueError:  # backup-20241399_999999 is not a date
            stamp = None
        if stamp is None:
            ignored.append(tag)
            continue
        asset = _backup_asset(rel.get("assets") or [])
        created = parse_time(rel["created_at"]) if rel.get("created_at") else stamp
        backups.append(Backup(tag=tag, created=created, release_id=int(rel["id"]),
                              asset=asset["name"] if asset else None, size=int(asset["size"]) if asset else None,
                              url=str(rel.get("html_url", "")), draft=bool(rel.get("draft"))))
    backups.sort(key=lambda b: (b.created, b.tag), reverse=True)
    return backups, ignored


def check_policy(*, keep_days: float, keep_min: int) -> None:
    """Refuse a retention policy that could delete every backup."""
    if keep_min < 1:
        raise ConfigError(f"keep-min must be at least 1 (got {keep_min})", hint="keep at least the newest backup")
    if keep_days < 0:
        raise ConfigError(f"keep-days must not be negative (got {keep_days})", hint="use --keep-days 14")


def select_prunable(backups: Sequence[Backup], *, now: datetime, keep_days: float, keep_min: int) -> PrunePlan:
    """Which backups `backup.prune` deletes: older than `keep_days`, never one of the newest `keep_min`.

    `backups` must already be only the releases matching the backup naming (see `backups_from_releases`);
    the newest `keep_min` published ones are protected whatever their age, so a broken nightly job can never
    prune the last good backups away.
    """
    check_policy(keep_days=keep_days, keep_min=keep_min)
    ordered = sorted(backups, key=lambda b: (b.created, b.tag), reverse=True)
    protected = {b.tag for b in [b for b in ordered if not b.draft][:keep_min]}
    cutoff = now - timedelta(days=keep_days)
    delete = tuple(b for b in ordered if b.tag not in protected and b.created < cutoff)
    keep = tuple(b for b in ordered if b not in delete)
    return PrunePlan(delete=delete, keep=keep, cutoff=cutoff)


def render_prune_plan(plan: PrunePlan, ignored: Sequence[str], *, now: datetime, dry_run: bool) -> list[str]:
    """The lines `backup.prune` prints before acting: what goes, what stays, what is left alone."""
    verb = "would delete" if dry_run else "deleting"
    lines = [f"{verb} {b.tag} ({human_age(now - b.created)} old, {human_size(b.size)})" for b in plan.delete]
    if not plan.delete:
        lines.append(f"nothing to delete: no backup older than {plan.cutoff:%Y-%m-%d %H:%M} UTC "
                     "beyond the protected newest ones")
    if plan.keep:
        lines.append(f"keeping {len(plan.keep)} backup(s), newest {plan.keep[0].tag}, oldest {plan.keep[-1].tag}")
    if ignored:
        lines.append(f"left alone, not named like a backup: {', '.join(sorted(ignored))}")
    return lines


# -- formatting -------------------------------------------------------------------------------------------

def human_size(n: float | None) -> str:
    if n is None:
        return "no asset"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def size_chart(backups: Sequence[Backup], width: int = 30) -> list[str]:
    """Sizes as a horizontal bar chart, oldest first: `20240501_030000  ███████▍ 12.3 MiB`."""
    sized = [b for b in backups if b.size]
    if not sized:
        return []
    top = max(b.size or 0 for b in sized)
    eighths = " ▏▎▍▌▋▊▉"
    lines = []
    for b in sorted(backups, key=lambda b: b.created):
        units = round((b.size or 0) / top * width * 8) if top else 0
        bar = "█" * (units // 8) + (eighths[units % 8] if units % 8 else "")
        label = b.tag.rsplit("-", 1)[-1] if "-" in b.tag else b.tag
        lines.append(f"{label}  {bar or '▏':<{width + 1}} {human_size(b.size)}")
    return lines


# -- the checks -------------------------------------------------------------------------------------------

def backup_fresh(backups: Sequence[Backup], *, now: datetime, max_age_hours: float = 26,
                 shrink_fail: float = 0.5, shrink_warn: float = 0.8, compare: int = 7) -> Outcome:
    """`backup.fresh`: the newest published backup is young enough, has its asset, and has not shrunk."""
    published = [b for b in backups if not b.draft]
    if not published:
        return Outcome("backup.fresh", "fail", "no backup release found",
                       ("the nightly backup workflow has never published one, or ops.github.backup_prefix is wrong",))
    newest = published[0]
    age = now - newest.created
    details = [f"newest: {newest.tag}, {human_age(age)} old, {human_size(newest.size)}", newest.url]
    if not newest.size:
        return Outcome("backup.fresh", "fail", f"{newest.tag} has no backup asset (.sql.gz)", tuple(details))
    if age > timedelta(hours=max_age_hours):
        return Outcome("backup.fresh", "fail",
                       f"newest backup is {human_age(age)} old (limit {max_age_hours:g} h)", tuple(details))
    previous = [b.size for b in published[1:compare + 1] if b.size]
    if previous:
        baseline = statistics.median(previous)
        ratio = newest.size / baseline
        details.append(f"median of the {len(previous)} previous: {human_size(baseline)} ({ratio:.0%} of it)")
        if ratio < shrink_fail:
            return Outcome("backup.fresh", "fail",
                           f"{newest.tag} is {ratio:.0%} of the usual size: the backup may be incomplete",
                           tuple(details))
        if ratio < shrink_warn:
            return Outcome("backup.fresh", "warn", f"{newest.tag} is smaller than usual ({ratio:.0%})",
                           tuple(details))
    return Outcome("backup.fresh", "pass", f"{newest.tag}, {human_age(age)} old, {human_size(newest.size)}",
                   tuple(d for d in details[1:] if d))   # the summary already names the newest


def backup_trend(backups: Sequence[Backup], *, drop_warn: float = 0.5) -> Outcome:
    """`backup.trend`: sizes of the retained backups as a small chart; a drop by more than half is a warn."""
    published = [b for b in backups if not b.draft]
    chart = size_chart(published)
    if len([b for b in published if b.size]) < 2:
        return Outcome("backup.trend", "warn", f"{len(published)} backup(s): not enough for a trend", tuple(chart))
    series = sorted((b for b in published if b.size), key=lambda b: b.created)
    drops = [(a, b) for a, b in zip(series, series[1:]) if (b.size or 0) < (a.size or 0) * drop_warn]
    first, last = series[0], series[-1]
    change = ((last.size or 0) - (first.size or 0)) / (first.size or 1)
    summary = (f"{len(series)} backups from {human_size(first.size)} to {human_size(last.size)} "
               f"({change:+.0%}) since {first.created:%Y-%m-%d}")
    if drops:
        notes = [f"{b.tag} dropped to {human_size(b.size)} from {human_size(a.size)}" for a, b in drops]
        return Outcome("backup.trend", "warn", summary + f"; {len(drops)} sharp drop(s)", (*notes, *chart))
    return Outcome("backup.trend", "pass", summary, tuple(chart))


def backup_retention(backups: Sequence[Backup], ignored: Sequence[str], *, now: datetime,
                     keep_days: float, keep_min: int) -> Outcome:
    """`backup.retention`: how many backups exist, the oldest, and what `backup.prune` would delete."""
    plan = select_prunable(backups, now=now, keep_days=keep_days, keep_min=keep_min)
    if not backups:
        return Outcome("backup.retention", "warn", "no backup releases", ())
    oldest = backups[-1]
    details = [f"policy: keep {keep_days:g} days, never fewer than the newest {keep_min}",
               f"oldest: {oldest.tag} ({human_age(now - oldest.created)} old)"]
    if ignored:
        details.append(f"{len(ignored)} other release(s) not named like backups, left alone")
    details += [f"would delete {b.tag} ({human_age(now - b.created)} old, {human_size(b.size)})" for b in plan.delete]
    summary = f"{len(backups)} backup releases, oldest {oldest.created:%Y-%m-%d}"
    published = [b for b in backups if not b.draft]
    if len(published) < keep_min:
        return Outcome("backup.retention", "warn", summary + f"; fewer than {keep_min} published", tuple(details))
    if plan.delete:
        details.append("hint: the nightly job's clean-up should have removed these: inv backup.prune --dry-run")
        return Outcome("backup.retention", "warn", summary + f"; backup.prune would delete {len(plan.delete)}",
                       tuple(details))
    return Outcome("backup.retention", "pass", summary + "; nothing to prune", tuple(details))
