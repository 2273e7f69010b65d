"""Tokens for the parser, produced lazily so a script runs up to the line that holds a syntax error.

The lexer builds words with their parts (quotes, `$…`, backquotes) directly, and reads here-document bodies
when it reaches the newline that ends the line naming them, as POSIX says. `$(…)` is parsed by a nested parser
(given as a callback) so that parentheses inside quotes or nested substitutions need no guessing.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

from .brackets import find_close
from .errors import ShellSyntaxError
from .nodes import Arith, BadSubst, CmdSub, CommandList, HereDoc, Lit, Param, Part, Tilde, Word

META = frozenset(" \t\n;&|<>()")
OPERATORS = (
    "&>>", "<<<", "<<-", ";;&",
    "&&", "||", ";;", ";&", "<<", ">>", "<&", ">&", "<>", ">|", "&>", "|&",
    "&", "|", ";", "<", ">", "(", ")",
)  # fmt: skip
REDIR_OPS = frozenset({"<", ">", ">>", ">|", "<>", "<&", ">&", "<<", "<<-", "<<<", "&>", "&>>"})
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FD_VAR_RE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
ARRAY_ASSIGN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=$")
SPECIAL_PARAMS = "?#@*$!-"
PARAM_OPS = (":-", ":=", ":+", ":?", "##", "%%", "-", "=", "+", "?", "#", "%", "^^", "^", ",,", ",", ":")
SUBST_OPS = ("//", "/#", "/%", "/")
MAX_DEPTH = 1000  # compound commands and substitutions nested in each other (bash: no fixed limit)


_WORD_OPS = frozenset({"-", ":-", "=", ":=", "+", ":+", "?", ":?"})


def _off() -> bool:
    return False


def is_digits(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts '¹' and friends, which int() refuses)."""
    return text.isascii() and text.isdigit()


def is_name(text: str) -> bool:
    """A valid shell variable name."""
    return NAME_RE.fullmatch(text) is not None


class Source:
    """The text being parsed, with a line index shared by nested lexers."""

    def __init__(self, text: str, first_line: int = 1) -> None:
        self.text = text
        self.first_line = first_line
        self._nl = [i for i, c in enumerate(text) if c == "\n"]

    def line_at(self, pos: int) -> int:
        return bisect.bisect_left(self._nl, pos) + self.first_line

    def splice(self, start: int, end: int, text: str) -> None:
        """Replace text[start:end] (an alias by its value)."""
        self.text = self.text[:start] + text + self.text[end:]
        self._nl = [i for i, c in enumerate(self.text) if c == "\n"]

    def line_text(self, line: int) -> str:
        i = line - self.first_line
        start = self._nl[i - 1] + 1 if 0 < i <= len(self._nl) else 0
        end = self._nl[i] if i < len(self._nl) else len(self.text)
        return self.text[start:end]

    @property
    def eof_line(self) -> int:
        """The line bash names in `unexpected end of file` (it counts a final newline it adds itself)."""
        extra = 0 if self.text.endswith("\n") else 1
        return len(self._nl) + self.first_line + extra


@dataclass
class Token:
    kind: str  # WORD, IO_NUMBER, OP, NEWLINE, EOF
    value: str
    start: int
    end: int
    line: int
    word: Word | None = None
    heredoc: HereDoc | None = None

    @property
    def shown(self) -> str:
        """The token as bash quotes it in `near unexpected token`."""
        return "newline" if self.kind == "NEWLINE" else self.value

    def is_word(self, *values: str) -> bool:
        """A plain (unquoted, expansion-free) word with one of these values: a reserved word in position."""
        return self.kind == "WORD" and self.word is not None and self.word.is_plain and self.value in values

    def is_op(self, *values: str) -> bool:
        return self.kind == "OP" and self.value in values


SubParser = Callable[[Source, int, int], tuple[CommandList, int]]
TextParser = Callable[..., CommandList]  # parse(text, *, depth, first_line): a backquoted command's text
"""(source, position after `$(`, depth) → (list, position after the closing `)`)."""


