"""Guard: decide whether a database target is production, and refuse it (placeholder, being written)."""
from .tasking import task


@task(help={"url": "Database URL or conninfo to judge"})
def check(c, url):
    """Tell what the guard thinks of a database target, and why."""
    from .errors import OpsError
    raise OpsError("guard.check is being written")
