"""The Oils project's shell spec cases, bash against aiosh (see tests/oils_spec.py for the method).

`tests/oils_spec_agree.txt` lists the cases that agreed when it was last written (by `python -m tests.oils_spec
--write-agree`); none of them may start to differ. By default a fixed sample of them runs (every 6th, about two
minutes on 2 cores); `AIOSH_OILS_SPEC_RUN=full` runs every case, prints the per-file table, and checks all listed ones.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests import oils_spec

SPEC = oils_spec.find_spec_dir()
AGREE_FILE = oils_spec.AGREE_FILE
FULL = os.environ.get("AIOSH_OILS_SPEC_RUN") == "full"
SAMPLE_EVERY = 6

pytestmark = [
    pytest.mark.skipif(SPEC is None, reason="../shared/oils-spec (the Oils spec cases) is not there"),
    pytest.mark.skipif(shutil.which("bash") is None, reason="bash is the oracle and is not installed"),
]


def _expected() -> list[str]:
    return [line.strip() for line in AGREE_FILE.read_text().splitlines() if line.strip()]


def test_parse_finds_the_cases() -> None:
    assert SPEC is not None
    cases = oils_spec.load_cases(SPEC)
    assert len(cases) > 1400
    first = oils_spec.parse_file(SPEC / "smoke.test.sh")[0]
    assert first.code.strip() and "##" not in first.code
    ids = {c.id for c in cases}
    assert set(oils_spec.TIMING_DEPENDENT) <= ids  # (a renamed or renumbered case must not stay excused)


@pytest.mark.timeout(1800)
def test_agreeing_cases_still_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert SPEC is not None
    expected = _expected()
    cases = {c.id: c for c in oils_spec.load_cases(SPEC)}
    chosen = list(cases.values()) if FULL else [cases[i] for i in expected[::SAMPLE_EVERY] if i in cases]
    results = oils_spec.run_cases(chosen, SPEC)
    table = oils_spec.Table()
    for r in results:
        table.add(r)
    with capsys.disabled():
        print("\n" + table.render())
    wanted = set(expected)
    regressed = [r for r in results if r.case.id in wanted and r.verdict in ("differ", "timeout")]
    if regressed:  # once more, one at a time: a loaded machine slows both shells (see oils_spec.TIMING_DEPENDENT)
        again = oils_spec.run_cases([r.case for r in regressed], SPEC, jobs=1)
        regressed = [r for r in again if r.verdict in ("differ", "timeout")]
    racing = [r for r in regressed if r.case.id in oils_spec.TIMING_DEPENDENT]
    if racing:
        with capsys.disabled():
            for r in racing:
                print(f"timing-dependent, not counted: {r.case.id} ({oils_spec.TIMING_DEPENDENT[r.case.id]}): "
                      f"bash={r.bash!r} aiosh={r.aiosh!r}")
    regressed = [r for r in regressed if r.case.id not in oils_spec.TIMING_DEPENDENT]
    detail = "\n".join(f"{r.case.id} {r.case.name}: bash={r.bash!r} aiosh={r.aiosh!r}" for r in regressed[:20])
    assert not regressed, f"{len(regressed)} cases that agreed now differ:\n{detail}"
