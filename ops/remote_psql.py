"""Effect: run psql on a bastion host over SSH, feeding it a dump streamed from here (the `--via HOST` building block).

    with remote.connect(settings, "bastion") as cxn:
        result = RemotePsql(cxn, target.env).run(chunks)        # chunks: an iterable of bytes (a decompressed dump)
    if not result.ok: ...                                         # psql's exit status and output are in `result`

How it stays safe:
- Nothing is written on the bastion. The dump goes through the SSH channel straight into psql's stdin.
- The password never appears on a command line. The remote command only names the non-secret connection
  parameters (host, port, dbname, user, sslmode...); the password is the first line sent on stdin, which a tiny
  `sh` prologue reads into PGPASSWORD (in psql's environment, readable only by that user and root) before it
  `exec`s psql, which then reads the dump from the same stdin. Nothing needs cleaning up afterwards.
- All or nothing (`atomic=True`, the default): we send `BEGIN;` before the dump and `COMMIT;` only after the last
  chunk was sent. If the stream stops early for any reason (the iterator raises, `abort()` is called from another
  thread, this process dies, the SSH connection drops), psql reaches the end of its input with the transaction
  still open, exits, and the server rolls the transaction back. On `abort()` the remote psql is also killed at
  once (its pid is announced by the prologue), rather than left to finish a long statement. psql's own
  `--single-transaction` would COMMIT at end of input, i.e. commit a truncated dump: it is refused here.
  As with `--single-transaction`, a dump containing its own BEGIN/COMMIT (large objects) defeats this.
"""
from __future__ import annotations

import shlex
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, ServiceError
from .redact import redact_text

PID_MARK = b"ops-remote-psql pid "
BEGIN, COMMIT = b"BEGIN;\n", b"\nCOMMIT;\n"
# PG* variables that may go on the remote command line (never PGPASSWORD, PGPASSFILE or key passwords)
PUBLIC_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT",
              "PGSSLKEY", "PGOPTIONS", "PGCONNECT_TIMEOUT", "PGTARGETSESSIONATTRS", "PGAPPNAME", "PGCLIENTENCODING",
              "PGCHANNELBINDING", "PGGSSENCMODE", "PGREQUIREAUTH", "PGSSLNEGOTIATION", "PGLOADBALANCEHOSTS",
              "PGREQUIRESSL", "PGSSLCOMPRESSION", "PGSSLCRL", "PGSSLCRLDIR", "PGSSLSNI", "PGSSLCERTMODE",
              "PGSSLMINPROTOCOLVERSION", "PGSSLMAXPROTOCOLVERSION", "PGKRBSRVNAME", "PGGSSLIB", "PGSERVICE")
_SINGLE_TRANSACTION = ("-1", "--single-transaction")


@dataclass(frozen=True)
class PsqlResult:
    exited: int | None   # psql's exit status; None when it was killed or never reported one
    stdout: str
    stderr: str
    bytes_sent: int      # dump bytes delivered (the BEGIN/COMMIT framing not counted)
    committed: bool      # COMMIT was sent and psql exited 0
    aborted: bool        # the stream stopped early: nothing was committed
    reason: str = ""     # why it was aborted

    @property
    def ok(self) -> bool:
        return self.exited == 0 and not self.aborted

    def describe(self) -> str:
        if self.aborted:
            return f"aborted after {self.bytes_sent} bytes ({self.reason}); psql exit {self.exited}: nothing committed"
        return f"psql exited {self.exited} after {self.bytes_sent} bytes" + ("" if self.ok else ": see its output")


def tool_command(env: Mapping[str, str], argv: Sequence[str], *, password: bool = False) -> str:
    """Pure: the remote shell command running a PostgreSQL client tool (psql, pg_dump) with the non-secret `env`.
    No secret in it: PGPASSWORD and PGPASSFILE are refused here. The prologue announces the shell's pid on stderr
    (PID_MARK: `abort()` kills it), and with `password` reads the first stdin line into PGPASSWORD before it
    `exec`s the tool."""
    secret = sorted(k for k in env if k not in PUBLIC_ENV)
    if secret:
        raise ConfigError(f"refusing to put {', '.join(secret)} on the remote command line",
                          hint="the password is sent over stdin (RemotePsql, ops.via), never on a command line")
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    prologue = f"printf '{PID_MARK.decode()}%s\\n' $$ >&2"
    if password:  # first stdin line -> PGPASSWORD; `read` takes one byte at a time from a pipe, leaving the rest
        prologue += "; IFS= read -r PGPASSWORD || exit 97; export PGPASSWORD"
    launch = f"env {assigns} {shlex.join(argv)}" if assigns else shlex.join(argv)
    return "sh -c " + shlex.quote(f"{prologue}; unset PGPASSFILE; exec {launch}")


