"""Effect: the HTTP base client every service client builds on.

One `Client` per service around an injected `requests.Session`:
- a base URL; the token goes in each request's Authorization header (never on the shared session), and only to
  the service's own origin (pagination links to another host are refused);
- retries through urllib3's `Retry` on the session's adapter, for idempotent methods only (GET, HEAD, PUT,
  DELETE, OPTIONS): connection errors, read timeouts, 429 and 5xx, with exponential backoff, honouring a
  Retry-After up to `max_wait` seconds (longer ones are reported, not slept through); a body cut short on an
  idempotent call is retried the same way;
- every failure leaves as `ServiceError` (`APIError` for an HTTP error status), naming the service, the method,
  the URL with secrets masked, the status, and a hint; the token is redacted from every message;
- `dry_run=True`: POST/PUT/PATCH/DELETE are refused where they would be sent (`DryRunRefused`), and recorded
  in `client.planned`. GETs still run, so a dry run checks reachability.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from ..errors import ConfigError, OpsError, ServiceError
from ..redact import redact_text
from . import rules

USER_AGENT = "lottery-ops/0.1 (+https://github.com/Gor93rus/lottery-backend)"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = (429, 500, 502, 503, 504)


class APIError(ServiceError):
    """A service answered with an HTTP error status (4xx/5xx)."""

    def __init__(self, message: str, *, hint: str | None = None, service: str, status: int, method: str,
                 url: str, detail: str = "", body: Any = None, code: str | int | None = None):
        super().__init__(message, hint=hint)
        self.service, self.status, self.method, self.url = service, status, method, url
        self.detail = detail  # the service's own message ("Bad credentials", "Reference does not exist", ...)
        self.body = body      # parsed JSON body when there was one (redacted text otherwise)
        self.code = code      # GitHub errors[0].code, Cloudflare errors[0].code, Render id


class RateLimited(ServiceError):
    """Rate limited and the limit resets later than we are willing to wait."""

    def __init__(self, message: str, *, hint: str | None = None, reset_at: float | None = None):
        super().__init__(message, hint=hint)
        self.reset_at = reset_at


class DryRunRefused(OpsError):
    """A mutating call was attempted in a dry run; nothing was sent. `.description` says what would have been."""

    def __init__(self, description: str):
        super().__init__(f"dry run: would {description} (not sent)",
                         hint="run again without --dry-run to make this change")
        self.description = description


class _Retry(Retry):
    """urllib3 Retry that gives up (returns the response) rather than sleep through a long Retry-After, and never
    retries before a rate limit's reset when `x-ratelimit-remaining` is 0 (the service layer decides then)."""

    max_wait: float = 60.0

    def new(self, **kw: Any) -> "_Retry":
        new = super().new(**kw)
        new.max_wait = self.max_wait
        return new

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> "_Retry":
        if response is not None and error is None:
            headers = response.headers
            wait = rules.retry_after_seconds(headers.get("Retry-After"), time.time())
            if (wait is not None and wait > self.max_wait) or headers.get("x-ratelimit-remaining") == "0":
                raise MaxRetryError(_pool, url or "", ResponseError(f"rate limited ({response.status})"))
        return super().increment(method, url, response=response, error=error, _pool=_pool, _stacktrace=_stacktrace)


def retrying_adapter(retries: int, backoff: float, max_wait: float) -> HTTPAdapter:
    retry = _Retry(total=retries, connect=retries, read=retries, status=retries, other=0, redirect=5,
                   backoff_factor=backoff, status_forcelist=RETRY_STATUSES, allowed_methods=IDEMPOTENT,
                   respect_retry_after_header=True, raise_on_status=False, raise_on_redirect=False)
    retry.max_wait = max_wait
    return HTTPAdapter(max_retries=retry)


