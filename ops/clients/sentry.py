"""Effect: Sentry web API client (a project's issues, org event stats).

Contract: ../shared/reference/api-contracts.md section 3. Pagination is a Link header that always has both
`previous` and `next`; only `results="true"` on `next` means there is more. `count` is a string; `statsPeriod`
only accepts "", "24h" and "14d" and selects the timeline attached to each issue, not a filter (filter with
`query`, e.g. `is:unresolved lastSeen:-24h`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from ..errors import ConfigError
from .base import Client

STATS_PERIODS = ("", "24h", "14d")


@dataclass(frozen=True)
class SentryIssue:
    id: str
    short_id: str
    title: str
    culprit: str
    level: str
    status: str
    count: int             # lifetime events (the API sends a string)
    user_count: int
    first_seen: str
    last_seen: str
    permalink: str
    period_events: int     # events in the requested statsPeriod timeline (sum of its buckets), 0 without one
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_api(cls, item: dict[str, Any], stats_period: str = "") -> "SentryIssue":
        series = (item.get("stats") or {}).get(stats_period) or []
        return cls(id=str(item.get("id", "")), short_id=item.get("shortId", ""), title=item.get("title", ""),
                   culprit=item.get("culprit") or "", level=item.get("level", ""), status=item.get("status", ""),
                   count=int(item.get("count") or 0), user_count=int(item.get("userCount") or 0),
                   first_seen=item.get("firstSeen", ""), last_seen=item.get("lastSeen", ""),
                   permalink=item.get("permalink", ""), period_events=sum(int(p[1]) for p in series), raw=item)


class Sentry(Client):
    service = "Sentry"
    token_var = "SENTRY_AUTH_TOKEN"

    def __init__(self, base_url: str, *, org: str, project: str, **kwargs: Any):
        super().__init__(base_url, **kwargs)
        self.org, self.project = org, project

    @classmethod
    def from_settings(cls, settings: Any, *, dry_run: bool = False, session: requests.Session | None = None) -> "Sentry":
        return cls(settings.require("sentry.api_url"), token=settings.require_env("SENTRY_AUTH_TOKEN"),
                   org=settings.require("sentry.org"), project=settings.require("sentry.project"),
                   dry_run=dry_run, session=session, **cls.options(settings, "sentry"))

    def hint_for(self, status: int, detail: str, method: str, url: str) -> str:
        if status == 404:
            return "check ops.sentry.org and ops.sentry.project (slugs) and that the token's org can see them"
        if status == 403:
            return "the token in SENTRY_AUTH_TOKEN lacks a scope (project:read for issues, org:read for stats)"
        return super().hint_for(status, detail, method, url)

    def issues(self, query: str = "is:unresolved", *, stats_period: str = "24h",
               limit: int | None = None) -> list[SentryIssue]:
        """The project's issues matching `query` (Sentry search syntax), across pages."""
        if stats_period not in STATS_PERIODS:
            raise ConfigError(f"Sentry statsPeriod {stats_period!r} is not accepted by the issues API",
                              hint="use '', '24h' or '14d'; filter by time in the query (lastSeen:-1h)")
        path = f"/projects/{quote(self.org, safe='')}/{quote(self.project, safe='')}/issues/"
        params = {"query": query, "statsPeriod": stats_period}
        return [SentryIssue.from_api(item, stats_period) for item in self.paginate(path, params, limit=limit)]

    def event_stats(self, *, stats_period: str = "24h", interval: str = "1h", category: str = "error",
                    project_id: str | None = None) -> dict[str, Any]:
        """Org stats v2, `sum(quantity)` grouped by outcome: `{"intervals": [...], "groups": [...]}`."""
        params = {"field": "sum(quantity)", "category": category, "statsPeriod": stats_period,
                  "interval": interval, "groupBy": "outcome", **({"project": project_id} if project_id else {})}
        return self.get_json(f"/organizations/{quote(self.org, safe='')}/stats_v2/", params)
