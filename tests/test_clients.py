"""The HTTP clients against the fake services on loopback (tests/fakes), and the pure HTTP rules."""
from __future__ import annotations

import hashlib
import io
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from ops.clients import rules
from ops.clients.app import App
from ops.clients.base import APIError, DryRunRefused, RateLimited
from ops.clients.cloudflare import Cloudflare
from ops.clients.github import DownloadInterrupted, GitHub, backup_releases, highest_permission
from ops.clients.render import Render, last_live, maintenance_enabled
from ops.clients.sentry import Sentry, SentryIssue
from ops.clients.supabase import Supabase
from ops.config import Settings
from ops.errors import ConfigError, OpsError, ServiceError

NOW = datetime.now(timezone.utc)
BACKUP = bytes(range(256)) * 400  # 100 KiB of every byte value


def github(fake_api, *, env=None, dry_run=False, **ops):
    return GitHub.from_settings(fake_api.settings(env=env, **ops), dry_run=dry_run)


def render(fake_api, dry_run=False, **ops):
    return Render.from_settings(fake_api.settings(**ops), dry_run=dry_run)


def assert_no_token(fake_api, text: str) -> None:
    for name, token in fake_api.env().items():
        assert token not in text, f"{name} leaked into: {text}"


# -- pure rules ----------------------------------------------------------------------------------------------------

GITHUB_LINK = ('<https://api.github.com/repositories/515435940/issues?per_page=3&page=2>; rel="next", '
               '<https://api.github.com/repositories/515435940/issues?per_page=3&page=5>; rel="last"')
SENTRY_MORE = ('<https://sentry.io/api/0/projects/o/p/issues/?&cursor=0:0:1>; rel="previous"; results="false"; '
               'cursor="0:0:1", <https://sentry.io/api/0/projects/o/p/issues/?&cursor=0:100:0>; rel="next"; '
               'results="true"; cursor="0:100:0"')
SENTRY_END = SENTRY_MORE.replace('results="true"', 'results="false"')


@pytest.mark.parametrize("header, expected", [
    (GITHUB_LINK, "https://api.github.com/repositories/515435940/issues?per_page=3&page=2"),
    (SENTRY_MORE, "https://sentry.io/api/0/projects/o/p/issues/?&cursor=0:100:0"),
    (SENTRY_END, None),
    ('<https://x/y?page=1>; rel="prev", <https://x/y?page=1>; rel="first"', None),
    ("", None),
    (None, None),
], ids=["github", "sentry-more", "sentry-last-page", "last-page", "empty", "absent"])
def test_next_url(header, expected):
    assert rules.next_url(header) == expected


def test_parse_links_keeps_sentry_parameters():
    links = {link.rel: link for link in rules.parse_links(SENTRY_MORE)}
    assert links["next"].params["cursor"] == "0:100:0" and links["previous"].params["results"] == "false"


@pytest.mark.parametrize("status, headers, message, wait, kind", [
    (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1030"}, "API rate limit exceeded for user ID 1.",
     31.0, "primary"),
    (429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1010"}, "", 11.0, "primary"),
    (403, {"retry-after": "7", "x-ratelimit-remaining": "4000"}, "You have exceeded a secondary rate limit.", 7.0,
     "retry-after"),
    (403, {"x-ratelimit-remaining": "4000"}, "You have exceeded a secondary rate limit. Please wait.", 60.0,
     "secondary"),
    (403, {"x-ratelimit-remaining": "4000"}, "Resource not accessible by personal access token", None, None),
    (403, {}, "Dependabot alerts are disabled for this repository.", None, None),
    (404, {"x-ratelimit-remaining": "0"}, "Not Found", None, None),
    (200, {"retry-after": "3"}, "", None, None),
], ids=["primary-403", "primary-429", "retry-after", "secondary-no-retry-after", "permission-403",
        "disabled-403", "not-found", "ok"])
def test_github_rate_limit_rule(status, headers, message, wait, kind):
    got = rules.github_rate_limit(status, headers, message, now=1000.0)
    assert (got.wait if got else None) == wait
    assert (got.kind if got else None) == kind


def test_secondary_rate_limit_backs_off_exponentially():
    waits = [rules.github_rate_limit(429, {}, "You have exceeded a secondary rate limit", 0.0, n).wait for n in range(3)]
    assert waits == [60.0, 120.0, 240.0]


@pytest.mark.parametrize("value, expected", [
    ("5", 5.0), ("0", 0.0), ("1.5", 1.5), ("Thu, 01 Jan 1970 00:16:50 GMT", 10.0), ("soon", None), (None, None)])
def test_retry_after_seconds(value, expected):
    assert rules.retry_after_seconds(value, now=1000.0) == expected


@pytest.mark.parametrize("url, hidden, kept", [
    ("https://localhost:1/blob/1?sp=r&se=123&sig=SECRETSIG&jwt=SECRETJWT", ["SECRETSIG", "SECRETJWT"], ["se=123"]),
    ("https://objects.example/x?X-Amz-Signature=SECRETSIG&X-Amz-Credential=SECRETCRED&X-Amz-Expires=300",
     ["SECRETSIG", "SECRETCRED"], ["X-Amz-Expires=300"]),
    ("https://api.example/x?access_token=SECRETTOK&page=2", ["SECRETTOK"], ["page=2"]),
    ("postgresql://app:SECRETPW@db.example/app", ["SECRETPW"], ["db.example"]),
], ids=["azure-sas", "s3", "token-param", "password"])
def test_display_url_masks_credentials(url, hidden, kept):
    shown = rules.display_url(url)
    assert not any(h in shown for h in hidden)
    assert all(k in shown for k in kept)


def test_strip_uri_template():
    url = "https://uploads.github.com/repos/o/r/releases/1/assets{?name,label}"
    assert rules.strip_uri_template(url) == "https://uploads.github.com/repos/o/r/releases/1/assets"


@pytest.mark.parametrize("value, expected", [
    ("bytes 100-199/1000", rules.ContentRange(100, 199, 1000)),
    ("bytes */1000", rules.ContentRange(None, None, 1000)),
    ("bytes 0-0/*", rules.ContentRange(0, 0, None)),
    ("items 1-2/3", None), (None, None)])
def test_parse_content_range(value, expected):
    assert rules.parse_content_range(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("198.51.100.4", ("ip", "198.51.100.4")), ("2001:db8::1", ("ip6", "2001:db8::1")),
    ("198.51.100.0/24", ("ip_range", "198.51.100.0/24")), ("198.51.100.7/32", ("ip", "198.51.100.7")),
    ("2001:db8::/64", ("ip_range", "2001:db8::/64"))])
