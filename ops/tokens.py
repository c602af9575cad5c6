"""Pure: signed, scoped, short-lived, single-use approval tokens for guarded emergency actions.

A token is one copy-pasteable line:

    opsapprove1.<base64url(payload JSON)>.<base64url(Ed25519 signature)>

The payload is canonical JSON (sorted keys, no spaces, UTF-8) with: `version`, `action` ("restore", ...),
`params` (for restore: `target` — the production identity as the guard computes it —, `tag`, `sha256`),
`issued_at` and `expires_at` (integer Unix seconds; expiry is exact, no grace), `nonce` (128 random bits, hex),
`key_id` (first 16 hex digits of the SHA-256 of the signer's raw public key), `public_key` (the signer's raw
public key, base64, so a refusal can tell "signed by a key we do not trust" from "altered") and `reason`.
The signature covers the ASCII bytes `opsapprove1.<payload segment>`.

Keys are passed in (raw bytes or `cryptography` key objects); nothing here reads files, the clock or the
environment. Every refusal raises `TokenRefused` (a `GuardRefused`, exit status 3) whose `reason` is one of
REASONS and whose message names the reason and the next step.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ConfigError, GuardRefused

PREFIX = "opsapprove1"
VERSION = 1
MAX_TTL = 60 * 60  # seconds; the "at most 60 minutes"
MAX_CLOCK_SKEW = 5 * 60  # a token issued further in the future than this is refused (approver's clock is off)
MAX_REASON = 500
MAX_TOKEN = 8192

# The parameters each guarded action binds. Other emergency actions add themselves here.
ACTION_PARAMS: dict[str, tuple[str, ...]] = {
    "restore": ("target", "tag", "sha256"),
    "terminate-idle": ("target", "minutes"),   # minutes: the --terminate-idle age, as minutes_param() writes it
}

REASONS = ("malformed", "bad-signature", "self-approved", "unknown-key", "not-yet-valid", "expired",
           "wrong-action", "wrong-target", "wrong-backup", "wrong-params", "replayed")

_FIELDS = {"version", "action", "params", "issued_at", "expires_at", "nonce", "key_id", "public_key", "reason"}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_HEX = re.compile(r"[0-9a-f]+")
_ACTION = re.compile(r"[a-z][a-z0-9-]{0,40}")
_TTL = re.compile(r"([0-9]{1,9})([smh])")
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600}
_HOW_TO_GET_ONE = "ask an approver to run `inv emergency.approve --tag TAG` and pass its output with --approve"


class TokenRefused(GuardRefused):
    """An approval token was refused; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str, *, hint: str | None = None):
        assert reason in REASONS, reason
        super().__init__(f"approval refused ({reason}): {message}", hint=hint or _HOW_TO_GET_ONE)
        self.reason = reason


# -- keys ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublicKey:
    """An approver's Ed25519 public key as configured in ops.approval.public_keys."""

    raw: bytes
    comment: str = ""

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    def line(self) -> str:
        return format_public_key(self.raw, self.comment)

    def __str__(self) -> str:
        return f"{self.key_id} ({self.comment})" if self.comment else self.key_id


def key_id(raw_public_key: bytes) -> str:
    """Fingerprint of a raw 32-byte Ed25519 public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey | bytes) -> bytes:
    """Raw 32 public-key bytes of a private key object, a public key object, or raw public bytes."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    raise TypeError("expected an Ed25519 key or 32 raw public-key bytes")


def format_public_key(raw: bytes, comment: str = "") -> str:
    """One config line: `ed25519:<base64 raw 32 bytes> [comment]`."""
    line = "ed25519:" + base64.b64encode(raw_public(raw)).decode("ascii")
    comment = " ".join(comment.split())
    return f"{line} {comment}" if comment else line


def parse_public_key(line: str) -> PublicKey:
    """Parse `ed25519:<base64> [comment]` or OpenSSH `ssh-ed25519 AAAA... [comment]`; ConfigError otherwise."""
    parts = str(line).strip().split(None, 2)
    if parts and parts[0].startswith("ed25519:"):
        raw = _b64decode_std(parts[0][len("ed25519:"):])
        comment = " ".join(parts[1:])
    elif len(parts) >= 2 and parts[0] == "ssh-ed25519":
        raw = _openssh_ed25519(_b64decode_std(parts[1]))
        comment = " ".join(parts[2:])
    else:
        raw = None
        comment = ""
    if raw is None or len(raw) != 32:
        shown = (str(line).strip()[:40] + "...") if len(str(line).strip()) > 40 else str(line).strip()
        raise ConfigError(
            f"not an Ed25519 public key: {shown!r}",
            hint="each entry of ops.approval.public_keys is one line, `ed25519:<base64> name` "
                 "(from `inv emergency.keygen`) or `ssh-ed25519 AAAA... name`",
        )
    return PublicKey(raw=raw, comment=comment)


