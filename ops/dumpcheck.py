"""What one SQL statement of a plain pg_dump file is, and whether pg_dump could have written it (pure, stdlib only).

`analyze(statement, line)` takes a statement from `ops.psqllex` and returns `Facts`: its kind, what it tells about
the dump's needs (extensions, policy roles, large objects), the table a COPY or INSERT fills, the object a --clean
DROP removes, and `problems` for anything pg_dump does not write and a tampered backup could use: COPY other than
`COPY table (columns) FROM stdin;`, server-side file and program functions called outside function bodies,
statements that change the server or cluster (ALTER SYSTEM, CREATE ROLE, ...), settings that change how psql reads
the rest of the file, and functions in untrusted languages or using COPY ... PROGRAM.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from .psqllex import KEEP_TEXT, KEEP_TOKENS, Statement

# Called outside a function body, these read or write the server's files, run programs or reach other servers.
SERVER_SIDE_FUNCTIONS = frozenset(
    b"lo_import lo_export pg_read_file pg_read_binary_file pg_ls_dir pg_stat_file pg_file_write pg_file_rename "
    b"pg_file_unlink pg_file_sync pg_logdir_ls pg_ls_logdir pg_ls_waldir pg_ls_tmpdir pg_ls_archive_statusdir "
    b"pg_ls_logicalsnapdir pg_ls_logicalmapdir pg_ls_replslotdir dblink dblink_exec dblink_connect "
    b"dblink_connect_u dblink_send_query pg_reload_conf pg_rotate_logfile pg_promote pg_terminate_backend "
    b"pg_cancel_backend query_to_xml query_to_xmlschema query_to_xml_and_xmlschema ts_stat".split()
)  # (the last four run SQL given as text: a name built from pieces calls any function)
# The only functions pg_dump calls in top-level SELECTs (always written as pg_catalog.name).
DUMP_SELECT_FUNCTIONS = frozenset(
    b"set_config setval lo_create lo_open lowrite lo_close lo_unlink pg_restore_relation_stats "
    b"pg_restore_attribute_stats pg_clear_relation_stats pg_clear_attribute_stats".split()
)
UNTRUSTED_LANGUAGES = frozenset("c internal plpythonu plpython2u plpython3u plperlu pltclu plsh plr".split())
# Client encodings in which a byte of a multibyte character can look like a backslash or quote to a scanner.
UNSAFE_ENCODINGS = frozenset("SJIS SHIFT_JIS_2004 BIG5 GBK GB18030 UHC JOHAB".split())
# Settings a superuser may change in a session that open the system catalogs or the server's libraries.
UNSAFE_SETTINGS = frozenset("allow_system_table_mods dynamic_library_path ignore_system_indexes zero_damaged_pages "
                            "allow_in_place_tablespaces".split())
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
ALLOWED_KINDS = frozenset(
    "set select copy insert create alter drop comment grant revoke security refresh begin commit".split())
_CLUSTER_OBJECTS = frozenset("database role user group tablespace subscription system".split())
_CREATE_MODIFIERS = frozenset(
    "unique temp temporary unlogged global local trusted procedural materialized recursive default constraint"
    .split())
_NO_CALL_CHECK = frozenset("comment grant revoke security drop".split())   # these name functions, never call them
_PSEUDO_ROLES = frozenset("public current_user session_user current_role".split())
_COPY_PROGRAM = re.compile(rb"\bcopy\b.*?\bprogram\b", re.I | re.S)
# Words in a routine's body that let it reach outside the database when it runs with a superuser's rights: SQL it
# builds itself (EXECUTE), COPY to or from files and programs, extensions, languages and foreign servers it could
# create, roles and settings it could change, and the server-side file functions. Harmless when the restoring role
# is not a superuser (the server refuses them then); a superuser restore refuses a dump whose routines use them.
_SERVER_REACH = re.compile(
    rb"\b(execute|copy|program|extension|language|role|authorization|session_authorization|set_config|foreign|server|"
    rb"pg_execute_server_program|pg_read_server_files|pg_write_server_files|"
    + b"|".join(sorted(SERVER_SIDE_FUNCTIONS)) + rb")\b", re.I)
SAFE_BODY_LANGUAGES = frozenset({"sql", "plpgsql"})   # others (plperl, pltcl, plv8) run SQL they build themselves

_IDENT = rb'(?:[a-z_][a-z0-9_$]*|"(?:[^"\n]|"")+")'
COPY_LINE = re.compile(
    rb"COPY (?P<table>" + _IDENT + rb"(?:\." + _IDENT + rb")?) (?:\((?P<cols>" + _IDENT + rb"(?:, " + _IDENT
    + rb")*)\) | )FROM stdin;\n"
)
_IDENT_PART = re.compile(_IDENT)


@dataclass(frozen=True)
class DropTarget:
    """The object a --clean preamble statement removes: kind ("table", "constraint", ...), its schema and name,
    and the table it hangs on (constraints, policies, triggers, rules, defaults, publication tables)."""

    kind: str
    schema: str | None
    name: str
    on: tuple[str | None, str] | None = None


@dataclass
class Facts:
    kind: str
    problems: list[tuple[str, str]] = field(default_factory=list)   # (problem kind, message)
    table: str | None = None            # "schema.name" a COPY or INSERT fills
    enters_copy: bool = False           # psql will read data lines after it
    rows: int = 0                       # INSERT rows
    extension: tuple[str, str | None] | None = None   # CREATE EXTENSION name, schema
    policy_roles: list[str] = field(default_factory=list)
    large_objects: int = 0
    schema_created: str | None = None
    setting: tuple[str, str] | None = None            # SET name, value
    transaction_control: bool = False   # BEGIN; or COMMIT;
    drop: DropTarget | None = None
    owner: str | None = None            # ALTER ... OWNER TO role
    routine: str | None = None          # CREATE FUNCTION|PROCEDURE|AGGREGATE: its name (unqualified, lower case)
    server_reach: list[str] = field(default_factory=list)   # why that routine could reach the server as superuser
    words: frozenset[str] = frozenset()  # a routine: the words of its body; anything else that can run code at
    reach_all: bool = False              # restore time: the words it names (reach_all: too long to read them all)


def unquote(raw: bytes) -> str:
    """`public` -> public, `"User"` -> User, `"a""b"` -> a"b."""
    if raw[:1] == b'"':
        raw = raw[1:-1].replace(b'""', b'"')
    return raw.decode("utf-8", "replace")


