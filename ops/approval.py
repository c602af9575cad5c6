"""Approvals on this machine: approver key files, configured public keys, and single use through the audit log.

The pure token logic is `ops.tokens`; this module reads what it needs (key files named by OPS_APPROVER_KEY,
ops.approval.public_keys, the audit log) and hands it over. The restore path uses it like this:

    check = approval.approval_checker(settings, token, "restore", {"tag": tag, "sha256": sha})
    target = guard.require(settings, url, action="emergency.restore", emergency=True, approval=check)
    ...                                   # dry run stops here: the approval is not consumed
    approval.consume(settings, check.approval, target=target.redacted)   # only when the restore proceeds
"""
from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import audit, tokens
from .config import Settings
from .errors import ConfigError, GuardRefused, VerificationFailed

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .guard import Target, Vantage

KEY_VAR = "OPS_APPROVER_KEY"
USED = "emergency.token_used"


# -- key files -------------------------------------------------------------------------------------------------
def private_key_bytes(key: "Ed25519PrivateKey") -> bytes:
    """PEM (PKCS#8, unencrypted) for the key file; readable by `openssl pkey`."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(path: Path, *, check_mode: bool = True) -> "Ed25519PrivateKey":
    """An Ed25519 private key from a PEM (PKCS#8) or OpenSSH file; ConfigError if unreadable or too open."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the approver key {path}: {exc.strerror}",
                          hint=f"set {KEY_VAR} to the file `inv emergency.keygen --out FILE` wrote") from None
    if check_mode and mode & 0o077:
        raise ConfigError(f"approver key {path} is readable by others (mode {stat.S_IMODE(mode):04o})",
                          hint=f"chmod 600 {path}")
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # wrong format, encrypted, corrupt: never echo the bytes
        raise ConfigError(f"{path} is not an unencrypted Ed25519 private key ({type(exc).__name__})",
                          hint="make one with `inv emergency.keygen --out FILE`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__.replace('PrivateKey', '')} key, not Ed25519",
                          hint="make one with `inv emergency.keygen --out FILE`")
    return key


def approver_key(settings: Settings) -> "Ed25519PrivateKey":
    """The approver's private key, from the file OPS_APPROVER_KEY names (strict: mode must be 0600 or tighter)."""
    path = settings.env_var(KEY_VAR)
    if path is None:
        raise ConfigError(f"environment variable {KEY_VAR} is not set (the approver's private key file)",
                          hint=f"export {KEY_VAR}=~/.config/lottery-ops/approver.key "
                               "(made with `inv emergency.keygen --out FILE`)")
    return load_private_key(Path(path).expanduser())


def own_key_id(settings: Settings) -> str | None:
    """Key id of the operator's own approver key (OPS_APPROVER_KEY), or None. Fails closed if it is unreadable."""
    path = settings.env_var(KEY_VAR)
    if path is None:
        return None
    try:
        key = load_private_key(Path(path).expanduser(), check_mode=False)
    except ConfigError as exc:
        raise ConfigError(f"{KEY_VAR} is set but unusable, so self-approval cannot be ruled out: {exc.message}",
                          hint=f"fix the file, or unset {KEY_VAR} if you hold no approver key") from None
    return tokens.key_id(tokens.raw_public(key))


def public_keys(settings: Settings) -> list[tokens.PublicKey]:
    """ops.approval.public_keys, parsed; ConfigError naming the bad entry."""
    configured = settings.get("approval.public_keys") or []
    if isinstance(configured, str):
        configured = [line for line in configured.splitlines() if line.strip()]
    keys = []
    for n, line in enumerate(configured, 1):
        try:
            keys.append(tokens.parse_public_key(line))
        except ConfigError as exc:
            raise ConfigError(f"ops.approval.public_keys entry {n}: {exc.message}", hint=exc.hint) from None
    return keys