class Lexer:
    def __init__(self, src: Source, pos: int = 0, *, subparser: SubParser, parse_text: TextParser,
                 depth: int = 0) -> None:
        """`subparser` and `parse_text`: the parser's entry points for `$(…)` and backquotes, handed in (the
        parser builds on this module, which must not import it back)."""
        self.src = src
        self.text = src.text
        self.pos = pos
        self.subparser = subparser
        self.parse_text = parse_text
        self.depth = depth
        self.pending: list[HereDoc] = []
        self.warnings: list[tuple[int, str]] = []
        self._after_heredoc_op: str | None = None
        self.extglob: Callable[[], bool] = _off  # `shopt -s extglob`: `@(a|b)` and friends are part of a word

    # -- helpers -----------------------------------------------------------------------------------------------
    def _error(self, message: str, pos: int) -> ShellSyntaxError:
        return ShellSyntaxError(message, self.src.line_at(pos))

    def _eof_error(self, what: str, pos: int) -> ShellSyntaxError:
        return self._error(f"unexpected EOF while looking for matching `{what}'", pos)

    def _peekc(self, off: int = 0) -> str:
        i = self.pos + off
        return self.text[i] if i < len(self.text) else ""

    # -- tokens ------------------------------------------------------------------------------------------------
    def next_token(self) -> Token:
        text = self.text
        n = len(text)
        while self.pos < n:
            c = text[self.pos]
            if c in " \t":
                self.pos += 1
            elif c == "\\" and self._peekc(1) == "\n":
                self.pos += 2
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                break
        start = self.pos
        line = self.src.line_at(start)
        if start >= n:
            self._finish_pending_at_eof()
            return Token("EOF", "", start, start, self.src.eof_line)
        c = text[start]
        if c == "\n":
            self.pos += 1
            self._read_heredocs()
            return Token("NEWLINE", "\n", start, start + 1, line)
        for op in OPERATORS:
            if text.startswith(op, start):
                self.pos += len(op)
                self._after_heredoc_op = op if op in ("<<", "<<-") else None
                return Token("OP", op, start, self.pos, line)
        word = self._read_word()
        raw = text[start : self.pos]
        word.raw = raw
        if word.is_plain and self._peekc() in ("<", ">") and (is_digits(raw) or FD_VAR_RE.fullmatch(raw)):
            self._after_heredoc_op = None
            return Token("IO_NUMBER", raw, start, self.pos, line)
        if ARRAY_ASSIGN_RE.match(raw) and self._peekc() == "(" and not self._after_heredoc_op:
            word.items = self._read_array_items()
            raw = text[start : self.pos]
            word.raw = raw
        tok = Token("WORD", raw, start, self.pos, line, word=word)
        if self._after_heredoc_op:
            tok.heredoc = self._new_heredoc(word, strip_tabs=self._after_heredoc_op == "<<-")
        self._after_heredoc_op = None
        return tok

    # -- words -------------------------------------------------------------------------------------------------
    def _read_array_items(self) -> list[Word]:
        """The words of `name=( … )` after the `(`: newlines and comments allowed, up to `)`."""
        start = self.pos
        self.pos += 1
        text = self.text
        items: list[Word] = []
        while True:
            while self.pos < len(text) and text[self.pos] in " \t\n":
                self.pos += 1
            if self.pos >= len(text):
                raise self._eof_error(")", start)
            c = text[self.pos]
            if c == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
                continue
            if c == ")":
                self.pos += 1
                return items
            if c == "(":  # `a=( x=() )`: bash finds this when it assigns: an error then, and the command ends
                bad = BadSubst("", message=f"syntax error near unexpected token `{c}'")
                self._skip_to_close_paren(start)
                return [Word([bad], "")]
            if c in ";&|<>":
                raise self._error(f"syntax error near unexpected token `{c}'", self.pos)
            wstart = self.pos
            word = self._read_word()
            word.raw = text[wstart : self.pos]
            items.append(word)

    def _skip_to_close_paren(self, start: int) -> None:
        """Past the `)` that closes the array literal opened at `start` (quotes and nested parentheses skipped)."""
        i, how = find_close(self.text, start + 1, len(self.text), "()", quotes=True)
        if how != "close":
            raise self._eof_error(")", start)
        self.pos = i + 1

    def _read_word(self) -> Word:
        parts = self._read_parts(META, "word")
        return Word(_tilde(parts))

    def _read_parts(self, stop: frozenset[str], mode: str) -> list[Part]:
        """Read parts until an unescaped char in `stop` (not consumed) or the end of text.

        mode: 'word' (unquoted), 'brace' (unquoted inside `${x:-…}`), 'dq' (inside "…"), 'dqbrace' (inside
        "${x:-…}"), 'heredoc' (an expanding here-document body: quotes are plain characters).
        """
        text = self.text
        n = len(text)
        # Inside "${x#…}" the text is not quoted: patterns stay patterns, `&` stays special; only inner quotes and
        # escapes quote. The outer double quotes still stop splitting and globbing of the result (see expand).
        quoted = mode in ("dq", "heredoc", "arith", "arithcmd")
        parts: list[Part] = []
        lit: list[str] = []

        def flush() -> None:
            if lit:
                _add_lit(parts, "".join(lit), quoted)
                lit.clear()

        sq_open = False  # inside "${x:-'…'}": the quotes stay, but a `}` between them does not end the word
        while self.pos < n:
            c = text[self.pos]
            if c in stop and not (sq_open and c == "}"):
                break
            if c == "'" and mode == "dqbrace":
                sq_open = not sq_open
                lit.append(c)
                self.pos += 1
                continue
            if c == "\\":
                nxt = self._peekc(1)
                if nxt == "\n":
                    self.pos += 2
                    continue
                if not nxt:
                    lit.append("\\")
                    self.pos += 1
                    continue
                if quoted:
                    if nxt in ('$`"\\' if mode == "dq" else "$`\\"):
                        lit.append(nxt)
                    else:
                        lit.append("\\" + nxt)
                    self.pos += 2
                    continue
                if mode in ("dqbrace", "dqpat") and nxt not in '$`"\\}':
                    lit.append("\\" + nxt)
                    self.pos += 2
                    continue
                flush()
                _add_lit(parts, nxt, True)
                self.pos += 2
                continue
            if c == "'" and not quoted and mode != "dqbrace":
                flush()
                self._read_single(parts)
                continue
            if c == '"' and mode in ("word", "brace", "dqbrace", "dqpat", "arith", "arithcmd"):
                flush()
                self._read_double(parts)
                continue
            if c == "$":
                nxt = self._peekc(1)
                if nxt == "'" and mode in ("word", "brace", "dqbrace", "dqpat"):
                    flush()
                    self._read_ansi_c(parts)
                    continue
                if nxt == '"' and mode in ("word", "brace", "arith", "arithcmd"):
                    flush()
                    self.pos += 1
                    self._read_double(parts)
                    continue
                part = self._read_dollar(quoted)
                if part is None:
                    lit.append("$")
                    self.pos += 1
                else:
                    flush()
                    parts.append(part)
                continue
            if c == "`":
                flush()
                parts.append(self._read_backquote(quoted))
                continue
            if c in "@*+?!" and mode == "word" and self._peekc(1) == "(" and self.extglob():
                group = self._extglob_group()
                if group is not None:
                    lit.append(group)
                    continue
            lit.append(c)
            self.pos += 1
        flush()
        return parts

    def _extglob_group(self) -> str | None:
        """`@(…)` at pos, up to its matching `)` (the text is a pattern, blanks and `|` included)."""
        text = self.text
        depth = 0
        i = self.pos + 1
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "\n":
                return None
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    group = text[self.pos : i + 1]
                    self.pos = i + 1
                    return group
            i += 1
        return None

    def _read_single(self, parts: list[Part]) -> None:
        start = self.pos
        end = self.text.find("'", start + 1)
        if end < 0:
            raise self._eof_error("'", start)
        _add_lit(parts, self.text[start + 1 : end], True)
        self.pos = end + 1

    def _read_double(self, parts: list[Part]) -> None:
        start = self.pos
        self.pos += 1
        inner = self._read_parts(frozenset('"'), "dq")
        if self.pos >= len(self.text):
            raise self._eof_error('"', start)
        self.pos += 1
        if not inner:
            inner = [Lit("", True)]
        for p in inner:
            if isinstance(p, Lit):
                _add_lit(parts, p.text, True)
            else:
                parts.append(p)

    def _read_ansi_c(self, parts: list[Part]) -> None:
        start = self.pos
        i = start + 2
        text = self.text
        out: list[str] = []
        while True:
            if i >= len(text):
                raise self._eof_error("'", start)
            c = text[i]
            if c == "'":
                break
            if c == "\\" and i + 1 < len(text):
                ch, i = _ansi_escape(text, i + 1)
                out.append(ch)
                continue
            out.append(c)
            i += 1
        self.pos = i + 1
        _add_lit(parts, "".join(out), True)

    def _read_dollar(self, quoted: bool) -> Part | None:
        text = self.text
        start = self.pos
        while self._peekc(1) == "\\" and self._peekc(2) == "\n":  # `$\<newline>?` is `$?`
            self.pos += 2
        nxt = self._peekc(1)
        if nxt == "{":
            return self._read_braced(quoted)
        if nxt == "(":
            if self._peekc(2) == "(":
                arith = self._read_arith(quoted)
                if arith is not None:
                    return arith
            return self._read_cmdsub(quoted)
        if nxt and (nxt.isalpha() or nxt == "_") and nxt.isascii():
            m = NAME_RE.match(text, self.pos + 1)
            assert m is not None
            self.pos = m.end()
            return Param(m.group(), quoted, bare=True)
        if is_digits(nxt) or (nxt and nxt in SPECIAL_PARAMS):
            self.pos += 2
            return Param(nxt, quoted)
        self.pos = start
        return None

    def _read_braced(self, quoted: bool) -> Part:
        text = self.text
        start = self.pos
        self.pos += 2
        length = False
        indirect = False
        if self._peekc() == "#" and self._peekc(1) not in ("}", ""):
            length = True
            self.pos += 1
        elif self._peekc() == "!" and self._peekc(1) not in ("}", ""):
            indirect = True
            self.pos += 1
        name = self._param_name()
        if name is None:
            return self._bad_subst(start, quoted)
        index = None
        if self._peekc() == "[" and NAME_RE.fullmatch(name):
            index = self._read_subscript(start)
            if index is None:
                return self._bad_subst(start, quoted)
        if self.pos >= len(text):
            raise self._eof_error("}", start)
        if indirect and index is None and text[self.pos] in "*@" and self._peekc(1) == "}":
            op = "names" + text[self.pos]
            self.pos += 2
            return Param(name, quoted, op=op, indirect=True)
        if text[self.pos] == "}":
            self.pos += 1
            return Param(name, quoted, length=length, index=index, indirect=indirect)
        if length:
            return self._bad_subst(start, quoted)
        if text[self.pos] == "@" and self.pos + 2 < len(text) and text[self.pos + 2] == "}" and text[self.pos + 1] in "QEPUuLaAK":
            op = text[self.pos : self.pos + 2]
            self.pos += 3
            return Param(name, quoted, op=op, arg=Word([], ""), index=index, indirect=indirect)
        # inside "…", single quotes quote in a pattern (`"${x#'a'}"`) but are plain text in `"${x:-'a'}"`
        mode = "dqpat" if quoted else "brace"
        for op in SUBST_OPS:
            if text.startswith(op, self.pos):
                self.pos += len(op)
                lead: list[Part] = []
                if op == "//" and self._peekc() == "/":  # `${x///}`, `${x////c}`: bash's pattern is that `/`
                    self.pos += 1
                    lead = [Lit("/", False)]
                pat = lead + self._read_parts(frozenset("/}"), mode)
                rep = None
                if self._peekc() == "/":
                    self.pos += 1
                    rep_parts = self._read_parts(frozenset("}"), mode)
                    rep = Word(rep_parts if quoted else _tilde(rep_parts))
                if not quoted:
                    pat = _tilde(pat)
                if self.pos >= len(text):
                    raise self._eof_error("}", start)
                self.pos += 1
                return Param(name, quoted, op=op, arg=Word(pat, text[start : self.pos]), rep=rep, index=index,
                             indirect=indirect)
        for op in PARAM_OPS:
            if text.startswith(op, self.pos):
                self.pos += len(op)
                pattern_op = op in ("#", "##", "%", "%%", "^", "^^", ",", ",,")
                arg_parts = self._read_parts(frozenset("}"), ("dqpat" if pattern_op else "dqbrace") if quoted else "brace")
                if not quoted and op in ("-", ":-", "=", ":=", "+", ":+", "?", ":?"):
                    arg_parts = _tilde(arg_parts)
                if self.pos >= len(text):
                    raise self._eof_error("}", start)
                self.pos += 1
                return Param(name, quoted, op=op, arg=Word(arg_parts, text[start : self.pos]), index=index,
                             indirect=indirect)
        return self._bad_subst(start, quoted)

    def _read_subscript(self, start: int) -> Word | None:
        """`[…]` after a name in `${…}`: the subscript as a word (quotes and expansions inside work)."""
        text = self.text
        i, how = find_close(text, self.pos + 1, len(text), "[]", quotes=True, stop="}")
        if how == "stop":
            return None
        if how == "quote":
            raise self._eof_error(text[i], i)
        if how == "end":
            raise self._eof_error("}", start)
        inner = text[self.pos + 1 : i]
        self.pos = i + 1
        sub = Lexer(Source(inner), subparser=self.subparser, parse_text=self.parse_text, depth=self.depth + 1)
        return Word(sub._read_parts(frozenset(), "brace"), inner)

    def _param_name(self) -> str | None:
        text = self.text
        m = NAME_RE.match(text, self.pos)
        if m:
            self.pos = m.end()
            return m.group()
        i = self.pos
        while i < len(text) and is_digits(text[i]):
            i += 1
        if i > self.pos:
            name = text[self.pos : i]
            self.pos = i
            return name
        c = self._peekc()
        if c and c in SPECIAL_PARAMS:
            self.pos += 1
            return c
        return None

    def _bad_subst(self, start: int, quoted: bool) -> Part:
        text = self.text
        i, how = find_close(text, start + 2, len(text), "{}")
        if how != "close":
            raise self._eof_error("}", start)
        self.pos = i + 1
        return BadSubst(text[start : i + 1], quoted)

    def _read_cmdsub(self, quoted: bool) -> Part:
        if self.depth >= MAX_DEPTH:
            raise self._error("syntax error: nesting too deep", self.pos)
        body, end = self.subparser(self.src, self.pos + 2, self.depth + 1)
        self.pos = end
        return CmdSub(body, quoted)

    def _read_arith(self, quoted: bool) -> Part | None:
        """`$((…))`; None when the parentheses do not close as `))` (then it is `$( (…) )`)."""
        text = self.text
        i = self.pos + 3
        depth = 0
        while i < len(text):
            c = text[i]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    if i + 1 < len(text) and text[i + 1] == ")":
                        inner = text[self.pos + 3 : i]
                        sub = Lexer(Source(inner), subparser=self.subparser, parse_text=self.parse_text, depth=self.depth + 1)
                        parts = sub._read_parts(frozenset(), "arith")
                        self.pos = i + 2
                        return Arith(Word(parts, inner), quoted)
                    return None
                depth -= 1
            i += 1
        raise self._eof_error(")", self.pos)

    def arith_text(self, pos: int) -> tuple[str, int] | None:
        """The text of `(( … ))` whose inner text starts at `pos`, and the position after `))`; None when the
        parentheses do not close as `))` (then it was `( ( … ) )`)."""
        text = self.text
        i, how = find_close(text, pos, len(text), "()")
        if how == "close" and text.startswith("))", i):
            return text[pos:i], i + 2
        return None

    def arith_word(self, inner: str) -> Word:
        """`(( … ))` and `for (( … ))`: double quotes are removed; single quotes stay (bash: an error outside a
        subscript, where `a['k']` names key k)."""
        sub = Lexer(Source(inner), subparser=self.subparser, parse_text=self.parse_text, depth=self.depth + 1)
        return Word(sub._read_parts(frozenset(), "arithcmd"), inner)

    def read_regex(self) -> Word | None:
        """The right side of `=~` in `[[ ]]`: up to a blank outside parentheses, brackets and quotes."""
        text = self.text
        while self.pos < len(text) and text[self.pos] in " \t":
            self.pos += 1
        start = self.pos
        depth = 0
        i = start
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c in "'\"":
                end = text.find(c, i + 1)
                if end < 0:
                    raise self._eof_error(c, i)
                i = end + 1
                continue
            if c == "$" and text.startswith("$(", i) or text.startswith("${", i):
                close = ")" if text[i + 1] == "(" else "}"
                end = text.find(close, i)
                i = len(text) if end < 0 else end + 1
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            elif c in " \t\n" and depth == 0 or depth == 0 and (text.startswith("&&", i) or text.startswith("||", i)):
                break
            i += 1
        if i == start:
            return None
        raw = text[start:i]
        self.pos = i
        sub = Lexer(Source(raw), subparser=self.subparser, parse_text=self.parse_text, depth=self.depth + 1)
        return Word(_tilde(sub._read_parts(frozenset(), "brace")), raw)

    def _read_backquote(self, quoted: bool) -> Part:
        text = self.text
        start = self.pos
        i = start + 1
        out: list[str] = []
        while True:
            if i >= len(text):
                raise self._eof_error("`", start)
            c = text[i]
            if c == "`":
                break
            if c == "\\" and i + 1 < len(text) and text[i + 1] in ("$`\\" + ('"' if quoted else "")):
                out.append(text[i + 1])
                i += 2
                continue
            out.append(c)
            i += 1
        self.pos = i + 1
        if self.depth >= MAX_DEPTH:
            raise self._error("syntax error: nesting too deep", start)
        try:
            body = self.parse_text("".join(out), depth=self.depth + 1, first_line=self.src.line_at(start))
        except ShellSyntaxError as exc:
            if "nesting too deep" in exc.message:
                raise
            return CmdSub(CommandList([]), quoted, error=exc)
        return CmdSub(body, quoted)

    # -- here-documents ----------------------------------------------------------------------------------------
    def _new_heredoc(self, word: Word, strip_tabs: bool) -> HereDoc:
        if not word.has_quotes and word.raw:  # `<<${a}`, `<<$(a)`: the text as written (bash expands nothing)
            delim = word.raw.replace("\\\n", "")
        else:
            delim = "".join(p.text if isinstance(p, Lit) else _raw_of(p) for p in word.parts)
        doc = HereDoc(delim, not word.has_quotes, strip_tabs, line=self.src.line_at(self.pos))
        self.pending.append(doc)
        return doc

    def _read_heredocs(self) -> None:
        text = self.text
        while self.pending:
            doc = self.pending.pop(0)
            lines: list[str] = []
            found = False
            while self.pos < len(text):
                end = text.find("\n", self.pos)
                line = text[self.pos :] if end < 0 else text[self.pos : end]
                self.pos = len(text) if end < 0 else end + 1
                if doc.strip_tabs:
                    line = line.lstrip("\t")
                if line == doc.delimiter:
                    found = True
                    break
                lines.append(line + "\n")
            if not found:
                self._warn_heredoc(doc)
            self._fill(doc, "".join(lines))

    def _finish_pending_at_eof(self) -> None:
        while self.pending:
            doc = self.pending.pop(0)
            self._warn_heredoc(doc)
            self._fill(doc, "")

    def _warn_heredoc(self, doc: HereDoc) -> None:
        at = doc.line
        self.warnings.append(
            (
                self.src.line_at(self.pos),
                f"warning: here-document at line {at} delimited by end-of-file (wanted `{doc.delimiter}')",
            )
        )

    def _fill(self, doc: HereDoc, body: str) -> None:
        doc.text = body
        if doc.expand:
            sub = Lexer(Source(body), subparser=self.subparser, parse_text=self.parse_text, depth=self.depth + 1)
            doc.body = Word(sub._read_parts(frozenset(), "heredoc"), body)
        else:
            doc.body = Word([Lit(body, True)], body)


