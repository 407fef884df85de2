"""Regular expressions shared by the CRD's CEL rules and the offline validator.

Address checks are CEL ``matches()`` rules instead of Kubernetes' ``ip()``/``isIP()`` library:
those exist only on recent API servers and in no Python CEL evaluator, and a regex evaluates the
same in RE2 (the API server) and Rust's regex (the offline validator).
"""

from __future__ import annotations

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"({_OCTET}\.){{3}}{_OCTET}"
_H16 = r"[0-9a-fA-F]{1,4}"
_LS32 = rf"({_H16}:{_H16}|{_IPV4})"
# RFC 3986 section 3.2.2, one alternative per position of "::".
_IPV6 = "|".join(
    [
        rf"({_H16}:){{6}}{_LS32}",
        rf"::({_H16}:){{5}}{_LS32}",
        rf"({_H16})?::({_H16}:){{4}}{_LS32}",
        rf"(({_H16}:){{0,1}}{_H16})?::({_H16}:){{3}}{_LS32}",
        rf"(({_H16}:){{0,2}}{_H16})?::({_H16}:){{2}}{_LS32}",
        rf"(({_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        rf"(({_H16}:){{0,4}}{_H16})?::{_LS32}",
        rf"(({_H16}:){{0,5}}{_H16})?::{_H16}",
        rf"(({_H16}:){{0,6}}{_H16})?::",
    ]
)

IP = rf"^({_IPV4}|{_IPV6})$"
IPV4_PREFIX = r"(3[0-2]|[12]?[0-9])"
IPV6_PREFIX = r"(12[0-8]|1[01][0-9]|[1-9]?[0-9])"
# An interface address: an IP with an optional prefix length of its family.
IP_OPT_PREFIX = rf"^({_IPV4}(/{IPV4_PREFIX})?|({_IPV6})(/{IPV6_PREFIX})?)$"
# A subnet: an IP with a prefix length of its family (the pod network's IPAM ranges).
IP_PREFIX = rf"^({_IPV4}/{IPV4_PREFIX}|({_IPV6})/{IPV6_PREFIX})$"
# Kubernetes names: a DNS label (a namespace) and a DNS subdomain (most objects' names).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# Endpoint addresses that can never carry a tunnel. Applied only to strings that already match
# IP, so "only zeros and colons" means the IPv6 unspecified address, and so on.
UNSPECIFIED = r"^(0\.0\.0\.0|[0:]+)$"
MULTICAST_OR_BROADCAST = r"^(22[4-9]\..*|23[0-9]\..*|255\.255\.255\.255|[fF][fF][0-9a-fA-F]{2}:.*)$"
IPV6_LINK_LOCAL = r"^[fF][eE][89aAbB][0-9a-fA-F]:.*$"
# IPv4-mapped IPv6 (::ffff:0:0/96) in every spelling: five zero groups (some or all under "::"),
# ffff, then the IPv4 part as two groups or dotted (or zeros under a "::" after ffff).
_Z = "0{1,4}"
IPV4_MAPPED = (
    rf"^((({_Z}:){{0,4}}{_Z})?::({_Z}:){{0,4}}|({_Z}:){{5}})[fF]{{4}}:({_H16}:{_H16}|{_IPV4})$"
    rf"|^({_Z}:){{5}}[fF]{{4}}:(:|:{_H16}|{_H16}::)$"
)

# Linux dev_valid_name(): 1..15 bytes (IFNAMSIZ 16 with NUL), no '/', ':', NUL or white space as
# the kernel's ctype table has it (which includes byte 0xA0, inside many UTF-8 letters); not '.'
# or '..'. '%' is refused too: the kernel would expand '%d' and the name would not be ours.
# Printable ASCII only, spelled as explicit ranges: characters are then bytes (so maxLength 15
# and CEL size() count what the kernel counts), and RE2 (the API server) and Rust's regex (the
# offline validator) cannot read the class differently, as they did `\s` (Rust's is Unicode's,
# with U+00A0; RE2's is ASCII's).
IFNAME = r"^[!-$&-.0-9;-~]{1,15}$"
COOKIE = r"^([0-9a-fA-F]{8}|[0-9a-fA-F]{16})$"
