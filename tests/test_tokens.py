"""Approval tokens (pure): format, every refusal reason, tampering, TTL parsing. Real Ed25519, no mocks."""
from __future__ import annotations

import base64
import hashlib
import json
import string

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ops import tokens
from ops.errors import ConfigError, GuardRefused
from ops.redact import redact_text

APPROVER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))       # a configured approver
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))       # a second configured approver
STRANGER = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))    # not configured
KEYS = [tokens.format_public_key(tokens.raw_public(APPROVER), "alice"),
        tokens.format_public_key(tokens.raw_public(OTHER), "bob")]
T0 = 1_750_000_000
TARGET = "postgresql://203.0.113.7:5432/lottery"
PARAMS = {"target": TARGET, "tag": "backup-2025-06-15-0300", "sha256": "ab" * 32}
NONCE = bytes(range(16))


def mint(key=APPROVER, action="restore", params=PARAMS, ttl="30m", reason="disk died", now=T0, nonce=NONCE):
    return tokens.mint(key, action, params, ttl, reason, now, nonce=nonce)


def verify(token, **over):
    kw = dict(public_keys=KEYS, action="restore", params=PARAMS, now=T0 + 60, used_nonces=set(), own_key_id=None)
    kw.update(over)
    return tokens.verify(token, **kw)


def refusal(token, **over) -> tokens.TokenRefused:
    with pytest.raises(tokens.TokenRefused) as info:
        verify(token, **over)
    return info.value


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: bytes, key=APPROVER) -> str:
    """A token over arbitrary payload bytes, properly signed: to reach the checks after the signature."""
    message = f"{tokens.PREFIX}.{b64url(payload)}"
    return f"{message}.{b64url(key.sign(message.encode()))}"


def body(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


# -- format ----------------------------------------------------------------------------------------------------
def test_round_trip_gives_the_approval():
    approval = verify(mint())
    assert approval.action == "restore" and dict(approval.params) == PARAMS
    assert (approval.issued_at, approval.expires_at) == (T0, T0 + 1800)
    assert approval.nonce == NONCE.hex() and approval.reason == "disk died" and approval.approver == "alice"
    assert approval.key_id == hashlib.sha256(tokens.raw_public(APPROVER)).hexdigest()[:16]
    assert "alice" in approval.describe() and approval.nonce in approval.describe()


def test_token_is_one_copy_pasteable_line_with_canonical_payload():
    token = mint()
    prefix, payload_b64, sig_b64 = token.split(".")
    assert prefix == "opsapprove1" and set(payload_b64 + sig_b64) <= set(string.ascii_letters + string.digits + "-_")
    raw = base64.urlsafe_b64decode(payload_b64 + "==")
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    assert set(json.loads(raw)) == {"version", "action", "params", "issued_at", "expires_at", "nonce", "key_id",
                                    "public_key", "reason"}
    assert len(base64.urlsafe_b64decode(sig_b64 + "==")) == 64 and len(token) < 800


def test_nonce_is_random_128_bits_when_not_given():
    nonces = {body(mint(nonce=None))["nonce"] for _ in range(20)}
    assert len(nonces) == 20 and all(len(n) == 32 for n in nonces)


def test_the_token_carries_no_private_key_material():
    token = mint()
    seed = APPROVER.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                  serialization.NoEncryption())
    decoded = base64.urlsafe_b64decode(token.split(".")[1] + "==") + base64.urlsafe_b64decode(token.split(".")[2] + "==")
    assert seed not in decoded and base64.b64encode(seed).decode() not in token and seed.hex() not in token


def test_mint_accepts_a_raw_seed_and_normalises_the_digest():
    token = tokens.mint(bytes(range(32)), "restore", dict(PARAMS, sha256="AB" * 32), "90s", "", T0)
    assert verify(token).params["sha256"] == "ab" * 32
    assert verify(token, params=dict(PARAMS, sha256="AB" * 32)).expires_at == T0 + 90


