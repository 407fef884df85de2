"""The L2TP generic-netlink port: TunnelConfig/SessionConfig in, ObservedTunnel/ObservedSession out.

- :mod:`.attrs`: include/uapi/linux/l2tp.h, the one table of commands and attributes;
- :mod:`.codec`: requests from configs, reply walking, errno to KernelError (pure);
- :mod:`.fastpath`: dump decoders, 6.1's fixed layouts read with one unpack each (pure);
- :mod:`.port`: :class:`L2tp`, the family on one blocking socket;
- :mod:`.events`: :class:`L2tpEvents`, the multicast group on a non-blocking socket.

The pure modules are unit-tested on bytes captured from the kernel and from ``ip l2tp``, and held
against pyroute2's parser (tests/support/oracles_l2tp.py).
"""

from kube_l2tp.netlink.l2tp.events import L2tpEvent, L2tpEvents
from kube_l2tp.netlink.l2tp.port import L2tp

__all__ = ["L2tp", "L2tpEvent", "L2tpEvents"]
