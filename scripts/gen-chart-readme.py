#!/usr/bin/env python3
"""Write charts/kube-l2tp/README.md from values.yaml: every value with its `# --` comment, its
type and its default (`--check`: fail if the file differs, as `make lint` runs it).

The comment above a key that starts with `# --` (and the `#` lines that follow it) is the value's
description, as helm-docs reads it; values.yaml stays the one place where values are explained.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts/kube-l2tp"
OUT = CHART / "README.md"
KEY = re.compile(r"([A-Za-z0-9_.\-/]+):(\s|$)")


def documented(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) in file order, for each key with a `# --` comment above it."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] | None = None
    in_list_at: int | None = None
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if comment is not None:
                comment.append(stripped[1:].strip())
            continue
        if not stripped:
            comment = None
            continue
        if in_list_at is not None and indent > in_list_at:
            continue
        in_list_at = None
        if stripped.startswith("- "):
            in_list_at = indent
            continue
        match = KEY.match(stripped)
        if not match:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(1)))
        if comment is not None:
            found.append((".".join(k for _, k in stack), " ".join(comment)))
        comment = None
    return found


def value_at(values: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        values = values[key]
    return values


def kind(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}[
        type(value)
    ]


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    lines = [
        "# kube-l2tp Helm chart",
        "",
        f"{chart['description'].strip()}",
        "",
        f"Chart version {chart['version']}, app version {chart['appVersion']}, Kubernetes"
        f" {chart['kubeVersion']}. Install, upgrade, uninstall and install-time troubleshooting:"
        " the repository's README (section *Install on a cluster*).",
        "",
        "Generated from `values.yaml` by `scripts/gen-chart-readme.py`; edit the comments there."
        " `values.schema.json` refuses unknown keys and values of the wrong type.",
        "",
        "## Values",
        "",
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for key, description in documented(text):
        value = value_at(values, key)
        default = json.dumps(value, separators=(", ", ": "))
        lines.append(f"| `{key}` | {kind(value)} | `{cell(default)}` | {cell(description)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run scripts/gen-chart-readme.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
