"""The standalone agent with hostile files beside good ones: the good ones are programmed,
`--once` says a file could not be read (exit 1), and a running agent keeps answering /healthz
and converging while an alias bomb and a file over the bound of values sit in its directory."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import pytest
from corpus.hostile.cases import BOMB
from fakekernel import FakeKernel

from kube_l2tp import embedded
from kube_l2tp.agent.loop import AgentConfig, no_events
from kube_l2tp.agent.standalone import standalone_agent
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.api import manifests
from kube_l2tp.cli import main

WIDE = b"[" + b"0," * manifests.MAX_VALUES + b"0]\n"  # over the reader's bound of values per file


class ClosingKernel(FakeKernel):
    made: list[ClosingKernel] = []  # noqa: RUF012  (the instances cmd_agent made)

    def __post_init__(self) -> None:
        super().__post_init__()
        ClosingKernel.made.append(self)

    def close(self) -> None:
        pass

    def __enter__(self) -> ClosingKernel:
        return self

    def __exit__(self, *_: object) -> None:
        pass


def hostile_directory(path: Path) -> Path:
    path.mkdir()
    (path / "site-a.yaml").write_bytes((embedded.DIRECTORY / "site-a.yaml").read_bytes())
    (path / "bomb.yaml").write_text(BOMB)
    (path / "broken.yaml").write_text("kind: [unclosed\n")
    (path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    return path


def test_once_programs_the_good_files_and_fails_on_the_unreadable_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import kube_l2tp.netlink.kernel

    monkeypatch.setattr(kube_l2tp.netlink.kernel, "Kernel", ClosingKernel)
    directory = hostile_directory(tmp_path / "manifests")
    argv = ["agent", "--node", "site-a", "--manifests", str(directory), "--once"]
    code = main([*argv, "--state-dir", str(tmp_path / "state")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "L2TPTunnel/site-a: Ready" in out and "L2TPSession/site-a-1: Ready" in out
    not_read = [line for line in out.splitlines() if line.startswith("not read: ")]
    assert [line.split(": ")[1].rsplit("/", 1)[1] for line in not_read] == [
        "binary.yaml",
        "bomb.yaml",
        "broken.yaml",
    ], not_read
    assert "aliases expand to more than 100000 values" in out
    [kernel] = ClosingKernel.made[-1:]
    assert set(kernel.tunnels) == {3000}  # the good file is programmed


def test_status_with_a_missing_directory_or_a_bad_file_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import kube_l2tp.netlink.kernel

    monkeypatch.setattr(kube_l2tp.netlink.kernel, "Kernel", ClosingKernel)
    state = ["--state-dir", str(tmp_path / "state")]
    assert main(["status", "--manifests", str(tmp_path / "nowhere"), *state]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"kube-l2tp status: --manifests {tmp_path / 'nowhere'}: no such file or directory\n"
    )
    directory = hostile_directory(tmp_path / "manifests")
    assert main(["status", "--manifests", str(directory), *state]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("kube-l2tp status: ")]
    assert len(lines) == 3 and "Traceback" not in err, err
    assert any("bomb.yaml: " in line and "alias bomb" in line for line in lines), lines


def replace(path: Path, content: bytes) -> None:
    """Written whole, then renamed over: the agent never reads it half-written (an empty file
    declares nothing and is valid)."""
    part = path.with_suffix(".part")
    part.write_bytes(content)
    part.rename(path)


def get(port: int, path: str) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        answer.read()
        status = answer.status
    finally:
        conn.close()
    return status, time.monotonic() - started


def test_running_agent_answers_health_and_converges_beside_a_bomb(tmp_path: Path) -> None:
    from kube_l2tp.agent.serve import serve_metrics

    directory = hostile_directory(tmp_path / "manifests")
    (directory / "wide.yaml").write_bytes(WIDE)
    kernel = ClosingKernel()
    store = StateStore(tmp_path / "state")
    config = AgentConfig("site-a", directory, tmp_path / "state", 30.0)
    agent = standalone_agent(config, kernel, store, no_events)
    server = serve_metrics(agent, "127.0.0.1:0")
    port = server.server_address[1]
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    latencies = []
    try:
        deadline = time.monotonic() + 60
        rewrites = 0
        expected = ["binary.yaml", "bomb.yaml", "broken.yaml", "wide.yaml"]
        done = False
        while time.monotonic() < deadline and not done:
            status, seconds = get(port, "/healthz")
            assert status == 200
            latencies.append(seconds)
            snapshot = agent.snapshot
            unread = sorted(Path(p.source).name for p in snapshot.unreadable) if snapshot else []
            done = 3000 in kernel.tunnels and rewrites >= 3 and unread == expected
            if rewrites < 3:  # each rewrite makes the agent read the hostile files again
                replace(directory / "bomb.yaml", BOMB.encode() + f"# {rewrites}\n".encode())
                replace(directory / "wide.yaml", WIDE + f"# {rewrites}\n".encode())
                rewrites += 1
            time.sleep(0.2)
        assert 3000 in kernel.tunnels, "the good file was not programmed"
        assert done, f"not all hostile files reported: {unread}"
    finally:
        agent.stop.set()
        agent.wake()
        runner.join(10)
        server.shutdown()
        server.server_close()
        store.close()
    assert not runner.is_alive(), "the agent's loop did not stop"
    print(f"\n/healthz: {len(latencies)} answers, slowest {max(latencies):.3f} s")
    assert max(latencies) < 2.0
