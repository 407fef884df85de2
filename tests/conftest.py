"""Shared by every suite: a skipped, xfailed or xpassed test fails the run; and one real
kube-apiserver per test session for the suites that need one.

A skip is not a pass: a kernel test that skips because the VM lacks a module, or an API test that
skips because no server started, would leave CI green while proving nothing. So the run's exit
status turns to failure whenever any test did not simply pass or fail.

The real API server's fixtures (real_api, api, kubectl) are defined here, once, so that
tests/realapi, tests/cluster and tests/controller share one control plane (a session-scoped
fixture defined in two conftest files would start two). They import their code lazily: the unit
and kernel suites never pay for it.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def kubectl_bin() -> Path:
    from realapi.fixtures import fetch_kubectl

    return fetch_kubectl()


@pytest.fixture(scope="session")
def real_api(tmp_path_factory: pytest.TempPathFactory, kubectl_bin: Path) -> Iterator[Any]:
    """etcd + kube-apiserver (tests/realapi/server.py), the CRDs applied server-side."""
    from realapi.fixtures import serve

    yield from serve(tmp_path_factory.mktemp("realapi"), kubectl_bin)


@pytest.fixture
def api(real_api: Any) -> Iterator[Any]:
    """The session's server, emptied of L2TP objects and stale webhooks around each test."""
    from realapi.fixtures import clean

    yield from clean(real_api)


@pytest.fixture
def kubectl(kubectl_bin: Path, real_api: Any, tmp_path: Path) -> Any:
    """kubectl as admin against the real server."""
    from realapi.fixtures import Kubectl

    return Kubectl(kubectl_bin, real_api.kubeconfig, tmp_path / "home")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    import sys

    fixtures = sys.modules.get("realapi.fixtures")
    if fixtures is not None:
        fixtures.summary(terminalreporter)
