"""What a failed netlink call means: errno -> Outcome, shared by rtnetlink and L2TP genetlink.

The mapping lives in one place so that a link and a tunnel that fail the same way are reported to
users with the same reason. Family-specific meanings (e.g. a missing L2TP genl family is
NOT_SUPPORTED) are decided by the caller, which passes its own Outcome or errno.
"""

from __future__ import annotations

import errno as _errno

from pyroute2.netlink.exceptions import NetlinkDumpInterrupted

from kube_l2tp.core.state import KernelError, Outcome
from kube_l2tp.netlink.rtdump import DumpInterruptedError

_OUTCOMES: dict[int, Outcome] = {
    _errno.EEXIST: Outcome.EXISTS,
    _errno.ENODEV: Outcome.NOT_FOUND,
    _errno.ENOENT: Outcome.NOT_FOUND,
    _errno.EPERM: Outcome.PERMISSION,
    _errno.EACCES: Outcome.PERMISSION,
    _errno.EINVAL: Outcome.INVALID,
    _errno.ERANGE: Outcome.INVALID,
    _errno.EBUSY: Outcome.BUSY,
    _errno.EAGAIN: Outcome.BUSY,
    _errno.EINTR: Outcome.BUSY,  # a dump interrupted by a concurrent change (NLM_F_DUMP_INTR)
    _errno.ENOBUFS: Outcome.BUSY,  # a netlink socket's receive buffer ran over: ask again
    _errno.EADDRNOTAVAIL: Outcome.ADDRESS_NOT_AVAILABLE,
    _errno.EADDRINUSE: Outcome.ADDRESS_IN_USE,
    _errno.ENETUNREACH: Outcome.NETWORK_UNREACHABLE,
    _errno.EHOSTUNREACH: Outcome.NETWORK_UNREACHABLE,
    # rtnetlink answers "Unknown device type" with EOPNOTSUPP when a link kind's module is missing.
    _errno.EOPNOTSUPP: Outcome.NOT_SUPPORTED,
}


def outcome_for(errno: int) -> Outcome:
    """The user-facing meaning of a positive errno; unknown codes are OTHER, never a guess."""
    return _OUTCOMES.get(errno, Outcome.OTHER)


def error_number(exc: BaseException) -> int:
    """The errno carried by a pyroute2 NetlinkError (``code``) or an OSError (``errno``), else 0.

    pyroute2 raises an interrupted dump with code -1, which must not read as EPERM: it is EINTR.
    """
    if isinstance(exc, (NetlinkDumpInterrupted, DumpInterruptedError)):
        return _errno.EINTR
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        code = getattr(exc, "errno", None)
    return code if isinstance(code, int) and code > 0 else 0


def _detail(exc: BaseException) -> str:
    # NetlinkError/OSError args are (code, message); the message may be the kernel's extack text.
    args = exc.args
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1]
    return str(exc) or type(exc).__name__


def kernel_error(operation: str, exc: BaseException) -> KernelError:
    """Wrap a failed kernel call; ``operation`` names what was tried and on what (e.g. the ifname).

    Use as ``raise kernel_error("set link l2tpeth0", exc) from exc`` to keep the cause.
    """
    code = error_number(exc)
    return KernelError(operation, code, outcome_for(code), _detail(exc))
