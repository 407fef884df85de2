"""errno -> Outcome mapping shared by the rtnetlink and L2TP genetlink layers (no root needed)."""

from __future__ import annotations

import errno

import pytest
from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError

from kube_l2tp.core.state import KernelError, Outcome
from kube_l2tp.netlink.errors import error_number, kernel_error, outcome_for


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (errno.EEXIST, Outcome.EXISTS),
        (errno.ENODEV, Outcome.NOT_FOUND),
        (errno.ENOENT, Outcome.NOT_FOUND),
        (errno.EPERM, Outcome.PERMISSION),
        (errno.EACCES, Outcome.PERMISSION),
        (errno.EINVAL, Outcome.INVALID),
        (errno.ERANGE, Outcome.INVALID),
        (errno.EBUSY, Outcome.BUSY),
        (errno.EAGAIN, Outcome.BUSY),
        (errno.EADDRNOTAVAIL, Outcome.ADDRESS_NOT_AVAILABLE),
        (errno.EADDRINUSE, Outcome.ADDRESS_IN_USE),
        (errno.ENETUNREACH, Outcome.NETWORK_UNREACHABLE),
        (errno.EHOSTUNREACH, Outcome.NETWORK_UNREACHABLE),
        (errno.EOPNOTSUPP, Outcome.NOT_SUPPORTED),
        (errno.EINTR, Outcome.BUSY),
        (errno.ENOBUFS, Outcome.BUSY),  # a socket buffer ran over: ask again
        (errno.EPROTONOSUPPORT, Outcome.OTHER),  # the genl layer says what a missing family means
        (0, Outcome.OTHER),
    ],
)
def test_outcome_for(code: int, outcome: Outcome) -> None:
    assert outcome_for(code) is outcome


def test_kernel_error_from_netlink_error_keeps_operation_errno_and_detail() -> None:
    err = kernel_error("add vlan v5 on eth9", NetlinkError(errno.ENODEV))
    assert isinstance(err, KernelError)
    assert (err.operation, err.errno, err.outcome) == ("add vlan v5 on eth9", 19, Outcome.NOT_FOUND)
    assert err.detail == "No such device"
    assert str(err) == "add vlan v5 on eth9: NotFound (errno 19): No such device"


def test_kernel_error_uses_the_kernels_extack_text_when_present() -> None:
    err = kernel_error("add bridge br0", NetlinkError(errno.EOPNOTSUPP, "Unknown device type"))
    assert err.outcome is Outcome.NOT_SUPPORTED
    assert err.detail == "Unknown device type"


def test_kernel_error_from_oserror() -> None:
    err = kernel_error("open l2tp socket", PermissionError(errno.EPERM, "Operation not permitted"))
    assert (err.errno, err.outcome) == (errno.EPERM, Outcome.PERMISSION)
    assert "open l2tp socket" in str(err)


def test_kernel_error_from_something_without_errno_is_other() -> None:
    err = kernel_error("dump links", ValueError("bad attribute"))
    assert (err.errno, err.outcome, err.detail) == (0, Outcome.OTHER, "bad attribute")


def test_interrupted_dump_is_busy_not_eperm() -> None:
    # pyroute2 raises NLM_F_DUMP_INTR with code -1; abs() would turn that into EPERM.
    err = kernel_error("dump links", NetlinkDumpInterrupted())
    assert (err.errno, err.outcome) == (errno.EINTR, Outcome.BUSY)


def test_negative_or_missing_codes_are_not_errnos() -> None:
    assert error_number(NetlinkError(-5, "odd")) == 0
    assert error_number(RuntimeError("no code")) == 0
