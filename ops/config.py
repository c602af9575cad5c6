"""Settings: the only reader of Invoke's config (`c.config.ops`) and of the environment.

Precedence is Invoke's own (lowest first): DEFAULTS below (via `ns.configure`) < `/etc/invoke.yaml` <
`~/.invoke.yaml` < the project's `invoke.yaml` < `INVOKE_OPS_*` variables < `inv -f FILE` < flags.
Secrets and database targets come from the runbook's environment variables, never from files.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "ops": {
        # HTTP clients (ops/clients): timeout s per request; retries of idempotent calls (5xx/429/dropped);
        # backoff factor s; max_wait: the longest Retry-After / rate-limit reset a client waits out by itself
        "github": {"repo": "Gor93rus/lottery-backend", "api_url": "https://api.github.com",
                   "backup_prefix": "backup-", "timeout": 30, "retries": 3, "backoff": 0.5, "max_wait": 60},
        "render": {"api_url": "https://api.render.com/v1", "service_id": "", "timeout": 30, "retries": 3,
                   "backoff": 0.5, "max_wait": 60, "poll_interval": 2, "poll_timeout": 180, "page_size": 100},
        "sentry": {"api_url": "https://sentry.io/api/0", "org": "", "project": "", "timeout": 30, "retries": 3,
                   "backoff": 0.5, "max_wait": 60},
        "supabase": {"api_url": "https://api.supabase.com/v1", "project_ref": "", "timeout": 30, "retries": 3,
                     "backoff": 0.5, "max_wait": 60},
        "cloudflare": {"api_url": "https://api.cloudflare.com/client/v4", "zone_id": "", "timeout": 30,
                       "retries": 3, "backoff": 0.5, "max_wait": 60},
        "app": {"health_url": "", "endpoints": [], "timeout": 10},
        "production": {
            "identities": [],
            # a host or database name containing one of these words is production
            "name_tokens": ["prod", "production", "live", "prd"],
        },
        "verify": {"recent": []},
        "approval": {"public_keys": []},
        "restore": {"schemas": ["public"], "lock_timeout": "30s", "backup_dir": ""},
        "audit_log": "",
        "hosts": {},                            # name -> {host, user, port, key_filename}
        "ssh": {"known_hosts": "", "load_ssh_configs": True, "connect_timeout": 10},
        # health checklists (issue 5): thresholds for `inv checks.daily|weekly|monthly`
        "checks": {
            "timeout": 60,                      # seconds each check may take before it is reported as error
            "workflows": ["database-backup.yml", "restore-test.yml", "ci.yml", "health-check.yml"],
            "restore_test_workflow": "restore-test.yml",
            "restore_test_max_age_days": 8,
            "restore_test_timeout": 3600,       # --run-restore-test really restores: allow it time
            "sentry": {"warn_issues": 1, "fail_issues": 10, "warn_events": 100, "fail_events": 1000},
            "app": {"warn_ms": 2000, "timeout": 10},
            "backup": {"max_age_hours": 26, "shrink_fail": 0.5, "shrink_warn": 0.8},
            "db": {"warn_mb": 0, "connections_warn": 0.8, "connections_fail": 0.95},
            "secrets_max_days": 90,
            "deps_max_days": 30,
            "notify": {"title": "Health check failed: {checklist}", "labels": ["ops", "automated"]},
        },
        "backup": {"keep_days": 14, "keep_min": 7},
        # incident recipes (issue 6, ops/incident.py): emergency.app-down, db, rollback, restart, escalate
        "incident": {
            "deploy_workflow": "ci.yml",        # the workflow whose latest run app-down shows
            "idle_minutes": 5,                  # idle-in-transaction sessions older than this are flagged
            "long_query_seconds": 60,
            "recent_deploy_hours": 2,           # the app failing this soon after a deploy: roll back
            "recheck_timeout": 180,             # seconds rollback/restart wait for the deploy/health afterwards
            "diagnosis_max_age_hours": 12,      # escalate attaches saved diagnoses younger than this
            "timeout": 30,                      # seconds each source of a diagnosis may take
            "escalate_labels": ["production", "urgent"],
        },
        # emergency.restore (issue 4, ops/emergency_restore.py); empty dirs mean under the state directory
        "emergency": {
            "maintenance": "suspend",           # or "page": Render's own maintenance page
            "snapshot_dir": "",                 # pre-restore snapshots of production (mode 0700)
            "record_dir": "",                   # Markdown incident records
            "health_timeout": 300,              # seconds step 6 waits for the health URL to answer 200
            "health_interval": 5,
        },
        # emergency.block-ip on the hosts' firewalls (ops/firewall.py); hosts: names from ops.hosts, [] = all
        "firewall": {"v4": "iptables", "v6": "ip6tables", "chain": "INPUT", "sudo": False, "hosts": []},
        # checks.hosts (ops/hosts.py). Also `services`: one list for every host, or {host name: [services]};
        # no default here, because Invoke cannot merge a mapping over a list default (or the reverse)
        "host_checks": {"disk_warn": 80, "disk_fail": 90, "mem_warn": 0.10, "load_per_cpu": 2.0,
                        "systemctl": "systemctl"},
        "access": {
            "expected": {},                     # GitHub login -> highest permission: {owner: admin, ci-bot: write}
            "db_roles": [],                     # production login roles you expect
            # roles the database provider (Supabase) creates and manages itself
            "provider_roles": ["supabase_admin", "supabase_auth_admin", "supabase_storage_admin",
                               "supabase_replication_admin", "supabase_read_only_user", "supabase_functions_admin",
                               "supabase_realtime_admin", "authenticator", "pgbouncer", "dashboard_user", "postgres"],
        },
    }
}

# Environment variables holding secrets or targets (runbook names). Their values are redacted everywhere.
SECRET_VARS = (
    "DATABASE_URL", "STAGING_DATABASE_URL", "GITHUB_TOKEN", "RENDER_API_KEY", "SENTRY_AUTH_TOKEN",
    "SUPABASE_ACCESS_TOKEN", "CLOUDFLARE_API_TOKEN", "PGPASSWORD",
)

VAR_HINTS = {
    "STAGING_DATABASE_URL": "export STAGING_DATABASE_URL=postgresql://user:pass@staging-host:5432/dbname",
    "DATABASE_URL": "export DATABASE_URL=<the production database URL> (the guard needs it to recognise production)",
    "GITHUB_TOKEN": "export GITHUB_TOKEN=<a token with read access to the backup repository>",
    "RENDER_API_KEY": "export RENDER_API_KEY=<an API key from the Render dashboard, Account Settings>",
    "SENTRY_AUTH_TOKEN": "export SENTRY_AUTH_TOKEN=<a Sentry auth token with project:read>",
}


def secret_values(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Values of the secret environment variables, for redaction."""
    env = os.environ if environ is None else environ
    return tuple(env[name] for name in SECRET_VARS if env.get(name))


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lottery-ops"