@functools.lru_cache(maxsize=4096)
def table_key(qualified: bytes) -> str:
    """`public."User"` -> "public.User" (schema-qualified, unquoted, as pg_dump's TOC writes names)."""
    return ".".join(unquote(part.group()) for part in _IDENT_PART.finditer(qualified))


def _ident(token: tuple[str, bytes]) -> str | None:
    kind, value = token
    if kind == "id":
        return value.decode("utf-8", "replace").lower()
    if kind == "qid":
        return value.decode("utf-8", "replace")
    return None


def name_at(tokens: list[tuple[str, bytes]], i: int) -> tuple[str | None, str | None, int]:
    """(schema, name, index after) for a possibly qualified name at tokens[i]."""
    if i >= len(tokens) or _ident(tokens[i]) is None:
        return None, None, i
    first = _ident(tokens[i])
    if i + 2 < len(tokens) and tokens[i + 1] == ("op", b".") and _ident(tokens[i + 2]) is not None:
        return first, _ident(tokens[i + 2]), i + 3
    return None, first, i + 1


def calls(st: Statement) -> list[tuple[int, bytes]]:
    """(index, name) of every word written as a call: name( ... )."""
    toks = st.tokens
    return [(i, toks[i][1]) for i in range(len(toks) - 1)
            if toks[i][0] in ("id", "qid") and toks[i + 1] == ("op", b"(")]