def test_ip_target(value, expected):
    assert rules.ip_target(value) == expected


def test_ip_target_rejects_garbage():
    with pytest.raises(ValueError):
        rules.ip_target("not-an-ip")


def test_backup_releases_picks_published_backups_newest_first():
    releases = [{"tag_name": "backup-1", "created_at": "2024-01-01T00:00:00Z", "draft": False},
                {"tag_name": "backup-3", "created_at": "2024-01-03T00:00:00Z", "draft": True},
                {"tag_name": "v1.0.0", "created_at": "2024-01-04T00:00:00Z", "draft": False},
                {"tag_name": "backup-2", "created_at": "2024-01-02T00:00:00Z", "draft": False}]
    assert [r["tag_name"] for r in backup_releases(releases, "backup-")] == ["backup-2", "backup-1"]


@pytest.mark.parametrize("perms, expected", [
    ({"admin": True, "push": True, "pull": True}, "admin"), ({"push": True, "pull": True}, "write"),
    ({"pull": True, "triage": True}, "triage"), ({"pull": True}, "read"), ({}, "none")])
def test_highest_permission(perms, expected):
    assert highest_permission({"permissions": perms}) == expected


# -- configuration -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, var", [(Render, "RENDER_API_KEY"), (Sentry, "SENTRY_AUTH_TOKEN"),
                                      (Supabase, "SUPABASE_ACCESS_TOKEN"), (Cloudflare, "CLOUDFLARE_API_TOKEN")])
def test_missing_token_is_a_config_error_naming_the_variable(fake_api, cls, var):
    env = {k: v for k, v in fake_api.env().items() if k != var}
    with pytest.raises(ConfigError, match=var):
        cls.from_settings(fake_api.settings(env=env))


def test_github_works_without_a_token_on_a_public_repo(fake_api):
    fake_api.github.private = False
    fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    client = github(fake_api, env={})
    assert client.latest_backup()["tag_name"] == "backup-20240101_020000"
    assert all(r.authorization is None for r in fake_api.calls())


def test_github_mutation_without_a_token_names_the_variable(fake_api):
    with pytest.raises(ConfigError, match="GITHUB_TOKEN"):
        github(fake_api, env={}).create_issue("x")
    assert not fake_api.calls("POST")


def test_render_without_service_id_names_the_setting(fake_api):
    client = Render.from_settings(fake_api.settings(render={"service_id": ""}))
    with pytest.raises(ConfigError, match="ops.render.service_id"):
        client.get_service()


def test_supabase_rejects_a_malformed_project_ref(fake_api):
    with pytest.raises(ConfigError, match="20 lowercase letters"):
        Supabase.from_settings(fake_api.settings(supabase={"project_ref": "Not-A-Ref"}))


# -- GitHub: pagination, auth, errors ------------------------------------------------------------------------------

def test_releases_follow_link_pages_verbatim(fake_api):
    for day in range(1, 13):
        fake_api.github.add_backup(f"backup-202401{day:02d}_020000", BACKUP[:day])
    releases = github(fake_api).releases()
    assert len(releases) == 12 and releases[0]["tag_name"] == "backup-20240112_020000"
    calls = fake_api.calls("GET", r"/releases$")
    assert len(calls) == 3  # 5 + 5 + 2 with the fake's page cap
    assert calls[0].path == "/github/repos/acme/lottery-backend/releases"
    assert [c.path for c in calls[1:]] == ["/github/repositories/515435940/releases"] * 2
    assert [c.arg("page") for c in calls[1:]] == ["2", "3"]
    assert all(c.authorization == f"Bearer {fake_api.github.token}" for c in calls)
    assert all(c.headers["x-github-api-version"] == "2022-11-28" for c in calls)


def test_latest_backup_ignores_drafts_and_other_tags(fake_api):
    gh = fake_api.github
    gh.add_backup("backup-20240101_020000", BACKUP)
    gh.add_backup("backup-20240103_020000", BACKUP, draft=True)
    gh.add_release("v2.0.0", created_at=NOW)
    gh.add_backup("backup-20240102_020000", BACKUP)
    assert github(fake_api).latest_backup()["tag_name"] == "backup-20240102_020000"


def test_release_by_tag(fake_api):
    fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    release = github(fake_api).release_by_tag("backup-20240101_020000")
    assert release["assets"][0]["name"] == "backup_20240101_020000.sql.gz"


def test_wrong_token_is_401_with_a_hint_and_no_token(fake_api):
    env = {**fake_api.env(), "GITHUB_TOKEN": "ghp_" + "x" * 36}
    with pytest.raises(APIError) as caught:
        github(fake_api, env=env).releases()
    assert caught.value.status == 401 and "Bad credentials" in str(caught.value)
    assert "GITHUB_TOKEN" in caught.value.hint
    assert "x" * 36 not in str(caught.value)


def test_private_repo_without_token_says_to_export_one(fake_api):
    with pytest.raises(APIError) as caught:
        github(fake_api, env={}).releases()
    assert caught.value.status == 404 and "export GITHUB_TOKEN" in caught.value.hint