@pytest.mark.parametrize("action, params", [
    ("restore", {"target": TARGET, "tag": "t"}),
    ("restore", dict(PARAMS, sha256="xyz")),
    ("restore", dict(PARAMS, sha256="ab" * 31)),
    ("restore", dict(PARAMS, extra="1")),
    ("restore", dict(PARAMS, tag="")),
    ("restore", dict(PARAMS, tag=5)),
    ("drop-everything", {"target": TARGET}),
], ids=["missing-sha", "sha-not-hex", "sha-short", "extra-param", "empty-tag", "tag-not-text", "unknown-action"])
def test_mint_refuses_bad_parameters(action, params):
    with pytest.raises(ConfigError):
        mint(action=action, params=params)


IDLE = {"target": TARGET, "minutes": "30"}


def test_other_actions_use_the_same_kind_of_token():
    token = mint(action="terminate-idle", params=IDLE)
    assert verify(token, action="terminate-idle", params=IDLE).action == "terminate-idle"
    assert refusal(token).reason == "wrong-action"


def test_a_terminate_idle_token_binds_its_minutes():
    assert tokens.ACTION_PARAMS["terminate-idle"] == ("target", "minutes")
    token = mint(action="terminate-idle", params=IDLE)
    for other in ("5", "0", "30.5", "300"):
        exc = refusal(token, action="terminate-idle", params=dict(IDLE, minutes=other))
        assert exc.reason == "wrong-params" and "minutes='30'" in str(exc) and repr(other) in str(exc)
    assert refusal(token, action="terminate-idle", params={"target": TARGET}).reason == "wrong-params"
    # the same number however it is written: 30, 30.0, " 30 "
    assert verify(token, action="terminate-idle", params=dict(IDLE, minutes="30.0")).params["minutes"] == "30"
    assert verify(mint(action="terminate-idle", params=dict(IDLE, minutes="30.0")), action="terminate-idle",
                  params=dict(IDLE, minutes=" 30 "))
    with pytest.raises(ConfigError):
        mint(action="terminate-idle", params={"target": TARGET})           # minutes are required


@pytest.mark.parametrize("given, written", [("30", "30"), (30, "30"), (30.0, "30"), ("2.5", "2.5"), ("0", "0"),
                                            ("1e1", "10")])
def test_minutes_param_writes_one_form_per_number(given, written):
    assert tokens.minutes_param(given) == written


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "five", ""])
def test_minutes_param_refuses_what_is_not_minutes(bad):
    with pytest.raises(ConfigError):
        tokens.minutes_param(bad)


# -- every refusal reason --------------------------------------------------------------------------------------
OWN = tokens.key_id(tokens.raw_public(APPROVER))

REFUSALS = [
    # (id, token builder, verify overrides, reason)
    ("expired-exactly-at-expiry", lambda: mint(ttl="30m"), dict(now=T0 + 1800), "expired"),
    ("expired-later", lambda: mint(ttl="90s"), dict(now=T0 + 10_000), "expired"),
    ("issued-in-the-future", lambda: mint(now=T0 + 3600), dict(now=T0), "not-yet-valid"),
    ("wrong-target", mint, dict(params=dict(PARAMS, target="postgresql://203.0.113.8:5432/lottery")), "wrong-target"),
    ("wrong-target-dbname", mint, dict(params=dict(PARAMS, target=TARGET + "_2")), "wrong-target"),
    ("wrong-backup-tag", mint, dict(params=dict(PARAMS, tag="backup-2025-06-14-0300")), "wrong-backup"),
    ("wrong-backup-sha", mint, dict(params=dict(PARAMS, sha256="ab" * 31 + "ac")), "wrong-backup"),
    ("wrong-action", lambda: mint(action="terminate-idle", params=IDLE), {}, "wrong-action"),
    ("caller-params-bad", mint, dict(params={"target": TARGET}), "wrong-params"),
    ("unknown-key", lambda: mint(key=STRANGER), {}, "unknown-key"),
    ("no-keys-configured", mint, dict(public_keys=[]), "unknown-key"),
    ("self-approved", mint, dict(own_key_id=OWN), "self-approved"),
    ("self-approved-unconfigured-own-key", lambda: mint(key=STRANGER),
     dict(own_key_id=tokens.key_id(tokens.raw_public(STRANGER))), "self-approved"),
    ("replayed", mint, dict(used_nonces={NONCE.hex()}), "replayed"),
    ("bad-signature", lambda: mint()[:-3] + ("AAA" if mint()[-3:] != "AAA" else "BAA"), {}, "bad-signature"),
    ("signature-from-other-token", lambda: mint().rsplit(".", 1)[0] + "." + mint(reason="x").rsplit(".", 1)[1], {},
     "bad-signature"),
]


