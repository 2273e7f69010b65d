"""Differential runner for the Oils project's shell spec cases: bash is the oracle, aiosh the shell under test.

Each case (`#### NAME` … up to its first `## ` line) runs with `bash -c` and with `aiosh -c`, each in a freshly
emptied folder of the same path, with the suite's `bin/` first on PATH and `$SH` naming the shell under test.
A case agrees when stdout and the exit status are the same. Cases that need Oils' own source tree are skipped and
counted, and so are cases whose bash results differ between two runs (they print `$$`, time, randomness).

    python -m tests.oils_spec [FILE-or-STEM …] [--jobs N] [--show-failures] [--json OUT]

`AIOSH_SPEC_SHELL` picks the command run as aiosh: by default the shell language alone (`python -m aiosh.shell`,
no kernel, so no model load per case); `AIOSH_SPEC_SHELL=aiosh` runs the full `aiosh` (the kernel starts each time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NEEDS_OILS_TREE = re.compile(r"\$REPO_ROOT|spec/testdata|\bspec/|\btestdata\b|_devbuild|oils_for_unix")
TIMEOUT = 10.0
AGREE_FILE = Path(__file__).with_name("oils_spec_agree.txt")
SHIM = "aiosh-shell"  # the name $SH has in the cases
# Cases whose output depends on how fast a shell gets its background jobs going, or on the clock. They run and count
# in the table like any other, but test_oils_spec does not fail on them: on a loaded machine bash itself leaves its
# quiet-machine output (background#7: with two busy loops on the 2 cores, bash printed it in 8 of 12 runs, aiosh's
# shell in 1 of 12; on a quiet machine both in every run). The CI machine is such a machine at times (2026-12-02:
# background#7 differed there twice in a row). What they check without the race is in test_shell_differential.py.
TIMING_DEPENDENT: dict[str, str] = {
    "background#7": "three background jobs of 10, 20 and 30 ms must finish in that order",
    "background#11": "`wait %1` on a job that may have ended: bash says 127 when it ended first (seen under load)",
    "builtin-kill#16": "jobs of 0.1 and 0.2 s: which one `kill %-` finds still running",
    "posix#12": "`date` in the output: bash's two runs and aiosh's must fall in the same second",
}


def _default_signals() -> None:
    """Both shells start with default signal dispositions, whatever the runner inherited (a background job's
    ignored SIGINT would otherwise show up in bash's `trap` output)."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGPIPE, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)


def find_spec_dir() -> Path | None:
    """`../shared/oils-spec` from the repository root (or a folder above: a git worktree sits deeper)."""
    env = os.environ.get("AIOSH_OILS_SPEC")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for base in [REPO, *REPO.parents]:
        for cand in (base / "shared" / "oils-spec", base.parent / "shared" / "oils-spec"):
            if cand.is_dir():
                return cand
    return None


@dataclass
class Case:
    file: str  # the file's stem, e.g. "arith"
    index: int  # 0-based position in its file
    name: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.file}#{self.index}"


@dataclass
class Result:
    case: Case
    verdict: str  # agree | differ | skip-tree | skip-unstable | timeout
    bash: tuple[str, int] | None = None
    aiosh: tuple[str, int] | None = None
    aiosh_err: str = ""


def parse_file(path: Path) -> list[Case]:
    """A spec file's cases: the code of each is the text between `#### NAME` and its first `## ` line."""
    cases: list[Case] = []
    name: str | None = None
    code: list[str] = []
    in_code = False

    def flush() -> None:
        if name is not None:
            cases.append(Case(path.name.removesuffix(".test.sh"), len(cases), name, "".join(code)))

    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            if line.startswith("#### "):
                flush()
                name, code, in_code = line[5:].strip(), [], True
            elif in_code and (line.startswith("## ") or line.rstrip("\n") == "##"):
                in_code = False
            elif in_code:
                code.append(line)
    flush()
    return cases


def aiosh_command() -> list[str]:
    chosen = os.environ.get("AIOSH_SPEC_SHELL")
    if chosen:
        return chosen.split()
    return [sys.executable, "-m", "aiosh.shell"]


