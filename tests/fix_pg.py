"""Real PostgreSQL for the tests (the shape of psycopg's tests/fix_db.py).

Where the server comes from, first that works:
  1. OPS_TEST_DATABASE_URL: a server URL with superuser rights (e.g. postgresql://postgres@127.0.0.1:5432/postgres);
  2. Docker: the `postgres` service of docker-compose.test.yml through pytest-docker, if `docker info` succeeds;
  3. a throwaway cluster: initdb + pg_ctl from OPS_TEST_PG_BIN, PATH or /usr/lib/postgresql/*/bin, in a temp dir,
     listening on 127.0.0.1 on a free port, fsync off, run as user `postgres` when we are root.
If none works the database tests are skipped, except under CI (env CI set), where the run stops with the reason.

Fixtures:
  pg_server                 session: PgServer (.admin_url, .url(dbname), .host, .port, .version, .major, .source)
  make_db(prefix="t")       function: creates a fresh database, returns its URL; dropped after the test
  staging_url, production_url   function: two fresh databases named staging_<hex> and production_<hex>
  pg_bin_dir                session: Path of local server binaries (initdb, pg_ctl, postgres, psql, pg_dump)
  old_pg16                  session: PgServer of PostgreSQL 16.2 from the pgserver wheel; .bin_dir holds its psql 16.2
  isolated_environ          autouse: removes secrets, PG* and proxy variables from the environment of every test
"""
from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ops import cluster as _cluster
from ops.cluster import SERVER_USER, find_bin_dir, free_port, run_as_argv  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.test.yml"

LEAKY_VARS = (
    "DATABASE_URL", "STAGING_DATABASE_URL", "GITHUB_TOKEN", "RENDER_API_KEY", "SENTRY_AUTH_TOKEN",
    "SUPABASE_ACCESS_TOKEN", "CLOUDFLARE_API_TOKEN",
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def needs(what: str, why: str) -> None:
    """A server feature a test needs is missing (a contrib extension): fail under CI, skip otherwise."""
    if in_ci():
        pytest.fail(f"CI is set and the test server lacks {what}: {why}")
    pytest.skip(f"the test server lacks {what}")


def unavailable(message: str) -> None:
    """No server could be had: stop the run under CI (skipped DB tests must not pass CI), skip otherwise."""
    if in_ci():
        pytest.exit(f"CI is set and PostgreSQL is not available for the tests: {message}", returncode=3)
    pytest.skip(f"PostgreSQL not available: {message}")


# -- the server ----------------------------------------------------------------------------------------------------
@dataclass
class PgServer:
    """A PostgreSQL server the tests may create and drop databases on, as a superuser."""

    host: str
    port: int
    user: str
    password: str | None = None
    source: str = ""             # "env", "docker", "initdb", "pgserver"
    version: int = 0             # server_version_num, e.g. 150018
    bin_dir: Path | None = None  # local binaries of this server, when we started it ourselves
    params: dict[str, str] = field(default_factory=dict)  # extra URL query parameters (sslmode...)

    @property
    def major(self) -> int:
        return self.version // 10000

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, dbname: str) -> str:
        """postgresql://user[:password]@host:port/dbname (a socket directory goes in ?host=)."""
        auth = quote(self.user, safe="") + (":" + quote(self.password, safe="") if self.password else "")
        query = dict(self.params)
        if self.host.startswith("/"):
            query["host"] = self.host
            netloc = f"{auth}@:{self.port}"
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
            netloc = f"{auth}@{host}:{self.port}"
        tail = f"?{urlencode(query)}" if query else ""
        return f"postgresql://{netloc}/{quote(dbname, safe='')}{tail}"

    def warm_up(self, attempts: int = 1) -> None:
        """Connect once; learn the version and the credentials libpq really used (a password from PGPASSWORD or
        ~/.pgpass goes into the URLs, so tests do not depend on the environment the fixtures clear)."""
        for attempt in range(attempts):
            try:
                with psycopg.connect(self.admin_url, connect_timeout=10) as conn:
                    self.version = conn.info.server_version
                    self.password = self.password or conn.info.password or None
                    is_super = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
                if not (is_super and is_super[0]):
                    pytest.exit(f"the test server {self.source} connects as {self.user}, which is not a superuser",
                                returncode=3)
                return
            except psycopg.OperationalError as exc:
                if attempt + 1 == attempts:
                    pytest.exit(f"cannot connect to the test PostgreSQL server ({self.source}, "
                                f"{self.host}:{self.port}): {str(exc).strip()}", returncode=3)
                time.sleep(0.5)


def server_from_url(url: str, source: str) -> PgServer:
    params = {k: v for k, v in conninfo_to_dict(url).items() if v is not None}
    host = params.pop("host", "") or "/var/run/postgresql"
    port = int(params.pop("port", "") or 5432)
    user = params.pop("user", "") or os.environ.get("PGUSER") or pwd.getpwuid(os.getuid()).pw_name
    password = params.pop("password", None)
    params.pop("dbname", None)
    return PgServer(host=host, port=port, user=user, password=password, source=source, params=params)


