"""Links: the runbook's important links (dashboards, repository, backups, Sentry, health), built from configuration."""
from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .config import Settings
from .tasking import task


def github_web(api_url: str) -> str:
    """api.github.com -> https://github.com; GitHub Enterprise `https://host/api/v3` -> https://host."""
    parts = urlsplit(api_url.rstrip("/"))
    if parts.hostname == "api.github.com":
        return "https://github.com"
    base = f"{parts.scheme}://{parts.netloc}"
    return base if parts.path.rstrip("/").endswith("/api/v3") or not parts.path else base + parts.path


def sentry_web(api_url: str) -> str:
    """https://sentry.io/api/0 -> https://sentry.io (self-hosted Sentry the same way)."""
    url = api_url.rstrip("/")
    return url[: -len("/api/0")] if url.endswith("/api/0") else url


def build_links(ops: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Pure: (label, URL or what to set) for every link the runbook lists, from the `ops` config tree."""
    def get(section: str, key: str) -> str:
        return str((ops.get(section) or {}).get(key) or "")

    def unset(*keys: str) -> str:
        return "(not set: " + ", ".join(f"ops.{k}" for k in keys) + ")"

    repo = get("github", "repo")
    gh = f"{github_web(get('github', 'api_url') or 'https://api.github.com')}/{repo}" if repo else ""
    rows = [
        ("Repository", gh or unset("github.repo")),
        ("Backups (releases)", f"{gh}/releases" if gh else unset("github.repo")),
        ("Actions (workflows)", f"{gh}/actions" if gh else unset("github.repo")),
        ("Dependabot alerts", f"{gh}/security/dependabot" if gh else unset("github.repo")),
        ("Actions secrets", f"{gh}/settings/secrets/actions" if gh else unset("github.repo")),
    ]
    service = get("render", "service_id")
    rows.append(("Render service", f"https://dashboard.render.com/web/{service}" if service
                 else unset("render.service_id")))
    org, project = get("sentry", "org"), get("sentry", "project")
    sentry = sentry_web(get("sentry", "api_url") or "https://sentry.io/api/0")
    rows.append(("Sentry project", f"{sentry}/organizations/{org}/projects/{project}/" if org and project
                 else unset(*[k for k, v in (("sentry.org", org), ("sentry.project", project)) if not v])))
    rows.append(("Sentry issues (unresolved)", f"{sentry}/organizations/{org}/issues/?query=is%3Aunresolved"
                 if org else unset("sentry.org")))
    ref = get("supabase", "project_ref")
    rows.append(("Supabase project", f"https://supabase.com/dashboard/project/{ref}" if ref
                 else unset("supabase.project_ref")))
    zone = get("cloudflare", "zone_id")
    if zone:
        rows.append(("Cloudflare", "https://dash.cloudflare.com/"))
    app = ops.get("app") or {}
    rows.append(("Health URL", str(app.get("health_url") or "") or unset("app.health_url")))
    rows += [("Critical endpoint", str(url)) for url in app.get("endpoints") or []]
    return rows


@task(help={"json": "Print the links as JSON: [{label, url}]"})
def links(c, json=False):
    """Print the runbook's important links: repository, backups, dashboards, Sentry, health URL."""
    rows = build_links(Settings.from_context(c).ops)
    if json:
        print(jsonlib.dumps([{"label": label, "url": url} for label, url in rows], indent=2))
        return
    width = max(len(label) for label, _ in rows)
    for label, url in rows:
        print(f"{label:<{width}}  {url}")
