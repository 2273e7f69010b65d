"""Each builtin's happy path and its bad input (message text and status), through a Shell with a fake AgentHost."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from aiosh.kernel.streams import Pipe

from aiosh.shell import BuiltinContext, BuiltinRegistry, Shell, registry

sys.path.insert(0, str(Path(__file__).parent))
from test_shell_fakehost import FakeAgentHost  # noqa: E402

pytestmark = pytest.mark.timeout(30)  # agents and pipelines run on threads: never hang the suite


class Run:
    """Run text in a fresh (or given) Shell; keep stdout, stderr and status."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.host = FakeAgentHost()
        self.out: list[str] = []
        self.err: list[str] = []
        self.shell = Shell(agents=self.host, stdout=self.out.append, stderr=self.err.append, cwd=str(tmp_path),
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)})  # fmt: skip

    def __call__(self, text: str, *, filename: str | None = "-c") -> tuple[str, str, int]:
        self.out.clear()
        self.err.clear()
        status = self.shell.run_source(text, filename=filename)
        return "".join(self.out), "".join(self.err), status


@pytest.fixture()
def sh(tmp_path: Path) -> Run:
    return Run(tmp_path)


# -- files: echo cat cd pwd ---------------------------------------------------------------------------------------


def test_echo_options(sh: Run) -> None:
    assert sh("echo -n a; echo b") == ("ab\n", "", 0)
    assert sh("echo -e 'x\\ty\\n'") == ("x\ty\n\n", "", 0)
    assert sh("echo -ne 'q\\c'; echo -E '\\t' -x") == ("q\\t -x\n", "", 0)
    assert sh("echo -- -n") == ("-- -n\n", "", 0)


