"""ops.remote against a real sshd on 127.0.0.1."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ops import remote
from ops.config import Settings
from ops.errors import ConfigError, ServiceError
from tests.fix_pg import free_port
from tests.fix_sshd import keygen

pytestmark = pytest.mark.usefixtures("no_ssh_config")  # the developer's ~/.ssh stays out


def settings_for(server, known_hosts, **ssh) -> Settings:
    ops = server.settings_ops(known_hosts=known_hosts)
    ops["ssh"].update(ssh)
    return Settings.from_dict(ops=ops)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_runs_a_command_over_ssh(sshd, tmp_path):
    with remote.connect(settings_for(sshd, tmp_path / "known_hosts"), "box") as cxn:
        result = cxn.run("echo hello from $(id -un); exit 0", hide=True, in_stream=False)
        failed = cxn.run("exit 7", hide=True, warn=True, in_stream=False)
    assert result.stdout.strip() == f"hello from {sshd.user}"
    assert failed.exited == 7


def test_unknown_host_key_is_accepted_and_remembered(sshd, tmp_path, caplog):
    known_hosts = tmp_path / "ssh" / "known_hosts"  # neither the file nor its directory exists yet
    settings = settings_for(sshd, known_hosts)
    with remote.connect(settings, "box") as cxn:
        cxn.run("true", hide=True, in_stream=False)
    assert lines(known_hosts) == [f"[127.0.0.1]:{sshd.port} {sshd.host_public_key}"]
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    assert "Permanently added" in caplog.text
    # OpenSSH agrees with what was saved
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(known_hosts)],
                           capture_output=True, text=True)
    assert found.returncode == 0
    # the next connection finds the key: nothing is added twice
    with remote.connect(settings, "box") as cxn:
        cxn.run("true", hide=True, in_stream=False)
    assert len(lines(known_hosts)) == 1


def test_changed_host_key_is_refused_until_the_old_key_is_removed(make_sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    first = make_sshd()
    settings = settings_for(first, known_hosts)
    with remote.connect(settings, "box") as cxn:
        cxn.run("true", hide=True, in_stream=False)
    remembered = lines(known_hosts)
    first.stop()

    rebuilt = make_sshd(port=first.port)  # same host:port, new host key
    assert rebuilt.host_public_key != first.host_public_key
    with pytest.raises(ServiceError) as info:
        with remote.connect(settings, "box") as cxn:
            cxn.run("echo must not run", hide=True, in_stream=False)
    error = info.value
    assert "CHANGED" in error.message and f"[127.0.0.1]:{first.port}" in error.message
    assert f"ssh-keygen -R '[127.0.0.1]:{first.port}' -f {known_hosts}" in error.hint
    assert lines(known_hosts) == remembered  # the saved key is left alone

    # following the hint lets the new key in
    subprocess.run(["ssh-keygen", "-R", f"[127.0.0.1]:{first.port}", "-f", str(known_hosts)],
                   check=True, capture_output=True)
    with remote.connect(settings, "box") as cxn:
        cxn.run("true", hide=True, in_stream=False)
    assert lines(known_hosts) == [f"[127.0.0.1]:{first.port} {rebuilt.host_public_key}"]


def test_a_key_saved_for_another_server_on_the_same_entry_is_refused(sshd, make_sshd, tmp_path):
    other = make_sshd()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other.host_public_key}\n")
    with pytest.raises(ServiceError, match="CHANGED"):
        with remote.connect(settings_for(sshd, known_hosts), "box") as cxn:
            cxn.run("true", hide=True, in_stream=False)


def test_ssh_config_is_honoured(sshd, no_ssh_config):
    ssh_dir = no_ssh_config / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "config").write_text(
        f"Host opsbox\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_filename}\n")
    settings = Settings.from_dict()  # nothing configured: the name comes from ~/.ssh/config
    with remote.connect(settings, "opsbox") as cxn:
        assert cxn.run("echo ok", hide=True, in_stream=False).stdout.strip() == "ok"
    # no ops.ssh.known_hosts: the key went to ~/.ssh/known_hosts
    assert lines(ssh_dir / "known_hosts") == [f"[127.0.0.1]:{sshd.port} {sshd.host_public_key}"]

    # and ops.ssh.load_ssh_configs: false leaves it out
    plain = Settings.from_dict(ops={"ssh": {"load_ssh_configs": False}})
    with pytest.raises(ServiceError, match="opsbox"):
        with remote.connect(plain, "opsbox") as cxn:
            cxn.run("true", hide=True, in_stream=False)


def test_user_known_hosts_file_of_ssh_config_is_used(sshd, no_ssh_config, tmp_path):
    ssh_dir = no_ssh_config / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    custom = tmp_path / "elsewhere_known_hosts"
    (ssh_dir / "config").write_text(f"Host 127.0.0.1\n  UserKnownHostsFile {custom}\n")
    ops = sshd.settings_ops()
    del ops["ssh"]
    with remote.connect(Settings.from_dict(ops=ops), "box") as cxn:
        cxn.run("true", hide=True, in_stream=False)
    assert len(lines(custom)) == 1 and not (ssh_dir / "known_hosts").exists()


def test_wrong_client_key_is_a_login_error(sshd, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    ops = sshd.settings_ops(known_hosts=tmp_path / "known_hosts")
    ops["hosts"]["box"]["key_filename"] = str(stranger)
    with pytest.raises(ServiceError, match="login .* was refused") as info:
        with remote.connect(Settings.from_dict(ops=ops), "box") as cxn:
            cxn.run("true", hide=True, in_stream=False)
    assert "key_filename" in info.value.hint


def test_nothing_listening_is_a_service_error(sshd, tmp_path):
    ops = sshd.settings_ops(known_hosts=tmp_path / "known_hosts")
    ops["hosts"]["box"]["port"] = free_port()
    with pytest.raises(ServiceError, match="cannot open an SSH connection") as info:
        with remote.connect(Settings.from_dict(ops=ops), "box") as cxn:
            cxn.run("true", hide=True, in_stream=False)
    assert "port" in info.value.hint


@pytest.mark.parametrize("entry", [{"user": "root"}, "root@h", {"host": "h", "password": "x"}],
                         ids=["no-host", "not-a-mapping", "unknown-key"])
def test_bad_host_entries_are_config_errors(entry):
    settings = Settings.from_dict(ops={"hosts": {"box": entry}})
    with pytest.raises(ConfigError, match="ops.hosts.box"):
        remote.connect(settings, "box")