def _plain(value: Any) -> Any:
    """Invoke's DataProxy objects -> plain dicts and lists."""
    if isinstance(value, Mapping) or hasattr(value, "_config"):
        return {k: _plain(value[k]) for k in value}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


@dataclass(frozen=True)
class Settings:
    """The `ops` configuration and the environment, resolved once per task and passed down explicitly."""

    ops: Mapping[str, Any]
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_context(cls, c: Any, environ: Mapping[str, str] | None = None) -> "Settings":
        raw = c.config.get("ops", {}) if c is not None else {}
        ops = _merge(DEFAULTS["ops"], _plain(raw))
        return cls(ops=ops, env=dict(os.environ if environ is None else environ))

    @classmethod
    def from_dict(cls, ops: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> "Settings":
        return cls(ops=_merge(DEFAULTS["ops"], ops or {}), env=dict(env or {}))

    # -- access ------------------------------------------------------------------------------------------------
    def get(self, dotted: str, default: Any = None) -> Any:
        """`settings.get("github.repo")`: a value of the `ops` config by dotted key."""
        node: Any = self.ops
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def require(self, dotted: str) -> Any:
        """A config value that must be set; a clear ConfigError naming the key otherwise."""
        value = self.get(dotted)
        if value in (None, "", [], {}):
            raise ConfigError(
                f"setting ops.{dotted} is not set",
                hint=f"add it to invoke.yaml, ~/.invoke.yaml or a file passed with `inv -f FILE` under ops: {dotted}",
            )
        return value

    def env_var(self, name: str) -> str | None:
        value = self.env.get(name)
        return value if value else None

    def require_env(self, name: str, why: str = "") -> str:
        value = self.env_var(name)
        if value is None:
            reason = f" ({why})" if why else ""
            raise ConfigError(f"environment variable {name} is not set{reason}", hint=VAR_HINTS.get(name, f"export {name}=..."))
        return value

    @property
    def secrets(self) -> tuple[str, ...]:
        return secret_values(self.env)

    @property
    def audit_log(self) -> Path:
        configured = self.get("audit_log")
        return Path(configured).expanduser() if configured else default_state_dir(self.env) / "audit.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.audit_log.parent
