"""restore.download against the fake GitHub (api + a separate blob host that rejects any Authorization header)."""
from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

import pytest
from invoke import Config, Context

from ops import download, restore
from ops.clients.github import DownloadInterrupted, GitHub
from ops.errors import VerificationFailed

DATA = os.urandom(300_000)
BLOB = r"/github-production-release-asset/"


def release(tag: str, created: str, *, draft: bool = False, assets=None) -> dict:
    return {"tag_name": tag, "created_at": created, "draft": draft,
            "assets": assets if assets is not None else [{"name": "backup_x.sql.gz", "size": 3, "id": 1,
                                                          "state": "uploaded", "digest": "sha256:" + "a" * 64}]}


# -- pure: which backup --------------------------------------------------------------------------------------------
def test_latest_is_the_newest_created_at_among_published_backup_releases():
    releases = [release("backup-20250101_020000", "2025-01-01T02:00:00Z"),
                release("backup-20250103_020000", "2025-01-03T02:00:00Z", draft=True),
                release("v2.0.0", "2025-01-04T00:00:00Z"),
                release("backup-20250102_020000", "2025-01-02T02:00:00Z")]
    chosen = download.choose_backup(releases, "backup-")
    assert chosen.tag == "backup-20250102_020000" and chosen.digest == "a" * 64 and chosen.size == 3


def test_a_tag_picks_that_release_and_an_unknown_tag_says_so():
    releases = [release("backup-20250101_020000", "2025-01-01T02:00:00Z")]
    assert download.choose_backup(releases, "backup-", "backup-20250101_020000").tag == "backup-20250101_020000"
    with pytest.raises(VerificationFailed, match="no published backup release tagged"):
        download.choose_backup(releases, "backup-", "backup-19990101_000000")
    with pytest.raises(VerificationFailed, match="no published release"):
        download.choose_backup([], "backup-")


@pytest.mark.parametrize("assets, message", [
    ([], "has no backup asset"),
    ([{"name": "notes.txt", "size": 1, "id": 1}], "has no backup asset"),
    ([{"name": "a.sql.gz", "size": 1, "id": 1}, {"name": "b.sql.gz", "size": 1, "id": 2}], "several backup assets"),
    ([{"name": "x;rm -rf y.sql.gz", "size": 1, "id": 1}], "not a backup file name"),
    ([{"name": ".sql.gz", "size": 1, "id": 1}], "not a backup file name"),
    ([{"name": "b.sql.gz", "size": 1, "id": 1, "digest": "md5:abc"}], "unsupported asset digest"),
])
def test_odd_assets_are_refused(assets, message):
    with pytest.raises(VerificationFailed, match=message):
        download.choose_backup([release("backup-20250101_020000", "2025-01-01T00:00:00Z", assets=assets)], "backup-")


def test_a_server_supplied_path_is_reduced_to_its_base_name():
    assets = [{"name": "../../etc/backup_x.sql.gz", "size": 1, "id": 1}]
    assert download.choose_backup([release("backup-1", "2025", assets=assets)], "backup-").name == "backup_x.sql.gz"


def test_digest_parsing():
    assert download.parse_digest(None) is None and download.parse_digest("") is None
    assert download.parse_digest("sha256:" + "AB" * 32) == "ab" * 32
    with pytest.raises(ValueError):
        download.parse_digest("sha256:xyz")


def test_progress_bar_only_on_a_terminal_outside_ci():
    class Tty:
        def isatty(self):
            return True

    assert download.interactive({}, Tty()) is True
    assert download.interactive({"CI": "true"}, Tty()) is False
    assert download.interactive({}, object()) is False


# -- against the fake GitHub ------------------------------------------------------------------------------------------
@pytest.fixture
def gh(fake_api):
    return GitHub.from_settings(fake_api.settings())


def test_private_repo_download_never_sends_the_token_to_the_blob_host(fake_api, gh, tmp_path):
    fake_api.github.add_backup("backup-20250101_020000", DATA)
    chosen = download.choose_backup(gh.releases(), "backup-")
    got = download.fetch(gh, chosen, tmp_path)
    assert got.path.read_bytes() == DATA and got.sha256 == hashlib.sha256(DATA).hexdigest()
    assert download.read_sidecar(got.path) == got.sha256
    assert (tmp_path / "backup_20250101_020000.sql.gz.sha256").read_text().endswith("  backup_20250101_020000.sql.gz\n")
    api = fake_api.calls("GET", r"/releases/assets/", origin="api")
    blob = fake_api.calls("GET", BLOB, origin="blob")
    assert api and all(c.authorization for c in api)
    assert blob and not any(c.authorization for c in blob)
    assert not list(tmp_path.glob("*.part"))


