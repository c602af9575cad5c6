"""The guard's pure logic: every spelling of production is production; staging stays staging."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from ops import urls

HOSTS = {
    "db.example.internal": frozenset({"10.1.2.3"}),
    "alias.example.net": frozenset({"10.1.2.3"}),          # a CNAME/alias of the production address
    "staging.example.net": frozenset({"10.9.9.9"}),
    "localhost": frozenset({"127.0.0.1", "::1"}),
    "myhost": frozenset({"192.0.2.2"}),                    # this machine's own interface address
}
LOCAL_ADDRS = frozenset({"192.0.2.2", "fd00::2"})


def resolve(name: str) -> frozenset[str]:
    return HOSTS.get(name, frozenset())


def ident(text: str, env: dict | None = None, services: dict | None = None) -> urls.Identity:
    return urls.identify(text, env=env or {}, services=services or {}, os_user="operator",
                         resolve=resolve, local_addresses=LOCAL_ADDRS)


def is_prod(text: str, prod: str, env: dict | None = None, services: dict | None = None,
            rules: list | None = None) -> bool:
    production = ident(prod, env, services)
    return bool(urls.production_reasons(ident(text, env, services), production=production,
                                        rules=rules or [], tokens=["prod", "production", "live", "prd"]))


REMOTE_PROD = "postgresql://app:s3cret@db.example.internal:5432/lottery"
LOCAL_PROD = "postgresql://app:s3cret@localhost/lottery"

PRODUCTION_SPELLINGS = [
    ("postgres-scheme", "postgres://app:s3cret@db.example.internal/lottery", REMOTE_PROD, {}),
    ("upper-case-host", "postgresql://DB.Example.INTERNAL/lottery", REMOTE_PROD, {}),
    ("trailing-dot", "postgresql://db.example.internal./lottery", REMOTE_PROD, {}),
    ("explicit-default-port", "postgresql://db.example.internal:5432/lottery", REMOTE_PROD, {}),
    ("port-leading-zero", "postgresql://db.example.internal:05432/lottery", REMOTE_PROD, {}),
    ("key-value", "host=db.example.internal dbname=lottery user=other", REMOTE_PROD, {}),
    ("key-value-quoted", "host='db.example.internal' port = 5432 dbname='lottery'", REMOTE_PROD, {}),
    ("host-in-query", "postgresql:///lottery?host=db.example.internal", REMOTE_PROD, {}),
    ("port-in-query", "postgresql://db.example.internal/lottery?port=5432", REMOTE_PROD, {}),
    ("pct-host", "postgresql://%64%62.example.internal/lottery", REMOTE_PROD, {}),
    ("pct-dbname", "postgresql://db.example.internal/%6c%6F%74tery", REMOTE_PROD, {}),
    ("dbname-in-query", "postgresql://db.example.internal?dbname=lottery", REMOTE_PROD, {}),
    ("alias-resolving-same", "postgresql://alias.example.net/lottery", REMOTE_PROD, {}),
    ("ip-literal", "postgresql://10.1.2.3/lottery", REMOTE_PROD, {}),
    ("ipv4-mapped-v6", "postgresql://[::ffff:10.1.2.3]/lottery", REMOTE_PROD, {}),
    ("hostaddr-wins", "host=staging.example.net hostaddr=10.1.2.3 dbname=lottery", REMOTE_PROD, {}),
    ("multi-host-uri", "postgresql://staging.example.net:5432,db.example.internal:5432/lottery", REMOTE_PROD, {}),
    ("multi-host-kv", "host=staging.example.net,db.example.internal port=5432 dbname=lottery", REMOTE_PROD, {}),
    ("multi-host-query", "postgresql:///lottery?host=staging.example.net,DB.example.internal.", REMOTE_PROD, {}),
    ("env-pghost", "postgresql:///lottery", REMOTE_PROD, {"PGHOST": "db.example.internal"}),
    ("env-pgdatabase", "postgresql://db.example.internal", REMOTE_PROD, {"PGDATABASE": "lottery"}),
    ("env-pgport", "postgresql://db.example.internal/lottery", REMOTE_PROD, {"PGPORT": "5432"}),
    ("env-pghostaddr", "host=staging.example.net dbname=lottery", REMOTE_PROD, {"PGHOSTADDR": "10.1.2.3"}),
    ("empty-uri-all-env", "postgresql://", REMOTE_PROD, {"PGHOST": "db.example.internal", "PGDATABASE": "lottery"}),
    ("dbname-defaults-to-user", "postgresql://lottery@db.example.internal", REMOTE_PROD, {}),
    ("local-127", "postgresql://127.0.0.1/lottery", LOCAL_PROD, {}),
    ("local-127-other", "postgresql://127.0.0.2:5432/lottery", LOCAL_PROD, {}),
    ("local-127.1", "postgresql://127.1/lottery", LOCAL_PROD, {}),
    ("local-v6", "postgresql://[::1]/lottery", LOCAL_PROD, {}),
    ("local-v6-long", "postgresql://[0:0:0:0:0:0:0:1]/lottery", LOCAL_PROD, {}),
    ("local-socket-dir", "host=/var/run/postgresql dbname=lottery", LOCAL_PROD, {}),
    ("local-socket-uri", "postgresql://%2Fvar%2Frun%2Fpostgresql/lottery", LOCAL_PROD, {}),
    ("local-socket-tmp", "postgresql:///lottery?host=/tmp", LOCAL_PROD, {}),
    ("local-default-socket", "dbname=lottery", LOCAL_PROD, {}),
    ("local-unspecified", "postgresql://0.0.0.0/lottery", LOCAL_PROD, {}),
    ("local-own-address", "postgresql://192.0.2.2/lottery", LOCAL_PROD, {}),
    ("local-own-name", "postgresql://myhost/lottery", LOCAL_PROD, {}),
    ("local-own-v6", "postgresql://[fd00::2]/lottery", LOCAL_PROD, {}),
    ("local-hostaddr", "host=staging.example.net hostaddr=127.0.0.1 dbname=lottery", LOCAL_PROD, {}),
    ("local-LOCALHOST", "postgresql://LOCALHOST./lottery", LOCAL_PROD, {}),
    ("name-prod-host", "postgresql://lottery-prod.example.com/app", REMOTE_PROD, {}),
    ("name-production-db", "postgresql://staging.example.net/lottery_production", REMOTE_PROD, {}),
    ("name-PROD-upper", "postgresql://staging.example.net/LOTTERYPROD", REMOTE_PROD, {}),
    ("name-live-word", "postgresql://live.db.example.com/app", REMOTE_PROD, {}),
    ("name-prd", "postgresql://db-prd-1.example.com/app", REMOTE_PROD, {}),
    ("name-pct-encoded", "postgresql://staging.example.net/lottery%5Fpr%6Fd", REMOTE_PROD, {}),
]


@pytest.mark.parametrize("text,prod,env", [p[1:] for p in PRODUCTION_SPELLINGS],
                         ids=[p[0] for p in PRODUCTION_SPELLINGS])
def test_every_spelling_of_production_is_production(text, prod, env):
    assert is_prod(text, prod, env)


NOT_PRODUCTION = [
    ("other-db-same-server", "postgresql://db.example.internal/lottery_staging", REMOTE_PROD, {}),
    ("other-server", "postgresql://staging.example.net/lottery", REMOTE_PROD, {}),
    ("other-port", "postgresql://db.example.internal:6543/lottery", REMOTE_PROD, {}),
    ("local-other-db", "postgresql://localhost/lottery_staging", LOCAL_PROD, {}),
    ("local-other-port", "postgresql://127.0.0.1:5433/lottery", LOCAL_PROD, {}),
    ("delivery-not-live", "postgresql://staging.example.net/delivery", REMOTE_PROD, {}),
    ("olive-not-live", "postgresql://olive.example.net/app", REMOTE_PROD, {}),
]


@pytest.mark.parametrize("text,prod,env", [p[1:] for p in NOT_PRODUCTION], ids=[p[0] for p in NOT_PRODUCTION])
def test_genuine_staging_targets_are_not_production(text, prod, env):
    assert not is_prod(text, prod, env)


def test_service_file_definitions_are_followed():
    services = {"prod": {"host": "db.example.internal", "dbname": "lottery"}, "stg": {"host": "staging.example.net"}}
    assert is_prod("service=prod", REMOTE_PROD, services=services)
    assert is_prod("postgresql://?service=prod", REMOTE_PROD, services=services)
    assert is_prod("postgresql://", REMOTE_PROD, env={"PGSERVICE": "prod"}, services=services)
    assert not is_prod("service=stg dbname=lottery", REMOTE_PROD, services=services)
    # explicit parts win over the service file, as in libpq
    assert not is_prod("service=prod host=staging.example.net", REMOTE_PROD, services=services)


def test_unknown_service_is_refused():
    with pytest.raises(urls.TargetError, match="service"):
        ident("service=nowhere")


SUPA_POOLER = "postgresql://postgres.abcdefref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"


@pytest.mark.parametrize("text,expected", [
    ("postgresql://postgres.abcdefref@aws-0-eu-central-1.pooler.supabase.com:5432/postgres", True),
    ("postgresql://postgres.ABCDEFREF@AWS-0-EU-CENTRAL-1.POOLER.SUPABASE.COM.:6543/postgres", True),
    ("postgresql://postgres@db.abcdefref.supabase.co:5432/postgres", True),
    ("postgresql://postgres.otherref@aws-0-eu-central-1.pooler.supabase.com:6543/postgres", False),
    ("postgresql://postgres@db.otherref.supabase.co:5432/postgres", False),
], ids=["session-port", "case-and-dot", "direct-host", "other-project-pooler", "other-project-direct"])
def test_supabase_pooler_told_apart_by_user(text, expected):
    assert is_prod(text, SUPA_POOLER) is expected


def test_identity_rules_with_user_for_shared_pooler():
    host = urls._endpoint("aws-0-eu-central-1.pooler.supabase.com", "", "*", resolve, LOCAL_ADDRS)
    rule = urls.ProductionRule(host, user="postgres.abcdefref")
    assert rule.matches(ident(SUPA_POOLER))
    assert not rule.matches(ident(SUPA_POOLER.replace("abcdefref", "stagingref")))
    assert urls.ProductionRule(urls._endpoint("10.1.2.3", "", "*", resolve, LOCAL_ADDRS)).matches(
        ident("postgresql://alias.example.net:6000/anything"))


@pytest.mark.parametrize("text", [
    "", "   ", "garbage", "postgresql://h/d?bogus=1", "postgresql://h:notaport/d", "port=99999",
    "host=a,b port=1,2,3", "host=a,b hostaddr=1.2.3.4", "hostaddr=not-an-ip", "dbname='postgresql://x/y'",
    "host=a dbname=b=c", "postgresql://[::1/d",
], ids=lambda t: repr(t)[:30])
def test_unparseable_targets_fail_closed(text):
    with pytest.raises(urls.TargetError):
        ident(text)


def test_identity_key_is_the_same_for_every_spelling():
    keys = {ident(t).key() for t in ("postgresql://db.example.internal/lottery", "host=DB.example.internal. dbname=lottery",
                                       "postgres://app@%64b.example.internal:5432/lottery?sslmode=require")}
    assert len(keys) == 1
    assert ident("postgresql://[::1]/lottery").key() == ident("host=/tmp dbname=lottery").key()


# -- property: generated spellings of production never get through -----------------------------------------------
def _case(draw, text):
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flips))


def _pct(draw, text):
    picks = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(quote(c, safe="") if p or c in "%/?#@:" else c for c, p in zip(text, picks)).replace(
        ".", "%2E" if draw(st.booleans()) else ".")


@st.composite
def production_spellings(draw):
    prod_host = draw(st.sampled_from(["db.example.internal", "alias.example.net", "10.1.2.3", "::ffff:10.1.2.3"]))
    host = prod_host if ":" in prod_host else _case(draw, prod_host) + draw(st.sampled_from(["", "."]))
    port = draw(st.sampled_from(["", "5432", "05432"]))
    dbname = "lottery"
    decoys = draw(st.lists(st.sampled_from(["staging.example.net", "10.9.9.9"]), max_size=2))
    env: dict[str, str] = {}
    omit_host = draw(st.booleans()) and not decoys
    omit_db = draw(st.booleans())
    if omit_host:
        env["PGHOST"] = host
    if omit_db:
        env["PGDATABASE"] = dbname
    if port and draw(st.booleans()):
        env["PGPORT"], port = port, ""
    form = draw(st.sampled_from(["uri", "kv", "query"]))
    hosts = decoys + ([] if omit_host else [host])
    if form == "kv":
        parts = []
        if hosts:
            parts.append("host=" + ",".join(hosts))
        if port:
            parts.append("port=" + port)
        if not omit_db:
            parts.append("dbname=" + dbname)
        parts.append("user=" + draw(st.sampled_from(["app", "postgres", "x"])))
        order = draw(st.permutations(parts))
        return " ".join(order), env
    scheme = draw(st.sampled_from(["postgres", "postgresql"]))
    db = "" if omit_db else _pct(draw, dbname)
    if form == "query":
        query = []
        if hosts:
            query.append("host=" + ",".join(hosts))
        if port:
            query.append("port=" + port)
        return f"{scheme}:///{db}" + ("?" + "&".join(query) if query else ""), env
    netloc = ",".join((f"[{h}]" if ":" in h else _pct(draw, h) if h not in ("10.9.9.9",) else h)
                      + (f":{port}" if port else "") for h in hosts)
    user = draw(st.sampled_from(["", "app@", "app:p%40ss@"]))
    return f"{scheme}://{user}{netloc}/{db}", env


@hsettings(max_examples=400, deadline=None)
@given(production_spellings())
def test_generated_spellings_of_production_never_pass(spelling):
    text, env = spelling
    production = ident(REMOTE_PROD)
    target = ident(text, env)
    assert urls.production_reasons(target, production=production, rules=[], tokens=[]), (text, env)


@hsettings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_arbitrary_text_is_judged_or_refused_never_crashes(text):
    try:
        ident(text)
    except urls.TargetError:
        pass
