"""lottery-ops: the operations runbook of the lottery backend (backups, restores, checks, emergencies)."""
from invoke import Collection

from ops import backup, checks, emergency, guard, restore, sandbox
from ops.config import DEFAULTS
from ops.links import links

ns = Collection(restore, backup, emergency, checks, guard, sandbox)
ns.add_task(links)
ns.configure(DEFAULTS)
