"""L2TP multicast notifications: the "l2tp" genl group on a non-blocking socket of its own."""

from __future__ import annotations

import errno as _errno
import socket
from typing import NamedTuple

from kube_l2tp.core.state import KernelError, Outcome
from kube_l2tp.netlink.closing import Closing
from kube_l2tp.netlink.l2tp.attrs import L2TP_GENL_MCGROUP, L2tpAttr, L2tpCmd
from kube_l2tp.netlink.l2tp.codec import MODULE_HINT, iter_messages
from kube_l2tp.netlink.l2tp.port import RECV_SIZE, open_genl_socket, resolve_family
from kube_l2tp.netlink.nlmsg import NETLINK_ADD_MEMBERSHIP, SOL_NETLINK, U32


class L2tpEvent(NamedTuple):
    cmd: str  # "TUNNEL_CREATE", "SESSION_DELETE", ...; "OVERFLOW" when events were lost
    tunnel_id: int
    session_id: int | None


class L2tpEvents(Closing):
    """The "l2tp" multicast group on its own non-blocking socket, for a selector loop.

    The kernel multicasts to every network namespace (genlmsg_multicast_allns), so events of
    other namespaces arrive too: treat them as hints to re-read state, never as state. Tunnel
    deletion sends no per-session events. "OVERFLOW" means the socket buffer ran over (ENOBUFS)
    and events were lost: re-read everything.
    """

    def __init__(self) -> None:
        self._sock = open_genl_socket()
        try:
            family = resolve_family(self._sock)
            group = family.groups.get(L2TP_GENL_MCGROUP)
            if group is None:
                raise KernelError("subscribe", _errno.ENOENT, Outcome.NOT_SUPPORTED, MODULE_HINT)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    @classmethod
    def on_socket(cls, sock: socket.socket) -> L2tpEvents:
        """An instance reading a given non-blocking socket (tests replay captured events)."""
        self = cls.__new__(cls)
        self._sock = sock
        return self

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def drain(self) -> list[L2tpEvent]:
        """Everything queued now, without blocking."""
        events: list[L2tpEvent] = []
        while True:
            try:
                chunk = self._sock.recv(RECV_SIZE)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno == _errno.ENOBUFS:
                    events.append(L2tpEvent("OVERFLOW", 0, None))
                    continue
                raise
            events.extend(parse_events(chunk))


_CMDS = frozenset(L2tpCmd)


def parse_events(chunk: bytes) -> list[L2tpEvent]:
    """Multicast notifications (whole TUNNEL_*/SESSION_* messages) as events."""
    events = []
    for cmd, attrs in iter_messages([chunk]):
        tunnel = attrs.get(L2tpAttr.L2TP_ATTR_CONN_ID)
        session = attrs.get(L2tpAttr.L2TP_ATTR_SESSION_ID)
        events.append(
            L2tpEvent(
                L2tpCmd(cmd).short if cmd in _CMDS else str(cmd),
                U32.unpack(tunnel)[0] if tunnel else 0,
                U32.unpack(session)[0] if session else None,
            )
        )
    return events