def test_cat_files_stdin_and_dash(sh: Run, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("file\n")
    assert sh("cat f") == ("file\n", "", 0)
    assert sh("echo piped | cat f - f") == ("file\npiped\nfile\n", "", 0)
    assert sh("cat -n f f") == ("     1\tfile\n     2\tfile\n", "", 0)


def test_cat_errors(sh: Run, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    out, err, st = sh("cat nofile d; echo $?")
    assert out == "1\n"
    assert err == "aiosh: line 1: cat: nofile: No such file or directory\naiosh: line 1: cat: d: Is a directory\n"
    assert sh("cat -z")[1:] == ("aiosh: line 1: cat: invalid option -- 'z'\n", 1)


def test_cat_reads_the_shells_stdin_pipe(tmp_path: Path) -> None:
    stdin = Pipe("in")
    stdin.write("from the caller\n")
    stdin.close()
    out: list[str] = []
    sh = Shell(stdout=out.append, stdin=stdin, cwd=str(tmp_path))
    assert sh.run_source("cat") == 0
    assert "".join(out) == "from the caller\n"


def test_cd_changes_only_the_shell_cwd(sh: Run, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    before = os.getcwd()
    assert sh("cd sub; pwd; cd ..; pwd") == (f"{tmp_path}/sub\n{tmp_path}\n", "", 0)
    assert os.getcwd() == before
    assert sh("cd sub; cd -; echo $OLDPWD") == (f"{tmp_path}\n{tmp_path}/sub\n", "", 0)
    assert sh.shell.cwd == str(tmp_path)


def test_cd_errors(sh: Run, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert sh("cd nowhere") == ("", "aiosh: line 1: cd: nowhere: No such file or directory\n", 1)
    assert sh("cd file") == ("", "aiosh: line 1: cd: file: Not a directory\n", 1)
    assert sh("cd a b") == ("", "aiosh: line 1: cd: too many arguments\n", 1)
    assert sh("unset HOME; cd") == ("", "aiosh: line 1: cd: HOME not set\n", 1)


def test_pwd(sh: Run, tmp_path: Path) -> None:
    assert sh("pwd") == (f"{tmp_path}\n", "", 0)
    assert sh("pwd -P") == (f"{os.path.realpath(tmp_path)}\n", "", 0)
    assert sh("pwd -q") == ("", "aiosh: line 1: pwd: -q: invalid option\npwd: usage: pwd [-LP]\n", 2)


# -- flow: true false test exit break continue ----------------------------------------------------------------------


def test_true_false_colon(sh: Run) -> None:
    assert sh("true; echo $?; false; echo $?; : ignored; echo $?") == ("0\n1\n0\n", "", 0)


def test_test_and_bracket(sh: Run, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert sh("[ -f f ] && [ -s f ] && [ -d . ] && test 2 -gt 1 && test abc != x && echo yes") == ("yes\n", "", 0)
    assert sh("[ 1 -eq a ]") == ("", "aiosh: line 1: [: a: integer expression expected\n", 2)
    assert sh("[ x") == ("", "aiosh: line 1: [: missing `]'\n", 2)
    assert sh("test a b") == ("", "aiosh: line 1: test: a: unary operator expected\n", 2)
    assert sh("test 1 2 3 4 5") == ("", "aiosh: line 1: test: too many arguments\n", 2)


def test_exit(sh: Run) -> None:
    assert sh("exit 5; echo no") == ("", "", 5)
    assert sh("false; exit") == ("", "", 1)
    assert sh("exit -1") == ("", "", 255)
    assert sh("exit x") == ("", "aiosh: line 1: exit: x: numeric argument required\n", 2)
    assert sh("exit 1 2; echo no") == ("", "aiosh: line 1: exit: too many arguments\n", 1)


def test_break_continue_outside_and_bad_counts(sh: Run) -> None:
    msg = "only meaningful in a `for', `while', or `until' loop"
    assert sh("break; continue; echo $?") == ("0\n", f"aiosh: line 1: break: {msg}\naiosh: line 1: continue: {msg}\n", 0)
    assert sh("for i in 1; do break 0; done") == ("", "aiosh: line 1: break: 0: loop count out of range\n", 1)


# -- vars: export unset set source eval shift -----------------------------------------------------------------------


def test_export_reaches_agents_and_programs(sh: Run) -> None:
    assert sh("X=1; getenv X; export X; getenv X; Y=tmp getenv Y; getenv Y") == ("\n1\ntmp\n\n", "", 0)
    assert sh("export Z=zz; env | grep ^Z=") == ("Z=zz\n", "", 0)


def test_export_listing_and_errors(sh: Run) -> None:
    out, _err, st = sh("export Q='a \"b\"'; export -p | grep ' Q='")
    assert (out, st) == ('declare -x Q="a \\"b\\""\n', 0)
    assert sh("export 1a=b") == ("", "aiosh: line 1: export: `1a=b': not a valid identifier\n", 1)
    out, err, st = sh("export -q")
    assert st == 2 and err.startswith("aiosh: line 1: export: -q: invalid option\nexport: usage:")


def test_unset(sh: Run) -> None:
    assert sh("x=1; export x; unset x; echo [$x]; getenv x") == ("[]\n\n", "", 0)
    assert sh("unset -v 9z") == ("", "aiosh: line 1: unset: `9z': not a valid identifier\n", 1)
    assert sh("unset 9z; echo $?") == ("0\n", "", 0)  # bash: then it names a function


def test_set_options_and_positional(sh: Run) -> None:
    assert sh("set -- a 'b c'; echo $# $2") == ("2 b c\n", "", 0)
    assert sh("set -e; set +e; false; echo on") == ("on\n", "", 0)
    assert sh("set -o pipefail; false | true; echo $?; set +o pipefail; false | true; echo $?") == ("1\n0\n", "", 0)
    assert sh("set -eu; echo $-") == ("eu\n", "", 0)
    out, _e, _s = sh("set +eu -o pipefail; set -o | grep -E '^(pipefail|errexit) '")
    assert out == "errexit        \toff\npipefail       \ton\n"


def test_set_errors(sh: Run) -> None:
    out, err, st = sh("set -q")
    assert st == 2 and err.startswith("aiosh: line 1: set: -q: invalid option\nset: usage: set ")
    assert sh("set -o nosuch")[1:] == ("aiosh: line 1: set: nosuch: invalid option name\nset: usage: set "
                                       "[-efux] [-o option-name] [--] [-] [arg ...]\n", 2)  # fmt: skip


def test_set_lists_variables_quoted(tmp_path: Path) -> None:
    out: list[str] = []
    sh = Shell(stdout=out.append, env={"A": "plain", "B": "two words"}, cwd=str(tmp_path))
    sh.run_source("set")
    assert "A=plain\n" in "".join(out) and "B='two words'\n" in "".join(out)


def test_source_runs_in_the_current_shell(sh: Run, tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text("echo in lib $1 $#\nfrom_lib=yes\n")
    assert sh("source ./lib.sh one two; echo $from_lib $#") == ("in lib one 2\nyes 0\n", "", 0)
    assert sh(". lib.sh") == ("in lib 0\n", "", 0)


def test_source_errors(sh: Run, tmp_path: Path) -> None:
    assert sh("source nofile") == ("", "aiosh: line 1: nofile: No such file or directory\n", 1)
    out, err, st = sh("source")
    assert st == 2 and err.startswith("aiosh: line 1: source: filename argument required\n")
    (tmp_path / "bad.sh").write_text("echo first\nfi\necho never\n")
    out, err, st = sh("source ./bad.sh; echo status $?")
    assert out == "first\nstatus 2\n"
    assert err == "./bad.sh: line 2: syntax error near unexpected token `fi'\n./bad.sh: line 2: `fi'\n"


def test_eval_and_shift(sh: Run) -> None:
    assert sh("cmd='echo a; x=1'; eval \"$cmd\"; echo $x") == ("a\n1\n", "", 0)
    assert sh("set -- 1 2 3; shift; echo $@; shift 5; echo $?; shift x") == (
        "2 3\n1\n", "aiosh: line 1: shift: x: numeric argument required\n", 1)  # fmt: skip


# -- info: help agents type ------------------------------------------------------------------------------------------


def test_help(sh: Run) -> None:
    out, _err, st = sh("help")
    assert st == 0 and " jobs [-lnprs] [jobspec ...]" in out and "cd [-L|[-P [-e]] [-@]] [dir]" in out
    assert sh("help cd") == ("cd: cd [-L|[-P [-e]] [-@]] [dir]\n    change the shell's working directory\n", "", 0)
    assert sh("help nosuch") == ("", "aiosh: line 1: help: no help topics match `nosuch'.  Try `help help'.\n", 1)


def test_every_builtin_has_help_and_usage() -> None:
    for name in registry.names():
        b = registry.get(name)
        assert b is not None and b.help and b.usage, name


def test_agents_lists_the_hosts_agents(sh: Run, tmp_path: Path) -> None:
    assert sh("agents") == ("chat\nfail\ngetenv\nsay\nsleep\nupper\n", "", 0)
    out: list[str] = []
    assert Shell(stdout=out.append, cwd=str(tmp_path)).run_source("agents") == 0 and out == []


def test_type(sh: Run) -> None:
    out, err, st = sh("type echo chat if ls nosuch")
    assert out.splitlines()[:3] == ["echo is a shell builtin", "chat is an agent", "if is a shell keyword"]
    assert out.splitlines()[3].startswith("ls is /")
    assert (err, st) == ("aiosh: line 1: type: nosuch: not found\n", 1)
    assert sh("type -t cd sleep for") == ("builtin\nagent\nkeyword\n", "", 0)


# -- agents: options, run, nice, renice, ulimit ---------------------------------------------------------------------


def test_agent_common_options(sh: Run) -> None:
    out, err, st = sh("chat --max-tokens 5 --seed=7 --temperature 0.5 --class batch --max-time 2 --max-kv 64 hi")
    assert st == 0, err
    assert out == ("chat argv=['hi'] options=[max_kv=64 max_time=2.0 max_tokens=5 sched_class=batch seed=7 "
                   "temperature=0.5]\n")  # fmt: skip
    assert sh("chat -- --seed 1") == ("chat argv=['--seed', '1'] options=[]\n", "", 0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("chat --nice x hi", "chat: --nice: invalid number 'x'"),
        ("chat --class fast hi", "chat: --class: invalid scheduling class 'fast'"),
        ("chat --temperature hot", "chat: --temperature: invalid number 'hot'"),
        ("chat --max-tokens", "chat: --max-tokens: option requires an argument"),
        ("run --seed x chat", "run: --seed: invalid number 'x'"),
    ],
)
def test_agent_option_errors(sh: Run, line: str, message: str) -> None:
    assert sh(line) == ("", f"aiosh: line 1: {message}\n", 2)
    assert not sh.host.started


def test_run(sh: Run) -> None:
    assert sh("run chat a b") == ("chat argv=['a', 'b'] options=[]\n", "", 0)
    assert sh("run --nice 3 chat --seed 1 x") == ("chat argv=['x'] options=[nice=3 seed=1]\n", "", 0)
    assert sh("run echo x") == ("", "aiosh: line 1: run: echo: no such agent\n", 127)
    out, err, st = sh("run")
    assert st == 2 and err.startswith("aiosh: line 1: run: an agent name is required\nrun: usage: run ")


def test_nice(sh: Run) -> None:
    assert sh("nice chat a") == ("chat argv=['a'] options=[nice=10]\n", "", 0)
    assert sh("nice -n 5 chat a; nice -3 run chat b") == (
        "chat argv=['a'] options=[nice=5]\nchat argv=['b'] options=[nice=3]\n", "", 0)  # fmt: skip
    assert sh("nice -n 50 chat") == ("chat argv=[] options=[nice=19]\n", "", 0)
    assert sh("nice") == ("0\n", "", 0)
    assert sh("nice -n x chat") == ("", "aiosh: line 1: nice: invalid adjustment 'x'\n", 125)


@pytest.mark.timeout(10)
def test_renice(sh: Run) -> None:
    out, err, st = sh("sleep 5 & renice 7 -p $!; renice -n 3 %1; echo $?; kill %1")
    assert (out, err, st) == ("0\n", "", 0)
    assert sh.host.started[0].nice == 3
    out, err, st = sh("renice 4 -p 999999")
    assert (err, st) == ("aiosh: line 1: renice: failed to set priority for 999999 (process ID): No such process\n", 1)
    assert sh("renice x 1")[1:] == ("aiosh: line 1: renice: invalid priority 'x'\n", 1)


def test_ulimit_defaults_reach_runs(sh: Run) -> None:
    assert sh("ulimit -a") == (
        "max tokens              (--max-tokens) unlimited\n"
        "max time (seconds)      (--max-time) unlimited\n"
        "max kv cells            (--max-kv) unlimited\n"
        "max shell processes     (-u) 2048\n", "", 0)  # fmt: skip
    assert sh("ulimit --max-tokens 100 --max-time=30; ulimit --max-tokens; chat x; chat --max-tokens 2 y") == (
        "100\nchat argv=['x'] options=[max_time=30.0 max_tokens=100]\n"
        "chat argv=['y'] options=[max_time=30.0 max_tokens=2]\n", "", 0)  # fmt: skip
    assert sh("ulimit --max-tokens unlimited; ulimit --max-tokens") == ("unlimited\n", "", 0)
    assert sh("ulimit --max-kv x") == ("", "aiosh: line 1: ulimit: x: invalid number\n", 1)
    out, err, st = sh("ulimit --bogus 1")
    assert st == 2 and err.startswith("aiosh: line 1: ulimit: --bogus: invalid option\n")


def test_ulimit_options_as_bash_reads_them(sh: Run) -> None:
    assert sh("ulimit -u5; ulimit -u; ulimit -Hu; ulimit -S -u") == ("5\n2048\n5\n", "", 0)
    assert sh("ulimit -u 7 8; ulimit -u") == ("7\n", "", 0)  # an extra operand is ignored, as in bash
    assert sh("ulimit --max-time 5 -u; ulimit --max-time") == ("max shell processes     (-u) 7\n5\n", "", 0)
    assert sh("ulimit --max-tokens --max-kv") == (
        "max tokens              (--max-tokens) unlimited\nmax kv cells            (--max-kv) unlimited\n", "", 0)
    assert sh("ulimit --max-kv; ulimit --max-kv 9; ulimit --max-kv") == ("unlimited\n9\n", "", 0)
    usage = "ulimit: usage: ulimit [-SHa] [-u N] [--max-tokens N] [--max-time S] [--max-kv N]\n"
    assert sh("ulimit -u -5") == ("", "aiosh: line 1: ulimit: -5: invalid option\n" + usage, 2)
    assert sh("ulimit -x") == ("", "aiosh: line 1: ulimit: -x: invalid option\n" + usage, 2)
    assert sh("ulimit -a -u 3; ulimit -u")[0].endswith("(-u) 7\n7\n")  # -a shows and sets nothing


# -- registering builtins from outside -----------------------------------------------------------------------------


def test_register_a_builtin_on_one_shell(sh: Run) -> None:
    def shout(ctx: BuiltinContext) -> int:
        text = "".join(ctx.read_chunks())
        ctx.write(text.upper() + " ".join(ctx.args) + f" cwd={ctx.state.cwd == sh.shell.cwd}\n")
        return 3 if ctx.args == ["fail"] else 0

    sh.shell.builtins.register("shout", shout, "upper-case standard input", "shout [word ...]")
    assert sh("echo hi | shout there") == ("HI\nthere cwd=True\n", "", 0)
    assert sh("shout fail < /dev/null; echo $?") == ("fail cwd=True\n3\n", "", 0)
    assert sh("help shout; type shout") == (
        "shout: shout [word ...]\n    upper-case standard input\nshout is a shell builtin\n", "", 0)  # fmt: skip


def test_register_into_the_default_table_and_errors(tmp_path: Path) -> None:
    def greet(ctx: BuiltinContext) -> int:
        if not ctx.args:
            return ctx.usage_error("a name is required")
        ctx.write(f"hello {ctx.args[0]}\n")
        return 0

    registry.register("greet", greet, "say hello", "greet NAME")
    try:
        out: list[str] = []
        err: list[str] = []
        sh = Shell(stdout=out.append, stderr=err.append, cwd=str(tmp_path), interactive=True)
        assert sh.run_line("greet bob") == 0 and out == ["hello bob\n"]
        assert sh.run_line("greet") == 2
        assert "".join(err) == "aiosh: greet: a name is required\ngreet: usage: greet NAME\n"
    finally:
        registry.unregister("greet")


def test_a_builtin_can_run_commands(sh: Run) -> None:
    def twice(ctx: BuiltinContext) -> int:
        ctx.run(ctx.args)
        return ctx.run(ctx.args)

    sh.shell.builtins.register("twice", twice, "run a command twice", "twice command [args ...]")
    assert sh("twice say hi; twice echo x > f; cat f; twice fail 3") == (
        "hi\nhi\nx\nx\n", "fail: failing\nfail: failing\n", 3)  # fmt: skip


def test_custom_registry() -> None:
    reg = BuiltinRegistry()

    @reg.builtin("only", "the only builtin", "only")
    def only(ctx: BuiltinContext) -> int:
        ctx.write("only\n")
        return 0

    out: list[str] = []
    err: list[str] = []
    sh = Shell(stdout=out.append, stderr=err.append, builtins=reg, host_programs=False)
    assert sh.run_source("only; echo x", filename="-c") == 127
    assert out == ["only\n"] and err == ["aiosh: line 1: echo: command not found\n"]


# -- declared options (builtins/getopt.py) -----------------------------------------------------------------------


def test_getopt_optional_values_and_long_options() -> None:
    from aiosh.shell.builtins.getopt import Flag, OptionError, Options

    spec = Options("aHu;", long=["max-kv;", "seed:", "quiet"])
    scan = spec.scan(["-Hu5", "-u", "6", "-u", "-a", "--max-kv=3", "--max-kv", "--seed", "4", "--quiet", "x"])
    assert list(scan) == [Flag("H"), Flag("u", "5"), Flag("u", "6"), Flag("u"), Flag("a"), Flag("--max-kv", "3"),
                          Flag("--max-kv"), Flag("--seed", "4"), Flag("--quiet")]  # fmt: skip
    assert scan.rest == ["x"]
    assert [f.value for f in spec.scan(["-u", "-"])] == ["-"]  # a lone `-` is a value, as bash's `;` takes it
    for bad, message in ((["--nope"], "--nope: invalid option"), (["--seed"], "--seed: option requires an argument")):
        with pytest.raises(OptionError, match=message):
            list(spec.scan(bad))


def test_getopt_word_at_a_time_with_a_hook() -> None:
    from aiosh.shell.builtins.getopt import Flag, OptionError, Options

    def other(word: str, seen: list[Flag]) -> Flag | None:
        return None if seen and seen[-1].letter == "s" else Flag("s", word[1:])

    spec = Options("ls:", clusters=False, other=other, needarg_usage=False)
    scan = spec.scan(["-l", "-9", "-15", "x"])
    assert list(scan) == [Flag("l"), Flag("s", "9")] and scan.rest == ["-15", "x"]
    scan = spec.scan(["-ls", "1"])  # no clusters: the hook has it
    assert list(scan) == [Flag("s", "ls")] and scan.rest == ["1"]
    with pytest.raises(OptionError) as info:
        list(spec.scan(["-s"]))
    assert str(info.value) == "-s: option requires an argument" and not info.value.usage
    with pytest.raises(OptionError, match="-lx: invalid option"):  # no hook: the whole word is bad
        list(Options("l", clusters=False).scan(["-lx"]))


def test_declared_option_errors_keep_bash_words(sh: Run) -> None:
    assert sh("declare -a=x; echo $?")[1:] == (
        "aiosh: line 1: declare: -=: invalid option\n"
        "declare: usage: declare [-aAfFgilnrtux] [-p] [name[=value] ...]\n", 0)  # fmt: skip
    assert sh("declare x -a=1")[1:] == ("aiosh: line 1: declare: `-a=1': not a valid identifier\n", 1)
    assert sh("f() { :; }; x=1; unset -vf x f; echo $? $x; declare -F f; declare -pF f") == (
        "1 1\nf\ndeclare -f f\n", "aiosh: line 1: unset: cannot simultaneously unset a function and a variable\n", 0)
    assert sh("unset -fv; echo $?")[0] == "1\n"
    assert sh("printf 'a\\cb|'; printf '%b|%s' 'p\\cq' r; echo") == ("a\\cb|p\n", "", 0)
    assert sh("cd -e /; echo $? $PWD; cd -@ /")[0] == "0 /\n"
    assert sh("cd -@ /")[1:] == ("aiosh: line 1: cd: -@: invalid option\ncd: usage: cd [-L|[-P [-e]] [-@]] [dir]\n", 2)
    assert sh("pwd -LP -- x; pwd -") == ("/\n/\n", "", 0)


def test_hash_options(sh: Run, tmp_path: Path) -> None:
    assert sh("hash -d nope; echo $?; hash -l; hash -t") == (
        "0\n", "aiosh: line 1: hash: -t: option requires an argument\n", 1)  # fmt: skip
    assert sh("hash -p /bin/echo say; say hi; hash -t say; hash -l; hash -d say; hash -d say") == (
        "hi\n/bin/echo\nbuiltin hash -p /bin/echo say\n", "aiosh: line 1: hash: say: not found\n", 1)
    assert sh(f"hash -p {tmp_path} d")[1:] == (f"aiosh: line 1: hash: {tmp_path}: Is a directory\n", 1)
    assert sh("f() { :; }; hash f; echo $?; hash -x")[1:] == (
        "aiosh: line 1: hash: -x: invalid option\nhash: usage: hash [-lr] [-p pathname] [-dt] [name ...]\n", 2)
    assert sh("hash -p /bin/a x; hash -p /bin/b y; hash -t x y nope") == (
        "x\t/bin/a\ny\t/bin/b\n", "aiosh: line 1: hash: nope: not found\n", 1)


def test_trap_options(sh: Run) -> None:
    out, err, st = sh("trap -lp")
    assert (out.splitlines()[0], err, st) == (" 1) SIGHUP\t 2) SIGINT\t 3) SIGQUIT\t 4) SIGILL\t 5) SIGTRAP", "", 0)
    assert sh("trap -p BOGUS INT; echo $?") == ("1\n", "aiosh: line 1: trap: BOGUS: invalid signal specification\n", 0)
    assert sh("trap 'echo hi'")[1:] == ("trap: usage: trap [-lp] [[arg] signal_spec ...]\n", 2)
    assert sh("trap -- -l USR1; trap \"it's\" USR2; trap -p") == (
        "trap -- '-l' SIGUSR1\ntrap -- 'it'\\''s' SIGUSR2\n", "", 0)


def test_exec_options(sh: Run, tmp_path: Path) -> None:
    assert sh("(exec -a name sh -c 'echo $0'); (exec -la name sh -c 'echo $0'); (exec -c env); echo $?") == (
        "name\n-name\n0\n", "", 0)
    assert sh("(exec -x); echo $?")[1:] == (
        "aiosh: line 1: exec: -x: invalid option\n"
        "exec: usage: exec [-cl] [-a name] [command [argument ...]] [redirection ...]\n", 0)  # fmt: skip
    assert sh("exec; echo kept; (exec -c >f; echo in); echo out; cat f") == ("kept\nout\nin\n", "", 0)


def test_kill_options(sh: Run) -> None:
    assert sh("kill -x -l 9; kill -l -- 15") == ("KILL\nTERM\n", "", 0)
    assert sh("kill -l -s") == ("", "aiosh: line 1: kill: -s: option requires an argument\n", 1)
    assert sh("kill -sl 1") == ("", "aiosh: line 1: kill: l: invalid signal specification\n", 1)
    assert sh("kill - 1") == ("", "aiosh: line 1: kill: : invalid signal specification\n", 1)
    assert sh("kill -? 1")[1:] == (
        "kill: usage: kill [-s sigspec | -n signum | -sigspec] pid | jobspec ... or kill -l [sigspec]\n", 2)
