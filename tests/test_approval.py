"""Approvals on a machine: key files, configured keys, the guard's approval callable, single use through the audit
log; and `inv emergency.keygen` / `inv emergency.approve` run as subprocesses."""
from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import stat
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from ops import approval, audit, guard, tokens
from ops.config import Settings
from ops.errors import ConfigError, GuardRefused, ServiceError, VerificationFailed

ROOT = Path(__file__).resolve().parents[1]
PROD_URL = "postgresql://app:hunter2-prod-secret@203.0.113.7:5432/lottery"
SHA = "cd" * 32
TAG = "backup-2025-06-15-0300"


def write_key(path: Path, key: Ed25519PrivateKey, mode: int = 0o600) -> Path:
    path.write_bytes(approval.private_key_bytes(key))
    path.chmod(mode)
    return path


@pytest.fixture
def approver(tmp_path):
    key = Ed25519PrivateKey.generate()
    return key, tokens.format_public_key(tokens.raw_public(key), "alice")


def make_settings(tmp_path, public_keys=(), **env) -> Settings:
    return Settings.from_dict({"audit_log": str(tmp_path / "audit.jsonl"), "approval": {"public_keys": list(public_keys)}},
                              env={"DATABASE_URL": PROD_URL, **env})


def prod_identity(settings: Settings) -> str:
    return guard.judge(settings, PROD_URL, read_db_marker=False).identity


def restore_token(settings, key, *, tag=TAG, sha=SHA, ttl="30m", now=None):
    params = {"target": prod_identity(settings), "tag": tag, "sha256": sha}
    return tokens.mint(key, "restore", params, ttl, "disk died", time.time() if now is None else now)


def require(settings, token, *, tag=TAG, sha=SHA, url=PROD_URL, now=None):
    check = approval.approval_checker(settings, token, "restore", {"tag": tag, "sha256": sha}, now=now)
    target = guard.require(settings, url, action="emergency.restore", emergency=True, approval=check, read_marker=False)
    return check, target


# -- the guard's approval callable and single use ----------------------------------------------------------------
def test_guard_lets_production_through_only_with_a_valid_approval(tmp_path, approver):
    key, pub = approver
    s = make_settings(tmp_path, [pub])
    check, target = require(s, restore_token(s, key))
    assert target.is_production and check.approval.params["tag"] == TAG and check.approval.approver == "alice"
    with pytest.raises(GuardRefused, match="signed approval"):
        guard.require(s, PROD_URL, action="emergency.restore", emergency=True, read_marker=False)


def test_a_dry_run_does_not_consume_and_a_consumed_approval_is_refused(tmp_path, approver):
    key, pub = approver
    s = make_settings(tmp_path, [pub])
    token = restore_token(s, key)
    require(s, token)                                   # a dry run: checked, not consumed
    check, target = require(s, token)                   # so it still works
    entry = approval.consume(s, check.approval, target=target.redacted)
    assert entry["details"]["nonce"] == check.approval.nonce and entry["action"] == "emergency.token_used"
    assert approval.used_nonces(s) == {check.approval.nonce}
    with pytest.raises(tokens.TokenRefused) as info:
        require(s, token)
    assert info.value.reason == "replayed" and info.value.exit_code == 3
    with pytest.raises(tokens.TokenRefused, match="replayed"):
        approval.consume(s, check.approval)
    text = s.audit_log.read_text()
    assert token not in text and "hunter2" not in text and audit.verify(s) == []


def _consume_in_process(s, approved, barrier, results):
    barrier.wait()
    try:
        approval.consume(s, approved)
        results.put("ok")
    except GuardRefused:
        results.put("refused")


