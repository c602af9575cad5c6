"""Pure HTTP rules shared by the clients: Link headers, rate limits, URL display, ranges. Stdlib only.

Everything here takes plain values (header strings, numbers) and returns plain values, so it is tested with tables
and no server. The effectful side lives in `ops.clients.base`.
"""
from __future__ import annotations

import email.utils
import ipaddress
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..redact import MASK, redact_url

# -- Link headers (RFC 8288, plus Sentry's results="true|false" and cursor="..." parameters) -----------------------

_LINK = re.compile(r'<(?P<url>[^>]*)>(?P<params>(?:\s*;\s*[A-Za-z0-9_*-]+\s*=\s*(?:"[^"]*"|[^;,]*))*)')
_PARAM = re.compile(r';\s*(?P<key>[A-Za-z0-9_*-]+)\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^;,]*))')


@dataclass(frozen=True)
class Link:
    url: str
    rel: str
    params: Mapping[str, str]


def parse_links(header: str | None) -> list[Link]:
    """Every link in a `Link` header, with its parameters (rel, results, cursor, ...)."""
    links = []
    for match in _LINK.finditer(header or ""):
        params = {m["key"].lower(): (m["quoted"] if m["quoted"] is not None else m["bare"].strip())
                  for m in _PARAM.finditer(match["params"])}
        for rel in params.get("rel", "").split():
            links.append(Link(url=match["url"].strip(), rel=rel.lower(), params=params))
    return links


def next_url(header: str | None) -> str | None:
    """The `rel="next"` URL to follow verbatim, or None at the end.

    Sentry always sends a next link and marks the last page with `results="false"`: that is the end too.
    """
    for link in parse_links(header):
        if link.rel == "next":
            if link.params.get("results", "true").lower() == "false":
                return None
            return link.url
    return None


def same_origin(a: str, b: str) -> bool:
    """True when two absolute URLs share scheme, host and port (where a token may be sent)."""
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme.lower(), pa.hostname, pa.port or _default_port(pa.scheme)) == (
        pb.scheme.lower(), pb.hostname, pb.port or _default_port(pb.scheme))


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme.lower())


# -- URLs in messages ----------------------------------------------------------------------------------------------

_SECRET_PARAM = re.compile(r"sig|signature|token|key|credential|jwt|secret|password|passwd|auth|code", re.IGNORECASE)


def display_url(url: str) -> str:
    """A URL fit for a message: passwords and signature/token query values replaced by ***."""
    parts = urlsplit(redact_url(url))
    if not parts.query:
        return urlunsplit(parts)
    query = [(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*/:,")))


def strip_uri_template(url: str) -> str:
    """GitHub's `upload_url` ends in `{?name,label}`: drop the template part (parameters go in the query)."""
    return re.sub(r"\{[^}]*\}$", "", url)


# -- Rate limits ---------------------------------------------------------------------------------------------------

GITHUB_RATE_MESSAGES = ("API rate limit exceeded", "You have exceeded a secondary rate limit")


@dataclass(frozen=True)
class RateLimit:
    """A rate-limited answer: how long to wait before the next try, and when the limit resets (epoch s)."""

    wait: float
    reset_at: float | None
    kind: str  # "primary" | "secondary" | "retry-after"


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - now)


def github_rate_limit(status: int, headers: Mapping[str, str], message: str, now: float,
                      attempt: int = 0) -> RateLimit | None:
    """GitHub's rule (the contract, 1.2; PyGithub's too): is this 403/429 a rate limit, and how long to wait?

    Rate limited only when `retry-after` is present, `x-ratelimit-remaining` is "0", or the message starts with
    one of the known prefixes; any other 403 is a permission error. `headers` must be case-insensitive.
    """
    if status not in (403, 429):
        return None
    retry_after = retry_after_seconds(headers.get("retry-after"), now)
    remaining = headers.get("x-ratelimit-remaining")
    reset = _number(headers.get("x-ratelimit-reset"))
    primary = remaining == "0" or message.startswith(GITHUB_RATE_MESSAGES[0])
    secondary = message.startswith(GITHUB_RATE_MESSAGES[1])
    if retry_after is not None:
        return RateLimit(wait=retry_after, reset_at=now + retry_after, kind="retry-after")
    if remaining == "0" and reset is not None:
        return RateLimit(wait=max(0.0, reset - now) + 1.0, reset_at=reset, kind="primary")
    if primary or secondary:
        # No reset time: wait at least a minute, doubling with each attempt (the docs' advice).
        wait = 60.0 * (2 ** attempt)
        return RateLimit(wait=wait, reset_at=reset if reset is not None else now + wait,
                         kind="primary" if primary else "secondary")
    return None


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def when(epoch: float | None) -> str:
    """`2024-05-01 12:00:00 UTC` for messages."""
    if epoch is None:
        return "an unknown time"
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- Ranges --------------------------------------------------------------------------------------------------------

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(?P<start>\d+)-(?P<end>\d+)|\*)/(?P<total>\d+|\*)")


@dataclass(frozen=True)
class ContentRange:
    start: int | None
    end: int | None
    total: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    """`bytes 100-199/1000` -> ContentRange(100, 199, 1000); `bytes */1000` -> (None, None, 1000)."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        return None
    def num(key: str) -> int | None:
        return int(match[key]) if match[key] and match[key] != "*" else None

    return ContentRange(num("start"), num("end"), num("total"))


# -- Cloudflare targets --------------------------------------------------------------------------------------------

def ip_target(value: str) -> tuple[str, str]:
    """Cloudflare access-rule target for an address or network: ("ip"|"ip6"|"ip_range", normalised value).

    Raises ValueError when `value` is neither. IPv4 goes in `ip`, IPv6 in `ip6`; networks in `ip_range`.
    """
    value = value.strip()
    if "/" in value:
        net = ipaddress.ip_network(value, strict=False)
        if net.num_addresses == 1:
            return ("ip" if net.version == 4 else "ip6"), str(net.network_address)
        return "ip_range", str(net)
    addr = ipaddress.ip_address(value)
    return ("ip" if addr.version == 4 else "ip6"), str(addr)


def now() -> float:
    return time.time()