def test_an_interrupted_download_resumes_from_where_it_stopped_byte_identical(fake_api, gh, tmp_path):
    fake_api.github.add_backup("backup-20250101_020000", DATA)
    chosen = download.choose_backup(gh.releases(), "backup-")
    fake_api.cut(BLOB, after=120_000, times=1)
    with pytest.raises(DownloadInterrupted):
        download.fetch(gh, chosen, tmp_path, attempts=1)      # the first run gives up: the part file stays
    part = tmp_path / "backup_20250101_020000.sql.gz.part"
    kept = part.stat().st_size
    assert 0 < kept < len(DATA) and not (tmp_path / "backup_20250101_020000.sql.gz").exists()
    got = download.fetch(gh, chosen, tmp_path)                # a later run resumes it
    assert got.resumed_from == kept and got.path.read_bytes() == DATA
    ranges = [c.headers.get("range") for c in fake_api.calls("GET", BLOB, origin="blob")]
    assert ranges == [None, f"bytes={kept}-"]
    assert not part.exists()


def test_drops_and_5xx_within_one_run_are_retried_and_resumed(fake_api, gh, tmp_path):
    fake_api.github.add_backup("backup-20250101_020000", DATA)
    fake_api.fail(r"/releases$", status=502, times=1)
    fake_api.cut(BLOB, after=50_000, times=2)
    got = download.fetch(gh, download.choose_backup(gh.releases(), "backup-"), tmp_path)
    assert got.path.read_bytes() == DATA


def test_a_digest_mismatch_is_refused_and_nothing_is_kept(fake_api, gh, tmp_path):
    fake_api.github.add_backup("backup-20250101_020000", DATA, digest="sha256:" + "0" * 64)
    with pytest.raises(VerificationFailed, match="does not match the release's digest"):
        download.fetch(gh, download.choose_backup(gh.releases(), "backup-"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_without_a_digest_the_sha256_is_still_recorded(fake_api, gh, tmp_path):
    fake_api.github.add_backup("backup-20250101_020000", DATA, digest=None)
    got = download.fetch(gh, download.choose_backup(gh.releases(), "backup-"), tmp_path)
    assert download.read_sidecar(got.path) == hashlib.sha256(DATA).hexdigest()


def test_a_complete_file_already_there_is_reused(fake_api, gh, tmp_path):
    fake_api.github.add_backup("backup-20250101_020000", DATA)
    chosen = download.choose_backup(gh.releases(), "backup-")
    download.fetch(gh, chosen, tmp_path)
    again = download.fetch(gh, chosen, tmp_path)
    assert again.reused and len(fake_api.calls("GET", BLOB, origin="blob")) == 1


def test_download_task_reads_every_page_and_takes_the_newest(fake_api, tmp_path, monkeypatch, capsys):
    base = datetime(2025, 1, 1, 2, tzinfo=timezone.utc)
    for day in range(12):                                         # more releases than one page holds (page_cap 5)
        when = base + timedelta(days=day)
        fake_api.github.add_backup(f"backup-{when:%Y%m%d_%H%M%S}", DATA + bytes([day]), created_at=when)
    fake_api.github.add_backup("backup-20260101_020000", b"draft", draft=True,
                               created_at=base + timedelta(days=400))
    monkeypatch.setenv("GITHUB_TOKEN", fake_api.github.token)
    c = Context(Config(overrides={"ops": {**fake_api.settings_ops(), "audit_log": str(tmp_path / "a.jsonl")}}))
    restore.download(c, dest=str(tmp_path))
    out = capsys.readouterr()
    assert "backup-20250112_020000" in out.out
    assert (tmp_path / "backup_20250112_020000.sql.gz").read_bytes() == DATA + bytes([11])
    assert len(fake_api.calls("GET", r"/releases$")) + len(fake_api.calls("GET", r"/repositories/")) >= 3
    assert out.err.count("\r") == 0                               # no progress bar outside a terminal
