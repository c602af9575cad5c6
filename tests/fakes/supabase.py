"""Fake Supabase Management API under /supabase/v1, per the contract's section 4.

State: ref (20 lowercase letters), project (dict), health {service: status}, disk, readonly_state, backups_state,
query_rows (what POST database/query answers, 201), queries (the SQL received).
"""
from __future__ import annotations

import secrets
from typing import Any

from .server import Reply, Request, Router, bearer, canned, iso

SERVICES = ("auth", "db", "db_postgres_user", "pooler", "realtime", "rest", "storage", "pg_bouncer")


class FakeSupabase:
    prefix = "/supabase/v1"

    def __init__(self, api: Any):
        self.api = api
        self.token = "sbp_" + secrets.token_hex(20)
        self.ref = "lotteryfakeprojectab"
        self.project = canned("supabase_project", ref=self.ref)
        self.health = {name: "ACTIVE_HEALTHY" for name in SERVICES}
        self.disk = {"timestamp": iso(), "metrics": {"fs_size_bytes": 8 * 2**30, "fs_avail_bytes": 6 * 2**30,
                                                      "fs_used_bytes": 2 * 2**30}}
        self.readonly_state = {"enabled": False, "override_enabled": False, "override_active_until": None}
        self.backups_state: dict[str, Any] = {
            "region": "eu-central-1", "walg_enabled": True, "pitr_enabled": False,
            "backups": [{"id": 1, "is_physical_backup": True, "status": "COMPLETED", "inserted_at": iso()}],
            "physical_backup_data": {}}
        self.query_rows: list[dict[str, Any]] = [{"bytes": 123456789}]
        self.queries: list[dict[str, Any]] = []
        r = self.router = Router()
        r.add("GET", r"/projects/(?P<ref>[^/]+)", self.get_project)
        r.add("GET", r"/projects/(?P<ref>[^/]+)/health", self.get_health)
        r.add("GET", r"/projects/(?P<ref>[^/]+)/config/disk/util", lambda req, ref: self._own(ref, self.disk))
        r.add("GET", r"/projects/(?P<ref>[^/]+)/readonly", lambda req, ref: self._own(ref, self.readonly_state))
        r.add("GET", r"/projects/(?P<ref>[^/]+)/database/backups", lambda req, ref: self._own(ref, self.backups_state))
        r.add("POST", r"/projects/(?P<ref>[^/]+)/database/query", self.query)

    def handle(self, rec: Request) -> Reply:
        if bearer(rec) != self.token:
            return Reply.json({"message": "Unauthorized"}, 401)
        return self.router.dispatch(rec, lambda r: Reply.json({"message": "Cannot GET " + r.sub}, 404))

    def _own(self, ref: str, body: Any, status: int = 200) -> Reply:
        if ref != self.ref:
            return Reply.json({"message": "Project not found"}, 404)
        return Reply.json(body, status)

    def get_project(self, req: Request, ref: str) -> Reply:
        return self._own(ref, self.project)

    def get_health(self, req: Request, ref: str) -> Reply:
        wanted = [s for v in req.query.get("services", []) for s in v.split(",") if s]
        if not wanted:
            return Reply.json({"message": "services is required"}, 400)
        bad = [s for s in wanted if s not in SERVICES]
        if bad:
            return Reply.json({"message": f"Invalid service: {bad[0]}"}, 400)
        body = []
        for name in wanted:
            status = self.health.get(name, "ACTIVE_HEALTHY")
            entry: dict[str, Any] = {"name": name, "healthy": status == "ACTIVE_HEALTHY", "status": status,
                                     "info": {"name": name, "version": "fake", "description": f"{name} service"}}
            if status != "ACTIVE_HEALTHY":
                entry["error"] = f"{name} is {status.lower()}"
            body.append(entry)
        return self._own(ref, body)

    def query(self, req: Request, ref: str) -> Reply:
        data = req.json() or {}
        if not data.get("query"):
            return Reply.json({"message": "query is required"}, 400)
        self.queries.append(data)
        return self._own(ref, self.query_rows, 201)