def test_only_one_of_many_concurrent_runs_can_consume_an_approval(tmp_path, approver):
    key, pub = approver
    s = make_settings(tmp_path, [pub])
    check, _ = require(s, restore_token(s, key))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(12), ctx.Queue()
    procs = [ctx.Process(target=_consume_in_process, args=(s, check.approval, barrier, results)) for _ in range(12)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sorted(results.get(timeout=5) for _ in procs) == ["ok"] + ["refused"] * 11
    assert len([e for e in audit.entries(s) if e["action"] == approval.USED]) == 1


@pytest.mark.parametrize("case, reason", [
    ("other-database", "wrong-target"), ("other-tag", "wrong-backup"), ("other-sha", "wrong-backup"),
    ("expired", "expired"), ("unknown-key", "unknown-key"), ("self-approved", "self-approved"),
])
def test_guard_refuses_each_mismatch_with_exit_3(tmp_path, approver, case, reason):
    key, pub = approver
    s = make_settings(tmp_path, [pub])
    token = restore_token(s, key)
    kwargs = {}
    if case == "other-database":  # production too (named by ops.production.identities), but not the approved one
        s = Settings.from_dict({**s.ops, "production": {"identities": [{"host": "203.0.113.9"}]}}, env=s.env)
        kwargs["url"] = "postgresql://app@203.0.113.9:5432/lottery"
    elif case == "other-tag":
        kwargs["tag"] = "backup-2025-06-14-0300"
    elif case == "other-sha":
        kwargs["sha"] = "ce" * 32
    elif case == "expired":
        kwargs["now"] = time.time() + 1800
    elif case == "unknown-key":
        s = make_settings(tmp_path, [tokens.format_public_key(tokens.raw_public(Ed25519PrivateKey.generate()))])
    elif case == "self-approved":
        s = make_settings(tmp_path, [pub], OPS_APPROVER_KEY=str(write_key(tmp_path / "mine.key", key)))
    with pytest.raises(GuardRefused) as info:
        require(s, token, **kwargs)
    assert info.value.reason == reason and info.value.exit_code == 3


def test_checker_refuses_when_its_planned_target_is_not_the_guards(tmp_path, approver):
    """A token valid for the target the restore planned is still refused if the guard resolved another database."""
    key, pub = approver
    s = make_settings(tmp_path, [pub])
    planned = {"target": "postgresql://203.0.113.8:5432/lottery", "tag": TAG, "sha256": SHA}
    token = tokens.mint(key, "restore", planned, "30m", "", time.time())
    check = approval.approval_checker(s, token, "restore", planned)
    with pytest.raises(tokens.TokenRefused) as info:
        guard.require(s, PROD_URL, action="emergency.restore", emergency=True, approval=check, read_marker=False)
    assert info.value.reason == "wrong-target" and check.approval is None


def test_an_unusable_own_key_fails_closed(tmp_path, approver):
    key, pub = approver
    s = make_settings(tmp_path, [pub], OPS_APPROVER_KEY=str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="self-approval cannot be ruled out"):
        require(s, restore_token(s, key))


def test_a_bad_configured_public_key_is_named(tmp_path, approver):
    _, pub = approver
    s = make_settings(tmp_path, [pub, "ssh-rsa AAAAB3Nza bob"])
    with pytest.raises(ConfigError, match="entry 2"):
        approval.public_keys(s)
    assert len(approval.public_keys(make_settings(tmp_path, [pub]))) == 1


# -- key files -------------------------------------------------------------------------------------------------
def test_write_keypair_modes_and_refusal_to_overwrite(tmp_path):
    old = os.umask(0)
    try:
        public = approval.write_keypair(tmp_path / "k" / "approver.key", "alice@laptop")
    finally:
        os.umask(old)
    priv, pub = tmp_path / "k" / "approver.key", tmp_path / "k" / "approver.key.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert pub.read_text() == public.line() + "\n" and public.comment == "alice@laptop"
    key = approval.load_private_key(priv)
    assert tokens.raw_public(key) == public.raw
    before = priv.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        approval.write_keypair(priv, "x")
    pub.unlink()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        approval.write_keypair(priv, "x")
    assert priv.read_bytes() == before
    (tmp_path / "only.key.pub").write_text("stale\n")
    with pytest.raises(ConfigError, match="only.key.pub already exists"):
        approval.write_keypair(tmp_path / "only.key", "x")
    assert not (tmp_path / "only.key").exists()


def test_write_keypair_does_not_follow_a_planted_symlink(tmp_path):
    (tmp_path / "elsewhere").write_text("keep")
    (tmp_path / "approver.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError):
        approval.write_keypair(tmp_path / "approver.key", "x")
    assert (tmp_path / "elsewhere").read_text() == "keep"


def test_key_files_are_only_ever_created_never_replaced(tmp_path):
    """The primitive under keygen: O_CREAT|O_EXCL (no check-then-write race), no symlink following."""
    existing = tmp_path / "existing"
    existing.write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for path in (existing, tmp_path / "link"):
        with pytest.raises(ConfigError):
            approval._create(path, b"new", 0o600)
    assert existing.read_text() == "keep" and not (tmp_path / "target").exists()
    approval._create(tmp_path / "fresh", b"new", 0o600)
    assert (tmp_path / "fresh").read_bytes() == b"new"


def test_load_private_key_checks_mode_and_kind(tmp_path, approver):
    key, _ = approver
    path = write_key(tmp_path / "a.key", key, 0o640)
    with pytest.raises(ConfigError, match="readable by others"):
        approval.load_private_key(path)
    assert approval.load_private_key(path, check_mode=False)
    ssh = tmp_path / "id_ed25519"
    ssh.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                      serialization.NoEncryption()))
    ssh.chmod(0o600)
    assert tokens.raw_public(approval.load_private_key(ssh)) == tokens.raw_public(key)
    rsa = tmp_path / "rsa.key"
    rsa.write_bytes(generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    rsa.chmod(0o600)
    with pytest.raises(ConfigError, match="not Ed25519"):
        approval.load_private_key(rsa)
    junk = tmp_path / "junk.key"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n")
    junk.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        approval.load_private_key(junk)
    assert "c2VjcmV0" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        approval.load_private_key(tmp_path / "none.key")
    with pytest.raises(ConfigError, match="OPS_APPROVER_KEY is not set"):
        approval.approver_key(make_settings(tmp_path))


# -- the backup's SHA-256 --------------------------------------------------------------------------------------
def test_backup_sha256_from_flag_file_and_sidecar(tmp_path):
    s = make_settings(tmp_path)
    dump = tmp_path / "backup.sql.gz"
    dump.write_bytes(b"-- PostgreSQL database dump\n" * 100)
    actual = hashlib.sha256(dump.read_bytes()).hexdigest()
    assert approval.backup_sha256(s, TAG, sha256=actual.upper()) == actual
    assert approval.backup_sha256(s, TAG, file=str(dump)) == actual                  # no sidecar: hashed
    (tmp_path / "backup.sql.gz.sha256").write_text(f"{actual}  backup.sql.gz\n")
    assert approval.backup_sha256(s, TAG, file=str(dump), sha256=actual) == actual
    with pytest.raises(VerificationFailed, match="differs between sources"):
        approval.backup_sha256(s, TAG, file=str(dump), sha256=SHA)
    (tmp_path / "backup.sql.gz.sha256").write_text(f"sha256:{SHA}\n")
    with pytest.raises(VerificationFailed, match="does not match"):
        approval.backup_sha256(s, TAG, file=str(dump))
    with pytest.raises(ConfigError):
        approval.backup_sha256(s, TAG, sha256="not-a-digest")


class _Releases(BaseHTTPRequestHandler):
    """A stand-in for GitHub's `GET /repos/{owner}/{repo}/releases/tags/{tag}` (api-contracts.md shapes)."""

    releases: dict[str, dict] = {}

    def do_GET(self):  # noqa: N802
        tag = self.path.rsplit("/", 1)[-1]
        found = self.path.startswith("/repos/o/r/releases/tags/") and tag in self.releases
        data = json.dumps(self.releases[tag] if found else {"message": "Not Found"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def asset(name, digest, state="uploaded"):
    return {"id": 1, "name": name, "state": state, "size": 10, "digest": digest, "content_type": "application/gzip",
            "url": "http://127.0.0.1/repos/o/r/releases/assets/1", "browser_download_url": "http://127.0.0.1/x"}


@pytest.fixture
def github():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Releases)
    _Releases.releases = {
        TAG: {"tag_name": TAG, "assets": [asset("lottery.sql.gz", "sha256:" + SHA.upper())]},
        "backup-null": {"tag_name": "backup-null", "assets": [asset("lottery.sql.gz", None)]},
        "backup-two": {"tag_name": "backup-two", "assets": [asset("a.sql.gz", "sha256:" + SHA),
                                                           asset("b.sql.gz", "sha256:" + SHA)]},
        "backup-partial": {"tag_name": "backup-partial", "assets": [asset("a.sql.gz", "sha256:" + SHA, "open")]},
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"api_url": f"http://127.0.0.1:{server.server_address[1]}", "repo": "o/r"}
    server.shutdown()
    server.server_close()


def test_backup_sha256_from_the_release_asset_digest(tmp_path, github):
    s = Settings.from_dict({"github": github}, env={})
    assert approval.backup_sha256(s, TAG) == SHA
    for tag, needle in [("backup-null", "no SHA-256 digest"), ("backup-two", "exactly one"),
                        ("backup-partial", "exactly one")]:
        with pytest.raises(VerificationFailed, match=needle):
            approval.backup_sha256(s, tag)
    with pytest.raises(ServiceError):
        approval.backup_sha256(s, "backup-missing")


# -- the tasks, as an operator and an approver run them ----------------------------------------------------------
def inv(*args, env=None, home: Path):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("INVOKE_", "OPS_", "DATABASE_URL"))}
    full.update({"HOME": str(home), "XDG_STATE_HOME": str(home / "state"), **(env or {})})
    return subprocess.run(["inv", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60)


def private_material(path: Path) -> list[str]:
    """Every spelling of a private key file's secret a careless print could show."""
    key = approval.load_private_key(path)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pem_body = "".join(path.read_text().splitlines()[1:-1])
    return [pem_body, pem_body[:24], base64.b64encode(seed).decode(), seed.hex(), "PRIVATE KEY"]


def test_keygen_writes_a_0600_key_and_prints_only_the_public_line(tmp_path):
    out = tmp_path / "keys" / "approver.key"
    run = inv("emergency.keygen", "--out", str(out), "--comment", "alice@laptop", home=tmp_path)
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    line = (tmp_path / "keys" / "approver.key.pub").read_text().strip()
    assert run.stdout.splitlines() == [line] and line.startswith("ed25519:") and line.endswith(" alice@laptop")
    assert "ops.approval.public_keys" in run.stderr
    for secret in private_material(out):
        assert secret not in run.stdout + run.stderr
    again = inv("emergency.keygen", "--out", str(out), home=tmp_path)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr and again.stdout == ""
    assert tokens.parse_public_key(line).raw == tokens.raw_public(approval.load_private_key(out))


def test_approve_prints_the_token_alone_and_it_verifies_for_production(tmp_path):
    key_path = tmp_path / "approver.key"
    assert inv("emergency.keygen", "--out", str(key_path), home=tmp_path).returncode == 0
    env = {"OPS_APPROVER_KEY": str(key_path), "DATABASE_URL": PROD_URL}
    run = inv("emergency.approve", "--tag", TAG, "--sha256", SHA, "--ttl", "10m", "--reason", "disk died",
              env=env, home=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")
    assert len(lines) == 2 and lines[1] == "" and lines[0].startswith("opsapprove1.")
    token = lines[0]
    for secret in private_material(key_path) + ["hunter2-prod-secret"]:
        assert secret not in run.stdout + run.stderr
    assert token not in run.stderr and TAG in run.stderr
    pub = (tmp_path / "approver.key.pub").read_text()
    s = make_settings(tmp_path / "operator", [pub])
    check, _ = require(s, token)                                    # as the operator's guard would see it
    assert check.approval.reason == "disk died" and check.approval.expires_at - check.approval.issued_at == 600
    approver_log = tmp_path / "state" / "lottery-ops" / "audit.jsonl"
    assert audit.verify_lines(approver_log.read_text().splitlines()) == []
    text = approver_log.read_text()
    assert '"emergency.approve"' in text and check.approval.nonce in text and token not in text
    assert "hunter2" not in text
    issued = json.loads(text.splitlines()[-1])
    assert issued["action"] == "emergency.approve" and issued["details"]["params"] == check.approval.params
    assert issued["details"]["params"]["tag"] == TAG and issued["details"]["params"]["sha256"] == SHA


def test_approve_looks_up_the_digest_on_github(tmp_path, github):
    key_path = write_key(tmp_path / "approver.key", Ed25519PrivateKey.generate())
    config = tmp_path / "ops.yaml"
    config.write_text(f"ops:\n  github:\n    api_url: {github['api_url']}\n    repo: o/r\n")
    env = {"OPS_APPROVER_KEY": str(key_path), "DATABASE_URL": PROD_URL}
    run = inv("-f", str(config), "emergency.approve", "--tag", TAG, env=env, home=tmp_path)
    assert run.returncode == 0, run.stderr
    assert tokens.peek(run.stdout.strip())["params"]["sha256"] == SHA
    run = inv("-f", str(config), "emergency.approve", "--tag", "backup-null", env=env, home=tmp_path)
    assert run.returncode == 1 and run.stdout == "" and "--file PATH" in run.stderr


def test_approve_from_a_downloaded_file_with_sidecar(tmp_path):
    key_path = write_key(tmp_path / "approver.key", Ed25519PrivateKey.generate())
    dump = tmp_path / "backup.sql.gz"
    dump.write_bytes(b"dump bytes")
    digest = hashlib.sha256(b"dump bytes").hexdigest()
    (tmp_path / "backup.sql.gz.sha256").write_text(digest + "\n")
    run = inv("emergency.approve", "--tag", TAG, "--file", str(dump),
              env={"OPS_APPROVER_KEY": str(key_path), "DATABASE_URL": PROD_URL}, home=tmp_path)
    assert run.returncode == 0, run.stderr
    assert tokens.peek(run.stdout.strip())["params"]["sha256"] == digest


def test_approve_terminate_idle_binds_the_minutes(tmp_path):
    key_path = write_key(tmp_path / "approver.key", Ed25519PrivateKey.generate())
    env = {"OPS_APPROVER_KEY": str(key_path), "DATABASE_URL": PROD_URL}
    run = inv("emergency.approve", "--action", "terminate-idle", "--minutes", "30", "--reason", "stuck worker",
              env=env, home=tmp_path)
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip()
    assert "idle 30+ minutes" in run.stderr and token not in run.stderr
    public = tokens.format_public_key(tokens.raw_public(approval.load_private_key(key_path)), "alice")
    s = make_settings(tmp_path / "operator", [public])
    assert tokens.peek(token)["params"] == {"target": prod_identity(s), "minutes": "30"}
    approver_log = (tmp_path / "state" / "lottery-ops" / "audit.jsonl").read_text()
    issued = json.loads(approver_log.splitlines()[-1])                # the approver's record names the minutes too
    assert issued["action"] == "emergency.approve" and token not in approver_log
    assert issued["details"]["params"] == {"target": prod_identity(s), "minutes": "30"}

    def require_idle(minutes):
        check = approval.approval_checker(s, token, "terminate-idle", {"minutes": tokens.minutes_param(minutes)})
        return guard.require(s, PROD_URL, action="emergency.terminate-idle", emergency=True, approval=check,
                             read_marker=False)

    with pytest.raises(tokens.TokenRefused) as refused:       # a token for 30 minutes does not allow 5
        require_idle(5)
    assert refused.value.reason == "wrong-params" and refused.value.exit_code == 3
    assert require_idle("30.0").is_production                 # the same number, written another way


@pytest.mark.parametrize("case, args, needle", [
    ("idle-without-minutes", ["--action", "terminate-idle"], "--minutes is required"),
    ("minutes-on-restore", ["--tag", TAG, "--sha256", SHA, "--minutes", "5"], "--minutes is required"),
    ("minutes-not-a-number", ["--action", "terminate-idle", "--minutes", "soon"], "not a number of minutes"),
    ("no-key-var", ["--tag", TAG, "--sha256", SHA], "OPS_APPROVER_KEY is not set"),
    ("key-too-open", ["--tag", TAG, "--sha256", SHA], "readable by others"),
    ("key-missing", ["--tag", TAG, "--sha256", SHA], "cannot read the approver key"),
    ("no-database-url", ["--tag", TAG, "--sha256", SHA], "DATABASE_URL"),
    ("ttl-61m", ["--tag", TAG, "--sha256", SHA, "--ttl", "61m"], "longer than the 60 minutes"),
    ("ttl-0s", ["--tag", TAG, "--sha256", SHA, "--ttl", "0s"], "longer than zero"),
    ("no-tag", ["--sha256", SHA], "--tag is required"),
    ("unknown-action", ["--tag", TAG, "--action", "drop"], "unknown --action"),
    ("bad-sha", ["--tag", TAG, "--sha256", "xyz"], "not a SHA-256"),
])
def test_approve_refusals_are_clean_errors_with_nothing_on_stdout(tmp_path, case, args, needle):
    key_path = write_key(tmp_path / "approver.key", Ed25519PrivateKey.generate(), 0o644 if case == "key-too-open"
                         else 0o600)
    env = {"OPS_APPROVER_KEY": str(key_path), "DATABASE_URL": PROD_URL}
    if case == "no-key-var":
        del env["OPS_APPROVER_KEY"]
    elif case == "key-missing":
        env["OPS_APPROVER_KEY"] = str(tmp_path / "nope.key")
    elif case == "no-database-url":
        del env["DATABASE_URL"]
    run = inv("emergency.approve", *args, env=env, home=tmp_path)
    assert run.returncode == 1 and run.stdout == "" and needle in run.stderr and "hint:" in run.stderr
    assert "Traceback" not in run.stderr and "hunter2" not in run.stderr
    assert not (tmp_path / "state" / "lottery-ops" / "audit.jsonl").exists()
