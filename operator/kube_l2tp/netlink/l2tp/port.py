"""The L2TP genl family on one plain blocking NETLINK_GENERIC socket: TunnelConfig/SessionConfig
in, ObservedTunnel/ObservedSession out, errors as KernelError.

Why not pyroute2's own ``L2tp`` class: in 0.9.7 it cross-wires and inverts the IPv6 checksum
options, sends cookies as ASCII text, cannot dump tunnels synchronously and does not know stats
attributes 10/11. Why not its sync ``GenericNetlinkSocket`` either: it drives a private asyncio
loop with ``run_until_complete``, which fails inside any running event loop. pyroute2 is kept for
the family lookup (``ctrlmsg``).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import socket
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Final, NamedTuple

from pyroute2.netlink import CTRL_CMD_GETFAMILY, GENL_ID_CTRL, ctrlmsg

from kube_l2tp.core.state import (
    KernelError,
    ObservedSession,
    ObservedTunnel,
    Outcome,
    SessionConfig,
    SessionCounters,
    TunnelConfig,
    TunnelCounters,
)
from kube_l2tp.netlink.closing import Closing
from kube_l2tp.netlink.l2tp.attrs import L2TP_GENL_NAME, L2tpCmd
from kube_l2tp.netlink.l2tp.codec import (
    MODULE_HINT,
    Attr,
    iter_spans,
    pack_request,
    session_create_attrs,
    session_delete_attrs,
    session_modify_attrs,
    to_kernel_error,
    tunnel_create_attrs,
    tunnel_delete_attrs,
)
from kube_l2tp.netlink.l2tp.fastpath import (
    decode_session_counters,
    decode_sessions,
    decode_tunnel_counters,
    decode_tunnels,
)
from kube_l2tp.netlink.nlmsg import (
    NETLINK_EXT_ACK,
    NETLINK_GENERIC,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    SOL_NETLINK,
    U32,
    NetlinkReplyError,
)

C = L2tpCmd

RECV_SIZE: Final = 1 << 16  # a dump skb is at most 32 KiB in 6.1
_DELETE_POLL: Final = 0.01


def open_genl_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


class Family(NamedTuple):
    id: int
    groups: dict[str, int]


def resolve_family(sock: socket.socket) -> Family:
    """CTRL_CMD_GETFAMILY "l2tp" with pyroute2's ctrlmsg; the kernel autoloads l2tp_netlink."""
    msg = ctrlmsg()
    msg["cmd"] = CTRL_CMD_GETFAMILY
    msg["version"] = 1
    msg["attrs"] = [["CTRL_ATTR_FAMILY_NAME", L2TP_GENL_NAME]]
    msg["header"]["type"] = GENL_ID_CTRL
    msg["header"]["flags"] = NLM_F_REQUEST
    msg["header"]["sequence_number"] = 1
    msg.encode()
    sock.send(bytes(msg.data))
    data = sock.recv(RECV_SIZE)
    length, mtype = struct.unpack_from("=IH", data)
    if mtype == NLMSG_ERROR:
        code = -struct.unpack_from("=i", data, 16)[0]
        if code in (_errno.ENOENT, _errno.EOPNOTSUPP):
            raise KernelError("open", code, Outcome.NOT_SUPPORTED, MODULE_HINT)
        raise to_kernel_error("open", code, {})
    reply = ctrlmsg(data[:length])
    reply.decode()
    groups = {
        g.get_attr("CTRL_ATTR_MCAST_GRP_NAME"): g.get_attr("CTRL_ATTR_MCAST_GRP_ID")
        for g in reply.get_attr("CTRL_ATTR_MCAST_GROUPS", [])
    }
    return Family(reply.get_attr("CTRL_ATTR_FAMILY_ID"), groups)


@contextlib.contextmanager
def _as_kernel_errors(operation: str, subject: Mapping[str, object]) -> Iterator[None]:
    """Everything a call on the L2TP socket can raise, as a KernelError naming ``operation``:
    the kernel's error answer, the socket's own errors (ENOBUFS: a full receive buffer;
    EMSGSIZE: an answer larger than the buffer), a request the codec refuses (ValueError:
    an interface name over 15 bytes) or a malformed answer. The agent then fails one object."""
    try:
        yield
    except NetlinkReplyError as exc:
        raise to_kernel_error(operation, exc.errno, subject, exc.message) from None
    except OSError as exc:
        code = exc.errno or _errno.EIO
        raise to_kernel_error(operation, code, subject, exc.strerror or str(exc)) from exc
    except ValueError as exc:
        raise KernelError(operation, _errno.EINVAL, Outcome.INVALID, str(exc)) from exc