@pytest.mark.parametrize("build, over, reason", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_each_refusal_names_its_reason(build, over, reason):
    exc = refusal(build(), **over)
    assert isinstance(exc, GuardRefused) and exc.exit_code == 3
    assert exc.reason == reason and f"({reason})" in str(exc) and exc.hint
    assert redact_text(str(exc)) == str(exc), "redaction would garble the message"


def test_valid_until_the_last_moment_before_expiry():
    token = mint(ttl="30m")
    assert verify(token, now=T0 + 1799.999).nonce == NONCE.hex()
    assert verify(token, now=T0).nonce == NONCE.hex()
    assert refusal(token, now=T0 + 1800.0).reason == "expired"


def test_a_small_clock_skew_is_tolerated_at_issue_but_never_at_expiry():
    token = mint(now=T0 + tokens.MAX_CLOCK_SKEW)
    assert verify(token, now=T0).issued_at == T0 + tokens.MAX_CLOCK_SKEW


def test_second_configured_approver_and_openssh_key_format():
    token = mint(key=OTHER)
    assert verify(token).approver == "bob"
    ssh_line = OTHER.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode() + " bob@laptop"
    assert verify(token, public_keys=[ssh_line]).approver == "bob@laptop"


def test_an_operator_holding_only_public_keys_cannot_mint():
    """Whatever key the operator makes, the token is refused; borrowing an approver's identity breaks the signature."""
    fresh = Ed25519PrivateKey.generate()
    assert refusal(mint(key=fresh)).reason == "unknown-key"
    forged = body(mint(key=fresh))
    forged["public_key"] = base64.b64encode(tokens.raw_public(APPROVER)).decode()
    forged["key_id"] = OWN
    assert refusal(signed(tokens.canonical_json(forged), key=fresh)).reason == "bad-signature"


# -- tampering and malformed tokens ----------------------------------------------------------------------------
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_flipping_any_payload_byte_breaks_the_signature(data):
    token = mint()
    prefix, payload_b64, sig = token.split(".")
    payload = bytearray(base64.urlsafe_b64decode(payload_b64 + "=="))
    i = data.draw(st.integers(0, len(payload) - 1))
    payload[i] ^= data.draw(st.integers(1, 255))
    assert refusal(f"{prefix}.{b64url(bytes(payload))}.{sig}").reason == "bad-signature"


@settings(max_examples=300)
@given(i=st.integers(0, 63), mask=st.integers(1, 255))
def test_flipping_any_signature_byte_breaks_the_signature(i, mask):
    token = mint()
    rest, sig_b64 = token.rsplit(".", 1)
    sig = bytearray(base64.urlsafe_b64decode(sig_b64 + "=="))
    sig[i] ^= mask
    assert refusal(f"{rest}.{b64url(bytes(sig))}").reason == "bad-signature"


@settings(max_examples=400)
@given(data=st.data())
def test_any_edit_of_the_token_text_is_refused(data):
    token = mint()
    i = data.draw(st.integers(0, len(token) - 1))
    edit = data.draw(st.sampled_from(["replace", "delete", "insert", "truncate"]))
    char = data.draw(st.sampled_from(string.ascii_letters + string.digits + "-_.=+/ \n"))
    if edit == "replace":
        if char == token[i]:
            return
        edited = token[:i] + char + token[i + 1:]
    elif edit == "delete":
        edited = token[:i] + token[i + 1:]
    elif edit == "insert":
        edited = token[:i] + char + token[i:]
    else:
        edited = token[:i]
    if edited.strip() == token:  # surrounding whitespace from copy-paste is allowed
        return
    with pytest.raises(GuardRefused):
        verify(edited)


MALFORMED = [
    "", "   ", "\n", "opsapprove1", "opsapprove1..", "opsapprove1.abc", "opsapprove1.a.b.c", "opsapprove2.e30.AAAA",
    "OPSAPPROVE1.e30." + "A" * 86, "opsapprove1.e30." + "A" * 85, "opsapprove1.e30." + "A" * 87,
    "opsapprove1.e30=." + "A" * 86, "opsapprove1.e+0." + "A" * 86, "opsapprove1.e30.A" + "A" * 84 + "B",
    "opsapprove1.e30." + "A" * 84 + "=", "opsapprove1." + "A" * 9000 + ".AA", "eyJhbGciOiJIUzI1NiJ9.e30.sig",
    "Bearer opsapprove1.e30.AAAA", "opsapprove1.\u00e9.AAAA", "opsapprove1.e30.\u0410AAA",
]


@pytest.mark.parametrize("token", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_tokens_are_refused_as_malformed(token):
    assert refusal(token).reason == "malformed"


def test_not_text_is_malformed():
    assert refusal(None).reason == "malformed"
    assert refusal(mint().encode()).reason == "malformed"


SIGNED_BUT_WRONG = [
    ("not-json", lambda b: b"not json"),
    ("json-array", lambda b: b"[1,2]"),
    ("missing-field", lambda b: tokens.canonical_json({k: v for k, v in b.items() if k != "reason"})),
    ("extra-field", lambda b: tokens.canonical_json(dict(b, grace=60))),
    ("version-2", lambda b: tokens.canonical_json(dict(b, version=2))),
    ("version-true", lambda b: tokens.canonical_json(dict(b, version=True))),
    ("expiry-as-text", lambda b: tokens.canonical_json(dict(b, expires_at=str(b["expires_at"])))),
    ("expiry-float", lambda b: tokens.canonical_json(dict(b, expires_at=b["expires_at"] + 0.5))),
    ("lifetime-over-an-hour", lambda b: tokens.canonical_json(dict(b, expires_at=b["issued_at"] + 3601))),
    ("lifetime-zero", lambda b: tokens.canonical_json(dict(b, expires_at=b["issued_at"]))),
    ("nonce-short", lambda b: tokens.canonical_json(dict(b, nonce="ab" * 8))),
    ("nonce-upper", lambda b: tokens.canonical_json(dict(b, nonce=b["nonce"].upper()))),
    ("key-id-mismatch", lambda b: tokens.canonical_json(dict(b, key_id="0" * 16))),
    ("params-not-map", lambda b: tokens.canonical_json(dict(b, params=["x"]))),
    ("param-not-text", lambda b: tokens.canonical_json(dict(b, params=dict(b["params"], tag=1)))),
    ("not-canonical-spaces", lambda b: json.dumps(b, sort_keys=True).encode()),
    ("not-canonical-order", lambda b: json.dumps(dict(reversed(list(b.items()))), separators=(",", ":")).encode()),
    ("duplicate-key", lambda b: tokens.canonical_json(b)[:-1] + b',"reason":"other"}'),
]


@pytest.mark.parametrize("rewrite", [c[1] for c in SIGNED_BUT_WRONG], ids=[c[0] for c in SIGNED_BUT_WRONG])
def test_a_validly_signed_payload_of_the_wrong_shape_is_malformed(rewrite):
    assert refusal(signed(rewrite(body(mint())))).reason == "malformed"


@settings(max_examples=300)
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: "opsapprove1." + b64url(b) + "." + b64url(b)))
@example("opsapprove1." + "W" * 5000 + ".AA")
@example("opsapprove1." + b64url(b"[" * 3000) + "." + "A" * 86)
def test_garbage_is_always_a_refusal_never_a_crash(text):
    with pytest.raises(GuardRefused):
        verify(text)


