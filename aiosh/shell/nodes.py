"""The small AST the parser builds and the interpreter walks (nodes.py, not ast.py, so the stdlib stays visible).

Words keep their parts (literal, parameter, command substitution …) with a `quoted` flag on each, because field
splitting and globbing apply only to the unquoted results of expansions; quote removal is then implicit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .errors import ShellSyntaxError

# -- word parts --------------------------------------------------------------------------------------------------


@dataclass
class Lit:
    """Literal text; `quoted` when it came from quotes or a backslash (no globbing, no tilde)."""

    text: str
    quoted: bool = False


@dataclass
class Tilde:
    """`~` or `~user` at the start of a word (or of an assignment's value)."""

    user: str = ""


@dataclass
class Param:
    """`$NAME`, `${NAME}`, `$?` …; `op`/`arg` for `${NAME:-word}` and friends, `length` for `${#NAME}`.

    op is one of :- - := = :+ + :? ? # ## % %% (arg: a word), / // /# /% (arg: pattern, rep: replacement),
    : (arg: `offset[:length]`), ^ ^^ , ,, (case).
    """

    name: str
    quoted: bool = False
    op: str | None = None
    arg: Word | None = None
    length: bool = False
    rep: Word | None = None
    index: Word | None = None  # `${a[sub]}`; `@` / `*` as a literal word for all elements
    indirect: bool = False  # `${!name}`, `${!a[@]}` (the keys), `${!prefix*}` (op "names*" / "names@")
    # `$NAME` without braces: brace expansion may lengthen the name (`$a{b,c}` is `$ab $ac`)
    bare: bool = field(default=False, compare=False)


@dataclass
class CmdSub:
    """`$(list)` or a backquoted list: run by the same interpreter in a subshell, trailing newlines stripped."""

    body: CommandList
    quoted: bool = False
    # a backquoted text that does not parse: bash reports it when the substitution runs, which then gives ""
    error: ShellSyntaxError | None = field(default=None, compare=False)


@dataclass
class Arith:
    """`$((expr))`: the expression's text is expanded (parameters, substitutions) then evaluated."""

    expr: Word
    quoted: bool = False


@dataclass
class BadSubst:
    """A `${…}` form aiosh does not implement: an error when expanded, as bash reports bad ones at run time."""

    text: str
    quoted: bool = False
    message: str | None = None  # another run-time error instead (an array literal that does not parse)


Part = Lit | Tilde | Param | CmdSub | Arith | BadSubst


@dataclass
class Word:
    parts: list[Part]
    raw: str = ""
    items: list[Word] | None = None  # `name=(…)`: the words of an array literal

    @property
    def is_plain(self) -> bool:
        """True when the word is one unquoted literal (a candidate reserved word or assignment name)."""
        return len(self.parts) == 1 and isinstance(self.parts[0], Lit) and not self.parts[0].quoted

    @property
    def has_quotes(self) -> bool:
        return any(getattr(p, "quoted", False) for p in self.parts)

    def literal(self) -> str | None:
        """The word's text when it has no expansions at all (quotes removed), else None."""
        out = []
        for p in self.parts:
            if not isinstance(p, Lit):
                return None
            out.append(p.text)
        return "".join(out)


# -- commands ----------------------------------------------------------------------------------------------------


@dataclass
class HereDoc:
    """A here-document body; filled in by the lexer when it reaches the end of the line that asked for it."""

    delimiter: str
    expand: bool
    strip_tabs: bool
    body: Word | None = None
    text: str = ""
    line: int = 0


@dataclass
class Redir:
    """`fd op target`: op is one of < > >> >| <> <& >& << <<- <<< &> &>>."""

    op: str
    target: Word | HereDoc
    fd: int | None = None
    fd_var: str | None = None  # `{name}>file`: the shell picks a descriptor and stores it in $name

    def render(self) -> str:
        fd = ("{" + self.fd_var + "}" if self.fd_var else "") if self.fd is None else str(self.fd)
        if isinstance(self.target, HereDoc):
            return f"{fd}{self.op}{self.target.delimiter}"
        if self.op in (">&", "<&"):
            return f"{fd}{self.op}{self.target.raw}"
        return f"{fd}{self.op} {self.target.raw}"


@dataclass
class Assign:
    """`name=value`, `name+=value` (name ends with `+`), `name[index]=value`, `name=(items…)`."""

    name: str
    value: Word
    index: Word | None = None
    items: list[Word] | None = None


@dataclass
class SimpleCommand:
    assigns: list[Assign] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0

    def render(self) -> str:
        parts = [f"{a.name}={a.value.raw}" for a in self.assigns] + [w.raw for w in self.words]
        parts += [r.render() for r in self.redirs]
        return " ".join(parts)


@dataclass
class If:
    clauses: list[tuple[CommandList, CommandList]]
    else_body: CommandList | None = None
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0
    text: str = ""

    def render(self) -> str:
        return self.text


@dataclass
class For:
    name: str
    words: list[Word] | None
    body: CommandList
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0
    text: str = ""

    def render(self) -> str:
        return self.text


@dataclass
class While:
    cond: CommandList
    body: CommandList
    until: bool = False
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0
    text: str = ""

    def render(self) -> str:
        return self.text


@dataclass
class CaseItem:
    """`pattern | pattern ) list ;;` — terminator `;;` stops, `;&` falls through, `;;&` tests the next items."""

    patterns: list[Word]
    body: CommandList | None
    terminator: str = ";;"


@dataclass
class Case:
    word: Word
    items: list[CaseItem]
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0
    text: str = ""

    def render(self) -> str:
        return self.text


@dataclass
class Group:
    """`{ list; }`: runs in the current shell."""

    body: CommandList
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0
    text: str = ""

    def render(self) -> str:
        return self.text


@dataclass
class Subshell:
    """`( list )`: runs on a copy of the shell's state."""

    body: CommandList
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0
    text: str = ""

    def render(self) -> str:
        return self.text


@dataclass
class FunctionDef:
    """`name() compound-command` or `function name { …; }`: defining is a command; calling runs `body`."""

    name: str
    body: Command
    line: int = 0
    redirs: list[Redir] = field(default_factory=list)
    valid: bool = True  # False: the name had expansions in it

    def render(self) -> str:
        return f"{self.name} () {self.body.render()}"


@dataclass
class DBracket:
    """`[[ expr ]]`: expr is a tree of tuples — ("and"|"or", l, r), ("not", e), ("unary", op, w),
    ("binary", op, w1, w2), ("word", w)."""

    expr: tuple
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0
    text: str = ""

    def render(self) -> str:
        return self.text


@dataclass
class ArithCommand:
    """`(( expr ))`: status 0 when the value is non-zero."""

    expr: Word
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0
    text: str = ""

    def render(self) -> str:
        return self.text


@dataclass
class ArithFor:
    """`for (( init; cond; step )) body`; an empty cond is true."""

    init: Word
    cond: Word
    step: Word
    body: CommandList
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0
    text: str = ""

    def render(self) -> str:
        return self.text


Command = SimpleCommand | If | For | While | Case | Group | Subshell | FunctionDef | DBracket | ArithCommand | ArithFor


@dataclass
class Pipeline:
    """`[!] cmd | cmd …`; `stderr_too[i]` when stage i is joined to the next by `|&`."""

    commands: list[Command]
    negate: bool = False
    stderr_too: list[bool] = field(default_factory=list)
    line: int = 0
    timed: bool = False  # `time pipeline`: the whole pipeline is timed

    def render(self) -> str:
        out = ("time " if self.timed else "") + ("! " if self.negate else "")
        for i, c in enumerate(self.commands):
            if i:
                out += " |& " if self.stderr_too[i - 1] else " | "
            out += c.render()
        return out


@dataclass
class AndOr:
    """`p1 && p2 || p3`: `rest` pairs an operator with the pipeline it guards."""

    first: Pipeline
    rest: list[tuple[str, Pipeline]] = field(default_factory=list)

    def render(self) -> str:
        return " ".join([self.first.render()] + [f"{op} {p.render()}" for op, p in self.rest])


@dataclass
class ListItem:
    command: AndOr
    background: bool = False


@dataclass
class CommandList:
    items: list[ListItem] = field(default_factory=list)

    def render(self) -> str:
        out = []
        for it in self.items:
            out.append(it.command.render() + (" &" if it.background else ";"))
        return " ".join(out).rstrip(";")
