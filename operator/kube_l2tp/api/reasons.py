"""The reasons an object's conditions and Events carry: one enum for every layer.

A ``StrEnum``: a member is its value wherever a string is expected (status JSON, Event bodies,
metric labels, log lines), so typing the reasons changed no byte a user or a dashboard sees.
It lives in ``api/``, the lowest layer, because validation (``Problem.reason``) sets reasons
too and the condition reasons are part of the resources' status contract.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # Ready
    PROGRAMMED = "Programmed"  # in the kernel as declared
    PROGRESSING = "Progressing"  # not converged yet: a round, a delete in progress, a retry
    CONFLICT = "Conflict"  # another object (in the API or in the kernel) holds what it declares
    INVALID_SPEC = "InvalidSpec"  # the object itself is wrong; the last valid version may run
    KERNEL_ERROR = "KernelError"  # a kernel write failed (its answer in the message)
    KERNEL_UNSUPPORTED = "KernelUnsupported"  # no L2TP in this kernel (modules not loaded)
    TUNNEL_NOT_READY = "TunnelNotReady"  # a session whose tunnel failed
    TUNNEL_NOT_FOUND = "TunnelNotFound"  # a session whose tunnelRef names no tunnel of the node
    HOST_PORT_MISSING = "HostPortMissing"  # a bridge port of the host does not exist
    SECRET_NOT_FOUND = "SecretNotFound"  # an encrypted tunnel's key cannot be read
    INVALID_KEY = "InvalidKey"  # an encrypted tunnel's key is not usable
    UNKNOWN_ALGORITHM = "UnknownAlgorithm"  # an encryption algorithm the agent does not know
    # PeerActive
    PEER_ACTIVE = "PeerActive"
    PEER_SILENT = "PeerSilent"
    AWAITING_TRAFFIC = "AwaitingTraffic"
    NOT_PROGRAMMED = "NotProgrammed"
    # Events of the operator
    NODE_GONE = "NodeGone"  # finalizers of a node that no longer exists were removed
