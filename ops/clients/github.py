"""Effect: GitHub REST API client (releases and their assets, Actions, Dependabot, secrets, access, issues).

Contract: ../shared/reference/api-contracts.md section 1. API version pinned to 2022-11-28. Works without a token
for public repositories; mutating calls need GITHUB_TOKEN.

Asset downloads go through the API asset URL with `Accept: application/octet-stream`, so private repositories
work with a token. GitHub answers 302 to a short-lived signed URL on another host; that hop is made by hand
*without* Authorization (the blob store answers 400 to a request carrying one), whatever host it is on.
"""
from __future__ import annotations

import time
from base64 import b64encode
from collections.abc import Callable, Iterable
from typing import IO, Any
from urllib.parse import quote, urljoin

import requests
import urllib3

from ..errors import ConfigError, ServiceError
from . import rules
from .base import APIError, Client

API_VERSION = "2022-11-28"
REDIRECTS = (301, 302, 303, 307, 308)
Progress = Callable[[int, "int | None"], None]


class DownloadInterrupted(ServiceError):
    """The connection dropped mid-download; `.received` bytes are in the file (resume from there)."""

    def __init__(self, message: str, *, received: int, total: int | None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.received, self.total = received, total


class GitHub(Client):
    service = "GitHub"
    token_var = "GITHUB_TOKEN"
    default_headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}

    def __init__(self, base_url: str, repo: str, *, backup_prefix: str = "backup-", **kwargs: Any):
        super().__init__(base_url, **kwargs)
        if not repo or repo.count("/") != 1:
            raise ConfigError(f"GitHub repository {repo!r} is not owner/name", hint="set ops.github.repo: owner/name")
        self.repo = repo
        self.backup_prefix = backup_prefix

    @classmethod
    def from_settings(cls, settings: Any, *, dry_run: bool = False, session: requests.Session | None = None) -> "GitHub":
        return cls(settings.require("github.api_url"), settings.require("github.repo"),
                   token=settings.env_var("GITHUB_TOKEN"), backup_prefix=settings.get("github.backup_prefix", "backup-"),
                   dry_run=dry_run, session=session, **cls.options(settings, "github"))

    # -- plumbing --------------------------------------------------------------------------------------------------
    def repo_path(self, *parts: str | int) -> str:
        return "/repos/" + self.repo + "".join("/" + str(p) for p in parts)

    def request(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:
        if method.upper() in {"POST", "PUT", "PATCH", "DELETE"} and not self.token and not self.dry_run:
            raise ConfigError(f"GitHub {method.upper()} needs a token", hint="export GITHUB_TOKEN=<a token with write access>")
        return super().request(method, path_or_url, **kwargs)

    def rate_limit(self, response: requests.Response, attempt: int) -> rules.RateLimit | None:
        if response.status_code not in (403, 429):
            return None
        message = ""
        try:
            body = response.json()
            message = body.get("message", "") if isinstance(body, dict) else ""
        except ValueError:
            pass
        return rules.github_rate_limit(response.status_code, response.headers, message, time.time(), attempt)

    def error_detail(self, body: Any) -> tuple[str, str | int | None]:
        if isinstance(body, dict):
            errors = body.get("errors") or []
            code = errors[0].get("code") if errors and isinstance(errors[0], dict) else None
            message = str(body.get("message", ""))
            if code:
                message += f" ({errors[0].get('resource', '')} {errors[0].get('field', '')} {code})".replace("  ", " ")
            return message, code
        return "", None

    def hint_for(self, status: int, detail: str, method: str, url: str) -> str:
        if status == 404 and "/repos/" in url:
            if self.token:
                return (f"{self.repo} or the object does not exist, or GITHUB_TOKEN lacks access to it (GitHub answers "
                        f"404, not 403, for a private repository the token cannot see): check the token's repository "
                        f"access and scopes")
            return f"if {self.repo} is private, export GITHUB_TOKEN with read access (GitHub answers 404 without one)"
        if status == 403 and "disabled" in detail.lower():
            return "enable the feature in the repository's Settings > Code security, or leave this check out"
        if status == 403:
            return "the token lacks a permission or scope for this call (fine-grained tokens list them per repository)"
        if status == 410:
            return "the feature is disabled on this repository (issues off?)"
        return super().hint_for(status, detail, method, url)

    def _list(self, path: str, params: dict[str, Any] | None = None, *, key: str | None = None,
              limit: int | None = None) -> list[Any]:
        params = {"per_page": 100, **(params or {})}
        return list(self.paginate(path, {k: v for k, v in params.items() if v is not None}, key=key, limit=limit))

    # -- releases --------------------------------------------------------------------------------------------------
    def releases(self) -> list[dict[str, Any]]:
        """Every release (drafts only with push access), all pages."""
        return self._list(self.repo_path("releases"))

    def release(self, release_id: int) -> dict[str, Any]:
        return self.get_json(self.repo_path("releases", release_id))

    def release_by_tag(self, tag: str) -> dict[str, Any]:
        """A published release by tag (drafts answer 404)."""
        return self.get_json(self.repo_path("releases", "tags", quote(tag, safe="")))

    def latest_release(self) -> dict[str, Any]:
        return self.get_json(self.repo_path("releases", "latest"))

    def backup_releases(self, prefix: str | None = None) -> list[dict[str, Any]]:
        """Published releases whose tag starts with the backup prefix, newest `created_at` first (all pages)."""
        return backup_releases(self.releases(), self.backup_prefix if prefix is None else prefix)

    def latest_backup(self, prefix: str | None = None) -> dict[str, Any] | None:
        found = self.backup_releases(prefix)
        return found[0] if found else None

    def release_assets(self, release_id: int) -> list[dict[str, Any]]:
        return self._list(self.repo_path("releases", release_id, "assets"))

    def asset(self, asset_id: int) -> dict[str, Any]:
        return self.get_json(self.repo_path("releases", "assets", asset_id))

    def create_release(self, tag: str, *, name: str | None = None, body: str | None = None,
                       target: str | None = None, draft: bool = False, prerelease: bool = False,
                       make_latest: bool | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"tag_name": tag, "name": name or tag, "draft": draft, "prerelease": prerelease}
        if body is not None:
            payload["body"] = body
        if target:
            payload["target_commitish"] = target
        if make_latest is not None:
            payload["make_latest"] = "true" if make_latest else "false"  # a string enum, not a boolean
        return self.json_of(self.request("POST", self.repo_path("releases"), json=payload))

    def upload_asset(self, release: dict[str, Any], name: str, data: bytes | IO[bytes], *,
                     content_type: str = "application/gzip", label: str | None = None,
                     replace: bool = False) -> dict[str, Any]:
        """Upload raw bytes (or a binary file object) as a release asset to the uploads host.

        `replace=True` deletes an asset of the same name first when GitHub answers 422 already_exists (file
        objects are rewound for the second try). Read `name` back from the result: GitHub renames odd names.
        """
        url = rules.strip_uri_template(release["upload_url"])
        params = {"name": name, **({"label": label} if label else {})}
        start = data.tell() if hasattr(data, "tell") else 0
        headers = {"Content-Type": content_type}
        try:
            return self.json_of(self.request("POST", url, params=params, data=data, headers=headers))
        except APIError as exc:
            if not (replace and exc.status == 422 and exc.code == "already_exists"):
                raise
        for existing in self.release_assets(release["id"]):
            if existing["name"] == name:
                self.delete_asset(existing["id"])
        if hasattr(data, "seek"):
            data.seek(start)
        return self.json_of(self.request("POST", url, params=params, data=data, headers=headers))

    def delete_asset(self, asset_id: int) -> None:
        self.request("DELETE", self.repo_path("releases", "assets", asset_id))

    def delete_release(self, release_id: int) -> None:
        """Delete a release. Its git tag stays: call `delete_tag` too."""
        self.request("DELETE", self.repo_path("releases", release_id))

    def delete_tag(self, tag: str) -> bool:
        """Delete the tag ref `tags/<tag>`; True if deleted, False if it was already gone (GitHub's 422)."""
        response = self.request("DELETE", self.repo_path("git", "refs", "tags", quote(tag, safe="/")), accept=(422,))
        if response.status_code == 422:
            detail, _ = self.error_detail(self._body(response))
            if "Reference does not exist" in detail:
                return False
            raise self.status_error(response, "DELETE", response.url)
        return True

    # -- downloads -------------------------------------------------------------------------------------------------
    def asset_url(self, asset: dict[str, Any] | int) -> str:
        if isinstance(asset, dict) and asset.get("url"):
            return asset["url"]
        asset_id = asset["id"] if isinstance(asset, dict) else asset
        return self.url(self.repo_path("releases", "assets", asset_id))

    def stream_asset(self, asset: dict[str, Any] | int, fileobj: IO[bytes], *, offset: int = 0,
                     chunk_size: int = 1 << 20, progress: Progress | None = None) -> int:
        """One attempt: write the asset's bytes from `offset` into `fileobj` (written at that position, anything
        after it truncated). Returns the file's new length. Raises DownloadInterrupted if the connection drops.

        A server that ignores Range (200 instead of 206) restarts the file from zero; 416 at `offset` == size
        means the file is already complete.
        """
        response = self._open_asset(asset, offset)
        with response:
            total: int | None = None
            if response.status_code == 416:
                got = rules.parse_content_range(response.headers.get("Content-Range"))
                if got and got.total == offset:
                    return offset
                raise ServiceError(f"GitHub asset storage refused the range from byte {offset}",
                                   hint="delete the partial download and start again")
            if response.status_code == 206:
                got = rules.parse_content_range(response.headers.get("Content-Range"))
                if got is None or got.start != offset:
                    raise ServiceError(f"GitHub asset storage answered a range that does not start at {offset} "
                                       f"({response.headers.get('Content-Range')!r})",
                                       hint="delete the partial download and start again")
                total = got.total
            else:
                offset = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            fileobj.seek(offset)
            fileobj.truncate(offset)
            received = offset
            try:
                for chunk in response.raw.stream(chunk_size, decode_content=False):
                    fileobj.write(chunk)
                    received += len(chunk)
                    if progress:
                        progress(received, total)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                raise DownloadInterrupted(
                    f"GitHub asset download interrupted at {received} of {total or '?'} bytes ({type(exc).__name__})",
                    received=received, total=total, hint="run again: the download resumes where it stopped") from None
            if total is not None and received < total:
                raise DownloadInterrupted(f"GitHub asset download ended at {received} of {total} bytes",
                                          received=received, total=total,
                                          hint="run again: the download resumes where it stopped")
            return received

    def download_asset(self, asset: dict[str, Any] | int, fileobj: IO[bytes], *, offset: int = 0,
                       attempts: int = 5, chunk_size: int = 1 << 20, progress: Progress | None = None) -> int:
        """Download the whole asset into `fileobj`, resuming with Range after each interruption (up to `attempts`
        tries in all, backing off between them). `offset` resumes a partial file from an earlier run. Returns the
        size. Checks it against the asset's `size` when `asset` is the asset JSON."""
        expected = asset.get("size") if isinstance(asset, dict) else None
        last: DownloadInterrupted | None = None
        for attempt in range(max(1, attempts)):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            try:
                size = self.stream_asset(asset, fileobj, offset=offset, chunk_size=chunk_size, progress=progress)
            except DownloadInterrupted as exc:
                last, offset = exc, exc.received
                continue
            if expected is not None and size != expected:
                raise ServiceError(f"GitHub asset is {size} bytes but the release says {expected}",
                                   hint="the asset may have been replaced while downloading; download it again")
            return size
        assert last is not None
        raise DownloadInterrupted(f"{last.message}; gave up after {attempts} attempts", received=last.received,
                                  total=last.total, hint="check the network and run again: the download resumes")

    def _open_asset(self, asset: dict[str, Any] | int, offset: int) -> requests.Response:
        headers = {"Accept": "application/octet-stream", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        api_url = self.asset_url(asset)
        response = self.request("GET", api_url, headers=headers, stream=True, allow_redirects=False)
        if response.status_code not in REDIRECTS:
            return response  # GitHub may stream the bytes directly (200/206)
        location = urljoin(api_url, response.headers.get("Location", ""))
        response.close()
        # The signed URL is the credential; the token must not travel with it (the store answers 400 if it does).
        storage = _Storage(self)
        return storage.request("GET", location, headers=headers, stream=True, accept=(416,), auth=False)

    # -- Actions ---------------------------------------------------------------------------------------------------
    def workflow_runs(self, workflow: str, *, branch: str | None = None, status: str | None = None,
                      event: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs of one workflow file (`backup.yml`, the file name only), newest first."""
        params: dict[str, Any] = {"branch": branch, "status": status, "event": event}
        if limit is not None:
            params["per_page"] = min(100, max(1, limit))
        return self._list(self.repo_path("actions", "workflows", quote(workflow, safe=""), "runs"), params,
                          key="workflow_runs", limit=limit)

    def latest_run(self, workflow: str, *, branch: str | None = None) -> dict[str, Any] | None:
        runs = self.workflow_runs(workflow, branch=branch, limit=1)
        return runs[0] if runs else None

    # -- security --------------------------------------------------------------------------------------------------
    def dependabot_alerts(self, *, state: str | None = "open", severity: str | None = None) -> list[dict[str, Any]]:
        """Dependabot alerts (cursor pagination through Link). Disabled alerts answer 403 "... are disabled ..."."""
        return self._list(self.repo_path("dependabot", "alerts"), {"state": state, "severity": severity})

    def environments(self) -> list[dict[str, Any]]:
        return self._list(self.repo_path("environments"), key="environments")

    def secrets(self, environment: str | None = None) -> list[dict[str, Any]]:
        """Names and dates of the repository's (or an environment's) Actions secrets."""
        return self._list(self._secrets_path(environment), key="secrets")

    def public_key(self, environment: str | None = None) -> dict[str, str]:
        """`{"key_id": "...", "key": "<base64>"}` to encrypt secrets for the repository or an environment."""
        return self.get_json(self._secrets_path(environment) + "/public-key")

    def set_secret(self, name: str, value: str, *, environment: str | None = None) -> str:
        """Encrypt `value` with the public key (sealed box) and store it; returns "created" or "updated"."""
        key = self.public_key(environment)
        payload = {"encrypted_value": encrypt_secret(key["key"], value), "key_id": key["key_id"]}
        response = self.request("PUT", f"{self._secrets_path(environment)}/{quote(name, safe='')}", json=payload)
        return "created" if response.status_code == 201 else "updated"

    def delete_secret(self, name: str, *, environment: str | None = None) -> None:
        self.request("DELETE", f"{self._secrets_path(environment)}/{quote(name, safe='')}")

    def _secrets_path(self, environment: str | None) -> str:
        if environment:
            return self.repo_path("environments", quote(environment, safe=""), "secrets")
        return self.repo_path("actions", "secrets")

    def collaborators(self, *, affiliation: str = "all") -> list[dict[str, Any]]:
        """Collaborators with `permissions` booleans and `role_name` (use `highest_permission`)."""
        return self._list(self.repo_path("collaborators"), {"affiliation": affiliation})

    def deploy_keys(self) -> list[dict[str, Any]]:
        return self._list(self.repo_path("keys"))

    def pulls(self, *, state: str = "open") -> list[dict[str, Any]]:
        return self._list(self.repo_path("pulls"), {"state": state})

    def rate_limit_status(self) -> dict[str, Any]:
        return self.get_json("/rate_limit")

    # -- issues ----------------------------------------------------------------------------------------------------
    def create_issue(self, title: str, body: str = "", *, labels: Iterable[str] = (),
                     assignees: Iterable[str] = ()) -> dict[str, Any]:
        """Open an issue. Labels are dropped silently by GitHub without push access: check the result's labels."""
        payload: dict[str, Any] = {"title": title, "body": body}
        if labels:
            payload["labels"] = list(labels)
        if assignees:
            payload["assignees"] = list(assignees)
        return self.json_of(self.request("POST", self.repo_path("issues"), json=payload))

    def open_issues(self, *, labels: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Open issues (pull requests left out), optionally having all of `labels`."""
        params = {"state": "open", "labels": ",".join(labels) or None}
        return [i for i in self._list(self.repo_path("issues"), params) if "pull_request" not in i]

    def find_open_issue(self, title: str, *, labels: Iterable[str] = ()) -> dict[str, Any] | None:
        """The newest open issue with exactly this title, or None (for "comment instead of duplicating")."""
        matches = [i for i in self.open_issues(labels=labels) if i.get("title", "").strip() == title.strip()]
        return max(matches, key=lambda i: i["number"]) if matches else None

    def comment_issue(self, number: int, body: str) -> dict[str, Any]:
        return self.json_of(self.request("POST", self.repo_path("issues", number, "comments"), json={"body": body}))

    def close_issue(self, number: int, *, reason: str = "completed") -> dict[str, Any]:
        payload = {"state": "closed", "state_reason": reason}
        return self.json_of(self.request("PATCH", self.repo_path("issues", number), json=payload))

    @staticmethod
    def _body(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None


class _Storage(Client):
    """The asset storage host of a redirected download: no token, same retries and error translation."""

    service = "GitHub asset storage"
    default_headers: dict[str, str] = {}

    def __init__(self, github: GitHub):
        super().__init__(github.base_url, session=github.session, timeout=github.timeout, retries=github.retries,
                         backoff=github.backoff, max_wait=github.max_wait, secrets=github._secrets,
                         sleep=github._sleep)

    def hint_for(self, status: int, detail: str, method: str, url: str) -> str:
        if status == 400:
            return "the storage host rejected the request (an Authorization header must not be sent to it)"
        if status == 403:
            return "the signed download URL was refused or expired (it lives ~5 minutes): download again"
        return super().hint_for(status, detail, method, url)


def backup_releases(releases: Iterable[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Pure: published (non-draft) releases tagged `prefix...`, newest `created_at` first."""
    found = [r for r in releases if not r.get("draft") and str(r.get("tag_name", "")).startswith(prefix)]
    return sorted(found, key=lambda r: r.get("created_at") or "", reverse=True)


def highest_permission(collaborator: dict[str, Any]) -> str:
    """Pure: admin > maintain > write > triage > read, from the `permissions` booleans (role_name as fallback)."""
    perms = collaborator.get("permissions") or {}
    for flag, name in (("admin", "admin"), ("maintain", "maintain"), ("push", "write"), ("triage", "triage"),
                       ("pull", "read")):
        if perms.get(flag):
            return name
    return str(collaborator.get("role_name") or "none")


def encrypt_secret(public_key_b64: str, value: str) -> str:
    """libsodium sealed box of `value` for GitHub's base64 Curve25519 key (as PyGithub does it)."""
    from nacl import encoding, public

    key = public.PublicKey(public_key_b64.encode(), encoding.Base64Encoder)
    return b64encode(public.SealedBox(key).encrypt(value.encode())).decode()
