"""Pure: the identity of a PostgreSQL target as libpq would reach it, and whether it is production.

Two spellings that reach the same database must compare equal, whatever the spelling: URI or key=value,
`postgres://` or `postgresql://`, percent-encoding, host case and trailing dot, default port omitted, host and
port in query parameters, Unix-socket directories, `hostaddr`, several hosts in one URI, libpq's environment
defaults and service files. The parse itself is done by libpq (`parse_conninfo`), so the guard reads a URL
exactly as psql would; everything after that is plain functions of plain data. Name resolution, the local
addresses of this machine and the service files are passed in, so this module does no I/O.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

DEFAULT_PORT = "5432"
LOCAL = "local"  # the host key of every way of reaching this machine: sockets, loopback, own addresses

# libpq reads these when the connection string leaves a part out (libpq-envars)
ENV_DEFAULTS = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
}
SUPABASE_POOLER = re.compile(r"(^|\.)pooler\.supabase\.(com|co)$")
SUPABASE_DIRECT = re.compile(r"^db\.(?P<ref>[a-z0-9]+)\.supabase\.(co|com)$")

Resolver = Callable[[str], frozenset[str]]


class TargetError(ValueError):
    """The target cannot be understood; the guard refuses it (fails closed)."""


def parse_conninfo(text: str) -> dict[str, str]:
    """Parse a URI or key=value connection string with libpq's own parser (PQconninfoParse).

    libpq is the parser psql and psycopg use, so there is no second opinion to disagree with.
    """
    from psycopg.conninfo import conninfo_to_dict  # deferred: keeps `inv --list` fast

    if not isinstance(text, str) or not text.strip():
        raise TargetError("the target is empty")
    uri = re.match(r"postgres(?:ql)?://([^/]*)([^?]*)", text)
    if uri is not None and (uri[1].count("@") > 1 or "@" in uri[2]):
        # libpq would read the rest of a password holding @ or / as a host, port or database name (and show it)
        raise TargetError("the URL holds an @ where libpq does not expect one: write @, /, ?, # and spaces in the "
                          "password percent-encoded (%40, %2F, %3F, %23, %20)")
    try:
        params = conninfo_to_dict(text)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's own message
        raise TargetError(f"libpq cannot parse it: {_strip_secret(str(exc)).strip()}") from None
    return {k: str(v) for k, v in params.items() if v is not None}


def _strip_secret(message: str) -> str:
    from .redact import redact_url
    return redact_url(message)


@dataclass(frozen=True)
class Endpoint:
    """One host libpq may connect to: `key` is LOCAL, an IP address set, or a name that did not resolve."""

    name: str                     # as written (normalised), or the socket directory
    addresses: frozenset[str]     # resolved, canonical IP addresses; empty when unresolved
    port: str
    local: bool

    def same_server(self, other: "Endpoint") -> bool:
        if self.port != other.port:
            return False
        if self.local or other.local:
            return self.local and other.local
        return self.name == other.name or bool(self.addresses & other.addresses)

    def describe(self) -> str:
        where = "this machine" if self.local else (", ".join(sorted(self.addresses)) or "unresolved")
        return f"{self.name}:{self.port} ({where})"


@dataclass(frozen=True)
class Identity:
    """What libpq would connect to: the endpoints in order, the database, the user, a Supabase project ref."""

    endpoints: tuple[Endpoint, ...]
    dbname: str
    user: str
    supabase_ref: str | None = None
    params: Mapping[str, str] = field(default_factory=dict, compare=False)  # resolved libpq params (with secret)

    def key(self) -> str:
        """A stable one-line name of the database, used in approval tokens."""
        if self.supabase_ref:
            return f"supabase:{self.supabase_ref}/{self.dbname}"
        # names, not resolved addresses: the approver's and the operator's resolvers may disagree (round-robin
        # DNS, IPv6), and both start from the same DATABASE_URL
        hosts = ",".join(f"{LOCAL if e.local else e.name}:{e.port}" for e in self.endpoints)
        return f"postgresql://{hosts}/{self.dbname}"

    def same_database(self, other: "Identity") -> bool:
        if self.supabase_ref and other.supabase_ref:
            return self.supabase_ref == other.supabase_ref and self.dbname == other.dbname
        if self.dbname != other.dbname:
            return False
        return any(a.same_server(b) for a in self.endpoints for b in other.endpoints)


def normalise_host(host: str) -> str:
    """Case, trailing dots, brackets, IDNA and IP spellings folded; socket directories kept as paths."""
    host = host.strip()
    if host.startswith("/") or host.startswith("@"):
        return host.rstrip("/") or "/"
    host = host.strip("[]").rstrip(".").lower()
    ip = canonical_ip(host)
    if ip:
        return ip
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def canonical_ip(text: str) -> str | None:
    """`::FFFF:10.0.0.1` -> `10.0.0.1`, `0:0::1` -> `::1`; None when `text` is not an IP address literal."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        # the shorthand IPv4 forms getaddrinfo accepts too: 127.1, 2130706433, 0x7f.0.0.1
        if not re.fullmatch(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}", text.lower()):
            return None
        import socket
        try:
            addr = ipaddress.ip_address(socket.inet_aton(text))
        except OSError:
            return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return str(addr)


