"""Benchmark `restore.verify`'s reader against `gzip -dc > /dev/null` on a large gzip -9 plain dump.

    python benchmarks/verify.py                      # build a 300 MB dump (gzip -9) in a temp dir, time, report
    python benchmarks/verify.py --size-mb 50         # a quicker run
    python benchmarks/verify.py --path backup.sql.gz # time an existing backup instead

Prints, for the median of --runs runs: gzip -dc seconds, dumps.inspect seconds and their ratio (target: <= 1.0,
aiming at 0.6), the filter pass (what restore feeds psql, output discarded), and the peak RSS of each measuring
process (target: under 100 MB whatever the dump size). Measurements run in child processes so that building the
dump does not count toward the peak RSS.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADER = """--
-- PostgreSQL database dump
--

\\restrict Bm4rKq7ZtYx2NcLw8VpHs3DfGj6AeUo1iKq5tRzXyBn0MvCl2WuEa9SdFgHhJk1

-- Dumped from database version 17.6
-- Dumped by pg_dump version 17.6

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

"""
FOOTER = """--
-- PostgreSQL database dump complete
--

\\unrestrict Bm4rKq7ZtYx2NcLw8VpHs3DfGj6AeUo1iKq5tRzXyBn0MvCl2WuEa9SdFgHhJk1

"""
TABLES = {  # name: (columns, share of the data)
    "users": ("id bigint, email text, name text, created_at timestamp with time zone", 0.15),
    "orders": ("id bigint, user_id bigint, amount numeric(12,2), status text, error text", 0.35),
    "events": ("id bigint, kind text, payload jsonb", 0.35),
    "notes": ("id bigint, body text", 0.15),
}
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
         "romeo sierra tango uniform victor whiskey xray yankee zulu ERROR FATAL").split()


def row(table: str, i: int, rnd: random.Random) -> str:
    w = rnd.choice
    if table == "users":
        return f"{i}\t{w(WORDS)}.{i}@example.org\t{w(WORDS).title()} {w(WORDS).title()}\t2025-11-{1 + i % 28:02d} " \
               f"{i % 24:02d}:{i % 60:02d}:00+00\n"
    if table == "orders":
        err = "\\N" if i % 7 else f"ERROR: {w(WORDS)} declined\\tcode {i % 97}"
        return f"{i}\t{rnd.randrange(1, 10**6)}\t{rnd.randrange(1, 10**6) / 100:.2f}\t{w(('paid', 'open', 'void'))}" \
               f"\t{err}\n"
    if table == "events":
        return f'{i}\t{w(WORDS)}\t{{"n": {rnd.randrange(10**9)}, "tag": "{w(WORDS)}", "ok": {str(i % 3 == 0).lower()}}}\n'
    lines = "\\n".join(" ".join(w(WORDS) for _ in range(8)) for _ in range(3))
    return f"{i}\t{lines}\\\\ -- PostgreSQL database dump complete\n"


def build(path: Path, size_mb: int) -> None:
    """Write a plain dump of about size_mb MB through `gzip -9` into path."""
    target = size_mb * 1_000_000
    rnd = random.Random(1)
    with open(path, "wb") as out:
        gz = subprocess.Popen(["gzip", "-9", "-c"], stdin=subprocess.PIPE, stdout=out)
        assert gz.stdin is not None
        gz.stdin.write(HEADER.encode())
        for name, (columns, _) in TABLES.items():
            body = columns.replace(", ", ",\n    ")
            gz.stdin.write(f"--\n-- Name: {name}; Type: TABLE; Schema: public; Owner: -\n--\n\n"
                           f"CREATE TABLE public.{name} (\n    {body}\n);\n\n\n".encode())
        for name, (columns, share) in TABLES.items():
            cols = ", ".join(c.split()[0] for c in columns.split(", "))
            gz.stdin.write(f"--\n-- Data for Name: {name}; Type: TABLE DATA; Schema: public; Owner: -\n--\n\n"
                           f"COPY public.{name} ({cols}) FROM stdin;\n".encode())
            written, i, batch = 0, 0, []
            while written < target * share:
                i += 1
                batch.append(row(name, i, rnd))
                if len(batch) == 5000:
                    data = "".join(batch).encode()
                    gz.stdin.write(data)
                    written += len(data)
                    batch = []
            data = "".join(batch).encode()
            gz.stdin.write(data + b"\\.\n\n\n")
        gz.stdin.write(FOOTER.encode())
        gz.stdin.close()
        if gz.wait() != 0:
            raise SystemExit("gzip failed")


def measure_child(mode: str, path: str) -> dict[str, float]:
    """Run in a child process: time one pass and report its own peak RSS."""
    from ops import dumps
    start = time.perf_counter()
    if mode == "inspect":
        report = dumps.inspect(path)
        rows = sum(report.tables.values())
        ok = report.ok
    else:
        reader = dumps.DumpReader(dumps.Plan(scope=None, psql_version=(17, 6), server_version=(15, 0)))
        sent = 0
        with dumps.open_backup(path) as stream:
            for piece in reader.filter(stream):
                sent += len(piece)
        rows, ok = sum(reader.report.tables.values()), reader.report.ok
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rows": rows,
            "ok": ok}


def run_child(mode: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def gzip_seconds(path: Path) -> float:
    start = time.perf_counter()
    with open("/dev/null", "wb") as null:
        subprocess.run(["gzip", "-dc", str(path)], stdout=null, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=300, help="uncompressed size of the dump to build (MB)")
    parser.add_argument("--path", type=Path, help="time this .sql.gz instead of building one")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (the median is reported)")
    parser.add_argument("--keep", action="store_true", help="keep the built dump and print its path")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_child(*args.child)))
        return
    if not shutil.which("gzip"):
        raise SystemExit("gzip is not installed")
    workdir = None
    path = args.path
    if path is None:
        workdir = Path(tempfile.mkdtemp(prefix="ops-bench-"))
        path = workdir / "backup.sql.gz"
        start = time.perf_counter()
        build(path, args.size_mb)
        print(f"built {path} ({path.stat().st_size / 1e6:.1f} MB gzip -9, ~{args.size_mb} MB plain) in "
              f"{time.perf_counter() - start:.1f} s")
    try:
        with gzip.open(path, "rb") as f:                       # warm the page cache, learn the plain size
            plain = sum(len(b) for b in iter(lambda: f.read(1 << 20), b""))
        base = statistics.median(gzip_seconds(path) for _ in range(args.runs))
        inspect = [run_child("inspect", path) for _ in range(args.runs)]
        filt = [run_child("filter", path) for _ in range(args.runs)]
        t_inspect = statistics.median(r["seconds"] for r in inspect)
        t_filter = statistics.median(r["seconds"] for r in filt)
        print(f"plain size {plain / 1e6:.1f} MB, rows {inspect[0]['rows']:,}, ok {inspect[0]['ok']}")
        print(f"gzip -dc > /dev/null      {base:7.2f} s")
        print(f"dumps.inspect (verify)    {t_inspect:7.2f} s   ratio {t_inspect / base:.2f}   "
              f"peak RSS {max(r['rss_mb'] for r in inspect):.0f} MB")
        print(f"DumpReader.filter         {t_filter:7.2f} s   ratio {t_filter / base:.2f}   "
              f"peak RSS {max(r['rss_mb'] for r in filt):.0f} MB")
    finally:
        if workdir is not None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif workdir is not None:
            print(f"kept {path}")


if __name__ == "__main__":
    main()
