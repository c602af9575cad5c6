"""Fake Cloudflare IP Access Rules under /cloudflare/client/v4, per the contract's section 5.

State: zone_id, rules (list), page_cap. Envelope {success, errors, messages, result[, result_info]}.
A wrong token answers 403 with error code 10000 "Authentication error" (Cloudflare's usual answer).
"""
from __future__ import annotations

import ipaddress
import math
import secrets
from typing import Any

from .server import Reply, Request, Router, bearer, canned, iso

MODES = ("block", "challenge", "whitelist", "js_challenge", "managed_challenge")


def _fail(code: int, message: str, status: int = 400) -> Reply:
    return Reply.json({"success": False, "errors": [{"code": code, "message": message}], "messages": [],
                       "result": None}, status)


def _ok(result: Any, **extra: Any) -> Reply:
    return Reply.json({"success": True, "errors": [], "messages": [], "result": result, **extra})


class FakeCloudflare:
    prefix = "/cloudflare/client/v4"

    def __init__(self, api: Any):
        self.api = api
        self.token = secrets.token_urlsafe(30)
        self.zone_id = "023e105f4ecef8ad9ca31a8372d0c353"
        self.rules: list[dict[str, Any]] = []
        self.page_cap = 5
        r = self.router = Router()
        base = r"/zones/(?P<zone>[^/]+)/firewall/access_rules/rules"
        r.add("GET", base, self.list_rules)
        r.add("POST", base, self.create_rule)
        r.add("PATCH", base + r"/(?P<rid>[^/]+)", self.update_rule)
        r.add("DELETE", base + r"/(?P<rid>[^/]+)", self.delete_rule)

    def add_rule(self, value: str, *, target: str | None = None, mode: str = "block", notes: str = "") -> dict[str, Any]:
        if target is None:
            target = "ip" if ipaddress.ip_address(value).version == 4 else "ip6"
        rule = canned("cloudflare_rule", zone=self.zone_id)
        rule.update(id=secrets.token_hex(16), mode=mode, notes=notes, created_on=iso(), modified_on=iso(),
                    configuration={"target": target, "value": value})
        self.rules.append(rule)
        return rule

    def handle(self, rec: Request) -> Reply:
        if bearer(rec) != self.token:
            return _fail(10000, "Authentication error", 403)
        return self.router.dispatch(rec, lambda r: _fail(7003, "Could not route to " + r.sub, 404))

    def _zone(self, zone: str) -> Reply | None:
        return None if zone == self.zone_id else _fail(7003, "Could not route to /zones/" + zone, 404)

    def list_rules(self, req: Request, zone: str) -> Reply:
        if (bad := self._zone(zone)) is not None:
            return bad
        found = self.rules
        for param, get in (("configuration.target", lambda r: r["configuration"]["target"]),
                           ("configuration.value", lambda r: r["configuration"]["value"]),
                           ("mode", lambda r: r["mode"])):
            if req.arg(param):
                found = [r for r in found if get(r) == req.arg(param)]
        per_page = max(1, min(int(req.arg("per_page", "20") or 20), self.page_cap))
        page = max(1, int(req.arg("page", "1") or 1))
        info = {"page": page, "per_page": per_page, "count": len(found[(page - 1) * per_page: page * per_page]),
                "total_count": len(found), "total_pages": max(1, math.ceil(len(found) / per_page))}
        return _ok(found[(page - 1) * per_page: page * per_page], result_info=info)

    def create_rule(self, req: Request, zone: str) -> Reply:
        if (bad := self._zone(zone)) is not None:
            return bad
        data = req.json() or {}
        config = data.get("configuration") or {}
        target, value, mode = config.get("target"), str(config.get("value", "")), data.get("mode")
        if mode not in MODES:
            return _fail(10001, "firewallaccessrules.api.validation_error:mode")
        try:
            if target == "ip" and ipaddress.ip_address(value).version != 4:
                raise ValueError
            if target == "ip6" and ipaddress.ip_address(value).version != 6:
                raise ValueError
            if target == "ip_range":
                ipaddress.ip_network(value)
        except ValueError:
            return _fail(10014, f"firewallaccessrules.api.validation_error:invalid {target} {value!r}")
        if target not in ("ip", "ip6", "ip_range", "asn", "country"):
            return _fail(10001, "firewallaccessrules.api.validation_error:target")
        if any(r["configuration"] == {"target": target, "value": value} for r in self.rules):
            return _fail(10009, "firewallaccessrules.api.duplicate_of_existing")
        return _ok(self.add_rule(value, target=target, mode=mode, notes=data.get("notes", "")))

    def update_rule(self, req: Request, zone: str, rid: str) -> Reply:
        rule = next((r for r in self.rules if r["id"] == rid), None)
        if rule is None or zone != self.zone_id:
            return _fail(10001, "firewallaccessrules.api.not_found", 404)
        data = req.json() or {}
        rule.update({k: data[k] for k in ("mode", "notes") if k in data}, modified_on=iso())
        return _ok(rule)

    def delete_rule(self, req: Request, zone: str, rid: str) -> Reply:
        rule = next((r for r in self.rules if r["id"] == rid), None)
        if rule is None or zone != self.zone_id:
            return _fail(10001, "firewallaccessrules.api.not_found", 404)
        self.rules.remove(rule)
        return _ok({"id": rid})
