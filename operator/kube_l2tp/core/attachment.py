"""Pods on the wire: the NetworkAttachmentDefinitions that offer a session's bridges to pods.

A bridge with a ``podNetwork`` becomes a Multus secondary network (k8s.cni.cncf.io/v1) whose CNI
config is the reference ``bridge`` plugin on that very bridge: the plugin adds one veth per pod
to it, and the agent, which owns the bridge, never touches those ports. The plugin must neither
route nor masquerade (``isGateway``/``ipMasq`` false: the segment is the far site's LAN, not a
node-local subnet), and the pods' MTU is the session's, so that every frame a pod sends fits the
pseudowire. Pure: the operator writes what this returns.
"""

from __future__ import annotations

import json
from typing import Any

from kube_l2tp.api import crd
from kube_l2tp.api.model import Bridge, PodNetwork, Session, Tunnel

NAD_API_VERSION = "k8s.cni.cncf.io/v1"
NAD_KIND = "NetworkAttachmentDefinition"
CNI_VERSION = "1.0.0"  # containernetworking-plugins >= 1.0 (Debian 12 ships 1.1.1)
MANAGED_BY = "kube-l2tp"
# Where the NAD says which session, node and bridge it is the segment of (annotations: a session
# or node name may be longer than a label value's 63 characters; labels only when it fits).
SESSION_KEY = f"{crd.GROUP}/session"
NODE_KEY = f"{crd.GROUP}/node"
BRIDGE_KEY = f"{crd.GROUP}/bridge"
LABEL_VALUE_MAX = 63

Json = dict[str, Any]


def session_mtu(session: Session, tunnel: Tunnel) -> int:
    """The pods' MTU: the session interface's (declared, else what the kernel computes); a
    VLAN interface has its parent's."""
    return session.interface.mtu or session.kernel_mtu(tunnel)


def pod_bridges(session: Session) -> tuple[Bridge, ...]:
    """The session's bridges offered to pods: its own, then its VLANs' in declared order."""
    bridges = [session.interface.bridge, *(v.bridge for v in session.interface.vlans)]
    return tuple(b for b in bridges if b is not None and b.pod_network is not None)


def ipam_config(pods: PodNetwork) -> Json:
    """The IPAM section of the plugin's config ({} for none: the bridge plugin then assigns no
    address and the pod or VM configures its own)."""
    if pods.ipam == "none":
        return {}
    if pods.ipam == "static":
        return {"type": "static"}  # each pod's addresses: the `ips` of its network selection
    if pods.ipam == "host-local":
        return {
            "type": "host-local",
            # One range set per range: a pod gets one address from each (dual stack).
            "ranges": [[_drop_none(subnet=r.subnet, rangeStart=r.range_start,
                                   rangeEnd=r.range_end)] for r in pods.ranges],
        }  # fmt: skip
    ranges = [
        _drop_none(range=r.subnet, range_start=r.range_start, range_end=r.range_end)
        for r in pods.ranges
    ]
    if len(ranges) == 1:
        return {"type": "whereabouts", **ranges[0]}
    return {"type": "whereabouts", "ipRanges": ranges}


def cni_config(bridge: Bridge, mtu: int) -> Json:
    """The reference bridge plugin's config for ``bridge``, as a NAD's spec.config holds it."""
    pods = bridge.pod_network
    assert pods is not None, "a bridge offered to pods"
    config: Json = {
        "cniVersion": CNI_VERSION,
        "name": pods.name,
        "type": "bridge",
        "bridge": bridge.name,
        "isGateway": False,
        "isDefaultGateway": False,
        "ipMasq": False,
        "hairpinMode": pods.hairpin_mode,
        "mtu": mtu,
        "ipam": ipam_config(pods),
    }
    if pods.ipam == "static":
        config["capabilities"] = {"ips": True}  # Multus passes the annotation's ips through
    return config


def network_attachment_definition(
    session: Session, tunnel: Tunnel, bridge: Bridge, session_uid: str | None = None
) -> Json:
    """The NAD of one of ``session``'s bridges; owned by the session when its uid is known
    (a namespaced object may have a cluster-scoped owner: deleting the session deletes it)."""
    pods = bridge.pod_network
    assert pods is not None, "a bridge offered to pods"
    labels = {"app.kubernetes.io/managed-by": MANAGED_BY}
    for key, value in ((SESSION_KEY, session.name), (NODE_KEY, tunnel.node)):
        if len(value) <= LABEL_VALUE_MAX:
            labels[key] = value
    metadata: Json = {
        "name": pods.name,
        "namespace": pods.namespace,
        "labels": labels,
        "annotations": {SESSION_KEY: session.name, NODE_KEY: tunnel.node, BRIDGE_KEY: bridge.name},
    }
    if session_uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": crd.API_VERSION,
                "kind": crd.SESSION_KIND,
                "name": session.name,
                "uid": session_uid,
                "controller": True,
            }
        ]
    config = cni_config(bridge, session_mtu(session, tunnel))
    return {
        "apiVersion": NAD_API_VERSION,
        "kind": NAD_KIND,
        "metadata": metadata,
        "spec": {"config": json.dumps(config, separators=(",", ":"))},
    }


def network_attachment_definitions(
    session: Session, tunnel: Tunnel, session_uid: str | None = None
) -> tuple[Json, ...]:
    """Every NAD ``session`` declares (none when no bridge of it is offered to pods)."""
    return tuple(
        network_attachment_definition(session, tunnel, b, session_uid) for b in pod_bridges(session)
    )


def _drop_none(**fields: str | None) -> Json:
    return {k: v for k, v in fields.items() if v is not None}
