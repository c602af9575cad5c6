"""`inv checks.hosts` against a real sshd on 127.0.0.1 (the same daemon under several names, plus a dead host)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ops import hosts
from ops.config import Settings
from ops.errors import ConfigError
from tests.fix_pg import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("no_ssh_config")

FAKE_SYSTEMCTL = """#!/bin/sh
[ "$1" = is-active ] || exit 2
case "$2" in
  nginx) echo active ;;
  worker) echo failed; exit 3 ;;
  *) echo inactive; exit 3 ;;
esac
"""
CALM = {"disk_warn": 100, "disk_fail": 101, "mem_warn": 0, "load_per_cpu": 1000}  # this machine's state is not tested


@pytest.fixture
def ops(sshd, tmp_path):
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL)
    systemctl.chmod(0o755)
    entry = sshd.settings_hosts()["box"]
    return {"hosts": {"web1": entry, "web2": dict(entry),
                      "dead": {**entry, "port": free_port(), "connect_timeout": 3}},
            "ssh": {"known_hosts": str(tmp_path / "known_hosts")},
            "host_checks": {"services": {"web1": ["nginx", "worker"], "web2": ["nginx"]},
                            "systemctl": str(systemctl), **CALM}}


def test_every_host_is_checked_and_a_dead_one_is_an_error(ops):
    outcomes = {o.id: o for o in hosts.check_hosts(Settings.from_dict(ops=ops))}
    assert list(outcomes) == ["hosts.web1", "hosts.web2", "hosts.dead"]
    web1, web2, dead = outcomes.values()
    assert web1.status == "fail" and "1/2 services active" in web1.summary
    assert web1.details == ("web1: service worker is failed: journalctl -u worker -n 50, then systemctl restart worker",)
    assert web2.status == "pass" and "1/1 services active" in web2.summary and "disk" in web2.summary
    assert "memory" in web2.summary and "CPU" in web2.summary
    assert dead.status == "error" and "cannot open an SSH connection" in dead.summary
    assert dead.details and dead.details[0].startswith("hint:")


def test_thresholds_come_from_configuration(ops):
    ops["host_checks"].update(disk_warn=0, services={})
    (web2,) = hosts.check_hosts(Settings.from_dict(ops=ops), ["web2"])
    assert web2.status == "warn"
    assert any(" is " in d and "% full" in d for d in web2.details)


def test_only_known_hosts_can_be_asked_for(ops):
    with pytest.raises(ConfigError, match="unknown host"):
        hosts.check_hosts(Settings.from_dict(ops=ops), ["web9"])
    with pytest.raises(ConfigError, match="no hosts configured"):
        hosts.check_hosts(Settings.from_dict(ops={}))


def test_report_script_quotes_service_names():
    script = hosts.report_script(["nginx", "a b;rm -rf /"], "systemctl")
    assert "is-active 'a b;rm -rf /'" in script


def test_cli_checks_hosts_json_and_exit_status(ops, tmp_path):
    config = tmp_path / "hosts.yaml"
    config.write_text(yaml.safe_dump({"ops": ops}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    result = subprocess.run([sys.executable, "-m", "invoke", "-f", str(config), "checks.hosts", "--json",
                             "--host", "web2", "--host", "dead"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1, result.stderr  # one host could not be checked
    doc = json.loads(result.stdout)
    assert [(c["id"], c["status"]) for c in doc["checks"]] == [("hosts.web2", "pass"), ("hosts.dead", "error")]
    assert doc["status"] == "error" and "Traceback" not in result.stderr


# -- the `hosts` row of checks.daily ----------------------------------------------------------------------------------
def test_daily_has_a_hosts_row_only_when_hosts_are_configured(ops):
    from ops import checks

    assert "hosts" not in checks.daily_ids(Settings.from_dict(ops={}))
    assert checks.daily_ids(Settings.from_dict(ops=ops)) == checks.DAILY + ("hosts",)


def test_daily_hosts_row_checks_every_host_over_ssh(ops, tmp_path):
    from ops import checks

    ops = {**ops, "audit_log": str(tmp_path / "audit.jsonl")}
    settings = Settings.from_dict(ops=ops)
    report = checks.run_checklist(settings, "daily", checks.daily_ids(settings))
    row = {o.id: o for o in report.outcomes}["hosts"]
    assert row.status == "fail"                   # web1's worker is failed (fail outranks dead's error)
    assert row.summary == "3 host(s): web1 fail, web2 pass, dead error"
    assert "web1: fail: disk" in row.details[0] and "1/2 services active" in row.details[0]
    assert "  web1: service worker is failed: journalctl -u worker -n 50, then systemctl restart worker" in row.details
    assert any(d.startswith("web2: pass: disk") for d in row.details)
    assert any(d.startswith("dead: error: cannot check dead: cannot open an SSH connection") for d in row.details)
    # the other daily rows are still there (unconfigured here: errors naming what to set)
    assert [o.id for o in report.outcomes] == list(checks.DAILY) + ["hosts"]


def test_cli_checks_daily_shows_the_hosts_row(ops, tmp_path):
    ops = {**ops, "hosts": {"web2": ops["hosts"]["web2"]}, "audit_log": str(tmp_path / "audit.jsonl")}
    config = tmp_path / "daily.yaml"
    config.write_text(yaml.safe_dump({"ops": ops}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")} | {"HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "invoke", "-f", str(config), "checks.daily", "--json"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    doc = json.loads(result.stdout)
    (row,) = [c for c in doc["checks"] if c["id"] == "hosts"]
    assert row["status"] == "pass" and row["summary"] == "1 host(s): web2 pass", result.stderr
