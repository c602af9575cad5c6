"""Effect: Cloudflare IP Access Rules client (block and unblock an address for a zone).

Contract: ../shared/reference/api-contracts.md section 5. Every answer is the envelope `{"success", "errors",
"messages", "result"}`. IPv4 goes in target `ip`, IPv6 in `ip6`, networks in `ip_range`. A rule that already
exists (code 10009) is treated as success: the existing rule is looked up and returned.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from ..errors import OpsError
from . import rules
from .base import APIError, Client

DUPLICATE = 10009


class Cloudflare(Client):
    service = "Cloudflare"
    token_var = "CLOUDFLARE_API_TOKEN"

    def __init__(self, base_url: str, *, zone_id: str, **kwargs: Any):
        super().__init__(base_url, **kwargs)
        self.zone_id = zone_id

    @classmethod
    def from_settings(cls, settings: Any, *, dry_run: bool = False,
                      session: requests.Session | None = None) -> "Cloudflare":
        return cls(settings.require("cloudflare.api_url"), token=settings.require_env("CLOUDFLARE_API_TOKEN"),
                   zone_id=settings.require("cloudflare.zone_id"), dry_run=dry_run, session=session,
                   **cls.options(settings, "cloudflare"))

    @property
    def rules_path(self) -> str:
        return f"/zones/{quote(self.zone_id, safe='')}/firewall/access_rules/rules"

    def error_detail(self, body: Any) -> tuple[str, str | int | None]:
        if isinstance(body, dict) and body.get("errors"):
            first = body["errors"][0]
            return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in body["errors"]), first.get("code")
        return super().error_detail(body)

    def hint_for(self, status: int, detail: str, method: str, url: str) -> str:
        if status in (401, 403) or "10000" in detail:
            return "check CLOUDFLARE_API_TOKEN: it must be valid and allow Firewall Services edit on this zone"
        if status == 404:
            return "check ops.cloudflare.zone_id"
        return super().hint_for(status, detail, method, url)

    def _result(self, response: requests.Response) -> Any:
        body = self.json_of(response) or {}
        if not body.get("success", False):
            raise self.status_error(response, response.request.method or "", response.url)
        return body

    def access_rules(self, *, ip: str | None = None, mode: str | None = None) -> list[dict[str, Any]]:
        """Rules of the zone, optionally those for one address/network and mode (all pages)."""
        params: dict[str, Any] = {"per_page": 50, **({"mode": mode} if mode else {})}
        if ip:
            target, value = _target(ip)
            params.update({"configuration.target": target, "configuration.value": value})
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._result(self.request("GET", self.rules_path, params={**params, "page": page}))
            found.extend(body.get("result") or [])
            info = body.get("result_info") or {}
            if page >= int(info.get("total_pages") or 1) or not body.get("result"):
                return found
            page += 1

    def block_ip(self, ip: str, *, notes: str = "", mode: str = "block") -> dict[str, Any]:
        """Create a zone rule for `ip` (idempotent: an existing identical rule is returned)."""
        target, value = _target(ip)
        payload = {"mode": mode, "configuration": {"target": target, "value": value}, "notes": notes}
        try:
            return self._result(self.request("POST", self.rules_path, json=payload))["result"]
        except APIError as exc:
            if exc.code != DUPLICATE:
                raise
        existing = [r for r in self.access_rules(ip=ip) if r.get("mode") == mode] or self.access_rules(ip=ip)
        if not existing:
            raise OpsError(f"Cloudflare says a rule for {value} exists but none is listed", hint="check the dashboard")
        return existing[0]

    def unblock_ip(self, ip: str, *, mode: str = "block") -> list[str]:
        """Delete every `mode` rule for `ip`; returns the deleted rule ids (empty when there was none)."""
        deleted = []
        for rule in self.access_rules(ip=ip, mode=mode):
            self.delete_rule(rule["id"])
            deleted.append(rule["id"])
        return deleted

    def delete_rule(self, rule_id: str) -> None:
        self._result(self.request("DELETE", f"{self.rules_path}/{quote(rule_id, safe='')}"))


def _target(ip: str) -> tuple[str, str]:
    try:
        return rules.ip_target(ip)
    except ValueError:
        raise OpsError(f"{ip!r} is not an IP address or network",
                       hint="give an IPv4/IPv6 address (198.51.100.4, 2001:db8::1) or a network (/24, /64)") from None
