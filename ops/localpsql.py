"""Effect: psql on this machine, fed from an iterator of bytes, all or nothing.

The same contract as `ops.remote_psql.RemotePsql` (the `--via HOST` path), so the restore engine can use either:
`BEGIN;` first, `COMMIT;` only after the iterator ended normally, and psql killed (the server then rolls back)
when the iterator raises or `abort()` is called. Never --single-transaction: psql would COMMIT whatever it read when
its input ends, a truncated dump included.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from . import pg
from .errors import ConfigError
from .remote_psql import BEGIN, COMMIT, PsqlFeed, PsqlResult

MIN_PSQL = (13, 0)
STDERR_LIMIT = 1 << 16


class LocalPsql(PsqlFeed):
    """psql on this machine, fed from an iterator of bytes; the same contract as `ops.remote_psql.RemotePsql`:
    BEGIN first, COMMIT only after the iterator ended normally, psql killed (so the server rolls back) when the
    iterator raises or `abort()` is called. One `run()` per instance.

    Ctrl-C kills psql and `run()` raises the KeyboardInterrupt again; `commit_sent` then says where it landed:
    False, before COMMIT was written (psql killed, the server rolled back: nothing changed); True, after (the
    outcome was not read)."""

    def __init__(self, env: Mapping[str, str], *, psql: str = "psql", args: Iterable[str] = (),
                 atomic: bool = True, on_error_stop: bool = True):
        if any(a in ("-1", "--single-transaction") for a in args):
            raise ConfigError("--single-transaction would COMMIT a truncated stream",
                              hint="leave it out: the restore sends BEGIN/COMMIT itself")
        super().__init__(atomic=atomic)
        self.argv = pg.psql_argv(psql, on_error_stop=on_error_stop, extra=args)
        self.env = dict(env)
        self._proc: subprocess.Popen[bytes] | None = None

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass

    def run(self, chunks: Iterable[bytes]) -> PsqlResult:
        try:
            # a session of its own: the terminal's Ctrl-C reaches us, and we decide (kill, never a clean EOF)
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=self.env, start_new_session=True, bufsize=1 << 20)
        except OSError as exc:
            raise ConfigError(f"cannot start {self.argv[0]}: {exc}", hint=pg.install_hint("psql", MIN_PSQL)) from None
        self._proc = proc
        out, err = _Tail(), _Tail()
        readers = [threading.Thread(target=out.drain, args=(proc.stdout,), daemon=True),
                   threading.Thread(target=err.drain, args=(proc.stderr,), daemon=True)]
        for t in readers:
            t.start()
        assert proc.stdin is not None
        sent, interrupt = 0, None
        try:
            if self.atomic:
                proc.stdin.write(BEGIN)
            for chunk in chunks:
                if self._abort.is_set():
                    break
                proc.stdin.write(chunk)
                sent += len(chunk)
            proc.stdin.flush()                          # all of the dump is with psql before COMMIT is written
        except BrokenPipeError:
            pass                                        # psql stopped reading: its own error (ON_ERROR_STOP)
        except BaseException as exc:                    # the stream failed (refused dump, gzip error, Ctrl-C)
            self._stopped_by(exc)
            if isinstance(exc, KeyboardInterrupt):
                interrupt = exc
        if self._abort.is_set():
            self._kill()
        elif proc.poll() is None:
            try:
                if self.atomic:                         # one write of fewer than PIPE_BUF bytes: all of it or none
                    os.write(proc.stdin.fileno(), COMMIT)
                    self.commit_sent = True
                proc.stdin.close()                      # EOF after COMMIT: psql ends
            except BrokenPipeError:
                pass
            except KeyboardInterrupt as exc:            # before the write: rolled back; after it: unknown
                self.abort("interrupted")
                interrupt = exc
        try:
            exited = proc.wait()
        except KeyboardInterrupt as exc:
            self.abort("interrupted")
            exited, interrupt = proc.wait(), exc
        for t in readers:
            t.join(10)
        try:
            proc.stdin.close()
        except OSError:
            pass
        if interrupt is not None:
            raise interrupt
        return self._result(None if exited < 0 else exited, out.text(), err.text(), sent)


class _Tail:
    """Keeps the first and the last STDERR_LIMIT bytes of a stream (constant memory however much psql prints)."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def drain(self, stream: Any) -> None:
        for data in iter(lambda: stream.read1(65536), b""):
            room = STDERR_LIMIT - len(self.head)
            if room > 0:
                self.head += data[:room]
                data = data[room:]
            if data:
                self.tail += data
                if len(self.tail) > STDERR_LIMIT:
                    self.dropped += len(self.tail) - STDERR_LIMIT
                    del self.tail[:len(self.tail) - STDERR_LIMIT]

    def text(self) -> str:
        middle = f"\n[... {self.dropped} bytes left out ...]\n".encode() if self.dropped else b""
        return (bytes(self.head) + middle + bytes(self.tail)).decode("utf-8", "replace")


# -- the engine ---------------------------------------------------------------------------------------------------------
