"""The CRD's rules read the same under the API server (Go: RE2, CEL counting characters) and
the offline validator (Rust regex): no regex construct whose meaning differs between them.

`\\s`, `\\d`, `\\w`, `\\b` and their negations are ASCII classes in RE2 and Unicode classes in
Rust's regex (`\\s` matched U+00A0 offline and not on the API server); `\\p{..}` and non-ASCII
literals depend on tables that need not match. Rules that measure strings with size() do so
only on fields whose pattern admits ASCII alone, where characters (CEL's count), code points
(maxLength) and bytes (the kernel's count) are the same number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from kube_l2tp.api import crd, patterns

UNICODE_SENSITIVE = re.compile(r"\\[sSdDwWbBpP]")


def rules(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, rule["rule"]
        for key, sub in node.items():
            yield from rules(sub, f"{path}.{key}")
    elif isinstance(node, list):
        for sub in node:
            yield from rules(sub, path)


ALL = [r for c in crd.all_crds().values() for r in rules(c)]


@pytest.mark.parametrize(("path", "rule"), ALL, ids=[p for p, _ in ALL])
def test_no_rule_reads_differently_in_re2_and_rust(path: str, rule: str) -> None:
    assert not UNICODE_SENSITIVE.search(rule), (path, rule)
    assert rule.isascii(), (path, rule)


def test_sizes_are_taken_only_of_ascii_only_fields() -> None:
    sized = [(p, r) for p, r in ALL if "size(" in r]
    assert sized, "the VLAN name rule measures interfaceName"
    for _path, rule in sized:
        for field in re.findall(r"size\(self\.(\w+)\)", rule):
            assert field == "interfaceName", rule  # printable ASCII only (patterns.IFNAME)
    assert re.fullmatch(patterns.IFNAME, "pw0")
    assert not re.fullmatch(patterns.IFNAME, "pw\u00a0")
    assert all(not re.fullmatch(patterns.IFNAME, chr(c)) for c in range(0x80, 0x800))
