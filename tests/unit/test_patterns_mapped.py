"""patterns.IPV4_MAPPED (a CEL rule of the CRD) agrees with Python's ipaddress on every
spelling of an address: with "::" at each run of zeros it may stand for, dotted or not."""

from __future__ import annotations

import ipaddress
import re

from hypothesis import given
from hypothesis import strategies as st

from kube_l2tp.api import patterns

MAPPED = re.compile(patterns.IPV4_MAPPED)
IP = re.compile(patterns.IP)


def spellings(addr: ipaddress.IPv6Address) -> set[str]:
    groups = [g.lstrip("0") or "0" for g in addr.exploded.split(":")]
    dotted = str(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    out = {str(addr), addr.exploded, addr.exploded.upper(), ":".join(groups)}
    out.add(":".join(groups[:6]) + ":" + dotted)
    for start in range(8):
        for end in range(start + 1, 9):
            if all(g == "0" for g in groups[start:end]):
                out.add(":".join(groups[:start]) + "::" + ":".join(groups[end:]))
                if end <= 6:
                    tail = ":".join(groups[end:6])
                    out.add(":".join(groups[:start]) + "::" + (tail + ":" if tail else "") + dotted)
    return {s for s in out if IP.match(s)}


near_mapped = st.builds(
    lambda high, low: ipaddress.IPv6Address((high << 32) | low),
    st.sampled_from([0xFFFF, 0xFFFE, 0x1FFFF, 0xFFFF0000, 0, 1, 0xFFFF << 16]),
    st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 0x10000]),
)


@given(near_mapped | st.ip_addresses(v=6))
def test_every_spelling_is_judged_as_ipaddress_does(addr: ipaddress.IPv6Address) -> None:
    for text in spellings(addr):
        expected = ipaddress.IPv6Address(text).ipv4_mapped is not None
        assert bool(MAPPED.match(text)) == expected, text


def test_known_spellings() -> None:
    for text in ["::ffff:192.0.2.1", "::FFFF:c000:201", "0:0:0:0:0:ffff:c000:201", "0::ffff:1:2",
                 "0:0:0:0:0:ffff::", "0:0:0:0:0:ffff:1::"]:  # fmt: skip
        assert MAPPED.match(text), text
    for text in ["::ffff", "::ffff:0:192.0.2.1", "1::ffff:192.0.2.1", "2001:db8::ffff:1:2",
                 "::192.0.2.1", "ffff::1:2"]:  # fmt: skip
        assert not MAPPED.match(text), text
