"""Effect: SSH to the project's hosts through Fabric, with host keys checked the way `ssh` does.

    with remote.connect(settings, "box") as cxn:       # a name from ops.hosts, or user@host:port
        cxn.run("uptime", hide=True)

Hosts come from the `ops.hosts` config, `{name: {host, user, port, key_filename}}`; anything they leave out
(and any name that is not there) is looked up in ~/.ssh/config and /etc/ssh/ssh_config as Fabric does
(HostName, User, Port, IdentityFile, ProxyJump...), unless `ops.ssh.load_ssh_configs` is false.

Fabric on its own accepts any host key. Here host keys follow OpenSSH's `StrictHostKeyChecking accept-new`:
a host seen for the first time has its key saved to the known_hosts file (`ops.ssh.known_hosts`, else the
UserKnownHostsFile of ssh_config, else ~/.ssh/known_hosts); a key that differs from the saved one is refused.

Settings read here (all optional): ops.hosts, ops.ssh.known_hosts, ops.ssh.load_ssh_configs (default true),
ops.ssh.connect_timeout (default: ssh_config ConnectTimeout, else 10 s).

This module imports fabric and paramiko: task modules import it inside the task function (`inv --list` stays fast).
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fabric
import paramiko

from .errors import ConfigError, ServiceError

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
CONNECT_TIMEOUT = 10
_ENTRY_KEYS = {"host", "user", "port", "key_filename", "look_for_keys", "allow_agent", "connect_timeout"}


def connect(settings: "Settings", name_or_host: str, *, config: Any = None) -> "Connection":
    """A Fabric Connection to a host named in `ops.hosts` (or given as [user@]host[:port]); use it as
    `with connect(...) as cxn:`. `config` is the task's `c.config`, if any. Nothing is opened until first use;
    failures to connect then raise ServiceError."""
    entry = host_entry(settings, name_or_host)
    if config is None:
        config = fabric.Config(overrides={"load_ssh_configs": bool(settings.get("ssh.load_ssh_configs", True))})
    connect_kwargs: dict[str, Any] = {}
    if entry.get("key_filename"):
        keys = entry["key_filename"]
        keys = [keys] if isinstance(keys, str) else list(keys)
        connect_kwargs["key_filename"] = [os.path.expanduser(k) for k in keys]
    for flag in ("look_for_keys", "allow_agent"):
        if flag in entry:
            connect_kwargs[flag] = bool(entry[flag])
    timeout = entry.get("connect_timeout") or settings.get("ssh.connect_timeout")
    cxn = Connection(
        entry.get("host", name_or_host),
        user=entry.get("user") or None,
        port=int(entry["port"]) if entry.get("port") else None,
        config=config,
        connect_timeout=int(timeout) if timeout else None,
        connect_kwargs=connect_kwargs,
    )
    if cxn.connect_timeout is None:
        cxn.connect_timeout = CONNECT_TIMEOUT
    cxn.known_hosts = known_hosts_path(settings, cxn.ssh_config)
    for path in (Path(GLOBAL_KNOWN_HOSTS), cxn.known_hosts):
        if path.is_file():
            try:
                cxn.client.load_system_host_keys(str(path))  # read only: paramiko never rewrites these
            except (OSError, ValueError) as exc:
                raise ServiceError(f"cannot read the known hosts file {path}: {exc}",
                                   hint="fix or move the file; ssh-keygen -F HOST -f FILE shows an entry") from None
    cxn.client.set_missing_host_key_policy(AcceptNew(cxn.known_hosts))
    return cxn


def host_entry(settings: "Settings", name_or_host: str) -> dict[str, Any]:
    """The `ops.hosts` entry for a name, or {} for a name that is not configured (then it is a host)."""
    hosts = settings.get("hosts") or {}
    if name_or_host not in hosts:
        return {}
    entry = hosts[name_or_host]
    if not isinstance(entry, dict) or not entry.get("host"):
        raise ConfigError(f"setting ops.hosts.{name_or_host} must be a mapping with at least `host`",
                          hint=f"ops: {{hosts: {{{name_or_host}: {{host: HOST, user: USER, port: 22, "
                               f"key_filename: ~/.ssh/id_ed25519}}}}}}")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ConfigError(f"setting ops.hosts.{name_or_host} has unknown keys: {', '.join(sorted(unknown))}",
                          hint=f"allowed keys: {', '.join(sorted(_ENTRY_KEYS))}")
    return dict(entry)


def known_hosts_path(settings: "Settings", ssh_config: Any = None) -> Path:
    """Where host keys are remembered: ops.ssh.known_hosts, ssh_config's UserKnownHostsFile, ~/.ssh/known_hosts."""
    configured = settings.get("ssh.known_hosts")
    if not configured and ssh_config:
        configured = str(ssh_config.get("userknownhostsfile", "")).split(" ")[0]
    return Path(os.path.expanduser(configured or DEFAULT_KNOWN_HOSTS))


class AcceptNew(paramiko.MissingHostKeyPolicy):
    """Host key policy for hosts not in known_hosts: accept the key and append it to the file (OpenSSH's
    `StrictHostKeyChecking accept-new`). A *changed* key never reaches a policy: paramiko raises
    BadHostKeyException, which `Connection.open` turns into a ServiceError."""

    def __init__(self, known_hosts: Path | str):
        self.known_hosts = Path(known_hosts)

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        try:
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(line)
        except OSError as exc:
            raise ServiceError(f"cannot save the host key of {hostname} to {self.known_hosts}: {exc}",
                               hint="make the file writable, or set ops.ssh.known_hosts to a writable path") from None
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("Permanently added '%s' (%s %s) to %s", hostname, key.get_name(), key.fingerprint,
                    self.known_hosts)


class Connection(fabric.Connection):
    """fabric.Connection whose failures to connect are ServiceErrors with a hint."""

    known_hosts: Path = Path(DEFAULT_KNOWN_HOSTS)

    def open(self) -> Any:
        where = f"{self.user}@{self.host}:{self.port}"
        try:
            return super().open()
        except paramiko.BadHostKeyException as exc:
            self.client.close()
            entry = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
            raise ServiceError(
                f"the SSH host key of {entry} has CHANGED: the server offered {exc.key.get_name()} "
                f"{exc.key.fingerprint}, but {self.known_hosts} holds {exc.expected_key.fingerprint}; "
                "refusing to connect (this can be a man-in-the-middle attack, or the server was rebuilt)",
                hint=f"if the server was really rebuilt, confirm its new fingerprint with its administrator, "
                     f"then remove the old key: ssh-keygen -R '{entry}' -f {self.known_hosts} "
                     "and connect again (the new key is then saved)") from None
        except paramiko.AuthenticationException as exc:
            self.client.close()
            raise ServiceError(f"SSH login to {where} was refused: {exc}",
                               hint="check the user and key_filename of this host in ops.hosts "
                                    "(or ~/.ssh/config); try: ssh -i KEY -p PORT USER@HOST") from None
        except (paramiko.SSHException, socket.timeout, OSError) as exc:
            self.client.close()
            raise ServiceError(f"cannot open an SSH connection to {where}: {exc or type(exc).__name__}",
                               hint="check the host and port (ops.hosts or ~/.ssh/config), that sshd runs "
                                    "there, and any firewall or VPN in between") from None