# -- throwaway clusters (the product code's ops.cluster; tests name the label and get a PgServer) -----------------
class Cluster(_cluster.Cluster):
    """An initdb'd data directory in a temp dir, started with pg_ctl on 127.0.0.1:<free port>."""

    def __init__(self, bin_dir: Path, label: str = "ops-test-pg"):
        super().__init__(bin_dir, label)

    def server(self, source: str) -> PgServer:
        return PgServer(host="127.0.0.1", port=self.port, user="postgres", source=source, bin_dir=self.bin_dir)


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    """pytest-docker: our compose file (read only when Docker answers)."""
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def pg_bin_dir() -> Path:
    """Local PostgreSQL server binaries (initdb, pg_ctl, postgres, and the psql/pg_dump beside them)."""
    found = find_bin_dir()
    if found is None:
        unavailable("no initdb/pg_ctl/postgres on PATH, in OPS_TEST_PG_BIN or under /usr/lib/postgresql/*/bin")
    return found


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest):
    """The PostgreSQL server of this test session (see the module docstring for where it comes from)."""
    url = os.environ.get("OPS_TEST_DATABASE_URL")
    if url:
        server = server_from_url(url, "env")
        server.warm_up()
        yield server
        return
    if docker_answers():
        services = request.getfixturevalue("docker_services")
        server = PgServer(host=request.getfixturevalue("docker_ip"), port=services.port_for("postgres", 5432),
                          user="postgres", source="docker")
        services.wait_until_responsive(timeout=60, pause=0.5, check=lambda: _answers(server))
        server.warm_up()
        yield server
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        unavailable("OPS_TEST_DATABASE_URL is not set, no Docker engine answers, and no initdb/pg_ctl was found "
                    "on PATH or under /usr/lib/postgresql/*/bin (apt install postgresql)")
    try:
        cluster = Cluster(bin_dir)
    except RuntimeError as exc:
        unavailable(str(exc))
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        unavailable(f"could not start a throwaway cluster with {bin_dir}: {exc}")
    try:
        server = cluster.server("initdb")
        server.warm_up(attempts=5)
        yield server
    finally:
        cluster.stop()


def _answers(server: PgServer) -> bool:
    try:
        with psycopg.connect(server.admin_url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture
def make_db(pg_server: PgServer):
    """Factory: make_db(prefix="t") creates a fresh, uniquely named database and returns its URL.
    Every database made is dropped after the test (WITH (FORCE): sessions left open do not block it)."""
    made: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(pg_server.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return pg_server.url(name)

    yield make
    force = sql.SQL(" WITH (FORCE)") if pg_server.version >= 130000 else sql.SQL("")
    with psycopg.connect(pg_server.admin_url, autocommit=True, connect_timeout=10) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))


@pytest.fixture
def staging_url(make_db) -> str:
    """A fresh database named staging_<hex>: a non-production target for the guard."""
    return make_db("staging")


@pytest.fixture
def production_url(make_db) -> str:
    """A fresh database named production_<hex>: the guard sees the name token and treats it as production."""
    return make_db("production")


@pytest.fixture(autouse=True)
def isolated_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's secrets, database targets, libpq defaults, proxies and Invoke overrides out of tests."""
    for name in list(os.environ):
        if name in LEAKY_VARS or name.startswith("PG") or name.startswith("INVOKE_"):
            monkeypatch.delenv(name, raising=False)


# -- an old server: PostgreSQL 16.2 from the pgserver wheel --------------------------------------------------------
def pgserver_install() -> Path | None:
    """site-packages/pgserver/pginstall of the pgserver wheel, without importing pgserver."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    install = Path(list(spec.submodule_search_locations)[0]) / "pginstall"
    return install if (install / "bin" / "postgres").exists() else None


def copy_pgserver(install: Path, dest: Path) -> Path:
    """Copy the wheel's binaries where the server's user can read them (site-packages may sit under /root, 0700).
    The layout is kept: the binaries find their libraries through RPATH $ORIGIN/../../../pgserver.libs."""
    site = install.parent.parent
    target = dest / "pgserver" / "pginstall"
    target.mkdir(parents=True)
    for part in ("bin", "lib", "share"):
        shutil.copytree(install / part, target / part, symlinks=True)
    if (site / "pgserver.libs").is_dir():
        shutil.copytree(site / "pgserver.libs", dest / "pgserver.libs", symlinks=True)
    return target / "bin"


@pytest.fixture(scope="session")
def old_pg16():
    """A PostgreSQL 16.2 server (and psql/pg_dump 16.2 in `.bin_dir`) from the pgserver==0.1.4 wheel."""
    def fail(message: str) -> None:
        if in_ci():
            pytest.fail(f"old_pg16 (PostgreSQL 16.2 from the pgserver wheel) is not available under CI: {message}",
                        pytrace=False)
        pytest.skip(f"PostgreSQL 16.2 from pgserver not available: {message}")

    install = pgserver_install()
    if install is None:
        fail("the pgserver==0.1.4 wheel is not installed (pip install -e '.[test]')")
    cluster = binaries = None
    try:
        binaries = Path(tempfile.mkdtemp(prefix="ops-test-pg16-bin-"))
        os.chmod(binaries, 0o755)
        bin_dir = copy_pgserver(install, binaries)
        cluster = Cluster(bin_dir, label="ops-test-pg16")
        cluster.start()
        server = cluster.server("pgserver")
        with psycopg.connect(server.admin_url, connect_timeout=10) as conn:
            server.version = conn.info.server_version
    except (RuntimeError, OSError, subprocess.TimeoutExpired, psycopg.Error) as exc:
        if cluster is not None:
            cluster.stop()
        if binaries is not None:
            shutil.rmtree(binaries, ignore_errors=True)
        fail(str(exc))
    try:
        yield server
    finally:
        cluster.stop()
        shutil.rmtree(binaries, ignore_errors=True)