# -- small pure helpers --------------------------------------------------------------------------------------------


def _add_lit(parts: list[Part], text: str, quoted: bool) -> None:
    """Append literal text, merging with a previous literal of the same quoting (keeps the AST small)."""
    if parts and isinstance(parts[-1], Lit) and parts[-1].quoted == quoted:
        parts[-1] = Lit(parts[-1].text + text, quoted)
    else:
        parts.append(Lit(text, quoted))


def _raw_of(part: Part) -> str:
    if isinstance(part, Param):
        return "$" + part.name
    return ""


def _tilde(parts: list[Part]) -> list[Part]:
    """Split a leading unquoted `~user` off the first literal, as tilde expansion needs (POSIX 2.6.1)."""
    if not parts or not isinstance(parts[0], Lit) or parts[0].quoted or not parts[0].text.startswith("~"):
        return parts
    text = parts[0].text
    slash = text.find("/")
    if not _tilde_user(text[1:] if slash < 0 else text[1:slash]):
        return parts  # `~{/src,root}`: brace expansion comes first, then a tilde of each word
    if slash < 0:
        if len(parts) > 1:
            return parts
        return [Tilde(text[1:])]
    rest = text[slash:]
    return [Tilde(text[1:slash]), Lit(rest), *parts[1:]]