def _b64decode_std(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _openssh_ed25519(blob: bytes | None) -> bytes | None:
    """The 32 key bytes from an OpenSSH public-key blob: string "ssh-ed25519", string key (RFC 4253 strings)."""
    if blob is None:
        return None
    fields = []
    at = 0
    while at < len(blob):
        if at + 4 > len(blob):
            return None
        (size,) = struct.unpack(">I", blob[at:at + 4])
        fields.append(blob[at + 4:at + 4 + size])
        at += 4 + size
    if at != len(blob) or len(fields) != 2 or fields[0] != b"ssh-ed25519":
        return None
    return fields[1]


# -- TTL -------------------------------------------------------------------------------------------------------
def parse_ttl(text: str | int) -> int:
    """`"90s"`, `"30m"`, `"1h"` -> seconds. More than 60 minutes, zero, negative or garbage: ConfigError."""
    if isinstance(text, bool):
        raise ConfigError(f"invalid TTL {text!r}", hint="give a TTL such as 90s, 30m or 1h")
    if isinstance(text, int):
        seconds = text
    else:
        match = _TTL.fullmatch(str(text).strip())
        if match is None:
            raise ConfigError(
                f"invalid TTL {str(text)[:20]!r}: expected a whole number followed by s, m or h",
                hint="give a TTL such as 90s, 30m or 1h (at most 60 minutes)",
            )
        seconds = int(match[1]) * _TTL_UNITS[match[2]]
    if seconds <= 0:
        raise ConfigError(f"invalid TTL {text!r}: it must be longer than zero", hint="for example --ttl 30m")
    if seconds > MAX_TTL:
        raise ConfigError(f"TTL {text!r} is longer than the 60 minutes an approval may last",
                          hint="use --ttl 60m or less; approve again later if the restore takes longer to start")
    return seconds


# -- parameters ------------------------------------------------------------------------------------------------
def normalize_params(action: str, params: Mapping[str, Any]) -> dict[str, str]:
    """Check `params` against ACTION_PARAMS[action]: exactly those keys, string values; sha256 lower-case hex."""
    expected = ACTION_PARAMS.get(action)
    if expected is None:
        raise ConfigError(f"unknown approval action {action!r}",
                          hint="one of: " + ", ".join(sorted(ACTION_PARAMS)))
    if set(params) != set(expected):
        raise ConfigError(f"action {action!r} binds exactly {', '.join(expected)}; got {', '.join(sorted(params))}")
    out = {}
    for name in expected:
        value = params[name]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"approval parameter {name!r} must be a non-empty string")
        out[name] = value
    if "minutes" in out:
        out["minutes"] = minutes_param(out["minutes"])
    if "sha256" in out:
        out["sha256"] = out["sha256"].lower()
        if len(out["sha256"]) != 64 or not _HEX.fullmatch(out["sha256"]):
            raise ConfigError(f"not a SHA-256 digest: {params['sha256'][:80]!r}", hint="64 hexadecimal digits")
    return out


