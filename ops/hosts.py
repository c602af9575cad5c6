"""Host checks over SSH: disk use, memory, load and systemd services on every configured host, concurrently.

    inv checks.hosts [--host NAME ...] [--json]

Hosts are `ops.hosts` (`{name: {host, user, port, key_filename}}`, with ~/.ssh/config honoured as Fabric does;
connections come from `ops.remote`, which remembers new host keys and refuses changed ones). What to look at:

    ops:
      host_checks:
        services: [nginx, lottery-api]      # for every host, or per host: {web1: [nginx], bastion: []}
        disk_warn: 80                       # percent used
        disk_fail: 90
        mem_warn: 0.10                      # share of memory still available
        load_per_cpu: 2.0
        systemctl: systemctl                # the command asked `is-active`

One short shell script runs on each host (Fabric's ThreadingGroup, all hosts at once); its output is parsed here
(pure functions) and judged by `ops.diagnose.host`. An unreachable host is an `error` outcome, not a crash.
"""
from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from . import checklist, diagnose
from .config import Settings
from .errors import ConfigError
from .tasking import task

SECTION = "### ops-hosts "


def report_script(services: Sequence[str], systemctl: str = "systemctl") -> str:
    """Pure: the script run on a host. Each section starts with a marker line; nothing in it needs root."""
    lines = [f"echo '{SECTION}disk'", "df -P -k -x tmpfs -x devtmpfs -x squashfs 2>/dev/null || df -P -k",
             f"echo '{SECTION}meminfo'", "cat /proc/meminfo",
             f"echo '{SECTION}loadavg'", "cat /proc/loadavg",
             f"echo '{SECTION}cpus'", "nproc 2>/dev/null || getconf _NPROCESSORS_ONLN",
             f"echo '{SECTION}services'"]
    for svc in services:
        q = shlex.quote(svc)
        lines.append(f"printf '%s ' {q}; {systemctl} is-active {q} 2>/dev/null | head -n 1; echo")
    return "\n".join(lines) + "\n"


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith(SECTION):
            current = line[len(SECTION):].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def human_kb(kb: float) -> str:
    size = float(kb)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "KiB" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def parse_report(text: str) -> dict[str, Any]:
    """Pure: the script's output -> {"disks": [...], "memory": {...}, "load": {...}, "services": {...}}."""
    s = _sections(text)
    disks = []
    for line in s.get("disk", [])[1:]:  # after df's header
        parts = line.split()
        if len(parts) >= 6 and parts[4].endswith("%") and parts[4][:-1].isdigit():
            disks.append({"filesystem": parts[0], "mount": " ".join(parts[5:]), "size_kb": int(parts[1]),
                          "avail_kb": int(parts[3]), "used_pct": float(parts[4][:-1]),
                          "avail_h": human_kb(int(parts[3]))})
    mem: dict[str, int] = {}
    for line in s.get("meminfo", []):
        key, _, rest = line.partition(":")
        if rest.split() and rest.split()[0].isdigit():
            mem[key.strip()] = int(rest.split()[0]) * 1024
    memory = None
    if "MemTotal" in mem:
        available = mem.get("MemAvailable", mem.get("MemFree", 0) + mem.get("Cached", 0))
        memory = {"total": mem["MemTotal"], "available": available}
    load = None
    loadavg = (s.get("loadavg") or [""])[0].split()
    cpus = next((int(x) for x in s.get("cpus", []) if x.strip().isdigit()), 0)
    if len(loadavg) >= 3:
        load = {"one": float(loadavg[0]), "five": float(loadavg[1]), "fifteen": float(loadavg[2]), "cpus": cpus}
    services = {}
    for line in s.get("services", []):
        name, _, state = line.strip().partition(" ")
        if name:
            services[name] = state.strip() or "unknown (systemd not answering)"
    return {"disks": disks, "memory": memory, "load": load, "services": services}


def outcome(name: str, facts: Mapping[str, Any], **limits: Any) -> checklist.Outcome:
    """Pure: one host's facts as a checklist outcome `hosts.<name>`."""
    if facts.get("error"):
        return checklist.Outcome(f"hosts.{name}", "error", f"cannot check {name}: {facts['error']}",
                                 (f"hint: {facts['hint']}",) if facts.get("hint") else ())
    findings = diagnose.host(name, facts, **limits)
    worst_disk = max(facts.get("disks") or [], key=lambda d: d["used_pct"], default=None)
    bits = []
    if worst_disk:
        bits.append(f"disk {worst_disk['used_pct']:.0f}% ({worst_disk['mount']})")
    if facts.get("memory"):
        m = facts["memory"]
        bits.append(f"memory {m['available'] / m['total']:.0%} free")
    if facts.get("load"):
        bits.append(f"load {facts['load']['one']:.2f}/{facts['load']['cpus']} CPU")
    services = facts.get("services") or {}
    if services:
        bits.append(f"{sum(1 for v in services.values() if v == 'active')}/{len(services)} services active")
    details = tuple(f.line() for f in findings)
    return checklist.Outcome(f"hosts.{name}", diagnose.host_status(findings), ", ".join(bits) or "no facts", details)


