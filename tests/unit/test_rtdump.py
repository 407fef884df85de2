"""The struct decoder of link/address dumps agrees with pyroute2's on captured kernel replies.

tests/unit/data/rtnl_dump.json holds raw RTM_GETLINK/RTM_GETADDR replies captured from a
namespace (veth pair, IPv4 and IPv6 addresses with and without a peer); to capture again, dump
with kube_l2tp.netlink.rtdump.RtDumper.raw() inside a namespace and store the chunks as hex.
The kernel suite compares the same decoder with `ip -j` for bridges and VLANs too.
"""

from __future__ import annotations

import errno
import json
import struct
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from kube_l2tp.core.state import Address, Outcome
from kube_l2tp.netlink import rtdump
from kube_l2tp.netlink.errors import kernel_error
from support.oracles_links import address_of, link_of, pyroute2_messages

DATA = json.loads((Path(__file__).parent / "data" / "rtnl_dump.json").read_text())
LINKS = [bytes.fromhex(c) for c in DATA["links"]]
ADDRS = [bytes.fromhex(c) for c in DATA["addrs"]]
SEQ_LINKS, SEQ_ADDRS = DATA["seq"]


def test_struct_decoder_equalspyroute2_messages() -> None:
    addresses: dict[int, list[Address]] = {}
    for msg in pyroute2_messages(ADDRS, ifaddrmsg, rtdump.RTM_NEWADDR):
        address = address_of(msg)
        if address is not None:
            addresses.setdefault(msg["index"], []).append(address)
    reference = sorted(
        (
            link_of(m, tuple(addresses.get(m["index"], ())))
            for m in pyroute2_messages(LINKS, ifinfmsg, rtdump.RTM_NEWLINK)
        ),
        key=lambda link: link.index,
    )
    decoded = rtdump.decode(LINKS, ADDRS, (SEQ_LINKS, SEQ_ADDRS))
    assert decoded == reference
    by_name = {link.ifname: link for link in decoded}
    assert by_name["x1"].addresses == (
        Address("198.51.100.1/32", "198.51.100.2/32"),
        Address("fe80::d0dc:ff:fe10:71d8/64"),  # reported: a declared link-local must converge
    )
    assert by_name["y1"].mtu == 1400 and by_name["y1"].up
    assert Address("2001:db8::1/64") in by_name["y1"].addresses


def test_other_sequence_numbers_are_ignored() -> None:
    assert rtdump.decode(LINKS, ADDRS, (SEQ_LINKS + 1, SEQ_ADDRS + 1)) == []


def test_error_and_interrupted_dumps() -> None:
    hdr = struct.Struct("=IHHII")
    error = hdr.pack(36, rtdump.NLMSG_ERROR, 0, 7, 0) + struct.pack("=i", -1) + bytes(16)
    with pytest.raises(OSError, match="EPERM"):
        list(rtdump.messages([error], 7))
    done_intr = hdr.pack(20, rtdump.NLMSG_DONE, rtdump.NLM_F_DUMP_INTR, 7, 0) + bytes(4)
    with pytest.raises(rtdump.DumpInterruptedError):
        list(rtdump.messages([done_intr], 7))


def test_an_interrupted_link_dump_is_busy_not_an_error_without_errno() -> None:
    """NLM_F_DUMP_INTR (links coming and going) means "dump again", never a failure: before,
    it became errno 0, Outcome.OTHER, and every declared object failed with it."""
    error = kernel_error("dump links", rtdump.DumpInterruptedError())
    assert (error.errno, error.outcome) == (errno.EINTR, Outcome.BUSY)


def test_an_interrupted_link_dump_is_retried_after_a_growing_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(rtdump.time, "sleep", pauses.append)
    dumper = rtdump.RtDumper.__new__(rtdump.RtDumper)
    answers = iter([True, True, False])

    def raw(msg_type: int) -> tuple[list[bytes], int]:
        return (LINKS, SEQ_LINKS) if msg_type == rtdump.RTM_GETLINK else (ADDRS, SEQ_ADDRS)

    def decode(*args: object) -> list[object]:
        if next(answers):
            raise rtdump.DumpInterruptedError
        return []

    monkeypatch.setattr(dumper, "raw", raw)
    monkeypatch.setattr(rtdump, "decode", decode)
    assert dumper.dump() == []
    assert pauses == [0.02, 0.04]
