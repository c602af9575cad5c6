"""Effect: a throwaway PostgreSQL cluster made with initdb and started with pg_ctl on 127.0.0.1:<free port>.

Used by the sandbox (`inv sandbox.demo` on a machine with no server) and by the tests (tests/fix_pg.py). PostgreSQL
refuses to run as root, so when we are root the cluster belongs to, and runs as, the user `postgres`.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

SERVER_USER = "postgres"  # the unprivileged account clusters run as when we are root
FAST_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_bin_dir(environ: Mapping[str, str] | None = None, *, env_var: str = "OPS_TEST_PG_BIN") -> Path | None:
    """A directory holding initdb, pg_ctl and postgres: `$env_var`, then PATH, then the newest
    /usr/lib/postgresql/*/bin. Symlinks (/usr/local/bin/initdb) are followed to the real directory, which also
    holds the psql and pg_dump of the same version."""
    env = os.environ if environ is None else environ
    candidates = []
    if env.get(env_var):
        candidates.append(Path(env[env_var]))
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(os.path.realpath(found)).parent)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: [int(x) for x in re.findall(r"\d+", p)], reverse=True)
    candidates += [Path(p) for p in versions]
    for d in candidates:
        if all(os.access(d / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def run_as_argv(user: str | None, argv: list[str]) -> list[str]:
    """argv run as `user` (when we are root), through runuser or su."""
    if user is None:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *argv]
    return ["su", user, "-s", "/bin/sh", "-c", shlex.join(argv)]


def reachable_by(user: str | None, path: Path) -> bool:
    """Whether `user` (None: ourselves) can create files in `path` (a data directory under /root is not)."""
    if user is None:
        return os.access(path, os.W_OK | os.X_OK)
    out = subprocess.run(run_as_argv(user, ["test", "-w", str(path), "-a", "-x", str(path)]),
                         capture_output=True, timeout=30)
    return out.returncode == 0


class Cluster:
    """An initdb'd data directory in `workdir` (a fresh temp dir by default), served on 127.0.0.1:<port>.

    `keep=True` keeps the directory on `stop()`, so a later `Cluster(..., workdir=same)` starts the same data again.
    """

    def __init__(self, bin_dir: Path, label: str = "ops-pg", *, workdir: Path | None = None, keep: bool = False,
                 options: str = FAST_OPTIONS):
        self.bin_dir = Path(bin_dir)
        self.user = SERVER_USER if os.geteuid() == 0 else None
        self.keep = keep
        self.options = options
        if workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{label}-"))
        else:
            self.workdir = Path(workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.data = self.workdir / "data"
        self.log = self.workdir / "server.log"
        self.port_file = self.workdir / "port"
        self.port = int(self.port_file.read_text()) if self.port_file.exists() else 0
        if self.user:
            try:
                entry = pwd.getpwnam(self.user)
            except KeyError:
                raise RuntimeError(f"we run as root and there is no user {self.user!r} to run PostgreSQL as") from None
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        os.chmod(self.workdir, 0o700)

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(run_as_argv(self.user, argv), capture_output=True, text=True, timeout=timeout,
                              cwd=self.workdir)

    @property
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialised:
            return False
        return self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status"], timeout=30).returncode == 0

    def init(self) -> None:
        out = self._run([str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                         "-E", "UTF8", "--locale=C", "--no-sync"])
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stderr.strip() or out.stdout.strip()}")

    def start(self) -> None:
        """initdb if needed, then start (a running cluster is left as it is)."""
        if not self.initialised:
            self.init()
        if self.running():
            return
        out = None
        for _attempt in range(3):  # a free port can be taken between finding it and binding it
            self.port = free_port()
            opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.workdir} {self.options}"
            out = self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts,
                             "-w", "-t", "60", "start"])
            if out.returncode == 0:
                self.port_file.write_text(str(self.port))
                return
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        detail = (out.stderr.strip() or out.stdout.strip()) if out else ""
        raise RuntimeError(f"pg_ctl start failed: {detail}\n{log}")

    def stop(self) -> None:
        if self.initialised:
            self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate" if not self.keep
                       else "fast", "-w", "stop"], timeout=60)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"
