"""A real sshd on 127.0.0.1 for the Fabric tests (Fabric's own integration approach).

Fixtures:
  sshd            session: a running sshd (.host, .port, .user, .key_filename, .known_hosts, .host_key_file,
                  .settings_hosts(name="box") -> {name: {host, port, user, key_filename, ...}} for `ops.hosts`)
  make_sshd       function factory: make_sshd(port=None) starts another sshd with its own, new host key (same
                  client key); stopped after the test. Reusing a port stands for "the server was rebuilt".
  no_ssh_config   points HOME at an empty temp dir, so ~/.ssh/config and ~/.ssh/known_hosts stay out of a test

The daemon runs as the current user (root here, with PermitRootLogin prohibit-password): key login only.
Without /usr/sbin/sshd the tests are skipped, except under CI where the run fails (`.ci/run` installs it).
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fix_pg import free_port, in_ci

SSHD = os.environ.get("OPS_TEST_SSHD", "/usr/sbin/sshd")


def keygen(path: Path, comment: str = "ops-test") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return path


@dataclass
class Sshd:
    host: str
    port: int
    user: str
    key_filename: str        # the client's private key
    known_hosts: str         # a temp known_hosts file for the tests (starts absent)
    host_key_file: str       # the server's private host key; its .pub is what a client should remember
    workdir: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def settings_hosts(self, name: str = "box") -> dict:
        """An `ops.hosts` entry reaching this daemon, with no agent and no ~/.ssh/id_* keys tried."""
        return {name: {"host": self.host, "port": self.port, "user": self.user, "key_filename": self.key_filename,
                       "look_for_keys": False, "allow_agent": False}}

    def settings_ops(self, name: str = "box", known_hosts: str | os.PathLike | None = None) -> dict:
        """The `ops` config for Settings.from_dict(ops=...): this host, and `known_hosts` (default: the daemon's
        temp file, shared by the session; pass a per-test path when a test depends on what is remembered)."""
        return {"hosts": self.settings_hosts(name), "ssh": {"known_hosts": str(known_hosts or self.known_hosts)}}

    @property
    def host_public_key(self) -> str:
        """`type base64` of the host key, as a known_hosts line holds it."""
        return " ".join(Path(self.host_key_file + ".pub").read_text().split()[:2])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        path = self.workdir / f"sshd-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_sshd(workdir: Path, client_key: Path, port: int | None = None) -> Sshd:
    """Start `sshd -D -e` on 127.0.0.1 with a new host key; wait until it accepts connections."""
    port = port or free_port()
    host_key = keygen(workdir / f"host_key_{port}_{os.urandom(3).hex()}", "ops-test-host")
    authorized = workdir / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    authorized.chmod(0o600)
    config = workdir / f"sshd_config_{port}"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}",
        f"PidFile {workdir / f'sshd_{port}.pid'}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "UsePAM no",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",
        "",
    ]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    log = open(workdir / f"sshd-{port}.log", "ab")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
    log.close()
    server = Sshd(host="127.0.0.1", port=port, user=getpass.getuser(), key_filename=str(client_key),
                  known_hosts=str(workdir / "known_hosts"), host_key_file=str(host_key), workdir=workdir,
                  process=process)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with status {process.returncode}: {server.log()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port} within 15 s: {server.log()[-2000:]}")


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(f"CI is set and a real sshd is needed for the SSH tests: {message} "
                    "(.ci/run installs it: apt-get install -y openssh-server)", pytrace=False)
    pytest.skip(f"sshd not available: {message}")


@pytest.fixture(scope="session")
def sshd_workdir():
    if not os.access(SSHD, os.X_OK):
        _unavailable(f"{SSHD} not found")
    if not shutil.which("ssh-keygen"):
        _unavailable("ssh-keygen not found")
    workdir = Path(tempfile.mkdtemp(prefix="ops-test-sshd-"))
    keygen(workdir / "client_key", "ops-test-client")
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd(sshd_workdir):
    """A real sshd on 127.0.0.1, for the whole session."""
    try:
        server = start_sshd(sshd_workdir, sshd_workdir / "client_key")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        _unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture
def make_sshd(sshd_workdir, tmp_path):
    """Factory: make_sshd(port=None) -> Sshd with a new host key; its known_hosts is a per-test file."""
    started: list[Sshd] = []

    def make(port: int | None = None) -> Sshd:
        server = start_sshd(sshd_workdir, sshd_workdir / "client_key", port=port)
        server.known_hosts = str(tmp_path / "known_hosts")
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def no_ssh_config(tmp_path, monkeypatch) -> Path:
    """HOME is an empty temp dir for this test: the developer's ~/.ssh/config, known_hosts and keys stay out.
    Returns the new HOME (write a .ssh/config under it to test ssh_config handling)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home