def remote_command(env: Mapping[str, str], *, psql: str = "psql", args: Iterable[str] = (),
                   on_error_stop: bool = True, password: bool = False) -> str:
    """Pure: the remote shell command for psql (`tool_command`); --single-transaction is refused."""
    args = list(args)
    if any(a in _SINGLE_TRANSACTION for a in args):
        raise ConfigError("--single-transaction would COMMIT a truncated stream",
                          hint="leave it out: RemotePsql wraps the stream in BEGIN/COMMIT itself (atomic=True)")
    argv = [psql, "-X", "-q", "-w", "-v", f"ON_ERROR_STOP={int(on_error_stop)}", *args]
    return tool_command(env, argv, password=password)


class PsqlFeed:
    """What both psql runners (RemotePsql here, ops.localpsql.LocalPsql) share: `abort()` from any thread, why the
    stream stopped, whether COMMIT went out, and the PsqlResult they return. A subclass kills its psql in `_kill()`."""

    def __init__(self, *, atomic: bool = True):
        self.atomic = atomic
        self.commit_sent = False   # COMMIT (possibly) went out: after a Ctrl-C, the outcome is then unknown
        self._abort = threading.Event()
        self._reason = ""

    def abort(self, reason: str = "aborted") -> None:
        """Stop the stream now (thread-safe): kill psql; nothing is committed."""
        if not self._abort.is_set():
            self._reason = reason
            self._abort.set()
        self._kill()

    def _kill(self) -> None:
        raise NotImplementedError

    def _stopped_by(self, exc: BaseException) -> None:
        """The stream failed (the iterator raised, Ctrl-C): remember why, unless it was stopped already."""
        if not self._abort.is_set():
            self._reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._abort.set()

    def _result(self, exited: int | None, stdout: str, stderr: str, sent: int) -> PsqlResult:
        aborted = self._abort.is_set()
        return PsqlResult(exited=exited, stdout=stdout, stderr=stderr, bytes_sent=sent,
                          committed=self.commit_sent and exited == 0 and not aborted, aborted=aborted,
                          reason=self._reason if aborted else "")