def qualified_refs(st: Statement) -> list[tuple[str, str]]:
    """Every schema.name written in the statement (schema, name)."""
    toks, refs = st.tokens, []
    for i in range(len(toks) - 2):
        if toks[i + 1] == ("op", b".") and toks[i][0] in ("id", "qid") and toks[i + 2][0] in ("id", "qid"):
            refs.append((_ident(toks[i]) or "", _ident(toks[i + 2]) or ""))
    return refs


def analyze(st: Statement, line: bytes | None = None) -> Facts:
    """Facts about one statement; `line` is its text when it fills exactly one line (needed to judge COPY)."""
    kind = st.word(0)
    if kind is None or kind not in ALLOWED_KINDS:
        shown = kind or (st.tokens[0][1][:20].decode("utf-8", "replace") if st.tokens else "?")
        return Facts(kind or "?", [("statement-kind", f"a {shown.upper()} statement is not something pg_dump "
                                                      "writes")])
    facts = Facts(kind)
    handler = _HANDLERS.get(kind)
    if handler is not None:
        handler(st, facts, line)
    if kind in ("create", "alter"):
        _foreign_options(st, facts)
    routine = _is_routine(st)
    if kind not in _NO_CALL_CHECK and kind not in ("select", "insert") and not routine:
        for _, name in calls(st):
            if name.lower() in SERVER_SIDE_FUNCTIONS:
                facts.problems.append(("server-function", f"calls the server-side function {name.decode()}() "
                                                          "outside a function body"))
    if not routine and kind not in _NO_CALL_CHECK and kind not in ("insert", "copy"):
        facts.words, facts.reach_all = _words(st.tokens)
    return facts


def _is_routine(st: Statement) -> bool:
    """CREATE [OR REPLACE] FUNCTION|PROCEDURE|AGGREGATE, ALTER FUNCTION|PROCEDURE|ROUTINE|AGGREGATE|EXTENSION."""
    w = st.words(4)
    if w[:1] == ["create"]:
        kind = w[3] if w[1:3] == ["or", "replace"] else (w[1] if len(w) > 1 else "")
        return kind in ("function", "procedure", "aggregate")
    return w[:1] == ["alter"] and len(w) > 1 and w[1] in ("function", "procedure", "routine", "aggregate",
                                                          "extension")


def _set(st: Statement, facts: Facts, line: bytes | None) -> None:
    w = st.words(3)
    i = 2 if len(w) > 1 and w[1] in ("session", "local") and len(st.tokens) > 3 else 1
    name = st.word(i) or ""
    value = b""
    if i + 2 < len(st.tokens):
        value = st.tokens[i + 2][1]
    shown = value.decode("utf-8", "replace")
    facts.setting = (name, shown)
    if name == "standard_conforming_strings" and shown.lower() != "on":
        facts.problems.append(("setting", f"sets standard_conforming_strings to {shown!r}: psql would then read "
                                          "quotes differently from what was checked"))
    if name in UNSAFE_SETTINGS:
        facts.problems.append(("setting", f"sets {name}, which a superuser may use to write the system catalogs or "
                                          "load code; pg_dump never sets it"))
    if name == "client_encoding" and shown.upper().replace("-", "_") in UNSAFE_ENCODINGS:
        facts.problems.append(("setting", f"client encoding {shown} can hide quotes and backslashes inside "
                                          "characters; only UTF8 and other ASCII-safe encodings are accepted"))


