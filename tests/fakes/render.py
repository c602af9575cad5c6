"""Fake Render public API under /render/v1, per the contract's section 2.

State:
  services {id: service}; `service` is the default one (id `service_id`), deploys {id: [deploy]} (any order;
  served newest first), env {id: {key: value}}, logs [log] (served newest first), restarts (count),
  suspend_after_polls / resume_after_polls: how many GETs of the service still show the old state after a
  suspend/resume (0: at once; None: never: "suspend never confirms"), maintenance_after_polls likewise,
  new_deploy_status (status of deploys created by POST /deploys and /rollback), deploy_conflict (409),
  page_cap (limit is capped at this, as Render caps it at 100; settings_ops() sets the client's
  render.page_size to 5 so tests cross pages).
"""
from __future__ import annotations

import itertools
import secrets
from datetime import datetime, timezone
from typing import Any

from .server import Reply, Request, Router, bearer, canned, deep_merge, iso


class FakeRender:
    prefix = "/render/v1"

    def __init__(self, api: Any):
        self.api = api
        self.token = "rnd_" + secrets.token_hex(16)
        self.service_id = "srv-d0fake0lottery0api00"
        self.services: dict[str, dict[str, Any]] = {}
        self.deploys: dict[str, list[dict[str, Any]]] = {}
        self.env: dict[str, dict[str, str]] = {}
        self.logs: list[dict[str, Any]] = []
        self.restarts = 0
        self.suspend_after_polls: int | None = 1
        self.resume_after_polls: int | None = 1
        self.maintenance_after_polls: int | None = 0
        self.new_deploy_status = "build_in_progress"
        self.deploy_conflict = False
        self.page_cap = 100
        self.ratelimit = {"limit": 400, "remaining": 399, "reset": 60}
        self._pending: dict[str, list[Any]] = {}  # id -> [changes, polls left]
        self._ids = itertools.count(1)
        self.add_service(self.service_id)
        self.router = self._routes()

    # -- state helpers -------------------------------------------------------------------------------------------
    @property
    def service(self) -> dict[str, Any]:
        return self.services[self.service_id]

    def add_service(self, sid: str, **fields: Any) -> dict[str, Any]:
        service = canned("render_service", id=sid, repo="acme/lottery-backend")
        service.update(id=sid, **fields)
        self.services[sid] = service
        self.deploys.setdefault(sid, [])
        self.env.setdefault(sid, {})
        return service

    def add_deploy(self, status: str = "live", *, trigger: str = "new_commit", created_at: datetime | str | None = None,
                   commit_id: str | None = None, message: str = "Deploy", service_id: str | None = None,
                   finished: bool = True) -> dict[str, Any]:
        sid = service_id or self.service_id
        did = f"dep-d0fake{next(self._ids):014d}"
        when = iso(created_at, micro=True)
        deploy = canned("render_deploy")
        deploy.update(id=did, status=status, trigger=trigger, createdAt=when, updatedAt=when, startedAt=when,
                      finishedAt=when if finished and status not in ("build_in_progress", "update_in_progress",
                                                                     "queued", "created") else None)
        deploy["commit"] = {"id": commit_id or secrets.token_hex(20), "message": message, "createdAt": when}
        if status == "live":
            for other in self.deploys[sid]:
                if other["status"] == "live":
                    other["status"] = "deactivated"
        self.deploys[sid].append(deploy)
        return deploy

    def add_log(self, message: str, *, level: str = "info", timestamp: datetime | str | None = None,
                service_id: str | None = None) -> dict[str, Any]:
        sid = service_id or self.service_id
        entry = {"id": f"log-{next(self._ids)}", "timestamp": iso(timestamp, micro=True), "message": message,
                 "labels": [{"name": "resource", "value": sid}, {"name": "level", "value": level},
                            {"name": "type", "value": "app"}, {"name": "instance", "value": f"{sid}-abcde"}]}
        self.logs.append(entry)
        return entry

    # -- entry point ---------------------------------------------------------------------------------------------
    def handle(self, rec: Request) -> Reply:
        token = bearer(rec)
        if token != self.token:
            reply = Reply.json({"id": "unauthorized", "message": "unauthorized"}, 401)
        else:
            reply = self.router.dispatch(rec, lambda r: Reply.json({"message": "not found"}, 404))
        reply.headers = {"Ratelimit-Limit": str(self.ratelimit["limit"]),
                         "Ratelimit-Remaining": str(self.ratelimit["remaining"]),
                         "Ratelimit-Reset": str(self.ratelimit["reset"]), **reply.headers}
        return reply

    def _routes(self) -> Router:
        r = Router()
        r.add("GET", r"/services", self.list_services)
        r.add("GET", r"/services/(?P<sid>[^/]+)", self.get_service)
        r.add("PATCH", r"/services/(?P<sid>[^/]+)", self.patch_service)
        r.add("POST", r"/services/(?P<sid>[^/]+)/suspend", lambda req, sid: self.change(sid, "suspend"))
        r.add("POST", r"/services/(?P<sid>[^/]+)/resume", lambda req, sid: self.change(sid, "resume"))
        r.add("POST", r"/services/(?P<sid>[^/]+)/restart", self.restart)
        r.add("GET", r"/services/(?P<sid>[^/]+)/deploys", self.list_deploys)
        r.add("POST", r"/services/(?P<sid>[^/]+)/deploys", self.create_deploy)
        r.add("GET", r"/services/(?P<sid>[^/]+)/deploys/(?P<did>[^/]+)", self.get_deploy)
        r.add("POST", r"/services/(?P<sid>[^/]+)/rollback", self.rollback)
        r.add("GET", r"/services/(?P<sid>[^/]+)/env-vars", self.list_env)
        r.add("PUT", r"/services/(?P<sid>[^/]+)/env-vars", self.replace_env)
        r.add("GET", r"/services/(?P<sid>[^/]+)/env-vars/(?P<key>[^/]+)", self.get_env)
        r.add("PUT", r"/services/(?P<sid>[^/]+)/env-vars/(?P<key>[^/]+)", self.put_env)
        r.add("DELETE", r"/services/(?P<sid>[^/]+)/env-vars/(?P<key>[^/]+)", self.delete_env)
        r.add("GET", r"/logs", self.list_logs)
        return r

    def _missing(self, sid: str) -> Reply:
        return Reply.json({"message": f"not found: {sid}"}, 404)  # real 404s come without "id"

    def _cursor_page(self, req: Request, items: list[Any], wrap: str, cursor_of: Any) -> Reply:
        limit = max(1, min(int(req.arg("limit", "20") or 20), 100, self.page_cap))
        start = 0
        if req.arg("cursor"):
            ids = [cursor_of(i) for i in items]
            start = ids.index(req.arg("cursor")) + 1 if req.arg("cursor") in ids else len(items)
        return Reply.json([{"cursor": cursor_of(i), wrap: i} for i in items[start:start + limit]])

    # -- services ------------------------------------------------------------------------------------------------
    def list_services(self, req: Request) -> Reply:
        items = list(self.services.values())
        if req.arg("name"):
            items = [s for s in items if s["name"] == req.arg("name")]
        if req.arg("suspended"):
            items = [s for s in items if s["suspended"] == req.arg("suspended")]
        return self._cursor_page(req, items, "service", lambda s: s["id"])

    def get_service(self, req: Request, sid: str) -> Reply:
        if sid not in self.services:
            return self._missing(sid)
        pending = self._pending.get(sid)
        if pending is not None and pending[1] is not None:
            if pending[1] <= 0:
                self.services[sid] = deep_merge(self.services[sid], pending[0])
                del self._pending[sid]
            else:
                pending[1] -= 1
        return Reply.json(self.services[sid])

    def change(self, sid: str, action: str) -> Reply:
        if sid not in self.services:
            return self._missing(sid)
        if action == "suspend":
            changes, polls = {"suspended": "suspended", "suspenders": ["user"]}, self.suspend_after_polls
        else:
            changes, polls = {"suspended": "not_suspended", "suspenders": []}, self.resume_after_polls
        self._schedule(sid, changes, polls)
        return Reply.empty(202)

    def _schedule(self, sid: str, changes: dict[str, Any], polls: int | None) -> None:
        if polls == 0:
            self.services[sid] = deep_merge(self.services[sid], changes)
            self._pending.pop(sid, None)
        else:
            self._pending[sid] = [changes, polls]

    def patch_service(self, req: Request, sid: str) -> Reply:
        if sid not in self.services:
            return self._missing(sid)
        data = req.json() or {}
        mode = (data.get("serviceDetails") or {}).get("maintenanceMode")
        rest = {k: v for k, v in data.items() if k != "serviceDetails"}
        details = {k: v for k, v in (data.get("serviceDetails") or {}).items() if k != "maintenanceMode"}
        self.services[sid] = deep_merge(self.services[sid], {**rest, "serviceDetails": details,
                                                             "updatedAt": iso(micro=True)})
        if mode is not None:
            self._schedule(sid, {"serviceDetails": {"maintenanceMode": mode}}, self.maintenance_after_polls)
        return Reply.json(self.services[sid])

    def restart(self, req: Request, sid: str) -> Reply:
        if sid not in self.services:
            return self._missing(sid)
        self.restarts += 1
        return Reply.empty(202)

    # -- deploys -------------------------------------------------------------------------------------------------
    def _sorted_deploys(self, sid: str) -> list[dict[str, Any]]:
        return sorted(self.deploys[sid], key=lambda d: d["createdAt"], reverse=True)

    def list_deploys(self, req: Request, sid: str) -> Reply:
        if sid not in self.services:
            return self._missing(sid)
        items = self._sorted_deploys(sid)
        if req.arg("status"):
            wanted = set(req.arg("status").split(","))  # type: ignore[union-attr]
            items = [d for d in items if d["status"] in wanted]
        return self._cursor_page(req, items, "deploy", lambda d: d["id"])

    def get_deploy(self, req: Request, sid: str, did: str) -> Reply:
        found = next((d for d in self.deploys.get(sid, []) if d["id"] == did), None)
        return Reply.json(found) if found else Reply.json({"id": "not_found", "message": "deploy not found"}, 404)

    def create_deploy(self, req: Request, sid: str) -> Reply:
        if sid not in self.services:
            return self._missing(sid)
        if self.deploy_conflict:
            return Reply.json({"id": "conflict", "message": "a deploy is already in progress"}, 409)
        data = req.json() or {}
        deploy = self.add_deploy(self.new_deploy_status, trigger="api", commit_id=data.get("commitId"),
                                 created_at=datetime.now(timezone.utc), service_id=sid)
        return Reply.json(deploy, 201)

    def rollback(self, req: Request, sid: str) -> Reply:
        if sid not in self.services:
            return self._missing(sid)
        target = next((d for d in self.deploys[sid] if d["id"] == (req.json() or {}).get("deployId")), None)
        if target is None:
            return Reply.json({"id": "bad_request", "message": "deployId not found"}, 400)
        deploy = self.add_deploy(self.new_deploy_status, trigger="rollback", commit_id=target["commit"]["id"],
                                 message=target["commit"]["message"], created_at=datetime.now(timezone.utc),
                                 service_id=sid)
        return Reply.json(deploy, 201)

    # -- env vars ------------------------------------------------------------------------------------------------
    def list_env(self, req: Request, sid: str) -> Reply:
        if sid not in self.services:
            return self._missing(sid)
        items = [{"key": k, "value": v} for k, v in self.env[sid].items()]
        return self._cursor_page(req, items, "envVar", lambda e: "cur-" + e["key"])

    def replace_env(self, req: Request, sid: str) -> Reply:
        """The dangerous collection PUT: every variable not in the body is removed (as on Render)."""
        if sid not in self.services:
            return self._missing(sid)
        self.env[sid] = {item["key"]: item.get("value", "") for item in (req.json() or [])}
        return Reply.json([{"envVar": {"key": k, "value": v}, "cursor": "cur-" + k} for k, v in self.env[sid].items()])

    def get_env(self, req: Request, sid: str, key: str) -> Reply:
        if sid not in self.services or key not in self.env[sid]:
            return Reply.json({"id": "not_found", "message": "env var not found"}, 404)
        return Reply.json({"key": key, "value": self.env[sid][key]})

    def put_env(self, req: Request, sid: str, key: str) -> Reply:
        if sid not in self.services:
            return self._missing(sid)
        data = req.json() or {}
        value = secrets.token_urlsafe(24) if data.get("generateValue") else data.get("value")
        if value is None:
            return Reply.json({"id": "bad_request", "message": "value or generateValue required"}, 400)
        self.env[sid][key] = str(value)
        return Reply.json({"key": key, "value": str(value)})

    def delete_env(self, req: Request, sid: str, key: str) -> Reply:
        if sid not in self.services or key not in self.env[sid]:
            return Reply.json({"id": "not_found", "message": "env var not found"}, 404)
        del self.env[sid][key]
        return Reply.empty(204)

    # -- logs ----------------------------------------------------------------------------------------------------
    def list_logs(self, req: Request) -> Reply:
        owner = req.arg("ownerId")
        if not owner:
            return Reply.json({"id": "bad_request", "message": "ownerId is required"}, 400)
        resources = set(req.query.get("resource", []))
        owned = {sid for sid, s in self.services.items() if s["ownerId"] == owner}
        entries = [e for e in self.logs if next(lbl["value"] for lbl in e["labels"] if lbl["name"] == "resource")
                   in (resources or owned) & owned]
        if req.arg("level"):
            entries = [e for e in entries if {"name": "level", "value": req.arg("level")} in e["labels"]]
        entries.sort(key=lambda e: e["timestamp"], reverse=req.arg("direction", "backward") == "backward")
        limit = max(1, min(int(req.arg("limit", "20") or 20), 100))
        now = iso(micro=True)
        return Reply.json({"hasMore": len(entries) > limit, "nextStartTime": now, "nextEndTime": now,
                           "logs": entries[:limit]})

