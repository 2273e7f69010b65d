"""Recursive-descent parser: tokens → `CommandList`s, one complete command (a line, with its compound tails) at a time.

`Parser.parse_next()` returns the next complete command so the shell can run it before reading further, which is
how bash behaves with both scripts and `-c` strings (an earlier line runs before a later syntax error is found).
Error messages copy bash's wording.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import ShellSyntaxError
from .lexer import MAX_DEPTH, REDIR_OPS, Lexer, Source, Token, tilde_value
from .nodes import (
    AndOr,
    ArithCommand,
    ArithFor,
    Assign,
    Case,
    CaseItem,
    Command,
    CommandList,
    DBracket,
    For,
    FunctionDef,
    Group,
    If,
    ListItem,
    Lit,
    Pipeline,
    Redir,
    SimpleCommand,
    Subshell,
    While,
    Word,
)

DB_UNARY = frozenset(["-a", "-b", "-c", "-d", "-e", "-f", "-g", "-h", "-k", "-p", "-r", "-s", "-t", "-u", "-w", "-x", "-G", "-L", "-N", "-O", "-S", "-n", "-o", "-v", "-z", "-R"])
DB_BINARY = frozenset(["=", "==", "!=", "=~", "-eq", "-ne", "-lt", "-le", "-gt", "-ge", "-nt", "-ot", "-ef"])
DECLARATION_WORDS = frozenset({"declare", "typeset", "local", "readonly", "export"})
TERMINATORS = frozenset({"then", "elif", "else", "fi", "do", "done", "}", "esac"})
CASE_ENDS = (";;", ";&", ";;&")
ASSIGN_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\+?)=")
SUBSCRIPT_START_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[")


class Parser:
    def __init__(self, text: str | Source, *, depth: int = 0, pos: int = 0, first_line: int = 1) -> None:
        self.src = text if isinstance(text, Source) else Source(text, first_line)
        self.depth = depth
        self.lexer = Lexer(self.src, pos, subparser=_parse_subst, parse_text=parse, depth=depth)
        self._tok: Token | None = None
        # `alias`: a word in command position whose value this returns is replaced by it (top-level text only)
        self.aliases: Callable[[str], str | None] | None = None
        self._alias_until: dict[str, int] = {}  # an alias is not expanded again inside its own value

    @property
    def warnings(self) -> list[tuple[int, str]]:
        """Non-fatal diagnostics (here-document ended by end of file), as (line, message)."""
        return self.lexer.warnings

    # -- token plumbing ----------------------------------------------------------------------------------------
    def peek(self) -> Token:
        if self._tok is None:
            self._tok = self.lexer.next_token()
        return self._tok

    def advance(self) -> Token:
        tok = self.peek()
        self._tok = None
        return tok

    def error_at(self, tok: Token) -> ShellSyntaxError:
        if tok.kind == "EOF":
            return ShellSyntaxError("syntax error: unexpected end of file", tok.line)
        return ShellSyntaxError(
            f"syntax error near unexpected token `{tok.shown}'", tok.line, self.src.line_text(tok.line)
        )

    def expect_word(self, value: str) -> Token:
        tok = self.peek()
        if not tok.is_word(value):
            raise self.error_at(tok)
        return self.advance()

    def offset(self) -> int:
        """Where in the text the next token starts (or the lexer stands)."""
        return self.lexer.pos if self._tok is None else self._tok.start

    def peek_line(self) -> int:
        """The line being parsed (for errors raised outside the grammar)."""
        return self.src.line_at(self.lexer.pos)

    def skip_newlines(self) -> None:
        while self.peek().kind == "NEWLINE":
            self.advance()

    def at_terminator(self) -> bool:
        tok = self.peek()
        return tok.kind == "EOF" or tok.is_op(*CASE_ENDS, ")") or tok.is_word(*TERMINATORS)

    # -- entry points ------------------------------------------------------------------------------------------
    def parse_next(self) -> CommandList | None:
        """The next complete command, or None at end of text."""
        self.skip_newlines()
        if self.peek().kind == "EOF":
            return None
        try:
            lst = self.parse_list(top=True)
        except RecursionError:  # deeper than the Python stack allows: a syntax error, never a crash
            raise ShellSyntaxError("syntax error: nesting too deep", self.peek_line()) from None
        tok = self.peek()
        if tok.kind == "NEWLINE":
            self.advance()
        elif tok.kind != "EOF":
            raise self.error_at(tok)
        return lst

    def parse_all(self) -> CommandList:
        items: list[ListItem] = []
        while (lst := self.parse_next()) is not None:
            items.extend(lst.items)
        return CommandList(items)

    # -- grammar -----------------------------------------------------------------------------------------------
    def parse_list(self, *, top: bool) -> CommandList:
        items: list[ListItem] = []
        while True:
            ao = self.parse_and_or()
            tok = self.peek()
            if tok.is_op(";", "&"):
                self.advance()
                items.append(ListItem(ao, background=tok.value == "&"))
                if top:
                    if self.peek().kind in ("NEWLINE", "EOF"):
                        break
                    continue
                self.skip_newlines()
                if self.at_terminator():
                    break
                continue
            items.append(ListItem(ao))
            if not top and tok.kind == "NEWLINE":
                self.skip_newlines()
                if self.at_terminator():
                    break
                continue
            break
        return CommandList(items)

    def parse_compound_list(self) -> CommandList:
        self.skip_newlines()
        if self.at_terminator():
            raise self.error_at(self.peek())
        return self.parse_list(top=False)

    def parse_and_or(self) -> AndOr:
        first = self.parse_pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while self.peek().is_op("&&", "||"):
            op = self.advance().value
            self.skip_newlines()
            rest.append((op, self.parse_pipeline()))
        return AndOr(first, rest)

    def parse_pipeline(self) -> Pipeline:
        negate = False
        timed = False
        line = self.peek().line
        if self.peek().is_word("time"):
            self.advance()
            timed = True
            if self.peek().is_word("-p"):
                self.advance()
            tok = self.peek()
            if tok.kind in ("NEWLINE", "EOF") or tok.is_op(";", "&", "&&", "||", ")") or tok.is_word(*TERMINATORS):
                return Pipeline([], False, [], line, timed=True)
        while self.peek().is_word("!"):
            self.advance()
            negate = not negate
        commands = [self.parse_command()]
        stderr_too: list[bool] = []
        while self.peek().is_op("|", "|&"):
            stderr_too.append(self.advance().value == "|&")
            self.skip_newlines()
            commands.append(self.parse_command())
        return Pipeline(commands, negate, stderr_too, line, timed=timed)

    def parse_command(self) -> Command:
        tok = self._expand_alias() if self.aliases is not None else self.peek()
        if tok.kind == "WORD" and tok.word is not None and tok.word.is_plain:
            parse = {
                "if": self.parse_if,
                "for": self.parse_for,
                "while": self.parse_while,
                "until": self.parse_while,
                "case": self.parse_case,
                "{": self.parse_group,
                "[[": self.parse_dbracket,
            }.get(tok.value)
            if tok.value == "function":
                return self.parse_function_keyword()
            if parse is not None:
                return self._compound(parse)
            if tok.value in TERMINATORS:
                raise self.error_at(tok)
        if tok.is_op("(") and self.src.text.startswith("(", tok.end):
            found = self.lexer.arith_text(tok.end + 1)
            if found is not None:
                return self._compound(lambda: self.parse_arith_command(found))
        if tok.is_op("("):
            return self._compound(self.parse_subshell)
        if tok.kind in ("EOF", "NEWLINE") or (tok.kind == "OP" and tok.value not in REDIR_OPS):
            raise self.error_at(tok)
        return self.parse_simple()

    def _expand_alias(self) -> Token:
        tok = self.peek()
        while tok.kind == "WORD" and tok.word is not None and tok.word.is_plain and tok.heredoc is None:
            name = tok.value
            value = None if self._alias_until.get(name, -1) > tok.start else self.aliases(name)  # type: ignore[misc]
            if value is None:
                break
            self.src.splice(tok.start, tok.end, value)
            self.lexer.text = self.src.text
            self.lexer.pos = tok.start
            self._tok = None
            delta = len(value) - (tok.end - tok.start)
            self._alias_until = {k: v + delta if v > tok.start else v for k, v in self._alias_until.items()}
            self._alias_until[name] = tok.start + len(value)
            tok = self.peek()
        return tok

    def _compound(self, parse) -> Command:  # noqa: ANN001 - one of the parse_* methods below
        if self.depth >= MAX_DEPTH:
            raise ShellSyntaxError("syntax error: nesting too deep", self.peek().line)
        self.depth += 1
        try:
            start = self.peek().start
            node = parse()
            node.text = " ".join(self.src.text[start : self._last_end].split())
        finally:
            self.depth -= 1
        while self.peek().kind == "IO_NUMBER" or self.peek().is_op(*REDIR_OPS):
            node.redirs.append(self.parse_redir())
        return node

    def _close(self, tok: Token) -> Token:
        self._last_end = tok.end
        return tok

    def parse_simple(self) -> SimpleCommand | FunctionDef:
        cmd = SimpleCommand(line=self.peek().line)
        while True:
            tok = self.peek()
            if tok.kind == "IO_NUMBER" or tok.is_op(*REDIR_OPS):
                cmd.redirs.append(self.parse_redir())
            elif tok.kind == "WORD":
                assert tok.word is not None
                assign = None if cmd.words else _assignment(tok.word)
                if assign is not None:
                    cmd.assigns.append(assign)
                else:
                    if cmd.words and cmd.words[0].literal() == "let" and tok.word.items is not None:
                        cmd.words.append(Word([Lit(tok.value)], tok.value))  # `let x=(1+2)`: arithmetic text
                        self.advance()
                        continue
                    if cmd.words and cmd.words[0].literal() not in DECLARATION_WORDS:
                        self._no_array_literal(tok)
                    cmd.words.append(_assignment_like_tilde(tok.word) if cmd.words else tok.word)
                self.advance()
            else:
                break
        if not (cmd.words or cmd.assigns or cmd.redirs):
            raise self.error_at(self.peek())
        if len(cmd.words) == 1 and not cmd.assigns and not cmd.redirs and self.peek().is_op("("):
            return self._function_definition(cmd.words[0], cmd.line)
        return cmd

    def _no_array_literal(self, tok: Token) -> None:
        """`name=(…)` is an array only where an assignment can be; elsewhere bash stops at the `(`."""
        if tok.word is not None and tok.word.items is not None:
            line = tok.line
            raise ShellSyntaxError("syntax error near unexpected token `('", line, self.src.line_text(line))

    def _function_definition(self, name: Word, line: int) -> FunctionDef:
        """`name ( ) compound-command`, after the name."""
        self.advance()
        tok = self.peek()
        if not tok.is_op(")"):
            if tok.kind == "EOF":
                end = self.src.line_at(len(self.src.text))
                raise ShellSyntaxError("syntax error near unexpected token `newline'", end, self.src.line_text(end))
            raise self.error_at(tok)
        self.advance()
        # a name with expansions (`$foo-bar() {…}`) parses; running the definition fails, as in bash
        return FunctionDef(name.raw, self._function_body(), line, valid=name.is_plain)

    def parse_function_keyword(self) -> FunctionDef:
        """`function name [()] compound-command`."""
        line = self.advance().line
        tok = self.peek()
        if tok.kind != "WORD" or tok.word is None or not tok.word.is_plain:
            raise self.error_at(tok)
        self.advance()
        if self.peek().is_op("("):
            self.advance()
            if not self.peek().is_op(")"):
                raise self.error_at(self.peek())
            self.advance()
        return FunctionDef(tok.value, self._function_body(), line)

    def _function_body(self) -> Command:
        self.skip_newlines()
        tok = self.peek()
        compound = tok.is_op("(") or tok.is_word("{", "if", "for", "while", "until", "case")
        if not compound:
            raise self.error_at(tok)
        return self.parse_command()

    def parse_redir(self) -> Redir:
        fd = None
        fd_var = None
        if self.peek().kind == "IO_NUMBER":
            value = self.advance().value
            if value.startswith("{"):
                fd_var = value[1:-1]
            else:
                fd = int(value)
        op = self.advance().value
        tok = self.peek()
        if tok.kind == "EOF":  # bash reads an implicit final newline here
            line = self.src.line_at(len(self.src.text))
            raise ShellSyntaxError("syntax error near unexpected token `newline'", line, self.src.line_text(line))
        if tok.kind != "WORD":
            raise self.error_at(tok)
        self.advance()
        assert tok.word is not None
        if op in ("<<", "<<-"):
            assert tok.heredoc is not None
            return Redir(op, tok.heredoc, fd, fd_var)
        return Redir(op, tok.word, fd, fd_var)

    def parse_if(self) -> If:
        line = self.advance().line
        clauses = []
        cond = self.parse_compound_list()
        self.expect_word("then")
        clauses.append((cond, self.parse_compound_list()))
        else_body = None
        while True:
            tok = self.peek()
            if tok.is_word("elif"):
                self.advance()
                cond = self.parse_compound_list()
                self.expect_word("then")
                clauses.append((cond, self.parse_compound_list()))
            elif tok.is_word("else"):
                self.advance()
                else_body = self.parse_compound_list()
            else:
                break
        self._close(self.expect_word("fi"))
        return If(clauses, else_body, line=line)

    def parse_arith_command(self, found: tuple[str, int]) -> ArithCommand:
        tok = self.peek()
        inner, end = found
        self.lexer.pos = end
        self._tok = None
        self._last_end = end
        return ArithCommand(self.lexer.arith_word(inner), line=tok.line)

    def parse_arith_for(self, line: int) -> ArithFor:
        tok = self.peek()
        found = self.lexer.arith_text(tok.end + 1)
        if found is None:
            raise self.error_at(tok)
        inner, end = found
        self.lexer.pos = end
        self._tok = None
        parts = _split_arith_for(inner)
        if parts is None:
            raise ShellSyntaxError("syntax error: arithmetic expression required", line, self.src.line_text(line))
        words = [self.lexer.arith_word(p) for p in parts]
        if self.peek().is_op(";"):
            self.advance()
        self.skip_newlines()
        if self.peek().is_word("{"):
            group = self.parse_group()
            body = group.body
        else:
            self.expect_word("do")
            body = self.parse_compound_list()
            self._close(self.expect_word("done"))
        return ArithFor(words[0], words[1], words[2], body, line=line)

    def parse_dbracket(self) -> DBracket:
        line = self.advance().line
        expr = self._db_or()
        self._db_skip_newlines()
        tok = self.peek()
        if not tok.is_word("]]"):
            raise self.error_at(tok)
        self._close(self.advance())
        return DBracket(expr, line=line)

    def _db_skip_newlines(self) -> None:
        while self.peek().kind == "NEWLINE":
            self.advance()

    def _db_or(self) -> tuple:
        left = self._db_and()
        self._db_skip_newlines()
        while self.peek().is_op("||"):
            self.advance()
            self._db_skip_newlines()
            left = ("or", left, self._db_and())
        return left

    def _db_and(self) -> tuple:
        left = self._db_not()
        self._db_skip_newlines()
        while self.peek().is_op("&&"):
            self.advance()
            self._db_skip_newlines()
            left = ("and", left, self._db_not())
            self._db_skip_newlines()
        return left

    def _db_not(self) -> tuple:
        self._db_skip_newlines()
        if self.peek().is_word("!"):
            self.advance()
            return ("not", self._db_not())
        return self._db_primary()

    def _db_word(self) -> Word:
        tok = self.peek()
        if tok.kind != "WORD" or tok.is_word("]]"):
            raise self.error_at(tok)
        self.advance()
        assert tok.word is not None
        return tok.word

    def _db_primary(self) -> tuple:
        tok = self.peek()
        if tok.is_op("("):
            self.advance()
            inner = self._db_or()
            self._db_skip_newlines()
            if not self.peek().is_op(")"):
                raise self.error_at(self.peek())
            self.advance()
            return inner
        if tok.kind == "WORD" and tok.word is not None and tok.word.is_plain and tok.value in DB_UNARY:
            op = self.advance().value
            nxt = self.peek()
            if nxt.kind == "WORD" and not nxt.is_word("]]"):
                return ("unary", op, self._db_word())
            if nxt.is_word("]]") or nxt.is_op("&&", "||", ")"):  # `[[ -z ]]`: an operator with no operand
                raise ShellSyntaxError(f"unexpected argument `{nxt.value}' to conditional unary operator", nxt.line,
                                       self.src.line_text(nxt.line))  # fmt: skip
            raise self.error_at(nxt)
        left = self._db_word()
        nxt = self.peek()
        if nxt.is_op("<", ">"):
            op = self.advance().value
            return ("binary", op, left, self._db_word())
        if nxt.kind == "WORD" and nxt.word is not None and nxt.word.is_plain and nxt.value in DB_BINARY:
            op = nxt.value
            if op == "=~":
                self.advance()
                right = self.lexer.read_regex()
                self._tok = None
                if right is None:
                    raise self.error_at(self.peek())
                return ("binary", op, left, right)
            self.advance()
            if op in ("==", "!=", "="):  # the pattern: extglob forms are always read here, as in bash
                saved, self.lexer.extglob = self.lexer.extglob, _always
                try:
                    return ("binary", op, left, self._db_word())
                finally:
                    self.lexer.extglob = saved
            return ("binary", op, left, self._db_word())
        return ("word", left)

    def parse_for(self) -> For | ArithFor:
        line = self.advance().line
        name_tok = self.peek()
        if name_tok.is_op("(") and self.src.text.startswith("(", name_tok.end):
            return self.parse_arith_for(line)
        if name_tok.kind != "WORD":
            raise self.error_at(name_tok)
        self.advance()
        self.skip_newlines()
        words: list[Word] | None = None
        if self.peek().is_word("in"):
            self.advance()
            words = []
            while self.peek().kind == "WORD":
                tok = self.advance()
                assert tok.word is not None
                self._no_array_literal(tok)
                words.append(tok.word)
            if not self.peek().is_op(";") and self.peek().kind != "NEWLINE":
                raise self.error_at(self.peek())
            self.advance()
        elif self.peek().is_op(";"):
            self.advance()
        self.skip_newlines()
        self.expect_word("do")
        body = self.parse_compound_list()
        self._close(self.expect_word("done"))
        return For(name_tok.value, words, body, line=line)

    def parse_while(self) -> While:
        tok = self.advance()
        cond = self.parse_compound_list()
        self.expect_word("do")
        body = self.parse_compound_list()
        self._close(self.expect_word("done"))
        return While(cond, body, until=tok.value == "until", line=tok.line)

    def parse_case(self) -> Case:
        line = self.advance().line
        tok = self.peek()
        if tok.kind != "WORD":
            raise self.error_at(tok)
        self.advance()
        assert tok.word is not None
        self._no_array_literal(tok)
        word = tok.word
        self.skip_newlines()
        self.expect_word("in")
        items: list[CaseItem] = []
        while True:
            self.skip_newlines()
            tok = self.peek()
            if tok.is_word("esac"):
                self._close(self.advance())
                return Case(word, items, line=line)
            if tok.is_op("("):
                self.advance()
            pats: list[Word] = []
            while True:
                t = self.peek()
                if t.kind != "WORD":
                    raise self.error_at(t)
                self.advance()
                assert t.word is not None
                self._no_array_literal(t)
                pats.append(t.word)
                if not self.peek().is_op("|"):
                    break
                self.advance()
            if not self.peek().is_op(")"):
                raise self.error_at(self.peek())
            self.advance()
            self.skip_newlines()
            body = None
            if not (self.peek().is_op(*CASE_ENDS) or self.peek().is_word("esac")):
                body = self.parse_list(top=False)
            end = self.peek()
            if end.is_op(*CASE_ENDS):
                items.append(CaseItem(pats, body, self.advance().value))
            elif end.is_word("esac"):
                items.append(CaseItem(pats, body))
            else:
                raise self.error_at(end)

    def parse_group(self) -> Group:
        line = self.advance().line
        body = self.parse_compound_list()
        self._close(self.expect_word("}"))
        return Group(body, line=line)

    def parse_subshell(self) -> Subshell:
        line = self.advance().line
        body = self.parse_compound_list()
        tok = self.peek()
        if not tok.is_op(")"):
            raise self.error_at(tok)
        self._close(self.advance())
        return Subshell(body, line=line)

    _last_end = 0


def _always() -> bool:
    return True


def _assignment(word: Word) -> Assign | None:
    """`NAME=value` (or `NAME+=value`, `NAME[sub]=value`) when the name part is unquoted literal text."""
    first = word.parts[0] if word.parts else None
    if not isinstance(first, Lit) or first.quoted:
        return None
    m = ASSIGN_RE.match(first.text)
    if not m:
        sub = SUBSCRIPT_START_RE.match(first.text)
        return _subscript_assignment(word, sub.group(1)) if sub else None
    rest = first.text[m.end() :]
    value_parts = ([Lit(rest)] if rest else []) + word.parts[1:]
    value = Word(tilde_value(value_parts), word.raw[m.end() :])
    name = m.group(1) + ("+" if m.group(2) else "")
    return Assign(name, value, items=word.items)


def _assignment_like_tilde(word: Word) -> Word:
    """`echo x=~/a:~/b`: bash expands tildes after the `=` and `:` of an argument shaped like an assignment."""
    first = word.parts[0] if word.parts else None
    if not isinstance(first, Lit) or first.quoted or "~" not in first.text:
        return word
    m = ASSIGN_RE.match(first.text)
    if not m:
        return word
    rest = first.text[m.end() :]
    value = tilde_value(([Lit(rest)] if rest else []) + word.parts[1:])
    return Word([Lit(first.text[: m.end()]), *value], word.raw, word.items)


def _subscript_assignment(word: Word, name: str) -> Assign | None:
    """`name[sub]=value`: the subscript may hold expansions; the `]=` must be unquoted."""
    parts: list = [Lit(word.parts[0].text[len(name) + 1 :])] + word.parts[1:]  # type: ignore[union-attr]
    index: list = []
    depth = 0
    for k, p in enumerate(parts):
        if not isinstance(p, Lit) or p.quoted:
            index.append(p)
            continue
        for j, c in enumerate(p.text):
            if c == "[":
                depth += 1
            elif c == "]":
                if depth:
                    depth -= 1
                    continue
                after = p.text[j + 1 :]
                plus = after.startswith("+=")
                if not (after.startswith("=") or plus):
                    return None
                if p.text[:j]:
                    index.append(Lit(p.text[:j]))
                rest = after[2 if plus else 1 :]
                value_parts = ([Lit(rest)] if rest else []) + parts[k + 1 :]
                eq = word.raw.find("]" + ("+=" if plus else "="))
                value = Word(tilde_value(value_parts), word.raw[eq + (3 if plus else 2) :])
                return Assign(name + ("+" if plus else ""), value, index=Word(index, ""), items=word.items)
        index.append(p)
    return None


def _split_arith_for(inner: str) -> list[str] | None:
    """`init; cond; step` at parenthesis depth 0."""
    parts: list[str] = []
    depth = 0
    cur = 0
    for i, c in enumerate(inner):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == ";" and depth == 0:
            parts.append(inner[cur:i])
            cur = i + 1
    parts.append(inner[cur:])
    return parts if len(parts) == 3 else None


def _parse_subst(src: Source, pos: int, depth: int) -> tuple[CommandList, int]:
    """Parse the list inside `$(…)` starting at `pos`; return it and the position after the `)`."""
    p = Parser(src, depth=depth, pos=pos)
    p.skip_newlines()
    if p.peek().is_op(")"):
        return CommandList(), p.advance().end
    if p.peek().kind == "EOF":
        raise ShellSyntaxError("unexpected EOF while looking for matching `)'", src.eof_line)
    body = p.parse_list(top=False)
    tok = p.peek()
    if tok.kind == "EOF":
        raise ShellSyntaxError("unexpected EOF while looking for matching `)'", src.eof_line)
    if not tok.is_op(")"):
        raise p.error_at(tok)
    p.advance()
    return body, tok.end


def parse(text: str, *, depth: int = 0, first_line: int = 1) -> CommandList:
    """Parse a whole text into one list (raises ShellSyntaxError)."""
    return Parser(text, depth=depth, first_line=first_line).parse_all()
