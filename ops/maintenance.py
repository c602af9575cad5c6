"""Effect: maintenance mode for a production restore, through the Render API, and always back out of it.

Two modes (runbook step 3):
  suspend  `POST /services/{id}/suspend`, then poll `GET /services/{id}` until `suspended` reads "suspended";
           leaving is `POST .../resume` and polling until it reads "not_suspended".
  page     Render's own maintenance page: `PATCH /services/{id}` with serviceDetails.maintenanceMode.enabled, polled
           until the service shows it; leaving turns it off again. Users see a notice rather than an error.

`maintained()` is the context manager the restore runs inside. Once a request to enter maintenance may have
reached Render (a 2xx, a 5xx, a dropped connection: anything but a clear 4xx refusal), it leaves maintenance on
EVERY way out of the block — normal exit, an exception, Ctrl-C (KeyboardInterrupt), a suspend Render never
confirms — unless `keep=True` (`--keep-suspended`), and reports what happened through `report` and `.left`.

Suspend, resume and the PATCH are not retried by the HTTP client (POST and PATCH are not idempotent in general);
here they are, because each is idempotent in effect: asking twice to suspend leaves the service suspended. A dry
run uses a client built with `dry_run=True`, which refuses the mutating calls where they would be sent.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, OpsError, ServiceError

MODES = ("suspend", "page")


@dataclass(frozen=True)
class Outcome:
    """What entering or leaving maintenance came to: `ok`, a one-line `detail`, and how long it took."""

    ok: bool
    detail: str
    seconds: float
    interrupted: bool = False   # Ctrl-C while leaving: reported, then raised again once the outcome is known


def is_on(service: dict[str, Any], mode: str) -> bool:
    """Pure: does the service object show maintenance `mode` on?"""
    if mode == "suspend":
        return service.get("suspended") == "suspended"
    details = service.get("serviceDetails") or {}
    return bool((details.get("maintenanceMode") or {}).get("enabled"))


def describe(service: dict[str, Any]) -> str:
    """Pure: the service's state in a few words, for the plan."""
    name = service.get("name") or service.get("id") or "?"
    state = service.get("suspended", "?")
    suspenders = ", ".join(service.get("suspenders") or [])
    page = "on" if is_on(service, "page") else "off"
    return f"{name} ({service.get('id', '?')}): {state}" + (f" by {suspenders}" if suspenders else "") + \
        f", maintenance page {page}"


