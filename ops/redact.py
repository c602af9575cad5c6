"""Pure: remove secrets from URLs, connection strings and free text before anything is printed or logged."""
from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

# scheme://user:password@host  -> scheme://user:***@host. The password runs to the last @ (a password pasted without
# percent-encoding may hold @, /, ? or #); failing that, to the first @ if what lies before it holds a space.
_URI_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*:)(?P<pw>\S*)(?P<at>@)")
_URI_SPACED_PASSWORD = re.compile(
    r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*:)(?P<pw>[^@\n]*?\s[^@\n]*?)(?P<at>@)")
# password=... in key=value conninfo or query strings (quoted, or unquoted with libpq's backslash escapes)
_KV_PASSWORD = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd|sslpassword|sslkey_password)\s*=\s*)"
    r"(?P<pw>'(?:[^'\\]|\\.)*'?|(?:\\.|[^\s&\\])*)",
    re.IGNORECASE,
)
_PIECES = re.compile(r"[@/?#\s]+")
_BEARER = re.compile(r"(?P<pre>\b(?:Bearer|token|Basic)\s+)(?P<pw>[A-Za-z0-9_\-.=+/]{8,})")
# GitHub, Render, Sentry token shapes
_TOKEN_SHAPES = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|rnd_[A-Za-z0-9]{16,}|sntry[su]_[A-Za-z0-9_=+/]{16,})\b"
)


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by ***, in URI and key=value forms alike."""
    out = _URI_PASSWORD.sub(lambda m: m["pre"] + MASK + m["at"], url)
    out = _URI_SPACED_PASSWORD.sub(lambda m: m["pre"] + MASK + m["at"], out)
    return _KV_PASSWORD.sub(lambda m: m["pre"] + MASK, out)


def redact_text(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """Redact passwords in URLs, bearer tokens, known token shapes, and every literal secret given.

    `secrets` are values known to be secret (tokens, database URLs from the environment); each is removed
    verbatim, and so are the passwords inside those that are URLs, raw and percent-decoded.
    """
    out = redact_url(text)
    out = _BEARER.sub(lambda m: m["pre"] + MASK, out)
    out = _TOKEN_SHAPES.sub(MASK, out)
    literal: set[str] = set()
    for value in secrets:
        if value:
            literal.add(value)
            literal.update(passwords_in(value))
    for secret in sorted((s for s in literal if len(s) >= 4), key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def passwords_in(url: str) -> list[str]:
    """The passwords written in a URL or conninfo string, raw and percent-decoded, and the pieces of one written
    without percent-encoding (libpq then reads part of it as a host, a port or a database name)."""
    found = [m["pw"] for m in _URI_PASSWORD.finditer(url)]
    found += [m["pw"] for m in _URI_SPACED_PASSWORD.finditer(url) if m["pw"] != MASK]
    found += [re.sub(r"\\(.)", r"\1", m["pw"].strip("'")) for m in _KV_PASSWORD.finditer(url)]
    found = [p for p in found if p]
    pieces = [piece for p in found for piece in _PIECES.split(p) if piece and piece != p]
    return found + [unquote(p) for p in found] + pieces