def minutes_param(value: Any) -> str:
    """A number of minutes as an approval binds it: `30`, `2.5` (never `30.0`), so the approver's `--minutes 30`
    and the operator's `--terminate-idle 30.0` bind the same value. ConfigError unless a finite number >= 0."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{str(value)[:20]!r} is not a number of minutes", hint="e.g. --minutes 5") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{str(value)[:20]!r} is not 0 or more minutes", hint="e.g. --minutes 5")
    return str(int(number)) if number.is_integer() else repr(number)


# -- minting ---------------------------------------------------------------------------------------------------
def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint(private_key: Ed25519PrivateKey | bytes, action: str, params: Mapping[str, Any], ttl: str | int,
         reason: str, now: float, nonce: bytes | None = None) -> str:
    """Sign an approval of `action` with `params`, valid from `now` (Unix seconds) for `ttl`.

    `private_key` is an Ed25519PrivateKey or its 32-byte raw seed; `nonce` is 16 bytes (random if None).
    """
    if isinstance(private_key, (bytes, bytearray)):
        private_key = Ed25519PrivateKey.from_private_bytes(bytes(private_key))
    seconds = parse_ttl(ttl)
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ConfigError(f"the reason must be text of at most {MAX_REASON} characters")
    nonce = secrets.token_bytes(16) if nonce is None else nonce
    if len(nonce) != 16:
        raise ValueError("nonce must be 16 bytes")
    public = raw_public(private_key)
    issued_at = math.floor(now)
    payload = {
        "version": VERSION,
        "action": action,
        "params": normalize_params(action, params),
        "issued_at": issued_at,
        "expires_at": issued_at + seconds,
        "nonce": nonce.hex(),
        "key_id": key_id(public),
        "public_key": base64.b64encode(public).decode("ascii"),
        "reason": reason,
    }
    signed = f"{PREFIX}.{_b64url(canonical_json(payload))}"
    return f"{signed}.{_b64url(private_key.sign(signed.encode('ascii')))}"


# -- verifying -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Approval:
    """A verified approval. `approver` is the comment of the configured public key that signed it."""

    action: str
    params: Mapping[str, str] = field(hash=False)
    issued_at: int
    expires_at: int
    nonce: str
    key_id: str
    reason: str
    approver: str = ""

    def describe(self) -> str:
        who = f"{self.key_id} ({self.approver})" if self.approver else self.key_id
        bound = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.action} [{bound}] approved by {who}, nonce {self.nonce}, expires {iso_time(self.expires_at)}"


def iso_time(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _malformed(what: str) -> TokenRefused:
    return TokenRefused("malformed", f"{what} (was it copied whole, on one line?)",
                        hint="paste the exact line `inv emergency.approve` printed, or " + _HOW_TO_GET_ONE)


def _b64url_decode(segment: str, what: str) -> bytes:
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise _malformed(f"the {what} is not base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if _b64url(data) != segment:  # one spelling per byte string: no malleable trailing bits
        raise _malformed(f"the {what} is not canonical base64url")
    return data


def _split(token: str) -> tuple[bytes, bytes, bytes]:
    """-> (signed message, payload bytes, signature); TokenRefused('malformed') on any structural problem."""
    if not isinstance(token, str):
        raise _malformed("the approval is not text")
    token = token.strip()
    if not token:
        raise _malformed("the approval is empty")
    if len(token) > MAX_TOKEN:
        raise _malformed("the approval is far too long")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise _malformed(f"an approval has the form {PREFIX}.<payload>.<signature>")
    payload = _b64url_decode(parts[1], "payload")
    signature = _b64url_decode(parts[2], "signature")
    if len(signature) != 64:
        raise _malformed("the signature has the wrong length")
    return f"{parts[0]}.{parts[1]}".encode("ascii"), payload, signature


def _verifies(raw: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _signed_payload(message: bytes, payload: bytes, signature: bytes,
                    keys: list[PublicKey]) -> tuple[dict[str, Any], bytes]:
    """Check the signature with the key the payload names; -> (payload dict, signer's raw public key)."""
    try:
        body = json.loads(payload.decode("utf-8"), parse_constant=_no_constants)
        embedded = base64.b64decode(body["public_key"], validate=True) if isinstance(body, dict) else b""
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        body, embedded = None, b""
    if len(embedded) == 32 and _verifies(embedded, signature, message):
        assert isinstance(body, dict)
        return body, embedded
    if any(_verifies(key.raw, signature, message) for key in keys):
        raise _malformed("the payload is unreadable although signed by a configured key")
    raise TokenRefused("bad-signature", "the signature does not match the approval's contents: it was altered, "
                       "damaged in copying, or forged", hint="ask the approver for a fresh approval; "
                       "paste it exactly as printed")


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _check_shape(body: dict[str, Any], payload: bytes, raw: bytes) -> None:
    if set(body) != _FIELDS:
        raise _malformed("the payload has unexpected fields")
    if type(body["version"]) is not int or body["version"] != VERSION:
        raise TokenRefused("malformed", f"approval version {body['version']!r} is not supported (expected {VERSION})",
                           hint="approver and operator should run the same lottery-ops version")
    ints = (body["issued_at"], body["expires_at"])
    strs = (body["action"], body["nonce"], body["key_id"], body["reason"])
    if any(type(v) is not int for v in ints) or any(not isinstance(v, str) for v in strs):
        raise _malformed("the payload has fields of the wrong type")
    params = body["params"]
    if not isinstance(params, dict) or any(not isinstance(v, str) for v in params.values()):
        raise _malformed("the parameters are not a map of strings")
    if len(body["nonce"]) != 32 or not _HEX.fullmatch(body["nonce"]):
        raise _malformed("the nonce is not 128 bits of hex")
    if not hmac.compare_digest(body["key_id"].encode(), key_id(raw).encode()):
        raise _malformed("the key id does not match the signing key")
    if not 0 < body["expires_at"] - body["issued_at"] <= MAX_TTL:
        raise _malformed("the validity period is not between zero and 60 minutes")
    if canonical_json(body) != payload:
        raise _malformed("the payload is not canonical JSON")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _check_scope(body: dict[str, Any], action: str, expected: dict[str, str]) -> None:
    if not _same(body["action"], action):
        raise TokenRefused("wrong-action", f"it approves {body['action']!r}, not {action!r}",
                           hint=f"ask for an approval with --action {action}")
    got: dict[str, str] = body["params"]
    if set(got) != set(expected):
        raise TokenRefused("wrong-params", f"it binds {', '.join(sorted(got))}, expected {', '.join(sorted(expected))}")
    if "target" in expected and not _same(got["target"], expected["target"]):
        raise TokenRefused("wrong-target", f"it was issued for {got['target']!r}, this target is {expected['target']!r}",
                           hint="the approver's DATABASE_URL and yours must name the same database; "
                                "compare `inv guard.check \"$DATABASE_URL\"` on both machines")
    for name in ("tag", "sha256"):
        if name in expected and not _same(got[name], expected[name]):
            raise TokenRefused("wrong-backup", f"it approves backup {name} {got[name]!r}, this restore uses "
                               f"{expected[name]!r}", hint="ask for an approval of this backup (--tag), or restore "
                                                           "the backup that was approved")
    for name in sorted(expected):
        if not _same(got[name], expected[name]):
            raise TokenRefused("wrong-params", f"it binds {name}={got[name]!r}, this action uses {expected[name]!r}")


def verify(token: str, *, public_keys: Collection[PublicKey | str], action: str, params: Mapping[str, Any],
           now: float, used_nonces: Collection[str], own_key_id: str | None = None) -> Approval:
    """Verify `token` for `action` on `params` at `now`; -> Approval, or TokenRefused naming the reason."""
    keys = [k if isinstance(k, PublicKey) else parse_public_key(k) for k in public_keys]
    try:
        expected = normalize_params(action, params)
    except ConfigError as exc:  # the caller's own parameters are wrong: refuse, fail closed
        raise TokenRefused("wrong-params", exc.message) from None
    message, payload, signature = _split(token)
    body, raw = _signed_payload(message, payload, signature, keys)
    _check_shape(body, payload, raw)
    if own_key_id and _same(body["key_id"], own_key_id):
        raise TokenRefused("self-approved", f"it is signed by your own approver key {own_key_id} (OPS_APPROVER_KEY)",
                           hint="a second person must approve: ask another approver to run `inv emergency.approve`")
    signer = next((k for k in keys if hmac.compare_digest(k.raw, raw)), None)
    if signer is None:
        raise TokenRefused("unknown-key", f"it is signed by key {body['key_id']}, which is not among the "
                           f"{len(keys)} configured in ops.approval.public_keys",
                           hint="only configured approvers can approve; add their `inv emergency.keygen` public "
                                "key line to ops.approval.public_keys (reviewed), or ask a configured approver")
    if body["issued_at"] > now + MAX_CLOCK_SKEW:
        raise TokenRefused("not-yet-valid", f"it was issued {int(body['issued_at'] - now)} s in the future",
                           hint="the approver's clock (or yours) is wrong; fix it and approve again")
    if now >= body["expires_at"]:
        raise TokenRefused("expired", f"it expired at {iso_time(body['expires_at'])}, "
                           f"{int(now - body['expires_at'])} s ago (approvals last at most 60 minutes)")
    _check_scope(body, action, expected)
    if body["nonce"] in used_nonces:
        raise TokenRefused("replayed", f"approval {body['nonce']} has already been used on this machine",
                           hint="each approval works once; ask the approver for a new one")
    return Approval(action=body["action"], params=dict(body["params"]), issued_at=body["issued_at"],
                    expires_at=body["expires_at"], nonce=body["nonce"], key_id=body["key_id"],
                    reason=body["reason"], approver=signer.comment)


def peek(token: str) -> dict[str, Any] | None:
    """The unverified payload of a well-formed token (for display only), or None."""
    try:
        _, payload, _ = _split(token)
        body = json.loads(payload.decode("utf-8"))
    except (GuardRefused, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None
