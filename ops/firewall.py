"""Blocking an address on a host's firewall over SSH (for `inv emergency.block-ip`).

The commands are iptables-style and configurable, so a host with nftables' iptables compatibility layer, a sudo
rule, or a wrapper script works too:

    ops:
      firewall:
        v4: iptables          # the tool for IPv4 addresses and networks
        v6: ip6tables         # the tool for IPv6
        chain: INPUT
        sudo: false           # prefix `sudo -n` (never prompts)
        hosts: []             # names from ops.hosts to apply to (default: every configured host)

Every rule carries the comment `lottery-ops block-ip`, so `--unblock` removes exactly what was added. The state is
asked first (`-C`): blocking twice adds one rule, unblocking an address that is not blocked changes nothing.
A dry run asks the state (read-only) and says what it would run, but never runs a change.
"""
from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, ServiceError

COMMENT = "lottery-ops block-ip"
Address = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse(text: str) -> Address:
    """Pure: an address or network (198.51.100.4, 2001:db8::1, 203.0.113.0/24); ConfigError otherwise."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"{text!r} is not an IP address or network",
                          hint="give an IPv4/IPv6 address (198.51.100.4, 2001:db8::1) or a network (/24, /64)") from None


def shown(net: Address) -> str:
    """Pure: a single address without its /32 or /128; a network with its prefix."""
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def rule_argv(tool: str, net: Address, op: str, *, chain: str = "INPUT", sudo: bool = False) -> list[str]:
    """Pure: the command for `op` (check, add, delete) of the DROP rule for `net`."""
    flag = {"check": "-C", "add": "-I", "delete": "-D"}[op]
    argv = [tool, flag, chain, "-s", shown(net), "-m", "comment", "--comment", COMMENT, "-j", "DROP"]
    return ["sudo", "-n", *argv] if sudo else argv


def options(settings: Any, net: Address) -> dict[str, Any]:
    fw: Mapping[str, Any] = settings.get("firewall") or {}
    tool = str(fw.get("v6" if net.version == 6 else "v4") or ("ip6tables" if net.version == 6 else "iptables"))
    return {"tool": tool, "chain": str(fw.get("chain") or "INPUT"), "sudo": bool(fw.get("sudo", False))}


def firewall_hosts(settings: Any) -> list[str]:
    hosts = settings.get("hosts") or {}
    wanted = (settings.get("firewall") or {}).get("hosts") or list(hosts)
    unknown = [h for h in wanted if h not in hosts]
    if unknown:
        raise ConfigError(f"ops.firewall.hosts names unknown host(s): {', '.join(unknown)}",
                          hint=f"configured hosts: {', '.join(hosts) or 'none'}")
    return list(wanted)


def apply(cxn: Any, net: Address, *, unblock: bool, tool: str, chain: str = "INPUT", sudo: bool = False,
          dry_run: bool) -> str:
    """Block (or unblock) `net` on the host behind `cxn`; return what happened, one line."""
    check = shlex.join(rule_argv(tool, net, "check", chain=chain, sudo=sudo))
    result = cxn.run(check, warn=True, hide=True, in_stream=False)
    if result.exited not in (0, 1):
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [f"exit {result.exited}"]
        hint = ("install it or set ops.firewall.v4/v6" if result.exited == 127
                else "the SSH user needs the right to change the firewall (root, or ops.firewall.sudo with a sudo rule)")
        raise ServiceError(f"{cxn.host}: `{check}` failed: {detail[0]}", hint=hint)
    present = result.exited == 0
    if present != unblock:
        return f"{shown(net)} {'was not' if unblock else 'is already'} blocked there"
    command = shlex.join(rule_argv(tool, net, "delete" if unblock else "add", chain=chain, sudo=sudo))
    if dry_run:
        return f"dry run: would run `{command}`"
    done = cxn.run(command, warn=True, hide=True, in_stream=False)
    if done.failed:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.exited}"]
        raise ServiceError(f"{cxn.host}: `{command}` failed: {detail[0]}",
                           hint="run it by hand on the host to see why")
    return f"{'unblocked' if unblock else 'blocked'} {shown(net)} (`{command}`)"