class L2tp(Closing):
    """The L2TP genl family on one blocking socket of the caller's network namespace.

    Not thread-safe; use one instance per thread. Every command waits for the kernel's ack, so
    errors surface as :class:`KernelError` from the call that caused them.
    """

    def __init__(self) -> None:
        sock = open_genl_socket()
        try:
            family = resolve_family(sock)
        except BaseException:
            sock.close()
            raise
        self._attach(sock, family)

    @classmethod
    def on_socket(cls, sock: socket.socket, family: int) -> L2tp:
        """An instance on a given socket and family id (tests replay kernel answers this way)."""
        self = cls.__new__(cls)
        self._attach(sock, Family(family, {}))
        return self

    def _attach(self, sock: socket.socket, family: Family) -> None:
        self._sock = sock
        self._family = family
        self._seq = 1
        self._buf = bytearray(RECV_SIZE)

    @property
    def family_id(self) -> int:
        return self._family.id

    @property
    def mcast_groups(self) -> dict[str, int]:
        return dict(self._family.groups)

    def close(self) -> None:
        self._sock.close()

    # -- transport --

    def _send(self, cmd: int, attrs: Sequence[Attr], flags: int) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1
        self._sock.send(pack_request(self._family.id, cmd, attrs, seq=self._seq, flags=flags))
        return self._seq

    def _replies(self, seq: int) -> Iterator[bytes]:
        """Chunks answering ``seq`` up to its NLMSG_DONE or NLMSG_ERROR (the ack); skips stale
        chunks that an interrupted earlier request may have left behind."""
        view = memoryview(self._buf)
        while True:
            size = self._sock.recv_into(self._buf, RECV_SIZE, socket.MSG_TRUNC)
            if size > RECV_SIZE:
                raise OSError(_errno.EMSGSIZE, "netlink reply larger than the receive buffer")
            chunk = bytes(view[:size])
            if size < 16 or U32.unpack_from(chunk, 8)[0] != seq:
                continue
            yield chunk
            offset = 0
            while offset + 16 <= size:
                length, mtype = struct.unpack_from("=IH", chunk, offset)
                if mtype in (NLMSG_DONE, NLMSG_ERROR):
                    return
                offset += max((length + 3) & ~3, 16)

    def _request(
        self, operation: str, cmd: int, attrs: list[Attr], subject: Mapping[str, object]
    ) -> list[bytes]:
        """Send one request and wait for its ack; returns the reply chunks (a GET's answer)."""
        with _as_kernel_errors(operation, subject):
            seq = self._send(cmd, attrs, NLM_F_REQUEST | NLM_F_ACK)
            chunks = list(self._replies(seq))
            for _ in iter_spans(chunks):
                pass
            return chunks

    def dump_raw(self, cmd: int) -> list[bytes]:
        """The raw reply chunks of one NLM_F_DUMP of ``cmd`` (for decoding, tests, captures)."""
        seq = self._send(cmd, [], NLM_F_REQUEST | NLM_F_DUMP)
        return list(self._replies(seq))

    # -- the port --

    def dump_tunnels(self) -> list[ObservedTunnel]:
        with _as_kernel_errors("dump_tunnels", {}):
            return decode_tunnels(self.dump_raw(C.L2TP_CMD_TUNNEL_GET))

    def dump_sessions(self) -> list[ObservedSession]:
        """All sessions of the namespace in one dump: names, cookies, seq flags, counters."""
        with _as_kernel_errors("dump_sessions", {}):
            return decode_sessions(self.dump_raw(C.L2TP_CMD_SESSION_GET))

    def dump_counters(self) -> tuple[list[TunnelCounters], list[SessionCounters]]:
        """Ids, interface names and counters of every tunnel and session: one dump of each.

        What a scrape reads: nothing else is decoded and no object is made per session.
        """
        with _as_kernel_errors("dump_counters", {}):
            tunnels = decode_tunnel_counters(self.dump_raw(C.L2TP_CMD_TUNNEL_GET))
            return tunnels, decode_session_counters(self.dump_raw(C.L2TP_CMD_SESSION_GET))

    def get_tunnel(self, tunnel_id: int) -> ObservedTunnel | None:
        """The tunnel by id (L2TP_CMD_TUNNEL_GET, not a dump); None if the kernel has none."""
        subject = {"tunnel_id": tunnel_id}
        try:
            chunks = self._request(
                "get_tunnel", C.L2TP_CMD_TUNNEL_GET, tunnel_delete_attrs(tunnel_id), subject
            )
        except KernelError as exc:
            if exc.outcome is Outcome.NOT_FOUND:
                return None
            raise
        with _as_kernel_errors("get_tunnel", subject):
            found = [t for t in decode_tunnels(chunks) if t.config.tunnel_id == tunnel_id]
        return found[0] if found else None

    def get_session(self, tunnel_id: int, session_id: int) -> ObservedSession | None:
        """The session by (tunnel, session) id; None if the kernel has none.

        Since 6.10 the kernel looks an L2TPv3 session up by its id alone when the id is unique
        in the namespace (l2tp_v3_session_get): asked for (T, S) after T's session S went, it
        answers with another tunnel's session S. Only an answer from tunnel T counts.
        """
        subject = {"tunnel_id": tunnel_id, "session_id": session_id}
        try:
            chunks = self._request(
                "get_session",
                C.L2TP_CMD_SESSION_GET,
                session_delete_attrs(tunnel_id, session_id),
                subject,
            )
        except KernelError as exc:
            if exc.outcome is Outcome.NOT_FOUND:
                return None
            raise
        with _as_kernel_errors("get_session", subject):
            found = [
                s
                for s in decode_sessions(chunks)
                if (s.config.tunnel_id, s.config.session_id) == (tunnel_id, session_id)
            ]
        return found[0] if found else None

    def _session_is_there(self, operation: str, tunnel_id: int, session_id: int) -> None:
        """Refuse ``operation`` on (T, S) unless tunnel T has session S: on 6.10 and later the
        kernel would act on another tunnel's session S if T's went in between (get_session)."""
        if self.get_session(tunnel_id, session_id) is None:
            raise KernelError(
                operation,
                _errno.ENODEV,
                Outcome.NOT_FOUND,
                f"session {session_id} in tunnel {tunnel_id} does not exist",
            )

    def create_tunnel(self, cfg: TunnelConfig) -> None:
        subject = {
            "tunnel_id": cfg.tunnel_id,
            "local": cfg.local,
            "remote": cfg.remote,
            "udp_sport": cfg.udp_sport if cfg.encap == "udp" else None,
        }
        with _as_kernel_errors("create_tunnel", subject):
            attrs = tunnel_create_attrs(cfg)
        self._request("create_tunnel", C.L2TP_CMD_TUNNEL_CREATE, attrs, subject)

    def delete_tunnel(self, tunnel_id: int, *, wait: float = 0.0) -> None:
        """Deletes the tunnel and, with it, its sessions and their interfaces.

        The kernel acks first and does the work afterwards: until it is done, dumps still list
        the tunnel and its sessions, and creating the same tunnel id or interface name fails
        with EEXIST. ``wait`` > 0 polls up to that many seconds until the id is free, and
        raises KernelError(BUSY) if it is not.
        """
        self._request(
            "delete_tunnel",
            C.L2TP_CMD_TUNNEL_DELETE,
            tunnel_delete_attrs(tunnel_id),
            {"tunnel_id": tunnel_id},
        )
        if wait <= 0:
            return
        deadline = time.monotonic() + wait
        while self.tunnel_exists(tunnel_id):
            if time.monotonic() >= deadline:
                raise KernelError(
                    "delete_tunnel",
                    _errno.EBUSY,
                    Outcome.BUSY,
                    f"tunnel {tunnel_id} is still being deleted by the kernel after {wait:g} s",
                )
            time.sleep(_DELETE_POLL)

    def tunnel_exists(self, tunnel_id: int) -> bool:
        """Whether the kernel still knows ``tunnel_id`` (L2TP_CMD_TUNNEL_GET, not a dump)."""
        return self.get_tunnel(tunnel_id) is not None

    def create_session(self, cfg: SessionConfig) -> None:
        subject = {"tunnel_id": cfg.tunnel_id, "session_id": cfg.session_id, "ifname": cfg.ifname}
        with _as_kernel_errors("create_session", subject):
            attrs = session_create_attrs(cfg)
        self._request("create_session", C.L2TP_CMD_SESSION_CREATE, attrs, subject)

    def delete_session(self, tunnel_id: int, session_id: int) -> None:
        self._session_is_there("delete_session", tunnel_id, session_id)
        self._request(
            "delete_session",
            C.L2TP_CMD_SESSION_DELETE,
            session_delete_attrs(tunnel_id, session_id),
            {"tunnel_id": tunnel_id, "session_id": session_id},
        )

    def modify_session(
        self, tunnel_id: int, session_id: int, *, send_seq: bool, recv_seq: bool
    ) -> None:
        self._session_is_there("modify_session", tunnel_id, session_id)
        self._request(
            "modify_session",
            C.L2TP_CMD_SESSION_MODIFY,
            session_modify_attrs(tunnel_id, session_id, send_seq=send_seq, recv_seq=recv_seq),
            {"tunnel_id": tunnel_id, "session_id": session_id},
        )
