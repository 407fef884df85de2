"""Writes one kernel's `make bench` report into BENCHMARKS.md and keeps the other kernel's.

    python tests/bench/report.py KERNEL GUEST_OUTPUT HOST_LINE...
    python tests/bench/report.py --history      (history.md edited: every section kept)

BENCHMARKS.md is: a title, then one section per kernel (between ``<!-- make bench KERNEL=k -->``
and ``<!-- end KERNEL=k -->``, in scripts/kernels.sh's order), then tests/bench/history.md (the
before/after record and the findings, written by hand). A run on one kernel replaces only that
kernel's section, so the two kernels' figures stand side by side whichever ran last. The section
is the guest's report (between bench.py's markers, progress lines left out) with ``HOST_LINE``s
(the host, its load, the whole run's time: what only the host knows) after its date line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TARGET = ROOT / "BENCHMARKS.md"
HISTORY = Path(__file__).resolve().parent / "history.md"
KERNELS = ("6.1", "6.12")  # scripts/kernels.sh list
TITLE = "# Benchmarks\n"
SECTION = re.compile(
    r"<!-- make bench KERNEL=(?P<kernel>[\w.]+) -->\n(?P<body>.*?)"
    r"<!-- end KERNEL=(?P=kernel) -->\n",
    re.DOTALL,
)


def guest_report(output: str) -> list[str]:
    """bench.py's markdown: the lines between its markers, without progress lines."""
    lines = output.splitlines()
    try:
        start, end = lines.index("=== BENCHMARKS.md ==="), lines.index("=== end ===")
    except ValueError:
        raise SystemExit(
            "report.py: the guest printed no report (no markers): nothing written"
        ) from None
    body = [line for line in lines[start + 1 : end] if not line.startswith("bench: ")]
    if not any(line.strip() for line in body):
        raise SystemExit("report.py: the guest's report is empty: nothing written")
    return body


def section(kernel: str, body: list[str], host: list[str]) -> str:
    """The guest's title becomes the kernel's heading; the host's lines follow its date."""
    heading = f"## Kernel {kernel}: `make bench KERNEL={kernel}`"
    out = [heading if line == TITLE.strip() else line for line in body]
    at = next((i + 1 for i, line in enumerate(out) if line.startswith("- date: ")), 1)
    out[at:at] = host
    # the guest's sections are ##; under the kernel's heading they become ###
    out = [("#" + line) if line.startswith("## ") and line != heading else line for line in out]
    return "\n".join(out).rstrip("\n") + "\n\n"


def main() -> None:
    sections = {
        m["kernel"]: m["body"]
        for m in SECTION.finditer(TARGET.read_text() if TARGET.exists() else "")
    }
    if sys.argv[1:] != ["--history"]:
        kernel, output, *host = sys.argv[1:]
        if kernel not in KERNELS:
            raise SystemExit(f"report.py: kernel {kernel!r}: choose one of {', '.join(KERNELS)}")
        sections[kernel] = section(kernel, guest_report(Path(output).read_text()), host)
    parts = [TITLE, "\n"]
    for k in sorted(sections, key=lambda k: KERNELS.index(k) if k in KERNELS else len(KERNELS)):
        parts += [f"<!-- make bench KERNEL={k} -->\n", sections[k], f"<!-- end KERNEL={k} -->\n\n"]
    parts.append(HISTORY.read_text())
    TARGET.write_text("".join(parts))


if __name__ == "__main__":
    main()
