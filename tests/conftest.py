"""Shared by every suite: a skipped, xfailed or xpassed test fails the run.

A skip is not a pass: a kernel test that skips because the VM lacks a module, or an API test that
skips because no server started, would leave CI green while proving nothing. So the run's exit
status turns to failure whenever any test did not simply pass or fail.
"""

import pytest

NOT_A_PASS = ("skipped", "xfailed", "xpassed")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    counts = {kind: len(reporter.stats.get(kind, [])) for kind in NOT_A_PASS}
    if any(counts.values()) and exitstatus == pytest.ExitCode.OK:
        reporter.ensure_newline()
        said = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        reporter.write_line(f"FAILED: {said}: a test that does not run is not a pass", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
