"""Fake GitHub: api (under /github), uploads and blob-storage origins, per the contract's section 1.

State (set it directly or with the helpers):
  releases (list of release dicts), blobs {asset_id: bytes}, tags (set), workflow_runs {file: [run]},
  alerts, dependabot_enabled, secrets {name: {...}}, environments {env: {name: {...}}}, collaborators,
  deploy_keys, issues, pulls, comments {number: [comment]}, issues_enabled
  private (True: no token -> 404 on the repo), page_cap (per_page is capped at this, real: 100),
  rate_remaining / rate_reset (a 403 primary rate limit once remaining reaches 0), redirect_downloads (False:
  the API streams asset bytes itself), honour_range (False: Range ignored, 200 with everything), blob_ttl.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import math
import re
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from nacl import encoding, public

from .server import Reply, Request, Router, bearer, canned, iso, link_header, with_query

DOCS = "https://docs.github.com/rest"
BLOB_ERROR = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>InvalidAuthenticationInfo</Code><Message>Only one '
              b"auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or "
              b"the Authorization header should be specified</Message></Error>")
ROLE_FLAGS = {
    "read": {"pull": True, "triage": False, "push": False, "maintain": False, "admin": False},
    "triage": {"pull": True, "triage": True, "push": False, "maintain": False, "admin": False},
    "write": {"pull": True, "triage": True, "push": True, "maintain": False, "admin": False},
    "maintain": {"pull": True, "triage": True, "push": True, "maintain": True, "admin": False},
    "admin": {"pull": True, "triage": True, "push": True, "maintain": True, "admin": True},
}


def _error(message: str, status: int, **extra: Any) -> Reply:
    return Reply.json({"message": message, "documentation_url": DOCS, "status": str(status), **extra}, status)


class FakeGitHub:
    prefix = "/github"

    def __init__(self, api: Any):
        self.api = api
        self.owner, self.name, self.repo_id = "acme", "lottery-backend", 515435940
        self.token = "ghp_" + secrets.token_hex(18)
        self.private = True
        self.page_cap = 5
        self.rate_limit = 5000
        self.rate_remaining = 5000
        self.rate_reset = int(time.time()) + 3600
        self.redirect_downloads = True
        self.honour_range = True
        self.blob_ttl = 300
        self.releases: list[dict[str, Any]] = []
        self.blobs: dict[int, bytes] = {}
        self.tags: set[str] = set()
        self.workflow_runs: dict[str, list[dict[str, Any]]] = {}
        self.alerts: list[dict[str, Any]] = []
        self.dependabot_enabled = True
        self.secrets: dict[str, dict[str, Any]] = {}
        self.environments: dict[str, dict[str, dict[str, Any]]] = {}
        self.collaborators: list[dict[str, Any]] = []
        self.deploy_keys: list[dict[str, Any]] = []
        self.issues: list[dict[str, Any]] = []
        self.pulls: list[dict[str, Any]] = []
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.issues_enabled = True
        self._ids = itertools.count(72286832)
        self._numbers = itertools.count(1)
        self._keys: dict[str | None, tuple[str, public.PrivateKey]] = {}
        self._sign_key = secrets.token_bytes(16)
        self.router = self._routes()
        self.uploads_router = Router()
        self.uploads_router.add("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/releases/(?P<rid>\d+)/assets", self.upload)

    # -- addresses -----------------------------------------------------------------------------------------------
    @property
    def repo(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def api_url(self) -> str:
        return self.api.url + self.prefix

    def _subs(self, **extra: Any) -> dict[str, Any]:
        return {"api": self.api_url, "uploads": self.api.uploads_url, "repo": self.repo, **extra}

    # -- state helpers -------------------------------------------------------------------------------------------
    def add_release(self, tag: str, *, created_at: datetime | str | None = None, draft: bool = False,
                    prerelease: bool = False, name: str | None = None, body: str | None = None,
                    assets: dict[str, bytes] | None = None, digest: bool | str | None = True) -> dict[str, Any]:
        rid = next(self._ids)
        created = iso(created_at or _time_from_tag(tag) or datetime.now(timezone.utc))
        release = canned("github_release", **self._subs(id=rid, tag=quote(tag)))
        release.update(id=rid, tag_name=tag, name=name if name is not None else tag, body=body, draft=draft,
                       prerelease=prerelease, created_at=created, published_at=None if draft else created)
        self.releases.append(release)
        if not draft:
            self.tags.add(tag)
        for asset_name, data in (assets or {}).items():
            self.add_asset(release, asset_name, data, digest=digest)
        return release

    def add_backup(self, tag: str, data: bytes, *, created_at: datetime | str | None = None,
                   digest: bool | str | None = True, name: str | None = None, draft: bool = False) -> dict[str, Any]:
        """A nightly backup release: tag backup-YYYYMMDD_HHMMSS, one asset backup_YYYYMMDD_HHMMSS.sql.gz.

        digest: True -> "sha256:<hex of data>", None/False -> null, "omit" -> no key, any other string as given.
        """
        asset_name = name or (("backup_" + tag[len("backup-"):]) if tag.startswith("backup-") else tag) + ".sql.gz"
        return self.add_release(tag, created_at=created_at, draft=draft, assets={asset_name: data}, digest=digest,
                                body="Automated database backup")

    def add_asset(self, release: dict[str, Any], name: str, data: bytes, *, digest: bool | str | None = True,
                  content_type: str = "application/gzip", label: str = "", state: str = "uploaded") -> dict[str, Any]:
        aid = next(self._ids)
        asset = canned("github_asset", **self._subs(id=aid, tag=quote(release["tag_name"]), name=quote(name)))
        now = iso()
        asset.update(id=aid, name=name, label=label, size=len(data), content_type=content_type, state=state,
                     created_at=release["created_at"] or now, updated_at=release["created_at"] or now)
        if digest is True:
            asset["digest"] = "sha256:" + hashlib.sha256(data).hexdigest()
        elif digest == "omit":
            del asset["digest"]
        elif isinstance(digest, str):
            asset["digest"] = digest
        else:
            asset["digest"] = None
        self.blobs[aid] = data
        release["assets"].append(asset)
        return asset

    def add_run(self, workflow: str, *, conclusion: str | None = "success", status: str = "completed",
                created_at: datetime | str | None = None, branch: str = "main", event: str = "schedule",
                name: str | None = None) -> dict[str, Any]:
        rid = next(self._ids)
        run = canned("github_workflow_run", **self._subs(id=rid, workflow=workflow))
        created = iso(created_at)
        runs = self.workflow_runs.setdefault(workflow, [])
        run.update(id=rid, name=name or workflow.rsplit(".", 1)[0], display_title=name or workflow,
                   run_number=len(runs) + 1, event=event, head_branch=branch, status=status,
                   conclusion=conclusion if status == "completed" else None, created_at=created,
                   updated_at=created, run_started_at=created)
        runs.append(run)
        return run

    def add_alert(self, severity: str = "high", *, state: str = "open", package: str = "lodash",
                  ecosystem: str = "npm", summary: str | None = None,
                  created_at: datetime | str | None = None) -> dict[str, Any]:
        number = len(self.alerts) + 1
        alert = canned("github_dependabot_alert", **self._subs(number=number))
        alert.update(number=number, state=state, created_at=iso(created_at), updated_at=iso(created_at))
        alert["dependency"]["package"].update(ecosystem=ecosystem, name=package)
        alert["security_vulnerability"]["package"].update(ecosystem=ecosystem, name=package)
        alert["security_advisory"].update(severity=severity, summary=summary or f"Vulnerability in {package}")
        alert["security_vulnerability"]["severity"] = severity
        self.alerts.append(alert)
        return alert

    def add_secret(self, name: str, *, updated_at: datetime | str | None = None, environment: str | None = None,
                   value: str = "") -> dict[str, Any]:
        store = self.secrets if environment is None else self.environments.setdefault(environment, {})
        when = iso(updated_at)
        store[name] = {"name": name, "created_at": when, "updated_at": when, "value": value}
        return store[name]

    def add_environment(self, name: str) -> None:
        self.environments.setdefault(name, {})

    def secret_value(self, name: str, environment: str | None = None) -> str:
        store = self.secrets if environment is None else self.environments[environment]
        return store[name]["value"]

    def add_collaborator(self, login: str, role: str = "write") -> dict[str, Any]:
        user = canned("github_collaborator", login=login)
        user.update(login=login, id=next(self._ids), permissions=dict(ROLE_FLAGS.get(role, ROLE_FLAGS["read"])),
                    role_name=role)
        self.collaborators.append(user)
        return user

    def add_deploy_key(self, title: str, *, read_only: bool = True,
                       created_at: datetime | str | None = None) -> dict[str, Any]:
        key = {"id": next(self._ids), "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF" + secrets.token_hex(8),
               "url": f"{self.api_url}/repos/{self.repo}/keys/1", "title": title, "verified": True,
               "created_at": iso(created_at), "read_only": read_only, "added_by": "owner", "last_used": None}
        self.deploy_keys.append(key)
        return key

    def add_issue(self, title: str, *, body: str = "", labels: tuple[str, ...] | list[str] = (),
                  state: str = "open") -> dict[str, Any]:
        number = next(self._numbers)
        issue = canned("github_issue", **self._subs(number=number))
        issue.update(id=next(self._ids), number=number, title=title, body=body, state=state,
                     labels=[_label(n) for n in labels], created_at=iso(), updated_at=iso())
        self.issues.append(issue)
        return issue

    def add_pull(self, title: str, *, user: str = "dependabot[bot]", created_at: datetime | str | None = None,
                 labels: tuple[str, ...] | list[str] = ("dependencies",), state: str = "open") -> dict[str, Any]:
        number = next(self._numbers)
        pull = {"number": number, "title": title, "state": state, "user": {"login": user, "type": "Bot"},
                "created_at": iso(created_at), "updated_at": iso(created_at),
                "html_url": f"https://github.com/{self.repo}/pull/{number}",
                "url": f"{self.api_url}/repos/{self.repo}/pulls/{number}", "labels": [_label(n) for n in labels]}
        self.pulls.append(pull)
        return pull

    def release_by_tag(self, tag: str) -> dict[str, Any] | None:
        return next((r for r in self.releases if r["tag_name"] == tag), None)

    # -- request entry points ------------------------------------------------------------------------------------
    def headers(self, rec: Request) -> dict[str, str]:
        return {"x-ratelimit-limit": str(self.rate_limit), "x-ratelimit-remaining": str(self.rate_remaining),
                "x-ratelimit-reset": str(self.rate_reset), "x-ratelimit-used": str(self.rate_limit - self.rate_remaining),
                "x-ratelimit-resource": "core", "x-github-api-version-selected": "2022-11-28"}

    def handle(self, rec: Request) -> Reply:
        if not rec.headers.get("user-agent"):
            return _error("Request forbidden by administrative rules. Please make sure your request has a User-Agent "
                          "header", 403)
        token = bearer(rec)
        if token is not None and token != self.token:
            return self._with_rate(rec, _error("Bad credentials", 401))
        rec.authenticated = token == self.token  # type: ignore[attr-defined]
        sub = rec.sub
        match = re.match(r"/repositories/(\d+)(/.*)?$", sub)
        if match:
            if int(match[1]) != self.repo_id:
                return self._with_rate(rec, _error("Not Found", 404))
            sub = f"/repos/{self.repo}{match[2] or ''}"
        if sub == "/rate_limit":
            core = {"limit": self.rate_limit, "remaining": self.rate_remaining, "reset": self.rate_reset,
                    "used": self.rate_limit - self.rate_remaining, "resource": "core"}
            return self._with_rate(rec, Reply.json({"resources": {"core": core}, "rate": core}))
        if self.rate_remaining <= 0:
            return self._with_rate(rec, _error(f"API rate limit exceeded for user ID 41898282.", 403))
        self.rate_remaining -= 1
        match = re.match(r"/repos/([^/]+)/([^/]+)(/.*)?$", sub)
        if match:
            if (match[1], match[2]) != (self.owner, self.name):
                return self._with_rate(rec, _error("Not Found", 404))
            if not rec.authenticated:  # type: ignore[attr-defined]
                if rec.method not in ("GET", "HEAD"):
                    return self._with_rate(rec, _error("Requires authentication", 401))
                if self.private:
                    return self._with_rate(rec, _error("Not Found", 404))
            rec.sub = match[3] or "/"
            return self._with_rate(rec, self.router.dispatch(rec, lambda r: _error("Not Found", 404)))
        return self._with_rate(rec, _error("Not Found", 404))

    def _with_rate(self, rec: Request, reply: Reply) -> Reply:
        reply.headers = {**self.headers(rec), **reply.headers}
        return reply

    def handle_upload(self, rec: Request) -> Reply:
        token = bearer(rec)
        if token != self.token:
            return _error("Bad credentials" if token else "Requires authentication", 401)
        rec.sub = rec.path
        return self.uploads_router.dispatch(rec, lambda r: _error("Not Found", 404))

    def handle_blob(self, rec: Request) -> Reply:
        """Signed-URL storage: 400 if any Authorization arrives, 403 on a missing/bad/expired signature, Range."""
        if "authorization" in rec.headers:
            return Reply(400, BLOB_ERROR, {"Content-Type": "application/xml"})
        match = re.match(r"/github-production-release-asset/(\d+)/(\d+)$", rec.path)
        if not match or int(match[2]) not in self.blobs:
            return Reply(404, b"<Error><Code>BlobNotFound</Code></Error>", {"Content-Type": "application/xml"})
        aid, expires = int(match[2]), rec.arg("se", "0") or "0"
        if not hmac.compare_digest(rec.arg("sig", "") or "", self._sign(aid, expires)) or int(expires) < time.time():
            return Reply(403, b"<Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the "
                              b"request.</Message></Error>", {"Content-Type": "application/xml"})
        return self._bytes_reply(rec, aid)

    # -- routes --------------------------------------------------------------------------------------------------
    def _routes(self) -> Router:
        r = Router()
        r.add("GET", r"/releases", self.list_releases)
        r.add("POST", r"/releases", self.create_release)
        r.add("GET", r"/releases/latest", self.latest_release)
        r.add("GET", r"/releases/tags/(?P<tag>.+)", self.get_release_by_tag)
        r.add("GET", r"/releases/assets/(?P<aid>\d+)", self.get_asset)
        r.add("PATCH", r"/releases/assets/(?P<aid>\d+)", self.update_asset)
        r.add("DELETE", r"/releases/assets/(?P<aid>\d+)", self.delete_asset)
        r.add("GET", r"/releases/(?P<rid>\d+)", self.get_release)
        r.add("DELETE", r"/releases/(?P<rid>\d+)", self.delete_release)
        r.add("GET", r"/releases/(?P<rid>\d+)/assets", self.list_assets)
        r.add("GET", r"/git/refs/tags/(?P<tag>.+)", self.get_tag_ref)
        r.add("DELETE", r"/git/refs/(?P<ref>.+)", self.delete_ref)
        r.add("GET", r"/actions/workflows/(?P<wf>[^/]+)/runs", self.list_runs)
        r.add("GET", r"/dependabot/alerts", self.list_alerts)
        r.add("GET", r"/actions/secrets/public-key", lambda req: self.public_key(req, None))
        r.add("GET", r"/actions/secrets", lambda req: self.list_secrets(req, None))
        r.add("PUT", r"/actions/secrets/(?P<name>[^/]+)", lambda req, name: self.put_secret(req, None, name))
        r.add("DELETE", r"/actions/secrets/(?P<name>[^/]+)", lambda req, name: self.delete_secret(req, None, name))
        r.add("GET", r"/environments", self.list_environments)
        r.add("GET", r"/environments/(?P<env>[^/]+)/secrets/public-key", lambda req, env: self.public_key(req, env))
        r.add("GET", r"/environments/(?P<env>[^/]+)/secrets", lambda req, env: self.list_secrets(req, env))
        r.add("PUT", r"/environments/(?P<env>[^/]+)/secrets/(?P<name>[^/]+)", self.put_secret)
        r.add("DELETE", r"/environments/(?P<env>[^/]+)/secrets/(?P<name>[^/]+)", self.delete_secret)
        r.add("GET", r"/collaborators", self.list_collaborators)
        r.add("GET", r"/keys", lambda req: self.page(req, "/keys", self.deploy_keys))
        r.add("GET", r"/pulls", self.list_pulls)
        r.add("GET", r"/issues", self.list_issues)
        r.add("POST", r"/issues", self.create_issue)
        r.add("PATCH", r"/issues/(?P<n>\d+)", self.update_issue)
        r.add("GET", r"/issues/(?P<n>\d+)/comments", self.list_comments)
        r.add("POST", r"/issues/(?P<n>\d+)/comments", self.create_comment)
        return r

    def page(self, req: Request, rest: str, items: list[Any], *, key: str | None = None) -> Reply:
        """Page-number pagination with a Link header whose URLs use /repositories/{id}/... (as GitHub's do)."""
        per_page = max(1, min(int(req.arg("per_page", "30") or 30), 100, self.page_cap))
        page = max(1, int(req.arg("page", "1") or 1))
        last = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        base = f"{self.api_url}/repositories/{self.repo_id}{rest}"
        url = lambda n: with_query(base, req.query, per_page=per_page, page=n)  # noqa: E731
        links = []
        if page < last:
            links += [(url(page + 1), "next"), (url(last), "last")]
        if page > 1:
            links += [(url(1), "first"), (url(page - 1), "prev")]
        headers = {"Link": link_header(links)} if links else {}
        body: Any = {"total_count": len(items), key: chunk} if key else chunk
        return Reply.json(body, headers=headers)

    def _visible(self, req: Request) -> list[dict[str, Any]]:
        shown = [r for r in self.releases if not r["draft"] or req.authenticated]  # type: ignore[attr-defined]
        return sorted(shown, key=lambda r: r["created_at"], reverse=True)

    def list_releases(self, req: Request) -> Reply:
        return self.page(req, "/releases", self._visible(req))

    def latest_release(self, req: Request) -> Reply:
        found = [r for r in self._visible(req) if not r["draft"] and not r["prerelease"]]
        return Reply.json(found[0]) if found else _error("Not Found", 404)

    def get_release_by_tag(self, req: Request, tag: str) -> Reply:
        found = next((r for r in self.releases if r["tag_name"] == tag and not r["draft"]), None)
        return Reply.json(found) if found else _error("Not Found", 404)

    def get_release(self, req: Request, rid: str) -> Reply:
        found = next((r for r in self._visible(req) if r["id"] == int(rid)), None)
        return Reply.json(found) if found else _error("Not Found", 404)

    def create_release(self, req: Request) -> Reply:
        data = req.json() or {}
        tag = data.get("tag_name")
        if not tag:
            return _error("Validation Failed", 422, errors=[{"resource": "Release", "code": "missing_field",
                                                              "field": "tag_name"}])
        if any(r["tag_name"] == tag for r in self.releases):
            return _error("Validation Failed", 422, errors=[{"resource": "Release", "code": "already_exists",
                                                              "field": "tag_name"}])
        release = self.add_release(tag, created_at=datetime.now(timezone.utc), draft=bool(data.get("draft")),
                                   prerelease=bool(data.get("prerelease")), name=data.get("name"),
                                   body=data.get("body"))
        release["target_commitish"] = data.get("target_commitish", "main")
        return Reply.json(release, 201, {"Location": release["url"]})

    def delete_release(self, req: Request, rid: str) -> Reply:
        found = next((r for r in self.releases if r["id"] == int(rid)), None)
        if not found:
            return _error("Not Found", 404)
        self.releases.remove(found)
        for asset in found["assets"]:
            self.blobs.pop(asset["id"], None)
        return Reply.empty(204)  # the tag stays, as on GitHub

    def list_assets(self, req: Request, rid: str) -> Reply:
        found = next((r for r in self._visible(req) if r["id"] == int(rid)), None)
        if not found:
            return _error("Not Found", 404)
        return self.page(req, f"/releases/{rid}/assets", found["assets"])

    def _find_asset(self, aid: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        for release in self.releases:
            for asset in release["assets"]:
                if asset["id"] == aid:
                    return release, asset
        return None

    def get_asset(self, req: Request, aid: str) -> Reply:
        found = self._find_asset(int(aid))
        if not found:
            return _error("Not Found", 404)
        if "application/octet-stream" not in (req.headers.get("accept") or ""):
            return Reply.json(found[1])
        found[1]["download_count"] += 1
        if not self.redirect_downloads:
            return self._bytes_reply(req, int(aid))
        return Reply(302, b"", {"Location": self.signed_url(int(aid)), "Content-Type": "text/html;charset=utf-8"})

    def signed_url(self, aid: int) -> str:
        expires = str(int(time.time()) + self.blob_ttl)
        name = self._find_asset(aid)[1]["name"]  # type: ignore[index]
        return (f"{self.api.blob_url}/github-production-release-asset/{self.repo_id}/{aid}?sp=r&sv=2018-11-09"
                f"&se={expires}&sig={self._sign(aid, expires)}&response-content-disposition=attachment%3B%20filename"
                f"%3D{quote(name)}&response-content-type=application%2Foctet-stream")

    def _sign(self, aid: int, expires: str) -> str:
        return hmac.new(self._sign_key, f"{aid}:{expires}".encode(), hashlib.sha256).hexdigest()[:40]

    def _bytes_reply(self, req: Request, aid: int) -> Reply:
        data = self.blobs[aid]
        name = self._find_asset(aid)[1]["name"]  # type: ignore[index]
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                   "Content-Disposition": f"attachment; filename={name}", "ETag": '"0x8DC' + str(aid) + '"'}
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("range") or "")
        if not wanted or not self.honour_range:
            return Reply(200, data, headers)
        start = int(wanted[1])
        end = min(int(wanted[2]) if wanted[2] else len(data) - 1, len(data) - 1)
        if start >= len(data):
            return Reply(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
        return Reply(206, data[start:end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"})

    def update_asset(self, req: Request, aid: str) -> Reply:
        found = self._find_asset(int(aid))
        if not found:
            return _error("Not Found", 404)
        data = req.json() or {}
        found[1].update({k: data[k] for k in ("name", "label") if k in data})
        return Reply.json(found[1])

    def delete_asset(self, req: Request, aid: str) -> Reply:
        found = self._find_asset(int(aid))
        if not found:
            return _error("Not Found", 404)
        found[0]["assets"].remove(found[1])
        self.blobs.pop(int(aid), None)
        return Reply.empty(204)

    def upload(self, req: Request, o: str, r: str, rid: str) -> Reply:
        if (o, r) != (self.owner, self.name):
            return _error("Not Found", 404)
        release = next((x for x in self.releases if x["id"] == int(rid)), None)
        name = req.arg("name")
        if release is None:
            return _error("Not Found", 404)
        if not name:
            return _error("Validation Failed", 422, errors=[{"resource": "ReleaseAsset", "code": "missing_field",
                                                              "field": "name"}])
        if not req.headers.get("content-type"):
            return _error("Bad Content-Type header", 400)
        if any(a["name"] == name for a in release["assets"]):
            return _error("Validation Failed", 422, request_id="FAKE:1234",
                          errors=[{"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}])
        asset = self.add_asset(release, name, req.body, content_type=req.headers["content-type"],
                               label=req.arg("label", "") or "")
        return Reply.json(asset, 201)

    def get_tag_ref(self, req: Request, tag: str) -> Reply:
        if tag not in self.tags:
            return _error("Not Found", 404)
        return Reply.json({"ref": f"refs/tags/{tag}", "url": f"{self.api_url}/repos/{self.repo}/git/refs/tags/{tag}",
                           "object": {"sha": hashlib.sha1(tag.encode()).hexdigest(), "type": "commit"}})

    def delete_ref(self, req: Request, ref: str) -> Reply:
        tag = ref[len("tags/"):] if ref.startswith("tags/") else None
        if tag is None or tag not in self.tags:
            return _error("Reference does not exist", 422)
        self.tags.discard(tag)
        return Reply.empty(204)

    def list_runs(self, req: Request, wf: str) -> Reply:
        if wf not in self.workflow_runs:
            return _error("Not Found", 404)
        runs = sorted(self.workflow_runs[wf], key=lambda x: x["created_at"], reverse=True)
        for field, key in (("branch", "head_branch"), ("event", "event")):
            if req.arg(field):
                runs = [x for x in runs if x[key] == req.arg(field)]
        if req.arg("status"):
            runs = [x for x in runs if req.arg("status") in (x["status"], x["conclusion"])]
        return self.page(req, f"/actions/workflows/{wf}/runs", runs, key="workflow_runs")

    def list_alerts(self, req: Request) -> Reply:
        if not self.dependabot_enabled:
            return _error("Dependabot alerts are disabled for this repository.", 403)
        if req.arg("page"):
            return _error("Pagination using the `page` parameter is not supported.", 400)
        alerts = self.alerts
        for field, get in (("state", lambda a: a["state"]), ("severity", lambda a: a["security_advisory"]["severity"]),
                           ("ecosystem", lambda a: a["dependency"]["package"]["ecosystem"])):
            if req.arg(field):
                wanted = set(req.arg(field).split(","))  # type: ignore[union-attr]
                alerts = [a for a in alerts if get(a) in wanted]
        per_page = max(1, min(int(req.arg("per_page", "30") or 30), 100, self.page_cap))
        start = _uncursor(req.arg("after")) if req.arg("after") else 0
        chunk = alerts[start:start + per_page]
        headers = {}
        if start + per_page < len(alerts):
            base = f"{self.api_url}/repositories/{self.repo_id}/dependabot/alerts"
            nxt = with_query(base, req.query, per_page=per_page, after=_cursor(start + per_page), before=None)
            headers["Link"] = link_header([(nxt, "next")])
        return Reply.json(chunk, headers=headers)

    def _key(self, env: str | None) -> tuple[str, public.PrivateKey]:
        if env not in self._keys:
            self._keys[env] = (str(3380204578043523366 + len(self._keys)), public.PrivateKey.generate())
        return self._keys[env]

    def _secret_store(self, env: str | None) -> dict[str, dict[str, Any]] | None:
        return self.secrets if env is None else self.environments.get(env)

    def public_key(self, req: Request, env: str | None) -> Reply:
        if self._secret_store(env) is None:
            return _error("Not Found", 404)
        key_id, key = self._key(env)
        return Reply.json({"key_id": key_id, "key": key.public_key.encode(encoding.Base64Encoder).decode()})

    def list_secrets(self, req: Request, env: str | None) -> Reply:
        store = self._secret_store(env)
        if store is None:
            return _error("Not Found", 404)
        items = [{k: v for k, v in s.items() if k != "value"} for s in store.values()]
        rest = "/actions/secrets" if env is None else f"/environments/{quote(env, safe='')}/secrets"
        return self.page(req, rest, items, key="secrets")

    def put_secret(self, req: Request, env: str | None, name: str) -> Reply:
        store = self._secret_store(env)
        if store is None:
            return _error("Not Found", 404)
        data = req.json() or {}
        if "key_id" not in data:
            return _error('Invalid request.\n\n"key_id" wasn\'t supplied.', 422)
        key_id, key = self._key(env)
        if data["key_id"] != key_id:
            return _error("Bad request: key_id does not match the current public key", 422)
        try:
            value = public.SealedBox(key).decrypt(base64.b64decode(data.get("encrypted_value", ""))).decode()
        except Exception:  # noqa: BLE001 - the real API answers 422 to what it cannot decrypt
            return _error("Bad request: could not decrypt encrypted_value", 422)
        created = name not in store
        when = iso()
        store[name] = {"name": name, "created_at": store.get(name, {}).get("created_at", when), "updated_at": when,
                       "value": value}
        return Reply.json({}, 201) if created else Reply.empty(204)

    def delete_secret(self, req: Request, env: str | None, name: str) -> Reply:
        store = self._secret_store(env)
        if store is None or name not in store:
            return _error("Not Found", 404)
        del store[name]
        return Reply.empty(204)

    def list_environments(self, req: Request) -> Reply:
        envs = [{"id": 161088068 + i, "name": n, "html_url": f"https://github.com/{self.repo}/deployments/{n}",
                 "created_at": iso(), "updated_at": iso()} for i, n in enumerate(self.environments)]
        return self.page(req, "/environments", envs, key="environments")

    def list_collaborators(self, req: Request) -> Reply:
        people = self.collaborators
        wanted = req.arg("permission")
        if wanted:
            people = [p for p in people if p["permissions"].get(wanted)]
        return self.page(req, "/collaborators", people)

    def list_pulls(self, req: Request) -> Reply:
        state = req.arg("state", "open")
        pulls = [p for p in self.pulls if state == "all" or p["state"] == state]
        return self.page(req, "/pulls", sorted(pulls, key=lambda p: p["number"], reverse=True))

    def list_issues(self, req: Request) -> Reply:
        state = req.arg("state", "open")
        wanted = set(filter(None, (req.arg("labels") or "").split(",")))
        # GitHub's issues list includes pull requests (with a pull_request key).
        items = self.issues + [{**p, "pull_request": {"url": p["url"]}} for p in self.pulls]
        items = [i for i in items if state == "all" or i["state"] == state]
        items = [i for i in items if wanted <= {label["name"] for label in i["labels"]}]
        return self.page(req, "/issues", sorted(items, key=lambda i: i["number"], reverse=True))

    def create_issue(self, req: Request) -> Reply:
        if not self.issues_enabled:
            return _error("Issues are disabled for this repo", 410)
        data = req.json() or {}
        if not data.get("title"):
            return _error("Validation Failed", 422, errors=[{"resource": "Issue", "code": "missing_field",
                                                              "field": "title"}])
        issue = self.add_issue(data["title"], body=data.get("body") or "", labels=data.get("labels") or [])
        issue["assignees"] = [{"login": a} for a in data.get("assignees") or []]
        return Reply.json(issue, 201, {"Location": issue["url"]})

    def _issue(self, n: str) -> dict[str, Any] | None:
        return next((i for i in self.issues if i["number"] == int(n)), None)

    def update_issue(self, req: Request, n: str) -> Reply:
        issue = self._issue(n)
        if issue is None:
            return _error("Not Found", 404)
        data = req.json() or {}
        for field in ("title", "body", "state", "state_reason"):
            if field in data:
                issue[field] = data[field]
        if "labels" in data:
            issue["labels"] = [_label(n) for n in data["labels"]]
        if data.get("state") == "closed":
            issue["closed_at"] = iso()
        issue["updated_at"] = iso()
        return Reply.json(issue)

    def list_comments(self, req: Request, n: str) -> Reply:
        if self._issue(n) is None:
            return _error("Not Found", 404)
        return self.page(req, f"/issues/{n}/comments", self.comments.get(int(n), []))

    def create_comment(self, req: Request, n: str) -> Reply:
        issue = self._issue(n)
        if issue is None:
            return _error("Not Found", 404)
        body = (req.json() or {}).get("body")
        if not body:
            return _error("Validation Failed", 422, errors=[{"resource": "IssueComment", "code": "missing_field",
                                                              "field": "body"}])
        cid = next(self._ids)
        comment = {"id": cid, "body": body, "user": {"login": "ops-bot"}, "created_at": iso(), "updated_at": iso(),
                   "html_url": f"{issue['html_url']}#issuecomment-{cid}"}
        self.comments.setdefault(int(n), []).append(comment)
        issue["comments"] += 1
        return Reply.json(comment, 201)


def _label(name: str) -> dict[str, Any]:
    return {"id": abs(hash(name)) % 10**10, "name": name, "color": "ededed", "default": False}


def _cursor(index: int) -> str:
    return base64.b64encode(f"cursor:{index}".encode()).decode().rstrip("=")


def _uncursor(value: str | None) -> int:
    raw = base64.b64decode((value or "") + "=" * (-len(value or "") % 4)).decode()
    return int(raw.split(":", 1)[1])


def _time_from_tag(tag: str) -> datetime | None:
    match = re.search(r"(\d{8})_(\d{6})", tag)
    if not match:
        return None
    return datetime.strptime(match[1] + match[2], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)


def hours_ago(hours: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=hours)