# -- single use ------------------------------------------------------------------------------------------------
def used_nonces(settings: Settings) -> set[str]:
    """Nonces of approvals already used on this machine (audit entries `emergency.token_used`)."""
    used = set()
    for entry in audit.entries(settings):
        if entry.get("action") == USED:
            details = entry.get("details")
            nonce = details.get("nonce") if isinstance(details, Mapping) else entry.get("nonce")
            if isinstance(nonce, str):
                used.add(nonce)
    return used


class ApprovalChecker:
    """The `approval(target)` callable the guard calls on the emergency path. `.approval` holds the result."""

    def __init__(self, settings: Settings, token: str, action: str, params: Mapping[str, str],
                 now: float | None = None):
        self.settings, self.token, self.action, self.params, self.now = settings, token, action, dict(params), now
        self.approval: tokens.Approval | None = None

    def __call__(self, target: "Target") -> tokens.Approval:
        params = dict(self.params)
        params.setdefault("target", target.identity)
        if params["target"] != target.identity:
            raise tokens.TokenRefused("wrong-target", f"the action was planned for {params['target']!r} but the "
                                      f"guard resolved {target.identity!r}", hint="run it again; if it persists, "
                                      "`inv guard.check \"$DATABASE_URL\"` shows how the target is understood")
        self.approval = tokens.verify(
            self.token, public_keys=public_keys(self.settings), action=self.action, params=params,
            now=time.time() if self.now is None else self.now, used_nonces=used_nonces(self.settings),
            own_key_id=own_key_id(self.settings),
        )
        return self.approval


def approval_checker(settings: Settings, token: str, action: str, params: Mapping[str, str],
                     now: float | None = None) -> ApprovalChecker:
    """A callable for `guard.require(..., approval=...)`: checks `token` for `action`, `params` and the target."""
    return ApprovalChecker(settings, token, action, params, now)


def consume(settings: Settings, approval: tokens.Approval | None, *, target: str | None = None) -> dict[str, Any]:
    """Record `approval` as used (never in a dry run). Refuses if it was used meanwhile."""
    if approval is None:
        raise GuardRefused("no verified approval to use", hint="call the guard with the approval checker first")
    lock = settings.state_dir / "approvals.lock"
    lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # check and record as one step: two runs cannot both use one approval
        if approval.nonce in used_nonces(settings):
            raise tokens.TokenRefused("replayed", f"approval {approval.nonce} has already been used on this machine",
                                      hint="each approval works once; ask the approver for a new one")
        return audit.record(settings, USED, target=target, outcome="consumed", nonce=approval.nonce,
                            key_id=approval.key_id, approver=approval.approver, approved_action=approval.action,
                            params=dict(approval.params), expires_at=approval.expires_at, reason=approval.reason)


