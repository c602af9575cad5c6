"""Effect: probe the application's own health URL and critical endpoints.

A failed probe is data (`Probe.ok is False` with the reason), never an exception, and there are no retries: a
health check reports what a user would see right now. The body excerpt is redacted and short.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from ..redact import redact_text
from . import rules
from .base import USER_AGENT, _root_reason

EXCERPT_BYTES = 300


@dataclass(frozen=True)
class Probe:
    url: str                 # as displayed (secrets masked)
    ok: bool
    status: int | None       # None when there was no HTTP answer
    latency_ms: float
    excerpt: str             # start of the body, whitespace collapsed, redacted
    error: str | None = None  # "timed out after 5 s", "connection refused", "expected 200, got 503"


class App:
    """Health probes against absolute URLs from `ops.app.health_url` and `ops.app.endpoints`."""

    def __init__(self, *, health_url: str = "", endpoints: list[str] | tuple[str, ...] = (), timeout: float = 10.0,
                 session: requests.Session | None = None, secrets: tuple[str, ...] = ()):
        self.health_url = health_url
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._secrets = secrets
        self.session = session if session is not None else requests.Session()
        no_retries = HTTPAdapter(max_retries=0)
        self.session.mount("http://", no_retries)
        self.session.mount("https://", no_retries)

    @classmethod
    def from_settings(cls, settings: Any, *, dry_run: bool = False, session: requests.Session | None = None) -> "App":
        # dry_run is accepted for symmetry: probes are GETs and change nothing.
        return cls(health_url=settings.get("app.health_url", "") or "",
                   endpoints=list(settings.get("app.endpoints", []) or []),
                   timeout=float(settings.get("app.timeout", 10) or 10), session=session, secrets=settings.secrets)

    def probe(self, url: str, *, expect: int = 200) -> Probe:
        shown = rules.display_url(redact_text(url, self._secrets))
        started = time.perf_counter()
        try:
            with self.session.get(url, timeout=self.timeout, stream=True,
                                  headers={"User-Agent": USER_AGENT, "Accept": "*/*"}) as response:
                head = response.raw.read(EXCERPT_BYTES, decode_content=True) or b""
                latency = (time.perf_counter() - started) * 1000
        except requests.RequestException as exc:
            latency = (time.perf_counter() - started) * 1000
            return Probe(url=shown, ok=False, status=None, latency_ms=latency, excerpt="", error=_why(exc, self.timeout))
        except Exception as exc:  # urllib3 errors raised while reading the excerpt  # noqa: BLE001
            latency = (time.perf_counter() - started) * 1000
            return Probe(url=shown, ok=False, status=None, latency_ms=latency, excerpt="",
                         error=f"answer cut short ({type(exc).__name__})")
        excerpt = redact_text(" ".join(head.decode("utf-8", "replace").split()), self._secrets)
        ok = response.status_code == expect
        error = None if ok else f"expected {expect}, got {response.status_code}"
        return Probe(url=shown, ok=ok, status=response.status_code, latency_ms=latency, excerpt=excerpt, error=error)

    def health(self) -> Probe | None:
        """Probe the health URL; None when `ops.app.health_url` is not set."""
        return self.probe(self.health_url) if self.health_url else None

    def check_endpoints(self) -> list[Probe]:
        return [self.probe(url) for url in self.endpoints]

    def wait_healthy(self, *, timeout: float = 120.0, interval: float = 3.0) -> Probe:
        """Probe the health URL until it answers 200 or `timeout` passes; return the last probe (check `.ok`)."""
        if not self.health_url:
            return Probe(url="", ok=False, status=None, latency_ms=0.0, excerpt="", error="ops.app.health_url is not set")
        deadline = time.monotonic() + timeout
        while True:
            probe = self.probe(self.health_url)
            if probe.ok or time.monotonic() >= deadline:
                return probe
            time.sleep(interval)


def _why(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, requests.exceptions.Timeout):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return _root_reason(exc)
    return type(exc).__name__

