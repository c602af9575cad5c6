"""Emergencies: approved production restore and incident diagnosis (runbook: Emergency Procedures)."""
import sys

from .config import Settings
from .emergency_restore import audit, restore  # noqa: F401
from .errors import ConfigError
from .incident import app_down, block_ip, db, escalate, restart, rollback, rotate_secret, security  # noqa: F401
from .tasking import task


def _say(*lines: str) -> None:
    """Everything but a task's machine-readable result goes to stderr."""
    print(*lines, sep="\n", file=sys.stderr)


@task(help={"out": "File for the new private key (mode 0600; never overwritten); the public key goes to FILE.pub",
            "comment": "Name shown with the public key, e.g. alice@laptop (default: user@host)"})
def keygen(c, out, comment=None):
    """Create an approver key pair for emergency approvals (Ed25519)."""
    import getpass
    import socket
    from pathlib import Path

    from . import approval

    public = approval.write_keypair(Path(out).expanduser(), comment or f"{getpass.getuser()}@{socket.gethostname()}")
    print(public.line())
    _say(f"private key: {out} (mode 0600; keep it to yourself, never share or commit it)",
         f"public key:  {out}.pub (key id {public.key_id}), printed above",
         "next: have the public key line added to ops.approval.public_keys (invoke.yaml, reviewed), and",
         f"      export OPS_APPROVER_KEY={out} when you approve with `inv emergency.approve`")


@task(help={"tag": "Backup tag (GitHub release) the restore may use",
            "ttl": "How long the approval lasts: 90s, 30m, 1h (at most 60 minutes; default 30m)",
            "reason": "Why: goes into the approval and the audit log",
            "action": "Action approved (default: restore)",
            "sha256": "The backup's SHA-256, if you checked it yourself",
            "file": "A downloaded backup: its SHA-256 (checked against FILE.sha256 if present) is approved",
            "minutes": "With --action terminate-idle: the idle age approved (`emergency.db --terminate-idle N` "
                       "must use the same N)",
            "via": "Name production as seen from this bastion, for an operator who will run `--via` it (the names "
                   "in DATABASE_URL are resolved there; the database is not connected to)"})
def approve(c, tag=None, ttl=None, reason=None, action=None, sha256=None, file=None, minutes=None, via=None):
    """Approve an emergency action (as the second person): print a signed, single-use approval token.

    Run by an approver, not the operator. The private key comes from the file OPS_APPROVER_KEY names. The token
    alone goes to stdout, so `TOKEN=$(inv emergency.approve --tag TAG)` works; give it to the operator for
    `inv emergency.restore --approve "$TOKEN"`. It binds the production database (DATABASE_URL), the backup
    (tag and SHA-256), an expiry and a random nonce, and works once. `--action terminate-idle --minutes N` approves
    `inv emergency.db --terminate-idle N` on production instead (that N only).
    """
    import time

    from . import approval, tokens

    settings = Settings.from_context(c)
    action = action or "restore"
    if action not in tokens.ACTION_PARAMS:
        raise ConfigError(f"unknown --action {action!r}", hint="one of: " + ", ".join(sorted(tokens.ACTION_PARAMS)))
    if (action == "restore") != bool(tag) or (action != "restore" and (sha256 or file)):
        raise ConfigError("--tag is required for --action restore, and --tag, --sha256, --file only apply to it",
                          hint="inv emergency.approve --tag TAG [--ttl 30m] [--reason TEXT]")
    if (action == "terminate-idle") != (minutes is not None):
        raise ConfigError("--minutes is required for --action terminate-idle, and only applies to it",
                          hint="inv emergency.approve --action terminate-idle --minutes N [--ttl 30m] [--reason TEXT]")
    seconds = tokens.parse_ttl(ttl or "30m")
    key = approval.approver_key(settings)
    params = {"target": _production_identity(settings, via)}
    if action == "restore":
        params |= {"tag": tag, "sha256": approval.backup_sha256(settings, tag, sha256=sha256, file=file)}
    if action == "terminate-idle":
        params["minutes"] = tokens.minutes_param(minutes)
    token = tokens.mint(key, action, params, seconds, reason or "", now=time.time())
    approval.record_issued(settings, token, params["target"])
    body = tokens.peek(token) or {}
    _say(f"approved {action} of {params['target']}" + (f" from {tag} (sha256 {params['sha256']})" if tag else "")
         + (f" for sessions idle {params['minutes']}+ minutes" if "minutes" in params else ""),
         f"approver key {body.get('key_id')}, nonce {body.get('nonce')}, "
         f"expires {tokens.iso_time(body.get('expires_at', 0))} ({seconds} s); single use")
    print(token)


def _production_identity(settings: Settings, via: str | None) -> str:
    """Production's identity as the guard computes it here (`via` None), or on the bastion `via` (as
    `inv emergency.restore --via` does)."""
    from . import approval
    from .via import reach

    with reach(settings, via) as db:         # nothing is opened until the guard asks the bastion
        return approval.production_identity(settings, db.vantage)

