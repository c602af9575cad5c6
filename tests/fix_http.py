"""The fake API server as a pytest plugin (httpx's serve_in_thread / pip's server_running shape).

Fixtures:
  fake_servers   session: the listening servers (api on 127.0.0.1, uploads on 127.0.0.1, blob on localhost)
  fake_api       function: a fresh `tests.fakes.FakeAPI` (state, records, faults) attached to those servers;
                 also clears proxy variables so requests to loopback go straight to the fake.

    def test_x(fake_api):
        fake_api.github.add_backup("backup-20240101_020000", b"...")
        settings = fake_api.settings()              # Settings.from_dict(ops=settings_ops(), env=env())
        gh = GitHub.from_settings(settings)
See tests/fakes/api.py for the fault-injection and record API.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fakes import FakeAPI, FakeServers

PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture(scope="session")
def fake_servers() -> Iterator[FakeServers]:
    servers = FakeServers()
    yield servers
    servers.close()


@pytest.fixture
def fake_api(fake_servers: FakeServers, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPI]:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    api = FakeAPI(fake_servers)
    yield api
    api.close()
    assert not api.errors, "the fake API itself failed:\n" + "\n".join(api.errors)
