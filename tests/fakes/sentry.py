"""Fake Sentry web API under /sentry/api/0, per the contract's section 3.

State: org, project, issues (list; served by lastSeen, newest first), page_cap (real: 100),
event_totals {outcome: [per-interval counts]} for stats_v2.
Pagination: a Link header with both `previous` and `next`, each with results="true|false" and cursor="0:N:0".
"""
from __future__ import annotations

import itertools
import re
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from .server import Reply, Request, Router, bearer, canned, iso, with_query

STATS_PERIODS = ("", "24h", "14d")
STATS_V2_PARAMS = {"field", "category", "statsPeriod", "interval", "project", "groupBy", "outcome", "reason",
                   "start", "end"}


class FakeSentry:
    prefix = "/sentry/api/0"

    def __init__(self, api: Any):
        self.api = api
        self.token = "sntryu_" + secrets.token_hex(32)
        self.org, self.project, self.project_id = "acme", "lottery-backend", "4504"
        self.issues: list[dict[str, Any]] = []
        self.page_cap = 5
        self.event_totals: dict[str, list[int]] = {"accepted": [0] * 24}
        self._ids = itertools.count(4051234567)
        self.router = Router()
        self.router.add("GET", r"/projects/(?P<org>[^/]+)/(?P<project>[^/]+)/issues", self.list_issues)
        self.router.add("GET", r"/organizations/(?P<org>[^/]+)/stats_v2", self.stats_v2)

    def add_issue(self, title: str, *, count: int = 1, events_24h: int | None = None, user_count: int = 0,
                  level: str = "error", status: str = "unresolved", first_seen: datetime | str | None = None,
                  last_seen: datetime | str | None = None) -> dict[str, Any]:
        """`count` is lifetime events (sent as a string); `events_24h` fills the 24h timeline (default: count)."""
        iid = str(next(self._ids))
        now = datetime.now(timezone.utc)
        issue = canned("sentry_issue", org=self.org, id=iid)
        issue.update(id=iid, shortId=f"LOTTERY-BACKEND-{len(self.issues) + 1}", title=title, level=level,
                     status=status, count=str(count), userCount=user_count,
                     firstSeen=iso(first_seen or now - timedelta(days=2)), lastSeen=iso(last_seen or now))
        issue["metadata"] = {"title": title}
        issue["_events_24h"] = count if events_24h is None else events_24h
        self.issues.append(issue)
        return issue

    def handle(self, rec: Request) -> Reply:
        token = bearer(rec)
        if token is None:
            return Reply.json({"detail": "Authentication credentials were not provided."}, 401)
        if token != self.token:
            return Reply.json({"detail": "Invalid token"}, 401)
        reply = self.router.dispatch(rec, lambda r: Reply.json({"detail": "The requested resource does not exist"},
                                                               404))
        reply.headers = {"X-Sentry-Rate-Limit-Limit": "40", "X-Sentry-Rate-Limit-Remaining": "39",
                         "X-Sentry-Rate-Limit-Reset": str(int(datetime.now(timezone.utc).timestamp()) + 1),
                         "X-Sentry-Rate-Limit-ConcurrentLimit": "25",
                         "X-Sentry-Rate-Limit-ConcurrentRemaining": "24", **reply.headers}
        return reply

    def _stats(self, issue: dict[str, Any], period: str) -> list[list[float]]:
        now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        buckets, step = (24, timedelta(hours=1)) if period == "24h" else (14, timedelta(days=1))
        points = [[float((now - step * (buckets - 1 - i)).timestamp()), 0] for i in range(buckets)]
        points[-1][1] = issue["_events_24h"]
        return points

    def list_issues(self, req: Request, org: str, project: str) -> Reply:
        if (org, project) != (self.org, self.project):
            return Reply.json({"detail": "The requested resource does not exist"}, 404)
        period = req.arg("statsPeriod", "24h")
        if period not in STATS_PERIODS:
            return Reply.json({"detail": "Invalid stats_period. Valid choices are '', '24h', and '14d'"}, 400)
        query = req.arg("query")
        found = [i for i in self.issues if _matches(i, "is:unresolved" if query is None else query)]
        found.sort(key=lambda i: i["lastSeen"], reverse=True)
        offset = int((req.arg("cursor") or "0:0:0").split(":")[1])
        per_page = max(1, min(int(req.arg("limit", "100") or 100), 100, self.page_cap))
        chunk = found[offset:offset + per_page]
        body = []
        for issue in chunk:
            out = {k: v for k, v in issue.items() if not k.startswith("_")}
            out["stats"] = {period: self._stats(issue, period)} if period else {}
            body.append(out)
        base = f"{self.api.url}{self.prefix}/projects/{org}/{project}/issues/"
        prev_cursor, next_cursor = f"0:{max(0, offset - per_page)}:1", f"0:{offset + per_page}:0"
        link = (f'<{with_query(base, req.query, cursor=prev_cursor)}>; rel="previous"; '
                f'results="{"true" if offset > 0 else "false"}"; cursor="{prev_cursor}", '
                f'<{with_query(base, req.query, cursor=next_cursor)}>; rel="next"; '
                f'results="{"true" if offset + per_page < len(found) else "false"}"; cursor="{next_cursor}"')
        return Reply.json(body, headers={"Link": link})

    def stats_v2(self, req: Request, org: str) -> Reply:
        if org != self.org:
            return Reply.json({"detail": "The requested resource does not exist"}, 404)
        unknown = sorted(set(req.query) - STATS_V2_PARAMS)
        if unknown:
            return Reply.json({"detail": f'Invalid parameter: "{unknown[0]}"'}, 400)
        field = req.arg("field")
        if not field:
            return Reply.json({"detail": 'Request is missing a "field"'}, 400)
        length = max(len(v) for v in self.event_totals.values())
        now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        intervals = [iso(now - timedelta(hours=length - 1 - i)) for i in range(length)]
        groups = [{"by": {"outcome": outcome} if req.arg("groupBy") == "outcome" else {},
                   "totals": {field: sum(series)}, "series": {field: series}}
                  for outcome, series in self.event_totals.items()]
        return Reply.json({"start": intervals[0], "end": iso(now + timedelta(hours=1)), "intervals": intervals,
                           "groups": groups})


def _matches(issue: dict[str, Any], query: str) -> bool:
    """A small part of Sentry's search syntax: is:<status>, level:<x>, firstSeen:-Nh|m|d, lastSeen:-N..., text."""
    now = datetime.now(timezone.utc)
    for token in query.split():
        key, _, value = token.partition(":")
        if key == "is":
            if issue["status"] != value:
                return False
        elif key == "level":
            if issue["level"] != value:
                return False
        elif key in ("firstSeen", "lastSeen"):
            match = re.fullmatch(r"-(\d+)([mhdw])", value)
            if not match:
                continue
            unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match[2]]
            since = now - timedelta(**{unit: int(match[1])})
            seen = datetime.strptime(issue[key], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            if seen < since:
                return False
        elif not _ and token.lower() not in issue["title"].lower():
            return False
    return True