def is_local_address(addr: str, local_addresses: frozenset[str]) -> bool:
    ip = ipaddress.ip_address(addr)
    return ip.is_loopback or ip.is_unspecified or addr in local_addresses


def _split(value: str | None) -> list[str]:
    return [] if value is None else value.split(",")


def parse_service_file(text: str, keywords: Iterable[str]) -> dict[str, dict[str, str] | str]:
    """The services of one pg_service.conf, read as libpq's parseServiceFile reads them (not as an INI file):
    the first section of a name wins and so does the first value of a key, keys are not trimmed, `[a]b]` opens
    both `a` and `a]b`, and a line libpq would reject makes the service an error (a str: why) instead of a dict.
    `keywords` are libpq's connection keywords."""
    known = set(keywords)
    services: dict[str, dict[str, str] | str] = {}
    active: list[str] = []
    for raw in text.split("\n"):
        line = raw.strip(" \t\n\r\f\v")
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            active = [line[1:j] for j in range(1, len(line)) if line[j] == "]" and line[1:j] not in services]
            for name in active:
                services[name] = {}
            continue
        if not active:
            continue
        key, eq, value = line.partition("=")
        error = None
        if line.startswith("ldap"):
            error = "it is looked up in LDAP, which the guard cannot follow"
        elif not eq:
            error = f"libpq rejects its line {line[:40]!r} (syntax error)"
        elif key in ("service", "servicefile"):
            error = f"it sets {key} itself (nested service specifications)"
        elif key not in known:
            error = f"libpq rejects its keyword {key!r} (syntax error)"
        for name in active:
            found = services[name]
            if isinstance(found, str):
                continue
            if error is not None:
                services[name] = error
            else:
                found.setdefault(key, value)
    return services


def resolve_params(params: Mapping[str, str], env: Mapping[str, str],
                   services: Mapping[str, Mapping[str, str] | str], os_user: str) -> dict[str, str]:
    """Fill what the connection string leaves out, in libpq's order: service file, then PG* variables, then
    compiled-in defaults. Raises TargetError for a service that is named but not found or that libpq would
    reject (a str in `services`: why)."""
    out = dict(params)
    if "servicefile" in out:  # libpq 18's own service file parameter: the guard reads PGSERVICEFILE only
        raise TargetError("servicefile in the connection string is not followed by the guard; set PGSERVICEFILE")
    service = out.get("service") or env.get("PGSERVICE")
    if service:
        found = services.get(service)
        if found is None:
            raise TargetError(f'service "{service}" is not defined in any pg_service.conf')
        if isinstance(found, str):
            raise TargetError(f'service "{service}" cannot be used: {found}')
        for key, value in found.items():
            out.setdefault(key, value)
        out.pop("service", None)
    for key, var in ENV_DEFAULTS.items():
        if key not in out and env.get(var):
            out[key] = env[var]
    out.setdefault("user", os_user)
    out.setdefault("dbname", out["user"])
    for key in ("dbname", "user"):
        if "=" in out[key] or re.match(r"^postgres(ql)?://", out[key], re.I):
            raise TargetError(f"the {key} is itself a connection string; write the target as one URL")
    return out


def endpoints(params: Mapping[str, str], resolve: Resolver, local_addresses: frozenset[str]) -> tuple[Endpoint, ...]:
    """The hosts libpq would try, paired with ports and hostaddrs as libpq pairs them."""
    hosts = _split(params.get("host"))
    if any("@" in h.strip()[1:] for h in hosts):
        raise TargetError("a host name holds an @ (a password with an @ written as it is?): write it as %40")
    addrs = _split(params.get("hostaddr"))
    count = max(len(hosts), len(addrs), 1)
    if hosts and addrs and len(hosts) != len(addrs):
        raise TargetError(f"{len(addrs)} hostaddr values for {len(hosts)} hosts (libpq refuses this too)")
    ports = _split(params.get("port")) or [""]
    if len(ports) == 1:
        ports = ports * count
    elif len(ports) != count:
        raise TargetError(f"{len(ports)} ports for {count} hosts (libpq refuses this too)")
    hosts = hosts or [""] * count
    addrs = addrs or [""] * count
    result = []
    for host, addr, port in zip(hosts, addrs, ports):
        port = port.strip() or DEFAULT_PORT
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise TargetError(f"invalid port {port!r}")
        port = str(int(port))
        result.append(_endpoint(host.strip(), addr.strip(), port, resolve, local_addresses))
    return tuple(result)