def test_repo_the_token_cannot_see_says_the_token_lacks_access(fake_api):
    with pytest.raises(APIError) as caught:
        github(fake_api, github={"repo": "acme/secret-repo"}).releases()
    assert caught.value.status == 404 and "lacks access" in caught.value.hint


def test_500_then_success_is_retried(fake_api):
    fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    fake_api.fail(r"/releases$", status=502, times=2)
    assert len(github(fake_api).releases()) == 1
    assert len(fake_api.calls("GET", r"/releases$")) == 3


def test_persistent_500_gives_up_with_a_hint(fake_api):
    fake_api.fail(r"/releases$", status=503, times=None)
    with pytest.raises(APIError) as caught:
        github(fake_api).releases()
    assert caught.value.status == 503 and "status page" in caught.value.hint
    assert len(fake_api.calls("GET", r"/releases$")) == 3  # 1 + 2 retries


def test_post_is_not_retried_on_500(fake_api):
    fake_api.fail(r"/issues$", status=500, method="POST")
    with pytest.raises(APIError):
        github(fake_api).create_issue("Restore failed")
    assert len(fake_api.calls("POST", r"/issues$")) == 1
    assert fake_api.github.issues == []


def test_dropped_connection_is_retried(fake_api):
    fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    fake_api.drop(r"/releases$", times=1)
    assert len(github(fake_api).releases()) == 1


def test_connection_dropped_every_time_is_a_service_error(fake_api):
    fake_api.drop(r"/releases$", times=None)
    with pytest.raises(ServiceError, match="could not be reached"):
        github(fake_api).releases()


def test_nothing_listening_is_a_service_error(fake_api):
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ServiceError, match="connection refused"):
        github(fake_api, github={"api_url": f"http://127.0.0.1:{port}"}).releases()


def test_timeout_is_retried_then_succeeds(fake_api):
    fake_api.slow(r"/releases$", seconds=2, times=1)
    assert github(fake_api, github={"timeout": 0.3}).releases() == []


def test_timeout_every_time_is_a_service_error(fake_api):
    fake_api.slow(r"/releases$", seconds=3, times=None)
    started = time.monotonic()
    with pytest.raises(ServiceError, match=r"did not answer within 0.3 s"):
        github(fake_api, github={"timeout": 0.3}).releases()
    assert time.monotonic() - started < 2.5
    assert len(fake_api.calls("GET", r"/releases$")) == 3


def test_truncated_body_is_retried(fake_api):
    for day in range(1, 4):
        fake_api.github.add_backup(f"backup-202401{day:02d}_020000", BACKUP)
    fake_api.cut(r"/releases$", after=40, times=1)
    assert len(github(fake_api).releases()) == 3


def test_truncated_body_every_time_is_a_service_error(fake_api):
    fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    fake_api.cut(r"/releases$", after=40, times=None)
    with pytest.raises(ServiceError, match="dropped the connection in the middle"):
        github(fake_api).releases()


def test_html_instead_of_json_is_a_service_error(fake_api):
    fake_api.fail(r"/releases$", status=200, body=b"<html><body>Gateway</body></html>",
                  headers={"Content-Type": "text/html"})
    with pytest.raises(ServiceError, match="not JSON"):
        github(fake_api).releases()


def test_next_link_to_another_host_is_refused(fake_api):
    fake_api.fail(r"/releases$", status=200, body=[{"tag_name": "x"}],
                  headers={"Link": '<http://localhost:9/steal?page=2>; rel="next"'})
    with pytest.raises(ServiceError, match="another host"):
        github(fake_api).releases()


# -- GitHub: rate limits -------------------------------------------------------------------------------------------