class RemotePsql(PsqlFeed):
    """psql on the other end of a Fabric connection, fed from an iterator of bytes. One `run()` per instance."""

    def __init__(self, cxn: Any, env: Mapping[str, str], *, psql: str = "psql", args: Iterable[str] = (),
                 atomic: bool = True, on_error_stop: bool = True, timeout: float | None = None):
        super().__init__(atomic=atomic)
        env = dict(env)
        self.password = env.pop("PGPASSWORD", None)
        env.pop("PGPASSFILE", None)
        if self.password is not None and ("\n" in self.password or "\r" in self.password):
            raise ConfigError("the database password contains a line break, which cannot be passed to psql safely",
                              hint="change the password, or run the restore from a machine that reaches the database")
        self.cxn = cxn
        self.command = remote_command(env, psql=psql, args=args, on_error_stop=on_error_stop,
                                      password=self.password is not None)
        self.timeout = timeout
        self._pid: int | None = None
        self._pid_seen = threading.Event()
        self._channel: Any = None

    # -- control ---------------------------------------------------------------------------------------------------
    def _kill(self) -> None:
        if self._pid is None:
            return
        try:
            transport = self.cxn.client.get_transport()
            chan = transport.open_session(timeout=10)
            chan.exec_command(f"kill -KILL {int(self._pid)} 2>/dev/null")
            chan.recv_exit_status()
            chan.close()
        except Exception:  # the connection may be gone: psql then gets EOF with the transaction open (rollback)
            pass

    # -- the stream ------------------------------------------------------------------------------------------------
    def run(self, chunks: Iterable[bytes]) -> PsqlResult:
        """Send every chunk to the remote psql, then COMMIT; return psql's status and output."""
        self.cxn.open()
        transport = self.cxn.client.get_transport()
        try:
            chan = transport.open_session(timeout=30)
            chan.exec_command(self.command)
        except Exception as exc:
            raise ServiceError(f"cannot start psql on {self.cxn.host}: {exc}",
                               hint="check that psql is installed on the bastion and on its PATH") from None
        self._channel = chan
        out, err = bytearray(), bytearray()
        readers = [threading.Thread(target=self._drain, args=(chan.recv, out), daemon=True),
                   threading.Thread(target=self._drain_stderr, args=(chan, err), daemon=True)]
        for t in readers:
            t.start()
        sent, error = 0, None
        try:
            if self.password is not None:
                chan.sendall(self.password.encode() + b"\n")
            if self.atomic:
                chan.sendall(BEGIN)
            for chunk in chunks:
                if self._abort.is_set() or chan.exit_status_ready():
                    break
                if chunk:
                    chan.sendall(chunk)
                    sent += len(chunk)
        except BaseException as exc:  # the iterator failed (bad gzip, Ctrl-C), or the channel broke
            error = exc
            psql_ended = isinstance(exc, OSError) and chan.status_event.wait(5)  # psql stopped reading: its own error
            if not psql_ended:
                self._stopped_by(exc)
        finished = not self._abort.is_set() and not chan.exit_status_ready()
        if finished:
            try:
                if self.atomic:
                    self.commit_sent = True    # before sendall: psql runs a COMMIT cut short by EOF all the same
                    chan.sendall(COMMIT)
                chan.shutdown_write()  # EOF: psql ends (with COMMIT sent, the transaction is committed)
            except OSError as exc:
                error = error or exc
        elif self._abort.is_set():
            self._pid_seen.wait(5)
            self._kill()
        exited = self._wait(chan)
        for t in readers:
            t.join(10)
        chan.close()
        if isinstance(error, KeyboardInterrupt):
            raise error
        return self._result(exited, out.decode("utf-8", "replace"), self._clean_stderr(bytes(err)), sent)

    def _wait(self, chan: Any) -> int | None:
        if self.timeout is None:
            status = chan.recv_exit_status()
        else:
            done = threading.Event()
            holder: list[int] = []
            threading.Thread(target=lambda: (holder.append(chan.recv_exit_status()), done.set()), daemon=True).start()
            if not done.wait(self.timeout):
                self.abort(f"psql did not finish within {self.timeout:g} s")
                done.wait(10)
            status = holder[0] if holder else -1
        return None if status == -1 or status >= 128 else status  # -1: no status (killed); 128+N: signal N

    @staticmethod
    def _drain(recv: Any, into: bytearray) -> None:
        while True:
            data = recv(65536)
            if not data:
                return
            into += data

    def _drain_stderr(self, chan: Any, into: bytearray) -> None:
        while True:
            data = chan.recv_stderr(65536)
            if not data:
                return
            into += data
            if self._pid is None and b"\n" in into and into.startswith(PID_MARK):
                line = bytes(into).split(b"\n", 1)[0]
                try:
                    self._pid = int(line[len(PID_MARK):])
                except ValueError:
                    pass
                self._pid_seen.set()
                if self._abort.is_set():
                    self._kill()

    def _clean_stderr(self, raw: bytes) -> str:
        text = raw.decode("utf-8", "replace")
        if text.startswith(PID_MARK.decode()):
            text = text.split("\n", 1)[1] if "\n" in text else ""
        return redact_text(text, (self.password,) if self.password else ())


def run_remote_psql(cxn: Any, env: Mapping[str, str], chunks: Iterable[bytes], **kwargs: Any) -> PsqlResult:
    """Convenience: `RemotePsql(cxn, env, **kwargs).run(chunks)`."""
    return RemotePsql(cxn, env, **kwargs).run(chunks)


# -- what the guard needs from the bastion's side (for `--via`) -----------------------------------------------------
def read_marker(cxn: Any, env: Mapping[str, str], *, psql: str = "psql") -> str | None:
    """The database's `ops.environment` marker as read from the bastion (guard.read_marker's query, through psql
    there); None when unset. Raises ServiceError when psql cannot reach the database from the bastion."""
    from .guard import MARKER_QUERY, MARKER_SETTING

    query = MARKER_QUERY.replace("%(name)s", f"'{MARKER_SETTING}'").strip() + ";\n"
    result = RemotePsql(cxn, env, psql=psql, atomic=False, args=["-A", "-t", "-F", "\t"]).run([query.encode()])
    if not result.ok:
        raise ServiceError(f"cannot read the database marker through {cxn.host}: "
                           f"{(result.stderr.strip().splitlines() or ['psql exit ' + str(result.exited)])[-1]}",
                           hint="check that the database answers from the bastion: inv guard.check URL")
    values = [v.strip().strip("'\"").lower() for v in result.stdout.strip().split("\t") if v.strip()]
    if "production" in values:  # as in guard.read_marker: production in either place wins
        return "production"
    return values[0] if values else None


def resolve(cxn: Any, name: str) -> frozenset[str]:
    """Every address `name` resolves to on the bastion (getent ahosts); empty when it does not resolve there."""
    result = cxn.run(f"getent ahosts {shlex.quote(name)}", hide=True, warn=True, in_stream=False)
    if result.failed:
        return frozenset()
    return frozenset(line.split()[0] for line in result.stdout.splitlines() if line.split())
