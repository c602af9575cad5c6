"""Effect: Supabase Management API client (project status and health, disk, read-only mode, backups, SQL).

Contract: ../shared/reference/api-contracts.md section 4. The project ref is exactly 20 lowercase letters.
`health` needs `services`; `database/query` answers 201 (it is a POST but, with read_only, changes nothing, so it
runs in a dry run too).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import requests

from ..errors import ConfigError
from .base import Client

HEALTH_SERVICES = ("auth", "db", "pooler", "realtime", "rest", "storage")


class Supabase(Client):
    service = "Supabase"
    token_var = "SUPABASE_ACCESS_TOKEN"

    def __init__(self, base_url: str, *, project_ref: str, **kwargs: Any):
        super().__init__(base_url, **kwargs)
        if not re.fullmatch(r"[a-z]{20}", project_ref or ""):
            raise ConfigError(f"Supabase project ref {project_ref!r} is not 20 lowercase letters",
                              hint="copy it from the project URL: https://supabase.com/dashboard/project/<ref>")
        self.ref = project_ref

    @classmethod
    def from_settings(cls, settings: Any, *, dry_run: bool = False,
                      session: requests.Session | None = None) -> "Supabase":
        return cls(settings.require("supabase.api_url"), token=settings.require_env("SUPABASE_ACCESS_TOKEN"),
                   project_ref=settings.require("supabase.project_ref"), dry_run=dry_run, session=session,
                   **cls.options(settings, "supabase"))

    def hint_for(self, status: int, detail: str, method: str, url: str) -> str:
        if status == 404:
            return "check ops.supabase.project_ref and that SUPABASE_ACCESS_TOKEN's account can see the project"
        return super().hint_for(status, detail, method, url)

    def project(self) -> dict[str, Any]:
        """`{"ref", "name", "region", "status": "ACTIVE_HEALTHY", "database": {...}, ...}`."""
        return self.get_json(f"/projects/{self.ref}")

    def health(self, services: Iterable[str] = HEALTH_SERVICES, *, timeout_ms: int = 5000) -> list[dict[str, Any]]:
        """`[{"name", "status": "ACTIVE_HEALTHY|COMING_UP|UNHEALTHY", "info", "error"?}]` per service."""
        params = [("services", s) for s in services] + [("timeout_ms", str(timeout_ms))]
        return self.get_json(f"/projects/{self.ref}/health", params)

    def disk_util(self) -> dict[str, Any]:
        return self.get_json(f"/projects/{self.ref}/config/disk/util")

    def readonly(self) -> dict[str, Any]:
        return self.get_json(f"/projects/{self.ref}/readonly")

    def backups(self) -> dict[str, Any]:
        return self.get_json(f"/projects/{self.ref}/database/backups")

    def query(self, sql: str, *, read_only: bool = True) -> list[dict[str, Any]]:
        """Run SQL through the Management API; rows as a list of dicts (row shape UNVERIFIED in the contract)."""
        response = self.request("POST", f"/projects/{self.ref}/database/query",
                                json={"query": sql, "read_only": read_only}, mutating=not read_only)
        return self.json_of(response) or []

    def database_size(self) -> int:
        rows = self.query("select pg_database_size(current_database()) as bytes")
        return int(rows[0]["bytes"])