# -- effects -------------------------------------------------------------------------------------------------------
def services_for(settings: Settings, name: str) -> list[str]:
    configured = settings.get("host_checks.services") or []
    if isinstance(configured, Mapping):
        configured = configured.get(name) or []
    if isinstance(configured, str):
        configured = [configured]
    return [str(s) for s in configured]


def host_names(settings: Settings, only: Sequence[str] | None = None) -> list[str]:
    hosts = settings.get("hosts") or {}
    if not hosts:
        raise ConfigError("no hosts configured (ops.hosts is empty)",
                          hint="add ops: {hosts: {NAME: {host: HOST, user: USER, port: 22, key_filename: KEY}}}")
    names = list(only) if only else list(hosts)
    unknown = [n for n in names if n not in hosts]
    if unknown:
        raise ConfigError(f"unknown host(s): {', '.join(unknown)}", hint=f"configured: {', '.join(hosts)}")
    return names


def gather(settings: Settings, names: Sequence[str], *, config: Any = None) -> dict[str, dict[str, Any]]:
    """Run the report script on every host at once; facts per host name, or {"error": ..., "hint": ...}.

    Hosts that share a service list share one script and one ThreadingGroup; the groups run side by side."""
    from concurrent.futures import ThreadPoolExecutor

    systemctl = str(settings.get("host_checks.systemctl") or "systemctl")
    by_script: dict[str, list[str]] = {}
    for name in names:
        by_script.setdefault(report_script(services_for(settings, name), systemctl), []).append(name)
    facts: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=len(by_script)) as pool:
        for found in pool.map(lambda item: _run_group(settings, item[0], item[1], config), by_script.items()):
            facts.update(found)
    return facts


def _run_group(settings: Settings, script: str, names: Sequence[str], config: Any) -> dict[str, dict[str, Any]]:
    from fabric import ThreadingGroup
    from fabric.exceptions import GroupException

    from . import remote

    conns = {name: remote.connect(settings, name, config=config) for name in names}
    group = ThreadingGroup.from_connections(list(conns.values()))
    try:
        results: Mapping[Any, Any] = group.run(script, hide=True, warn=True, in_stream=False)
    except GroupException as exc:  # some hosts failed to connect: the others' results are in here too
        results = exc.result
    finally:
        group.close()
    facts = {}
    for name, cxn in conns.items():
        result = results.get(cxn)
        if isinstance(result, BaseException) or result is None:
            facts[name] = {"error": getattr(result, "message", None) or f"{type(result).__name__}: {result}",
                           "hint": getattr(result, "hint", None)}
        else:
            facts[name] = parse_report(result.stdout)
    return facts


def limits(settings: Settings) -> dict[str, float]:
    keys = ("disk_warn", "disk_fail", "mem_warn", "load_per_cpu")
    return {k: float(settings.get(f"host_checks.{k}")) for k in keys if settings.get(f"host_checks.{k}") is not None}


def check_hosts(settings: Settings, only: Sequence[str] | None = None, *, config: Any = None) -> list[checklist.Outcome]:
    """The `hosts.<name>` outcomes for `checks.hosts` (and for a `hosts` section of `checks.daily`)."""
    names = host_names(settings, only)
    facts = gather(settings, names, config=config)
    return [checklist.redact_outcome(outcome(n, facts[n], **limits(settings)), settings.secrets) for n in names]


def combined(outcomes: Sequence[checklist.Outcome]) -> checklist.Outcome:
    """Pure: the `hosts.<name>` outcomes as one `hosts` check (the `hosts` row of `checks.daily`): the worst status,
    each host's status in the summary, each host's evidence in the details."""
    status = checklist.worst(o.status for o in outcomes)
    names = [o.id.removeprefix("hosts.") for o in outcomes]
    summary = f"{len(outcomes)} host(s): " + ", ".join(f"{n} {o.status}" for n, o in zip(names, outcomes))
    details: list[str] = []
    for name, o in zip(names, outcomes):
        details.append(f"{name}: {o.status}: {o.summary}")
        details += [f"  {d}" for d in o.details]
    return checklist.Outcome("hosts", status, summary, tuple(details))


@task(name="hosts", iterable=["host"],
      help={"host": "Only this host (a name from ops.hosts; repeat for several)",
            "json": 'Print {"checks": [...], "status": worst} instead of the table'})
def hosts_task(c, host=None, json=False):
    """Check disk, memory, load and systemd services on the configured hosts over SSH, all at once."""
    settings = Settings.from_context(c)
    outcomes = check_hosts(settings, host or None)
    if json:
        print(checklist.to_json(outcomes))
    else:
        print(checklist.render_table(outcomes, "Hosts"), end="")
    status = checklist.worst(o.status for o in outcomes)
    if checklist.exit_code(status):
        import invoke

        print(f"hosts: {status}", file=sys.stderr)
        raise invoke.Exit(code=1)
