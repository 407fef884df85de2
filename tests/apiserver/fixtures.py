"""pytest fixtures for tests that need a Kubernetes API server.

`apiserver` is the emulator with the project's CRDs (crds/*.yaml) already applied, as in a
cluster where the chart is installed; `empty_apiserver` has the built-in kinds only. Both yield
a running `ApiServer` (`.url`, `.kubeconfig`, `.stop()`/`.start()`/`.outage()`, `.watches()`),
point KUBECONFIG at it for subprocesses (kubectl, the CLI), and fail the test if the emulator
itself crashed on a request (a 500 the client may have retried over silently).

From another test directory, in its conftest.py:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
    from apiserver.fixtures import apiserver, empty_apiserver  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import ApiServer

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = sorted((REPO / "crds").glob("*.yaml"))


def _serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crds: list[Path]
) -> Iterator[ApiServer]:
    with ApiServer(crds=crds, kubeconfig=tmp_path / "kubeconfig") as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig))
        yield server
        errors = server.errors()
        assert not errors, f"the emulator failed while serving: {errors!r}"


@pytest.fixture
def apiserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The emulator with kube-l2tp's CRDs installed."""
    yield from _serve(tmp_path, monkeypatch, CRD_FILES)


@pytest.fixture
def empty_apiserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The emulator with the built-in kinds only (for tests that install CRDs themselves)."""
    yield from _serve(tmp_path, monkeypatch, [])
