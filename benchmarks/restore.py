"""Benchmark: restore.verify and restore.staging --file against the raw shell tools, on a dump of a given size.

    python benchmarks/restore.py [--mb 300] [--server postgresql://postgres@127.0.0.1:5432/postgres] [--runs 3]

Builds (once, cached in --workdir) a lottery-shaped database of about --mb MB of plain SQL (ops.sandbox's seed) and a
backup of it made the nightly job's way (pg_dump --no-owner --no-privileges --clean --if-exists | gzip -9). Then,
median of --runs (default 5, the two restores alternating which goes first):
  verify:   `inv restore.verify FILE`                 vs `gzip -dc FILE > /dev/null`          target <= 1.0 (aim 0.6)
  restore:  `inv restore.staging --file FILE --yes`   vs `gunzip -c FILE | psql -1 -v ON_ERROR_STOP=1 -q`   <= 1.2
            (each into a freshly created database on the same server; checks included)
  memory:   peak RSS of the inv processes                                                         < 100 MB
  startup:  `inv --list`                              vs a bare one-task Invoke program          <= 2.0
Not a test: figures depend on the machine. Needs psql, pg_dump, gzip and a server whose user may create databases.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops import pg, sandbox  # noqa: E402

BYTES_PER_USER = 1140      # plain SQL per seeded user (its 10 tickets and 5 transactions included), measured


def run(argv: list[str] | str, *, env: dict[str, str] | None = None, shell: bool = False) -> tuple[float, int]:
    """Wall time and peak RSS (KiB, the process and its waited-for children) of one command; fails loudly."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, shell=shell, executable="/bin/bash" if shell else None,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"failed ({proc.returncode}): {argv if shell else shlex.join(argv)}\n{err[-2000:]}")
    return elapsed, usage.ru_maxrss


def median(times: list[float]) -> float:
    return statistics.median(times)


def checkpoint(server: str) -> None:
    """Start each timed restore with no dirty buffers left by the previous one (needs superuser; else skipped)."""
    try:
        with pg.connect(server, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except Exception:  # noqa: BLE001
        pass


def fresh_db(server: str, name: str) -> str:
    pg.drop_database(server, name)
    pg.create_database(server, name)
    return sandbox.Server(server, "").url(name)


def build(server: str, workdir: Path, mb: int) -> Path:
    """The lottery-shaped source and its backup (cached: rebuilt only when missing)."""
    backup = workdir / f"backup_bench_{mb}mb.sql.gz"
    if backup.exists():
        return backup
    users = max(1000, mb * 1_000_000 // BYTES_PER_USER)
    print(f"building the source database ({users:,} users) ...", flush=True)
    source = fresh_db(server, "bench_source")
    sandbox.seed(source, users)
    print("dumping it (pg_dump | gzip -9) ...", flush=True)
    env = pg.tool_env(source, os.environ)
    part = backup.with_name(backup.name + ".part")
    cmd = f"set -o pipefail; pg_dump -w --no-owner --no-privileges --clean --if-exists | gzip -9 > {shlex.quote(str(part))}"
    subprocess.run(["bash", "-c", cmd], env=env, check=True)
    part.rename(backup)
    pg.drop_database(server, "bench_source")
    return backup


def inv(*args: str) -> list[str]:
    return [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=300, help="plain SQL size of the dump to build (default 300)")
    ap.add_argument("--server", default=os.environ.get("OPS_BENCH_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "lottery-ops-bench"))
    opts = ap.parse_args()
    workdir = Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backup = build(opts.server, workdir, opts.mb)
    plain = int(subprocess.run(f"gzip -dc {shlex.quote(str(backup))} | wc -c", shell=True, capture_output=True,
                               text=True, check=True).stdout)
    print(f"backup: {backup} ({backup.stat().st_size / 1e6:.0f} MB gzip, {plain / 1e6:.0f} MB SQL)")
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INVOKE_"))}
    config = workdir / "invoke.json"
    config.write_text('{"ops": {"audit_log": "%s"}}' % (workdir / "audit.jsonl"))
    clean_env["INVOKE_RUNTIME_CONFIG"] = str(config)

    gz, ver, rss = [], [], []
    for _ in range(opts.runs):
        gz.append(run(f"gzip -dc {shlex.quote(str(backup))} > /dev/null", shell=True)[0])
        t, peak = run(inv("restore.verify", str(backup)), env=clean_env)
        ver.append(t)
        rss.append(peak)
    print(f"verify:  inv restore.verify {median(ver):6.2f} s   gzip -dc {median(gz):6.2f} s   "
          f"ratio {median(ver) / median(gz):.2f} (target <= 1.0, aim 0.6)")

    raw, ours = [], []
    for i in range(opts.runs):
        def raw_run() -> None:
            env = pg.tool_env(fresh_db(opts.server, "bench_raw"), clean_env)
            checkpoint(opts.server)
            raw.append(run(f"set -o pipefail; gunzip -c {shlex.quote(str(backup))} | psql -X -1 -v ON_ERROR_STOP=1 "
                           "-q", shell=True, env=env)[0])

        def our_run() -> None:
            url = fresh_db(opts.server, "bench_staging")
            checkpoint(opts.server)
            t, peak = run(inv("restore.staging", "--file", str(backup), "--yes"),
                          env={**clean_env, "STAGING_DATABASE_URL": url})
            ours.append(t)
            rss.append(peak)

        for step in ((raw_run, our_run) if i % 2 == 0 else (our_run, raw_run)):   # alternate the order
            step()
    print("  runs (s): raw " + " ".join(f"{t:.1f}" for t in raw) + " | ours " + " ".join(f"{t:.1f}" for t in ours))
    pg.drop_database(opts.server, "bench_raw")
    pg.drop_database(opts.server, "bench_staging")
    print(f"restore: inv restore.staging {median(ours):6.2f} s   gunzip | psql -1 {median(raw):6.2f} s   "
          f"ratio {median(ours) / median(raw):.2f} (target <= 1.2)")
    print(f"memory:  peak RSS of the inv processes {max(rss) / 1024:.0f} MB (target < 100 MB)")

    bare = workdir / "bare"
    bare.mkdir(exist_ok=True)
    (bare / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef hello(c):\n    pass\n")
    ours_list, bare_list = [], []
    for _ in range(max(5, opts.runs)):
        ours_list.append(run(inv("--list"), env=clean_env)[0])
        bare_list.append(run([sys.executable, "-m", "invoke", "--search-root", str(bare), "--list"], env=clean_env)[0])
    print(f"startup: inv --list {median(ours_list):6.3f} s   bare one-task program {median(bare_list):6.3f} s   "
          f"ratio {median(ours_list) / median(bare_list):.2f} (target <= 2.0)")


if __name__ == "__main__":
    main()