class Client:
    """Base HTTP client. Subclasses set `service`, `token_var`, default headers, and add typed methods."""

    service = "HTTP"
    token_var: str | None = None
    auth_scheme = "Bearer"
    default_headers: Mapping[str, str] = {"Accept": "application/json"}

    def __init__(self, base_url: str, *, token: str | None = None, session: requests.Session | None = None,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.5, max_wait: float = 60.0,
                 dry_run: bool = False, secrets: tuple[str, ...] | list[str] = (),
                 sleep: Callable[[float], None] = time.sleep):
        if not base_url or "://" not in base_url:
            raise ConfigError(f"{self.service} API URL {base_url!r} is not an absolute URL",
                              hint=f"set ops.{self.service.lower()}.api_url to e.g. https://...")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_wait = float(max_wait)
        self.dry_run = dry_run
        self.planned: list[str] = []
        self._secrets = tuple(s for s in (token, *secrets) if s)
        self._sleep = sleep
        self.session = session if session is not None else requests.Session()
        adapter = retrying_adapter(self.retries, self.backoff, self.max_wait)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def options(cls, settings: Any, section: str) -> dict[str, Any]:
        """The common keyword arguments from `ops.<section>.*`: timeout, retries, backoff, max_wait."""
        return {
            "timeout": float(settings.get(f"{section}.timeout", 30) or 30),
            "retries": int(settings.get(f"{section}.retries", 3)),
            "backoff": float(settings.get(f"{section}.backoff", 0.5)),
            "max_wait": float(settings.get(f"{section}.max_wait", 60)),
            "secrets": settings.secrets,
        }

    # -- building requests -----------------------------------------------------------------------------------------
    def url(self, path_or_url: str) -> str:
        if "://" in path_or_url:
            return path_or_url
        return self.base_url + "/" + path_or_url.lstrip("/")

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"{self.auth_scheme} {self.token}"} if self.token else {}

    def redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    # -- sending ---------------------------------------------------------------------------------------------------
    def request(self, method: str, path_or_url: str, *, params: Any = None, json: Any = None, data: Any = None,
                headers: Mapping[str, str] | None = None, stream: bool = False, accept: tuple[int, ...] = (),
                mutating: bool | None = None, auth: bool = True, allow_redirects: bool = True,
                timeout: float | None = None) -> requests.Response:
        """Send one request and return the response; any status >= 400 not in `accept` raises APIError."""
        method = method.upper()
        url = self.url(path_or_url)
        if (method in MUTATING if mutating is None else mutating) and self.dry_run:
            description = f"{method} {rules.display_url(url)}"
            self.planned.append(description)
            raise DryRunRefused(self.redact(description))
        sent_headers = {"User-Agent": USER_AGENT, **self.default_headers, **(self.auth_headers() if auth else {}),
                        **(headers or {})}
        attempt = 0
        while True:
            try:
                response = self.session.request(method, url, params=params, json=json, data=data,
                                                headers=sent_headers, stream=stream, allow_redirects=allow_redirects,
                                                timeout=timeout or self.timeout)
            except requests.exceptions.ChunkedEncodingError as exc:
                if method in IDEMPOTENT and attempt < self.retries:
                    attempt += 1
                    self._sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise self.transport_error(exc, method, url) from None
            except requests.RequestException as exc:
                raise self.transport_error(exc, method, url) from None
            limit = self.rate_limit(response, attempt)
            if limit is not None:
                response.close()
                if limit.wait > self.max_wait or attempt >= self.retries:
                    raise self.rate_limit_error(response, limit, method, url)
                attempt += 1
                self._sleep(limit.wait)
                continue
            if response.status_code >= 400 and response.status_code not in accept:
                raise self.status_error(response, method, url)
            return response

    def get_json(self, path: str, params: Any = None, **kwargs: Any) -> Any:
        return self.json_of(self.request("GET", path, params=params, **kwargs))

    def json_of(self, response: requests.Response) -> Any:
        """The JSON body, or a ServiceError saying the answer was not JSON (cut short, or an HTML error page)."""
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            excerpt = self.redact(response.text[:200].strip())
            raise ServiceError(
                f"{self.service} answered {response.status_code} for {rules.display_url(response.url)} with a body "
                f"that is not JSON ({len(response.content)} bytes: {excerpt!r})",
                hint="the answer was cut short or came from a proxy; try again, and check the api_url setting",
            ) from None

    def paginate(self, path: str, params: Any = None, *, key: str | None = None, limit: int | None = None,
                 max_pages: int = 1000) -> Iterator[Any]:
        """Items across pages, following `Link: rel="next"` verbatim (GitHub's are /repositories/{id}/...; Sentry's
        stop at results="false"). `key` picks the list out of an object body (`workflow_runs`)."""
        url: str | None = self.url(path)
        seen: set[str] = set()
        count = 0
        for _ in range(max_pages):
            assert url is not None
            response = self.request("GET", url, params=params)
            body = self.json_of(response)
            items = (body or {}).get(key, []) if key else (body or [])
            for item in items:
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            following = rules.next_url(response.headers.get("Link"))
            if not following or not items:
                return
            following = urljoin(response.url, following)
            if not rules.same_origin(following, self.base_url):
                raise ServiceError(f"{self.service} sent a next-page link to another host "
                                   f"({rules.display_url(following)}); refusing to send the token there",
                                   hint=f"check ops.{self.service.lower()}.api_url")
            if following in seen:
                raise ServiceError(f"{self.service} pagination loops at {rules.display_url(following)}")
            seen.add(following)
            url, params = following, None
        raise ServiceError(f"{self.service}: more than {max_pages} pages for {rules.display_url(self.url(path))}")

    def wait_until(self, fetch: Callable[[], Any], done: Callable[[Any], bool], *, timeout: float,
                   interval: float, what: str, hint: str | None = None) -> Any:
        """Poll `fetch()` until `done(value)`; return the value, or ServiceError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = fetch()
            if done(value):
                return value
            if time.monotonic() >= deadline:
                raise ServiceError(f"{self.service}: {what} did not happen within {timeout:g} s", hint=hint)
            self._sleep(interval)

    # -- service-specific hooks ------------------------------------------------------------------------------------
    def rate_limit(self, response: requests.Response, attempt: int) -> rules.RateLimit | None:
        """A rate-limited response to wait on and retry. Default: 429 with Retry-After (urllib3 has already
        retried short ones; reaching here means it was longer than max_wait or retries ran out)."""
        if response.status_code != 429:
            return None
        wait = rules.retry_after_seconds(response.headers.get("Retry-After"), time.time())
        if wait is None:
            return None
        return rules.RateLimit(wait=wait, reset_at=time.time() + wait, kind="retry-after")

    def error_detail(self, body: Any) -> tuple[str, str | int | None]:
        """(message, code) out of an error body. Subclasses know their service's shape."""
        if isinstance(body, Mapping):
            for field in ("message", "detail", "error_description", "error"):
                if isinstance(body.get(field), str):
                    return body[field], body.get("code") or body.get("id")
        return "", None

    def hint_for(self, status: int, detail: str, method: str, url: str) -> str:
        var = self.token_var or "the token"
        if status == 401:
            if not self.token:
                return f"export {var}: this call needs a token"
            return f"check {var}: the token was refused (expired, revoked or mistyped)"
        if status == 403:
            return f"the token in {var} lacks the permission for {method} on this resource"
        if status == 404:
            return f"check the configured ids for {self.service} (ops.{self.service.lower()}.*) and that {var} can see them"
        if status == 429:
            return f"{self.service} is rate limiting; wait a few minutes and try again"
        if status >= 500:
            return f"{self.service} is failing on its side; check its status page and try again later"
        return f"{self.service} rejected the request; see its message above"

    # -- errors ----------------------------------------------------------------------------------------------------
    def status_error(self, response: requests.Response, method: str, url: str) -> APIError:
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = self.redact(response.text[:300])
        detail, code = self.error_detail(body)
        detail = self.redact(detail)
        shown = rules.display_url(response.url or url)
        message = f"{self.service} API returned {response.status_code} for {method} {shown}"
        if detail:
            message += f": {detail}"
        hint = self.hint_for(response.status_code, detail, method, url)
        return APIError(self.redact(message), hint=self.redact(hint), service=self.service,
                        status=response.status_code, method=method, url=self.redact(shown), detail=detail,
                        body=body, code=code)

    def rate_limit_error(self, response: requests.Response, limit: rules.RateLimit, method: str,
                         url: str) -> RateLimited:
        in_s = f" (in {limit.wait:.0f} s)" if limit.wait else ""
        return RateLimited(
            self.redact(f"{self.service} rate limit hit ({response.status_code}, {limit.kind}) for {method} "
                        f"{rules.display_url(url)}; it resets at {rules.when(limit.reset_at)}{in_s}"),
            hint=f"wait until then and run again (this tool waits at most {self.max_wait:g} s by itself)",
            reset_at=limit.reset_at,
        )

    def transport_error(self, exc: BaseException, method: str, url: str) -> OpsError:
        shown = rules.display_url(url)
        if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                            requests.exceptions.InvalidSchema)):
            return ConfigError(self.redact(f"{self.service}: {shown} is not a usable URL"),
                               hint=f"check ops.{self.service.lower()}.api_url")
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            what = f"did not accept a connection within {self.timeout:g} s"
        elif isinstance(exc, requests.exceptions.ReadTimeout) or _caused_by(exc, "ReadTimeoutError"):
            what = f"did not answer within {self.timeout:g} s"
        elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
            what = "dropped the connection in the middle of its answer"
        elif isinstance(exc, requests.exceptions.SSLError):
            what = "failed the TLS handshake"
        elif isinstance(exc, requests.exceptions.RetryError):
            what = "kept failing after retries"
        else:
            what = f"could not be reached ({_root_reason(exc)})"
        retried = f" (after {self.retries} retries)" if method in IDEMPOTENT and self.retries else ""
        return ServiceError(self.redact(f"{self.service} {what} for {method} {shown}{retried}"),
                            hint=f"check the network and {self.service}'s status page, then try again")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend([getattr(item, "reason", None), item.__cause__, item.__context__, *item.args])


def _caused_by(exc: BaseException, name: str) -> bool:
    return any(type(e).__name__ == name for e in _chain(exc))


def _root_reason(exc: BaseException) -> str:
    """A short, URL-free reason: 'connection refused', 'connection reset', ..."""
    names = [type(e).__name__ for e in _chain(exc)]
    for needle, text in (("ConnectionRefusedError", "connection refused"),
                         ("NameResolutionError", "host name not found"), ("gaierror", "host name not found"),
                         ("RemoteDisconnected", "the server closed the connection without answering"),
                         ("ConnectionResetError", "connection reset"), ("ConnectionAbortedError", "connection aborted"),
                         ("IncompleteRead", "the answer was cut short"), ("ProtocolError", "protocol error"),
                         ("NewConnectionError", "could not connect")):
        if needle in names:
            return text
    return names[-1] if names else type(exc).__name__