@settings(max_examples=200)
@given(payload=st.binary(max_size=400), sig=st.binary(min_size=64, max_size=64))
def test_random_payload_with_signature_shaped_bytes_is_refused(payload, sig):
    exc = refusal(f"{tokens.PREFIX}.{b64url(payload)}.{b64url(sig)}")
    assert exc.reason in ("bad-signature", "malformed")


@settings(max_examples=100, deadline=None)
@given(tag=st.text(min_size=1, max_size=60), target=st.text(min_size=1, max_size=120),
       reason=st.text(max_size=200), sha=st.binary(min_size=32, max_size=32), ttl=st.integers(1, 3600),
       now=st.floats(1e9, 4e9))
def test_any_parameters_round_trip_and_bind(tag, target, reason, sha, ttl, now):
    params = {"target": target, "tag": tag, "sha256": sha.hex()}
    token = tokens.mint(APPROVER, "restore", params, ttl, reason, now)
    got = verify(token, params=params, now=now)
    assert dict(got.params) == params and got.reason == reason and got.expires_at - got.issued_at == ttl
    assert refusal(token, params=dict(params, tag=tag + "x"), now=now).reason == "wrong-backup"
    assert refusal(token, params=params, now=got.expires_at).reason == "expired"


# -- public keys -----------------------------------------------------------------------------------------------
def test_public_key_line_round_trips():
    key = tokens.parse_public_key(KEYS[0])
    assert key.raw == tokens.raw_public(APPROVER) and key.comment == "alice" and key.line() == KEYS[0]
    assert tokens.parse_public_key(KEYS[0].split()[0]).comment == ""


