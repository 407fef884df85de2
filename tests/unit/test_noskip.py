"""The suites' shared conftest turns a skip or an xfail into a failed run (a skip is not a pass)."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

QUIET = ("-p", "no:cacheprovider", "-p", "no:asyncio")
GUARD = (Path(__file__).parents[1] / "conftest.py").read_text()

NOT_RUN = """
import pytest

def test_passes(): pass

@pytest.mark.skip(reason="no VM")
def test_marked_skip(): pass

def test_skips_itself(): pytest.skip("no module")

@pytest.mark.xfail
def test_xfails(): assert False

@pytest.mark.xfail
def test_xpasses(): pass
"""


def test_a_test_that_does_not_run_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(GUARD)
    pytester.makepyfile(NOT_RUN)
    result = pytester.runpytest_inprocess(*QUIET)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["FAILED: 2 skipped, 1 xfailed, 1 xpassed: a test that does not run is not a pass"]
    )


def test_passing_and_failing_runs_keep_their_status(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(GUARD)
    pytester.makepyfile("def test_a(): pass\n")
    assert pytester.runpytest_inprocess(*QUIET).ret == pytest.ExitCode.OK
    pytester.makepyfile("def test_a(): assert False\n")
    assert pytester.runpytest_inprocess(*QUIET).ret == pytest.ExitCode.TESTS_FAILED
