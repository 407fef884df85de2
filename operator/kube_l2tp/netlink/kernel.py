"""The kernel port (core.ports.KernelPort) over the L2TP genl family and rtnetlink.

The L2TP socket opens lazily: on a host without L2TP every L2TP call raises a KernelError with
Outcome.NOT_SUPPORTED (and a hint to load the modules), while links still work, so the agent
keeps running, reports the problem per object and recovers once the modules are loaded.
"""

from __future__ import annotations

import os

from kube_l2tp.core.state import (
    Address,
    KernelError,
    ObservedLink,
    ObservedSession,
    ObservedTunnel,
    SessionConfig,
    TunnelConfig,
)
from kube_l2tp.netlink.closing import Closing
from kube_l2tp.netlink.l2tp import L2tp
from kube_l2tp.netlink.links import Links


class Kernel(Closing):
    """The L2TP objects and links of the network namespace it was created in.

    Not thread-safe (one user at a time), but it may be handed to another thread: its sockets
    stay in their namespace. The L2TP socket, opened on first use, is refused in a thread that
    is in another namespace than the one Kernel was created in, where it would open.
    """

    def __init__(self) -> None:
        self.links = Links()
        self._l2tp: L2tp | None = None
        self._netns = _current_netns()

    @property
    def l2tp(self) -> L2tp:
        if self._l2tp is None:
            if _current_netns() != self._netns:
                raise RuntimeError(
                    "Kernel first used for L2TP in a thread of another network namespace than"
                    " the one it was created in: use it there first (supported()), or create it"
                    " in the thread's namespace"
                )
            self._l2tp = L2tp()  # raises KernelError(NOT_SUPPORTED) without L2TP
        return self._l2tp

    def supported(self) -> bool:
        """Whether the L2TP netlink family is available (loads it on first use)."""
        try:
            _ = self.l2tp
        except KernelError:
            return False
        return True

    def close(self) -> None:
        self.links.close()
        if self._l2tp is not None:
            self._l2tp.close()

    def dump_tunnels(self) -> list[ObservedTunnel]:
        return self.l2tp.dump_tunnels()

    def dump_sessions(self) -> list[ObservedSession]:
        return self.l2tp.dump_sessions()

    def dump_links(self) -> list[ObservedLink]:
        return self.links.dump()

    def get_tunnel(self, tunnel_id: int) -> ObservedTunnel | None:
        return self.l2tp.get_tunnel(tunnel_id)

    def get_session(self, tunnel_id: int, session_id: int) -> ObservedSession | None:
        return self.l2tp.get_session(tunnel_id, session_id)

    def create_tunnel(self, cfg: TunnelConfig) -> None:
        self.l2tp.create_tunnel(cfg)

    def delete_tunnel(self, tunnel_id: int) -> None:
        self.l2tp.delete_tunnel(tunnel_id)

    def create_session(self, cfg: SessionConfig) -> None:
        self.l2tp.create_session(cfg)

    def delete_session(self, tunnel_id: int, session_id: int) -> None:
        self.l2tp.delete_session(tunnel_id, session_id)

    def modify_session(
        self, tunnel_id: int, session_id: int, *, send_seq: bool, recv_seq: bool
    ) -> None:
        self.l2tp.modify_session(tunnel_id, session_id, send_seq=send_seq, recv_seq=recv_seq)

    def set_link(self, ifname: str, *, up: bool | None = None, mtu: int | None = None) -> None:
        self.links.set_link(ifname, up=up, mtu=mtu)

    def set_addr_gen_mode(self, ifname: str, mode: str) -> None:
        self.links.set_addr_gen_mode(ifname, mode)

    def set_qdisc(self, ifname: str, kind: str) -> None:
        self.links.set_qdisc(ifname, kind)

    def set_master(self, ifname: str, master: str | None) -> None:
        self.links.set_master(ifname, master)

    def add_address(self, ifname: str, addr: Address) -> None:
        self.links.add_address(ifname, addr)

    def del_address(self, ifname: str, addr: Address) -> None:
        self.links.del_address(ifname, addr)

    def create_bridge(self, name: str) -> None:
        self.links.create_bridge(name)

    def create_vlan(self, name: str, parent: str, vlan_id: int) -> None:
        self.links.create_vlan(name, parent, vlan_id)

    def delete_link(self, name: str) -> None:
        self.links.delete_link(name)


def _current_netns() -> int:
    """The calling thread's network namespace (setns(2) moves single threads)."""
    return os.stat("/proc/thread-self/ns/net").st_ino
