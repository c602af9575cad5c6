"""Fake application URLs under /app: the health endpoint and critical endpoints.

    fake_api.app.set("/health", status=500)                 # unhealthy
    fake_api.app.set("/health", delay=3)                    # slow (a probe with a smaller timeout times out)
    fake_api.app.sequence("/health", [503, 503, 200])       # answers in turn, then keeps the last
    fake_api.app.down("/health")                            # connection closed without an answer
Every path answered is in `fake_api.app.routes`; anything else is 404.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .server import Reply, Request

HEALTH = "/health"
ENDPOINTS = ("/api/lottery/current", "/api/draws/latest")


@dataclass
class Route:
    status: int = 200
    body: Any = None
    delay: float = 0.0
    sequence: list[int] = field(default_factory=list)
    down: bool = False
    content_type: str = "application/json"


class FakeApp:
    prefix = "/app"

    def __init__(self, api: Any):
        self.api = api
        self.routes: dict[str, Route] = {
            HEALTH: Route(body={"status": "ok", "database": "connected", "uptime": 86400}),
            ENDPOINTS[0]: Route(body={"id": 42, "status": "open", "jackpot": "1000000.00"}),
            ENDPOINTS[1]: Route(body={"id": 41, "numbers": [4, 8, 15, 16, 23, 42]}),
        }
        self.hits: dict[str, int] = {}

    @property
    def health_url(self) -> str:
        return self.api.url + self.prefix + HEALTH

    @property
    def endpoint_urls(self) -> list[str]:
        return [self.api.url + self.prefix + path for path in ENDPOINTS]

    def set(self, path: str, *, status: int = 200, body: Any = None, delay: float = 0.0,
            content_type: str = "application/json") -> Route:
        old = self.routes.get(path)
        route = Route(status=status, body=body if body is not None else (old.body if old and status < 400 else
                                                                          {"status": "error", "code": status}),
                      delay=delay, content_type=content_type)
        self.routes[path] = route
        return route

    def sequence(self, path: str, statuses: list[int]) -> Route:
        route = self.routes.setdefault(path, Route(body={"status": "ok"}))
        route.sequence = list(statuses)
        return route

    def down(self, path: str = HEALTH) -> None:
        self.routes.setdefault(path, Route()).down = True

    def handle(self, rec: Request) -> Reply:
        route = self.routes.get(rec.sub)
        self.hits[rec.sub] = self.hits.get(rec.sub, 0) + 1
        if route is None:
            return Reply.json({"error": "not found"}, 404)
        if route.down:
            return Reply(0)  # the server closes the connection without answering
        status = route.sequence.pop(0) if len(route.sequence) > 1 else (route.sequence[0] if route.sequence
                                                                        else route.status)
        body = route.body if status < 400 else {"status": "error", "code": status}
        raw = body if isinstance(body, bytes) else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        return Reply(status, raw, {"Content-Type": route.content_type}, delay=route.delay)
