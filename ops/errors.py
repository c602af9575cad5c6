"""Expected failures, each with a message and a hint saying what to do next.

    OpsError                 exit status 1
     ├── ConfigError         a setting or environment variable is missing or wrong
     ├── ServiceError        an external service (GitHub, Render, Sentry, PostgreSQL, SSH) failed
     ├── VerificationFailed  a backup or a restored database is not what it should be
     └── GuardRefused        the guard refused a target or an action: exit status 3

A subclass may set its own `exit_code` (restorer.RestoreInterrupted: 130, as for Ctrl-C). The task wrapper also
turns Ctrl-C into exit status 130 and a closed stdout (`inv ... | head`) into 141, quietly.
Anything else that escapes a task is a bug and shows a traceback.
"""
from __future__ import annotations

EXIT_FAILURE = 1
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130   # Ctrl-C, as a shell reports SIGINT (128 + 2)
EXIT_BROKEN_PIPE = 141   # the reader of stdout went away (`inv ... | head`), as a shell reports SIGPIPE (128 + 13)


class OpsError(Exception):
    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f"\nhint: {self.hint}" if self.hint else "")


class ConfigError(OpsError):
    """A required setting or environment variable is missing or invalid."""


class ServiceError(OpsError):
    """An external service answered with an error or did not answer."""


class VerificationFailed(OpsError):
    """A backup, a download or a restored database failed verification."""


class GuardRefused(OpsError):
    """The guard refused: production target, bad approval, unparseable target."""

    exit_code = EXIT_REFUSED
