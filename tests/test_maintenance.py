"""Maintenance mode against the fake Render API: enter, confirm, and always leave, whatever happens in between."""
from __future__ import annotations

import pytest

from ops import maintenance
from ops.clients.base import DryRunRefused
from ops.clients.render import Render
from ops.errors import ServiceError
from ops.maintenance import Maintenance, maintained

SUSPEND, RESUME = r"/suspend$", r"/resume$"


def render_for(fake_api, *, dry_run=False, **ops):
    return Render.from_settings(fake_api.settings(**ops), dry_run=dry_run)


def posts(fake_api, path):
    return len(fake_api.calls("POST", path))


def fast(render, mode="suspend", **kw):
    return Maintenance(render, mode, backoff=0.01, **kw)


# -- pure ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("service, mode, on", [
    ({"suspended": "suspended"}, "suspend", True),
    ({"suspended": "not_suspended"}, "suspend", False),
    ({}, "suspend", False),
    ({"serviceDetails": {"maintenanceMode": {"enabled": True}}}, "page", True),
    ({"serviceDetails": {"maintenanceMode": {"enabled": False}}}, "page", False),
    ({"serviceDetails": {}}, "page", False),
    ({"suspended": "suspended", "serviceDetails": {"maintenanceMode": {"enabled": False}}}, "page", False),
], ids=["suspended", "running", "no-field", "page-on", "page-off", "no-page", "suspended-is-not-page"])
def test_is_on(service, mode, on):
    assert maintenance.is_on(service, mode) is on


@pytest.mark.parametrize("exc, maybe", [
    (ServiceError("dropped"), True),
    (type("E", (ServiceError,), {"status": 503})("x"), True),
    (type("E", (ServiceError,), {"status": 429})("x"), True),
    (type("E", (ServiceError,), {"status": 404})("x"), False),
    (type("E", (ServiceError,), {"status": 401})("x"), False),
    (DryRunRefused("POST /suspend"), False),
], ids=["transport", "5xx", "429", "404", "401", "dry-run"])
def test_ambiguous_failures_may_have_reached_render(exc, maybe):
    assert maintenance.ambiguous(exc) is maybe


def test_manual_hint_names_no_key():
    hint = maintenance.manual_resume_hint("suspend", "srv-1", "https://api.render.com/v1")
    assert "$RENDER_API_KEY" in hint and "/services/srv-1/resume" in hint


# -- against the fake --------------------------------------------------------------------------------------------------
def test_suspend_inside_the_block_and_resumed_after(fake_api):
    fake_api.render.suspend_after_polls = 2
    fake_api.render.resume_after_polls = 2
    reported = []
    with maintained(fast(render_for(fake_api)), report=reported.append) as m:
        assert fake_api.render.service["suspended"] == "suspended"
        assert m.entered.ok
    assert fake_api.render.service["suspended"] == "not_suspended"
    assert reported == [m.left] and m.left.ok and "resumed" in m.left.detail
    assert posts(fake_api, SUSPEND) == 1 and posts(fake_api, RESUME) == 1
    assert fake_api.calls("POST", SUSPEND)[0].authorization == f"Bearer {fake_api.render.token}"


@pytest.mark.parametrize("raised", [RuntimeError("restore blew up"), KeyboardInterrupt()], ids=["exception", "ctrl-c"])
def test_resumed_when_the_block_fails(fake_api, raised):
    reported = []
    with pytest.raises(type(raised)):
        with maintained(fast(render_for(fake_api)), report=reported.append):
            raise raised
    assert posts(fake_api, RESUME) == 1 and fake_api.render.service["suspended"] == "not_suspended"
    assert reported and reported[0].ok


def test_suspend_never_confirming_fails_clearly_and_resumes(fake_api):
    fake_api.render.suspend_after_polls = None   # Render accepts, then never shows "suspended"
    m = fast(render_for(fake_api), timeout=0.3)
    reported = []
    with pytest.raises(ServiceError, match=r"did not show the service suspended within 0.3 s"):
        with maintained(m, report=reported.append):
            pytest.fail("the block must not run when the suspend is not confirmed")
    assert posts(fake_api, SUSPEND) == 1 and posts(fake_api, RESUME) == 1
    assert reported[0].ok and fake_api.render.service["suspended"] == "not_suspended"
    assert len(fake_api.calls("GET", r"/services/[^/]+$")) >= 2   # it polled, bounded


