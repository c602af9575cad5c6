"""The house task wrapper as the user meets it: `inv ...` as a subprocess whose stdout reader goes away early.

`inv restore.verify FILE --json | head -c 10` must end quietly (no BrokenPipeError traceback, no "Exception
ignored" at exit) with exit status 141, as a tool killed by SIGPIPE would; a task whose output is cut off still
runs to its end (a restore still writes its audit record), and a task that fails keeps its own exit status.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import dump_samples as ds

ROOT = Path(__file__).resolve().parent.parent

TASKS = '''
from pathlib import Path

from invoke import Collection

from ops.errors import VerificationFailed
from ops.tasking import task


@task
def spew(c, marker, fail=False):
    for i in range(20000):
        print(f"line {i} " + "x" * 60)
    Path(marker).write_text("ran to the end")
    if fail:
        raise VerificationFailed("it failed after the output", hint="look at it")


@task
def outer(c, marker):
    spew(c, marker)
    print("after the inner task")


ns = Collection(spew, outer)
'''


def env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")},
            "PYTHONPATH": str(ROOT)}


def run_reading(argv: list[str], cwd: Path, nbytes: int | None) -> tuple[bytes, int, str]:
    """Run argv; read `nbytes` of its stdout (None: read nothing) and close the pipe, as `| head -c N` does."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    got = proc.stdout.read(nbytes) if nbytes else b""
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return got, proc.wait(timeout=120), err


@pytest.fixture(scope="module")
def big_backup(tmp_path_factory) -> Path:
    """A valid backup whose `restore.verify --json` report is far bigger than a pipe's buffer (64 KiB)."""
    parts = [ds.entry(f"t{i}", "TABLE", f"CREATE TABLE public.t{i} (a int);") + ds.data(f"t{i}", "a", ["1", "2"])
             for i in range(5000)]
    path = tmp_path_factory.mktemp("pipe") / "backup_20250101_020000.sql.gz"
    path.write_bytes(gzip.compress(ds.dump(*parts), 1))
    return path


def inv(*args: str) -> list[str]:
    return [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args]


@pytest.mark.parametrize("nbytes", [10, None], ids=["head-c-10", "closed-before-any-output"])
def test_verify_json_into_a_pipe_that_closes_early_exits_141_without_a_traceback(big_backup, nbytes):
    got, code, err = run_reading(inv("restore.verify", str(big_backup), "--json"), ROOT, nbytes)
    assert code == 141, err
    assert err == "", err                             # no traceback, no "Exception ignored ... BrokenPipeError"
    if nbytes:
        assert got == b'{\n  "ok": '[:nbytes]


def test_verify_json_read_to_the_end_is_unchanged(big_backup):
    out = subprocess.run(inv("restore.verify", str(big_backup), "--json"), cwd=ROOT, env=env(), capture_output=True,
                         timeout=120)
    assert out.returncode == 0 and len(out.stdout) > 1 << 16 and out.stdout.startswith(b'{\n  "ok": true')


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "tasks.py").write_text(TASKS)
    return tmp_path


def test_a_task_whose_reader_went_away_still_runs_to_its_end(project):
    marker = project / "marker"
    _, code, err = run_reading([sys.executable, "-m", "invoke", "spew", "--marker", str(marker)], project, 5)
    assert code == 141 and err == ""
    assert marker.read_text() == "ran to the end"


def test_a_task_that_fails_after_its_reader_went_away_keeps_its_exit_status_and_message(project):
    marker = project / "marker"
    _, code, err = run_reading([sys.executable, "-m", "invoke", "spew", "--marker", str(marker), "--fail"],
                               project, None)
    assert code == 1 and marker.exists()
    assert err == "it failed after the output\nhint: look at it\n"


def test_a_task_calling_a_task_is_guarded_once(project):
    marker = project / "marker"
    _, code, err = run_reading([sys.executable, "-m", "invoke", "outer", "--marker", str(marker)], project, 5)
    assert code == 141 and err == "" and marker.exists()
    done = subprocess.run([sys.executable, "-m", "invoke", "outer", "--marker", str(marker)], cwd=project, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.endswith("after the inner task\n") and done.stderr == ""
