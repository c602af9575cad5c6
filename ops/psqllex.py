"""Split SQL text into statements the way psql does, line by line (pure, stdlib only).

This follows psql's own lexer (src/fe_utils/psqlscan.l, PostgreSQL 14-18) closely enough to agree with psql on the
three things that matter when a dump is fed to it:

- where a statement ends (`;` outside quotes, comments, parentheses and `BEGIN ... END` bodies of
  `CREATE FUNCTION/PROCEDURE`), so we know when psql sends a `COPY ... FROM stdin` and starts reading data lines;
- where a backslash is outside any quote or comment, because psql runs a meta-command there, also mid-line;
- which `:name` would be replaced by a psql variable.

Where psql versions differ or an input is ambiguous, the lexer reports an `alarm` rather than guessing, so a caller
refusing on alarms is never less strict than psql. It assumes `standard_conforming_strings = on` (pg_dump sets it);
the caller checks that the dump never turns it off.

Quoting rules mirrored (psqlscan.l state names in brackets): '...' with '' doubling [xq]; E'...' with backslash
escapes [xe]; a closed string continues when the next quote follows after whitespace holding a line break [xqs] --
psql hands its lexer one line at a time without the \n, so only a carriage return counts there;
"..." with "" doubling [xd]; $tag$...$tag$ where the tag is an identifier without '$' [xdolq]; nested /* */ [xc];
-- comments that end at \\n or \\r.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

INITIAL, XQ, XE, XD, XDOLQ, XC = range(6)

_TOKEN = re.compile(
    rb"(?P<sp>[ \t\n\r\f]+)"
    rb"|(?P<e>[Ee]')"
    rb"|(?P<id>[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)"
    rb"|(?P<num>[0-9](?:_?[0-9])*(?:\.(?:[0-9](?:_?[0-9])*)?)?(?:[Ee][-+]?[0-9]+)?"
    rb"|\.[0-9](?:_?[0-9])*(?:[Ee][-+]?[0-9]+)?)"
    rb"|(?P<q>')|(?P<dq>\")|(?P<dol>\$)|(?P<cm>--)|(?P<bc>/\*)|(?P<bs>\\)|(?P<col>:)"
    rb"|(?P<op>.)",
    re.S,
)
_IDENT_START = re.compile(rb"[A-Za-z_\x80-\xff]")
_JUNK = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*")
_DOLLAR_TAG = re.compile(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_PARAM = re.compile(rb"\$[0-9]+")
_XE_SPECIAL = re.compile(rb"[\\']")
_XC_SPECIAL = re.compile(rb"/\*|\*/")
_COMMENT_END = re.compile(rb"[\r\n]")
_VARIABLE = re.compile(rb":(?:'[A-Za-z0-9_\x80-\xff]*'?|\"[A-Za-z0-9_\x80-\xff]*\"?|\{\?|[A-Za-z0-9_\x80-\xff]+)")

# Variables psql itself sets (psql docs, "Variables"): a dump naming one would get psql's value spliced in.
PSQL_VARIABLES = frozenset(
    b"AUTOCOMMIT COMP_KEYWORD_CASE DBNAME ECHO ECHO_HIDDEN ENCODING ERROR FETCH_COUNT HIDE_TABLEAM "
    b"HIDE_TOAST_COMPRESSION HISTCONTROL HISTFILE HISTSIZE HOST IGNOREEOF LASTOID LAST_ERROR_MESSAGE "
    b"LAST_ERROR_SQLSTATE ON_ERROR_ROLLBACK ON_ERROR_STOP PORT PROMPT1 PROMPT2 PROMPT3 QUIET ROW_COUNT "
    b"SERVER_VERSION_NAME SERVER_VERSION_NUM SHELL_ERROR SHELL_EXIT_CODE SHOW_ALL_RESULTS SHOW_CONTEXT "
    b"SINGLELINE SINGLESTEP SQLSTATE USER VERBOSITY VERSION VERSION_NAME VERSION_NUM WATCH_INTERVAL".split()
)

# Fast paths for pg_dump's --inserts output: whole lines of literals that cannot change psql's state. A value is a
# standard string without a line break, a number, or a bare NULL/true/false/DEFAULT; anything else takes the lexer.
_NAME = rb'(?:[A-Za-z_][A-Za-z0-9_$]*|"[^"\n]*(?:""[^"\n]*)*")'
_VALUE = rb"(?:'[^'\n\r]*(?:''[^'\n\r]*)*'|-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|NULL|true|false|DEFAULT)"
_ROW = rb"\(" + _VALUE + rb"(?:, " + _VALUE + rb")*\)"
_TAIL = rb"(?: ON CONFLICT DO NOTHING)?;\n"
INSERT_LINE = re.compile(
    rb"INSERT INTO (?P<table>" + _NAME + rb"(?:\." + _NAME + rb")?) (?:\(" + _NAME + rb"(?:, " + _NAME
    + rb")*\) )?(?:OVERRIDING (?:SYSTEM|USER) VALUE )?VALUES " + _ROW + _TAIL)
ROW_LINE = re.compile(rb"\t" + _ROW + rb"(?P<end>,\n|" + _TAIL + rb")")

KEEP_TOKENS = 4000         # tokens kept per statement (statement analysis needs the head only)
KEEP_TEXT = 1 << 16        # bytes of a string or dollar-quoted body kept in its token (a longer one is cut)


@dataclass
class Statement:
    """One statement as psql would send it: its tokens (kind, value) and where it sits in the input.

    kinds: "id" (bare word, as written), "qid" (quoted identifier, unescaped), "str" (string literal content),
    "num", "dol" (dollar-quoted body), "op" (one character). Values are bytes; long ones are cut short.
    """

    tokens: list[tuple[str, bytes]] = field(default_factory=list)
    first_line: int = 0
    last_line: int = 0
    starts_line: bool = False      # nothing but whitespace before it on its first line
    ends_line: bool = False        # nothing but whitespace after its ';' on its last line
    insert_rows: int = 0           # top-level tuples after VALUES (INSERT statements)
    values_seen: bool = False
    calls_in_values: list[bytes] = field(default_factory=list)   # words written as calls inside VALUES
    table: bytes | None = None     # INSERT target as written, when a fast path read the statement

    def word(self, i: int) -> str | None:
        """The i-th token, lower-cased, if it is a bare word (keywords are bare words)."""
        if i < len(self.tokens) and self.tokens[i][0] == "id":
            return self.tokens[i][1].decode("latin-1").lower()
        return None

    def words(self, n: int) -> list[str]:
        return [self.word(i) or "" for i in range(min(n, len(self.tokens)))]


class Lexer:
    """Feed lines (bytes ending in b"\\n", except maybe the last); get back the statements they complete."""

    def __init__(self) -> None:
        self.state = INITIAL
        self.tag = b""
        self.xcdepth = 0
        self.paren = 0
        self.begin_depth = 0
        self.cont = INITIAL            # state a closed string resumes if a quote follows after a newline
        self.cont_newline = False
        self.heuristic = [0, 0, 0, 0]  # psql's identifiers[]: CREATE [OR REPLACE] FUNCTION|PROCEDURE detection
        self.id_count = 0
        self.stmt: Statement | None = None
        self.text: list[bytes] = []    # pieces of the string or dollar body being read
        self.text_len = 0
        self.alarms: list[tuple[int, str, str]] = []   # (line, kind, message)
        self.backslash_in_string = False               # a '...' string held a backslash (std_strings matters)
        self.lineno = 0
        self.prev_word: bytes | None = None            # the token just before was this bare word
        self.fast = False                              # caller confirmed standard_conforming_strings = on

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Between statements: nothing pending, psql's query buffer empty."""
        return self.stmt is None and self.state == INITIAL

    @property
    def first_word(self) -> str | None:
        return self.stmt.word(0) if self.stmt is not None else None

    def _alarm(self, kind: str, message: str) -> None:
        self.alarms.append((self.lineno, kind, message))

    def _start(self, line: bytes, pos: int) -> Statement:
        st = Statement(first_line=self.lineno)
        st.starts_line = not line[:pos].strip()
        self.stmt = st
        return st

    def _token(self, kind: str, value: bytes) -> None:
        st = self.stmt
        if st is not None and len(st.tokens) < KEEP_TOKENS and not st.values_seen:
            st.tokens.append((kind, value))

    def _text(self, piece: bytes) -> None:
        if self.text_len < KEEP_TEXT:
            self.text.append(piece)
            self.text_len += len(piece)

    def _take_text(self) -> bytes:
        text = b"".join(self.text)[:KEEP_TEXT]
        self.text, self.text_len = [], 0
        return text

    # -- the scanner -------------------------------------------------------------------------------------------
    def feed(self, line: bytes, lineno: int) -> list[Statement]:
        self.lineno = lineno
        done: list[Statement] = []
        if self.fast and self.state == INITIAL and self.cont == INITIAL and self.paren == 0:
            fast = self._fast_insert(line, lineno)
            if fast is not None:
                return fast
        pos, n = 0, len(line)
        while pos < n:
            state = self.state
            if state == INITIAL:
                pos = self._initial(line, pos, n, done)
            elif state == XQ:
                pos = self._xq(line, pos, n)
            elif state == XE:
                pos = self._xe(line, pos, n)
            elif state == XDOLQ:
                end = line.find(self.tag, pos)
                if end < 0:
                    self._text(line[pos:])
                    pos = n
                else:
                    self._text(line[pos:end])
                    self._token("dol", self._take_text())
                    self.state = INITIAL
                    pos = end + len(self.tag)
            elif state == XD:
                pos = self._xd(line, pos, n)
            else:
                pos = self._xc(line, pos, n)
        return done

    def _fast_insert(self, line: bytes, lineno: int) -> list[Statement] | None:
        """A one-row INSERT line, or one row line of a --rows-per-insert statement, without the token loop."""
        st = self.stmt
        if st is None:
            if line[:12] != b"INSERT INTO " or (m := INSERT_LINE.fullmatch(line)) is None:
                return None
            done = Statement([("id", b"INSERT"), ("id", b"INTO")], lineno, lineno, True, True, 1, True,
                             table=m["table"])
            self.id_count, self.prev_word = 0, None
            return [done]
        if not st.values_seen or line[:2] != b"\t(" or (m := ROW_LINE.fullmatch(line)) is None:
            return None
        st.insert_rows += 1
        if m["end"] == b",\n":
            self.prev_word = None
            return []
        st.last_line, st.ends_line = lineno, True
        self.stmt, self.id_count, self.prev_word = None, 0, None
        return [st]

    def _initial(self, line: bytes, pos: int, n: int, done: list[Statement]) -> int:
        m = _TOKEN.match(line, pos)
        assert m is not None
        kind = m.lastgroup
        end = m.end()
        if self.cont != INITIAL:                       # [xqs] a string just closed: does it continue?
            if kind == "sp":
                # psql lexes each line without its \n, so only a carriage return can continue a string
                if b"\r" in m.group():
                    self.cont_newline = True
                return end
            if kind == "cm":
                return self._comment(line, end, n)
            resume, newline = self.cont, self.cont_newline
            self.cont, self.cont_newline = INITIAL, False
            if kind == "q" and newline:
                self.state = resume
                return end
        if kind == "sp":
            return end
        if kind == "cm":
            return self._comment(line, end, n)
        st = self.stmt or self._start(line, pos)
        prev_word, self.prev_word = self.prev_word, None
        if kind == "id":
            self._identifier(m.group(), st)
            self.prev_word = m.group()
            return end
        if kind == "num":
            if line[end:end + 1] in (b"E", b"e") and line[end + 1:end + 2] in (b"-", b"+"):
                end += 2                               # psqlscan.l {realfail}: `1e-` is one token, so `1e--` is no
                self._token("num", line[pos:end])      # comment (the `-` after it is an operator)
                return end
            if line[end:end + 2] in (b"E'", b"e'"):
                self._alarm("ambiguous-literal", "a number written against E'...' lexes differently in psql "
                                                 "versions; pg_dump never writes that")
            elif _IDENT_START.match(line, end):
                # `1_$$`, `1e$$`: psql 15+ reads number and word as one (junk) token, older psql the word as an
                # identifier or a dollar quote; either way the `$` inside opens no quote
                self._alarm("ambiguous-literal", "a number written against a word lexes differently in psql "
                                                 "versions; pg_dump never writes that")
                self._token("num", m.group())
                return _JUNK.match(line, end).end()  # type: ignore[union-attr]
            self._token("num", m.group())
            return end
        if kind == "q":
            self.state = XQ
            return end
        if kind == "e":
            self.state = XE
            return end
        if kind == "dq":
            self.state = XD
            return end
        if kind == "dol":
            tag = _DOLLAR_TAG.match(line, pos)
            if tag is not None:
                self.tag = tag.group()
                self.state = XDOLQ
                return tag.end()
            param = _PARAM.match(line, pos)
            if param is not None:
                self._token("op", b"$")
                return param.end()
            self._token("op", b"$")
            return end
        if kind == "bc":
            self.state, self.xcdepth = XC, 0
            return end
        if kind == "bs":
            shown = line[pos:].rstrip(b"\r\n")[:60].decode("utf-8", "replace")
            self._alarm("meta-command", f"psql would run the backslash command `{shown}`")
            if self.stmt is st and not st.tokens:
                self.stmt = None
            return n                                   # psql takes the rest of the line as the command's arguments
        if kind == "col":
            return self._colon(line, pos, end, st)
        char = m.group()
        if char == b"(":
            if st.values_seen:
                if self.paren == 0:
                    st.insert_rows += 1
                if prev_word is not None and prev_word.lower() != b"values" and len(st.calls_in_values) < 8:
                    st.calls_in_values.append(prev_word)
            self.paren += 1
        elif char == b")":
            if self.paren > 0:
                self.paren -= 1
        elif char == b";" and self.paren == 0 and self.begin_depth == 0:
            st.last_line = self.lineno
            st.ends_line = not line[end:].strip()
            self.stmt = None
            self.id_count = 0
            done.append(st)
            return end
        self._token("op", char)
        return end

    def _identifier(self, word: bytes, st: Statement) -> None:
        low = word.lower()
        # psqlscan.l: remember CREATE / OR / REPLACE / FUNCTION / PROCEDURE among the first four identifiers.
        if self.id_count == 0:
            self.heuristic = [0, 0, 0, 0]
        if low in (b"create", b"function", b"procedure", b"or", b"replace") and self.id_count < 4:
            self.heuristic[self.id_count] = low[0]
        self.id_count += 1
        h = self.heuristic
        if h[0] == ord("c") and (h[1] in (ord("f"), ord("p")) or (h[1] == ord("o") and h[2] == ord("r")
                                                                   and h[3] in (ord("f"), ord("p")))) \
                and self.paren == 0:
            if low == b"begin":
                self.begin_depth += 1
            elif low == b"case":
                if self.begin_depth >= 1:
                    self.begin_depth += 1
            elif low == b"end":
                if self.begin_depth > 0:
                    self.begin_depth -= 1
        if st.values_seen:
            return
        if low == b"values" and self.paren == 0 and st.word(0) == "insert":
            st.tokens.append(("id", word))
            st.values_seen = True
            return
        self._token("id", word)

    def _colon(self, line: bytes, pos: int, end: int, st: Statement) -> int:
        nxt = line[end:end + 1]
        if nxt in (b":", b"="):
            self._token("op", b":" + nxt)
            return end + 1
        var = _VARIABLE.match(line, pos)
        if var is not None:
            text = var.group()
            if text[1:2] in (b"'", b'"'):
                if len(text) > 2 and text[-1:] == text[1:2]:
                    self._alarm("psql-variable", f"psql would splice in the variable {text.decode('latin-1')}")
            elif text[1:2] == b"{":
                self._alarm("psql-variable", "psql would test a variable with :{?name}")
            else:
                if text[1:] in PSQL_VARIABLES:
                    self._alarm("psql-variable", f"psql would splice in its variable {text.decode('latin-1')}")
                self._token("op", b":")
                return var.end()                       # psql reads `:name` as one token (an unset variable is
        self._token("op", b":")                        # echoed as it is): `:a$b$` is no dollar quote
        return end

    def _comment(self, line: bytes, pos: int, n: int) -> int:
        m = _COMMENT_END.search(line, pos)
        return n if m is None else m.start()

    def _xq(self, line: bytes, pos: int, n: int) -> int:
        while True:
            q = line.find(b"'", pos)
            if q < 0:
                self._string_piece(line[pos:])
                return n
            if line[q + 1:q + 2] == b"'":
                self._string_piece(line[pos:q + 1])
                pos = q + 2
                continue
            self._string_piece(line[pos:q])
            self._close_string(XQ)
            return q + 1

    def _string_piece(self, piece: bytes) -> None:
        if b"\\" in piece:
            self.backslash_in_string = True
        self._text(piece)

    def _xe(self, line: bytes, pos: int, n: int) -> int:
        start = pos
        while True:
            m = _XE_SPECIAL.search(line, pos)
            if m is None:
                self._text(line[start:])
                return n
            i = m.start()
            if line[i] == 0x5C:                        # backslash: it and the next byte are one escape
                pos = i + 2
                if pos >= n:
                    self._text(line[start:])
                    return n
                continue
            if line[i + 1:i + 2] == b"'":
                pos = i + 2
                continue
            self._text(line[start:i])
            self._close_string(XE)
            return i + 1

    def _close_string(self, state: int) -> None:
        self.state = INITIAL
        self.cont, self.cont_newline = state, False
        self._token("str", self._take_text())

    def _xd(self, line: bytes, pos: int, n: int) -> int:
        while True:
            q = line.find(b'"', pos)
            if q < 0:
                self._text(line[pos:])
                return n
            if line[q + 1:q + 2] == b'"':
                self._text(line[pos:q + 1])
                pos = q + 2
                continue
            self._text(line[pos:q])
            self.state = INITIAL
            name = self._take_text()
            self._token("qid", name)
            self.prev_word = name                      # "name"( is a call too
            return q + 1

    def _xc(self, line: bytes, pos: int, n: int) -> int:
        while True:
            m = _XC_SPECIAL.search(line, pos)
            if m is None:
                return n
            if m.group() == b"/*":
                self.xcdepth += 1
                pos = m.end()
                continue
            if self.xcdepth <= 0:
                self.state = INITIAL
                return m.end()
            self.xcdepth -= 1
            pos = m.end()