def test_5xx_then_success_on_suspend_and_resume(fake_api):
    fake_api.fail(SUSPEND, status=503, times=2, method="POST")
    fake_api.fail(RESUME, status=500, times=1, method="POST")
    with maintained(fast(render_for(fake_api))) as m:
        assert fake_api.render.service["suspended"] == "suspended"
    assert posts(fake_api, SUSPEND) == 3 and posts(fake_api, RESUME) == 2 and m.left.ok


def test_dropped_connection_on_suspend_still_owes_a_resume(fake_api):
    fake_api.drop(SUSPEND, times=None, method="POST")
    m = fast(render_for(fake_api), attempts=2)
    with pytest.raises(ServiceError):
        with maintained(m):
            pytest.fail("not entered")
    assert m.requested and posts(fake_api, RESUME) == 1


def test_clear_refusal_to_suspend_owes_no_resume(fake_api):
    fake_api.fail(SUSPEND, status=404, times=None, method="POST")
    m = fast(render_for(fake_api))
    with pytest.raises(ServiceError, match="404"):
        with maintained(m):
            pytest.fail("not entered")
    assert not m.requested and posts(fake_api, SUSPEND) == 1 and posts(fake_api, RESUME) == 0 and m.left is None


def test_a_resume_that_keeps_failing_is_reported_not_raised(fake_api):
    fake_api.fail(RESUME, status=503, times=None, method="POST")
    reported = []
    with pytest.raises(RuntimeError, match="original"):
        with maintained(fast(render_for(fake_api), attempts=2), report=reported.append):
            raise RuntimeError("original")
    assert not reported[0].ok and "could not leave maintenance" in reported[0].detail
    assert "/resume" in reported[0].detail and fake_api.render.token not in reported[0].detail


def test_ctrl_c_while_polling_for_the_suspend_still_resumes(fake_api):
    fake_api.render.suspend_after_polls = None

    def interrupt(_seconds):
        raise KeyboardInterrupt

    m = Maintenance(render_for(fake_api), "suspend", sleep=interrupt)
    with pytest.raises(KeyboardInterrupt):
        with maintained(m):
            pytest.fail("not entered")
    assert posts(fake_api, RESUME) == 1


def test_ctrl_c_while_resuming_is_reported_then_raised(fake_api):
    fake_api.render.suspend_after_polls = 0
    fake_api.render.resume_after_polls = None    # the resume is sent, then the poll is interrupted

    def interrupt(_seconds):
        raise KeyboardInterrupt

    reported = []
    with pytest.raises(KeyboardInterrupt):
        with maintained(Maintenance(render_for(fake_api), "suspend", sleep=interrupt), report=reported.append):
            pass
    assert posts(fake_api, RESUME) == 1
    assert reported[0].interrupted and not reported[0].ok and "may still be in it" in reported[0].detail


def test_keep_suspended_sends_no_resume_and_says_how(fake_api):
    reported = []
    with maintained(fast(render_for(fake_api)), keep=True, report=reported.append):
        pass
    assert posts(fake_api, RESUME) == 0 and fake_api.render.service["suspended"] == "suspended"
    assert "--keep-suspended" in reported[0].detail and "/resume" in reported[0].detail


def test_maintenance_page_on_then_off(fake_api):
    fake_api.render.maintenance_after_polls = 2
    with maintained(fast(render_for(fake_api), "page")):
        assert maintenance.is_on(fake_api.render.service, "page")
        assert fake_api.render.service["suspended"] == "not_suspended"
    patches = fake_api.calls("PATCH", r"/services/[^/]+$")
    assert [p.json()["serviceDetails"]["maintenanceMode"]["enabled"] for p in patches] == [True, False]
    assert not maintenance.is_on(fake_api.render.service, "page") and posts(fake_api, SUSPEND) == 0


def test_dry_run_client_refuses_to_suspend_and_nothing_is_sent(fake_api):
    m = fast(render_for(fake_api, dry_run=True))
    assert "not_suspended" in maintenance.describe(m.service())   # reads still work: reachability
    with pytest.raises(DryRunRefused):
        with maintained(m):
            pytest.fail("not entered")
    assert fake_api.calls("POST") == [] and fake_api.calls("PATCH") == [] and not m.requested
