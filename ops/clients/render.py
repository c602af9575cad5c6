"""Effect: Render public API client (service state, suspend/resume/restart, deploys, maintenance, env vars, logs).

Contract: ../shared/reference/api-contracts.md section 2. Lists are bare arrays of `{"cursor", "<thing>"}` wrappers,
paged with `limit` + the last item's `cursor`. Suspend/resume/restart answer 202 with no body and act
asynchronously: poll with `wait_suspended`. `suspended` is the string "suspended" or "not_suspended".

Environment variables are only ever set one at a time (`PUT /services/{id}/env-vars/{key}`): the collection PUT
replaces *all* of them, so this client does not offer it.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from ..errors import ConfigError
from .base import Client


class Render(Client):
    service = "Render"
    token_var = "RENDER_API_KEY"

    def __init__(self, base_url: str, *, service_id: str | None = None, poll_interval: float = 2.0,
                 poll_timeout: float = 180.0, page_size: int = 100, **kwargs: Any):
        super().__init__(base_url, **kwargs)
        self.service_id = service_id or None
        self.page_size = max(1, min(100, int(page_size)))  # Render's maximum `limit` is 100
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout

    @classmethod
    def from_settings(cls, settings: Any, *, dry_run: bool = False, session: requests.Session | None = None) -> "Render":
        return cls(settings.require("render.api_url"), token=settings.require_env("RENDER_API_KEY"),
                   service_id=settings.get("render.service_id"),
                   poll_interval=float(settings.get("render.poll_interval", 2.0)),
                   poll_timeout=float(settings.get("render.poll_timeout", 180.0)),
                   page_size=int(settings.get("render.page_size", 100)),
                   dry_run=dry_run, session=session, **cls.options(settings, "render"))

    def _sid(self, service_id: str | None) -> str:
        sid = service_id or self.service_id
        if not sid:
            raise ConfigError("setting ops.render.service_id is not set",
                              hint="add the Render service id (srv-...) under ops: render: service_id")
        return quote(sid, safe="")

    def hint_for(self, status: int, detail: str, method: str, url: str) -> str:
        if status == 404 and "/services/" in url:
            return "check ops.render.service_id (srv-...) and that RENDER_API_KEY belongs to the service's workspace"
        if status == 409:
            return "another deploy is in progress; wait for it to finish"
        return super().hint_for(status, detail, method, url)

    def _cursor_list(self, path: str, key: str, params: dict[str, Any] | None = None,
                     limit: int | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            size = self.page_size if limit is None else min(self.page_size, limit - len(out))
            query = {**(params or {}), "limit": size, **({"cursor": cursor} if cursor else {})}
            page = self.get_json(path, {k: v for k, v in query.items() if v is not None}) or []
            out.extend(item[key] for item in page)
            if len(page) < size or (limit is not None and len(out) >= limit):
                return out
            cursor = page[-1].get("cursor")
            if not cursor:
                return out

    # -- service state ---------------------------------------------------------------------------------------------
    def get_service(self, service_id: str | None = None) -> dict[str, Any]:
        return self.get_json(f"/services/{self._sid(service_id)}")

    def services(self, *, name: str | None = None) -> list[dict[str, Any]]:
        return self._cursor_list("/services", "service", {"name": name})

    def suspend(self, service_id: str | None = None) -> None:
        self.request("POST", f"/services/{self._sid(service_id)}/suspend")

    def resume(self, service_id: str | None = None) -> None:
        self.request("POST", f"/services/{self._sid(service_id)}/resume")

    def restart(self, service_id: str | None = None) -> None:
        self.request("POST", f"/services/{self._sid(service_id)}/restart")

    def wait_suspended(self, suspended: bool = True, *, service_id: str | None = None,
                       timeout: float | None = None, interval: float | None = None) -> dict[str, Any]:
        """Poll the service until `suspended` reads "suspended" (or "not_suspended"); return the service."""
        want = "suspended" if suspended else "not_suspended"
        return self.wait_until(lambda: self.get_service(service_id), lambda s: s.get("suspended") == want,
                               timeout=self.poll_timeout if timeout is None else timeout,
                               interval=self.poll_interval if interval is None else interval,
                               what=f"the service reading suspended={want!r}",
                               hint="look at the service in the Render dashboard")

    def set_maintenance(self, enabled: bool, *, uri: str = "", service_id: str | None = None) -> dict[str, Any]:
        """Render's own maintenance page on or off (PATCH serviceDetails.maintenanceMode); returns the service."""
        body = {"serviceDetails": {"maintenanceMode": {"enabled": bool(enabled), "uri": uri}}}
        return self.json_of(self.request("PATCH", f"/services/{self._sid(service_id)}", json=body))

    def wait_maintenance(self, enabled: bool, *, service_id: str | None = None, timeout: float | None = None,
                         interval: float | None = None) -> dict[str, Any]:
        return self.wait_until(lambda: self.get_service(service_id),
                               lambda s: maintenance_enabled(s) == bool(enabled),
                               timeout=self.poll_timeout if timeout is None else timeout,
                               interval=self.poll_interval if interval is None else interval,
                               what=f"maintenance mode reading enabled={bool(enabled)}")

    # -- deploys ---------------------------------------------------------------------------------------------------
    def deploys(self, *, limit: int = 20, status: str | None = None,
                service_id: str | None = None) -> list[dict[str, Any]]:
        """The newest deploys (unwrapped), newest first; `status` is a comma list (live,build_failed)."""
        return self._cursor_list(f"/services/{self._sid(service_id)}/deploys", "deploy", {"status": status}, limit)

    def deploy(self, deploy_id: str, *, service_id: str | None = None) -> dict[str, Any]:
        return self.get_json(f"/services/{self._sid(service_id)}/deploys/{quote(deploy_id, safe='')}")

    def trigger_deploy(self, *, commit_id: str | None = None, clear_cache: bool = False,
                       service_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"clearCache": "clear" if clear_cache else "do_not_clear"}
        if commit_id:
            body["commitId"] = commit_id
        return self.json_of(self.request("POST", f"/services/{self._sid(service_id)}/deploys", json=body))

    def rollback(self, deploy_id: str, *, service_id: str | None = None) -> dict[str, Any]:
        """Roll back to an earlier deploy (POST /rollback {"deployId"}; contract marks the path UNVERIFIED)."""
        return self.json_of(self.request("POST", f"/services/{self._sid(service_id)}/rollback",
                                         json={"deployId": deploy_id}))

    # -- env vars --------------------------------------------------------------------------------------------------
    def env_vars(self, *, service_id: str | None = None) -> dict[str, str]:
        items = self._cursor_list(f"/services/{self._sid(service_id)}/env-vars", "envVar")
        return {item["key"]: item.get("value", "") for item in items}

    def set_env_var(self, key: str, value: str, *, service_id: str | None = None) -> dict[str, Any]:
        """Set ONE variable (never the replace-all collection PUT). Needs a deploy/restart to reach the app."""
        path = f"/services/{self._sid(service_id)}/env-vars/{quote(key, safe='')}"
        return self.json_of(self.request("PUT", path, json={"value": value}))

    def delete_env_var(self, key: str, *, service_id: str | None = None) -> None:
        self.request("DELETE", f"/services/{self._sid(service_id)}/env-vars/{quote(key, safe='')}")

    # -- logs ------------------------------------------------------------------------------------------------------
    def logs(self, *, limit: int = 50, owner_id: str | None = None, service_id: str | None = None,
             level: str | None = None) -> list[dict[str, Any]]:
        """Recent log lines, newest first: `[{"id", "timestamp", "message", "labels": [{"name", "value"}]}]`.

        Not in the contract: shape from render-oss/cli's generated client (GET /logs?ownerId&resource&direction).
        The owner id is read from the service when not given.
        """
        sid = self._sid(service_id)
        owner = owner_id or self.get_service(service_id).get("ownerId")
        params = {"ownerId": owner, "resource": sid, "direction": "backward", "limit": min(100, limit),
                  "level": level}
        body = self.get_json("/logs", {k: v for k, v in params.items() if v is not None}) or {}
        return list(body.get("logs", []))[:limit]


def maintenance_enabled(service: dict[str, Any]) -> bool:
    """Pure: is Render's maintenance page on for this service object?"""
    mode = (service.get("serviceDetails") or {}).get("maintenanceMode") or {}
    return bool(mode.get("enabled"))


def latest_deploy(deploys: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pure: the newest deploy by createdAt (lists are newest first already; this does not rely on it)."""
    return max(deploys, key=lambda d: d.get("createdAt") or "", default=None)


def last_live(deploys: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pure: the newest deploy that is (or was) live: the rollback target."""
    live = [d for d in deploys if d.get("status") in ("live", "deactivated")]
    return max(live, key=lambda d: d.get("createdAt") or "", default=None)
