"""The house `task` decorator: expected failures become a clean message and an exit status.

As fabric/tasks.py does, `task()` sets `klass` and delegates to `invoke.task`. An `OpsError` raised by a task
becomes `invoke.Exit(message, code)`: 1 for ordinary failures, 3 for refusals (GuardRefused). The message is
passed through `redact_text` on the way out, so a secret caught in an error message never reaches the terminal.
"""
from __future__ import annotations

from typing import Any

import invoke

from .config import secret_values
from .errors import EXIT_INTERRUPTED, OpsError
from .redact import redact_text


class OpsTask(invoke.Task):  # type: ignore[misc]
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except OpsError as exc:
            raise invoke.Exit(redact_text(str(exc), secret_values()), code=exc.exit_code) from exc
        except KeyboardInterrupt:
            raise invoke.Exit("interrupted", code=EXIT_INTERRUPTED) from None


def task(*args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("klass", OpsTask)
    return invoke.task(*args, **kwargs)