def tilde_word(parts: list[Part]) -> list[Part]:
    """A leading `~user` of a word (after brace expansion made it one)."""
    return _tilde(parts)


def tilde_value(parts: list[Part]) -> list[Part]:
    """Tilde expansion in an assignment's value: at its start and after each unquoted `:` (PATH=$PATH:~/bin)."""
    out: list[Part] = []
    for k, p in enumerate(parts):
        if isinstance(p, Param) and not p.quoted and p.arg is not None and p.op in _WORD_OPS:
            p = dataclasses.replace(p, arg=Word(tilde_value(p.arg.parts), p.arg.raw))  # `x=${u-~:~}`
        if not isinstance(p, Lit) or p.quoted or "~" not in p.text:
            out.append(p)
            continue
        followed = k + 1 < len(parts)
        pieces = p.text.split(":")
        for j, piece in enumerate(pieces):
            if j:
                out.append(Lit(":"))
            at_start = j > 0 or k == 0
            last = j == len(pieces) - 1
            end = piece.find("/")
            user = piece[1:] if end < 0 else piece[1:end]
            if at_start and piece.startswith("~") and (end >= 0 or not (last and followed)) and _tilde_user(user):
                out.append(Tilde(user))
                if end >= 0:
                    out.append(Lit(piece[end:]))
            elif piece:
                out.append(Lit(piece))
    merged: list[Part] = []
    for p in out:
        if isinstance(p, Lit) and not p.text:
            continue
        if merged and isinstance(p, Lit) and isinstance(merged[-1], Lit) and merged[-1].quoted == p.quoted:
            merged[-1] = Lit(merged[-1].text + p.text, p.quoted)
        else:
            merged.append(p)
    return merged