class Runner:
    """Runs cases in parallel, each shell in `<root>/<worker>/case` recreated empty before every run."""

    def __init__(self, spec_dir: Path, root: Path) -> None:
        self.spec_dir = spec_dir
        self.root = root
        self.bin = root / "shim"
        self.bin.mkdir(parents=True, exist_ok=True)
        # not named `aiosh`: the suite's `case $SH in *osh)` guards pick out Oils' own shell (osh), not ours
        shim = self.bin / SHIM
        argv = " ".join(f"'{a}'" for a in aiosh_command())
        pythonpath = f"{REPO}:{os.environ.get('PYTHONPATH', '')}".rstrip(":")
        shim.write_text(f"#!/bin/sh\nPYTHONPATH='{pythonpath}' exec {argv} \"$@\"\n")
        shim.chmod(0o755)
        self._local = threading.local()
        self._count = 0
        self._lock = threading.Lock()

    def _folder(self) -> Path:
        folder = getattr(self._local, "folder", None)
        if folder is None:
            with self._lock:
                self._count += 1
                folder = self.root / f"w{self._count}" / "case"
            self._local.folder = folder
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "tmp").mkdir()
        return folder

    def _run(self, shell: str, argv0: list[str], code: str) -> tuple[str, int, str] | None:
        folder = self._folder()
        env = {
            "PATH": f"{self.spec_dir / 'bin'}:{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(folder),
            "TMP": str(folder / "tmp"),
            "SH": shell,
            "LANG": "C.UTF-8",
        }
        try:
            r = subprocess.run([*argv0, "-c", code], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=TIMEOUT, start_new_session=True,
                               preexec_fn=_default_signals)  # fmt: skip
        except subprocess.TimeoutExpired:
            return None
        return r.stdout.decode("utf-8", "replace"), r.returncode, r.stderr.decode("utf-8", "replace")

    def run_case(self, case: Case) -> Result:
        if NEEDS_OILS_TREE.search(case.code):
            return Result(case, "skip-tree")
        bash = shutil.which("bash") or "bash"
        b1 = self._run(bash, [bash], case.code)
        b2 = self._run(bash, [bash], case.code)
        if b1 is None or b2 is None or b1[:2] != b2[:2]:
            return Result(case, "skip-unstable", b1[:2] if b1 else None)
        a = self._run(str(self.bin / SHIM), [str(self.bin / SHIM)], case.code)
        if a is None:
            return Result(case, "timeout", b1[:2])
        verdict = "agree" if a[:2] == b1[:2] else "differ"
        return Result(case, verdict, b1[:2], a[:2], a[2])


@dataclass
class Table:
    rows: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, r: Result) -> None:
        row = self.rows.setdefault(r.case.file, {"agree": 0, "run": 0, "skip": 0, "timeout": 0})
        if r.verdict.startswith("skip"):
            row["skip"] += 1
            return
        row["run"] += 1
        row["agree"] += r.verdict == "agree"
        row["timeout"] += r.verdict == "timeout"

    def render(self) -> str:
        lines = [f"{'file':<24} {'agree':>5} / {'run':<4} {'%':>6} {'skip':>5} {'t/o':>4}"]
        tot = {"agree": 0, "run": 0, "skip": 0, "timeout": 0}
        for name in sorted(self.rows):
            row = self.rows[name]
            for k in tot:
                tot[k] += row[k]
            pct = 100.0 * row["agree"] / row["run"] if row["run"] else 100.0
            lines.append(f"{name:<24} {row['agree']:>5} / {row['run']:<4} {pct:>5.1f}% {row['skip']:>5} {row['timeout']:>4}")
        pct = 100.0 * tot["agree"] / tot["run"] if tot["run"] else 100.0
        lines.append(f"{'TOTAL':<24} {tot['agree']:>5} / {tot['run']:<4} {pct:>5.1f}% {tot['skip']:>5} {tot['timeout']:>4}")
        return "\n".join(lines)


def load_cases(spec_dir: Path, only: list[str] | None = None) -> list[Case]:
    files = sorted(spec_dir.glob("*.test.sh"))
    if only:
        wanted = {o.removesuffix(".test.sh").rsplit("/", 1)[-1] for o in only}
        files = [f for f in files if f.name.removesuffix(".test.sh") in wanted]
    return [c for f in files for c in parse_file(f)]


def run_cases(cases: list[Case], spec_dir: Path, jobs: int | None = None) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="oils-spec-") as tmp:
        runner = Runner(spec_dir, Path(tmp))
        with ThreadPoolExecutor(max_workers=jobs or (os.cpu_count() or 2)) as pool:
            return list(pool.map(runner.run_case, cases))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", help="spec files or stems (default: all)")
    p.add_argument("--jobs", "-j", type=int, default=None)
    p.add_argument("--show-failures", action="store_true")
    p.add_argument("--json", metavar="OUT", help="write each case's verdict as JSON lines")
    p.add_argument("--write-agree", action="store_true",
                   help=f"write the ids of the agreeing cases to {AGREE_FILE.relative_to(REPO)} (for the test)")
    ns = p.parse_args(argv)
    spec_dir = find_spec_dir()
    if spec_dir is None:
        print("oils-spec: ../shared/oils-spec not found (set AIOSH_OILS_SPEC)", file=sys.stderr)
        return 2
    results = run_cases(load_cases(spec_dir, ns.files), spec_dir, ns.jobs)
    table = Table()
    for r in results:
        table.add(r)
        if ns.show_failures and r.verdict in ("differ", "timeout"):
            print(f"--- {r.case.id} {r.case.name}\n{r.case.code}  bash={r.bash!r}\n  aiosh={r.aiosh!r}\n  err={r.aiosh_err[-300:]!r}")
    if ns.json:
        with open(ns.json, "w") as fh:
            for r in results:
                fh.write(json.dumps({"id": r.case.id, "name": r.case.name, "verdict": r.verdict}) + "\n")
    if ns.write_agree:
        AGREE_FILE.write_text("".join(f"{r.case.id}\n" for r in results if r.verdict == "agree"))
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