def _endpoint(host: str, hostaddr: str, port: str, resolve: Resolver, local_addresses: frozenset[str]) -> Endpoint:
    if hostaddr:  # libpq connects to hostaddr and uses host only for TLS and passwords
        ip = canonical_ip(hostaddr)
        if ip is None:
            raise TargetError(f"hostaddr {hostaddr!r} is not a numeric address")
        return Endpoint(normalise_host(host) if host else ip, frozenset({ip}), port, is_local_address(ip, local_addresses))
    if not host or host.startswith("/") or host.startswith("@"):
        return Endpoint(normalise_host(host) if host else "(default socket)", frozenset(), port, True)
    name = normalise_host(host)
    ip = canonical_ip(name)
    found = frozenset({ip}) if ip else frozenset(a for a in (canonical_ip(x) for x in resolve(name)) if a)
    local = any(is_local_address(a, local_addresses) for a in found) or name in {"localhost", "localhost6"}
    return Endpoint(name, found, port, local)


def supabase_ref(params: Mapping[str, str], eps: Iterable[Endpoint]) -> str | None:
    """The Supabase project behind a direct host (`db.<ref>.supabase.co`) or a pooler user (`postgres.<ref>`)."""
    for ep in eps:
        direct = SUPABASE_DIRECT.match(ep.name)
        if direct:
            return direct["ref"]
        if SUPABASE_POOLER.search(ep.name):
            user = params.get("user", "")
            return user.split(".", 1)[1].lower() if "." in user else None
    return None


def identify(text: str, *, env: Mapping[str, str], services: Mapping[str, Mapping[str, str] | str],
             os_user: str, resolve: Resolver, local_addresses: frozenset[str]) -> Identity:
    params = resolve_params(parse_conninfo(text), env, services, os_user)
    eps = endpoints(params, resolve, local_addresses)
    return Identity(eps, params["dbname"], params["user"], supabase_ref(params, eps), params)


def name_tokens_in(name: str, tokens: Iterable[str]) -> list[str]:
    """Production words in a host or database name. `prod` is matched anywhere (it starts `production` and
    ends `lotteryprod`); shorter or ambiguous words such as `live` only as a whole word between non-letters,
    so that `delivery` is not production but `live-db` and `db_live2` are."""
    low = name.lower()
    words = set(re.findall(r"[a-z]+", low))
    found = []
    for token in tokens:
        token = token.lower()
        if (token.startswith("prod") and token in low) or token in words:
            found.append(token)
    return found


@dataclass(frozen=True)
class ProductionRule:
    """One configured description of production: `{host: H}` or `{host: H, user: U}` (port, dbname optional)."""

    host: Endpoint
    user: str | None = None
    dbname: str | None = None

    def matches(self, ident: Identity) -> bool:
        if self.dbname is not None and ident.dbname != self.dbname:
            return False
        if self.user is not None and ident.user.lower() != self.user.lower():
            return False
        return any(self.host.same_server(ep) or (self.host.port == "*" and _same_host(self.host, ep))
                   for ep in ident.endpoints)


def _same_host(a: Endpoint, b: Endpoint) -> bool:
    if a.local or b.local:
        return a.local and b.local
    return a.name == b.name or bool(a.addresses & b.addresses)


def production_reasons(ident: Identity, *, production: Identity | None, rules: Iterable[ProductionRule],
                       tokens: Iterable[str]) -> list[str]:
    """Every reason this identity is production; empty when it is not."""
    reasons = []
    if production is not None and ident.same_database(production):
        reasons.append("it is the database DATABASE_URL points to (production)")
    for rule in rules:
        if rule.matches(ident):
            who = f" as user {rule.user}" if rule.user else ""
            reasons.append(f"it matches ops.production.identities: host {rule.host.name}{who}")
    tokens = list(tokens)
    for ep in ident.endpoints:
        for word in name_tokens_in(ep.name, tokens):
            reasons.append(f"host name {ep.name!r} contains {word!r}")
    for word in name_tokens_in(ident.dbname, tokens):
        reasons.append(f"database name {ident.dbname!r} contains {word!r}")
    return reasons