def _select(st: Statement, facts: Facts, line: bytes | None) -> None:
    found = calls(st)
    if not found:
        facts.problems.append(("statement-kind", "a SELECT that calls no pg_catalog function is not something "
                                                 "pg_dump writes"))
    toks = st.tokens
    for _, name in found:
        if name.lower() in SERVER_SIDE_FUNCTIONS:
            facts.problems.append(("server-function", f"calls the server-side function {name.decode()}()"))
    for i, name in found:
        low = name.lower()
        qualified = i >= 2 and toks[i - 1] == ("op", b".") and _ident(toks[i - 2]) == "pg_catalog"
        if low in SERVER_SIDE_FUNCTIONS:
            continue
        if low not in DUMP_SELECT_FUNCTIONS or not qualified:
            facts.problems.append(("statement-kind", f"a top-level SELECT calling {name.decode('utf-8', 'replace')}()"
                                                     " is not something pg_dump writes"))
        elif low == b"set_config" and (i + 2 >= len(toks) or toks[i + 2] != ("str", b"search_path")):
            facts.problems.append(("setting", "set_config() of anything but search_path is not something pg_dump "
                                              "writes"))
        elif low == b"lo_create":
            facts.large_objects += 1


def _copy(st: Statement, facts: Facts, line: bytes | None) -> None:
    words = [w for w in st.words(len(st.tokens)) if w]
    to_stdin = "from" in words and words[words.index("from") + 1:words.index("from") + 2] == ["stdin"]
    m = COPY_LINE.fullmatch(line) if line is not None else None
    if m is None:
        facts.enters_copy = to_stdin and "program" not in words
        facts.problems.append(("copy-form", "only `COPY table (columns) FROM stdin;` on a line of its own is "
                                            "accepted: no PROGRAM, no TO, no file name, no options"))
        return
    facts.enters_copy = True
    facts.table = table_key(m["table"])
    _system_table(facts)


def _system_table(facts: Facts) -> None:
    """pg_dump never fills a table of the system catalogs (an unqualified pg_* name finds pg_catalog first)."""
    table = facts.table or ""
    schema, _, name = table.rpartition(".")
    if schema in SYSTEM_SCHEMAS or schema.startswith("pg_") or (not schema and name.startswith("pg_")):
        facts.problems.append(("copy-form", f"{facts.kind.upper()} into the system table {table}: pg_dump never "
                                            "writes rows there (a superuser could make roles or functions that way)"))


def _insert(st: Statement, facts: Facts, line: bytes | None) -> None:
    if st.table is not None:                    # read by the lexer's fast path: one row of literals
        facts.table, facts.rows = table_key(st.table), st.insert_rows
        _system_table(facts)
        return
    if st.word(1) != "into":
        facts.problems.append(("statement-kind", "INSERT without INTO"))
        return
    schema, name, _ = name_at(st.tokens, 2)
    facts.table = f"{schema}.{name}" if schema else name
    _system_table(facts)
    if not st.values_seen:
        facts.problems.append(("statement-kind", "an INSERT without VALUES is not something pg_dump writes"))
    for word in st.calls_in_values:
        problem = "server-function" if word.lower() in SERVER_SIDE_FUNCTIONS else "statement-kind"
        facts.problems.append((problem, f"calls {word.decode('utf-8', 'replace')}() inside INSERT data; pg_dump "
                                        "writes only literals"))
    facts.rows = st.insert_rows


def _create(st: Statement, facts: Facts, line: bytes | None) -> None:
    w = st.words(8)
    i = 3 if w[1:3] == ["or", "replace"] else 1
    while i < len(w) and w[i] in _CREATE_MODIFIERS:
        i += 1
    what = w[i] if i < len(w) else ""
    if what in _CLUSTER_OBJECTS:
        facts.problems.append(("statement-kind", f"CREATE {what.upper()} changes the server, not this database; "
                                                 "pg_dump does not write it"))
    elif what in ("function", "procedure"):
        _routine(st, facts, i)
    elif what == "aggregate":
        _, name, _ = name_at(st.tokens, i + 1)
        facts.routine = (name or "?").lower()
        facts.words, facts.reach_all = _words(st.tokens)
    elif what == "extension":
        j = i + 1
        if st.words(j + 3)[j:j + 3] == ["if", "not", "exists"]:
            j += 3
        name = _ident(st.tokens[j]) if j < len(st.tokens) else None
        schema = None
        rest = st.tokens[j + 1:]
        for k, tok in enumerate(rest[:-1]):
            if tok[0] == "id" and tok[1].lower() == b"schema":
                schema = _ident(rest[k + 1])
                break
        if name:
            facts.extension = (name, schema)
    elif what == "policy":
        facts.policy_roles = _policy_roles(st)
    elif what == "schema":
        j = i + 1
        if st.words(j + 3)[j:j + 3] == ["if", "not", "exists"]:
            j += 3
        facts.schema_created = _ident(st.tokens[j]) if j < len(st.tokens) else None