@pytest.mark.parametrize("line", [
    "", "ed25519:", "ed25519:AAAA", "ed25519:" + base64.b64encode(b"x" * 31).decode(),
    "ed25519:" + base64.b64encode(b"x" * 33).decode(), "ed25519:not base64!", "ssh-ed25519",
    "ssh-ed25519 AAAA", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
    "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa\x00\x00\x00\x20" + b"x" * 32).decode(),
    "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x21" + b"x" * 32).decode(),
    "-----BEGIN PRIVATE KEY-----",
], ids=range(12))
def test_bad_public_key_lines_are_config_errors(line):
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        tokens.parse_public_key(line)


# -- TTL -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("1s", 1), ("30m", 1800), ("1h", 3600), ("60m", 3600), ("3600s", 3600), ("059m", 3540),
    (" 5m ", 300), (120, 120),
])
def test_ttl_parses(text, seconds):
    assert tokens.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", [
    "61m", "2h", "3601s", "0s", "0m", "0h", "-5m", "-1", "", " ", "30", "m", "1.5h", "30 m", "30M", "1H", "1d",
    "30min", "abc", "\uff11m", "\u0661m", "99999999999h", "1e3s", 0, -60, 3601, True, "30m;rm",
], ids=repr)
def test_ttl_refuses_zero_negative_too_long_and_garbage(text):
    with pytest.raises(ConfigError) as info:
        tokens.parse_ttl(text)
    assert info.value.hint


@given(st.text(max_size=12))
def test_ttl_is_a_whole_positive_number_of_seconds_up_to_an_hour_or_an_error(text):
    try:
        seconds = tokens.parse_ttl(text)
    except ConfigError:
        return
    assert 1 <= seconds <= 3600 and text.strip()[-1] in "smh"


@given(n=st.integers(0, 10**6), unit=st.sampled_from("smh"))
def test_ttl_units(n, unit):
    seconds = n * {"s": 1, "m": 60, "h": 3600}[unit]
    if 0 < seconds <= 3600:
        assert tokens.parse_ttl(f"{n}{unit}") == seconds
    else:
        with pytest.raises(ConfigError):
            tokens.parse_ttl(f"{n}{unit}")
