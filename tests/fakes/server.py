"""The fake API's framework: threaded HTTP servers on loopback, routing, request records and fault injection.

Three origins, as GitHub has (the contract's checklist):
  api      http://127.0.0.1:<port>   every service's API under a prefix (/github, /render/v1, /sentry/api/0,
                                     /supabase/v1, /cloudflare/client/v4) and the app's own URLs (/app/...)
  uploads  http://127.0.0.1:<port2>  GitHub's uploads host
  blob     http://localhost:<port3>  the signed-URL storage host that asset downloads are redirected to; it
                                     answers 400 when an Authorization header arrives (a different *host name*,
                                     so clients treat it as another host, as they must treat the real one)

The servers live for the session; each test gets a fresh `FakeAPI` (state, records, faults) attached to them.
"""
from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

CANNED = Path(__file__).parent / "canned"


# -- small helpers ----------------------------------------------------------------------------------------------

def canned(_file: str, /, **subs: Any) -> Any:
    """A copy of tests/fakes/canned/<_file>.json with `{key}` placeholders in strings filled from `subs`."""
    data = json.loads((CANNED / f"{_file}.json").read_text())

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            for key, sub in subs.items():
                value = value.replace("{" + key + "}", str(sub))
            return value
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return fill(data)


def iso(when: datetime | str | None = None, *, micro: bool = False) -> str:
    """RFC 3339 UTC with Z (`micro=True` for Render's microsecond timestamps)."""
    if isinstance(when, str):
        return when
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


class Headers(dict):
    """Case-insensitive header mapping (keys stored lower-case)."""

    def __init__(self, items: Any = ()):
        super().__init__()
        for key, value in (items.items() if hasattr(items, "items") else items):
            self[key] = value

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(str(key).lower())


@dataclass
class Recorded:
    """One request as the fake saw it."""

    origin: str                  # "api" | "uploads" | "blob"
    method: str
    path: str                    # full path, without the query (e.g. /github/repos/acme/lottery-backend/releases)
    query: dict[str, list[str]]
    headers: Headers
    body: bytes
    url: str
    at: float = field(default_factory=time.time)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class Reply:
    status: int = 200                 # 0: close the connection without answering
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0                # seconds to wait before answering (a slow endpoint)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> "Reply":
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json; charset=utf-8",
                                                       **(headers or {})})

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> "Reply":
        return cls(status, b"", dict(headers or {}))


class Request(Recorded):
    """What a route handler receives: the record plus the path inside the service (prefix removed)."""

    sub: str = ""


Handler = Callable[..., Reply]