def _routine(st: Statement, facts: Facts, i: int) -> None:
    toks = st.tokens
    _, name, _ = name_at(toks, i + 1)
    facts.routine = (name or "?").lower()
    for k, tok in enumerate(toks[:-1]):
        if tok[0] == "id" and tok[1].lower() == b"language":
            lang = (_ident(toks[k + 1]) or toks[k + 1][1].decode("utf-8", "replace")).lower()
            if lang in UNTRUSTED_LANGUAGES:
                facts.problems.append(("untrusted-language", f"defines a function in language {lang}, which runs "
                                                             "with the server's own rights"))
            elif lang not in SAFE_BODY_LANGUAGES:
                facts.server_reach.append(f"language {lang} runs SQL it builds itself")
    for kind, value in toks:
        if kind in ("dol", "str") and _COPY_PROGRAM.search(value):
            facts.problems.append(("server-function", "defines a function that runs COPY ... PROGRAM on the server"))
            break
    atomic = next((k for k, t in enumerate(toks) if t[0] == "id" and t[1].lower() == b"atomic"), len(toks))
    body = [tok for k, tok in enumerate(toks) if tok[0] in ("dol", "str") or (k > atomic and tok[0] in ("id", "qid"))]
    facts.words, cut = _words(body)
    found = sorted(w for w in facts.words if _SERVER_REACH.fullmatch(w.encode("latin-1", "replace")))
    if cut or len(toks) >= KEEP_TOKENS:
        facts.server_reach.append("it is too long to check whole")
    if found:
        facts.server_reach.append(f"its body uses {', '.join(found)}")


def _foreign_options(st: Statement, facts: Facts) -> None:
    """file_fdw's `program` option runs a program on the server for whoever reads the table (a materialized view
    the restore refreshes), and `filename` reads the server's files: a lottery backup has neither."""
    toks = st.tokens
    for k in range(len(toks) - 1):
        if toks[k][0] == "id" and toks[k][1].lower() == b"options" and toks[k + 1] == ("op", b"("):
            for kind, value in toks[k + 2:]:
                if kind == "op" and value == b")":
                    break
                if kind == "id" and value.lower() in (b"program", b"filename"):
                    facts.problems.append(("server-function", f"a foreign table or server with the option "
                                                              f"{value.decode().lower()}: it runs a program or reads "
                                                              "a file on the database server"))
                    return


_WORD = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*")


def _words(tokens: list[tuple[str, bytes]]) -> tuple[frozenset[str], bool]:
    """Every word in `tokens` (names, and words inside strings and bodies), lower case; and whether some were lost
    because the lexer keeps only the first tokens of a statement and the first bytes of a string."""
    words: set[str] = set()
    cut = len(tokens) >= KEEP_TOKENS
    for kind, value in tokens:
        if kind in ("id", "qid"):
            words.add(value.decode("latin-1").lower())
        elif kind in ("str", "dol"):
            cut = cut or len(value) >= KEEP_TEXT
            words.update(m.group().decode("latin-1").lower() for m in _WORD.finditer(value))
    return frozenset(words), cut


def _policy_roles(st: Statement) -> list[str]:
    toks = st.tokens
    roles: list[str] = []
    for k, tok in enumerate(toks):
        if tok[0] == "id" and tok[1].lower() in (b"using", b"with"):
            break
        if tok[0] == "id" and tok[1].lower() == b"to":
            j = k + 1
            while j < len(toks):
                name = _ident(toks[j])
                if name is None or (toks[j][0] == "id" and name in ("using", "with")):
                    break
                if not (toks[j][0] == "id" and name in _PSEUDO_ROLES):
                    roles.append(name)
                j += 1
                if j < len(toks) and toks[j] == ("op", b","):
                    j += 1
                    continue
                break
            break
    return roles


