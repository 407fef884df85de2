"""The hostile-input corpus (corpus/hostile/cases.py) through the CLI: no traceback, no
signal, no hang, bounded memory, and each case's verdict and message.

The cases run in one child process (python tests/unit/hostile_run.py) under RLIMIT_AS and
RLIMIT_CPU, so that a crash by signal (as libyaml's composer once segfaulted on deep nesting)
or a runaway allocation fails this test and names the case, instead of killing pytest.
"""

from __future__ import annotations

import json
import resource
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from corpus.hostile.cases import CASES, Case, write

HERE = Path(__file__).parent
MEMORY_LIMIT = 1024 * 1024 * 1024  # address space of the child: 1 GiB
CPU_SECONDS = 300  # the whole run; a hang is caught by the timeout below first
CASE_SECONDS = 5.0  # far above any case (the slowest is well under a second natively): a hang


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    paths = write(tmp_path_factory.mktemp("hostile"))
    lines = [json.dumps([case.name, str(paths[case.name]), case.valid]) for case in CASES]
    child = subprocess.run(
        [sys.executable, str(HERE / "hostile_run.py")],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=CASE_SECONDS * len(CASES),
        preexec_fn=_limits,
        check=False,
    )
    started = [
        line.split(" ", 1)[1] for line in child.stderr.splitlines() if line.startswith("START ")
    ]
    assert child.returncode == 0, (
        f"the runner ended with {child.returncode} in case {started[-1] if started else '?'}:"
        f" {child.stderr[-2000:]}"
    )
    records = [json.loads(line) for line in child.stdout.splitlines()]
    by_name = {r["name"]: r for r in records}
    assert list(by_name) == [c.name for c in CASES]
    slowest = max(records, key=lambda r: r["seconds"])
    peak = max(r["rss_after_mb"] for r in records)
    print(
        f"\nhostile corpus: {len(records)} cases; slowest {slowest['name']}"
        f" {slowest['seconds']:.3f} s; peak RSS {peak:.0f} MB"
    )
    return by_name


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case(case: Case, outcomes: dict[str, dict[str, Any]]) -> None:
    record = outcomes[case.name]
    assert record["seconds"] < CASE_SECONDS, f"{case.name}: {record['seconds']:.1f} s"
    code, out, err = record["results"]["validate"]
    text = out + err
    assert "Traceback" not in text, text[-3000:]
    for line in text.splitlines():
        assert len(line) <= 2100, f"{case.name}: a line of {len(line)} characters"
        assert line.isprintable(), f"{case.name}: a control character reaches the terminal"
    if case.valid:
        assert code == 0, text
        assert "valid: " in err
        for command in ("render", "render-peer"):
            rcode, rout, rerr = record["results"][command]
            assert rcode == 0 and "Traceback" not in rerr, rerr
            for line in rout.splitlines():
                assert line.startswith(("ip ", "# ")), line  # nothing outside a command or comment
                if line.startswith("ip "):
                    shlex.split(line)  # one well-formed shell command
        return
    assert code == 1, text
    assert case.message in text, text[-3000:]
    path_name = f"{case.name}{case.suffix}"
    assert any(path_name in line for line in text.splitlines() if case.message in line), (
        "the message names the file",
        text[-2000:],
    )
    assert len(text) < 20_000, f"{case.name}: {len(text)} characters of output"


def test_levels_are_known() -> None:
    assert {c.level for c in CASES} <= {"read", "schema", "set", "valid"}