class Router:
    """(method, regex) -> handler(req, **named_groups). First match wins; 404/405 otherwise."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(pattern + r"/?$"), handler))

    def dispatch(self, req: Request, not_found: Callable[[Request], Reply]) -> Reply:
        allowed = False
        for method, pattern, handler in self.routes:
            match = pattern.match(req.sub)
            if match:
                if method == req.method or (method == "GET" and req.method == "HEAD"):
                    return handler(req, **{k: unquote(v) for k, v in match.groupdict().items() if v is not None})
                allowed = True
        return Reply.json({"message": "Method Not Allowed"}, 405) if allowed else not_found(req)


# -- faults ------------------------------------------------------------------------------------------------------

@dataclass
class Fault:
    """An injected misbehaviour for requests whose path matches `path` (re.search over the full path)."""

    kind: str                    # "status" | "drop" | "cut" | "slow"
    path: re.Pattern[str]
    times: int | None = 1        # None: forever
    method: str | None = None
    origin: str | None = None
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    after: int = 0               # cut: bytes of the body sent before the connection is closed
    seconds: float = 0.0         # slow: delay before answering
    hits: int = 0

    def matches(self, rec: Recorded) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and self.method.upper() != rec.method:
            return False
        if self.origin and self.origin != rec.origin:
            return False
        return bool(self.path.search(rec.path))


# -- the servers -------------------------------------------------------------------------------------------------

class _HTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def _serve(self) -> None:
        self.server.servers.serve(self.server.origin, self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, origin: str, servers: "FakeServers"):
        super().__init__(("127.0.0.1", 0), _HTTPHandler)
        self.origin = origin
        self.servers = servers

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or hung up leaves a broken pipe behind: expected in fault tests.
        pass


class FakeServers:
    """The session's three listening servers. `current` is the FakeAPI of the running test."""

    def __init__(self) -> None:
        self.current: Any = None
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []
        for origin in ("api", "uploads", "blob"):
            server = _Server(origin, self)
            self._servers[origin] = server
            thread = threading.Thread(target=server.serve_forever, name=f"fake-{origin}", daemon=True)
            thread.start()
            self._threads.append(thread)
        host = {"api": "127.0.0.1", "uploads": "127.0.0.1", "blob": "localhost"}
        self.urls = {o: f"http://{host[o]}:{s.server_address[1]}" for o, s in self._servers.items()}

    def close(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    # -- one request -------------------------------------------------------------------------------------------
    def serve(self, origin: str, h: _HTTPHandler) -> None:
        api = self.current
        body = _read_body(h)
        parts = urlsplit(h.path)
        rec = Request(origin=origin, method=h.command, path=parts.path,
                      query=parse_qs(parts.query, keep_blank_values=True), headers=Headers(h.headers.items()),
                      body=body, url=self.urls[origin] + h.path)
        if api is None:
            _write(h, Reply.json({"message": "no fake API attached (use the fake_api fixture)"}, 503), rec)
            return
        api._record(rec)
        fault = api._fault_for(rec)
        cut = None
        if fault is not None:
            if fault.kind == "drop":
                _drop(h)
                return
            if fault.kind == "slow":
                if api.stopped.wait(fault.seconds):
                    _drop(h)
                    return
            elif fault.kind == "status":
                payload = fault.body if fault.body is not None else {"message": f"injected {fault.status}"}
                reply = (Reply(fault.status, payload, dict(fault.headers)) if isinstance(payload, bytes)
                         else Reply.json(payload, fault.status, fault.headers))
                _write(h, reply, rec)
                return
            elif fault.kind == "cut":
                cut = fault.after
        try:
            reply = api._route(rec)
        except Exception:  # a bug in the fake: visible to the test through api.errors, and as a 500
            api.errors.append(traceback.format_exc())
            reply = Reply.json({"message": "fake server error", "trace": traceback.format_exc()}, 500)
        if reply.delay and api.stopped.wait(reply.delay):
            _drop(h)
            return
        if reply.status == 0 or api.stopped.is_set():
            _drop(h)
            return
        _write(h, reply, rec, cut=cut)


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(h.rfile.readline().strip() or b"0", 16)
            if size == 0:
                h.rfile.readline()
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _write(h: BaseHTTPRequestHandler, reply: Reply, rec: Recorded, *, cut: int | None = None) -> None:
    try:
        h.send_response(reply.status)
        headers = Headers(reply.headers)
        for key, value in reply.headers.items():
            if key.lower() != "content-length":
                h.send_header(key, value)
        if "content-length" in headers:
            h.send_header("Content-Length", headers["content-length"])
        else:
            h.send_header("Content-Length", str(len(reply.body)))
        if cut is not None:
            h.send_header("Connection", "close")
        h.end_headers()
        if rec.method != "HEAD":
            h.wfile.write(reply.body if cut is None else reply.body[:cut])
        h.wfile.flush()
        if cut is not None:
            _drop(h)
    except OSError:
        pass


def _drop(h: BaseHTTPRequestHandler) -> None:
    h.close_connection = True
    try:
        h.wfile.flush()
    except OSError:
        pass
    try:
        h.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# -- pagination helpers the service fakes share ------------------------------------------------------------------

def link_header(links: list[tuple[str, str]]) -> str:
    return ", ".join(f'<{url}>; rel="{rel}"' for url, rel in links)


def with_query(base: str, query: dict[str, list[str]], **updates: Any) -> str:
    q = {k: v[0] for k, v in query.items()}
    q.update({k: str(v) for k, v in updates.items() if v is not None})
    for k in [k for k, v in updates.items() if v is None]:
        q.pop(k, None)
    return f"{base}?{urlencode(q)}" if q else base


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def bearer(rec: Recorded) -> str | None:
    """The token of an `Authorization: Bearer X` (or GitHub's `token X`) header; "" for another scheme."""
    value = rec.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "token") else ""