def ambiguous(exc: BaseException) -> bool:
    """Pure: may a failed request still have reached the service? Only a clear 4xx answer says it did not act."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status >= 500 or status == 429
    return isinstance(exc, ServiceError)   # connection dropped, timed out: it may have arrived


def manual_resume_hint(mode: str, service_id: str, api_url: str) -> str:
    """Pure: how an operator leaves maintenance by hand when the tool could not (no key in the text)."""
    if mode == "suspend":
        call = f'curl -X POST -H "Authorization: Bearer $RENDER_API_KEY" {api_url}/services/{service_id}/resume'
        what = "resume the service"
    else:
        body = '{"serviceDetails": {"maintenanceMode": {"enabled": false}}}'
        call = (f"curl -X PATCH -H \"Authorization: Bearer $RENDER_API_KEY\" -H 'Content-Type: application/json' "
                f"-d '{body}' {api_url}/services/{service_id}")
        what = "turn the maintenance page off"
    return f"{what} in the Render dashboard, or: {call}"


class Maintenance:
    """Enter and leave maintenance `mode` on one Render service, with bounded polls and retried requests."""

    def __init__(self, render: Any, mode: str = "suspend", *, timeout: float | None = None,
                 interval: float | None = None, attempts: int = 4, backoff: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        if mode not in MODES:
            raise ConfigError(f"unknown maintenance mode {mode!r}", hint="use --maintenance suspend or page")
        self.render, self.mode = render, mode
        self.timeout = float(render.poll_timeout if timeout is None else timeout)
        self.interval = float(render.poll_interval if interval is None else interval)
        self.attempts, self.backoff, self.sleep, self.clock = attempts, backoff, sleep, clock
        self.requested = False          # a request to enter may have reached Render: leaving is owed
        self.entered: Outcome | None = None
        self.left: Outcome | None = None

    @property
    def noun(self) -> str:
        return "suspend" if self.mode == "suspend" else "maintenance page"

    def service(self) -> dict[str, Any]:
        """GET the service (reachability check for the plan; read-only, allowed in a dry run)."""
        return self.render.get_service()

    def hint(self) -> str:
        return manual_resume_hint(self.mode, self.render.service_id or "srv-...", self.render.base_url)

    # -- requests and polls ----------------------------------------------------------------------------------------
    def _send(self, on: bool) -> None:
        """Send the enter/leave request, retrying 5xx, 429 and dropped connections (idempotent in effect).

        Entering sets `requested` before the first byte leaves (a Ctrl-C mid-request may still have suspended the
        service) and clears it only when every attempt was clearly refused (4xx: Render did nothing)."""
        arrived = False
        if on:
            self.requested = True
        for attempt in range(1, self.attempts + 1):
            try:
                if self.mode == "suspend":
                    (self.render.suspend if on else self.render.resume)()
                else:
                    self.render.set_maintenance(on)
                return
            except OpsError as exc:
                arrived = arrived or ambiguous(exc)
                if not ambiguous(exc) or attempt == self.attempts:
                    if on and not arrived:
                        self.requested = False
                    raise
                self.sleep(self.backoff * 2 ** (attempt - 1))

    def _poll(self, on: bool) -> dict[str, Any]:
        """GET the service until it shows the wanted state, for at most `timeout` seconds; a failing GET is
        retried until the deadline too (Render may blip while it suspends)."""
        deadline = self.clock() + self.timeout
        last: str = "no answer yet"
        while True:
            try:
                service = self.render.get_service()
                if is_on(service, self.mode) == on:
                    return service
                last = describe(service)
            except ServiceError as exc:
                last = f"GET failed: {exc.message}"
            if self.clock() >= deadline:
                want = ("suspended" if on else "not_suspended") if self.mode == "suspend" else \
                    f"maintenance page {'on' if on else 'off'}"
                raise ServiceError(f"Render did not show the service {want} within {self.timeout:g} s "
                                   f"(last seen: {last})",
                                   hint="look at the service in the Render dashboard; Render may be slow or failing")
            self.sleep(self.interval)

    # -- enter / leave ---------------------------------------------------------------------------------------------
    def enter(self) -> Outcome:
        started = self.clock()
        self._send(True)
        self._poll(True)
        what = "suspended" if self.mode == "suspend" else "maintenance page on"
        self.entered = Outcome(True, f"{what}, confirmed by Render", self.clock() - started)
        return self.entered

    def leave(self) -> Outcome:
        """Resume (or turn the page off) and poll until Render shows it. Never raises: the outcome says."""
        started = self.clock()
        what = "resumed" if self.mode == "suspend" else "maintenance page off"
        try:
            self._send(False)
            self._poll(False)
        except KeyboardInterrupt:
            self.left = Outcome(False, f"interrupted while leaving maintenance: the service may still be in it; "
                                       f"{self.hint()}", self.clock() - started, interrupted=True)
        except OpsError as exc:
            self.left = Outcome(False, f"could not leave maintenance ({exc.message}); {self.hint()}",
                                self.clock() - started)
        else:
            self.left = Outcome(True, f"{what}, confirmed by Render", self.clock() - started)
        return self.left


@contextmanager
def maintained(m: Maintenance, *, keep: bool = False,
               report: Callable[[Outcome], None] = lambda outcome: None) -> Iterator[Maintenance]:
    """Enter maintenance, run the block, and leave maintenance on every way out once entering was requested.

    The block's own exception (or KeyboardInterrupt) propagates unchanged after leaving; the outcome of leaving is
    passed to `report` and kept in `m.left`, so a failed resume is never silent.
    """
    failed = False
    try:
        m.enter()
        yield m
    except BaseException:
        failed = True
        raise
    finally:
        if m.requested:
            if keep:
                m.left = Outcome(True, f"kept in maintenance as asked (--keep-suspended); when you are done: "
                                       f"{m.hint()}", 0.0)
            else:
                m.leave()
            assert m.left is not None
            report(m.left)
            if m.left.interrupted and not failed:
                raise KeyboardInterrupt   # the Ctrl-C that interrupted leaving still stops the caller