def test_primary_rate_limit_far_away_says_when_it_resets(fake_api):
    fake_api.rate_limit(r"/releases$", kind="primary", reset_in=3600, times=None)
    with pytest.raises(RateLimited) as caught:
        github(fake_api).releases()
    reset = datetime.fromtimestamp(caught.value.reset_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
    assert "resets at" in str(caught.value) and reset in str(caught.value)
    assert len(fake_api.calls("GET", r"/releases$")) == 1  # no retry before the reset


def test_primary_rate_limit_soon_is_waited_out(fake_api):
    fake_api.rate_limit(r"/releases$", kind="primary", reset_in=0, times=1)
    started = time.monotonic()
    assert github(fake_api, github={"max_wait": 5}).releases() == []
    assert time.monotonic() - started >= 0.9  # reset + 1 s margin


def test_secondary_rate_limit_with_retry_after_is_waited_out(fake_api):
    fake_api.rate_limit(r"/issues$", kind="secondary", retry_after=1, method="POST")
    started = time.monotonic()
    issue = github(fake_api).create_issue("Backups are failing", labels=["ops"])
    assert issue["number"] and time.monotonic() - started >= 0.9
    assert len(fake_api.calls("POST", r"/issues$")) == 2


def test_secondary_rate_limit_without_retry_after_is_not_slept_through(fake_api):
    fake_api.rate_limit(r"/releases$", kind="secondary", times=None)
    with pytest.raises(RateLimited, match="secondary"):
        github(fake_api).releases()


def test_permission_403_is_not_mistaken_for_a_rate_limit(fake_api):
    fake_api.fail(r"/collaborators", status=403, body={"message": "Resource not accessible by personal access token"})
    with pytest.raises(APIError) as caught:
        github(fake_api).collaborators()
    assert caught.value.status == 403 and not isinstance(caught.value, RateLimited)
    assert len(fake_api.calls("GET", r"/collaborators")) == 1


def test_fake_counts_down_the_primary_limit(fake_api):
    fake_api.github.rate_remaining = 1
    client = github(fake_api)
    client.releases()
    with pytest.raises(RateLimited):
        client.releases()


# -- GitHub: downloads ---------------------------------------------------------------------------------------------

def test_download_follows_the_redirect_without_the_token(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    out = io.BytesIO()
    size = github(fake_api).download_asset(release["assets"][0], out)
    assert size == len(BACKUP) and out.getvalue() == BACKUP
    assert "sha256:" + hashlib.sha256(out.getvalue()).hexdigest() == release["assets"][0]["digest"]
    api_call = fake_api.calls("GET", r"/releases/assets/", origin="api")[0]
    assert api_call.authorization == f"Bearer {fake_api.github.token}"
    assert api_call.headers["accept"] == "application/octet-stream"
    blob_calls = fake_api.calls(origin="blob")
    assert len(blob_calls) == 1 and blob_calls[0].authorization is None and blob_calls[0].arg("sig")


def test_requests_itself_strips_authorization_on_the_cross_host_redirect(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    client = github(fake_api)
    response = client.request("GET", release["assets"][0]["url"], headers={"Accept": "application/octet-stream"})
    assert response.status_code == 200 and response.content == BACKUP
    assert fake_api.calls(origin="blob")[0].authorization is None


def test_blob_host_rejects_a_forwarded_token(fake_api):
    """The fake's guard is real: had the token been forwarded, the download tests would fail with this 400."""
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    url = fake_api.github.signed_url(release["assets"][0]["id"])
    response = requests.get(url, headers={"Authorization": f"Bearer {fake_api.github.token}"}, timeout=5)
    assert response.status_code == 400 and b"Only one auth mechanism allowed" in response.content
    assert requests.get(url.replace("sig=", "nosig="), timeout=5).status_code == 403


def test_forwarded_token_would_be_reported_with_a_hint(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    client = github(fake_api)
    url = fake_api.github.signed_url(release["assets"][0]["id"])
    with pytest.raises(APIError) as caught:
        client.request("GET", url)  # the client's own auth header, sent on purpose to the storage host
    assert caught.value.status == 400 and "sig=***" in str(caught.value)
    assert_no_token(fake_api, str(caught.value))


def test_download_resumes_with_range_after_a_cut(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    fake_api.cut(r"/github-production-release-asset/", after=30_000, times=2)
    out = io.BytesIO()
    seen = []
    size = github(fake_api).download_asset(release["assets"][0], out, progress=lambda n, total: seen.append(n))
    assert size == len(BACKUP) and out.getvalue() == BACKUP
    ranges = [c.headers.get("range") for c in fake_api.calls(origin="blob")]
    assert ranges == [None, "bytes=30000-", "bytes=60000-"]
    # each attempt starts at the API URL again: the signed URL is short-lived
    assert len(fake_api.calls("GET", r"/releases/assets/", origin="api")) == 3
    assert seen[-1] == len(BACKUP)


def test_download_resumes_a_partial_file_from_an_earlier_run(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    out = io.BytesIO(BACKUP[:12_345] + b"garbage after the offset")
    assert github(fake_api).download_asset(release["assets"][0], out, offset=12_345) == len(BACKUP)
    assert out.getvalue() == BACKUP
    assert fake_api.calls(origin="blob")[0].headers["range"] == "bytes=12345-"


def test_download_restarts_when_the_server_ignores_range(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    fake_api.github.honour_range = False
    out = io.BytesIO(b"stale prefix")
    assert github(fake_api).stream_asset(release["assets"][0], out, offset=12) == len(BACKUP)
    assert out.getvalue() == BACKUP


def test_download_of_a_complete_file_answers_416_and_is_done(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    out = io.BytesIO(BACKUP)
    assert github(fake_api).stream_asset(release["assets"][0], out, offset=len(BACKUP)) == len(BACKUP)
    assert out.getvalue() == BACKUP


def test_download_direct_200_from_the_api(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    fake_api.github.redirect_downloads = False
    out = io.BytesIO()
    github(fake_api).download_asset(release["assets"][0]["id"], out)
    assert out.getvalue() == BACKUP and not fake_api.calls(origin="blob")


def test_download_gives_up_after_the_attempts_saying_how_far_it_got(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    fake_api.cut(r"/github-production-release-asset/", after=1000, times=None)
    with pytest.raises(DownloadInterrupted) as caught:
        github(fake_api).download_asset(release["assets"][0], io.BytesIO(), attempts=3)
    assert caught.value.received == 3000 and caught.value.total == len(BACKUP)
    assert "resumes" in caught.value.hint


def test_download_checks_the_size_the_release_promises(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    asset = dict(release["assets"][0], size=len(BACKUP) + 1)
    with pytest.raises(ServiceError, match="release says"):
        github(fake_api).download_asset(asset, io.BytesIO())


def test_expired_signed_url_is_a_403_with_a_hint(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    fake_api.github.blob_ttl = -10
    with pytest.raises(APIError) as caught:
        github(fake_api).download_asset(release["assets"][0], io.BytesIO())
    assert caught.value.status == 403 and "expired" in caught.value.hint


# -- GitHub: publishing and pruning --------------------------------------------------------------------------------

def test_create_release_and_upload_to_the_uploads_host(fake_api):
    client = github(fake_api)
    release = client.create_release("backup-20240105_020000", body="nightly", make_latest=False)
    assert fake_api.calls("POST", r"/releases$")[0].json()["make_latest"] == "false"
    asset = client.upload_asset(release, "backup_20240105_020000.sql.gz", io.BytesIO(BACKUP))
    assert asset["size"] == len(BACKUP) and asset["digest"] == "sha256:" + hashlib.sha256(BACKUP).hexdigest()
    upload = fake_api.calls("POST", origin="uploads")[0]
    assert upload.path.endswith(f"/releases/{release['id']}/assets") and "{" not in upload.url
    assert upload.arg("name") == "backup_20240105_020000.sql.gz"
    assert upload.headers["content-type"] == "application/gzip" and upload.body == BACKUP
    assert upload.authorization == f"Bearer {fake_api.github.token}"


def test_duplicate_asset_is_422_unless_replaced(fake_api):
    client = github(fake_api)
    release = client.create_release("backup-20240105_020000")
    client.upload_asset(release, "b.sql.gz", b"old")
    with pytest.raises(APIError) as caught:
        client.upload_asset(release, "b.sql.gz", b"new")
    assert caught.value.status == 422 and caught.value.code == "already_exists"
    data = io.BytesIO(b"new bytes")
    asset = client.upload_asset(release, "b.sql.gz", data, replace=True)
    assert asset["size"] == len(b"new bytes") and fake_api.github.blobs[asset["id"]] == b"new bytes"


def test_delete_release_leaves_the_tag_until_it_is_deleted(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    client = github(fake_api)
    client.delete_release(release["id"])
    assert fake_api.github.releases == [] and "backup-20240101_020000" in fake_api.github.tags
    assert client.delete_tag("backup-20240101_020000") is True
    assert fake_api.github.tags == set()
    assert client.delete_tag("backup-20240101_020000") is False  # 422 "Reference does not exist": already gone
    assert fake_api.calls("DELETE", r"/git/refs/tags/backup-20240101_020000$")


# -- GitHub: Actions, security, access, issues --------------------------------------------------------------------

def test_workflow_runs_are_paged_out_of_their_object(fake_api):
    for hours in range(7, 0, -1):
        fake_api.github.add_run("database-backup.yml", created_at=NOW - timedelta(hours=hours),
                                conclusion="failure" if hours == 1 else "success")
    client = github(fake_api)
    runs = client.workflow_runs("database-backup.yml")
    assert len(runs) == 7 and len(fake_api.calls("GET", r"/runs$")) == 2
    assert client.latest_run("database-backup.yml")["conclusion"] == "failure"


def test_unknown_workflow_is_404(fake_api):
    with pytest.raises(APIError) as caught:
        github(fake_api).workflow_runs("nope.yml")
    assert caught.value.status == 404


def test_dependabot_alerts_use_cursor_pages(fake_api):
    for n in range(7):
        fake_api.github.add_alert("critical" if n == 0 else "low", package=f"pkg{n}")
    fake_api.github.add_alert("high", state="fixed")
    alerts = github(fake_api).dependabot_alerts()
    assert len(alerts) == 7 and alerts[0]["security_advisory"]["severity"] == "critical"
    calls = fake_api.calls("GET", r"/dependabot/alerts")
    assert len(calls) == 2 and calls[1].arg("after") and not any(c.arg("page") for c in calls)


def test_dependabot_disabled_is_a_403_with_its_own_hint(fake_api):
    fake_api.github.dependabot_enabled = False
    with pytest.raises(APIError) as caught:
        github(fake_api).dependabot_alerts()
    assert caught.value.status == 403 and "disabled" in caught.value.detail and "enable" in caught.value.hint


@pytest.mark.parametrize("environment", [None, "production"])
def test_set_secret_is_a_sealed_box_the_server_can_open(fake_api, environment):
    if environment:
        fake_api.github.add_environment(environment)
    client = github(fake_api)
    assert client.set_secret("DATABASE_URL", "postgresql://u:new@h/db", environment=environment) == "created"
    assert client.set_secret("DATABASE_URL", "postgresql://u:newer@h/db", environment=environment) == "updated"
    assert fake_api.github.secret_value("DATABASE_URL", environment) == "postgresql://u:newer@h/db"
    body = fake_api.calls("PUT", r"/secrets/DATABASE_URL$")[0].json()
    assert set(body) == {"encrypted_value", "key_id"} and "new@" not in body["encrypted_value"]
    names = [s["name"] for s in client.secrets(environment)]
    assert names == ["DATABASE_URL"]


def test_secret_listing_environments_and_dates(fake_api):
    fake_api.github.add_secret("OLD", updated_at=NOW - timedelta(days=200))
    fake_api.github.add_secret("DEPLOY_KEY", environment="production")
    client = github(fake_api)
    assert [e["name"] for e in client.environments()] == ["production"]
    assert client.secrets()[0]["updated_at"] == (NOW - timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "value" not in client.secrets("production")[0]


def test_collaborators_deploy_keys_and_pulls(fake_api):
    for n, role in enumerate(["admin", "write", "read", "maintain", "triage", "write"]):
        fake_api.github.add_collaborator(f"user{n}", role)
    fake_api.github.add_deploy_key("backup-bot", read_only=False)
    fake_api.github.add_pull("Bump lodash", created_at=NOW - timedelta(days=40))
    client = github(fake_api)
    people = client.collaborators()
    assert [highest_permission(p) for p in people] == ["admin", "write", "read", "maintain", "triage", "write"]
    assert client.deploy_keys()[0]["read_only"] is False
    assert client.pulls()[0]["user"]["login"] == "dependabot[bot]"


def test_issue_lifecycle_and_lookup_by_title(fake_api):
    fake_api.github.add_pull("Daily health check failed")  # same title, but a pull request
    client = github(fake_api)
    assert client.find_open_issue("Daily health check failed") is None
    issue = client.create_issue("Daily health check failed", "sentry.errors failed", labels=["ops", "automated"])
    assert [label["name"] for label in issue["labels"]] == ["ops", "automated"]
    assert client.find_open_issue("Daily health check failed", labels=["ops"])["number"] == issue["number"]
    client.comment_issue(issue["number"], "still failing")
    closed = client.close_issue(issue["number"])
    assert closed["state"] == "closed" and fake_api.github.comments[issue["number"]][0]["body"] == "still failing"
    assert client.find_open_issue("Daily health check failed") is None


# -- dry run -------------------------------------------------------------------------------------------------------

def test_dry_run_refuses_github_mutations_but_reads(fake_api):
    release = fake_api.github.add_backup("backup-20240101_020000", BACKUP)
    client = github(fake_api, dry_run=True)
    assert client.latest_backup()["id"] == release["id"]
    for attempt in (lambda: client.create_issue("x"), lambda: client.delete_release(release["id"]),
                    lambda: client.delete_tag("backup-20240101_020000"),
                    lambda: client.set_secret("X", "y"), lambda: client.upload_asset(release, "n", b"d")):
        with pytest.raises(DryRunRefused, match="dry run: would"):
            attempt()
    assert not [c for c in fake_api.calls() if c.method != "GET"]
    assert len(client.planned) == 5 and client.planned[1].startswith("DELETE ")
    assert fake_api.github.releases and fake_api.github.tags


def test_dry_run_refuses_render_changes(fake_api):
    client = render(fake_api, dry_run=True)
    assert client.get_service()["suspended"] == "not_suspended"
    for attempt in (client.suspend, client.resume, client.restart, lambda: client.set_maintenance(True),
                    lambda: client.set_env_var("MAINTENANCE_MODE", "1"), lambda: client.rollback("dep-x")):
        with pytest.raises(DryRunRefused):
            attempt()
    assert [c.method for c in fake_api.calls()] == ["GET"]
    assert fake_api.render.restarts == 0 and fake_api.render.env[fake_api.render.service_id] == {}


def test_dry_run_allows_supabase_read_only_sql_but_refuses_writes(fake_api):
    client = Supabase.from_settings(fake_api.settings(), dry_run=True)
    assert client.database_size() == 123456789
    with pytest.raises(DryRunRefused):
        client.query("delete from x", read_only=False)
    assert len(fake_api.supabase.queries) == 1


def test_dry_run_refuses_cloudflare_blocks(fake_api):
    with pytest.raises(DryRunRefused, match="POST"):
        Cloudflare.from_settings(fake_api.settings(), dry_run=True).block_ip("198.51.100.4")
    assert fake_api.cloudflare.rules == []


# -- Render --------------------------------------------------------------------------------------------------------

def test_suspend_then_poll_until_suspended(fake_api):
    fake_api.render.suspend_after_polls = 3
    client = render(fake_api)
    client.suspend()
    service = client.wait_suspended()
    assert service["suspended"] == "suspended" and service["suspenders"] == ["user"]
    assert len(fake_api.calls("GET", r"/services/srv-[^/]+$")) == 4
    suspend = fake_api.calls("POST", r"/suspend$")[0]
    assert suspend.body == b"" and suspend.authorization == f"Bearer {fake_api.render.token}"
    client.resume()
    assert client.wait_suspended(False)["suspended"] == "not_suspended"


def test_suspend_that_never_shows_times_out(fake_api):
    fake_api.render.suspend_after_polls = None
    client = render(fake_api, render={"poll_timeout": 0.3})
    client.suspend()
    with pytest.raises(ServiceError, match="did not happen within 0.3 s"):
        client.wait_suspended()


def test_suspend_500_then_202_is_not_retried_automatically(fake_api):
    fake_api.fail(r"/suspend$", status=500)
    client = render(fake_api)
    with pytest.raises(APIError):
        client.suspend()
    client.suspend()  # the caller decides to try again
    assert len(fake_api.calls("POST", r"/suspend$")) == 2


def test_maintenance_mode_patch(fake_api):
    fake_api.render.maintenance_after_polls = 2
    client = render(fake_api)
    client.set_maintenance(True)
    assert fake_api.calls("PATCH")[0].json() == {"serviceDetails": {"maintenanceMode": {"enabled": True, "uri": ""}}}
    assert maintenance_enabled(client.wait_maintenance(True))
    client.set_maintenance(False)
    assert not maintenance_enabled(client.wait_maintenance(False))


def test_deploys_use_cursor_pages_newest_first(fake_api):
    for hours in range(7, 0, -1):
        fake_api.render.add_deploy("live", created_at=NOW - timedelta(hours=hours))
    fake_api.render.add_deploy("build_failed", created_at=NOW)
    client = render(fake_api)
    deploys = client.deploys(limit=50)
    assert len(deploys) == 8 and deploys[0]["status"] == "build_failed"
    calls = fake_api.calls("GET", r"/deploys$")
    assert len(calls) == 2 and calls[1].arg("cursor") == deploys[4]["id"]
    assert last_live(deploys)["status"] == "live"
    assert [d["status"] for d in client.deploys(limit=3)] == ["build_failed", "live", "deactivated"]


def test_rollback_and_trigger_deploy(fake_api):
    good = fake_api.render.add_deploy("live", created_at=NOW - timedelta(hours=2), commit_id="a" * 40)
    fake_api.render.add_deploy("build_failed", created_at=NOW - timedelta(hours=1))
    client = render(fake_api)
    rolled = client.rollback(good["id"])
    assert rolled["trigger"] == "rollback" and rolled["commit"]["id"] == "a" * 40
    assert client.trigger_deploy(commit_id="b" * 40)["trigger"] == "api"


def test_deploy_conflict_is_409_with_a_hint(fake_api):
    fake_api.render.deploy_conflict = True
    with pytest.raises(APIError) as caught:
        render(fake_api).trigger_deploy()
    assert caught.value.status == 409 and "in progress" in caught.value.hint


def test_set_env_var_touches_only_that_variable(fake_api):
    fake_api.render.env[fake_api.render.service_id].update({"DATABASE_URL": "postgres://x", "NODE_ENV": "production"})
    client = render(fake_api)
    assert client.set_env_var("MAINTENANCE_MODE", "1") == {"key": "MAINTENANCE_MODE", "value": "1"}
    assert client.env_vars() == {"DATABASE_URL": "postgres://x", "NODE_ENV": "production", "MAINTENANCE_MODE": "1"}
    assert [c.path.rsplit("/", 1)[1] for c in fake_api.calls("PUT")] == ["MAINTENANCE_MODE"]
    client.delete_env_var("MAINTENANCE_MODE")
    assert "MAINTENANCE_MODE" not in fake_api.render.env[fake_api.render.service_id]


def test_restart_and_logs(fake_api):
    fake_api.render.add_log("server started", timestamp=NOW - timedelta(minutes=5))
    fake_api.render.add_log("FATAL: out of memory", level="error", timestamp=NOW)
    client = render(fake_api)
    client.restart()
    assert fake_api.render.restarts == 1
    assert [line["message"] for line in client.logs(limit=10)] == ["FATAL: out of memory", "server started"]
    assert fake_api.calls("GET", r"/logs$")[0].arg("ownerId") == fake_api.render.service["ownerId"]


def test_render_unknown_service_and_bad_key(fake_api):
    with pytest.raises(APIError) as caught:
        render(fake_api, render={"service_id": "srv-missing"}).get_service()
    assert caught.value.status == 404 and "service_id" in caught.value.hint
    bad = Render.from_settings(fake_api.settings(env={**fake_api.env(), "RENDER_API_KEY": "rnd_wrongwrongwrong"}))
    with pytest.raises(APIError) as caught:
        bad.get_service()
    assert caught.value.status == 401 and "RENDER_API_KEY" in caught.value.hint
    assert "rnd_wrongwrongwrong" not in str(caught.value)


def test_render_429_with_retry_after_is_retried(fake_api):
    fake_api.fail(r"/services/srv-[^/]+$", status=429, headers={"Retry-After": "1"},
                  body={"id": "rate_limited", "message": "rate limit exceeded"})
    started = time.monotonic()
    assert render(fake_api).get_service()["id"] == fake_api.render.service_id
    assert time.monotonic() - started >= 0.9


def test_render_429_with_a_long_retry_after_is_reported(fake_api):
    fake_api.fail(r"/services/srv-[^/]+$", status=429, headers={"Retry-After": "3600"}, times=None)
    with pytest.raises(RateLimited, match="resets at"):
        render(fake_api).get_service()
    assert len(fake_api.calls("GET")) == 1


# -- Sentry --------------------------------------------------------------------------------------------------------

def test_sentry_pages_until_results_false(fake_api):
    for n in range(7):
        fake_api.sentry.add_issue(f"Error {n}", count=n + 1, last_seen=NOW - timedelta(minutes=n))
    fake_api.sentry.add_issue("Old and resolved", status="resolved")
    issues = Sentry.from_settings(fake_api.settings()).issues()
    assert [i.title for i in issues] == [f"Error {n}" for n in range(7)]
    assert issues[0].count == 1 and isinstance(issues[0].count, int) and issues[0].period_events == 1
    calls = fake_api.calls("GET", r"/issues/$")
    assert len(calls) == 2 and calls[1].arg("cursor") == "0:5:0" and calls[0].arg("statsPeriod") == "24h"
    assert calls[0].arg("query") == "is:unresolved"


def test_sentry_query_filters_first_seen(fake_api):
    fake_api.sentry.add_issue("New since the restore", first_seen=NOW - timedelta(minutes=10))
    fake_api.sentry.add_issue("Old", first_seen=NOW - timedelta(days=3))
    issues = Sentry.from_settings(fake_api.settings()).issues("is:unresolved firstSeen:-1h", stats_period="")
    assert [i.title for i in issues] == ["New since the restore"] and issues[0].period_events == 0


def test_sentry_rejects_unsupported_stats_period_before_sending(fake_api):
    with pytest.raises(ConfigError, match="24h"):
        Sentry.from_settings(fake_api.settings()).issues(stats_period="1h")
    assert not fake_api.calls()


def test_sentry_fake_answers_400_to_a_bad_stats_period(fake_api):
    client = Sentry.from_settings(fake_api.settings())
    with pytest.raises(APIError, match="Invalid stats_period"):
        client.get_json("/projects/acme/lottery-backend/issues/", {"statsPeriod": "1h"})


def test_sentry_issue_from_api_reads_count_as_a_string():
    issue = SentryIssue.from_api({"id": "1", "count": "1234", "userCount": 3,
                                  "stats": {"24h": [[1.0, 5], [2.0, 7]]}}, "24h")
    assert (issue.count, issue.user_count, issue.period_events) == (1234, 3, 12)


def test_sentry_event_stats_and_wrong_project(fake_api):
    fake_api.sentry.event_totals = {"accepted": [1, 2, 3], "rate_limited": [0, 0, 4]}
    stats = Sentry.from_settings(fake_api.settings()).event_stats()
    assert {g["by"]["outcome"]: g["totals"]["sum(quantity)"] for g in stats["groups"]} == {"accepted": 6,
                                                                                          "rate_limited": 4}
    with pytest.raises(APIError) as caught:
        Sentry.from_settings(fake_api.settings(sentry={"project": "other"})).issues()
    assert caught.value.status == 404 and "ops.sentry.project" in caught.value.hint


# -- Supabase and Cloudflare ---------------------------------------------------------------------------------------

def test_supabase_project_and_health(fake_api):
    fake_api.supabase.health["pooler"] = "UNHEALTHY"
    client = Supabase.from_settings(fake_api.settings())
    assert client.project()["status"] == "ACTIVE_HEALTHY"
    health = {h["name"]: h for h in client.health(("db", "pooler"))}
    assert health["db"]["status"] == "ACTIVE_HEALTHY" and health["pooler"]["error"]
    assert fake_api.calls("GET", r"/health$")[0].query["services"] == ["db", "pooler"]
    assert client.readonly()["enabled"] is False and client.disk_util()["metrics"]["fs_size_bytes"] > 0
    assert client.backups()["backups"][0]["status"] == "COMPLETED"


def test_supabase_bad_token(fake_api):
    client = Supabase.from_settings(fake_api.settings(env={**fake_api.env(), "SUPABASE_ACCESS_TOKEN": "sbp_bad"}))
    with pytest.raises(APIError) as caught:
        client.project()
    assert caught.value.status == 401 and "SUPABASE_ACCESS_TOKEN" in caught.value.hint


@pytest.mark.parametrize("ip, target", [("198.51.100.4", "ip"), ("2001:db8::1", "ip6"),
                                        ("203.0.113.0/24", "ip_range")])
def test_cloudflare_block_is_idempotent_and_unblock_removes_it(fake_api, ip, target):
    client = Cloudflare.from_settings(fake_api.settings())
    rule = client.block_ip(ip, notes="incident 2024-05-01")
    assert rule["configuration"]["target"] == target
    again = client.block_ip(ip, notes="incident 2024-05-01")  # 10009 duplicate -> the existing rule
    assert again["id"] == rule["id"] and len(fake_api.cloudflare.rules) == 1
    assert client.unblock_ip(ip) == [rule["id"]] and fake_api.cloudflare.rules == []
    assert client.unblock_ip(ip) == []


def test_cloudflare_lists_across_pages_and_rejects_garbage(fake_api):
    for n in range(7):
        fake_api.cloudflare.add_rule(f"198.51.100.{n}")
    client = Cloudflare.from_settings(fake_api.settings())
    assert len(client.access_rules()) == 7 and len(fake_api.calls("GET")) == 2
    with pytest.raises(OpsError, match="not an IP address"):
        client.block_ip("10.0.0.999")


def test_cloudflare_bad_token(fake_api):
    token = "cf-wrong-token-value-123"
    client = Cloudflare.from_settings(fake_api.settings(env={**fake_api.env(), "CLOUDFLARE_API_TOKEN": token}))
    with pytest.raises(APIError) as caught:
        client.access_rules()
    assert caught.value.code == 10000 and "CLOUDFLARE_API_TOKEN" in caught.value.hint
    assert token not in str(caught.value)


# -- the app's own endpoints ---------------------------------------------------------------------------------------

def test_app_health_ok_with_latency_and_excerpt(fake_api):
    probe = App.from_settings(fake_api.settings()).health()
    assert probe.ok and probe.status == 200 and probe.latency_ms > 0 and '"status": "ok"' in probe.excerpt
    assert [p.ok for p in App.from_settings(fake_api.settings()).check_endpoints()] == [True, True]


def test_app_health_500_is_data_not_an_exception(fake_api):
    fake_api.app.set("/health", status=500)
    probe = App.from_settings(fake_api.settings()).health()
    assert not probe.ok and probe.status == 500 and probe.error == "expected 200, got 500"
    assert len(fake_api.calls("GET", r"/app/health")) == 1  # no retries


def test_app_slow_health_times_out(fake_api):
    fake_api.app.set("/health", delay=2)
    probe = App.from_settings(fake_api.settings(app={"timeout": 0.3})).health()
    assert not probe.ok and probe.status is None and probe.error == "timed out after 0.3 s"


def test_app_down_says_so(fake_api):
    fake_api.app.down()
    probe = App.from_settings(fake_api.settings()).health()
    assert not probe.ok and probe.status is None and "closed the connection" in probe.error


def test_app_wait_healthy_polls_until_200(fake_api):
    fake_api.app.sequence("/health", [503, 503, 200])
    probe = App.from_settings(fake_api.settings()).wait_healthy(timeout=5, interval=0.01)
    assert probe.ok and len(fake_api.calls("GET", r"/app/health")) == 3


def test_app_excerpt_is_redacted(fake_api):
    fake_api.app.set("/health", status=500, body="error: could not connect to postgresql://app:hunter22@db/app")
    fake_api.app.routes["/health"].body = "could not connect to postgresql://app:hunter22@db/app"
    fake_api.app.routes["/health"].status = 200
    probe = App.from_settings(fake_api.settings()).health()
    assert "hunter22" not in probe.excerpt and "postgresql://app:***@db/app" in probe.excerpt


# -- no secret in any message --------------------------------------------------------------------------------------

def _failures(fake_api):
    """(name, callable) pairs that each raise an OpsError through a different path."""
    gh_token = fake_api.github.token
    yield "echoed-token", lambda: (fake_api.fail(r"/releases$", 400, body={"message": f"bad token {gh_token}"}),
                                   github(fake_api).releases())
    yield "500", lambda: (fake_api.fail(r"/releases$", 500, times=None), github(fake_api).releases())
    yield "timeout", lambda: (fake_api.slow(r"/releases$", 3, times=None),
                              github(fake_api, github={"timeout": 0.2}).releases())
    yield "drop", lambda: (fake_api.drop(r"/services/", times=None), render(fake_api).get_service())
    yield "rate", lambda: (fake_api.rate_limit(r"/releases$", reset_in=3600, times=None), github(fake_api).releases())
    yield "sentry-401", lambda: Sentry.from_settings(
        fake_api.settings(env={**fake_api.env(), "SENTRY_AUTH_TOKEN": "sntryu_" + "f" * 64})).issues()
    yield "dry-run", lambda: github(fake_api, dry_run=True).create_issue("x")
    yield "cut-download", lambda: (
        fake_api.cut(r"/github-production-release-asset/", after=10, times=None),
        github(fake_api).download_asset(fake_api.github.add_backup("backup-20240101_000000", BACKUP)["assets"][0],
                                        io.BytesIO(), attempts=2))


@pytest.mark.parametrize("case", ["echoed-token", "500", "timeout", "drop", "rate", "sentry-401", "dry-run",
                                  "cut-download"])
def test_no_token_in_any_error(fake_api, case):
    action = dict(_failures(fake_api))[case]
    with pytest.raises(OpsError) as caught:
        action()
    text = f"{caught.value}\n{caught.value.hint}\n{caught.value!r}"
    assert_no_token(fake_api, text)
    assert "f" * 64 not in text


def test_fake_settings_build_a_valid_settings_object(fake_api):
    settings = fake_api.settings()
    assert isinstance(settings, Settings) and settings.get("github.api_url").startswith(fake_api.url)
    assert settings.require_env("GITHUB_TOKEN") == fake_api.github.token
