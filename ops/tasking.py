"""The house `task` decorator: expected failures become a clean message and an exit status.

As fabric/tasks.py does, `task()` sets `klass` and delegates to `invoke.task`. An `OpsError` raised by a task
becomes `invoke.Exit(message, code)`: 1 for ordinary failures, 3 for refusals (GuardRefused). The message is
passed through `redact_text` on the way out, so a secret caught in an error message never reaches the terminal.
Ctrl-C is exit 130 with one line, no traceback.

When the reader of stdout goes away (`inv restore.verify FILE --json | head`), the rest of the output goes to
/dev/null and the task carries on to its end, so nothing stops half-way because of a closed pipe (a restore still
writes its audit record); then it exits 141, as a tool killed by SIGPIPE would, unless it failed (its own status).
"""
from __future__ import annotations

import io
import os
import sys
from typing import Any

import invoke

from .config import secret_values
from .errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, OpsError
from .redact import redact_text


class OpsTask(invoke.Task):  # type: ignore[misc]
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = _Stdout.install()
        try:
            try:
                result = super().__call__(*args, **kwargs)
            finally:
                out.flush()
        except OpsError as exc:
            raise invoke.Exit(redact_text(str(exc), secret_values()), code=exc.exit_code) from exc
        except KeyboardInterrupt:
            raise invoke.Exit("interrupted", code=EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            if not out.gone():         # some other pipe broke, not stdout: a bug, show it
                raise
            raise invoke.Exit(code=EXIT_BROKEN_PIPE) from None
        finally:
            out.uninstall()
        if out.broken:
            raise invoke.Exit(code=EXIT_BROKEN_PIPE)
        return result


class _Stdout:
    """sys.stdout while a task runs: a write or flush that finds the reader gone sends the rest to /dev/null."""

    def __init__(self, stream: Any):
        self._stream = stream
        self._previous = stream
        self.broken = False

    @classmethod
    def install(cls) -> "_Stdout | _Nested":
        current = sys.stdout
        if isinstance(current, _Stdout):    # a task called from a task: one guard
            return _Nested(current)
        guard = cls(current)
        sys.stdout = guard
        return guard

    def uninstall(self) -> None:
        if sys.stdout is self:
            sys.stdout = self._previous

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def gone(self) -> bool:
        """Has the reader of stdout gone? (After a BrokenPipeError from a write that bypassed this object.)"""
        if not self.broken:
            self.flush()
        return self.broken

    def _to_devnull(self) -> None:
        self.broken = True
        try:   # the unflushed rest, and anything written later (the interpreter's flush at exit too), is dropped
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass


class _Nested:
    """The outer task's guard, seen from a task it calls: the outer task decides the exit status and uninstalls."""

    broken = False

    def __init__(self, outer: _Stdout):
        self._outer = outer

    def flush(self) -> None:
        self._outer.flush()

    def gone(self) -> bool:
        return self._outer.gone()

    def uninstall(self) -> None:
        pass


def task(*args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("klass", OpsTask)
    return invoke.task(*args, **kwargs)
