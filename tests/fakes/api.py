"""FakeAPI: one test's state of the fake services, its request records and its injected faults.

    fake_api.github.add_backup("backup-20240101_020000", data)       # state, per service module
    fake_api.render.suspend_after_polls = 3
    fake_api.fail(r"/releases$", status=500, times=2)                # faults (re.search on the full path)
    fake_api.drop(r"/services/", times=1)                            # connection closed, no answer
    fake_api.cut(r"/github-production-release-asset/", after=1000)   # body cut after N bytes
    fake_api.slow(r"/issues/", seconds=2, times=1)                   # answer late (client timeouts)
    fake_api.rate_limit(r"/releases", kind="primary", reset_in=30)   # GitHub 403 + x-ratelimit-remaining: 0
    fake_api.calls("GET", r"/releases", origin="api")                # records: method, path, query, headers, body
    Settings.from_dict(ops=fake_api.settings_ops(), env=fake_api.env())   # or fake_api.settings()
"""
from __future__ import annotations

import re
import threading
import time
from typing import Any

from .app import FakeApp
from .cloudflare import FakeCloudflare
from .github import FakeGitHub
from .render import FakeRender
from .sentry import FakeSentry
from .server import Fault, FakeServers, Recorded, Reply, Request, deep_merge
from .supabase import FakeSupabase


class FakeAPI:
    def __init__(self, servers: FakeServers):
        self.servers = servers
        self.url = servers.urls["api"]
        self.uploads_url = servers.urls["uploads"]
        self.blob_url = servers.urls["blob"]
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.errors: list[str] = []  # tracebacks of bugs in the fake itself
        self.lock = threading.RLock()
        self.stopped = threading.Event()
        self.github = FakeGitHub(self)
        self.render = FakeRender(self)
        self.sentry = FakeSentry(self)
        self.supabase = FakeSupabase(self)
        self.cloudflare = FakeCloudflare(self)
        self.app = FakeApp(self)
        self._services = (self.github, self.render, self.sentry, self.supabase, self.cloudflare, self.app)
        servers.current = self

    def close(self) -> None:
        self.stopped.set()  # slow handlers wake up and hang up
        if self.servers.current is self:
            self.servers.current = None

    # -- configuration for the code under test ---------------------------------------------------------------------
    def settings_ops(self, **overrides: Any) -> dict[str, Any]:
        """The `ops` config fragment pointing every service at the fake, with quick retries for tests."""
        quick = {"timeout": 5, "retries": 2, "backoff": 0.01, "max_wait": 2}
        ops = {
            "github": {"repo": self.github.repo, "api_url": self.url + self.github.prefix, "backup_prefix": "backup-",
                       **quick},
            "render": {"api_url": self.url + self.render.prefix, "service_id": self.render.service_id,
                       "poll_interval": 0.02, "poll_timeout": 5, "page_size": 5, **quick},
            "sentry": {"api_url": self.url + self.sentry.prefix, "org": self.sentry.org,
                       "project": self.sentry.project, **quick},
            "supabase": {"api_url": self.url + self.supabase.prefix, "project_ref": self.supabase.ref, **quick},
            "cloudflare": {"api_url": self.url + self.cloudflare.prefix, "zone_id": self.cloudflare.zone_id, **quick},
            "app": {"health_url": self.app.health_url, "endpoints": self.app.endpoint_urls, "timeout": 2},
        }
        return deep_merge(ops, overrides)

    def env(self) -> dict[str, str]:
        """The tokens the fake accepts (any other value gets the service's 401/403)."""
        return {"GITHUB_TOKEN": self.github.token, "RENDER_API_KEY": self.render.token,
                "SENTRY_AUTH_TOKEN": self.sentry.token, "SUPABASE_ACCESS_TOKEN": self.supabase.token,
                "CLOUDFLARE_API_TOKEN": self.cloudflare.token}

    def settings(self, env: dict[str, str] | None = None, **ops_overrides: Any) -> Any:
        """`ops.config.Settings` for the fake (env defaults to `env()`)."""
        from ops.config import Settings

        return Settings.from_dict(ops=self.settings_ops(**ops_overrides), env=self.env() if env is None else env)

    # -- faults ------------------------------------------------------------------------------------------------------
    def _add(self, kind: str, path: str, times: int | None, method: str | None, origin: str | None,
             **kw: Any) -> Fault:
        fault = Fault(kind=kind, path=re.compile(path), times=times, method=method, origin=origin, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def fail(self, path: str, status: int = 500, times: int | None = 1, *, method: str | None = None,
             origin: str | None = None, body: Any = None, headers: dict[str, str] | None = None) -> Fault:
        """Answer `status` (JSON `body`, default {"message": "injected N"}) instead of the real route."""
        return self._add("status", path, times, method, origin, status=status, body=body, headers=dict(headers or {}))

    def drop(self, path: str, times: int | None = 1, *, method: str | None = None, origin: str | None = None) -> Fault:
        """Close the connection without answering."""
        return self._add("drop", path, times, method, origin)

    def cut(self, path: str, after: int, times: int | None = 1, *, method: str | None = None,
            origin: str | None = None) -> Fault:
        """Answer normally (full Content-Length) but close the connection after `after` bytes of the body."""
        return self._add("cut", path, times, method, origin, after=after)

    def slow(self, path: str, seconds: float, times: int | None = 1, *, method: str | None = None,
             origin: str | None = None) -> Fault:
        """Wait `seconds` before answering normally."""
        return self._add("slow", path, times, method, origin, seconds=seconds)

    def rate_limit(self, path: str, *, kind: str = "primary", status: int = 403, times: int | None = 1,
                   reset_in: float = 60, retry_after: float | None = None, method: str | None = None) -> Fault:
        """GitHub-style rate limiting: primary (remaining 0 + reset) or secondary (message, retry-after)."""
        reset = str(int(time.time() + reset_in))
        if kind == "primary":
            headers = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
                       "x-ratelimit-reset": reset, "x-ratelimit-resource": "core"}
            message = "API rate limit exceeded for user ID 41898282."
        else:
            headers = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4990", "x-ratelimit-reset": reset}
            message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
        if retry_after is not None:
            headers["retry-after"] = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        body = {"message": message, "documentation_url": "https://docs.github.com/rest/using-the-rest-api/"
                "rate-limits-for-the-rest-api", "status": str(status)}
        return self.fail(path, status, times, method=method, body=body, headers=headers)

    # -- records -----------------------------------------------------------------------------------------------------
    def calls(self, method: str | None = None, path: str | None = None, origin: str | None = None) -> list[Recorded]:
        """Recorded requests, filtered by method, path regex (re.search) and origin ("api"|"uploads"|"blob")."""
        with self.lock:
            found = list(self.requests)
        return [r for r in found if (method is None or r.method == method.upper())
                and (path is None or re.search(path, r.path)) and (origin is None or r.origin == origin)]

    # -- used by the servers -----------------------------------------------------------------------------------------
    def _record(self, rec: Recorded) -> None:
        with self.lock:
            self.requests.append(rec)

    def _fault_for(self, rec: Recorded) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(rec):
                    fault.hits += 1
                    return fault
        return None

    def _route(self, rec: Request) -> Reply:
        with self.lock:
            if rec.origin == "uploads":
                return self.github.handle_upload(rec)
            if rec.origin == "blob":
                return self.github.handle_blob(rec)
            for service in self._services:
                if rec.path == service.prefix or rec.path.startswith(service.prefix + "/"):
                    rec.sub = rec.path[len(service.prefix):] or "/"
                    return service.handle(rec)
            return Reply.json({"message": f"no fake service at {rec.path}"}, 404)
