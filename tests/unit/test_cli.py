"""The validate and render commands as a user runs them: exit codes and one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube_l2tp.cli import main

REPO = Path(__file__).parent.parent.parent

BAD = """\
apiVersion: kubel2tp.io/v1alpha1
kind: L2TPTunnel
metadata: {name: t1}
spec: {nodeName: node-a, tunnelID: 1, peerTunnelID: 2, local: 192.0.2.1, remote: "2001:db8::1",
       udp: {sourcePort: 70000, destinationPort: 6000}}
---
apiVersion: kubel2tp.io/v1alpha1
kind: L2TPSession
metadata: {name: s1}
spec: {tunnelRef: missing, sessionID: 1, peerSessionID: 2, cookie: xyz}
"""


def test_validate_valid_examples_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    files = ["examples/seed/site-a.yaml", "examples/seed/site-b.yaml", "examples/more"]
    assert main(["validate", *(x for f in files for x in ("-f", str(REPO / f)))]) == 0
    err = capsys.readouterr().err
    assert "valid: 3 tunnel(s), 3 session(s)" in err
    assert "warning: is 1488, above the 1446" in err  # the seed's MTU


def test_validate_invalid_exit_1_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    assert main(["validate", "-f", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert (
        f"{path}#1: L2TPTunnel/t1: spec.udp.sourcePort: must be between 1 and 65535; got 70000"
        in lines
    )
    assert any(line.startswith(f"{path}#2: L2TPSession/s1: spec.cookie: ") for line in lines)
    assert len(lines) == 2  # the session is not checked across objects until it is valid


def test_validate_unreadable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(tmp_path / "nope.yaml")]) == 1
    assert "no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    assert main(["validate", "-f", str(broken)]) == 1
    assert f"{broken}: not valid YAML: " in capsys.readouterr().out


def test_render_node_filter_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = [
        "-f",
        str(REPO / "examples/seed/site-a.yaml"),
        "-f",
        str(REPO / "examples/seed/site-b.yaml"),
    ]
    assert main(["render", *seed, "--node", "site-b"]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("ip l2tp add tunnel tunnel_id 4000")
        and "3000 peer_tunnel_id 4000" not in out
    )
    assert main(["render", *seed, "--node", "nowhere"]) == 1
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    assert main(["render", "-f", str(path)]) == 1
    assert "not rendering" in capsys.readouterr().err