def _tilde_user(user: str) -> bool:
    return user == "" or user in ("+", "-") or NAME_RE.fullmatch(user.replace("-", "_").replace(".", "_")) is not None


_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "?": "?",
}  # fmt: skip


def byte_char(value: int) -> str:
    """The character for a raw byte from `\\NNN` / `\\xHH`: ASCII as is, 0x80–0xFF as the surrogate that the
    shell's writers turn back into that one byte (bash emits the byte, not its UTF-8 encoding)."""
    return chr(value) if value < 0x80 else chr(0xDC00 + value)


def _ansi_escape(text: str, i: int) -> tuple[str, int]:
    """Decode one `$'…'` escape whose letter is at text[i]; returns (char, next index)."""
    c = text[i]
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], i + 1
    if c in "01234567":
        j = i
        while j < len(text) and j < i + 3 and text[j] in "01234567":
            j += 1
        return byte_char(int(text[i:j], 8) & 0xFF), j
    if c in "xuU":
        width = {"x": 2, "u": 4, "U": 8}[c]
        j = i + 1
        while j < len(text) and j < i + 1 + width and text[j] in "0123456789abcdefABCDEF":
            j += 1
        if j == i + 1:
            return "\\" + c, i + 1
        code = int(text[i + 1 : j], 16)
        if c == "x":
            return byte_char(code), j
        return (chr(code) if code <= 0x10FFFF else "\ufffd"), j
    if c == "c" and i + 1 < len(text) and text[i + 1] != "'":  # `$'\c'` is a backslash and a c (bash)
        return chr(ord(text[i + 1]) & 0x1F), i + 2
    return "\\" + c, i + 1
