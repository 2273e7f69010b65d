"""The parser as a library: AST shapes for each construct, bash's syntax-error wording, and a property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosh.shell import Parser, ShellSyntaxError, parse
from aiosh.shell.nodes import (
    Arith,
    BadSubst,
    Case,
    CmdSub,
    For,
    FunctionDef,
    Group,
    HereDoc,
    If,
    Lit,
    Param,
    SimpleCommand,
    Subshell,
    Tilde,
    While,
)


def only(text: str):
    """The single command of a one-command text."""
    lst = parse(text)
    assert len(lst.items) == 1
    ao = lst.items[0].command
    assert not ao.rest
    assert len(ao.first.commands) == 1
    return ao.first.commands[0]


def words(cmd: SimpleCommand) -> list[str]:
    return [w.raw for w in cmd.words]


# -- words and quoting -------------------------------------------------------------------------------------------


def test_simple_command_words() -> None:
    cmd = only("echo  hello   world")
    assert isinstance(cmd, SimpleCommand)
    assert words(cmd) == ["echo", "hello", "world"]
    assert cmd.words[1].parts == [Lit("hello")]


def test_quotes_mark_parts_quoted() -> None:
    cmd = only("""echo 'a b' "c $x" d\\ e""")
    assert cmd.words[1].parts == [Lit("a b", True)]
    assert cmd.words[2].parts == [Lit("c ", True), Param("x", quoted=True)]
    assert cmd.words[3].parts == [Lit("d"), Lit(" ", True), Lit("e")]


def test_empty_quotes_make_an_empty_word() -> None:
    cmd = only('echo "" \'\'')
    assert [w.parts for w in cmd.words[1:]] == [[Lit("", True)], [Lit("", True)]]


def test_ansi_c_quoting() -> None:
    assert only("echo $'a\\tb\\x41'").words[1].parts == [Lit("a\tbA", True)]


def test_parameters() -> None:
    cmd = only("echo $x ${y} $? $1 ${10} $@ ${#z} ${u:-def} ${v%.*}")
    p = [w.parts[0] for w in cmd.words[1:]]
    assert p[0] == Param("x")
    assert p[1] == Param("y")
    assert p[2] == Param("?")
    assert p[3] == Param("1")
    assert p[4] == Param("10")
    assert p[5] == Param("@")
    assert p[6] == Param("z", length=True)
    assert (p[7].name, p[7].op, p[7].arg.parts) == ("u", ":-", [Lit("def")])
    assert (p[8].name, p[8].op) == ("v", "%")


def test_unsupported_braced_form_is_an_expansion_time_error() -> None:
    assert isinstance(only("echo ${x@Z}").words[1].parts[0], BadSubst)
    sub = only("echo ${x//a/b}").words[1].parts[0]
    assert (sub.op, sub.arg.parts, sub.rep.parts) == ("//", [Lit("a")], [Lit("b")])


def test_command_substitution_is_parsed() -> None:
    cmd = only("echo $(echo a | cat) `echo b`")
    sub = cmd.words[1].parts[0]
    assert isinstance(sub, CmdSub)
    assert len(sub.body.items[0].command.first.commands) == 2
    assert isinstance(cmd.words[2].parts[0], CmdSub)


def test_nested_command_substitution_with_parens_in_quotes() -> None:
    sub = only('echo $(echo ")" $(echo x))').words[1].parts[0]
    inner = sub.body.items[0].command.first.commands[0]
    assert words(inner) == ["echo", '")"', "$(echo x)"]


def test_arithmetic() -> None:
    part = only("echo $((1 + x * 2))").words[1].parts[0]
    assert isinstance(part, Arith)
    assert part.expr.raw == "1 + x * 2"


def test_tilde_only_at_word_start() -> None:
    cmd = only("echo ~ ~/d ~bob/x a~ '~'")
    assert cmd.words[1].parts == [Tilde("")]
    assert cmd.words[2].parts == [Tilde(""), Lit("/d")]
    assert cmd.words[3].parts == [Tilde("bob"), Lit("/x")]
    assert cmd.words[4].parts == [Lit("a~")]
    assert cmd.words[5].parts == [Lit("~", True)]


def test_assignments_before_the_command() -> None:
    cmd = only("A=1 B='x y' cmd C=3")
    assert [(a.name, a.value.raw) for a in cmd.assigns] == [("A", "1"), ("B", "'x y'")]
    assert words(cmd) == ["cmd", "C=3"]


def test_assignment_only_and_append() -> None:
    cmd = only("x+=more y=~/p")
    assert [a.name for a in cmd.assigns] == ["x+", "y"]
    assert cmd.assigns[1].value.parts[0] == Tilde("")


def test_comments_and_line_continuation() -> None:
    assert words(only("echo a # not this")) == ["echo", "a"]
    assert words(only("echo a#b")) == ["echo", "a#b"]
    assert words(only("echo a\\\nb \\\n c")) == ["echo", "a\\\nb", "c"]


# -- lists, pipelines, redirections -----------------------------------------------------------------------------


def test_list_separators_and_background() -> None:
    lst = parse("a; b & c\nd")
    assert [it.background for it in lst.items] == [False, True, False, False]


def test_and_or() -> None:
    ao = parse("a && b || c").items[0].command
    assert [op for op, _ in ao.rest] == ["&&", "||"]


def test_pipeline_and_negation() -> None:
    p = parse("! a | b |& c").items[0].command.first
    assert p.negate
    assert len(p.commands) == 3
    assert p.stderr_too == [False, True]


def test_newline_after_pipe_and_andand_continues() -> None:
    p = parse("a |\n b &&\n c").items[0].command
    assert len(p.first.commands) == 2 and len(p.rest) == 1


def test_redirections() -> None:
    cmd = only("cmd < in > out 2>> err 2>&1 &> both <<< word")
    assert [(r.fd, r.op, getattr(r.target, "raw", None)) for r in cmd.redirs] == [
        (None, "<", "in"),
        (None, ">", "out"),
        (2, ">>", "err"),
        (2, ">&", "1"),
        (None, "&>", "both"),
        (None, "<<<", "word"),
    ]


def test_heredoc_bodies() -> None:
    lst = parse("cat <<EOF; cat <<'Q'\nhello $x\nEOF\nraw $y\nQ\necho after")
    first = lst.items[0].command.first.commands[0].redirs[0].target
    second = lst.items[1].command.first.commands[0].redirs[0].target
    assert isinstance(first, HereDoc) and first.expand and first.text == "hello $x\n"
    assert first.body is not None and Param("x", quoted=True) in first.body.parts
    assert isinstance(second, HereDoc) and not second.expand and second.text == "raw $y\n"
    assert words(lst.items[2].command.first.commands[0]) == ["echo", "after"]


def test_heredoc_strip_tabs() -> None:
    doc = only("cat <<-END\n\t\tx\n\tEND\n").redirs[0].target
    assert doc.text == "x\n"


def test_heredoc_at_end_of_file_warns() -> None:
    p = Parser("cat <<EOF\nabc")
    cmd = p.parse_next()
    assert cmd is not None
    assert p.warnings and "delimited by end-of-file (wanted `EOF')" in p.warnings[0][1]


# -- compound commands ---------------------------------------------------------------------------------------


def test_if_elif_else() -> None:
    node = only("if a; then b; elif c; then d; else e; fi")
    assert isinstance(node, If)
    assert len(node.clauses) == 2
    assert node.else_body is not None


def test_multiline_if() -> None:
    node = only("if a\nthen\n  b\nfi")
    assert isinstance(node, If) and len(node.clauses[0][1].items) == 1


def test_for_forms() -> None:
    node = only("for i in 1 2 3; do echo $i; done")
    assert isinstance(node, For) and node.name == "i" and [w.raw for w in node.words] == ["1", "2", "3"]
    bare = only("for i; do :; done")
    assert isinstance(bare, For) and bare.words is None
    multi = only("for i in a b\ndo\n echo\ndone")
    assert isinstance(multi, For)


def test_while_and_until() -> None:
    w = only("while a; do b; done")
    u = only("until a; do b; done")
    assert isinstance(w, While) and not w.until
    assert isinstance(u, While) and u.until


def test_case() -> None:
    node = only("case $x in a|b) echo ab;; (c*) ;& *) echo rest;;& esac")
    assert isinstance(node, Case)
    assert [[w.raw for w in it.patterns] for it in node.items] == [["a", "b"], ["c*"], ["*"]]
    assert [it.terminator for it in node.items] == [";;", ";&", ";;&"]
    assert node.items[1].body is None
    multi = only("case x in\n  x)\n    echo\n    ;;\nesac")
    assert isinstance(multi, Case) and len(multi.items) == 1


def test_function_definitions() -> None:
    f = only("f() { echo hi; } > out")
    assert isinstance(f, FunctionDef) and f.name == "f" and isinstance(f.body, Group)
    assert f.body.redirs[0].op == ">"
    g = only("function g\n{\n echo\n}")
    assert isinstance(g, FunctionDef) and g.name == "g"
    h = only("function h() ( exit 1 )")
    assert isinstance(h, FunctionDef) and isinstance(h.body, Subshell)
    with pytest.raises(ShellSyntaxError, match="near unexpected token `echo'"):
        parse("f() echo hi")


def test_group_and_subshell_with_redirections() -> None:
    g = only("{ a; b; } > f")
    s = only("( a; b ) 2>/dev/null")
    assert isinstance(g, Group) and len(g.redirs) == 1
    assert isinstance(s, Subshell) and s.redirs[0].fd == 2


def test_reserved_words_only_in_command_position() -> None:
    assert words(only("echo if then fi")) == ["echo", "if", "then", "fi"]
    assert words(only('"if" x')) == ['"if"', "x"]


def test_parse_next_returns_one_line_at_a_time() -> None:
    p = Parser("echo a\nfor i in 1\ndo :\ndone\necho b")
    got = []
    while (lst := p.parse_next()) is not None:
        got.append(lst.render())
    assert len(got) == 3


def test_parse_next_stops_before_a_later_error() -> None:
    p = Parser("echo a\nfi\n")
    assert p.parse_next() is not None
    with pytest.raises(ShellSyntaxError) as info:
        p.parse_next()
    assert info.value.line == 2


# -- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("echo a; fi", "syntax error near unexpected token `fi'", 1),
        ("if true; then", "syntax error: unexpected end of file", 2),
        ("echo >", "syntax error near unexpected token `newline'", 1),
        ("| echo", "syntax error near unexpected token `|'", 1),
        ("echo ;;", "syntax error near unexpected token `;;'", 1),
        ("a && ", "syntax error: unexpected end of file", 2),
        ("while true; do done", "syntax error near unexpected token `done'", 1),
        ("if then fi", "syntax error near unexpected token `then'", 1),
        ("{ echo a }", "syntax error: unexpected end of file", 2),
        ("echo a )", "syntax error near unexpected token `)'", 1),
        ('echo "abc', "unexpected EOF while looking for matching `\"'", 1),
        ("echo 'abc", "unexpected EOF while looking for matching `''", 1),
        ("echo $(echo a", "unexpected EOF while looking for matching `)'", 2),
        ("echo ${x", "unexpected EOF while looking for matching `}'", 1),
        ("echo `x", "unexpected EOF while looking for matching ``'", 1),
        ("case x in a) echo; fi", "syntax error near unexpected token `fi'", 1),
        ("case x in a) echo", "syntax error: unexpected end of file", 2),
        ("echo a\n\nthen", "syntax error near unexpected token `then'", 3),
    ],
)
def test_syntax_errors_read_like_bash(text: str, message: str, line: int) -> None:
    with pytest.raises(ShellSyntaxError) as info:
        parse(text)
    assert info.value.message == message
    assert info.value.line == line


def test_error_carries_the_offending_line() -> None:
    with pytest.raises(ShellSyntaxError) as info:
        parse("echo ok\nfor x in 1; do :; fi")
    assert info.value.source_line == "for x in 1; do :; fi"


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    with pytest.raises(ShellSyntaxError):
        parse("(" * 500)
    with pytest.raises(ShellSyntaxError):
        parse("echo " + "$(" * 500)


# -- property: parse or ShellSyntaxError, nothing else ---------------------------------------------------------

PIECES = list("abc xyz019 \t\n;&|<>()'\"\\$`{}#*?[]!=~-") + [
    "if ", "then ", "fi", "for ", " in ", "do ", "done", "while ", "<<EOF\n", "EOF\n", "$((", "))", "${", "$(", "case ", " esac", ";;", "f() {", "function ", "return ", "local ", "{a,b}", "{1..3}", ",", "..",
]  # fmt: skip
SHELLISH = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(SHELLISH)
def test_any_shellish_text_parses_or_raises_syntax_error(text: str) -> None:
    try:
        parse(text)
    except ShellSyntaxError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_raises_syntax_error(text: str) -> None:
    try:
        parse(text)
    except ShellSyntaxError:
        pass


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None)
@given(SHELLISH)
def test_running_any_text_returns_a_status(text: str) -> None:
    """Builtins only (no programs, no agents): whatever the text, the shell reports a status and raises nothing."""
    import signal
    import tempfile
    import threading

    from aiosh.shell import Shell

    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        sh = Shell(stdout=lambda _t: None, stderr=errors.append, cwd=tmp, host_programs=False, env={})
        timer = threading.Timer(0.5, sh.foreground_signal, args=(signal.SIGINT,))  # ends `while :; do :; done`
        timer.start()
        try:
            status = sh.run_source(text, filename="-c")
        finally:
            timer.cancel()
    assert 0 <= status <= 255
    assert not any("internal error" in e or "Traceback" in e for e in errors), errors


def test_unary_test_operator_without_operand_is_a_syntax_error() -> None:
    """`[[ -z ]]` as in bash (which then exits 0, where aiosh gives 2: see the README's deliberate differences)."""
    for text in ("[[ -z ]]", "[[ ! -n ]]", "[[ -f || x ]]"):
        with pytest.raises(ShellSyntaxError, match="to conditional unary operator"):
            parse(text)
