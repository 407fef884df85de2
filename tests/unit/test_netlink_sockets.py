"""Only netlink/ opens netlink sockets (the layer rule: netlink/ is the only code that talks to
the kernel). import-linter sees modules, not constants, so this reads the package's syntax trees:
any ``AF_NETLINK`` (as ``socket.AF_NETLINK``, imported by name, or the bare family number 16 as
the first argument of ``socket.socket``) outside kube_l2tp/netlink fails, naming file and line."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import kube_l2tp

PACKAGE = Path(kube_l2tp.__file__).parent
ALLOWED = PACKAGE / "netlink"


def netlink_uses(source: str) -> list[int]:
    """Line numbers where ``source`` names AF_NETLINK or opens a socket of family 16."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute | ast.Name):
            name = node.attr if isinstance(node, ast.Attribute) else node.id
            if name == "AF_NETLINK":
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if any(alias.name == "AF_NETLINK" for alias in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                called == "socket"
                and isinstance(first, ast.Constant)
                and first.value == socket.AF_NETLINK
            ):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_the_check_sees_every_spelling() -> None:
    source = "\n".join(
        [
            "import socket",
            "from socket import AF_NETLINK",
            "s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)",
            "t = socket.socket(16, socket.SOCK_RAW, 0)",
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
            "a, b = socket.socketpair()",
        ]
    )
    assert netlink_uses(source) == [2, 3, 4]


def test_netlink_sockets_are_opened_only_in_netlink() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if ALLOWED not in path.parents
        for line in netlink_uses(path.read_text())
    ]
    assert not found, f"AF_NETLINK outside kube_l2tp/netlink/ (move it there): {found}"


def test_netlink_does_open_them() -> None:
    """The package walk reaches the real modules (the check above is not vacuous)."""
    assert any(netlink_uses(p.read_text()) for p in ALLOWED.rglob("*.py"))