def _alter(st: Statement, facts: Facts, line: bytes | None) -> None:
    what = st.word(1) or ""
    if what in _CLUSTER_OBJECTS:
        facts.problems.append(("statement-kind", f"ALTER {what.upper()} changes the server, not this database; "
                                                 "pg_dump does not write it"))
        return
    toks = st.tokens
    if len(toks) >= 3 and st.word(len(toks) - 3) == "owner" and st.word(len(toks) - 2) == "to":
        facts.owner = _ident(toks[-1])
    w = st.words(12)
    # --clean preamble: ALTER TABLE [IF EXISTS] [ONLY] t DROP CONSTRAINT [IF EXISTS] c / ALTER COLUMN c DROP DEFAULT
    if what == "table" and "drop" in w:
        j = 2
        while st.word(j) in ("if", "exists", "only"):
            j += 1
        schema, table, j = name_at(st.tokens, j)
        if table is not None and st.word(j) == "drop" and st.word(j + 1) == "constraint":
            k = j + 2
            while st.word(k) in ("if", "exists"):
                k += 1
            _, cname, _ = name_at(st.tokens, k)
            facts.drop = DropTarget("constraint", schema, cname or "", (schema, table))
        elif table is not None and st.word(j) == "alter" and "default" in w[j:]:
            facts.drop = DropTarget("default", schema, table, (schema, table))
    elif what == "publication" and st.word(3) == "drop":
        _, pub, _ = name_at(st.tokens, 2)
        j = 6 if st.word(5) == "only" else 5
        schema, table, _ = name_at(st.tokens, j)
        if pub and table:
            facts.drop = DropTarget("publication table", schema, pub, (schema, table))


def _drop(st: Statement, facts: Facts, line: bytes | None) -> None:
    what = st.word(1) or ""
    if what in _CLUSTER_OBJECTS:
        facts.problems.append(("statement-kind", f"DROP {what.upper()} changes the server, not this database; "
                                                 "pg_dump does not write it"))
        return
    words = st.words(len(st.tokens))
    if "cascade" in words:
        facts.problems.append(("statement-kind", "DROP ... CASCADE is not something pg_dump writes (it could remove "
                                                 "objects the backup does not hold)"))
    j = 1
    kind_words = []
    while j < len(st.tokens) and st.word(j) not in (None, "if") and not (
            st.tokens[j + 1:j + 2] == [("op", b".")] or st.word(j + 1) in (None, "on", "cascade", "restrict")):
        kind_words.append(st.word(j) or "")
        j += 1
    if st.word(j) == "if":
        j += 2
    schema, name, j = name_at(st.tokens, j)
    on = None
    if j < len(st.tokens) and st.tokens[j] == ("op", b"("):      # functions: skip the argument list
        depth = 0
        while j < len(st.tokens):
            if st.tokens[j] == ("op", b"("):
                depth += 1
            elif st.tokens[j] == ("op", b")"):
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            j += 1
    if st.word(j) == "on":
        on_schema, on_table, _ = name_at(st.tokens, j + 1)
        on = (on_schema, on_table or "")
    if name is not None:
        facts.drop = DropTarget(" ".join(kind_words), schema, name, on)


def _transaction(st: Statement, facts: Facts, line: bytes | None) -> None:
    if len(st.tokens) != 1:
        facts.problems.append(("transaction", f"{(st.word(0) or '').upper()} with options is not something pg_dump "
                                              "writes"))
    facts.transaction_control = True


_HANDLERS = {
    "set": _set, "select": _select, "copy": _copy, "insert": _insert, "create": _create, "alter": _alter,
    "drop": _drop, "begin": _transaction, "commit": _transaction,
}
