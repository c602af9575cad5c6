"""Local fakes of the services the runbook talks to (GitHub, Render, Sentry, Supabase, Cloudflare, the app).

`server.py` is the framework (threaded loopback servers, records, faults), `api.py` the per-test `FakeAPI`,
one module per service holds its state and routes, and `canned/` the JSON shapes taken from the contract
(../shared/reference/api-contracts.md).
"""
from .api import FakeAPI
from .server import FakeServers, Recorded, Reply

__all__ = ["FakeAPI", "FakeServers", "Recorded", "Reply"]
