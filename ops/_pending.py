"""Tasks whose issue has not landed yet say so when run, with exit status 1 (never a fake success)."""
from __future__ import annotations

from .errors import OpsError


def not_yet(task_name: str, issue: int) -> OpsError:
    return OpsError(f"`inv {task_name}` is not built yet (issue {issue})", hint=f"see `issues show {issue}`")