# -- keygen and approve (the approver's side) --------------------------------------------------------------------
def write_keypair(out: Path, comment: str) -> tokens.PublicKey:
    """Make an Ed25519 key pair: private key to `out` (mode 0600, never overwritten), public line to `out`.pub."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub_path = out.with_name(out.name + ".pub")
    for path in (out, pub_path):
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path} already exists; refusing to overwrite a key",
                              hint="choose another --out, or move the old key away first if you mean to replace it")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    public = tokens.PublicKey(tokens.raw_public(key), " ".join(comment.split()))
    _create(out, private_key_bytes(key), 0o600)
    try:
        _create(pub_path, (public.line() + "\n").encode(), 0o644)
    except BaseException:
        out.unlink()
        raise
    return public


def _create(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (O_EXCL: never follow or replace an existing file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to overwrite a key", hint="choose another --out") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}", hint="choose another --out") from None
    try:
        os.fchmod(fd, mode)  # the umask may only have narrowed it; make it exact
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def production_identity(settings: Settings, vantage: "Vantage | None" = None) -> str:
    """The production target's identity as the guard computes it from DATABASE_URL (the URL is not connected to),
    from here or from `vantage` (a bastion's: `inv emergency.approve --via`)."""
    from . import guard

    url = settings.require_env("DATABASE_URL", "the approval names the production database it is for")
    target = guard.judge(settings, url, read_db_marker=False, vantage=vantage)
    if target.error or not target.identity:
        raise ConfigError(f"DATABASE_URL cannot be understood: {target.error}",
                          hint="`inv guard.check \"$DATABASE_URL\"` explains how the guard reads it")
    return target.identity


def backup_sha256(settings: Settings, tag: str, *, sha256: str | None = None, file: str | None = None) -> str:
    """The SHA-256 of backup `tag`: from --sha256, from a local download (its .sha256 sidecar, checked against the
    file), or from the release asset's `digest` on GitHub. Sources given together must agree."""
    found: dict[str, str] = {}
    if sha256:
        found["--sha256"] = tokens.normalize_params("restore", {"target": "-", "tag": tag, "sha256": sha256})["sha256"]
    if file:
        found[f"--file {file}"] = _file_sha256(Path(file).expanduser())
    if not found:
        found[f"GitHub release {tag}"] = _release_sha256(settings, tag)
    values = set(found.values())
    if len(values) != 1:
        raise VerificationFailed("the backup's SHA-256 differs between sources: "
                                 + "; ".join(f"{k}: {v}" for k, v in found.items()),
                                 hint="download the backup again and compare; approve only the one you checked")
    return values.pop()


def _file_sha256(path: Path) -> str:
    import hashlib

    try:
        with open(path, "rb") as fh:
            actual = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise ConfigError(f"cannot read backup file {path}: {exc.strerror}",
                          hint="download it with `inv restore.download --tag TAG`") from None
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.exists():
        words = sidecar.read_text(encoding="utf-8", errors="replace").split()
        recorded = words[0].lower().removeprefix("sha256:") if words else ""
        if recorded != actual:
            raise VerificationFailed(f"{path} does not match {sidecar.name} (file {actual}, recorded {recorded[:64]})",
                                     hint="the download is damaged or was changed: download it again")
    return actual


def _release_sha256(settings: Settings, tag: str) -> str:
    """The `digest` of the backup asset (`.sql.gz`) of release `tag`: GitHub gives `sha256:<hex>`, or null for
    assets uploaded before it computed digests; then the approver must download and hash the file themselves."""
    from .clients.github import GitHub

    release = GitHub.from_settings(settings).release_by_tag(tag)
    assets = [a for a in release.get("assets") or []
              if str(a.get("name", "")).endswith(".sql.gz") and a.get("state", "uploaded") == "uploaded"]
    if len(assets) != 1:
        names = ", ".join(str(a.get("name")) for a in release.get("assets") or []) or "none"
        raise VerificationFailed(f"release {tag} should hold exactly one uploaded .sql.gz backup; it holds: {names}",
                                 hint="download the right file and pass --file PATH, or give --sha256 HEX")
    digest = assets[0].get("digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise VerificationFailed(f"GitHub gives no SHA-256 digest for {assets[0].get('name')} in {tag}",
                                 hint="download it (`inv restore.download --tag TAG`), verify it, and pass --file PATH")
    params = tokens.normalize_params("restore", {"target": "-", "tag": tag, "sha256": digest.removeprefix("sha256:")})
    return params["sha256"]


def record_issued(settings: Settings, token: str, identity: str) -> dict[str, Any]:
    """Audit the approver's side: what was approved (every bound param: tag and sha256, or minutes), for whom, until
    when (never the token itself). The same shape as the operator's `consume` entry."""
    body = tokens.peek(token) or {}
    return audit.record(settings, "emergency.approve", target=identity, outcome="issued", nonce=body.get("nonce"),
                        key_id=body.get("key_id"), approved_action=body.get("action"),
                        params=dict(body.get("params") or {}), expires_at=body.get("expires_at"),
                        reason=body.get("reason"))
